"""Input checks and quarantine.

Two kinds of bad input, two answers:

* the *shape* is wrong (a missing column, a column of the wrong type): the job cannot mean
  anything by its input, so it fails at once with an :class:`InputSchemaError` that names what
  is missing and what is present. Schema checks only — no ``count()`` just to validate;
* a *row* is wrong (missing id, empty query, unparseable number, ...): the row goes to the
  ``quarantine`` table with its source, a reason and the raw row, and the batch goes on.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import DataType, StructType
from pyspark.sql.window import Window

from schemas import quarantine as Q

REASON = "_reason"


class InputSchemaError(ValueError):
    """An input lacks required columns or has columns of the wrong type."""


def require_columns(
    df: DataFrame, expected: Mapping[str, DataType | None], what: str, internal: Collection[str] = ()
) -> None:
    """Fail fast unless ``df`` has every expected column (with the given type, when not None).
    ``internal``: columns a reader adds (never the input's), left out of the message's "present"."""
    present = {f.name: f.dataType for f in df.schema.fields}
    missing = [c for c in expected if c not in present]
    wrong = [
        f"{c!r} is {present[c].simpleString()}, expected {t.simpleString()}"
        for c, t in expected.items()
        if c in present and t is not None and present[c].simpleString() != t.simpleString()  # nullability aside
    ]
    problems = []
    if missing:
        problems.append(f"missing columns {missing}")
    if wrong:
        problems.append("wrong types: " + "; ".join(wrong))
    if problems:
        shown = [c for c in present if c not in internal]
        raise InputSchemaError(f"{what}: {'; '.join(problems)}; present: {shown}")


def conform_to_schema(df: DataFrame, schema: StructType, what: str) -> DataFrame:
    """``df``'s columns in ``schema`` order; extra, missing or mistyped columns are an error.

    Nullability is left to Delta, which enforces the table's NOT NULL columns on write.
    """
    require_columns(df, {f.name: f.dataType for f in schema.fields}, what)
    extra = [c for c in df.columns if c not in schema.fieldNames()]
    if extra:
        raise InputSchemaError(f"{what}: unexpected columns {extra}; expected: {schema.fieldNames()}")
    return df.select(*schema.fieldNames())


def first_failure(checks: Sequence[tuple[Column, str | Column]]) -> Column:
    """The reason of the first check whose condition holds, else null (the row is valid).

    A reason is a string, or a string column when it carries row detail (an error message).
    """
    reasons = [F.when(cond, reason if isinstance(reason, Column) else F.lit(reason)) for cond, reason in checks]
    return F.coalesce(*reasons, F.lit(None).cast("string"))


def split_rejected(df: DataFrame) -> tuple[DataFrame, DataFrame]:
    """Split a frame carrying a :data:`REASON` column into (valid rows, rejected rows)."""
    valid = df.filter(F.col(REASON).isNull()).drop(REASON)
    rejected = df.filter(F.col(REASON).isNotNull())
    return valid, rejected


def to_quarantine(rejected: DataFrame, source: str, target_table: str, raw: Column | None = None) -> DataFrame:
    """Rows for the ``quarantine`` table; ``raw`` defaults to the row's input columns as JSON."""
    if raw is None:
        inputs = [c for c in rejected.columns if c != REASON and not c.startswith("_")]
        raw = F.to_json(F.struct(*inputs))
    return rejected.select(
        F.lit(source).alias(Q.SOURCE),
        F.lit(target_table).alias(Q.TARGET_TABLE),
        F.col(REASON).alias(Q.REASON),
        raw.alias(Q.RAW),
        F.current_timestamp().alias(Q.QUARANTINED_AT),
    )


def is_blank(col: Column) -> Column:
    return col.isNull() | (F.trim(col) == "")


def duplicated(key: str) -> Column:
    """True on every row whose ``key`` occurs more than once (all copies, none preferred)."""
    return F.count(F.lit(1)).over(Window.partitionBy(key)) > 1
