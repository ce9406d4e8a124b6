import dataclasses
import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from models.retrieval.evaluation import evaluate
from models.retrieval.ranking_metrics import RankAccumulator
from models.retrieval.retriever import Retriever, mask_engaged
from models.retrieval.sequences import Sequences
from models.retrieval.training import (
    fit,
    fit_members,
    full_softmax_loss,
    log_frequencies,
    loss_kind,
    sampled_softmax_loss,
)
from models.retrieval.two_tower import TwoTower, TwoTowerEnsemble, load_model, two_tower
from models.retrieval.two_tower_settings import TwoTowerSettings, TwoTowerTrainSettings
from udfs.item_embedder import item_vectors

TINY = TwoTowerSettings(dim=16, max_len=6, layers=1, heads=2, dropout=0.0, history_dropout=0.0, id_dropout=0.0)


@pytest.mark.parametrize("encoder", ["transformer", "mean"])
def test_user_tower_is_causal_and_unit_norm(encoder):
    torch.manual_seed(0)
    model = two_tower(20, TwoTowerSettings(**{**TINY.__dict__, "encoder": encoder})).eval()
    history = torch.tensor([[0, 0, 3, 7, 9, 11]])
    every = model.user_tower(history, every_position=True)
    assert torch.allclose(every.norm(dim=-1)[0, 2:], torch.ones(4), atol=1e-5)
    changed = history.clone()
    changed[0, -1] = 12  # a later item cannot change what earlier positions saw
    assert torch.allclose(model.user_tower(changed, every_position=True)[0, :-1], every[0, :-1], atol=1e-6)
    assert not torch.allclose(model.user_tower(changed)[0], every[0, -1])


def reference_loss(users, items, positives, temperature, log_q, own_items=None):
    """The loss written out row by row: softmax over the distinct-from-positive candidates
    (and, with ``own_items[i]``, over those not in example i's own sequence)."""
    n, losses = len(positives), []
    for i in range(n):
        logits = []
        for j in range(n):
            if j != i and positives[j] == positives[i]:
                continue  # accidental hit: not a negative
            if j != i and own_items is not None and positives[j] in own_items[i]:
                continue  # the user engaged with it: not a negative
            logit = float(users[i] @ items[j]) / temperature
            if log_q is not None:
                logit -= float(log_q[positives[j]]) + math.log(n)
            logits.append((logit, j == i))
        denominator = math.log(sum(math.exp(v) for v, _ in logits))
        losses.append(denominator - next(v for v, own in logits if own))
    return sum(losses) / n


@pytest.mark.parametrize("logq", [True, False])
def test_in_batch_softmax_removes_accidental_hits_and_corrects_by_log_q(logq):
    torch.manual_seed(1)
    model = two_tower(10, TINY).eval()
    positives = torch.tensor([3, 5, 3, 9, 1])  # item 3 twice: each is not the other's negative
    users = F.normalize(torch.randn(5, 16), dim=-1)
    counts = torch.tensor([0, 5, 1, 50, 1, 9, 1, 1, 1, 2, 1])
    log_q = log_frequencies(counts) if logq else None
    got = sampled_softmax_loss(users.unsqueeze(1), positives, model, log_q)
    with torch.no_grad():
        items = model.item_tower(positives)
    expected = reference_loss(users, items, positives.tolist(), float(model.temperature.detach()), log_q)
    assert got.detach().item() == pytest.approx(expected, rel=1e-5)


