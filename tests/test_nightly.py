import datetime as dt
from pathlib import Path

import pytest

from jobs import ingest, nightly, nightly_report, serving_corpus
from jobs.config import load_config
from runtime.config import ConfigError
from runtime.run_lock import LockHeld
from schemas import pipeline_runs as PR
from tests.test_run_lock import holder_process

DAY = dt.date(2020, 1, 5)


@pytest.fixture
def tiny_data(tmp_path) -> Path:
    root = tmp_path / "data"
    (root / "s3rec").mkdir(parents=True)
    (root / "s3rec" / "Tiny.txt").write_text("1 1 2 3 4\n2 2 3 5\n3 1 5 6 2\n")
    return root


def nightly_sets(data: Path) -> list[str]:
    """A nightly of ingest (a tiny S3-Rec file under ``data``) and serving_corpus."""
    return [
        f"ingest.data_root={data}",
        "ingest.sources=[s3rec]",
        "ingest.s3rec_datasets=[Tiny]",
        "nightly.stages=[ingest, serving_corpus]",
        f"nightly.date={DAY}",
    ]


def nightly_cfg(cfg_for, data: Path, *extra: str):
    return cfg_for(*nightly_sets(data), *extra)


def statuses(spark, lake):
    rows = lake.read(spark, "pipeline_runs").orderBy(PR.STARTED_AT).collect()
    return [(r[PR.STAGE], r[PR.STATUS]) for r in rows]


def test_a_failed_nightly_resumes_at_the_failed_stage(spark, lake, cfg_for, tiny_data, monkeypatch):
    cfg = nightly_cfg(cfg_for, tiny_data)
    real_corpus = serving_corpus.run

    def broken(spark, cfg):
        raise RuntimeError("disk full")

    monkeypatch.setattr(serving_corpus, "run", broken)
    with pytest.raises(nightly.StageFailed, match="stage serving_corpus failed: .*disk full.*resume at serving_corpus"):
        nightly.run(spark, cfg)
    assert statuses(spark, lake) == [("ingest", PR.SUCCEEDED), ("serving_corpus", PR.FAILED)]
    failed = lake.read(spark, "pipeline_runs").filter(f"{PR.STATUS} = 'failed'").first()
    assert "disk full" in failed[PR.ERROR] and failed[PR.RUN_DATE] == DAY
    ingested = lake.read(spark, "pipeline_runs").filter(f"{PR.STAGE} = 'ingest'").first()
    assert ingested[PR.ROWS_WRITTEN]["user_engagements"] == 11  # the rows of Tiny.txt
    page = Path(nightly_report.report_path(cfg, DAY)).read_text()  # written for a failed nightly too
    assert "FAILED at serving_corpus" in page and "disk full" in page and "user_engagements=11" in page

    def must_not_run(spark, cfg):
        raise AssertionError("ingest succeeded for this date already")

    monkeypatch.setattr(ingest, "run", must_not_run)
    monkeypatch.setattr(serving_corpus, "run", real_corpus)
    report = nightly.run(spark, cfg)
    assert [(s.stage, s.status) for s in report.stages] == [("ingest", "done earlier"), ("serving_corpus", "succeeded")]
    assert "serving_corpus: dt=2020-01-05" in report.line()
    assert lake.read(spark, "serving_corpus").filter(f"dt = DATE '{DAY}'").count() == 6  # items 1..6 engaged
    assert report.report == str(nightly_report.report_path(cfg, DAY)) and f"report: {report.report}" in report.line()
    page = Path(report.report).read_text()
    assert "2 stages finished" in page and "FAILED" not in page  # the latest row of each stage
    again = nightly.run(spark, cfg)
    assert [s.status for s in again.stages] == ["done earlier", "done earlier"]
    assert len(statuses(spark, lake)) == 3


def test_a_second_nightly_for_the_date_refuses_while_one_runs(spark, lake, cfg_for, tiny_data):
    cfg = nightly_cfg(cfg_for, tiny_data)
    holder = holder_process(nightly.lock_path(cfg, DAY))  # a live process holds the date's lock
    try:
        with pytest.raises(LockHeld, match=f"nightly {DAY} is already running \\(pid {holder.pid}"):
            nightly.run(spark, cfg)
        assert not lake.exists(spark, "pipeline_runs")  # refused before any stage
    finally:
        holder.kill()
        holder.wait()
    assert [s.status for s in nightly.run(spark, cfg).stages] == ["succeeded", "succeeded"]  # killed: stale


