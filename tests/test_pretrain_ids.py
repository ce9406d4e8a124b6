"""Pre-trained ID embeddings (jobs/pretrain_ids.py, models/retrieval/id_pretraining.py): the
pairs, what they learn, the window and its leakage refusal, frozen and fine-tuned starts."""

import json

import pytest
import torch
from torch.nn import functional as F

from jobs import pretrain_ids, train_two_tower
from jobs.pretrained_ids import evaluation_events_inside, windows
from models.artifacts.registry import Registry
from models.retrieval.id_pretraining import (
    ItemInit,
    aligned_vectors,
    co_engagement_pairs,
    pretrain,
    user_item_pairs,
)
from models.retrieval.sequences import leave_one_out
from models.retrieval.training import fit_members
from models.retrieval.two_tower_settings import PretrainSettings, TwoTowerSettings, TwoTowerTrainSettings
from tests.test_train_two_tower import engagements, learnable_lake

TINY = TwoTowerSettings(dim=16, max_len=6, layers=1, heads=2, dropout=0.0, history_dropout=0.0)
PRETRAIN_TINY = (
    "pretrain_ids.settings.epochs=20",
    "pretrain_ids.settings.batch_size=256",
    "pretrain_ids.settings.lr=1.0e-2",
    "pretrain_ids.settings.progress=false",
)


def test_co_engagement_pairs_are_items_at_most_window_apart_both_ways():
    pairs = {tuple(p) for p in co_engagement_pairs([[1, 2, 3, 2], [4]], window=2).tolist()}
    assert pairs == {(1, 2), (2, 1), (2, 3), (3, 2), (1, 3), (3, 1)}  # 2..2 is no pair; [4] has none
    assert user_item_pairs([[5, 6], [7]]).tolist() == [[0, 5], [0, 6], [1, 7]]


def test_pretraining_puts_co_engaged_items_next_to_each_other():
    n = 30
    walks = [[(s + k) % n + 1 for k in range(8)] for s in range(n) for _ in range(4)]  # next item = this + 1
    vectors = pretrain(walks, n, PretrainSettings(dim=16, epochs=30, batch_size=256, lr=1e-2, progress=False))
    assert vectors.items.shape == (n + 1, 16) and vectors.users.shape == (len(walks), 16)
    assert torch.allclose(vectors.items[1:].norm(dim=-1), torch.ones(n), atol=1e-5) and not vectors.items[0].any()
    cosine = vectors.items[1:] @ vectors.items[1:].T
    cosine.fill_diagonal_(-2.0)
    neighbour = cosine.argmax(1)  # 0-based: item i+1's nearest other item
    ring = torch.arange(n)
    adjacent = ((neighbour - ring) % n <= 3) | ((ring - neighbour) % n <= 3)  # within the window on the ring
    assert adjacent.float().mean() > 0.9
    user = vectors.users[0]  # user 0's walk: items 1..8
    assert (vectors.items[1:9] @ user).mean() > (vectors.items[15:23] @ user).mean() + 0.3


def test_pretrained_rows_are_aligned_to_the_two_towers_item_list():
    vectors = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # rows for "a", "b"
    rows, found = aligned_vectors(vectors, ["a", "b"], ["b", "new", "a"])
    assert found.tolist() == [False, True, False, True]
    assert rows.tolist() == [[0, 0], [0, 1], [0, 0], [1, 0]]


def _split():
    walks = [[(s + k) % 12 + 1 for k in range(7)] for s in range(48)]
    return leave_one_out(walks, 6), torch.bincount(torch.tensor([i for w in walks for i in w[:-2]]), minlength=13)


@pytest.mark.parametrize("frozen", [True, False])
def test_a_two_tower_starts_from_the_pretrained_rows_frozen_or_fine_tuned(frozen):
    split, counts = _split()
    torch.manual_seed(0)
    vectors = F.normalize(torch.randn(13, 16), dim=-1)
    found = torch.ones(13, dtype=torch.bool)
    found[0] = found[12] = False  # padding, and an item the pre-training never saw
    training = TwoTowerTrainSettings(epochs=3, eval_every=1, patience=5, batch_size=16, lr=1e-2, progress=False)
    fit = fit_members(
        12, TINY, None, split.train, split.validation, counts, training, None, ItemInit(vectors, found, frozen)
    )
    table = fit.model.item_tower.features.ids.weight.detach()
    direction = F.normalize(table[1:12], dim=-1)
    if frozen:
        assert torch.allclose(direction, vectors[1:12], atol=1e-6)  # kept as pre-trained
        assert not fit.model.item_tower.features.ids.weight.requires_grad
    else:
        assert not torch.allclose(direction, vectors[1:12], atol=1e-3)  # trained further
        assert (direction * vectors[1:12]).sum(-1).mean() > 0.5  # from there
    scale = table[1:12].norm(dim=-1)
    assert frozen is False or torch.allclose(scale, scale[0].expand_as(scale), atol=1e-5)  # one norm: the table's


