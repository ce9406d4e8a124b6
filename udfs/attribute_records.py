"""S3-Rec ``<dataset>_item2attributes.json`` files parsed entry by entry.

The file is one JSON object: item id -> list of attribute ids (``{"4": [1, 2, 3], ...}``).
Spark's JSON reader would turn its 10k+ keys into a struct of 10k+ fields, and a map schema
fails the whole task on a repeated key; here each file is decoded strictly and parsed with
Python's ``json`` keeping every (key, value) pair, so every entry ends as one row: its item, its
attributes as text, the entry's JSON, and a problem (or null). A repeated item id marks all
its entries (none is preferred), as ingest does for every duplicated id. A file that is not
valid in its encoding, not JSON, or not an object is one *file problem* row. Text that UTF-8
cannot hold (a lone surrogate spelled as a JSON escape) is kept escaped: such an id is not an
id, so its entry is quarantined, never a failed task.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa

from udfs.file_encoding import FileDecodeError, decode

ENTRY = "entry"
FILE_PROBLEM = "file_problem"

ENTRIES_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("kind", pa.string()),
        ("item", pa.string()),
        ("attributes", pa.list_(pa.string())),
        ("raw", pa.string()),
        ("problem", pa.string()),
    ]
)
ENTRIES_DDL = "path string, kind string, item string, attributes array<string>, raw string, problem string"


@dataclass(frozen=True)
class Entry:
    kind: str
    item: str | None
    attributes: list[str] | None
    raw: str
    problem: str | None = None


def _is_id(value: object) -> bool:
    """A non-negative integer id, as a JSON number (not a bool, not a float) or digit text."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value >= 0
    return isinstance(value, str) and value.isascii() and value.isdigit()


def _problem(item: str, value: object) -> str | None:
    if not _is_id(item):
        return "unparseable id"
    if not isinstance(value, list):
        return "attributes not a list"
    if not value:
        return "empty attribute list"
    if not all(_is_id(a) for a in value):
        return "unparseable attribute id"
    return None


def storable(text: str) -> str:
    """``text``, with what UTF-8 cannot hold (lone surrogates, which JSON escapes can spell)
    written as backslash escapes: Arrow and Parquet take only valid UTF-8."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")  # valid text comes back as it was


def parse_attributes(text: str, what: str) -> list[Entry]:
    """Every entry of one item -> attributes document, in file order."""
    try:
        pairs = json.loads(text, object_pairs_hook=lambda pairs: pairs)
    except (json.JSONDecodeError, RecursionError) as exc:
        return [Entry(FILE_PROBLEM, None, None, "", f"{what} is not JSON: {exc}")]
    if not isinstance(pairs, list) or not all(isinstance(p, tuple) for p in pairs):
        return [Entry(FILE_PROBLEM, None, None, "", f"{what} is not a JSON object of item id -> attribute ids")]
    seen: dict[str, int] = {}
    for item, _ in pairs:
        seen[item] = seen.get(item, 0) + 1
    entries = []
    for item, value in pairs:
        raw = json.dumps({item: value}, default=str)
        problem = "duplicate id" if seen[item] > 1 else _problem(item, value)
        attributes = None if problem else [str(a) for a in value]
        entries.append(Entry(ENTRY, storable(item), attributes, raw, problem))
    return entries


def parse_attribute_files(batches: Iterator[pa.RecordBatch], encoding: str) -> Iterator[pa.RecordBatch]:
    """``mapInArrow`` body over ``binaryFile`` rows (``path``, ``content``) -> :data:`ENTRIES_SCHEMA`."""
    for batch in batches:
        for path, content in zip(batch.column("path").to_pylist(), batch.column("content").to_pylist(), strict=True):
            try:
                entries = parse_attributes(decode(content, encoding, path).removeprefix("\ufeff"), path)
            except FileDecodeError as exc:
                entries = [Entry(FILE_PROBLEM, None, None, "", str(exc))]
            columns = {
                "path": [path] * len(entries),
                "kind": [e.kind for e in entries],
                "item": [e.item for e in entries],
                "attributes": [e.attributes for e in entries],
                "raw": [e.raw for e in entries],
                "problem": [e.problem for e in entries],
            }
            yield pa.RecordBatch.from_pydict(columns, schema=ENTRIES_SCHEMA)
