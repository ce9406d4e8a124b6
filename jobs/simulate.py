"""Deterministic synthetic catalog and traffic: the embedded demo's data and the scale input.

Every value is a pure function of ``(seed, row id)`` through Spark's ``xxhash64``, built from
``spark.range`` — nothing is collected to the driver, the output does not depend on the
partitioning, and 10 million impressions generate on one machine. What it models:

* pins in ``n_topics`` topics, with titles, descriptions, link text and image signatures; a
  ``near_duplicate_rate`` share re-posts an earlier pin's image (same signature, title variant);
  each pin's topic is its ``item_attributes`` row (``sim-t<k>``: what a two-tower with
  ``item_attributes`` or a conditional one takes as the pin's interest);
* boards per topic; users with Zipf activity;
* search requests of ``page_size`` impressions: the query is Zipf over ``n_queries``, pins are
  Zipf within the query's topic (shifted per query, so queries of one topic differ), with an
  ``off_topic_rate`` of pins from other topics — many repeated (query, pin) pairs;
* clicks from a latent (query, pin) relevance times a position bias ``1/(1+pos)^decay``;
  saves as a share of clicks, onto a board of the pin's topic;
* optionally, human-style graded labels (1-4) of sampled (query, pin) pairs.

``read`` makes the id ranges (sizes and partitions), ``transform`` turns ids into rows with plain
values (seed, dates, sizes, rates), ``write`` replaces the ``source = 'simulated'`` slice of
each table (impressions and engagements: the simulated dates only).

Local:    pinpipe simulate --set simulate.impressions_per_day=5000000 --set simulate.days=2
Cluster:  spark-submit --py-files dist/pinpipe.zip --jars ... jobs/simulate.py --env cluster
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, fields

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.config import PinpipeConfig, run_job
from jobs.sources.simulated_words import ADJECTIVES, TAILS, TOPICS, VARIANTS
from runtime.config import require, require_at_least, setting
from runtime.lake import Lake, sql_literal
from runtime.session import job_description
from schemas import boards as B
from schemas import human_labels as HL
from schemas import item_attributes as IA
from schemas import pins as P
from schemas import search_impressions as SI
from schemas import user_engagements as UE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimulateConfig:
    seed: int = setting("Seed: the same seed and sizes give the same data, on any partitioning.")
    start_date: dt.date = setting("First simulated day (YYYY-MM-DD).")
    days: int = setting("Number of days of impressions and engagements.")
    impressions_per_day: int = setting("Impressions per day (rounded down to whole result pages).")
    page_size: int = setting("Pins per search result page.")
    n_pins: int = setting("Catalog size.")
    n_queries: int = setting("Distinct query ids (Zipf-distributed traffic).")
    n_users: int = setting("Users (Zipf-distributed activity).")
    n_boards: int = setting("Boards.")
    n_topics: int = setting("Topics that tie queries, pins and boards together.")
    n_labels: int = setting("Simulated human-labelled (query, pin) pairs.")
    query_zipf: float = setting("Zipf exponent of query popularity.")
    pin_zipf: float = setting("Zipf exponent of pin popularity within a topic.")
    user_zipf: float = setting("Zipf exponent of user activity.")
    off_topic_rate: float = setting("Share of impressions showing a pin from another topic.")
    near_duplicate_rate: float = setting("Share of pins that re-post an earlier pin's image.")
    click_rate: float = setting("Click probability of a fully relevant pin at position 0.")
    save_rate: float = setting("Probability that a click is also a save.")
    position_decay: float = setting("Position bias: click odds scale by 1/(1+position)^decay.")
    partitions: int = setting("Spark partitions for generation.")

    def __post_init__(self) -> None:
        require_at_least(
            self,
            "simulate",
            (
                "days",
                "impressions_per_day",
                "page_size",
                "n_pins",
                "n_queries",
                "n_users",
                "n_boards",
                "n_topics",
                "partitions",
            ),
        )
        require_at_least(self, "simulate", ("n_labels",), minimum=0)
        require(
            self.impressions_per_day >= self.page_size,
            "simulate.impressions_per_day",
            "must be >= page_size",
            self.impressions_per_day,
        )
        require(self.n_pins >= self.n_topics, "simulate.n_pins", "must be >= n_topics", self.n_pins)
        require(self.n_boards >= self.n_topics, "simulate.n_boards", "must be >= n_topics", self.n_boards)
        for name in ("query_zipf", "pin_zipf", "user_zipf"):
            require(getattr(self, name) > 0, f"simulate.{name}", "must be > 0", getattr(self, name))
        for name in ("off_topic_rate", "near_duplicate_rate", "click_rate", "save_rate"):
            v = getattr(self, name)
            require(0.0 <= v <= 1.0, f"simulate.{name}", "must be in [0, 1]", v)
        require(self.position_decay >= 0, "simulate.position_decay", "must be >= 0", self.position_decay)


SOURCE = "simulated"
_TWO_53 = float(2**53)

ENGAGEMENT_DELAY_SECONDS = 20


@dataclass(frozen=True)
class Traffic:
    """The generator's parameters (meanings in :class:`SimulateConfig`): plain values."""

    seed: int
    start_date: dt.date
    days: int
    impressions_per_day: int
    page_size: int
    n_pins: int
    n_queries: int
    n_users: int
    n_boards: int
    n_topics: int
    query_zipf: float
    pin_zipf: float
    user_zipf: float
    off_topic_rate: float
    near_duplicate_rate: float
    click_rate: float
    save_rate: float
    position_decay: float

    @classmethod
    def of(cls, sim: SimulateConfig) -> Traffic:
        return cls(**{f.name: getattr(sim, f.name) for f in fields(cls)})

    @property
    def requests_per_day(self) -> int:
        return self.impressions_per_day // self.page_size

    @property
    def end_date(self) -> dt.date:
        """The first day after the simulated days."""
        return self.start_date + dt.timedelta(days=self.days)


