"""``pin_captions``: one caption per (image signature, captioner version).

Keyed by the perceptual image signature, so near-duplicate pins share one caption and a
re-posted image is never captioned twice; a new captioner version captions afresh. A failed
image has a null caption and the reason in ``error``.
"""

from pyspark.sql.types import StringType, StructField, StructType, TimestampType

IMAGE_SIGNATURE = "image_signature"
CAPTIONER_VERSION = "captioner_version"
CAPTION = "caption"
ERROR = "error"
IMAGE_PATH = "image_path"  # the file that was captioned
CAPTIONED_AT = "captioned_at"

PIN_CAPTIONS_V1 = StructType(
    [
        StructField(IMAGE_SIGNATURE, StringType(), nullable=False),
        StructField(CAPTIONER_VERSION, StringType(), nullable=False),
        StructField(CAPTION, StringType()),
        StructField(ERROR, StringType()),
        StructField(IMAGE_PATH, StringType()),
        StructField(CAPTIONED_AT, TimestampType(), nullable=False),
    ]
)
