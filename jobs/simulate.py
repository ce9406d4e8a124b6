"""Deterministic synthetic catalog and traffic: the embedded demo's data and the scale input.

Every value is a pure function of ``(seed, row id)`` through Spark's ``xxhash64``, built from
``spark.range`` — nothing is collected to the driver, the output does not depend on the
partitioning, and 10 million impressions generate on one machine. What it models:

* pins in ``n_topics`` topics, with titles, descriptions, link text and image signatures; a
  ``near_duplicate_rate`` share re-posts an earlier pin's image (same signature, title variant);
* boards per topic; users with Zipf activity;
* search requests of ``page_size`` impressions: the query is Zipf over ``n_queries``, pins are
  Zipf within the query's topic (shifted per query, so queries of one topic differ), with an
  ``off_topic_rate`` of pins from other topics — many repeated (query, pin) pairs;
* clicks from a latent (query, pin) relevance times a position bias ``1/(1+pos)^decay``;
  saves as a share of clicks, onto a board of the pin's topic;
* optionally, human-style graded labels (1-4) of sampled (query, pin) pairs.

Local:    pinpipe simulate --set simulate.impressions_per_day=5000000 --set simulate.days=2
Cluster:  spark-submit --py-files dist/pinpipe.zip --jars ... jobs/simulate.py --env cluster
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Sequence

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.config import PinpipeConfig, SimulateConfig
from jobs.job_args import job_config
from jobs.lake import Lake, sql_literal
from jobs.session import spark_session
from schemas import boards as B
from schemas import human_labels as HL
from schemas import pins as P
from schemas import search_impressions as SI
from schemas import user_engagements as UE

log = logging.getLogger(__name__)

SOURCE = "simulated"
_TWO_53 = float(2**53)

TOPICS = {
    "recipes": ["pasta", "salad", "soup", "cookies", "curry", "smoothie", "bread", "tacos"],
    "decor": ["living room", "bedroom", "wall art", "rug", "lamp", "shelf", "mirror", "curtains"],
    "fashion": ["dress", "sneakers", "jacket", "handbag", "jeans", "scarf", "boots", "sweater"],
    "travel": ["beach", "road trip", "camping", "hotel", "city guide", "hiking", "island", "cabin"],
    "garden": ["succulents", "raised bed", "herbs", "roses", "patio", "planter", "tomatoes", "lawn"],
    "fitness": ["yoga", "workout", "running", "stretching", "pilates", "squats", "cardio", "abs"],
    "wedding": ["bouquet", "cake", "invitation", "veil", "centerpiece", "arch", "favors", "table"],
    "diy": ["crafts", "candles", "woodwork", "knitting", "macrame", "painting", "pottery", "sewing"],
    "beauty": ["nails", "makeup", "hairstyle", "skincare", "lipstick", "braids", "eyeliner", "serum"],
    "kids": ["birthday", "nursery", "toys", "lunchbox", "costume", "playroom", "games", "crafts"],
    "pets": ["dog bed", "cat tree", "aquarium", "puppy", "kitten", "collar", "treats", "grooming"],
    "tech": ["desk setup", "keyboard", "headphones", "phone case", "monitor", "laptop", "gadgets", "charger"],
}
ADJECTIVES = [
    "easy", "modern", "vintage", "cozy", "minimalist", "rustic", "boho", "healthy", "cute", "elegant",
    "budget", "colorful", "simple", "luxury", "summer", "winter", "spring", "autumn", "small", "classic",
]
TAILS = ["ideas", "inspiration", "tips", "guide", "for beginners", "hacks", "diy", "aesthetic", "2026", "trends"]
VARIANTS = ["(repost)", "- saved", "via pinner", "| favorite", "copy"]
ENGAGEMENT_DELAY_SECONDS = 20


@dataclass(frozen=True)
class SimulatedData:
    pins: DataFrame
    boards: DataFrame
    search_impressions: DataFrame
    user_engagements: DataFrame
    human_labels: DataFrame


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


def _day_start(cfg: SimulateConfig) -> int:
    return int(dt.datetime.combine(cfg.first_day, dt.time(), dt.timezone.utc).timestamp())


def query_text(gen: _Gen, q: Column, cfg: SimulateConfig) -> Column:
    """The text of query id ``q``: a deterministic function of the id (no lookup table)."""
    topic = q % cfg.n_topics
    adjective = _pick(ADJECTIVES, gen.index("q-adj", len(ADJECTIVES), q))
    noun = _topic_noun(topic, gen.index("q-noun", 64, q))
    tail = _pick(TAILS, gen.index("q-tail", len(TAILS), q))
    form = gen.index("q-form", 3, q)
    return (
        F.when(form == 0, F.concat_ws(" ", noun, tail))
        .when(form == 1, F.concat_ws(" ", adjective, noun))
        .otherwise(F.concat_ws(" ", adjective, noun, tail))
    )


def pin_relevance(gen: _Gen, q: Column, pin: Column, cfg: SimulateConfig) -> Column:
    """Latent relevance in [0, 1]: high when the pin is in the query's topic."""
    on_topic = (q % cfg.n_topics) == (pin % cfg.n_topics)
    return F.when(on_topic, 0.55).otherwise(0.0) + 0.45 * gen.uniform("rel", q, pin)


