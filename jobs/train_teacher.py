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
import io
import json
import logging
import os
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from models.artifacts.gate import GateDecision, GateSettings, gate_version
from models.relevance.levels import LevelThresholds
from models.relevance.metrics import RelevanceReport, evaluate_with_cuts
from models.relevance.splits import TEST, TRAIN, VALIDATION, QuerySplit, assign_sides
from models.relevance.teacher_settings import TeacherSettings, TrainSettings
from runtime.config import PinpipeConfig, TeacherConfig
from runtime.entry import run_job
from runtime.lake import Lake, sql_literal
from runtime.session import job_description
from runtime.validation import REASON, duplicated, first_failure, is_blank, split_rejected, to_quarantine
from schemas import human_labels as HL
from schemas import pin_text_features as PTF

log = logging.getLogger(__name__)

SOURCE = "train_teacher"
LEVEL = "level"  # the label on the model's 1..num_levels scale
TEXT = "text"
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


@dataclass
class TrainedTeacher:
    """What one training run hands back to the driver."""

    artifact: bytes  # tar of the model folder (backbone or adapter, head, tokenizer, settings)
    metrics: dict[str, Any]
    report: str


def _tar_folder(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in sorted(folder.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(folder)), recursive=False)
    return buffer.getvalue()


def _untar(data: bytes, out: Path) -> None:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        tar.extractall(out, filter="data")


def _device(use_gpu: bool):
    import torch

    if use_gpu and torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def _evaluate(rows: pd.DataFrame, query_ids, probs: np.ndarray, levels: list[int], cuts: LevelThresholds):
    """The relevance report of ``probs`` against the rows' levels, with kappa at ``cuts``."""
    return evaluate_with_cuts(query_ids, rows[LEVEL], probs, levels, cuts)


def _int8_plan(folder: Path, val_rows: pd.DataFrame, int8: dict[str, Any], settings: TeacherSettings):
    """Choose, on validation pairs, which layers stay fp32 when the teacher is scored in int8 on
    CPU (``models/relevance/int8.py``), and save the plan with it. None for 4-bit (GPU-only) teachers or
    when ``calibration_pairs`` is 0."""
    if int8["calibration_pairs"] == 0 or settings.quantize_4bit or val_rows.empty:
        return None
    from models.relevance.scoring import calibrate_teacher_int8

    sample = val_rows.sample(n=min(int8["calibration_pairs"], len(val_rows)), random_state=int8["seed"])
    plan = calibrate_teacher_int8(folder, list(sample[HL.QUERY]), list(sample[TEXT]), int8["target_spearman"])
    plan.save(folder)
    log.info(
        "train_teacher: int8 plan keeps %d of %d linear layers fp32 (Spearman with fp32 %.4f on %d pairs)",
        len(plan.keep_fp32),
        len(plan.layer_error),
        plan.spearman,
        plan.pairs,
    )
    return plan


def fit_teacher(
    train_rows: pd.DataFrame,
    val_rows: pd.DataFrame,
    test_rows: pd.DataFrame,
    teacher: dict[str, Any],
    use_gpu: bool = False,
) -> TrainedTeacher | None:
    """Build, train, calibrate and evaluate a teacher; rank 0 returns it (other ranks None).

    Validation early-stops training and fits the level cuts and the int8 plan; the test rows
    are only scored, once, at the end. Module-level and fed plain data, so ``TorchDistributor``
    can ship it to its processes; with ``WORLD_SIZE`` > 1 it joins the process group first.
    """
    import torch
    import torch.distributed as dist
    from transformers import AutoTokenizer

    from models.relevance.teacher import DECODING_FILE, ENCODING_FILE, CrossEncoderTeacher
    from models.relevance.teacher_inference import encode_pairs, predict_proba
    from models.relevance.teacher_training import train

    settings = TeacherSettings(**teacher["model"])
    training = TrainSettings(**teacher["training"])
    device = _device(use_gpu)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank = dist.get_rank() if distributed else 0
    try:
        tokenizer = AutoTokenizer.from_pretrained(settings.backbone_path, local_files_only=True)
        if tokenizer.pad_token_id is None:  # decoder LLMs often ship without one
            tokenizer.pad_token = tokenizer.eos_token
        levels = list(range(1, settings.num_levels + 1))

        def encode(rows: pd.DataFrame):
            return encode_pairs(
                tokenizer, list(rows[HL.QUERY]), list(rows[TEXT]), training, list(rows[LEVEL] - 1), list(rows[HL.QUERY])
            )

        train_set, val_set = encode(train_rows), encode(val_rows)
        torch.manual_seed(training.seed)
        model = CrossEncoderTeacher.build(settings, device)
        result = train(model, train_set, val_set, training, levels, tokenizer.pad_token_id)
        if rank != 0:
            return None
        val_probs = result.val_probabilities
        cuts = LevelThresholds.fit(val_probs @ np.asarray(levels, dtype=np.float64), val_rows[LEVEL], levels)
        test_set = encode(test_rows)
        test_probs = predict_proba(model, test_set, training.eval_batch_size, tokenizer.pad_token_id)
        val_report = _evaluate(val_rows, val_set.query_ids, val_probs, levels, cuts)
        test_report = _evaluate(test_rows, test_set.query_ids, test_probs, levels, cuts)
        with tempfile.TemporaryDirectory() as tmp:
            folder = model.save(Path(tmp) / "teacher", tokenizer)
            (folder / DECODING_FILE).write_text(json.dumps(cuts.to_dict(), indent=2))
            (folder / ENCODING_FILE).write_text(
                json.dumps({"max_length": training.max_length, "query_tokens": training.query_tokens}, indent=2)
            )
            metrics = {
                "test": test_report.to_dict(),
                "validation": val_report.to_dict(),
                "evaluation": (
                    f"test: {len(test_rows)} pairs of {test_rows[HL.QUERY].nunique()} queries, "
                    f"{teacher['test_set']}; they neither trained the model nor chose its epoch, level "
                    "cuts or int8 plan (validation did)"
                ),
                "best_epoch": result.best_epoch,
                "history": result.history,
                "trainable_parameters": model.trainable_parameters(),
                "world_size": dist.get_world_size() if distributed else 1,
                "device": str(device),
            }
            plan = _int8_plan(folder, val_rows, teacher["int8"], settings)
            if plan is not None:
                metrics["int8"] = {
                    "keep_fp32": list(plan.keep_fp32),
                    "spearman": plan.spearman,
                    "calibration_pairs": plan.pairs,
                }
            table = test_report.table(
                f"teacher test ({len(test_rows):,} pairs, {test_rows[HL.QUERY].nunique():,} queries; "
                f"{teacher['test_set']})"
            )
            return TrainedTeacher(_tar_folder(folder), metrics, table)
    finally:
        if distributed and dist.is_initialized():
            dist.destroy_process_group()