def test_dates_and_schedules():
    cfg = nightly.dated(load_config("local"), DAY)
    assert (cfg.features.as_of, cfg.scorer.start_date, cfg.scorer.end_date) == (DAY, DAY, DAY)
    assert (cfg.student_features.as_of, cfg.serving_corpus.date, cfg.nightly.date) == (DAY, DAY, DAY)
    every = {"train_student": 7}
    monday = dt.date(1970, 1, 1) + dt.timedelta(days=7 * 2600)
    assert nightly.on_schedule("train_student", monday, every, has_promoted=True)
    assert not nightly.on_schedule("train_student", monday + dt.timedelta(days=1), every, has_promoted=True)
    assert nightly.on_schedule("train_student", monday + dt.timedelta(days=1), every, has_promoted=False)
    assert nightly.on_schedule("serving_corpus", monday + dt.timedelta(days=1), every, has_promoted=True)
    with pytest.raises(ConfigError, match="nightly.stages: unknown stages \\['train_everything'\\]"):
        load_config("local", overrides=["nightly.stages=[ingest, train_everything]"])
    uri = load_config("local", overrides=["lake.root=s3a://bucket/lake"])  # the lock lives on the lake's store
    assert nightly.lock_path(uri, DAY).uri() == f"s3a://bucket/lake/_locks/nightly-{DAY}.lock"


def test_a_model_this_dates_nightly_promoted_does_not_count_as_promoted_before(tmp_path):
    """A nightly killed after promoting its student but before recording the stage runs the
    stage again on resume (as the uninterrupted run did), instead of skipping it off schedule."""
    from models.artifacts.registry import Registry

    def build(folder):
        (folder / "w").write_text("w")

    registry = Registry(tmp_path)
    assert not nightly.promoted_before(registry, "student", DAY)
    version = registry.publish("student", build, config={"nightly": {"date": str(DAY)}})
    registry.promote("student", version)
    assert not nightly.promoted_before(registry, "student", DAY)
    assert nightly.promoted_before(registry, "student", DAY + dt.timedelta(days=1))


def test_a_stage_whose_model_family_has_no_production_is_skipped_with_the_reason(spark, lake, cfg_for, tiny_data):
    """A gate rejected the first two-tower: embed_pins has nothing to embed, build_index nothing to
    build. The nightly records each skipped with the gate's reason (no trace) and goes on."""
    from models.artifacts.gate import GateSettings, gate_version
    from models.artifacts.registry import Registry

    registry = Registry(lake.artifacts_path())

    def build(folder):
        (folder / "model.bin").write_bytes(b"weights")

    version = registry.publish("two_tower", build, metrics={}, config={})
    gate = GateSettings(metric="ndcg@10", margin=0.002)
    assert not gate_version(registry, "two_tower", version, gate, lambda folder: 0.01, 50, {"popularity": 0.02}).passed
    cfg = nightly_cfg(cfg_for, tiny_data, "nightly.stages=[ingest, serving_corpus, embed_pins, build_index]")
    report = nightly.run(spark, cfg)
    assert [(s.stage, s.status) for s in report.stages] == [
        ("ingest", PR.SUCCEEDED),
        ("serving_corpus", PR.SUCCEEDED),
        ("embed_pins", PR.SKIPPED),
        ("build_index", PR.SKIPPED),  # the nightly went on past the first
    ]
    skipped = report.stages[2].summary
    assert skipped.startswith("needs a production model: 'two_tower' has no promoted version: its gate rejected")
    assert "popularity 0.0200" in skipped and "Traceback" not in skipped
    row = lake.read(spark, "pipeline_runs").filter(f"{PR.STAGE} = 'embed_pins'").first()
    assert row[PR.STATUS] == PR.SKIPPED and row[PR.SUMMARY] == skipped and row[PR.ERROR] is None
