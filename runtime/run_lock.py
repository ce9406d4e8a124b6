"""A lock that one run holds while it works, and that a killed run cannot leave stuck.

The lock is a file created with ``O_CREAT | O_EXCL`` (atomic on a local or POSIX shared file
system; not on object stores: keep ``lake.root``'s lock folder on one). It records the holder
(host, pid, start) and a lease: ``expires_at``. While the holder lives, a heartbeat thread
renews the lease every ``ttl / 3`` seconds. A second run that finds the file refuses, naming the
holder and when its lease ends, unless the lock is stale:

- its lease has expired (the holder stopped renewing: killed, machine gone), or
- its holder is on this host and its pid no longer exists (killed: stale at once).

A stale lock is taken over atomically (renamed away, then created again with ``O_EXCL``), so two
runs that find the same stale lock cannot both win.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from models.processes import gone


class LockHeld(RuntimeError):
    """Another live run holds the lock."""


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    started: float
    expires_at: float

    @classmethod
    def read(cls, path: Path) -> Holder | None:
        """The holder recorded in ``path``; None when it is gone or half written."""
        try:
            data = json.loads(path.read_text())
            return cls(str(data["host"]), int(data["pid"]), float(data["started"]), float(data["expires_at"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def stale(self, now: float) -> bool:
        if now >= self.expires_at:
            return True
        return gone(self.host, self.pid)

    def describe(self, now: float) -> str:
        return (
            f"pid {self.pid} on {self.host}, started {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.started))}"
            f"; its lease ends in {max(self.expires_at - now, 0):.0f} s unless it renews it"
        )


class RunLock:
    """``with RunLock(path, ttl_seconds, what="nightly 2024-01-31"):`` — held inside the block."""

    def __init__(self, path: str | os.PathLike[str], ttl_seconds: float, what: str = "run") -> None:
        if ttl_seconds <= 0:
            raise ValueError(f"lock ttl must be > 0 seconds, got {ttl_seconds}")
        self.path, self.ttl, self.what = Path(path), float(ttl_seconds), what
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._started = 0.0

    def _record(self, now: float) -> bytes:
        holder = {"host": socket.gethostname(), "pid": os.getpid(), "started": self._started}
        return json.dumps({**holder, "expires_at": now + self.ttl}).encode()

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(self._record(time.time()))
        return True

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._started = time.time()
        if not self._create():
            now = time.time()
            holder = Holder.read(self.path)
            if holder is not None and not holder.stale(now):
                raise LockHeld(
                    f"{self.what} is already running ({holder.describe(now)}); lock file {self.path}. "
                    f"A killed run's lock expires {self.ttl:.0f} s after its last renewal (at once on the same host)."
                )
            aside = self.path.with_name(f"{self.path.name}.stale-{uuid.uuid4().hex}")
            try:
                os.rename(self.path, aside)  # only one contender moves this file
                aside.unlink()
            except FileNotFoundError:
                pass  # another contender moved it first; the O_EXCL create below decides
            if not self._create():
                raise LockHeld(f"{self.what}: another run took over the stale lock {self.path} first")
        self._stop.clear()
        self._heartbeat = threading.Thread(target=self._renew, name=f"lock {self.path.name}", daemon=True)
        self._heartbeat.start()
        return self

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            holder = Holder.read(self.path)
            if holder is None or holder.pid != os.getpid() or holder.host != socket.gethostname():
                return  # taken over after this run stalled past its lease: never overwrite the new holder
            tmp = self.path.with_name(f"{self.path.name}.renew-{os.getpid()}")
            tmp.write_bytes(self._record(time.time()))
            os.replace(tmp, self.path)  # atomic: readers never see half a record

    def release(self) -> None:
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
            self._heartbeat = None
        holder = Holder.read(self.path)
        if holder is not None and holder.pid == os.getpid() and holder.host == socket.gethostname():
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()
