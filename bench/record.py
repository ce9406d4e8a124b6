"""Benchmark records: every ``bench/`` run writes one JSON record under ``reports/`` and prints
the same table. A record holds the commit, date, machine (cores, CPU, memory, device), library
versions, the inputs, and each figure marked ``measured`` (timed or counted in this run),
``derived`` (arithmetic on measured figures of this run) or ``projection`` (an extrapolation
beyond what ran). ``bench/readme_table.py`` renders the README's measured table from them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
REPORTS = ROOT / "reports"
KINDS = ("measured", "derived", "projection")


@dataclass(frozen=True)
class Figure:
    name: str
    value: float | str
    unit: str = ""
    kind: str = "measured"
    headline: bool = False  # shown in the README table

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")

    def text(self) -> str:
        value = f"{self.value:,.4g}" if isinstance(self.value, float) else str(self.value)
        if isinstance(self.value, float) and abs(self.value) >= 1000:
            value = f"{self.value:,.0f}"
        mark = "" if self.kind == "measured" else f" ({self.kind})"
        return f"{self.name} {value}{' ' + self.unit if self.unit else ''}{mark}"


@dataclass
class Record:
    name: str  # file name under reports/, e.g. "score"
    title: str  # what was measured, one line
    command: str  # how to reproduce it
    figures: list[Figure]
    inputs: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    commit: str = ""
    date: str = ""

    def table(self) -> str:
        width = max(len(f.name) for f in self.figures)
        lines = [f"{self.title}", f"  {self.command}"]
        lines += [f"  {f.name:<{width}}  {f.text()[len(f.name) + 1 :]:>24}  {f.kind}" for f in self.figures]
        return "\n".join(lines)


def git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("+uncommitted" if dirty.stdout.strip() else "")


COMMIT_AT_START = git_commit()  # a bench imports this module first: the code it runs is this commit's


def record_commit() -> str:
    """The commit a bench ran (the one at its start); if HEAD moved while it ran, that is said too."""
    now = git_commit()
    return COMMIT_AT_START if now == COMMIT_AT_START else f"{COMMIT_AT_START} (HEAD when written: {now})"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    info: dict[str, Any] = {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    with contextlib.suppress(ValueError, OSError):
        info["memory_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    for package in ("torch", "pyspark", "transformers", "delta-spark", "faiss-cpu"):
        info[package] = _version(package)
    try:
        import torch

        info["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    except ImportError:
        info["device"] = "cpu"
    return info


def write_record(record: Record, out_dir: Path = REPORTS) -> Path:
    """Fill in commit (the one the bench started at), date and machine (unless given), write
    ``<out_dir>/<name>.json``, print the table."""
    record.commit = record.commit or record_commit()
    record.date = record.date or dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    record.machine = record.machine or machine()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{record.name}.json"
    path.write_text(json.dumps(asdict(record), indent=2, default=str) + "\n")
    print(record.table())
    print(f"record: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return path


def load_record(path: Path) -> Record:
    raw = json.loads(path.read_text())
    raw["figures"] = [Figure(**f) for f in raw["figures"]]
    return Record(**raw)
