"""``retrieve_candidates``: every user's candidates from the promoted pair into Delta, as
``pinpipe retrieve`` serves them; re-runs and a run killed by the OS leave the same rows.

A real multi-interest (capsule) two-tower, published, embedded and indexed by the real jobs."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from jobs import build_index, embed_pins, retrieve_candidates
from jobs.config import load_config
from models.retrieval.serving import Retrieval
from models.retrieval.two_tower import new_model
from models.retrieval.two_tower_settings import TwoTowerSettings
from runtime.lake import Lake
from tests.retrieval_lake import publish, write_sequences

pytestmark = pytest.mark.slow  # Spark jobs and a killed pinpipe process: in `make test-slow`, which CI runs

N_ITEMS = 120
SOURCE = "s3rec_tiny"
USERS = {f"u{u}": [f"p{(5 * u + 7 * k) % N_ITEMS:04d}" for k in range(3 + u % 5)] for u in range(40)}
DAY = dt.date(2026, 11, 1)
K = 7


def overrides(lake: Lake) -> list[str]:
    return [
        f"lake.root={lake.root}",
        "index.partitions=2",
        "index.model_version=v0001",
        f"retrieve_candidates.date={DAY}",
        f"retrieve_candidates.k={K}",
        "retrieve_candidates.partitions=3",
        "retrieve_candidates.batch_users=8",
    ]


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory):
    lake = Lake.at(str(tmp_path_factory.mktemp("candidates") / "lake"))
    write_sequences(spark, lake, USERS, SOURCE)
    torch.manual_seed(3)
    settings = TwoTowerSettings(dim=16, max_len=6, layers=1, heads=2, user_head="capsules", user_vectors=3)
    publish(lake, new_model(N_ITEMS, settings).eval(), SOURCE)
    cfg = load_config("local", overrides=overrides(lake))
    embed_pins.run(spark, cfg)
    build_index.run(spark, cfg)
    return lake


def slice_rows(spark, lake: Lake) -> list[tuple]:
    rows = lake.read(spark, "user_candidates").filter(retrieve_candidates.candidates_slice("two_tower/v0001", DAY))
    return sorted(tuple(r) for r in rows.collect())


def test_every_user_gets_what_retrieve_serves_and_a_rerun_writes_the_same_rows(spark, lake):
    cfg = load_config("local", overrides=overrides(lake))
    report = retrieve_candidates.run(spark, cfg)
    assert (report.users, report.rows) == (len(USERS), len(USERS) * K)
    assert "users/s" in report.line()
    first = slice_rows(spark, lake)
    retrieval = Retrieval.open(lake.artifacts_path(), "two_tower_items")
    by_user: dict[str, list] = {}
    for row in first:
        by_user.setdefault(row[0], []).append(row)
    assert sorted(by_user) == sorted(USERS)
    interests = set()
    for user, pins in USERS.items():
        want = retrieval.top_k(pins, K)
        got = sorted(by_user[user], key=lambda r: r[1])
        assert [r[1] for r in got] == list(range(1, K + 1))
        assert [(r[2], r[4]) for r in got] == [(c.pin, c.interest) for c in want]
        assert not {r[2] for r in got} & set(pins)
        assert all(r[6] == "two_tower_items/v0001" and r[7] == "two_tower/v0001" and r[8] == DAY for r in got)
        interests |= {r[4] for r in got}
    assert len(interests) > 1  # a multi-interest model: candidates come from several interests

    again = retrieve_candidates.run(spark, cfg)
    assert again.rows == report.rows and slice_rows(spark, lake) == first

    only = load_config("local", overrides=[*overrides(lake), "retrieve_candidates.users=[u1, u2]"])
    assert retrieve_candidates.run(spark, only).users == 2  # a user list replaces the slice with its users


def test_a_run_killed_by_the_os_then_rerun_leaves_no_duplicates(spark, lake, tmp_path):
    cfg = load_config("local", overrides=overrides(lake))
    retrieve_candidates.run(spark, cfg)
    uninterrupted = slice_rows(spark, lake)
    root = Path(__file__).resolve().parents[1]
    args = [sys.executable, "-m", "jobs.retrieve_candidates"]
    for o in overrides(lake):
        args += ["--set", o]
    log = tmp_path / "killed.log"
    with log.open("w") as out:
        proc = subprocess.Popen(args, cwd=root, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 180
        while "retrieve_candidates: two_tower/v0001 through" not in log.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.2)
        time.sleep(1.0)  # its Spark stage is running
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert slice_rows(spark, lake) == uninterrupted  # nothing half-written: the slice is as it was
    retrieve_candidates.run(spark, cfg)
    rows = slice_rows(spark, lake)
    assert rows == uninterrupted
    assert len({(r[0], r[1]) for r in rows}) == len(rows)  # one row per (user, rank)
