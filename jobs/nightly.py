"""The nightly: every stage for one date, in order, resumable, one at a time per date.

    pinpipe nightly --date 2024-01-31 [--set nightly.stages='[ingest, serving_corpus]']

A pipeline of jobs (each job's own ``run`` in one Spark session). The date sets every dated
setting of the stages (``simulate.start_date`` with one day, ``features.as_of``,
``scorer.start_date``/``end_date``, ``student_features.as_of``, ``serving_corpus.date``).
Stages run in the order of the job table (``jobs.table``); training stages run on their
schedule (``nightly.train_every_days``) or when their model family has no production model made
before this date, and are recorded ``skipped`` otherwise. Each finished stage appends a row to ``pipeline_runs`` (start,
end, status, its report line); a stage with a ``succeeded`` (or ``skipped``) row for the date is
not run again, so a nightly that failed or was killed resumes at the first stage without one.
A failed stage stops the nightly (exit status 1) and is recorded ``failed`` with its error. A
stage that needs a production model its family does not have (a gate rejected the family's first
version) is recorded ``skipped`` with the reason, and the nightly goes on.

A second nightly for the same date refuses to start while the first runs: the lock
(``runtime.run_lock``) lives on the lake (or ``nightly.lock_dir``); the running nightly renews its lease;
a killed nightly's lock is stale at once on its host, and ``nightly.lock_ttl_seconds`` after its
last renewal elsewhere.

Cluster:  spark-submit ... jobs/nightly.py --env cluster --set lake.root=/shared/lake --date 2024-01-31
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from jobs import table
from jobs.config import PinpipeConfig, run_job
from jobs.table import nightly_stages, trained_families, training_stages
from jobs.tracking import track
from models.artifacts.registry import NoProductionModel, Registry
from models.artifacts.storage import Storage
from runtime.config import require, setting
from runtime.entry import Report, with_date_option
from runtime.errors import explain
from runtime.lake import Lake, counting_writes
from runtime.run_lock import RunLock
from runtime.session import job_description
from schemas import TABLES
from schemas import pipeline_runs as PR

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NightlyConfig:
    date: dt.date = setting(
        "The date the nightly runs for (YYYY-MM-DD); empty = today (UTC). Every dated setting of its "
        "stages (features.as_of, scorer dates, student_features.as_of, serving_corpus.date) is set to it.",
        dated=True,
    )
    stages: list[str] = setting(
        "Stages to run, a subset of the job table's nightly stages; they run in the table's order."
    )
    train_every_days: dict[str, int] = setting(
        "Training stages' schedule: the stage runs on days whose number since 1970-01-01 is a multiple "
        "of this, and on any day its model family has no promoted version; other days it is skipped."
    )
    lock_dir: str = setting(
        "Folder of the nightly's locks: a path or URI (s3a://, hdfs://) every machine that may start the "
        "nightly reaches; empty = <lake.root>/_locks."
    )
    report_dir: str = setting(
        "Another folder (path or URI) for the nightly's HTML reports (nightly-<date>.html), besides "
        "<lake.root>/_reports where they always go; empty = the lake's only."
    )
    lock_ttl_seconds: float = setting(
        "Lease of the nightly's lock: a nightly for the same date refuses to start while the lock is "
        "renewed; a killed run's lock is stale at once on its host, after this many seconds elsewhere."
    )

    def __post_init__(self) -> None:
        known = nightly_stages()
        unknown = sorted(set(self.stages) - set(known))
        require(not unknown, "nightly.stages", f"unknown stages {unknown}; known: {list(known)}", self.stages)
        for stage, days in self.train_every_days.items():
            require(
                stage in training_stages(),
                f"nightly.train_every_days.{stage}",
                "only training stages have a schedule",
                stage,
            )
            require(days >= 1, f"nightly.train_every_days.{stage}", "must be >= 1", days)
        require(self.lock_ttl_seconds > 0, "nightly.lock_ttl_seconds", "must be > 0", self.lock_ttl_seconds)


TABLE = "pipeline_runs"
EPOCH = dt.date(1970, 1, 1)
DONE = (PR.SUCCEEDED, PR.SKIPPED)


class StageFailed(RuntimeError):
    """A stage of the nightly failed; the nightly stopped there."""


@dataclass(frozen=True)
class StageOutcome:
    stage: str
    status: str  # succeeded | failed | skipped | done earlier
    seconds: float = 0.0
    summary: str = ""
    rows_written: Mapping[str, int] = dataclasses.field(default_factory=dict)

    def line(self) -> str:
        took = f" in {self.seconds:.1f} s" if self.seconds else ""
        return f"  {self.stage:<18} {self.status}{took}{': ' + self.summary if self.summary else ''}"


@dataclass(frozen=True)
class NightlyReport:
    date: dt.date
    run_id: str
    stages: list[StageOutcome]
    report: str = ""  # the HTML report's path ("" when it could not be written)

    def line(self) -> str:
        where = f"report: {self.report}" if self.report else "report: not written (see the log)"
        return "\n".join([f"nightly {self.date} (run {self.run_id}):", *(s.line() for s in self.stages), where])


def dated(cfg: PinpipeConfig, day: dt.date) -> PinpipeConfig:
    """``cfg`` with every job's dated settings on ``day`` (the job table's ``dated`` and
    ``nightly_fixed``)."""
    changes: dict[str, dict[str, Any]] = {}
    for job in table.JOBS:
        if job.dated or job.nightly_fixed:
            changes.setdefault(job.section, {}).update({**dict.fromkeys(job.dated, day), **job.nightly_fixed})
    sections = {name: dataclasses.replace(getattr(cfg, name), **values) for name, values in changes.items()}
    return dataclasses.replace(cfg, **sections)


def on_schedule(stage: str, day: dt.date, every: Mapping[str, int], has_promoted: bool) -> bool:
    """Whether ``stage`` runs on ``day``: unscheduled stages always; a training stage every
    ``every[stage]`` days (counted from 1970-01-01), and on any day its family has no model."""
    if stage not in every:
        return True
    return not has_promoted or (day - EPOCH).days % every[stage] == 0


def promoted_before(registry: Registry, family: str, day: dt.date) -> bool:
    """Whether ``family`` has a production model that this date's nightly did not make. A run
    killed after promoting but before recording its training stage must run the stage again on
    resume (it publishes nothing new), as the uninterrupted run did, not skip it off schedule."""
    current = registry.current(family)
    if current is None:
        return False
    made_on = registry.manifest(family, current).get("config", {}).get("nightly", {}).get("date")
    return made_on != day.isoformat()


def lock_path(cfg: PinpipeConfig, day: dt.date) -> Storage:
    """The date's lock (a folder of lease records, ``runtime.run_lock``) on the lake's storage, or
    under ``nightly.lock_dir``: a place every machine that may start the nightly reaches."""
    return Lake.of(cfg.lake).folder(cfg.nightly.lock_dir, "_locks").child(f"nightly-{day.isoformat()}.lock")


def finished_stages(spark: SparkSession, lake: Lake, day: dt.date) -> set[str]:
    """Stages with a succeeded or skipped row for ``day``."""
    if not lake.exists(spark, TABLE):
        return set()
    rows = lake.read(spark, TABLE).filter((F.col(PR.RUN_DATE) == F.lit(day)) & F.col(PR.STATUS).isin(*DONE))
    return {r[PR.STAGE] for r in rows.select(PR.STAGE).distinct().collect()}


def record(
    spark: SparkSession, lake: Lake, run_id: str, day: dt.date, outcome: StageOutcome, started: float, error: str = ""
) -> None:
    row = (
        run_id,
        day,
        outcome.stage,
        outcome.status,
        dt.datetime.fromtimestamp(started),
        dt.datetime.fromtimestamp(started + outcome.seconds),
        outcome.seconds,
        outcome.summary or None,
        error or None,
        dict(outcome.rows_written),
    )
    lake.insert_new(spark.createDataFrame([row], TABLES[TABLE].schema), TABLE, (PR.RUN_ID, PR.STAGE))


def stage_runner(stage: str) -> Callable[[SparkSession, PinpipeConfig], Report]:
    return importlib.import_module(table.job(stage).module).run


def run_stage(
    spark: SparkSession, cfg: PinpipeConfig, stage_cfg: PinpipeConfig, run_id: str, stage: str
) -> StageOutcome:
    """Run ``stage`` (or skip it off its schedule) and record the outcome; a failure is recorded
    and raised as :class:`StageFailed`."""
    day, lake = cfg.nightly.date, Lake.of(cfg.lake)
    started = time.time()
    family = trained_families(cfg).get(stage)
    has_promoted = family is None or promoted_before(Registry(lake.artifacts()), family, day)
    if not on_schedule(stage, day, cfg.nightly.train_every_days, has_promoted):
        outcome = StageOutcome(stage, PR.SKIPPED, summary="not on its schedule today")
        record(spark, lake, run_id, day, outcome, started)
        return outcome
    log.info("nightly %s: %s", day, stage)
    try:
        with counting_writes() as written, job_description(spark, f"nightly {day}: {stage}"):
            report = stage_runner(stage)(spark, stage_cfg)
    except NoProductionModel as exc:  # a gate rejected the first version of a family the stage needs
        outcome = StageOutcome(stage, PR.SKIPPED, time.time() - started, f"needs a production model: {exc}")
        record(spark, lake, run_id, day, outcome, started)
        log.warning("nightly %s: %s", day, outcome.line().strip())
        return outcome
    except Exception as exc:
        error = explain(exc)
        outcome = StageOutcome(stage, PR.FAILED, time.time() - started, rows_written=written)
        record(spark, lake, run_id, day, outcome, started, error)
        raise StageFailed(
            f"nightly {day}: stage {stage} failed: {error} (re-run the nightly to resume at {stage})"
        ) from exc
    outcome = StageOutcome(stage, PR.SUCCEEDED, time.time() - started, report.line(), written)
    track(stage_cfg, stage, report)
    record(spark, lake, run_id, day, outcome, started)
    log.info("nightly %s: %s", day, outcome.line().strip())
    return outcome


def write_report(spark: SparkSession, cfg: PinpipeConfig) -> str:
    """The run's HTML report (``jobs.nightly_report``); a report that cannot be written is a
    warning, never the nightly's failure."""
    from jobs import nightly_report

    try:
        with job_description(spark, f"nightly {cfg.nightly.date}: report"):
            written = nightly_report.run(spark, cfg)
    except Exception as exc:
        log.warning("nightly %s: the report could not be written: %s", cfg.nightly.date, explain(exc))
        return ""
    (log.warning if written.damaged else log.info)("nightly %s: %s", cfg.nightly.date, written.line())
    return str(written.path)


def run(spark: SparkSession, cfg: PinpipeConfig) -> NightlyReport:
    day, lake = cfg.nightly.date, Lake.of(cfg.lake)
    stage_cfg, run_id = dated(cfg, day), uuid.uuid4().hex[:12]
    outcomes: list[StageOutcome] = []
    with RunLock(lock_path(cfg, day), cfg.nightly.lock_ttl_seconds, what=f"nightly {day}"):
        finished = finished_stages(spark, lake, day)
        try:
            for stage in [s for s in nightly_stages() if s in cfg.nightly.stages]:
                done = stage in finished
                outcomes.append(
                    StageOutcome(stage, "done earlier") if done else run_stage(spark, cfg, stage_cfg, run_id, stage)
                )
        finally:
            report = write_report(spark, cfg)
    return NightlyReport(day, run_id, outcomes, report)


def main(argv: Sequence[str] | None = None) -> NightlyReport:
    return run_job("pinpipe nightly", __doc__, run, with_date_option("pinpipe nightly", argv))


if __name__ == "__main__":
    main()
