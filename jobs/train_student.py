"""Train a light student (MLP or MMoE) from teacher-labeled pairs, evaluate it on human labels.

1. ``read``: ``labeled_impressions`` of the teacher version (the promoted one by default),
   ``student_features`` of one feature version, and ``human_labels``.
2. ``transform``:
   * teacher pairs: impressions collapsed to (normalised query, pin) with the teacher's level
     distribution, impressions, clicks and saves; optionally a seeded sample of
     ``max_teacher_pairs``;
   * human labels split as for the teacher (``models.relevance.splits``): the labels of
     ``evaluation.holdout_folds`` are test, the others split by query into train and validation.
     Validation and test pairs are removed from the teacher pairs too, so they train nothing —
     not even through the teacher's label of the same pair;
   * the student trains on the teacher pairs (soft or hard labels, pairwise, engagement) plus the
     training human labels (``training.human_weight``), or on the human labels only
     (``human_only``); validation picks the epoch (kappa) and the share-matched level cuts;
   * the test rows are scored once: the student, and on the same rows the teacher (its labels
     in ``labeled_impressions``) and BM25 (cuts fit on validation), with the teacher's metrics.
3. ``write``: the artifact (model, cuts, metrics, report) as a new version of ``student.family``;
   its manifest records the teacher version that labeled the data and the feature version. The
   gate (``student.gate``, ``models.artifacts.gate``) then scores the published version and production's
   on the same test labels, from their folders, with the same code: the new version is promoted
   only if its metric is not worse than production's by more than the tolerance. Publishing is
   idempotent: the same config and inputs give back the version they made before.

Local:    pinpipe train_student --set evaluation.holdout_folds=[6,7] [--set student.model.kind=mmoe]
Cluster:  spark-submit --py-files dist/pinpipe.zip --jars ... jobs/train_student.py --env cluster
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.student_features import embedding_lookup
from models.artifacts.gate import GateDecision, GateSettings, gate_version
from models.relevance.embedding_lookup import EmbeddingLookup
from models.relevance.levels import LevelThresholds, to_model_levels
from models.relevance.metrics import RelevanceReport, evaluate_predictions, evaluate_with_cuts, quadratic_weighted_kappa
from models.relevance.splits import TEST, TRAIN, VALIDATION, QuerySplit, assign_sides
from models.relevance.student_settings import StudentSettings, StudentTrainSettings
from runtime.config import PinpipeConfig, StudentConfig
from runtime.entry import run_job
from runtime.lake import Lake
from runtime.session import job_description
from schemas import human_labels as HL
from schemas import labeled_impressions as LI
from schemas import search_impressions as SI
from schemas import student_features as SF
from schemas import teacher_scores as TS
from udfs.text_clean import normalize_query

log = logging.getLogger(__name__)

LEVEL = "level"  # human relevance on the student's 1..num_levels
PROBS = "teacher_probs"
IMPRESSIONS, CLICKS, SAVES = "impressions", "clicks", "saves"
DECODING_FILE = "decoding.json"
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.txt"


# --------------------------------------------------------------------------- pure transforms (Spark)


def teacher_pairs(labeled: DataFrame) -> DataFrame:
    """``query, pin_id, teacher_probs, impressions, clicks, saves``: one row per pair."""
    return labeled.groupBy(F.col(LI.QUERY_NORM).alias(SF.QUERY), F.col(SI.PIN_ID).alias(SF.PIN_ID)).agg(
        F.first(TS.PROBABILITIES).alias(PROBS),
        F.count(F.lit(1)).alias(IMPRESSIONS),
        F.sum(F.col(SI.CLICKED).cast("int")).alias(CLICKS),
        F.sum(F.col(SI.SAVED).cast("int")).alias(SAVES),
    )


def human_rows(labels: DataFrame) -> DataFrame:
    """Checkable human labels with the normalised query (invalid ones were quarantined by
    train_teacher; here they are only left out)."""
    rel, scale = F.col(HL.RELEVANCE), F.col(HL.SCALE_MAX)
    valid = rel.isNotNull() & (scale >= 2) & (rel >= 1) & (rel <= scale) & F.col(HL.PIN_ID).isNotNull()
    return labels.filter(valid).select(
        HL.LABEL_ID,
        normalize_query(F.col(HL.QUERY)).alias(SF.QUERY),
        F.col(HL.PIN_ID).alias(SF.PIN_ID),
        HL.RELEVANCE,
        HL.SCALE_MAX,
        HL.FOLD,
        HL.SOURCE,
    )


# --------------------------------------------------------------------------- pure transforms (pandas)


def student_data(rows: pd.DataFrame, lookup: EmbeddingLookup, query_index: dict[str, int], num_levels: int):
    """``StudentData`` of rows carrying features, optional teacher probabilities and human level."""
    from models.relevance.student_scoring import feature_arrays
    from models.relevance.student_training import StudentData

    query, pin, dense = feature_arrays(rows, lookup)
    has_teacher = rows[PROBS].notna().to_numpy() if PROBS in rows else np.zeros(len(rows), bool)
    probs = np.zeros((len(rows), num_levels), dtype=np.float32)
    if has_teacher.any():
        probs[has_teacher] = np.stack(rows.loc[has_teacher, PROBS].to_numpy()).astype(np.float32)
    shown = rows[IMPRESSIONS].fillna(0).to_numpy(np.float32) if IMPRESSIONS in rows else np.zeros(len(rows), np.float32)
    safe = np.maximum(shown, 1.0)

    def rate(col: str) -> np.ndarray:
        return (rows[col].fillna(0).to_numpy(np.float32) / safe) if col in rows else np.zeros(len(rows), np.float32)

    human = rows[LEVEL].fillna(0).to_numpy(np.int64) - 1 if LEVEL in rows else np.full(len(rows), -1)
    return StudentData(
        query=query,
        pin=pin,
        dense=dense,
        query_ids=rows[SF.QUERY].map(query_index).to_numpy(np.int64),
        teacher_probs=probs,
        has_teacher=has_teacher,
        human_level=human,
        click_rate=rate(CLICKS),
        save_rate=rate(SAVES),
        impressions=shown,
    )


def _keys(frame: pd.DataFrame) -> pd.MultiIndex:
    return pd.MultiIndex.from_frame(frame[[SF.QUERY, SF.PIN_ID]])


def training_rows(
    teacher: pd.DataFrame, human: pd.DataFrame, side: np.ndarray, *, human_only: bool, max_teacher_pairs: int, seed: int
) -> pd.DataFrame:
    """Teacher pairs minus every validation/test pair (then at most ``max_teacher_pairs`` of
    them, a seeded sample), with the training human level joined on; training human pairs the
    teacher did not label are added. ``human_only``: the training human rows only."""
    train_human = human[side == TRAIN][[SF.QUERY, SF.PIN_ID, LEVEL]].drop_duplicates([SF.QUERY, SF.PIN_ID])
    if human_only:
        return train_human.reset_index(drop=True)
    kept_out = _keys(human[side != TRAIN])
    teacher = teacher[~_keys(teacher).isin(kept_out)]
    if max_teacher_pairs and len(teacher) > max_teacher_pairs:
        teacher = teacher.sample(n=max_teacher_pairs, random_state=seed).sort_index()
    return teacher.merge(train_human, on=[SF.QUERY, SF.PIN_ID], how="outer").reset_index(drop=True)


def with_features(rows: pd.DataFrame, features: pd.DataFrame) -> pd.DataFrame:
    return rows.merge(features, on=[SF.QUERY, SF.PIN_ID], how="inner")


# --------------------------------------------------------------------------- fit and evaluate


@dataclass
class TrainedStudent:
    folder_files: dict[str, bytes]
    metrics: dict[str, Any]
    report: str


def _report(rows: pd.DataFrame, probs: np.ndarray, levels: list[int], cuts: LevelThresholds) -> RelevanceReport:
    return evaluate_with_cuts(rows[SF.QUERY].to_numpy(), rows[LEVEL].to_numpy(), probs, levels, cuts)


def _bm25_report(val: pd.DataFrame, test: pd.DataFrame, levels: list[int]) -> RelevanceReport:
    cuts = LevelThresholds.fit(val[SF.BM25].to_numpy(), val[LEVEL], levels)
    scores = test[SF.BM25].to_numpy()
    return evaluate_predictions(test[SF.QUERY].to_numpy(), test[LEVEL].to_numpy(), cuts.predict(scores), scores, levels)


def _teacher_report(val: pd.DataFrame, test: pd.DataFrame, levels: list[int]) -> RelevanceReport | None:
    """The teacher on the test rows it labeled (cuts fit on its validation scores)."""
    val, test = val[val[PROBS].notna()], test[test[PROBS].notna()]
    if val.empty or test.empty:
        return None
    lv = np.asarray(levels, dtype=np.float64)
    cuts = LevelThresholds.fit(np.stack(val[PROBS].to_numpy()) @ lv, val[LEVEL], levels)
    return _report(test, np.stack(test[PROBS].to_numpy()).astype(np.float64), levels, cuts)


def fit_student(
    train_rows: pd.DataFrame,
    val_rows: pd.DataFrame,
    test_rows: pd.DataFrame,
    lookup: EmbeddingLookup,
    *,
    model_settings: StudentSettings,
    training: StudentTrainSettings,
) -> TrainedStudent:
    """Train on ``train_rows`` (early stopping on ``val_rows`` kappa), fit the level cuts on
    validation, and score ``test_rows`` once: the student, the teacher and BM25."""
    import torch

    from models.relevance.student import build_student, save_student
    from models.relevance.student_scoring import predict_relevance
    from models.relevance.student_training import train_student

    levels = list(range(1, model_settings.num_levels + 1))
    queries = pd.concat([train_rows[SF.QUERY], val_rows[SF.QUERY], test_rows[SF.QUERY]]).unique()
    index = {q: i for i, q in enumerate(sorted(queries))}
    train, val, test = (
        student_data(rows, lookup, index, model_settings.num_levels) for rows in (train_rows, val_rows, test_rows)
    )
    torch.manual_seed(training.seed)
    model = build_student(model_settings, train.query.shape[1], train.dense.shape[1])
    model.inputs.fit(train.dense)

    def predict(data) -> np.ndarray:
        return predict_relevance(model, data.query, data.pin, data.dense, training.eval_batch_size)

    def validate(_model) -> float:
        return quadratic_weighted_kappa(val_rows[LEVEL], predict(val).argmax(1) + 1, min(levels), max(levels))

    result = train_student(model, train, training, validate)
    lv = np.asarray(levels, dtype=np.float64)
    val_probs = predict(val)
    cuts = LevelThresholds.fit(val_probs @ lv, val_rows[LEVEL], levels)
    test_report = _report(test_rows, predict(test), levels, cuts)
    teacher = _teacher_report(val_rows, test_rows, levels)
    bm25 = _bm25_report(val_rows, test_rows, levels)
    metrics = {
        "test": test_report.to_dict(),
        "validation": _report(val_rows, val_probs, levels, cuts).to_dict(),
        "teacher_on_test": teacher.to_dict() if teacher else None,
        "bm25_on_test": bm25.to_dict(),
        "best_epoch": result.best_epoch,
        "history": result.history,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_student(model, Path(tmp) / "student")
        (folder / DECODING_FILE).write_text(json.dumps(cuts.to_dict(), indent=2))
        files = {p.name: p.read_bytes() for p in folder.iterdir()}
    table = test_report.table(f"student test ({len(test_rows):,} human labels)")
    table += "\n\n" + bm25.table("BM25, same rows")
    if teacher is not None:
        table += "\n\n" + teacher.table(f"teacher, same rows it labeled ({teacher.n:,})")
    return TrainedStudent(files, metrics, table)


# --------------------------------------------------------------------------- read, transform, write


@dataclass(frozen=True)
class StudentInputs:
    labeled: DataFrame  # labeled_impressions of one teacher version
    features: DataFrame  # student_features of one feature version
    embeddings: DataFrame  # text_embeddings
    labels: DataFrame  # human_labels of the configured sources
    versions: dict[str, Any]


@dataclass(frozen=True)
class StudentOutputs:
    trained: TrainedStudent
    inputs: dict[str, Any]
    test_rows: pd.DataFrame  # the test labels with their features: the gate's evaluation set
    lookup: EmbeddingLookup  # the embeddings of their texts


@dataclass
class StudentRunReport:
    version: str
    kind: str
    train_rows: int
    test_rows: int
    kappa: float
    auroc_3: float
    teacher_kappa: float | None
    bm25_kappa: float
    gate: str = ""
    promoted: bool = False

    def line(self) -> str:
        teacher = f"{self.teacher_kappa:.4f}" if self.teacher_kappa is not None else "n/a"
        return (
            f"train_student: version={self.version}{' (promoted)' if self.promoted else ''} kind={self.kind} "
            f"train_rows={self.train_rows:,} test_rows={self.test_rows:,} test_kappa={self.kappa:.4f} "
            f"test_auroc>=3={self.auroc_3:.4f} (teacher kappa {teacher}, bm25 kappa {self.bm25_kappa:.4f}, same rows)"
            + (f"; {self.gate}" if self.gate else "")
        )


def read(spark: SparkSession, cfg: PinpipeConfig) -> StudentInputs:
    from models.artifacts.registry import Registry

    lake, s = Lake.at(cfg.lake.root), cfg.student
    teacher = f"{s.teacher_family}/{Registry(lake.artifacts_path()).resolve(s.teacher_family, s.teacher_version)}"
    labeled = lake.read(spark, "labeled_impressions").filter(F.col(TS.TEACHER_VERSION) == teacher)
    if s.impression_sources:
        labeled = labeled.filter(F.col(SI.SOURCE).isin(list(s.impression_sources)))
    labels = lake.read(spark, "human_labels")
    if s.label_sources:
        labels = labels.filter(F.col(HL.SOURCE).isin(list(s.label_sources)))
    features = lake.read(spark, "student_features").filter(F.col(SF.FEATURE_VERSION) == s.feature_version)
    versions = {
        "teacher_version": teacher,
        "feature_version": s.feature_version,
        "labeled_impressions_version": lake.version(spark, "labeled_impressions"),
        "student_features_version": lake.version(spark, "student_features"),
        "human_labels_version": lake.version(spark, "human_labels"),
    }
    return StudentInputs(labeled, features, lake.read(spark, "text_embeddings"), labels, versions)


def collect(inputs: StudentInputs, *, num_levels: int):
    """(teacher pairs, human labels, features of their pairs) as pandas, in a fixed order, and the
    embeddings of those pairs' texts."""
    spark = inputs.features.sparkSession
    with job_description(spark, "train_student: collect teacher pairs"):
        teacher = teacher_pairs(inputs.labeled).toPandas().sort_values([SF.QUERY, SF.PIN_ID], ignore_index=True)
    human = human_rows(inputs.labels).toPandas().sort_values(HL.LABEL_ID, ignore_index=True)
    human[LEVEL] = to_model_levels(human[HL.RELEVANCE], human[HL.SCALE_MAX], num_levels)
    wanted = pd.concat([teacher[[SF.QUERY, SF.PIN_ID]], human[[SF.QUERY, SF.PIN_ID]]]).drop_duplicates()
    if wanted.empty:
        raise ValueError("train_student: no teacher-labeled pairs and no human labels to learn from")
    keys = spark.createDataFrame(wanted)
    cols = [SF.QUERY, SF.PIN_ID, SF.QUERY_TEXT_HASH, SF.PIN_TEXT_HASH, *SF.DENSE]
    wanted_features = inputs.features.join(keys, [SF.QUERY, SF.PIN_ID], "left_semi")
    with job_description(spark, "train_student: collect features"):
        features = wanted_features.select(*cols).toPandas()
    return teacher, human, features, embedding_lookup(inputs.embeddings, wanted_features)


