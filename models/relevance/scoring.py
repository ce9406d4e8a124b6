"""Score (query, pin text) pairs with a published teacher — no Spark here.

``TeacherScorer`` loads a teacher artifact for one device at one precision:

* CPU: ``int8`` (dynamic int8 quantization of the linear layers, except those the teacher's
  ``int8.json`` keeps in fp32 — see ``models/relevance/int8.py``) or ``fp32``;
* GPU: ``bf16`` / ``fp16`` weights, or ``nf4`` (4-bit NF4 base via bitsandbytes);
* ``auto``: int8 on CPU, bf16 on GPU (fp16 where bf16 is not supported).

On CPU the ``engine`` runs it: ``openvino`` (the default: the teacher's OpenVINO export, made when
it was published — ``int8`` static int8 when it reached its Spearman target there, else bf16;
``bf16`` and ``fp32`` hints; see ``models/relevance/openvino_engine.py``) or ``torch`` (dynamic
int8 under the teacher's ``int8.json`` plan, or fp32). A teacher published without an export is
scored by torch, with a warning.

``score`` tokenizes with the budgets the teacher was trained with, orders the pairs by token
length, cuts them into batches bounded by rows and by padded tokens, and returns results in
input order: per-level probabilities, expected relevance, and the level from the teacher's
share-matched cuts. ``udfs/teacher_scorer.py`` runs it inside Spark.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.relevance import openvino_engine as ov_engine
from models.relevance.int8 import Int8Plan, calibrate_int8, quantize_int8
from models.relevance.levels import LevelThresholds
from models.relevance.metrics import spearman
from models.relevance.teacher import DECODING_FILE, ENCODING_FILE, CrossEncoderTeacher, saved_settings
from models.relevance.teacher_inference import collate, encode_pairs, inference_batches, predict_proba
from models.relevance.teacher_settings import ScoringSettings

log = logging.getLogger(__name__)

GPU_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "nf4": "bfloat16", "fp32": "float32"}


def resolve_precision(precision: str, device: torch.device, engine: str = "torch") -> str:
    """The concrete precision for ``device`` (and CPU ``engine``); a precision the device cannot
    run is an error."""
    if precision == "auto":
        if device.type != "cuda":
            return "int8"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cuda" and precision == "int8":
        raise ValueError("int8 runs on CPU; on a GPU use bf16, fp16 or nf4")
    cpu_precisions = ("int8", "fp32", "bf16") if engine == "openvino" else ("int8", "fp32")
    if device.type != "cuda" and precision in GPU_DTYPES and precision not in cpu_precisions:
        usable = " or ".join(cpu_precisions)
        raise ValueError(f"precision {precision!r} needs a CUDA GPU; on CPU with {engine} use {usable}")
    if precision not in GPU_DTYPES and precision != "int8":
        raise ValueError(f"unknown precision {precision!r}; known: auto, fp32, int8, bf16, fp16, nf4")
    return precision


class TeacherScorer:
    def __init__(self, folder: str | Path, settings: ScoringSettings, device: torch.device | None = None) -> None:
        from transformers import AutoTokenizer

        folder = Path(folder)
        self.device = device or torch.device("cpu")
        self.precision = resolve_precision(settings.precision, self.device, settings.engine)
        self.int8_plan = None
        on_openvino = self.device.type == "cpu" and settings.engine == "openvino"
        model = self._openvino(folder, settings) if on_openvino else None
        if model is None:
            self.precision = resolve_precision(settings.precision, self.device)  # what torch can run here
            model = self._torch(folder)
        self.model = model
        self.num_levels = model.settings.num_levels
        self.levels = np.arange(1, self.num_levels + 1, dtype=np.float64)
        self.tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        trained = json.loads((folder / ENCODING_FILE).read_text()) if (folder / ENCODING_FILE).is_file() else {}
        self.max_length = settings.max_length or trained.get("max_length", 128)
        self.query_tokens = settings.query_tokens or trained.get("query_tokens", 16)
        decoding = folder / DECODING_FILE
        self.cuts = LevelThresholds(**json.loads(decoding.read_text())) if decoding.is_file() else None
        self.batch_size = settings.batch_size
        self.max_batch_tokens = settings.max_batch_tokens

    def _openvino(self, folder: Path, settings: ScoringSettings) -> nn.Module | None:
        """The teacher's OpenVINO export compiled at the asked precision (int8 only where it
        reached its target when published); None, with a warning, when it has no export."""
        exported = folder / ov_engine.OPENVINO_DIR
        if not (exported / ov_engine.PLAN_FILE).is_file():
            log.warning("%s has no OpenVINO export (published without one): scoring with torch", folder)
            return None
        plan = ov_engine.OpenVinoPlan.load(exported)
        precision = self.precision
        if precision == "int8" and not plan.int8:
            log.warning(
                "%s: OpenVINO int8 agreed with fp32 at %s %.4f < %.4f when published: scoring in bf16",
                folder,
                plan.metric,
                plan.int8_agreement,
                plan.target,
            )
            precision = "bf16"
        self.precision = f"openvino-{precision}"
        compiled = ov_engine.compile_model(exported, precision, torch.get_num_threads())
        return ov_engine.OpenVinoModule(compiled, saved_settings(folder))

    def _torch(self, folder: Path) -> nn.Module:
        model = CrossEncoderTeacher.load(
            folder, self.device, gpu_dtype=GPU_DTYPES.get(self.precision), quantize_4bit=self.precision == "nf4"
        )
        if self.precision == "int8":
            self.int8_plan = Int8Plan.load(folder)
            if self.int8_plan is None:
                log.warning(
                    "%s has no %s (published before int8 calibration): every linear layer goes int8",
                    folder,
                    "int8.json",
                )
            return quantize_int8(model, self.int8_plan.keep_fp32 if self.int8_plan else ())
        return model

    def score(self, queries: Sequence[str], texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(probabilities (n, L) float32, expected relevance (n,), level (n,)), in input order."""
        if len(queries) == 0:
            return np.zeros((0, self.num_levels), np.float32), np.zeros(0), np.zeros(0, np.int32)
        encoded = encode_pairs(self.tokenizer, list(queries), list(texts), self)
        probs = predict_proba(self.model, encoded, self.batch_size, self.tokenizer.pad_token_id, self.max_batch_tokens)
        expected = probs @ self.levels
        level = self.cuts.predict(expected) if self.cuts else probs.argmax(1) + 1
        return probs.astype(np.float32), expected, level.astype(np.int32)


