import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F
from transformers import AutoTokenizer

from jobs import train_teacher
from jobs.score_impressions import resolve_teacher
from jobs.train_teacher import labeled_pairs, pairs_of
from models.artifacts.registry import NoProductionModel, Registry, RegistryError
from models.random_models import save_random_backbone
from models.relevance.int8 import Int8Plan, linear_layers, quantize_int8
from models.relevance.metrics import evaluate_relevance, spearman
from models.relevance.openvino_engine import OPENVINO_DIR, OpenVinoPlan
from models.relevance.splits import QuerySplit, assign_sides, split_by_query
from models.relevance.teacher import CrossEncoderTeacher
from models.relevance.teacher_inference import encode_pairs, predict_proba
from models.relevance.teacher_settings import TrainSettings
from schemas import human_labels as HL
from schemas import pin_text_features as PTF

ITEMS = ["sofa", "lamp", "rug", "desk", "chair", "vase", "mirror", "shelf"]
LABELS = "label_id string, query string, pin_id string, relevance int, scale_max int, source string"


def feature_rows(n_pins=40):
    """Pin i is about ITEMS[i % 8]."""
    return [
        (f"p{i}", f"[title] {['grey', 'oak', 'small', 'large'][i % 4]} {ITEMS[i % len(ITEMS)]} for the home")
        for i in range(n_pins)
    ]


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
    labels = spark.createDataFrame(
        [
            ("ok4", "desk", "p1", 4, 4, "a"),
            ("ok5", "rug", "p2", 3, 5, "b"),
            ("ok5top", "rug", "p2", 5, 5, "b"),
            ("null", "desk", "p1", None, 4, "a"),
            ("zero", "desk", "p1", 0, 4, "a"),
            ("high", "desk", "p1", 7, 4, "a"),
            ("scale", "desk", "p1", 1, 1, "a"),
            ("blank", "  ", "p1", 2, 4, "a"),
            ("nopin", "desk", "p9", 2, 4, "a"),
            ("notext", "desk", "p3", 2, 4, "a"),
            ("dup", "desk", "p1", 2, 4, "a"),
            ("dup", "desk", "p2", 3, 4, "a"),
        ],
        LABELS,
    )
    labels = labels.withColumns({HL.RELEVANCE_VARIANCE: F.lit(None).cast("double"), HL.FOLD: F.lit(None).cast("int")})
    pairs, quarantine = labeled_pairs(labels, features, num_levels=4)
    assert {r.label_id: r.level for r in pairs.collect()} == {"ok4": 4, "ok5": 3, "ok5top": 4}
    reasons = {
        json.loads(r.raw)["label_id"]: r.reason for r in quarantine.collect() if json.loads(r.raw).get("label_id")
    }
    assert reasons == {
        "null": "relevance is null",
        "zero": "relevance 0 outside 1..4",
        "high": "relevance 7 outside 1..4",
        "scale": "scale_max must be >= 2, got 1",
        "blank": "empty query",
        "nopin": "no pin_text_features row (or empty text) for pin",
        "notext": "no pin_text_features row (or empty text) for pin",
        "dup": "duplicate label_id",
    }
    assert quarantine.count() == 9  # both copies of the duplicate
    assert {r.source for r in quarantine.collect()} == {"train_teacher"}
    only_b, _ = labeled_pairs(labels, features, num_levels=4, sources=["b"])
    assert sorted(r.label_id for r in only_b.collect()) == ["ok5", "ok5top"]


def test_split_keeps_each_query_on_one_side():
    queries = [f"q{i % 30}" for i in range(300)]
    side = split_by_query(queries, 0.2, 0.1, seed=3)
    by_side = {
        name: {q for q, s in zip(queries, side, strict=True) if s == name} for name in ("train", "validation", "test")
    }
    assert [len(by_side[n]) for n in ("train", "validation", "test")] == [21, 6, 3]
    assert not (
        by_side["train"] & by_side["validation"]
        or by_side["train"] & by_side["test"]
        or by_side["validation"] & by_side["test"]
    )
    assert (split_by_query(queries, 0.2, 0.1, seed=3) == side).all()
    assert not (split_by_query(queries, 0.2, 0.1, seed=4) == side).all()
    assert sorted(split_by_query(["a", "b", "c"], 0.1, 0.1, 0)) == ["test", "train", "validation"]
    with pytest.raises(ValueError, match="at least 3 distinct queries"):
        split_by_query(["a", "b", "a"], 0.2, 0.2, 0)
    with pytest.raises(ValueError, match="none for training"):
        split_by_query(["a", "b", "c", "d"], 0.5, 0.5, 0)


