"""A distillation corpus: impressions of a labeled catalog's queries x its products.

Human labels are few (CrowdFlower: ~7k pairs of 261 queries); the teacher can label far more.
The catalog is the queries and products of ``corpus.label_sources`` (empty: every source of
``human_labels``, so a held-out file ingested beside the first is covered too). This job writes,
as ``search_impressions`` of source ``corpus`` on ``corpus.date``, the pairs a search engine
over that catalog would show:

* for each query, the ``lexical_per_query`` products of the catalog with the best BM25 of the
  query against the product text (corpus statistics over the whole catalog, in Spark) — the
  hard candidates a lexical retriever returns;
* ``random_per_query`` more products drawn by a seeded hash — easy negatives;
* every human-judged pair of the source, so the teacher's scores cover the evaluation rows.

Most of these pairs were never judged by a person. ``score_impressions`` for ``corpus.date``
then labels them with the teacher (``labeled_impressions``), and the students train on them
(``train_student`` keeps held-out pairs out). Impressions carry no position and no clicks: they
were never shown to anyone. Re-running replaces the source's slice.

Local:    pinpipe distill_corpus --set corpus.date=2026-11-20
Cluster:  spark-submit --py-files dist/pinpipe.zip --jars ... jobs/distill_corpus.py --env cluster
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from jobs.config import PinpipeConfig, run_job
from runtime.config import require_at_least, setting
from runtime.lake import Lake, sql_literal
from runtime.session import job_description
from schemas import human_labels as HL
from schemas import pin_text_features as PTF
from schemas import search_impressions as SI
from udfs import bm25 as B

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CorpusConfig:
    label_sources: list[str] = setting(
        "human_labels sources whose queries x products make the distillation corpus; empty = all."
    )
    date: dt.date = setting("Date the corpus impressions are written on (YYYY-MM-DD); empty = today (UTC).", dated=True)
    lexical_per_query: int = setting("Products per query by BM25 (a lexical retriever's candidates).")
    random_per_query: int = setting("More products per query drawn at random (seeded): easy negatives.")
    seed: int = setting("Seed of the random draw.")

    def __post_init__(self) -> None:
        require_at_least(self, "corpus", ("lexical_per_query", "random_per_query"), minimum=0)


SOURCE = "corpus"


# --------------------------------------------------------------------------- pure transforms


def candidates(
    labels: DataFrame, pin_texts: DataFrame, *, lexical_per_query: int, random_per_query: int, seed: int
) -> DataFrame:
    """Distinct ``query, pin_id``: lexical top-k, seeded random products, and the judged pairs."""
    queries = labels.select(F.col(HL.QUERY).alias(B.QUERY)).distinct()
    catalog = pin_texts.join(labels.select(F.col(HL.PIN_ID).alias(B.PIN_ID)).distinct(), B.PIN_ID, "left_semi")
    every = queries.crossJoin(catalog.select(B.PIN_ID))
    scored = B.bm25_scores(every, catalog, 1.2, 0.75).filter(F.col(B.BM25) > 0)
    by_score = Window.partitionBy(B.QUERY).orderBy(F.col(B.BM25).desc(), F.col(B.PIN_ID))
    lexical = scored.withColumn("_r", F.row_number().over(by_score)).filter(F.col("_r") <= lexical_per_query)
    by_hash = Window.partitionBy(B.QUERY).orderBy(F.xxhash64(F.lit(seed), F.col(B.QUERY), F.col(B.PIN_ID)))
    random = every.withColumn("_r", F.row_number().over(by_hash)).filter(F.col("_r") <= random_per_query)
    judged = labels.select(F.col(HL.QUERY).alias(B.QUERY), F.col(HL.PIN_ID).alias(B.PIN_ID))
    picked = lexical.select(B.QUERY, B.PIN_ID).unionByName(random.select(B.QUERY, B.PIN_ID)).unionByName(judged)
    return picked.distinct()


def as_impressions(pairs: DataFrame, source: str, day: dt.date) -> DataFrame:
    """``search_impressions`` rows, one per pair: no user, no position, no engagement."""
    at = dt.datetime.combine(day, dt.time(), dt.UTC)
    key = F.sha2(F.concat_ws("\u0001", F.col(B.QUERY), F.col(B.PIN_ID)), 256)
    return pairs.select(
        F.concat(F.lit("corpus-"), F.substring(key, 1, 32)).alias(SI.IMPRESSION_ID),
        F.concat(F.lit("corpus-"), F.substring(F.sha2(F.col(B.QUERY), 256), 1, 32)).alias(SI.REQUEST_ID),
        F.lit(None).cast("string").alias(SI.USER_ID),
        F.col(B.QUERY).alias(SI.QUERY),
        F.col(B.PIN_ID).alias(SI.PIN_ID),
        F.lit(None).cast("int").alias(SI.POSITION),
        F.lit(at).cast("timestamp").alias(SI.EVENT_TIME),
        F.lit(day).alias(SI.DT),
        F.lit(False).alias(SI.CLICKED),
        F.lit(False).alias(SI.SAVED),
        F.lit(source).alias(SI.SOURCE),
    )


# --------------------------------------------------------------------------- read, transform, write


@dataclass(frozen=True)
class CorpusInputs:
    labels: DataFrame  # human labels of the source
    pin_texts: DataFrame  # pin_id, text


@dataclass(frozen=True)
class CorpusOutputs:
    impressions: DataFrame
    source: str


@dataclass
class CorpusReport:
    source: str
    day: dt.date
    impressions: int

    def line(self) -> str:
        return f"distill_corpus: source={self.source} date={self.day.isoformat()} impressions={self.impressions:,}"


def read(spark: SparkSession, cfg: PinpipeConfig) -> CorpusInputs:
    lake, c = Lake.of(cfg.lake), cfg.corpus
    labels = lake.read(spark, "human_labels")
    if c.label_sources:
        labels = labels.filter(F.col(HL.SOURCE).isin(list(c.label_sources)))
    texts = lake.read(spark, "pin_text_features").filter(F.col(PTF.FEATURE_VERSION) == cfg.features.version)
    return CorpusInputs(labels, texts.select(PTF.PIN_ID, F.col(PTF.PIN_TEXT).alias(B.TEXT)))


def transform(
    inputs: CorpusInputs, *, day: dt.date, lexical_per_query: int, random_per_query: int, seed: int
) -> CorpusOutputs:
    pairs = candidates(
        inputs.labels,
        inputs.pin_texts,
        lexical_per_query=lexical_per_query,
        random_per_query=random_per_query,
        seed=seed,
    )
    return CorpusOutputs(as_impressions(pairs, SOURCE, day), SOURCE)


def write(outputs: CorpusOutputs, lake: Lake, *, day: dt.date) -> CorpusReport:
    """Replace the whole ``corpus`` slice of ``search_impressions``."""
    with job_description(outputs.impressions.sparkSession, "distill_corpus: write search_impressions"):
        written = lake.replace_slice(
            outputs.impressions, "search_impressions", f"source = {sql_literal(outputs.source)}"
        )
    return CorpusReport(outputs.source, day, written)


def run(spark: SparkSession, cfg: PinpipeConfig) -> CorpusReport:
    c = cfg.corpus
    outputs = transform(
        read(spark, cfg),
        day=c.date,
        lexical_per_query=c.lexical_per_query,
        random_per_query=c.random_per_query,
        seed=c.seed,
    )
    return write(outputs, Lake.of(cfg.lake), day=c.date)


def main(argv: Sequence[str] | None = None) -> CorpusReport:
    return run_job("pinpipe distill_corpus", __doc__, run, argv)


if __name__ == "__main__":
    main()
