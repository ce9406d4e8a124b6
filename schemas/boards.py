"""``boards``: one row per board. Saves of pins to boards are ``user_engagements`` rows
with ``event_type = 'save'`` and a ``board_id``."""

from pyspark.sql.types import StringType, StructField, StructType, TimestampType

BOARD_ID = "board_id"
SOURCE = "source"
TITLE = "title"
OWNER_USER_ID = "owner_user_id"
CREATED_AT = "created_at"

BOARDS_V1 = StructType(
    [
        StructField(BOARD_ID, StringType(), nullable=False),
        StructField(SOURCE, StringType(), nullable=False),
        StructField(TITLE, StringType()),
        StructField(OWNER_USER_ID, StringType()),
        StructField(CREATED_AT, TimestampType()),
    ]
)
