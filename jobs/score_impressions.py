"""Label search impressions with the teacher: ``teacher_scores`` and ``labeled_impressions``.

For the impressions of ``scorer.start_date..end_date``:

1. Normalise queries (trim, lower-case, single spaces) and collapse the impressions to unique
   (query, pin) pairs — popular queries and pins repeat, so this is the first big saving.
2. Quarantine pairs that cannot be scored, with the reason: empty query, missing or unknown
   pin id, pin without text, text longer than ``scorer.max_text_chars``. The job goes on.
3. Drop the pairs this teacher version has already scored (any earlier run, any date).
4. Score the rest with the published teacher (``udfs.teacher_scorer``, quantized for the
   device) in ``scorer.chunks`` hash chunks. Each chunk is one insert-only MERGE into
   ``teacher_scores``: a killed run leaves whole chunks committed and none half-written, and the
   re-run scores exactly the missing chunks, with the same batches, so the table ends exactly as
   an uninterrupted run would leave it.
5. Join the scores back onto the impressions and replace the (dates, teacher_version) slice of
   ``labeled_impressions``, the students' training table.

Local:    pinpipe score_impressions --set scorer.start_date=2026-11-01 --set scorer.end_date=2026-11-02
Cluster:  spark-submit --py-files dist/pinpipe.zip --jars ... jobs/score_impressions.py --env cluster-gpu ...
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Sequence

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.config import PinpipeConfig, ScorerConfig
from jobs.job_args import job_config
from jobs.lake import Lake, sql_literal
from jobs.session import spark_session
from jobs.validation import REASON, first_failure, is_blank, split_rejected, to_quarantine
from schemas import labeled_impressions as LI
from schemas import pin_text_features as PTF
from schemas import pins as P
from schemas import quarantine as Q
from schemas import search_impressions as SI
from schemas import teacher_scores as TS

log = logging.getLogger(__name__)

SOURCE = "score_impressions"
TEXT = "text"
IMPRESSIONS = "impressions"
CHUNK = "chunk"


# --------------------------------------------------------------------------- pure transforms


def normalize_query(col: Column) -> Column:
    return F.lower(F.trim(F.regexp_replace(col, r"\s+", " ")))


def in_dates(col: str, cfg: ScorerConfig) -> Column:
    return F.col(col).between(F.lit(cfg.first_date), F.lit(cfg.last_date))


def candidate_pairs(impressions: DataFrame, pins: DataFrame, features: DataFrame,
                    max_text_chars: int) -> tuple[DataFrame, DataFrame]:
    """(unique pairs ``query, pin_id, text, impressions`` to score, quarantine rows)."""
    pairs = (impressions.groupBy(normalize_query(F.col(SI.QUERY)).alias(TS.QUERY), F.col(SI.PIN_ID).alias(TS.PIN_ID))
             .agg(F.count(F.lit(1)).alias(IMPRESSIONS)))
    known = pins.select(F.col(P.PIN_ID).alias("_known")).distinct()
    text = features.select(F.col(PTF.PIN_ID).alias("_pin"), F.col(PTF.PIN_TEXT).alias(TEXT))
    joined = (pairs.join(known, pairs[TS.PIN_ID] == known["_known"], "left")
              .join(text, pairs[TS.PIN_ID] == text["_pin"], "left"))
    checked = joined.withColumn(REASON, first_failure([
        (is_blank(F.col(TS.QUERY)), "empty query"),
        (F.col(TS.PIN_ID).isNull(), "missing pin_id"),
        (F.col("_known").isNull(), "unknown pin_id"),
        (is_blank(F.col(TEXT)), "pin has no text"),
        (F.length(TEXT) > max_text_chars, F.concat(F.lit(f"pin text longer than {max_text_chars} chars: "),
                                                   F.length(TEXT).cast("string"))),
    ])).drop("_known", "_pin")
    valid, rejected = split_rejected(checked)
    raw = F.to_json(F.struct(F.col(TS.QUERY), F.col(TS.PIN_ID)))  # the pair, not its count: one record per pair
    return valid, to_quarantine(rejected, SOURCE, "teacher_scores", raw)


def unscored(pairs: DataFrame, scores: DataFrame, teacher_version: str) -> DataFrame:
    done = scores.filter(F.col(TS.TEACHER_VERSION) == teacher_version).select(TS.QUERY, TS.PIN_ID)
    return pairs.join(done, [TS.QUERY, TS.PIN_ID], "left_anti")


def chunk_of(chunks: int) -> Column:
    """A pair's commit unit: a hash of the pair, so it does not depend on what else is scored."""
    return F.pmod(F.xxhash64(F.col(TS.QUERY), F.col(TS.PIN_ID)), F.lit(chunks)).cast("int")