def test_items_of_the_examples_own_sequence_are_not_its_negatives():
    torch.manual_seed(3)
    model = two_tower(10, TINY).eval()
    sequences = torch.tensor([[0, 3, 5, 7], [2, 4, 9, 1]])  # two users
    row = torch.tensor([0, 0, 1, 1, 1])  # the sequence each example belongs to
    positives = torch.tensor([5, 7, 4, 9, 1])
    users = F.normalize(torch.randn(5, 16), dim=-1)
    got = sampled_softmax_loss(users.unsqueeze(1), positives, model, None, user_items=(sequences, row))
    with torch.no_grad():
        items = model.item_tower(positives)
    own = [set(sequences[r].tolist()) for r in row.tolist()]
    expected = reference_loss(users, items, positives.tolist(), float(model.temperature.detach()), None, own)
    assert got.detach().item() == pytest.approx(expected, rel=1e-5)
    assert got.detach().item() != pytest.approx(
        sampled_softmax_loss(users.unsqueeze(1), positives, model, None).detach().item(), rel=1e-3
    )
    with_extra = sampled_softmax_loss(
        users.unsqueeze(1), positives, model, None, extra_negatives=200, user_items=(sequences, row)
    )
    assert math.isfinite(with_extra.detach().item())


@pytest.mark.parametrize("own_sequence", [False, True])
def test_the_full_softmax_is_cross_entropy_against_every_item(own_sequence):
    torch.manual_seed(4)
    model = two_tower(10, TINY).eval()
    sequences = torch.tensor([[0, 3, 5, 7], [2, 4, 9, 1]])
    row = torch.tensor([0, 0, 1, 1, 1])
    positives = torch.tensor([5, 7, 4, 9, 1])
    users = F.normalize(torch.randn(5, 16), dim=-1)
    got = full_softmax_loss(users.unsqueeze(1), positives, model, (sequences, row) if own_sequence else None)
    with torch.no_grad():
        items = model.item_tower(torch.arange(1, 11))  # item i at row i - 1; padding 0 is no candidate
    temperature, losses = float(model.temperature.detach()), []
    for i, positive in enumerate(positives.tolist()):
        own = set(sequences[row[i]].tolist()) - {positive} if own_sequence else set()
        logits = {item: float(users[i] @ items[item - 1]) / temperature for item in range(1, 11) if item not in own}
        losses.append(math.log(sum(math.exp(v) for v in logits.values())) - logits[positive])
    assert got.detach().item() == pytest.approx(sum(losses) / len(losses), rel=1e-5)


def test_the_loss_rule_takes_the_full_softmax_when_a_steps_logits_fit_the_budget():
    model = TwoTowerSettings(max_len=50)
    training = TwoTowerTrainSettings(batch_size=128)  # 6,400 examples a step at most
    assert loss_kind(12_101, model, training) == "full"  # Beauty: 886 MiB <= 1024
    assert loss_kind(3_646, model, training) == "full"  # LastFM
    assert loss_kind(1_000_000, model, training) == "sampled"  # a real pin catalogue
    assert loss_kind(12_101, model, dataclasses.replace(training, full_softmax_mb=800)) == "sampled"
    assert loss_kind(12_101, model, dataclasses.replace(training, batch_size=256)) == "sampled"
    assert loss_kind(10, model, dataclasses.replace(training, loss="sampled")) == "sampled"
    assert loss_kind(10**9, model, dataclasses.replace(training, loss="full")) == "full"
    with pytest.raises(ValueError, match="loss must be one of"):
        TwoTowerTrainSettings(loss="bpr")


def test_extra_uniform_negatives_skip_the_positive():
    torch.manual_seed(2)
    model = two_tower(3, TINY).eval()
    users = F.normalize(torch.randn(2, 16), dim=-1)
    positives = torch.tensor([1, 2])
    plain = sampled_softmax_loss(users.unsqueeze(1), positives, model, None)
    with_extra = sampled_softmax_loss(users.unsqueeze(1), positives, model, None, extra_negatives=50)
    assert with_extra.detach().item() > plain.detach().item()  # more negatives, never the positive itself: finite
    assert math.isfinite(with_extra.detach().item())


def test_masking_and_full_ranking_metrics():
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.1], [0.1, 0.2, 0.3, 0.4]])
    histories = torch.tensor([[0, 1], [0, 0]])  # user 0 engaged item 1
    masked = mask_engaged(scores, histories)
    assert masked[0, 0] == float("-inf") and torch.equal(masked[1], scores[1])
    ranks = RankAccumulator(4, ks=(1, 2))
    ranks.add(masked, torch.tensor([3, 1]))  # user 0: item 3 ranks 2nd after masking; user 1: item 1 last
    result = ranks.result()
    assert result.hr == {1: 0.0, 2: 0.5}
    assert result.ndcg[2] == pytest.approx(0.5 / math.log2(3))
    assert result.coverage[1] == pytest.approx(2 / 4)  # items 2 and 4 are someone's top 1


