"""Build the zip that ``spark-submit --py-files`` ships to the driver and executors: the
packages ``jobs``, ``runtime``, ``udfs``, ``models``, ``schemas`` and ``conf`` (with its YAML).

    pinpipe package                   # -> dist/pinpipe.zip
    pinpipe package --out /tmp/pp.zip
"""

from __future__ import annotations

import argparse
import zipfile
from collections.abc import Sequence
from pathlib import Path

from runtime.session import PROJECT_ROOT

PACKAGES = ("jobs", "runtime", "udfs", "models", "schemas", "conf")
SUFFIXES = (".py", ".yaml")


def build_pyfiles_zip(out: Path, root: Path = PROJECT_ROOT) -> Path:
    """Write the packages under ``root`` into ``out`` (deterministic order and timestamps)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    files = sorted(
        p
        for pkg in PACKAGES
        for p in (root / pkg).rglob("*")
        if p.is_file() and p.suffix in SUFFIXES and "__pycache__" not in p.parts
    )
    tmp = out.with_suffix(out.suffix + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in files:
            info = zipfile.ZipInfo(str(path.relative_to(root)), date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes())
    tmp.replace(out)
    return out


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="pinpipe package", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "dist" / "pinpipe.zip")
    args = parser.parse_args(argv)
    out = build_pyfiles_zip(args.out)
    print(out)
    return out


if __name__ == "__main__":
    main()
