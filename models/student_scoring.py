"""Serving a student: feature rows in, level probabilities out.

``feature_arrays`` turns ``student_features`` rows (a pandas frame) into the arrays a student
reads; ``predict_relevance`` runs a model over them in batches, in fp32 or under bf16/fp16
autocast; ``StudentScorer`` is a published student loaded from its folder, ready to score.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from models.student import RELEVANCE, Student, dense_matrix, load_student
from schemas import student_features as SF

COUNT_COLUMNS = [SF.DENSE.index(SF.PIN_IMPRESSIONS), SF.DENSE.index(SF.QUERY_PIN_IMPRESSIONS)]
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def feature_arrays(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(query embeddings, pin embeddings, dense features) of ``student_features`` rows."""
    query = np.stack(rows[SF.QUERY_EMBEDDING].to_numpy()).astype(np.float32, copy=False)
    pin = np.stack(rows[SF.PIN_EMBEDDING].to_numpy()).astype(np.float32, copy=False)
    dense = dense_matrix(rows[list(SF.DENSE)].to_numpy(dtype=np.float64), COUNT_COLUMNS)
    return query, pin, dense


def _matrix(column) -> np.ndarray:
    """A non-null Arrow list<float> column as an ``[n, d]`` float32 matrix (no per-row objects)."""
    if hasattr(column, "combine_chunks"):  # a ChunkedArray
        column = column.combine_chunks()
    values = column.flatten().to_numpy(zero_copy_only=False)
    if not values.flags.writeable:  # a zero-copy view of Arrow memory; torch wants its own
        values = values.copy()
    return values.reshape(len(column), -1).astype(np.float32, copy=False)


def arrow_feature_arrays(batch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """As :func:`feature_arrays`, from an Arrow record batch or table, without going through pandas."""
    dense = np.column_stack([batch.column(name).to_numpy(zero_copy_only=False) for name in SF.DENSE])
    query, pin = _matrix(batch.column(SF.QUERY_EMBEDDING)), _matrix(batch.column(SF.PIN_EMBEDDING))
    return query, pin, dense_matrix(dense.astype(np.float64), COUNT_COLUMNS)


def autocast(device: torch.device, precision: str):
    dtype = PRECISIONS[precision]
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


@torch.inference_mode()
def predict_relevance(
    model: Student, query: np.ndarray, pin: np.ndarray, dense: np.ndarray, batch_size: int, precision: str = "fp32"
) -> np.ndarray:
    """Level probabilities ``[n, num_levels]`` (float32)."""
    device = next(model.parameters()).device
    out = np.zeros((len(query), model.settings.num_levels), dtype=np.float32)
    with autocast(device, precision):
        for start in range(0, len(query), batch_size):
            part = slice(start, start + batch_size)
            tensors = [torch.as_tensor(a[part], device=device) for a in (query, pin, dense)]
            logits = model(*tensors)[RELEVANCE].float()
            out[part] = torch.softmax(logits, dim=-1).cpu().numpy()
    return out


class StudentScorer:
    """A published student, loaded once, scoring feature rows."""

    def __init__(self, folder: str | Path, device: torch.device | None = None, precision: str = "fp32") -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"student precision must be one of {list(PRECISIONS)}, got {precision!r}")
        self.model, self.meta = load_student(Path(folder), device)
        self.precision = precision

    @property
    def levels(self) -> np.ndarray:
        return np.arange(1, self.model.settings.num_levels + 1, dtype=np.float64)

    def score(self, rows: pd.DataFrame, batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, expected relevance) of ``student_features`` rows."""
        probs = predict_relevance(self.model, *feature_arrays(rows), batch_size, self.precision)
        return probs, probs @ self.levels

    def score_arrow(self, batch, batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """The same, for an Arrow record batch of ``student_features`` rows."""
        probs = predict_relevance(self.model, *arrow_feature_arrays(batch), batch_size, self.precision)
        return probs, probs @ self.levels
