"""The serving corpus of a date: pins ranked by time-decayed engagement, one per image.

1. Each pin's engagement per event type decays with that type's half-life
   (``serving_corpus.half_life_days``): an event on day ``d`` is worth ``2 ** (-(D - d) / h)`` on
   day ``D``. The state of day ``D`` (``engagement_decay``, slice ``as_of = D``) is computed
   incrementally from the latest earlier state ``P``: every score decays by ``D - P`` days and
   the events of the days ``P < d <= D`` are added; with no earlier state (or
   ``serving_corpus.full_recompute``) every event up to ``D`` is summed. Both give the same scores
   (``tests/test_serving_corpus.py``: to 1e-9 relative). Events that arrive for a day already
   carried forward are only counted by a full recompute.
2. A pin's score is the ``serving_corpus.weights``-weighted sum of its types' scores; pins below
   ``serving_corpus.min_score`` are left out.
3. Pins sharing an image signature (``pins.image_signature``, the key their captions share) are
   one pin to serve: the best scored is served, the others are kept with ``served`` false and
   ``duplicate_of`` naming it. ``serving_corpus`` slice ``dt = D`` is replaced.

Local:    pinpipe serving_corpus [--set serving_corpus.date=2024-01-31]
Cluster:  spark-submit ... jobs/serving_corpus.py --env cluster --set lake.root=/shared/lake
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from jobs.config import PinpipeConfig, run_job
from runtime.config import require, setting
from runtime.lake import Lake
from runtime.session import job_description
from schemas import engagement_decay as ED
from schemas import pins as P
from schemas import serving_corpus as SC
from schemas import user_engagements as UE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServingCorpusConfig:
    date: dt.date = setting(
        "The corpus date (YYYY-MM-DD): events on days <= date count; empty = today (UTC).", dated=True
    )
    sources: list[str] = setting("user_engagements sources whose events count; empty = every source.")
    half_life_days: dict[str, float] = setting(
        "Half-life in days of each event type's engagement (types not named here do not count)."
    )
    weights: dict[str, float] = setting("Weight of each event type's decayed engagement in a pin's score.")
    min_score: float = setting("Pins whose score is below this are not in the corpus.")
    full_recompute: bool = setting(
        "Sum every event again instead of carrying the latest earlier engagement_decay state forward."
    )

    def __post_init__(self) -> None:
        for kind, days in self.half_life_days.items():
            require(days > 0, f"serving_corpus.half_life_days.{kind}", "must be > 0", days)
        for kind, weight in self.weights.items():
            require(weight >= 0, f"serving_corpus.weights.{kind}", "must be >= 0", weight)
        require(
            set(self.weights) <= set(self.half_life_days),
            "serving_corpus.weights",
            f"names event types without a half-life (half_life_days has {sorted(self.half_life_days)})",
            sorted(self.weights),
        )
        require(self.min_score >= 0, "serving_corpus.min_score", "must be >= 0", self.min_score)


STATE = "engagement_decay"
TABLE = "serving_corpus"
EVENTS = "events"


@dataclass(frozen=True)
class CorpusInputs:
    counts: DataFrame  # (pin_id, event_type, dt, events) of the days to add
    previous: DataFrame | None  # (pin_id, event_type, score) of the state carried forward
    previous_as_of: dt.date | None
    signatures: DataFrame  # (pin_id, image_signature)


@dataclass(frozen=True)
class CorpusOutputs:
    state: DataFrame  # engagement_decay rows of as_of
    corpus: DataFrame  # serving_corpus rows of dt


@dataclass(frozen=True)
class CorpusReport:
    date: dt.date
    carried_from: dt.date | None
    state_rows: int
    pins: int
    served: int

    def line(self) -> str:
        start = f"carried from {self.carried_from}" if self.carried_from else "full recompute"
        return (
            f"serving_corpus: dt={self.date} ({start}) engagement_decay={self.state_rows:,} "
            f"pins={self.pins:,} served={self.served:,} duplicates={self.pins - self.served:,}"
        )


def per_event_type(values: Mapping[str, float]) -> Column:
    """The configured value of each row's event type (null for a type not configured)."""
    pairs = [x for kind, value in sorted(values.items()) for x in (F.lit(kind), F.lit(float(value)))]
    return F.create_map(*pairs)[F.col(ED.EVENT_TYPE)]


def decay(days: Column, half_lives: Mapping[str, float]) -> Column:
    """``2 ** (-days / half_life)`` of each row's event type."""
    return F.pow(F.lit(2.0), -days.cast("double") / per_event_type(half_lives))


def day_counts(events: DataFrame, kinds: Sequence[str]) -> DataFrame:
    """(pin_id, event_type, dt, events): events per pin, type and day, for the ``kinds`` counted."""
    counted = events.filter(F.col(UE.EVENT_TYPE).isin(list(kinds)))
    return counted.groupBy(UE.PIN_ID, UE.EVENT_TYPE, UE.DT).agg(F.count(F.lit(1)).alias(EVENTS))


