"""FAISS shards built by Spark tasks: a ``mapInArrow`` function over ``pin_embeddings`` rows.

Every row carries its shard number (:data:`SHARD`, a function of its item id: see
``jobs.build_index.shard_numbers``), and all the rows of a shard are in one partition. Every task
gets the same trained empty index (bytes, a broadcast) and the same recall queries (a broadcast);
for each shard among its rows it adds the shard's vectors under their item ids, in id order,
writes the shard into a local folder and uploads it into the version's folder on the lake's storage
(nothing is left on the executor's disk, nothing assumes the driver's), and returns one row: the shard's
description, and for every query its ``k`` best ids and scores from the shard and from exact
search over the same vectors. The driver merges those rows into the sharded index's recall@k
before anything is published. What a shard holds and its bytes do not depend on how Spark split
the work, so two builds of the same vectors write the same files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import faiss
import numpy as np
import pyarrow as pa
from pyspark import Broadcast
from pyspark.sql.types import ArrayType, FloatType, LongType, StringType, StructField, StructType

from models.artifacts.storage import Storage
from models.retrieval.ann import from_bytes, set_search_params
from models.retrieval.sharded_index import write_shard
from schemas import pin_embeddings as PE
from udfs.task_resources import task_threads

SHARD = "_shard"  # the shard number column of the rows a task is given
FILE, ROWS, MIN_ID, MAX_ID, SHA256 = "file", "rows", "min_id", "max_id", "sha256"
ANN_IDS, ANN_SCORES, EXACT_IDS, EXACT_SCORES = "ann_ids", "ann_scores", "exact_ids", "exact_scores"

SHARD_SCHEMA = StructType(
    [
        StructField(FILE, StringType(), nullable=False),
        StructField(ROWS, LongType(), nullable=False),
        StructField(MIN_ID, LongType(), nullable=False),
        StructField(MAX_ID, LongType(), nullable=False),
        StructField(SHA256, StringType(), nullable=False),
        StructField(ANN_IDS, ArrayType(LongType(), containsNull=False), nullable=False),
        StructField(ANN_SCORES, ArrayType(FloatType(), containsNull=False), nullable=False),
        StructField(EXACT_IDS, ArrayType(LongType(), containsNull=False), nullable=False),
        StructField(EXACT_SCORES, ArrayType(FloatType(), containsNull=False), nullable=False),
    ]
)


def partition_vectors(batches: Iterator[pa.RecordBatch]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(shard numbers int64, ids int64, vectors (n, dim) float32) of all the rows a task was given,
    ordered by (shard, id)."""
    shards, ids, vectors = [], [], []
    for batch in batches:
        if batch.num_rows == 0:
            continue
        shards.append(batch.column(SHARD).to_numpy(zero_copy_only=False).astype(np.int64))
        ids.append(batch.column(PE.ITEM_INDEX).to_numpy(zero_copy_only=False).astype(np.int64))
        flat = batch.column(PE.EMBEDDING).flatten().to_numpy(zero_copy_only=False).astype(np.float32)
        vectors.append(flat.reshape(batch.num_rows, -1))
    if not ids:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
    shard, id_ = np.concatenate(shards), np.concatenate(ids)
    order = np.lexsort((id_, shard))
    return shard[order], id_[order], np.ascontiguousarray(np.concatenate(vectors)[order])


def shard_partitions(
    template: Broadcast[bytes], queries: Broadcast[np.ndarray], target: Storage, params: str, k: int
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """A ``mapInArrow`` function from ``pin_embeddings`` rows (with :data:`SHARD`) to one
    :data:`SHARD_SCHEMA` row per shard; the shard files land in ``target`` (the index version's
    folder on the lake's storage)."""

    def build(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        shard_numbers, all_ids, all_vectors = partition_vectors(batches)
        if len(all_ids) == 0:
            return
        faiss.omp_set_num_threads(task_threads())
        starts = np.flatnonzero(np.r_[True, shard_numbers[1:] != shard_numbers[:-1]])
        for start, end in zip(starts, np.r_[starts[1:], len(all_ids)], strict=True):
            yield one_shard(int(shard_numbers[start]), all_ids[start:end], all_vectors[start:end])

    def one_shard(number: int, ids: np.ndarray, vectors: np.ndarray) -> pa.RecordBatch:
        index = from_bytes(template.value)
        if vectors.shape[1] != index.d:
            raise ValueError(f"vectors of dimension {vectors.shape[1]}, the index takes {index.d}")
        index.add_with_ids(vectors, ids)
        with target.writing() as folder:
            info = write_shard(index, folder, number, ids)
        q = queries.value
        ann_scores, ann_ids = set_search_params(index, params).search(q, k)
        exact = faiss.IndexFlatIP(index.d)
        exact.add(vectors)
        exact_scores, rows = exact.search(q, k)
        exact_ids = np.where(rows >= 0, ids[np.maximum(rows, 0)], -1)
        columns = {
            FILE: pa.array([info.file], pa.string()),
            ROWS: pa.array([info.rows], pa.int64()),
            MIN_ID: pa.array([info.min_id], pa.int64()),
            MAX_ID: pa.array([info.max_id], pa.int64()),
            SHA256: pa.array([info.sha256], pa.string()),
            ANN_IDS: pa.array([ann_ids.reshape(-1)], pa.list_(pa.int64())),
            ANN_SCORES: pa.array([ann_scores.reshape(-1)], pa.list_(pa.float32())),
            EXACT_IDS: pa.array([exact_ids.reshape(-1)], pa.list_(pa.int64())),
            EXACT_SCORES: pa.array([exact_scores.reshape(-1)], pa.list_(pa.float32())),
        }
        return pa.RecordBatch.from_arrays(list(columns.values()), names=list(columns))

    return build
