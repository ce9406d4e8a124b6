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

from runtime import config
from runtime.lake import Lake

STAGE_JOBS = [
    "simulate",
    "ingest",
    "pin_features",
    "train_teacher",
    "score_impressions",
    "distill_corpus",
    "student_features",
    "train_student",
    "train_two_tower",
    "serving_corpus",
    "embed_pins",
    "build_index",
]
CONFIG_TYPES = {
    obj
    for obj in vars(config).values()
    if inspect.isclass(obj) and dataclasses.is_dataclass(obj) and obj.__module__ == config.__name__
}
FORBIDDEN_NAMES = {"spark", "cfg", "config", "lake", "path", "root"}


def test_every_job_module_is_listed():
    import pkgutil

    import jobs

    found = {m.name for m in pkgutil.iter_modules(jobs.__path__)}
    # pipelines of jobs; lake upkeep; serving and index versions: not data stages
    not_stages = {"demo", "nightly", "nightly_report", "maintain", "retrieve", "index_admin", "rollback"}
    assert found == set(STAGE_JOBS) | not_stages


def _types(annotation) -> set:
    """The classes an annotation names, through Optional/Union/list/dict/Callable."""
    found = {annotation} if inspect.isclass(annotation) else set()
    for arg in typing.get_args(annotation):
        found |= _types(arg)
    return found


@pytest.mark.parametrize("name", STAGE_JOBS)
def test_job_has_the_shape(name):
    job = importlib.import_module(f"jobs.{name}")
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