def test_metrics_on_a_catalogue_smaller_than_k_count_only_unmasked_items_as_recommended():
    scores = torch.tensor([[0.9, 0.8, 0.7]])
    masked = mask_engaged(scores, torch.tensor([[1, 2]]))  # only item 3 is left to recommend
    ranks = RankAccumulator(3, ks=(1, 5))
    ranks.add(masked, torch.tensor([3]))
    result = ranks.result()
    assert result.hr == {1: 1.0, 5: 1.0}
    assert result.coverage == {1: pytest.approx(1 / 3), 5: pytest.approx(1 / 3)}


def next_item_sequences(n_items, users, length, seed=0):
    """Each user walks the catalog: next item = current + 1 (wrapping), from a random start."""
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, n_items, (users,), generator=g)
    return (starts.unsqueeze(1) + torch.arange(length)) % n_items + 1


def test_fit_learns_a_next_item_pattern_and_reloads_identically(tmp_path):
    n_items, length = 30, 8
    walks = next_item_sequences(n_items, 300, length)
    train, validation = Sequences(walks[:, :-1]), Sequences(walks[:, 1:])  # validation predicts the last step
    settings = TwoTowerSettings(**{**TINY.__dict__, "max_len": length - 2})
    torch.manual_seed(0)
    model = two_tower(n_items, settings)
    before = evaluate(model, validation).hr[10]
    counts = torch.bincount(walks[:, :-2].reshape(-1), minlength=n_items + 1)
    train_settings = TwoTowerTrainSettings(epochs=30, batch_size=64, lr=1e-2, eval_every=5, patience=3, progress=False)
    result = fit(model, train, validation, counts, train_settings)
    assert result.validation.hr[10] > 0.9 > before + 0.4
    assert (
        result.best_epoch % 5 == 0
        and result.history[result.best_epoch - 1]["validation_hr@10"] == result.validation.hr[10]
    )

    loaded = load_model(model.save(tmp_path / "tt"))
    histories = validation.histories[:20]
    assert torch.equal(Retriever(loaded).top_k(histories, 5)[0], Retriever(result.model).top_k(histories, 5)[0])


def test_an_ensemble_scores_its_members_mean_cosine_and_reloads_identically(tmp_path):
    attributes = torch.tensor([[0, 0], [1, 2], [1, 0], [3, 0], [2, 0], [0, 0], [3, 1], [2, 2], [1, 1], [3, 3], [2, 1]])
    members = []
    for seed in (1, 2, 3):
        torch.manual_seed(seed)
        members.append(two_tower(10, TINY, attributes).eval())
    ensemble = TwoTowerEnsemble(members).eval()
    histories = torch.tensor([[0, 0, 0, 4, 2, 9], [1, 2, 3, 5, 6, 8], [0, 0, 0, 0, 0, 7]])
    mean_cosine = sum(Retriever(m).scores(histories) for m in members) / 3
    assert torch.allclose(Retriever(ensemble).scores(histories), mean_cosine, atol=1e-6)
    items = ensemble.all_items()
    assert items.shape == (10, 3 * TINY.dim) == (10, ensemble.settings.width)
    assert torch.allclose(items.norm(dim=-1), torch.ones(10), atol=1e-5)  # FAISS inner product = cosine
    assert torch.allclose(ensemble.item_tower(torch.arange(1, 11)), items)
    embedded = item_vectors(ensemble, np.arange(1, 11), batch_size=4)  # embed_pins' UDF
    assert np.allclose(embedded, items.detach().numpy(), atol=1e-6)
    assert item_vectors(ensemble, np.arange(1, 1), batch_size=4).shape == (0, ensemble.settings.width)

    loaded = load_model(ensemble.save(tmp_path / "ensemble"))
    assert isinstance(loaded, TwoTowerEnsemble) and len(loaded.members) == 3
    assert torch.equal(Retriever(loaded).scores(histories), Retriever(ensemble).scores(histories))


