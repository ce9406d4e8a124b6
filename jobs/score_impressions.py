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

import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.config import PinpipeConfig, run_job
from models.artifacts.registry import ArtifactRef
from models.relevance.teacher_settings import CPU_ENGINES, ScoringSettings
from runtime.config import require, require_at_least, setting
from runtime.lake import Lake, sql_literal
from runtime.session import job_description
from runtime.validation import REASON, first_failure, is_blank, split_rejected, to_quarantine
from schemas import labeled_impressions as LI
from schemas import pin_text_features as PTF
from schemas import pins as P
from schemas import quarantine as Q
from schemas import search_impressions as SI
from schemas import teacher_scores as TS
from udfs.text_clean import normalize_query

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "int8", "bf16", "fp16", "nf4")


@dataclass(frozen=True)
class ScorerConfig:
    teacher_family: str = setting("Registry family of the teacher to score with.")
    teacher_version: str = setting("Version to score with (e.g. v0003); empty = the promoted (CURRENT) one.")
    start_date: dt.date = setting(
        "First impression date (YYYY-MM-DD) to score; empty = today (UTC), resolved at load.", dated=True
    )
    end_date: dt.date = setting("Last impression date, inclusive; empty = start_date.", same_as="scorer.start_date")
    feature_version: str = setting(
        "pin_text_features slice to take pin text from; empty = features.version (resolved at load).",
        same_as="features.version",
    )
    precision: str = setting("auto (int8 on CPU, bf16 on GPU), fp32, int8 (CPU), bf16/fp16 (GPU), nf4 (4-bit, GPU).")
    cpu_engine: str = setting(
        "What scores on CPU: openvino (the teacher's OpenVINO export, made when it was published; int8 "
        "where it reached its Spearman target then, else bf16) or torch (dynamic int8 under the int8 plan)."
    )
    batch_size: int = setting("Pairs per model call, at most.")
    max_batch_tokens: int = setting("Padded tokens per model call, at most (rows x longest pair); 0 = rows only.")
    max_length: int = setting("Tokens per pair; 0 = as the teacher was trained.")
    query_tokens: int = setting("Tokens of the query, at most; 0 = as the teacher was trained.")
    arrow_batch_rows: int = setting("Rows per Arrow batch sent to a Python worker (maxRecordsPerBatch).")
    arrow_batch_bytes: int = setting("Bytes per Arrow batch sent to a Python worker (maxBytesPerBatch).")
    max_text_chars: int = setting("Pins whose text is longer than this are quarantined, not scored.")
    chunks: int = setting(
        "Commit units: the pairs are scored and committed in this many hash chunks, so a "
        "killed run loses at most one chunk of work."
    )
    partitions: int = setting("Partitions (parallel scoring tasks) per chunk; 0 = spark.default.parallelism.")

    def __post_init__(self) -> None:
        require(self.precision in PRECISIONS, "scorer.precision", f"must be one of {list(PRECISIONS)}", self.precision)
        engines = list(CPU_ENGINES)
        require(self.cpu_engine in engines, "scorer.cpu_engine", f"must be one of {engines}", self.cpu_engine)
        require_at_least(
            self, "scorer", ("batch_size", "arrow_batch_rows", "arrow_batch_bytes", "max_text_chars", "chunks")
        )
        require_at_least(self, "scorer", ("max_batch_tokens", "max_length", "query_tokens", "partitions"), minimum=0)
        require(self.start_date <= self.end_date, "scorer.end_date", "must not be before start_date", self.end_date)


SOURCE = "score_impressions"
TEXT = "text"
IMPRESSIONS = "impressions"
CHUNK = "chunk"


# --------------------------------------------------------------------------- pure transforms


def in_dates(col: str, start: dt.date, end: dt.date) -> Column:
    return F.col(col).between(F.lit(start), F.lit(end))


