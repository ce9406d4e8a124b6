"""``reference_captions``: human-written captions of pin images (COCO), kept apart from pin
text so they can score a captioner without leaking into its input."""

from pyspark.sql.types import StringType, StructField, StructType

PIN_ID = "pin_id"
IMAGE_SIGNATURE = "image_signature"
CAPTION = "caption"
SOURCE = "source"

REFERENCE_CAPTIONS_V1 = StructType(
    [
        StructField(PIN_ID, StringType(), nullable=False),
        StructField(IMAGE_SIGNATURE, StringType()),
        StructField(CAPTION, StringType(), nullable=False),
        StructField(SOURCE, StringType(), nullable=False),
    ]
)
