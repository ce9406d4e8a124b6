"""The embedded demo, a pipeline of jobs rather than a job of its own: simulate the synthetic
catalog and traffic, ingest the real data in ``ingest.data_root``, and build pin text features,
into one local Delta lake, in one Spark session (each job's own ``run``).

    pinpipe demo                      # lake under ./lake
    pinpipe demo --set lake.root=/tmp/lake --set simulate.days=1
    pinpipe demo --set captioner.model_path=/models/blip-image-captioning-base
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pyspark.sql import SparkSession

from jobs import ingest, pin_features, simulate
from runtime.config import PinpipeConfig
from runtime.entry import Report, run_job


@dataclass(frozen=True)
class DemoReport:
    reports: list[Report]
    tables: str

    def line(self) -> str:
        return "\n".join([*(r.line() for r in self.reports), f"lake: {self.tables}"])


def run(spark: SparkSession, cfg: PinpipeConfig) -> DemoReport:
    reports = [job.run(spark, cfg) for job in (simulate, ingest, pin_features)]
    return DemoReport(reports, f"{cfg.lake.root}/tables")


def main(argv: Sequence[str] | None = None) -> DemoReport:
    return run_job("pinpipe demo", __doc__, run, argv)


if __name__ == "__main__":
    main()