def test_members_are_trained_apart_with_their_own_seeds():
    n_items, length = 30, 8
    walks = next_item_sequences(n_items, 200, length)
    train, validation = Sequences(walks[:, :-1]), Sequences(walks[:, 1:])
    counts = torch.bincount(walks[:, :-2].reshape(-1), minlength=n_items + 1)
    settings = TwoTowerSettings(**{**TINY.__dict__, "max_len": length - 2})
    training = TwoTowerTrainSettings(epochs=6, batch_size=64, lr=1e-2, eval_every=2, patience=2, progress=False)
    one = fit_members(n_items, settings, None, train, validation, counts, training)
    three = fit_members(
        n_items, TwoTowerSettings(**{**settings.__dict__, "members": 3}), None, train, validation, counts, training
    )
    assert isinstance(one.model, TwoTower) and isinstance(three.model, TwoTowerEnsemble)
    first, second, _ = three.model.members
    alone, member = one.model.state_dict(), first.state_dict()
    assert alone.keys() == member.keys() and all(torch.equal(alone[k], member[k]) for k in alone)  # seed + 0
    assert not torch.equal(first.item_tower.features.ids.weight, second.item_tower.features.ids.weight)  # seed + 1
    assert len(three.member_best_epochs) == 3 and three.best_epoch == max(three.member_best_epochs)
    assert three.validation.as_dict() == evaluate(three.model, validation).as_dict()


def test_ranks_from_an_ann_top_list_drop_history_and_cap_at_depth():
    from models.retrieval.ranking_metrics import ranks_from_top_lists

    top = torch.tensor([[4, 2, 7, 1, -1], [3, 1, 2, 5, 6], [9, 8, 6, 5, 4]])
    histories = torch.tensor([[0, 2], [0, 0], [0, 6]])
    targets = torch.tensor([7, 6, 6])  # user 2's target is in its history: masked, a miss
    assert ranks_from_top_lists(top, histories, targets, depth=3).tolist() == [1, 3, 3]


def test_ann_index_takes_its_search_parameters_and_returns_item_indices():
    import numpy as np

    from models.retrieval.ann import build_index, search

    vectors = F.normalize(torch.randn(300, 8, generator=torch.Generator().manual_seed(0)), dim=-1).numpy()
    index = build_index(vectors, "HNSW8", "efSearch=200")
    assert index.hnsw.efSearch == 200
    _, ids = search(index, vectors[:5], 1)
    assert ids[:, 0].tolist() == [1, 2, 3, 4, 5]  # row r is item r + 1, its own nearest
    assert np.all(search(build_index(vectors, "Flat"), vectors[:1], 400)[1][0, 300:] == -1)  # fewer than k: -1


def test_item_attributes_shape_item_vectors_and_survive_save_and_load(tmp_path):
    torch.manual_seed(0)
    attributes = torch.tensor([[0, 0], [1, 2], [1, 0], [3, 0]])  # item 1: attributes 1, 2; 2: 1; 3: 3
    model = two_tower(3, TINY, attributes).eval()
    with torch.no_grad():
        model.item_tower.features.ids.weight[1:] = model.item_tower.features.ids.weight[1]  # the same ID vector for all
        before = model.all_items()
    assert not torch.allclose(before[0], before[1]) and not torch.allclose(before[1], before[2])
    loaded = load_model(model.save(tmp_path / "m"))
    assert torch.equal(loaded.item_tower.features.attributes, attributes)
    assert torch.allclose(loaded.all_items(), before)


