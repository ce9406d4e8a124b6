"""What every job's ``main(argv)`` does: parse the common options (``--env``, ``--conf-file``,
``--set``), set up logging, load and resolve the config once (before Spark starts, so a bad
key fails in a second), run the job in one Spark session, print its report line.

A job module then ends with (``jobs.config.run_job``: this with the pipeline's config)::

    def main(argv=None):
        return run_job("pinpipe ingest", __doc__, run, argv)
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from pyspark.sql import SparkSession

from runtime.config import add_config_arguments
from runtime.errors import explain
from runtime.session import spark_session


class Report(Protocol):
    """What a job's ``write`` (and so its ``run``) returns: counts, and one summary line."""

    def line(self) -> str: ...


R = TypeVar("R", bound=Report)


# Libraries whose INFO lines are not pinpipe's progress: faiss's loader reports each CPU-specific
# build it tried and could not import as a ModuleNotFoundError, which reads like a failure.
QUIET_LIBRARIES = ("faiss.loader",)


def configure_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))


def job_arguments(prog: str, description: str | None, argv: Sequence[str] | None) -> argparse.Namespace:
    first_line = (description or "").strip().splitlines()[0] if description else None
    parser = add_config_arguments(argparse.ArgumentParser(prog=prog, description=first_line))
    parser.add_argument(
        "--verbose", action="store_true", help="on failure show the full trace; Spark's own log at spark.log_level"
    )
    return parser.parse_args(argv)


def with_date_option(prog: str, argv: Sequence[str] | None) -> list[str]:
    """``argv`` with ``--date D`` turned into ``--set nightly.date=D`` (the nightly's commands)."""
    parser = argparse.ArgumentParser(prog=prog, add_help=False)
    parser.add_argument("--date", help="YYYY-MM-DD (default: nightly.date, empty = today UTC)")
    own, rest = parser.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    if any(a in ("-h", "--help") for a in rest):
        print(parser.format_help())
    return [*rest, "--set", f"nightly.date={own.date}"] if own.date else rest


def run_job(
    prog: str,
    doc: str | None,
    run: Callable[[SparkSession, Any], R],
    argv: Sequence[str] | None,
    load: Callable[[argparse.Namespace], Any],
) -> R:
    """``main`` of a job: config (``load`` from the parsed options), session, ``run``, the report
    line on stdout. A failure is one line on stderr and exit status 1 (``runtime.errors.explain``);
    ``--verbose`` re-raises it, trace and all, and lets Spark's own log through (otherwise it is off: pinpipe's progress
    lines are Python logging)."""
    args = job_arguments(prog, doc, argv)
    configure_logging()
    try:
        cfg = load(args)
        with spark_session(prog.replace(" ", "-"), cfg.spark, quiet=not args.verbose, lake=cfg.lake) as spark:
            report = run(spark, cfg)
    except Exception as exc:
        if args.verbose:
            raise
        print(f"{prog}: error: {explain(exc)}", file=sys.stderr)
        print(f"{prog}: run again with --verbose for the full trace", file=sys.stderr)
        raise SystemExit(1) from None
    print(report.line())
    return report
