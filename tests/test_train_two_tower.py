import datetime as dt
import json

import pytest
import torch

from jobs import simulate, train_two_tower
from models.artifacts.registry import Registry
from models.retrieval.retriever import Retriever
from models.retrieval.sequences import leave_one_out
from models.retrieval.two_tower import load_model
from schemas import user_engagements as UE

START = dt.datetime(2020, 1, 1)


def engagements(spark, walks, source="s3rec_tiny", shuffle_seed=0):
    """One row per (user, position), in a scrambled order: the job must sort by event time."""
    rows = [
        (
            f"u{u}",
            f"i{item:03d}",
            UE.EVENT_INTERACTION,
            START + dt.timedelta(hours=k),
            START.date(),
            k,
            None,
            None,
            source,
        )
        for u, walk in enumerate(walks)
        for k, item in enumerate(walk)
    ]
    g = torch.Generator().manual_seed(shuffle_seed)
    rows = [rows[i] for i in torch.randperm(len(rows), generator=g).tolist()]
    return spark.createDataFrame(rows, UE.USER_ENGAGEMENTS_V1)


def test_sequences_are_ordered_indexed_and_split_leave_one_out(spark):
    df = engagements(spark, [[5, 3, 9, 1], [3, 5]])
    index = train_two_tower.item_index(df)
    assert [(r.pin_id, r.item_index) for r in index.orderBy("item_index").collect()] == [
        ("i001", 1),
        ("i003", 2),
        ("i005", 3),
        ("i009", 4),
    ]
    seqs = {r.user_id: list(r["items"]) for r in train_two_tower.user_sequences(df, index).collect()}
    assert seqs == {"u0": [3, 2, 4, 1], "u1": [2, 3]}
    counts = {
        r.item_index: r["count"]
        for r in train_two_tower.train_counts(train_two_tower.user_sequences(df, index)).collect()
    }
    assert counts == {3: 2, 2: 2}  # u0's first two items, and both of u1's (too short to evaluate)

    split = leave_one_out([seqs["u0"], seqs["u1"]], max_len=3)
    assert split.train.rows.tolist() == [[0, 0, 3, 2], [0, 0, 2, 3]]  # u1 (2 items) trains on both
    assert split.validation.rows.tolist() == [[0, 3, 2, 4]]  # target 4, the second-to-last
    assert split.test.rows.tolist() == [[3, 2, 4, 1]]  # target 1, the last


def learnable_lake(spark, lake, cfg_for, n_items=25):
    """Walks whose next item is this item + 1 (learnable), attributes a<i % 5>; and the tiny config."""
    g = torch.Generator().manual_seed(0)
    walks = [[(s + k) % n_items + 1 for k in range(8)] for s in torch.randint(0, n_items, (200,), generator=g).tolist()]
    lake.replace_slice(engagements(spark, walks), "user_engagements", "source = 's3rec_tiny'")
    attributes = [(f"i{i:03d}", f"a{i % 5}", "s3rec_tiny") for i in range(1, n_items + 1)]
    lake.replace_slice(
        spark.createDataFrame(attributes, "pin_id string, attribute string, source string"),
        "item_attributes",
        "source = 's3rec_tiny'",
    )
    return lambda *more: cfg_for(*TINY_JOB, *more)


TINY_JOB = (
    "two_tower.source=s3rec_tiny",
    "two_tower.item_attributes=true",
    "two_tower.model.dim=16",
    "two_tower.model.max_len=6",
    "two_tower.model.layers=1",
    "two_tower.model.dropout=0.0",
    "two_tower.model.id_dropout=0.0",
    "two_tower.model.history_dropout=0.0",
    "two_tower.training.epochs=30",
    "two_tower.training.batch_size=32",
    "two_tower.training.lr=1.0e-2",
    "two_tower.training.eval_every=5",
    "two_tower.training.patience=3",
    "two_tower.training.progress=false",
    "two_tower.eval_index_factory=Flat",
    "two_tower.eval_index_params=''",
)


