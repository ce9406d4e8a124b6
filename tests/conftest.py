"""One session-scoped local Spark with Delta (``local[2]``, 2 shuffle partitions, UI off),
built by the project's own session builder; Delta tables live in ``tmp_path``."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.config import load_config
from models.artifacts.storage import Storage
from runtime.config import SparkConfig
from runtime.lake import Lake
from runtime.session import build_session
from tests.hdfs_server import hdfs_server  # noqa: F401  (a fixture)
from tests.s3_server import s3_server  # noqa: F401  (a fixture)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

TEST_SPARK = SparkConfig(
    master="local[2]",
    driver_memory="2g",
    shuffle_partitions=2,
    ui_enabled=False,
    log_level="ERROR",
    extra={"spark.default.parallelism": "2", "spark.sql.adaptive.coalescePartitions.enabled": "true"},
)


@pytest.fixture(scope="session")
def spark():
    session = build_session("pinpipe-tests", TEST_SPARK)
    yield session
    session.stop()


@pytest.fixture
def lake(tmp_path) -> Lake:
    return Lake.at(str(tmp_path / "lake"))


@pytest.fixture
def cfg_for(lake):
    """A full config for ``run()`` with the test lake and extra ``--set`` overrides."""

    def make(*overrides: str):
        return load_config("local", overrides=[f"lake.root={lake.root}", *overrides])

    return make


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip(f"real evaluation data not found at {SHARED_DATA}")
    return SHARED_DATA


# HDFS closes each small file in ~0.2 s (a DataNode round): its cases run in `make test-slow`
@pytest.fixture(params=["local", "s3", pytest.param("hdfs", marks=pytest.mark.slow)])
def store(request, tmp_path) -> Storage:
    """An empty artifacts folder on a local disk, on a real S3 server, on a real HDFS (the same
    test three times)."""
    if request.param == "local":
        return Storage(str(tmp_path / "artifacts"))
    return request.getfixturevalue(f"{request.param}_server").storage(tmp_path / "cache")


@pytest.fixture(scope="session")
def uninterrupted_nightly(tmp_path_factory) -> tuple[Path, Lake]:
    """The whole nightly at tiny sizes (``tests.test_kill_resume.whole_nightly_sets``), run once
    per session as its own process into a local lake: the reference the killed-and-resumed runs
    and the cluster run on S3 are compared with. (inputs folder, lake)"""
    from tests.test_kill_resume import run_nightly, whole_nightly_sets

    root = tmp_path_factory.mktemp("uninterrupted-nightly")
    lake = Lake.at(str(root / "lake"))
    print(run_nightly(whole_nightly_sets(root, Path(lake.root))))
    return root, lake
