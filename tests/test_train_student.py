import json
import shutil

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from jobs import score_impressions, student_features, train_student
from jobs.config import load_config
from jobs.embedding_tables import embedding_lookup
from jobs.train_student import LEVEL, PROBS, training_rows
from models.artifacts.registry import Registry
from models.random_models import save_random_backbone
from models.relevance.splits import TEST, TRAIN, VALIDATION
from models.relevance.student_scoring import StudentScorer
from runtime.lake import Lake
from schemas import human_labels as HL
from schemas import student_features as SF
from tests.test_score_impressions import DAY3, ITEMS, overrides, publish_teacher, write_inputs
from udfs.student_scorer import EXPECTED_RELEVANCE, scores, with_positions


def frame(rows, cols):
    return pd.DataFrame(rows, columns=cols)


def test_training_rows_keep_validation_and_test_pairs_out_even_as_teacher_labels():
    teacher = frame(
        [("a", "p1", [0.1, 0.9]), ("a", "p2", [0.5, 0.5]), ("b", "p1", [0.8, 0.2]), ("c", "p3", [0.3, 0.7])],
        [SF.QUERY, SF.PIN_ID, PROBS],
    )
    human = frame([("a", "p1", 2), ("b", "p1", 1), ("c", "p3", 2), ("d", "p4", 1)], [SF.QUERY, SF.PIN_ID, LEVEL])
    side = np.array([TRAIN, TEST, VALIDATION, TRAIN], dtype=object)
    rows = training_rows(teacher, human, side, human_only=False, max_teacher_pairs=0, seed=0)
    got = {(r[SF.QUERY], r[SF.PIN_ID]): r for _, r in rows.iterrows()}
    assert set(got) == {("a", "p1"), ("a", "p2"), ("d", "p4")}  # (b, p1) is test, (c, p3) validation
    assert got[("a", "p1")][LEVEL] == 2 and got[("a", "p1")][PROBS] == [0.1, 0.9]
    assert pd.isna(got[("a", "p2")][LEVEL]) and not isinstance(got[("d", "p4")][PROBS], list)
    only = training_rows(teacher, human, side, human_only=True, max_teacher_pairs=0, seed=0)
    assert set(zip(only[SF.QUERY], only[SF.PIN_ID], strict=True)) == {("a", "p1"), ("d", "p4")}
    sampled = training_rows(teacher, human, side, human_only=False, max_teacher_pairs=1, seed=0)
    assert sampled[PROBS].notna().sum() == 1 and len(sampled) == 3  # one teacher pair + the two human pairs


def build_student_lake(spark, lake, tmp_path, cfg_for, relevance):
    """The scoring test's lake, a random teacher's labels of its impressions, human labels of
    three folds (``relevance(rng, j)`` for pin p<j>), and student features from a random bi-encoder."""
    write_inputs(spark, lake)
    publish_teacher(lake.artifacts_path(), tmp_path)
    rng = np.random.default_rng(0)
    labels = [
        (f"l{k}", f"{item} Ideas", f"p{j}", relevance(rng, j), 4, None, k % 3 + 1, "test")
        for k, (item, j) in enumerate((item, j) for item in ITEMS for j in range(8))
    ]
    lake.replace_slice(spark.createDataFrame(labels, HL.HUMAN_LABELS_V1), "human_labels", "source = 'test'")
    score_impressions.run(spark, cfg_for(*overrides("scorer.end_date=2026-11-03")))
    encoder = save_random_backbone(tmp_path / "encoder", "bert")
    student_features.run(
        spark,
        cfg_for(f"student_features.encoder_path={encoder}", f"student_features.as_of={DAY3.isoformat()}"),
    )
    return labels


@pytest.fixture
def student_lake(spark, lake, tmp_path, cfg_for):
    """Random human labels."""
    return build_student_lake(spark, lake, tmp_path, cfg_for, lambda rng, j: int(rng.integers(1, 5)))


