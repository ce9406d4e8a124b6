"""The one place that builds a SparkSession.

Local runs (the embedded default): ``spark.master`` from config, Delta's SQL extension and
catalog, and the Delta jars from the checkout's cache (``.cache/jars``, filled by
``setup/setup.sh``), so nothing is fetched at run time.

Under ``spark-submit`` the JVM is already up with the submit line's master, name, jars and
packages: the builder then sets only SQL-level properties and never overrides those.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pyspark.sql import SparkSession

from runtime.config import LakeConfig, SparkConfig
from runtime.threads import use_driver_threads

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"
LOG4J_CONFIG = PROJECT_ROOT / "conf" / "log4j2.properties"
DRIVER_JAVA_OPTIONS = "spark.driver.extraJavaOptions"


class MissingJarsError(RuntimeError):
    """The Delta jars have not been resolved into the local cache."""


def under_spark_submit() -> bool:
    """True when this Python driver was launched by spark-submit (its JVM is already up)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def jars_dir() -> Path:
    return Path(os.environ.get("PINPIPE_JARS_DIR", PROJECT_ROOT / ".cache" / "jars"))


def delta_jars() -> list[str]:
    """Absolute paths of the cached Delta jars; raises with the fix when there are none."""
    folder = jars_dir()
    jars = sorted(str(p) for p in folder.glob("*.jar"))
    if not any(Path(j).name.startswith("delta-spark_") for j in jars):
        raise MissingJarsError(
            f"no Delta jars in {folder}; run setup/setup.sh (or set PINPIPE_JARS_DIR), "
            "or launch with spark-submit and pass the Delta jars/packages on the submit line"
        )
    return jars


def s3_jars() -> list[str]:
    """The S3A connector's jars (``.cache/jars/s3``, filled by ``setup/setup.sh``); raises with
    the fix when there are none."""
    jars = sorted(str(p) for p in (jars_dir() / "s3").glob("*.jar"))
    if not any(Path(j).name.startswith("hadoop-aws-") for j in jars):
        raise MissingJarsError(
            f"no S3A connector jars in {jars_dir() / 's3'} for an s3:// lake; run setup/setup.sh, or launch with "
            "spark-submit and pass hadoop-aws and the AWS SDK bundle on the submit line"
        )
    return jars


def on_s3(lake: LakeConfig | None) -> bool:
    return lake is not None and lake.root.split("://", 1)[0] in ("s3", "s3a", "s3n")


def s3a_options(lake: LakeConfig) -> dict[str, str]:
    """Hadoop's S3A settings for ``lake.s3`` (``spark.hadoop.*``, read when the SparkContext
    starts, also under spark-submit). Credentials are left to S3A's default provider chain
    (environment variables, the AWS config files, the instance role)."""
    s3 = lake.s3
    options = {
        # s3:// roots read by the same connector as s3a:// ones
        "spark.hadoop.fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "spark.hadoop.fs.s3a.path.style.access": str(s3.path_style).lower(),
    }
    if s3.endpoint:
        options["spark.hadoop.fs.s3a.endpoint"] = s3.endpoint
        options["spark.hadoop.fs.s3a.connection.ssl.enabled"] = str(s3.endpoint.startswith("https")).lower()
    if s3.region:
        options["spark.hadoop.fs.s3a.endpoint.region"] = s3.region
    return options


def log_level(cfg: SparkConfig, quiet: bool) -> str:
    """Spark's own (log4j) level: off when ``quiet`` (a local CLI run without ``--verbose``);
    under spark-submit always ``spark.log_level``, for the cluster's driver logs."""
    return "OFF" if quiet and not under_spark_submit() else cfg.log_level


def session_builder(
    app_name: str, cfg: SparkConfig, quiet: bool = False, lake: LakeConfig | None = None
) -> SparkSession.Builder:
    """A builder configured for pinpipe: Delta enabled, UTC, Arrow on; with a ``lake`` on S3,
    Hadoop's S3A connector configured for it (and, in a local run, its jars). A local run's JVM
    starts with ``conf/log4j2.properties`` at the run's level, so even a failure while Spark
    starts (a bad master) logs nothing when ``quiet``."""
    extra = {**(s3a_options(lake) if lake is not None and on_s3(lake) else {}), **cfg.extra}
    builder = (
        SparkSession.builder.config("spark.sql.extensions", DELTA_EXTENSION)
        .config("spark.sql.catalog.spark_catalog", DELTA_CATALOG)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(cfg.shuffle_partitions))
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
    )
    if not under_spark_submit():
        # pyspark starts workers with $PYSPARK_PYTHON (default `python3`): make it this
        # interpreter, so workers see the same virtualenv as the driver.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = (
            builder.master(cfg.master)
            .appName(app_name)
            .config("spark.jars", ",".join(delta_jars() + (s3_jars() if on_s3(lake) else [])))
            .config("spark.driver.memory", cfg.driver_memory)
            .config("spark.ui.enabled", str(cfg.ui_enabled).lower())
            .config("spark.sql.warehouse.dir", str(Path("spark-warehouse").resolve()))
            # Stage progress bars only on a terminal; logs get one line per stage instead.
            .config("spark.ui.showConsoleProgress", str(sys.stderr.isatty()).lower())
            # Delta rebuilds table state with this many tasks (default 50: slow on few cores).
            .config("spark.databricks.delta.snapshotPartitions", str(cfg.shuffle_partitions))
        )
        java_options = [
            f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
            f"-Dpinpipe.spark.log.level={log_level(cfg, quiet)}",
            extra.get(DRIVER_JAVA_OPTIONS, ""),
        ]
        extra[DRIVER_JAVA_OPTIONS] = " ".join(o for o in java_options if o)
    for key, value in extra.items():
        builder = builder.config(key, value)
    return builder


def build_session(app_name: str, cfg: SparkConfig, quiet: bool = False, lake: LakeConfig | None = None) -> SparkSession:
    spark = session_builder(app_name, cfg, quiet, lake).getOrCreate()
    spark.sparkContext.setLogLevel(log_level(cfg, quiet))
    threads = use_driver_threads(cfg.driver_threads)  # after the JVM started: its environment is its own
    log.info(
        "spark %s master=%s app=%s driver threads=%s",
        spark.version,
        spark.sparkContext.master,
        app_name,
        threads or "all cores",
    )
    return spark


@contextmanager
def job_description(spark: SparkSession, text: str) -> Iterator[None]:
    """Label the Spark jobs started inside the block (the UI and logs show which stage runs)."""
    spark.sparkContext.setJobDescription(text)
    try:
        yield
    finally:
        spark.sparkContext.setJobDescription(None)


@contextmanager
def spark_session(
    app_name: str, cfg: SparkConfig, quiet: bool = False, lake: LakeConfig | None = None
) -> Iterator[SparkSession]:
    """``with spark_session("ingest", cfg.spark, lake=cfg.lake) as spark: ...``; stops the session after."""
    spark = build_session(app_name, cfg, quiet, lake)
    try:
        yield spark
    finally:
        spark.stop()
