"""The Delta lake: where tables live and the one way jobs write them.

Every write replaces exactly one slice of a table (``replaceWhere``): re-running a job for the
same slice leaves the same rows — no duplicates, no gaps — and each run is one Delta commit
that ``DeltaTable.history()`` shows. Each commit is tagged (``userMetadata``), so the counts a
job reports are its own commit's, even when other writers commit to the table meanwhile.
Writers of different slices of one table at once all succeed (a refused commit is tried again);
of the same slice, the first commit wins and the other run says so (:class:`SliceConflict`).
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from delta import exceptions as delta_errors
from delta.tables import DeltaTable
from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from models.artifacts.storage import HdfsSettings, S3Settings, Storage
from runtime.config import LakeConfig, is_uri
from runtime.validation import conform_to_schema
from schemas import TableSpec, table_spec

log = logging.getLogger(__name__)

COMMIT_ATTEMPTS = 5
RECENT_COMMITS = 20
NON_EMPTY_LOCATION = "DELTA_CREATE_TABLE_WITH_NON_EMPTY_LOCATION"
USER_METADATA_CONF = "spark.databricks.delta.commitInfo.userMetadata"
# Delta's commit conflicts (a writer committed first): no common base class to catch.
CONCURRENT_COMMIT = tuple(
    getattr(delta_errors, name)
    for name in (
        "ConcurrentAppendException",
        "ConcurrentDeleteDeleteException",
        "ConcurrentDeleteReadException",
        "ConcurrentTransactionException",
        "ConcurrentWriteException",
        "MetadataChangedException",
        "ProtocolChangedException",
    )
)


_written: ContextVar[Counter | None] = ContextVar("pinpipe_rows_written", default=None)


@contextlib.contextmanager
def counting_writes() -> Iterator[Counter]:
    """Rows written per table by every :class:`Lake` write inside the block (the nightly's row
    counts per stage), as read from each write's own commit."""
    counts: Counter = Counter()
    token = _written.set(counts)
    try:
        yield counts
    finally:
        _written.reset(token)


def _count(table: str, rows: int) -> None:
    counts = _written.get()
    if counts is not None:
        counts[table] += rows


