"""Hostile input: each kind ends in quarantine with its reason or in one clear error, the job's
own reconciliation (records read = written + quarantined) holds, and nothing is lost silently.

The row-level kinds of all three sources go through one real ``ingest.run`` into a Delta lake
(where the reconciliation runs); the file-level kinds each meet the reader they target.
"""

import csv
import datetime as dt
import io
import json

import pytest
from PIL import Image

from jobs import ingest
from jobs.sources import crowdflower
from jobs.sources.batch import IngestFileError
from runtime.lake import ShrinkRefused
from runtime.validation import InputSchemaError
from udfs.csv_records import parse_csv

COLUMNS = crowdflower.CROWDFLOWER_COLUMNS
HEADER = ",".join(COLUMNS) + "\n"


def row(id_, query="q", title="T", description="D", relevance="3", variance="0", fold="1"):
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([id_, query, title, description, relevance, variance, fold])
    return buf.getvalue()


# (label id, CSV text of the record, expected quarantine reason). Each is one kind of bad row.
BAD_ROWS = [
    ("u1", 'u1,q,"unbalanced title,D,3,0,1\n', "malformed CSV: "),
    ("u2", 'u2,q,"closed"then text,D,3,0,1\n', "malformed CSV: "),
    ("f1", "f1,q,T,D,3\n", "wrong number of fields: 5, the header has 7"),
    ("f2", "f2,q,T,D,3,0,1,extra,more\n", "wrong number of fields: 9, the header has 7"),
    (None, row(""), "missing id"),
    ("e1", row("e1", query="   "), "empty query"),
    ("t1", row("t1", title=" ", description=""), "no product text"),
    ("c1", row("c1", query="nul\x00byte"), "NUL character in text"),
    ("r1", row("r1", relevance="three"), "unparseable median_relevance"),
    ("r2", row("r2", relevance="5"), "median_relevance outside 1..4"),
    ("r3", row("r3", relevance="NaN"), "median_relevance outside 1..4"),
    ("r4", row("r4", relevance="-Infinity"), "median_relevance outside 1..4"),
    ("r5", row("r5", relevance="1e400"), "median_relevance outside 1..4"),
    ("r6", row("r6", relevance="2.5"), "non-integer median_relevance"),
    ("r7", row("r7", relevance=""), "unparseable median_relevance"),
    ("v1", row("v1", variance="lots"), "unparseable relevance_variance"),
    ("v2", row("v2", variance="-0.5"), "negative relevance_variance"),
    ("v3", row("v3", variance="NaN"), "non-finite relevance_variance"),
    ("v4", row("v4", variance="Infinity"), "non-finite relevance_variance"),
    ("d1", row("d1", fold="x"), "unparseable fold"),
    ("d2", row("d2", fold="99999999999"), "fold outside 0..2147483647"),
    ("d3", row("d3", fold="-1"), "fold outside 0..2147483647"),
    ("d4", row("d4", fold="1.5"), "non-integer fold"),
    # well-formed, but a field over ingest.csv_field_limit (1 MiB by default): not "malformed"
    (
        "l1",
        row("l1", description="x" * 2_000_000),
        "field too long: product_description has 2,000,000 characters, more than ingest.csv_field_limit=1,048,576",
    ),
    ("dup", row("dup", title="first"), "duplicate id"),
    ("dup", row("dup", title="second"), "duplicate id"),
]
# Rows that look odd but are valid, and must arrive intact.
GOOD_ROWS = (
    row("g1", query="naïve café 👗 שמלה", title="Dress")
    + row("g2", description="line one\nline two")
    # CRLF endings, and a bare CR inside a quoted field
    + row("g3").replace("\n", "\r\n")
    + 'g4,q,"cr\rinside",D,3,0,1\n'
    + "\n   \n"  # blank lines: no record
    + row("g5", title="x" * 100_000)  # long but under the field limit
    + row("g6", title="Women\x19s bell\x07")  # control characters other than NUL are text
)
S3REC_BAD = {
    "x 4 5": "unparseable id",
    "6 -7": "unparseable id",
    "8 9 caf\xe9": "unparseable id",
    "": "empty line",
    "10": "empty sequence",
    "11 1": "duplicate id",
    "11 2": "duplicate id",
}
S3REC_GOOD = ["12 1 2 3", "\t13\t1\r", "14 " + "9" * 30]  # tabs, CR; a 30-digit id is an id


