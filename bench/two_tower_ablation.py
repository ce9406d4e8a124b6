"""The two-tower ablation: today's model, + feature crossing, + pre-trained IDs (frozen and
fine-tuned), + both — each over several seeds, per S3-Rec dataset, through the real jobs.

    .venv/bin/python bench/two_tower_ablation.py [--workdir DIR] [--datasets LastFM Beauty] [--seeds 3]
                                                  [--only NAME ...] [--set KEY=VALUE ...]

Every run is ``pinpipe train_two_tower`` on a lake under ``--workdir`` (``ingest`` of the S3-Rec
files first) with the shipped defaults plus the variant's overrides and
``two_tower.training.seed=<seed>``; a pre-trained variant first runs ``pinpipe pretrain_ids``
(``pretrain_ids.settings.seed=<seed>``, the same source) and starts from the version it
published. Test figures (full ranking, the user's sequence masked) are reported as mean ± sd over
the seeds; which variant a dataset *chooses* is decided by the mean validation NDCG@10 alone
(the items that chose the epoch), never by the test items.

Writes ``reports/two_tower_ablation_<dataset>.json`` per dataset.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.record import Figure, Record, write_record  # noqa: E402
from bench.two_tower import PUBLISHED, s3rec_lake_config  # noqa: E402
from jobs import ingest, pretrain_ids, train_two_tower  # noqa: E402
from jobs.config import load_config  # noqa: E402
from jobs.sources.s3rec import s3rec_source  # noqa: E402
from models.artifacts.registry import Registry  # noqa: E402
from runtime.entry import configure_logging  # noqa: E402
from runtime.lake import Lake  # noqa: E402
from runtime.session import spark_session  # noqa: E402

# Each variant names both parts, whatever the shipped defaults are: no crossing / crossing, and
# no pre-trained IDs / the version pre-trained for the run (its seed, the two-tower's source).
PLAIN = [
    "two_tower.model.item_crossing=none",
    "two_tower.model.user_crossing=none",
    "two_tower.pretrained_ids.version=''",
]
CROSSING = ["two_tower.model.item_crossing=dhen", "two_tower.model.user_crossing=dhen"]
FROZEN = ["two_tower.pretrained_ids.version=production", "two_tower.pretrained_ids.mode=frozen"]
FINETUNED = ["two_tower.pretrained_ids.version=production", "two_tower.pretrained_ids.mode=finetune"]
# name -> overrides; a variant that reads pretrain_ids pre-trains first.
VARIANTS: dict[str, list[str]] = {
    "today's model": PLAIN,
    "+ crossing (DHEN, both towers)": PLAIN + CROSSING,
    "+ pre-trained IDs, frozen": PLAIN + FROZEN,
    "+ pre-trained IDs, fine-tuned": PLAIN + FINETUNED,
    "+ crossing + pre-trained IDs, fine-tuned": PLAIN + CROSSING + FINETUNED,
}
METRICS = ("hr@10", "ndcg@10", "coverage@10")


def run_once(spark, work: Path, data_root: str, dataset: str, overrides: list[str], seed: int) -> dict[str, Any]:
    cfg = load_config(
        "local",
        overrides=[
            f"lake.root={work / 'lake'}",
            f"ingest.data_root={data_root}",
            f"two_tower.source={s3rec_source(dataset)}",
            "two_tower.promote=false",
            f"two_tower.training.seed={seed}",
            f"pretrain_ids.settings.seed={seed}",
            *overrides,
        ],
    )
    pretrained = ""
    if cfg.two_tower.pretrained_ids.version:
        report = pretrain_ids.run(spark, cfg)
        print(report.line(), flush=True)
        pretrained = report.version
    report = train_two_tower.run(spark, cfg)
    print(report.line(), flush=True)
    folder = Registry(Lake.of(cfg.lake).artifacts()).path(cfg.two_tower.family, report.version)
    metrics = json.loads((folder / "metrics.json").read_text())
    return {
        "seed": seed,
        "version": report.version,
        "pretrain_ids": pretrained,
        "best_epoch": report.best_epoch,
        "loss": metrics.get("loss"),
        "validation": metrics["validation"],
        "test": report.test,
        "train_seconds": report.train_seconds,
    }


def summary(runs: list[dict[str, Any]], part: str, metric: str) -> tuple[float, float]:
    values = [r[part][metric] for r in runs]
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def figures(dataset: str, variants: dict[str, list[dict[str, Any]]]) -> list[Figure]:
    out = []
    for name, runs in variants.items():
        for metric in METRICS:
            mean, sd = summary(runs, "test", metric)
            out += [Figure(f"{name} test {metric} mean", mean), Figure(f"{name} test {metric} sd", sd)]
        mean, sd = summary(runs, "validation", "ndcg@10")
        out += [
            Figure(f"{name} validation ndcg@10 mean (chooses)", mean),
            Figure(f"{name} validation ndcg@10 sd", sd),
            Figure(f"{name} seeds", float(len(runs))),
            Figure(f"{name} training time mean", statistics.fmean(r["train_seconds"] for r in runs) / 60, "min"),
        ]
    chosen = max(variants, key=lambda name: summary(variants[name], "validation", "ndcg@10")[0])
    hr, hr_sd = summary(variants[chosen], "test", "hr@10")
    ndcg, ndcg_sd = summary(variants[chosen], "test", "ndcg@10")
    return out + [
        Figure(f"{dataset}: chosen by mean validation NDCG@10", chosen),
        Figure(f"{dataset} chosen test HR@10", hr, headline=True),
        Figure(f"{dataset} chosen test HR@10 sd", hr_sd, headline=True),
        Figure(f"{dataset} chosen test NDCG@10", ndcg, headline=True),
        Figure(f"{dataset} chosen test NDCG@10 sd", ndcg_sd, headline=True),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--data-root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--datasets", nargs="+", default=["LastFM", "Beauty"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only", nargs="*", default=None, help="variant names to run (default: all)")
    parser.add_argument("--set", nargs="*", default=[], help="overrides for every run (e.g. a shorter epoch cap)")
    args = parser.parse_args()
    chosen = {name: VARIANTS[name] for name in (args.only or VARIANTS)}
    configure_logging()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="pinpipe-bench-ablation-"))
    base = s3rec_lake_config(work, args.data_root, args.datasets)
    with spark_session("pinpipe-bench-two-tower-ablation", base.spark) as spark:
        ingest.run(spark, base)
        for dataset in args.datasets:
            variants: dict[str, list[dict[str, Any]]] = {}
            for name, overrides in chosen.items():
                variants[name] = [
                    run_once(spark, work, args.data_root, dataset, [*overrides, *args.set], seed)
                    for seed in range(args.seeds)
                ]
            record = Record(
                f"two_tower_ablation_{dataset.lower()}",
                f"Two-tower ablation on S3-Rec {dataset}: test HR/NDCG/coverage@10, mean ± sd over seeds; "
                "chosen by validation",
                "bench/two_tower_ablation.py " + " ".join(sys.argv[1:]),
                figures(dataset, variants),
                inputs={
                    "runs": variants,
                    "variants": chosen,
                    "every_run": args.set,
                    "published_hr10_ndcg10": PUBLISHED[dataset],
                },
            )
            write_record(record)


if __name__ == "__main__":
    main()
