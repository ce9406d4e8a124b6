"""Input files decoded strictly in their declared encoding.

A file in another encoding than the one expected (Latin-1 read as UTF-8, say) must not turn
into text full of U+FFFD replacement characters: decoding is strict, and the error names the
file, the byte offset, the line and the encoding, so the user can fix the file or the config
(``ingest.encodings``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pyarrow as pa

PROBLEMS_DDL = "path string, problem string"
LINES_DDL = "value string"
LINE_END = re.compile(r"\r\n|\r|\n")  # as Spark's text source splits lines


class FileDecodeError(ValueError):
    """A file holds bytes that are not valid in its declared encoding."""


def decode(data: bytes, encoding: str, what: str) -> str:
    """``data`` decoded strictly; the error names the byte offset, the line and the encoding."""
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        bad = data[exc.start : exc.end].hex(" ")
        raise FileDecodeError(
            f"{what} is not valid {encoding}: byte(s) {bad} at offset {exc.start} (line {line}); "
            "set ingest.encodings to the file's encoding"
        ) from None


def first_problem(data: bytes, encoding: str, what: str) -> str | None:
    """Why ``data`` is not valid in ``encoding``, or None."""
    try:
        decode(data, encoding, what)
    except FileDecodeError as exc:
        return str(exc)
    return None


def decode_problems(batches: Iterator[pa.RecordBatch], encoding: str) -> Iterator[pa.RecordBatch]:
    """``mapInArrow`` body over ``binaryFile`` rows (``path``, ``content``): one row per file
    that is not valid in ``encoding``."""
    for batch in batches:
        paths, problems = [], []
        for path, content in zip(batch.column("path").to_pylist(), batch.column("content").to_pylist(), strict=True):
            problem = first_problem(content, encoding, path)
            if problem is not None:
                paths.append(path)
                problems.append(problem)
        yield pa.RecordBatch.from_pydict({"path": paths, "problem": problems})


def decoded_lines(batches: Iterator[pa.RecordBatch], encoding: str) -> Iterator[pa.RecordBatch]:
    """``mapInArrow`` body over ``binaryFile`` rows: their lines (:data:`LINES_DDL`, as
    ``spark.read.text`` gives UTF-8 files), decoded strictly from ``encoding``."""
    for batch in batches:
        for path, content in zip(batch.column("path").to_pylist(), batch.column("content").to_pylist(), strict=True):
            lines = LINE_END.split(decode(content, encoding, path))
            if lines and lines[-1] == "":
                lines.pop()  # the file's last line ending ends a line, it starts none
            yield pa.RecordBatch.from_pydict({"value": lines}, schema=pa.schema([("value", pa.string())]))
