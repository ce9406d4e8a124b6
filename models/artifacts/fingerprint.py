"""SHA-256 of files and of model folders: artifact checksums and model versions."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path


def feed_stream(digest, stream) -> None:
    """Feed an open binary stream's bytes into ``digest``, a block at a time."""
    for block in iter(lambda: stream.read(1 << 20), b""):
        digest.update(block)


def feed_file(digest, path: Path) -> None:
    """Stream ``path``'s bytes into ``digest``."""
    with path.open("rb") as f:
        feed_stream(digest, f)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    feed_file(digest, path)
    return digest.hexdigest()


def folder_fingerprint(folder: Path, salt: str, wanted: Callable[[Path], bool]) -> str:
    """SHA-256 (hex) of ``salt``, then the name and bytes of each ``wanted`` file of ``folder``
    in name order: the same files and settings give the same fingerprint."""
    digest = hashlib.sha256(salt.encode())
    for path in sorted(folder.iterdir()):
        if wanted(path):
            digest.update(path.name.encode())
            feed_file(digest, path)
    return digest.hexdigest()
