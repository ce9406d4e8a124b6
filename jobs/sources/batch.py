"""What a source adapter hands the ingest job: valid rows per table, quarantined rows, and the
ledgers that account for every record read; and the helpers the adapters share."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass, field

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from udfs.file_encoding import PROBLEMS_DDL, decode_problems


@dataclass(frozen=True)
class Ledger:
    """Where one kind of input record went: ``read`` has one row per record read; each is
    written to ``table`` (counted as rows of the source's slice, or as distinct ``key`` values
    when one record becomes many rows) or quarantined against ``table``."""

    what: str
    read: DataFrame
    table: str
    key: str | None = None


@dataclass
class IngestBatch:
    """What one source contributes: valid rows per target table, and its quarantined rows.

    ``staged`` are the intermediate frames every output derives from; the writer persists them
    so each input is read and validated once, whatever the number of outputs.
    """

    source: str
    outputs: dict[str, DataFrame]
    quarantine: DataFrame
    ledgers: list[Ledger]
    staged: list[DataFrame] = field(default_factory=list)


class IngestFileError(ValueError):
    """An input file cannot be read as its kind at all (missing, its encoding, not a document)."""


@contextlib.contextmanager
def input_file(path: str, settings: str) -> Iterator[None]:
    """Spark's ``[PATH_NOT_FOUND]`` for the input at ``path`` said in one line that names the
    ``settings`` that chose it."""
    try:
        yield
    except AnalysisException as exc:
        if "PATH_NOT_FOUND" not in str(exc):
            raise
        raise IngestFileError(f"input not found: {path} (from {settings})") from None


def try_cast(col: str, sql_type: str) -> F.Column:
    """``col`` trimmed and cast to ``sql_type``; null where it does not parse or fit."""
    return F.expr(f"try_cast(trim(`{col}`) as {sql_type})")


def pin_id_from_text(prefix: str, *cols: F.Column) -> F.Column:
    text = F.concat_ws("\u001f", *[F.coalesce(c, F.lit("")) for c in cols])
    return F.concat(F.lit(prefix), F.substring(F.sha2(text, 256), 1, 16))


def check_encoding(spark: SparkSession, path: str, encoding: str) -> None:
    """Raise :class:`IngestFileError` unless every file at ``path`` is valid ``encoding``."""
    files = spark.read.format("binaryFile").load(path)
    problems = files.mapInArrow(functools.partial(decode_problems, encoding=encoding), PROBLEMS_DDL).collect()
    if problems:
        raise IngestFileError(problems[0].problem)
