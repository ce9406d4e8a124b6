"""Sharded FAISS index built by Spark vs a plain single-process faiss build of the same vectors.

    .venv/bin/python bench/index.py [--sizes 1000000 10000000] [--dim 64] [--factory IVF1024,Flat]
                                    [--search-params nprobe=16] [--shard-counts 2 4 8] [--workdir DIR]

Simulated item vectors (a seeded mixture of Gaussian clusters, unit length, ids 1..n) are
written once per size as Parquet. Then, on the same cores:

- **Spark**: ``jobs.build_index``'s own ``transform`` and ``build_shards`` (count, seeded
  training sample, quantizer trained on the driver, recall queries; one task per id range adds
  its vectors, writes its shard, answers the recall queries from its shard and exactly).
- **Plain**: one process reads the same Parquet, trains the same factory on a sample of the same
  size, adds every vector to one index, writes it, and answers the same number of recall queries
  from the index and exactly (faiss with as many threads as Spark has cores).

Reported: build seconds and the ratio plain/Spark; recall@10 vs exact of both; query latency
(p50/p99 of single queries, and per query in a batch of 1000) of the Spark-built shards searched
as one (``models.retrieval.sharded_index.ShardedIndex``) vs the single index; Spark build time as the
number of shards grows (at the first size). Writes ``reports/index.json``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.record import Figure, Record, write_record  # noqa: E402
from jobs import build_index  # noqa: E402
from jobs.config import load_config  # noqa: E402
from models.retrieval.ann import empty_index, recall_at  # noqa: E402
from models.retrieval.sharded_index import ShardedIndex  # noqa: E402
from runtime.entry import configure_logging  # noqa: E402
from runtime.session import spark_session  # noqa: E402
from schemas import pin_embeddings as PE  # noqa: E402
from udfs.arrow_lists import float32_lists  # noqa: E402

CHUNK = 500_000


def simulate(folder: Path, n: int, dim: int, clusters: int, seed: int) -> None:
    """``n`` unit vectors around ``clusters`` seeded centres, ids 1..n, as Parquet files."""
    folder.mkdir(parents=True, exist_ok=True)
    centres = np.random.default_rng(seed).standard_normal((clusters, dim)).astype(np.float32)
    for part, start in enumerate(range(0, n, CHUNK)):
        rng = np.random.default_rng([seed, part])
        size = min(CHUNK, n - start)
        x = centres[rng.integers(0, clusters, size)] + 0.6 * rng.standard_normal((size, dim)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        ids = np.arange(start + 1, start + size + 1, dtype=np.int64)
        table = pa.table({PE.ITEM_INDEX: ids, PE.EMBEDDING: float32_lists(x)})
        pq.write_table(table, folder / f"part-{part:05d}.parquet")


def read_plain(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    table = pq.read_table(folder)
    ids = table.column(PE.ITEM_INDEX).to_numpy()
    flat = table.column(PE.EMBEDDING).combine_chunks().flatten().to_numpy()
    return ids, np.ascontiguousarray(flat.reshape(len(ids), -1))


def plain_build(folder: Path, out: Path, args: argparse.Namespace, threads: int) -> dict[str, Any]:
    """Everything the Spark build does, in one process: train, add, write, recall check."""
    faiss.omp_set_num_threads(threads)
    t0 = time.perf_counter()
    ids, vectors = read_plain(folder)
    rng = np.random.default_rng(args.seed)
    sample = vectors[np.sort(rng.choice(len(ids), size=min(args.train_sample, len(ids)), replace=False))]
    index = empty_index(vectors.shape[1], args.factory, sample)
    index.add_with_ids(vectors, ids)
    faiss.write_index(index, str(out))
    q_rows = np.sort(np.random.default_rng(args.seed + 1).choice(len(ids), size=args.queries, replace=False))
    queries, own = vectors[q_rows], ids[q_rows]
    faiss.ParameterSpace().set_index_parameters(index, args.search_params)
    ann = index.search(queries, 11)[1]
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    rows = exact.search(queries, 11)[1]
    seconds = time.perf_counter() - t0

    def drop_own(found: np.ndarray) -> np.ndarray:
        return np.array([[i for i in r if i != o][:10] for r, o in zip(found, own, strict=True)])

    recall = recall_at(drop_own(ann), drop_own(ids[rows]))
    return {"seconds": seconds, "recall_at_10": recall, "index": index, "queries": queries}


def spark_build(spark, folder: Path, out: Path, args: argparse.Namespace, shards: int) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    vectors = spark.read.parquet(str(folder))
    plan = build_index.transform(
        build_index.IndexInputs(vectors, "bench", "v0000"),
        factory=args.factory,
        flat_below=0,
        search_params=args.search_params,
        train_sample=args.train_sample,
        recall_queries=args.queries,
        seed=args.seed,
        partitions=shards,
    )
    planned = time.perf_counter() - t0
    description = build_index.build_shards(plan, out)
    return {"seconds": time.perf_counter() - t0, "plan_seconds": planned, "description": description}


def latencies(search, queries: np.ndarray, singles: int = 300) -> dict[str, float]:
    for q in queries[:20]:  # warm up
        search(q[None, :], 10)
    times = []
    for q in queries[:singles]:
        t0 = time.perf_counter()
        search(q[None, :], 10)
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    search(queries[:1000], 10)
    batch = (time.perf_counter() - t0) / min(1000, len(queries))
    ms = np.array(times) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "batch_ms": batch * 1e3}


def one_size(spark, size: int, work: Path, args: argparse.Namespace, cores: int) -> tuple[list[Figure], dict]:
    data = work / f"vectors-{size}"
    if not data.is_dir():
        simulate(data, size, args.dim, args.clusters, args.seed)
    counts = args.shard_counts if size == args.sizes[0] else [cores]
    built = {}
    for shards in counts:
        built[shards] = spark_build(spark, data, work / f"shards-{size}-{shards}", args, shards)
        print(f"{size:,} vectors, {shards} shards: spark {built[shards]['seconds']:.1f}s", flush=True)
    spark_run = built[cores] if cores in built else built[counts[0]]
    plain = plain_build(data, work / f"plain-{size}.faiss", args, cores)
    d = spark_run["description"]
    sharded = ShardedIndex.open(work / f"shards-{size}-{len(d.shards)}", d, "bench")
    faiss.omp_set_num_threads(cores)
    lat_sharded = latencies(sharded.search, plain["queries"])
    faiss.ParameterSpace().set_index_parameters(plain["index"], args.search_params)
    lat_plain = latencies(plain["index"].search, plain["queries"])
    n = f"{size / 1e6:g}M"
    figures = [
        Figure(f"{n} build, Spark ({len(d.shards)} shards)", spark_run["seconds"], "s"),
        Figure(f"{n} build, plain faiss ({cores} threads)", plain["seconds"], "s"),
        Figure(f"{n} build ratio plain/Spark", plain["seconds"] / spark_run["seconds"], "x", "derived", True),
        Figure(f"{n} recall@10 vs exact, Spark shards", d.recall_at_10, headline=True),
        Figure(f"{n} recall@10 vs exact, plain", plain["recall_at_10"]),
        Figure(f"{n} single query p50, shards", lat_sharded["p50_ms"], "ms"),
        Figure(f"{n} single query p99, shards", lat_sharded["p99_ms"], "ms"),
        Figure(f"{n} single query p50, plain", lat_plain["p50_ms"], "ms"),
        Figure(f"{n} single query p99, plain", lat_plain["p99_ms"], "ms"),
        Figure(f"{n} batch of 1000, per query, shards", lat_sharded["batch_ms"], "ms"),
        Figure(f"{n} batch of 1000, per query, plain", lat_plain["batch_ms"], "ms"),
    ]
    if len(counts) > 1:
        figures += [Figure(f"{n} build, Spark, {s} shards", built[s]["seconds"], "s") for s in counts]
    run = {
        "spark": {s: {"seconds": b["seconds"], "plan_seconds": b["plan_seconds"]} for s, b in built.items()},
        "description": d.as_dict(),
        "plain_seconds": plain["seconds"],
        "latency_sharded": lat_sharded,
        "latency_plain": lat_plain,
    }
    return figures, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[1_000_000, 10_000_000])
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--clusters", type=int, default=2000)
    parser.add_argument("--factory", default="IVF1024,Flat")
    parser.add_argument("--search-params", default="nprobe=16")
    parser.add_argument("--train-sample", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--shard-counts", nargs="+", type=int, default=[2, 4, 8])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    configure_logging()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="pinpipe-bench-index-"))
    cfg = load_config("local", overrides=["spark.master=local[*]"])
    cores = os.cpu_count() or 1
    figures: list[Figure] = []
    runs: dict[str, Any] = {}
    with spark_session("pinpipe-bench-index", cfg.spark) as spark:
        warm = work / "warm-up"  # starts Spark's Python workers and loads faiss there: not timed
        simulate(warm, 20_000, args.dim, 64, args.seed)
        spark_build(spark, warm, work / "warm-up-shards", args, cores)
        for size in args.sizes:
            size_figures, runs[f"{size / 1e6:g}M"] = one_size(spark, size, work, args, cores)
            figures += size_figures
    write_record(
        Record(
            "index",
            "Sharded FAISS build in Spark vs plain faiss (same vectors, factory, search parameters and cores)",
            "bench/index.py " + " ".join(sys.argv[1:]),
            figures,
            inputs={**{k: v for k, v in vars(args).items() if k != "workdir"}, "cores": cores, "runs": runs},
        )
    )
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
