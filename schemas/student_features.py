"""``student_features``: what the students see of each (normalised query, pin) pair.

The query and pin texts by hash (keys of ``text_embeddings`` under ``encoder_version``: each
text's embedding is stored once, not once per pair), the cosine of their embeddings, BM25 of
the query against the pin text with corpus statistics over every pin, and smoothed engagement
over a trailing window of impressions. One slice per ``feature_version``.

V1 carried both embeddings in every row (3 KB a row); V2 carries the two text hashes; V3 adds
``dense_vector``, the dense features again in one ``array<float>``: what a model reads, in one
column, so a Spark UDF is handed one column instead of eight (Spark's row-to-Arrow writer costs
per column: ~0.4 core-us a row less to ship, against ~10 core-us a row for the MLP student).
"""

from pyspark.sql.types import (
    ArrayType,
    DateType,
    DoubleType,
    FloatType,
    LongType,
    StringType,
    StructField,
    StructType,
)

QUERY = "query"  # normalised: trimmed, lower-case, single spaces
PIN_ID = "pin_id"
QUERY_EMBEDDING = "query_embedding"  # V1 only
PIN_EMBEDDING = "pin_embedding"  # V1 only
QUERY_TEXT_HASH = "query_text_hash"  # SHA-256 of the normalised query (text_embeddings.text_hash)
PIN_TEXT_HASH = "pin_text_hash"  # SHA-256 of the pin text
COSINE = "cosine"
BM25 = "bm25"
PIN_IMPRESSIONS = "pin_impressions"
PIN_CTR = "pin_ctr"  # smoothed toward the window's CTR
PIN_SAVE_RATE = "pin_save_rate"  # saves per impression, smoothed
QUERY_PIN_IMPRESSIONS = "query_pin_impressions"
QUERY_PIN_CTR = "query_pin_ctr"  # smoothed toward the pin's CTR
QUERY_PIN_COEC = "query_pin_coec"  # clicks over expected clicks at their positions, smoothed toward 1
ENCODER_VERSION = "encoder_version"
AS_OF = "as_of"
FEATURE_VERSION = "feature_version"

# The numeric features a student reads besides the embeddings, in this order.
DENSE = (COSINE, BM25, PIN_CTR, PIN_SAVE_RATE, QUERY_PIN_CTR, QUERY_PIN_COEC, PIN_IMPRESSIONS, QUERY_PIN_IMPRESSIONS)
DENSE_VECTOR = "dense_vector"  # V3: the DENSE values of the row, in that order, as float32

_VECTOR = ArrayType(FloatType(), containsNull=False)

STUDENT_FEATURES_V1 = StructType(
    [
        StructField(QUERY, StringType(), nullable=False),
        StructField(PIN_ID, StringType(), nullable=False),
        StructField(QUERY_EMBEDDING, _VECTOR, nullable=False),
        StructField(PIN_EMBEDDING, _VECTOR, nullable=False),
        StructField(COSINE, DoubleType(), nullable=False),
        StructField(BM25, DoubleType(), nullable=False),
        StructField(PIN_IMPRESSIONS, LongType(), nullable=False),
        StructField(PIN_CTR, DoubleType(), nullable=False),
        StructField(PIN_SAVE_RATE, DoubleType(), nullable=False),
        StructField(QUERY_PIN_IMPRESSIONS, LongType(), nullable=False),
        StructField(QUERY_PIN_CTR, DoubleType(), nullable=False),
        StructField(QUERY_PIN_COEC, DoubleType(), nullable=False),
        StructField(ENCODER_VERSION, StringType(), nullable=False),
        StructField(AS_OF, DateType(), nullable=False),
        StructField(FEATURE_VERSION, StringType(), nullable=False),
    ]
)

STUDENT_FEATURES_V2 = StructType(
    [
        StructField(QUERY, StringType(), nullable=False),
        StructField(PIN_ID, StringType(), nullable=False),
        StructField(QUERY_TEXT_HASH, StringType(), nullable=False),
        StructField(PIN_TEXT_HASH, StringType(), nullable=False),
        *(f for f in STUDENT_FEATURES_V1.fields if f.name not in (QUERY, PIN_ID, QUERY_EMBEDDING, PIN_EMBEDDING)),
    ]
)

STUDENT_FEATURES_V3 = StructType(
    [
        *(f for f in STUDENT_FEATURES_V2.fields if f.name not in (ENCODER_VERSION, AS_OF, FEATURE_VERSION)),
        StructField(DENSE_VECTOR, _VECTOR, nullable=False),
        *(f for f in STUDENT_FEATURES_V2.fields if f.name in (ENCODER_VERSION, AS_OF, FEATURE_VERSION)),
    ]
)