@dataclass(frozen=True)
class IdRanges:
    """The ids every generated row derives from (column ``id``): sizes and partitioning only."""

    pins: DataFrame
    boards: DataFrame
    impressions: DataFrame
    labels: DataFrame


@dataclass(frozen=True)
class SimulatedData:
    pins: DataFrame
    item_attributes: DataFrame  # each pin's topic
    boards: DataFrame
    search_impressions: DataFrame
    user_engagements: DataFrame
    human_labels: DataFrame
    start_date: dt.date
    end_date: dt.date  # exclusive


@dataclass(frozen=True)
class SimulateReport:
    written: dict[str, int]

    def line(self) -> str:
        return "simulate: " + " ".join(f"{t}={n:,}" for t, n in self.written.items())


class _Gen:
    """Hash-based random draws: every draw is a pure function of (seed, salt, ids)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def uniform(self, salt: str, *ids: Column) -> Column:
        """A uniform double in [0, 1)."""
        h = F.xxhash64(F.lit(self.seed), F.lit(salt), *ids)
        return F.pmod(h, F.lit(2**53)).cast("double") / F.lit(_TWO_53)

    def index(self, salt: str, n: int | Column, *ids: Column) -> Column:
        """A uniform integer in [0, n)."""
        return F.floor(self.uniform(salt, *ids) * n).cast("long")

    def zipf(self, salt: str, n: int, exponent: float, *ids: Column) -> Column:
        """A rank in [0, n) with P(rank = k) ~ (k+1)^-exponent (inverse CDF of the
        continuous power law, floored)."""
        u = self.uniform(salt, *ids)
        if abs(exponent - 1.0) < 1e-9:
            x = F.exp(u * F.log(F.lit(float(n + 1))))
        else:
            a = 1.0 - exponent
            x = F.pow((F.lit((n + 1) ** a) - 1.0) * u + 1.0, F.lit(1.0 / a))
        return F.least(F.greatest(F.floor(x).cast("long") - 1, F.lit(0)), F.lit(n - 1))


def _pick(words: Sequence[str], index: Column) -> Column:
    return F.element_at(F.array(*[F.lit(w) for w in words]), (index % len(words) + 1).cast("int"))


TOPIC_NAMES = list(TOPICS)
WORDS_PER_TOPIC = len(next(iter(TOPICS.values())))
TOPIC_WORDS = [w for name in TOPIC_NAMES for w in TOPICS[name]]  # topic i's words at i*WORDS_PER_TOPIC


def _topic_name(topic: Column) -> Column:
    return _pick(TOPIC_NAMES, topic)


def _topic_noun(topic: Column, index: Column) -> Column:
    return _pick(TOPIC_WORDS, (topic % len(TOPIC_NAMES)) * WORDS_PER_TOPIC + index % WORDS_PER_TOPIC)


def _day_start(w: Traffic) -> int:
    return int(dt.datetime.combine(w.start_date, dt.time(), dt.UTC).timestamp())


def query_text(gen: _Gen, q: Column, w: Traffic) -> Column:
    """The text of query id ``q``: a deterministic function of the id (no lookup table)."""
    topic = q % w.n_topics
    adjective = _pick(ADJECTIVES, gen.index("q-adj", len(ADJECTIVES), q))
    noun = _topic_noun(topic, gen.index("q-noun", 64, q))
    tail = _pick(TAILS, gen.index("q-tail", len(TAILS), q))
    form = gen.index("q-form", 3, q)
    return (
        F.when(form == 0, F.concat_ws(" ", noun, tail))
        .when(form == 1, F.concat_ws(" ", adjective, noun))
        .otherwise(F.concat_ws(" ", adjective, noun, tail))
    )


def pin_relevance(gen: _Gen, q: Column, pin: Column, w: Traffic) -> Column:
    """Latent relevance in [0, 1]: high when the pin is in the query's topic."""
    on_topic = (q % w.n_topics) == (pin % w.n_topics)
    return F.when(on_topic, 0.55).otherwise(0.0) + 0.45 * gen.uniform("rel", q, pin)


