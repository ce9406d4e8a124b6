"""MLflow tracking of what a training job decided: parameters (its config section), metrics, the
gate's decision and the artifact's URI, read back from a real local tracking store (sqlite)."""

from __future__ import annotations

import pytest

from jobs import train_two_tower
from jobs.build_index import IndexReport
from jobs.tracking import track
from models.retrieval.sharded_index import IndexDescription, ShardInfo
from tests.test_train_two_tower import learnable_lake

mlflow = pytest.importorskip("mlflow")  # the optional extra; setup installs it


def runs_in(uri: str, experiment: str = "pinpipe"):
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    return client.search_runs([client.get_experiment_by_name(experiment).experiment_id])


@pytest.mark.slow  # trains a two-tower: in `make test-slow`
def test_a_two_tower_run_is_logged_with_its_settings_metrics_gate_and_artifact(spark, lake, cfg_for, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = learnable_lake(spark, lake, cfg_for)(
        "two_tower.training.epochs=5", f"tracking.mlflow_uri={uri}", "tracking.experiment=retrieval"
    )
    report = train_two_tower.run(spark, cfg)
    run_id = track(cfg, "train_two_tower", report)
    (run,) = runs_in(uri, "retrieval")
    assert run.info.run_id == run_id and run.info.run_name == f"train_two_tower two_tower/{report.version}"
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    assert params["two_tower.model.dim"] == "16" and params["two_tower.source"] == "s3rec_tiny"
    assert params["lake.root"] == lake.root and params["env"] == "local"
    assert metrics["test_ndcg_at_10"] == pytest.approx(report.test["ndcg@10"])
    assert metrics["users"] == report.users and metrics["best_epoch"] == report.best_epoch
    assert tags["pinpipe.artifact_uri"] == lake.artifacts().uri(f"two_tower/{report.version}")
    assert tags["pinpipe.gate"] == report.gate and report.gate.startswith("gate passed")
    assert tags["pinpipe.approved"] == "true" and tags["pinpipe.job"] == "train_two_tower"
    assert track(cfg_for(), "train_two_tower", report) is None  # no tracking URI: nothing logged
    assert len(runs_in(uri, "retrieval")) == 1


def test_an_index_build_is_logged_and_a_tracking_server_that_fails_is_a_warning(cfg_for, tmp_path, monkeypatch, caplog):
    description = IndexDescription(
        model_family="two_tower",
        model_version="v0002",
        dim=16,
        factory="Flat",
        search_params="",
        faiss_version="1",
        recall_at_10=0.97,
        rows=40,
        shards=(ShardInfo("shard-00000.faiss", 20, 1, 20, "a"), ShardInfo("shard-00001.faiss", 20, 21, 40, "b")),
    )
    report = IndexReport("two_tower_items", "v0003", description, 0.95, True)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = cfg_for(f"tracking.mlflow_uri={uri}")
    track(cfg, "build_index", report)
    (run,) = runs_in(uri)
    assert run.data.metrics == {"recall_at_10": 0.97, "vectors": 40.0, "dim": 16.0, "shards": 2.0}
    assert run.data.tags["pinpipe.artifact"] == "indexes/two_tower_items/v0003"
    assert run.data.params["index.name"] == "two_tower_items"
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    down = cfg_for("tracking.mlflow_uri=http://127.0.0.1:9")  # nothing listens there
    assert track(down, "build_index", report) is None
    assert "build_index: not logged to MLflow at http://127.0.0.1:9" in caplog.text
