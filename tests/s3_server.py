"""A real S3-compatible server for the tests: moto's standalone server, a process of its own on
a loopback port, spoken to over HTTP by pyarrow.fs, boto3 and Hadoop's S3A alike (no client is
mocked). One per test session; each test works under a prefix of its own."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from models.artifacts.storage import S3Settings, Storage

BUCKET = "pinpipe-tests"
# Credentials the server accepts (any); in the environment as a real deployment would have them.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "pinpipe-test",
    "AWS_SECRET_ACCESS_KEY": "pinpipe-test-secret",
    "AWS_REGION": "us-east-1",
}

# Set at import, before any Spark worker starts: Python workers inherit the environment of the
# JVM that launched them, and tasks that upload to the server need the credentials too.
for _name, _value in CREDENTIALS.items():
    os.environ.setdefault(_name, _value)


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    process: subprocess.Popen

    @property
    def settings(self) -> S3Settings:
        return S3Settings(endpoint=self.endpoint, path_style=True)

    def storage(self, cache: Path, scheme: str = "s3") -> Storage:
        """A fresh, empty folder of the bucket (``<scheme>://bucket/<uuid>``)."""
        return Storage(f"{scheme}://{BUCKET}/{uuid.uuid4().hex}", self.settings, str(cache))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> Iterator[S3Server]:
    port = free_port()
    log = tmp_path_factory.mktemp("s3") / "moto.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.s3_server", str(port)],
            cwd=Path(__file__).resolve().parents[1],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"moto_server did not start: {log.read_text()[-2000:]}") from None
                time.sleep(0.1)
        import boto3

        boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}").create_bucket(Bucket=BUCKET)
        yield S3Server(f"http://127.0.0.1:{port}", proc)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def serve(port: int) -> None:
    """moto's S3 application on ``127.0.0.1:port``, one request at a time: moto checks a
    conditional write and stores the object in two steps, which S3 does atomically; serialising
    requests gives the tests S3's semantics."""
    import threading

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import run_simple

    app, lock = DomainDispatcherApplication(create_backend_app), threading.Lock()

    def one_at_a_time(environ, start_response):
        with lock:
            return list(app(environ, start_response))

    run_simple("127.0.0.1", port, one_at_a_time, threaded=True)


if __name__ == "__main__":
    serve(int(sys.argv[1]))
