"""Pin text features: captions for new images, then ``pin_text_features`` for every pin.

1. Caption: the distinct image signatures of ``pins`` that ``pin_captions`` has no caption for
   under this captioner version are captioned by BLIP in a pandas UDF and inserted with one
   MERGE — re-running over an unchanged catalog captions nothing. Skipped when
   ``captioner.model_path`` is empty.
2. Assemble, per pin: title, description, caption, the top-k titles of boards it was saved to
   (by saves), the top-k queries that engaged with it over a trailing window of impressions (by
   clicks + saves), link title/description — cleaned (HTML, mojibake, NFKC, whitespace) — and
   ``pin_text``: the non-empty fields with tags, each cut to its character budget. Pins with no
   text at all go to ``quarantine``. The ``feature_version`` slice is replaced as a whole.

Local:    pinpipe pin_features [--set captioner.model_path=/models/blip-base]
Cluster:  spark-submit --py-files dist/pinpipe.zip --jars ... jobs/pin_features.py --env cluster-gpu
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf
from pyspark.sql.types import StringType

from jobs.config import PinpipeConfig, run_job
from runtime.config import require, require_at_least, setting
from runtime.lake import Lake, sql_literal
from runtime.session import job_description
from runtime.validation import REASON, split_rejected, to_quarantine
from schemas import boards as B
from schemas import pin_captions as PC
from schemas import pin_text_features as PTF
from schemas import pins as P
from schemas import search_impressions as SI
from schemas import user_engagements as UE
from udfs.captioner_settings import CaptionerSettings
from udfs.text_clean import clean_text_col

log = logging.getLogger(__name__)

FEATURE_FIELDS = ("title", "description", "caption", "boards", "queries", "link")


@dataclass(frozen=True)
class FeaturesConfig:
    version: str = setting("feature_version written with pin_text_features; a new version is a new slice.")
    as_of: dt.date = setting(
        "Date the features describe (YYYY-MM-DD); empty = today (UTC), resolved at load.", dated=True
    )
    top_k_boards: int = setting("Board titles kept per pin, by number of saves.")
    top_k_queries: int = setting("Engaged queries kept per pin, by clicks + saves.")
    query_window_days: int = setting("Trailing window of impressions for engaged queries.")
    caption_arrow_batch_rows: int = setting("Rows per Arrow batch sent to a captioning Python worker.")
    budgets: dict[str, int] = setting("Character budget of each field in pin_text.", default_factory=dict)

    def __post_init__(self) -> None:
        require(bool(self.version.strip()), "features.version", "must not be empty", self.version)
        require_at_least(
            self, "features", ("top_k_boards", "top_k_queries", "query_window_days", "caption_arrow_batch_rows")
        )
        require(
            set(self.budgets) == set(FEATURE_FIELDS),
            "features.budgets",
            f"must give a budget for each of {list(FEATURE_FIELDS)}",
            self.budgets,
        )
        for k, v in self.budgets.items():
            require(v >= 1, f"features.budgets.{k}", "must be >= 1", v)


SOURCE = "pin_features"


# --------------------------------------------------------------------------- text assembly


def truncate(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, at a word boundary when one is near the end."""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    space = cut.rfind(" ")
    return (cut[:space] if space >= limit * 0.6 else cut).rstrip()


def assemble_pin_text(fields: dict[str, str | None], budgets: dict[str, int]) -> str | None:
    """``[title] ... [description] ... [caption] ...``: non-empty fields in ``FEATURE_FIELDS``
    order, each within its budget; None when every field is empty."""
    parts = [f"[{name}] {truncate(fields[name], budgets[name])}" for name in FEATURE_FIELDS if fields.get(name)]
    return " ".join(parts) or None


def _joined(values) -> str | None:
    if values is None:
        return None
    items = [v for v in values if v]
    return " | ".join(items) or None


