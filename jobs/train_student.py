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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.config import PinpipeConfig, run_job
from jobs.embedding_tables import embedding_lookup
from models.artifacts.publishing import PublishSettings
from models.relevance.embedding_lookup import EmbeddingLookup
from models.relevance.levels import to_model_levels
from models.relevance.metrics import RELEVANCE_GATE_METRICS
from models.relevance.splits import TEST, TRAIN, VALIDATION, QuerySplit, assign_sides
from models.relevance.student_fitting import (
    CLICKS,
    IMPRESSIONS,
    LEVEL,
    PROBS,
    SAVES,
    TrainedStudent,
    evaluate_published,
    fit_student,
)
from models.relevance.student_settings import StudentSettings, StudentTrainSettings
from runtime.config import require, require_at_least, setting
from runtime.lake import Lake
from runtime.session import job_description
from runtime.tracking import TrackedRun
from schemas import human_labels as HL
from schemas import labeled_impressions as LI
from schemas import search_impressions as SI
from schemas import student_features as SF
from schemas import teacher_scores as TS
from udfs.text_clean import normalize_query

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudentConfig(PublishSettings):
    GATE_METRICS = RELEVANCE_GATE_METRICS

    model: StudentSettings = setting("The student: kind (mlp | mmoe), widths, experts (mlp | dcn), gates, towers.")
    training: StudentTrainSettings = setting(
        "Loop and losses: batch, epochs, lr, patience, distillation (none | pointwise | pairwise | both), "
        "incremental, loss weights."
    )
    teacher_family: str = setting("Registry family of the teacher whose labels the student learns.")
    teacher_version: str = setting("Teacher version (e.g. v0003); empty = the promoted (CURRENT) one.")
    feature_version: str = setting(
        "student_features slice to read; empty = student_features.version.", same_as="student_features.version"
    )
    label_sources: list[str] = setting("human_labels sources to mix in and evaluate on; empty = all.")
    impression_sources: list[str] = setting("labeled_impressions sources to learn from; empty = all.")
    human_only: bool = setting("Train on human labels only (no teacher-labeled pairs): the baseline.")
    max_teacher_pairs: int = setting("Learn from at most this many teacher-labeled pairs (seeded sample); 0 = all.")
    validation_fraction: float = setting(
        "Share of the non-held-out labeled queries whose labels choose the epoch and level cuts (never trained on)."
    )
    split_seed: int = setting("Seed of the validation split and of the teacher-pair sample.")

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            0.0 < self.validation_fraction < 1.0,
            "student.validation_fraction",
            "must be in (0, 1)",
            self.validation_fraction,
        )
        require_at_least(self, "student", ("max_teacher_pairs",), minimum=0)


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

    def tracked(self) -> TrackedRun:
        metrics = {"test_kappa": self.kappa, "test_auroc_at_3": self.auroc_3, "bm25_kappa": self.bm25_kappa}
        if self.teacher_kappa is not None:
            metrics["teacher_kappa"] = self.teacher_kappa
        sizes = {"train_rows": self.train_rows, "test_rows": self.test_rows}
        return TrackedRun(self.version, {**metrics, **sizes}, self.gate, self.promoted)

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

    lake, s = Lake.of(cfg.lake), cfg.student
    teacher = f"{s.teacher_family}/{Registry(lake.artifacts()).resolve(s.teacher_family, s.teacher_version)}"
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


def write(outputs: StudentOutputs, lake: Lake, section: StudentConfig, *, config: dict[str, Any]) -> StudentRunReport:
    """Publish ``outputs`` as a version of ``section.family``; gate and promote it when
    ``section.promote``."""
    from models.artifacts.publishing import publish_gated
    from models.artifacts.registry import Registry, without_wall_clock
    from models.relevance.baselines import gate_floors

    family = section.family

    trained = outputs.trained

    def build(folder: Path) -> None:
        for name, data in trained.folder_files.items():
            (folder / name).write_bytes(data)
        (folder / METRICS_FILE).write_text(json.dumps(without_wall_clock(trained.metrics), indent=2))
        (folder / REPORT_FILE).write_text(trained.report + "\n")

    registry = Registry(lake.artifacts(), keep=section.registry_keep)
    m = trained.metrics
    rows, lookup = outputs.test_rows, outputs.lookup
    published = publish_gated(
        registry,
        section,
        build,
        metrics={key: m[key] for key in ("test", "validation", "teacher_on_test", "bm25_on_test", "constant_on_test")},
        config=config,
        inputs=outputs.inputs,
        measure=lambda folder: evaluate_published(folder, rows, lookup).gate_metrics()[section.gate.metric],
        rows=len(rows),
        baselines=gate_floors(trained.baselines, section.gate.metric),
    )
    version, decision = published.version, published.decision
    log.info("train_student: %s", trained.report)
    if decision is not None:
        log.info("train_student: %s", decision.line())
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
    return write(trained(spark, cfg), Lake.of(cfg.lake), cfg.student, config=cfg.to_dict())


def main(argv: Sequence[str] | None = None) -> StudentRunReport:
    return run_job("pinpipe train_student", __doc__, run, argv)


if __name__ == "__main__":
    main()
