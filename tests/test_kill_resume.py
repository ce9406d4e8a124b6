"""SIGKILL a running job's (or the nightly's) whole process group (driver, JVM, Python workers) mid-write, re-run
it, and find every table it writes equal to an uninterrupted run's (``exceptAll`` both ways).

The job runs as ``python -m jobs.<name>`` in its own session; it is killed at the first sign of
its output on disk (a data file not yet committed, or its first commit), so each test kills at
a point where the write is under way.
"""

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobs import pin_features, score_impressions
from models.artifacts.registry import Registry
from models.artifacts.storage import Storage
from models.random_models import save_random_blip
from runtime.lake import Lake
from runtime.run_lock import holder_of
from tests.test_pin_features import image_pins  # noqa: F401  (fixture)
from tests.test_score_impressions import overrides as scorer_overrides
from tests.test_score_impressions import publish_teacher, write_inputs

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # each test starts two more Spark JVMs: in `make test-slow`


def data_files(table_dir: Path) -> int:
    return sum(1 for p in table_dir.rglob("*.parquet")) if table_dir.is_dir() else 0


def commits(table_dir: Path) -> int:
    log = table_dir / "_delta_log"
    return sum(1 for p in log.glob("*.json")) if log.is_dir() else 0


def module_command(module: str, sets: list[str]) -> list[str]:
    """``python -m module --set s ...``"""
    return [sys.executable, "-m", module, *(arg for s in sets for arg in ("--set", s))]


