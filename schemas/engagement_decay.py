"""``engagement_decay``: each pin's time-decayed engagement per event type, as of a date.

``score`` = sum over the pin's events of that type on days ``d <= as_of`` of
``2 ** (-(as_of - d) / half_life_days)`` (one per event; an event's day is its ``dt``). The
slice of one ``as_of`` is the state the next day's ``serving_corpus`` run carries forward
(``jobs.serving_corpus``). Partitioned by ``as_of``.
"""

from pyspark.sql.types import DateType, DoubleType, StringType, StructField, StructType

PIN_ID = "pin_id"
EVENT_TYPE = "event_type"
SCORE = "score"
AS_OF = "as_of"

ENGAGEMENT_DECAY_V1 = StructType(
    [
        StructField(PIN_ID, StringType(), nullable=False),
        StructField(EVENT_TYPE, StringType(), nullable=False),
        StructField(SCORE, DoubleType(), nullable=False),
        StructField(AS_OF, DateType(), nullable=False),
    ]
)
