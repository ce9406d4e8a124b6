"""Ingest the real evaluation data (``ingest.data_root``) into Delta tables.

* CrowdFlower labels CSV -> ``human_labels`` + ``pins`` (one pin per distinct product text);
* S3-Rec ``<Name>.txt`` sequences -> ``user_engagements``. The files have no timestamps: a
  user's i-th event gets ``ingest.s3rec_start_time + i * ingest.s3rec_step_seconds`` and
  ``seq_index = i``; only the order within a user is real;
* COCO ``captions.json`` + ``images/`` -> ``pins`` (image path + perceptual signature) and
  ``reference_captions`` (the human captions, kept out of pin text).

Rows that fail validation go to ``quarantine`` with a reason; a missing column or a column of
the wrong type fails the job at once. Each source replaces its own slice of each table
(``source = '<source>'``), so ingesting twice leaves the same rows.

Local:    pinpipe ingest [--set ingest.sources='[crowdflower]']
Cluster:  spark-submit --master spark://HOST:7077 --py-files dist/pinpipe.zip \\
              --jars "$(ls .cache/jars/*.jar | paste -sd,)" \\
              jobs/ingest.py --env cluster --set lake.root=/shared/lake
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import LongType, StringType

from runtime.config import IngestConfig, PinpipeConfig
from runtime.entry import run_job
from runtime.lake import Lake, sql_literal
from runtime.session import job_description
from runtime.validation import (
    REASON,
    duplicated,
    first_failure,
    is_blank,
    require_columns,
    split_rejected,
    to_quarantine,
)
from schemas import human_labels as HL
from schemas import pins as P
from schemas import quarantine as Q
from schemas import reference_captions as RC
from schemas import user_engagements as UE
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


@dataclass
class IngestBatch:
    """What one source contributes: valid rows per target table, and its quarantined rows.

    ``staged`` are the intermediate frames every output derives from; the writer persists them
    so each input is read and validated once, whatever the number of outputs.
    """

    source: str
    outputs: dict[str, DataFrame]
    quarantine: DataFrame
    staged: list[DataFrame] = field(default_factory=list)
    stats: dict[str, DataFrame] = field(default_factory=dict)  # extra counts to report


@dataclass
class SourceReport:
    source: str
    written: dict[str, int]
    quarantined: dict[str, int]
    stats: dict[str, int]

    def line(self) -> str:
        parts = [f"{t}={n:,}" for t, n in self.written.items()]
        parts += [f"{k}={n:,}" for k, n in self.stats.items()]
        parts.append(f"quarantined={sum(self.quarantined.values()):,}")
        return f"ingest {self.source}: " + " ".join(parts)


# --------------------------------------------------------------------------- CrowdFlower


def _try_number(col: str) -> F.Column:
    return F.expr(f"try_cast(trim(`{col}`) as double)")


def _pin_id_from_text(prefix: str, *cols: F.Column) -> F.Column:
    text = F.concat_ws("\u001f", *[F.coalesce(c, F.lit("")) for c in cols])
    return F.concat(F.lit(prefix), F.substring(F.sha2(text, 256), 1, 16))


def transform_crowdflower(raw: DataFrame, scale_max: int, source: str = CROWDFLOWER) -> IngestBatch:
    """CrowdFlower rows (all string columns, as in the CSV) -> labels, pins, quarantine."""
    require_columns(raw, {c: StringType() for c in CROWDFLOWER_COLUMNS}, f"{source} labels")
    relevance, variance, fold = (_try_number(c) for c in ("median_relevance", "relevance_variance", "fold"))
    checks = [
        (is_blank(F.col("id")), "missing id"),
        (is_blank(F.col("query")), "empty query"),
        (is_blank(F.col("product_title")) & is_blank(F.col("product_description")), "no product text"),
        (relevance.isNull(), "unparseable median_relevance"),
        (relevance != F.floor(relevance), "non-integer median_relevance"),
        ((relevance < 1) | (relevance > scale_max), f"median_relevance outside 1..{scale_max}"),
        (~is_blank(F.col("relevance_variance")) & variance.isNull(), "unparseable relevance_variance"),
        (variance < 0, "negative relevance_variance"),
        (~is_blank(F.col("fold")) & (fold.isNull() | (fold != F.floor(fold))), "unparseable fold"),
        (duplicated("id"), "duplicate id"),
    ]
    classified = raw.select(*CROWDFLOWER_COLUMNS).withColumn(REASON, first_failure(checks))
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
        quarantine=to_quarantine(rejected, source, "human_labels"),
        staged=[classified],
    )


def read_crowdflower(spark: SparkSession, path: str) -> DataFrame:
    # Header names are taken from the file (no schema), so a missing column is caught by name.
    return (
        spark.read.option("header", True)
        .option("multiLine", True)
        .option("escape", '"')
        .option("inferSchema", False)
        .option("mode", "PERMISSIVE")
        .csv(path)
    )


# --------------------------------------------------------------------------- S3-Rec


def s3rec_source(dataset: str) -> str:
    return f"s3rec_{dataset.lower()}"


def transform_s3rec(lines: DataFrame, dataset: str, start_time: dt.datetime, step_seconds: int) -> IngestBatch:
    """Lines ``user item item ...`` (column ``value``) -> one engagement per item, in order."""
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
    return IngestBatch(
        source=source,
        outputs={"user_engagements": engagements},
        quarantine=to_quarantine(rejected, source, "user_engagements", raw=F.col("value")),
        staged=[classified],
        stats={"users": valid},
    )


def read_lines(spark: SparkSession, path: str) -> DataFrame:
    return spark.read.text(path)


# --------------------------------------------------------------------------- COCO


def transform_coco(doc: DataFrame, images_dir: str, source: str = COCO) -> IngestBatch:
    """A COCO captions document (columns ``images``, ``annotations``) -> pins + captions;
    ``images_dir`` is the folder its ``file_name`` values are relative to."""
    require_columns(doc, {"images": None, "annotations": None}, f"{source} captions.json")
    images = doc.select(F.explode("images").alias("im")).select("im.*")
    require_columns(images, {"id": LongType(), "file_name": StringType()}, f"{source} images[]")
    annotations = doc.select(F.explode("annotations").alias("an")).select("an.*")
    require_columns(annotations, {"image_id": LongType(), "caption": StringType()}, f"{source} annotations[]")

    folder = images_dir.rstrip("/")
    path = F.when(is_blank(F.col("file_name")), None).otherwise(F.concat(F.lit(folder + "/"), F.col("file_name")))
    staged = images.select("id", "file_name", path.alias("_path")).withColumn(
        "_sig", image_signature_col(F.col("_path"))
    )
    checks = [
        (F.col("id").isNull(), "missing id"),
        (is_blank(F.col("file_name")), "missing file_name"),
        (duplicated("id"), "duplicate id"),
        (F.col(f"_sig.{ERROR}").isNotNull(), F.concat(F.lit("unreadable image path: "), F.col(f"_sig.{ERROR}"))),
    ]
    classified = staged.withColumn(REASON, first_failure(checks))
    valid, rejected = split_rejected(classified)
    pins = valid.select(
        F.concat(F.lit(f"{source}:"), F.col("id").cast("string")).alias(P.PIN_ID),
        F.lit(source).alias(P.SOURCE),
        *[
            F.lit(None).cast("string").alias(c)
            for c in (P.TITLE, P.DESCRIPTION, P.LINK_URL, P.LINK_TITLE, P.LINK_DESCRIPTION)
        ],
        F.col("_path").alias(P.IMAGE_PATH),
        F.col(f"_sig.{SIGNATURE}").alias(P.IMAGE_SIGNATURE),
        F.lit(None).cast("timestamp").alias(P.CREATED_AT),
    )

    known = valid.select(F.col("id").alias("_image_id"), F.col(f"_sig.{SIGNATURE}").alias("_signature"))
    captions = annotations.select("image_id", "caption").join(known, F.col("image_id") == F.col("_image_id"), "left")
    caption_checks = [
        (F.col("image_id").isNull(), "missing image_id"),
        (is_blank(F.col("caption")), "empty caption"),
        (F.col("_image_id").isNull(), "unknown or quarantined image_id"),
    ]
    captions = captions.withColumn(REASON, first_failure(caption_checks))
    good_captions, bad_captions = split_rejected(captions)
    reference = good_captions.select(
        F.concat(F.lit(f"{source}:"), F.col("image_id").cast("string")).alias(RC.PIN_ID),
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
        staged=[classified],
    )


def read_json_document(spark: SparkSession, path: str) -> DataFrame:
    if "://" not in path and not Path(path).is_file():
        raise FileNotFoundError(f"no such file: {path}")
    return spark.read.option("multiLine", True).option("mode", "FAILFAST").json(path)


# --------------------------------------------------------------------------- read, transform, write


@dataclass(frozen=True)
class RawSource:
    """One source as read: ``kind`` crowdflower (CSV rows), s3rec (text lines) or coco (the
    captions document, with the folder its image file names are relative to)."""

    kind: str
    name: str  # crowdflower source name, S3-Rec dataset name, or coco source name
    frame: DataFrame
    images_dir: str | None = None


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
        raw = read_crowdflower(spark, ing.path(ing.crowdflower_csv))
        found.append(RawSource(CROWDFLOWER, ing.crowdflower_source, raw))
    if "s3rec" in ing.sources:
        for dataset in ing.s3rec_datasets:
            found.append(RawSource("s3rec", dataset, read_lines(spark, ing.path(f"{ing.s3rec_dir}/{dataset}.txt"))))
    if COCO in ing.sources:
        coco = Path(ing.path(ing.coco_dir))
        found.append(
            RawSource(COCO, COCO, read_json_document(spark, str(coco / "captions.json")), str(coco / "images"))
        )
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
            batches.append(transform_s3rec(raw.frame, raw.name, s3rec_start_time, s3rec_step_seconds))
        elif raw.kind == COCO:
            batches.append(transform_coco(raw.frame, raw.images_dir or "", raw.name))
        else:
            raise ValueError(f"unknown source kind {raw.kind!r}")
    return batches


def write_batch(lake: Lake, batch: IngestBatch) -> SourceReport:
    """Write each output and the quarantine into the source's slice of its table."""
    spark = batch.quarantine.sparkSession
    where = f"{P.SOURCE} = {sql_literal(batch.source)}"
    for frame in batch.staged:
        frame.persist()
    try:
        written = {}
        for table, rows in batch.outputs.items():
            with job_description(spark, f"ingest {batch.source}: write {table}"):
                written[table] = lake.replace_slice(rows, table, where)
        with job_description(spark, f"ingest {batch.source}: write quarantine"):
            lake.replace_slice(batch.quarantine, "quarantine", f"{Q.SOURCE} = {sql_literal(batch.source)}")
            quarantined = {
                r[Q.REASON]: r["n"] for r in batch.quarantine.groupBy(Q.REASON).agg(F.count("*").alias("n")).collect()
            }
            stats = {name: frame.count() for name, frame in batch.stats.items()}
    finally:
        for frame in batch.staged:
            frame.unpersist()
    return SourceReport(batch.source, written, dict(sorted(quarantined.items())), stats)


def write(batches: Sequence[IngestBatch], lake: Lake) -> IngestReport:
    reports = []
    for batch in batches:
        report = write_batch(lake, batch)
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
    return write(batches, Lake.at(cfg.lake.root))


def main(argv: Sequence[str] | None = None) -> IngestReport:
    return run_job("pinpipe ingest", __doc__, run, argv)


if __name__ == "__main__":
    main()
