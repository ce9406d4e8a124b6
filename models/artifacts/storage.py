"""Where artifacts live: one storage layer for a local folder, ``s3://``/``s3a://`` and ``hdfs://``.

Everything pinpipe keeps outside its Delta tables — model files, manifests, promotion pointers,
gate decisions, FAISS shards, locks, reports — is read and written through :class:`Storage`, a
root URI plus its settings. Reading, listing, streaming and copying go through ``pyarrow.fs``
(the same URIs, the same code on every store). Object stores have no rename, so the two commits
the registry and the locks build on are primitives of their own, each atomic on every store:

- :meth:`Storage.put`: the object holds the new bytes or what it held before, never a part
  (local: a temporary file, fsync, ``os.replace``; S3: one PUT; HDFS: a temporary file renamed
  over the old one — in one step through WebHDFS (``renameoptions=OVERWRITE``); through libhdfs
  after deleting it, so a reader may briefly find it missing, never torn);
- :meth:`Storage.create`: write only if absent, and say whether it did (local: a temporary file
  hard-linked into place; S3: a PUT with ``If-None-Match: *``, through boto3 since pyarrow has
  no conditional write; HDFS: a temporary file renamed, which the NameNode refuses onto an
  existing one).

HDFS is reached through pyarrow's ``HadoopFileSystem`` (libhdfs: a Hadoop install and
``CLASSPATH`` on every node) or, when ``HdfsSettings.webhdfs`` names the NameNode's HTTP address,
through WebHDFS (fsspec's client behind ``pyarrow.fs.PyFileSystem``: plain HTTP, nothing native
on any node). Spark reaches the same ``hdfs://`` root through its own Hadoop client either way.

A :class:`Storage` is a small picklable value, so Spark tasks get it in their closure and open
the store themselves (credentials come from each process's environment or the provider chain,
never from the value). :meth:`Storage.fetch` gives a task a local copy of a stored folder: once
per node, into a cache keyed by the files' SHA-256, each file verified after download.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow.fs as pafs

from models.artifacts.fingerprint import feed_stream, file_sha256

S3_SCHEMES = ("s3", "s3a", "s3n")
COMPLETE = ".complete"  # written last into a fetched folder of the cache


class StorageError(RuntimeError):
    """A stored file could not be used (missing, or not the bytes its checksum says)."""


@dataclass(frozen=True)
class S3Settings:
    """How to reach an S3-compatible store. Credentials are never settings: they come from the
    environment (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``), the
    shared AWS config files or the instance's role, for Spark's S3A connector and pinpipe alike."""

    endpoint: str = field(
        default="",
        metadata={"help": "S3 endpoint URL for a store that is not AWS (http://host:port); empty = AWS."},
    )
    path_style: bool = field(
        default=False,
        metadata={"help": "Path-style addressing (bucket in the path, not the host name): most self-hosted stores."},
    )
    region: str = field(default="", metadata={"help": "The bucket's region; empty = AWS_REGION, else us-east-1."})


@dataclass(frozen=True)
class HdfsSettings:
    """How pinpipe's own files reach an ``hdfs://`` lake (Spark's tables always go through its
    Hadoop client)."""

    webhdfs: str = field(
        default="",
        metadata={
            "help": "The NameNode's WebHDFS address (http://host:port, its dfs.namenode.http-address): pinpipe's "
            "files then go over HTTP, with nothing native on any node; empty = pyarrow's libhdfs client "
            "(needs a Hadoop install, JAVA_HOME and CLASSPATH on every node)."
        },
    )
    user: str = field(
        default="", metadata={"help": "The HDFS user for WebHDFS; empty = $HADOOP_USER_NAME, else the OS user."}
    )


@dataclass(frozen=True)
class Storage:
    """A folder on some store: ``root`` is a local path or a URI; ``path`` names within it."""

    root: str
    s3: S3Settings = S3Settings()
    cache_dir: str = ""  # where fetch keeps local copies; empty = $PINPIPE_CACHE or <tmp>/pinpipe-cache
    hdfs: HdfsSettings = HdfsSettings()

    # -- where -------------------------------------------------------------------------------

    @property
    def scheme(self) -> str:
        scheme = urlsplit(self.root).scheme if "://" in self.root else ""
        return "local" if scheme in ("", "file") else ("s3" if scheme in S3_SCHEMES else scheme)

    @property
    def is_local(self) -> bool:
        return self.scheme == "local"

    def child(self, path: str) -> Storage:
        """The storage rooted at ``path`` under this one."""
        return Storage(self.uri(path), self.s3, self.cache_dir, self.hdfs)

    def uri(self, path: str = "") -> str:
        return _join(self.root, path)

    def local_path(self, path: str = "") -> Path:
        """The local path of ``path`` (only for local storage)."""
        if not self.is_local:
            raise ValueError(f"{self.root} is not a local folder")
        return Path(self._fs_path(path))

    @property
    def fs(self) -> pafs.FileSystem:
        return _filesystem(self.scheme, urlsplit(self.root).netloc if "://" in self.root else "", self.s3, self.hdfs)

    def _fs_path(self, path: str = "") -> str:
        root = self.root
        if self.scheme == "local":
            root = root[len("file://") :] if root.startswith("file://") else root.removeprefix("file:")
            return _join(root, path)
        parts = urlsplit(root)
        base = f"{parts.netloc}{parts.path}" if self.scheme == "s3" else parts.path
        return _join(base, path)

    # -- reading -----------------------------------------------------------------------------

    def exists(self, path: str = "") -> bool:
        return self.fs.get_file_info(self._fs_path(path)).type != pafs.FileType.NotFound

    def is_file(self, path: str) -> bool:
        return self.fs.get_file_info(self._fs_path(path)).type == pafs.FileType.File

    def listdir(self, path: str = "") -> list[str]:
        """Names of the files and folders directly under ``path`` (none when it is missing)."""
        return sorted(info.base_name for info in self._list(self._fs_path(path), recursive=False))

    def files(self, path: str = "") -> list[str]:
        """Every file under ``path``, by its name relative to ``path``, sorted."""
        base = self._fs_path(path).rstrip("/")
        return sorted(
            info.path[len(base) + 1 :] for info in self._list(base, recursive=True) if info.type == pafs.FileType.File
        )

    def _list(self, base: str, recursive: bool) -> list[pafs.FileInfo]:
        selector = pafs.FileSelector(base, recursive=recursive, allow_not_found=True)
        try:
            return self.fs.get_file_info(selector)
        except NotADirectoryError:
            # pyarrow's fsspec bridge (WebHDFS) asks "a folder?" then "there at all?": a folder
            # created in between reads as a file. Asked again, it is a folder (or truly a file).
            return self.fs.get_file_info(selector)

    def read_bytes(self, path: str) -> bytes:
        try:
            with self.fs.open_input_stream(self._fs_path(path)) as f:
                return f.read()
        except FileNotFoundError:
            raise
        except OSError as err:
            if not self.exists(path):
                raise FileNotFoundError(f"{self.uri(path)}: no such file") from err
            raise

    def read_text(self, path: str) -> str:
        return self.read_bytes(path).decode()

    def sha256(self, path: str) -> str:
        digest = hashlib.sha256()
        with self.fs.open_input_stream(self._fs_path(path)) as f:
            feed_stream(digest, f)
        return digest.hexdigest()

    # -- writing -----------------------------------------------------------------------------

    def put(self, path: str, data: bytes) -> None:
        """``path`` holds ``data`` or what it held before: never a part (see the module doc)."""
        if self.is_local:
            with self._local_temp(path, data) as (tmp, target):
                os.replace(tmp, target)
        elif self.scheme == "s3":
            with self.fs.open_output_stream(self._fs_path(path)) as f:
                f.write(data)
        else:
            tmp = f"{path}.tmp-{uuid.uuid4().hex}"
            self._write_stream(tmp, data)
            _hdfs_rename(self, tmp, path, overwrite=True)

    def create(self, path: str, data: bytes) -> bool:
        """Write ``data`` at ``path`` only if nothing is there; True when this call wrote it. Of
        two callers racing for one path, exactly one gets True."""
        if self.is_local:
            with self._local_temp(path, data) as (tmp, target):
                try:
                    os.link(tmp, target)  # fails if target exists: the check and the write are one step
                    return True
                except FileExistsError:
                    return False
        if self.scheme == "s3":
            return _s3_create(self, path, data)
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        self._write_stream(tmp, data)
        if _hdfs_rename(self, tmp, path, overwrite=False):
            return True
        self.fs.delete_file(self._fs_path(tmp))
        return False

    @contextmanager
    def _local_temp(self, path: str, data: bytes) -> Iterator[tuple[Path, Path]]:
        """(a fully written, synced temporary file beside ``path``'s local target, that target);
        the temporary file is gone after the block, whatever happened in it."""
        target = self.local_path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}")
        try:
            with tmp.open("wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            yield tmp, target
        finally:
            tmp.unlink(missing_ok=True)

    def _write_stream(self, path: str, data: bytes) -> None:
        self.fs.create_dir(self._fs_path(path).rsplit("/", 1)[0], recursive=True)
        with self.fs.open_output_stream(self._fs_path(path)) as f:
            f.write(data)

    @contextmanager
    def writing(self) -> Iterator[Path]:
        """A local folder whose files end up in this storage's root: the root itself on a local
        store (written in place), else a temporary folder uploaded when the block ends well."""
        if self.is_local:
            folder = self.local_path()
            folder.mkdir(parents=True, exist_ok=True)
            yield folder
            return
        with tempfile.TemporaryDirectory(prefix="pinpipe-upload-") as tmp:
            yield Path(tmp)
            self.upload(Path(tmp))

    def upload(self, local: Path, path: str = "") -> None:
        """Copy every file under the local folder ``local`` to ``path`` (same relative names)."""
        for name in local_files(local):
            self.upload_file(local / name, _join(path, name))

    def upload_file(self, local: Path, path: str) -> None:
        if self.is_local:
            target = self.local_path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local, target)
            return
        self.fs.create_dir(self._fs_path(path).rsplit("/", 1)[0], recursive=True)
        pafs.copy_files(
            str(local), self._fs_path(path), source_filesystem=pafs.LocalFileSystem(), destination_filesystem=self.fs
        )

    def download_file(self, path: str, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        pafs.copy_files(
            self._fs_path(path), str(local), source_filesystem=self.fs, destination_filesystem=pafs.LocalFileSystem()
        )

    def delete(self, path: str) -> None:
        """Delete the file ``path`` if it is there."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.delete_file(self._fs_path(path))

    def delete_tree(self, path: str) -> None:
        """Delete the folder ``path`` and all under it, if it is there."""
        if self.is_local:
            shutil.rmtree(self.local_path(path), ignore_errors=True)
        elif self.exists(path):
            self.fs.delete_dir(self._fs_path(path))

    # -- local copies for the code that loads models -----------------------------------------

    def fetch(self, path: str, files: dict[str, str]) -> Path:
        """A local folder holding the ``files`` (relative name -> SHA-256) of the stored folder
        ``path``. Local storage: the folder itself. Otherwise a copy in this node's cache, made
        once (by whichever process gets there first; the others wait for it, or make their own
        and keep the first) and verified file by file against ``files``."""
        if self.is_local:
            return self.local_path(path)
        cache = Path(self.cache_dir or os.environ.get("PINPIPE_CACHE") or Path(tempfile.gettempdir()) / "pinpipe-cache")
        key = hashlib.sha256(json.dumps([self.uri(path), sorted(files.items())]).encode()).hexdigest()[:32]
        target = cache / key
        if (target / COMPLETE).is_file():
            return target
        with _fetch_lock:
            if (target / COMPLETE).is_file():
                return target
            cache.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=cache))
            try:
                for name, digest in sorted(files.items()):
                    self.download_file(_join(path, name), tmp / name)
                    if file_sha256(tmp / name) != digest:
                        raise StorageError(f"{self.uri(_join(path, name))} is not the file its manifest recorded")
                (tmp / COMPLETE).write_text(self.uri(path) + "\n")
                try:
                    os.rename(tmp, target)
                except OSError:
                    if not (target / COMPLETE).is_file():  # another process's copy, complete: keep it
                        shutil.rmtree(target, ignore_errors=True)
                        os.rename(tmp, target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return target


_fetch_lock = threading.Lock()


def local_files(folder: Path) -> list[str]:
    """Every file under the local ``folder``, by relative name (``/``-separated), sorted."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _join(base: str, path: str) -> str:
    if not path:
        return base
    return f"{base.rstrip('/')}/{path.lstrip('/')}"


_filesystems: dict[tuple[str, str, S3Settings, HdfsSettings], pafs.FileSystem] = {}
_filesystems_lock = threading.Lock()


def _filesystem(scheme: str, netloc: str, s3: S3Settings, hdfs: HdfsSettings) -> pafs.FileSystem:
    """One pyarrow filesystem per store and process."""
    key = (
        scheme,
        netloc if scheme == "hdfs" else "",
        s3 if scheme == "s3" else S3Settings(),
        hdfs if scheme == "hdfs" else HdfsSettings(),
    )
    with _filesystems_lock:
        if key not in _filesystems:
            if scheme == "local":
                _filesystems[key] = pafs.LocalFileSystem()
            elif scheme == "s3":
                endpoint = urlsplit(s3.endpoint) if s3.endpoint else None
                _filesystems[key] = pafs.S3FileSystem(
                    region=_region(s3),
                    endpoint_override=endpoint.netloc if endpoint else None,
                    scheme=endpoint.scheme if endpoint else None,
                    force_virtual_addressing=not s3.path_style and endpoint is None,
                )
            elif scheme == "hdfs" and hdfs.webhdfs:
                _filesystems[key] = pafs.PyFileSystem(pafs.FSSpecHandler(_webhdfs(hdfs)))
            elif scheme == "hdfs":
                _filesystems[key] = pafs.HadoopFileSystem.from_uri(f"hdfs://{netloc}")
            else:
                raise ValueError(f"no storage for {scheme}:// (local paths, s3://, s3a:// and hdfs:// are supported)")
        return _filesystems[key]


def _webhdfs(hdfs: HdfsSettings):
    """fsspec's WebHDFS client for the NameNode at ``hdfs.webhdfs``."""
    try:
        from fsspec.implementations.webhdfs import WebHDFS
    except ImportError as err:  # pragma: no cover - the hdfs extra is part of setup
        raise StorageError("lake.hdfs.webhdfs needs fsspec: pip install 'pinpipe[hdfs]'") from err
    address = urlsplit(hdfs.webhdfs if "://" in hdfs.webhdfs else f"http://{hdfs.webhdfs}")
    user = hdfs.user or os.environ.get("HADOOP_USER_NAME") or getpass.getuser()
    return WebHDFS(address.hostname, port=address.port, user=user, use_https=address.scheme == "https")


def _hdfs_rename(storage: Storage, src: str, dst: str, overwrite: bool) -> bool:
    """Rename ``src`` to ``dst`` on HDFS; False when ``dst`` exists and ``overwrite`` is off (the
    NameNode checks and renames in one step)."""
    source, target = storage._fs_path(src), storage._fs_path(dst)
    fs = storage.fs
    if isinstance(fs, pafs.PyFileSystem):  # WebHDFS: RENAME answers whether it renamed
        client = fs.handler.fs
        options = {"renameoptions": "OVERWRITE"} if overwrite else {}
        answer = client._call("RENAME", method="put", path=source, destination=target, **options)
        return bool(answer.json().get("boolean", True)) if answer.content else True
    if overwrite and storage.exists(dst):  # libhdfs has no overwriting rename
        fs.delete_file(target)
    try:
        fs.move(source, target)
        return True
    except OSError:
        if not overwrite and storage.exists(dst):
            return False
        raise


def _region(s3: S3Settings) -> str:
    return s3.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


_s3_clients: dict[S3Settings, object] = {}


def _s3_create(storage: Storage, path: str, data: bytes) -> bool:
    try:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import ClientError
    except ImportError as err:  # pragma: no cover - the s3 extra is part of setup
        raise StorageError("a lake on S3 needs boto3 for conditional writes: pip install 'pinpipe[s3]'") from err
    s3 = storage.s3
    with _filesystems_lock:
        if s3 not in _s3_clients:
            _s3_clients[s3] = boto3.client(
                "s3",
                endpoint_url=s3.endpoint or None,
                region_name=_region(s3),
                config=Config(s3={"addressing_style": "path" if s3.path_style else "auto"}),
            )
        client = _s3_clients[s3]
    bucket, _, key = storage._fs_path(path).partition("/")
    try:
        client.put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")  # type: ignore[attr-defined]
        return True
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
            return False
        raise
