"""Serving a student: feature rows in, level probabilities out.

``feature_arrays`` turns ``student_features`` rows and the ``EmbeddingLookup`` of their texts
into the arrays a student trains on; ``predict_relevance`` runs a model over such arrays in
batches, in fp32 or under bf16/fp16 autocast. ``StudentScorer`` is a published student loaded
from its folder, ready to score rows (pandas or Arrow): it keeps the lookup's matrix on the
model's device and gathers each batch there from the rows' positions (``predict_gathered``),
given as text hashes (``score``) or as positions Spark already joined on (``score_positions``).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from models.relevance.embedding_lookup import EmbeddingLookup
from models.relevance.student import RELEVANCE, Student, dense_matrix, load_student
from schemas import student_features as SF

COUNT_COLUMNS = [SF.DENSE.index(SF.PIN_IMPRESSIONS), SF.DENSE.index(SF.QUERY_PIN_IMPRESSIONS)]
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def dense_features(columns) -> np.ndarray:
    """The model's dense input ``[n, len(SF.DENSE)]`` from the :data:`SF.DENSE` columns, in
    that order (NumPy arrays, Arrow arrays or pandas series)."""
    return dense_matrix(np.column_stack([np.asarray(column) for column in columns]), COUNT_COLUMNS)


def dense_vectors(vectors) -> np.ndarray:
    """The same from the :data:`SF.DENSE_VECTOR` column (Arrow list<float>) of those values."""
    width = len(SF.DENSE)
    values = vectors.flatten().to_numpy(zero_copy_only=False)
    if vectors.null_count or len(values) != width * len(vectors):
        raise ValueError(f"{SF.DENSE_VECTOR} must hold {width} values a row ({', '.join(SF.DENSE)}), none null")
    return dense_matrix(values.reshape(len(vectors), width), COUNT_COLUMNS)


def feature_positions(batch, lookup: EmbeddingLookup) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(query rows, pin rows in ``lookup.matrix``, dense features) of an Arrow record batch (or
    table, or pandas frame) of ``student_features`` rows: the embeddings stay in the lookup."""
    dense = dense_features([batch[name] for name in SF.DENSE])
    return lookup.positions(batch[SF.QUERY_TEXT_HASH]), lookup.positions(batch[SF.PIN_TEXT_HASH]), dense


def feature_arrays(rows: pd.DataFrame, lookup: EmbeddingLookup) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(query embeddings, pin embeddings, dense features) of ``student_features`` rows: the
    embeddings gathered from ``lookup``, for training, which reads every row many times."""
    query, pin, dense = feature_positions(rows, lookup)
    return lookup.matrix[query], lookup.matrix[pin], dense


def autocast(device: torch.device, precision: str):
    dtype = PRECISIONS[precision]
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


Inputs = Callable[[slice, torch.device], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


@torch.inference_mode()
def _predict(model: Student, n: int, inputs: Inputs, batch_size: int, precision: str) -> np.ndarray:
    device = next(model.parameters()).device
    out = np.zeros((n, model.settings.num_levels), dtype=np.float32)
    with autocast(device, precision):
        for start in range(0, n, batch_size):
            part = slice(start, start + batch_size)
            logits = model(*inputs(part, device))[RELEVANCE].float()
            out[part] = torch.softmax(logits, dim=-1).cpu().numpy()
    return out


def predict_relevance(
    model: Student, query: np.ndarray, pin: np.ndarray, dense: np.ndarray, batch_size: int, precision: str = "fp32"
) -> np.ndarray:
    """Level probabilities ``[n, num_levels]`` (float32) of rows given as embedding matrices."""

    def inputs(part: slice, device: torch.device):
        return tuple(torch.as_tensor(a[part], device=device) for a in (query, pin, dense))

    return _predict(model, len(query), inputs, batch_size, precision)


def predict_gathered(
    model: Student,
    table: torch.Tensor,
    query: np.ndarray,
    pin: np.ndarray,
    dense: np.ndarray,
    batch_size: int,
    precision: str = "fp32",
) -> np.ndarray:
    """The same for rows given as positions in ``table`` (the lookup's matrix on the model's
    device): each batch is gathered where the model runs, and only positions travel there."""

    def inputs(part: slice, device: torch.device):
        q, p = (torch.as_tensor(a[part], device=device) for a in (query, pin))
        return table.index_select(0, q), table.index_select(0, p), torch.as_tensor(dense[part], device=device)

    return _predict(model, len(query), inputs, batch_size, precision)


class StudentScorer:
    """A published student, loaded once, scoring feature rows."""

    def __init__(self, folder: str | Path, device: torch.device | None = None, precision: str = "fp32") -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"student precision must be one of {list(PRECISIONS)}, got {precision!r}")
        self.model, self.meta = load_student(Path(folder), device)
        self.precision = precision
        self._table: tuple[EmbeddingLookup, torch.Tensor] | None = None

    @property
    def levels(self) -> np.ndarray:
        return np.arange(1, self.model.settings.num_levels + 1, dtype=np.float64)

    def _table_of(self, lookup: EmbeddingLookup) -> torch.Tensor:
        """``lookup.matrix`` on the model's device, moved once per lookup (shared memory on CPU)."""
        if self._table is None or self._table[0] is not lookup:
            device = next(self.model.parameters()).device
            self._table = (lookup, torch.as_tensor(lookup.matrix, device=device))
        return self._table[1]

    def score(self, rows, lookup: EmbeddingLookup, batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, expected relevance) of ``student_features`` rows: a pandas frame or an
        Arrow record batch or table."""
        return self.score_positions(*feature_positions(rows, lookup), lookup, batch_size)

    def score_positions(
        self, query: np.ndarray, pin: np.ndarray, dense: np.ndarray, lookup: EmbeddingLookup, batch_size: int = 4096
    ) -> tuple[np.ndarray, np.ndarray]:
        """The same for rows given as their texts' positions in ``lookup`` and dense features."""
        query, pin = (np.array(rows, dtype=np.int64) for rows in (query, pin))  # owned (writable), as torch wants
        probs = predict_gathered(self.model, self._table_of(lookup), query, pin, dense, batch_size, self.precision)
        return probs, probs @ self.levels
