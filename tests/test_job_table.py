"""The job table (``jobs/table.py``) is the only place a job is registered: a row added there is
a command, a config section, a nightly stage with its dated settings and schedule, and a DAG
task, with no other edit; nothing else names jobs."""

import ast
import dataclasses
import datetime as dt
import importlib
import pathlib
import re

import pytest

from jobs import cli, nightly, table
from jobs.config import config_class, load_config

ROOT = pathlib.Path(__file__).resolve().parent.parent
ECHO = table.Job(
    "echo",
    "tests.echo_job",
    "say a word",
    "echo",
    "tests.echo_job:EchoConfig",
    dated=(),
    nightly=True,
    trains=False,
)


@pytest.fixture
def with_echo(monkeypatch):
    """The table with one more row (before serving_corpus), and the config class rebuilt from it."""
    rows = list(table.JOBS)
    at = next(i for i, job in enumerate(rows) if job.name == "serving_corpus")
    monkeypatch.setattr(table, "JOBS", (*rows[:at], ECHO, *rows[at:]))
    config_class.cache_clear()
    yield
    config_class.cache_clear()


def test_a_row_is_a_command_a_section_and_a_nightly_stage(with_echo, capsys):
    assert "echo" in cli.usage() and "say a word" in cli.usage()
    assert cli.main(["echo", "--x"]) == 0
    assert capsys.readouterr().out.strip() == "echo main ['--x']"

    cfg = load_config("local", overrides=["echo.word=bye", "nightly.stages=[echo, serving_corpus]"])
    assert cfg.echo.word == "bye"  # its section, strict like every other
    with pytest.raises(ValueError, match=r"echo\.wrod"):
        load_config("local", overrides=["echo.wrod=x"])

    stages = table.nightly_stages()
    assert stages.index("echo") == stages.index("serving_corpus") - 1
    assert "echo" in table.cluster_stages()  # and so a task of the Airflow DAG
    assert nightly.stage_runner("echo")(None, cfg).line() == "echo: bye"


def test_without_the_row_there_is_no_such_command_section_or_stage(capsys):
    assert cli.main(["echo"]) == 2 and "unknown command 'echo'" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['echo'\]"):
        load_config("local", overrides=["echo.word=x"])
    with pytest.raises(ValueError, match="unknown stages"):
        load_config("local", overrides=["nightly.stages=[echo]"])


def test_the_nightly_dates_exactly_the_settings_the_table_names():
    cfg = load_config("local", overrides=["nightly.date=2026-01-01"])
    day = dt.date(2027, 3, 4)
    moved = nightly.dated(cfg, day)
    changed = {
        f"{section.name}.{f.name}"
        for section in dataclasses.fields(cfg)
        if dataclasses.is_dataclass(getattr(cfg, section.name))
        for f in dataclasses.fields(getattr(cfg, section.name))
        if getattr(getattr(moved, section.name), f.name) != getattr(getattr(cfg, section.name), f.name)
    }
    named = {f"{job.section}.{name}" for job in table.JOBS for name in (*job.dated, *job.nightly_fixed)}
    assert changed == named - {"simulate.days"} | ({"simulate.days"} if cfg.simulate.days != 1 else set())
    assert moved.scorer.end_date == day and moved.simulate.start_date == day and moved.simulate.days == 1


def test_every_section_has_one_owner_and_every_section_a_job_reads_exists():
    owners = [job.section for job in table.JOBS if job.settings]
    assert len(owners) == len(set(owners)), "a section is owned by one row"
    sections = table.sections()
    assert {job.section for job in table.JOBS if job.section} <= set(sections)
    assert {f.name for f in dataclasses.fields(config_class())} == {"env", *sections}
    for job in table.JOBS:
        assert callable(importlib.import_module(job.module).main), job.name
        if job.trains:
            assert hasattr(getattr(load_config("local"), job.section), "family"), job.name


def _string_constants(path: pathlib.Path) -> set[str]:
    return {n.value for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Constant)}


def test_runtime_names_no_job():
    names = {job.name for job in table.JOBS if "_" in job.name or job.name in ("simulate", "ingest", "nightly")}
    for path in (ROOT / "runtime").glob("*.py"):
        found = names & _string_constants(path)
        assert not found, f"{path.name} names jobs {sorted(found)}"


def _imported(path: pathlib.Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found


def test_no_job_imports_another_job():
    modules = {job.module for job in table.JOBS if job.module.startswith("jobs.")}
    # pipelines of jobs by design: the demo is the nightly at demo sizes, the nightly writes its report
    pipelines = {("jobs.demo", "jobs.nightly"), ("jobs.nightly", "jobs.nightly_report")}
    for module in modules:
        path = ROOT / (module.replace(".", "/") + ".py")
        for other in (_imported(path) & modules) - {module}:
            assert (module, other) in pipelines, f"{module} imports the job {other}"


def test_the_readme_command_table_lists_the_job_table():
    readme = (ROOT / "README.md").read_text()
    table_text = readme.split("## Jobs and tables", 1)[1].split("\n\n", 2)[1]
    listed = re.findall(r"^\| `pinpipe (\w+)", table_text, flags=re.M)
    assert sorted(listed) == sorted(job.name for job in table.JOBS)
