"""Student features per (normalised query, pin): embeddings, cosine, BM25, smoothed engagement.

1. ``read``: ``search_impressions`` of the trailing window, ``human_labels``, the
   ``pin_text_features`` slice and the ``text_embeddings`` cache of this encoder version.
2. ``transform`` (pure, lazy):
   * the pairs: every (normalised query, pin) shown in the window, plus every human-labeled pair;
   * embeddings: each distinct query and pin text is hashed (SHA-256); only hashes not in the
     cache are embedded, by the bi-encoder in a pandas UDF (``udfs.text_encoder``); a row keeps
     the two hashes and the cosine, and readers gather the vectors through ``jobs.embedding_tables.embedding_lookup``;
     the feature rows are a function of the cache (``features(vectors)``): ``write`` gives them
     the cache as it stands after this run's embeddings are in it;
   * BM25 of the query against the pin text, with document frequencies and the mean length
     computed in Spark over every pin of the slice (``bm25_scores``);
   * engagement, smoothed toward a prior worth ``prior_impressions`` impressions: pin CTR and
     save rate (toward the window's rates), query-pin CTR (toward the pin's), and query-pin
     clicks over expected clicks at the positions shown (COEC, toward 1);
   * pairs whose pin has no text go to quarantine.
3. ``write``: new embeddings (one insert-only MERGE: a re-run embeds nothing it has seen), then
   the ``feature_version`` slice of ``student_features`` (cosines from the cache read back, so
   the encoder runs once per new text), and this job's quarantine slice.

Local:    pinpipe student_features [--set student_features.as_of=2026-11-02]
Cluster:  spark-submit --py-files dist/pinpipe.zip --jars ... jobs/student_features.py --env cluster
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import FloatType

from jobs.config import PinpipeConfig, run_job
from models.packaged import minilm_dir
from models.relevance.student_settings import EncoderSettings
from runtime.config import require, require_at_least, setting
from runtime.lake import Lake, sql_literal
from runtime.session import job_description
from runtime.validation import REASON, to_quarantine
from schemas import human_labels as HL
from schemas import pin_text_features as PTF
from schemas import search_impressions as SI
from schemas import student_features as SF
from schemas import table_spec
from schemas import text_embeddings as TE
from udfs.bm25 import bm25_scores
from udfs.text_clean import normalize_query

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudentFeaturesConfig:
    version: str = setting("feature_version written with student_features; a new version is a new slice.")
    text_feature_version: str = setting(
        "pin_text_features slice the pin text comes from; empty = features.version.", same_as="features.version"
    )
    as_of: dt.date = setting(
        "Last day of the engagement window (YYYY-MM-DD); empty = today (UTC), resolved at load.", dated=True
    )
    window_days: int = setting("Trailing days of search_impressions for pairs and engagement (as_of included).")
    impression_sources: list[str] = setting("search_impressions sources to read; empty = all.")
    encoder_path: str = setting(
        "Local bi-encoder folder; empty = the bundled MiniLM's path.", path=True, when_empty=minilm_dir
    )
    encoder_max_length: int = setting("Tokens per text the bi-encoder reads.")
    encoder_batch_size: int = setting("Texts per bi-encoder forward pass.")
    prior_impressions: float = setting("Weight of the smoothing prior, in impressions (Bayesian CTR smoothing).")
    bm25_k1: float = setting("BM25 term-frequency saturation.")
    bm25_b: float = setting("BM25 length normalisation.")

    def __post_init__(self) -> None:
        require(bool(self.version.strip()), "student_features.version", "must not be empty", self.version)
        require_at_least(self, "student_features", ("window_days", "encoder_max_length", "encoder_batch_size"))
        require(
            self.prior_impressions >= 0, "student_features.prior_impressions", "must be >= 0", self.prior_impressions
        )
        require(0.0 <= self.bm25_b <= 1.0, "student_features.bm25_b", "must be in [0, 1]", self.bm25_b)
        require(self.bm25_k1 >= 0, "student_features.bm25_k1", "must be >= 0", self.bm25_k1)

    def encoder(self) -> EncoderSettings:
        return EncoderSettings(self.encoder_path, self.encoder_max_length, self.encoder_batch_size)


SOURCE = "student_features"
TEXT = "text"


# --------------------------------------------------------------------------- pure transforms


def text_hash(col: Column) -> Column:
    return F.sha2(col, 256)


def feature_pairs(impressions: DataFrame, labels: DataFrame) -> DataFrame:
    """Distinct ``query, pin_id``: shown in the window or judged by a person."""
    shown = impressions.select(normalize_query(F.col(SI.QUERY)).alias(SF.QUERY), F.col(SI.PIN_ID).alias(SF.PIN_ID))
    judged = labels.select(normalize_query(F.col(HL.QUERY)).alias(SF.QUERY), F.col(HL.PIN_ID).alias(SF.PIN_ID))
    both = shown.unionByName(judged)
    return both.filter(F.col(SF.PIN_ID).isNotNull() & (F.length(SF.QUERY) > 0)).distinct()


def engagement(pairs: DataFrame, impressions: DataFrame, prior_impressions: float) -> DataFrame:
    """``query, pin_id`` + the smoothed engagement columns of ``student_features``.

    With ``m = prior_impressions``: pin CTR = (clicks + m * window CTR) / (impressions + m), the
    save rate likewise; query-pin CTR = (clicks + m * pin CTR) / (impressions + m); COEC =
    (clicks + m * window CTR) / (expected clicks + m * window CTR), expected clicks being the
    sum over the pair's impressions of the window's CTR at their position (the window's CTR
    where the position is unknown)."""
    m = float(prior_impressions)
    rows = impressions.select(
        normalize_query(F.col(SI.QUERY)).alias(SF.QUERY),
        F.col(SI.PIN_ID).alias(SF.PIN_ID),
        F.col(SI.POSITION).alias("_pos"),
        F.col(SI.CLICKED).cast("double").alias("_c"),
        F.col(SI.SAVED).cast("double").alias("_s"),
    )
    overall = rows.agg(
        F.coalesce(F.avg("_c"), F.lit(0.0)).alias("_ctr0"), F.coalesce(F.avg("_s"), F.lit(0.0)).alias("_save0")
    )
    by_position = rows.filter(F.col("_pos").isNotNull()).groupBy("_pos").agg(F.avg("_c").alias("_pos_ctr"))
    with_expected = (
        rows.join(F.broadcast(by_position), "_pos", "left")
        .crossJoin(F.broadcast(overall))
        .withColumn("_e", F.coalesce(F.col("_pos_ctr"), F.col("_ctr0")))
    )
    per_pin = with_expected.groupBy(SF.PIN_ID).agg(
        F.count(F.lit(1)).alias(SF.PIN_IMPRESSIONS), F.sum("_c").alias("_pin_c"), F.sum("_s").alias("_pin_s")
    )
    per_pair = with_expected.groupBy(SF.QUERY, SF.PIN_ID).agg(
        F.count(F.lit(1)).alias(SF.QUERY_PIN_IMPRESSIONS), F.sum("_c").alias("_qp_c"), F.sum("_e").alias("_qp_e")
    )
    joined = (
        pairs.join(per_pin, SF.PIN_ID, "left")
        .join(per_pair, [SF.QUERY, SF.PIN_ID], "left")
        .crossJoin(F.broadcast(overall))
        .fillna(0, [SF.PIN_IMPRESSIONS, "_pin_c", "_pin_s", SF.QUERY_PIN_IMPRESSIONS, "_qp_c", "_qp_e"])
    )
    pin_ctr = (F.col("_pin_c") + m * F.col("_ctr0")) / (F.col(SF.PIN_IMPRESSIONS) + m)
    prior_clicks = m * F.col("_ctr0")
    coec = F.when(
        F.col("_qp_e") + prior_clicks > 0, (F.col("_qp_c") + prior_clicks) / (F.col("_qp_e") + prior_clicks)
    ).otherwise(F.lit(1.0))
    return joined.select(
        SF.QUERY,
        SF.PIN_ID,
        F.col(SF.PIN_IMPRESSIONS).cast("long").alias(SF.PIN_IMPRESSIONS),
        pin_ctr.alias(SF.PIN_CTR),
        ((F.col("_pin_s") + m * F.col("_save0")) / (F.col(SF.PIN_IMPRESSIONS) + m)).alias(SF.PIN_SAVE_RATE),
        F.col(SF.QUERY_PIN_IMPRESSIONS).cast("long").alias(SF.QUERY_PIN_IMPRESSIONS),
        ((F.col("_qp_c") + m * pin_ctr) / (F.col(SF.QUERY_PIN_IMPRESSIONS) + m)).alias(SF.QUERY_PIN_CTR),
        coec.alias(SF.QUERY_PIN_COEC),
    )


def texts_to_embed(pairs: DataFrame, pin_texts: DataFrame, cached: DataFrame) -> DataFrame:
    """``text_hash, text``: the distinct query and pin texts of ``pairs`` not in ``cached``."""
    queries = pairs.select(F.col(SF.QUERY).alias(TEXT))
    pins = pin_texts.join(pairs.select(SF.PIN_ID).distinct(), SF.PIN_ID, "left_semi").select(TEXT)
    texts = queries.unionByName(pins).distinct().withColumn(TE.TEXT_HASH, text_hash(F.col(TEXT)))
    return texts.join(cached.select(TE.TEXT_HASH), TE.TEXT_HASH, "left_anti").select(TE.TEXT_HASH, TEXT)


def embed_texts(todo: DataFrame, encoder: EncoderSettings, version: str) -> DataFrame:
    """``text_embeddings`` rows for ``todo`` (``text_hash, text``), by the bi-encoder UDF."""
    from pyspark.sql.types import ArrayType, FloatType, StringType, StructField, StructType

    from udfs.text_encoder import embed_partitions

    schema = StructType(
        [StructField(TE.TEXT_HASH, StringType()), StructField(TE.EMBEDDING, ArrayType(FloatType(), False))]
    )
    # Similar lengths in one batch pad little; the hash keeps the order deterministic.
    ordered = todo.sortWithinPartitions(F.length(TEXT), TE.TEXT_HASH)
    embedded = ordered.mapInPandas(embed_partitions(encoder, TE.TEXT_HASH, TEXT, TE.EMBEDDING), schema)
    return embedded.select(
        TE.TEXT_HASH,
        F.lit(version).alias(TE.ENCODER_VERSION),
        TE.EMBEDDING,
        F.current_timestamp().alias(TE.EMBEDDED_AT),
    )


# --------------------------------------------------------------------------- read, transform, write


@dataclass(frozen=True)
class Smoothing:
    """Engagement smoothing: the prior's weight in impressions."""

    prior_impressions: float


