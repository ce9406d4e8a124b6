"""Retrieval for every user as a Spark ``mapInArrow`` function.

Input rows carry a ``user_id`` and ``history`` (all the user's engaged pin ids, oldest first:
the user tower reads the most recent ``max_len``, and none of them is a candidate). Each
Python worker opens the pinned index version and the model version it was built from once
(:class:`models.retrieval.serving.Retrieval`, checksums verified) and answers its users in
batches: one batched user-tower pass and one batched index search per batch. A user none of
whose pins the model knows gets no rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pyarrow as pa
from pyspark.sql.types import FloatType, IntegerType, StringType, StructField, StructType

from models.artifacts.storage import Storage
from models.retrieval.serving import Retrieval
from schemas import user_candidates as UC
from udfs.task_resources import worker_model

HISTORY = "history"

CANDIDATE_SCHEMA = StructType(
    [
        StructField(UC.USER_ID, StringType(), nullable=False),
        StructField(UC.RANK, IntegerType(), nullable=False),
        StructField(UC.PIN_ID, StringType(), nullable=False),
        StructField(UC.SCORE, FloatType(), nullable=False),
        StructField(UC.INTEREST, IntegerType(), nullable=False),
    ]
)


def candidate_partitions(
    artifacts: Storage,
    index: str,
    version: str,
    k: int,
    *,
    interests: int = 0,
    interest: str | None = None,
    exact_filter_below: int,
    batch_users: int,
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """A ``mapInArrow`` function from (user_id, history) rows to :data:`CANDIDATE_SCHEMA`: each
    user's ``k`` best pins from index ``index``/``version`` and its model."""

    def retrieve(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        retrieval = worker_model(
            ("retrieval", artifacts, index, version),
            lambda device: Retrieval.open(artifacts, index, exact_filter_below, version=version),
        )
        for batch in batches:
            users = batch.column(UC.USER_ID).to_pylist()
            histories = [h or [] for h in batch.column(HISTORY).to_pylist()]
            for start in range(0, len(users), batch_users):
                part = slice(start, start + batch_users)
                found = retrieval.candidates(histories[part], k, interest=interest, interests=interests)
                out = [
                    (u, rank, c.pin, c.score, c.interest)
                    for u, cs in zip(users[part], found, strict=True)
                    if cs is not None
                    for rank, c in enumerate(cs, 1)
                ]
                if not out:
                    continue
                yield pa.RecordBatch.from_arrays(
                    [
                        pa.array([r[0] for r in out], pa.string()),
                        pa.array([r[1] for r in out], pa.int32()),
                        pa.array([r[2] for r in out], pa.string()),
                        pa.array([r[3] for r in out], pa.float32()),
                        pa.array([r[4] for r in out], pa.int32()),
                    ],
                    names=[UC.USER_ID, UC.RANK, UC.PIN_ID, UC.SCORE, UC.INTEREST],
                )

    return retrieve
