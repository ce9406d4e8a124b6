"""Versioned model and index artifacts: publish, promote, roll back, keep the last N.

Layout under the registry root (``<lake>/artifacts`` by default)::

    <family>/v0001/...files...            an artifact, immutable once published
    <family>/v0001/manifest.json           version, time, metrics, resolved config, inputs, sha256 of files
    <family>/CURRENT                       the promoted version

A version is built in a staging folder and renamed into place only when complete, so a crash
never leaves a half-written version. Publishing prunes the oldest versions beyond ``keep``,
never the promoted one. ``rollback`` promotes the newest version older than the current.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from models.fingerprint import file_sha256

MANIFEST = "manifest.json"
CURRENT = "CURRENT"


class RegistryError(RuntimeError):
    """A registry operation could not be done (unknown family/version, tampered files, ...)."""


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    tmp.write_text(text)
    os.replace(tmp, path)


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
    ) -> str:
        """Run ``build(folder)`` to write the artifact's files, then publish it as a new version.

        ``external`` names folders outside the artifact that it needs to run (the base model of
        a LoRA teacher): their path and every file's checksum go into the manifest, and
        :meth:`verify` refuses the artifact when any of them changed. ``build`` may return more
        top-level manifest entries (an index's description of the shards it wrote)."""
        family_dir = self.root / family
        family_dir.mkdir(parents=True, exist_ok=True)
        staging = family_dir / f".staging-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            extra = build(staging) or {}
            existing = self.versions(family)
            version = f"v{(int(existing[-1][1:]) + 1) if existing else 1:04d}"
            files = {str(p.relative_to(staging)): file_sha256(p) for p in sorted(staging.rglob("*")) if p.is_file()}
            manifest = {
                "family": family,
                "version": version,
                "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "metrics": metrics or {},
                "config": config or {},
                "inputs": inputs or {},
                "files": files,
                "external": {name: folder_checksums(Path(folder)) for name, folder in (external or {}).items()},
            }
            clash = sorted(set(extra) & set(manifest))
            if clash:
                raise ValueError(f"build returned manifest entries {clash} that would replace the registry's own")
            manifest.update(extra)
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
            os.rename(staging, family_dir / version)  # fails if the version appeared meanwhile
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self.prune(family)
        return version

    def promote(self, family: str, version: str) -> None:
        self.path(family, version)  # must exist
        _write_atomic(self.root / family / CURRENT, version + "\n")

    def current(self, family: str) -> str | None:
        pointer = self.root / family / CURRENT
        return pointer.read_text().strip() if pointer.is_file() else None

    def resolve(self, family: str, version: str = "") -> str:
        """``version``, or the promoted one when it is empty; a clear error when there is none."""
        version = version or self.current(family) or ""
        if not version:
            raise RegistryError(f"{family!r} has no promoted version (publish one, or name a version)")
        self.path(family, version)  # must exist
        return version

    def rollback(self, family: str) -> str:
        """Promote the newest version older than the current one; returns it."""
        current = self.current(family)
        if current is None:
            raise RegistryError(f"{family!r} has no promoted version to roll back from")
        older = [v for v in self.versions(family) if v < current]
        if not older:
            raise RegistryError(f"{family!r}: nothing older than {current} to roll back to")
        self.promote(family, older[-1])
        return older[-1]

    def prune(self, family: str) -> list[str]:
        """Delete the oldest versions beyond ``keep``, never the promoted one."""
        versions = self.versions(family)
        current = self.current(family)
        removable = [v for v in versions[: max(0, len(versions) - self.keep)] if v != current]
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


def folder_checksums(folder: Path) -> dict[str, Any]:
    """The absolute path and the SHA-256 of every file under ``folder`` (by relative name)."""
    folder = folder.resolve()
    files = (
        {str(p.relative_to(folder)): file_sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}
        if folder.is_dir()
        else {}
    )
    return {"path": str(folder), "files": files}