@pytest.fixture(scope="module")
def learnable_student_lake_built(spark, tmp_path_factory) -> tuple[Lake, list]:
    """The learnable lake, built once for this module (a teacher's scores and a bi-encoder's
    features: ~35 s); each test gets a copy."""
    root = tmp_path_factory.mktemp("learnable-student")
    built = Lake.at(str(root / "lake"))

    def cfg(*overrides: str):
        return load_config("local", overrides=[f"lake.root={built.root}", *overrides])

    return built, build_student_lake(spark, built, root, cfg, lambda rng, j: 1 + j // 2)


@pytest.fixture
def learnable_student_lake(lake, learnable_student_lake_built):
    """Human labels a student can learn: pin p<j> is relevant at level 1 + j // 2 to every query
    (in a copy of the module's lake: each test publishes its own students)."""
    built, labels = learnable_student_lake_built
    shutil.copytree(built.root, lake.root)
    return labels


def test_job_trains_on_teacher_pairs_evaluates_on_held_out_folds_and_records_its_inputs(
    spark, lake, cfg_for, student_lake
):
    registry = Registry(lake.artifacts_path())

    def lookup_of(features):
        return embedding_lookup(lake.read(spark, "text_embeddings"), features)

    held_out = [label for label in student_lake if label[6] == 3]
    for number, kind in enumerate(["mlp", "mmoe"], start=1):
        cfg = cfg_for(
            "evaluation.holdout_folds=[3]",
            f"student.model.kind={kind}",
            "student.model.hidden=[16]",
            "student.model.expert_dim=8",
            "student.model.tower_hidden=4",
            "student.training.epochs=3",
            "student.training.batch_size=32",
            "student.training.distillation=both",
            "student.gate.enabled=false",  # both promoted: the gate has its own test
        )
        report = train_student.run(spark, cfg)
        version = f"v{number:04d}"
        assert report.version == f"student/{version}" and registry.current("student") == version
        inputs = registry.manifest("student", version)["inputs"]
        assert inputs["teacher_version"] == "teacher/v0001" and inputs["feature_version"] == "v1"
        assert inputs["holdout_folds"] == [3]
        assert report.test_rows == inputs["test_rows"] == len(held_out)
        assert inputs["train_teacher_pairs"] > 0 and inputs["train_human_labels"] > 0
        metrics = json.loads((registry.path("student", version) / "metrics.json").read_text())
        assert metrics["test"]["n"] == metrics["bm25_on_test"]["n"] == len(held_out)
        assert 0 < metrics["teacher_on_test"]["n"] <= len(held_out)  # the held-out pairs it labeled
        assert 1 <= metrics["best_epoch"] <= 3
        # The published student scores feature rows as it did in evaluation.
        sofa = lake.read(spark, "student_features").filter(F.col(SF.QUERY) == "sofa ideas")
        rows = sofa.toPandas()
        probs, expected = StudentScorer(registry.path("student", version)).score(rows, lookup_of(sofa))
        assert probs.shape == (len(rows), 4) and np.allclose(probs.sum(1), 1, atol=1e-5)
        assert np.allclose(expected, probs @ np.arange(1, 5))
    # In Spark (a pandas UDF over student_features) the published student scores the same.
    folder = str(registry.path("student", "v0002"))
    table = lake.read(spark, "student_features")
    lookup = lookup_of(table)
    shared = spark.sparkContext.broadcast(lookup)
    scored = scores(with_positions(table, lookup), folder, shared, "fp32", 7).toPandas()
    direct = table.toPandas()
    keys = list(zip(direct[SF.QUERY], direct[SF.PIN_ID], strict=True))
    expected = dict(zip(keys, StudentScorer(folder).score(direct, lookup)[1], strict=True))
    assert len(scored) == len(direct)
    for q, pin, value in zip(scored[SF.QUERY], scored[SF.PIN_ID], scored[EXPECTED_RELEVANCE], strict=True):
        assert value == pytest.approx(expected[(q, pin)], abs=1e-5)
    # Rows whose texts the lookup lacks are refused, not dropped or scored as zeros.
    sofa_lookup = lookup_of(table.filter(F.col(SF.QUERY) == "sofa ideas"))
    partial = scores(with_positions(table, sofa_lookup), folder, spark.sparkContext.broadcast(sofa_lookup))
    with pytest.raises(Exception, match="text positions are null: texts without an embedding"):
        partial.collect()


def mirrored_weights(safetensors_bytes: bytes) -> bytes:
    """The student with its grade outputs in reverse order (the head's rows flipped): where the
    trained student predicts grade g it predicts ``levels - 1 - g``. Broken by construction: a
    student that agrees with the labels becomes one that disagrees as much (a shuffle of the
    weights can, by chance, still score well)."""
    from safetensors.torch import load, save

    tensors = load(safetensors_bytes)
    heads = [k for k in tensors if k in ("head.weight", "head.bias")]
    assert heads, f"no grade head among {sorted(tensors)}"
    return save({k: v.flip(0).contiguous() if k in heads else v for k, v in tensors.items()})


TINY_STUDENT = (
    "evaluation.holdout_folds=[3]",
    "student.model.hidden=[16]",
    "student.training.epochs=4",
    "student.training.batch_size=32",
)
LEARNING_STUDENT = (*TINY_STUDENT, "student.human_only=true", "student.training.epochs=30", "student.training.lr=0.01")


def test_the_gate_rejects_a_mirrored_student_and_rollback_restores_production_scores_exactly(
    spark, lake, cfg_for, learnable_student_lake
):
    from jobs import rollback
    from models.relevance.student import WEIGHTS_FILE

    registry = Registry(lake.artifacts_path())
    sofa = lake.read(spark, "student_features").filter(F.col(SF.QUERY) == "sofa ideas")
    rows, lookup = sofa.toPandas(), embedding_lookup(lake.read(spark, "text_embeddings"), sofa)

    def production_scores():
        return StudentScorer(registry.path("student", registry.current("student"))).score(rows, lookup)[1]

    first = train_student.run(spark, cfg_for(*LEARNING_STUDENT))
    assert first.kappa > 0.5, "the fixture's labels are learnable: a trained student must agree with them"
    assert first.promoted and "no production model" in first.gate and registry.current("student") == "v0001"
    scores_v1 = production_scores()

    cfg = cfg_for(*LEARNING_STUDENT, "student.training.seed=1", "student.gate.tolerance=0.0")
    outputs = train_student.trained(spark, cfg)
    files = outputs.trained.folder_files
    files[WEIGHTS_FILE] = mirrored_weights(files[WEIGHTS_FILE])
    broken = train_student.write(outputs, lake, cfg.student, config=cfg.to_dict())
    assert broken.version == "student/v0002" and not broken.promoted
    assert "gate REJECTED" in broken.gate and "production stays student/v0001" in broken.gate
    assert registry.current("student") == "v0001"
    [log_v1, log_v2] = registry.gates("student")
    assert log_v1["passed"] and not log_v2["passed"] and log_v2["candidate"] < log_v2["production"]

    lenient = train_student.run(
        spark, cfg_for(*LEARNING_STUDENT, "student.training.seed=2", "student.gate.tolerance=0.9")
    )
    assert lenient.promoted and registry.current("student") == "v0003"
    assert not np.array_equal(production_scores(), scores_v1)
    rollback.main(["student", "--set", f"lake.root={lake.root}"])
    assert registry.current("student") == "v0001"  # never v0002, the rejected one
    assert np.array_equal(production_scores(), scores_v1)


def zeroed_weights(safetensors_bytes: bytes) -> bytes:
    """Every tensor zero: a student that gives every pair the same probabilities (a constant)."""
    import torch
    from safetensors.torch import load, save

    return save({k: torch.zeros_like(v) for k, v in load(safetensors_bytes).items()})


def test_a_first_student_that_is_mirrored_or_constant_is_rejected_and_leaves_no_production(
    spark, lake, cfg_for, learnable_student_lake
):
    from models.relevance.student import WEIGHTS_FILE

    registry = Registry(lake.artifacts_path())
    for seed, (broken, name) in enumerate([(mirrored_weights, "mirrored"), (zeroed_weights, "constant")], start=1):
        cfg = cfg_for(*LEARNING_STUDENT, f"student.training.seed={seed}")
        outputs = train_student.trained(spark, cfg)
        files = outputs.trained.folder_files
        files[WEIGHTS_FILE] = broken(files[WEIGHTS_FILE])
        report = train_student.write(outputs, lake, cfg.student, config=cfg.to_dict())
        assert report.version == f"student/v{seed:04d}" and not report.promoted, name
        assert "gate REJECTED" in report.gate and "does not beat" in report.gate, name
        assert "student has no production model" in report.gate, name
        assert registry.current("student") is None, name
        decision = registry.gates("student")[-1]
        assert set(decision["baselines"]) == {"bm25", "constant"} and decision["production_version"] is None
    assert decision["candidate"] <= decision["baselines"]["constant"] + 1e-9  # the constant's kappa: 0
    real = train_student.run(spark, cfg_for(*LEARNING_STUDENT, "student.training.seed=3"))
    assert real.promoted and registry.current("student") == "v0003"
    decision = registry.gates("student")[-1]
    assert decision["candidate"] > max(decision["baselines"].values()) + 0.02
