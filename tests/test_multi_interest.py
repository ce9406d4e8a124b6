"""Multi-interest (capsule) and conditional user towers, the label-aware loss, round-robin
merging and conditional retrieval through a sharded index."""

from __future__ import annotations

import dataclasses

import faiss
import numpy as np
import pytest
import torch

from models.retrieval.ann import empty_index
from models.retrieval.retriever import round_robin
from models.retrieval.serving import Retrieval
from models.retrieval.sharded_index import IndexDescription, ShardedIndex, ShardInfo
from models.retrieval.towers import CapsuleInterests, maxmin_centres
from models.retrieval.training import nearest_vector, sampled_softmax_loss
from models.retrieval.two_tower import load_model, two_tower
from models.retrieval.two_tower_settings import TwoTowerSettings

SETTINGS = TwoTowerSettings(
    dim=16, max_len=8, heads=2, layers=1, dropout=0.0, history_dropout=0.0, user_head="capsules", user_vectors=3
)
N_ITEMS = 40
INTERESTS = torch.tensor([0] + [1 + (i % 4) for i in range(N_ITEMS)])  # item i's interest: 1..4


def unit(*rows: list[float]) -> torch.Tensor:
    x = torch.tensor(rows, dtype=torch.float32)
    return torch.nn.functional.normalize(x, dim=-1).unsqueeze(0)


def test_maxmin_starts_at_the_latest_item_and_takes_the_farthest_next():
    # items 0, 1 near the x axis, items 2, 3 near the y axis, item 4 near the x axis
    x = unit([1, 0.1], [1, -0.1], [0.1, 1], [-0.1, 1], [1, 0.05])
    visible = torch.ones(5, 5, dtype=torch.bool).tril().unsqueeze(0)
    centres = maxmin_centres(x, visible, 2)[0]
    assert centres[4, 0] == 4 and centres[4, 1] in (2, 3)  # the other direction, never another x item
    assert centres[1].tolist() == [1, 0]  # position 1 sees items 0, 1 only
    assert centres[0].tolist() == [0, 0]  # one visible item: the centre repeats


def test_each_item_goes_to_one_interest_and_heaviest_comes_first():
    torch.manual_seed(0)
    head = CapsuleInterests(8, 3, iterations=2)
    states = torch.randn(2, 6, 8)
    present = torch.ones(2, 6, 1)
    present[1, :2] = 0  # left padding
    vectors, mass = head(states, present)
    assert vectors.shape == (2, 6, 3, 8) and torch.allclose(vectors.norm(dim=-1), torch.ones(2, 6, 3), atol=1e-5)
    seen = present.squeeze(-1).cumsum(1)  # single assignment: masses add up to the items visible
    assert torch.equal(mass.sum(-1), seen)
    assert bool((mass[..., :-1] >= mass[..., 1:]).all())
    empty = mass == 0  # an interest with no item repeats the heaviest, so it changes no max
    assert torch.allclose(vectors[empty], vectors[:, :, :1].expand_as(vectors)[empty])
    assert bool(empty[0, 0, 1:].all())  # position 0 has seen one item


def test_the_capsule_tower_is_causal_and_trains():
    torch.manual_seed(0)
    model = two_tower(N_ITEMS, SETTINGS)
    history = torch.randint(1, N_ITEMS + 1, (3, 8))
    every = model.user_tower(history, every_position=True)
    changed = history.clone()
    changed[:, -1] = (changed[:, -1] % N_ITEMS) + 1
    assert torch.allclose(model.user_tower(changed, every_position=True)[:, :-1], every[:, :-1], atol=1e-6)
    users = every[:, :-1].reshape(-1, 3, 16)
    loss = sampled_softmax_loss(users, history[:, 1:].reshape(-1), model, None)
    loss.backward()
    grads = [p.grad for p in model.user_tower.head.parameters()]
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)
    assert float(sum(g.abs().max() for g in grads)) < 1e3  # no exploding straight-through / empty-cluster gradient


def test_label_aware_loss_scores_every_candidate_against_the_interest_nearest_the_positive():
    torch.manual_seed(0)
    model = two_tower(N_ITEMS, SETTINGS).eval()
    positives = torch.tensor([3, 7, 11])
    items = model.item_tower(positives).detach()
    users = torch.nn.functional.normalize(torch.randn(3, 3, 16), dim=-1)
    users[0, 2] = items[0]  # example 0's third interest is its positive
    chosen = nearest_vector(users, items)
    assert torch.equal(chosen[0, 0], items[0])
    nearest = torch.einsum("nvd,nd->nv", users, items).argmax(1)
    assert torch.equal(chosen[:, 0], users[torch.arange(3), nearest])
    with torch.no_grad():
        got = sampled_softmax_loss(users, positives, model, None)
        logits = chosen[:, 0] @ items.T / model.temperature  # every candidate against the chosen interest
        want = torch.nn.functional.cross_entropy(logits, torch.arange(3))
    assert torch.allclose(got, want, atol=1e-5)


def test_round_robin_takes_each_interests_best_in_turn_without_repeats():
    ids = np.array([[1, 2, 3, 4], [5, 1, 6, 7], [8, -1, -1, -1]])
    scores = np.array([[0.9, 0.8, 0.7, 0.6], [0.5, 0.4, 0.3, 0.2], [0.1, 0, 0, 0]])
    found, got_scores, origin = round_robin(ids, scores, 6)
    assert found.tolist() == [1, 5, 8, 2, 3, 6]  # interest 1's "1" was already taken
    assert origin.tolist() == [0, 1, 2, 0, 0, 1]
    assert got_scores.tolist() == [0.9, 0.5, 0.1, 0.8, 0.7, 0.3]
    assert round_robin(ids, scores, 20)[0].tolist() == [1, 5, 8, 2, 3, 6, 4, 7]


