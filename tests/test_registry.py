import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from models.artifacts.registry import Registry, RegistryError, content_key


def writer(text):
    def build(folder):
        (folder / "weights.bin").write_text(text)
        (folder / "sub").mkdir()
        (folder / "sub" / "config.json").write_text(json.dumps({"t": text}))

    return build


def test_publish_versions_manifest_and_keep(tmp_path):
    reg = Registry(tmp_path, keep=3)
    versions = [
        reg.publish(
            "teacher",
            writer(f"w{i}"),
            metrics={"kappa": i / 10},
            config={"lr": 1e-4},
            inputs={"human_labels": f"delta@{i}"},
        )
        for i in range(4)
    ]
    assert versions == ["v0001", "v0002", "v0003", "v0004"]
    assert reg.versions("teacher") == ["v0002", "v0003", "v0004"]  # oldest pruned
    m = reg.manifest("teacher", "v0004")
    assert m["metrics"] == {"kappa": 0.3} and m["inputs"] == {"human_labels": "delta@3"}
    assert set(m["files"]) == {"weights.bin", "sub/config.json"}
    reg.verify("teacher", "v0004")


def test_promote_rollback_and_pruning_spares_current(tmp_path):
    reg = Registry(tmp_path, keep=2)
    reg.publish("two_tower", writer("a"))
    reg.promote("two_tower", "v0001")
    reg.publish("two_tower", writer("b"))
    reg.publish("two_tower", writer("c"))
    assert reg.versions("two_tower") == ["v0001", "v0002", "v0003"]  # v0001 kept: it is promoted
    reg.promote("two_tower", "v0002")
    reg.promote("two_tower", "v0003")
    assert reg.rollback("two_tower") == "v0002" and reg.current("two_tower") == "v0002"
    assert reg.rollback("two_tower") == "v0001"
    with pytest.raises(RegistryError, match="no version promoted before v0001"):
        reg.rollback("two_tower")


def test_rollback_returns_to_the_previous_production_never_to_an_unpromoted_version(tmp_path):
    reg = Registry(tmp_path)
    for text in "abc":
        reg.publish("student", writer(text))
    reg.promote("student", "v0001")
    reg.promote("student", "v0003")  # v0002 was published but never production (its gate rejected it)
    assert reg.rollback("student") == "v0001" and reg.promotions("student") == ["v0001"]
    reg.promote("student", "v0003")
    reg.promote("student", "v0001")  # promoted back by hand: the stack remembers the order
    assert reg.rollback("student") == "v0003"


def test_the_candidate_is_spared_by_pruning_and_forgotten_once_promoted(tmp_path):
    reg = Registry(tmp_path, keep=1)
    reg.publish("two_tower", writer("a"))
    reg.promote("two_tower", "v0001")
    reg.publish("two_tower", writer("b"))
    reg.approve("two_tower", "v0002")
    reg.publish("two_tower", writer("c"))
    assert reg.versions("two_tower") == ["v0001", "v0002", "v0003"]  # production and candidate spared
    assert reg.candidate("two_tower") == "v0002"
    reg.promote("two_tower", "v0002")
    assert reg.candidate("two_tower") is None


def test_publishing_with_a_kept_key_returns_that_version_and_builds_nothing(tmp_path):
    reg = Registry(tmp_path)
    key = content_key({"lr": 1e-4}, {"human_labels": 3})
    assert reg.publish("teacher", writer("a"), key=key) == "v0001"
    built = []
    assert reg.publish("teacher", lambda folder: built.append(folder), key=key) == "v0001"
    assert built == [] and reg.versions("teacher") == ["v0001"]
    assert reg.publish("teacher", writer("b"), key=content_key({"lr": 1e-4}, {"human_labels": 4})) == "v0002"
    assert reg.publish("teacher", writer("c")) == "v0003"  # no key: always a new version
    with pytest.raises(RegistryError, match="no version 'v0009'"):
        reg.promote("two_tower", "v0009")


def test_failed_build_leaves_nothing(tmp_path):
    reg = Registry(tmp_path)

    def broken(folder):
        (folder / "half.bin").write_text("x")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        reg.publish("teacher", broken)
    assert reg.versions("teacher") == []
    assert list((tmp_path / "teacher").iterdir()) == []


def test_verify_detects_tampering(tmp_path):
    reg = Registry(tmp_path)
    v = reg.publish("index", writer("shard"))
    (reg.path("index", v) / "weights.bin").write_text("changed")
    with pytest.raises(RegistryError, match="weights.bin is missing or changed"):
        reg.verify("index", v)


