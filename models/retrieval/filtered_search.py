"""Search restricted to a set of ids (conditional retrieval: the pins of one interest) through
faiss's own selectors, with an exact fallback.

A filter is a sorted array of allowed ids. For one shard (an ``IndexIDMap`` around a Flat, IVF
or HNSW index) :meth:`ShardFilter.selector_search` passes an ``IDSelectorBitmap`` over the ids in search
parameters of the inner index's own type — ``IndexIDMap`` translates the selector to its
positions, and the parameters carry the shard's ``nprobe`` / ``efSearch`` (parameters of the
wrong type, or none, would silently search with faiss's defaults). A filter passing a share
``s`` of the vectors widens the search by ``1 / s`` (IVF lists probed, HNSW candidates kept), so
it scans about as many *allowed* vectors as an unfiltered search scans vectors.

Restrictive selectors are where faiss answers fewer than ``k`` ids (``-1``): HNSW's graph walk
dead-ends among rejected nodes (faiss #3186, #4727), IVF's probed lists hold too few allowed ids
(#3112). :meth:`ShardFilter.exact_search` answers such queries exactly over the allowed vectors of the shard,
reconstructed from it; the caller uses it outright when the allowed set is small, and for any
query the selector left short.
"""

from __future__ import annotations

import math

import faiss
import numpy as np


def bitmap(allowed: np.ndarray) -> np.ndarray:
    """The bit array faiss's ``IDSelectorBitmap`` reads: id ``i`` is bit ``i & 7`` of byte ``i >> 3``."""
    allowed = np.asarray(allowed, dtype=np.int64)
    bits = np.zeros(int(allowed.max()) + 1 if len(allowed) else 1, dtype=bool)
    bits[allowed] = True
    return np.packbits(bits, bitorder="little")


def _search_parameters(inner: faiss.Index, selector: faiss.IDSelector, params: dict[str, float], widen: float):
    """Parameters of ``inner``'s type carrying ``selector`` and the shard's own search settings,
    widened by ``widen``."""
    if isinstance(inner, faiss.IndexIVF):
        nprobe = int(params.get("nprobe", inner.nprobe))
        return faiss.SearchParametersIVF(sel=selector, nprobe=min(inner.nlist, math.ceil(nprobe * widen)))
    if isinstance(inner, faiss.IndexHNSW):
        ef = int(params.get("efSearch", inner.hnsw.efSearch))
        return faiss.SearchParametersHNSW(sel=selector, efSearch=min(max(inner.ntotal, 1), math.ceil(ef * widen)))
    if isinstance(inner, faiss.IndexFlat):
        return faiss.SearchParameters(sel=selector)
    raise TypeError(f"filtered search supports Flat, IVF and HNSW shards, not {type(inner).__name__}")


def parse_params(text: str) -> dict[str, float]:
    """``nprobe=32,efSearch=128`` -> {name: value} (FAISS's ParameterSpace syntax)."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        out[name.strip()] = float(value)
    return out


class ShardFilter:
    """One shard of a sharded index, searched under id filters."""

    def __init__(self, shard: faiss.Index, params: str) -> None:
        if not isinstance(shard, faiss.IndexIDMap):
            shard = faiss.downcast_index(shard)
        if not isinstance(shard, faiss.IndexIDMap):
            raise TypeError(f"a filtered shard must be an IndexIDMap, got {type(shard).__name__}")
        self.shard = shard
        self.inner = faiss.downcast_index(shard.index)
        self.params = parse_params(params)
        self.ids = faiss.vector_to_array(shard.id_map).astype(np.int64)  # position -> id
        self._direct_map = False

    def positions(self, allowed: np.ndarray) -> np.ndarray:
        """Positions in the shard of the allowed ids it holds."""
        return np.flatnonzero(np.isin(self.ids, allowed))

    def selector_search(
        self, queries: np.ndarray, k: int, bits: np.ndarray, widen: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """faiss's answer for the ids set in ``bits`` (:func:`bitmap`, built once per filter)."""
        selector = faiss.IDSelectorBitmap(len(bits), faiss.swig_ptr(bits))  # n: bytes, not bits
        parameters = _search_parameters(self.inner, selector, self.params, widen)
        scores, ids = self.shard.search(queries, k, params=parameters)
        return scores, ids

    def exact_search(self, queries: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact inner products of ``queries`` with the shard's allowed vectors (reconstructed)."""
        positions = self.positions(allowed)
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        if len(positions) == 0:
            return scores, ids
        if isinstance(self.inner, faiss.IndexIVF) and not self._direct_map:
            self.inner.make_direct_map()
            self._direct_map = True
        vectors = self.inner.reconstruct_batch(positions)
        products = queries @ vectors.T
        take = min(k, len(positions))
        top = np.argsort(-products, axis=1, kind="stable")[:, :take]
        scores[:, :take] = np.take_along_axis(products, top, axis=1)
        ids[:, :take] = self.ids[positions][top]
        return scores, ids
