"""Build a versioned, sharded FAISS index of a model's ``pin_embeddings`` in Spark.

1. Read the ``model_version`` slice of ``pin_embeddings`` (``index.model_version``; empty: the
   ``index.model_family`` candidate that passed its gate, else the promoted version). The index
   kind follows the corpus size: exact (``Flat``) below ``index.flat_below`` vectors,
   ``index.factory`` above (``{nlist}`` sized to the corpus).
2. On the driver: train the empty index once on a seeded sample (IVF kinds), and draw a seeded
   sample of the vectors as recall queries (both chosen by a seeded hash of the ids). Both are
   broadcast.
3. The vectors are cut into ``index.partitions`` (0: Spark's default parallelism) equal ranges
   of item ids — a function of the ids only, so two builds of the same vectors write the same
   shards byte for byte, whatever Spark's partitioning — and one Spark task per range adds its
   vectors, in id order, to a copy of the trained index and writes its shard into the new
   version's staging folder (``udfs.index_shards``); it also answers the recall queries from its
   shard and exactly from its vectors.
4. The driver merges the shards' answers: recall@10 of the sharded index vs exact search (a
   query's own vector left out of both). Below ``index.min_recall_at_10`` nothing is published
   and the job says why; otherwise the version is published under
   ``<lake>/artifacts/indexes/<name>/<version>/`` with a manifest naming the model version,
   dimension, metric, factory, faiss version and every shard's rows, id range and sha256, and is
   promoted together with its model (``index.promote``).

Local:    pinpipe build_index [--set index.factory=HNSW32 --set index.search_params=efSearch=128]
Cluster:  spark-submit ... jobs/build_index.py --env cluster --set lake.root=/shared/lake
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.config import PinpipeConfig, run_job
from models.artifacts.registry import Registry, content_key
from models.artifacts.storage import Storage
from models.retrieval.ann import empty_index, merge_top_k, recall_at, resolve_factory, to_bytes
from models.retrieval.serving import INDEXES, IndexVersions
from models.retrieval.sharded_index import INDEX, IndexDescription, ShardInfo
from runtime.lake import Lake
from runtime.session import job_description
from runtime.tracking import TrackedRun
from schemas import pin_embeddings as PE
from udfs import index_shards as S

log = logging.getLogger(__name__)


RECALL_K = 10


class IndexRecallTooLow(RuntimeError):
    """The sharded index misses too many of exact search's neighbours to be published."""


@dataclass(frozen=True)
class IndexInputs:
    embeddings: DataFrame
    model_family: str
    model_version: str


@dataclass(frozen=True)
class IndexPlan:
    vectors: DataFrame  # (item_index, embedding, shard number), each shard's rows in one partition
    template: bytes  # the trained, empty index every shard starts from
    queries: np.ndarray  # (q, dim) recall queries: a seeded sample of the vectors
    query_ids: np.ndarray
    factory: str
    search_params: str
    rows: int
    dim: int
    model_family: str
    model_version: str


@dataclass(frozen=True)
class IndexReport:
    name: str
    version: str
    description: IndexDescription
    min_recall: float
    promoted: bool

    def tracked(self) -> TrackedRun:
        d = self.description
        metrics = {"recall_at_10": d.recall_at_10, "vectors": d.rows, "dim": d.dim, "shards": len(d.shards)}
        gate = f"recall@10 {d.recall_at_10:.4f} >= index.min_recall_at_10 {self.min_recall}"
        return TrackedRun(f"{INDEXES}/{self.name}/{self.version}", metrics, gate, self.promoted)

    def line(self) -> str:
        d = self.description
        return (
            f"build_index: indexes/{self.name}/{self.version} model={d.model} vectors={d.rows:,} dim={d.dim} "
            f"shards={len(d.shards)} factory={d.factory} ({d.search_params or 'defaults'}) "
            f"recall@10={d.recall_at_10:.4f} (min {self.min_recall}){' promoted' if self.promoted else ''}"
        )


