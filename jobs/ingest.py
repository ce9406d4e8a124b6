"""Ingest the real evaluation data (``ingest.data_root``) into Delta tables.

* CrowdFlower labels CSV -> ``human_labels`` + ``pins`` (one pin per distinct product text);
* S3-Rec ``<Name>.txt`` sequences -> ``user_engagements``. The files have no timestamps: a
  user's i-th event gets ``ingest.s3rec_start_time + i * ingest.s3rec_step_seconds`` and
  ``seq_index = i``; only the order within a user is real; ``<Name>_item2attributes.json``,
  when present (``ingest.s3rec_attributes``), -> ``item_attributes`` (one row per item and
  attribute; parsed entry by entry, a repeated item id quarantines all its entries);
* COCO ``captions.json`` + ``images/`` -> ``pins`` (image path + perceptual signature) and
  ``reference_captions`` (the human captions, kept out of pin text).

Rows that fail validation go to ``quarantine`` with a reason and their raw text; a missing
column, a file that is not valid in its configured encoding (``ingest.encodings``) or a document
of the wrong kind fails the job at once with one clear message. Every input record is accounted
for: after writing, the job checks that records read = rows written + rows quarantined, counted
from the tables, and prints it. Each source replaces its own slice of each table
(``source = '<source>'``), so ingesting twice leaves the same rows; a re-ingest that would shrink
a slice below ``ingest.min_slice_ratio`` of its rows (or to zero) is refused before anything is
written, unless ``ingest.allow_shrink``.

Local:    pinpipe ingest [--set ingest.sources='[crowdflower]']
Cluster:  spark-submit --master spark://HOST:7077 --py-files dist/pinpipe.zip \\
              --jars "$(ls .cache/jars/*.jar | paste -sd,)" \\
              jobs/ingest.py --env cluster --set lake.root=/shared/lake
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType

from runtime.config import IngestConfig, PinpipeConfig
from runtime.entry import run_job
from runtime.lake import Lake, check_shrink, sql_literal
from runtime.session import job_description
from runtime.validation import (
    REASON,
    InputSchemaError,
    duplicated,
    first_failure,
    is_blank,
    require_columns,
    split_rejected,
    to_quarantine,
)
from schemas import human_labels as HL
from schemas import item_attributes as IA
from schemas import pins as P
from schemas import quarantine as Q
from schemas import reference_captions as RC
from schemas import user_engagements as UE
from udfs.attribute_records import ENTRIES_DDL, parse_attribute_files
from udfs.attribute_records import ENTRY as ATTR_ENTRY
from udfs.attribute_records import FILE_PROBLEM as ATTR_FILE_PROBLEM
from udfs.csv_records import BAD_LINE, FILE_PROBLEM, HEADER, PARSED_DDL, RECORD, parse_files
from udfs.file_encoding import PROBLEMS_DDL, decode_problems
from udfs.image_signature import ERROR, SIGNATURE, image_signature_col

log = logging.getLogger(__name__)

CROWDFLOWER = "crowdflower"
COCO = "coco"
CROWDFLOWER_COLUMNS = (
    "id",
    "query",
    "product_title",
    "product_description",
    "median_relevance",
    "relevance_variance",
    "fold",
)


@dataclass(frozen=True)
class Ledger:
    """Where one kind of input record went: ``read`` has one row per record read; each is
    written to ``table`` (counted as rows of the source's slice, or as distinct ``key`` values
    when one record becomes many rows) or quarantined against ``table``."""

    what: str
    read: DataFrame
    table: str
    key: str | None = None


@dataclass
class IngestBatch:
    """What one source contributes: valid rows per target table, and its quarantined rows.

    ``staged`` are the intermediate frames every output derives from; the writer persists them
    so each input is read and validated once, whatever the number of outputs.
    """

    source: str
    outputs: dict[str, DataFrame]
    quarantine: DataFrame
    ledgers: list[Ledger]
    staged: list[DataFrame] = field(default_factory=list)


@dataclass(frozen=True)
class Reconciled:
    what: str
    read: int
    written: int
    quarantined: int

    def line(self) -> str:
        return f"{self.what} read {self.read:,} = written {self.written:,} + quarantined {self.quarantined:,}"


class ReconciliationError(RuntimeError):
    """Records read do not equal rows written plus rows quarantined."""


class IngestFileError(ValueError):
    """An input file cannot be read as its kind at all (its encoding, not a document)."""


@dataclass
class SourceReport:
    source: str
    written: dict[str, int]
    quarantined: dict[str, int]  # by reason
    reconciled: list[Reconciled]

    def line(self) -> str:
        parts = [f"{t}={n:,}" for t, n in self.written.items()]
        parts.append(f"quarantined={sum(self.quarantined.values()):,}")
        return f"ingest {self.source}: " + " ".join(parts) + "".join(f"; {r.line()}" for r in self.reconciled)


# --------------------------------------------------------------------------- CrowdFlower


def _try_cast(col: str, sql_type: str) -> F.Column:
    """``col`` trimmed and cast to ``sql_type``; null where it does not parse or fit."""
    return F.expr(f"try_cast(trim(`{col}`) as {sql_type})")


def _pin_id_from_text(prefix: str, *cols: F.Column) -> F.Column:
    text = F.concat_ws("\u001f", *[F.coalesce(c, F.lit("")) for c in cols])
    return F.concat(F.lit(prefix), F.substring(F.sha2(text, 256), 1, 16))


INT_MAX = 2**31 - 1
# NUL ends a string in C libraries and is refused by many stores: such a row is quarantined.
# Other control characters stay (the real CrowdFlower file has a U+0019 where an apostrophe was).
TEXT_COLUMNS = ("id", "query", "product_title", "product_description")
LINE, RAW, PROBLEM = "_line", "_raw", "_problem"  # a CSV record's place, text, and parse problem


def transform_crowdflower(records: DataFrame, scale_max: int, source: str = CROWDFLOWER) -> IngestBatch:
    """CrowdFlower records (as :func:`read_crowdflower` gives them) -> labels, pins, quarantine."""
    require_columns(
        records,
        {c: StringType() for c in (*CROWDFLOWER_COLUMNS, RAW, PROBLEM)},
        f"{source} labels",
    )
    relevance, variance, fold = (_try_cast(c, "double") for c in ("median_relevance", "relevance_variance", "fold"))
    checks = [
        (F.col(PROBLEM).isNotNull(), F.col(PROBLEM)),
        (is_blank(F.col("id")), "missing id"),
        (is_blank(F.col("query")), "empty query"),
        (is_blank(F.col("product_title")) & is_blank(F.col("product_description")), "no product text"),
        (F.concat_ws(" ", *TEXT_COLUMNS).contains("\x00"), "NUL character in text"),
        (relevance.isNull(), "unparseable median_relevance"),
        # Ranges before integrality: NaN and infinities compare greater than any number in Spark.
        ((relevance < 1) | (relevance > scale_max), f"median_relevance outside 1..{scale_max}"),
        (relevance % 1 != 0, "non-integer median_relevance"),
        (~is_blank(F.col("relevance_variance")) & variance.isNull(), "unparseable relevance_variance"),
        (F.isnan(variance) | (F.abs(variance) == float("inf")), "non-finite relevance_variance"),
        (variance < 0, "negative relevance_variance"),
        (~is_blank(F.col("fold")) & fold.isNull(), "unparseable fold"),
        ((fold < 0) | (fold > INT_MAX), f"fold outside 0..{INT_MAX}"),
        (fold % 1 != 0, "non-integer fold"),
        (duplicated("id"), "duplicate id"),
    ]
    classified = records.select(*CROWDFLOWER_COLUMNS, RAW, PROBLEM).withColumn(REASON, first_failure(checks))
    valid, rejected = split_rejected(classified)

    title = F.trim("product_title")
    description = F.when(is_blank(F.col("product_description")), None).otherwise(F.trim("product_description"))
    rows = valid.select(
        F.concat(F.lit(f"{source}:"), F.trim("id")).alias(HL.LABEL_ID),
        F.trim("query").alias(HL.QUERY),
        _pin_id_from_text(f"{source}:", title, description).alias(HL.PIN_ID),
        relevance.cast("int").alias(HL.RELEVANCE),
        F.lit(scale_max).alias(HL.SCALE_MAX),
        variance.alias(HL.RELEVANCE_VARIANCE),
        fold.cast("int").alias(HL.FOLD),
        F.lit(source).alias(HL.SOURCE),
        title.alias("_title"),
        description.alias("_description"),
    )
    labels = rows.drop("_title", "_description")
    pins = rows.select(
        F.col(HL.PIN_ID).alias(P.PIN_ID),
        F.lit(source).alias(P.SOURCE),
        F.col("_title").alias(P.TITLE),
        F.col("_description").alias(P.DESCRIPTION),
        *[
            F.lit(None).cast("string").alias(c)
            for c in (P.LINK_URL, P.LINK_TITLE, P.LINK_DESCRIPTION, P.IMAGE_PATH, P.IMAGE_SIGNATURE)
        ],
        F.lit(None).cast("timestamp").alias(P.CREATED_AT),
    ).dropDuplicates([P.PIN_ID])
    return IngestBatch(
        source=source,
        outputs={"human_labels": labels, "pins": pins},
        quarantine=to_quarantine(rejected, source, "human_labels", raw=F.col(RAW)),
        ledgers=[Ledger("records", classified, "human_labels")],
        staged=[classified],
    )


def read_crowdflower(spark: SparkSession, path: str, encoding: str = "utf-8") -> DataFrame:
    """The CSV's records, one row each: the header's columns as strings (by position), plus
    ``_line`` (first line), ``_raw`` (the record's text) and ``_problem`` (why the record cannot
    be a row: malformed quoting, a wrong number of fields; else null).

    The file is parsed record by record in a Spark task (:mod:`udfs.csv_records`): an unbalanced
    quote costs its own line, not the rows after it. Reading the header is one small Spark job;
    a file that is not valid ``encoding``, has no header or repeats a column fails here.
    """
    parsed = (
        spark.read.format("binaryFile")
        .load(path)
        .mapInArrow(functools.partial(parse_files, encoding=encoding), PARSED_DDL)
    )
    firsts = parsed.filter(F.col("kind").isin(HEADER, FILE_PROBLEM)).select("kind", "fields", "problem").collect()
    problems = [r.problem for r in firsts if r.kind == FILE_PROBLEM]
    if problems:
        raise IngestFileError(problems[0])
    headers = {tuple(h.strip() for h in r.fields) for r in firsts}
    if not headers:
        raise InputSchemaError(f"{path}: no header row (the file is empty or blank)")
    if len(headers) > 1:
        raise InputSchemaError(f"{path}: its files have different headers: {sorted(headers)}")
    header = next(iter(headers))
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        raise InputSchemaError(f"{path}: the header repeats columns {repeated}")
    width = len(header)
    wrong_width = F.concat(
        F.lit("wrong number of fields: "), F.size("fields").cast("string"), F.lit(f", the header has {width}")
    )
    return parsed.filter(F.col("kind").isin(RECORD, BAD_LINE)).select(
        *[F.try_element_at("fields", F.lit(i + 1)).alias(name) for i, name in enumerate(header)],
        F.col("first_line").alias(LINE),
        F.col("raw").alias(RAW),
        F.coalesce(F.col("problem"), F.when(F.size("fields") != width, wrong_width)).alias(PROBLEM),
    )


# --------------------------------------------------------------------------- S3-Rec


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


def read_lines(spark: SparkSession, path: str) -> DataFrame:
    return spark.read.text(path)


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


# --------------------------------------------------------------------------- COCO


COCO_DDL = (
    "images array<struct<id:string, file_name:string>>, annotations array<struct<image_id:string, caption:string>>"
)


def transform_coco(doc: DataFrame, images_dir: str, source: str = COCO) -> IngestBatch:
    """A COCO captions document (columns ``images``, ``annotations``; ids as text, as
    :func:`read_json_document` reads them) -> pins + captions; ``images_dir`` is the folder its
    ``file_name`` values are relative to."""
    require_columns(doc, {"images": None, "annotations": None}, f"{source} captions.json")
    images = doc.select(F.explode("images").alias("im")).select("im.*")
    require_columns(images, {"id": StringType(), "file_name": StringType()}, f"{source} images[]")
    annotations = doc.select(F.explode("annotations").alias("an")).select("an.*")
    require_columns(annotations, {"image_id": StringType(), "caption": StringType()}, f"{source} annotations[]")

    folder = images_dir.rstrip("/")
    path = F.when(is_blank(F.col("file_name")), None).otherwise(F.concat(F.lit(folder + "/"), F.col("file_name")))
    staged = images.select("id", "file_name", _try_cast("id", "bigint").alias("_id"), path.alias("_path")).withColumn(
        "_sig", image_signature_col(F.col("_path"))
    )
    checks = [
        (is_blank(F.col("id")), "missing id"),
        (F.col("_id").isNull(), "unparseable id (not a 64-bit integer)"),
        (is_blank(F.col("file_name")), "missing file_name"),
        (F.col("file_name").rlike(r"^/|(^|/)\.\.(/|$)"), "file_name outside the images folder"),
        (duplicated("_id"), "duplicate id"),
        (F.col(f"_sig.{ERROR}").isNotNull(), F.concat(F.lit("unreadable image path: "), F.col(f"_sig.{ERROR}"))),
    ]
    classified = staged.withColumn(REASON, first_failure(checks))
    valid, rejected = split_rejected(classified)
    pins = valid.select(
        F.concat(F.lit(f"{source}:"), F.col("_id").cast("string")).alias(P.PIN_ID),
        F.lit(source).alias(P.SOURCE),
        *[
            F.lit(None).cast("string").alias(c)
            for c in (P.TITLE, P.DESCRIPTION, P.LINK_URL, P.LINK_TITLE, P.LINK_DESCRIPTION)
        ],
        F.col("_path").alias(P.IMAGE_PATH),
        F.col(f"_sig.{SIGNATURE}").alias(P.IMAGE_SIGNATURE),
        F.lit(None).cast("timestamp").alias(P.CREATED_AT),
    )

    known = valid.select(F.col("_id").alias("_known_id"), F.col(f"_sig.{SIGNATURE}").alias("_signature"))
    captions = annotations.select("image_id", "caption", _try_cast("image_id", "bigint").alias("_image_id"))
    captions = captions.join(known, F.col("_image_id") == F.col("_known_id"), "left")
    caption_checks = [
        (is_blank(F.col("image_id")), "missing image_id"),
        (F.col("_image_id").isNull(), "unparseable image_id (not a 64-bit integer)"),
        (is_blank(F.col("caption")), "empty caption"),
        (F.col("_known_id").isNull(), "unknown or quarantined image_id"),
    ]
    captions = captions.withColumn(REASON, first_failure(caption_checks))
    good_captions, bad_captions = split_rejected(captions)
    reference = good_captions.select(
        F.concat(F.lit(f"{source}:"), F.col("_image_id").cast("string")).alias(RC.PIN_ID),
        F.col("_signature").alias(RC.IMAGE_SIGNATURE),
        F.trim("caption").alias(RC.CAPTION),
        F.lit(source).alias(RC.SOURCE),
    )
    quarantine = to_quarantine(rejected, source, "pins").unionByName(
        to_quarantine(bad_captions, source, "reference_captions")
    )
    return IngestBatch(
        source=source,
        outputs={"pins": pins, "reference_captions": reference},
        quarantine=quarantine,
        ledgers=[Ledger("images", classified, "pins"), Ledger("annotations", captions, "reference_captions")],
        staged=[classified],
    )


def check_encoding(spark: SparkSession, path: str, encoding: str) -> None:
    """Raise :class:`IngestFileError` unless every file at ``path`` is valid ``encoding``."""
    files = spark.read.format("binaryFile").load(path)
    problems = files.mapInArrow(functools.partial(decode_problems, encoding=encoding), PROBLEMS_DDL).collect()
    if problems:
        raise IngestFileError(problems[0].problem)


def read_json_document(spark: SparkSession, path: str, encoding: str = "utf-8") -> DataFrame:
    """A COCO captions document, its ids read as text (each is parsed per row, so one id that
    does not fit a 64-bit integer is one quarantined image, not a failed job)."""
    if "://" not in path and not Path(path).is_file():
        raise FileNotFoundError(f"no such file: {path}")
    check_encoding(spark, path, encoding)
    doc = (
        spark.read.schema(COCO_DDL)
        .option("multiLine", True)
        .option("mode", "FAILFAST")
        .option("encoding", encoding)
        .json(path)
    )
    try:
        present = doc.select(*[F.col(c).isNotNull().alias(c) for c in ("images", "annotations")]).collect()
    except Exception as exc:  # Spark's malformed-record error, wrapped differently by version
        raise IngestFileError(
            f"{path}: not a COCO captions document (a JSON object with 'images' and 'annotations' "
            f"arrays): {str(exc).splitlines()[0]}"
        ) from exc
    missing = [c for c in ("images", "annotations") if not present or not any(r[c] for r in present)]
    if missing:
        raise InputSchemaError(f"{path}: missing sections {missing}; a COCO captions file has both")
    return doc


# --------------------------------------------------------------------------- read, transform, write


@dataclass(frozen=True)
class RawSource:
    """One source as read: ``kind`` crowdflower (CSV rows), s3rec (text lines) or coco (the
    captions document, with the folder its image file names are relative to)."""

    kind: str
    name: str  # crowdflower source name, S3-Rec dataset name, or coco source name
    frame: DataFrame
    images_dir: str | None = None
    attributes: DataFrame | None = None  # S3-Rec: the dataset's item -> attributes entries, if read


@dataclass(frozen=True)
class IngestReport:
    sources: list[SourceReport]

    def line(self) -> str:
        return "\n".join(report.line() for report in self.sources)


def read(spark: SparkSession, cfg: PinpipeConfig) -> list[RawSource]:
    """Every configured source, from ``ingest.data_root``."""
    ing: IngestConfig = cfg.ingest
    found: list[RawSource] = []
    if CROWDFLOWER in ing.sources:
        raw = read_crowdflower(spark, ing.path(ing.crowdflower_csv), ing.encoding(CROWDFLOWER))
        found.append(RawSource(CROWDFLOWER, ing.crowdflower_source, raw))
    if "s3rec" in ing.sources:
        for dataset in ing.s3rec_datasets:
            lines = read_lines(spark, ing.path(f"{ing.s3rec_dir}/{dataset}.txt"))
            attributes_file = ing.path(f"{ing.s3rec_dir}/{dataset}_item2attributes.json")
            attributes = (
                read_attributes(spark, attributes_file, ing.encoding("s3rec"))
                if ing.s3rec_attributes and Path(attributes_file).is_file()
                else None
            )
            found.append(RawSource("s3rec", dataset, lines, attributes=attributes))
    if COCO in ing.sources:
        coco = Path(ing.path(ing.coco_dir))
        doc = read_json_document(spark, str(coco / "captions.json"), ing.encoding(COCO))
        found.append(RawSource(COCO, COCO, doc, str(coco / "images")))
    return found


def transform(
    raws: Sequence[RawSource], *, crowdflower_scale_max: int, s3rec_start_time: dt.datetime, s3rec_step_seconds: int
) -> list[IngestBatch]:
    """One batch (valid rows per table + quarantine) per source."""
    batches = []
    for raw in raws:
        if raw.kind == CROWDFLOWER:
            batches.append(transform_crowdflower(raw.frame, crowdflower_scale_max, raw.name))
        elif raw.kind == "s3rec":
            batches.append(transform_s3rec(raw.frame, raw.name, s3rec_start_time, s3rec_step_seconds, raw.attributes))
        elif raw.kind == COCO:
            batches.append(transform_coco(raw.frame, raw.images_dir or "", raw.name))
        else:
            raise ValueError(f"unknown source kind {raw.kind!r}")
    return batches


SHRINK_OVERRIDE = "run again with --set ingest.allow_shrink=true"


def write_batch(lake: Lake, batch: IngestBatch, min_slice_ratio: float | None = None) -> SourceReport:
    """Write each output and the quarantine into the source's slice of its table, then check
    that every record read was written or quarantined.

    With ``min_slice_ratio`` (None: no guard), a batch that would shrink a slice it replaces
    below that fraction of its rows, or to zero, is refused before anything is written.
    """
    spark = batch.quarantine.sparkSession
    where = f"{P.SOURCE} = {sql_literal(batch.source)}"
    for frame in batch.staged:
        frame.persist()
    try:
        if min_slice_ratio is not None:
            for table, rows in batch.outputs.items():
                with job_description(spark, f"ingest {batch.source}: shrink guard on {table}"):
                    held = lake.slice_count(spark, table, where)
                    if held:
                        check_shrink(table, where, held, rows.count(), min_slice_ratio, SHRINK_OVERRIDE)
        written = {}
        for table, rows in batch.outputs.items():
            with job_description(spark, f"ingest {batch.source}: write {table}"):
                written[table] = lake.replace_slice(rows, table, where)
        with job_description(spark, f"ingest {batch.source}: write quarantine"):
            lake.replace_slice(batch.quarantine, "quarantine", f"{Q.SOURCE} = {sql_literal(batch.source)}")
        with job_description(spark, f"ingest {batch.source}: reconcile"):
            quarantine = lake.read(spark, "quarantine").filter(where)
            counts = quarantine.groupBy(Q.TARGET_TABLE, Q.REASON).count().collect()
            reconciled = [_reconcile(lake, batch.source, where, ledger, counts) for ledger in batch.ledgers]
    finally:
        for frame in batch.staged:
            frame.unpersist()
    by_reason: dict[str, int] = {}
    for r in counts:
        by_reason[r[Q.REASON]] = by_reason.get(r[Q.REASON], 0) + r["count"]
    return SourceReport(batch.source, written, dict(sorted(by_reason.items())), reconciled)


def _reconcile(lake: Lake, source: str, where: str, ledger: Ledger, quarantine_counts: list) -> Reconciled:
    """Records read vs rows found in the written slice plus rows quarantined against its table."""
    spark = ledger.read.sparkSession
    written_rows = lake.read(spark, ledger.table).filter(where)
    if ledger.key is not None:
        written_rows = written_rows.select(ledger.key).distinct()
    result = Reconciled(
        ledger.what,
        read=ledger.read.count(),
        written=written_rows.count(),
        quarantined=sum(r["count"] for r in quarantine_counts if r[Q.TARGET_TABLE] == ledger.table),
    )
    if result.read != result.written + result.quarantined:
        raise ReconciliationError(
            f"ingest {source}: {ledger.what} do not reconcile: {result.line()} "
            f"({result.read - result.written - result.quarantined:+,} unaccounted)"
        )
    return result


def write(batches: Sequence[IngestBatch], lake: Lake, min_slice_ratio: float | None = None) -> IngestReport:
    reports = []
    for batch in batches:
        report = write_batch(lake, batch, min_slice_ratio)
        log.info(report.line())
        for reason, n in report.quarantined.items():
            log.info("  quarantined %s: %s x%d", report.source, reason, n)
        reports.append(report)
    return IngestReport(reports)


def run(spark: SparkSession, cfg: PinpipeConfig) -> IngestReport:
    ing = cfg.ingest
    batches = transform(
        read(spark, cfg),
        crowdflower_scale_max=ing.crowdflower_scale_max,
        s3rec_start_time=ing.s3rec_start_time,
        s3rec_step_seconds=ing.s3rec_step_seconds,
    )
    guard = None if ing.allow_shrink else ing.min_slice_ratio
    return write(batches, Lake.at(cfg.lake.root), guard)


def main(argv: Sequence[str] | None = None) -> IngestReport:
    return run_job("pinpipe ingest", __doc__, run, argv)


if __name__ == "__main__":
    main()