def test_a_users_vector_does_not_depend_on_padding_or_batch():
    torch.manual_seed(4)
    model = two_tower(20, TINY).eval()
    short = torch.tensor([[0, 0, 0, 0, 3, 7]])
    alone = model.user_tower(short[:, -2:])
    assert not torch.allclose(model.user_tower(short), alone, atol=1e-4)  # why encode() exists
    batch = torch.tensor([[0, 0, 0, 0, 3, 7], [1, 2, 4, 5, 6, 8], [0, 0, 0, 9, 3, 7]])
    encoded = model.user_tower.encode(batch, batch=2)
    assert torch.allclose(encoded[0], alone[0], atol=1e-6)
    assert torch.allclose(encoded[1], model.user_tower(batch[1:2])[0], atol=1e-6)
    assert torch.allclose(encoded[2], model.user_tower(batch[2:3, -3:])[0], atol=1e-6)
    assert torch.allclose(Retriever(model).user_vectors(batch), encoded)


def test_evaluation_in_the_middle_of_training_leaves_the_model_in_its_mode():
    model = two_tower(10, TINY)
    rows = torch.tensor([[0, 0, 0, 1, 2, 3, 4], [0, 0, 0, 0, 5, 6, 7]])
    model.train()
    evaluate(model, Sequences(rows))
    assert model.training and model.user_tower.training
    model.eval()
    evaluate(model, Sequences(rows))
    assert not model.training


def test_production_is_evaluated_through_its_own_items_and_a_target_it_does_not_know_is_a_miss():
    from models.retrieval.evaluation import evaluate_with_items

    torch.manual_seed(5)
    model = two_tower(6, TINY).eval()
    items = [f"p{i}" for i in range(1, 7)]
    rows = torch.tensor([[0, 0, 0, 1, 2, 3], [0, 0, 4, 5, 1, 6], [0, 0, 0, 0, 2, 5], [0, 0, 0, 3, 4, 2]])
    same = evaluate_with_items(model, items, Sequences(rows), items)
    direct = evaluate(model, Sequences(rows)).as_dict()
    assert same["known_targets"] == 4 and all(same[k] == direct[k] for k in ("hr@5", "ndcg@5", "hr@10"))

    # The new model's item list is the production list reversed, plus an item production never saw.
    new_items = [*reversed(items), "p_new"]
    new_index = {pin: i + 1 for i, pin in enumerate(new_items)}
    remapped = rows.clone().apply_(lambda i: new_index[items[i - 1]] if i else 0)
    remapped[1, -1] = new_index["p_new"]  # user 1's held-out item is one production cannot rank
    remapped[3, 3] = new_index["p_new"]  # and user 3 read it: it leaves the history
    through = evaluate_with_items(model, items, Sequences(remapped), new_items)
    kept = torch.tensor([[0, 0, 0, 1, 2, 3], [0, 0, 0, 0, 2, 5], [0, 0, 0, 0, 4, 2]])
    expected = evaluate(model, Sequences(kept)).as_dict()
    assert through["users"] == 4 and through["known_targets"] == 3
    for k in ("hr@5", "ndcg@5", "hr@20", "ndcg@20"):
        assert through[k] == pytest.approx(expected[k] * 3 / 4)


def test_training_that_ends_at_the_epoch_cap_still_improving_says_so():
    n_items, length = 30, 8
    walks = next_item_sequences(n_items, 300, length)
    train, validation = Sequences(walks[:, :-1]), Sequences(walks[:, 1:])
    settings = TwoTowerSettings(**{**TINY.__dict__, "max_len": length - 2})
    counts = torch.bincount(walks[:, :-2].reshape(-1), minlength=n_items + 1)
    short = TwoTowerTrainSettings(epochs=3, batch_size=64, lr=1e-2, eval_every=1, patience=2, progress=False)
    torch.manual_seed(0)
    cut = fit(two_tower(n_items, settings), train, validation, counts, short)
    assert not cut.converged and cut.best_epoch == 3  # learning from scratch: better at every evaluation
    assert cut.convergence_warning() == (
        "not converged: validation NDCG@10 was still improving at the epoch cap (best epoch 3 of 3); "
        "raise two_tower.training.epochs"
    )
    long = dataclasses.replace(short, epochs=200)
    torch.manual_seed(0)
    done = fit(two_tower(n_items, settings), train, validation, counts, long)
    assert done.converged and done.convergence_warning() == "" and len(done.history) < 200  # stopped early
