"""Train the cross-encoder relevance teacher on human labels and publish it to the registry.

1. Read ``human_labels`` (``teacher.label_sources``) joined with ``pin_text_features``
   (``teacher.feature_version``) from Delta.
2. Check every label: a null or out-of-range relevance, a bad ``scale_max``, a blank query, a
   pin without text, or a duplicated ``label_id`` sends the row to ``quarantine`` with its
   reason; nothing is coerced. Each relevance is mapped linearly from ``1..scale_max`` onto the
   model's ``1..num_levels``.
3. Split by query (whole queries, seeded) into train and validation.
4. Train in-process, or data-parallel over ``teacher.distributed_processes`` processes with
   pyspark's ``TorchDistributor``; progress (loss, steps/s, ETA) is shown and logged, and
   training early-stops on validation kappa.
5. Evaluate on validation (per-level accuracy, quadratic weighted kappa, AUROC per threshold,
   nDCG@20), fit share-matched level cuts on the validation expected relevance, print the
   table, and publish the model with its metrics, the resolved config and its inputs as a new
   version of ``<lake>/artifacts/<family>``.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.config import PinpipeConfig, TeacherConfig
from jobs.job_args import job_config
from jobs.lake import Lake, sql_literal
from jobs.session import spark_session
from jobs.validation import REASON, duplicated, first_failure, is_blank, split_rejected, to_quarantine
from models.levels import LevelThresholds
from models.metrics import evaluate_relevance, quadratic_weighted_kappa
from models.settings import TeacherSettings, TrainSettings
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


def labeled_pairs(labels: DataFrame, features: DataFrame, num_levels: int,
                  sources: Sequence[str] = ()) -> tuple[DataFrame, DataFrame]:
    """(valid pairs ``label_id, query, pin_id, text, level, source``, quarantine rows)."""
    if sources:
        labels = labels.filter(F.col(HL.SOURCE).isin(list(sources)))
    text = features.select(F.col(PTF.PIN_ID).alias("_pin"), F.col(PTF.PIN_TEXT).alias(TEXT))
    joined = labels.join(text, labels[HL.PIN_ID] == text["_pin"], "left").drop("_pin")
    relevance, scale = F.col(HL.RELEVANCE), F.col(HL.SCALE_MAX)
    checked = joined.withColumn(REASON, first_failure([
        (F.col(HL.LABEL_ID).isNull(), "missing label_id"),
        (duplicated(HL.LABEL_ID), "duplicate label_id"),
        (is_blank(F.col(HL.QUERY)), "empty query"),
        (F.col(HL.PIN_ID).isNull(), "missing pin_id"),
        (relevance.isNull(), "relevance is null"),
        (scale.isNull() | (scale < 2), F.concat(F.lit("scale_max must be >= 2, got "), F.coalesce(scale.cast("string"), F.lit("null")))),
        ((relevance < 1) | (relevance > scale),
         F.concat(F.lit("relevance "), relevance.cast("string"), F.lit(" outside 1.."), scale.cast("string"))),
        (is_blank(F.col(TEXT)), "no pin_text_features row (or empty text) for pin"),
    ]))
    valid, rejected = split_rejected(checked)
    pairs = valid.select(HL.LABEL_ID, HL.QUERY, HL.PIN_ID, TEXT,
                         model_level(relevance, scale, num_levels).alias(LEVEL), HL.SOURCE)
    return pairs, to_quarantine(rejected.drop(TEXT), SOURCE, "human_labels")


def split_by_query(queries: Sequence[str], validation_fraction: float, seed: int) -> np.ndarray:
    """True where a row is in validation; every query's rows fall on one side.

    The queries are shuffled by ``seed`` and the first ``round(fraction * n)`` (at least one,
    leaving at least one for training) go to validation.
    """
    unique = np.array(sorted(set(queries)), dtype=object)
    if len(unique) < 2:
        raise ValueError(f"a query-grouped split needs at least 2 distinct queries, got {len(unique)}")
    n_val = min(len(unique) - 1, max(1, round(validation_fraction * len(unique))))
    held_out = set(np.random.default_rng(seed).permutation(unique)[:n_val].tolist())
    return np.fromiter((q in held_out for q in queries), dtype=bool, count=len(queries))


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


def fit_teacher(train_rows: pd.DataFrame, val_rows: pd.DataFrame, teacher: dict[str, Any],
                use_gpu: bool = False) -> TrainedTeacher | None:
    """Build, train and evaluate a teacher; rank 0 returns it (other ranks return None).

    Module-level and fed plain data, so ``TorchDistributor`` can ship it to its processes; with
    ``WORLD_SIZE`` > 1 in the environment it joins the process group first.
    """
    import torch
    import torch.distributed as dist
    from transformers import AutoTokenizer

    from models.teacher import DECODING_FILE, ENCODING_FILE, CrossEncoderTeacher, backbone_location
    from models.teacher_training import encode_pairs, train

    settings = TeacherSettings(**teacher["model"])
    training = TrainSettings(**teacher["training"])
    device = _device(use_gpu)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank = dist.get_rank() if distributed else 0
    try:
        tokenizer = AutoTokenizer.from_pretrained(backbone_location(settings.backbone_path), local_files_only=True)
        if tokenizer.pad_token_id is None:  # decoder LLMs often ship without one
            tokenizer.pad_token = tokenizer.eos_token
        levels = list(range(1, settings.num_levels + 1))

        def encode(rows: pd.DataFrame):
            return encode_pairs(tokenizer, list(rows[HL.QUERY]), list(rows[TEXT]), training,
                                list(rows[LEVEL] - 1), list(rows[HL.QUERY]))

        train_set, val_set = encode(train_rows), encode(val_rows)
        torch.manual_seed(training.seed)
        model = CrossEncoderTeacher.build(settings, device)
        result = train(model, train_set, val_set, training, levels, tokenizer.pad_token_id)
        if rank != 0:
            return None
        probs = result.val_probabilities
        expected = probs @ np.asarray(levels, dtype=np.float64)
        cuts = LevelThresholds.fit(expected, val_rows[LEVEL], levels)
        report = evaluate_relevance(val_set.query_ids, val_rows[LEVEL], probs, levels)
        report.extra["kappa, share-matched cuts (fit on validation)"] = quadratic_weighted_kappa(
            val_rows[LEVEL], cuts.predict(expected), min(levels), max(levels))
        with tempfile.TemporaryDirectory() as tmp:
            folder = model.save(Path(tmp) / "teacher", tokenizer)
            (folder / DECODING_FILE).write_text(json.dumps(cuts.to_dict(), indent=2))
            (folder / ENCODING_FILE).write_text(json.dumps(
                {"max_length": training.max_length, "query_tokens": training.query_tokens}, indent=2))
            metrics = {"validation": report.to_dict(), "best_epoch": result.best_epoch, "history": result.history,
                       "trainable_parameters": model.trainable_parameters(),
                       "world_size": dist.get_world_size() if distributed else 1, "device": str(device)}
            table = report.table(f"teacher validation ({len(val_rows):,} pairs, "
                                 f"{val_rows[HL.QUERY].nunique():,} queries unseen in training)")
            return TrainedTeacher(_tar_folder(folder), metrics, table)
    finally:
        if distributed and dist.is_initialized():
            dist.destroy_process_group()


def int8_plan(folder: Path, val_rows: pd.DataFrame, teacher: TeacherConfig):
    """Choose, on validation pairs, which layers stay fp32 when the teacher is scored in int8 on
    CPU (``models/int8.py``), and save the plan with it. None for 4-bit (GPU-only) teachers or
    when ``int8_calibration_pairs`` is 0."""
    if teacher.int8_calibration_pairs == 0 or teacher.model.quantize_4bit or val_rows.empty:
        return None
    from models.scoring import calibrate_teacher_int8

    sample = val_rows.sample(n=min(teacher.int8_calibration_pairs, len(val_rows)), random_state=teacher.split_seed)
    plan = calibrate_teacher_int8(folder, list(sample[HL.QUERY]), list(sample[TEXT]), teacher.int8_target_spearman)
    plan.save(folder)
    log.info("train_teacher: int8 plan keeps %d of %d linear layers fp32 (Spearman with fp32 %.4f on %d pairs)",
             len(plan.keep_fp32), len(plan.layer_error), plan.spearman, plan.pairs)
    return plan


# --------------------------------------------------------------------------- run


@dataclass
class TeacherRunReport:
    version: str
    train_pairs: int
    val_pairs: int
    train_queries: int
    val_queries: int
    quarantined: int
    kappa: float
    ndcg_at_20: float

    def line(self) -> str:
        return (f"train_teacher: version={self.version} train_pairs={self.train_pairs:,} "
                f"({self.train_queries:,} queries) val_pairs={self.val_pairs:,} ({self.val_queries:,} queries) "
                f"quarantined={self.quarantined:,} val_kappa={self.kappa:.4f} val_ndcg@20={self.ndcg_at_20:.4f}")


def load_pairs(spark: SparkSession, lake: Lake, cfg: PinpipeConfig) -> tuple[pd.DataFrame, int, dict[str, Any]]:
    """(valid pairs as pandas, rows quarantined, input versions) — labels are small by nature."""
    teacher = cfg.teacher
    version = teacher.feature_version or cfg.features.version
    features = lake.read(spark, "pin_text_features").filter(F.col(PTF.FEATURE_VERSION) == version)
    pairs, quarantine = labeled_pairs(lake.read(spark, "human_labels"), features, teacher.model.num_levels,
                                      teacher.label_sources)
    quarantined = lake.replace_slice(quarantine, "quarantine", f"source = {sql_literal(SOURCE)}")
    rows = pairs.toPandas().sort_values(HL.LABEL_ID, kind="stable").reset_index(drop=True)
    if teacher.max_labels and len(rows) > teacher.max_labels:
        rows = rows.sample(n=teacher.max_labels, random_state=teacher.split_seed).sort_index().reset_index(drop=True)
    inputs = {"human_labels_version": lake.version(spark, "human_labels"),
              "pin_text_features_version": lake.version(spark, "pin_text_features"),
              "feature_version": version, "label_sources": list(teacher.label_sources) or "all"}
    return rows, quarantined, inputs


def train_anywhere(spark: SparkSession, train_rows: pd.DataFrame, val_rows: pd.DataFrame,
                   teacher: TeacherConfig) -> TrainedTeacher:
    payload = {"model": dataclasses.asdict(teacher.model), "training": dataclasses.asdict(teacher.training)}
    if teacher.distributed_processes == 0:
        trained = fit_teacher(train_rows, val_rows, payload, use_gpu=True)
    else:
        from pyspark.ml.torch.distributor import TorchDistributor

        spark.sparkContext.setJobDescription(f"train_teacher: {teacher.distributed_processes} TorchDistributor processes")
        distributor = TorchDistributor(num_processes=teacher.distributed_processes,
                                       local_mode=teacher.distributed_local_mode,
                                       use_gpu=teacher.distributed_use_gpu)
        trained = distributor.run(fit_teacher, train_rows, val_rows, payload, teacher.distributed_use_gpu)
    if trained is None:
        raise RuntimeError("training returned nothing from rank 0")
    return trained


def run(spark: SparkSession, cfg: PinpipeConfig) -> TeacherRunReport:
    from models.registry import Registry

    lake = Lake.at(cfg.lake.root)
    teacher = cfg.teacher
    spark.sparkContext.setJobDescription("train_teacher: labels x pin text")
    rows, quarantined, inputs = load_pairs(spark, lake, cfg)
    if rows.empty:
        raise ValueError("train_teacher: no valid labeled pairs (see the quarantine table, source 'train_teacher')")
    is_val = split_by_query(list(rows[HL.QUERY]), teacher.validation_fraction, teacher.split_seed)
    train_rows, val_rows = rows[~is_val].reset_index(drop=True), rows[is_val].reset_index(drop=True)
    log.info("train_teacher: %d train pairs (%d queries), %d validation pairs (%d queries), %d quarantined",
             len(train_rows), train_rows[HL.QUERY].nunique(), len(val_rows), val_rows[HL.QUERY].nunique(), quarantined)
    trained = train_anywhere(spark, train_rows, val_rows, teacher)

    def build(folder: Path) -> None:
        _untar(trained.artifact, folder)
        plan = int8_plan(folder, val_rows, teacher)
        if plan is not None:
            trained.metrics["int8"] = {"keep_fp32": list(plan.keep_fp32), "spearman": plan.spearman,
                                       "calibration_pairs": plan.pairs}
        (folder / METRICS_FILE).write_text(json.dumps(trained.metrics, indent=2))
        (folder / REPORT_FILE).write_text(trained.report + "\n")

    registry = Registry(lake.artifacts_path(), keep=teacher.registry_keep)
    inputs.update(train_pairs=len(train_rows), val_pairs=len(val_rows),
                  train_queries=int(train_rows[HL.QUERY].nunique()), val_queries=int(val_rows[HL.QUERY].nunique()),
                  quarantined=quarantined)
    config = cfg.to_dict()
    validation = trained.metrics["validation"]
    version = registry.publish(teacher.family, build, metrics={"validation": validation}, config=config, inputs=inputs)
    if teacher.promote:
        registry.promote(teacher.family, version)
    print(trained.report)
    spark.sparkContext.setJobDescription(None)
    return TeacherRunReport(version, len(train_rows), len(val_rows), inputs["train_queries"], inputs["val_queries"],
                            quarantined, validation["kappa"], validation["ndcg_at_20"])


def main(argv: Sequence[str] | None = None) -> TeacherRunReport:
    cfg = job_config("pinpipe train_teacher", __doc__.splitlines()[0], argv)
    with spark_session("pinpipe-train-teacher", cfg.spark) as spark:
        report = run(spark, cfg)
    print(report.line())
    return report


if __name__ == "__main__":
    main()