def pin_text_col(budgets: dict[str, int], cols: dict[str, Column]) -> Column:
    """The assembled text of the columns ``title, description, caption, board_titles,
    engaged_queries, link_title, link_description`` as one pandas UDF."""

    @pandas_udf(StringType())
    def assemble(
        title: pd.Series,
        description: pd.Series,
        caption: pd.Series,
        boards: pd.Series,
        queries: pd.Series,
        link_title: pd.Series,
        link_description: pd.Series,
    ) -> pd.Series:
        out = []
        for row in zip(title, description, caption, boards, queries, link_title, link_description, strict=False):
            t, d, c, b, q, lt, ld = (None if (v is None or (isinstance(v, float) and pd.isna(v))) else v for v in row)
            link = " - ".join(x for x in (lt, ld) if x) or None
            out.append(
                assemble_pin_text(
                    {
                        "title": t,
                        "description": d,
                        "caption": c,
                        "boards": _joined(b),
                        "queries": _joined(q),
                        "link": link,
                    },
                    budgets,
                )
            )
        return pd.Series(out, index=title.index, dtype=object)

    return assemble(
        *[
            cols[c]
            for c in (
                "title",
                "description",
                "caption",
                "board_titles",
                "engaged_queries",
                "link_title",
                "link_description",
            )
        ]
    )


# --------------------------------------------------------------------------- pure transforms


def _top_k(pairs: DataFrame, key: str, value: str, weight: str, k: int, out: str) -> DataFrame:
    """Per ``key``, the ``k`` values with the highest ``weight`` (ties by value), in order."""
    ranked = pairs.groupBy(key).agg(
        F.sort_array(F.collect_list(F.struct((-F.col(weight)).alias("w"), F.col(value).alias("v")))).alias("_r")
    )
    return ranked.select(key, F.slice(F.transform("_r", lambda x: x["v"]), 1, k).alias(out))


def board_titles(engagements: DataFrame, boards: DataFrame, k: int) -> DataFrame:
    """``pin_id, board_titles``: titles of the boards a pin was saved to, most saves first."""
    saves = engagements.filter((F.col(UE.EVENT_TYPE) == UE.EVENT_SAVE) & F.col(UE.BOARD_ID).isNotNull())
    titled = saves.join(boards.select(B.BOARD_ID, clean_text_col(F.col(B.TITLE)).alias("_title")), UE.BOARD_ID)
    counts = titled.filter(F.col("_title").isNotNull()).groupBy(UE.PIN_ID, "_title").agg(F.count("*").alias("_n"))
    return _top_k(counts, UE.PIN_ID, "_title", "_n", k, PTF.BOARD_TITLES)


def engaged_queries(impressions: DataFrame, as_of: dt.date, window_days: int, k: int) -> DataFrame:
    """``pin_id, engaged_queries``: queries with most clicks + saves in ``[as_of - window, as_of)``."""
    start = as_of - dt.timedelta(days=window_days)
    recent = impressions.filter(
        (F.col(SI.DT) >= F.lit(start)) & (F.col(SI.DT) < F.lit(as_of)) & (F.col(SI.CLICKED) | F.col(SI.SAVED))
    )
    query = clean_text_col(F.lower(F.col(SI.QUERY)))
    scored = recent.select(
        SI.PIN_ID, query.alias("_q"), (F.col(SI.CLICKED).cast("int") + F.col(SI.SAVED).cast("int")).alias("_e")
    )
    counts = scored.filter(F.col("_q").isNotNull()).groupBy(SI.PIN_ID, "_q").agg(F.sum("_e").alias("_n"))
    return _top_k(counts, SI.PIN_ID, "_q", "_n", k, PTF.ENGAGED_QUERIES)


@dataclass(frozen=True)
class FeatureInputs:
    pins: DataFrame
    captions: DataFrame | None  # pin_captions rows of the captioner version, or None
    boards: DataFrame
    engagements: DataFrame
    impressions: DataFrame
    captioner_version: str | None  # hash of the captioner's files and settings; None: no captioner


@dataclass(frozen=True)
class FeatureOutputs:
    new_captions: DataFrame | None  # pin_captions rows for images not captioned yet (None: no captioner)
    features: DataFrame  # pin_text_features rows of one feature_version
    quarantine: DataFrame
    feature_version: str
    captioner_version: str | None


