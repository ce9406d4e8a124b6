"""The Delta lake: where tables live and the one way jobs write them.

Every write replaces exactly one slice of a table (``replaceWhere``): re-running a job for the
same slice leaves the same rows — no duplicates, no gaps — and each run is one Delta commit
that ``DeltaTable.history()`` shows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from runtime.config import is_uri
from runtime.validation import conform_to_schema
from schemas import TableSpec, table_spec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Lake:
    """A lake root; local paths are made absolute so executors see the same folder."""

    root: str

    @classmethod
    def at(cls, root: str) -> Lake:
        return cls(root if is_uri(root) else str(Path(root).resolve()))

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
        (
            DeltaTable.createIfNotExists(spark)
            .location(self.table_path(spec.name))
            .addColumns(spec.schema)
            .partitionedBy(*spec.partition_by)
            .execute()
        )
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
        """Replace the rows of ``table`` matching ``where`` with ``df``; returns rows written.

        ``df`` must have the table's columns with the table's types (extra columns are an
        error, order does not matter); every row must match ``where``, which Delta checks.
        """
        spec = table_spec(table)
        spark = df.sparkSession
        self.ensure_table(spark, spec)
        rows = conform_to_schema(df, spec.schema, f"write to {table}")
        rows.write.format("delta").mode("overwrite").option("replaceWhere", where).save(self.table_path(table))
        written = self.last_commit_metric(spark, table, "numOutputRows")
        log.info("%s: wrote %d rows where %s", table, written, where)
        return written

    def insert_new(self, df: DataFrame, table: str, keys: tuple[str, ...]) -> int:
        """Insert the rows of ``df`` whose ``keys`` are not in ``table`` yet (one atomic MERGE);
        returns rows inserted. Re-running with the same rows inserts nothing."""
        spec = table_spec(table)
        spark = df.sparkSession
        self.ensure_table(spark, spec)
        rows = conform_to_schema(df, spec.schema, f"insert into {table}")
        on = " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys)
        before = self.version(spark, table)
        self.delta_table(spark, table).alias("t").merge(rows.alias("s"), on).whenNotMatchedInsertAll().execute()
        # A MERGE with nothing to insert may commit nothing: then the last commit is not ours.
        inserted = (
            self.last_commit_metric(spark, table, "numTargetRowsInserted")
            if self.version(spark, table) != before
            else 0
        )
        log.info("%s: inserted %d new rows", table, inserted)
        return inserted

    def version(self, spark: SparkSession, table: str) -> int:
        """The table's latest Delta version."""
        return int(self.delta_table(spark, table).history(1).select("version").first()[0])

    def last_commit_metric(self, spark: SparkSession, table: str, metric: str) -> int:
        """A metric of the latest commit (e.g. rows written), from Delta's history: no scan."""
        last = (
            self.delta_table(spark, table)
            .history(1)
            .select(F.col("operationMetrics").getItem(metric).alias("n"))
            .first()
        )
        return int(last["n"] or 0) if last else 0


class TableSchemaMismatch(ValueError):
    """An existing Delta table's columns differ from the schema its writer uses."""


def _columns(schema: StructType) -> dict[str, str]:
    return {f.name: f.dataType.simpleString() for f in schema.fields}


def sql_literal(value: str) -> str:
    """A SQL string literal for a ``replaceWhere`` predicate."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
