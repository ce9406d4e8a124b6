"""``text_embeddings``: the bi-encoder's embedding of each distinct text, computed once.

Keyed by (``text_hash``, ``encoder_version``): the SHA-256 of the exact text and the version of
the encoder (its weights and token budget), so a re-run embeds only texts it has not seen and a
new encoder gets its own slice. Partitioned by ``encoder_version``.
"""

from pyspark.sql.types import ArrayType, FloatType, StringType, StructField, StructType, TimestampType

TEXT_HASH = "text_hash"
ENCODER_VERSION = "encoder_version"
EMBEDDING = "embedding"  # L2-normalised, float32
EMBEDDED_AT = "embedded_at"

TEXT_EMBEDDINGS_V1 = StructType(
    [
        StructField(TEXT_HASH, StringType(), nullable=False),
        StructField(ENCODER_VERSION, StringType(), nullable=False),
        StructField(EMBEDDING, ArrayType(FloatType(), containsNull=False), nullable=False),
        StructField(EMBEDDED_AT, TimestampType(), nullable=False),
    ]
)
