"""Two real processes (two JVMs) writing one Delta table at the same moment."""

import re
import subprocess
import sys
import time

import pytest
from pyspark.sql import functions as F

from runtime.session import PROJECT_ROOT

pytestmark = pytest.mark.slow
WRITES = 8


def run_writers(lake, go, *writers, same=False):
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.concurrent_writer", lake.root, source, tag, str(rows), str(WRITES), str(go)]
            + (["same"] if same else []),
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for source, tag, rows in writers
    ]
    time.sleep(20)  # both JVMs up and their frames built
    go.write_text("go")
    return [(p.wait(timeout=600), p.stdout.read()) for p in procs]


def test_writers_of_different_slices_both_succeed_with_their_own_counts(spark, lake, tmp_path):
    results = run_writers(lake, tmp_path / "go", ("a", "wa", 3), ("b", "wb", 5))
    for code, out in results:
        assert code == 0, out
    retries = sum(int(re.search(r"done retries=(\d+)", out).group(1)) for _, out in results)
    assert retries >= 1, "the writers never collided: the test did not exercise a conflict"
    table = lake.read(spark, "boards")
    last = WRITES - 1
    assert sorted(r.board_id for r in table.filter(F.col("source") == "a").collect()) == [
        f"wa-{last}-{k}" for k in range(3)
    ]
    assert sorted(r.board_id for r in table.filter(F.col("source") == "b").collect()) == [
        f"wb-{last}-{k}" for k in range(5)
    ]


def test_writers_of_the_same_slice_leave_one_run_rows_and_the_loser_says_so(spark, lake, tmp_path):
    results = run_writers(lake, tmp_path / "go", ("a", "wx", 3), ("a", "wy", 3))
    codes = sorted(code for code, _ in results)
    assert codes in ([0, 3], [3, 3]), results
    loser = next(out for code, out in results if code == 3)
    assert "another run replaced the rows of 'boards' where source = 'a'" in loser
    ids = sorted(r.board_id for r in lake.read(spark, "boards").collect())
    assert len(ids) == 3 and len({i.rsplit("-", 1)[0] for i in ids}) == 1  # one write of one run, whole


def test_writers_of_the_same_rows_into_one_slice_both_succeed(spark, lake, tmp_path):
    """Two nightlies of different dates write the same catalog slice with the same rows: the one
    that commits second finds its rows already there, and its write is done, not a conflict."""
    results = run_writers(lake, tmp_path / "go", ("a", "wz", 4), ("a", "wz", 4), same=True)
    for code, out in results:
        assert code == 0, out
    same = sum(int(re.search(r"same=(\d+)", out).group(1)) for _, out in results)
    assert same >= 1, "the writers never collided: the test did not exercise a conflict"
    ids = sorted(r.board_id for r in lake.read(spark, "boards").collect())
    assert ids == [f"wz-{k}" for k in range(4)]
