"""What every job's ``main(argv)`` does first: parse the common options, set up logging, and
load the checked configuration."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from jobs.config import PinpipeConfig, add_config_arguments, config_from_args


def configure_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def job_config(prog: str, description: str | None, argv: Sequence[str] | None) -> PinpipeConfig:
    parser = add_config_arguments(argparse.ArgumentParser(prog=prog, description=description))
    args = parser.parse_args(argv)
    configure_logging()
    return config_from_args(args)
