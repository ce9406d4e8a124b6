"""``user_engagements``: one row per user action on a pin (click, save, interaction).

S3-Rec sequences carry no timestamps: their ``event_time`` is derived from order
(see ``jobs.ingest``) and ``seq_index`` keeps the exact position in the user's sequence.
"""

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    DateType,
    IntegerType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

USER_ID = "user_id"
PIN_ID = "pin_id"
EVENT_TYPE = "event_type"
EVENT_TIME = "event_time"
DT = "dt"
SEQ_INDEX = "seq_index"
QUERY = "query"
BOARD_ID = "board_id"
SOURCE = "source"

EVENT_CLICK = "click"
EVENT_SAVE = "save"
EVENT_INTERACTION = "interaction"

USER_ENGAGEMENTS_V1 = StructType(
    [
        StructField(USER_ID, StringType(), nullable=False),
        StructField(PIN_ID, StringType(), nullable=False),
        StructField(EVENT_TYPE, StringType(), nullable=False),
        StructField(EVENT_TIME, TimestampType(), nullable=False),
        StructField(DT, DateType(), nullable=False),
        StructField(SEQ_INDEX, IntegerType()),
        StructField(QUERY, StringType()),  # the search that led to it, when there was one
        StructField(BOARD_ID, StringType()),  # for saves
        StructField(SOURCE, StringType(), nullable=False),
    ]
)


def event_order(*carried: str) -> Column:
    """A struct column whose sort order is a user's engagement order: event time, then
    ``seq_index`` (0 when absent), then pin id; ``carried`` columns ride along. Training
    sequences and serving histories (``pinpipe retrieve``) order events by this one key."""
    return F.struct(EVENT_TIME, F.coalesce(SEQ_INDEX, F.lit(0)).alias("i"), PIN_ID, *carried).alias("e")


def ordered_events(events: DataFrame, *carried: str) -> DataFrame:
    """(user_id, e): each user's events as an array sorted by :func:`event_order` — structs of
    (event_time, i, pin_id, ``carried``...)."""
    return (
        events.select(USER_ID, event_order(*carried)).groupBy(USER_ID).agg(F.sort_array(F.collect_list("e")).alias("e"))
    )


def in_event_order(events: DataFrame, column: str, alias: str) -> DataFrame:
    """(user_id, ``alias``): each user's ``column`` values in :func:`event_order` — the one
    ordering of a user's sequence for training (item indices), ``pinpipe retrieve``,
    ``retrieve_candidates`` (pin ids) and the ID pre-training windows."""
    carried = () if column == PIN_ID else (column,)
    return ordered_events(events, *carried).select(USER_ID, F.col(f"e.{column}").alias(alias))
