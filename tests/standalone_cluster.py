"""A real Spark standalone cluster on localhost (one master, one worker), started from the
installed pyspark distribution with ``spark-class``, for tests that use ``spark-submit``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyspark

SPARK_HOME = Path(pyspark.__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    master_url: str
    ui_url: str
    env: dict[str, str]

    def state(self) -> dict:
        with urllib.request.urlopen(f"{self.ui_url}/json/", timeout=5) as response:
            return json.load(response)

    def submit(self, *args: str, timeout: float = 300, cwd: Path | None = None) -> subprocess.CompletedProcess:
        """spark-submit in client mode, the driver running in ``cwd`` (default: this process's)."""
        cmd = [str(SPARK_HOME / "bin" / "spark-submit"), "--master", self.master_url, "--deploy-mode", "client", *args]
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout, cwd=cwd)


def cluster_env(log_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "SPARK_HOME": str(SPARK_HOME),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_LOG_DIR": str(log_dir),
        "SPARK_WORKER_DIR": str(log_dir / "work"),
        # The driver's interpreter is the one executors start for Python work.
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
    }


@contextmanager
def standalone_cluster(
    log_dir: Path,
    cores: int = 2,
    memory: str = "2g",
    start_timeout: float = 120,
    worker_env: dict[str, str] | None = None,
) -> Iterator[Cluster]:
    """``worker_env``: more environment for the worker (and so its executors) only, e.g. its own
    temp folders (``SPARK_LOCAL_DIRS``)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    env = cluster_env(log_dir)
    port, ui_port, worker_ui = free_port(), free_port(), free_port()
    master_url = f"spark://127.0.0.1:{port}"
    spark_class = str(SPARK_HOME / "bin" / "spark-class")
    procs = []
    try:
        with open(log_dir / "master.log", "w") as master_log:
            procs.append(
                subprocess.Popen(
                    [
                        spark_class,
                        "org.apache.spark.deploy.master.Master",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                        "--webui-port",
                        str(ui_port),
                    ],
                    env=env,
                    stdout=master_log,
                    stderr=subprocess.STDOUT,
                )
            )
        with open(log_dir / "worker.log", "w") as worker_log:
            procs.append(
                subprocess.Popen(
                    [
                        spark_class,
                        "org.apache.spark.deploy.worker.Worker",
                        "--host",
                        "127.0.0.1",
                        "--webui-port",
                        str(worker_ui),
                        "--cores",
                        str(cores),
                        "--memory",
                        memory,
                        "--work-dir",
                        str(log_dir / "work"),
                        master_url,
                    ],
                    env={**env, **(worker_env or {})},
                    stdout=worker_log,
                    stderr=subprocess.STDOUT,
                )
            )
        cluster = Cluster(master_url, f"http://127.0.0.1:{ui_port}", env)
        deadline = time.monotonic() + start_timeout
        while True:
            try:
                if cluster.state().get("aliveworkers", 0) >= 1:
                    break
            except OSError:
                pass
            for p in procs:
                if p.poll() is not None:
                    raise RuntimeError(f"spark daemon exited with {p.returncode}; logs in {log_dir}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no worker registered within {start_timeout}s; logs in {log_dir}")
            time.sleep(1)
        yield cluster
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
