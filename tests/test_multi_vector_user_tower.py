"""A user tower of three vectors per user, composed from the retrieval package's parts, goes
through training, the item embedder, exact and FAISS evaluation, saving and loading, and the
serving retrieval (one index search per vector, merged) like the one-vector tower."""

import dataclasses

import faiss
import numpy as np
import pytest
import torch

from models.retrieval.evaluation import evaluate, evaluate_ann
from models.retrieval.retriever import Retriever, merge_vector_results
from models.retrieval.sequences import Sequences
from models.retrieval.serving import Retrieval
from models.retrieval.sharded_index import IndexDescription, ShardedIndex
from models.retrieval.towers import CausalTransformer, ItemFeatures, ItemTower, MultiVector, UserTower, user_item_scores
from models.retrieval.training import fit
from models.retrieval.two_tower import TwoTower, load_model, upgrade_state
from models.retrieval.two_tower_settings import TwoTowerTrainSettings
from tests.test_two_tower import TINY, next_item_sequences
from udfs.item_embedder import item_vectors

N_ITEMS, LENGTH = 30, 8
SETTINGS = dataclasses.replace(TINY, max_len=LENGTH - 2, user_vectors=3)


def three_vector_model(seed: int = 0) -> TwoTower:
    """Built by hand from the parts (not by new_model): item features shared with the history."""
    torch.manual_seed(seed)
    features = ItemFeatures(N_ITEMS, SETTINGS.dim, 0.0)
    user = UserTower(features, CausalTransformer(SETTINGS), MultiVector(SETTINGS.dim, 3), SETTINGS.dim, 0.0)
    return TwoTower(N_ITEMS, SETTINGS, ItemTower(features, SETTINGS.dim), user)


@pytest.fixture(scope="module")
def trained():
    walks = next_item_sequences(N_ITEMS, 300, LENGTH)
    train, validation = Sequences(walks[:, :-1]), Sequences(walks[:, 1:])
    model = three_vector_model()
    before = evaluate(model, validation).hr[10]
    counts = torch.bincount(walks[:, :-2].reshape(-1), minlength=N_ITEMS + 1)
    training = TwoTowerTrainSettings(epochs=30, batch_size=64, lr=1e-2, eval_every=5, patience=3, progress=False)
    result = fit(model, train, validation, counts, training)
    return result, validation, before


def test_three_vectors_per_user_are_unit_vectors_and_train(trained):
    result, validation, before = trained
    model = result.model
    assert model.n_vectors == 3
    vectors = model.user_tower.encode(validation.histories[:10])
    assert vectors.shape == (10, 3, SETTINGS.dim)
    assert torch.allclose(vectors.norm(dim=-1), torch.ones(10, 3), atol=1e-5)
    assert not torch.allclose(vectors[:, 0], vectors[:, 1])  # three different vectors, not one copied
    assert result.validation.hr[10] > 0.9 and result.validation.hr[10] > before + 0.3  # untrained: ~0.5


def test_an_items_score_is_its_best_vector_and_the_item_embedder_takes_the_model(trained):
    model = trained[0].model
    histories = trained[1].histories[:12]
    retriever = Retriever(model)
    users = retriever.user_vectors(histories)
    per_vector = torch.stack([users[:, v] @ retriever.items.T for v in range(3)], 1)
    assert torch.allclose(user_item_scores(users, retriever.items), per_vector.amax(1))
    scores = retriever.scores(histories)
    finite = scores.isfinite()
    assert torch.allclose(scores[finite], per_vector.amax(1)[finite])
    embedded = item_vectors(model, np.arange(1, N_ITEMS + 1), batch_size=7)  # embed_pins' UDF
    assert np.allclose(embedded, retriever.items.numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="n_vectors"):
        user_item_scores(users[:, 0], retriever.items)


def test_exact_faiss_search_per_vector_merged_equals_exact_retrieval(trained):
    model, validation = trained[0].model, trained[1]
    exact = evaluate(model, validation).as_dict()
    through_flat = evaluate_ann(model, validation, "Flat")
    for k in (5, 10, 20):
        assert through_flat[f"hr@{k}"] == pytest.approx(exact[f"hr@{k}"])
        assert through_flat[f"ndcg@{k}"] == pytest.approx(exact[f"ndcg@{k}"], abs=1e-6)


