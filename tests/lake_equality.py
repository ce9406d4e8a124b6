"""Compare the Delta tables of two lakes, either on any store: ``python -m tests.lake_equality
A B --set lake.s3.endpoint=...`` prints one JSON object: ``tables``, ``{table: [rows, only in A,
only in B]}`` for every pinpipe table either lake holds (run-time columns set aside), and
``succeeded_stages``, the stages B's ``pipeline_runs`` records as succeeded (one entry per row). Its own process: the
Spark session it opens has Hadoop's S3A connector, which the tests' shared session has not."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.compare_lakes import comparable
from jobs.config import load_config
from runtime.lake import Lake
from runtime.session import spark_session
from schemas import TABLES

RUN_TIME_COLUMNS = {
    "pin_captions": ["captioned_at"],
    "quarantine": ["quarantined_at"],
    "teacher_scores": ["scored_at"],
    "labeled_impressions": ["scored_at"],
    "text_embeddings": ["embedded_at"],
    "pipeline_runs": ["run_id", "started_at", "ended_at", "seconds", "summary"],  # summaries hold rates
}


def compare_lakes(a: str, b: str, sets: list[str]) -> dict:
    """Run this module on lakes ``a`` and ``b`` (``sets`` reach b's store) in a process of its
    own; what it printed: ``{"tables": ..., "succeeded_stages": ...}``."""
    compared = subprocess.run(
        [sys.executable, "-m", "tests.lake_equality", a, b, *sets],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert compared.returncode == 0, compared.stderr[-5000:]
    return json.loads(compared.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> None:
    a_root, b_root, *sets = argv
    cfg = load_config("local", overrides=[f"lake.root={b_root}", *sets])
    a, b = Lake.at(a_root, cfg.lake.s3), Lake.of(cfg.lake)
    out = {}
    with spark_session("lake-equality", cfg.spark, quiet=True, lake=cfg.lake) as spark:
        for table in TABLES:
            if not (a.exists(spark, table) or b.exists(spark, table)):
                continue
            drop = RUN_TIME_COLUMNS.get(table, [])
            left, right = (
                comparable(a.read_or_empty(spark, table), drop),
                comparable(b.read_or_empty(spark, table), drop),
            )
            out[table] = [left.count(), left.exceptAll(right).count(), right.exceptAll(left).count()]
        runs = b.read_or_empty(spark, "pipeline_runs").filter("status = 'succeeded'").select("stage").collect()
        succeeded = sorted(r.stage for r in runs)
    print(json.dumps({"tables": out, "succeeded_stages": succeeded}, sort_keys=True))


if __name__ == "__main__":
    main(sys.argv[1:])
