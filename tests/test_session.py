import os
import subprocess
import sys

import pytest

from runtime import session
from runtime.session import MissingJarsError, session_builder
from runtime.threads import THREAD_VARIABLES
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


DRIVER_THREADS = """
import sys
if sys.argv[1] == "before":
    import faiss, torch  # loaded before the session: told when it starts
from jobs.config import load_config
from runtime.session import spark_session
cfg = load_config("local", overrides=["spark.driver_threads=1", "spark.master=local[2]"])
with spark_session("threads", cfg.spark):
    import faiss, torch  # after the session (as the jobs import them): they read the environment
    print(torch.get_num_threads(), faiss.omp_get_max_threads())
"""


@pytest.mark.parametrize("loaded", ["before", "after"])
def test_the_drivers_compute_threads_follow_spark_driver_threads(loaded):
    """Driver-side training and evaluation use ``spark.driver_threads`` threads, not every core,
    whether torch and faiss were loaded before the session or after it."""
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: every thread count is 1")
    script = [sys.executable, "-c", DRIVER_THREADS, loaded]
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}  # no cap from outside
    done = subprocess.run(script, capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == ["1", "1"]
