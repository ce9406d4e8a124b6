import datetime as dt
import json

import numpy as np
import pytest
from pyspark.sql import functions as F
from transformers import AutoTokenizer

from jobs import train_teacher
from jobs.train_teacher import labeled_pairs, load_pairs, split_by_query
from models.int8 import Int8Plan, linear_layers
from models.metrics import evaluate_relevance
from models.random_models import save_random_backbone
from models.registry import Registry
from models.teacher import CrossEncoderTeacher
from models.teacher_training import TrainSettings, encode_pairs, predict_proba
from schemas import human_labels as HL
from schemas import pin_text_features as PTF

ITEMS = ["sofa", "lamp", "rug", "desk", "chair", "vase", "mirror", "shelf"]
LABELS = "label_id string, query string, pin_id string, relevance int, scale_max int, source string"


def feature_rows(n_pins=40):
    """Pin i is about ITEMS[i % 8]."""
    return [(f"p{i}", f"[title] {['grey', 'oak', 'small', 'large'][i % 4]} {ITEMS[i % len(ITEMS)]} for the home")
            for i in range(n_pins)]


def label_rows(n=240, seed=0, n_pins=40):
    """Relevance 4 when the pin is about the query's item, 1 otherwise."""
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n):
        item = ITEMS[k % len(ITEMS)]
        pin = int(rng.integers(n_pins))
        rows.append((f"l{k:04d}", f"{item} ideas", f"p{pin}", 4 if ITEMS[pin % len(ITEMS)] == item else 1, 4, "test"))
    return rows


def features_df(spark, rows):
    df = spark.createDataFrame(rows, "pin_id string, pin_text string")
    extra = {f.name: F.lit(None).cast(f.dataType) for f in PTF.PIN_TEXT_FEATURES_V1.fields if f.name not in df.columns}
    extra[PTF.AS_OF] = F.lit(dt.date(2026, 11, 10))
    extra[PTF.FEATURE_VERSION] = F.lit("v1")
    return df.withColumns(extra).select(*PTF.PIN_TEXT_FEATURES_V1.fieldNames())


def test_bad_labels_are_quarantined_with_reasons_and_levels_are_mapped(spark):
    features = features_df(spark, [("p1", "oak desk"), ("p2", "grey rug"), ("p3", "   ")])
    labels = spark.createDataFrame([
        ("ok4", "desk", "p1", 4, 4, "a"), ("ok5", "rug", "p2", 3, 5, "b"), ("ok5top", "rug", "p2", 5, 5, "b"),
        ("null", "desk", "p1", None, 4, "a"), ("zero", "desk", "p1", 0, 4, "a"), ("high", "desk", "p1", 7, 4, "a"),
        ("scale", "desk", "p1", 1, 1, "a"), ("blank", "  ", "p1", 2, 4, "a"), ("nopin", "desk", "p9", 2, 4, "a"),
        ("notext", "desk", "p3", 2, 4, "a"), ("dup", "desk", "p1", 2, 4, "a"), ("dup", "desk", "p2", 3, 4, "a"),
    ], LABELS)
    labels = labels.withColumns({HL.RELEVANCE_VARIANCE: F.lit(None).cast("double"), HL.FOLD: F.lit(None).cast("int")})
    pairs, quarantine = labeled_pairs(labels, features, num_levels=4)
    assert {r.label_id: r.level for r in pairs.collect()} == {"ok4": 4, "ok5": 3, "ok5top": 4}
    reasons = {json.loads(r.raw)["label_id"]: r.reason for r in quarantine.collect() if json.loads(r.raw).get("label_id")}
    assert reasons == {
        "null": "relevance is null", "zero": "relevance 0 outside 1..4", "high": "relevance 7 outside 1..4",
        "scale": "scale_max must be >= 2, got 1", "blank": "empty query",
        "nopin": "no pin_text_features row (or empty text) for pin",
        "notext": "no pin_text_features row (or empty text) for pin", "dup": "duplicate label_id",
    }
    assert quarantine.count() == 9  # both copies of the duplicate
    assert {r.source for r in quarantine.collect()} == {"train_teacher"}
    only_b, _ = labeled_pairs(labels, features, num_levels=4, sources=["b"])
    assert sorted(r.label_id for r in only_b.collect()) == ["ok5", "ok5top"]


def test_split_keeps_each_query_on_one_side():
    queries = [f"q{i % 30}" for i in range(300)]
    is_val = split_by_query(queries, 0.2, seed=3)
    val_q = {q for q, v in zip(queries, is_val) if v}
    train_q = {q for q, v in zip(queries, is_val) if not v}
    assert len(val_q) == 6 and not (val_q & train_q) and len(train_q) == 24
    assert (split_by_query(queries, 0.2, seed=3) == is_val).all()
    assert not (split_by_query(queries, 0.2, seed=4) == is_val).all()
    assert split_by_query(["a", "b"], 0.9, 0).sum() == 1  # training keeps at least one query
    with pytest.raises(ValueError, match="at least 2 distinct queries"):
        split_by_query(["a", "a"], 0.2, 0)