def read(spark: SparkSession, cfg: PinpipeConfig) -> IndexInputs:
    lake, c = Lake.of(cfg.lake), cfg.index
    version = Registry(lake.artifacts()).resolve_next(c.model_family, c.model_version)
    tag = f"{c.model_family}/{version}"
    embeddings = lake.read(spark, "pin_embeddings").filter(F.col(PE.MODEL_VERSION) == tag)
    return IndexInputs(embeddings.select(PE.ITEM_INDEX, PE.EMBEDDING), c.model_family, version)


def seeded_sample(vectors: DataFrame, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) of ``size`` rows (all of them when there are fewer), in id order: those whose
    ids have the smallest seeded hash, so the same rows whatever Spark's partitioning."""
    by_hash = vectors.orderBy(F.xxhash64(F.col(PE.ITEM_INDEX), F.lit(seed)), PE.ITEM_INDEX)
    rows = sorted(by_hash.limit(size).collect(), key=lambda r: r[PE.ITEM_INDEX])
    ids = np.array([r[PE.ITEM_INDEX] for r in rows], dtype=np.int64)
    return ids, np.array([r[PE.EMBEDDING] for r in rows], dtype=np.float32)


def shard_numbers(vectors: DataFrame, shards: int) -> DataFrame:
    """``vectors`` with the :data:`udfs.index_shards.SHARD` column: ``shards`` equal-width ranges
    of item ids between the smallest and the largest (item ids are dense: about equal counts),
    each range's rows in one partition."""
    lo, hi = vectors.agg(F.min(PE.ITEM_INDEX), F.max(PE.ITEM_INDEX)).first()
    width = int(hi) - int(lo) + 1
    number = ((F.col(PE.ITEM_INDEX) - F.lit(int(lo))) * F.lit(shards) / F.lit(width)).cast("long")
    return vectors.withColumn(S.SHARD, number).repartitionByRange(shards, S.SHARD)


def transform(
    inputs: IndexInputs,
    *,
    factory: str,
    flat_below: int,
    search_params: str,
    train_sample: int,
    recall_queries: int,
    seed: int,
    partitions: int,
) -> IndexPlan:
    vectors = inputs.embeddings
    tag = f"{inputs.model_family}/{inputs.model_version}"
    with job_description(vectors.sparkSession, f"build_index: plan ({tag})"):
        rows = vectors.count()
        if rows == 0:
            raise ValueError(f"pin_embeddings has no rows for {tag}: run embed_pins for that model first")
        dim = int(vectors.select(F.size(PE.EMBEDDING)).first()[0])
        chosen = resolve_factory(factory, rows, flat_below)
        sample = None
        if not faiss.index_factory(dim, chosen, faiss.METRIC_INNER_PRODUCT).is_trained:
            sample = seeded_sample(vectors, train_sample, seed)[1]
        template = to_bytes(empty_index(dim, chosen, sample))
        query_ids, queries = seeded_sample(vectors, recall_queries, seed + 1)
        by_range = shard_numbers(vectors, partitions or vectors.sparkSession.sparkContext.defaultParallelism)
    params = "" if chosen == "Flat" else search_params
    return IndexPlan(
        by_range, template, queries, query_ids, chosen, params, rows, dim, inputs.model_family, inputs.model_version
    )


def recall_without_self(shards: list[dict[str, Any]], query_ids: np.ndarray, k: int = RECALL_K) -> float:
    """recall@k of the merged shards' answers vs the merged exact answers, each query's own id
    left out of both (the shards answered ``k + 1``)."""
    q = len(query_ids)

    def merged(ids_key: str, scores_key: str) -> np.ndarray:
        parts = [
            (np.array(s[scores_key], np.float32).reshape(q, k + 1), np.array(s[ids_key], np.int64).reshape(q, k + 1))
            for s in shards
        ]
        ids = merge_top_k(parts, k + 1)[1]
        return np.array([[i for i in row if i != own][:k] for row, own in zip(ids, query_ids, strict=True)])

    return recall_at(merged(S.ANN_IDS, S.ANN_SCORES), merged(S.EXACT_IDS, S.EXACT_SCORES))


