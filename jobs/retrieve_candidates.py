"""Retrieval candidates for every user, as a batch: ``user_candidates``.

1. On the driver, the promoted index version and the model version it was built from are pinned
   (refused when they are not a pair, as ``pinpipe retrieve`` refuses): a promotion while the job
   runs changes nothing it writes.
2. Each user of the model's source (``user_engagements``; ``retrieve_candidates.users`` for a
   list) gets their history built in Spark (the user tower reads its ``max_len`` most recent
   pins; none of its pins is a candidate).
3. Python workers open the pinned pair once each (``udfs.user_candidates``) and return every
   user's top ``retrieve_candidates.k`` pins, engaged ones left out: a multi-interest model
   searches once per interest (``index.interests_per_user`` heaviest) and merges round-robin,
   recording which interest found each pin; a conditional model retrieves within
   ``retrieve_candidates.interest`` when one is set.
4. The (``model_version``, ``dt``) slice of ``user_candidates`` is replaced in one Delta commit:
   a re-run writes the same rows, and a run killed before its commit leaves the table as it was.

Local:    pinpipe retrieve_candidates [--set retrieve_candidates.users=[u1,u2]]
Cluster:  spark-submit ... jobs/retrieve_candidates.py --env cluster --set lake.root=/shared/lake
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.config import PinpipeConfig, run_job
from models.artifacts.storage import Storage
from runtime.config import require_at_least, setting
from runtime.lake import Lake, sql_literal
from runtime.session import job_description
from schemas import user_candidates as UC
from schemas import user_engagements as UE

log = logging.getLogger(__name__)

TABLE = "user_candidates"


@dataclass(frozen=True)
class CandidatesConfig:
    date: dt.date = setting("The candidates' date (YYYY-MM-DD), their slice's dt; empty = today (UTC).", dated=True)
    k: int = setting("Candidates per user.")
    users: list[str] = setting("Only these user ids; empty = every user of the model's source.")
    interest: str = setting(
        "A conditional model's interest to retrieve within (a name of its interests.json); empty = none."
    )
    partitions: int = setting("Spark partitions of the users (0 = Spark's default parallelism).")
    batch_users: int = setting("Users per user-tower pass and index search in a worker.")

    def __post_init__(self) -> None:
        require_at_least(self, "retrieve_candidates", ("k", "batch_users"))
        require_at_least(self, "retrieve_candidates", ("partitions",), minimum=0)


@dataclass(frozen=True)
class CandidatesInputs:
    histories: DataFrame  # (user_id, history): every engaged pin id of the user, oldest first
    artifacts: Storage
    index: str
    index_version: str
    model_version: str  # <family>/<version>


@dataclass(frozen=True)
class CandidatesReport:
    model_version: str
    index: str
    date: dt.date
    users: int
    rows: int
    seconds: float

    def line(self) -> str:
        rate = self.users / self.seconds if self.seconds > 0 else 0.0
        return (
            f"retrieve_candidates: {TABLE} model_version={self.model_version} dt={self.date} index={self.index} "
            f"users={self.users:,} rows={self.rows:,} ({rate:,.1f} users/s)"
        )


def candidates_slice(model_version: str, day: dt.date) -> str:
    return f"{UC.MODEL_VERSION} = {sql_literal(model_version)} AND {UC.DT} = DATE '{day.isoformat()}'"


def read(spark: SparkSession, cfg: PinpipeConfig) -> CandidatesInputs:
    from models.retrieval.serving import IndexVersions
    from udfs.user_candidates import HISTORY

    lake, name = Lake.of(cfg.lake), cfg.index.name
    versions = IndexVersions(lake.artifacts(), name)
    index_version, description = versions.promoted_pair()
    manifest = versions.models.manifest(description.model_family, description.model_version)
    source = str(manifest.get("inputs", {}).get("source", ""))
    engagements = lake.read(spark, "user_engagements").filter(F.col(UE.SOURCE) == source)
    if cfg.retrieve_candidates.users:
        engagements = engagements.filter(F.col(UE.USER_ID).isin(list(cfg.retrieve_candidates.users)))
    histories = UE.in_event_order(engagements, UE.PIN_ID, HISTORY)
    return CandidatesInputs(histories, lake.artifacts(), name, index_version, description.model)


def transform(
    inputs: CandidatesInputs,
    *,
    k: int,
    day: dt.date,
    interests: int,
    interest: str,
    exact_filter_below: int,
    batch_users: int,
    partitions: int,
) -> DataFrame:
    """Every user's ``k`` candidates (``udfs.user_candidates``) as ``user_candidates`` rows of ``day``."""
    from udfs.user_candidates import CANDIDATE_SCHEMA, candidate_partitions

    spark = inputs.histories.sparkSession
    retrieve = candidate_partitions(
        inputs.artifacts,
        inputs.index,
        inputs.index_version,
        k,
        interests=interests,
        interest=interest or None,
        exact_filter_below=exact_filter_below,
        batch_users=batch_users,
    )
    users = inputs.histories.repartition(partitions or spark.sparkContext.defaultParallelism, UE.USER_ID)
    return users.mapInArrow(retrieve, CANDIDATE_SCHEMA).select(
        *CANDIDATE_SCHEMA.fieldNames(),
        F.lit(interest).alias(UC.CONDITION),
        F.lit(f"{inputs.index}/{inputs.index_version}").alias(UC.INDEX_VERSION),
        F.lit(inputs.model_version).alias(UC.MODEL_VERSION),
        F.lit(day).cast("date").alias(UC.DT),
    )


def write(
    candidates: DataFrame, lake: Lake, inputs: CandidatesInputs, day: dt.date, started: float
) -> CandidatesReport:
    spark = candidates.sparkSession
    where = candidates_slice(inputs.model_version, day)
    with job_description(spark, f"retrieve_candidates: {inputs.model_version} -> {TABLE} dt={day}"):
        rows = lake.replace_slice(candidates, TABLE, where)
    users = lake.read(spark, TABLE).filter(where).select(UC.USER_ID).distinct().count()
    index = f"{inputs.index}/{inputs.index_version}"
    return CandidatesReport(inputs.model_version, index, day, users, rows, time.perf_counter() - started)


def run(spark: SparkSession, cfg: PinpipeConfig) -> CandidatesReport:
    started, c = time.perf_counter(), cfg.retrieve_candidates
    inputs = read(spark, cfg)
    log.info("retrieve_candidates: %s through %s/%s", inputs.model_version, inputs.index, inputs.index_version)
    candidates = transform(
        inputs,
        k=c.k,
        day=c.date,
        interests=cfg.index.interests_per_user,
        interest=c.interest,
        exact_filter_below=cfg.index.exact_filter_below,
        batch_users=c.batch_users,
        partitions=c.partitions,
    )
    return write(candidates, Lake.of(cfg.lake), inputs, c.date, started)


def main(argv: Sequence[str] | None = None) -> CandidatesReport:
    return run_job("pinpipe retrieve_candidates", __doc__, run, argv)


if __name__ == "__main__":
    main()
