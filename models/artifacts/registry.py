"""Versioned model and index artifacts: publish, promote, roll back, keep the last N — on any
:class:`~models.artifacts.storage.Storage` (a local folder, S3, HDFS).

Layout under the registry root (``<lake>/artifacts`` by default)::

    <family>/v0001/...files...            an artifact, immutable once published
    <family>/v0001/manifest.json           version, time, metrics, resolved config, inputs, sha256 of files
    <family>/promotions/p000001.json       the promotion stack, a record per move (the newest holds it); top: production
    <family>/CANDIDATE                     a version that passed its gate and waits (two-tower: for its index)
    <family>/gates/<time>-<id>.json        every gate decision on the family's candidates, one object each
    <family>/.claims/v0001                 who claimed the version number (kept while the version is)

Publishing never renames (object stores cannot): a publisher first **claims** the next version
number by creating ``.claims/vNNNN`` only if absent (a conditional write: of two publishers
racing for a number exactly one wins, the other takes the next), then writes the version's
files into ``vNNNN/``, and last its ``manifest.json`` — the commit. The claim stays: numbers are
given out above the highest claim (or version), and a claim is deleted only with its pruned
version and never when it is the highest, so no number is ever given twice. A version exists
for readers only once its manifest does, so a publisher killed at any point leaves nothing
anyone takes for a version; the next publish of the family deletes what a publisher left once it
is known to be gone (killed on this host: its claim goes too, and its number is given out again,
so a killed and resumed job publishes the version an uninterrupted one would) or its claim is
older than ``abandon_after_s`` (another host, perhaps still alive: its claim stays as a
tombstone, never given out again). A build that fails deletes its own files and claim.

Production moves by compare-and-swap: every promotion or rollback creates the next numbered
record of ``promotions/`` holding the whole new stack, only if absent
(:class:`~models.artifacts.records.NumberedRecords`), so of two moves from the same state exactly
one lands. A promotion that loses re-reads the stack and pushes onto it (its gate passed on its
own merits); a rollback that loses refuses (``PointerMoved``): it would undo a promotion it never
saw. ``CANDIDATE`` is one object replaced whole (see ``Storage.put``). Publishing prunes the oldest versions beyond
``keep``, never the promoted one or the candidate. ``rollback`` pops the promotion stack: it
promotes the version that was production before the current one (never a version that was
published but not promoted, such as a candidate its gate rejected). A ``key`` (a digest of the
config and inputs that made the artifact) makes publishing idempotent: publishing again with the
key of a kept version returns that version, so a job killed between publishing and recording it
publishes nothing new on re-run.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.artifacts.fingerprint import file_sha256
from models.artifacts.records import NumberedRecords
from models.artifacts.storage import Storage, local_files
from models.processes import gone, this_host

MANIFEST = "manifest.json"
PROMOTION_RECORDS = "promotions"  # <family>/promotions/pNNNNNN.json
KEEP_PROMOTION_RECORDS = 100  # older records are pruned with the versions (history, not state)
CANDIDATE = "CANDIDATE"
GATES = "gates"
CLAIMS = ".claims"
# read from lakes written before these records (the stack as one object; before it, a pointer)
LEGACY_PROMOTIONS, LEGACY_CURRENT, LEGACY_GATES = "PROMOTIONS", "CURRENT", "GATES.jsonl"
ABANDON_AFTER_S = 24 * 3600  # a claim older than this with no manifest: its publisher is taken for gone
VERSION = re.compile(r"^v\d{4,}$")


class RegistryError(RuntimeError):
    """A registry operation could not be done (unknown family/version, tampered files, ...)."""


class ClaimLost(RegistryError):
    """A publisher's claim was taken for abandoned while it still worked (it ran past
    ``abandon_after_s``): it publishes nothing and leaves the tombstone alone."""


class PointerMoved(RegistryError):
    """Production moved (another promotion or rollback landed) between reading the promotion
    stack and moving it: the move was not made."""


class NoProductionModel(RegistryError):
    """A family has no promoted version to use (none published yet, or its gate rejected every
    one): work that needs it cannot run, and the nightly records that work as skipped."""


@dataclass(frozen=True)
class ArtifactRef:
    """A published version as Spark tasks get it: where it is stored and its files' SHA-256.
    ``local()`` is the folder to load it from (fetched once per node when the store is remote)."""

    storage: Storage
    files: tuple[tuple[str, str], ...]
    name: str  # <family>/<version>, for messages and cache keys

    def local(self) -> Path:
        return self.storage.fetch("", dict(self.files))

    def __str__(self) -> str:
        return self.storage.uri()


def _number(version: str) -> int:
    return int(version[1:])


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class Registry:
    def __init__(self, root: str | Path | Storage, keep: int = 5, abandon_after_s: float = ABANDON_AFTER_S) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.storage = root if isinstance(root, Storage) else Storage(str(root))
        self.keep = keep
        self.abandon_after_s = abandon_after_s

    @property
    def root(self) -> str:
        return self.storage.root

    def versions(self, family: str) -> list[str]:
        """The published versions of ``family`` (those with a manifest), oldest first."""
        names = [n for n in self.storage.listdir(family) if VERSION.match(n)]
        return sorted((n for n in names if self.storage.is_file(f"{family}/{n}/{MANIFEST}")), key=_number)

    def _require(self, family: str, version: str) -> None:
        if not VERSION.match(version) or not self.storage.is_file(f"{family}/{version}/{MANIFEST}"):
            raise RegistryError(f"no version {version!r} of {family!r}; have {self.versions(family)}")

    def path(self, family: str, version: str) -> Path:
        """A local folder with the version's files: the version's own folder on a local store,
        else this node's verified copy (see ``Storage.fetch``)."""
        self._require(family, version)
        if self.storage.is_local:
            return self.storage.local_path(f"{family}/{version}")
        return self.ref(family, version).local()

    def ref(self, family: str, version: str) -> ArtifactRef:
        """The version as Spark tasks load it (they fetch it themselves; nothing on the driver's disk)."""
        files = self.manifest(family, version).get("files") or {}
        return ArtifactRef(
            self.storage.child(f"{family}/{version}"), tuple(sorted(files.items())), f"{family}/{version}"
        )

    def manifest(self, family: str, version: str) -> dict[str, Any]:
        self._require(family, version)
        where = self.storage.uri(f"{family}/{version}/{MANIFEST}")
        try:
            manifest = json.loads(self.storage.read_text(f"{family}/{version}/{MANIFEST}"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise RegistryError(f"cannot read the manifest {where}: {err}") from err
        if not isinstance(manifest, dict):
            raise RegistryError(f"the manifest {where} is not a JSON object")
        return manifest

    def publish(
        self,
        family: str,
        build: Callable[[Path], dict[str, Any] | None],
        *,
        metrics: dict | None = None,
        config: dict | None = None,
        inputs: dict | None = None,
        external: dict[str, str | Path] | None = None,
        key: str = "",
    ) -> str:
        """Run ``build(folder)`` to write the artifact's files into a local folder, then publish
        them as a new version.

        ``external`` names folders outside the artifact that it needs to run (the base model of
        a LoRA teacher): their path and every file's checksum go into the manifest, and
        :meth:`verify` refuses the artifact when any of them changed. ``build`` may return more
        top-level manifest entries (an index's description of the shards it wrote). With a ``key``
        (see :func:`content_key`), a kept version published with the same key is returned as is."""

        def write(target: Storage) -> tuple[dict[str, Any], dict[str, str]]:
            with target.writing() as folder:
                extra = build(folder) or {}
                files = {name: file_sha256(folder / name) for name in local_files(folder)}
            return extra, files

        return self.publish_stored(
            family, write, metrics=metrics, config=config, inputs=inputs, external=external, key=key
        )

    def publish_stored(
        self,
        family: str,
        write: Callable[[Storage], tuple[dict[str, Any], dict[str, str]]],
        *,
        metrics: dict | None = None,
        config: dict | None = None,
        inputs: dict | None = None,
        external: dict[str, str | Path] | None = None,
        key: str = "",
    ) -> str:
        """:meth:`publish` for an artifact written straight into storage (by Spark tasks, say):
        ``write(target)`` stores every file under ``target`` and returns (more manifest entries,
        {relative name: SHA-256} of the files it stored)."""
        if key and (same := self.find(family, key)):
            return same
        self.remove_abandoned(family)
        version, token = self._claim(family)
        target = self.storage.child(f"{family}/{version}")
        try:
            extra, files = write(target)
            manifest = {
                "family": family,
                "version": version,
                "created_at": _now(),
                "metrics": metrics or {},
                "config": config or {},
                "inputs": inputs or {},
                "files": dict(sorted(files.items())),
                "external": {name: folder_checksums(Path(folder)) for name, folder in (external or {}).items()},
                "key": key or None,
            }
            clash = sorted(set(extra) & set(manifest))
            if clash:
                raise ValueError(f"build returned manifest entries {clash} that would replace the registry's own")
            manifest.update(extra)
            if self._claim_owner(family, version).get("token") != token:
                raise ClaimLost(
                    f"{family}/{version}: this publish's claim was taken for abandoned and removed "
                    f"(older than {self.abandon_after_s:.0f} s); publish again"
                )
            text = json.dumps(manifest, indent=2, sort_keys=True, default=str).encode()
            if not self.storage.create(f"{family}/{version}/{MANIFEST}", text):
                raise RegistryError(f"{family}/{version} was published by someone else meanwhile")
        except ClaimLost:
            raise
        except BaseException:
            self.storage.delete_tree(f"{family}/{version}")
            self.storage.delete(f"{family}/{CLAIMS}/{version}")
            raise
        self.prune(family)
        return version

    def _claim(self, family: str, attempts: int = 100) -> tuple[str, str]:
        """Claim the next free version number; (version, this claim's token)."""
        token = uuid.uuid4().hex
        owner = {"host": this_host(), "pid": os.getpid(), "at": time.time(), "token": token}
        for _ in range(attempts):
            taken = [n for n in self.storage.listdir(family) if VERSION.match(n)]
            taken += [n for n in self.storage.listdir(f"{family}/{CLAIMS}") if VERSION.match(n)]
            version = f"v{max(map(_number, taken), default=0) + 1:04d}"
            if self.storage.create(f"{family}/{CLAIMS}/{version}", json.dumps(owner).encode()):
                return version, token
        raise RegistryError(f"{self.storage.uri(family)}: no free version number after {attempts} tries")

    def _claim_owner(self, family: str, version: str) -> dict[str, Any]:
        try:
            owner = json.loads(self.storage.read_text(f"{family}/{CLAIMS}/{version}"))
        except (FileNotFoundError, ValueError):
            return {}
        return owner if isinstance(owner, dict) else {}

    def remove_abandoned(self, family: str) -> list[str]:
        """Delete what publishers left behind: the files of a claimed version without a manifest
        whose publisher is gone (killed on this host; its claim is deleted too) or whose claim is
        older than ``abandon_after_s`` (its claim stays as a tombstone). Returns the versions
        whose leftovers were deleted."""
        removed = []
        for version in self.storage.listdir(f"{family}/{CLAIMS}"):
            claim = f"{family}/{CLAIMS}/{version}"
            if not VERSION.match(version):
                continue
            if self.storage.is_file(f"{family}/{version}/{MANIFEST}"):
                continue  # published
            owner = self._claim_owner(family, version)
            if not owner or owner.get("abandoned"):  # gone meanwhile (its version just published), or a tombstone
                continue
            if gone(str(owner.get("host", "")), int(owner.get("pid", -1))):
                self.storage.delete_tree(f"{family}/{version}")
                self.storage.delete(claim)  # last: the number is free only once its files are gone
                removed.append(version)
            elif time.time() - float(owner.get("at", 0)) > self.abandon_after_s:
                self.storage.delete_tree(f"{family}/{version}")
                self.storage.put(claim, json.dumps({**owner, "abandoned": _now()}).encode())
                removed.append(version)
        return removed

    def find(self, family: str, key: str) -> str | None:
        """The newest kept version published with ``key``, if any."""
        for version in reversed(self.versions(family)):
            if self.manifest(family, version).get("key") == key:
                return version
        return None

    def promote(self, family: str, version: str) -> None:
        """Make ``version`` production, pushing it on the promotion stack. Another move landing
        first is no conflict: the push is retried on the stack it left."""
        self._require(family, version)

        def push(stack: list[str]) -> list[str]:
            return stack if stack and stack[-1] == version else [*stack, version]

        for _ in range(100):
            try:
                self._move(family, push)
                return
            except PointerMoved:
                continue
        raise RegistryError(f"{family!r}: production kept moving; {version} was not promoted")

    def current(self, family: str) -> str | None:
        """The promoted version: the top of the promotion stack."""
        stack = self.promotions(family)
        if stack:
            return stack[-1]
        legacy = self._read(f"{family}/{LEGACY_CURRENT}")
        return legacy.strip() or None if legacy is not None else None

    def promotions(self, family: str) -> list[str]:
        """Versions promoted so far, oldest first (the current one last)."""
        return self._stack(family)[1]

    def _records(self, family: str) -> NumberedRecords:
        return NumberedRecords(self.storage.child(f"{family}/{PROMOTION_RECORDS}"), "p")

    def _stack(self, family: str) -> tuple[int, list[str]]:
        """(the newest promotion record's number, the stack it holds)."""
        number, data = self._records(family).newest()
        if number == 0:
            text = self._read(f"{family}/{LEGACY_PROMOTIONS}")
            return 0, json.loads(text) if text else []
        if data is None:  # pruned between listing and reading: a newer record exists
            return self._stack(family)
        return number, json.loads(data)["stack"]

    def _move(self, family: str, change: Callable[[list[str]], list[str]]) -> list[str]:
        """Set the stack to ``change(stack)``, only if no other move lands in between."""
        number, stack = self._stack(family)
        moved = change(list(stack))
        if moved == stack:
            return stack
        record = {"stack": moved, "at": _now(), "by": {"host": this_host(), "pid": os.getpid()}}
        if self._records(family).append(number, json.dumps(record).encode()) is None:
            raise PointerMoved(
                f"{family!r}: production moved while this move was under way (it was "
                f"{stack[-1] if stack else 'none'}, now {self.current(family)}); nothing was changed: run it "
                f"again if it is still wanted"
            )
        return moved

    def _read(self, path: str) -> str | None:
        try:
            return self.storage.read_text(path)
        except FileNotFoundError:
            return None

    def approve(self, family: str, version: str) -> None:
        """Mark ``version`` as the candidate that passed its gate and waits to be promoted."""
        self._require(family, version)
        self.storage.put(f"{family}/{CANDIDATE}", (version + "\n").encode())

    def candidate(self, family: str) -> str | None:
        """The approved version newer than production, if any (promoting it makes it stale)."""
        version = (self._read(f"{family}/{CANDIDATE}") or "").strip()
        if not version or version not in self.versions(family):
            return None
        current = self.current(family)
        if current is not None and _number(version) <= _number(current):
            return None
        return version

    def record_gate(self, family: str, decision: dict[str, Any]) -> None:
        """Keep one gate decision (an object of its own: concurrent publishers both keep theirs)."""
        at = dt.datetime.now(dt.UTC)
        entry = {"at": at.isoformat(timespec="seconds"), **decision}
        name = f"{family}/{GATES}/{at.strftime('%Y%m%dT%H%M%S%f')}-{uuid.uuid4().hex[:8]}.json"
        self.storage.put(name, json.dumps(entry, sort_keys=True, default=str).encode())

    def gates(self, family: str) -> list[dict[str, Any]]:
        """The gate decisions, oldest first."""
        legacy = self._read(f"{family}/{LEGACY_GATES}") or ""
        lines = legacy.split("\n")
        if not legacy.endswith("\n"):
            lines.pop()  # a line cut short is not a decision
        decisions = [json.loads(line) for line in lines if line.strip()]
        for name in self.storage.listdir(f"{family}/{GATES}"):
            if name.endswith(".json"):
                decisions.append(json.loads(self.storage.read_text(f"{family}/{GATES}/{name}")))
        return decisions

    def resolve(self, family: str, version: str = "") -> str:
        """``version``, or the promoted one when it is empty; a clear error when there is none."""
        version = version or self.current(family) or ""
        if not version:
            raise NoProductionModel(self.no_production(family))
        self._require(family, version)
        return version

    def no_production(self, family: str) -> str:
        """Why ``family`` has no promoted version: its gate's last rejection, or that none was published."""
        rejected = [g for g in self.gates(family) if not g.get("passed", True)]
        if rejected:
            return f"{family!r} has no promoted version: its gate rejected {rejected[-1].get('reason', '')}"
        return f"{family!r} has no promoted version (publish one, or name a version)"

    def resolve_next(self, family: str, version: str = "") -> str:
        """``version``, else the candidate waiting to be promoted, else the promoted one (what an
        index is built from: a candidate is promoted together with its index)."""
        return self.resolve(family, version or self.candidate(family) or "")

    def rollback(self, family: str) -> str:
        """Promote the version that was production before the current one; returns it."""
        current = self.current(family)
        if current is None:
            raise RegistryError(f"{family!r} has no promoted version to roll back from")
        kept = set(self.versions(family))

        def pop(stack: list[str]) -> list[str]:
            if stack and stack[-1] != current:
                raise PointerMoved(f"{family!r}: production moved from {current} while rolling back; nothing changed")
            while stack and stack[-1] == current:
                stack.pop()
            while stack and stack[-1] not in kept:  # pruned since (only possible for versions no longer promoted)
                stack.pop()
            if not stack:
                raise RegistryError(f"{family!r}: no version promoted before {current} is kept to roll back to")
            return stack

        return self._move(family, pop)[-1]

    def prune(self, family: str) -> list[str]:
        """Delete the oldest versions beyond ``keep``, never the promoted one or the candidate."""
        versions = self.versions(family)
        spared = {self.current(family), self.candidate(family)}
        removable = [v for v in versions[: max(0, len(versions) - self.keep)] if v not in spared]
        claims = sorted((n for n in self.storage.listdir(f"{family}/{CLAIMS}") if VERSION.match(n)), key=_number)
        for v in removable:
            self.storage.delete(f"{family}/{v}/{MANIFEST}")  # first: it stops being a version
            self.storage.delete_tree(f"{family}/{v}")
            if claims and v != claims[-1]:  # the highest claim stays: numbers are counted from it
                self.storage.delete(f"{family}/{CLAIMS}/{v}")
        self._records(family).delete_older(keep=KEEP_PROMOTION_RECORDS - 1)
        return removable

    def verify(self, family: str, version: str) -> None:
        """Raise unless every file still has the checksum its manifest recorded."""
        manifest = self.manifest(family, version)
        files = manifest.get("files")
        if not isinstance(files, dict):
            raise RegistryError(f"the manifest {self.storage.uri(f'{family}/{version}/{MANIFEST}')} lists no files")
        for name, digest in files.items():
            path = f"{family}/{version}/{name}"
            if not self.storage.is_file(path) or self.storage.sha256(path) != digest:
                raise RegistryError(f"{family}/{version}: {name} is missing or changed")
        for name, pinned in (manifest.get("external") or {}).items():
            now = folder_checksums(Path(pinned["path"]))
            changed = sorted(set(now["files"].items()) ^ set(pinned["files"].items()))
            if changed:
                files = sorted({f for f, _ in changed})
                raise RegistryError(
                    f"{family}/{version}: its {name} at {pinned['path']} is not the one it was built on "
                    f"(missing, added or changed: {files[:5]}{' ...' if len(files) > 5 else ''}); restore that "
                    f"model or retrain"
                )


# Wall-clock figures of a training run: they go to the log and the job's report, never into an
# artifact's files, so the same training on the same inputs publishes byte-identical files.
WALL_CLOCK_KEYS = frozenset({"seconds", "train_seconds", "examples_per_s"})


def without_wall_clock(value: Any) -> Any:
    """``value`` (JSON-like) without any ``WALL_CLOCK_KEYS`` entry, at any depth."""
    if isinstance(value, dict):
        return {k: without_wall_clock(v) for k, v in value.items() if k not in WALL_CLOCK_KEYS}
    if isinstance(value, list):
        return [without_wall_clock(v) for v in value]
    return value


def content_key(*parts: Any) -> str:
    """SHA-256 of ``parts`` as canonical JSON: the key of an artifact made from exactly these
    settings and inputs (a deterministic job makes the same artifact from them)."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def folder_checksums(folder: Path) -> dict[str, Any]:
    """The absolute path and the SHA-256 of every file under ``folder`` (by relative name)."""
    folder = folder.resolve()
    files = (
        {str(p.relative_to(folder)): file_sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}
        if folder.is_dir()
        else {}
    )
    return {"path": str(folder), "files": files}
