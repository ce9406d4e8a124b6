import pytest
from delta.tables import DeltaTable
from pyspark.errors import AnalysisException

from runtime.lake import TableSchemaMismatch
from runtime.validation import InputSchemaError
from schemas import table_spec

BOARDS = "board_id string, source string, title string, owner_user_id string, created_at timestamp"


def boards(spark, rows):
    return spark.createDataFrame(rows, BOARDS)


def test_replace_slice_touches_only_its_slice_and_commits(spark, lake):
    lake.replace_slice(
        boards(spark, [("a1", "a", "A", None, None), ("a2", "a", "A2", None, None)]), "boards", "source = 'a'"
    )
    lake.replace_slice(boards(spark, [("b1", "b", "B", None, None)]), "boards", "source = 'b'")
    written = lake.replace_slice(boards(spark, [("a3", "a", "A3", None, None)]), "boards", "source = 'a'")
    assert written == 1
    ids = sorted(r.board_id for r in lake.read(spark, "boards").collect())
    assert ids == ["a3", "b1"]
    history = DeltaTable.forPath(spark, lake.table_path("boards")).history().collect()
    assert [h.operation for h in history][:3] == ["WRITE", "WRITE", "WRITE"]
    assert lake.read(spark, "boards").schema == table_spec("boards").schema


def test_rows_outside_the_slice_are_refused(spark, lake):
    with pytest.raises(
        AnalysisException, match=r"(?s)DELTA_REPLACE_WHERE_MISMATCH.*violated by row with values:\s+- source : other"
    ):
        lake.replace_slice(boards(spark, [("x", "other", "X", None, None)]), "boards", "source = 'a'")
    assert not lake.exists(spark, "boards") or lake.read(spark, "boards").count() == 0


def test_wrong_frame_is_refused_before_writing(spark, lake):
    bad = spark.createDataFrame([("a1", "a")], "board_id string, source string")
    with pytest.raises(
        InputSchemaError, match=r"write to boards: missing columns \['title', 'owner_user_id', 'created_at'\]"
    ):
        lake.replace_slice(bad, "boards", "source = 'a'")
    assert not lake.exists(spark, "boards") or lake.read(spark, "boards").count() == 0


def test_null_key_is_refused_by_delta(spark, lake):
    lake.replace_slice(boards(spark, [("a1", "a", "A", None, None)]), "boards", "source = 'a'")
    with pytest.raises(
        AnalysisException,
        match=r"DELTA_NOT_NULL_CONSTRAINT_VIOLATED\] NOT NULL constraint violated for column: board_id",
    ):
        lake.replace_slice(boards(spark, [(None, "a", "A", None, None)]), "boards", "source = 'a'")
    assert [r.board_id for r in lake.read(spark, "boards").collect()] == ["a1"]  # the slice is untouched


def test_unknown_table_lists_known_ones(spark, lake):
    with pytest.raises(KeyError, match="known tables"):
        lake.replace_slice(boards(spark, []), "boardz", "true")


def test_insert_new_adds_only_unseen_keys_and_counts_them(spark, lake):
    rows = boards(spark, [("a1", "a", "A", None, None), ("a2", "a", "A2", None, None)])
    assert lake.insert_new(rows, "boards", ("board_id",)) == 2
    assert lake.insert_new(rows, "boards", ("board_id",)) == 0  # nothing new: no commit to misread
    more = boards(spark, [("a2", "a", "changed", None, None), ("a3", "a", "A3", None, None)])
    assert lake.insert_new(more, "boards", ("board_id",)) == 1
    titles = {r.board_id: r.title for r in lake.read(spark, "boards").collect()}
    assert titles == {"a1": "A", "a2": "A2", "a3": "A3"}  # existing rows are never overwritten


def test_a_table_written_under_another_schema_version_is_named_not_overwritten(spark, lake):
    old = "board_id string, source string, title string, owner_user_id string, created_at timestamp, legacy int"
    before = spark.createDataFrame([("o1", "a", "Old", None, None, 7)], old)
    before.write.format("delta").save(lake.table_path("boards"))
    with pytest.raises(TableSchemaMismatch, match=r"'boards' at .* lacks nothing and has \['legacy int'\] besides"):
        lake.replace_slice(boards(spark, [("a1", "a", "A", None, None)]), "boards", "source = 'a'")
    assert [r.board_id for r in lake.read(spark, "boards").collect()] == ["o1"]