def pin_for(gen: _Gen, salt: str, q: Column, draw: Column, cfg: SimulateConfig) -> Column:
    """A pin id shown for query ``q``: Zipf within the query's topic, shifted per query."""
    per_topic = cfg.n_pins // cfg.n_topics
    topic = q % cfg.n_topics
    rank = gen.zipf(salt + "-rank", per_topic, cfg.pin_zipf, q, draw)
    shift = gen.index(salt + "-shift", per_topic, q)
    on_topic_pin = ((rank + shift) % per_topic) * cfg.n_topics + topic
    off_topic_pin = gen.index(salt + "-any", cfg.n_pins, q, draw)
    return F.when(gen.uniform(salt + "-off", q, draw) < cfg.off_topic_rate, off_topic_pin).otherwise(on_topic_pin)


def transform_pins(spark: SparkSession, cfg: SimulateConfig) -> DataFrame:
    gen = _Gen(cfg.seed)
    p = F.col("id")
    # A near-duplicate re-posts an earlier pin of the same topic: same image, title variant.
    earlier = p - cfg.n_topics * (1 + gen.index("orig", 10, p))
    near_dup = (earlier >= 0) & (gen.uniform("near-dup", p) < cfg.near_duplicate_rate)
    original = F.when(near_dup, earlier).otherwise(p)
    topic = original % cfg.n_topics
    adjective = _pick(ADJECTIVES, gen.index("p-adj", len(ADJECTIVES), original))
    noun = _topic_noun(topic, gen.index("p-noun", 64, original))
    tail = _pick(TAILS, gen.index("p-tail", len(TAILS), original))
    base_title = F.initcap(F.concat_ws(" ", adjective, noun, tail))
    title = F.when(near_dup, F.concat_ws(" ", base_title, _pick(VARIANTS, gen.index("variant", 5, p)))).otherwise(base_title)
    other = _topic_noun(topic, gen.index("p-other", 64, original))
    description = F.concat(
        F.lit("Discover "), adjective, F.lit(" "), noun, F.lit(" and "), other, F.lit(" for your "),
        _topic_name(topic), F.lit(" board. "), F.initcap(tail), F.lit(" included."),
    )
    has_link = gen.uniform("has-link", original) < 0.7
    created = F.timestamp_seconds(F.lit(_day_start(cfg)) - gen.index("created", 365 * 86400, p))
    return spark.range(0, cfg.n_pins, numPartitions=cfg.partitions).select(
        F.concat(F.lit("sim-p"), p.cast("string")).alias(P.PIN_ID),
        F.lit(SOURCE).alias(P.SOURCE),
        title.alias(P.TITLE),
        F.when(gen.uniform("has-desc", p) < 0.85, description).alias(P.DESCRIPTION),
        F.when(has_link, F.concat(F.lit("https://example.com/"), _topic_name(topic), F.lit("/"), original.cast("string"))).alias(P.LINK_URL),
        F.when(has_link, F.concat(base_title, F.lit(" | "), F.initcap(_topic_name(topic)), F.lit(" Blog"))).alias(P.LINK_TITLE),
        F.when(has_link, F.concat(F.lit("Step-by-step "), noun, F.lit(" "), tail, F.lit(" from our "), _topic_name(topic), F.lit(" editors."))).alias(P.LINK_DESCRIPTION),
        F.lit(None).cast("string").alias(P.IMAGE_PATH),
        F.concat(F.lit("sim:"), F.lpad(F.hex(F.xxhash64(F.lit(cfg.seed), F.lit("img"), original)), 16, "0")).alias(P.IMAGE_SIGNATURE),
        created.alias(P.CREATED_AT),
    )


