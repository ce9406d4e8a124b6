"""Train the cross-encoder relevance teacher on human labels and publish it to the registry.

1. ``read``: ``human_labels`` and the ``pin_text_features`` slice from Delta.
2. ``transform``: check every label — a null or out-of-range relevance, a bad ``scale_max``, a
   blank query, a pin without text, or a duplicated ``label_id`` sends the row to quarantine
   with its reason; nothing is coerced. Each relevance is mapped linearly from
   ``1..scale_max`` onto the model's ``1..num_levels``. Whole queries are dealt (seeded) into
   train, validation and test. The model trains on train (in-process, or data-parallel over
   ``teacher.distributed_processes`` processes with pyspark's ``TorchDistributor``), with
   progress; validation chooses the epoch (early stopping), the share-matched level cuts and
   the CPU int8 plan; the published metrics are computed on test, rows that chose none of
   those.
3. ``write``: the quarantine slice, and the model with its metrics, the resolved config and its
   inputs as a new version of ``<lake>/artifacts/<family>`` (promoted when configured).

Local:    pinpipe train_teacher [--set teacher.training.epochs=2]
Cluster:  spark-submit --py-files dist/pinpipe.zip --jars ... jobs/train_teacher.py --env cluster-gpu
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.config import PinpipeConfig, run_job
from models.artifacts.publishing import PublishSettings
from models.relevance.metrics import RELEVANCE_GATE_METRICS
from models.relevance.splits import TEST, TRAIN, VALIDATION, QuerySplit, assign_sides
from models.relevance.teacher_fitting import LEVEL, TEXT, TrainedTeacher, evaluate_published, fit_teacher, untar
from models.relevance.teacher_settings import TeacherSettings, TrainSettings
from runtime.config import require, require_at_least, setting
from runtime.lake import Lake, sql_literal
from runtime.session import job_description
from runtime.tracking import TrackedRun
from runtime.validation import REASON, duplicated, first_failure, is_blank, split_rejected, to_quarantine
from schemas import human_labels as HL
from schemas import pin_text_features as PTF

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TeacherConfig(PublishSettings):
    GATE_METRICS = RELEVANCE_GATE_METRICS

    model: TeacherSettings = setting(
        "The cross-encoder: backbone_path (empty = the bundled MiniLM), "
        "num_levels, pooling, head, LoRA, 4-bit, checkpointing, GPU dtype."
    )
    training: TrainSettings = setting(
        "Training loop: token budgets, batch sizes, epochs, learning rates, early-stopping patience, seed."
    )
    label_sources: list[str] = setting("human_labels sources to train on (e.g. [crowdflower]); empty = all.")
    feature_version: str = setting(
        "pin_text_features slice joined to the labels; empty = features.version (resolved at load).",
        same_as="features.version",
    )
    validation_fraction: float = setting(
        "Share of queries (whole queries) held out for validation: early "
        "stopping, level cuts and the int8 plan are chosen on them."
    )
    test_fraction: float = setting(
        "Share of queries (whole queries) held out for test: the published metrics, on rows that chose nothing."
    )
    split_seed: int = setting("Seed of the query-grouped train/validation split.")
    max_labels: int = setting("Use at most this many labels (a seeded sample); 0 = all.")
    distributed_processes: int = setting(
        "0 = train in-process; N = data-parallel over N processes with pyspark's TorchDistributor."
    )
    distributed_local_mode: bool = setting(
        "TorchDistributor local_mode: processes on the driver (true) or in a barrier stage on the executors (false)."
    )
    distributed_use_gpu: bool = setting("TorchDistributor use_gpu: one GPU per process.")
    int8_calibration_pairs: int = setting(
        "Validation pairs on which the published teacher's CPU int8 plan "
        "(which layers stay fp32) is chosen; 0 = no plan (all layers int8)."
    )
    int8_target_spearman: float = setting(
        "The int8 plan keeps layers in fp32 until the int8 model's expected "
        "relevance has this Spearman correlation with fp32's."
    )
    openvino_export: bool = setting(
        "Export the published teacher for OpenVINO, the CPU scoring engine (scorer.cpu_engine): "
        "statically quantized to int8 on the int8 calibration pairs, used in int8 where its "
        "Spearman with fp32 reaches int8_target_spearman."
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            0.0 < self.validation_fraction < 1.0,
            "teacher.validation_fraction",
            "must be in (0, 1)",
            self.validation_fraction,
        )
        require(0.0 < self.test_fraction < 1.0, "teacher.test_fraction", "must be in (0, 1)", self.test_fraction)
        require(
            self.validation_fraction + self.test_fraction < 1.0,
            "teacher.test_fraction",
            "plus validation_fraction must leave queries for training",
            self.test_fraction,
        )
        require(
            -1.0 <= self.int8_target_spearman <= 1.0,
            "teacher.int8_target_spearman",
            "must be in [-1, 1]",
            self.int8_target_spearman,
        )
        require_at_least(self, "teacher", ("max_labels", "distributed_processes", "int8_calibration_pairs"), minimum=0)


SOURCE = "train_teacher"
REPORT_FILE = "report.txt"
METRICS_FILE = "metrics.json"


# --------------------------------------------------------------------------- pure transforms


def model_level(relevance: Column, scale_max: Column, num_levels: int) -> Column:
    """``relevance`` on ``1..scale_max`` mapped linearly onto ``1..num_levels`` (rounded half up)."""
    scaled = (relevance - 1).cast("double") * (num_levels - 1) / (scale_max - 1).cast("double")
    return (F.floor(scaled + 0.5) + 1).cast("int")


def labeled_pairs(
    labels: DataFrame, features: DataFrame, num_levels: int, sources: Sequence[str] = ()
) -> tuple[DataFrame, DataFrame]:
    """(valid pairs ``label_id, query, pin_id, text, level, source, fold``, quarantine rows)."""
    if sources:
        labels = labels.filter(F.col(HL.SOURCE).isin(list(sources)))
    text = features.select(F.col(PTF.PIN_ID).alias("_pin"), F.col(PTF.PIN_TEXT).alias(TEXT))
    joined = labels.join(text, labels[HL.PIN_ID] == text["_pin"], "left").drop("_pin")
    relevance, scale = F.col(HL.RELEVANCE), F.col(HL.SCALE_MAX)
    checked = joined.withColumn(
        REASON,
        first_failure(
            [
                (F.col(HL.LABEL_ID).isNull(), "missing label_id"),
                (duplicated(HL.LABEL_ID), "duplicate label_id"),
                (is_blank(F.col(HL.QUERY)), "empty query"),
                (F.col(HL.PIN_ID).isNull(), "missing pin_id"),
                (relevance.isNull(), "relevance is null"),
                (
                    scale.isNull() | (scale < 2),
                    F.concat(F.lit("scale_max must be >= 2, got "), F.coalesce(scale.cast("string"), F.lit("null"))),
                ),
                (
                    (relevance < 1) | (relevance > scale),
                    F.concat(
                        F.lit("relevance "), relevance.cast("string"), F.lit(" outside 1.."), scale.cast("string")
                    ),
                ),
                (is_blank(F.col(TEXT)), "no pin_text_features row (or empty text) for pin"),
            ]
        ),
    )
    valid, rejected = split_rejected(checked)
    pairs = valid.select(
        HL.LABEL_ID,
        HL.QUERY,
        HL.PIN_ID,
        TEXT,
        model_level(relevance, scale, num_levels).alias(LEVEL),
        HL.SOURCE,
        HL.FOLD,
    )
    return pairs, to_quarantine(rejected.drop(TEXT), SOURCE, "human_labels")


# --------------------------------------------------------------------------- training (any process)


# --------------------------------------------------------------------------- read, transform, write

Fit = Callable[[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, Any]], "TrainedTeacher | None"]


@dataclass(frozen=True)
class Int8Calibration:
    """Validation pairs that choose the CPU int8 plan (0: none), its Spearman target, and whether
    the teacher is exported for OpenVINO on the same pairs."""

    pairs: int
    target_spearman: float
    openvino: bool = False


@dataclass(frozen=True)
class TeacherInputs:
    labels: DataFrame
    features: DataFrame  # pin_text_features of one feature_version
    versions: dict[str, Any]  # Delta versions and slices of the inputs, recorded in the manifest


@dataclass(frozen=True)
class TeacherOutputs:
    trained: TrainedTeacher
    quarantine: DataFrame
    inputs: dict[str, Any]  # input versions plus split sizes, for the manifest
    test_rows: pd.DataFrame  # query, text, level of the test pairs: the gate's evaluation set
    base_model: str | None = None  # a LoRA teacher's base: outside the artifact, pinned in its manifest
    baselines: dict[str, Any] = dataclasses.field(default_factory=dict)  # name -> RelevanceReport on the test pairs


@dataclass
class TeacherRunReport:
    version: str
    train_pairs: int
    val_pairs: int
    test_pairs: int
    quarantined: int
    kappa: float  # on test
    ndcg_at_20: float  # on test
    gate: str = ""
    promoted: bool = False
    family: str = "teacher"

    def tracked(self) -> TrackedRun:
        metrics = {"test_kappa": self.kappa, "test_ndcg_at_20": self.ndcg_at_20}
        sizes = {"train_pairs": self.train_pairs, "val_pairs": self.val_pairs, "test_pairs": self.test_pairs}
        return TrackedRun(f"{self.family}/{self.version}", {**metrics, **sizes}, self.gate, self.promoted)

    def line(self) -> str:
        return (
            f"train_teacher: version={self.version}{' (promoted)' if self.promoted else ''} "
            f"train_pairs={self.train_pairs:,} val_pairs={self.val_pairs:,} test_pairs={self.test_pairs:,} "
            f"quarantined={self.quarantined:,} test_kappa={self.kappa:.4f} test_ndcg@20={self.ndcg_at_20:.4f}"
            + (f"; {self.gate}" if self.gate else "")
        )


def read(spark: SparkSession, cfg: PinpipeConfig) -> TeacherInputs:
    lake = Lake.of(cfg.lake)
    version = cfg.teacher.feature_version
    features = lake.read(spark, "pin_text_features").filter(F.col(PTF.FEATURE_VERSION) == version)
    versions = {
        "human_labels_version": lake.version(spark, "human_labels"),
        "pin_text_features_version": lake.version(spark, "pin_text_features"),
        "feature_version": version,
        "label_sources": list(cfg.teacher.label_sources) or "all",
    }
    return TeacherInputs(lake.read(spark, "human_labels"), features, versions)


def pairs_of(
    inputs: TeacherInputs, *, num_levels: int, label_sources: Sequence[str], max_labels: int, seed: int
) -> tuple[pd.DataFrame, DataFrame]:
    """(valid pairs as pandas, ordered by label id — labels are small by nature; quarantine rows)."""
    pairs, quarantine = labeled_pairs(inputs.labels, inputs.features, num_levels, label_sources)
    rows = pairs.toPandas().sort_values(HL.LABEL_ID, kind="stable").reset_index(drop=True)
    if max_labels and len(rows) > max_labels:
        rows = rows.sample(n=max_labels, random_state=seed).sort_index().reset_index(drop=True)
    return rows, quarantine


def transform(
    inputs: TeacherInputs,
    *,
    model: TeacherSettings,
    training: TrainSettings,
    label_sources: Sequence[str],
    max_labels: int,
    split: QuerySplit,
    holdout_folds: Sequence[int],
    int8: Int8Calibration,
    fit: Fit,
) -> TeacherOutputs:
    """Checked pairs, split by query, trained by ``fit`` (in-process or distributed)."""
    rows, quarantine = pairs_of(
        inputs, num_levels=model.num_levels, label_sources=label_sources, max_labels=max_labels, seed=split.seed
    )
    if rows.empty:
        raise ValueError("train_teacher: no valid labeled pairs (see the quarantine table, source 'train_teacher')")
    side = assign_sides(rows, split, holdout_folds)
    parts = {name: rows[side == name].reset_index(drop=True) for name in (TRAIN, VALIDATION, TEST)}
    log.info(
        "train_teacher: %s",
        ", ".join(f"{name} {len(part):,} pairs ({part[HL.QUERY].nunique():,} queries)" for name, part in parts.items()),
    )
    payload = {
        "model": dataclasses.asdict(model),
        "training": dataclasses.asdict(training),
        "int8": {
            "calibration_pairs": int8.pairs,
            "target_spearman": int8.target_spearman,
            "openvino": int8.openvino,
            "seed": split.seed,
        },
        "test_set": (
            f"the labels of held-out folds {sorted(holdout_folds)} (their queries also occur in training)"
            if holdout_folds
            else "whole queries unseen in training and in model selection"
        ),
    }
    trained = fit(parts[TRAIN], parts[VALIDATION], parts[TEST], payload)
    if trained is None:
        raise RuntimeError("training returned nothing from rank 0")
    sizes = {
        f"{name}_{what}": int(n)
        for name, part in parts.items()
        for what, n in (("pairs", len(part)), ("queries", part[HL.QUERY].nunique()))
    }
    protocol = {"holdout_folds": sorted(holdout_folds)} if holdout_folds else {"test_fraction": split.test_fraction}
    base_model = model.backbone_path if model.lora_r > 0 else None
    baselines = pair_baselines(rows, parts[VALIDATION], parts[TEST], model.num_levels)
    inputs_record = {**inputs.versions, **sizes, **protocol}
    return TeacherOutputs(trained, quarantine, inputs_record, parts[TEST], base_model, baselines)


def pair_baselines(rows: pd.DataFrame, validation: pd.DataFrame, test: pd.DataFrame, num_levels: int) -> dict[str, Any]:
    """The gate's floor on the test pairs: BM25 of the query against the pin text (document
    frequencies over every labeled pair's text) and the most frequent validation level."""
    from models.relevance.baselines import relevance_baselines
    from models.relevance.bm25 import BM25

    bm25 = BM25().fit(rows[TEXT].tolist())

    def scores(part: pd.DataFrame):
        return bm25.score_pairs(part[HL.QUERY].tolist(), part[TEXT].tolist())

    return relevance_baselines(
        validation[LEVEL].to_numpy(),
        scores(validation),
        test[HL.QUERY].to_numpy(),
        test[LEVEL].to_numpy(),
        scores(test),
        range(1, num_levels + 1),
    )