def candidate_pairs(
    impressions: DataFrame, pins: DataFrame, features: DataFrame, max_text_chars: int
) -> tuple[DataFrame, DataFrame]:
    """(unique pairs ``query, pin_id, text, impressions`` to score, quarantine rows)."""
    pairs = impressions.groupBy(
        normalize_query(F.col(SI.QUERY)).alias(TS.QUERY), F.col(SI.PIN_ID).alias(TS.PIN_ID)
    ).agg(F.count(F.lit(1)).alias(IMPRESSIONS))
    known = pins.select(F.col(P.PIN_ID).alias("_known")).distinct()
    text = features.select(F.col(PTF.PIN_ID).alias("_pin"), F.col(PTF.PIN_TEXT).alias(TEXT))
    joined = pairs.join(known, pairs[TS.PIN_ID] == known["_known"], "left").join(
        text, pairs[TS.PIN_ID] == text["_pin"], "left"
    )
    checked = joined.withColumn(
        REASON,
        first_failure(
            [
                (is_blank(F.col(TS.QUERY)), "empty query"),
                (F.col(TS.PIN_ID).isNull(), "missing pin_id"),
                (F.col("_known").isNull(), "unknown pin_id"),
                (is_blank(F.col(TEXT)), "pin has no text"),
                (
                    F.length(TEXT) > max_text_chars,
                    F.concat(F.lit(f"pin text longer than {max_text_chars} chars: "), F.length(TEXT).cast("string")),
                ),
            ]
        ),
    ).drop("_known", "_pin")
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
        F.col(TS.QUERY).alias("_q"),
        F.col(TS.PIN_ID).alias("_pin"),
        TS.PROBABILITIES,
        TS.EXPECTED_RELEVANCE,
        TS.LEVEL,
        TS.TEACHER_VERSION,
    )
    keyed = impressions.withColumn(LI.QUERY_NORM, normalize_query(F.col(SI.QUERY)))
    joined = keyed.join(mine, (keyed[LI.QUERY_NORM] == mine["_q"]) & (keyed[SI.PIN_ID] == mine["_pin"]))
    return joined.select(*LI.LABELED_IMPRESSIONS_V1.fieldNames())


def score_chunk(
    rows: DataFrame, folder: ArtifactRef, settings: ScoringSettings, teacher_version: str, partitions: int
) -> DataFrame:
    """``teacher_scores`` rows of one chunk; the same chunk always makes the same batches."""
    from udfs.teacher_scorer import SCORED_SCHEMA, score_partitions

    ordered = rows.repartition(partitions, TS.QUERY, TS.PIN_ID).sortWithinPartitions(
        F.length(TEXT) + F.length(TS.QUERY), TS.QUERY, TS.PIN_ID
    )
    scored = ordered.select(TS.QUERY, TS.PIN_ID, TEXT).mapInPandas(
        score_partitions(folder, settings, TEXT), SCORED_SCHEMA
    )
    return scored.withColumns({TS.TEACHER_VERSION: F.lit(teacher_version), TS.SCORED_AT: F.current_timestamp()}).select(
        *TS.TEACHER_SCORES_V1.fieldNames()
    )


# --------------------------------------------------------------------------- read, transform, write


@dataclass(frozen=True)
class ScoreInputs:
    impressions: DataFrame  # of the dates to score
    pins: DataFrame
    features: DataFrame  # pin_text_features of one feature_version
    scores: DataFrame  # teacher_scores so far
    teacher_folder: ArtifactRef  # the verified artifact, fetched by each node
    teacher_version: str  # family/version
    parallelism: int  # the cluster's default parallelism


