"""Compare two lakes written by the same pipeline (e.g. ``pinpipe demo`` before and after a
refactor): every Delta table's rows (pipeline_runs' run id and times set aside and, where rows
differ, each table's wall-clock timestamp columns), and every artifact file (bytes; JSON key by
key; two-tower weights tensor by tensor, under current tensor names).

    .venv/bin/python bench/compare_lakes.py /tmp/lake-before /tmp/lake-after

Prints one line per table and per artifact file; not a benchmark (it writes no record).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyspark.sql import DataFrame  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402
from pyspark.sql.types import MapType, TimestampType  # noqa: E402

from jobs.config import load_config  # noqa: E402
from runtime.session import spark_session  # noqa: E402

RUN_COLUMNS = {"pipeline_runs": ["run_id", "started_at", "ended_at", "seconds"]}


def comparable(frame: DataFrame, drop: list[str]) -> DataFrame:
    """``frame`` without ``drop``, its map columns as sorted entry arrays (set operations refuse maps)."""
    frame = frame.drop(*drop)
    for f in frame.schema.fields:
        if isinstance(f.dataType, MapType):
            frame = frame.withColumn(f.name, F.array_sort(F.map_entries(f.name)))
    return frame


def differing(a: DataFrame, b: DataFrame) -> tuple[int, int]:
    return a.exceptAll(b).count(), b.exceptAll(a).count()


def compare_table(spark, before: Path, after: Path, name: str) -> None:
    drop = RUN_COLUMNS.get(name, [])
    a = comparable(spark.read.format("delta").load(str(before / "tables" / name)), drop)
    b = comparable(spark.read.format("delta").load(str(after / "tables" / name)), drop)
    only = differing(a, b)
    schema = "equal" if a.schema == b.schema else "DIFFERS"
    print(f"table {name:<20} rows {a.count():>7,} vs {b.count():>7,}; schema {schema}; rows only before/after {only}")
    if any(only):
        clock = [f.name for f in a.schema.fields if isinstance(f.dataType, TimestampType)]
        a, b = a.drop(*clock), b.drop(*clock)
        print(f"    without its wall-clock columns {clock}: rows only before/after {differing(a, b)}")
        for side, rows in (("before", a.exceptAll(b)), ("after", b.exceptAll(a))):
            for row in rows.limit(2).collect():
                print(f"      {side}: {str(row)[:300]}")


def json_of(data: bytes) -> Any:
    try:
        return json.loads(data)
    except json.JSONDecodeError:  # JSON lines
        return [json.loads(line) for line in data.decode().splitlines() if line.strip()]


def json_differences(path: str, u: Any, v: Any) -> list[tuple[str, str, str]]:
    if isinstance(u, dict) and isinstance(v, dict):
        return [
            d for k in sorted(set(u) | set(v)) for d in json_differences(f"{path}.{k}", u.get(k, "-"), v.get(k, "-"))
        ]
    if isinstance(u, list) and isinstance(v, list) and len(u) == len(v):
        return [d for i, (s, t) in enumerate(zip(u, v, strict=True)) for d in json_differences(f"{path}[{i}]", s, t)]
    same = u == v or (u != u and v != v)  # NaN equals NaN here
    return [] if same else [(path, str(u)[:70], str(v)[:70])]


def compare_weights(a: Path, b: Path) -> str:
    import torch
    from safetensors.torch import load_file

    from models.retrieval.two_tower import upgrade_state

    sa, sb = upgrade_state(load_file(str(a))), load_file(str(b))
    same = sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    renamed = len(set(load_file(str(a))) - set(sb))
    return f"{len(sa)} tensors under current names {'IDENTICAL' if same else 'DIFFER'} ({renamed} names upgraded)"


def compare_file(rel: str, a: Path, b: Path) -> None:
    x, y = a.read_bytes(), b.read_bytes()
    if x == y:
        print(f"artifact {rel}: identical bytes")
    elif rel.endswith((".json", ".jsonl")):
        found = json_differences("", json_of(x), json_of(y))
        print(f"artifact {rel}: JSON differs at {len(found)} keys")
        for path, u, v in found:
            print(f"    {path}: {u} -> {v}")
    elif rel.endswith(".safetensors"):
        print(f"artifact {rel}: bytes differ; {compare_weights(a, b)}")
    else:
        print(f"artifact {rel}: BYTES DIFFER ({len(x)} vs {len(y)} bytes)")


def files(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in root.rglob("*") if p.is_file()}


def main(before: Path, after: Path) -> None:
    with spark_session("compare_lakes", load_config("local").spark, quiet=True) as spark:
        tables = sorted(p.name for p in (before / "tables").iterdir())
        print(f"tables only before/after: {set(tables) ^ {p.name for p in (after / 'tables').iterdir()} or 'none'}")
        for name in tables:
            compare_table(spark, before, after, name)
    fa, fb = files(before / "artifacts"), files(after / "artifacts")
    print(f"artifact files only before: {sorted(set(fa) - set(fb))}, only after: {sorted(set(fb) - set(fa))}")
    for rel in sorted(set(fa) & set(fb)):
        compare_file(rel, fa[rel], fb[rel])


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
