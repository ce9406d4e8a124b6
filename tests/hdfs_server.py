"""A real HDFS for the tests: Hadoop's MiniDFSCluster (a NameNode and a DataNode, the same server
code as a production cluster) in a JVM of its own on loopback ports, started from
``tests/hdfs/MiniHdfs.java`` with the jars setup resolves (``.cache/jars/hdfs-test`` and pyspark's
Hadoop client). Spark reaches it over HDFS's RPC (``hdfs://``), pinpipe's storage layer over
WebHDFS (``lake.hdfs.webhdfs``: this machine has no libhdfs). One per test session; each test
works under a folder of its own."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from models.artifacts.storage import HdfsSettings, Storage
from runtime.session import jars_dir
from tests.s3_server import free_port

JAVA_SOURCE = Path(__file__).resolve().parent / "hdfs" / "MiniHdfs.java"


@dataclass(frozen=True)
class HdfsServer:
    uri: str  # hdfs://127.0.0.1:<rpc port>
    webhdfs: str  # http://127.0.0.1:<http port>

    @property
    def settings(self) -> HdfsSettings:
        return HdfsSettings(webhdfs=self.webhdfs)

    def sets(self) -> list[str]:
        """The ``--set`` overrides that reach it (with ``lake.root`` under :attr:`uri`)."""
        return [f"lake.hdfs.webhdfs={self.webhdfs}"]

    def storage(self, cache: Path) -> Storage:
        """A fresh, empty folder (``hdfs://.../<uuid>``)."""
        return Storage(f"{self.uri}/{uuid.uuid4().hex}", cache_dir=str(cache), hdfs=self.settings)


def classpath() -> str:
    import pyspark

    ours = sorted((jars_dir() / "hdfs-test").glob("*.jar"))
    if not any(p.name.startswith("hadoop-client-minicluster") for p in ours):
        raise RuntimeError(f"no hadoop-client-minicluster jar in {jars_dir() / 'hdfs-test'}: run setup/setup.sh")
    spark = Path(pyspark.__file__).parent / "jars"
    return os.pathsep.join([*map(str, ours), str(spark / "*")])


@pytest.fixture(scope="session")
def hdfs_server(tmp_path_factory) -> Iterator[HdfsServer]:
    base = tmp_path_factory.mktemp("hdfs")
    rpc, http = free_port(), free_port()
    log = base / "minidfs.log"
    with log.open("wb") as out:
        # stdin stays open while the tests run: the JVM shuts the cluster down when it closes
        proc = subprocess.Popen(
            ["java", "-cp", classpath(), str(JAVA_SOURCE), str(base / "data"), str(rpc), str(http)],
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.time() + 180
        while b"ready hdfs://" not in log.read_bytes():
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"MiniDFSCluster did not start: {log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)
        yield HdfsServer(f"hdfs://127.0.0.1:{rpc}", f"http://127.0.0.1:{http}")
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
