"""A published student as a Spark ``mapInArrow`` function over ``student_features`` rows.

Each Python worker loads the student once (``models.student_scoring.StudentScorer``, on the
task's GPU or on CPU with the task's cores) and the ``EmbeddingLookup`` of the slice's texts
once (a Spark broadcast), then scores every Arrow batch it is given: per row, Spark ships only
the two text hashes and the dense features.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pyarrow as pa
from pyspark import Broadcast
from pyspark.sql.types import ArrayType, DoubleType, FloatType, StringType, StructField, StructType

from models.embedding_lookup import EmbeddingLookup
from models.student_scoring import StudentScorer
from schemas import student_features as SF
from udfs.arrow_lists import float32_lists
from udfs.task_resources import worker_model

PROBABILITIES = "probabilities"
EXPECTED_RELEVANCE = "expected_relevance"

SCORED_SCHEMA = StructType(
    [
        StructField(SF.QUERY, StringType(), nullable=False),
        StructField(SF.PIN_ID, StringType(), nullable=False),
        StructField(PROBABILITIES, ArrayType(FloatType(), containsNull=False), nullable=False),
        StructField(EXPECTED_RELEVANCE, DoubleType(), nullable=False),
    ]
)


def student_for(folder: str, precision: str) -> StudentScorer:
    return worker_model(("student", folder, precision), lambda device: StudentScorer(folder, device, precision))


def score_partitions(
    folder: str, lookup: Broadcast[EmbeddingLookup], precision: str = "fp32", batch_size: int = 4096
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """A ``mapInArrow`` function from ``student_features`` rows to :data:`SCORED_SCHEMA`.
    ``lookup``: ``spark.sparkContext.broadcast(embedding_lookup(...))`` of the rows' texts."""

    def score(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        scorer = student_for(folder, precision)
        texts = lookup.value  # loaded once per Python worker
        for batch in batches:
            probs, expected = scorer.score(batch, texts, batch_size)
            yield pa.RecordBatch.from_arrays(
                [
                    batch.column(SF.QUERY),
                    batch.column(SF.PIN_ID),
                    float32_lists(probs),
                    pa.array(expected, pa.float64()),
                ],
                names=[SF.QUERY, SF.PIN_ID, PROBABILITIES, EXPECTED_RELEVANCE],
            )

    return score
