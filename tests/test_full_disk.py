"""A full disk, for real: a 512 KiB tmpfs mounted for the test (root only; skipped, and reported
as skipped, where mounting is not allowed). Whatever fails for lack of space leaves nothing that a
reader takes for a version or a pointer, no temporary files, and one line that says what to do."""

from __future__ import annotations

import errno
import subprocess

import pytest

from models.artifacts.registry import Registry
from runtime.errors import explain

SIZE = 512 * 1024


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def fill(folder) -> None:
    """Fill the disk of ``folder`` to the last byte."""
    with (folder / "ballast").open("wb", buffering=0) as f, pytest.raises(OSError) as full:
        while True:
            f.write(b"\0" * 4096)
    assert full.value.errno == errno.ENOSPC


def test_a_publish_that_runs_out_of_space_leaves_no_version_and_says_so(small_disk):
    registry = Registry(small_disk / "artifacts")
    first = registry.publish("m", lambda d: (d / "w.bin").write_bytes(b"1" * 1000) and None)

    def too_big(folder):
        (folder / "w.bin").write_bytes(b"2" * (2 * SIZE))

    with pytest.raises(OSError) as full:
        registry.publish("m", too_big)
    assert full.value.errno == errno.ENOSPC
    assert registry.versions("m") == [first]  # nothing half-published
    assert [p.name for p in (small_disk / "artifacts" / "m").iterdir() if p.name != ".claims"] == [first]
    assert [p.name for p in (small_disk / "artifacts" / "m" / ".claims").iterdir()] == [first]  # its claim released
    line = explain(full.value)
    assert "No space left on device" in line and "the disk is full: free space where the lake" in line
    second = registry.publish("m", lambda d: (d / "w.bin").write_bytes(b"3" * 1000) and None)
    assert second == "v0002" and registry.versions("m") == [first, second]  # space again: publishing works


def test_pointers_and_the_gate_log_on_a_full_disk_keep_what_they_held(small_disk):
    registry = Registry(small_disk / "artifacts")
    v1 = registry.publish("m", lambda d: (d / "w.bin").write_bytes(b"1") and None)
    v2 = registry.publish("m", lambda d: (d / "w.bin").write_bytes(b"2") and None)
    registry.promote("m", v1)
    registry.record_gate("m", {"candidate_version": v1, "passed": True})
    family = small_disk / "artifacts" / "m"
    before = sorted(p.name for p in family.iterdir())
    fill(small_disk)
    with pytest.raises(OSError):
        registry.promote("m", v2)
    assert registry.current("m") == v1 and registry.promotions("m") == [v1]
    assert [p.name for p in (family / "promotions").iterdir()] == ["p000001.json"]  # no record cut short
    assert sorted(p.name for p in family.iterdir()) == before  # no temporary pointer files left
    with pytest.raises(OSError):
        registry.record_gate("m", {"candidate_version": v2, "passed": True, "reason": "x" * SIZE})
    assert [g["candidate_version"] for g in registry.gates("m")] == [v1]  # nothing cut short was kept
    assert sorted(p.name for p in family.iterdir()) == before
    (small_disk / "ballast").unlink()
    registry.promote("m", v2)
    registry.record_gate("m", {"candidate_version": v2, "passed": True})
    assert registry.current("m") == v2 and [g["candidate_version"] for g in registry.gates("m")] == [v1, v2]