def transform(
    inputs: StudentInputs,
    *,
    model: StudentSettings,
    training: StudentTrainSettings,
    split: QuerySplit,
    holdout_folds: Sequence[int],
    human_only: bool,
    max_teacher_pairs: int,
) -> StudentOutputs:
    teacher, human, features, lookup = collect(inputs, num_levels=model.num_levels)
    if human.empty:
        raise ValueError("train_student: no human labels to validate and evaluate on")
    side = assign_sides(human, split, holdout_folds)
    probs = teacher[[SF.QUERY, SF.PIN_ID, PROBS]]
    parts = {
        name: with_features(human[side == name], features).merge(probs, on=[SF.QUERY, SF.PIN_ID], how="left")
        for name in (VALIDATION, TEST)
    }
    chosen = training_rows(
        teacher, human, side, human_only=human_only, max_teacher_pairs=max_teacher_pairs, seed=split.seed
    )
    train_rows = with_features(chosen, features)
    missing = int((side == TEST).sum()) - len(parts[TEST])
    log.info(
        "train_student: train %s rows, validation %s, test %s (%d test labels without features)",
        f"{len(train_rows):,}",
        f"{len(parts[VALIDATION]):,}",
        f"{len(parts[TEST]):,}",
        missing,
    )
    trained = fit_student(train_rows, parts[VALIDATION], parts[TEST], lookup, model_settings=model, training=training)
    sizes = {
        "train_rows": len(train_rows),
        "train_teacher_pairs": int(train_rows[PROBS].notna().sum()) if PROBS in train_rows else 0,
        "train_human_labels": int(train_rows[LEVEL].notna().sum()),
        "validation_rows": len(parts[VALIDATION]),
        "test_rows": len(parts[TEST]),
        "test_labels_without_features": missing,
        "human_only": human_only,
        "max_teacher_pairs": max_teacher_pairs,
    }
    protocol = {"holdout_folds": sorted(holdout_folds)} if holdout_folds else {"test_fraction": split.test_fraction}
    return StudentOutputs(trained, {**inputs.versions, **sizes, **protocol}, parts[TEST], lookup)


