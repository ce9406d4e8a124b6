import datetime as dt
import re

import numpy as np
import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from jobs import student_features
from jobs.embedding_tables import embedding_lookup
from models.random_models import save_random_backbone
from models.relevance.bm25 import BM25
from models.relevance.student_settings import EncoderSettings
from models.relevance.text_encoder import TextEncoder, encoder_version
from runtime.lake import Lake
from schemas import human_labels as HL
from schemas import pin_text_features as PTF
from schemas import search_impressions as SI
from schemas import student_features as SF
from schemas import table_spec
from tests.test_score_impressions import DAY3, write_inputs
from udfs.bm25 import bm25_scores


def test_spark_bm25_equals_the_reference_bm25_over_the_whole_corpus(spark):
    docs = [
        ("a", "Grey oak sofa, oak legs"),
        ("b", "small lamp"),
        ("c", "oak desk and oak shelf with a lamp"),
        ("d", None),
        ("e", "rug rug rug"),
    ]
    pairs = [("oak lamp", "a"), ("oak lamp", "c"), ("oak lamp", "e"), ("rug", "e"), ("rug", "d"), ("sofa!", "a")]
    documents = spark.createDataFrame(docs, "pin_id string, text string")
    got = bm25_scores(spark.createDataFrame(pairs, "query string, pin_id string"), documents, 1.2, 0.75)
    scores = {(r["query"], r["pin_id"]): r["bm25"] for r in got.collect()}
    reference = BM25(k1=1.2, b=0.75).fit([t for _, t in docs])
    text = dict(docs)
    assert len(scores) == len(pairs)
    for q, pin in pairs:
        assert scores[(q, pin)] == pytest.approx(reference.score(q, text[pin]), abs=1e-9), (q, pin)
    assert scores[("oak lamp", "c")] > scores[("oak lamp", "a")] > 0
    assert scores[("rug", "d")] == 0.0


def impressions_frame(spark, rows):
    at = dt.datetime(2026, 11, 3, 12)
    full = [
        (f"i{k}", "r", None, q, pin, pos, at, at.date(), clicked, saved, "test")
        for k, (q, pin, pos, clicked, saved) in enumerate(rows)
    ]
    return spark.createDataFrame(full, SI.SEARCH_IMPRESSIONS_V1)


def test_engagement_is_smoothed_toward_its_priors_and_debiased_by_position(spark):
    rows = (
        [("lamp", "a", 0, True, True), ("lamp", "a", 0, False, False), ("Lamp ", "a", 1, True, False)]
        + [("rug", "b", 1, False, False)] * 3
        + [("rug", "a", None, False, False)]
    )
    imps = impressions_frame(spark, rows)
    pairs = spark.createDataFrame(
        [("lamp", "a"), ("rug", "b"), ("rug", "a"), ("sofa", "z")], "query string, pin_id string"
    )
    got = {(r[SF.QUERY], r[SF.PIN_ID]): r for r in student_features.engagement(pairs, imps, 2.0).collect()}
    ctr0, save0, m = 2 / 7, 1 / 7, 2.0
    pos_ctr = {0: 1 / 2, 1: 1 / 4}
    pin_a_ctr = (2 + m * ctr0) / (4 + m)
    lamp_a = got[("lamp", "a")]
    assert lamp_a[SF.PIN_IMPRESSIONS] == 4 and lamp_a[SF.QUERY_PIN_IMPRESSIONS] == 3
    assert lamp_a[SF.PIN_CTR] == pytest.approx(pin_a_ctr)
    assert lamp_a[SF.PIN_SAVE_RATE] == pytest.approx((1 + m * save0) / (4 + m))
    assert lamp_a[SF.QUERY_PIN_CTR] == pytest.approx((2 + m * pin_a_ctr) / (3 + m))
    expected_clicks = pos_ctr[0] * 2 + pos_ctr[1]
    assert lamp_a[SF.QUERY_PIN_COEC] == pytest.approx((2 + m * ctr0) / (expected_clicks + m * ctr0))
    # No clicks at a position that gets few: COEC below 1, smoothed; an unknown position uses the window CTR.
    rug_b = got[("rug", "b")]
    assert rug_b[SF.QUERY_PIN_COEC] == pytest.approx((0 + m * ctr0) / (3 * pos_ctr[1] + m * ctr0))
    assert got[("rug", "a")][SF.QUERY_PIN_COEC] == pytest.approx((m * ctr0) / (ctr0 + m * ctr0))
    # Never shown: the priors themselves.
    sofa = got[("sofa", "z")]
    assert sofa[SF.PIN_IMPRESSIONS] == 0 and sofa[SF.PIN_CTR] == pytest.approx(ctr0)
    assert sofa[SF.QUERY_PIN_CTR] == pytest.approx(ctr0) and sofa[SF.QUERY_PIN_COEC] == pytest.approx(1.0)


