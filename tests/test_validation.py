import pytest
from pyspark.sql import functions as F
from pyspark.sql.types import IntegerType, LongType, StringType, StructField, StructType

from runtime.validation import (
    REASON,
    InputSchemaError,
    conform_to_schema,
    duplicated,
    first_failure,
    require_columns,
    split_rejected,
    to_quarantine,
)
from schemas.quarantine import QUARANTINE_V1


def test_missing_columns_error_names_missing_and_present(spark):
    df = spark.createDataFrame([("p1", "x")], "pin_id string, q string")
    with pytest.raises(InputSchemaError) as err:
        require_columns(df, {"pin_id": StringType(), "query": StringType()}, "impressions")
    assert str(err.value) == "impressions: missing columns ['query']; present: ['pin_id', 'q']"


def test_wrong_type_error_names_column_and_types(spark):
    df = spark.createDataFrame([("p1", "3")], "pin_id string, position string")
    with pytest.raises(
        InputSchemaError, match=r"wrong types: 'position' is string, expected int; present: \['pin_id', 'position'\]"
    ):
        require_columns(df, {"pin_id": StringType(), "position": IntegerType()}, "impressions")


def test_conform_reorders_and_rejects_extra_columns(spark):
    schema = StructType([StructField("a", LongType()), StructField("b", StringType())])
    df = spark.createDataFrame([("x", 1)], "b string, a long")
    assert conform_to_schema(df, schema, "t").columns == ["a", "b"]
    with pytest.raises(InputSchemaError, match=r"unexpected columns \['c'\]"):
        conform_to_schema(df.withColumn("c", F.lit(1)), schema, "t")


def test_first_failure_split_and_quarantine(spark):
    df = spark.createDataFrame([("1", "a"), ("", "b"), ("3", None), ("3", "c")], "id string, q string")
    classified = df.withColumn(
        REASON,
        first_failure(
            [
                (F.col("id") == "", "missing id"),
                (F.col("q").isNull(), "empty query"),
                (duplicated("id"), "duplicate id"),
            ]
        ),
    )
    valid, rejected = split_rejected(classified)
    assert valid.collect() == [("1", "a")] and valid.columns == ["id", "q"]
    q = to_quarantine(rejected, "src", "t")
    assert q.schema.fieldNames() == QUARANTINE_V1.fieldNames()
    got = sorted((r.reason, r.raw) for r in q.collect())
    assert got == [
        ("duplicate id", '{"id":"3","q":"c"}'),
        ("empty query", '{"id":"3"}'),
        ("missing id", '{"id":"","q":"b"}'),
    ]
