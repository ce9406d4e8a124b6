"""The embedded demo: simulate the synthetic catalog and traffic, ingest the real data in
``ingest.data_root``, and build pin text features, into one local Delta lake, in one Spark
session.

    pinpipe demo                      # lake under ./lake
    pinpipe demo --set lake.root=/tmp/lake --set simulate.days=1
    pinpipe demo --set captioner.model_path=/models/blip-image-captioning-base
"""

from __future__ import annotations

from typing import Sequence

from jobs import ingest, pin_features, simulate
from jobs.job_args import job_config
from jobs.session import spark_session


def main(argv: Sequence[str] | None = None) -> None:
    cfg = job_config("pinpipe demo", __doc__.splitlines()[0], argv)
    with spark_session("pinpipe-demo", cfg.spark) as spark:
        written = simulate.run(spark, cfg)
        reports = ingest.run(spark, cfg)
        features = pin_features.run(spark, cfg)
    print(simulate.summary_line(written))
    for report in reports:
        print(report.line())
    print(features.line())
    print(f"lake: {cfg.lake.root}/tables")


if __name__ == "__main__":
    main()
