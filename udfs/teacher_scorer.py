"""Score (query, pin text) pairs with a published teacher, in Spark or outside it.

``TeacherScorer`` loads a teacher artifact for one device at one precision:

* CPU: ``int8`` (dynamic int8 quantization of every ``nn.Linear``) or ``fp32``;
* GPU: ``bf16`` / ``fp16`` weights, or ``nf4`` (4-bit NF4 base via bitsandbytes);
* ``auto``: int8 on CPU, bf16 on GPU (fp16 where bf16 is not supported).

``score`` tokenizes with the budgets the teacher was trained with, orders the pairs by token
length, cuts them into batches bounded by rows and by padded tokens, and returns results in
input order: per-level probabilities, expected relevance, and the level from the teacher's
share-matched cuts.

In Spark, ``score_partitions`` is a ``mapInPandas`` function: each Python worker loads the
scorer once (cached for as long as the worker lives) on the task's GPU or with the task's
cores, and scores the Arrow batches it is sent.
"""

from __future__ import annotations

import json
import logging
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from pyspark.sql.types import ArrayType, DoubleType, FloatType, IntegerType, StringType, StructField, StructType
from torch import nn

from models.levels import LevelThresholds
from models.teacher import DECODING_FILE, ENCODING_FILE, CrossEncoderTeacher
from models.teacher_training import encode_pairs, predict_proba
from schemas import teacher_scores as TS
from udfs.task_resources import task_device, task_threads

log = logging.getLogger(__name__)

GPU_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "nf4": "bfloat16", "fp32": "float32"}


@dataclass(frozen=True)
class ScoringSettings:
    precision: str = "auto"
    batch_size: int = 128
    max_batch_tokens: int = 8192  # 0: rows only
    max_length: int = 0  # 0: as trained
    query_tokens: int = 0  # 0: as trained


def resolve_precision(precision: str, device: torch.device) -> str:
    """The concrete precision for ``device``; a precision the device cannot run is an error."""
    if precision == "auto":
        if device.type != "cuda":
            return "int8"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cuda" and precision == "int8":
        raise ValueError("int8 dynamic quantization runs on CPU; on a GPU use bf16, fp16 or nf4")
    if device.type != "cuda" and precision in ("bf16", "fp16", "nf4"):
        raise ValueError(f"precision {precision!r} needs a CUDA GPU; on CPU use int8 or fp32")
    if precision not in GPU_DTYPES and precision != "int8":
        raise ValueError(f"unknown precision {precision!r}; known: auto, fp32, int8, bf16, fp16, nf4")
    return precision


def quantize_int8(model: nn.Module) -> nn.Module:
    """Dynamic int8 quantization of the linear layers (weights int8, activations quantized per batch)."""
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch points at torchao for new code; this API is still the CPU path
        return quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)


class TeacherScorer:
    def __init__(self, folder: str | Path, settings: ScoringSettings, device: torch.device | None = None) -> None:
        from transformers import AutoTokenizer

        folder = Path(folder)
        self.device = device or torch.device("cpu")
        self.precision = resolve_precision(settings.precision, self.device)
        model = CrossEncoderTeacher.load(folder, self.device, gpu_dtype=GPU_DTYPES.get(self.precision),
                                         quantize_4bit=self.precision == "nf4")
        self.model = quantize_int8(model) if self.precision == "int8" else model
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

    def score(self, queries: Sequence[str], texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(probabilities (n, L) float32, expected relevance (n,), level (n,)), in input order."""
        if len(queries) == 0:
            return np.zeros((0, self.num_levels), np.float32), np.zeros(0), np.zeros(0, np.int32)
        encoded = encode_pairs(self.tokenizer, list(queries), list(texts), self)
        probs = predict_proba(self.model, encoded, self.batch_size, self.tokenizer.pad_token_id, self.max_batch_tokens)
        expected = probs @ self.levels
        level = self.cuts.predict(expected) if self.cuts else probs.argmax(1) + 1
        return probs.astype(np.float32), expected, level.astype(np.int32)


# --------------------------------------------------------------------------- in Spark

SCORED_SCHEMA = StructType([
    StructField(TS.QUERY, StringType(), nullable=False),
    StructField(TS.PIN_ID, StringType(), nullable=False),
    StructField(TS.PROBABILITIES, ArrayType(FloatType(), containsNull=False), nullable=False),
    StructField(TS.EXPECTED_RELEVANCE, DoubleType(), nullable=False),
    StructField(TS.LEVEL, IntegerType(), nullable=False),
    StructField(TS.PRECISION, StringType(), nullable=False),
])

_scorers: dict[tuple, TeacherScorer] = {}
_lock = threading.Lock()


def scorer_for(folder: str, settings: ScoringSettings) -> TeacherScorer:
    """This worker's scorer for (artifact, settings, device), loaded on first use."""
    device = task_device()
    if device.type == "cpu":
        torch.set_num_threads(task_threads())
    key = (str(folder), settings, str(device))
    with _lock:
        if key not in _scorers:
            log.info("loading teacher %s on %s (%s)", folder, device, settings.precision)
            _scorers[key] = TeacherScorer(folder, settings, device)
        return _scorers[key]


def score_partitions(folder: str, settings: ScoringSettings, text_col: str
                     ) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """A ``mapInPandas`` function from rows ``query, pin_id, <text_col>`` to :data:`SCORED_SCHEMA`."""

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        scorer = scorer_for(folder, settings)
        for batch in batches:
            probs, expected, level = scorer.score(batch[TS.QUERY].tolist(), batch[text_col].tolist())
            yield pd.DataFrame({TS.QUERY: batch[TS.QUERY].to_numpy(), TS.PIN_ID: batch[TS.PIN_ID].to_numpy(),
                                TS.PROBABILITIES: list(probs), TS.EXPECTED_RELEVANCE: expected, TS.LEVEL: level,
                                TS.PRECISION: scorer.precision})

    return score
