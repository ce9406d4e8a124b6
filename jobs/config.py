"""The pipeline's configuration: one section per settings class the job table names (each class
lives beside its owner: a job, a model family, the runtime), assembled into one typed root and
loaded through ``runtime.config``'s strict loader.

    cfg = load_config("local", overrides=["simulate.days=3"])
    cfg.simulate.days  # 3

Jobs annotate it as :data:`PinpipeConfig`; ``run_job`` is ``runtime.entry.run_job`` with this
loader.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import functools
import importlib
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from jobs.table import sections
from runtime import entry
from runtime.config import RootConfig, config_arguments, load, setting

# The assembled class is built at run time from the table; for annotations it is a RootConfig
# whose sections are attributes.
PinpipeConfig = RootConfig
R = TypeVar("R", bound=entry.Report)


def _settings_class(path: str) -> type:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


@functools.cache
def config_class() -> type:
    """The root configuration class: ``env`` and one field per section of the job table."""
    fields = [
        (name, _settings_class(path), setting(f"The {name!r} section ({path}).")) for name, path in sections().items()
    ]
    return dataclasses.make_dataclass("PinpipeConfig", fields, bases=(RootConfig,), frozen=True)


def load_config(
    env: str = "local",
    conf_files: Sequence[str | os.PathLike[str]] = (),
    overrides: Sequence[str] = (),
    *,
    now: dt.datetime | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> Any:
    """The pipeline's configuration (``runtime.config.load`` with :func:`config_class`)."""
    return load(config_class(), env, conf_files, overrides, now=now, cwd=cwd)


def config_from_args(args: argparse.Namespace) -> Any:
    return load_config(*config_arguments(args))


def run_job(prog: str, doc: str | None, run: Callable[..., R], argv: Sequence[str] | None) -> R:
    """``main`` of a job (``runtime.entry.run_job``) with the pipeline's configuration; what it
    reports goes to MLflow too when ``tracking.mlflow_uri`` is set (``jobs.tracking``)."""
    from jobs.tracking import track

    def run_and_track(spark: Any, cfg: Any) -> R:
        report = run(spark, cfg)
        track(cfg, prog.removeprefix("pinpipe "), report)
        return report

    return entry.run_job(prog, doc, run_and_track, argv, config_from_args)
