"""The README's measured table, rendered from the records under ``reports/`` (``bench/record.py``).

    .venv/bin/python bench/readme_table.py           # rewrite the table in README.md
    .venv/bin/python bench/readme_table.py --check   # exit 1 if README.md and the records disagree

The table sits between the markers ``<!-- measured:start -->`` and ``<!-- measured:end -->``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.record import REPORTS, ROOT, Record, load_record  # noqa: E402

START, END = "<!-- measured:start -->", "<!-- measured:end -->"


def records(folder: Path = REPORTS) -> list[Record]:
    return [load_record(p) for p in sorted(folder.rglob("*.json"))]


def _machine(record: Record) -> str:
    m = record.machine
    device = m.get("device", "cpu")
    return f"{m.get('cores', '?')} cores" + ("" if device == "cpu" else f", {device}")


def render(found: list[Record]) -> str:
    lines = [START, "| what | command | machine, commit | result |", "| --- | --- | --- | --- |"]
    for r in found:
        headline = [f for f in r.figures if f.headline] or r.figures
        result = "; ".join(f.text() for f in headline).replace("|", "\\|")
        lines.append(f"| {r.title} | `{r.command.strip()}` | {_machine(r)}, {r.commit[:7]} | {result} |")
    lines.append(END)
    return "\n".join(lines)


def replace_table(readme: str, table: str) -> str:
    if START not in readme or END not in readme:
        raise ValueError(f"README has no {START} ... {END} block")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return head + table + tail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    args = parser.parse_args(argv)
    readme = args.readme.read_text()
    wanted = replace_table(readme, render(records()))
    if args.check:
        if wanted != readme:
            print("README.md's measured table differs from reports/*.json: run bench/readme_table.py", file=sys.stderr)
            return 1
        return 0
    args.readme.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
