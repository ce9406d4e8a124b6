"""Throughput of ``retrieve_candidates`` (users/s) against a per-user loop over the same pair.

    .venv/bin/python bench/retrieve_candidates.py [--dataset LastFM] [--k 100] [--workdir DIR]

On a lake under ``--workdir``: ``ingest`` of the S3-Rec dataset, a single-vector and a
multi-interest (capsule, 4 interests) two-tower trained briefly by ``train_two_tower``
(``--epochs``: throughput does not depend on quality), each embedded and indexed by
``embed_pins`` / ``build_index`` and promoted, then every user's top ``--k`` by the job (local
Spark, the machine's cores). The baseline is what a user without the job would write: one
``Retrieval.top_k`` call per user on the driver (the same model, index and results, one user
at a time), timed over ``--baseline-users`` users and compared per user.

Writes ``reports/retrieve_candidates.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.record import Figure, Record, write_record  # noqa: E402
from jobs import build_index, embed_pins, ingest, retrieve, retrieve_candidates, train_two_tower  # noqa: E402
from jobs.config import load_config  # noqa: E402
from jobs.sources.s3rec import s3rec_source  # noqa: E402
from models.retrieval.serving import Retrieval  # noqa: E402
from runtime.entry import configure_logging  # noqa: E402
from runtime.lake import Lake  # noqa: E402
from runtime.session import spark_session  # noqa: E402
from schemas import user_engagements as UE  # noqa: E402

TOWERS = {
    "single": [],
    "multi": ["two_tower.model.user_head=capsules", "two_tower.model.encoder=none", "two_tower.model.user_vectors=4"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="LastFM")
    parser.add_argument("--data-root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--baseline-users", type=int, default=200)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    configure_logging()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="pinpipe-candidates-"))
    figures, inputs = [], {"dataset": args.dataset, "k": args.k, "epochs": args.epochs, "cores": os.cpu_count()}
    for name, extra in TOWERS.items():
        cfg = load_config(
            "local",
            overrides=[
                f"lake.root={work / name / 'lake'}",
                f"ingest.data_root={args.data_root}",
                "ingest.sources=[s3rec]",
                f"ingest.s3rec_datasets=[{args.dataset}]",
                f"two_tower.source={s3rec_source(args.dataset)}",
                f"two_tower.training.epochs={args.epochs}",
                f"retrieve_candidates.k={args.k}",
                *extra,
            ],
        )
        with spark_session("pinpipe-bench-candidates", cfg.spark) as spark:
            ingest.run(spark, cfg)
            train_two_tower.run(spark, cfg)
            embed_pins.run(spark, cfg)
            build_index.run(spark, cfg)
            retrieve_candidates.run(spark, cfg)  # warm: Python workers, JIT, the lake's table
            report = retrieve_candidates.run(spark, cfg)
            print(report.line(), flush=True)
            lake = Lake.of(cfg.lake)
            retrieval = Retrieval.open(lake.artifacts(), cfg.index.name)
            users = [
                r[UE.USER_ID]
                for r in lake.read(spark, "user_engagements")
                .filter(f"source = '{retrieval.model_source}'")
                .select(UE.USER_ID)
                .distinct()
                .orderBy(UE.USER_ID)
                .limit(args.baseline_users)
                .collect()
            ]
            histories = {u: retrieve.user_history(spark, lake, retrieval.model_source, u) for u in users}
        started = time.perf_counter()
        for user in users:
            retrieval.top_k(histories[user], args.k, interests=cfg.index.interests_per_user)
        loop = len(users) / (time.perf_counter() - started)
        job = report.users / report.seconds
        figures += [
            Figure(f"{name}: job users/s", round(job, 1), "users/s", headline=True),
            Figure(f"{name}: per-user loop users/s (driver, no Spark)", round(loop, 1), "users/s"),
            Figure(f"{name}: job vs loop", round(job / loop, 2), "x", kind="derived"),
            Figure(f"{name}: users", report.users),
            Figure(f"{name}: rows", report.rows),
        ]
        inputs[f"{name}_overrides"] = extra
    write_record(
        Record(
            "retrieve_candidates",
            f"retrieve_candidates throughput on S3-Rec {args.dataset} (top {args.k}), local Spark",
            "bench/retrieve_candidates.py " + " ".join(sys.argv[1:]),
            figures,
            inputs=inputs,
        )
    )


if __name__ == "__main__":
    main()