def pin_for(gen: _Gen, salt: str, q: Column, draw: Column, w: Traffic) -> Column:
    """A pin id shown for query ``q``: Zipf within the query's topic, shifted per query."""
    per_topic = w.n_pins // w.n_topics
    topic = q % w.n_topics
    rank = gen.zipf(salt + "-rank", per_topic, w.pin_zipf, q, draw)
    shift = gen.index(salt + "-shift", per_topic, q)
    on_topic_pin = ((rank + shift) % per_topic) * w.n_topics + topic
    off_topic_pin = gen.index(salt + "-any", w.n_pins, q, draw)
    return F.when(gen.uniform(salt + "-off", q, draw) < w.off_topic_rate, off_topic_pin).otherwise(on_topic_pin)


def transform_pin_topics(ids: DataFrame, w: Traffic) -> DataFrame:
    """(pin, its topic) as ``item_attributes`` rows: a pin's topic is its id modulo ``n_topics``
    (a near-duplicate's original is of the same topic)."""
    p = F.col("id")
    return ids.select(
        F.concat(F.lit("sim-p"), p.cast("string")).alias(IA.PIN_ID),
        F.concat(F.lit("sim-t"), (p % w.n_topics).cast("string")).alias(IA.ATTRIBUTE),
        F.lit(SOURCE).alias(IA.SOURCE),
    )