@pytest.fixture
def hostile_root(tmp_path):
    root = tmp_path / "data"
    (root / "crowdflower").mkdir(parents=True)
    (root / "crowdflower" / "labels.csv").write_text(
        HEADER + row("ok1") + "".join(text for _, text, _ in BAD_ROWS) + GOOD_ROWS + row("ok2"), newline=""
    )
    (root / "s3rec").mkdir()
    (root / "s3rec" / "Hostile.txt").write_bytes("\n".join([*S3REC_BAD, *S3REC_GOOD]).encode("latin-1"))
    images = root / "coco" / "images"
    images.mkdir(parents=True)
    Image.new("RGB", (16, 16), (9, 90, 200)).save(images / "ok.jpg")
    (images / "empty.jpg").write_bytes(b"")
    doc = {
        "images": [
            {"id": 1, "file_name": "ok.jpg"},
            {"id": "two", "file_name": "ok.jpg"},
            {"id": 10**25, "file_name": "ok.jpg"},
            {"id": 4, "file_name": {"nested": "object"}},
            {"id": 5, "file_name": "empty.jpg"},
            {"id": 6, "file_name": "../../../etc/passwd"},
            {"id": 7},
        ],
        "annotations": [
            {"image_id": 1, "caption": "Blue."},
            {"image_id": 1, "caption": None},
            {"image_id": "1x", "caption": "Bad id."},
            {"image_id": 42, "caption": "Unknown image."},
            {"caption": "No image id."},
        ],
    }
    (root / "coco" / "captions.json").write_text(json.dumps(doc))
    return root


def test_a_record_with_a_field_over_the_limit_is_one_bad_piece_naming_column_and_setting():
    text = HEADER + row("a") + row("b", description="word\n" * 30) + row("c")
    pieces = list(parse_csv(text, field_limit=100, setting="ingest.csv_field_limit"))
    assert [(p.kind, p.first_line, p.last_line) for p in pieces] == [
        ("header", 1, 1),
        ("record", 2, 2),
        ("bad_line", 3, 33),  # the whole record, not its first line: the rest is not read as rows
        ("record", 34, 34),
    ]
    assert pieces[2].raw == row("b", description="word\n" * 30)
    assert pieces[2].problem == (
        "field too long: product_description has 150 characters, more than ingest.csv_field_limit=100"
    )


@pytest.mark.slow  # a full ingest of three hostile sources into Delta: in `make test-slow` (CI runs it)
def test_row_level_kinds_are_quarantined_with_reasons_and_counts_reconcile(spark, lake, cfg_for, hostile_root):
    cfg = cfg_for(
        f"ingest.data_root={hostile_root}",
        "ingest.s3rec_datasets=[Hostile]",
        "ingest.coco_dir=coco",
        "ingest.encodings.s3rec=latin-1",  # the S3-Rec file is Latin-1 (as utf-8 it is refused: below)
    )
    reports = {r.source: r for r in ingest.run(spark, cfg).sources}

    quarantine = lake.read(spark, "quarantine").collect()
    cf = [(q.raw.partition(",")[0] or None, q.reason) for q in quarantine if q.source == "crowdflower"]  # ids: plain
    assert len(cf) == len(BAD_ROWS)
    for label_id, _, reason in BAD_ROWS:
        assert any(i == label_id and r.startswith(reason) for i, r in cf), (label_id, reason, cf)
    labels = {r.label_id: r for r in lake.read(spark, "human_labels").filter("source = 'crowdflower'").collect()}
    good = {"ok1", "ok2", "g1", "g2", "g3", "g4", "g5", "g6"}
    assert set(labels) == {f"crowdflower:{i}" for i in good}  # the rows after the unbalanced quote survive
    assert labels["crowdflower:g1"].query == "naïve café 👗 שמלה"
    (records,) = reports["crowdflower"].reconciled
    assert (records.read, records.written, records.quarantined) == (len(BAD_ROWS) + len(good), len(good), len(BAD_ROWS))
    pins = {r.description for r in lake.read(spark, "pins").filter("source = 'crowdflower'").collect()}
    assert "line one\nline two" in pins

    s3 = {q.raw: q.reason for q in quarantine if q.source == "s3rec_hostile"}
    assert s3 == S3REC_BAD  # each raw line as it was, "8 9 café" included
    users = {r.user_id for r in lake.read(spark, "user_engagements").collect()}
    assert users == {"s3rec-hostile:u12", "s3rec-hostile:u13", "s3rec-hostile:u14"}
    (lines,) = reports["s3rec_hostile"].reconciled
    assert (lines.read, lines.written, lines.quarantined) == (10, 3, 7)

    coco = sorted((q.target_table, q.reason.split(":")[0]) for q in quarantine if q.source == "coco")
    assert coco == [
        ("pins", "file_name outside the images folder"),
        ("pins", "missing file_name"),
        ("pins", "unparseable id (not a 64-bit integer)"),
        ("pins", "unparseable id (not a 64-bit integer)"),
        ("pins", "unreadable image path"),
        ("pins", "unreadable image path"),
        ("reference_captions", "empty caption"),
        ("reference_captions", "missing image_id"),
        ("reference_captions", "unknown or quarantined image_id"),
        ("reference_captions", "unparseable image_id (not a 64-bit integer)"),
    ]
    assert [r.line() for r in reports["coco"].reconciled] == [
        "images read 7 = written 1 + quarantined 6",
        "annotations read 5 = written 1 + quarantined 4",
    ]