def test_a_pretrained_table_of_another_width_is_refused():
    split, counts = _split()
    training = TwoTowerTrainSettings(epochs=1, progress=False)
    init = ItemInit(torch.zeros(13, 8), torch.ones(13, dtype=torch.bool), False)
    with pytest.raises(ValueError, match=r"pretrain_ids.settings.dim = two_tower.model.dim"):
        fit_members(12, TINY, None, split.train, split.validation, counts, training, None, init)


def test_the_window_ends_before_each_users_evaluation_events_and_a_leaking_one_is_found(spark):
    df = engagements(spark, [[5, 3, 9, 1, 7], [3, 5], [2, 4, 6]])  # event k of each user at hour k
    window = {r.user_id: (list(r.pins), r.end.i) for r in windows(df, 2).collect()}
    assert window == {"u0": (["i005", "i003", "i009"], 2), "u2": (["i002"], 0)}  # u1: no event before its last 2
    assert evaluation_events_inside(df, windows(df, 2)).count() == 0
    inside = evaluation_events_inside(df, windows(df, 1))
    assert sorted(r.user_id for r in inside.collect()) == ["u0", "u2"]  # their validation event was read
    # engagements that grew since the pre-training: the old window is before the new evaluation events
    grown = engagements(spark, [[5, 3, 9, 1, 7, 8, 8], [3, 5], [2, 4, 6, 8, 9]])
    assert evaluation_events_inside(grown, windows(df, 1)).count() == 0


@pytest.mark.slow  # pre-trains and trains a two-tower through the jobs
def test_pretrain_ids_publishes_and_a_two_tower_starts_from_it_or_is_refused_when_its_window_leaks(
    spark, lake, cfg_for
):
    config = learnable_lake(spark, lake, cfg_for)
    report = pretrain_ids.run(spark, config(*PRETRAIN_TINY))
    assert (report.version, report.users, report.items, report.promoted) == ("v0001", 200, 25, True)
    assert report.events == 200 * 6  # 8 events each, the last 2 kept out
    registry = Registry(lake.artifacts_path())
    registry.verify("pretrain_ids", "v0001")
    manifest = registry.manifest("pretrain_ids", "v0001")
    assert manifest["inputs"]["source"] == "s3rec_tiny" and manifest["inputs"]["window"]["holdout_events"] == 2
    assert manifest["config"]["pretrain_ids"]["dim"] == 16  # dim 0: the two-tower's
    assert pretrain_ids.run(spark, config(*PRETRAIN_TINY)).version == "v0001"  # the same settings and inputs
    folder = registry.path("pretrain_ids", "v0001")
    assert len(json.loads((folder / "items.json").read_text())) == 25

    cfg = config("two_tower.pretrained_ids.version=production", "two_tower.pretrained_ids.mode=frozen")
    outputs = train_two_tower.trained(spark, cfg)
    record = outputs.inputs["pretrained_ids"]
    assert record["version"] == "v0001" and record["mode"] == "frozen" and record["items_found"] == 25
    assert outputs.metrics["test"]["hr@10"] > 0.9  # the learnable walks, learned from frozen IDs
    assert outputs.model.settings.id_dropout == 0.0  # frozen: the model's own ID dropout

    tuned = train_two_tower.trained(spark, config("two_tower.pretrained_ids.version=v0001"))
    assert tuned.model.settings.id_dropout == 0.5 and tuned.inputs["pretrained_ids"]["mode"] == "finetune"

    # auto: the kept version of the same settings and inputs, else pre-trained now (not promoted)
    auto = train_two_tower.trained(spark, config(*PRETRAIN_TINY, "two_tower.pretrained_ids.version=auto"))
    assert auto.inputs["pretrained_ids"]["version"] == "v0001" and registry.versions("pretrain_ids") == ["v0001"]
    other = config(*PRETRAIN_TINY, "pretrain_ids.settings.epochs=2", "two_tower.pretrained_ids.version=auto")
    assert train_two_tower.trained(spark, other).inputs["pretrained_ids"]["version"] == "v0002"
    assert registry.current("pretrain_ids") == "v0001"

    pretrain_ids.run(spark, config(*PRETRAIN_TINY, "pretrain_ids.settings.holdout_events=1"))  # reads validation
    with pytest.raises(train_two_tower.PretrainingLeak, match="evaluation events of 200 users .* pretrain_ids v0003"):
        train_two_tower.trained(spark, config("two_tower.pretrained_ids.version=production"))
    with pytest.raises(ValueError, match="pretrain_ids.gate.enabled must be false"):
        config("pretrain_ids.gate.enabled=true")