def board_for(gen: _Gen, user: Column, pin: Column, cfg: SimulateConfig) -> Column:
    per_topic = cfg.n_boards // cfg.n_topics
    return (gen.index("board", per_topic, user, pin) * cfg.n_topics + pin % cfg.n_topics)


def transform_boards(spark: SparkSession, cfg: SimulateConfig) -> DataFrame:
    gen = _Gen(cfg.seed)
    b = F.col("id")
    topic = b % cfg.n_topics
    title = F.initcap(F.concat_ws(" ", _pick(ADJECTIVES, gen.index("b-adj", len(ADJECTIVES), b)), _topic_name(topic)))
    return spark.range(0, (cfg.n_boards // cfg.n_topics) * cfg.n_topics, numPartitions=cfg.partitions).select(
        F.concat(F.lit("sim-b"), b.cast("string")).alias(B.BOARD_ID),
        F.lit(SOURCE).alias(B.SOURCE),
        title.alias(B.TITLE),
        F.concat(F.lit("sim-u"), gen.index("b-owner", cfg.n_users, b).cast("string")).alias(B.OWNER_USER_ID),
        F.timestamp_seconds(F.lit(_day_start(cfg)) - gen.index("b-created", 730 * 86400, b)).alias(B.CREATED_AT),
    )


def transform_impressions(spark: SparkSession, cfg: SimulateConfig) -> DataFrame:
    """``days * impressions_per_day`` impressions (whole pages), with click/save outcomes."""
    gen = _Gen(cfg.seed)
    requests_per_day = cfg.impressions_per_day // cfg.page_size
    total = requests_per_day * cfg.page_size * cfg.days
    i = F.col("id")
    r = F.floor(i / cfg.page_size).cast("long")
    position = (i % cfg.page_size).cast("int")
    day = F.floor(r / requests_per_day).cast("long")
    q = gen.zipf("query", cfg.n_queries, cfg.query_zipf, r)
    user = gen.zipf("user", cfg.n_users, cfg.user_zipf, r)
    pin = pin_for(gen, "imp", q, i, cfg)
    # Requests start before 23:59, so their engagements (seconds later) fall on the same day.
    seconds = F.lit(_day_start(cfg)) + day * 86400 + gen.index("second", 86400 - 60, r)
    click_p = cfg.click_rate * pin_relevance(gen, q, pin, cfg) / F.pow(position + 1.0, F.lit(cfg.position_decay))
    clicked = gen.uniform("click", i) < click_p
    event_time = F.timestamp_seconds(seconds)
    return spark.range(0, total, numPartitions=cfg.partitions).select(
        F.concat(F.lit("sim-i"), i.cast("string")).alias(SI.IMPRESSION_ID),
        F.concat(F.lit("sim-r"), r.cast("string")).alias(SI.REQUEST_ID),
        F.concat(F.lit("sim-u"), user.cast("string")).alias(SI.USER_ID),
        query_text(gen, q, cfg).alias(SI.QUERY),
        F.concat(F.lit("sim-p"), pin.cast("string")).alias(SI.PIN_ID),
        position.alias(SI.POSITION),
        event_time.alias(SI.EVENT_TIME),
        F.to_date(event_time).alias(SI.DT),
        clicked.alias(SI.CLICKED),
        (clicked & (gen.uniform("save", i) < cfg.save_rate)).alias(SI.SAVED),
        F.lit(SOURCE).alias(SI.SOURCE),
        # Kept for deriving engagements; dropped before writing impressions.
        user.alias("_user"),
        pin.alias("_pin"),
    )


def engagements_from(impressions: DataFrame, cfg: SimulateConfig) -> DataFrame:
    """Click and save events of the impressions (a save also names the board)."""
    gen = _Gen(cfg.seed)
    engaged = impressions.filter(F.col(SI.CLICKED))
    event = F.explode(
        F.when(F.col(SI.SAVED), F.array(F.lit(UE.EVENT_CLICK), F.lit(UE.EVENT_SAVE))).otherwise(F.array(F.lit(UE.EVENT_CLICK)))
    )
    board = board_for(gen, F.col("_user"), F.col("_pin"), cfg)
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


def transform_labels(spark: SparkSession, cfg: SimulateConfig) -> DataFrame:
    """Graded 1-4 labels of sampled (query, pin) pairs, from latent relevance plus rater noise."""
    gen = _Gen(cfg.seed)
    k = F.col("id")
    q = gen.zipf("label-query", cfg.n_queries, cfg.query_zipf, k)
    pin = pin_for(gen, "label", q, k, cfg)
    noisy = pin_relevance(gen, q, pin, cfg) + (gen.uniform("label-noise", k) - 0.5) * 0.3
    grade = (F.floor(F.least(F.greatest(noisy, F.lit(0.0)), F.lit(0.999)) * 4) + 1).cast("int")
    pairs = spark.range(0, cfg.n_labels, numPartitions=cfg.partitions).select(
        F.concat(F.lit("sim-l"), k.cast("string")).alias(HL.LABEL_ID),
        query_text(gen, q, cfg).alias(HL.QUERY),
        F.concat(F.lit("sim-p"), pin.cast("string")).alias(HL.PIN_ID),
        grade.alias(HL.RELEVANCE),
        F.lit(4).alias(HL.SCALE_MAX),
        F.lit(None).cast("double").alias(HL.RELEVANCE_VARIANCE),
        (F.pmod(F.xxhash64(F.lit(cfg.seed), k), F.lit(5)) + 1).cast("int").alias(HL.FOLD),
        F.lit(SOURCE).alias(HL.SOURCE),
        k.alias("_k"),
    )
    # One label per (query, pin): keep the lowest sample id, deterministically.
    first = pairs.groupBy(HL.QUERY, HL.PIN_ID).agg(F.min("_k").alias("_k"))
    return pairs.join(first, [HL.QUERY, HL.PIN_ID, "_k"], "left_semi").drop("_k")


def transform(spark: SparkSession, cfg: SimulateConfig) -> SimulatedData:
    impressions = transform_impressions(spark, cfg)
    return SimulatedData(
        pins=transform_pins(spark, cfg),
        boards=transform_boards(spark, cfg),
        search_impressions=impressions.drop("_user", "_pin"),
        user_engagements=engagements_from(impressions, cfg),
        human_labels=transform_labels(spark, cfg),
    )


def date_range_predicate(cfg: SimulateConfig, column: str) -> str:
    end = cfg.first_day + dt.timedelta(days=cfg.days)
    return f"{column} >= DATE'{cfg.first_day.isoformat()}' AND {column} < DATE'{end.isoformat()}'"


def run(spark: SparkSession, cfg: PinpipeConfig) -> dict[str, int]:
    """Write the simulated slice of each table; returns rows written per table."""
    lake = Lake.at(cfg.lake.root)
    sim = cfg.simulate
    data = transform(spark, sim)
    source = f"source = {sql_literal(SOURCE)}"
    writes = {
        "pins": (data.pins, source),
        "boards": (data.boards, source),
        "human_labels": (data.human_labels, source),
        "search_impressions": (data.search_impressions, f"{source} AND {date_range_predicate(sim, SI.DT)}"),
        "user_engagements": (data.user_engagements, f"{source} AND {date_range_predicate(sim, UE.DT)}"),
    }
    written = {}
    for table, (rows, where) in writes.items():
        spark.sparkContext.setJobDescription(f"simulate: write {table}")
        written[table] = lake.replace_slice(rows, table, where)
    spark.sparkContext.setJobDescription(None)
    log.info(summary_line(written))
    return written


def summary_line(written: dict[str, int]) -> str:
    return "simulate: " + " ".join(f"{t}={n:,}" for t, n in written.items())


def main(argv: Sequence[str] | None = None) -> dict[str, int]:
    cfg = job_config("pinpipe simulate", __doc__.splitlines()[0], argv)
    with spark_session("pinpipe-simulate", cfg.spark) as spark:
        written = run(spark, cfg)
    print(summary_line(written))
    return written


if __name__ == "__main__":
    main()
