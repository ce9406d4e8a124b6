import csv
import datetime as dt
import json

import pytest
from delta.tables import DeltaTable
from PIL import Image
from pyspark.sql import Row
from pyspark.testing import assertDataFrameEqual

from jobs import ingest
from jobs.sources import crowdflower
from jobs.sources.batch import IngestFileError
from runtime.config import ConfigError
from runtime.validation import InputSchemaError


def write_cf(folder, rows, header=crowdflower.CROWDFLOWER_COLUMNS):
    """``rows`` as a CrowdFlower CSV in ``folder`` (None -> empty field); its path."""
    path = folder / f"labels-{len(list(folder.glob('labels-*.csv')))}.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(["" if v is None else v for v in row] for row in rows)
    return path


def cf_rows(spark, folder, rows):
    """``rows`` read back through the job's own CSV reader."""
    return ingest.read_crowdflower(spark, str(write_cf(folder, rows)))


def quarantine_by_raw_id(batch):
    return {next(csv.reader([r.raw]))[0] or None: r.reason for r in batch.quarantine.collect()}


def test_crowdflower_valid_rows_become_labels_and_pins(spark, tmp_path):
    batch = ingest.transform_crowdflower(
        cf_rows(
            spark,
            tmp_path,
            [
                ("1", " wine rack ", "Oak Rack", "Holds 6", "4", "0.0", "5"),
                ("2", "projector", "Oak Rack", "Holds 6", "2", "", "1"),  # same product -> same pin
                ("3", "projector", "Pro8200", "  ", "3", "0.471", ""),
            ],
        ),
        scale_max=4,
    )
    labels = batch.outputs["human_labels"].orderBy("label_id").collect()
    assert [(r.label_id, r.query, r.relevance, r.scale_max, r.relevance_variance, r.fold) for r in labels] == [
        ("crowdflower:1", "wine rack", 4, 4, 0.0, 5),
        ("crowdflower:2", "projector", 2, 4, None, 1),
        ("crowdflower:3", "projector", 3, 4, 0.471, None),
    ]
    assert labels[0].pin_id == labels[1].pin_id != labels[2].pin_id
    pins = {r.title: r for r in batch.outputs["pins"].collect()}
    assert set(pins) == {"Oak Rack", "Pro8200"}
    assert pins["Pro8200"].description is None and pins["Oak Rack"].description == "Holds 6"
    assert pins["Oak Rack"].pin_id == labels[0].pin_id
    assert batch.quarantine.count() == 0


def test_crowdflower_bad_rows_are_quarantined_with_reasons(spark, tmp_path):
    batch = ingest.transform_crowdflower(
        cf_rows(
            spark,
            tmp_path,
            [
                ("10", "ok", "T", "D", "1", "0.5", "2"),
                (None, "q", "T", "D", "3", "0", "1"),
                ("12", "   ", "T", "D", "3", "0", "1"),
                ("13", "q", "T", "D", "three", "0", "1"),
                ("14", "q", "T", "D", "5", "0", "1"),
                ("15", "q", "T", "D", "0", "0", "1"),
                ("16", "q", "T", "D", "2.5", "0", "1"),
                ("17", "q", "T", "D", "2", "lots", "1"),
                ("18", "q", "T", "D", "2", "-1", "1"),
                ("19", "q", "T", "D", "2", "0", "x"),
                ("20", "q", "", None, "2", "0", "1"),
                ("21", "q", "T", "D", "2", "0", "1"),
                ("21", "q", "T2", "D", "3", "0", "1"),
                ("22", "q", "T", "D", None, "0", "1"),
            ],
        ),
        scale_max=4,
    )
    assert quarantine_by_raw_id(batch) == {
        None: "missing id",
        "12": "empty query",
        "13": "unparseable median_relevance",
        "14": "median_relevance outside 1..4",
        "15": "median_relevance outside 1..4",
        "16": "non-integer median_relevance",
        "17": "unparseable relevance_variance",
        "18": "negative relevance_variance",
        "19": "unparseable fold",
        "20": "no product text",
        "21": "duplicate id",
        "22": "unparseable median_relevance",
    }
    assert batch.quarantine.filter("reason = 'duplicate id'").count() == 2  # both copies
    assert [r.label_id for r in batch.outputs["human_labels"].collect()] == ["crowdflower:10"]
    assert {r.source for r in batch.quarantine.collect()} == {"crowdflower"}


