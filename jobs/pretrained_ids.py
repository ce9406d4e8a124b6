"""Pre-trained ID embeddings as both jobs that make them use them: ``pinpipe pretrain_ids`` and
``pinpipe train_two_tower`` (``two_tower.pretrained_ids.version: auto`` pre-trains on its own
source first). Each user's engagement window, in the one event order of training and serving;
the check that a two-tower's evaluation events are outside a version's window; and
:func:`publish_pretrained`, which finds or makes the version of a window and settings.

An event's *place* in its user's order is ``struct(t, i)``: its event time in epoch
microseconds, then its ``seq_index`` — comparable across tables and files (no time zone).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from models.retrieval.two_tower_settings import PretrainSettings
from runtime.lake import Lake
from runtime.session import job_description
from schemas import user_engagements as UE

log = logging.getLogger(__name__)

END = "end"  # the place of the last event of a user's window


def place(event: Any) -> Any:
    """An event's place in its user's order, comparable across tables: (microseconds, seq_index)."""
    return F.struct(F.unix_micros(event[UE.EVENT_TIME]).alias("t"), event["i"].alias("i"))


def windows(engagements: DataFrame, holdout_events: int) -> DataFrame:
    """(user_id, pins, end): each user's events but the last ``holdout_events``, their pin ids in
    order and the place of the last one (a user with no more events than that is left out)."""
    events = UE.ordered_events(engagements)
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
    events = UE.ordered_events(engagements).filter(F.size("e") > holdout_events)
    first = events.select(UE.USER_ID, place(F.element_at("e", -holdout_events)).alias("first_evaluation"))
    return first.join(window, UE.USER_ID).filter(F.col("first_evaluation") <= F.col(END))


def read_window(spark: SparkSession, path: Path) -> DataFrame:
    """A published version's window file (``models.retrieval.id_pretraining.WINDOW_FILE``) as
    (user_id, end). Read on the driver, where the registry is, and handed to Spark as data: an
    executor never opens the file (it need not share the driver's disk)."""
    import pyarrow.parquet as pq

    frame = spark.createDataFrame(pq.read_table(path).to_pandas())
    return frame.select(UE.USER_ID, F.struct("t", "i").alias(END))


@dataclass(frozen=True)
class PretrainRunReport:
    version: str
    source: str
    users: int
    items: int
    events: int
    promoted: bool

    def line(self) -> str:
        return (
            f"pretrain_ids {self.version}: {self.source}, {self.users:,} users, {self.items:,} items, "
            f"{self.events:,} events in the window{' (promoted)' if self.promoted else ''}"
        )


def resolved(settings: PretrainSettings, two_tower_dim: int) -> PretrainSettings:
    """``settings`` with ``dim: 0`` made the width of the two-tower's item table."""
    return settings if settings.dim else dataclasses.replace(settings, dim=two_tower_dim)


def publish_pretrained(
    user_windows: DataFrame,
    versions: dict[str, Any],
    lake: Lake,
    settings: PretrainSettings,
    *,
    family: str,
    keep: int,
    promote: bool,
) -> PretrainRunReport:
    """The version of ``family`` pre-trained on ``user_windows`` (:func:`windows` of
    ``settings.holdout_events``) with ``settings`` (``dim`` resolved): the kept one with the same
    settings and inputs (``versions``: source, table version) if there is one, else pre-trained
    on the driver now and published; promoted when ``promote``."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from safetensors.torch import save_file

    from models.artifacts.registry import Registry, content_key
    from models.retrieval.id_pretraining import ITEMS_FILE, USERS_FILE, VECTORS_FILE, WINDOW_FILE, pretrain

    registry = Registry(lake.artifacts(), keep=keep)
    config = {"pretrain_ids": dataclasses.asdict(settings)}
    key = content_key(config, versions)
    source = versions["source"]
    if same := registry.find(family, key):
        window = registry.manifest(family, same)["inputs"]["window"]
        log.info("pretrain_ids: %s/%s already holds these settings and inputs", family, same)
        if promote:
            registry.promote(family, same)
        return PretrainRunReport(same, source, window["users"], window["items"], window["events"], promote)
    with job_description(user_windows.sparkSession, "pretrain_ids: windows"):
        rows = user_windows.orderBy(UE.USER_ID).toPandas()
    if rows.empty:
        raise ValueError(
            f"pretrain_ids: no events of source {source!r} before each user's last {settings.holdout_events} "
            "(ingest the source, or lower pretrain_ids.settings.holdout_events)"
        )
    item_ids = sorted({pin for pins in rows["pins"] for pin in pins})
    index = {pin: i + 1 for i, pin in enumerate(item_ids)}
    sequences = [[index[pin] for pin in pins] for pins in rows["pins"]]
    events = sum(len(s) for s in sequences)
    log.info(
        "pretrain_ids: %s users, %s items, %s events in the window",
        f"{len(sequences):,}",
        f"{len(item_ids):,}",
        f"{events:,}",
    )
    vectors = pretrain(sequences, len(item_ids), settings)
    ends = rows[END].tolist()
    window = {
        "holdout_events": settings.holdout_events,
        "users": len(sequences),
        "items": len(item_ids),
        "events": events,
        "latest_event_micros": int(max(e["t"] for e in ends)),
    }

    def build(folder: Path) -> None:
        save_file(
            {"items": vectors.items.contiguous(), "users": vectors.users.contiguous()}, str(folder / VECTORS_FILE)
        )
        (folder / ITEMS_FILE).write_text(json.dumps(item_ids))
        (folder / USERS_FILE).write_text(json.dumps(rows[UE.USER_ID].tolist()))
        table = pa.table(
            {
                UE.USER_ID: rows[UE.USER_ID].tolist(),
                "t": pa.array([e["t"] for e in ends], pa.int64()),
                "i": pa.array([e["i"] for e in ends], pa.int32()),
            }
        )
        pq.write_table(table, folder / WINDOW_FILE)

    version = registry.publish(
        family,
        build,
        metrics={"loss": vectors.history[-1]["loss"], "history": vectors.history},
        config=config,
        inputs={**versions, "window": window},
        key=key,
    )
    if promote:
        registry.promote(family, version)
    return PretrainRunReport(version, source, len(sequences), len(item_ids), events, promote)
