"""Pre-train user and item ID embeddings contrastively from engagement, and publish them.

Each user's events of ``pretrain_ids.source`` are ordered as the two-tower orders them (event
time, then ``seq_index``); the pre-training *window* is all of them but the user's last
``pretrain_ids.settings.holdout_events`` (2: the two-tower's validation and test events,
leave-one-out). Co-engaged item pairs and user-item pairs of the window train the vectors
(:mod:`models.retrieval.id_pretraining`). The artifact (registry family ``pretrain_ids``) holds
the vectors, their pin and user ids, and the window's end per user (``window.parquet``: the last
event it read), also summarised in the manifest's inputs. A two-tower that starts from a version
(``two_tower.pretrained_ids.version``) is refused when any of its evaluation events falls inside
that window (:func:`jobs.pretrained_ids.evaluation_events_inside`). Settings and inputs that a kept version
already holds give back that version (``two_tower.pretrained_ids.version: auto`` pre-trains the
same way inside ``train_two_tower``).

Local:    pinpipe pretrain_ids [--set pretrain_ids.source=s3rec_lastfm]
Cluster:  spark-submit ... jobs/pretrain_ids.py --env cluster --set lake.root=/shared/lake
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.config import PinpipeConfig, run_job
from jobs.pretrained_ids import PretrainRunReport, publish_pretrained, resolved, windows
from models.artifacts.publishing import PublishSettings
from models.retrieval.two_tower_settings import PretrainSettings
from runtime.config import setting
from runtime.lake import Lake
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


def read(spark: SparkSession, cfg: PinpipeConfig) -> PretrainInputs:
    lake, source = Lake.of(cfg.lake), cfg.pretrain_ids.source or cfg.two_tower.source
    engagements = lake.read(spark, "user_engagements").filter(F.col(UE.SOURCE) == source)
    return PretrainInputs(
        engagements, {"source": source, "user_engagements_version": lake.version(spark, "user_engagements")}
    )


@dataclass
class PretrainPrepared:
    windows: DataFrame  # (user_id, pins, end): each user's window (jobs.pretrained_ids.windows)
    versions: dict[str, Any]


def transform(inputs: PretrainInputs, *, holdout_events: int) -> PretrainPrepared:
    return PretrainPrepared(windows(inputs.engagements, holdout_events), inputs.versions)


def write(
    prepared: PretrainPrepared, lake: Lake, section: PretrainIdsConfig, *, two_tower_dim: int
) -> PretrainRunReport:
    """Pre-train on the windows (collected to the driver) and publish, or find the version that
    holds the same settings and inputs; promote it with ``pretrain_ids.promote``."""
    return publish_pretrained(
        prepared.windows,
        prepared.versions,
        lake,
        resolved(section.settings, two_tower_dim),
        family=section.family,
        keep=section.registry_keep,
        promote=section.promote,
    )


def run(spark: SparkSession, cfg: PinpipeConfig) -> PretrainRunReport:
    prepared = transform(read(spark, cfg), holdout_events=cfg.pretrain_ids.settings.holdout_events)
    return write(prepared, Lake.of(cfg.lake), cfg.pretrain_ids, two_tower_dim=cfg.two_tower.model.dim)


def main(argv: Sequence[str] | None = None) -> PretrainRunReport:
    return run_job("pinpipe pretrain_ids", __doc__, run, argv)


if __name__ == "__main__":
    main()
