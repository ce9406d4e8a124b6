import pytest

from runtime import session
from runtime.session import MissingJarsError, session_builder
from tests.conftest import TEST_SPARK


def options(builder):
    return dict(builder._options)  # the properties the builder would set


def test_local_builder_sets_master_jars_and_delta(monkeypatch):
    monkeypatch.delenv("PYSPARK_GATEWAY_PORT", raising=False)
    opts = options(session_builder("t", TEST_SPARK))
    assert opts["spark.master"] == "local[2]"
    assert opts["spark.app.name"] == "t"
    assert "delta-spark_" in opts["spark.jars"]
    assert opts["spark.sql.extensions"] == session.DELTA_EXTENSION
    assert opts["spark.sql.catalog.spark_catalog"] == session.DELTA_CATALOG
    assert opts["spark.sql.shuffle.partitions"] == "2"
    assert opts["spark.default.parallelism"] == "2"  # from extra


def test_under_spark_submit_the_submit_line_rules(monkeypatch):
    monkeypatch.setenv("PYSPARK_GATEWAY_PORT", "12345")
    monkeypatch.setenv("PINPIPE_JARS_DIR", "/nonexistent")  # jars come from --jars/--packages
    assert session.under_spark_submit()
    opts = options(session_builder("t", TEST_SPARK))
    for key in ("spark.master", "spark.app.name", "spark.jars", "spark.driver.memory"):
        assert key not in opts
    assert opts["spark.sql.extensions"] == session.DELTA_EXTENSION


def test_missing_jars_say_how_to_fix(monkeypatch, tmp_path):
    monkeypatch.delenv("PYSPARK_GATEWAY_PORT", raising=False)
    monkeypatch.setenv("PINPIPE_JARS_DIR", str(tmp_path))
    with pytest.raises(MissingJarsError, match=r"no Delta jars in .*run setup/setup.sh"):
        session_builder("t", TEST_SPARK)


def test_session_is_delta_enabled(spark, tmp_path):
    spark.range(3).write.format("delta").save(str(tmp_path / "t"))
    assert spark.sql(f"DESCRIBE HISTORY delta.`{tmp_path / 't'}`").count() == 1
