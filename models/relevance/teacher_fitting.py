"""Fitting and evaluating the teacher on collected pairs: plain pandas frames in, the trained
teacher's folder (as a tar), metrics and report out. Module-level and fed plain data, so
``TorchDistributor`` can ship :func:`fit_teacher` to its processes. The job
``jobs.train_teacher`` collects the pairs in Spark and publishes what this returns."""

from __future__ import annotations

import io
import json
import logging
import os
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.relevance.levels import LevelThresholds
from models.relevance.metrics import RelevanceReport, evaluate_with_cuts
from models.relevance.teacher_settings import TeacherSettings, TrainSettings
from schemas import human_labels as HL

log = logging.getLogger(__name__)

LEVEL = "level"  # the label on the model's 1..num_levels scale
TEXT = "text"


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


def untar(data: bytes, out: Path) -> None:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        tar.extractall(out, filter="data")


def device_for(use_gpu: bool):
    import torch

    if use_gpu and torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def _evaluate(rows: pd.DataFrame, query_ids, probs: np.ndarray, levels: list[int], cuts: LevelThresholds):
    """The relevance report of ``probs`` against the rows' levels, with kappa at ``cuts``."""
    return evaluate_with_cuts(query_ids, rows[LEVEL], probs, levels, cuts)


def _cpu_plans(folder: Path, val_rows: pd.DataFrame, int8: dict[str, Any], settings: TeacherSettings) -> dict:
    """Prepare the teacher for CPU scoring on validation pairs: choose which layers stay fp32 under
    torch's int8 (``models/relevance/int8.py``) and, when asked, export it for OpenVINO
    (``models/relevance/openvino_engine.py``), both saved with it. Nothing for 4-bit (GPU-only)
    teachers or when ``calibration_pairs`` is 0. Returns what they measured, for the metrics."""
    if int8["calibration_pairs"] == 0 or settings.quantize_4bit or val_rows.empty:
        return {}
    from models.relevance.scoring import calibrate_teacher_int8, export_teacher_openvino

    sample = val_rows.sample(n=min(int8["calibration_pairs"], len(val_rows)), random_state=int8["seed"])
    queries, texts = list(sample[HL.QUERY]), list(sample[TEXT])
    plan = calibrate_teacher_int8(folder, queries, texts, int8["target_spearman"])
    plan.save(folder)
    log.info(
        "train_teacher: int8 plan keeps %d of %d linear layers fp32 (Spearman with fp32 %.4f on %d pairs)",
        len(plan.keep_fp32),
        len(plan.layer_error),
        plan.spearman,
        plan.pairs,
    )
    measured = {"int8": {"keep_fp32": list(plan.keep_fp32), "spearman": plan.spearman, "calibration_pairs": plan.pairs}}
    if int8.get("openvino"):
        exported = export_teacher_openvino(folder, queries, texts, int8["target_spearman"])
        log.info(
            "train_teacher: OpenVINO export: Spearman with fp32 int8 %.4f, bf16 %.4f (int8 %s)",
            exported.int8_agreement,
            exported.bf16_agreement,
            "used" if exported.int8 else f"below {exported.target}: scored in bf16",
        )
        measured["openvino"] = {
            "int8_spearman": exported.int8_agreement,
            "bf16_spearman": exported.bf16_agreement,
            "int8": exported.int8,
        }
    return measured


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
    device = device_for(use_gpu)
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
            metrics.update(_cpu_plans(folder, val_rows, teacher["int8"], settings))
            table = test_report.table(
                f"teacher test ({len(test_rows):,} pairs, {test_rows[HL.QUERY].nunique():,} queries; "
                f"{teacher['test_set']})"
            )
            return TrainedTeacher(_tar_folder(folder), metrics, table)
    finally:
        if distributed and dist.is_initialized():
            dist.destroy_process_group()


def evaluate_published(folder: Path, rows: pd.DataFrame) -> RelevanceReport:
    """A published teacher (its weights and level cuts, from ``folder``) on ``rows``: the same
    scoring for the new version and for production (fp32 on CPU, the GPU's precision there)."""
    import torch

    from models.relevance.scoring import ScoringSettings, TeacherScorer

    gpu = torch.cuda.is_available()
    settings = ScoringSettings(precision="auto" if gpu else "fp32", engine="torch")
    scorer = TeacherScorer(folder, settings, device_for(gpu))
    probs, _, _ = scorer.score(list(rows[HL.QUERY]), list(rows[TEXT]))
    levels = [int(v) for v in scorer.levels]
    cuts = scorer.cuts or LevelThresholds.fit(probs @ scorer.levels, rows[LEVEL], levels)
    return evaluate_with_cuts(list(rows[HL.QUERY]), rows[LEVEL], probs.astype(np.float64), levels, cuts)