@dataclass(frozen=True)
class Bm25Params:
    k1: float
    b: float


@dataclass(frozen=True)
class StudentFeatureInputs:
    impressions: DataFrame  # the trailing window
    labels: DataFrame
    pin_texts: DataFrame  # pin_text_features of one feature_version
    cached: DataFrame  # text_embeddings of this encoder version
    encoder: EncoderSettings
    encoder_version: str


@dataclass(frozen=True)
class StudentFeatureOutputs:
    new_embeddings: DataFrame
    features: Callable[[DataFrame], DataFrame]  # text_embeddings rows of the encoder version -> rows
    quarantine: DataFrame
    feature_version: str
    encoder_version: str


@dataclass
class StudentFeaturesReport:
    encoder_version: str
    embedded: int
    written: int
    quarantined: int

    def line(self) -> str:
        return (
            f"student_features: encoder={self.encoder_version} embedded_new_texts={self.embedded:,} "
            f"pairs={self.written:,} quarantined={self.quarantined:,}"
        )


def window_of(as_of: dt.date, days: int) -> tuple[dt.date, dt.date]:
    """The trailing window ``[as_of - days + 1, as_of]`` (inclusive)."""
    return as_of - dt.timedelta(days=days - 1), as_of


def read(spark: SparkSession, cfg: PinpipeConfig) -> StudentFeatureInputs:
    lake, sf = Lake.of(cfg.lake), cfg.student_features
    start, end = window_of(sf.as_of, sf.window_days)
    impressions = lake.read(spark, "search_impressions").filter(F.col(SI.DT).between(F.lit(start), F.lit(end)))
    if sf.impression_sources:
        impressions = impressions.filter(F.col(SI.SOURCE).isin(list(sf.impression_sources)))
    encoder = sf.encoder()
    from models.relevance.text_encoder import encoder_version  # torch: only when the job runs

    version = encoder_version(encoder)  # hashes the weights: once per run
    texts = lake.read(spark, "pin_text_features").filter(F.col(PTF.FEATURE_VERSION) == sf.text_feature_version)
    cached = lake.read_or_empty(spark, "text_embeddings").filter(F.col(TE.ENCODER_VERSION) == version)
    return StudentFeatureInputs(
        impressions=impressions,
        labels=lake.read_or_empty(spark, "human_labels"),
        pin_texts=texts.select(PTF.PIN_ID, F.col(PTF.PIN_TEXT).alias(TEXT)),
        cached=cached,
        encoder=encoder,
        encoder_version=version,
    )


