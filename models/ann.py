"""Approximate nearest-neighbour search over item vectors with FAISS (inner product on unit
vectors = cosine): an index built from a factory string, searched for a user's top items.

Row ``r`` of the indexed matrix is item index ``r + 1`` (0 pads histories); the ids FAISS
returns are shifted back, and -1 (no result) stays -1.
"""

from __future__ import annotations

import faiss
import numpy as np


def build_index(
    vectors: np.ndarray, factory: str, params: str = "", train_sample: int = 100_000, seed: int = 0
) -> faiss.Index:
    """An inner-product index of ``vectors`` (n, dim) float32; IVF/PQ kinds train their
    quantizer on a seeded sample of at most ``train_sample`` rows first. ``params`` are search
    parameters in FAISS's own syntax (``efSearch=256``, ``nprobe=32``), set through its
    ``ParameterSpace``."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    index = faiss.index_factory(vectors.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        rng = np.random.default_rng(seed)
        sample = vectors[rng.choice(len(vectors), size=min(train_sample, len(vectors)), replace=False)]
        index.train(sample)
    index.add(vectors)
    if params:
        faiss.ParameterSpace().set_index_parameters(index, params)
    return index


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, item indices 1..n or -1) of each query's ``k`` best items."""
    scores, rows = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return scores, np.where(rows >= 0, rows + 1, -1)