def labeled(impressions: DataFrame, scores: DataFrame, teacher_version: str) -> DataFrame:
    """Impressions with their pair's teacher label (inner join: unscored pairs are left out)."""
    mine = scores.filter(F.col(TS.TEACHER_VERSION) == teacher_version).select(
        F.col(TS.QUERY).alias("_q"), F.col(TS.PIN_ID).alias("_pin"), TS.PROBABILITIES,
        TS.EXPECTED_RELEVANCE, TS.LEVEL, TS.TEACHER_VERSION)
    keyed = impressions.withColumn(LI.QUERY_NORM, normalize_query(F.col(SI.QUERY)))
    joined = keyed.join(mine, (keyed[LI.QUERY_NORM] == mine["_q"]) & (keyed[SI.PIN_ID] == mine["_pin"]))
    return joined.select(*LI.LABELED_IMPRESSIONS_V1.fieldNames())


# --------------------------------------------------------------------------- run


@dataclass
class ScoreReport:
    teacher_version: str
    precision: str
    impressions: int
    unique_pairs: int
    already_scored: int
    scored: int
    quarantined_pairs: int
    labeled_impressions: int
    scoring_seconds: float

    @property
    def pairs_per_s(self) -> float:
        return self.scored / self.scoring_seconds if self.scoring_seconds else 0.0

    def line(self) -> str:
        ratio = self.impressions / self.unique_pairs if self.unique_pairs else 0.0
        return (f"score_impressions: teacher={self.teacher_version} precision={self.precision} "
                f"impressions={self.impressions:,} unique_pairs={self.unique_pairs:,} (dedup {ratio:.1f}x) "
                f"already_scored={self.already_scored:,} scored={self.scored:,} ({self.pairs_per_s:.1f} pairs/s) "
                f"quarantined_pairs={self.quarantined_pairs:,} labeled_impressions={self.labeled_impressions:,}")


def resolve_teacher(lake: Lake, cfg: ScorerConfig) -> tuple[str, str]:
    """(artifact folder, ``family/version``) of the teacher to score with, checksums verified."""
    from models.registry import Registry, RegistryError

    registry = Registry(lake.artifacts_path())
    version = cfg.teacher_version or registry.current(cfg.teacher_family)
    if not version:
        raise RegistryError(f"no teacher to score with: {cfg.teacher_family!r} has no promoted version "
                            f"(run train_teacher, or set scorer.teacher_version)")
    registry.verify(cfg.teacher_family, version)
    return str(registry.path(cfg.teacher_family, version)), f"{cfg.teacher_family}/{version}"


def score_chunk(rows: DataFrame, folder: str, cfg: ScorerConfig, teacher_version: str, partitions: int) -> DataFrame:
    """``teacher_scores`` rows of one chunk; the same chunk always makes the same batches."""
    from models.scoring import ScoringSettings
    from udfs.teacher_scorer import SCORED_SCHEMA, score_partitions

    settings = ScoringSettings(cfg.precision, cfg.batch_size, cfg.max_batch_tokens, cfg.max_length, cfg.query_tokens)
    ordered = (rows.repartition(partitions, TS.QUERY, TS.PIN_ID)
               .sortWithinPartitions(F.length(TEXT) + F.length(TS.QUERY), TS.QUERY, TS.PIN_ID))
    scored = ordered.select(TS.QUERY, TS.PIN_ID, TEXT).mapInPandas(score_partitions(folder, settings, TEXT), SCORED_SCHEMA)
    return scored.withColumns({TS.TEACHER_VERSION: F.lit(teacher_version), TS.SCORED_AT: F.current_timestamp()}
                              ).select(*TS.TEACHER_SCORES_V1.fieldNames())


