"""CrowdFlower product-search relevance labels (a CSV) -> ``human_labels`` + ``pins`` (one pin
per distinct product text); bad records -> quarantine."""

from __future__ import annotations

import functools

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType

from jobs.sources.batch import IngestBatch, IngestFileError, Ledger, pin_id_from_text, try_cast
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
from schemas import pins as P
from udfs.csv_records import BAD_LINE, FIELD_SIZE_LIMIT, FILE_PROBLEM, HEADER, PARSED_DDL, RECORD, parse_files

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
        internal=(LINE, RAW, PROBLEM),
    )
    relevance, variance, fold = (try_cast(c, "double") for c in ("median_relevance", "relevance_variance", "fold"))
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
        pin_id_from_text(f"{source}:", title, description).alias(HL.PIN_ID),
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


def read_crowdflower(
    spark: SparkSession, path: str, encoding: str = "utf-8", field_limit: int = FIELD_SIZE_LIMIT
) -> DataFrame:
    """The CSV's records, one row each: the header's columns as strings (by position), plus
    ``_line`` (first line), ``_raw`` (the record's text) and ``_problem`` (why the record cannot
    be a row: malformed quoting, a field longer than ``field_limit`` characters
    (``ingest.csv_field_limit``), a wrong number of fields; else null).

    The file is parsed record by record in a Spark task (:mod:`udfs.csv_records`): an unbalanced
    quote costs its own line, not the rows after it. Reading the header is one small Spark job;
    a file that is not valid ``encoding``, has no header or repeats a column fails here.
    """
    parsed = (
        spark.read.format("binaryFile")
        .load(path)
        .mapInArrow(
            functools.partial(
                parse_files, encoding=encoding, field_limit=field_limit, setting="ingest.csv_field_limit"
            ),
            PARSED_DDL,
        )
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