def test_merge_keeps_each_item_once_at_its_best_score():
    scores = np.array([[[0.9, 0.5, 0.1], [0.8, 0.7, 0.6]]], np.float32)
    ids = np.array([[[4, 2, 7], [2, 9, -1]]])
    merged_scores, merged_ids = merge_vector_results(scores, ids)
    assert merged_ids.tolist() == [[4, 2, 9, 7, -1, -1]]
    assert merged_scores[0, :4].tolist() == pytest.approx([0.9, 0.8, 0.7, 0.1])
    one = merge_vector_results(scores[:, :1], ids[:, :1])
    assert one[1].tolist() == [[4, 2, 7]]


def test_a_saved_three_vector_model_serves_through_a_sharded_index(trained, tmp_path):
    model = trained[0].model
    loaded = load_model(model.save(tmp_path / "m"))
    assert loaded.n_vectors == 3 and loaded.settings.user_vectors == 3
    histories = trained[1].histories[:8]
    assert torch.equal(Retriever(loaded).top_k(histories, 5)[0], Retriever(model).top_k(histories, 5)[0])

    items = Retriever(loaded).items.numpy()
    shards = []
    for first in (1, 16):  # two exact shards; ids are item indices
        shard = faiss.IndexIDMap(faiss.IndexFlatIP(items.shape[1]))
        shard.add_with_ids(items[first - 1 : first + 14], np.arange(first, first + 15, dtype=np.int64))
        shards.append(shard)
    description = IndexDescription("two_tower", "v0001", SETTINGS.dim, "Flat", "", faiss.__version__, 1.0, N_ITEMS, ())
    index = ShardedIndex(description, shards)
    pins = [f"p{i}" for i in range(1, N_ITEMS + 1)]
    retrieval = Retrieval(loaded, pins, index, "v0001")
    history = [pins[i - 1] for i in histories[0].tolist() if i > 0]
    got = retrieval.top_k(history, 5)
    expected_items, expected_scores = Retriever(loaded).top_k(histories[:1], 5)
    assert [c.pin for c in got] == [pins[i - 1] for i in expected_items[0].tolist()]
    assert [c.score for c in got] == pytest.approx(expected_scores[0].tolist(), abs=1e-5)


def test_an_artifact_saved_before_the_parts_loads_its_tensors_under_their_new_names():
    legacy = {
        "item_tower.ids.weight": torch.zeros(3, 2),
        "item_tower.attributes": torch.zeros(3, 1),
        "item_tower.attribute_bag.weight": torch.zeros(2, 2),
        "item_tower.project.weight": torch.zeros(2, 2),
        "user_tower.positions.weight": torch.zeros(4, 2),
        "user_tower.encoder.layers.0.linear1.weight": torch.zeros(2, 2),
        "user_tower.norm.weight": torch.zeros(2),
        "user_tower.project.bias": torch.zeros(2),
        "user_tower.items.ids.weight": torch.zeros(3, 2),
        "user_tower.items.project.weight": torch.zeros(2, 2),
        "members.1.user_tower.norm.bias": torch.zeros(2),
        "log_temperature": torch.zeros(()),
    }
    assert sorted(upgrade_state(legacy)) == sorted(
        [
            "item_tower.features.ids.weight",
            "item_tower.features.attributes",
            "item_tower.features.attribute_bag.weight",
            "item_tower.project.weight",
            "user_tower.history.positions.weight",
            "user_tower.history.encoder.layers.0.linear1.weight",
            "user_tower.head.norm.weight",
            "user_tower.head.project.bias",
            "user_tower.items.ids.weight",
            "members.1.user_tower.head.norm.bias",
            "log_temperature",
        ]
    )
    current = {"item_tower.features.ids.weight": torch.zeros(3, 2)}
    assert upgrade_state(current) is current
