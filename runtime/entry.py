"""What every job's ``main(argv)`` does: parse the common options (``--env``, ``--conf-file``,
``--set``), set up logging, load and resolve the config once (before Spark starts, so a bad
key fails in a second), run the job in one Spark session, print its report line.

A job module then ends with::

    def main(argv=None):
        return run_job("pinpipe ingest", __doc__, run, argv)
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from pyspark.sql import SparkSession

from runtime.config import PinpipeConfig, add_config_arguments, config_from_args
from runtime.session import spark_session


class Report(Protocol):
    """What a job's ``write`` (and so its ``run``) returns: counts, and one summary line."""

    def line(self) -> str: ...


R = TypeVar("R", bound=Report)


def configure_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def job_config(prog: str, description: str | None, argv: Sequence[str] | None) -> PinpipeConfig:
    first_line = (description or "").strip().splitlines()[0] if description else None
    parser = add_config_arguments(argparse.ArgumentParser(prog=prog, description=first_line))
    args = parser.parse_args(argv)
    configure_logging()
    return config_from_args(args)


def run_job(
    prog: str, doc: str | None, run: Callable[[SparkSession, PinpipeConfig], R], argv: Sequence[str] | None
) -> R:
    """``main`` of a job: config, session, ``run``, the report line on stdout."""
    cfg = job_config(prog, doc, argv)
    with spark_session(prog.replace(" ", "-"), cfg.spark) as spark:
        report = run(spark, cfg)
    print(report.line())
    return report