def test_a_conditional_tower_needs_item_interests_and_uses_the_condition():
    settings = dataclasses.replace(SETTINGS, user_head="projections", user_vectors=1, conditional=True)
    with pytest.raises(ValueError, match="needs each item's interest"):
        two_tower(N_ITEMS, settings)
    torch.manual_seed(0)
    model = two_tower(N_ITEMS, settings, interests=INTERESTS).eval()
    history = torch.randint(1, N_ITEMS + 1, (2, 8))
    one, two = (model.user_tower(history, interests=torch.tensor([i, i])) for i in (1, 2))
    assert not torch.allclose(one, two)
    plain = two_tower(N_ITEMS, dataclasses.replace(settings, conditional=False)).eval()
    with pytest.raises(ValueError, match="not conditional"):
        plain.user_tower(history, interests=torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="not supported"):
        dataclasses.replace(settings, members=2)


def test_capsule_and_conditional_models_save_and_load_with_their_interests(tmp_path):
    torch.manual_seed(0)
    for settings in (
        SETTINGS,
        dataclasses.replace(SETTINGS, user_head="projections", user_vectors=1, conditional=True),
    ):
        model = two_tower(N_ITEMS, settings, interests=INTERESTS).eval()
        loaded = load_model(model.save(tmp_path / settings.user_head))
        history = torch.randint(1, N_ITEMS + 1, (2, 8))
        condition = torch.tensor([2, 3]) if settings.conditional else None
        assert torch.allclose(
            loaded.user_tower(history, interests=condition), model.user_tower(history, interests=condition)
        )
        if settings.conditional:
            assert torch.equal(loaded.item_interests, INTERESTS)


def retrieval_of(model) -> Retrieval:
    """A Retrieval over two exact shards of the model's item vectors (as build_index makes them)."""
    with torch.no_grad():
        items = model.all_items().numpy()
    ids = np.arange(1, N_ITEMS + 1, dtype=np.int64)
    shards, infos = [], []
    for part in np.array_split(np.arange(N_ITEMS), 2):
        shard = empty_index(items.shape[1], "Flat")
        shard.add_with_ids(items[part], ids[part])
        shards.append(shard)
        infos.append(ShardInfo(f"s{len(infos)}", len(part), int(ids[part].min()), int(ids[part].max()), ""))
    d = IndexDescription(
        "two_tower", "v0001", items.shape[1], "Flat", "", faiss.__version__, 1.0, N_ITEMS, tuple(infos)
    )
    pins = [f"p{i}" for i in range(1, N_ITEMS + 1)]
    return Retrieval(model, pins, ShardedIndex(d, shards, exact_filter_below=0), "v0001", "s", ["a", "b", "c", "d"])


def test_conditional_retrieval_returns_only_that_interests_pins_ranked_by_the_conditioned_vector():
    torch.manual_seed(0)
    settings = dataclasses.replace(SETTINGS, user_head="projections", user_vectors=1, conditional=True)
    model = two_tower(N_ITEMS, settings, interests=INTERESTS).eval()
    retrieval = retrieval_of(model)
    history = ["p1", "p2", "p6"]
    got = retrieval.top_k(history, 5, interest="c")  # interest id 3: items 2, 6, 10, ...
    assert len(got) == 5 and all(int(INTERESTS[int(c.pin[1:])]) == 3 for c in got)
    assert "p2" not in {c.pin for c in got} and "p6" not in {c.pin for c in got}  # engaged: left out
    row = retrieval.history_row(history)
    user = model.user_tower.encode(row, interests=torch.tensor([3]))[0, 0]
    scores = (model.all_items() @ user).detach()
    allowed = [i for i in range(1, N_ITEMS + 1) if INTERESTS[i] == 3 and i not in (2, 6)]
    want = sorted(allowed, key=lambda i: -float(scores[i - 1]))[:5]
    assert [c.pin for c in got] == [f"p{i}" for i in want]
    with pytest.raises(ValueError, match="unknown interest"):
        retrieval.top_k(history, 5, interest="zz")


def test_multi_interest_retrieval_merges_per_interest_lists_round_robin():
    torch.manual_seed(0)
    model = two_tower(N_ITEMS, SETTINGS).eval()
    retrieval = retrieval_of(model)
    history = [f"p{i}" for i in (1, 9, 17, 4, 30, 22)]
    got = retrieval.top_k(history, 9)
    row = retrieval.history_row(history)
    vectors, mass = model.user_tower.encode_with_mass(row)
    live = [v for v in range(3) if mass[0, v] > 0]
    scores = (vectors[0] @ model.all_items().T).detach()
    engaged = {1, 9, 17, 4, 30, 22}
    lists = [[i + 1 for i in scores[v].argsort(descending=True).tolist() if i + 1 not in engaged] for v in live]
    want = round_robin(np.array(lists), np.zeros((len(live), len(lists[0]))), 9)
    assert [c.pin for c in got] == [f"p{i}" for i in want[0]]
    assert [c.interest for c in got] == [live[o] for o in want[2]]
    assert len(got) == len({c.pin for c in got}) == 9
    assert [c.pin for c in retrieval.top_k(history, 9, interests=1)] == [f"p{i}" for i in lists[0][:9]]
