"""State that moves by compare-and-swap on any :class:`~models.artifacts.storage.Storage`: a
folder of numbered records (``p000001.json``, ``p000002.json``, ...), each created only if absent
(``Storage.create``, atomic on every store). The newest record is the state. A writer reads the
newest number ``n`` and creates ``n + 1``: of two writers that read the same state exactly one
succeeds, and the other learns that the state moved under it — the check and the write are one
step, on a local disk, S3 (``If-None-Match``) and HDFS (rename onto an absent name) alike.

Users: the nightly's run lock (``runtime/run_lock``) and the registry's promotion pointers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from models.artifacts.storage import Storage


@dataclass(frozen=True)
class NumberedRecords:
    """The records ``<prefix>NNNNNN.json`` directly under ``folder``."""

    folder: Storage
    prefix: str

    def _pattern(self) -> re.Pattern[str]:
        return re.compile(rf"^{re.escape(self.prefix)}(\d{{6,}})\.json$")

    def name(self, number: int) -> str:
        return f"{self.prefix}{number:06d}.json"

    def names(self) -> list[str]:
        """Every record, oldest first."""
        pattern = self._pattern()
        found = ((m, n) for n in self.folder.listdir() if (m := pattern.match(n)))
        return [n for m, n in sorted(found, key=lambda mn: int(mn[0][1]))]

    def number(self, name: str) -> int:
        return int(self._pattern().match(name)[1])

    def newest(self) -> tuple[int, bytes | None]:
        """(the newest record's number, its bytes); (0, None) when there is none. Bytes are None
        too when the record was deleted between the listing and the read (a newer one exists)."""
        names = self.names()
        if not names:
            return 0, None
        try:
            return self.number(names[-1]), self.folder.read_bytes(names[-1])
        except FileNotFoundError:
            return self.number(names[-1]), None

    def append(self, after: int, data: bytes) -> str | None:
        """Create record ``after + 1`` holding ``data``; its name, or None when another writer
        created it first (the state moved since ``after`` was read)."""
        name = self.name(after + 1)
        return name if self.folder.create(name, data) else None

    def rewrite(self, name: str, data: bytes) -> None:
        """Replace one record's contents (the lock's heartbeat renews its own record)."""
        self.folder.put(name, data)

    def delete_older(self, than: int | None = None, keep: int = 0) -> None:
        """Delete the records numbered below ``than`` (None: the newest record's number, from the
        same listing), but the newest ``keep`` of them."""
        names = self.names()
        if than is None:
            than = self.number(names[-1]) if names else 0
        older = [n for n in names if self.number(n) < than]
        for name in older[: max(0, len(older) - keep)]:
            self.folder.delete(name)
