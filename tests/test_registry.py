import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from models.artifacts.records import NumberedRecords
from models.artifacts.registry import PointerMoved, Registry, RegistryError, content_key
from models.artifacts.storage import Storage, StorageError
from tests.store_arg import to_arg


def writer(text):
    def build(folder):
        (folder / "weights.bin").write_text(text)
        (folder / "sub").mkdir()
        (folder / "sub" / "config.json").write_text(json.dumps({"t": text}))

    return build


def test_publish_versions_manifest_and_keep(store):
    reg = Registry(store, keep=3)
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
    assert store.listdir("teacher/.claims") == ["v0002", "v0003", "v0004"]  # its claim with it
    m = reg.manifest("teacher", "v0004")
    assert m["metrics"] == {"kappa": 0.3} and m["inputs"] == {"human_labels": "delta@3"}
    assert set(m["files"]) == {"weights.bin", "sub/config.json"}
    reg.verify("teacher", "v0004")


def test_promote_rollback_and_pruning_spares_current(store):
    reg = Registry(store, keep=2)
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


def test_rollback_returns_to_the_previous_production_never_to_an_unpromoted_version(store):
    reg = Registry(store)
    for text in "abc":
        reg.publish("student", writer(text))
    reg.promote("student", "v0001")
    reg.promote("student", "v0003")  # v0002 was published but never production (its gate rejected it)
    assert reg.rollback("student") == "v0001" and reg.promotions("student") == ["v0001"]
    reg.promote("student", "v0003")
    reg.promote("student", "v0001")  # promoted back by hand: the stack remembers the order
    assert reg.rollback("student") == "v0003"


def overtaken_by(monkeypatch, move) -> None:
    """The next move of any registry finds ``move()`` landed between its read of the promotion
    stack and its write (once)."""
    original = NumberedRecords.append

    def late(self, after, data):
        monkeypatch.setattr(NumberedRecords, "append", original)
        move()
        return original(self, after, data)

    monkeypatch.setattr(NumberedRecords, "append", late)


def promoted_twice(store) -> Registry:
    """Versions v0001-v0003 of ``m``; v0001 then v0002 promoted."""
    reg = Registry(store)
    for text in "abc":
        reg.publish("m", writer(text))
    reg.promote("m", "v0001")
    reg.promote("m", "v0002")
    return reg


def test_a_rollback_overtaken_by_a_promotion_changes_nothing_and_says_so(store, monkeypatch):
    reg, other = promoted_twice(store), Registry(store)
    overtaken_by(monkeypatch, lambda: other.promote("m", "v0003"))
    with pytest.raises(PointerMoved, match="production moved"):
        reg.rollback("m")  # it would have undone v0003, a promotion it never saw
    assert reg.promotions("m") == ["v0001", "v0002", "v0003"]
    assert reg.rollback("m") == "v0002"  # asked again, on the state it now sees


def test_a_promotion_overtaken_by_another_move_is_made_on_top_of_it(store, monkeypatch):
    reg, other = promoted_twice(store), Registry(store)
    overtaken_by(monkeypatch, lambda: other.rollback("m"))
    reg.promote("m", "v0003")
    assert reg.promotions("m") == ["v0001", "v0003"]  # neither move lost
    assert len(store.listdir("m/promotions")) == 4  # one record per move