def transform_pins(ids: DataFrame, w: Traffic) -> DataFrame:
    gen = _Gen(w.seed)
    p = F.col("id")
    # A near-duplicate re-posts an earlier pin of the same topic: same image, title variant.
    earlier = p - w.n_topics * (1 + gen.index("orig", 10, p))
    near_dup = (earlier >= 0) & (gen.uniform("near-dup", p) < w.near_duplicate_rate)
    original = F.when(near_dup, earlier).otherwise(p)
    topic = original % w.n_topics
    adjective = _pick(ADJECTIVES, gen.index("p-adj", len(ADJECTIVES), original))
    noun = _topic_noun(topic, gen.index("p-noun", 64, original))
    tail = _pick(TAILS, gen.index("p-tail", len(TAILS), original))
    base_title = F.initcap(F.concat_ws(" ", adjective, noun, tail))
    title = F.when(near_dup, F.concat_ws(" ", base_title, _pick(VARIANTS, gen.index("variant", 5, p)))).otherwise(
        base_title
    )
    other = _topic_noun(topic, gen.index("p-other", 64, original))
    description = F.concat(
        F.lit("Discover "),
        adjective,
        F.lit(" "),
        noun,
        F.lit(" and "),
        other,
        F.lit(" for your "),
        _topic_name(topic),
        F.lit(" board. "),
        F.initcap(tail),
        F.lit(" included."),
    )
    has_link = gen.uniform("has-link", original) < 0.7
    created = F.timestamp_seconds(F.lit(_day_start(w)) - gen.index("created", 365 * 86400, p))
    return ids.select(
        F.concat(F.lit("sim-p"), p.cast("string")).alias(P.PIN_ID),
        F.lit(SOURCE).alias(P.SOURCE),
        title.alias(P.TITLE),
        F.when(gen.uniform("has-desc", p) < 0.85, description).alias(P.DESCRIPTION),
        F.when(
            has_link, F.concat(F.lit("https://example.com/"), _topic_name(topic), F.lit("/"), original.cast("string"))
        ).alias(P.LINK_URL),
        F.when(has_link, F.concat(base_title, F.lit(" | "), F.initcap(_topic_name(topic)), F.lit(" Blog"))).alias(
            P.LINK_TITLE
        ),
        F.when(
            has_link,
            F.concat(
                F.lit("Step-by-step "),
                noun,
                F.lit(" "),
                tail,
                F.lit(" from our "),
                _topic_name(topic),
                F.lit(" editors."),
            ),
        ).alias(P.LINK_DESCRIPTION),
        F.lit(None).cast("string").alias(P.IMAGE_PATH),
        F.concat(F.lit("sim:"), F.lpad(F.hex(F.xxhash64(F.lit(w.seed), F.lit("img"), original)), 16, "0")).alias(
            P.IMAGE_SIGNATURE
        ),
        created.alias(P.CREATED_AT),
    )


def board_for(gen: _Gen, user: Column, pin: Column, w: Traffic) -> Column:
    per_topic = w.n_boards // w.n_topics
    return gen.index("board", per_topic, user, pin) * w.n_topics + pin % w.n_topics


def transform_boards(ids: DataFrame, w: Traffic) -> DataFrame:
    gen = _Gen(w.seed)
    b = F.col("id")
    topic = b % w.n_topics
    title = F.initcap(F.concat_ws(" ", _pick(ADJECTIVES, gen.index("b-adj", len(ADJECTIVES), b)), _topic_name(topic)))
    return ids.select(
        F.concat(F.lit("sim-b"), b.cast("string")).alias(B.BOARD_ID),
        F.lit(SOURCE).alias(B.SOURCE),
        title.alias(B.TITLE),
        F.concat(F.lit("sim-u"), gen.index("b-owner", w.n_users, b).cast("string")).alias(B.OWNER_USER_ID),
        F.timestamp_seconds(F.lit(_day_start(w)) - gen.index("b-created", 730 * 86400, b)).alias(B.CREATED_AT),
    )


