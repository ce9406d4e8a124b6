"""Airflow DAG: the pinpipe nightly, one ``SparkSubmitOperator`` task per stage, in order.

Each task submits ``jobs/nightly.py`` for the day that ended before the run was triggered
(``{{ macros.ds_add(ds, -1) }}``: the schedule is a ``CronTriggerTimetable``, whose logical date
is the trigger time) with one stage
(``--set nightly.stages=[<stage>]``), so every task keeps the nightly's own bookkeeping: its
``pipeline_runs`` row, "done earlier" when it already succeeded for the date (an Airflow retry or
a cleared task resumes, it never redoes finished work), the training schedules and promotion
gates, the per-date lock, and the HTML report (rewritten after each task). Airflow adds the
retries, the schedule and the UI.

Installed with the optional extra (``pip install 'pinpipe[airflow]'``, not part of the default
setup). Settings, from the environment of the Airflow worker that parses this file:

    PINPIPE_HOME        the pinpipe checkout holding jobs/ and dist/pinpipe.zip (make package)
    PINPIPE_ENV         config overlay, default cluster
    PINPIPE_LAKE        lake.root, storage every node sees (default /shared/lake)
    PINPIPE_JARS        comma-separated Delta jars (default: those under $PINPIPE_HOME/.cache/jars)
    PINPIPE_SPARK_CONN  Airflow connection of the Spark master (default spark_default)
    PINPIPE_SCHEDULE    cron expression (default 0 2 * * *: 02:00 UTC, for the day that ended)
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.timetables.trigger import CronTriggerTimetable

try:  # Airflow 3
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow import DAG

from jobs.table import cluster_stages

HOME = Path(os.environ.get("PINPIPE_HOME", Path(__file__).resolve().parent.parent))
ENV = os.environ.get("PINPIPE_ENV", "cluster")
LAKE = os.environ.get("PINPIPE_LAKE", "/shared/lake")
JARS = os.environ.get("PINPIPE_JARS", ",".join(str(p) for p in sorted((HOME / ".cache" / "jars").glob("*.jar"))))
CONN = os.environ.get("PINPIPE_SPARK_CONN", "spark_default")
SCHEDULE = os.environ.get("PINPIPE_SCHEDULE", "0 2 * * *")
# The cluster nightly: the job table's nightly stages that run on a cluster (all but the embedded
# default's traffic simulator).
STAGES = list(cluster_stages())


def stage_arguments(stage: str) -> list[str]:
    """``jobs/nightly.py``'s arguments for one stage of the run's date (templated by Airflow)."""
    day = "{{ macros.ds_add(ds, -1) }}"
    return ["--env", ENV, "--date", day, "--set", f"lake.root={LAKE}", "--set", f"nightly.stages=[{stage}]"]


with DAG(
    dag_id="pinpipe_nightly",
    description="pinpipe: ingest -> features -> teacher scoring -> students -> two-tower -> serving corpus -> index",
    schedule=CronTriggerTimetable(SCHEDULE, timezone="UTC"),
    start_date=dt.datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": dt.timedelta(minutes=10)},
    tags=["pinpipe"],
) as dag:
    previous = None
    for stage in STAGES:
        task = SparkSubmitOperator(
            task_id=stage,
            application=str(HOME / "jobs" / "nightly.py"),
            py_files=str(HOME / "dist" / "pinpipe.zip"),
            jars=JARS or None,
            conn_id=CONN,
            name=f"pinpipe-{stage}",
            application_args=stage_arguments(stage),
        )
        if previous is not None:
            previous >> task
        previous = task