def test_a_broken_manifest_is_named(tmp_path):
    reg = Registry(tmp_path)
    version = reg.publish("teacher", writer("w"), metrics={}, config={}, inputs={})
    path = reg.path("teacher", version) / "manifest.json"
    path.write_text('{"files": {"weights.bin": ')  # cut short, as by a full disk
    with pytest.raises(RegistryError, match=rf"cannot read the manifest {path}: Expecting value"):
        reg.manifest("teacher", version)
    path.write_text("[1, 2]")
    with pytest.raises(RegistryError, match=rf"the manifest {path} is not a JSON object"):
        reg.manifest("teacher", version)


def test_wall_clock_figures_stay_out_of_artifact_files():
    from models.artifacts.registry import without_wall_clock

    metrics = {
        "test": {"kappa": 0.5},
        "history": [{"epoch": 1, "seconds": 3.2, "examples_per_s": 90.0}],
        "train_seconds": 4,
    }
    assert without_wall_clock(metrics) == {"test": {"kappa": 0.5}, "history": [{"epoch": 1}]}


def test_rollback_of_a_family_without_production_is_one_line_and_exit_1(tmp_path, capsys):
    from jobs import rollback

    with pytest.raises(SystemExit) as exit_:
        rollback.main(["student", "--set", f"lake.root={tmp_path / 'lake'}"])
    assert exit_.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("pinpipe rollback: error: ") and "'student' has no promoted version to roll back from" in err
    assert len(err.splitlines()) == 1


PUBLISH_AND_HANG = """
import sys, time
from models.artifacts.registry import Registry
def build(folder):
    (folder / "weights.bin").write_text("half")
    print("building", flush=True)
    time.sleep(600)
Registry(sys.argv[1]).publish("student", build)
"""


def publisher_in_build(root: Path) -> subprocess.Popen:
    """A process publishing to ``root`` that stops inside ``build`` (its staging folder written)."""
    cwd = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, "-c", PUBLISH_AND_HANG, str(root)], cwd=cwd, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "building"
    return proc


def test_a_killed_publishers_staging_folder_is_removed_by_the_next_publish_a_live_ones_is_not(tmp_path):
    killed, live = publisher_in_build(tmp_path), publisher_in_build(tmp_path)
    try:
        os.kill(killed.pid, signal.SIGKILL)  # mid-build: no cleanup runs
        killed.wait()
        staging = sorted(p.name for p in (tmp_path / "student").glob(".staging-*"))
        assert len(staging) == 2 and all(name.endswith(f"@{os.uname().nodename}") for name in staging)
        assert Registry(tmp_path).publish("student", writer("whole")) == "v0001"
        left = [p.name for p in (tmp_path / "student").glob(".staging-*")]
        assert left == [f for f in staging if f"-{live.pid}@" in f]  # the live publisher's folder stays
    finally:
        live.kill()
        live.wait()
    assert Registry(tmp_path).versions("student") == ["v0001"]


PUBLISHER = """
import sys, time
from pathlib import Path
from models.artifacts.registry import Registry
root, name, n, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
while not go.exists():
    time.sleep(0.01)
registry = Registry(root, keep=1000)
for i in range(n):
    registry.publish("m", lambda folder: (folder / "weights.bin").write_text(f"{name}-{i}") and None)
"""


def test_concurrent_publishers_never_share_or_lose_a_version_number(tmp_path):
    """Two real processes publishing into one family at the same moment: every publish is a
    version of its own, its manifest naming its folder, nothing left in staging."""
    go, n = tmp_path / "go", 150
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PUBLISHER, str(tmp_path / "artifacts"), name, str(n), str(go)],
            cwd=Path(__file__).resolve().parents[1],
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    time.sleep(3)  # both started and waiting
    go.write_text("go")
    for proc in procs:
        assert proc.wait(timeout=120) == 0, proc.stderr.read()
    registry = Registry(tmp_path / "artifacts", keep=1000)
    versions = registry.versions("m")
    assert versions == [f"v{i:04d}" for i in range(1, 2 * n + 1)]
    assert all(registry.manifest("m", v)["version"] == v for v in versions)
    held = sorted((registry.path("m", v) / "weights.bin").read_text() for v in versions)
    assert held == sorted(f"{name}-{i}" for name in ("a", "b") for i in range(n))  # none lost
    assert sorted(p.name for p in (tmp_path / "artifacts" / "m").iterdir()) == versions  # no staging left
