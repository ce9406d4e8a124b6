"""A published student as a Spark Arrow UDF over ``student_features`` rows.

``with_positions`` joins each row's two text hashes to their rows in the ``EmbeddingLookup``
(a broadcast join in Spark, once), so the UDF is given, per row, two integers and the dense
features as one list column (``dense_vector``) — not two 64-character hashes to look up in
Python, nor eight numeric columns — and hands back only the scores: the rows' other columns
stay in the JVM. Each Python worker loads the student once
(``models.relevance.student_scoring.StudentScorer``, on the task's GPU or on CPU with the task's cores)
and the lookup once (a Spark broadcast).

    positioned = with_positions(features, lookup)          # lookup: the EmbeddingLookup
    scored = scores(positioned, folder, spark.sparkContext.broadcast(lookup))
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from pyspark import Broadcast
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, DoubleType, FloatType, StructField, StructType

from models.artifacts.registry import ArtifactRef
from models.relevance.embedding_lookup import EmbeddingLookup, MissingEmbeddings
from models.relevance.student_scoring import StudentScorer, dense_vectors
from schemas import student_features as SF
from udfs.arrow_lists import float32_lists
from udfs.task_resources import model_folder, worker_model

QUERY_POSITION = "query_position"
PIN_POSITION = "pin_position"
PROBABILITIES = "probabilities"
EXPECTED_RELEVANCE = "expected_relevance"
INPUTS = (QUERY_POSITION, PIN_POSITION, SF.DENSE_VECTOR)

SCORES = StructType(
    [
        StructField(PROBABILITIES, ArrayType(FloatType(), containsNull=False), nullable=False),
        StructField(EXPECTED_RELEVANCE, DoubleType(), nullable=False),
    ]
)


def with_positions(rows: DataFrame, lookup: EmbeddingLookup) -> DataFrame:
    """``rows`` (``student_features``) with :data:`QUERY_POSITION` and :data:`PIN_POSITION`: the
    rows of their texts in ``lookup.matrix``, null where the lookup lacks a text (the UDF then
    refuses the batch; no row is dropped here)."""
    spark = rows.sparkSession
    keys = spark.createDataFrame(
        pa.table({"text_hash": pa.array(lookup.keys.tolist(), pa.string()), "position": np.arange(len(lookup))})
    )
    for hash_column, position in ((SF.QUERY_TEXT_HASH, QUERY_POSITION), (SF.PIN_TEXT_HASH, PIN_POSITION)):
        named = keys.withColumnsRenamed({"text_hash": f"_{hash_column}", "position": position})
        rows = rows.join(F.broadcast(named), rows[hash_column] == named[f"_{hash_column}"], "left").drop(
            f"_{hash_column}"
        )
    return rows


def student_for(folder: str | ArtifactRef, precision: str) -> StudentScorer:
    return worker_model(
        ("student", folder, precision), lambda device: StudentScorer(model_folder(folder), device, precision)
    )


def score_arrays(
    scorer: StudentScorer, lookup: EmbeddingLookup, columns: list[pa.Array], batch_size: int
) -> pa.StructArray:
    """:data:`SCORES` of one Arrow batch of the :data:`INPUTS` columns, in that order."""
    query, pin, dense = columns
    missing = query.null_count + pin.null_count
    if missing:
        raise MissingEmbeddings(f"{missing:,} text positions are null: texts without an embedding in the lookup")
    probs, expected = scorer.score_positions(query.to_numpy(), pin.to_numpy(), dense_vectors(dense), lookup, batch_size)
    return pa.StructArray.from_arrays(
        [float32_lists(probs), pa.array(expected, pa.float64())], names=[PROBABILITIES, EXPECTED_RELEVANCE]
    )


def student_udf(
    folder: str | ArtifactRef, lookup: Broadcast[EmbeddingLookup], precision: str = "fp32", batch_size: int = 4096
):
    """An Arrow UDF of the :data:`INPUTS` columns -> :data:`SCORES`."""

    @F.arrow_udf(SCORES)
    def score(*columns: pa.Array) -> pa.Array:
        return score_arrays(student_for(folder, precision), lookup.value, list(columns), batch_size)

    return score


def scores(
    positioned: DataFrame,
    folder: str | ArtifactRef,
    lookup: Broadcast[EmbeddingLookup],
    precision: str = "fp32",
    batch_size: int = 4096,
) -> DataFrame:
    """``query, pin_id, probabilities, expected_relevance`` of ``positioned`` (``with_positions``
    of ``student_features`` rows and ``lookup.value``): the student's level probabilities and
    expected relevance per row."""
    scored = student_udf(folder, lookup, precision, batch_size)(*INPUTS).alias("_scores")
    return positioned.select(SF.QUERY, SF.PIN_ID, scored).select(
        SF.QUERY, SF.PIN_ID, f"_scores.{PROBABILITIES}", f"_scores.{EXPECTED_RELEVANCE}"
    )