@dataclass(frozen=True)
class ScorePlan:
    """What to score and how; nothing has run yet. ``write`` executes it chunk by chunk."""

    impressions: DataFrame
    pairs: DataFrame  # scorable unique pairs
    quarantine: DataFrame
    todo: DataFrame  # pairs not scored by this teacher yet, with their ``chunk``
    score: Callable[[DataFrame], DataFrame]  # rows of one chunk -> teacher_scores rows
    label: Callable[[DataFrame], DataFrame]  # teacher_scores -> labeled_impressions rows
    labeled_slice: str  # the labeled_impressions slice the run replaces
    teacher_version: str


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
        return (
            f"score_impressions: teacher={self.teacher_version} precision={self.precision} "
            f"impressions={self.impressions:,} unique_pairs={self.unique_pairs:,} (dedup {ratio:.1f}x) "
            f"already_scored={self.already_scored:,} scored={self.scored:,} ({self.pairs_per_s:.1f} pairs/s) "
            f"quarantined_pairs={self.quarantined_pairs:,} labeled_impressions={self.labeled_impressions:,}"
        )


def resolve_teacher(lake: Lake, family: str, version: str) -> tuple[ArtifactRef, str]:
    """(the artifact, ``family/version``) of the teacher to score with, checksums verified;
    an empty ``version`` is the promoted one."""
    from models.artifacts.registry import Registry, RegistryError

    registry = Registry(lake.artifacts())
    try:
        version = registry.resolve(family, version)
    except RegistryError as e:  # the same class: NoProductionModel stays one (the nightly skips the stage)
        raise type(e)(f"no teacher to score with: {e} (run train_teacher, or set scorer.teacher_version)") from e
    registry.verify(family, version)
    return registry.ref(family, version), f"{family}/{version}"


def read(spark: SparkSession, cfg: PinpipeConfig) -> ScoreInputs:
    sc: ScorerConfig = cfg.scorer
    lake = Lake.of(cfg.lake)
    folder, teacher_version = resolve_teacher(lake, sc.teacher_family, sc.teacher_version)
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(sc.arrow_batch_rows))
    spark.conf.set("spark.sql.execution.arrow.maxBytesPerBatch", str(sc.arrow_batch_bytes))
    return ScoreInputs(
        impressions=lake.read(spark, "search_impressions").filter(in_dates(SI.DT, sc.start_date, sc.end_date)),
        pins=lake.read_or_empty(spark, "pins"),
        features=lake.read_or_empty(spark, "pin_text_features").filter(
            F.col(PTF.FEATURE_VERSION) == sc.feature_version
        ),
        scores=lake.read_or_empty(spark, "teacher_scores"),
        teacher_folder=folder,
        teacher_version=teacher_version,
        parallelism=spark.sparkContext.defaultParallelism,
    )


def transform(
    inputs: ScoreInputs,
    *,
    start_date: dt.date,
    end_date: dt.date,
    max_text_chars: int,
    chunks: int,
    partitions: int,
    scoring: ScoringSettings,
) -> ScorePlan:
    """The unique pairs, their quarantine, the pairs left to score in ``chunks`` hash chunks,
    and how to score a chunk (``partitions`` tasks; 0 = the cluster's parallelism) and label."""
    pairs, quarantine = candidate_pairs(inputs.impressions, inputs.pins, inputs.features, max_text_chars)
    version = inputs.teacher_version
    todo = unscored(pairs, inputs.scores, version).withColumn(CHUNK, chunk_of(chunks))
    tasks = partitions or inputs.parallelism

    def score(rows: DataFrame) -> DataFrame:
        return score_chunk(rows.drop(CHUNK, IMPRESSIONS), inputs.teacher_folder, scoring, version, tasks)

    def label(scores: DataFrame) -> DataFrame:
        return labeled(inputs.impressions, scores, version)

    where = (
        f"{SI.DT} >= DATE'{start_date}' AND {SI.DT} <= DATE'{end_date}' "
        f"AND {TS.TEACHER_VERSION} = {sql_literal(version)}"
    )
    return ScorePlan(inputs.impressions, pairs, quarantine, todo, score, label, where, version)


