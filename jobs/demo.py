"""The embedded demo: simulate the synthetic catalog and traffic, then ingest the real data
in ``ingest.data_root``, into one local Delta lake, in one Spark session.

    pinpipe demo                      # lake under ./lake
    pinpipe demo --set lake.root=/tmp/lake --set simulate.days=1
"""

from __future__ import annotations

from typing import Sequence

from jobs import ingest, simulate
from jobs.job_args import job_config
from jobs.session import spark_session


def main(argv: Sequence[str] | None = None) -> None:
    cfg = job_config("pinpipe demo", __doc__.splitlines()[0], argv)
    with spark_session("pinpipe-demo", cfg.spark) as spark:
        written = simulate.run(spark, cfg)
        reports = ingest.run(spark, cfg)
    print(simulate.summary_line(written))
    for report in reports:
        print(report.line())
    print(f"lake: {cfg.lake.root}/tables")


if __name__ == "__main__":
    main()
