import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from models.artifacts.storage import Storage
from runtime.run_lock import Holder, LockHeld, RunLock, holder_of
from tests.store_arg import to_arg

HOLD = """
import sys, time
from runtime.run_lock import RunLock
from tests.store_arg import from_arg
folder = from_arg(sys.argv[1])
lock = RunLock(folder, ttl_seconds=60, what="nightly 2024-01-31").acquire()
print("held", flush=True)
time.sleep(600)
"""


def holder_process(folder: Storage) -> subprocess.Popen:
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-c", HOLD, to_arg(folder)], cwd=root, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.fixture
def lock_folder(store) -> Storage:
    """The lock of one date, on a local disk, on the S3 server, on HDFS."""
    return store.child("locks/nightly-2024-01-31.lock")


def test_a_second_run_refuses_while_the_first_lives_and_takes_over_once_it_is_killed(lock_folder):
    proc = holder_process(lock_folder)
    try:
        with pytest.raises(LockHeld, match=rf"nightly 2024-01-31 is already running \(pid {proc.pid} on"):
            RunLock(lock_folder, ttl_seconds=60, what="nightly 2024-01-31").acquire()
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # no cleanup runs: its record stays behind
        proc.wait()
    assert holder_of(lock_folder).pid == proc.pid
    with RunLock(lock_folder, ttl_seconds=60):  # same host, holder's pid gone: stale at once
        assert holder_of(lock_folder).pid == os.getpid()
        assert lock_folder.listdir() == ["g000002.json"]  # the killed run's record is gone
    assert holder_of(lock_folder).released


def write_holder(folder: Storage, name: str, host: str, expires_in: float) -> None:
    now = time.time()
    record = {"host": host, "pid": 1, "started": now - 100, "expires_at": now + expires_in}
    folder.put(name, json.dumps(record).encode())


def test_a_lock_from_another_host_holds_until_its_lease_expires(lock_folder):
    other = socket.gethostname() + "-elsewhere"
    write_holder(lock_folder, "g000007.json", other, expires_in=300)
    with pytest.raises(LockHeld, match="lease ends in"):
        RunLock(lock_folder, ttl_seconds=60).acquire()
    write_holder(lock_folder, "g000007.json", other, expires_in=-1)  # the other host stopped renewing: expired
    lock = RunLock(lock_folder, ttl_seconds=60).acquire()
    assert holder_of(lock_folder).host == socket.gethostname() and lock_folder.listdir() == ["g000008.json"]
    lock.release()


def test_the_holder_renews_its_lease_so_a_live_run_never_looks_stale(lock_folder):
    # a lease a few renewals long on this store: a renewal over WebHDFS is several requests
    ttl = 0.9 if lock_folder.is_local else 3.0
    with RunLock(lock_folder, ttl_seconds=ttl):
        first = holder_of(lock_folder).expires_at
        time.sleep(2.2 * ttl)  # past the first lease: only renewal keeps it live
        assert holder_of(lock_folder).expires_at > first + ttl / 2
        with pytest.raises(LockHeld):
            RunLock(lock_folder, ttl_seconds=ttl).acquire()
    assert holder_of(lock_folder).released
    RunLock(lock_folder, ttl_seconds=ttl).acquire().release()  # released: free at once


def test_a_holder_that_stalled_past_its_lease_never_renews_over_the_run_that_took_over(lock_folder):
    stalled = RunLock(lock_folder, ttl_seconds=0.6)
    stalled.acquire()
    stalled._stop.set()  # its heartbeat stops, as in a process frozen past its lease
    stalled._heartbeat.join()
    time.sleep(0.8)
    with RunLock(lock_folder, ttl_seconds=60) as taker:
        stalled._stop.clear()  # it wakes up: one renewal round
        renew = threading.Thread(target=stalled._renew)
        renew.start()
        time.sleep(0.4)
        stalled._stop.set()
        renew.join()
        stalled.release()
        assert holder_of(lock_folder) == Holder.parse(lock_folder.read_bytes(taker._record_name))
        assert holder_of(lock_folder).expires_at > time.time() + 30  # still the taker's lease, not released


def test_of_many_runs_that_find_a_stale_lock_at_once_exactly_one_takes_it(lock_folder):
    write_holder(lock_folder, "g000001.json", socket.gethostname() + "-elsewhere", expires_in=-1)
    won, refused, go = [], [], threading.Event()

    def contend() -> None:
        go.wait()
        try:
            won.append(RunLock(lock_folder, ttl_seconds=60).acquire())
        except LockHeld:
            refused.append(1)

    threads = [threading.Thread(target=contend) for _ in range(6)]
    for t in threads:
        t.start()
    go.set()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(refused) == 5
    won[0].release()
