"""CSV files parsed record by record, every physical line accounted for.

A lenient CSV reader lets one unbalanced quote swallow the rows after it (the field runs on to
the next quote in the file) and reports nothing. Here a file is decoded strictly in its declared
encoding and parsed with Python's ``csv`` module in strict mode; when a record cannot be parsed
(a quote never closed, text after a closing quote, a field over the size limit), its first
physical line becomes a *bad line* with the parser's reason and parsing starts again on the next
line, so the rows after it are read as themselves.

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
FIELD_SIZE_LIMIT = 1 << 20  # characters in one field; a longer field makes its record a bad line


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


def parse_csv(text: str) -> Iterator[Piece]:
    """Every line of ``text`` in exactly one piece: the header (first record), records, bad
    lines (with the parser's reason) and blank lines, in file order."""
    lines = physical_lines(text)
    start = 0  # index of the first line not yet in a piece
    seen_header = False
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
                else:
                    yield Piece(RECORD if seen_header else HEADER, start + 1, position, fields, raw)
                    seen_header = True
                start = position
            return
        except csv.Error as exc:
            yield Piece(BAD_LINE, start + 1, start + 1, None, lines[start], f"malformed CSV: {exc}")
            start += 1


def parse_files(batches: Iterator[pa.RecordBatch], encoding: str) -> Iterator[pa.RecordBatch]:
    """``mapInArrow`` body over ``binaryFile`` rows (``path``, ``content``) -> :data:`PARSED_SCHEMA`."""
    previous = csv.field_size_limit(FIELD_SIZE_LIMIT)
    try:
        for batch in batches:
            paths = batch.column("path").to_pylist()
            contents = batch.column("content").to_pylist()
            for path, content in zip(paths, contents, strict=True):
                yield _pieces_batch(path, content, encoding)
    finally:
        csv.field_size_limit(previous)


def _pieces_batch(path: str, content: bytes, encoding: str) -> pa.RecordBatch:
    try:
        # A byte-order mark (Excel writes one) is not part of the first column's name.
        pieces = list(parse_csv(decode(content, encoding, path).removeprefix("\ufeff")))
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