def fitter(spark: SparkSession, teacher: TeacherConfig) -> Fit:
    """In-process training, or ``TorchDistributor`` over ``teacher.distributed_processes``."""
    if teacher.distributed_processes == 0:
        return lambda train, val, test, payload: fit_teacher(train, val, test, payload, use_gpu=True)
    from pyspark.ml.torch.distributor import TorchDistributor

    def distributed(train, val, test, payload):
        with job_description(spark, f"train_teacher: {teacher.distributed_processes} TorchDistributor processes"):
            distributor = TorchDistributor(
                num_processes=teacher.distributed_processes,
                local_mode=teacher.distributed_local_mode,
                use_gpu=teacher.distributed_use_gpu,
            )
            return distributor.run(fit_teacher, train, val, test, payload, teacher.distributed_use_gpu)

    return distributed


def write(outputs: TeacherOutputs, lake: Lake, section: TeacherConfig, *, config: dict[str, Any]) -> TeacherRunReport:
    """The quarantine slice, then the artifact as the next version of ``section.family`` (a LoRA
    teacher's base model folder is pinned in its manifest: path and checksums); with
    ``section.promote``, gated on the test pairs and promoted when it passes."""
    from models.artifacts.publishing import publish_gated
    from models.artifacts.registry import Registry, without_wall_clock
    from models.relevance.baselines import gate_floors

    family = section.family

    quarantined = lake.replace_slice(outputs.quarantine, "quarantine", f"source = {sql_literal(SOURCE)}")
    trained = outputs.trained

    def build(folder: Path) -> None:
        untar(trained.artifact, folder)
        (folder / METRICS_FILE).write_text(json.dumps(without_wall_clock(trained.metrics), indent=2))
        (folder / REPORT_FILE).write_text(trained.report + "\n")

    registry = Registry(lake.artifacts(), keep=section.registry_keep)
    metrics = {"test": trained.metrics["test"], "validation": trained.metrics["validation"]}
    metrics.update({f"{name}_on_test": report.to_dict() for name, report in outputs.baselines.items()})
    rows = outputs.test_rows
    published = publish_gated(
        registry,
        section,
        build,
        metrics=metrics,
        config=config,
        inputs={**outputs.inputs, "quarantined": quarantined},
        measure=lambda folder: evaluate_published(folder, rows).gate_metrics()[section.gate.metric],
        rows=len(rows),
        baselines=gate_floors(outputs.baselines, section.gate.metric),
        external={"base model": outputs.base_model} if outputs.base_model else None,
    )
    version, decision = published.version, published.decision
    log.info("train_teacher: %s", trained.report)
    if decision is not None:
        log.info("train_teacher: %s", decision.line())
    sizes = outputs.inputs
    return TeacherRunReport(
        version,
        sizes["train_pairs"],
        sizes["validation_pairs"],
        sizes["test_pairs"],
        quarantined,
        metrics["test"]["kappa"],
        metrics["test"]["ndcg_at_20"],
        decision.line() if decision else "",
        registry.current(family) == version,
        family,
    )


def run(spark: SparkSession, cfg: PinpipeConfig) -> TeacherRunReport:
    t = cfg.teacher
    split = QuerySplit(t.validation_fraction, t.test_fraction, t.split_seed)
    int8 = Int8Calibration(t.int8_calibration_pairs, t.int8_target_spearman, t.openvino_export)
    outputs = transform(
        read(spark, cfg),
        model=t.model,
        training=t.training,
        label_sources=t.label_sources,
        max_labels=t.max_labels,
        split=split,
        holdout_folds=cfg.evaluation.holdout_folds,
        int8=int8,
        fit=fitter(spark, t),
    )
    return write(outputs, Lake.of(cfg.lake), t, config=cfg.to_dict())


def main(argv: Sequence[str] | None = None) -> TeacherRunReport:
    return run_job("pinpipe train_teacher", __doc__, run, argv)


if __name__ == "__main__":
    main()
