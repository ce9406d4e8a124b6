"""Versioned model and index artifacts: publish, promote, roll back, keep the last N.

Layout under the registry root (``<lake>/artifacts`` by default)::

    <family>/v0001/...files...            an artifact, immutable once published
    <family>/v0001/manifest.json           version, time, metrics, resolved config, inputs, sha256 of files
    <family>/CURRENT                       the promoted version
    <family>/PROMOTIONS                    the promotion stack (JSON list, newest last)
    <family>/CANDIDATE                     a version that passed its gate and waits (two-tower: for its index)
    <family>/GATES.jsonl                   every gate decision on the family's candidates, one JSON per line

A version is built in a staging folder (``.staging-<uuid>-<pid>@<host>``) and renamed into place
only when complete, so a crash never leaves a half-written version; the staging folder of a
publisher killed on this host is deleted by the next publish of the family (one on another host,
or still running, is left alone). Publishing prunes the oldest versions beyond ``keep``,
never the promoted one. ``rollback`` pops the promotion stack: it promotes the version that was
production before the current one (never a version that was published but not promoted, such as
a candidate its gate rejected). A ``key`` (a digest of the config and inputs that made the
artifact) makes publishing idempotent: publishing again with the key of a kept version returns
that version, so a job killed between publishing and recording it publishes nothing new on re-run.
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from models.artifacts.fingerprint import file_sha256
from models.processes import gone, this_host

MANIFEST = "manifest.json"
CURRENT = "CURRENT"
PROMOTIONS = "PROMOTIONS"
CANDIDATE = "CANDIDATE"
GATES = "GATES.jsonl"
STAGING = ".staging-"
_STAGING_OWNER = re.compile(r"^\.staging-[0-9a-f]{32}-(?P<pid>\d+)@(?P<host>.+)$")


class RegistryError(RuntimeError):
    """A registry operation could not be done (unknown family/version, tampered files, ...)."""


class NoProductionModel(RegistryError):
    """A family has no promoted version to use (none published yet, or its gate rejected every
    one): work that needs it cannot run, and the nightly records that work as skipped."""


def remove_abandoned_staging(family_dir: Path) -> list[str]:
    """Delete the staging folders under ``family_dir`` whose publisher is known to be gone
    (killed on this host); returns their names."""
    removed = []
    for folder in sorted(family_dir.glob(f"{STAGING}*")):
        owner = _STAGING_OWNER.match(folder.name)
        if owner and gone(owner["host"], int(owner["pid"])):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
    return removed


def _write_atomic(path: Path, text: str) -> None:
    """``path`` holds ``text`` or what it held before (a full disk, a kill): never a part of it,
    and no temporary file left behind by a failed write."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    try:
        with tmp.open("w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class Registry:
    def __init__(self, root: str | Path, keep: int = 5) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.root = Path(root)
        self.keep = keep

    def versions(self, family: str) -> list[str]:
        folder = self.root / family
        if not folder.is_dir():
            return []
        return sorted(
            p.name for p in folder.iterdir() if p.is_dir() and p.name.startswith("v") and (p / MANIFEST).is_file()
        )

    def path(self, family: str, version: str) -> Path:
        path = self.root / family / version
        if not (path / MANIFEST).is_file():
            raise RegistryError(f"no version {version!r} of {family!r}; have {self.versions(family)}")
        return path

    def manifest(self, family: str, version: str) -> dict[str, Any]:
        path = self.path(family, version) / MANIFEST
        try:
            manifest = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise RegistryError(f"cannot read the manifest {path}: {err}") from err
        if not isinstance(manifest, dict):
            raise RegistryError(f"the manifest {path} is not a JSON object")
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
        """Run ``build(folder)`` to write the artifact's files, then publish it as a new version.

        ``external`` names folders outside the artifact that it needs to run (the base model of
        a LoRA teacher): their path and every file's checksum go into the manifest, and
        :meth:`verify` refuses the artifact when any of them changed. ``build`` may return more
        top-level manifest entries (an index's description of the shards it wrote). With a ``key``
        (see :func:`content_key`), a kept version published with the same key is returned as is."""
        if key and (same := self.find(family, key)):
            return same
        family_dir = self.root / family
        family_dir.mkdir(parents=True, exist_ok=True)
        remove_abandoned_staging(family_dir)
        staging = family_dir / f"{STAGING}{uuid.uuid4().hex}-{os.getpid()}@{this_host()}"
        staging.mkdir()
        try:
            extra = build(staging) or {}
            files = {str(p.relative_to(staging)): file_sha256(p) for p in sorted(staging.rglob("*")) if p.is_file()}
            manifest = {
                "family": family,
                "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "metrics": metrics or {},
                "config": config or {},
                "inputs": inputs or {},
                "files": files,
                "external": {name: folder_checksums(Path(folder)) for name, folder in (external or {}).items()},
                "key": key or None,
            }
            clash = sorted(set(extra) & {*manifest, "version"})
            if clash:
                raise ValueError(f"build returned manifest entries {clash} that would replace the registry's own")
            manifest.update(extra)
            version = self._claim(family_dir, staging, manifest)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self.prune(family)
        return version

    def _claim(self, family_dir: Path, staging: Path, manifest: dict[str, Any], attempts: int = 100) -> str:
        """Rename ``staging`` to the next version number, its manifest naming that number. The
        rename is the commit: it fails when another publisher took the number meanwhile, and
        then the next number is tried, so concurrent publishers never share or lose a version."""
        for _ in range(attempts):
            existing = self.versions(manifest["family"])
            version = f"v{(int(existing[-1][1:]) + 1) if existing else 1:04d}"
            text = json.dumps({**manifest, "version": version}, indent=2, sort_keys=True, default=str)
            (staging / MANIFEST).write_text(text)
            try:
                os.rename(staging, family_dir / version)
                return version
            except OSError as err:
                if err.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not (family_dir / version).is_dir():
                    raise
        raise RegistryError(f"{family_dir}: no free version number after {attempts} tries (too many publishers)")

    def find(self, family: str, key: str) -> str | None:
        """The newest kept version published with ``key``, if any."""
        for version in reversed(self.versions(family)):
            if self.manifest(family, version).get("key") == key:
                return version
        return None

    def promote(self, family: str, version: str) -> None:
        """Make ``version`` production, pushing it on the promotion stack."""
        self.path(family, version)  # must exist
        stack = self.promotions(family)
        if not stack or stack[-1] != version:
            _write_atomic(self.root / family / PROMOTIONS, json.dumps([*stack, version]))
        _write_atomic(self.root / family / CURRENT, version + "\n")

    def current(self, family: str) -> str | None:
        pointer = self.root / family / CURRENT
        return pointer.read_text().strip() if pointer.is_file() else None

    def promotions(self, family: str) -> list[str]:
        """Versions promoted so far, oldest first (the current one last, unless rolled back past)."""
        path = self.root / family / PROMOTIONS
        return json.loads(path.read_text()) if path.is_file() else []

    def approve(self, family: str, version: str) -> None:
        """Mark ``version`` as the candidate that passed its gate and waits to be promoted."""
        self.path(family, version)
        _write_atomic(self.root / family / CANDIDATE, version + "\n")

    def candidate(self, family: str) -> str | None:
        """The approved version newer than production, if any (promoting it makes it stale)."""
        pointer = self.root / family / CANDIDATE
        version = pointer.read_text().strip() if pointer.is_file() else ""
        if not version or version not in self.versions(family) or version <= (self.current(family) or ""):
            return None
        return version

    def record_gate(self, family: str, decision: dict[str, Any]) -> None:
        """Append one gate decision to the family's log."""
        folder = self.root / family
        folder.mkdir(parents=True, exist_ok=True)
        entry = {"at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), **decision}
        path = folder / GATES
        if path.is_file() and (data := path.read_bytes()) and not data.endswith(b"\n"):
            with path.open("r+b") as f:  # a line cut short (a full disk): dropped, not continued
                f.truncate(data.rfind(b"\n") + 1)
        with path.open("a") as f:  # one appended line: concurrent publishers both keep theirs
            f.write(json.dumps(entry, sort_keys=True, default=str) + "\n")

    def gates(self, family: str) -> list[dict[str, Any]]:
        """The gate log, oldest first; a last line cut short (a full disk, a kill while it was
        written: no newline yet) is not a decision and is left out."""
        path = self.root / family / GATES
        if not path.is_file():
            return []
        text = path.read_text()
        lines = text.split("\n")
        if not text.endswith("\n"):
            lines.pop()  # written in part
        return [json.loads(line) for line in lines if line.strip()]

    def resolve(self, family: str, version: str = "") -> str:
        """``version``, or the promoted one when it is empty; a clear error when there is none."""
        version = version or self.current(family) or ""
        if not version:
            raise NoProductionModel(self.no_production(family))
        self.path(family, version)  # must exist
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
        stack = self.promotions(family)
        while stack and stack[-1] == current:
            stack.pop()
        while stack and stack[-1] not in kept:  # pruned since (only possible for versions no longer promoted)
            stack.pop()
        if not stack:
            raise RegistryError(f"{family!r}: no version promoted before {current} is kept to roll back to")
        _write_atomic(self.root / family / PROMOTIONS, json.dumps(stack))
        _write_atomic(self.root / family / CURRENT, stack[-1] + "\n")
        return stack[-1]

    def prune(self, family: str) -> list[str]:
        """Delete the oldest versions beyond ``keep``, never the promoted one or the candidate."""
        versions = self.versions(family)
        spared = {self.current(family), self.candidate(family)}
        removable = [v for v in versions[: max(0, len(versions) - self.keep)] if v not in spared]
        for v in removable:
            shutil.rmtree(self.root / family / v)
        return removable

    def verify(self, family: str, version: str) -> None:
        """Raise unless every file still has the checksum its manifest recorded."""
        folder = self.path(family, version)
        files = self.manifest(family, version).get("files")
        if not isinstance(files, dict):
            raise RegistryError(f"the manifest {folder / MANIFEST} lists no files to verify")
        for name, digest in files.items():
            path = folder / name
            if not path.is_file() or file_sha256(path) != digest:
                raise RegistryError(f"{family}/{version}: {name} is missing or changed")
        for name, pinned in (self.manifest(family, version).get("external") or {}).items():
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
