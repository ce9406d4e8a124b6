"""A user's top-k pins from the promoted two-tower model and the promoted index built from it.

The user's history is read from ``user_engagements`` (the source the model was trained on, in
event order); the user tower embeds it and the sharded index returns the best pins the user has
not engaged with. A model with several interest vectors per user (capsules) searches once per
interest (``--interests K``: the K heaviest; default ``index.interests_per_user``) and merges
round-robin; each pin's line names the interest that found it. A conditional model retrieves
within one interest (``--interest``: a name of the model's interests, e.g. an S3-Rec attribute
``s3rec-beauty:a17``): the user tower is conditioned on it and the index searched among its pins
only. Refused, with the reason, when the promoted model is not the one the index was built
from, when a shard is missing or its bytes are not the published ones, or when the user has no
history the model knows.

Local:    pinpipe retrieve --user A1YJEY40YUW4SE -k 10 [--interest s3rec-beauty:a17] [--json]
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
from models.retrieval.serving import Candidate, Retrieval
from runtime.lake import Lake
from schemas import user_engagements as UE


@dataclass(frozen=True)
class RetrieveReport:
    user: str
    history: int
    index: str
    model: str
    results: list[Candidate]
    as_json: bool
    interest: str | None = None
    interests: int = 1  # user vectors searched

    def line(self) -> str:
        if self.as_json:
            results = [[c.pin, c.score, c.interest] for c in self.results]
            return json.dumps(
                {
                    "user": self.user,
                    "index": self.index,
                    "model": self.model,
                    "interest": self.interest,
                    "results": results,
                }
            )
        several = self.interests > 1
        rows = [
            f"{rank:>4}  {c.pin}  {c.score:.6f}" + (f"  interest {c.interest}" if several else "")
            for rank, c in enumerate(self.results, 1)
        ]
        head = f"retrieve: user={self.user} history={self.history} index={self.index} model={self.model}"
        if self.interest is not None:
            head += f" interest={self.interest}"
        if several:
            head += f" interests searched={self.interests} (round-robin; 0 = the heaviest)"
        return "\n".join([*rows, head])


def unknown_user(spark: SparkSession, lake: Lake, source: str, user: str) -> ValueError:
    """The error for a user without engagements in ``source``, showing what its ids look like."""
    events = lake.read(spark, "user_engagements").filter(F.col(UE.SOURCE) == source)
    example = events.select(UE.USER_ID).first()
    hint = f"its user ids look like {example[0]!r}" if example else "it has no engagements at all: run ingest"
    return ValueError(
        f"user {user!r} has no engagements in source {source!r} (the promoted model's): nothing to retrieve "
        f"from; {hint}"
    )


def user_history(spark: SparkSession, lake: Lake, source: str, user: str) -> list[str]:
    """The user's engaged pin ids, oldest first (event time, then sequence index, then pin id)."""
    events = lake.read(spark, "user_engagements").filter((F.col(UE.SOURCE) == source) & (F.col(UE.USER_ID) == user))
    row = UE.in_event_order(events, UE.PIN_ID, "history").first()
    return list(row["history"]) if row else []


def run(
    spark: SparkSession,
    cfg: PinpipeConfig,
    *,
    user: str,
    k: int,
    as_json: bool = False,
    interest: str | None = None,
    interests: int | None = None,
) -> RetrieveReport:
    lake = Lake.of(cfg.lake)
    retrieval = Retrieval.open(lake.artifacts(), cfg.index.name, cfg.index.exact_filter_below)
    source = retrieval.model_source
    history = user_history(spark, lake, source, user)
    if not history:
        raise unknown_user(spark, lake, source, user)
    d = retrieval.description
    index = f"{cfg.index.name}/{retrieval.index_version}"
    kept = cfg.index.interests_per_user if interests is None else interests
    results = retrieval.top_k(history, k, interest=interest, interests=kept)
    searched = retrieval.vectors_searched(kept)
    return RetrieveReport(user, len(history), index, d.model, results, as_json, interest, searched)


def main(argv: Sequence[str] | None = None) -> RetrieveReport:
    parser = argparse.ArgumentParser(prog="pinpipe retrieve", add_help=False)
    parser.add_argument("--user", help="user_id in user_engagements (required)")
    parser.add_argument("-k", type=int, default=10, help="pins to return (default 10)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--interest", help="retrieve within this interest (a conditional model's)")
    parser.add_argument(
        "--interests",
        type=int,
        help="interest vectors to search, heaviest first (0 = all; default index.interests_per_user)",
    )
    own, rest = parser.parse_known_args(argv)
    if any(a in ("-h", "--help") for a in rest):
        print(parser.format_help())  # then run_job prints the common options and exits
    elif not own.user:
        parser.error("--user is required")
    job = partial(run, user=own.user, k=own.k, as_json=own.json, interest=own.interest, interests=own.interests)
    return run_job("pinpipe retrieve", __doc__, job, rest)


if __name__ == "__main__":
    main()
