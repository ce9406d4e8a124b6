import datetime as dt

import pytest
from PIL import Image
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from jobs import ingest, pin_features, simulate
from jobs.pin_features import FEATURE_FIELDS, assemble_pin_text, board_titles, engaged_queries, truncate
from models.random_models import save_random_blip
from schemas import boards as B
from schemas import pin_captions as PC
from schemas import pins as P
from schemas import search_impressions as SI
from schemas import user_engagements as UE

BUDGETS = dict.fromkeys(FEATURE_FIELDS, 30)
PINS = (
    "pin_id string, source string, title string, description string, link_url string, link_title string, "
    "link_description string, image_path string, image_signature string, created_at timestamp"
)


def test_truncate_cuts_at_word_boundary():
    assert truncate("short", 10) == "short"
    assert truncate("alpha beta gamma delta", 12) == "alpha beta"
    assert truncate("supercalifragilistic", 5) == "super"


def test_assembly_tags_orders_and_budgets_fields():
    fields = {
        "title": "Oak Rack",
        "description": "x " * 100,
        "caption": None,
        "boards": "Kitchen | Wine",
        "queries": "",
        "link": "Shop - Best racks",
    }
    text = assemble_pin_text(fields, BUDGETS)
    assert text.startswith("[title] Oak Rack [description] x x")
    assert "[caption]" not in text and "[queries]" not in text
    assert text.endswith("[boards] Kitchen | Wine [link] Shop - Best racks")
    described = text.split("[description] ")[1].split(" [boards]")[0]
    assert len(described) <= 30  # the long field does not crowd out the ones after it
    assert assemble_pin_text(dict.fromkeys(FEATURE_FIELDS), BUDGETS) is None


def test_board_titles_rank_by_saves(spark):
    eng = spark.createDataFrame(
        [
            ("u1", "p1", "save", "b1"),
            ("u2", "p1", "save", "b1"),
            ("u3", "p1", "save", "b2"),
            ("u1", "p1", "save", "b3"),
            ("u1", "p1", "click", None),
            ("u1", "p2", "save", "b2"),
        ],
        "user_id string, pin_id string, event_type string, board_id string",
    )
    boards = spark.createDataFrame(
        [("b1", "Wine <b>Nook</b>"), ("b2", "Kitchen"), ("b3", "Zebra")], "board_id string, title string"
    )
    got = {r.pin_id: r.board_titles for r in board_titles(eng, boards, 2).collect()}
    assert got == {"p1": ["Wine Nook", "Kitchen"], "p2": ["Kitchen"]}


def test_engaged_queries_use_the_trailing_window(spark):
    imp = spark.createDataFrame(
        [
            ("p1", "Wine Rack", dt.date(2026, 11, 9), True, True),
            ("p1", "wine rack", dt.date(2026, 11, 5), True, False),
            ("p1", "oak", dt.date(2026, 11, 8), True, False),
            ("p1", "old", dt.date(2026, 10, 1), True, True),
            ("p1", "future", dt.date(2026, 11, 10), True, True),
            ("p1", "seen", dt.date(2026, 11, 8), False, False),
        ],
        "pin_id string, query string, dt date, clicked boolean, saved boolean",
    )
    got = engaged_queries(imp, dt.date(2026, 11, 10), window_days=7, k=5).collect()
    assert [(r.pin_id, r.engaged_queries) for r in got] == [("p1", ["wine rack", "oak"])]


@pytest.fixture
def image_pins(spark, tmp_path):
    """Pins with images (two share one image signature), one pin with no text at all."""
    folder = tmp_path / "images"
    folder.mkdir()
    rows = []
    for i in range(4):
        img = Image.new("RGB", (48, 48), (40 * i, 255 - 50 * i, 90))
        img.paste((255, 255, 255), (i * 10, 0, i * 10 + 8, 48))
        img.save(folder / f"{i}.jpg")
        rows.append(
            (f"img:{i}", "test", f"Pin {i}", None, None, None, None, str(folder / f"{i}.jpg"), f"dh:{i:016x}", None)
        )
    rows.append(
        ("img:dup", "test", "Pin dup", None, None, None, None, str(folder / "0.jpg"), "dh:0000000000000000", None)
    )
    rows.append(("img:blank", "test", "  ", "<p></p>", None, None, None, None, None, None))
    return folder, spark.createDataFrame(rows, PINS)


@pytest.mark.slow  # ~80 s on 2 cores (BLIP captions twice through Spark): in `make test-slow`, which CI runs
def test_captions_are_incremental_and_features_idempotent(spark, lake, cfg_for, image_pins, tmp_path):
    folder, pins = image_pins
    lake.replace_slice(pins, "pins", "source = 'test'")
    blip = save_random_blip(tmp_path / "blip")
    cfg = cfg_for(f"captioner.model_path={blip}", "captioner.max_new_tokens=6", "features.as_of=2026-11-10")

    first = pin_features.run(spark, cfg)
    assert (first.captioned, first.caption_errors) == (4, 0)  # 5 image pins, 4 signatures
    assert (first.features, first.quarantined) == (5, 1)
    features = lake.read(spark, "pin_text_features")
    row = {r.pin_id: r for r in features.collect()}
    assert row["img:dup"].caption == row["img:0"].caption is not None
    assert row["img:1"].pin_text.startswith("[title] Pin 1 [caption] ")
    assert first.captioner_version.startswith("blip-")
    versions = {r.captioner_version for r in features.select("captioner_version").distinct().collect()}
    assert versions == {first.captioner_version}  # every row, none null
    reasons = lake.read(spark, "quarantine").filter("source = 'pin_features'").collect()
    assert [r.reason for r in reasons] == ["no text for pin"] and "img:blank" in reasons[0].raw

    before = features.collect()
    again = pin_features.run(spark, cfg)
    assert again.captioned == 0
    assertDataFrameEqual(lake.read(spark, "pin_text_features"), before)

    # 10 new pins: 8 new images, 2 re-posts of known images -> exactly 8 captions
    new_rows = []
    for i in range(10, 18):
        Image.new("RGB", (40, 40), (i * 12, 30, 200)).save(folder / f"{i}.jpg")
        new_rows.append(
            (f"img:{i}", "test", f"New {i}", None, None, None, None, str(folder / f"{i}.jpg"), f"dh:{i:016x}", None)
        )
    new_rows += [
        (f"img:re{i}", "test", "Repost", None, None, None, None, str(folder / f"{i}.jpg"), f"dh:{i:016x}", None)
        for i in (1, 2)
    ]
    lake.replace_slice(pins.union(spark.createDataFrame(new_rows, PINS)), "pins", "source = 'test'")
    third = pin_features.run(spark, cfg)
    assert third.captioned == 8
    captions = lake.read(spark, "pin_captions")
    assert captions.count() == captions.select("image_signature").distinct().count() == 12