def commit_chunk(lake: Lake, scored: DataFrame) -> int:
    """Insert one chunk's scores in one Delta commit (scored once, whatever MERGE re-reads)."""
    scored = scored.persist()
    try:
        scored.count()
        return lake.insert_new(scored, "teacher_scores", (TS.QUERY, TS.PIN_ID, TS.TEACHER_VERSION))
    finally:
        scored.unpersist()


def run(spark: SparkSession, cfg: PinpipeConfig) -> ScoreReport:
    sc = cfg.scorer
    lake = Lake.at(cfg.lake.root)
    folder, teacher_version = resolve_teacher(lake, sc)
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(sc.arrow_batch_rows))
    spark.conf.set("spark.sql.execution.arrow.maxBytesPerBatch", str(sc.arrow_batch_bytes))
    partitions = sc.partitions or spark.sparkContext.defaultParallelism

    impressions = lake.read(spark, "search_impressions").filter(in_dates(SI.DT, sc))
    feature_version = sc.feature_version or cfg.features.version
    features = lake.read_or_empty(spark, "pin_text_features").filter(F.col(PTF.FEATURE_VERSION) == feature_version)
    spark.sparkContext.setJobDescription("score_impressions: unique pairs")
    pairs, quarantine = candidate_pairs(impressions, lake.read_or_empty(spark, "pins"), features, sc.max_text_chars)
    scores = lake.read_or_empty(spark, "teacher_scores")
    todo = unscored(pairs, scores, teacher_version).withColumn(CHUNK, chunk_of(sc.chunks)).persist()
    try:
        n_impressions = impressions.count()
        n_pairs = pairs.count()
        chunk_sizes = {r[CHUNK]: r["count"] for r in todo.groupBy(CHUNK).count().collect()}
        quarantined = lake.insert_new(quarantine, "quarantine", (Q.SOURCE, Q.REASON, Q.RAW))
        n_quarantined = quarantine.count()
        total_todo = sum(chunk_sizes.values())
        log.info("score_impressions: %d impressions, %d scorable unique pairs, %d to score in %d chunks with %s; "
                 "%d pairs quarantined (%d newly)", n_impressions, n_pairs, total_todo, len(chunk_sizes),
                 teacher_version, n_quarantined, quarantined)
        started, done = time.perf_counter(), 0
        for i, chunk in enumerate(sorted(chunk_sizes), 1):
            spark.sparkContext.setJobDescription(f"score_impressions: chunk {i}/{len(chunk_sizes)}")
            rows = todo.filter(F.col(CHUNK) == chunk).drop(CHUNK, IMPRESSIONS)
            commit_chunk(lake, score_chunk(rows, folder, sc, teacher_version, partitions))
            done += chunk_sizes[chunk]
            elapsed = time.perf_counter() - started
            rate = done / elapsed if elapsed else 0.0
            log.info("score_impressions: chunk %d/%d committed, %d/%d pairs, %.1f pairs/s, ETA %.0f s", i,
                     len(chunk_sizes), done, total_todo, rate, (total_todo - done) / rate if rate else 0.0)
        seconds = time.perf_counter() - started
    finally:
        todo.unpersist()

    spark.sparkContext.setJobDescription("score_impressions: labeled_impressions")
    where = (f"{SI.DT} >= DATE'{sc.first_date}' AND {SI.DT} <= DATE'{sc.last_date}' "
             f"AND {TS.TEACHER_VERSION} = {sql_literal(teacher_version)}")
    written = lake.replace_slice(labeled(impressions, lake.read_or_empty(spark, "teacher_scores"), teacher_version),
                                 "labeled_impressions", where)
    spark.sparkContext.setJobDescription(None)
    mine = lake.read_or_empty(spark, "teacher_scores").filter(F.col(TS.TEACHER_VERSION) == teacher_version)
    precision = ",".join(sorted(r[0] for r in mine.select(TS.PRECISION).distinct().collect())) or "none"
    report = ScoreReport(teacher_version, precision, n_impressions, n_pairs + n_quarantined,
                         n_pairs - total_todo, total_todo, n_quarantined, written, seconds)
    log.info(report.line())
    return report


def main(argv: Sequence[str] | None = None) -> ScoreReport:
    cfg = job_config("pinpipe score_impressions", __doc__.splitlines()[0], argv)
    with spark_session("pinpipe-score-impressions", cfg.spark) as spark:
        report = run(spark, cfg)
    print(report.line())
    return report


if __name__ == "__main__":
    main()
