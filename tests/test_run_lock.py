import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime.run_lock import Holder, LockHeld, RunLock

HOLD = """
import sys, time
from runtime.run_lock import RunLock
lock = RunLock(sys.argv[1], ttl_seconds=60, what="nightly 2024-01-31").acquire()
print("held", flush=True)
time.sleep(600)
"""


def holder_process(path: Path) -> subprocess.Popen:
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], cwd=root, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_refuses_while_the_first_lives_and_takes_over_once_it_is_killed(tmp_path):
    path = tmp_path / "locks" / "nightly-2024-01-31.lock"
    proc = holder_process(path)
    try:
        with pytest.raises(LockHeld, match=rf"nightly 2024-01-31 is already running \(pid {proc.pid} on"):
            RunLock(path, ttl_seconds=60, what="nightly 2024-01-31").acquire()
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # no cleanup runs: the lock file stays behind
        proc.wait()
    assert path.exists()
    with RunLock(path, ttl_seconds=60) as lock:  # same host, holder's pid gone: stale at once
        assert Holder.read(lock.path).pid == os.getpid()
    assert not path.exists()


def write_holder(path: Path, host: str, expires_in: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    now = time.time()
    path.write_text(json.dumps({"host": host, "pid": 1, "started": now - 100, "expires_at": now + expires_in}))


def test_a_lock_from_another_host_holds_until_its_lease_expires(tmp_path):
    path = tmp_path / "nightly.lock"
    other = socket.gethostname() + "-elsewhere"
    write_holder(path, other, expires_in=300)
    with pytest.raises(LockHeld, match="lease ends in"):
        RunLock(path, ttl_seconds=60).acquire()
    write_holder(path, other, expires_in=-1)  # the other host stopped renewing: expired
    lock = RunLock(path, ttl_seconds=60).acquire()
    assert Holder.read(path).host == socket.gethostname()
    lock.release()


def test_the_holder_renews_its_lease_so_a_live_run_never_looks_stale(tmp_path):
    path = tmp_path / "nightly.lock"
    with RunLock(path, ttl_seconds=0.6):
        first = Holder.read(path).expires_at
        time.sleep(1.5)  # past the first lease: only renewal keeps it live
        assert Holder.read(path).expires_at > first + 0.5
        with pytest.raises(LockHeld):
            RunLock(path, ttl_seconds=0.6).acquire()
    assert not path.exists()
