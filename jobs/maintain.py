"""Lake upkeep: compact each Delta table's small files (OPTIMIZE), then delete the files no
version within ``maintain.vacuum_retention_hours`` needs (VACUUM).

Every job replaces slices, so each run leaves new small files (and empty files for empty
slices) and unreferenced old ones; nothing else ever removes them. Reading the data is
unchanged by either step; time travel further back than the retention loses its files.

Local:    pinpipe maintain [--set maintain.tables='[quarantine]']
Cluster:  spark-submit ... jobs/maintain.py --env cluster --set lake.root=/shared/lake
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from delta.tables import DeltaTable
from pyspark.sql import SparkSession

from jobs.config import PinpipeConfig, run_job
from runtime.config import require, setting
from runtime.lake import Lake
from runtime.session import job_description
from schemas import TABLES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MaintainConfig:
    tables: list[str] = setting("Tables to maintain; empty = every pinpipe table present in the lake.")
    optimize: bool = setting("Compact each table's small files (Delta OPTIMIZE) before vacuuming.")
    vacuum_retention_hours: float = setting(
        "VACUUM deletes files no longer referenced by versions newer than this many hours: time travel "
        "further back, and readers still on older versions, lose their files. Delta's safety floor is 168."
    )
    allow_short_retention: bool = setting(
        "Allow vacuum_retention_hours below 168 (turns off Delta's retention check for this run)."
    )

    def __post_init__(self) -> None:
        require(
            self.vacuum_retention_hours >= 0,
            "maintain.vacuum_retention_hours",
            "must be >= 0",
            self.vacuum_retention_hours,
        )
        require(
            self.vacuum_retention_hours >= 168 or self.allow_short_retention,
            "maintain.vacuum_retention_hours",
            "is below Delta's 168-hour safety floor: set maintain.allow_short_retention=true "
            "if no reader needs the older files",
            self.vacuum_retention_hours,
        )


RETENTION_CHECK = "spark.databricks.delta.retentionDurationCheck.enabled"
VACUUM_LOGGING = "spark.databricks.delta.vacuum.logging.enabled"
LISTING_PARALLELISM = "spark.sql.sources.parallelPartitionDiscovery.parallelism"


@dataclass(frozen=True)
class TableUpkeep:
    table: str
    files_before: int
    files_after: int  # files of the current version, after OPTIMIZE
    deleted: int  # files (and empty folders) VACUUM removed from storage

    def line(self) -> str:
        return f"{self.table}: {self.files_before:,} -> {self.files_after:,} files, {self.deleted:,} deleted"


@dataclass(frozen=True)
class MaintainReport:
    tables: list[TableUpkeep]

    def line(self) -> str:
        if not self.tables:
            return "maintain: no tables"
        return "maintain: " + "; ".join(t.line() for t in self.tables)


def tables_to_maintain(spark: SparkSession, lake: Lake, names: Sequence[str]) -> list[str]:
    """The configured tables (each must be a pinpipe table), or every pinpipe table present."""
    unknown = sorted(set(names) - set(TABLES))
    if unknown:
        raise ValueError(f"maintain.tables: unknown tables {unknown}; pinpipe's are {sorted(TABLES)}")
    return [t for t in (names or sorted(TABLES)) if lake.exists(spark, t)]


def maintain_table(spark: SparkSession, lake: Lake, table: str, settings: MaintainConfig) -> TableUpkeep:
    delta = lake.delta_table(spark, table)
    before = _active_files(delta)
    if settings.optimize:
        with job_description(spark, f"maintain {table}: optimize"):
            delta.optimize().executeCompaction()
    after = _active_files(delta)
    with job_description(spark, f"maintain {table}: vacuum"):
        delta.vacuum(settings.vacuum_retention_hours)
        deleted = _vacuumed(delta)
    upkeep = TableUpkeep(table, before, after, deleted)
    log.info("maintain %s", upkeep.line())
    return upkeep


def _active_files(delta: DeltaTable) -> int:
    return int(delta.detail().select("numFiles").first()[0])


def _vacuumed(delta: DeltaTable) -> int:
    """Files the last VACUUM END commit says it deleted (recorded with vacuum logging on)."""
    for entry in delta.history(5).collect():
        if entry.operation == "VACUUM END":
            return int((entry.operationMetrics or {}).get("numDeletedFiles", 0))
    return 0


def run(spark: SparkSession, cfg: PinpipeConfig) -> MaintainReport:
    lake, settings = Lake.of(cfg.lake), cfg.maintain
    tables = tables_to_maintain(spark, lake, settings.tables)
    # VACUUM lists a table's folders in a Spark job of parallelPartitionDiscovery.parallelism tasks
    # (10,000 by default: 35 s of empty tasks for a small table on 2 cores); one per core is plenty.
    run_conf = {
        VACUUM_LOGGING: "true",
        RETENTION_CHECK: str(not settings.allow_short_retention).lower(),
        LISTING_PARALLELISM: str(spark.sparkContext.defaultParallelism),
    }
    saved = {key: spark.conf.get(key, None) for key in run_conf}
    for key, value in run_conf.items():
        spark.conf.set(key, value)
    try:
        return MaintainReport([maintain_table(spark, lake, t, settings) for t in tables])
    finally:
        for key, value in saved.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)


def main(argv: Sequence[str] | None = None) -> MaintainReport:
    return run_job("pinpipe maintain", __doc__, run, argv)


if __name__ == "__main__":
    main()