def transform_impressions(ids: DataFrame, w: Traffic) -> DataFrame:
    """Impression ``id`` -> a row of whole pages (request ``id // page_size``), with outcomes."""
    gen = _Gen(w.seed)
    requests_per_day = w.requests_per_day
    i = F.col("id")
    r = F.floor(i / w.page_size).cast("long")
    position = (i % w.page_size).cast("int")
    day = F.floor(r / requests_per_day).cast("long")
    q = gen.zipf("query", w.n_queries, w.query_zipf, r)
    user = gen.zipf("user", w.n_users, w.user_zipf, r)
    pin = pin_for(gen, "imp", q, i, w)
    # Requests start before 23:59, so their engagements (seconds later) fall on the same day.
    seconds = F.lit(_day_start(w)) + day * 86400 + gen.index("second", 86400 - 60, r)
    click_p = w.click_rate * pin_relevance(gen, q, pin, w) / F.pow(position + 1.0, F.lit(w.position_decay))
    clicked = gen.uniform("click", i) < click_p
    event_time = F.timestamp_seconds(seconds)
    return ids.select(
        F.concat(F.lit("sim-i"), i.cast("string")).alias(SI.IMPRESSION_ID),
        F.concat(F.lit("sim-r"), r.cast("string")).alias(SI.REQUEST_ID),
        F.concat(F.lit("sim-u"), user.cast("string")).alias(SI.USER_ID),
        query_text(gen, q, w).alias(SI.QUERY),
        F.concat(F.lit("sim-p"), pin.cast("string")).alias(SI.PIN_ID),
        position.alias(SI.POSITION),
        event_time.alias(SI.EVENT_TIME),
        F.to_date(event_time).alias(SI.DT),
        clicked.alias(SI.CLICKED),
        (clicked & (gen.uniform("save", i) < w.save_rate)).alias(SI.SAVED),
        F.lit(SOURCE).alias(SI.SOURCE),
        # Kept for deriving engagements; dropped before writing impressions.
        user.alias("_user"),
        pin.alias("_pin"),
    )


def engagements_from(impressions: DataFrame, w: Traffic) -> DataFrame:
    """Click and save events of the impressions (a save also names the board)."""
    gen = _Gen(w.seed)
    engaged = impressions.filter(F.col(SI.CLICKED))
    event = F.explode(
        F.when(F.col(SI.SAVED), F.array(F.lit(UE.EVENT_CLICK), F.lit(UE.EVENT_SAVE))).otherwise(
            F.array(F.lit(UE.EVENT_CLICK))
        )
    )
    board = board_for(gen, F.col("_user"), F.col("_pin"), w)
    return engaged.select("*", event.alias("_event")).select(
        F.col(SI.USER_ID).alias(UE.USER_ID),
        F.col(SI.PIN_ID).alias(UE.PIN_ID),
        F.col("_event").alias(UE.EVENT_TYPE),
        (F.col(SI.EVENT_TIME) + F.expr(f"INTERVAL {ENGAGEMENT_DELAY_SECONDS} SECONDS")).alias(UE.EVENT_TIME),
        F.col(SI.DT).alias(UE.DT),
        F.lit(None).cast("int").alias(UE.SEQ_INDEX),
        F.col(SI.QUERY).alias(UE.QUERY),
        F.when(F.col("_event") == UE.EVENT_SAVE, F.concat(F.lit("sim-b"), board.cast("string"))).alias(UE.BOARD_ID),
        F.lit(SOURCE).alias(UE.SOURCE),
    )