def test_promotions_made_at_once_are_all_kept(store):
    """Eight promoters, each with its own registry, move production at the same moment: every
    promotion is on the stack (with a pointer replaced whole, the last writer would win)."""
    reg = Registry(store, keep=20)
    versions = [reg.publish("m", writer(str(i))) for i in range(8)]
    start = threading.Barrier(len(versions))

    def promote(version):
        start.wait()
        Registry(store).promote("m", version)

    threads = [threading.Thread(target=promote, args=(v,)) for v in versions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(reg.promotions("m")) == versions


def test_a_lake_with_the_promotion_stack_as_one_object_moves_on_from_it(store):
    reg = Registry(store, keep=2)
    for text in "abc":
        reg.publish("m", writer(text))
    store.put("m/PROMOTIONS", json.dumps(["v0001", "v0002"]).encode())  # as written before the records
    assert reg.current("m") == "v0002"
    reg.promote("m", "v0003")
    assert reg.promotions("m") == ["v0001", "v0002", "v0003"] and reg.rollback("m") == "v0002"


def test_old_promotion_records_are_pruned_the_state_stays(store, monkeypatch):
    monkeypatch.setattr("models.artifacts.registry.KEEP_PROMOTION_RECORDS", 3)
    reg = Registry(store, keep=2)
    reg.publish("m", writer("a"))
    reg.publish("m", writer("b"))
    for _ in range(3):
        reg.promote("m", "v0001")
        reg.promote("m", "v0002")
        reg.rollback("m")
    assert len(store.listdir("m/promotions")) == 7  # promoting the version on top moves nothing
    reg.publish("m", writer("c"))  # publishing prunes
    assert store.listdir("m/promotions") == ["p000005.json", "p000006.json", "p000007.json"]
    assert reg.promotions("m") == ["v0001"] and reg.current("m") == "v0001"
    reg.promote("m", "v0003")
    assert store.listdir("m/promotions")[-1] == "p000008.json"


def test_the_candidate_is_spared_by_pruning_and_forgotten_once_promoted(store):
    reg = Registry(store, keep=1)
    reg.publish("two_tower", writer("a"))
    reg.promote("two_tower", "v0001")
    reg.publish("two_tower", writer("b"))
    reg.approve("two_tower", "v0002")
    reg.publish("two_tower", writer("c"))
    assert reg.versions("two_tower") == ["v0001", "v0002", "v0003"]  # production and candidate spared
    assert reg.candidate("two_tower") == "v0002"
    reg.promote("two_tower", "v0002")
    assert reg.candidate("two_tower") is None


def test_publishing_with_a_kept_key_returns_that_version_and_builds_nothing(store):
    reg = Registry(store)
    key = content_key({"lr": 1e-4}, {"human_labels": 3})
    assert reg.publish("teacher", writer("a"), key=key) == "v0001"
    built = []
    assert reg.publish("teacher", lambda folder: built.append(folder), key=key) == "v0001"
    assert built == [] and reg.versions("teacher") == ["v0001"]
    assert reg.publish("teacher", writer("b"), key=content_key({"lr": 1e-4}, {"human_labels": 4})) == "v0002"
    assert reg.publish("teacher", writer("c")) == "v0003"  # no key: always a new version
    with pytest.raises(RegistryError, match="no version 'v0009'"):
        reg.promote("two_tower", "v0009")


def test_failed_build_leaves_nothing(store):
    reg = Registry(store)

    def broken(folder):
        (folder / "half.bin").write_text("x")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        reg.publish("teacher", broken)
    assert reg.versions("teacher") == []
    assert store.files("teacher") == []  # no files, no claim


def test_verify_detects_tampering(store):
    reg = Registry(store)
    v = reg.publish("index", writer("shard"))
    reg.verify("index", v)
    store.put(f"index/{v}/weights.bin", b"changed")
    with pytest.raises(RegistryError, match="weights.bin is missing or changed"):
        reg.verify("index", v)


def test_a_broken_manifest_is_named(store):
    reg = Registry(store)
    version = reg.publish("teacher", writer("w"), metrics={}, config={}, inputs={})
    path = store.uri(f"teacher/{version}/manifest.json")
    store.put(f"teacher/{version}/manifest.json", b'{"files": {"weights.bin": ')  # cut short
    with pytest.raises(RegistryError, match=rf"cannot read the manifest {path}: Expecting value"):
        reg.manifest("teacher", version)
    store.put(f"teacher/{version}/manifest.json", b"[1, 2]")
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


OPEN_REGISTRY = """
import json, sys, time
from pathlib import Path
from models.artifacts.registry import Registry
from tests.store_arg import from_arg
storage = from_arg(sys.argv[1])
"""

PUBLISH_AND_HANG = (
    OPEN_REGISTRY
    + """
def build(folder):
    (folder / "weights.bin").write_text("half")
    print("building", flush=True)
    time.sleep(600)
Registry(storage).publish("student", build)
"""
)


def process_args(store) -> list[str]:
    return [to_arg(store)]


def publisher_in_build(store) -> subprocess.Popen:
    """A process publishing into ``store`` that stops inside ``build`` (its version claimed)."""
    cwd = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, "-c", PUBLISH_AND_HANG, *process_args(store)], cwd=cwd, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "building"
    return proc


