"""Pre-train user and item ID embeddings contrastively from engagement, and publish them.

Each user's events of ``pretrain_ids.source`` are ordered as the two-tower orders them (event
time, then ``seq_index``); the pre-training *window* is all of them but the user's last
``pretrain_ids.settings.holdout_events`` (2: the two-tower's validation and test events,
leave-one-out). Co-engaged item pairs and user-item pairs of the window train the vectors
(:mod:`models.retrieval.id_pretraining`). The artifact (registry family ``pretrain_ids``) holds
the vectors, their pin and user ids, and the window's end per user (``window.parquet``: the last
event it read), also summarised in the manifest's inputs. A two-tower that starts from a version
(``two_tower.pretrained_ids.version``) is refused when any of its evaluation events falls inside
that window (:func:`jobs.engagement_windows.evaluation_events_inside`).

Local:    pinpipe pretrain_ids [--set pretrain_ids.source=s3rec_lastfm]
Cluster:  spark-submit ... jobs/pretrain_ids.py --env cluster --set lake.root=/shared/lake
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.config import PinpipeConfig, run_job
from jobs.engagement_windows import END, windows
from models.artifacts.publishing import PublishSettings
from models.retrieval.two_tower_settings import PretrainSettings
from runtime.config import setting
from runtime.lake import Lake
from runtime.session import job_description
from schemas import user_engagements as UE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainIdsConfig(PublishSettings):
    settings: PretrainSettings = setting(
        "dim (= two_tower.model.dim), holdout_events (each user's last events kept out: 2), window "
        "(co-engagement distance), epochs, batch_size, lr, seed."
    )
    source: str = setting("user_engagements source to learn from; empty = two_tower.source.")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.gate.enabled:
            raise ValueError(
                "pretrain_ids.gate.enabled must be false: ID embeddings have no held-out measure of their "
                "own; the two-tower that starts from them is gated"
            )


@dataclass
class PretrainInputs:
    engagements: DataFrame
    versions: dict[str, Any]


@dataclass
class PretrainPrepared:
    windows: DataFrame  # (user_id, pins: the window's pin ids in order, end)


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


def read(spark: SparkSession, cfg: PinpipeConfig) -> PretrainInputs:
    lake, source = Lake.at(cfg.lake.root), cfg.pretrain_ids.source or cfg.two_tower.source
    engagements = lake.read(spark, "user_engagements").filter(F.col(UE.SOURCE) == source)
    return PretrainInputs(
        engagements, {"source": source, "user_engagements_version": lake.version(spark, "user_engagements")}
    )


def transform(inputs: PretrainInputs, *, holdout_events: int) -> PretrainPrepared:
    return PretrainPrepared(windows(inputs.engagements, holdout_events))


def write(
    prepared: PretrainPrepared, inputs: PretrainInputs, lake: Lake, section: PretrainIdsConfig, *, config: dict
) -> PretrainRunReport:
    """Collect the windows, pre-train on the driver and publish (promoting the new version)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from safetensors.torch import save_file

    from models.artifacts.publishing import publish_gated
    from models.artifacts.registry import Registry
    from models.retrieval.id_pretraining import ITEMS_FILE, USERS_FILE, VECTORS_FILE, WINDOW_FILE, pretrain

    spark = prepared.windows.sparkSession
    with job_description(spark, "pretrain_ids: windows"):
        rows = prepared.windows.orderBy(UE.USER_ID).toPandas()
    source = inputs.versions["source"]
    if rows.empty:
        raise ValueError(
            f"pretrain_ids: no events of source {source!r} before each user's last "
            f"{section.settings.holdout_events} (ingest the source, or lower pretrain_ids.settings.holdout_events)"
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
    vectors = pretrain(sequences, len(item_ids), section.settings)
    ends = rows[END].tolist()
    window = {
        "holdout_events": section.settings.holdout_events,
        "users": len(sequences),
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

    registry = Registry(lake.artifacts_path(), keep=section.registry_keep)
    published = publish_gated(
        registry,
        section,
        build,
        metrics={"loss": vectors.history[-1]["loss"], "history": vectors.history},
        config=config,
        inputs={**inputs.versions, "window": window},
        measure=_no_measure,
        rows=len(sequences),
    )
    return PretrainRunReport(published.version, source, len(sequences), len(item_ids), events, published.approved)


def _no_measure(folder: Path) -> float:
    raise AssertionError("pretrain_ids has no gate (its config refuses one)")


def run(spark: SparkSession, cfg: PinpipeConfig) -> PretrainRunReport:
    section = cfg.pretrain_ids
    if not section.settings.dim:  # the width of the table the vectors initialise
        section = dataclasses.replace(
            section, settings=dataclasses.replace(section.settings, dim=cfg.two_tower.model.dim)
        )
    inputs = read(spark, cfg)
    prepared = transform(inputs, holdout_events=section.settings.holdout_events)
    return write(prepared, inputs, Lake.at(cfg.lake.root), section, config=cfg.to_dict())


def main(argv: Sequence[str] | None = None) -> PretrainRunReport:
    return run_job("pinpipe pretrain_ids", __doc__, run, argv)


if __name__ == "__main__":
    main()