def calibrate_teacher_int8(
    folder: str | Path,
    queries: Sequence[str],
    texts: Sequence[str],
    target: float = 0.995,
    max_fp32_share: float = 0.25,
    batch_size: int = 16,
) -> Int8Plan:
    """Choose which linear layers of the teacher in ``folder`` stay fp32 under int8 (see
    ``models/relevance/int8.py``), on calibration pairs the teacher did not train on."""
    scorer = TeacherScorer(folder, ScoringSettings(precision="fp32", batch_size=batch_size, engine="torch"))
    encoded = encode_pairs(scorer.tokenizer, list(queries), list(texts), scorer)

    def run(model: nn.Module) -> np.ndarray:
        probs = predict_proba(model, encoded, scorer.batch_size, scorer.tokenizer.pad_token_id, scorer.max_batch_tokens)
        return probs @ scorer.levels

    return calibrate_int8(scorer.model, run, len(encoded), target, max_fp32_share)


def export_teacher_openvino(
    folder: str | Path,
    queries: Sequence[str],
    texts: Sequence[str],
    target: float = 0.995,
    batch_size: int = 16,
) -> ov_engine.OpenVinoPlan:
    """Export the teacher in ``folder`` for OpenVINO (``folder/openvino``): converted, and quantized
    to int8 on every other one of the given pairs (ones the teacher did not train on, batched as
    scoring batches them); each precision's Spearman with fp32 torch's expected relevance is
    measured on the other half — pairs the quantization never saw — and recorded."""
    folder = Path(folder)
    scorer = TeacherScorer(folder, ScoringSettings(precision="fp32", batch_size=batch_size, engine="torch"))
    if len(queries) < 4:
        raise ValueError(f"the OpenVINO export needs at least 4 calibration pairs, got {len(queries)}")
    calibration = encode_pairs(scorer.tokenizer, list(queries[0::2]), list(texts[0::2]), scorer)
    held_out = encode_pairs(scorer.tokenizer, list(queries[1::2]), list(texts[1::2]), scorer)
    pad_id = scorer.tokenizer.pad_token_id
    batches = [
        tuple(t.numpy() for t in collate(calibration, idx, pad_id, torch.device("cpu")))
        for idx in inference_batches(calibration.lengths, scorer.batch_size, scorer.max_batch_tokens)
    ]
    exported = folder / ov_engine.OPENVINO_DIR
    ov_engine.convert(scorer.model, batches[0], exported)
    ov_engine.quantize(exported, batches)

    def expected(model: nn.Module) -> np.ndarray:
        return predict_proba(model, held_out, scorer.batch_size, pad_id, scorer.max_batch_tokens) @ scorer.levels

    reference = expected(scorer.model)
    settings = scorer.model.settings

    def agreement(precision: str) -> float:
        compiled = ov_engine.compile_model(exported, precision, torch.get_num_threads())
        return float(spearman(reference, expected(ov_engine.OpenVinoModule(compiled, settings))))

    plan = ov_engine.OpenVinoPlan(
        "spearman of the expected relevance with fp32 torch, on pairs the quantization did not see",
        target,
        len(calibration),
        len(held_out),
        agreement("int8"),
        agreement("bf16"),
    )
    plan.save(exported)
    return plan