def decayed_state(
    counts: DataFrame,
    previous: DataFrame | None,
    previous_as_of: dt.date | None,
    as_of: dt.date,
    half_lives: Mapping[str, float],
) -> DataFrame:
    """(pin_id, event_type, score, as_of): ``previous`` decayed by ``as_of - previous_as_of``
    days plus ``counts`` decayed from their day to ``as_of``."""
    added = counts.select(
        UE.PIN_ID,
        UE.EVENT_TYPE,
        (F.col(EVENTS) * decay(F.datediff(F.lit(as_of), F.col(UE.DT)), half_lives)).alias(ED.SCORE),
    )
    if previous is not None and previous_as_of is not None:
        days = F.lit((as_of - previous_as_of).days)
        added = added.unionByName(
            previous.select(ED.PIN_ID, ED.EVENT_TYPE, (F.col(ED.SCORE) * decay(days, half_lives)).alias(ED.SCORE))
        )
    summed = added.groupBy(ED.PIN_ID, ED.EVENT_TYPE).agg(F.sum(ED.SCORE).alias(ED.SCORE))
    return summed.withColumn(ED.AS_OF, F.lit(as_of))


def ranked_corpus(
    state: DataFrame, signatures: DataFrame, weights: Mapping[str, float], min_score: float, as_of: dt.date
) -> DataFrame:
    """serving_corpus rows: weighted score per pin (``min_score`` and up), the best pin of each
    image signature served, the others pointing at it."""
    weighted = F.coalesce(per_event_type(weights), F.lit(0.0)) * F.col(ED.SCORE)
    scored = state.groupBy(ED.PIN_ID).agg(F.sum(weighted).alias(SC.SCORE)).filter(F.col(SC.SCORE) >= min_score)
    with_signature = scored.join(signatures, SC.PIN_ID, "left")
    group = F.coalesce(F.col(SC.IMAGE_SIGNATURE), F.concat(F.lit("pin:"), F.col(SC.PIN_ID)))
    best_first = Window.partitionBy(group).orderBy(F.desc(SC.SCORE), F.asc(SC.PIN_ID))
    best = F.first(SC.PIN_ID).over(best_first)
    return with_signature.select(
        SC.PIN_ID,
        SC.SCORE,
        SC.IMAGE_SIGNATURE,
        (best == F.col(SC.PIN_ID)).alias(SC.SERVED),
        F.when(best != F.col(SC.PIN_ID), best).alias(SC.DUPLICATE_OF),
        F.lit(as_of).alias(SC.DT),
    )


def latest_state_before(spark: SparkSession, lake: Lake, day: dt.date) -> dt.date | None:
    if not lake.exists(spark, STATE):
        return None
    row = lake.read(spark, STATE).filter(F.col(ED.AS_OF) < F.lit(day)).agg(F.max(ED.AS_OF)).first()
    return row[0] if row else None


def read(spark: SparkSession, cfg: PinpipeConfig) -> CorpusInputs:
    lake, c = Lake.of(cfg.lake), cfg.serving_corpus
    previous_as_of = None if c.full_recompute else latest_state_before(spark, lake, c.date)
    events = lake.read(spark, "user_engagements").filter(F.col(UE.DT) <= F.lit(c.date))
    if c.sources:
        events = events.filter(F.col(UE.SOURCE).isin(c.sources))
    previous = None
    if previous_as_of is not None:
        events = events.filter(F.col(UE.DT) > F.lit(previous_as_of))
        previous = lake.read(spark, STATE).filter(F.col(ED.AS_OF) == F.lit(previous_as_of))
    pins = lake.read_or_empty(spark, "pins").select(P.PIN_ID, P.IMAGE_SIGNATURE).dropDuplicates([P.PIN_ID])
    return CorpusInputs(day_counts(events, sorted(c.half_life_days)), previous, previous_as_of, pins)


def transform(
    inputs: CorpusInputs,
    *,
    as_of: dt.date,
    half_life_days: Mapping[str, float],
    weights: Mapping[str, float],
    min_score: float,
) -> CorpusOutputs:
    state = decayed_state(inputs.counts, inputs.previous, inputs.previous_as_of, as_of, half_life_days)
    return CorpusOutputs(state, ranked_corpus(state, inputs.signatures, weights, min_score, as_of))


def write(outputs: CorpusOutputs, lake: Lake, as_of: dt.date, carried_from: dt.date | None) -> CorpusReport:
    spark = outputs.state.sparkSession
    day = f"'{as_of.isoformat()}'"
    with job_description(spark, f"serving_corpus: {STATE} as of {as_of}"):
        state_rows = lake.replace_slice(outputs.state, STATE, f"{ED.AS_OF} = DATE {day}")
    with job_description(spark, f"serving_corpus: {TABLE} dt={as_of}"):
        pins = lake.replace_slice(outputs.corpus, TABLE, f"{SC.DT} = DATE {day}")
    served = lake.read(spark, TABLE).filter(F.col(SC.DT) == F.lit(as_of)).filter(F.col(SC.SERVED)).count()
    return CorpusReport(as_of, carried_from, state_rows, pins, served)


def run(spark: SparkSession, cfg: PinpipeConfig) -> CorpusReport:
    c = cfg.serving_corpus
    inputs = read(spark, cfg)
    start = f"carrying {STATE} of {inputs.previous_as_of} forward" if inputs.previous_as_of else "full recompute"
    log.info("serving_corpus: %s, %s", c.date, start)
    outputs = transform(inputs, as_of=c.date, half_life_days=c.half_life_days, weights=c.weights, min_score=c.min_score)
    return write(outputs, Lake.of(cfg.lake), c.date, inputs.previous_as_of)


def main(argv: Sequence[str] | None = None) -> CorpusReport:
    return run_job("pinpipe serving_corpus", __doc__, run, argv)


if __name__ == "__main__":
    main()