def test_crowdflower_missing_column_fails_fast_naming_columns(spark, tmp_path, cfg_for):
    csv = tmp_path / "data" / "crowdflower" / "labels.csv"
    csv.parent.mkdir(parents=True)
    csv.write_text("id,q,product_title,product_description,median_relevance,relevance_variance,fold\n1,a,b,c,4,0,1\n")
    cfg = cfg_for(f"ingest.data_root={tmp_path / 'data'}", "ingest.sources=[crowdflower]")
    with pytest.raises(InputSchemaError) as err:
        ingest.run(spark, cfg)
    message = str(err.value)
    assert "missing columns ['query']" in message
    assert message.endswith(
        "present: ['id', 'q', 'product_title', 'product_description', 'median_relevance', 'relevance_variance', 'fold']"
    )  # the input's columns, not the reader's own (_line, _raw, _problem)


def test_s3rec_user_with_100k_items_is_ingested_beside_short_and_bad_lines(spark):
    long_line = "7 " + " ".join(str(i % 5000 + 1) for i in range(100_000))
    lines = spark.createDataFrame([(long_line,), ("\t8  1\t2 ",), ("9 1 2x",), ("10 1 -2",)], "value string")
    batch = ingest.transform_s3rec(lines, "Long", dt.datetime(2020, 1, 1), 1)
    events = batch.outputs["user_engagements"].groupBy("user_id").count()
    assert {r.user_id: r["count"] for r in events.collect()} == {"s3rec-long:u7": 100_000, "s3rec-long:u8": 2}
    assert {r.raw: r.reason for r in batch.quarantine.collect()} == {
        "9 1 2x": "unparseable id",
        "10 1 -2": "unparseable id",
    }


def test_s3rec_lines_become_ordered_events(spark):
    lines = spark.createDataFrame(
        [("1 10 11 12",), ("2 10",), ("3",), ("x 4 5",), ("",), ("4 7 8",), ("4 9",)], "value string"
    )
    start = dt.datetime(2020, 1, 1)
    batch = ingest.transform_s3rec(lines, "Beauty", start, 3600)
    expected = spark.createDataFrame(
        [
            Row(
                user_id="s3rec-beauty:u1", pin_id="s3rec-beauty:i10", seq_index=0, event_time=dt.datetime(2020, 1, 1, 0)
            ),
            Row(
                user_id="s3rec-beauty:u1", pin_id="s3rec-beauty:i11", seq_index=1, event_time=dt.datetime(2020, 1, 1, 1)
            ),
            Row(
                user_id="s3rec-beauty:u1", pin_id="s3rec-beauty:i12", seq_index=2, event_time=dt.datetime(2020, 1, 1, 2)
            ),
            Row(
                user_id="s3rec-beauty:u2", pin_id="s3rec-beauty:i10", seq_index=0, event_time=dt.datetime(2020, 1, 1, 0)
            ),
        ],
        "user_id string, pin_id string, seq_index int, event_time timestamp",
    )
    got = batch.outputs["user_engagements"]
    assertDataFrameEqual(got.select("user_id", "pin_id", "seq_index", "event_time"), expected)
    assert {r.source for r in got.collect()} == {"s3rec_beauty"}
    reasons = {r.raw: r.reason for r in batch.quarantine.collect()}
    assert reasons == {
        "3": "empty sequence",
        "x 4 5": "unparseable id",
        "": "empty line",
        "4 7 8": "duplicate id",
        "4 9": "duplicate id",
    }
    (ledger,) = batch.ledgers
    assert (ledger.what, ledger.table, ledger.key, ledger.read.count()) == ("lines", "user_engagements", "user_id", 7)