def transform(
    inputs: StudentFeatureInputs, *, as_of: dt.date, feature_version: str, smoothing: Smoothing, bm25: Bm25Params
) -> StudentFeatureOutputs:
    pairs = feature_pairs(inputs.impressions, inputs.labels)
    new = embed_texts(texts_to_embed(pairs, inputs.pin_texts, inputs.cached), inputs.encoder, inputs.encoder_version)
    with_text = pairs.join(inputs.pin_texts, SF.PIN_ID, "left")
    quarantine = to_quarantine(
        with_text.filter(F.col(TEXT).isNull()).select(
            SF.QUERY, SF.PIN_ID, F.lit("pin has no text features").alias(REASON)
        ),
        SOURCE,
        "student_features",
    )
    known = with_text.filter(F.col(TEXT).isNotNull())
    hashed = known.withColumns(
        {SF.QUERY_TEXT_HASH: text_hash(F.col(SF.QUERY)), SF.PIN_TEXT_HASH: text_hash(F.col(TEXT))}
    ).select(SF.QUERY, SF.PIN_ID, SF.QUERY_TEXT_HASH, SF.PIN_TEXT_HASH)
    rest = (
        bm25_scores(known.select(SF.QUERY, SF.PIN_ID), inputs.pin_texts, bm25.k1, bm25.b)
        .join(
            engagement(known.select(SF.QUERY, SF.PIN_ID), inputs.impressions, smoothing.prior_impressions),
            [SF.QUERY, SF.PIN_ID],
        )
        .withColumns(
            {
                SF.ENCODER_VERSION: F.lit(inputs.encoder_version),
                SF.AS_OF: F.lit(as_of),
                SF.FEATURE_VERSION: F.lit(feature_version),
            }
        )
    )

    def features(vectors: DataFrame) -> DataFrame:
        return (
            with_cosine(hashed, vectors)
            .join(rest, [SF.QUERY, SF.PIN_ID])
            .withColumn(SF.DENSE_VECTOR, dense_vector())
            .select(*table_spec("student_features").schema.fieldNames())
        )

    return StudentFeatureOutputs(new, features, quarantine, feature_version, inputs.encoder_version)


