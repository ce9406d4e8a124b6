"""Restore the previous production version of a model family: ``pinpipe rollback <family>``.

The family's promotion stack (``models.artifacts.registry``) is popped: production becomes the version
that was production before the current one, never a version that was only published (such as a
candidate its gate rejected). The two-tower family and its index roll back together: rolling
back ``index.model_family`` (or ``index.name``) promotes the previous index version and the
model version it was built from, so users are never scored against another model's items.
No Spark: this only moves pointers.

    pinpipe rollback student
    pinpipe rollback two_tower --set lake.root=/shared/lake
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from jobs.config import PinpipeConfig, config_from_args
from models.artifacts.registry import Registry
from models.retrieval.serving import IndexVersions
from runtime.config import add_config_arguments
from runtime.errors import one_line_errors
from runtime.lake import Lake


def rollback(cfg: PinpipeConfig, family: str) -> str:
    """Roll ``family`` back; returns what production is now, in words."""
    artifacts = Lake.of(cfg.lake).artifacts()
    if family in (cfg.index.model_family, cfg.index.name):
        versions = IndexVersions(artifacts, cfg.index.name, keep=cfg.index.keep)
        if versions.indexes.current(cfg.index.name) is not None:
            version, d = versions.rollback()
            return f"index {cfg.index.name}/{version} and its model {d.model}"
    registry = Registry(artifacts)
    before = registry.current(family)
    now = registry.rollback(family)
    return f"{family}/{now} (was {before})"


def main(argv: Sequence[str] | None = None) -> int:
    parser = add_config_arguments(argparse.ArgumentParser(prog="pinpipe rollback", description=__doc__.splitlines()[0]))
    parser.add_argument("family", help="registry family: teacher, student, two_tower (with its index), ...")
    args = parser.parse_args(argv)
    with one_line_errors("pinpipe rollback"):
        print(f"rollback: production is now {rollback(config_from_args(args), args.family)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
