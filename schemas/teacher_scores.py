"""``teacher_scores``: the teacher's graded relevance of each unique (query, pin) pair it scored.

``query`` is the normalised query (trimmed, lower-case, single spaces), the key impressions are
joined on. One row per (query, pin_id, teacher_version): re-scoring the same pairs with the same
teacher adds nothing. Partitioned by ``teacher_version`` (``<family>/<version>``).
"""

from pyspark.sql.types import (
    ArrayType,
    DoubleType,
    FloatType,
    IntegerType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

QUERY = "query"
PIN_ID = "pin_id"
PROBABILITIES = "probabilities"  # per level 1..L
EXPECTED_RELEVANCE = "expected_relevance"  # sum_l l * p_l
LEVEL = "level"  # expected relevance cut at the teacher's share-matched thresholds
TEACHER_VERSION = "teacher_version"
PRECISION = "precision"  # fp32, int8, bf16, fp16, nf4
SCORED_AT = "scored_at"

TEACHER_SCORES_V1 = StructType(
    [
        StructField(QUERY, StringType(), nullable=False),
        StructField(PIN_ID, StringType(), nullable=False),
        StructField(PROBABILITIES, ArrayType(FloatType(), containsNull=False), nullable=False),
        StructField(EXPECTED_RELEVANCE, DoubleType(), nullable=False),
        StructField(LEVEL, IntegerType(), nullable=False),
        StructField(TEACHER_VERSION, StringType(), nullable=False),
        StructField(PRECISION, StringType(), nullable=False),
        StructField(SCORED_AT, TimestampType(), nullable=False),
    ]
)