def dense_vector() -> Column:
    """The :data:`SF.DENSE` columns of a row in one ``array<float>``, in that order."""
    return F.array(*(F.col(name).cast(FloatType()) for name in SF.DENSE))


def with_cosine(hashed: DataFrame, vectors: DataFrame) -> DataFrame:
    """``hashed`` (rows with both text hashes) + the cosine of the two texts' embeddings, from
    ``vectors`` (``text_hash, embedding``); rows whose texts have no vector are dropped."""
    query_vec = vectors.select(F.col(TE.TEXT_HASH).alias(SF.QUERY_TEXT_HASH), F.col(TE.EMBEDDING).alias("_qv"))
    pin_vec = vectors.select(F.col(TE.TEXT_HASH).alias(SF.PIN_TEXT_HASH), F.col(TE.EMBEDDING).alias("_pv"))
    cosine = F.aggregate(F.zip_with("_qv", "_pv", lambda x, y: x * y), F.lit(0.0).cast("double"), lambda a, v: a + v)
    return (
        hashed.join(query_vec, SF.QUERY_TEXT_HASH)
        .join(pin_vec, SF.PIN_TEXT_HASH)
        .select(*hashed.columns, cosine.alias(SF.COSINE))
    )


def write(outputs: StudentFeatureOutputs, lake: Lake) -> StudentFeaturesReport:
    """New embeddings first (one MERGE), then the ``feature_version`` slice — its cosines read
    from ``text_embeddings`` as it stands after the MERGE, so no text is embedded twice — and
    the quarantine slice."""
    spark = outputs.quarantine.sparkSession
    new = outputs.new_embeddings.persist()
    try:
        with job_description(spark, f"student_features: embed new texts ({outputs.encoder_version})"):
            embedded = lake.insert_new(new, "text_embeddings", (TE.TEXT_HASH, TE.ENCODER_VERSION))
    finally:
        new.unpersist()
    vectors = lake.read(spark, "text_embeddings").filter(F.col(TE.ENCODER_VERSION) == outputs.encoder_version)
    with job_description(spark, "student_features: write student_features"):
        where = f"{SF.FEATURE_VERSION} = {sql_literal(outputs.feature_version)}"
        written = lake.replace_slice(outputs.features(vectors), "student_features", where)
    quarantined = lake.replace_slice(outputs.quarantine, "quarantine", f"source = {sql_literal(SOURCE)}")
    return StudentFeaturesReport(outputs.encoder_version, embedded, written, quarantined)


def run(spark: SparkSession, cfg: PinpipeConfig) -> StudentFeaturesReport:
    sf = cfg.student_features
    outputs = transform(
        read(spark, cfg),
        as_of=sf.as_of,
        feature_version=sf.version,
        smoothing=Smoothing(sf.prior_impressions),
        bm25=Bm25Params(sf.bm25_k1, sf.bm25_b),
    )
    return write(outputs, Lake.of(cfg.lake))


def main(argv: Sequence[str] | None = None) -> StudentFeaturesReport:
    return run_job("pinpipe student_features", __doc__, run, argv)


if __name__ == "__main__":
    main()
