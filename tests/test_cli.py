import subprocess
import sys
import sysconfig
import zipfile

import pytest

from jobs import cli
from runtime.package import PACKAGES, build_pyfiles_zip


def test_help_lists_commands(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("demo", "simulate", "ingest", "pin_features", "package"):
        assert f"  {command} " in out


def test_unknown_command_exits_2(capsys):
    assert cli.main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_bad_config_is_reported_before_spark_starts(capsys):
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "simulate", "--set", "simulate.dayz=3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "unknown config key(s) ['simulate.dayz']" in proc.stderr
    assert "SparkContext" not in proc.stderr


def pinpipe(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jobs.cli", *args], capture_output=True, text=True, timeout=300, cwd=cwd
    )


def test_a_lake_root_that_is_a_file_is_refused_before_spark_starts(tmp_path):
    root = tmp_path / "lake-is-a-file"
    root.write_text("not a folder")
    for where, what in ((root, "is a file"), (root / "lake", f"is under {root}, which is a file")):
        proc = pinpipe("simulate", "--set", "simulate.days=1", "--set", f"lake.root={where}")
        assert proc.returncode == 1
        assert proc.stderr.splitlines()[0].startswith(f"pinpipe simulate: error: ConfigError: lake.root: {what}")
        assert "SparkContext" not in proc.stderr and "Traceback" not in proc.stderr


def test_a_failure_at_spark_time_is_one_line_with_the_fix_and_exit_1(tmp_path):
    root = tmp_path / "lake"
    (root / "tables").parent.mkdir()
    (root / "tables").write_text("not a folder")  # the lake is a folder; where its tables go is a file
    proc = pinpipe("simulate", "--set", "simulate.days=1", "--set", f"lake.root={root}")
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if " INFO " not in line]
    assert f"Parent path is not a directory: file:{root}/tables" in errors[-2]
    assert "point lake.root (or the path named) at a folder" in errors[-2]
    assert errors[-1] == "pinpipe simulate: run again with --verbose for the full trace"
    assert len(errors) <= 3, errors  # the JVM's own notice of its incubator module, and our two lines
    assert "Traceback" not in proc.stderr and "\tat " not in proc.stderr


def test_bad_master_and_memory_fail_before_spark_and_verbose_shows_the_trace():
    for key, value in (("spark.master", "bogus"), ("spark.driver_memory", "lots")):
        proc = pinpipe("simulate", "--set", f"{key}={value}")
        assert proc.returncode == 1
        assert proc.stderr.splitlines()[0].startswith(f"pinpipe simulate: error: ConfigError: {key}: must be")
        assert "Traceback" not in proc.stderr and "SparkContext" not in proc.stderr
    verbose = pinpipe("simulate", "--verbose", "--set", "spark.master=bogus")
    assert verbose.returncode == 1 and "Traceback" in verbose.stderr and "ConfigError" in verbose.stderr


def test_pyfiles_zip_is_importable_and_carries_the_yaml(tmp_path):
    out = build_pyfiles_zip(tmp_path / "pp.zip")
    names = zipfile.ZipFile(out).namelist()
    assert {n.split("/")[0] for n in names} == set(PACKAGES)
    assert "conf/base.yaml" in names and "jobs/ingest.py" in names
    assert not any("__pycache__" in n for n in names)
    # Only the zip and the third-party packages on the path: ``-S`` skips site-packages' .pth
    # files (the editable install's import hook), so the checkout cannot fill gaps in the zip,
    # wherever the clone lives.
    site_packages = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    code = (
        f"import sys, importlib.util; sys.path[:0] = [{str(out)!r}]; sys.path += {site_packages!r};"
        "assert importlib.util.find_spec('tests') is None, 'the checkout is importable';"
        "import jobs.config as c, jobs.simulate as j, udfs.captioner_settings as u, models.retrieval.towers as t;"
        f"assert all(m.__file__.startswith({str(out)!r}) for m in (c, j, u, t)), c.__file__;"
        "print(c.load_config('cluster').spark.shuffle_partitions)"
    )
    proc = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "200"
    assert build_pyfiles_zip(tmp_path / "again.zip").read_bytes() == out.read_bytes()  # deterministic


def test_every_command_names_a_module_with_main():
    import importlib

    for name, (module, _) in cli.commands().items():
        assert callable(importlib.import_module(module).main), name


def test_help_does_not_import_torch():
    code = "import sys; from jobs import cli; cli.main(['--help']); print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip().endswith("False")


def test_loading_the_config_imports_no_torch_or_faiss():
    """The sections live beside their jobs; loading them must stay cheap (a bad key fails in a
    second, before Spark or a model stack is loaded)."""
    code = (
        "import sys; from jobs.config import load_config; load_config('local');"
        "print(sorted(m for m in ('torch', 'faiss', 'transformers') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_config_options_go_before_or_after_a_commands_action(tmp_path, capsys):
    """One rule for every command: ``--set``/``--env``/``--conf-file`` before the action, after it,
    or both (joined, later ones winning)."""
    from jobs import index_admin

    root = f"lake.root={tmp_path / 'lake'}"
    placements = (
        ["--set", root, "list"],
        ["list", "--set", root],
        ["--set", "lake.root=/elsewhere", "list", "--set", root],
    )
    for argv in placements:
        assert index_admin.main(argv) == 0
        assert capsys.readouterr().out.strip() == (
            f"index two_tower_items: no versions under {tmp_path / 'lake'}/artifacts/indexes/two_tower_items"
        )
    with pytest.raises(SystemExit) as refused:
        index_admin.main(["--set", root, "promote", "v0003", "--set", "index.name=other_items"])
    assert refused.value.code == 1
    assert "no version 'v0003' of 'other_items'" in capsys.readouterr().err


def test_faiss_loading_prints_no_lines_that_look_like_errors():
    code = "from runtime.entry import configure_logging; configure_logging(); import faiss; print(faiss.__version__)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip()
    assert "ModuleNotFoundError" not in proc.stderr and "faiss.loader" not in proc.stderr