def run_and_kill(module: str, sets: list[str], killed_when, timeout: float = 300, poll: float = 0.02) -> str:
    """Start ``python -m module --set ...`` in its own process group; SIGKILL the group as soon as
    ``killed_when()`` holds. Returns what it printed; fails if it finished before the kill."""
    proc = subprocess.Popen(
        module_command(module, sets),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    try:
        while not killed_when():
            if proc.poll() is not None:
                pytest.fail(f"{module} ended (status {proc.returncode}) before the kill point:\n{proc.stdout.read()}")
            if time.monotonic() > deadline:
                pytest.fail(f"{module}: no kill point within {timeout} s")
            time.sleep(poll)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    return proc.stdout.read()


def assert_tables_equal(spark, a: Lake, b: Lake, tables: dict[str, list[str]], non_empty: bool = True) -> None:
    """Each table equal in both lakes, ignoring the named (time-of-run) columns (and, unless
    ``non_empty`` is off, holding rows)."""
    for table, ignore in tables.items():
        left, right = a.read(spark, table).drop(*ignore), b.read(spark, table).drop(*ignore)
        assert left.count() > 0 or not non_empty, table
        assert left.exceptAll(right).count() == 0 and right.exceptAll(left).count() == 0, table


def copy_lake(src: Lake, dst: Path) -> Lake:
    shutil.copytree(src.root, dst)
    return Lake.at(str(dst))


@pytest.mark.parametrize("kill_at", ["first uncommitted data file", "first chunk committed"])
def test_score_impressions_killed_mid_run_resumes_to_the_uninterrupted_result(spark, lake, cfg_for, tmp_path, kill_at):
    write_inputs(spark, lake, n_impressions=3000)
    publish_teacher(lake.artifacts_path(), tmp_path)
    killed = copy_lake(lake, tmp_path / "killed")
    sets = scorer_overrides("scorer.chunks=4")
    score_impressions.run(spark, cfg_for(*sets))  # the uninterrupted run, in this lake

    scores = Path(killed.table_path("teacher_scores"))
    base = commits(scores)
    if kill_at == "first uncommitted data file":
        run_and_kill("jobs.score_impressions", [*sets, f"lake.root={killed.root}"], lambda: data_files(scores) > 0)
        assert commits(scores) <= base + 1  # killed before or at its first chunk
    else:
        run_and_kill("jobs.score_impressions", [*sets, f"lake.root={killed.root}"], lambda: commits(scores) >= 2)

    score_impressions.run(spark, cfg_for(*sets, f"lake.root={killed.root}"))
    assert_tables_equal(
        spark,
        lake,
        killed,
        {"teacher_scores": ["scored_at"], "labeled_impressions": ["scored_at"], "quarantine": ["quarantined_at"]},
    )


def test_pin_features_killed_mid_run_resumes_to_the_uninterrupted_result(spark, lake, cfg_for, tmp_path, image_pins):  # noqa: F811
    _, pins = image_pins
    lake.replace_slice(pins, "pins", "source = 'test'")
    killed = copy_lake(lake, tmp_path / "killed")
    sets = [
        f"captioner.model_path={save_random_blip(tmp_path / 'blip')}",
        "captioner.max_new_tokens=6",
        "features.as_of=2026-11-10",
    ]
    pin_features.run(spark, cfg_for(*sets))

    captions = Path(killed.table_path("pin_captions"))
    run_and_kill("jobs.pin_features", [*sets, f"lake.root={killed.root}"], lambda: data_files(captions) > 0)
    pin_features.run(spark, cfg_for(*sets, f"lake.root={killed.root}"))
    assert_tables_equal(
        spark,
        lake,
        killed,
        {"pin_captions": ["captioned_at"], "pin_text_features": [], "quarantine": ["quarantined_at"]},
    )


@pytest.mark.parametrize("kill_at", ["lock taken", "ingest recorded", "serving_corpus writing"])
def test_nightly_killed_at_any_point_resumes_to_the_uninterrupted_result(spark, lake, cfg_for, tmp_path, kill_at):
    from jobs import nightly
    from tests.test_nightly import DAY, nightly_sets

    data = tmp_path / "data" / "s3rec"
    data.mkdir(parents=True)
    (data / "Tiny.txt").write_text(
        "\n".join(f"{u} " + " ".join(str((u * 7 + k) % 40 + 1) for k in range(12)) for u in range(60))
    )
    sets = nightly_sets(tmp_path / "data")
    nightly.run(spark, cfg_for(*sets))  # the uninterrupted nightly, in this lake

    killed = Lake.at(str(tmp_path / "killed"))
    lock = nightly.lock_path(cfg_for(*sets, f"lake.root={killed.root}"), DAY)
    runs = Path(killed.table_path("pipeline_runs"))
    when = {
        "lock taken": lambda: holder_of(lock) is not None,
        "ingest recorded": lambda: commits(runs) >= 1,
        "serving_corpus writing": lambda: data_files(Path(killed.table_path("engagement_decay"))) > 0,
    }[kill_at]
    run_and_kill("jobs.nightly", [*sets, f"lake.root={killed.root}"], when)
    assert lock.exists()  # SIGKILL: no cleanup ran; the re-run finds the lock stale (its pid is gone)

    report = nightly.run(spark, cfg_for(*sets, f"lake.root={killed.root}"))
    assert {s.stage for s in report.stages} == {"ingest", "serving_corpus"}
    assert_tables_equal(spark, lake, killed, {"user_engagements": [], "engagement_decay": [], "serving_corpus": []})
    done = killed.read(spark, "pipeline_runs").filter("status = 'succeeded'").select("stage").collect()
    assert sorted(r.stage for r in done) == ["ingest", "serving_corpus"]  # each succeeded once


WHOLE_NIGHTLY_STAGES = (
    "[simulate, ingest, pin_features, train_teacher, score_impressions, student_features, train_student, "
    "train_two_tower, serving_corpus, embed_pins, build_index, retrieve_candidates]"
)


def whole_nightly_sets(root: Path, lake_root: Path) -> list[str]:
    """Every stage of the nightly on tiny inputs: a simulated day, a tiny S3-Rec file, a random tiny
    BERT as the teacher's backbone and the students' text encoder."""
    from models.random_models import save_random_backbone
    from tests.test_nightly import DAY
    from tests.test_train_teacher import teacher_overrides
    from tests.test_train_two_tower import TINY_JOB

    data = root / "data" / "s3rec"
    if not data.is_dir():
        data.mkdir(parents=True)
        (data / "Tiny.txt").write_text(
            "\n".join(f"{u} " + " ".join(str((u * 7 + k) % 40 + 1) for k in range(12)) for u in range(60))
        )
    backbone = root / "bert"
    if not backbone.is_dir():
        save_random_backbone(backbone, "bert")
    return [
        f"lake.root={lake_root}",
        f"nightly.date={DAY}",
        f"nightly.stages={WHOLE_NIGHTLY_STAGES}",
        f"ingest.data_root={root / 'data'}",
        "ingest.sources=[s3rec]",
        "ingest.s3rec_datasets=[Tiny]",
        "simulate.impressions_per_day=600",
        "simulate.n_pins=200",
        "simulate.n_queries=30",
        "simulate.n_users=80",
        "simulate.n_boards=20",
        "simulate.n_topics=4",
        "simulate.n_labels=300",
        "simulate.partitions=2",
        *teacher_overrides(
            backbone,
            "teacher.label_sources=[simulated]",
            "teacher.int8_calibration_pairs=16",
            "teacher.openvino_export=true",  # the export is part of what must come out identical
        ),
        # a random tiny BERT does not beat BM25: without its gate it is promoted, so that every stage
        # after it has a teacher (this test is about resuming; the floor has its own tests)
        "teacher.gate.enabled=false",
        f"student_features.encoder_path={backbone}",
        "student.model.hidden=[16]",
        "student.training.epochs=3",
        "student.label_sources=[simulated]",
        *[s for s in TINY_JOB if not s.startswith(("two_tower.source", "two_tower.item_attributes"))],
        "two_tower.source=s3rec_tiny",
        "two_tower.training.epochs=10",
        "index.partitions=2",
    ]


def run_nightly(sets: list[str]) -> str:
    """The nightly as its own process (as the killed runs are: same session settings, threads)."""
    done = subprocess.run(module_command("jobs.nightly", sets), cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def published(artifacts: Storage) -> dict[str, object]:
    """Every family's kept versions (their files' checksums), promoted version and candidate,
    on any store (``indexes/<name>`` for the indexes)."""
    found = {}
    families = [n for n in artifacts.listdir() if n != "indexes"]
    for family in [*families, *(f"indexes/{n}" for n in artifacts.listdir("indexes"))]:
        folder, _, name = family.rpartition("/")
        registry = Registry(artifacts.child(folder) if folder else artifacts)
        if versions := registry.versions(name):
            found[family] = {
                "versions": {v: registry.manifest(name, v)["files"] for v in versions},
                "current": registry.current(name),
                "candidate": registry.candidate(name),
            }
    return found


def test_the_whole_nightly_on_s3_killed_three_times_resumes_to_the_uninterrupted_tables_and_artifacts(
    tmp_path, s3_server, uninterrupted_nightly
):
    """The nightly with its lake only on the S3 server is SIGKILLed (its whole process group)
    three times, each re-run resuming where the last was killed: a random moment into
    train_teacher; just after the student's manifest is written (before its pointer moves or its
    stage is recorded); in build_index as soon as a task has uploaded its shard (before the
    version's manifest), or between the index's manifest and its promotion record, else 1-3 s
    after it claimed its version. Then every table and every artifact equals the uninterrupted
    nightly's on a local lake."""
    import uuid

    from tests.lake_equality import compare_lakes
    from tests.s3_server import BUCKET

    inputs, whole = uninterrupted_nightly
    root = f"s3a://{BUCKET}/{uuid.uuid4().hex}/lake"
    s3 = [f"lake.s3.endpoint={s3_server.endpoint}", "lake.s3.path_style=true"]
    killed = Lake.at(root, s3_server.settings, str(tmp_path / "cache"))
    artifacts, runs = killed.artifacts(), Storage(killed.table_path("pipeline_runs"), s3_server.settings)
    index = "indexes/two_tower_items"
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    print(f"kill delays seeded {seed}")
    rng.seed(seed)

    def recorded() -> int:
        return sum(1 for n in runs.listdir("_delta_log") if n.endswith(".json")) - 1  # commit 0 creates it

    def after_stage(stage: str, within_seconds: float):
        """True a random moment (up to ``within_seconds``) after ``stage``'s row is recorded."""
        rows_before = WHOLE_NIGHTLY_STAGES.strip("[]").split(", ").index(stage) + 1
        delay, seen = rng.uniform(0.0, within_seconds), []

        def when() -> bool:
            if not seen and recorded() >= rows_before:
                seen.append(time.monotonic())
            return bool(seen) and time.monotonic() - seen[0] >= delay

        return when

    def committed(family: str) -> bool:
        return artifacts.is_file(f"{family}/v0001/manifest.json")

    def shard_uploaded_not_committed() -> bool:
        return any(n.endswith(".faiss") for n in artifacts.listdir(f"{index}/v0001")) and not committed(index)

    def claimed_for(seconds: float):
        """True ``seconds`` after the index build has claimed its version (its tasks at work)."""
        seen: list[float] = []

        def when() -> bool:
            if not seen and artifacts.is_file(f"{index}/.claims/v0001"):
                seen.append(time.monotonic())
            return bool(seen) and time.monotonic() - seen[0] >= seconds

        return when

    fired: list[str] = []

    def first(**conditions):
        """True as soon as one of the named conditions holds; which one goes into ``fired``."""

        def when() -> bool:
            for name, condition in conditions.items():
                if condition():
                    fired.append(name)
                    return True
            return False

        return when

    kill_points = {
        "during train_teacher": first(random_moment=after_stage("pin_features", 4.0)),
        "student manifest written, pointer not moved": first(manifest=lambda: committed("student")),
        "in build_index": first(
            shard_uploaded_not_committed=shard_uploaded_not_committed,
            index_manifest_not_promoted=lambda: committed(index) and not artifacts.listdir(f"{index}/promotions"),
            claimed_a_while=claimed_for(rng.uniform(1, 3)),
        ),
    }
    sets = [*(s for s in whole_nightly_sets(inputs, tmp_path / "unused") if not s.startswith("lake.root=")), *s3]
    sets.append(f"lake.root={root}")
    for point, when in kill_points.items():
        run_and_kill("jobs.nightly", sets, when, timeout=900, poll=0.1)
        print(f"killed {point} ({fired[-1]}): {recorded()} stage rows recorded; index files {artifacts.files(index)}")
    print(run_nightly(sets))

    result = compare_lakes(str(whole.root), root, s3)
    tables, succeeded = result["tables"], result["succeeded_stages"]
    assert {"serving_corpus", "pin_embeddings", "labeled_impressions", "student_features"} <= set(tables)
    assert {t: d for t, d in tables.items() if d[1:] != [0, 0] and t != "pipeline_runs"} == {}  # kills add runs
    for table in ("serving_corpus", "pin_embeddings", "labeled_impressions", "student_features", "user_candidates"):
        assert tables[table][0] > 0, table
    assert published(artifacts) == published(whole.artifacts())
    assert {"teacher", "student", "two_tower", index} <= set(published(artifacts))
    assert succeeded == sorted(WHOLE_NIGHTLY_STAGES.strip("[]").split(", "))  # each once