# (file bytes, encoding, exception, message pattern): file-level kinds of the CSV reader.
BAD_FILES = {
    "latin-1 read as utf-8": (
        (HEADER + row("1", query="café")).encode("latin-1"),
        "utf-8",
        IngestFileError,
        r"labels.csv is not valid utf-8: byte\(s\) e9 at offset \d+ \(line 2\); set ingest.encodings",
    ),
    "utf-16 read as utf-8": ((HEADER + row("1")).encode("utf-16"), "utf-8", IngestFileError, "not valid"),
    "binary garbage": (bytes(range(256)) * 4, "utf-8", IngestFileError, "not valid utf-8"),
    "empty file": (b"", "utf-8", InputSchemaError, "no header row"),
    "only blank lines": (b"\n \n\r\n", "utf-8", InputSchemaError, "no header row"),
    "repeated column": (
        (HEADER.rstrip("\n") + ",query\n").encode(),
        "utf-8",
        InputSchemaError,
        r"repeats columns \['query'\]",
    ),
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_file_level_kinds_fail_with_one_clear_error(spark, tmp_path, kind):
    data, encoding, error, pattern = BAD_FILES[kind]
    path = tmp_path / "labels.csv"
    path.write_bytes(data)
    with pytest.raises(error, match=pattern):
        ingest.read_crowdflower(spark, str(path), encoding)


def test_a_missing_column_fails_naming_it(spark, tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text(HEADER.replace("query", "qry") + row("1"))
    with pytest.raises(InputSchemaError, match=r"missing columns \['query'\]"):
        ingest.transform_crowdflower(ingest.read_crowdflower(spark, str(path)), scale_max=4)


def test_configured_encoding_and_a_byte_order_mark_are_read_as_text(spark, tmp_path):
    latin = tmp_path / "latin.csv"
    latin.write_bytes((HEADER + row("1", query="café crème")).encode("latin-1"))
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + (HEADER + row("2", query="déjà vu")).encode())
    got = [ingest.read_crowdflower(spark, str(p), enc).first() for p, enc in ((latin, "latin-1"), (bom, "utf-8"))]
    assert [(r.id, r.query, r._problem) for r in got] == [("1", "café crème", None), ("2", "déjà vu", None)]


@pytest.mark.parametrize(
    ("content", "error", "pattern"),
    [
        (b'{"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [', IngestFileError, "not a COCO"),
        (b"[1, 2, 3]", IngestFileError, "not a COCO"),
        ('{"images": [{"id": 1, "file_name": "é.jpg"}]}'.encode("latin-1"), IngestFileError, "not valid"),
        (b'{"images": []}', InputSchemaError, r"missing sections \['annotations'\]"),
        (b"{}", InputSchemaError, r"missing sections \['images', 'annotations'\]"),
    ],
    ids=["truncated", "not an object", "latin-1", "one section", "no sections"],
)
def test_coco_documents_of_the_wrong_kind_fail_with_one_clear_error(spark, tmp_path, content, error, pattern):
    path = tmp_path / "captions.json"
    path.write_bytes(content)
    with pytest.raises(error, match=pattern):
        ingest.read_json_document(spark, str(path))


@pytest.mark.slow  # five ingests into Delta: in `make test-slow` (CI runs it)
def test_a_reingest_that_would_empty_or_halve_a_slice_is_refused_before_writing(spark, lake, cfg_for, tmp_path):
    folder = tmp_path / "data" / "crowdflower"
    folder.mkdir(parents=True)
    csv_path = folder / "labels.csv"
    base = [f"ingest.data_root={tmp_path / 'data'}", "ingest.sources=[crowdflower]"]
    csv_path.write_text(HEADER + "".join(row(str(i), title=f"T{i}") for i in range(10)))
    ingest.run(spark, cfg_for(*base))

    for kept in (0, 4):  # nothing, then 4 of 10 (below the default ratio 0.5)
        csv_path.write_text(HEADER + "".join(row(str(i), title=f"T{i}") for i in range(kept)))
        with pytest.raises(ShrinkRefused, match=rf"the 10 rows of 'human_labels' .* with {kept} rows"):
            ingest.run(spark, cfg_for(*base))
        assert lake.read(spark, "human_labels").count() == 10  # nothing was written
        assert lake.read(spark, "pins").count() == 10

    csv_path.write_text(HEADER + "".join(row(str(i), title=f"T{i}") for i in range(6)))
    ingest.run(spark, cfg_for(*base))  # 6 of 10 is above the ratio
    csv_path.write_text(HEADER)
    (report,) = ingest.run(spark, cfg_for(*base, "ingest.allow_shrink=true")).sources
    assert report.written == {"human_labels": 0, "pins": 0}
    assert lake.read(spark, "human_labels").count() == 0


@pytest.mark.slow  # Delta writes: in `make test-slow` (CI runs it)
def test_a_record_lost_between_reading_and_writing_fails_the_job(spark, lake, tmp_path):
    path = tmp_path / "Lossy.txt"
    path.write_text("1 2 3\n4 5\nx 6\n\n")
    batch = ingest.transform_s3rec(ingest.read_lines(spark, str(path)), "Lossy", dt.datetime(2020, 1, 1), 60)
    batch.quarantine = batch.quarantine.filter("reason != 'empty line'")  # a bug that drops a record
    with pytest.raises(ingest.ReconciliationError, match=r"lines do not reconcile: .* \(\+1 unaccounted\)"):
        ingest.write_batch(lake, batch)


@pytest.mark.parametrize(
    "source, missing, settings",
    [
        ("crowdflower", "crowdflower/labels.csv", "ingest.data_root, ingest.crowdflower_csv"),
        ("s3rec", "s3rec/Nowhere.txt", "ingest.data_root, ingest.s3rec_dir, ingest.s3rec_datasets"),
        ("coco", "coco_mini/captions.json", "ingest.data_root, ingest.coco_dir"),
    ],
)
def test_a_missing_input_is_one_line_naming_the_path_and_its_settings(
    spark, cfg_for, tmp_path, source, missing, settings
):
    cfg = cfg_for(f"ingest.data_root={tmp_path}", f"ingest.sources=[{source}]", "ingest.s3rec_datasets=[Nowhere]")
    with pytest.raises(IngestFileError) as refused:
        ingest.read(spark, cfg)
    assert str(refused.value) == f"input not found: {tmp_path / missing} (from {settings})"


def test_an_s3rec_file_not_valid_in_its_encoding_is_refused_naming_byte_and_line(spark, cfg_for, hostile_root):
    cfg = cfg_for(f"ingest.data_root={hostile_root}", "ingest.sources=[s3rec]", "ingest.s3rec_datasets=[Hostile]")
    with pytest.raises(IngestFileError) as refused:
        ingest.read(spark, cfg)
    offset = "\n".join(S3REC_BAD).encode("latin-1").index(b"\xe9")
    assert str(refused.value) == (
        f"file:{hostile_root}/s3rec/Hostile.txt is not valid utf-8: byte(s) e9 at offset {offset} (line 3); "
        "set ingest.encodings to the file's encoding"
    )
