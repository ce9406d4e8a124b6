import dataclasses
import datetime as dt

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from jobs import simulate
from jobs.config import load_config

SMALL = [
    "simulate.days=2",
    "simulate.impressions_per_day=5010",
    "simulate.page_size=10",
    "simulate.n_pins=2400",
    "simulate.n_queries=500",
    "simulate.n_users=800",
    "simulate.n_boards=240",
    "simulate.n_labels=300",
    "simulate.partitions=2",
    "simulate.near_duplicate_rate=0.1",
]


@pytest.fixture(scope="module")
def cfg():
    return load_config("local", overrides=SMALL)


@pytest.fixture(scope="module")
def traffic(cfg):
    return simulate.Traffic.of(cfg.simulate)


@pytest.fixture(scope="module")
def data(spark, cfg, traffic):
    return simulate.transform(simulate.read(spark, cfg), traffic=traffic)


def id_ranges(spark, cfg, partitions):
    """The same ids as ``read`` makes, built inline with another partitioning."""
    sim, t = cfg.simulate, simulate.Traffic.of(cfg.simulate)

    def ids(n):
        return spark.createDataFrame([(i,) for i in range(n)], "id long").repartition(partitions)

    return simulate.IdRanges(
        ids(t.n_pins),
        ids(t.n_boards // t.n_topics * t.n_topics),
        ids(t.requests_per_day * t.page_size * t.days),
        ids(sim.n_labels),
    )


def test_same_seed_same_data_on_any_partitioning(spark, cfg, traffic, data):
    other = simulate.transform(id_ranges(spark, cfg, 3), traffic=traffic)
    assertDataFrameEqual(other.search_impressions, data.search_impressions)
    assertDataFrameEqual(other.pins, data.pins)
    assertDataFrameEqual(other.human_labels, data.human_labels)
    reseeded = simulate.transform(
        simulate.read(spark, cfg), traffic=dataclasses.replace(traffic, seed=traffic.seed + 1)
    )
    assert (
        reseeded.search_impressions.select("query", "pin_id")
        .exceptAll(data.search_impressions.select("query", "pin_id"))
        .count()
        > 0
    )


def test_impressions_shape(data):
    imp = data.search_impressions
    stats = imp.agg(
        F.count("*").alias("n"),
        F.countDistinct("impression_id").alias("ids"),
        F.min("position").alias("pmin"),
        F.max("position").alias("pmax"),
        F.min("dt").alias("d0"),
        F.max("dt").alias("d1"),
        F.countDistinct("request_id").alias("requests"),
    ).first()
    assert stats.n == stats.ids == 2 * 501 * 10  # whole pages: 5010 // 10 requests a day
    assert (stats.pmin, stats.pmax) == (0, 9)
    assert (stats.d0, stats.d1) == (dt.date(2026, 11, 1), dt.date(2026, 11, 2))
    assert stats.requests == 2 * 501
    # one query and one user per request
    per_request = imp.groupBy("request_id").agg(
        F.countDistinct("query").alias("q"), F.countDistinct("user_id").alias("u")
    )
    assert per_request.filter("q != 1 OR u != 1").count() == 0


def test_traffic_is_skewed_with_repeated_pairs_and_position_bias(data):
    imp = data.search_impressions
    n = imp.count()
    top_query_share = imp.groupBy("query").count().agg(F.max("count")).first()[0] / n
    assert top_query_share > 0.05  # Zipf head; uniform over 500 queries would be ~0.002
    pairs = imp.select("query", "pin_id").distinct().count()
    assert pairs < 0.8 * n
    ctr = {
        r.position: r.ctr
        for r in imp.groupBy("position").agg(F.avg(F.col("clicked").cast("double")).alias("ctr")).collect()
    }
    assert ctr[0] > 1.5 * ctr[9] > 0
    assert imp.filter("saved AND NOT clicked").count() == 0


def test_near_duplicates_share_image_signature(data):
    pins = data.pins
    groups = pins.groupBy("image_signature").agg(F.count("*").alias("n"), F.collect_list("title").alias("titles"))
    dup_groups = groups.filter("n > 1").collect()
    assert dup_groups, "expected near-duplicate pins"
    # a re-post's title is its original's title plus a variant suffix
    for g in dup_groups[:20]:
        shortest = min(g.titles, key=len)
        assert all(t.startswith(shortest) for t in g.titles)
    assert pins.filter("title IS NULL OR pin_id IS NULL").count() == 0


def test_each_pin_has_its_topic_as_its_one_attribute(data, traffic):
    topics = data.item_attributes
    assert topics.count() == data.pins.count() == topics.select("pin_id").distinct().count()
    assert topics.select("attribute").distinct().count() == traffic.n_topics
    assert topics.filter("source != 'simulated' OR attribute NOT LIKE 'sim-t%'").count() == 0
    # the same topic the pin's text was written from: its link names it (https://example.com/<topic>/...)
    named = data.pins.filter("link_url IS NOT NULL").select(
        "pin_id", F.split("link_url", "/").getItem(3).alias("topic_name")
    )
    pairs = named.join(topics, "pin_id").select("attribute", "topic_name").distinct()
    assert pairs.count() == traffic.n_topics  # one name per topic (24 topics reuse 12 names)


def test_engagements_follow_impressions(data):
    imp, eng = data.search_impressions, data.user_engagements
    assert eng.filter("event_type = 'click'").count() == imp.filter("clicked").count()
    assert eng.filter("event_type = 'save'").count() == imp.filter("saved").count()
    saves = eng.filter("event_type = 'save'")
    assert saves.filter("board_id IS NULL").count() == 0
    assert saves.join(data.boards, "board_id", "left_anti").count() == 0  # every board exists


def test_labels_are_unique_graded_pairs(data):
    labels = data.human_labels
    assert labels.count() == labels.select("query", "pin_id").distinct().count() > 100
    grades = {r.relevance for r in labels.select("relevance").distinct().collect()}
    assert grades <= {1, 2, 3, 4} and len(grades) >= 3


@pytest.mark.slow  # ~25 s on 2 cores (three runs of the job): in `make test-slow`, which CI runs
def test_run_writes_tables_idempotently_and_adds_new_days(spark, lake, cfg_for):
    cfg = cfg_for(*SMALL)
    first = simulate.run(spark, cfg).written
    assert first["search_impressions"] == 10020
    again = simulate.run(spark, cfg).written
    assert again == first
    counts = {t: lake.read(spark, t).count() for t in first}
    assert counts == first
    engagements = lake.read(spark, "user_engagements")
    assert engagements.filter(F.to_date("event_time") != F.col("dt")).count() == 0
    # the next day is a new slice: the first two days stay as they were
    simulate.run(spark, cfg_for(*SMALL, "simulate.start_date=2026-11-03", "simulate.days=1"))
    days = {r.dt: r["count"] for r in lake.read(spark, "search_impressions").groupBy("dt").count().collect()}
    assert days == {dt.date(2026, 11, 1): 5010, dt.date(2026, 11, 2): 5010, dt.date(2026, 11, 3): 5010}
    old_days = lake.read(spark, "user_engagements").filter("dt < DATE'2026-11-03'").count()
    assert old_days == first["user_engagements"]
