"""A lock that one run holds while it works, and that a killed run cannot leave stuck — on any
:class:`~models.artifacts.storage.Storage` (a local or shared folder, S3, HDFS).

The lock is a folder of numbered records, ``g000001.json``, ``g000002.json``, ...
(:class:`~models.artifacts.records.NumberedRecords`): the newest names the holder (host, pid,
start) and its lease, ``expires_at``. A record is only ever *created if absent*, so of two runs
that want the lock at once exactly one gets the next number. While the holder lives, a heartbeat thread
renews its own record every ``ttl / 3`` seconds (one whole-object write), and stops for good
once a newer record exists. A second run that finds the newest record live refuses, naming the
holder and when its lease ends, unless it is stale:

- its lease has expired (the holder stopped renewing: killed, machine gone), or
- its holder is on this host and its pid no longer exists (killed: stale at once), or
- it was released (the holder finished).

A stale lock is taken over by creating the next record; the older records are then deleted.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from models.artifacts.records import NumberedRecords
from models.artifacts.storage import Storage
from models.processes import gone


class LockHeld(RuntimeError):
    """Another live run holds the lock."""


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    started: float
    expires_at: float
    released: bool = False

    @classmethod
    def parse(cls, data: bytes | str) -> Holder | None:
        """The holder a record names; None when it is not one."""
        try:
            d = json.loads(data)
            return cls(
                str(d["host"]), int(d["pid"]), float(d["started"]), float(d["expires_at"]), bool(d.get("released"))
            )
        except (ValueError, KeyError, TypeError):
            return None

    def stale(self, now: float) -> bool:
        return self.released or now >= self.expires_at or gone(self.host, self.pid)

    def describe(self, now: float) -> str:
        return (
            f"pid {self.pid} on {self.host}, started {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.started))}"
            f"; its lease ends in {max(self.expires_at - now, 0):.0f} s unless it renews it"
        )


def _records(folder: Storage) -> NumberedRecords:
    return NumberedRecords(folder, "g")


def holder_of(folder: Storage) -> Holder | None:
    """Who the newest record of the lock ``folder`` names (None: never taken)."""
    data = _records(folder).newest()[1]
    return Holder.parse(data) if data is not None else None


class RunLock:
    """``with RunLock(folder, ttl_seconds, what="nightly 2024-01-31"):`` — held inside the block;
    ``folder`` is a :class:`Storage` or a local path."""

    def __init__(self, folder: Storage | str | os.PathLike[str], ttl_seconds: float, what: str = "run") -> None:
        if ttl_seconds <= 0:
            raise ValueError(f"lock ttl must be > 0 seconds, got {ttl_seconds}")
        self.folder = folder if isinstance(folder, Storage) else Storage(str(Path(folder)))
        self.ttl, self.what = float(ttl_seconds), what
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._started = 0.0
        self._record_name = ""

    def _record(self, now: float, released: bool = False) -> bytes:
        holder = {"host": socket.gethostname(), "pid": os.getpid(), "started": self._started}
        return json.dumps({**holder, "expires_at": now + self.ttl, "released": released}).encode()

    def acquire(self) -> RunLock:
        self._started = now = time.time()
        records = _records(self.folder)
        number, data = records.newest()
        # a newest record deleted meanwhile (by a run that took over): the append below decides
        holder = Holder.parse(data) if data is not None else None
        if holder is not None and not holder.stale(now):
            raise LockHeld(
                f"{self.what} is already running ({holder.describe(now)}); lock {self.folder.uri()}. "
                f"A killed run's lock expires {self.ttl:.0f} s after its last renewal (at once on the same host)."
            )
        name = records.append(number, self._record(now))
        if name is None:
            raise LockHeld(f"{self.what}: another run took the lock {self.folder.uri()} first")
        self._record_name = name
        records.delete_older(than=records.number(name))  # they are stale or released: they name no holder
        self._stop.clear()
        self._heartbeat = threading.Thread(target=self._renew, name=f"lock {self.what}", daemon=True)
        self._heartbeat.start()
        return self

    def _holds(self) -> bool:
        names = _records(self.folder).names()
        return bool(names) and names[-1] == self._record_name

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            if not self._holds():
                return  # taken over after this run stalled past its lease: never renew again
            _records(self.folder).rewrite(self._record_name, self._record(time.time()))

    def release(self) -> None:
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
            self._heartbeat = None
        if self._record_name and self._holds():
            _records(self.folder).rewrite(self._record_name, self._record(time.time(), released=True))
        self._record_name = ""

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()
