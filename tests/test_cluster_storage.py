"""pinpipe on a cluster whose nodes share only object storage: the whole nightly (tiny sizes) is
submitted with ``spark-submit`` to a real standalone master and worker, with the lake only on a
real S3 server (moto's, over loopback; Hadoop's S3A connector, pyarrow.fs and boto3 talk to it),
the driver in a folder of its own and the worker with its own work and temp folders and model
cache. Every table and every published artifact equals those of the same nightly on a local
lake; then ``pinpipe build_index``, ``retrieve``, ``index rollback`` and ``rollback student``,
each run from yet another folder, answer on the S3 lake exactly as on the local one."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from models.artifacts.registry import Registry
from models.artifacts.storage import Storage
from runtime.package import build_pyfiles_zip
from runtime.session import PROJECT_ROOT, delta_jars, s3_jars
from tests.lake_equality import compare_lakes
from tests.s3_server import BUCKET
from tests.standalone_cluster import standalone_cluster
from tests.test_kill_resume import published, whole_nightly_sets

pytestmark = pytest.mark.slow


def cli(cwd: Path, *args: str, sets: list[str]) -> subprocess.CompletedProcess:
    """``pinpipe <args> --set ...`` as a new process in ``cwd``."""
    command = [sys.executable, "-m", "jobs.cli", *args, *(a for s in sets for a in ("--set", s))]
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


def submit_nightly(
    tmp_path: Path, sets: list[str], name: str, conf: tuple[str, ...] = ()
) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """``spark-submit jobs/nightly.py --env cluster --set ...`` to a standalone master and worker
    started for it: the driver in a folder of its own, the worker with its own work and temp
    folders and model cache. (driver folder, worker folder, the finished submit)"""
    driver, worker = tmp_path / "driver", tmp_path / "worker"
    for folder in (driver, worker / "tmp", worker / "cache"):
        folder.mkdir(parents=True)
    pyfiles = build_pyfiles_zip(tmp_path / "pinpipe.zip")
    worker_env = {"SPARK_LOCAL_DIRS": str(worker / "tmp"), "PINPIPE_CACHE": str(worker / "cache")}
    with standalone_cluster(tmp_path / "cluster", worker_env=worker_env) as cluster:
        result = cluster.submit(
            "--py-files",
            str(pyfiles),
            "--jars",
            ",".join(delta_jars() + (s3_jars() if any(s.startswith("lake.root=s3") for s in sets) else [])),
            "--conf",
            "spark.executor.memory=1g",
            "--conf",
            "spark.cores.max=2",
            "--conf",
            f"spark.executorEnv.PINPIPE_CACHE={worker / 'cache'}",
            "--conf",
            "spark.databricks.delta.snapshotPartitions=4",  # Delta's default 50 tasks: slow for tiny tables
            *(a for c in conf for a in ("--conf", c)),
            "--name",
            name,
            str(PROJECT_ROOT / "jobs" / "nightly.py"),
            "--env",
            "cluster",
            *(a for s in sets for a in ("--set", s)),
            cwd=driver,
            timeout=1200,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-8000:]
        assert [a["name"] for a in cluster.state()["completedapps"]] == [name]
    return driver, worker, result


def test_the_whole_nightly_on_a_cluster_with_the_lake_only_on_s3_equals_a_local_run(
    tmp_path, s3_server, uninterrupted_nightly
):
    inputs, local = uninterrupted_nightly  # the same nightly on a local lake (a copy: the commands below change it)
    local_root = tmp_path / "local-lake"
    shutil.copytree(local.root, local_root)
    local_sets = whole_nightly_sets(inputs, local_root)

    # the cluster: the lake exists only on the S3 server
    lake = f"s3a://{BUCKET}/{uuid.uuid4().hex}/lake"
    s3 = [f"lake.s3.endpoint={s3_server.endpoint}", "lake.s3.path_style=true"]
    sets = [s for s in local_sets if not s.startswith("lake.root=")] + [f"lake.root={lake}", *s3]
    # conf/cluster.yaml's sizes are for real clusters; these match the local run's
    sets += ["spark.shuffle_partitions=4", "simulate.partitions=2", "scorer.chunks=8"]
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"  # the nightly's stages log to MLflow as well
    sets.append(f"tracking.mlflow_uri={tracking}")
    driver, worker, result = submit_nightly(tmp_path, sets, "pinpipe-nightly-on-s3")
    print(result.stdout)
    table = result.stdout[result.stdout.index("nightly 2020-01-05 (run") :].splitlines()
    stages = {line.split()[0]: line for line in table[1:] if line.startswith("  ")}
    assert len(stages) == 12 and all(" succeeded in " in line for line in stages.values()), table
    assert not any(driver.rglob("*.faiss")) and not any(driver.rglob("manifest.json"))  # nothing on the driver's disk
    fetched = {p.name for p in (worker / "cache").rglob("*") if p.is_file()}
    assert "shard-00000.faiss" in fetched and ".complete" in fetched  # executors fetched what they loaded

    # the training stages and the index build, in MLflow with their artifacts' URIs on the lake
    import mlflow

    client = mlflow.tracking.MlflowClient(tracking_uri=tracking)
    logged = client.search_runs([client.get_experiment_by_name("pinpipe").experiment_id])
    artifacts = {r.data.tags["pinpipe.job"]: r.data.tags["pinpipe.artifact_uri"] for r in logged}
    assert artifacts == {
        "train_teacher": f"{lake}/artifacts/teacher/v0001",
        "train_student": f"{lake}/artifacts/student/v0001",
        "train_two_tower": f"{lake}/artifacts/two_tower/v0001",
        "build_index": f"{lake}/artifacts/indexes/two_tower_items/v0001",
    }

    # every table equal to the local run's (run-time columns aside)
    tables = compare_lakes(str(local_root), lake, s3)["tables"]
    assert {"serving_corpus", "pin_embeddings", "labeled_impressions", "user_candidates", "teacher_scores"} <= set(
        tables
    )
    assert {t: d for t, d in tables.items() if d[1:] != [0, 0]} == {}
    assert all(tables[t][0] > 0 for t in ("pin_embeddings", "user_candidates", "teacher_scores"))

    # every artifact: the same files, byte for byte; the same production and candidates
    on_s3 = Storage(lake + "/artifacts", s3_server.settings, str(tmp_path / "test-cache"))
    here = Storage(str(local_root / "artifacts"))
    assert published(on_s3) == published(here)
    index = Registry(on_s3.child("indexes"))
    shards = index.manifest("two_tower_items", "v0001")["index"]["shards"]
    assert len(shards) >= 2  # written and uploaded by different tasks
    assert Storage(lake, s3_server.settings).is_file("_reports/nightly-2020-01-05.html")
    assert Storage(lake, s3_server.settings).listdir("_locks/nightly-2020-01-05.lock") == ["g000001.json"]

    # the commands, from another folder, against each lake
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    user = "s3rec-tiny:u7"
    answers = {}
    for name, lake_sets in (("local", [f"lake.root={local_root}"]), ("s3", [f"lake.root={lake}", *s3])):
        steps = [
            ("build_index", "index.partitions=3"),  # another index version: v0002, promoted
            ("index", "rollback"),
            ("retrieve", "--user", user, "-k", "5", "--json"),
            ("rollback", "student"),
        ]
        answers[name] = []
        for step in steps:
            args, extra = ([step[0]], [step[1]]) if step[0] == "build_index" else (list(step), [])
            done = cli(elsewhere, *args, sets=[*lake_sets, *extra])
            answers[name].append((done.returncode, done.stdout.replace(str(local_root), "LAKE").replace(lake, "LAKE")))
    print(json.dumps(answers, indent=1))
    assert answers["s3"] == answers["local"]
    codes = [code for code, _ in answers["s3"]]
    assert codes == [0, 0, 0, 1]  # one student version: nothing to roll back to, on both
    assert "indexes/two_tower_items/v0002" in answers["s3"][0][1] and "shards=3" in answers["s3"][0][1]
    assert answers["s3"][1][1].strip() == "index: rolled back to two_tower_items/v0001 and its model two_tower/v0001"
    retrieved = json.loads(answers["s3"][2][1])
    assert retrieved["index"] == "two_tower_items/v0001" and len(retrieved["results"]) == 5


RETRIEVAL_STAGES = "[simulate, ingest, train_two_tower, serving_corpus, embed_pins, build_index, retrieve_candidates]"
RETRIEVAL_TABLES = ("user_engagements", "serving_corpus", "pin_embeddings", "user_candidates")


def test_the_retrieval_nightly_on_a_cluster_with_the_lake_only_on_hdfs_equals_a_local_run(
    tmp_path, hdfs_server, uninterrupted_nightly
):
    """The same on a real HDFS (MiniDFSCluster's NameNode and DataNode): Spark's tables over
    HDFS's RPC, models, shards, pointers, lock and report over WebHDFS (no libhdfs on this
    machine), for the retrieval half of the nightly (the S3 run above covers every stage)."""
    inputs, local = uninterrupted_nightly
    lake = f"{hdfs_server.uri}/{uuid.uuid4().hex}/lake"
    local_sets = whole_nightly_sets(inputs, Path(local.root))
    sets = [s for s in local_sets if not s.startswith(("lake.root=", "nightly.stages="))]
    sets += [f"lake.root={lake}", *hdfs_server.sets(), f"nightly.stages={RETRIEVAL_STAGES}"]
    sets += ["spark.shuffle_partitions=4", "simulate.partitions=2"]
    # the HDFS client closes a file by asking whether its last block is complete, first after 400 ms:
    # with one DataNode on loopback it is complete at once (the same setting as the server's)
    quick_close = "spark.hadoop.dfs.client.block.write.locateFollowingBlock.initial.delay.ms=10"
    driver, worker, result = submit_nightly(tmp_path, sets, "pinpipe-nightly-on-hdfs", conf=(quick_close,))
    print(result.stdout)
    assert result.stdout.count(" succeeded in ") >= 7, result.stdout[-3000:]
    assert not any(driver.rglob("*.faiss")) and not any(driver.rglob("manifest.json"))
    assert "shard-00000.faiss" in {p.name for p in (worker / "cache").rglob("*") if p.is_file()}

    tables = compare_lakes(local.root, lake, hdfs_server.sets())["tables"]
    assert {t: tables[t] for t in RETRIEVAL_TABLES if tables[t][1:] != [0, 0]} == {}
    assert all(tables[t][0] > 0 for t in RETRIEVAL_TABLES)

    on_hdfs = Storage(f"{lake}/artifacts", cache_dir=str(tmp_path / "test-cache"), hdfs=hdfs_server.settings)
    here, there = published(Storage(f"{local.root}/artifacts")), published(on_hdfs)
    assert {"two_tower", "indexes/two_tower_items"} <= set(there)
    assert there == {family: here[family] for family in there}  # byte for byte, same production
    assert len(Registry(on_hdfs.child("indexes")).manifest("two_tower_items", "v0001")["index"]["shards"]) >= 2
    lake_files = Storage(lake, hdfs=hdfs_server.settings)
    assert lake_files.is_file("_reports/nightly-2020-01-05.html")
    assert lake_files.listdir("_locks/nightly-2020-01-05.lock") == ["g000001.json"]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    retrieve = ("retrieve", "--user", "s3rec-tiny:u7", "-k", "5", "--json")

    def without_times(text: str) -> str:  # `index list` ends each row with when it was built
        return "\n".join(line.rsplit("  ", 1)[0] for line in text.splitlines())

    answers = {
        name: [
            (done.returncode, without_times(done.stdout.replace(root, "LAKE")))
            for done in (cli(elsewhere, *retrieve, sets=lake_sets), cli(elsewhere, "index", "list", sets=lake_sets))
        ]
        for name, root, lake_sets in (
            ("local", local.root, [f"lake.root={local.root}"]),
            ("hdfs", lake, [f"lake.root={lake}", *hdfs_server.sets()]),
        )
    }
    print(json.dumps(answers, indent=1))
    assert answers["hdfs"] == answers["local"] and [code for code, _ in answers["hdfs"]] == [0, 0]
    assert len(json.loads(answers["hdfs"][0][1])["results"]) == 5 and "* v0001" in answers["hdfs"][1][1]
