"""Properties of the ingest adapters over arbitrary files (hypothesis): every physical line is
accounted for, valid CSV round-trips, and any file ends in records read = rows kept + rows
quarantined, or in one clear error — never a crash, a hang or silent loss."""

import csv
import datetime as dt
import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobs import ingest
from jobs.sources.batch import IngestFileError
from jobs.sources.crowdflower import CROWDFLOWER_COLUMNS
from runtime.validation import InputSchemaError
from udfs.csv_records import BAD_LINE, BLANK, HEADER, RECORD, parse_csv, physical_lines

# Characters that matter to a CSV parser, plus some that do not.
CSV_ALPHABET = st.sampled_from(list('",\n\r \t"ab1.-') + ["é", "\x00", "\u2028"])
csv_text = st.text(CSV_ALPHABET, max_size=300)


@settings(max_examples=400, deadline=None)
@given(csv_text)
def test_every_line_lands_in_exactly_one_piece_in_order(text):
    pieces = list(parse_csv(text))
    lines = physical_lines(text)
    covered = [n for p in pieces for n in range(p.first_line, p.last_line + 1)]
    assert covered == list(range(1, len(lines) + 1))
    assert "".join(p.raw for p in pieces) == text  # nothing dropped, nothing invented
    assert [p.kind for p in pieces if p.kind not in (BLANK, BAD_LINE)][:1] in ([], [HEADER])
    for piece in pieces:
        assert (piece.kind == BAD_LINE) == (piece.problem is not None)
        if piece.kind == BAD_LINE:
            assert piece.first_line == piece.last_line


cell = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(cell, min_size=3, max_size=3), min_size=1, max_size=15))
def test_valid_csv_round_trips(rows):
    buf = io.StringIO()
    csv.writer(buf).writerows([["a", "b", "c"], *rows])  # "\r\n" endings: fields holding \r or \n are quoted
    pieces = list(parse_csv(buf.getvalue()))
    assert [p.kind for p in pieces] == [HEADER] + [RECORD] * len(rows)
    assert [p.fields for p in pieces[1:]] == rows


@pytest.mark.slow  # a Spark job per example: in `make test-slow`
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(st.binary(max_size=400) | csv_text.map(lambda t: (",".join(CROWDFLOWER_COLUMNS) + "\n" + t).encode()))
def test_any_crowdflower_file_reconciles_or_fails_clearly(spark, tmp_path, data):
    path = tmp_path / "labels.csv"
    path.write_bytes(data)
    try:
        records = ingest.read_crowdflower(spark, str(path))
        batch = ingest.transform_crowdflower(records, scale_max=4)
    except (IngestFileError, InputSchemaError):
        return
    read = batch.ledgers[0].read.count()
    assert read == batch.outputs["human_labels"].count() + batch.quarantine.count()


@pytest.mark.slow  # a Spark job per example: in `make test-slow`
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(st.binary(max_size=300) | st.text(st.sampled_from(list("0123 \t\n\r-xé")), max_size=200).map(str.encode))
def test_any_s3rec_file_reconciles_or_fails_clearly(spark, tmp_path, data):
    path = tmp_path / "Any.txt"
    path.write_bytes(data)
    try:
        lines = ingest.read_lines(spark, str(path))
    except IngestFileError as err:  # not valid UTF-8: refused whole, naming the byte (never U+FFFD)
        assert "is not valid utf-8: byte(s)" in str(err)
        with pytest.raises(UnicodeDecodeError):
            data.decode("utf-8")
        return
    batch = ingest.transform_s3rec(lines, "Any", dt.datetime(2020, 1, 1), 1)
    read = batch.ledgers[0].read.count()
    users = batch.outputs["user_engagements"].select("user_id").distinct().count()
    assert read == users + batch.quarantine.count()