def build_shards(plan: IndexPlan, target: Storage) -> IndexDescription:
    """Write the shards into ``target`` with Spark (each task uploads its own) and check their
    recall; their description."""
    spark = plan.vectors.sparkSession
    template = spark.sparkContext.broadcast(plan.template)
    queries = spark.sparkContext.broadcast(plan.queries)
    try:
        build = S.shard_partitions(template, queries, target, plan.search_params, RECALL_K + 1)
        with job_description(spark, f"build_index: {plan.factory} shards of {plan.rows:,} vectors"):
            shards = [r.asDict() for r in plan.vectors.mapInArrow(build, S.SHARD_SCHEMA).collect()]
    finally:
        template.destroy()
        queries.destroy()
    shards.sort(key=lambda s: s[S.FILE])
    held = sum(s[S.ROWS] for s in shards)
    if held != plan.rows:
        raise RuntimeError(f"the shards hold {held:,} vectors, pin_embeddings has {plan.rows:,}")
    return IndexDescription(
        model_family=plan.model_family,
        model_version=plan.model_version,
        dim=plan.dim,
        factory=plan.factory,
        search_params=plan.search_params,
        faiss_version=faiss.__version__,
        recall_at_10=round(recall_without_self(shards, plan.query_ids), 6),
        rows=plan.rows,
        shards=tuple(ShardInfo(s[S.FILE], s[S.ROWS], s[S.MIN_ID], s[S.MAX_ID], s[S.SHA256]) for s in shards),
    )


def write(
    plan: IndexPlan, lake: Lake, *, name: str, keep: int, min_recall: float, promote: bool, config: dict[str, Any]
) -> IndexReport:
    versions = IndexVersions(lake.artifacts(), name, keep=keep)
    built: list[IndexDescription] = []

    def build(target: Storage) -> tuple[dict[str, Any], dict[str, str]]:
        description = build_shards(plan, target)
        if description.recall_at_10 < min_recall:
            raise IndexRecallTooLow(
                f"build_index: not published: recall@10 of the sharded {description.factory} index "
                f"({description.search_params or 'default search parameters'}) vs exact search is "
                f"{description.recall_at_10:.4f}, below index.min_recall_at_10={min_recall}; search wider "
                "(index.search_params, e.g. a larger nprobe or efSearch) or choose another index.factory"
            )
        built.append(description)
        return {INDEX: description.as_dict()}, {shard.file: shard.sha256 for shard in description.shards}

    inputs = {"pin_embeddings_model_version": f"{plan.model_family}/{plan.model_version}", "vectors": plan.rows}
    # Idempotent: the same config and model's vectors give back the version they built (a run
    # killed between publishing and recording it publishes nothing new when it resumes).
    key = content_key(config, inputs)
    version = versions.indexes.publish_stored(name, build, config=config, inputs=inputs, key=key)
    if promote:
        versions.promote(version)
    return IndexReport(name, version, built[0] if built else versions.describe(version), min_recall, promote)


def run(spark: SparkSession, cfg: PinpipeConfig) -> IndexReport:
    c = cfg.index
    plan = transform(
        read(spark, cfg),
        factory=c.factory,
        flat_below=c.flat_below,
        search_params=c.search_params,
        train_sample=c.train_sample,
        recall_queries=c.recall_queries,
        seed=c.seed,
        partitions=c.partitions,
    )
    lake = Lake.of(cfg.lake)
    return write(
        plan, lake, name=c.name, keep=c.keep, min_recall=c.min_recall_at_10, promote=c.promote, config=cfg.to_dict()
    )


def main(argv: Sequence[str] | None = None) -> IndexReport:
    return run_job("pinpipe build_index", __doc__, run, argv)


if __name__ == "__main__":
    main()
