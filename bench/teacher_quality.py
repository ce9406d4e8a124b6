"""The default teacher on real labels, through the real jobs: published test-slice metrics.

    .venv/bin/python bench/teacher_quality.py [--set teacher.training.epochs=2 ...]

Ingests the CrowdFlower labels (``ingest.data_root``), builds pin text, and runs ``train_teacher``
with the default configuration (MiniLM + LoRA) into a scratch lake. Whole queries are dealt into
train, validation (epoch, level cuts, int8 plan) and test; the figures recorded are the test
slice's, which chose nothing. Writes ``reports/teacher_quality.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.record import Figure, Record, write_record  # noqa: E402
from jobs import ingest, pin_features, train_teacher  # noqa: E402
from jobs.config import load_config  # noqa: E402
from models.artifacts.registry import Registry  # noqa: E402
from runtime.entry import configure_logging  # noqa: E402
from runtime.lake import Lake  # noqa: E402
from runtime.session import spark_session  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    configure_logging()  # the jobs' progress lines (chunks committed, epochs, ETA)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="pinpipe-bench-teacher-"))
    cfg = load_config(
        "local",
        overrides=[
            f"lake.root={work / 'lake'}",
            "ingest.sources=[crowdflower]",
            "teacher.label_sources=[crowdflower]",
            *args.overrides,
        ],
    )
    with spark_session("pinpipe-bench-teacher", cfg.spark) as spark:
        ingest.run(spark, cfg)
        pin_features.run(spark, cfg)
        started = time.perf_counter()
        report = train_teacher.run(spark, cfg)
        seconds = time.perf_counter() - started
    folder = Registry(Lake.of(cfg.lake).artifacts()).path(cfg.teacher.family, report.version)
    metrics = json.loads((folder / "metrics.json").read_text())
    test, val = metrics["test"], metrics["validation"]
    cut_key = "kappa, share-matched cuts (fit on validation)"
    figures = [
        Figure("test kappa", test["kappa"], headline=True),
        Figure("test kappa, validation cuts", test["extra"][cut_key], headline=True),
        Figure("test accuracy", test["accuracy"]),
        *(Figure(f"test AUROC >={t}", v, headline=t == "4") for t, v in test["auroc_at"].items()),
        Figure("test nDCG@20", test["ndcg_at_20"], headline=True),
        Figure("validation kappa (chose the epoch)", val["kappa"]),
        Figure("best epoch", float(metrics["best_epoch"])),
        Figure("training wall time", seconds, "s"),
    ]
    if "int8" in metrics:
        figures.append(Figure("int8 layers kept fp32", float(len(metrics["int8"]["keep_fp32"]))))
    manifest = Registry(Lake.of(cfg.lake).artifacts()).manifest(cfg.teacher.family, report.version)
    sizes = {k: v for k, v in manifest["inputs"].items() if k.endswith(("_pairs", "_queries")) or k == "quarantined"}
    write_record(
        Record(
            "teacher_quality",
            "Default teacher (MiniLM + LoRA r16) on CrowdFlower, metrics on held-out test queries",
            "bench/teacher_quality.py " + " ".join(sys.argv[1:]),
            figures,
            inputs={
                **sizes,
                "overrides": args.overrides,
                "evaluation": metrics["evaluation"],
                "epochs": cfg.teacher.training.epochs,
            },
        )
    )


if __name__ == "__main__":
    main()