def transform(
    inputs: FeatureInputs,
    *,
    captioner: CaptionerSettings | None,
    as_of: dt.date,
    budgets: dict[str, int],
    top_k_boards: int,
    top_k_queries: int,
    query_window_days: int,
    feature_version: str,
) -> FeatureOutputs:
    """Captions for the images not captioned under ``inputs.captioner_version`` (a BLIP UDF,
    lazy), and the text features of every pin with the known and the new captions; pins with no
    text at all go to quarantine."""
    version = inputs.captioner_version
    new_captions = None
    captions = inputs.captions
    if captioner is not None and version is not None:
        new_captions = caption_images(images_to_caption(inputs.pins, inputs.captions), captioner, version)
        mine = new_captions.select(*PC.PIN_CAPTIONS_V1.fieldNames())
        captions = mine if captions is None else captions.unionByName(mine)
    pins = inputs.pins.select(
        P.PIN_ID,
        P.IMAGE_SIGNATURE,
        *[clean_text_col(F.col(c)).alias(c) for c in (P.TITLE, P.DESCRIPTION, P.LINK_TITLE, P.LINK_DESCRIPTION)],
    )
    if captions is not None:
        captions = captions.select(
            F.col(PC.IMAGE_SIGNATURE).alias(P.IMAGE_SIGNATURE), clean_text_col(F.col(PC.CAPTION)).alias(PTF.CAPTION)
        )
        pins = pins.join(captions, P.IMAGE_SIGNATURE, "left")
    else:
        pins = pins.withColumn(PTF.CAPTION, F.lit(None).cast("string"))
    empty = F.array().cast("array<string>")
    joined = (
        pins.join(board_titles(inputs.engagements, inputs.boards, top_k_boards), P.PIN_ID, "left")
        .join(engaged_queries(inputs.impressions, as_of, query_window_days, top_k_queries), P.PIN_ID, "left")
        .withColumn(PTF.BOARD_TITLES, F.coalesce(PTF.BOARD_TITLES, empty))
        .withColumn(PTF.ENGAGED_QUERIES, F.coalesce(PTF.ENGAGED_QUERIES, empty))
    )
    cols = {c: F.col(c) for c in joined.columns}
    texts = joined.withColumn(PTF.PIN_TEXT, pin_text_col(budgets, cols))
    texts = texts.withColumn(REASON, F.when(F.col(PTF.PIN_TEXT).isNull(), F.lit("no text for pin")))
    valid, rejected = split_rejected(texts)
    features = valid.select(
        PTF.PIN_ID,
        PTF.TITLE,
        PTF.DESCRIPTION,
        PTF.CAPTION,
        PTF.BOARD_TITLES,
        PTF.ENGAGED_QUERIES,
        PTF.LINK_TITLE,
        PTF.LINK_DESCRIPTION,
        PTF.PIN_TEXT,
        F.lit(version).cast("string").alias(PTF.CAPTIONER_VERSION),
        F.lit(as_of).alias(PTF.AS_OF),
        F.lit(feature_version).alias(PTF.FEATURE_VERSION),
    )
    quarantine = to_quarantine(rejected.select(P.PIN_ID, P.IMAGE_SIGNATURE, REASON), SOURCE, "pin_text_features")
    return FeatureOutputs(new_captions, features, quarantine, feature_version, version)


def images_to_caption(pins: DataFrame, captioned: DataFrame | None) -> DataFrame:
    """``image_signature, image_path``: one path per signature not captioned yet."""
    images = (
        pins.filter(F.col(P.IMAGE_SIGNATURE).isNotNull() & F.col(P.IMAGE_PATH).isNotNull())
        .groupBy(P.IMAGE_SIGNATURE)
        .agg(F.min(P.IMAGE_PATH).alias(P.IMAGE_PATH))
    )
    if captioned is None:
        return images
    return images.join(captioned.select(PC.IMAGE_SIGNATURE), P.IMAGE_SIGNATURE, "left_anti")


