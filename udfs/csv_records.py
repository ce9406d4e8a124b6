"""CSV files parsed record by record, every physical line accounted for.

A lenient CSV reader lets one unbalanced quote swallow the rows after it (the field runs on to
the next quote in the file) and reports nothing. Here a file is decoded strictly in its declared
encoding and parsed with Python's ``csv`` module in strict mode; when a record cannot be parsed
(a quote never closed, text after a closing quote), its first physical line becomes a *bad
line* with the parser's reason and parsing starts again on the next line, so the rows after it
are read as themselves. A well-formed record with a field longer than the limit is a bad line as
a whole (all its lines), "field too long", naming the column and the limit.

Every physical line of a file ends in exactly one place: inside a record (one or more lines), a
bad line, or a blank line. :func:`parse_csv` returns them in that order; the Spark side
(:func:`parse_files`, for ``mapInArrow`` over ``binaryFile`` rows) ships them as rows with
their line numbers. A file that is not valid in its encoding is one *file problem* row naming
the byte offset and line, never a silently replaced character.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa

from udfs.file_encoding import FileDecodeError, decode

HEADER = "header"
RECORD = "record"
BAD_LINE = "bad_line"
BLANK = "blank"
FILE_PROBLEM = "file_problem"

PARSED_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("kind", pa.string()),
        ("first_line", pa.int64()),
        ("last_line", pa.int64()),
        ("fields", pa.list_(pa.string())),
        ("raw", pa.string()),
        ("problem", pa.string()),
    ]
)
PARSED_DDL = (
    "path string, kind string, first_line bigint, last_line bigint, fields array<string>, raw string, problem string"
)
FIELD_SIZE_LIMIT = 1 << 20  # characters in one field by default; a longer field makes its record a bad line
PARSER_FIELD_LIMIT = (1 << 31) - 1  # the csv module's own limit: what it parses, the field limit then judges


@dataclass(frozen=True)
class Piece:
    """One part of a file: ``kind`` is header, record, bad_line or blank; lines are 1-based."""

    kind: str
    first_line: int
    last_line: int
    fields: list[str] | None
    raw: str
    problem: str | None = None


def physical_lines(text: str) -> list[str]:
    """Lines with their endings (``\\n``, ``\\r\\n`` or ``\\r``), as the csv module splits them."""
    return list(io.StringIO(text, newline=""))


def too_long(fields: list[str], header: list[str] | None, limit: int, setting: str) -> str | None:
    """Why a record is refused for its field lengths, or None."""
    for i, field in enumerate(fields):
        if len(field) > limit:
            name = header[i].strip() if header and i < len(header) else f"field {i + 1}"
            return f"field too long: {name} has {len(field):,} characters, more than {setting}={limit:,}"
    return None


def parse_csv(text: str, field_limit: int = FIELD_SIZE_LIMIT, setting: str = "the field limit") -> Iterator[Piece]:
    """Every line of ``text`` in exactly one piece: the header (first record), records, bad
    lines (with the parser's reason, or a field over ``field_limit`` characters, named by
    ``setting`` in the reason) and blank lines, in file order."""
    lines = physical_lines(text)
    start = 0  # index of the first line not yet in a piece
    header: list[str] | None = None
    while start < len(lines):
        position = start

        def feed() -> Iterator[str]:
            nonlocal position
            while position < len(lines):
                position += 1
                yield lines[position - 1]

        reader = csv.reader(feed(), strict=True)
        try:
            for fields in reader:
                raw = "".join(lines[start:position])
                if not fields or (len(fields) == 1 and not fields[0].strip() and len(lines[start:position]) == 1):
                    yield Piece(BLANK, start + 1, position, None, raw)
                elif problem := too_long(fields, header, field_limit, setting):
                    yield Piece(BAD_LINE, start + 1, position, None, raw, problem)
                else:
                    yield Piece(RECORD if header is not None else HEADER, start + 1, position, fields, raw)
                    header = header if header is not None else fields
                start = position
            return
        except csv.Error as exc:
            yield Piece(BAD_LINE, start + 1, start + 1, None, lines[start], f"malformed CSV: {exc}")
            start += 1


def parse_files(
    batches: Iterator[pa.RecordBatch],
    encoding: str,
    field_limit: int = FIELD_SIZE_LIMIT,
    setting: str = "the field limit",
) -> Iterator[pa.RecordBatch]:
    """``mapInArrow`` body over ``binaryFile`` rows (``path``, ``content``) -> :data:`PARSED_SCHEMA`."""
    previous = csv.field_size_limit(PARSER_FIELD_LIMIT)
    try:
        for batch in batches:
            paths = batch.column("path").to_pylist()
            contents = batch.column("content").to_pylist()
            for path, content in zip(paths, contents, strict=True):
                yield _pieces_batch(path, content, encoding, field_limit, setting)
    finally:
        csv.field_size_limit(previous)


def _pieces_batch(path: str, content: bytes, encoding: str, field_limit: int, setting: str) -> pa.RecordBatch:
    try:
        # A byte-order mark (Excel writes one) is not part of the first column's name.
        text = decode(content, encoding, path).removeprefix("\ufeff")
        pieces = list(parse_csv(text, field_limit, setting))
    except FileDecodeError as exc:
        pieces = [Piece(FILE_PROBLEM, 0, 0, None, "", str(exc))]
    columns = {
        "path": [path] * len(pieces),
        "kind": [p.kind for p in pieces],
        "first_line": [p.first_line for p in pieces],
        "last_line": [p.last_line for p in pieces],
        "fields": [p.fields for p in pieces],
        "raw": [p.raw for p in pieces],
        "problem": [p.problem for p in pieces],
    }
    return pa.RecordBatch.from_pydict(columns, schema=PARSED_SCHEMA)