@pytest.mark.slow  # trains 30 epochs through the job: in `make test-slow`
def test_job_trains_publishes_and_the_artifact_retrieves(spark, lake, cfg_for):
    cfg = learnable_lake(spark, lake, cfg_for)()
    report = train_two_tower.run(spark, cfg)
    assert (report.version, report.users, report.items) == ("v0001", 200, 25)
    assert report.test["hr@10"] > 0.9  # next item = this item + 1: learnable, and learned
    assert "HR@10=" in report.line() and report.train_seconds > 0  # the bench reads it here: not in the artifact
    for k in (5, 10, 20):  # an exact (Flat) index retrieves what the full ranking ranks
        assert report.ann[f"hr@{k}"] == report.test[f"hr@{k}"]
        assert report.ann[f"ndcg@{k}"] == pytest.approx(report.test[f"ndcg@{k}"], abs=1e-12)

    registry = Registry(lake.artifacts_path())
    registry.verify("two_tower", "v0001")
    manifest = registry.manifest("two_tower", "v0001")
    assert manifest["inputs"]["source"] == "s3rec_tiny" and manifest["metrics"]["test"]["hr@10"] == report.test["hr@10"]
    assert manifest["inputs"]["attributes"] == 5
    folder = registry.path("two_tower", "v0001")
    items = json.loads((folder / "items.json").read_text())
    model = load_model(folder / "model")
    assert model.item_tower.features.attributes[1:].max() == 5 and (model.item_tower.features.attributes[1:] > 0).all()
    history = torch.tensor([[0, 0, 0, 0, items.index("i004") + 1, items.index("i005") + 1]])
    top, _ = Retriever(model).top_k(history, 1)
    assert items[int(top[0, 0]) - 1] == "i006"
    assert "gate passed" in report.gate and report.candidate  # no production yet: the candidate
    assert registry.candidate("two_tower") == "v0001" and registry.current("two_tower") is None