def commit_chunk(lake: Lake, scored: DataFrame) -> int:
    """Insert one chunk's scores in one Delta commit (scored once, whatever MERGE re-reads)."""
    scored = scored.persist()
    try:
        scored.count()
        return lake.insert_new(scored, "teacher_scores", (TS.QUERY, TS.PIN_ID, TS.TEACHER_VERSION))
    finally:
        scored.unpersist()


def score_in_chunks(plan: ScorePlan, lake: Lake, chunk_sizes: dict[int, int]) -> float:
    """Score and commit every chunk, with progress; returns the seconds it took."""
    spark = plan.todo.sparkSession
    total = sum(chunk_sizes.values())
    started, done = time.perf_counter(), 0
    for i, chunk in enumerate(sorted(chunk_sizes), 1):
        with job_description(spark, f"score_impressions: chunk {i}/{len(chunk_sizes)}"):
            commit_chunk(lake, plan.score(plan.todo.filter(F.col(CHUNK) == chunk)))
        done += chunk_sizes[chunk]
        elapsed = time.perf_counter() - started
        rate = done / elapsed if elapsed else 0.0
        log.info(
            "score_impressions: chunk %d/%d committed, %d/%d pairs, %.1f pairs/s, ETA %.0f s",
            i,
            len(chunk_sizes),
            done,
            total,
            rate,
            (total - done) / rate if rate else 0.0,
        )
    return time.perf_counter() - started


def write(plan: ScorePlan, lake: Lake) -> ScoreReport:
    """Quarantine (insert-only), the chunks (one commit each), then the labeled slice."""
    spark = plan.todo.sparkSession
    todo = plan.todo.persist()
    try:
        with job_description(spark, "score_impressions: unique pairs"):
            n_impressions = plan.impressions.count()
            n_pairs = plan.pairs.count()
            chunk_sizes = {r[CHUNK]: r["count"] for r in todo.groupBy(CHUNK).count().collect()}
            newly_quarantined = lake.insert_new(plan.quarantine, "quarantine", (Q.SOURCE, Q.REASON, Q.RAW))
            n_quarantined = plan.quarantine.count()
        total = sum(chunk_sizes.values())
        log.info(
            "score_impressions: %d impressions, %d scorable unique pairs, %d to score in %d chunks; "
            "%d pairs quarantined (%d newly)",
            n_impressions,
            n_pairs,
            total,
            len(chunk_sizes),
            n_quarantined,
            newly_quarantined,
        )
        seconds = score_in_chunks(plan, lake, chunk_sizes)
    finally:
        todo.unpersist()
    scores = lake.read_or_empty(spark, "teacher_scores")
    with job_description(spark, "score_impressions: labeled_impressions"):
        written = lake.replace_slice(plan.label(scores), "labeled_impressions", plan.labeled_slice)
    version = plan.teacher_version
    mine = scores.filter(F.col(TS.TEACHER_VERSION) == version)
    precision = ",".join(sorted(r[0] for r in mine.select(TS.PRECISION).distinct().collect())) or "none"
    return ScoreReport(
        version,
        precision,
        n_impressions,
        n_pairs + n_quarantined,
        n_pairs - total,
        total,
        n_quarantined,
        written,
        seconds,
    )


def run(spark: SparkSession, cfg: PinpipeConfig) -> ScoreReport:
    sc = cfg.scorer
    scoring = ScoringSettings(
        sc.precision, sc.batch_size, sc.max_batch_tokens, sc.max_length, sc.query_tokens, engine=sc.cpu_engine
    )
    plan = transform(
        read(spark, cfg),
        start_date=sc.start_date,
        end_date=sc.end_date,
        max_text_chars=sc.max_text_chars,
        chunks=sc.chunks,
        partitions=sc.partitions,
        scoring=scoring,
    )
    return write(plan, Lake.of(cfg.lake))


def main(argv: Sequence[str] | None = None) -> ScoreReport:
    return run_job("pinpipe score_impressions", __doc__, run, argv)


if __name__ == "__main__":
    main()
