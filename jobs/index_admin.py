"""List, promote or roll back the versions of the two-tower index (and the model each names).

``pinpipe index list|promote VERSION|rollback``.

``list`` shows every kept version of ``index.name`` with the model version it was built from,
its size, shards, factory and recall@10, and which one is promoted. ``promote VERSION``
promotes that index version and the model version it names, together. ``rollback`` promotes the
previous index version and its model. No Spark: these only read manifests and move pointers.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from jobs.config import config_from_args
from models.retrieval.serving import IndexVersions
from runtime.config import add_config_arguments
from runtime.errors import one_line_errors
from runtime.lake import Lake


def table(versions: IndexVersions) -> str:
    rows = versions.list()
    if not rows:
        return f"index {versions.name}: no versions under {versions.indexes.storage.uri(versions.name)}"
    lines = [
        f"{'':2}{'version':<9}{'model':<20}{'vectors':>12}{'shards':>8}  {'factory':<18}{'recall@10':>10}  created"
    ]
    for r in rows:
        lines.append(
            f"{'* ' if r.current else '  '}{r.version:<9}{r.model:<20}{r.rows:>12,}{r.shards:>8}  {r.factory:<18}"
            f"{r.recall_at_10:>10.4f}  {r.created_at}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = add_config_arguments(argparse.ArgumentParser(prog="pinpipe index", description=__doc__.splitlines()[0]))
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="the kept versions; * marks the promoted one")
    promote = commands.add_parser("promote", help="promote an index version and the model it was built from")
    promote.add_argument("version")
    back = commands.add_parser("rollback", help="promote the previous index version and its model")
    for command in (listing, promote, back):
        add_config_arguments(command, action=True)
    args = parser.parse_args(argv)
    with one_line_errors("pinpipe index"):
        cfg = config_from_args(args)
        versions = IndexVersions(Lake.of(cfg.lake).artifacts(), cfg.index.name, keep=cfg.index.keep)
        if args.command == "list":
            print(table(versions))
        elif args.command == "promote":
            d = versions.promote(args.version)
            print(f"index: promoted {versions.name}/{args.version} and its model {d.model}")
        else:
            version, d = versions.rollback()
            print(f"index: rolled back to {versions.name}/{version} and its model {d.model}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