def assert_int8_plan_is_true(folder, val_rows, pairs, seed):
    """The saved plan's figures are what the plan does: recomputed independently on the
    calibration sample, kept layers are the worst-first prefix, and none could be dropped."""
    plan = Int8Plan.load(folder)
    sample = val_rows.sample(n=min(pairs, len(val_rows)), random_state=seed)
    scorer_fp32 = CrossEncoderTeacher.load(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer")
    encoded = encode_pairs(
        tokenizer, list(sample["query"]), list(sample["text"]), TrainSettings(max_length=32, query_tokens=8)
    )
    levels = np.arange(1, 5, dtype=np.float64)

    def expected(model):
        return predict_proba(model, encoded, 16, tokenizer.pad_token_id) @ levels

    reference = expected(scorer_fp32)
    assert spearman(reference, expected(quantize_int8(scorer_fp32, plan.keep_fp32))) == pytest.approx(plan.spearman)
    worst_first = sorted(plan.layer_error, key=lambda n: (-plan.layer_error[n], n))
    assert list(plan.keep_fp32) == worst_first[: len(plan.keep_fp32)]
    if plan.keep_fp32:  # minimal: one layer fewer in fp32 misses the target
        fewer = spearman(reference, expected(quantize_int8(scorer_fp32, plan.keep_fp32[:-1])))
        assert fewer < plan.target
    return plan


@pytest.fixture
def teacher_lake(spark, lake, tmp_path):
    features = features_df(spark, feature_rows())
    lake.replace_slice(features, "pin_text_features", "feature_version = 'v1'")
    labels = spark.createDataFrame(
        label_rows() + [("bad1", "desk ideas", "p1", 9, 4, "test"), ("bad2", "desk ideas", "p404", 2, 4, "test")],
        LABELS,
    )
    fold = (F.substring(HL.LABEL_ID, -1, 1).cast("int") % 5 + 1).cast("int")  # l0000 -> 1, l0003 -> 4, ...
    labels = labels.withColumns({HL.RELEVANCE_VARIANCE: F.lit(None).cast("double"), HL.FOLD: fold})
    lake.replace_slice(labels.select(*HL.HUMAN_LABELS_V1.fieldNames()), "human_labels", "source = 'test'")
    return save_random_backbone(tmp_path / "bert", "bert")


def teacher_overrides(backbone, *more):
    return [
        f"teacher.model.backbone_path={backbone}",
        "teacher.model.head_hidden=32",
        "teacher.training.epochs=2",
        "teacher.training.max_length=32",
        "teacher.training.query_tokens=8",
        "teacher.training.batch_size=16",
        "teacher.training.progress=false",
        "teacher.validation_fraction=0.25",
        "teacher.openvino_export=false",  # ~4 s a teacher: on where the export is under test
        *more,
    ]


def test_job_publishes_a_reloadable_deterministic_teacher(spark, lake, cfg_for, teacher_lake):
    cfg = cfg_for(*teacher_overrides(teacher_lake, "teacher.training.lr=1.0e-3", "teacher.openvino_export=true"))
    first = train_teacher.run(spark, cfg)
    assert (first.version, first.quarantined) == ("v0001", 2)
    registry = Registry(lake.artifacts_path())
    folder = registry.path("teacher", "v0001")
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["world_size"] == 1 and metrics["history"][0]["pairs_seen"] == first.train_pairs
    assert first.train_pairs + first.val_pairs + first.test_pairs == 240
    reasons = sorted(r.reason for r in lake.read(spark, "quarantine").filter("source = 'train_teacher'").collect())
    assert reasons == ["no pin_text_features row (or empty text) for pin", "relevance 9 outside 1..4"]

    # The fixture is lexical (a pin is relevant when its text names the query's item): BM25 is
    # perfect on it, so this first version does not clear the gate's floor and is not promoted.
    assert not first.promoted and registry.current("teacher") is None
    assert "gate REJECTED" in first.gate and "does not beat bm25" in first.gate
    assert "bm25 1.0000, constant 0.0000" in first.gate and "teacher has no production model" in first.gate
    [decision] = registry.gates("teacher")
    assert decision["baselines"] == {"bm25": 1.0, "constant": 0.0} and decision["production_version"] is None
    with pytest.raises(NoProductionModel, match="'teacher' has no promoted version: its gate rejected"):
        resolve_teacher(lake, "teacher", "")
    registry.verify("teacher", "v0001")
    manifest = registry.manifest("teacher", "v0001")
    assert manifest["config"]["teacher"]["model"]["backbone_path"] == str(teacher_lake)
    inputs = manifest["inputs"]
    assert (inputs["train_queries"], inputs["validation_queries"], inputs["test_queries"]) == (4, 2, 2)
    assert inputs["quarantined"] == 2
    assert manifest["metrics"]["test"]["kappa"] == pytest.approx(first.kappa)
    assert manifest["metrics"]["bm25_on_test"]["n"] == manifest["metrics"]["constant_on_test"]["n"] == first.test_pairs
    assert "quadratic weighted kappa" in (folder / "report.txt").read_text()
    cuts = json.loads((folder / "decoding.json").read_text())
    assert cuts["levels"] == [1, 2, 3, 4] and len(cuts["cuts"]) == 3
    assert json.loads((folder / "encoding.json").read_text()) == {"max_length": 32, "query_tokens": 8}

    # The three slices are disjoint by query; test chose nothing (cuts are the validation's).
    rows, _ = pairs_of(train_teacher.read(spark, cfg), num_levels=4, label_sources=(), max_labels=0, seed=0)
    side = split_by_query(list(rows["query"]), 0.25, 0.25, 0)
    val, test = rows[side == "validation"], rows[side == "test"]
    assert len(test) == first.test_pairs and not set(val["query"]) & set(test["query"])
    # the CPU int8 plan was chosen on validation pairs and its figures are true
    plan = assert_int8_plan_is_true(folder, val.reset_index(drop=True), 256, 0)
    assert plan.pairs == first.val_pairs and set(plan.layer_error) == set(
        linear_layers(CrossEncoderTeacher.load(folder))
    )
    assert metrics["int8"]["keep_fp32"] == list(plan.keep_fp32)
    # ... and so was its OpenVINO export (the CPU engine), on the same pairs: its figures are recorded
    exported = OpenVinoPlan.load(folder / OPENVINO_DIR)
    assert exported.calibration_rows + exported.agreement_rows == first.val_pairs and exported.target == 0.993
    assert metrics["openvino"] == {
        "int8_spearman": exported.int8_agreement,
        "bf16_spearman": exported.bf16_agreement,
        "int8": exported.int8,
    }
    assert (folder / OPENVINO_DIR / "int8.xml").is_file() and exported.bf16_agreement > 0.99

    # The published files are the trained model: reloaded, they reproduce the test metrics.
    model = CrossEncoderTeacher.load(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer")
    settings = TrainSettings(max_length=32, query_tokens=8)
    encoded = encode_pairs(
        tokenizer, list(test["query"]), list(test["text"]), settings, list(test["level"] - 1), list(test["query"])
    )
    probs = predict_proba(model, encoded, 64, tokenizer.pad_token_id)
    again = evaluate_relevance(encoded.query_ids, test["level"], probs, [1, 2, 3, 4])
    assert again.kappa == pytest.approx(first.kappa, abs=1e-6)
    assert again.ndcg_at_20 == pytest.approx(first.ndcg_at_20, abs=1e-6)

    # The same config and inputs again: publishing is idempotent, the version they made comes back.
    assert train_teacher.run(spark, cfg).version == "v0001" and registry.versions("teacher") == ["v0001"]
    # Same seed, same data, another registry setting (so another version): the same metrics.
    second = train_teacher.run(
        spark, cfg_for(*teacher_overrides(teacher_lake, "teacher.training.lr=1.0e-3"), "teacher.registry_keep=6")
    )
    assert second.version == "v0002" and "gate REJECTED" in second.gate and not second.promoted
    a = registry.manifest("teacher", "v0001")["metrics"]
    b = registry.manifest("teacher", "v0002")["metrics"]
    for part in ("test", "validation"):
        for key in ("kappa", "accuracy", "ndcg_at_20"):
            assert a[part][key] == pytest.approx(b[part][key], abs=1e-6)
        assert a[part]["auroc_at"] == pytest.approx(b[part]["auroc_at"], abs=1e-6)


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


def test_holdout_folds_train_nothing_and_carry_the_metrics(spark, lake, cfg_for, teacher_lake):
    cfg = cfg_for(
        *teacher_overrides(
            teacher_lake,
            "teacher.training.epochs=1",
            "teacher.int8_calibration_pairs=0",
            "evaluation.holdout_folds=[3]",
        )
    )
    report = train_teacher.run(spark, cfg)
    rows, _ = pairs_of(train_teacher.read(spark, cfg), num_levels=4, label_sources=(), max_labels=0, seed=0)
    fold3 = rows[rows["fold"] == 3]
    assert report.test_pairs == len(fold3) > 0  # exactly the held-out fold is the test set
    assert report.train_pairs + report.val_pairs == len(rows) - len(fold3)  # and nothing of it trains
    manifest = Registry(lake.artifacts_path()).manifest("teacher", report.version)
    assert manifest["inputs"]["holdout_folds"] == [3]
    folder = Registry(lake.artifacts_path()).path("teacher", report.version)
    metrics = json.loads((folder / "metrics.json").read_text())
    assert "held-out folds [3]" in metrics["evaluation"]
    assert metrics["history"][0]["pairs_seen"] <= report.train_pairs  # trained on the non-held-out rows only


def test_assign_sides_holds_out_exactly_the_named_folds():
    rows = pd.DataFrame({"query": [f"q{i % 6}" for i in range(60)], "fold": [i % 4 + 1 for i in range(60)]})
    side = assign_sides(rows, QuerySplit(0.2, 0.2, 0), [2, 4])
    assert ((side == "test") == rows["fold"].isin([2, 4])).all()
    rest = rows[side != "test"]
    val_q, train_q = (
        set(rest["query"][side[side != "test"] == "validation"]),
        set(rest["query"][side[side != "test"] == "train"]),
    )
    assert val_q and train_q and not val_q & train_q  # the rest splits by query
    with pytest.raises(
        ValueError, match=r"no valid label is in evaluation.holdout_folds \[9\]; folds present: \[1, 2, 3, 4\]"
    ):
        assign_sides(rows, QuerySplit(0.2, 0.2, 0), [9])
    with pytest.raises(ValueError, match="none left to train on"):
        assign_sides(rows, QuerySplit(0.2, 0.2, 0), [1, 2, 3, 4])
    no_folds = assign_sides(rows, QuerySplit(0.2, 0.2, 0), [])
    assert (no_folds == split_by_query(list(rows["query"]), 0.2, 0.2, 0)).all()


def test_a_lora_teacher_pins_its_base_model_and_a_swapped_base_is_refused(spark, lake, cfg_for, teacher_lake):
    cfg = cfg_for(*teacher_overrides(teacher_lake, "teacher.model.lora_r=4", "teacher.training.epochs=1"))
    report = train_teacher.run(spark, cfg)
    registry = Registry(lake.artifacts_path())
    pinned = registry.manifest("teacher", report.version)["external"]["base model"]
    assert pinned["path"] == str(teacher_lake.resolve())
    assert {"config.json", "model.safetensors"} <= set(pinned["files"])
    teacher, _ = resolve_teacher(lake, "teacher", report.version)  # verified: the base is the one it was built on
    folder = teacher.local()
    assert (Path(folder) / "adapter").is_dir() and not (Path(folder) / "backbone").exists()

    save_random_backbone(teacher_lake, "bert", seed=1)  # same architecture, other weights
    with pytest.raises(RegistryError, match=r"its base model at .* is not the one it was built on .*model.safetensors"):
        resolve_teacher(lake, "teacher", report.version)
