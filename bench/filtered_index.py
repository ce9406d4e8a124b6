"""Filtered ANN search (conditional retrieval) vs exact filtered search on a sharded index.

    .venv/bin/python bench/filtered_index.py [--rows 1000000] [--dim 64] [--shards 4]
                                             [--factory "IVF{nlist},Flat"] [--params nprobe=32]

Vectors: a seeded mixture (``--clusters`` unit centres plus noise), normalised; ids 1..rows in
``--shards`` id ranges, each shard an ``IndexIDMap`` of the factory's index copied from one
trained template (what ``build_index`` publishes; the factory and parameters default to the
shipped ``index`` settings at this size). Filters: seeded random subsets of the ids at 10%, 1%
and 0.1% selectivity (uncorrelated with the vectors: the hard case for IVF's lists). Queries:
perturbed copies of random vectors. For each selectivity, recall@10 against exact search over
the allowed vectors and the time per query of:

* ``faiss selector``: faiss's own ``IDSelectorBitmap`` with the shard's search parameters as
  they are;
* ``selector, widened``: the same with the search widened by 1 / selectivity (what
  ``ShardedIndex.search`` does), no fallback;
* ``served``: ``ShardedIndex.search`` as ``pinpipe retrieve`` and ``retrieve_candidates`` call it
  (exact below ``index.exact_filter_below`` allowed ids, the widened selector above, an exact
  retry of any query answered short).

Writes ``reports/filtered_index.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import faiss  # noqa: E402
import numpy as np  # noqa: E402

from bench.record import Figure, Record, write_record  # noqa: E402
from jobs.config import load_config  # noqa: E402
from models.retrieval.ann import empty_index, from_bytes, merge_top_k, resolve_factory, set_search_params, to_bytes  # noqa: E402
from models.retrieval.filtered_search import ShardFilter, bitmap  # noqa: E402
from models.retrieval.sharded_index import IndexDescription, ShardedIndex, ShardInfo  # noqa: E402

SELECTIVITIES = (0.1, 0.01, 0.001)


def vectors(rows: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    x = centres[rng.integers(0, clusters, rows)] + 0.6 * rng.standard_normal((rows, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def build(x: np.ndarray, factory: str, params: str, shards: int, exact_below: int) -> tuple[ShardedIndex, float]:
    started = time.perf_counter()
    sample = x[np.random.default_rng(1).choice(len(x), size=min(100_000, len(x)), replace=False)]
    template = to_bytes(empty_index(x.shape[1], factory, sample))
    ids = np.arange(1, len(x) + 1, dtype=np.int64)
    loaded, infos = [], []
    for part in np.array_split(np.arange(len(x)), shards):
        shard = from_bytes(template)
        shard.add_with_ids(x[part], ids[part])
        loaded.append(set_search_params(from_bytes(to_bytes(shard)), params))
        infos.append(ShardInfo(f"shard-{len(infos):05d}", len(part), int(ids[part][0]), int(ids[part][-1]), ""))
    d = IndexDescription("bench", "v0001", x.shape[1], factory, params, faiss.__version__, 0.0, len(x), tuple(infos))
    return ShardedIndex(d, loaded, exact_below), time.perf_counter() - started


def exact_filtered(x: np.ndarray, queries: np.ndarray, allowed: np.ndarray, k: int) -> np.ndarray:
    scores = queries @ x[allowed - 1].T
    top = np.argpartition(-scores, k, axis=1)[:, :k]
    return allowed[top]


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(f[f >= 0]) & set(e)) / len(e) for f, e in zip(found, exact, strict=True)]))


def timed(fn, *args) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    ids = fn(*args)
    return ids, time.perf_counter() - started


def through_selectors(filters: list[ShardFilter], queries: np.ndarray, k: int, allowed: np.ndarray, widen: float):
    bits = bitmap(allowed)
    return merge_top_k([f.selector_search(queries, k, bits, widen) for f in filters], k)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    base = load_config("local").index
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--clusters", type=int, default=2000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--factory", default=base.factory)
    parser.add_argument("--params", default=base.search_params)
    parser.add_argument("--name", default="filtered_index")
    args = parser.parse_args()
    k = 10
    x = vectors(args.rows, args.dim, args.clusters, seed=0)
    factory = resolve_factory(args.factory, args.rows, flat_below=0)
    index, build_seconds = build(x, factory, args.params, args.shards, base.exact_filter_below)
    rng = np.random.default_rng(2)
    queries = x[rng.choice(args.rows, args.queries, replace=False)] + 0.3 * rng.standard_normal(
        (args.queries, args.dim)
    ).astype(np.float32)
    queries = np.ascontiguousarray(queries / np.linalg.norm(queries, axis=1, keepdims=True), dtype=np.float32)
    filters = [ShardFilter(s, args.params) for s in index.shards]
    figures = [Figure("build seconds", round(build_seconds, 1))]
    for share in SELECTIVITIES:
        allowed = np.sort(rng.choice(np.arange(1, args.rows + 1), max(k, int(args.rows * share)), replace=False))
        exact, exact_s = timed(exact_filtered, x, queries, allowed, k)
        plain, plain_s = timed(through_selectors, filters, queries, k, allowed, 1.0)
        widened, widened_s = timed(through_selectors, filters, queries, k, allowed, args.rows / len(allowed))
        served, served_s = timed(lambda q, a: index.search(q, k, a)[1], queries, allowed)
        label = f"{share:.1%}"
        per_query = 1000 / len(queries)
        figures += [
            Figure(f"recall@10 faiss selector {label}", round(recall(plain, exact), 4)),
            Figure(f"short answers (-1) faiss selector {label}", int((plain < 0).any(1).sum())),
            Figure(f"recall@10 selector widened {label}", round(recall(widened, exact), 4)),
            Figure(f"recall@10 served {label}", round(recall(served, exact), 4), headline=share == 0.01),
            Figure(f"served returns k real ids {label}", str(bool((served >= 0).all()))),
            Figure(f"ms/query faiss selector {label}", round(plain_s * per_query, 3)),
            Figure(f"ms/query selector widened {label}", round(widened_s * per_query, 3)),
            Figure(f"ms/query served {label}", round(served_s * per_query, 3)),
            Figure(f"ms/query exact numpy {label}", round(exact_s * per_query, 3)),
        ]
        print(figures[-9:], flush=True)
    write_record(
        Record(
            args.name,
            f"Filtered search on a {args.rows:,}-vector {args.shards}-shard {factory} index ({args.params}) vs exact",
            "bench/filtered_index.py " + " ".join(sys.argv[1:]),
            figures,
            inputs={
                "rows": args.rows,
                "dim": args.dim,
                "shards": args.shards,
                "clusters": args.clusters,
                "queries": args.queries,
                "factory": factory,
                "params": args.params,
                "exact_filter_below": base.exact_filter_below,
                "selectivities": SELECTIVITIES,
                "faiss": faiss.__version__,
            },
        )
    )


if __name__ == "__main__":
    main()
