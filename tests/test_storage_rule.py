"""One storage layer: outside ``models/artifacts/storage.py`` no pipeline module renames, replaces,
links or deletes files itself (``os.rename``, ``shutil.rmtree``, ``Path.unlink`` ...). Those are
the operations that differ between a local disk, S3 and HDFS (object stores have no rename); the
storage layer does them the way each store can, so every artifact, pointer, lock and report
works on all three. Code that builds an artifact writes plain files into the local folder the
registry hands it, and the registry stores them."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STORAGE = ROOT / "models" / "artifacts" / "storage.py"
PACKAGES = ("jobs", "udfs", "models", "runtime")
FORBIDDEN_CALLS = {
    ("os", "rename"),
    ("os", "replace"),
    ("os", "link"),
    ("os", "remove"),
    ("os", "unlink"),
    ("os", "rmdir"),
    ("os", "removedirs"),
    ("shutil", "rmtree"),
    ("shutil", "move"),
    ("shutil", "copytree"),
    ("shutil", "copyfile"),
}
FORBIDDEN_METHODS = {"unlink", "rmdir", "rename", "hardlink_to", "symlink_to"}  # pathlib's (str has none)


def offences(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            name = (owner.id if isinstance(owner, ast.Name) else "", node.func.attr)
            if name in FORBIDDEN_CALLS or node.func.attr in FORBIDDEN_METHODS:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {'.'.join(n for n in name if n)}")
    return found


def test_only_the_storage_layer_renames_replaces_links_or_deletes_files():
    modules = [p for package in PACKAGES for p in (ROOT / package).rglob("*.py") if p != STORAGE]
    assert len(modules) > 50
    assert [o for p in sorted(modules) for o in offences(p)] == []
    assert offences(STORAGE)  # the rule sees these calls where they are