def evaluate_published(folder: Path, rows: pd.DataFrame, lookup: EmbeddingLookup) -> RelevanceReport:
    """A published student (its weights and level cuts, read from ``folder``) on ``rows``: the
    same evaluation for the new version and for production."""
    from models.relevance.student_scoring import StudentScorer

    scorer = StudentScorer(folder)
    cuts = LevelThresholds(**json.loads((folder / DECODING_FILE).read_text()))
    probs, _ = scorer.score(rows, lookup)
    return _report(rows, probs.astype(np.float64), [int(v) for v in scorer.levels], cuts)


def gate(registry, family: str, version: str, outputs: StudentOutputs, settings: GateSettings) -> GateDecision | None:
    """The new ``version`` against production on the test rows; None when there is no gate."""
    rows, lookup = outputs.test_rows, outputs.lookup

    def measure(folder: Path) -> float:
        return evaluate_published(folder, rows, lookup).gate_metrics()[settings.metric]

    return gate_version(registry, family, version, settings, measure, len(rows))


def write(outputs: StudentOutputs, lake: Lake, section: StudentConfig, *, config: dict[str, Any]) -> StudentRunReport:
    """Publish ``outputs`` as a version of ``section.family``; gate and promote it when
    ``section.promote``."""
    from models.artifacts.registry import Registry, content_key, without_wall_clock

    family, promote = section.family, section.promote

    trained = outputs.trained

    def build(folder: Path) -> None:
        for name, data in trained.folder_files.items():
            (folder / name).write_bytes(data)
        (folder / METRICS_FILE).write_text(json.dumps(without_wall_clock(trained.metrics), indent=2))
        (folder / REPORT_FILE).write_text(trained.report + "\n")

    registry = Registry(lake.artifacts_path(), keep=section.registry_keep)
    m = trained.metrics
    headline = {key: m[key] for key in ("test", "validation", "teacher_on_test", "bm25_on_test")}
    key = content_key(config, outputs.inputs)
    version = registry.publish(family, build, metrics=headline, config=config, inputs=outputs.inputs, key=key)
    decision = gate(registry, family, version, outputs, section.gate) if promote else None
    if promote and (decision is None or decision.passed):
        registry.promote(family, version)
    print(trained.report)
    if decision is not None:
        print(decision.line())
    teacher = m["teacher_on_test"]
    return StudentRunReport(
        version=f"{family}/{version}",
        kind=config["student"]["model"]["kind"],
        train_rows=outputs.inputs["train_rows"],
        test_rows=outputs.inputs["test_rows"],
        kappa=m["test"]["kappa"],
        auroc_3=m["test"]["auroc_at"]["3"],
        teacher_kappa=teacher["kappa"] if teacher else None,
        bm25_kappa=m["bm25_on_test"]["kappa"],
        gate=decision.line() if decision else "",
        promoted=registry.current(family) == version,
    )


def trained(spark: SparkSession, cfg: PinpipeConfig) -> StudentOutputs:
    """``read`` and ``transform`` with the config's settings: ``run`` without the write."""
    s = cfg.student
    return transform(
        read(spark, cfg),
        model=s.model,
        training=s.training,
        split=QuerySplit(s.validation_fraction, cfg.teacher.test_fraction, s.split_seed),
        holdout_folds=cfg.evaluation.holdout_folds,
        human_only=s.human_only,
        max_teacher_pairs=s.max_teacher_pairs,
    )


def run(spark: SparkSession, cfg: PinpipeConfig) -> StudentRunReport:
    return write(trained(spark, cfg), Lake.at(cfg.lake.root), cfg.student, config=cfg.to_dict())


def main(argv: Sequence[str] | None = None) -> StudentRunReport:
    return run_job("pinpipe train_student", __doc__, run, argv)


if __name__ == "__main__":
    main()
