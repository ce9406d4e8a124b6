"""Typed, strict configuration: the generic loader, and the sections of the runtime itself.

A job's configuration is ``conf/base.yaml``, then an environment overlay (``conf/<env>.yaml``:
``local`` — the embedded default —, ``cluster`` or ``cluster-gpu``), then any ``--conf-file``
overlays, then ``--set section.key=value`` overrides, merged in that order. The merged mapping
is then checked against a root dataclass whose fields are the sections (:func:`load`): an
unknown key, a missing section or a value of the wrong type fails with a :class:`ConfigError`
naming the key, and so does a value that is out of range. The root class is assembled by the
pipeline from the settings classes that live beside their owners (``jobs.config``); this module
knows no job and no section but its own (``spark``, ``lake``).

Settings are documented one way: ``field(metadata={"help": ...})`` (:func:`setting`). The same
metadata says how an empty value is resolved, once, in :func:`load`, and never again:

* ``dated``: an empty date becomes today's date (UTC, read from the clock once);
* ``when_empty``: a callable whose result fills an empty value (e.g. the bundled MiniLM's folder);
* ``same_as``: ``"section.key"`` whose (resolved) value fills an empty one;
* ``path``: a relative local path becomes absolute (against the working directory).

Jobs read plain values, and the resolved config saved beside an artifact holds real dates and
paths.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import re
import types
import typing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from models.artifacts.storage import HdfsSettings, S3Settings

ENVIRONMENTS = ("local", "cluster", "cluster-gpu")


class ConfigError(ValueError):
    """A configuration key is unknown, missing, of the wrong type, or out of range."""


def setting(
    text: str,
    *,
    dated: bool = False,
    same_as: str = "",
    path: bool = False,
    when_empty: Callable[[], Any] | None = None,
    **kw: Any,
) -> Any:
    """A documented setting (``help``), with how load resolves it when empty (module docstring)."""
    metadata: dict[str, Any] = {"help": text}
    if dated:
        metadata["dated"] = True
    if same_as:
        metadata["same_as"] = same_as
    if path:
        metadata["path"] = True
    if when_empty is not None:
        metadata["when_empty"] = when_empty
    return field(metadata=metadata, **kw)


def require(condition: bool, key: str, message: str, value: Any) -> None:
    if not condition:
        raise ConfigError(f"{key}: {message}, got {value!r}")


def require_at_least(section: Any, prefix: str, names: tuple[str, ...], minimum: int = 1) -> None:
    for name in names:
        value = getattr(section, name)
        require(value >= minimum, f"{prefix}.{name}", f"must be >= {minimum}", value)


def is_uri(path: str) -> bool:
    """A URI (s3a://, hdfs://, file:...) rather than a local path."""
    return "://" in path or path.startswith("file:")


# The master URLs Spark accepts (SparkContext's own patterns), checked before a JVM starts.
MASTER_URL = re.compile(
    r"local|local\[(\d+|\*)\]|local\[(\d+|\*),\s*\d+\]|local-cluster\[\d+,\s*\d+,\s*\d+\]"
    r"|spark://[^\s/,]+(,[^\s/,]+)*|yarn|k8s://\S+|mesos://\S+"
)
MEMORY_SIZE = re.compile(r"\d+[kKmMgGtT]?[bB]?")


@dataclass(frozen=True)
class SparkConfig:
    master: str = setting("Master for local runs; ignored under spark-submit.")
    driver_memory: str = setting("spark.driver.memory for local runs (e.g. '4g').")
    shuffle_partitions: int = setting("spark.sql.shuffle.partitions.")
    ui_enabled: bool = setting("Whether the Spark UI is started (local runs).")
    log_level: str = setting("Spark log level: ERROR, WARN, INFO, ...")
    extra: dict[str, str] = setting("More Spark properties, set as given.", default_factory=dict)
    driver_threads: int = setting(
        "torch/faiss/BLAS threads of the driver's own computations (training, evaluation, gates); 0 = all cores. "
        "On a machine shared with Spark's executors (local mode) or other jobs, fewer threads avoid "
        "oversubscription (runtime/threads.py).",
        default=0,
    )

    def __post_init__(self) -> None:
        require(self.shuffle_partitions >= 1, "spark.shuffle_partitions", "must be >= 1", self.shuffle_partitions)
        require(self.driver_threads >= 0, "spark.driver_threads", "must be >= 0 (0 = all cores)", self.driver_threads)
        levels = {"ALL", "DEBUG", "ERROR", "FATAL", "INFO", "OFF", "TRACE", "WARN"}
        require(self.log_level in levels, "spark.log_level", f"must be one of {sorted(levels)}", self.log_level)
        require(
            MASTER_URL.fullmatch(self.master) is not None,
            "spark.master",
            "must be local, local[N], local[*], local[N,retries], spark://host:port[,host:port], yarn or k8s://...",
            self.master,
        )
        require(
            MEMORY_SIZE.fullmatch(self.driver_memory) is not None,
            "spark.driver_memory",
            "must be a JVM memory size such as 512m, 4g or 1t",
            self.driver_memory,
        )


@dataclass(frozen=True)
class LakeConfig:
    root: str = setting(
        "Lake root: tables under <root>/tables, artifacts under <root>/artifacts. "
        "A local path (relative to the working directory) or a URI (s3a://, hdfs://).",
        path=True,
    )
    s3: S3Settings = setting(
        "How pinpipe (pyarrow.fs, boto3) and Spark (Hadoop's S3A) reach an s3:// or s3a:// lake; credentials "
        "come from the environment or the AWS provider chain, never from these files.",
        default=S3Settings(),
    )
    hdfs: HdfsSettings = setting(
        "How pinpipe's own files (models, indexes, pointers, locks, reports) reach an hdfs:// lake; Spark's "
        "tables go through its own Hadoop client.",
        default=HdfsSettings(),
    )
    cache_dir: str = setting(
        "Node-local folder where each process keeps verified copies of the models and index shards it loads "
        "from a remote lake; empty = $PINPIPE_CACHE, else <tmp>/pinpipe-cache.",
        default="",
    )

    def __post_init__(self) -> None:
        require(bool(self.root.strip()), "lake.root", "must not be empty", self.root)
        require(
            is_uri(self.root) or Path(self.root).is_absolute(),
            "lake.root",
            "must be absolute or a URI (load_config resolves relative paths)",
            self.root,
        )
        if not is_uri(self.root):  # checked here, before Spark starts: a file where the lake must go
            root = Path(self.root)
            existing = next(p for p in (root, *root.parents) if p.exists())
            require(
                existing.is_dir(),
                "lake.root",
                f"{'is' if existing == root else f'is under {existing}, which is'} a file, not a folder",
                self.root,
            )


@dataclass(frozen=True)
class RootConfig:
    """The base of a pipeline's configuration class: its sections are fields added beside
    ``env`` (``jobs.config`` assembles them)."""

    env: str = setting("The environment overlay that was applied.")

    def to_dict(self) -> dict[str, Any]:
        """The resolved configuration, as saved next to artifacts (dates as ISO strings)."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=_iso))


def _iso(value: Any) -> str:
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    raise TypeError(f"not serialisable: {value!r}")


# --------------------------------------------------------------------------- building


def _check_type(key: str, value: Any, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: must be a mapping of settings, got {value!r}")
        return _build(tp, value, key)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _check_type(key, value, inner)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: must be a list, got {value!r}")
        return [_check_type(f"{key}[{i}]", v, item_tp) for i, v in enumerate(value)]
    if origin is dict:
        k_tp, v_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: must be a mapping, got {value!r}")
        return {_check_type(f"{key}.<key>", k, k_tp): _check_type(f"{key}.{k}", v, v_tp) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: must be a number, got {value!r}")
        return float(value)
    if tp is dt.date:
        if isinstance(value, dt.datetime) or not isinstance(value, (dt.date, str)):
            raise ConfigError(f"{key}: must be a date YYYY-MM-DD, got {value!r}")
        try:
            return value if isinstance(value, dt.date) else dt.date.fromisoformat(value)
        except ValueError:
            raise ConfigError(f"{key}: must be a date YYYY-MM-DD, got {value!r}") from None
    if tp is dt.datetime:
        if isinstance(value, dt.datetime):
            return value
        try:
            return dt.datetime.fromisoformat(value.isoformat() if isinstance(value, dt.date) else str(value))
        except ValueError:
            raise ConfigError(f"{key}: must be an ISO date-time, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dt.date, dt.datetime)):  # YAML reads 2024-01-01 as a date
            return value.isoformat()
        if not isinstance(value, str):
            raise ConfigError(f"{key}: must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp!r} for {key}")


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"unknown config key(s) {[where + k for k in unknown]}; "
            f"known keys{' in ' + prefix if prefix else ''}: {names}"
        )
    kwargs = {}
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        if f.name in data:
            kwargs[f.name] = _check_type(key, data[f.name], hints[f.name])
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing config key {key!r}")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except ValueError as exc:  # a settings class's own check (e.g. models.relevance.teacher_settings)
        first, colon, _ = str(exc).partition(":")
        if prefix and colon and first in names:  # "holdout_folds: ..." -> "evaluation.holdout_folds: ..."
            raise ConfigError(f"{prefix}.{exc}") from None
        raise ConfigError(f"{prefix or cls.__name__}: {exc}") from None


def _merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in overlay.items():
        if isinstance(v, dict) and isinstance(merged.get(k), dict):
            merged[k] = _merge(merged[k], v)
        else:
            merged[k] = v
    return merged


def _read_yaml(text: str, origin: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text) or {}
    except (yaml.YAMLError, ValueError) as exc:
        raise ConfigError(f"{origin}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: must hold a mapping of sections, got {type(data).__name__}")
    return data


def _packaged_yaml(name: str) -> dict[str, Any]:
    # conf/ is a package so that its YAML travels inside the --py-files zip under spark-submit.
    resource = resources.files("conf") / f"{name}.yaml"
    if not resource.is_file():
        raise ConfigError(f"no conf/{name}.yaml")
    return _read_yaml(resource.read_text(encoding="utf-8"), f"conf/{name}.yaml")


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'simulate.days=3'`` -> ``(['simulate', 'days'], 3)``; the value is read as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: expected section.key=value")
    try:
        value = yaml.safe_load(raw)
    except (yaml.YAMLError, ValueError):  # e.g. 2026-13-01 is no date: keep the text
        value = raw
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):  # YAML 1.1 reads 5e-5 as text
        value = float(value)
    return key.strip().split("."), value


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _absolute(path: Any, cwd: Path) -> Any:
    if not isinstance(path, str) or _empty(path) or is_uri(path):
        return path
    return str((cwd / path).resolve())


def _fields(cls: type, node: dict[str, Any]) -> Iterator[tuple[dataclasses.Field, dict[str, Any]]]:
    """Every field of ``cls`` and of its nested settings classes, with the mapping (section) of
    ``node`` that holds its value; sections of the wrong shape are left for :func:`_build`."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        yield f, node
        child = node.get(f.name)
        if dataclasses.is_dataclass(hints[f.name]) and isinstance(child, dict):
            yield from _fields(hints[f.name], child)


def _lookup(data: dict[str, Any], key: str) -> Any:
    node: Any = data
    for name in key.split("."):
        node = node.get(name) if isinstance(node, dict) else None
    return node


def _resolve(root: type, data: dict[str, Any], today: dt.date, cwd: Path) -> dict[str, Any]:
    """Fill in every derived value, once, as the fields' metadata says (module docstring)."""
    fields = list(_fields(root, data))
    for f, node in fields:
        if node and _empty(node.get(f.name)):
            if f.metadata.get("dated"):
                node[f.name] = today.isoformat()
            elif "when_empty" in f.metadata:
                node[f.name] = str(f.metadata["when_empty"]())
    for f, node in fields:
        if node and _empty(node.get(f.name)) and f.metadata.get("same_as"):
            node[f.name] = _lookup(data, f.metadata["same_as"])
    for f, node in fields:
        if f.metadata.get("path") and f.name in node:
            node[f.name] = _absolute(node[f.name], cwd)
    return data


def load(
    root: type,
    env: str = "local",
    conf_files: Sequence[str | os.PathLike[str]] = (),
    overrides: Sequence[str] = (),
    *,
    now: dt.datetime | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> Any:
    """Merge base + ``env`` overlay + ``conf_files`` + ``overrides``, resolve the derived values
    (``now`` defaults to the clock, read once; ``cwd`` to the working directory) and check them
    against ``root`` (a :class:`RootConfig` with the sections as fields)."""
    if env not in ENVIRONMENTS:
        raise ConfigError(f"env: must be one of {list(ENVIRONMENTS)}, got {env!r}")
    data = _merge(_packaged_yaml("base"), _packaged_yaml(env))
    for path in conf_files:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"--conf-file {str(p)!r}: no such file")
        data = _merge(data, _read_yaml(p.read_text(encoding="utf-8"), str(p)))
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {k!r} is not a section")
        node[keys[-1]] = value
    data["env"] = env
    today = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).date()
    return _build(root, _resolve(root, data, today, Path(cwd or os.getcwd())))