def test_a_killed_publishers_leftovers_are_removed_by_the_next_publish_a_live_ones_are_not(store):
    killed, live = publisher_in_build(store), publisher_in_build(store)
    try:
        os.kill(killed.pid, signal.SIGKILL)  # mid-build: no cleanup runs
        killed.wait()
        claims = {v: json.loads(store.read_text(f"student/.claims/{v}")) for v in store.listdir("student/.claims")}
        assert sorted(claims) == ["v0001", "v0002"] and {c["pid"] for c in claims.values()} == {killed.pid, live.pid}
        killed_version = next(v for v, c in claims.items() if c["pid"] == killed.pid)
        live_version = next(v for v, c in claims.items() if c["pid"] == live.pid)
        registry = Registry(store)
        assert registry.versions("student") == []  # claimed, never committed: no version for readers
        # the killed publisher's files and claim are deleted; its number is free again, the live one's is not
        whole = registry.publish("student", writer("whole"))
        assert whole == (killed_version if killed_version > live_version else "v0003")
        assert not store.exists(f"student/{killed_version}/weights.bin") or whole == killed_version
        assert store.listdir("student/.claims") == sorted({live_version, whole})
        assert "abandoned" not in json.loads(store.read_text(f"student/.claims/{live_version}"))
        assert Registry(store).remove_abandoned("student") == []
        # a claim older than abandon_after_s counts as abandoned even when its publisher is elsewhere
        # (perhaps alive): its files go, its claim stays as a tombstone, its number is never given again
        assert Registry(store, abandon_after_s=0).remove_abandoned("student") == [live_version]
        assert json.loads(store.read_text(f"student/.claims/{live_version}"))["abandoned"]
        nxt = Registry(store).publish("student", writer("next"))
        assert nxt == f"v{max(int(whole[1:]), int(live_version[1:])) + 1:04d}"
    finally:
        live.kill()
        live.wait()
    assert Registry(store).versions("student") == [whole, nxt]
    assert [f for f in store.files("student") if not f.startswith(".claims/")] == [
        f"{v}/{name}" for v in (whole, nxt) for name in ("manifest.json", "sub/config.json", "weights.bin")
    ]


PUBLISHER = (
    OPEN_REGISTRY
    + """
name, n, go = sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
while not go.exists():
    time.sleep(0.01)
registry = Registry(storage, keep=1000)
for i in range(n):
    registry.publish("m", lambda folder: (folder / "weights.bin").write_text(f"{name}-{i}") and None)
"""
)


@pytest.mark.slow  # two processes publishing 150 (local) / 25 (S3) versions each: in `make test-slow`
def test_concurrent_publishers_never_share_or_lose_a_version_number(store, tmp_path):
    """Two real processes publishing into one family at the same moment: every publish is a
    version of its own, its manifest naming its folder, no claim left behind."""
    go, n = tmp_path / "go", {"local": 150, "s3": 25}.get(store.scheme, 10)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PUBLISHER, *process_args(store), name, str(n), str(go)],
            cwd=Path(__file__).resolve().parents[1],
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    time.sleep(3)  # both started and waiting
    go.write_text("go")
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read()
    registry = Registry(store, keep=1000)
    versions = registry.versions("m")
    assert versions == [f"v{i:04d}" for i in range(1, 2 * n + 1)]
    assert all(registry.manifest("m", v)["version"] == v for v in versions)
    held = sorted((registry.path("m", v) / "weights.bin").read_text() for v in versions)
    assert held == sorted(f"{name}-{i}" for name in ("a", "b") for i in range(n))  # none lost
    assert store.files("m/.claims") == versions  # one claim per version, none abandoned
    assert [name for name in store.listdir("m") if name != ".claims"] == versions  # nothing else written


