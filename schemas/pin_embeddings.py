"""``pin_embeddings``: the item tower's unit vector of each pin, per two-tower model version.

``item_index`` is the pin's dense index in that model (1..n, ``items.json`` of its artifact): the
id its vector has in the FAISS shards built from these rows. One row per (pin_id,
model_version); re-embedding with the same version rewrites that version's slice with the same rows. Partitioned by
``model_version`` (``<family>/<version>``).
"""

from pyspark.sql.types import ArrayType, FloatType, LongType, StringType, StructField, StructType

PIN_ID = "pin_id"
ITEM_INDEX = "item_index"
EMBEDDING = "embedding"
MODEL_VERSION = "model_version"

PIN_EMBEDDINGS_V1 = StructType(
    [
        StructField(PIN_ID, StringType(), nullable=False),
        StructField(ITEM_INDEX, LongType(), nullable=False),
        StructField(EMBEDDING, ArrayType(FloatType(), containsNull=False), nullable=False),
        StructField(MODEL_VERSION, StringType(), nullable=False),
    ]
)
