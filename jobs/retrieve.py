"""A user's top-k pins from the promoted two-tower model and the promoted index built from it.

The user's history is read from ``user_engagements`` (the source the model was trained on, in
event order); the user tower embeds it and the sharded index returns the best pins the user has
not engaged with. Refused, with the reason, when the promoted model is not the one the index
was built from, when a shard is missing or its bytes are not the published ones, or when the
user has no history the model knows.

Local:    pinpipe retrieve --user A1YJEY40YUW4SE -k 10 [--json]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from jobs.config import PinpipeConfig, run_job
from models.retrieval.serving import Retrieval
from runtime.lake import Lake
from schemas import user_engagements as UE


@dataclass(frozen=True)
class RetrieveReport:
    user: str
    history: int
    index: str
    model: str
    results: list[tuple[str, float]]
    as_json: bool

    def line(self) -> str:
        if self.as_json:
            return json.dumps({"user": self.user, "index": self.index, "model": self.model, "results": self.results})
        rows = [f"{rank:>4}  {pin}  {score:.6f}" for rank, (pin, score) in enumerate(self.results, 1)]
        head = f"retrieve: user={self.user} history={self.history} index={self.index} model={self.model}"
        return "\n".join([*rows, head])


def user_history(spark: SparkSession, lake: Lake, source: str, user: str) -> list[str]:
    """The user's engaged pin ids, oldest first (event time, then sequence index, then pin id)."""
    events = lake.read(spark, "user_engagements").filter((F.col(UE.SOURCE) == source) & (F.col(UE.USER_ID) == user))
    row = events.select(UE.event_order()).agg(F.sort_array(F.collect_list("e")).alias("e")).first()
    return [e[UE.PIN_ID] for e in (row["e"] if row and row["e"] else [])]


def run(spark: SparkSession, cfg: PinpipeConfig, *, user: str, k: int, as_json: bool = False) -> RetrieveReport:
    lake = Lake.at(cfg.lake.root)
    retrieval = Retrieval.open(lake.artifacts_path(), cfg.index.name)
    source = retrieval.model_source
    history = user_history(spark, lake, source, user)
    if not history:
        raise ValueError(f"user {user!r} has no engagements in source {source!r}: nothing to retrieve from")
    d = retrieval.description
    index = f"{cfg.index.name}/{retrieval.index_version}"
    return RetrieveReport(user, len(history), index, d.model, retrieval.top_k(history, k), as_json)


def main(argv: Sequence[str] | None = None) -> RetrieveReport:
    parser = argparse.ArgumentParser(prog="pinpipe retrieve", add_help=False)
    parser.add_argument("--user", help="user_id in user_engagements (required)")
    parser.add_argument("-k", type=int, default=10, help="pins to return (default 10)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    own, rest = parser.parse_known_args(argv)
    if any(a in ("-h", "--help") for a in rest):
        print(parser.format_help())  # then run_job prints the common options and exits
    elif not own.user:
        parser.error("--user is required")
    return run_job("pinpipe retrieve", __doc__, partial(run, user=own.user, k=own.k, as_json=own.json), rest)


if __name__ == "__main__":
    main()