@pytest.fixture
def teacher_lake(spark, lake, tmp_path):
    features = features_df(spark, feature_rows())
    lake.replace_slice(features, "pin_text_features", "feature_version = 'v1'")
    labels = spark.createDataFrame(label_rows() + [("bad1", "desk ideas", "p1", 9, 4, "test"),
                                                   ("bad2", "desk ideas", "p404", 2, 4, "test")], LABELS)
    labels = labels.withColumns({HL.RELEVANCE_VARIANCE: F.lit(None).cast("double"), HL.FOLD: F.lit(None).cast("int")})
    lake.replace_slice(labels.select(*HL.HUMAN_LABELS_V1.fieldNames()), "human_labels", "source = 'test'")
    return save_random_backbone(tmp_path / "bert", "bert")


def teacher_overrides(backbone, *more):
    return [f"teacher.model.backbone_path={backbone}", "teacher.model.head_hidden=32", "teacher.training.epochs=2",
            "teacher.training.max_length=32", "teacher.training.query_tokens=8", "teacher.training.batch_size=16",
            "teacher.training.progress=false", "teacher.validation_fraction=0.25", *more]


def test_job_publishes_a_reloadable_deterministic_teacher(spark, lake, cfg_for, teacher_lake):
    cfg = cfg_for(*teacher_overrides(teacher_lake, "teacher.training.lr=1.0e-3"))
    first = train_teacher.run(spark, cfg)
    assert (first.version, first.quarantined) == ("v0001", 2)
    metrics = json.loads((Registry(lake.artifacts_path()).path("teacher", "v0001") / "metrics.json").read_text())
    assert metrics["world_size"] == 1 and metrics["history"][0]["pairs_seen"] == first.train_pairs
    assert first.train_pairs + first.val_pairs == 240 and (first.train_queries, first.val_queries) == (6, 2)
    reasons = sorted(r.reason for r in lake.read(spark, "quarantine").filter("source = 'train_teacher'").collect())
    assert reasons == ["no pin_text_features row (or empty text) for pin", "relevance 9 outside 1..4"]

    registry = Registry(lake.artifacts_path())
    assert registry.current("teacher") == "v0001"
    registry.verify("teacher", "v0001")
    manifest = registry.manifest("teacher", "v0001")
    assert manifest["config"]["teacher"]["model"]["backbone_path"] == str(teacher_lake)
    assert manifest["inputs"]["val_queries"] == 2 and manifest["inputs"]["quarantined"] == 2
    assert manifest["metrics"]["validation"]["kappa"] == pytest.approx(first.kappa)
    folder = registry.path("teacher", "v0001")
    assert "quadratic weighted kappa" in (folder / "report.txt").read_text()
    cuts = json.loads((folder / "decoding.json").read_text())
    assert cuts["levels"] == [1, 2, 3, 4] and len(cuts["cuts"]) == 3
    assert json.loads((folder / "encoding.json").read_text()) == {"max_length": 32, "query_tokens": 8}
    # the CPU int8 plan was chosen on validation pairs and is what the scorer quantizes by
    plan = Int8Plan.load(folder)
    assert plan.pairs == first.val_pairs and set(plan.layer_error) == set(linear_layers(CrossEncoderTeacher.load(folder)))
    assert plan.spearman >= plan.target or len(plan.keep_fp32) == int(0.25 * len(plan.layer_error))
    assert metrics["int8"]["keep_fp32"] == list(plan.keep_fp32)

    # The published files are the trained model: reloaded, they reproduce the validation metrics.
    model = CrossEncoderTeacher.load(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer")
    rows, _, _ = load_pairs(spark, lake, cfg)
    val = rows[split_by_query(list(rows["query"]), 0.25, 0)]
    settings = TrainSettings(max_length=32, query_tokens=8)
    encoded = encode_pairs(tokenizer, list(val["query"]), list(val["text"]), settings, list(val["level"] - 1), list(val["query"]))
    probs = predict_proba(model, encoded, 64, tokenizer.pad_token_id)
    again = evaluate_relevance(encoded.query_ids, val["level"], probs, [1, 2, 3, 4])
    assert again.kappa == pytest.approx(first.kappa, abs=1e-6)
    assert again.ndcg_at_20 == pytest.approx(first.ndcg_at_20, abs=1e-6)

    # Same seed, same data: the same metrics, published as the next version.
    second = train_teacher.run(spark, cfg)
    assert second.version == "v0002"
    a = registry.manifest("teacher", "v0001")["metrics"]["validation"]
    b = registry.manifest("teacher", "v0002")["metrics"]["validation"]
    for key in ("kappa", "accuracy", "ndcg_at_20"):
        assert a[key] == pytest.approx(b[key], abs=1e-6)
    assert a["auroc_at"] == pytest.approx(b["auroc_at"], abs=1e-6)


def test_no_valid_labels_is_a_clear_error(spark, lake, cfg_for, teacher_lake):
    cfg = cfg_for(*teacher_overrides(teacher_lake, "teacher.label_sources=[nowhere]"))
    with pytest.raises(ValueError, match="no valid labeled pairs"):
        train_teacher.run(spark, cfg)


def test_torch_distributor_trains_data_parallel(spark, lake, cfg_for, teacher_lake):
    cfg = cfg_for(*teacher_overrides(teacher_lake, "teacher.distributed_processes=2", "teacher.training.epochs=1"))
    report = train_teacher.run(spark, cfg)
    folder = Registry(lake.artifacts_path()).path("teacher", report.version)
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    # each rank trained on every other batch: together they saw each pair once (less < 2 batches)
    assert report.train_pairs - 2 * 16 < metrics["history"][0]["pairs_seen"] <= report.train_pairs
    CrossEncoderTeacher.load(folder)