PUBLISH_GATE_PROMOTE = (
    OPEN_REGISTRY
    + """
registry = Registry(storage)
def build(folder):
    for i in range(30):
        (folder / f"part-{i:02d}.bin").write_bytes(bytes([i]) * 300_000)
version = registry.publish("index", build, key="same-config-same-inputs")
time.sleep(1.5)  # the gate's evaluation, between the manifest and the pointer
registry.promote("index", version)
print(version, flush=True)
"""
)


def publish_gate_promote(store, kill_when=None) -> None:
    """The publish -> gate -> promote step as a process of its own; SIGKILLed (its whole process
    group) as soon as ``kill_when()`` holds, else run to the end."""
    proc = subprocess.Popen(
        [sys.executable, "-c", PUBLISH_GATE_PROMOTE, *process_args(store)],
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    if kill_when is None:
        assert proc.wait(timeout=120) == 0, proc.stderr.read()
        return
    deadline = time.monotonic() + 120
    while not kill_when():
        assert proc.poll() is None, f"finished before the kill point: {proc.stderr.read()}"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.slow  # four publisher processes per case, two stores: in `make test-slow`
@pytest.mark.parametrize("kill_at", ["mid-upload", "between manifest and pointer"])
def test_a_publisher_killed_mid_upload_or_before_its_pointer_resumes_to_the_uninterrupted_result(
    store, tmp_path, kill_at
):
    uninterrupted = store.child("uninterrupted")
    publish_gate_promote(uninterrupted)
    killed = store.child("killed")
    when = {
        "mid-upload": lambda: bool(killed.files("index/v0001")) and not killed.exists("index/v0001/manifest.json"),
        "between manifest and pointer": lambda: (
            killed.exists("index/v0001/manifest.json") and not killed.listdir("index/promotions")
        ),
    }[kill_at]
    publish_gate_promote(killed, when)
    registry = Registry(killed)
    if kill_at == "mid-upload":
        assert registry.versions("index") == [] and registry.current("index") is None  # nothing half visible
    else:
        assert registry.versions("index") == ["v0001"] and registry.current("index") is None
    publish_gate_promote(killed)  # resumed: the same step again
    want, got = Registry(uninterrupted), registry
    assert got.versions("index") == want.versions("index") == ["v0001"]  # no duplicate, no gap
    assert got.current("index") == want.current("index") == "v0001"
    assert got.manifest("index", "v0001")["files"] == want.manifest("index", "v0001")["files"]
    got.verify("index", "v0001")
    assert killed.files("index") == uninterrupted.files("index")  # nothing left over


def test_a_stored_version_is_fetched_once_into_the_node_cache_and_verified(s3_server, tmp_path):
    store = s3_server.storage(tmp_path / "cache")
    reg = Registry(store)
    v = reg.publish("student", writer("weights"))
    ref = reg.ref("student", v)
    folder = ref.local()  # what a Spark task does: a local copy, keyed by the files' checksums
    assert folder.is_relative_to(tmp_path / "cache") and (folder / "weights.bin").read_text() == "weights"
    assert reg.path("student", v) == folder  # the driver gets the same copy
    (folder / "weights.bin").write_text("local edit")
    assert ref.local() == folder and (folder / "weights.bin").read_text() == "local edit"  # fetched once, not again
    store.put(f"student/{v}/weights.bin", b"tampered")  # the stored file is not the published one
    other = Registry(Storage(store.root, store.s3, str(tmp_path / "other-node"))).ref("student", v)
    with pytest.raises(StorageError, match=rf"student/{v}/weights.bin is not the file its manifest recorded"):
        other.local()
    assert not any((tmp_path / "other-node").iterdir())  # nothing half-fetched left in its cache