@dataclass(frozen=True)
class Lake:
    """A lake root; local paths are made absolute so executors see the same folder."""

    root: str
    s3: S3Settings = S3Settings()
    cache_dir: str = ""
    hdfs: HdfsSettings = HdfsSettings()

    @classmethod
    def at(cls, root: str, s3: S3Settings | None = None, cache_dir: str = "", hdfs: HdfsSettings | None = None) -> Lake:
        root = root if is_uri(root) else str(Path(root).resolve())
        return cls(root, s3 or S3Settings(), cache_dir, hdfs or HdfsSettings())

    @classmethod
    def of(cls, cfg: LakeConfig) -> Lake:
        """The lake a configuration names, with how to reach its store."""
        return cls.at(cfg.root, cfg.s3, cfg.cache_dir, cfg.hdfs)

    def artifacts(self, *parts: str) -> Storage:
        """The artifacts folder (or a folder under it) as storage: models, indexes, pointers."""
        return self._storage(self.artifacts_path(*parts))

    def storage(self, *parts: str) -> Storage:
        """A folder of the lake outside tables and artifacts (reports, locks) as storage."""
        return self._storage("/".join([self.root.rstrip("/"), *parts]))

    def folder(self, setting: str, default_name: str) -> Storage:
        """A folder setting (a path or URI on any store this lake's settings reach), or
        ``<root>/<default_name>`` when it is empty."""
        if not setting:
            return self.storage(default_name)
        return self._storage(setting if is_uri(setting) else str(Path(setting).resolve()))

    def _storage(self, root: str) -> Storage:
        return Storage(root, self.s3, self.cache_dir, self.hdfs)

    def table_path(self, table: str) -> str:
        return f"{self.root.rstrip('/')}/tables/{table}"

    def artifacts_path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), "artifacts", *parts])

    def exists(self, spark: SparkSession, table: str) -> bool:
        return DeltaTable.isDeltaTable(spark, self.table_path(table))

    def read(self, spark: SparkSession, table: str) -> DataFrame:
        if not self.exists(spark, table):
            raise FileNotFoundError(f"no Delta table {table!r} at {self.table_path(table)}")
        return spark.read.format("delta").load(self.table_path(table))

    def read_or_empty(self, spark: SparkSession, table: str) -> DataFrame:
        """The table, or an empty frame of its schema when it has not been written yet."""
        if self.exists(spark, table):
            return self.read(spark, table)
        return spark.createDataFrame([], table_spec(table).schema)

    def delta_table(self, spark: SparkSession, table: str) -> DeltaTable:
        return DeltaTable.forPath(spark, self.table_path(table))

    def ensure_table(self, spark: SparkSession, spec: TableSpec) -> None:
        """Create the table with its schema and partitioning if it does not exist yet; an
        existing table whose columns are not the spec's is an error that names the difference."""
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            try:
                (
                    DeltaTable.createIfNotExists(spark)
                    .location(self.table_path(spec.name))
                    .addColumns(spec.schema)
                    .partitionedBy(*spec.partition_by)
                    .execute()
                )
                break
            except (*CONCURRENT_COMMIT, AnalysisException) as err:
                # Another writer creating it at the same moment: its folder exists before its
                # first commit does (DELTA_CREATE_TABLE_WITH_NON_EMPTY_LOCATION), or it commits first.
                if self.exists(spark, spec.name):
                    break
                racing = not isinstance(err, AnalysisException) or err.getCondition() == NON_EMPTY_LOCATION
                if not racing or attempt == COMMIT_ATTEMPTS:
                    raise
                time.sleep(0.5 * attempt)
        have = _columns(self.delta_table(spark, spec.name).toDF().schema)
        want = _columns(spec.schema)
        if have != want:
            missing = [f"{c} {t}" for c, t in want.items() if have.get(c) != t]
            extra = [f"{c} {t}" for c, t in have.items() if want.get(c) != t]
            raise TableSchemaMismatch(
                f"table {spec.name!r} at {self.table_path(spec.name)} does not have the schema this pinpipe "
                f"writes: it lacks {missing or 'nothing'} and has {extra or 'nothing'} besides. It was written "
                "by another version of its schema (schemas/): move it aside and re-run the job that writes it."
            )

    def replace_slice(self, df: DataFrame, table: str, where: str) -> int:
        """Replace the rows of ``table`` matching ``where`` with ``df``; returns rows written,
        read from this write's own commit (zero included).

        ``df`` must have the table's columns with the table's types (extra columns are an
        error, order does not matter); every row must match ``where``, which Delta checks.

        Concurrent writers: when another writer commits first, Delta refuses this commit. If
        the other writer left this slice's rows alone (a different slice of the table) the write
        is tried again, up to ``COMMIT_ATTEMPTS`` times; if it replaced them with exactly these
        rows (two nightlies of different dates writing the same catalog, say), the write is done;
        if it replaced them with other rows, this run writes nothing and raises
        :class:`SliceConflict` saying so.
        """
        spec = table_spec(table)
        spark = df.sparkSession
        self.ensure_table(spark, spec)
        rows = conform_to_schema(df, spec.schema, f"write to {table}")
        path = self.table_path(table)
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            tag = _commit_tag()
            base = self.version(spark, table)
            try:
                rows.write.format("delta").mode("overwrite").option("replaceWhere", where).option(
                    "userMetadata", tag
                ).save(path)
                break
            except CONCURRENT_COMMIT as err:
                same = self._after_conflict(spark, table, where, rows, base, attempt, err)
                if same is not None:  # another run committed these very rows: the write is done
                    _count(table, same)
                    log.info("%s: another run wrote the same %d rows where %s first", table, same, where)
                    return same
        written = self.commit_metric(spark, table, tag, "numOutputRows")
        _count(table, written)
        log.info("%s: wrote %d rows where %s", table, written, where)
        return written

    def slice_count(self, spark: SparkSession, table: str, where: str) -> int:
        """Rows of ``table`` matching ``where`` now (0 when the table does not exist yet)."""
        return self.read(spark, table).filter(where).count() if self.exists(spark, table) else 0

    def _after_conflict(
        self, spark: SparkSession, table: str, where: str, rows: DataFrame, base: int, attempt: int, err: Exception
    ) -> int | None:
        """After a concurrent commit: the number of rows when it left the rows ``where`` equal to
        ``rows`` (this write is done); :class:`SliceConflict` if it changed them otherwise (or the
        attempts are spent); else None, after waiting a little before the next attempt."""
        now = self.version(spark, table)
        if self._slice_files(spark, table, where, base) != self._slice_files(spark, table, where, now):
            held = spark.read.format("delta").option("versionAsOf", now).load(self.table_path(table))
            held = held.filter(where).select(*rows.columns)
            if rows.exceptAll(held).isEmpty() and held.exceptAll(rows).isEmpty():
                return held.count()
            raise SliceConflict(
                f"another run replaced the rows of {table!r} where {where} (Delta version {now}) while this "
                f"run was writing them; this run wrote nothing there and the table holds the other run's "
                f"rows. Re-run this job if its input differs from the other run's."
            ) from err
        if attempt == COMMIT_ATTEMPTS:
            raise SliceConflict(
                f"{table!r}: {COMMIT_ATTEMPTS} attempts to write the rows where {where} each met a concurrent "
                f"commit by another writer; nothing was written there. Re-run when the other writers are done."
            ) from err
        log.warning(
            "%s: a concurrent writer committed first (%s); writing again (attempt %d)",
            table,
            type(err).__name__,
            attempt + 1,
        )
        time.sleep(random.uniform(0.5, 1.5) * attempt)
        return None

    def _slice_files(self, spark: SparkSession, table: str, where: str, version: int) -> set[str]:
        """The data files holding the rows ``where`` at ``version``."""
        rows = spark.read.format("delta").option("versionAsOf", version).load(self.table_path(table))
        return {r[0] for r in rows.filter(where).select(F.col("_metadata.file_path")).distinct().collect()}

    def insert_new(self, df: DataFrame, table: str, keys: tuple[str, ...]) -> int:
        """Insert the rows of ``df`` whose ``keys`` are not in ``table`` yet (one atomic MERGE);
        returns rows inserted, read from this MERGE's own commit (zero when it made none).
        Re-running with the same rows inserts nothing."""
        spec = table_spec(table)
        spark = df.sparkSession
        self.ensure_table(spark, spec)
        rows = conform_to_schema(df, spec.schema, f"insert into {table}")
        on = " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys)
        tag = _commit_tag()
        spark.conf.set(USER_METADATA_CONF, tag)
        try:
            self.delta_table(spark, table).alias("t").merge(rows.alias("s"), on).whenNotMatchedInsertAll().execute()
        finally:
            spark.conf.unset(USER_METADATA_CONF)
        inserted = self.commit_metric(spark, table, tag, "numTargetRowsInserted")
        _count(table, inserted)
        log.info("%s: inserted %d new rows", table, inserted)
        return inserted

    def commit_metric(self, spark: SparkSession, table: str, tag: str, metric: str) -> int:
        """A metric of the commit tagged ``tag`` (its ``userMetadata``), from Delta's history: no
        scan. 0 when that commit lacks the metric or there is no such commit (a MERGE with
        nothing to do may commit nothing)."""
        delta = self.delta_table(spark, table)
        for limit in (RECENT_COMMITS, None):  # ours is almost always recent; history() reads every commit
            found = (
                (delta.history(limit) if limit else delta.history())
                .filter(F.col("userMetadata") == tag)
                .select(F.col("operationMetrics").getItem(metric).alias("n"))
                .first()
            )
            if found:
                return int(found["n"] or 0)
        return 0

    def version(self, spark: SparkSession, table: str) -> int:
        """The table's latest Delta version."""
        return int(self.delta_table(spark, table).history(1).select("version").first()[0])


class ShrinkRefused(RuntimeError):
    """A write would replace a slice with far fewer rows than it holds."""


def check_shrink(table: str, where: str, held: int, new: int, min_ratio: float, override: str) -> None:
    """Refuse to replace ``held`` rows with ``new``: always when ``new`` is 0 and the slice is not
    empty, and when ``new < min_ratio * held``. ``override`` says how to allow it anyway."""
    if held > 0 and (new == 0 or new < min_ratio * held):
        raise ShrinkRefused(
            f"refusing to replace the {held:,} rows of {table!r} where {where} with {new:,} rows "
            f"(below {min_ratio:g} of them); if that is meant, {override}"
        )


class SliceConflict(RuntimeError):
    """A concurrent writer replaced the same slice first; this write did not happen."""


def _commit_tag() -> str:
    return f"pinpipe:{uuid.uuid4().hex}"


class TableSchemaMismatch(ValueError):
    """An existing Delta table's columns differ from the schema its writer uses."""


def _columns(schema: StructType) -> dict[str, str]:
    return {f.name: f.dataType.simpleString() for f in schema.fields}


def sql_literal(value: str) -> str:
    """A SQL string literal for a ``replaceWhere`` predicate."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
