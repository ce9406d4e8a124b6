"""``item_attributes``: content attributes of items (S3-Rec ``*_item2attributes.json``:
categories, brands), one row per (source, pin_id, attribute).

``pin_id`` is the item's id in ``user_engagements`` of the same source; ``attribute`` is the
attribute's id prefixed the same way (``s3rec-beauty:a17``). Replaced per ``source``.
"""

from pyspark.sql.types import StringType, StructField, StructType

PIN_ID = "pin_id"
ATTRIBUTE = "attribute"
SOURCE = "source"

ITEM_ATTRIBUTES_V1 = StructType(
    [
        StructField(PIN_ID, StringType(), nullable=False),
        StructField(ATTRIBUTE, StringType(), nullable=False),
        StructField(SOURCE, StringType(), nullable=False),
    ]
)
