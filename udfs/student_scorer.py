"""A published student as a Spark ``mapInPandas`` function over ``student_features`` rows.

Each Python worker loads the student once (``models.student_scoring.StudentScorer``, on the
task's GPU or on CPU with the task's cores) and scores every Arrow batch it is given.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pandas as pd
import torch
from pyspark.sql.types import ArrayType, DoubleType, FloatType, StringType, StructField, StructType

from models.student_scoring import StudentScorer
from schemas import student_features as SF
from udfs.task_resources import task_device, task_threads

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

_scorers: dict[tuple[str, str, str], StudentScorer] = {}
_lock = threading.Lock()


def student_for(folder: str, precision: str) -> StudentScorer:
    device = task_device()
    if device.type == "cpu":
        torch.set_num_threads(task_threads())
    key = (folder, precision, str(device))
    with _lock:
        if key not in _scorers:
            _scorers[key] = StudentScorer(folder, device, precision)
        return _scorers[key]


def score_partitions(
    folder: str, precision: str = "fp32", batch_size: int = 4096
) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """A ``mapInPandas`` function from ``student_features`` rows to :data:`SCORED_SCHEMA`."""

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        scorer = student_for(folder, precision)
        for batch in batches:
            probs, expected = scorer.score(batch, batch_size)
            yield pd.DataFrame(
                {
                    SF.QUERY: batch[SF.QUERY].to_numpy(),
                    SF.PIN_ID: batch[SF.PIN_ID].to_numpy(),
                    PROBABILITIES: list(probs),
                    EXPECTED_RELEVANCE: expected,
                }
            )

    return score