@pytest.fixture
def coco_dir(tmp_path):
    folder = tmp_path / "coco"
    (folder / "images").mkdir(parents=True)
    for name, color in (("a.jpg", (200, 10, 10)), ("b.jpg", (10, 10, 200))):
        img = Image.new("RGB", (32, 24), color)
        img.putpixel((3, 3), (255, 255, 255))
        img.save(folder / "images" / name)
    (folder / "images" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    doc = {
        "images": [
            {"id": 1, "file_name": "a.jpg"},
            {"id": 2, "file_name": "b.jpg"},
            {"id": 3, "file_name": "broken.jpg"},
            {"id": 4, "file_name": "missing.jpg"},
            {"id": 5, "file_name": ""},
            {"id": 6, "file_name": "a.jpg"},
            {"id": 6, "file_name": "b.jpg"},
        ],
        "annotations": [
            {"image_id": 1, "caption": "A red square."},
            {"image_id": 1, "caption": " "},
            {"image_id": 2, "caption": "A blue square."},
            {"image_id": 3, "caption": "Broken."},
            {"image_id": 99, "caption": "Nobody."},
        ],
    }
    (folder / "captions.json").write_text(json.dumps(doc))
    return folder


def test_coco_images_become_pins_and_bad_ones_are_quarantined(spark, coco_dir):
    doc = ingest.read_json_document(spark, str(coco_dir / "captions.json"))
    batch = ingest.transform_coco(doc, str(coco_dir / "images"))
    pins = {r.pin_id: r for r in batch.outputs["pins"].collect()}
    assert set(pins) == {"coco:1", "coco:2"}
    assert pins["coco:1"].image_path == str(coco_dir / "images" / "a.jpg")
    assert pins["coco:1"].image_signature.startswith("dh:")
    assert pins["coco:1"].image_signature != pins["coco:2"].image_signature
    captions = sorted((r.pin_id, r.caption) for r in batch.outputs["reference_captions"].collect())
    assert captions == [("coco:1", "A red square."), ("coco:2", "A blue square.")]
    reasons = sorted(
        (r.target_table, json.loads(r.raw).get("id", json.loads(r.raw).get("image_id")), r.reason.split(":")[0])
        for r in batch.quarantine.collect()
    )
    assert reasons == [
        ("pins", "3", "unreadable image path"),
        ("pins", "4", "unreadable image path"),
        ("pins", "5", "missing file_name"),
        ("pins", "6", "duplicate id"),
        ("pins", "6", "duplicate id"),
        ("reference_captions", "1", "empty caption"),
        ("reference_captions", "3", "unknown or quarantined image_id"),
        ("reference_captions", "99", "unknown or quarantined image_id"),
    ]


def test_coco_ids_that_are_not_64_bit_integers_are_quarantined_not_fatal(spark, tmp_path):
    path = tmp_path / "captions.json"
    images = [{"id": "one", "file_name": "a.jpg"}, {"id": 10**25, "file_name": "a.jpg"}, {"id": [1], "file_name": "a"}]
    path.write_text(json.dumps({"images": images, "annotations": [{"image_id": 10**30, "caption": "x"}]}))
    batch = ingest.transform_coco(ingest.read_json_document(spark, str(path)), str(tmp_path))
    reasons = sorted((r.target_table, r.reason) for r in batch.quarantine.collect())
    assert reasons == [
        ("pins", "unparseable id (not a 64-bit integer)"),
        ("pins", "unparseable id (not a 64-bit integer)"),
        ("pins", "unparseable id (not a 64-bit integer)"),
        ("reference_captions", "unparseable image_id (not a 64-bit integer)"),
    ]


def test_coco_missing_section_fails_fast(spark, tmp_path):
    path = tmp_path / "captions.json"
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg"}]}))
    with pytest.raises(InputSchemaError, match=r"missing sections \['annotations'\]; a COCO captions file has both"):
        ingest.read_json_document(spark, str(path))


@pytest.mark.slow  # real data at full size, twice: in `make test-slow` (CI runs both)
@pytest.mark.shared_data
def test_real_data_counts_history_and_idempotent_rerun(spark, lake, cfg_for, shared_data):
    cfg = cfg_for(f"ingest.data_root={shared_data}", "ingest.s3rec_datasets=[Beauty]")
    first = {r.source: r for r in ingest.run(spark, cfg).sources}
    assert first["crowdflower"].written["human_labels"] == 7109
    assert first["s3rec_beauty"].written["user_engagements"] == 198502
    lines, attributes = first["s3rec_beauty"].reconciled
    assert lines.line() == "lines read 22,363 = written 22,363 + quarantined 0"
    assert attributes.line() == "attribute entries read 12,101 = written 12,101 + quarantined 0"
    assert first["coco"].written["pins"] == 28
    assert first["coco"].written["reference_captions"] == 140
    assert all(not r.quarantined for r in first.values())
    history = DeltaTable.forPath(spark, lake.table_path("pins")).history().collect()
    assert len(history) >= 2 and history[0].operation == "WRITE"

    tables = ("pins", "human_labels", "user_engagements", "reference_captions", "item_attributes")
    before = {t: lake.read(spark, t).count() for t in tables}
    second = {r.source: r for r in ingest.run(spark, cfg).sources}
    assert {s: r.written for s, r in second.items()} == {s: r.written for s, r in first.items()}
    assert {t: lake.read(spark, t).count() for t in tables} == before
    pins = lake.read(spark, "pins")
    assert pins.count() == pins.select("pin_id").distinct().count()


def test_s3rec_attributes_become_rows_and_bad_entries_are_quarantined(spark, lake, tmp_path):
    path = tmp_path / "Tiny_item2attributes.json"
    path.write_text('{"10": [1, 2, 2], "11": [3], "12": [], "x": [1], "13": [1.5], "14": [4], "14": [5], "15": "a"}')
    lines = spark.createDataFrame([("1 10 11",)], "value string")
    entries = ingest.read_attributes(spark, str(path))
    batch = ingest.transform_s3rec(lines, "Tiny", dt.datetime(2020, 1, 1), 60, entries)
    report = ingest.write_batch(lake, batch)
    rows = {(r.pin_id, r.attribute) for r in lake.read(spark, "item_attributes").collect()}
    assert rows == {
        ("s3rec-tiny:i10", "s3rec-tiny:a1"),
        ("s3rec-tiny:i10", "s3rec-tiny:a2"),
        ("s3rec-tiny:i11", "s3rec-tiny:a3"),
    }
    assert report.quarantined == {
        "attributes not a list": 1,
        "duplicate id": 2,  # both entries of item 14: neither is preferred
        "empty attribute list": 1,
        "unparseable attribute id": 1,
        "unparseable id": 1,
    }
    assert report.reconciled[1].line() == "attribute entries read 8 = written 2 + quarantined 6"
    raws = {r.raw for r in lake.read(spark, "quarantine").filter("target_table = 'item_attributes'").collect()}
    assert '{"14": [4]}' in raws and '{"15": "a"}' in raws


def test_attribute_entries_with_text_utf8_cannot_hold_are_quarantined_not_a_failed_job(spark, lake, tmp_path):
    """JSON escapes can spell lone surrogates ("\\ud800"), which Python holds but UTF-8 (Arrow,
    Parquet) cannot: such an entry is quarantined with its escaped text; emoji, right-to-left
    and combining text are ordinary (unparseable) ids, and the rest of the file lands."""
    path = tmp_path / "Tiny_item2attributes.json"
    path.write_text(
        '{"\\ud800": [1], "10": ["\\udfff"], "\\ud83d\\ude00": [2], "\u05d0\u0301": [3], "\\u0000": [4], "11": [5]}',
        encoding="utf-8",
    )
    lines = spark.createDataFrame([("1 10 11",)], "value string")
    entries = ingest.read_attributes(spark, str(path))
    report = ingest.write_batch(lake, ingest.transform_s3rec(lines, "Tiny", dt.datetime(2020, 1, 1), 60, entries))
    rows = {(r.pin_id, r.attribute) for r in lake.read(spark, "item_attributes").collect()}
    assert rows == {("s3rec-tiny:i11", "s3rec-tiny:a5")}
    assert report.quarantined == {"unparseable id": 4, "unparseable attribute id": 1}
    assert report.reconciled[1].line() == "attribute entries read 6 = written 1 + quarantined 5"
    raws = {r.raw for r in lake.read(spark, "quarantine").filter("target_table = 'item_attributes'").collect()}
    assert '{"\\ud800": [1]}' in raws and '{"10": ["\\udfff"]}' in raws


@pytest.mark.parametrize(
    "content, message",
    [
        (b'{"1": [1]', r"Tiny_item2attributes.json is not JSON: Expecting"),
        (b"[1, 2]", r"is not a JSON object of item id -> attribute ids"),
        (b'{"1": [1], "caf\xe9": [2]}', r"is not valid utf-8: byte\(s\) e9 at offset"),
    ],
)
def test_an_attributes_file_that_is_not_one_is_refused_naming_it(spark, tmp_path, content, message):
    path = tmp_path / "Tiny_item2attributes.json"
    path.write_bytes(content)
    with pytest.raises(IngestFileError, match=message):
        ingest.read_attributes(spark, str(path))


def test_transform_gives_one_batch_per_source_with_plain_values(spark, tmp_path):
    cf = cf_rows(spark, tmp_path, [("1", "oak desk", "Oak desk", "", "4", "0.0", "2")])
    lines = spark.createDataFrame([("7 11 12 13",)], "value string")
    raws = [ingest.RawSource("crowdflower", "cf_other", cf), ingest.RawSource("s3rec", "Tiny", lines)]
    start = dt.datetime(2020, 1, 1)
    batches = ingest.transform(raws, crowdflower_scale_max=4, s3rec_start_time=start, s3rec_step_seconds=60)
    assert [b.source for b in batches] == ["cf_other", "s3rec_tiny"]
    label = batches[0].outputs["human_labels"].first()
    assert (label.label_id, label.relevance, label.fold, label.source) == ("cf_other:1", 4, 2, "cf_other")
    events = batches[1].outputs["user_engagements"].orderBy("seq_index").collect()
    assert [e.pin_id for e in events] == ["s3rec-tiny:i11", "s3rec-tiny:i12", "s3rec-tiny:i13"]
    assert [e.event_time for e in events] == [start + dt.timedelta(seconds=60 * i) for i in range(3)]
    with pytest.raises(ValueError, match="unknown source kind"):
        ingest.transform(
            [ingest.RawSource("csv", "x", lines)],
            crowdflower_scale_max=4,
            s3rec_start_time=start,
            s3rec_step_seconds=60,
        )


def test_another_crowdflower_file_lives_beside_the_first(spark, lake, cfg_for, tmp_path):
    header = "id,query,product_title,product_description,median_relevance,relevance_variance,fold\n"
    (tmp_path / "a.csv").write_text(header + "1,oak desk,Oak desk,,4,0,1\n2,oak desk,Red rug,,1,0,2\n")
    (tmp_path / "b.csv").write_text(header + "1,grey sofa,Grey sofa,,4,0,8\n")
    base = [f"ingest.data_root={tmp_path}", "ingest.sources=[crowdflower]"]
    ingest.run(spark, cfg_for(*base, "ingest.crowdflower_csv=a.csv"))
    other = cfg_for(*base, "ingest.crowdflower_csv=b.csv", "ingest.crowdflower_source=crowdflower_holdout")
    ingest.run(spark, other)
    ingest.run(spark, cfg_for(*base, "ingest.crowdflower_csv=a.csv"))  # re-ingesting one leaves the other
    labels = {(r.label_id, r.source, r.fold) for r in lake.read(spark, "human_labels").collect()}
    assert labels == {
        ("crowdflower:1", "crowdflower", 1),
        ("crowdflower:2", "crowdflower", 2),
        ("crowdflower_holdout:1", "crowdflower_holdout", 8),
    }
    pins = {r.pin_id.split(":")[0] for r in lake.read(spark, "pins").collect()}
    assert pins == {"crowdflower", "crowdflower_holdout"}


def test_an_s3rec_dataset_named_by_its_path_is_read_from_there_with_its_attributes(spark, cfg_for, tmp_path):
    elsewhere = tmp_path / "downloads" / "Garden.txt"
    elsewhere.parent.mkdir()
    elsewhere.write_text("1 10 11\n2 11 12\n")
    (elsewhere.parent / "Garden_item2attributes.json").write_text('{"10": [1], "11": [2]}')
    cfg = cfg_for(
        f"ingest.data_root={tmp_path / 'data'}",  # not under it: no mirrored folder layout needed
        "ingest.sources=[s3rec]",
        f"ingest.s3rec_datasets=[LastFM, {elsewhere}]",
    )
    assert cfg.ingest.s3rec_file(str(elsewhere)) == ("Garden", str(elsewhere))
    assert cfg.ingest.s3rec_file("LastFM") == ("LastFM", str(tmp_path / "data" / "s3rec" / "LastFM.txt"))
    raw = ingest.read(
        spark,
        cfg_for(
            f"ingest.data_root={tmp_path / 'data'}", "ingest.sources=[s3rec]", f"ingest.s3rec_datasets=[{elsewhere}]"
        ),
    )
    assert [(r.kind, r.name) for r in raw] == [("s3rec", "Garden")]
    assert sorted(r.value for r in raw[0].frame.collect()) == ["1 10 11", "2 11 12"]
    assert raw[0].attributes is not None and raw[0].attributes.count() == 2
    with pytest.raises(
        ConfigError, match=r"ingest.s3rec_datasets: each dataset .* letters, digits and _, got 'my-set.txt'"
    ):
        cfg_for("ingest.s3rec_datasets=[my-set.txt]")