def test_broken_images_end_as_null_captions_and_the_job_succeeds(spark, lake, cfg_for, tmp_path):
    (tmp_path / "zero.jpg").write_bytes(b"")
    rows = [
        ("b:1", "test", "Zero", None, None, None, None, str(tmp_path / "zero.jpg"), "dh:1", None),
        ("b:2", "test", "Gone", None, None, None, None, str(tmp_path / "gone.jpg"), "dh:2", None),
    ]
    lake.replace_slice(spark.createDataFrame(rows, PINS), "pins", "source = 'test'")
    cfg = cfg_for(f"captioner.model_path={save_random_blip(tmp_path / 'blip')}", "features.as_of=2026-11-10")
    report = pin_features.run(spark, cfg)
    assert (report.captioned, report.caption_errors, report.features) == (2, 2, 2)
    errors = {r.image_signature: r.error for r in lake.read(spark, "pin_captions").collect()}
    assert errors["dh:1"] == "not a decodable image" and errors["dh:2"].startswith("image not found")
    assert {r.caption for r in lake.read(spark, "pin_text_features").collect()} == {None}


@pytest.mark.slow  # every CrowdFlower pin plus a simulated catalog: in `make test-slow`
@pytest.mark.shared_data
def test_crowdflower_and_simulated_pins_all_get_text(spark, lake, cfg_for, shared_data):
    cfg = cfg_for(
        f"ingest.data_root={shared_data}",
        "ingest.sources=[crowdflower]",
        "simulate.days=1",
        "simulate.impressions_per_day=20000",
        "simulate.n_pins=3000",
        "simulate.n_labels=0",
        "simulate.partitions=2",
        "features.as_of=2026-11-02",
    )
    ingest.run(spark, cfg)
    simulate.run(spark, cfg)
    report = pin_features.run(spark, cfg)
    features = lake.read(spark, "pin_text_features")
    assert report.features == features.count() == lake.read(spark, "pins").count() == 6985 + 3000
    assert features.filter(F.col("pin_text").isNull() | (F.length("pin_text") == 0)).count() == 0
    sim = features.filter(F.col("pin_id").startswith("sim-"))
    assert sim.filter(F.size("engaged_queries") > 0).count() > 100
    assert sim.filter(F.size("board_titles") > 0).count() > 50
    assert features.filter(F.col("description").contains("Ã")).count() == 0  # mojibake repaired


def test_transform_assembles_text_of_every_pin_from_inline_frames(spark):
    pins = spark.createDataFrame(
        [
            ("a", "test", "Oak <b>desk</b>", None, None, "Desk guide", "How to", None, "sig-a", None),
            ("b", "test", "  ", None, None, None, None, None, None, None),
        ],
        P.PINS_V1,
    )
    boards = spark.createDataFrame([("b1", "test", "Home Office", None, None)], B.BOARDS_V1)
    engagements = spark.createDataFrame(
        [("u1", "a", "save", dt.datetime(2026, 11, 1, 10), dt.date(2026, 11, 1), None, None, "b1", "test")],
        UE.USER_ENGAGEMENTS_V1,
    )
    impressions = spark.createDataFrame(
        [
            (f"i{k}", "r", "u1", q, "a", 0, dt.datetime(2026, 11, d), dt.date(2026, 11, d), True, False, "test")
            for k, (q, d) in enumerate([("Desk Ideas", 1), ("desk ideas", 2), ("old query", 9)])
        ],
        SI.SEARCH_IMPRESSIONS_V1,
    )
    captions = spark.createDataFrame(
        [("sig-a", "blip-x", "a wooden desk", None, None, dt.datetime(2026, 11, 1))], PC.PIN_CAPTIONS_V1
    )
    inputs = pin_features.FeatureInputs(pins, captions, boards, engagements, impressions, "blip-x")
    out = pin_features.transform(
        inputs,
        captioner=None,
        as_of=dt.date(2026, 11, 5),
        budgets=dict.fromkeys(FEATURE_FIELDS, 100),
        top_k_boards=2,
        top_k_queries=2,
        query_window_days=3,
        feature_version="v9",
    )
    assert out.new_captions is None and out.feature_version == "v9"
    (row,) = out.features.collect()
    assert row.pin_text == (
        "[title] Oak desk [caption] a wooden desk [boards] Home Office [queries] desk ideas [link] Desk guide - How to"
    )
    assert (row.captioner_version, row.as_of, row.feature_version) == ("blip-x", dt.date(2026, 11, 5), "v9")
    assert [r.reason for r in out.quarantine.collect()] == ["no text for pin"]