# --------------------------------------------------------------------------- read, transform, write

Fit = Callable[[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, Any]], "TrainedTeacher | None"]


@dataclass(frozen=True)
class Int8Calibration:
    """Validation pairs that choose the CPU int8 plan (0: none), and its Spearman target."""

    pairs: int
    target_spearman: float


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

    def line(self) -> str:
        return (
            f"train_teacher: version={self.version}{' (promoted)' if self.promoted else ''} "
            f"train_pairs={self.train_pairs:,} val_pairs={self.val_pairs:,} test_pairs={self.test_pairs:,} "
            f"quarantined={self.quarantined:,} test_kappa={self.kappa:.4f} test_ndcg@20={self.ndcg_at_20:.4f}"
            + (f"; {self.gate}" if self.gate else "")
        )


def read(spark: SparkSession, cfg: PinpipeConfig) -> TeacherInputs:
    lake = Lake.at(cfg.lake.root)
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
        "int8": {"calibration_pairs": int8.pairs, "target_spearman": int8.target_spearman, "seed": split.seed},
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
    return TeacherOutputs(trained, quarantine, {**inputs.versions, **sizes, **protocol}, parts[TEST], base_model)


def evaluate_published(folder: Path, rows: pd.DataFrame) -> RelevanceReport:
    """A published teacher (its weights and level cuts, from ``folder``) on ``rows``: the same
    scoring for the new version and for production (fp32 on CPU, the GPU's precision there)."""
    import torch

    from models.relevance.scoring import ScoringSettings, TeacherScorer

    gpu = torch.cuda.is_available()
    scorer = TeacherScorer(folder, ScoringSettings(precision="auto" if gpu else "fp32"), _device(gpu))
    probs, _, _ = scorer.score(list(rows[HL.QUERY]), list(rows[TEXT]))
    levels = [int(v) for v in scorer.levels]
    cuts = scorer.cuts or LevelThresholds.fit(probs @ scorer.levels, rows[LEVEL], levels)
    return evaluate_with_cuts(list(rows[HL.QUERY]), rows[LEVEL], probs.astype(np.float64), levels, cuts)


def gate(registry, family: str, version: str, rows: pd.DataFrame, settings: GateSettings) -> GateDecision | None:
    """The published ``version`` against production on the new split's test pairs."""

    def measure(folder: Path) -> float:
        return evaluate_published(folder, rows).gate_metrics()[settings.metric]

    return gate_version(registry, family, version, settings, measure, len(rows))


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
    from models.artifacts.registry import Registry, content_key, without_wall_clock

    family = section.family

    quarantined = lake.replace_slice(outputs.quarantine, "quarantine", f"source = {sql_literal(SOURCE)}")
    trained = outputs.trained

    def build(folder: Path) -> None:
        _untar(trained.artifact, folder)
        (folder / METRICS_FILE).write_text(json.dumps(without_wall_clock(trained.metrics), indent=2))
        (folder / REPORT_FILE).write_text(trained.report + "\n")

    registry = Registry(lake.artifacts_path(), keep=section.registry_keep)
    metrics = {"test": trained.metrics["test"], "validation": trained.metrics["validation"]}
    inputs = {**outputs.inputs, "quarantined": quarantined}
    version = registry.publish(
        family,
        build,
        metrics=metrics,
        config=config,
        inputs=inputs,
        external={"base model": outputs.base_model} if outputs.base_model else None,
        key=content_key(config, inputs),
    )
    decision = gate(registry, family, version, outputs.test_rows, section.gate) if section.promote else None
    if section.promote and (decision is None or decision.passed):
        registry.promote(family, version)
    print(trained.report)
    if decision is not None:
        print(decision.line())
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
    )


def run(spark: SparkSession, cfg: PinpipeConfig) -> TeacherRunReport:
    t = cfg.teacher
    split = QuerySplit(t.validation_fraction, t.test_fraction, t.split_seed)
    int8 = Int8Calibration(t.int8_calibration_pairs, t.int8_target_spearman)
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
    return write(outputs, Lake.at(cfg.lake.root), t, config=cfg.to_dict())


def main(argv: Sequence[str] | None = None) -> TeacherRunReport:
    return run_job("pinpipe train_teacher", __doc__, run, argv)


if __name__ == "__main__":
    main()