def caption_images(todo: DataFrame, cfg: CaptionerSettings, version: str) -> DataFrame:
    """``pin_captions`` rows for ``todo`` (columns ``image_signature, image_path``)."""
    from udfs.captioner import CAPTION, ERROR, caption_col  # torch: only when there is a captioner

    result = caption_col(F.col(P.IMAGE_PATH), cfg)
    return todo.select(P.IMAGE_SIGNATURE, P.IMAGE_PATH, result.alias("_r")).select(
        F.col(P.IMAGE_SIGNATURE).alias(PC.IMAGE_SIGNATURE),
        F.lit(version).alias(PC.CAPTIONER_VERSION),
        F.col(f"_r.{CAPTION}").alias(PC.CAPTION),
        F.col(f"_r.{ERROR}").alias(PC.ERROR),
        F.col(P.IMAGE_PATH).alias(PC.IMAGE_PATH),
        F.current_timestamp().alias(PC.CAPTIONED_AT),
    )


# --------------------------------------------------------------------------- read, write, run


@dataclass
class FeaturesReport:
    captioner_version: str | None
    captioned: int
    caption_errors: int
    features: int
    quarantined: int

    def line(self) -> str:
        return (
            f"pin_features: captioner={self.captioner_version or 'none'} captioned={self.captioned:,} "
            f"caption_errors={self.caption_errors:,} pin_text_features={self.features:,} "
            f"quarantined={self.quarantined:,}"
        )


def read(spark: SparkSession, cfg: PinpipeConfig) -> FeatureInputs:
    lake = Lake.of(cfg.lake)
    version = captions = None
    if cfg.captioner.model_path:
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(cfg.features.caption_arrow_batch_rows))
        from udfs.captioner import captioner_version

        version = captioner_version(cfg.captioner)  # hashes the weights: once per run
        if lake.exists(spark, "pin_captions"):
            captions = lake.read(spark, "pin_captions").filter(F.col(PC.CAPTIONER_VERSION) == version)
    else:
        log.info("captioner.model_path is empty: no captions")
    return FeatureInputs(
        pins=lake.read(spark, "pins"),
        captions=captions,
        boards=lake.read_or_empty(spark, "boards"),
        engagements=lake.read_or_empty(spark, "user_engagements"),
        impressions=lake.read_or_empty(spark, "search_impressions"),
        captioner_version=version,
    )


def write(outputs: FeatureOutputs, lake: Lake) -> FeaturesReport:
    """New captions first (one MERGE; captioned once, whatever later reads), then the
    ``feature_version`` slice of ``pin_text_features`` and this job's quarantine slice."""
    spark = outputs.features.sparkSession
    captioned = errors = 0
    new = outputs.new_captions.persist() if outputs.new_captions is not None else None
    try:
        if new is not None:
            with job_description(spark, f"pin_features: caption new images ({outputs.captioner_version})"):
                errors = new.filter(F.col(PC.ERROR).isNotNull()).count()
                captioned = lake.insert_new(new, "pin_captions", (PC.IMAGE_SIGNATURE, PC.CAPTIONER_VERSION))
        with job_description(spark, "pin_features: write pin_text_features"):
            written = lake.replace_slice(
                outputs.features, "pin_text_features", f"{PTF.FEATURE_VERSION} = {sql_literal(outputs.feature_version)}"
            )
    finally:
        if new is not None:
            new.unpersist()
    quarantined = lake.replace_slice(outputs.quarantine, "quarantine", f"source = {sql_literal(SOURCE)}")
    return FeaturesReport(outputs.captioner_version, captioned, errors, written, quarantined)


def run(spark: SparkSession, cfg: PinpipeConfig) -> FeaturesReport:
    f, captioner = cfg.features, cfg.captioner if cfg.captioner.model_path else None
    outputs = transform(
        read(spark, cfg),
        captioner=captioner,
        as_of=f.as_of,
        budgets=f.budgets,
        top_k_boards=f.top_k_boards,
        top_k_queries=f.top_k_queries,
        query_window_days=f.query_window_days,
        feature_version=f.version,
    )
    return write(outputs, Lake.of(cfg.lake))


def main(argv: Sequence[str] | None = None) -> FeaturesReport:
    return run_job("pinpipe pin_features", __doc__, run, argv)


if __name__ == "__main__":
    main()
