"""``pinpipe``: the command line. ``pinpipe <job> [options]`` runs one job in local Spark
(or on whatever master ``--set spark.master=...`` names); every job takes ``--env``,
``--conf-file`` and ``--set``. ``pinpipe package`` builds the ``--py-files`` zip for
spark-submit. The commands are the job table's rows (``jobs.table``); only the module of the
command that runs is imported (so ``pinpipe --help`` loads no torch).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from jobs import table


def commands() -> dict[str, tuple[str, str]]:
    """Each command's (module, summary), from the job table."""
    return {job.name: (job.module, job.summary) for job in table.JOBS}


def usage() -> str:
    lines = ["usage: pinpipe <command> [options]   (pinpipe <command> --help for its options)", "", "commands:"]
    lines += [f"  {name:<17} {text}" for name, (_, text) in commands().items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0
    command, rest = args[0], args[1:]
    known = commands()
    if command not in known:
        print(f"pinpipe: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    importlib.import_module(known[command][0]).main(rest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
