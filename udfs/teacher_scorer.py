"""The teacher as a Spark ``mapInPandas`` function.

``score_partitions`` gives a function from Arrow batches of ``query, pin_id, <text>`` to
:data:`SCORED_SCHEMA`. Each Python worker loads the scorer (``models.relevance.scoring.TeacherScorer``)
once — on the task's GPU, or on CPU with the task's cores — and keeps it for as long as the
worker lives, so a long job pays the load once per worker, not per batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pandas as pd
import torch
from pyspark.sql.types import ArrayType, DoubleType, FloatType, IntegerType, StringType, StructField, StructType

from models.artifacts.registry import ArtifactRef
from models.relevance.scoring import ScoringSettings, TeacherScorer
from schemas import teacher_scores as TS
from udfs.task_resources import model_folder, worker_model

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- in Spark

SCORED_SCHEMA = StructType(
    [
        StructField(TS.QUERY, StringType(), nullable=False),
        StructField(TS.PIN_ID, StringType(), nullable=False),
        StructField(TS.PROBABILITIES, ArrayType(FloatType(), containsNull=False), nullable=False),
        StructField(TS.EXPECTED_RELEVANCE, DoubleType(), nullable=False),
        StructField(TS.LEVEL, IntegerType(), nullable=False),
        StructField(TS.PRECISION, StringType(), nullable=False),
    ]
)


def scorer_for(folder: str | ArtifactRef, settings: ScoringSettings) -> TeacherScorer:
    """This worker's scorer for (artifact, settings, device), loaded on first use."""

    def load(device: torch.device) -> TeacherScorer:
        log.info("loading teacher %s on %s (%s)", folder, device, settings.precision)
        return TeacherScorer(model_folder(folder), settings, device)

    return worker_model(("teacher", folder, settings), load)


def score_partitions(
    folder: str | ArtifactRef, settings: ScoringSettings, text_col: str
) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """A ``mapInPandas`` function from rows ``query, pin_id, <text_col>`` to :data:`SCORED_SCHEMA`."""

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        scorer = scorer_for(folder, settings)
        for batch in batches:
            probs, expected, level = scorer.score(batch[TS.QUERY].tolist(), batch[text_col].tolist())
            yield pd.DataFrame(
                {
                    TS.QUERY: batch[TS.QUERY].to_numpy(),
                    TS.PIN_ID: batch[TS.PIN_ID].to_numpy(),
                    TS.PROBABILITIES: list(probs),
                    TS.EXPECTED_RELEVANCE: expected,
                    TS.LEVEL: level,
                    TS.PRECISION: scorer.precision,
                }
            )

    return score