def add_config_arguments(parser: argparse.ArgumentParser, *, action: bool = False) -> argparse.ArgumentParser:
    """The options every job takes: ``--env``, ``--conf-file`` and ``--set``.

    ``action=True`` adds them to a sub-command's parser too (``pinpipe index promote V --set ...``):
    one rule for every command, the options go before or after the action, and
    :func:`config_arguments` joins both."""
    after = "_after" if action else ""
    default = argparse.SUPPRESS if action else None
    parser.add_argument(
        "--env",
        dest=f"env{after}",
        default=default or os.environ.get("PINPIPE_ENV", "local"),
        choices=ENVIRONMENTS,
        help="environment overlay conf/<env>.yaml (default: $PINPIPE_ENV or local)",
    )
    parser.add_argument(
        "--conf-file",
        dest=f"conf_file{after}",
        action="append",
        default=default or [],
        metavar="YAML",
        help="extra YAML overlay; repeatable, later files win",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=default or [],
        dest=f"overrides{after}",
        metavar="KEY=VALUE",
        help="override one key, e.g. --set simulate.days=3; repeatable",
    )
    return parser


def config_arguments(args: argparse.Namespace) -> tuple[str, list[str], list[str]]:
    """(env, conf files, overrides) given on the command line, before and after its action."""
    return (
        getattr(args, "env_after", args.env),
        [*args.conf_file, *getattr(args, "conf_file_after", [])],
        [*args.overrides, *getattr(args, "overrides_after", [])],
    )
