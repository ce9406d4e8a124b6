"""Windows of each user's engagement, in the one event order of training and serving: the
pre-training window of ID embeddings (``pinpipe pretrain_ids``) and the check that a two-tower's
evaluation events are outside it (``pinpipe train_two_tower``). Shared by both jobs, lazily.

An event's *place* in its user's order is ``struct(t, i)``: its event time in epoch
microseconds, then its ``seq_index`` — comparable across tables and files (no time zone).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from schemas import user_engagements as UE

END = "end"  # the place of the last event of a user's window


def ordered_events(engagements: DataFrame) -> DataFrame:
    """(user_id, e): each user's events in :func:`UE.event_order`, as a sorted array of
    struct(event_time, i, pin_id)."""
    return (
        engagements.select(UE.USER_ID, UE.event_order())
        .groupBy(UE.USER_ID)
        .agg(F.sort_array(F.collect_list("e")).alias("e"))
    )


def place(event: Any) -> Any:
    """An event's place in its user's order, comparable across tables: (microseconds, seq_index)."""
    return F.struct(F.unix_micros(event[UE.EVENT_TIME]).alias("t"), event["i"].alias("i"))


def windows(engagements: DataFrame, holdout_events: int) -> DataFrame:
    """(user_id, pins, end): each user's events but the last ``holdout_events``, their pin ids in
    order and the place of the last one (a user with no more events than that is left out)."""
    events = ordered_events(engagements)
    kept = F.slice("e", 1, F.greatest(F.size("e") - holdout_events, F.lit(0)))
    return (
        events.select(UE.USER_ID, kept.alias("w"))
        .filter(F.size("w") > 0)
        .select(UE.USER_ID, F.col(f"w.{UE.PIN_ID}").alias("pins"), place(F.element_at("w", -1)).alias(END))
    )


def evaluation_events_inside(engagements: DataFrame, window: DataFrame, holdout_events: int = 2) -> DataFrame:
    """(user_id, first_evaluation, end): users whose first evaluation event — the first of their
    last ``holdout_events`` (leave-one-out: validation, then test), for users the two-tower
    evaluates (more events than that) — is at or before the end of their pre-training window."""
    events = ordered_events(engagements).filter(F.size("e") > holdout_events)
    first = events.select(UE.USER_ID, place(F.element_at("e", -holdout_events)).alias("first_evaluation"))
    return first.join(window, UE.USER_ID).filter(F.col("first_evaluation") <= F.col(END))


def read_window(spark: SparkSession, path: Path) -> DataFrame:
    """A published version's window file (``models.retrieval.id_pretraining.WINDOW_FILE``) as
    (user_id, end)."""
    frame = spark.read.parquet(str(path))
    return frame.select(UE.USER_ID, F.struct("t", "i").alias(END))