def transform_labels(ids: DataFrame, w: Traffic) -> DataFrame:
    """Graded 1-4 labels of sampled (query, pin) pairs, from latent relevance plus rater noise."""
    gen = _Gen(w.seed)
    k = F.col("id")
    q = gen.zipf("label-query", w.n_queries, w.query_zipf, k)
    pin = pin_for(gen, "label", q, k, w)
    noisy = pin_relevance(gen, q, pin, w) + (gen.uniform("label-noise", k) - 0.5) * 0.3
    grade = (F.floor(F.least(F.greatest(noisy, F.lit(0.0)), F.lit(0.999)) * 4) + 1).cast("int")
    pairs = ids.select(
        F.concat(F.lit("sim-l"), k.cast("string")).alias(HL.LABEL_ID),
        query_text(gen, q, w).alias(HL.QUERY),
        F.concat(F.lit("sim-p"), pin.cast("string")).alias(HL.PIN_ID),
        grade.alias(HL.RELEVANCE),
        F.lit(4).alias(HL.SCALE_MAX),
        F.lit(None).cast("double").alias(HL.RELEVANCE_VARIANCE),
        (F.pmod(F.xxhash64(F.lit(w.seed), k), F.lit(5)) + 1).cast("int").alias(HL.FOLD),
        F.lit(SOURCE).alias(HL.SOURCE),
        k.alias("_k"),
    )
    # One label per (query, pin): keep the lowest sample id, deterministically.
    first = pairs.groupBy(HL.QUERY, HL.PIN_ID).agg(F.min("_k").alias("_k"))
    return pairs.join(first, [HL.QUERY, HL.PIN_ID, "_k"], "left_semi").drop("_k")


def read(spark: SparkSession, cfg: PinpipeConfig) -> IdRanges:
    sim = cfg.simulate
    w = Traffic.of(sim)

    def ids(n: int) -> DataFrame:
        return spark.range(0, n, numPartitions=sim.partitions)

    return IdRanges(
        pins=ids(w.n_pins),
        boards=ids((w.n_boards // w.n_topics) * w.n_topics),
        impressions=ids(w.requests_per_day * w.page_size * w.days),
        labels=ids(sim.n_labels),
    )


def transform(ids: IdRanges, *, traffic: Traffic) -> SimulatedData:
    """Rows for every id; the same ids and traffic give the same rows on any partitioning."""
    impressions = transform_impressions(ids.impressions, traffic)
    return SimulatedData(
        pins=transform_pins(ids.pins, traffic),
        item_attributes=transform_pin_topics(ids.pins, traffic),
        boards=transform_boards(ids.boards, traffic),
        search_impressions=impressions.drop("_user", "_pin"),
        user_engagements=engagements_from(impressions, traffic),
        human_labels=transform_labels(ids.labels, traffic),
        start_date=traffic.start_date,
        end_date=traffic.end_date,
    )


def date_range_predicate(start: dt.date, end: dt.date, column: str) -> str:
    return f"{column} >= DATE'{start.isoformat()}' AND {column} < DATE'{end.isoformat()}'"


def write(data: SimulatedData, lake: Lake) -> SimulateReport:
    """Replace the simulated slice of each table; impressions and engagements: its dates only."""
    source = f"source = {sql_literal(SOURCE)}"
    dates = {c: date_range_predicate(data.start_date, data.end_date, c) for c in (SI.DT, UE.DT)}
    writes = {
        "pins": (data.pins, source),
        "item_attributes": (data.item_attributes, source),
        "boards": (data.boards, source),
        "human_labels": (data.human_labels, source),
        "search_impressions": (data.search_impressions, f"{source} AND {dates[SI.DT]}"),
        "user_engagements": (data.user_engagements, f"{source} AND {dates[UE.DT]}"),
    }
    written = {}
    for table, (rows, where) in writes.items():
        with job_description(rows.sparkSession, f"simulate: write {table}"):
            written[table] = lake.replace_slice(rows, table, where)
    return SimulateReport(written)


def run(spark: SparkSession, cfg: PinpipeConfig) -> SimulateReport:
    data = transform(read(spark, cfg), traffic=Traffic.of(cfg.simulate))
    return write(data, Lake.of(cfg.lake))


def main(argv: Sequence[str] | None = None) -> SimulateReport:
    return run_job("pinpipe simulate", __doc__, run, argv)


if __name__ == "__main__":
    main()
