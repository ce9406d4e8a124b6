"""COCO ``captions.json`` + ``images/`` -> ``pins`` (image path + perceptual signature) and
``reference_captions`` (the human captions, kept out of pin text)."""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType

from jobs.sources.batch import IngestBatch, IngestFileError, Ledger, check_encoding, try_cast
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
from schemas import pins as P
from schemas import reference_captions as RC
from udfs.image_signature import ERROR, SIGNATURE, image_signature_col

COCO = "coco"


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
    staged = images.select("id", "file_name", try_cast("id", "bigint").alias("_id"), path.alias("_path")).withColumn(
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
    captions = annotations.select("image_id", "caption", try_cast("image_id", "bigint").alias("_image_id"))
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


def read_json_document(spark: SparkSession, path: str, encoding: str = "utf-8") -> DataFrame:
    """A COCO captions document, its ids read as text (each is parsed per row, so one id that
    does not fit a 64-bit integer is one quarantined image, not a failed job)."""
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