def shuffle_parameters(model, seed: int = 0) -> None:
    """Each parameter's values randomly permuted in place: a broken model of the same shape."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.flatten()[torch.randperm(p.numel(), generator=g)].reshape(p.shape))


@pytest.mark.slow  # trains twice
def test_the_gate_rejects_a_two_tower_with_shuffled_weights(spark, lake, cfg_for):
    config = learnable_lake(spark, lake, cfg_for)
    registry = Registry(lake.artifacts_path())
    train_two_tower.run(spark, config())
    registry.promote("two_tower", "v0001")  # as build_index does with its index
    cfg = config("two_tower.training.seed=1", "two_tower.gate.tolerance=0.0")
    outputs = train_two_tower.trained(spark, cfg)
    shuffle_parameters(outputs.model)
    report = train_two_tower.write(outputs, lake, cfg.two_tower, config=cfg.to_dict())
    assert report.version == "v0002" and not report.candidate
    assert "gate REJECTED" in report.gate and "production stays two_tower/v0001" in report.gate
    assert registry.current("two_tower") == "v0001" and registry.candidate("two_tower") is None
    decision = registry.gates("two_tower")[-1]
    assert decision["production"] > 0.9 and decision["candidate"] < 0.5


@pytest.mark.slow  # trains once
def test_a_first_two_tower_with_shuffled_weights_is_rejected_by_the_popularity_floor(spark, lake, cfg_for):
    """No production to compare with: the floor alone rejects it, and the family stays without a
    candidate or production (embed_pins and build_index have nothing to build)."""
    from models.artifacts.registry import NoProductionModel

    config = learnable_lake(spark, lake, cfg_for)
    registry = Registry(lake.artifacts_path())
    cfg = config()
    outputs = train_two_tower.trained(spark, cfg)
    popularity = outputs.metrics["popularity_test"]["ndcg@10"]
    assert 0 < popularity < outputs.metrics["test"]["ndcg@10"]  # the trained model beats it
    shuffle_parameters(outputs.model)
    report = train_two_tower.write(outputs, lake, cfg.two_tower, config=cfg.to_dict())
    assert report.version == "v0001" and not report.candidate
    assert "gate REJECTED" in report.gate and "does not beat popularity" in report.gate
    assert f"popularity {popularity:.4f}" in report.gate and "two_tower has no production model" in report.gate
    assert registry.current("two_tower") is None and registry.candidate("two_tower") is None
    [decision] = registry.gates("two_tower")
    assert decision["baselines"] == {"popularity": popularity} and decision["candidate"] < popularity
    with pytest.raises(NoProductionModel, match="its gate rejected two_tower/v0001"):
        registry.resolve_next("two_tower")


def test_item_attributes_become_dense_indices_most_frequent_first(spark):
    index = spark.createDataFrame([("a", 1), ("b", 2), ("c", 3)], "pin_id string, item_index int")
    rows = [("a", "x"), ("a", "y"), ("a", "z"), ("b", "y"), ("c", "y"), ("c", "z"), ("unknown", "w"), ("a", "x")]
    attributes = spark.createDataFrame([(p, a, "s") for p, a in rows], "pin_id string, attribute string, source string")
    got = train_two_tower.item_attributes(attributes, index, max_per_item=2).collect()
    by_item = {}
    for r in got:
        by_item.setdefault(r.item_index, []).append((r["rank"], r.attribute_index))
    # y is on 3 items -> 1, z on 2 -> 2, x on 1 -> 3; w belongs to no known item; a keeps its 2 most frequent
    assert {i: sorted(v) for i, v in by_item.items()} == {1: [(1, 1), (2, 2)], 2: [(1, 1)], 3: [(1, 1), (2, 2)]}


def test_asking_for_attributes_a_source_lacks_trains_on_ids_and_says_so(spark, lake, cfg_for, caplog):
    walks = [[(s + k) % 12 + 1 for k in range(6)] for s in range(40)]
    lake.replace_slice(engagements(spark, walks, source="s3rec_bare"), "user_engagements", "source = 's3rec_bare'")
    cfg = cfg_for(
        "two_tower.source=s3rec_bare",
        "two_tower.item_attributes=true",
        "two_tower.model.dim=8",
        "two_tower.model.max_len=4",
        "two_tower.model.layers=1",
        "two_tower.training.epochs=2",
        "two_tower.training.eval_every=1",
        "two_tower.training.progress=false",
        "two_tower.eval_index_factory=Flat",
        "two_tower.eval_index_params=''",
    )
    with caplog.at_level("WARNING", logger="jobs.train_two_tower"):
        out = train_two_tower.trained(spark, cfg)
    assert out.inputs["attributes"] == 0 and out.model.item_tower.features.attribute_bag is None
    assert "'s3rec_bare' has no item_attributes" in caplog.text


@pytest.mark.slow  # Spark prep and a 2-epoch job (~75 s): in `make test-slow`
def test_a_conditional_job_learns_each_items_broadest_attribute_as_its_interest(spark, lake, cfg_for):
    """Items' interests come from item_attributes (the catalogue's most frequent attribute of
    each item), are saved with the model and named in interests.json; without attributes a
    conditional model is refused."""
    cfg = learnable_lake(spark, lake, cfg_for)(
        "two_tower.item_attributes=false", "two_tower.model.conditional=true", "two_tower.training.epochs=2"
    )
    extra = [("i001", "a9", "s3rec_tiny"), ("i002", "a9", "s3rec_tiny")]  # a rarer second attribute
    lake.replace_slice(
        lake.read(spark, "item_attributes").union(
            spark.createDataFrame(extra, "pin_id string, attribute string, source string")
        ),
        "item_attributes",
        "source = 's3rec_tiny'",
    )
    prepared = train_two_tower.transform(train_two_tower.read(spark, cfg))
    data = train_two_tower.collect(prepared)
    assert data.attributes is None  # item_attributes=false: no content features, interests only
    names = {i: data.interest_names[int(data.interests[i]) - 1] for i in range(1, len(data.item_ids) + 1)}
    assert {data.item_ids[i - 1]: n for i, n in names.items()} == {
        f"i{i:03d}": f"a{i % 5}" for i in range(1, 26)
    }  # a9 (2 items) never beats the item's a<i % 5> (5 items)
    report = train_two_tower.run(spark, cfg)
    folder = Registry(lake.artifacts_path()).path("two_tower", report.version)
    assert json.loads((folder / "interests.json").read_text()) == data.interest_names
    assert torch.equal(load_model(folder / "model").item_interests, data.interests)

    lake.replace_slice(
        spark.createDataFrame([], "pin_id string, attribute string, source string"),
        "item_attributes",
        "source = 's3rec_tiny'",
    )
    with pytest.raises(ValueError, match="conditional needs each item's interest"):
        train_two_tower.collect(train_two_tower.transform(train_two_tower.read(spark, cfg)))


@pytest.mark.slow  # a simulated lake and the Spark preparation (~60 s)
def test_on_simulated_data_a_conditional_models_interests_are_the_pins_topics(spark, lake, cfg_for):
    sizes = ["simulate.days=1", "simulate.impressions_per_day=4000", "simulate.n_pins=480", "simulate.n_topics=6"]
    simulate.run(spark, cfg_for(*sizes))
    cfg = cfg_for(*sizes, "two_tower.source=simulated", "two_tower.model.conditional=true")
    data = train_two_tower.collect(train_two_tower.transform(train_two_tower.read(spark, cfg)))
    assert sorted(data.interest_names) == [f"sim-t{k}" for k in range(6)]
    for i, pin in enumerate(data.item_ids, start=1):
        assert data.interest_names[int(data.interests[i]) - 1] == f"sim-t{int(pin.removeprefix('sim-p')) % 6}"


def test_the_jobs_line_carries_a_convergence_warning():
    metrics = {f"{m}@{k}": 0.5 for m in ("hr", "ndcg") for k in (10, 20)}
    report = train_two_tower.TwoTowerRunReport(
        "v0001",
        "s3rec_x",
        10,
        20,
        200,
        metrics,
        {**metrics, "factory": "Flat", "params": ""},
        warning="not converged: validation NDCG@10 was still improving at the epoch cap (best epoch 200 of 200)",
    )
    assert report.line().endswith(
        "; WARNING not converged: validation NDCG@10 was still improving at the epoch cap (best epoch 200 of 200)"
    )
    assert (
        "WARNING"
        not in train_two_tower.TwoTowerRunReport(
            "v0001", "s3rec_x", 10, 20, 50, metrics, {**metrics, "factory": "Flat", "params": ""}
        ).line()
    )
