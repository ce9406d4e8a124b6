"""``pin_text_features``: the cleaned text fields of each pin and the assembled model input.

``pin_text`` joins the non-empty fields with tags (``[title] ... [caption] ...``), each cut to
its character budget so no field crowds out the others. One slice per ``feature_version``.
"""

from pyspark.sql.types import ArrayType, DateType, StringType, StructField, StructType

PIN_ID = "pin_id"
TITLE = "title"
DESCRIPTION = "description"
CAPTION = "caption"
BOARD_TITLES = "board_titles"  # top-k titles of boards the pin was saved to, by saves
ENGAGED_QUERIES = "engaged_queries"  # top-k queries by clicks + saves, trailing window
LINK_TITLE = "link_title"
LINK_DESCRIPTION = "link_description"
PIN_TEXT = "pin_text"
CAPTIONER_VERSION = "captioner_version"
AS_OF = "as_of"
FEATURE_VERSION = "feature_version"

PIN_TEXT_FEATURES_V1 = StructType(
    [
        StructField(PIN_ID, StringType(), nullable=False),
        StructField(TITLE, StringType()),
        StructField(DESCRIPTION, StringType()),
        StructField(CAPTION, StringType()),
        StructField(BOARD_TITLES, ArrayType(StringType())),
        StructField(ENGAGED_QUERIES, ArrayType(StringType())),
        StructField(LINK_TITLE, StringType()),
        StructField(LINK_DESCRIPTION, StringType()),
        StructField(PIN_TEXT, StringType(), nullable=False),
        StructField(CAPTIONER_VERSION, StringType()),
        StructField(AS_OF, DateType(), nullable=False),
        StructField(FEATURE_VERSION, StringType(), nullable=False),
    ]
)