@pytest.fixture
def features_lake(spark, lake, tmp_path):
    write_inputs(spark, lake)
    labels = spark.createDataFrame(
        [("l1", "Sofa Ideas", "p0", 4, 4, None, 1, "test"), ("l2", "quilt", "p9", 1, 4, None, 2, "test")],
        HL.HUMAN_LABELS_V1,
    )
    lake.replace_slice(labels, "human_labels", "source = 'test'")
    return save_random_backbone(tmp_path / "encoder", "bert")


def test_job_embeds_each_text_once_and_a_rerun_embeds_nothing_and_leaves_the_table_equal(
    spark, lake, cfg_for, features_lake, monkeypatch
):
    cfg = cfg_for(
        f"student_features.encoder_path={features_lake}",
        f"student_features.as_of={DAY3.isoformat()}",
        "student_features.window_days=2",
    )
    plans = {}
    replace_slice = Lake.replace_slice

    def recording(self, frame, table, where):  # the optimized plan of each slice written
        plans[table] = frame._jdf.queryExecution().optimizedPlan().toString()
        return replace_slice(self, frame, table, where)

    monkeypatch.setattr(Lake, "replace_slice", recording)
    first = student_features.run(spark, cfg)
    # The feature rows take their cosines from the cache after the MERGE: the encoder (a Python
    # UDF) ran once, for the MERGE, and is not in the plan of the rows written after it; the only
    # Python there is the queries' Unicode normalisation (udfs.text_clean.normalize_query).
    plan = plans["student_features"]
    assert "MapInPandas" not in plan and "MapInArrow" not in plan
    assert set(re.findall(r"ArrowEvalPython \[(\w+)\(", plan)) == {"_nfkc_udf"}
    assert "BatchEvalPython" not in plan
    table = lake.read(spark, "student_features").filter(F.col(SF.FEATURE_VERSION) == "v1")
    rows = table.toPandas()
    # Window: days 2 and 3 only; plus the two labeled pairs (normalised query).
    imps = lake.read(spark, "search_impressions").filter(F.col(SI.DT) >= F.lit(DAY3 - dt.timedelta(days=1)))
    shown = {
        (" ".join(r[SI.QUERY].split()).lower(), r[SI.PIN_ID])
        for r in imps.collect()
        if r[SI.QUERY] and r[SI.QUERY].strip() and r[SI.PIN_ID] not in ("p404", "p58")
    }
    assert set(zip(rows[SF.QUERY], rows[SF.PIN_ID], strict=True)) == shown | {("sofa ideas", "p0"), ("quilt", "p9")}
    assert first.quarantined > 0  # p404 / p58: no pin text
    assert first.embedded == rows[SF.QUERY].nunique() + rows[SF.PIN_ID].nunique()  # distinct texts, once each
    # Through the lookup, the rows' embeddings are the encoder's own, L2-normalised, of the
    # query and of the pin text; the cosine is their dot product.
    encoder = TextEncoder(EncoderSettings(str(features_lake)))
    lookup = embedding_lookup(lake.read(spark, "text_embeddings"), table)
    assert len(lookup) == first.embedded
    q, p = lookup.gather(rows[SF.QUERY_TEXT_HASH].to_numpy()), lookup.gather(rows[SF.PIN_TEXT_HASH].to_numpy())
    np.testing.assert_allclose(q[:5], encoder.encode(list(rows[SF.QUERY].iloc[:5])), atol=1e-5)
    pin_text = dict(lake.read(spark, "pin_text_features").select(PTF.PIN_ID, PTF.PIN_TEXT).collect())
    np.testing.assert_allclose(p[:5], encoder.encode([pin_text[pin] for pin in rows[SF.PIN_ID].iloc[:5]]), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(rows[SF.COSINE], (q * p).sum(1), atol=1e-5)
    assert set(rows[SF.ENCODER_VERSION]) == {encoder_version(EncoderSettings(str(features_lake)))}
    # dense_vector is the dense columns of the same row, in SF.DENSE order, as float32.
    named = rows[list(SF.DENSE)].to_numpy(np.float64).astype(np.float32)
    np.testing.assert_array_equal(np.stack(rows[SF.DENSE_VECTOR].to_numpy()), named)
    before = lake.read(spark, "student_features").toPandas()
    second = student_features.run(spark, cfg)
    assert second.embedded == 0 and second.written == first.written
    assert lake.read(spark, "text_embeddings").count() == first.embedded
    assertDataFrameEqual(
        lake.read(spark, "student_features"), spark.createDataFrame(before, table_spec("student_features").schema)
    )
