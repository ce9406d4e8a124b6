"""Every job module has the one shape of ``jobs/__init__.py``: ``read``, a pure ``transform``
(plain keyword values: no session, no config sections, no lake or paths), ``write``, a short
``run`` and a ``main`` through ``runtime.entry.run_job``."""

import ast
import dataclasses
import importlib
import inspect
import typing

import pytest
from pyspark.sql import SparkSession

from jobs.config import config_class
from jobs.table import JOBS
from runtime.lake import Lake

STAGE_JOBS = [job.name for job in JOBS if job.stage]
# The jobs' and the runtime's config sections: a transform takes plain values, never a whole
# section (a model's or a UDF's own settings, such as the captioner's, are plain values).
JOB_SECTIONS = ("jobs.", "runtime.")
CONFIG_TYPES = {
    f.type for f in dataclasses.fields(config_class()) if getattr(f.type, "__module__", "").startswith(JOB_SECTIONS)
} | {config_class()}
FORBIDDEN_NAMES = {"spark", "cfg", "config", "lake", "path", "root"}


def _types(annotation) -> set:
    """The classes an annotation names, through Optional/Union/list/dict/Callable."""
    found = {annotation} if inspect.isclass(annotation) else set()
    for arg in typing.get_args(annotation):
        found |= _types(arg)
    return found


@pytest.mark.parametrize("name", STAGE_JOBS)
def test_job_has_the_shape(name):
    job = importlib.import_module(next(j.module for j in JOBS if j.name == name))
    for part in ("read", "transform", "write", "run", "main"):
        assert callable(getattr(job, part, None)), f"jobs.{name} has no {part}()"

    transform = inspect.signature(job.transform)
    params = list(transform.parameters.values())
    assert params[0].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD  # the inputs
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params[1:]), "values are keyword-only"
    hints = typing.get_type_hints(job.transform)
    for p in params:
        assert p.name not in FORBIDDEN_NAMES, f"jobs.{name}.transform takes {p.name!r}"
        named = _types(hints.get(p.name))
        assert not named & ({SparkSession, Lake} | CONFIG_TYPES), f"jobs.{name}.transform({p.name}: {named})"

    source = inspect.getsource(job.run)
    statements = [n for n in ast.walk(ast.parse(source).body[0]) if isinstance(n, ast.stmt)][1:]
    assert len(statements) <= 8, f"jobs.{name}.run has {len(statements)} statements"
    assert len(source.strip().splitlines()) <= 20  # formatted: one keyword value a line
    assert not any(isinstance(n, (ast.For, ast.While, ast.With, ast.Try)) for n in statements), "run only wires"
    assert "run_job(" in inspect.getsource(job.main)
