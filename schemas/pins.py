"""``pins``: one row per pin (CrowdFlower products, COCO images, simulated catalog)."""

from pyspark.sql.types import StringType, StructField, StructType, TimestampType

PIN_ID = "pin_id"
SOURCE = "source"
TITLE = "title"
DESCRIPTION = "description"
LINK_URL = "link_url"
LINK_TITLE = "link_title"
LINK_DESCRIPTION = "link_description"
IMAGE_PATH = "image_path"
IMAGE_SIGNATURE = "image_signature"
CREATED_AT = "created_at"

PINS_V1 = StructType(
    [
        StructField(PIN_ID, StringType(), nullable=False),
        StructField(SOURCE, StringType(), nullable=False),
        StructField(TITLE, StringType()),
        StructField(DESCRIPTION, StringType()),
        StructField(LINK_URL, StringType()),
        StructField(LINK_TITLE, StringType()),
        StructField(LINK_DESCRIPTION, StringType()),
        StructField(IMAGE_PATH, StringType()),
        # Perceptual signature: equal for an image and its near-duplicates (re-encodes,
        # resizes); "dh:<16 hex>" for real images, "sim:<16 hex>" for simulated ones.
        StructField(IMAGE_SIGNATURE, StringType()),
        StructField(CREATED_AT, TimestampType()),
    ]
)
