import datetime as dt

import pytest
from pyspark.sql import functions as F

from jobs import distill_corpus
from schemas import human_labels as HL
from schemas import pin_text_features as PTF
from schemas import search_impressions as SI


def labels_and_texts(spark):
    labels = spark.createDataFrame(
        [
            ("l1", "oak desk", "p1", 4, 4, None, 1, "cf"),
            ("l2", "oak desk", "p2", 1, 4, None, 2, "cf"),
            ("l3", "red lamp", "p3", 3, 4, None, 1, "cf"),
            ("l4", "red lamp", "p6", 2, 4, None, 1, "cf"),
        ],
        HL.HUMAN_LABELS_V1,
    )
    texts = spark.createDataFrame(
        [
            ("p1", "oak desk with drawers"),
            ("p2", "blue sofa"),
            ("p3", "red lamp"),
            ("p4", "oak desk oak"),  # never judged: not in the catalog of the labels
            ("p5", "red oak lamp"),
            ("p6", "lamp shade"),
        ],
        "pin_id string, text string",
    )
    return labels, texts


def test_candidates_are_lexical_top_k_plus_random_plus_every_judged_pair(spark):
    labels, texts = labels_and_texts(spark)
    got = distill_corpus.candidates(labels, texts, lexical_per_query=1, random_per_query=0, seed=0)
    pairs = {(r["query"], r["pin_id"]) for r in got.collect()}
    judged = {("oak desk", "p1"), ("oak desk", "p2"), ("red lamp", "p3"), ("red lamp", "p6")}
    assert pairs == judged  # the best BM25 products are judged ones here; p4/p5 are outside the catalog
    more = distill_corpus.candidates(labels, texts, lexical_per_query=0, random_per_query=4, seed=0)
    every = {(q, p) for q in ("oak desk", "red lamp") for p in ("p1", "p2", "p3", "p6")}
    assert {(r["query"], r["pin_id"]) for r in more.collect()} == every
    some = distill_corpus.candidates(labels, texts, lexical_per_query=0, random_per_query=1, seed=0).collect()
    again = distill_corpus.candidates(labels, texts, lexical_per_query=0, random_per_query=1, seed=0).collect()
    assert sorted(some) == sorted(again) and len(some) <= len(judged) + 2


@pytest.mark.slow  # ~15 s; the candidate logic is covered by the pure test above
def test_job_writes_the_corpus_as_impressions_of_its_own_source_and_replaces_it(spark, lake, cfg_for):
    labels, texts = labels_and_texts(spark)
    lake.replace_slice(labels, "human_labels", "source = 'cf'")
    feats = texts.withColumnRenamed("text", PTF.PIN_TEXT).withColumns(
        {
            f.name: F.lit(None).cast(f.dataType)
            for f in PTF.PIN_TEXT_FEATURES_V1.fields
            if f.name not in (PTF.PIN_ID, PTF.PIN_TEXT)
        }
    )
    feats = feats.withColumns({PTF.AS_OF: F.lit(dt.date(2026, 11, 1)), PTF.FEATURE_VERSION: F.lit("v1")})
    lake.replace_slice(
        feats.select(*PTF.PIN_TEXT_FEATURES_V1.fieldNames()), "pin_text_features", "feature_version = 'v1'"
    )
    cfg = cfg_for("corpus.date=2026-11-20", "corpus.lexical_per_query=2")
    first = distill_corpus.run(spark, cfg)
    again = distill_corpus.run(spark, cfg)
    rows = lake.read(spark, "search_impressions").collect()
    assert first.impressions == again.impressions == len(rows) >= 4
    assert {r[SI.SOURCE] for r in rows} == {"corpus"} and {r[SI.DT] for r in rows} == {dt.date(2026, 11, 20)}
    assert all(r[SI.POSITION] is None and not r[SI.CLICKED] and not r[SI.SAVED] for r in rows)
    assert len({r[SI.IMPRESSION_ID] for r in rows}) == len(rows)
