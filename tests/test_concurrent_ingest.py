"""Two ``pinpipe ingest`` processes on one lake at once (real processes, each its own JVM)."""

import subprocess
import sys
from pathlib import Path

import pytest

from runtime.lake import Lake
from tests.test_hostile_input import HEADER, row

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # two Spark JVMs per test: in `make test-slow`


@pytest.fixture
def data_root(tmp_path):
    root = tmp_path / "data"
    (root / "crowdflower").mkdir(parents=True)
    (root / "crowdflower" / "labels.csv").write_text(HEADER + "".join(row(str(i), title=f"T{i}") for i in range(40)))
    (root / "s3rec").mkdir()
    (root / "s3rec" / "Tiny.txt").write_text("".join(f"{u} {u + 1} {u + 2} {u + 3}\n" for u in range(30)) + "x 1\n")
    return root


def ingest_at_once(lake: Lake, data_root: Path, *sources: str) -> list[subprocess.CompletedProcess]:
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jobs.ingest",
                "--set",
                f"lake.root={lake.root}",
                "--set",
                f"ingest.data_root={data_root}",
                "--set",
                f"ingest.sources=[{source}]",
                "--set",
                "ingest.s3rec_datasets=[Tiny]",
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for source in sources
    ]
    return [subprocess.CompletedProcess(p.args, p.wait(timeout=600), *p.communicate()) for p in procs]


def test_two_sources_at_once_both_succeed(spark, lake, data_root):
    results = ingest_at_once(lake, data_root, "crowdflower", "s3rec")
    assert [r.returncode for r in results] == [0, 0], [r.stderr[-2000:] for r in results]
    assert "records read 40 = written 40 + quarantined 0" in results[0].stdout
    assert "lines read 31 = written 30 + quarantined 1" in results[1].stdout
    assert lake.read(spark, "human_labels").count() == 40
    assert lake.read(spark, "user_engagements").count() == 90
    by_source = {r.source: r["count"] for r in lake.read(spark, "quarantine").groupBy("source").count().collect()}
    assert by_source == {"s3rec_tiny": 1}


def test_one_source_twice_at_once_leaves_correct_tables_and_one_clear_message(spark, lake, data_root):
    results = ingest_at_once(lake, data_root, "crowdflower", "crowdflower")
    assert 0 in [r.returncode for r in results]
    for failed in (r for r in results if r.returncode != 0):
        assert failed.returncode == 1
        said = [line for line in failed.stderr.splitlines() if line.startswith("pinpipe ingest:")]
        assert len(said) == 2 and "Traceback" not in failed.stderr, failed.stderr[-3000:]
        assert said[0].startswith("pinpipe ingest: error: SliceConflict: another run replaced the rows"), said
        assert said[1] == "pinpipe ingest: run again with --verbose for the full trace"
    labels = lake.read(spark, "human_labels")
    assert labels.count() == labels.select("label_id").distinct().count() == 40
    assert lake.read(spark, "pins").count() == 40
