"""``search_impressions``: one row per pin shown for a search request, partitioned by ``dt``."""

from pyspark.sql.types import (
    BooleanType,
    DateType,
    IntegerType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

IMPRESSION_ID = "impression_id"
REQUEST_ID = "request_id"
USER_ID = "user_id"
QUERY = "query"
PIN_ID = "pin_id"
POSITION = "position"
EVENT_TIME = "event_time"
DT = "dt"
CLICKED = "clicked"
SAVED = "saved"
SOURCE = "source"

SEARCH_IMPRESSIONS_V1 = StructType(
    [
        StructField(IMPRESSION_ID, StringType(), nullable=False),
        StructField(REQUEST_ID, StringType(), nullable=False),
        StructField(USER_ID, StringType()),
        StructField(QUERY, StringType()),
        StructField(PIN_ID, StringType()),
        StructField(POSITION, IntegerType()),  # 0-based rank in the result page
        StructField(EVENT_TIME, TimestampType(), nullable=False),
        StructField(DT, DateType(), nullable=False),
        StructField(CLICKED, BooleanType(), nullable=False),
        StructField(SAVED, BooleanType(), nullable=False),
        StructField(SOURCE, StringType(), nullable=False),
    ]
)
