import json

import pytest

from models.registry import Registry, RegistryError


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
    reg.promote("two_tower", "v0003")
    assert reg.rollback("two_tower") == "v0002" and reg.current("two_tower") == "v0002"
    assert reg.rollback("two_tower") == "v0001"
    with pytest.raises(RegistryError, match="nothing older"):
        reg.rollback("two_tower")
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
