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


# ------------------------------------------------------------------ sharded indexes
#
# A sharded index is one trained *empty* index (the coarse quantizer, for IVF kinds) copied to
# every shard, each shard holding some of the vectors under their own int64 ids. A query
# searches every shard and keeps the best ``k`` of their answers (:func:`merge_top_k`).


def resolve_factory(factory: str, n: int, flat_below: int) -> str:
    """The factory string for ``n`` vectors: ``Flat`` below ``flat_below``; otherwise ``factory``
    with ``{nlist}`` replaced by a power of two near ``4 * sqrt(n)`` (at most ``n / 39``, so each
    list trains on the 39 points FAISS asks for)."""
    if n < flat_below:
        return "Flat"
    nlist = 1 << max(0, round(np.log2(max(1.0, 4 * np.sqrt(n)))))
    while nlist > 1 and nlist * 39 > n:
        nlist //= 2
    return factory.replace("{nlist}", str(nlist))


def empty_index(dim: int, factory: str, sample: np.ndarray | None = None) -> faiss.Index:
    """An empty inner-product index that takes ids (``add_with_ids``), trained on ``sample``
    when its kind needs training."""
    index = faiss.IndexIDMap(faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT))
    if not index.is_trained:
        if sample is None or len(sample) == 0:
            raise ValueError(f"a {factory} index must be trained: give it a sample of vectors")
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
    return index


def to_bytes(index: faiss.Index) -> bytes:
    return faiss.serialize_index(index).tobytes()


def from_bytes(data: bytes) -> faiss.Index:
    return faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))


def set_search_params(index: faiss.Index, params: str) -> faiss.Index:
    if params:
        faiss.ParameterSpace().set_index_parameters(index, params)
    return index


def merge_top_k(parts: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` (scores, ids) per query over several shards' answers (each (queries, k_i));
    ties keep the earlier shard's (then the earlier rank's) answer, so a result is reproducible."""
    if not parts:
        raise ValueError("nothing to merge: no shards")
    scores = np.concatenate([s for s, _ in parts], axis=1)
    ids = np.concatenate([i for _, i in parts], axis=1)
    scores = np.where(ids >= 0, scores, -np.inf)  # FAISS pads missing answers with id -1
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)


def recall_at(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each query's exact ids (-1 ignored) that ``found`` also returned."""
    hits = total = 0
    for f, e in zip(found, exact, strict=True):
        want = set(e[e >= 0].tolist())
        hits += len(want & set(f.tolist()))
        total += len(want)
    return hits / total if total else 1.0
