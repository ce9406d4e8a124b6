"""S3-Rec ``<Name>.txt`` interaction sequences -> ``user_engagements`` (a user's i-th event at
``start + i * step``, ``seq_index = i``), and ``<Name>_item2attributes.json`` -> ``item_attributes``."""

from __future__ import annotations

import codecs
import datetime as dt
import functools

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType

from jobs.sources.batch import IngestBatch, IngestFileError, Ledger, check_encoding
from runtime.validation import (
    REASON,
    duplicated,
    first_failure,
    is_blank,
    require_columns,
    split_rejected,
    to_quarantine,
)
from schemas import item_attributes as IA
from schemas import user_engagements as UE
from udfs.attribute_records import ENTRIES_DDL, parse_attribute_files
from udfs.attribute_records import ENTRY as ATTR_ENTRY
from udfs.attribute_records import FILE_PROBLEM as ATTR_FILE_PROBLEM
from udfs.file_encoding import LINES_DDL, decoded_lines


def s3rec_source(dataset: str) -> str:
    return f"s3rec_{dataset.lower()}"


def transform_s3rec(
    lines: DataFrame,
    dataset: str,
    start_time: dt.datetime,
    step_seconds: int,
    attributes: DataFrame | None = None,
) -> IngestBatch:
    """Lines ``user item item ...`` (column ``value``) -> one engagement per item, in order;
    with ``attributes`` (:func:`read_attributes` entries), one ``item_attributes`` row per
    (item, attribute) too."""
    require_columns(lines, {"value": StringType()}, f"S3-Rec {dataset} lines")
    source = s3rec_source(dataset)
    prefix = source.replace("_", "-")
    tokens = F.split(F.btrim(F.col("value"), F.lit(" \t\r\n\x0b\x0c")), r"\s+")  # trim() strips spaces only
    staged = lines.select("value", tokens.getItem(0).alias("_user"), tokens.alias("_tokens"))
    checks = [
        (is_blank(F.col("value")), "empty line"),
        # Any character but digits and whitespace: one character class, no repetition, so the
        # JVM regex cannot recurse over a long history (a repeated group overflowed its stack).
        (F.col("value").rlike(r"[^0-9\s]"), "unparseable id"),
        (F.size("_tokens") < 2, "empty sequence"),
        (duplicated("_user"), "duplicate id"),
    ]
    classified = staged.withColumn(REASON, first_failure(checks))
    valid, rejected = split_rejected(classified)
    start = int(start_time.replace(tzinfo=start_time.tzinfo or dt.UTC).timestamp())
    events = valid.select(
        "_user", F.posexplode(F.slice("_tokens", 2, F.size("_tokens") - 1)).alias("seq_index", "_item")
    )
    event_time = F.timestamp_seconds(F.lit(start) + F.col("seq_index").cast("long") * step_seconds)
    engagements = events.select(
        F.concat(F.lit(f"{prefix}:u"), "_user").alias(UE.USER_ID),
        F.concat(F.lit(f"{prefix}:i"), "_item").alias(UE.PIN_ID),
        F.lit(UE.EVENT_INTERACTION).alias(UE.EVENT_TYPE),
        event_time.alias(UE.EVENT_TIME),
        F.to_date(event_time).alias(UE.DT),
        F.col("seq_index").cast("int").alias(UE.SEQ_INDEX),
        F.lit(None).cast("string").alias(UE.QUERY),
        F.lit(None).cast("string").alias(UE.BOARD_ID),
        F.lit(source).alias(UE.SOURCE),
    )
    batch = IngestBatch(
        source=source,
        outputs={"user_engagements": engagements},
        quarantine=to_quarantine(rejected, source, "user_engagements", raw=F.col("value")),
        ledgers=[Ledger("lines", classified, "user_engagements", key=UE.USER_ID)],
        staged=[classified],
    )
    return batch if attributes is None else with_attributes(batch, attributes, prefix)


def with_attributes(batch: IngestBatch, entries: DataFrame, prefix: str) -> IngestBatch:
    """``batch`` plus its source's item attributes: one row per (item, distinct attribute) of
    every valid entry; the entries with a problem quarantined against ``item_attributes``."""
    classified = entries.select("item", "attributes", "raw", F.col("problem").alias(REASON))
    valid, rejected = split_rejected(classified)
    rows = valid.select(
        F.concat(F.lit(f"{prefix}:i"), "item").alias(IA.PIN_ID),
        F.explode(F.array_distinct("attributes")).alias("_attribute"),
    ).select(
        IA.PIN_ID,
        F.concat(F.lit(f"{prefix}:a"), "_attribute").alias(IA.ATTRIBUTE),
        F.lit(batch.source).alias(IA.SOURCE),
    )
    return IngestBatch(
        source=batch.source,
        outputs={**batch.outputs, "item_attributes": rows},
        quarantine=batch.quarantine.unionByName(
            to_quarantine(rejected, batch.source, "item_attributes", raw=F.col("raw"))
        ),
        ledgers=[*batch.ledgers, Ledger("attribute entries", classified, "item_attributes", key=IA.PIN_ID)],
        staged=[*batch.staged, classified],
    )


def read_lines(spark: SparkSession, path: str, encoding: str = "utf-8") -> DataFrame:
    """The file's lines (column ``value``), decoded strictly: a file that is not valid
    ``encoding`` is refused here, naming the byte offset and line (never read with U+FFFD)."""
    check_encoding(spark, path, encoding)
    if codecs.lookup(encoding).name == "utf-8":
        return spark.read.text(path)
    files = spark.read.format("binaryFile").load(path)
    return files.mapInArrow(functools.partial(decoded_lines, encoding=encoding), LINES_DDL)


def read_attributes(spark: SparkSession, path: str, encoding: str = "utf-8") -> DataFrame:
    """The entries of an item -> attributes JSON document, one row each (item, attributes, raw,
    problem), parsed in a Spark task (:mod:`udfs.attribute_records`). A file that is not valid
    ``encoding``, not JSON or not an object fails here, naming the file."""
    parsed = (
        spark.read.format("binaryFile")
        .load(path)
        .mapInArrow(functools.partial(parse_attribute_files, encoding=encoding), ENTRIES_DDL)
    )
    problems = [r.problem for r in parsed.filter(F.col("kind") == ATTR_FILE_PROBLEM).select("problem").collect()]
    if problems:
        raise IngestFileError(problems[0])
    return parsed.filter(F.col("kind") == ATTR_ENTRY).select("item", "attributes", "raw", "problem")
