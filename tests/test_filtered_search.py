"""Filtered (conditional) search of a sharded index through faiss's selectors, with the exact
fallback: Flat, IVF and HNSW shards, restrictive filters that make faiss answer -1."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from models.retrieval.ann import empty_index, from_bytes, merge_top_k, to_bytes
from models.retrieval.filtered_search import ShardFilter, bitmap, parse_params
from models.retrieval.sharded_index import IndexDescription, ShardedIndex, ShardInfo

DIM, N, SHARDS = 16, 6000, 3


def vectors(n: int = N, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def sharded(factory: str, params: str, x: np.ndarray, exact_filter_below: int = 0) -> ShardedIndex:
    """SHARDS shards of ``x`` (ids 1..n in ranges), each an IndexIDMap of ``factory``."""
    ids = np.arange(1, len(x) + 1, dtype=np.int64)
    shards, infos = [], []
    for part in np.array_split(np.arange(len(x)), SHARDS):
        index = empty_index(DIM, factory, x)
        index.add_with_ids(x[part], ids[part])
        shards.append(index)
        infos.append(ShardInfo(f"s{len(infos)}", len(part), int(ids[part].min()), int(ids[part].max()), ""))
    description = IndexDescription(
        "two_tower", "v0001", DIM, factory, params, faiss.__version__, 1.0, len(x), tuple(infos)
    )
    shards = [from_bytes(to_bytes(s)) for s in shards]  # as a served shard is: written and read back
    for s in shards:
        if params:
            faiss.ParameterSpace().set_index_parameters(s, params)
    return ShardedIndex(description, shards, exact_filter_below)


def exact_filtered(x: np.ndarray, queries: np.ndarray, allowed: np.ndarray, k: int) -> np.ndarray:
    scores = queries @ x[allowed - 1].T
    return allowed[np.argsort(-scores, axis=1, kind="stable")[:, :k]]


KINDS = [("Flat", ""), ("IVF16,Flat", "nprobe=2"), ("HNSW16", "efSearch=16")]


def test_bitmap_is_the_bit_order_faiss_reads():
    bits = bitmap(np.array([0, 3, 9]))
    selector = faiss.IDSelectorBitmap(len(bits), faiss.swig_ptr(bits))  # n: bytes, not bits
    assert [i for i in range(16) if selector.is_member(i)] == [0, 3, 9]
    assert parse_params("nprobe=32, efSearch=8") == {"nprobe": 32.0, "efSearch": 8.0}


@pytest.mark.parametrize(("factory", "params"), KINDS)
def test_a_one_in_a_thousand_filter_returns_k_real_allowed_ids_never_minus_one(factory, params):
    x = vectors()
    index = sharded(factory, params, x)  # exact_filter_below=0: the selector path first
    allowed = np.arange(1, N + 1, 1000, dtype=np.int64) + 7  # 6 of 6000 ids
    queries = vectors(20, seed=1)
    # faiss alone answers -1 for such a filter on the approximate kinds: the fallback is needed
    raw = ShardFilter(index.shards[0], params).selector_search(queries, 5, bitmap(allowed), widen=1.0)[1]
    if factory != "Flat":
        assert (raw == -1).any()
    scores, ids = index.search(queries, 5, allowed)
    assert (ids >= 0).all() and np.isin(ids, allowed).all()
    np.testing.assert_array_equal(ids, exact_filtered(x, queries, allowed, 5))
    assert np.all(np.diff(scores, axis=1) <= 1e-6)


@pytest.mark.parametrize(("factory", "params"), KINDS)
def test_a_wide_filter_goes_through_the_selector_and_finds_the_exact_filtered_answer(factory, params):
    x = vectors()
    index = sharded(factory, params, x)
    allowed = np.flatnonzero(np.random.default_rng(2).random(N) < 0.1).astype(np.int64) + 1  # ~10%
    queries = vectors(50, seed=3)
    _, ids = index.search(queries, 10, allowed)
    assert np.isin(ids, allowed).all() and (ids >= 0).all()
    want = exact_filtered(x, queries, allowed, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, want, strict=True)])
    assert recall >= (1.0 if factory == "Flat" else 0.9)


def test_the_selector_carries_the_shards_search_parameters_not_faiss_defaults():
    """SearchParametersIVF's own default is nprobe=1: a selector passed without the shard's
    nprobe would search one list. With nprobe = nlist the filtered IVF search is exact."""
    x = vectors()
    index = sharded("IVF16,Flat", "nprobe=16", x)
    allowed = np.arange(1, N + 1, 2, dtype=np.int64)  # half: no widening beyond nlist
    queries = vectors(30, seed=4)
    scores, ids = index.search(queries, 10, allowed, exact=False)
    np.testing.assert_array_equal(ids, exact_filtered(x, queries, allowed, 10))


def test_a_small_filter_is_answered_exactly_and_an_empty_one_with_nothing():
    x = vectors()
    index = sharded("HNSW16", "efSearch=16", x, exact_filter_below=100)
    allowed = np.arange(5, 80, dtype=np.int64)
    queries = vectors(10, seed=5)
    np.testing.assert_array_equal(index.search(queries, 10, allowed)[1], exact_filtered(x, queries, allowed, 10))
    assert (index.search(queries, 3, np.array([], dtype=np.int64))[1] == -1).all()
    few = np.array([11, 12], dtype=np.int64)  # fewer allowed than k: those, then -1
    ids = index.search(queries, 4, few)[1]
    assert (np.sort(ids[:, :2], axis=1) == few).all() and (ids[:, 2:] == -1).all()


def test_queries_the_selector_answers_short_are_answered_exactly(monkeypatch):
    """Widening usually saves a restrictive filter; when it does not (faiss #3186: HNSW's walk
    dead-ends among rejected nodes), the short queries are retried exactly."""
    x = vectors()
    index = sharded("HNSW16", "efSearch=16", x)
    allowed = np.arange(1, N + 1, 1000, dtype=np.int64) + 7
    queries = vectors(20, seed=1)
    as_faiss_is = ShardFilter.selector_search
    monkeypatch.setattr(ShardFilter, "selector_search", lambda self, q, k, a, widen: as_faiss_is(self, q, k, a, 1.0))
    filters = [ShardFilter(shard, "efSearch=16") for shard in index.shards]
    assert (merge_top_k([f.selector_search(queries, 5, bitmap(allowed), 9.0) for f in filters], 5)[1] == -1).any()
    _, ids = index.search(queries, 5, allowed, exact=False)
    np.testing.assert_array_equal(ids, exact_filtered(x, queries, allowed, 5))
