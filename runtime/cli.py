"""``pinpipe``: the command line. ``pinpipe <job> [options]`` runs one job in local Spark
(or on whatever master ``--set spark.master=...`` names); every job takes ``--env``,
``--conf-file`` and ``--set``. ``pinpipe package`` builds the ``--py-files`` zip for
spark-submit. Only the module of the command that runs is imported (so ``pinpipe --help``
loads no torch): commands name their modules as strings, and runtime never imports a job.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("jobs.demo", "the whole nightly on the embedded default at small sizes (local Spark, ./lake)"),
    "simulate": ("jobs.simulate", "write the synthetic catalog and traffic to Delta"),
    "ingest": ("jobs.ingest", "ingest ../shared/data (CrowdFlower, S3-Rec, COCO) into Delta"),
    "pin_features": ("jobs.pin_features", "caption new pin images (BLIP) and write pin_text_features"),
    "train_teacher": ("jobs.train_teacher", "train the cross-encoder teacher on human_labels and publish it"),
    "score_impressions": ("jobs.score_impressions", "label search impressions with the teacher (teacher_scores)"),
    "distill_corpus": (
        "jobs.distill_corpus",
        "impressions of a labeled catalog's queries x products, for the teacher to label",
    ),
    "student_features": ("jobs.student_features", "embeddings (cached), BM25 and smoothed engagement per (query, pin)"),
    "train_student": ("jobs.train_student", "train an MLP / MMoE student from teacher-labeled pairs and publish it"),
    "train_two_tower": (
        "jobs.train_two_tower",
        "train the two-tower retrieval model on one source's engagement sequences and publish it",
    ),
    "serving_corpus": (
        "jobs.serving_corpus",
        "pins ranked by time-decayed engagement, one per image signature (serving_corpus of a date)",
    ),
    "embed_pins": ("jobs.embed_pins", "embed every item of a two-tower model with its item tower (pin_embeddings)"),
    "build_index": (
        "jobs.build_index",
        "build a sharded FAISS index of pin_embeddings in Spark; publish it if its recall@10 passes",
    ),
    "index": ("jobs.index_admin", "list | promote VERSION | rollback the index versions (with their model)"),
    "rollback": ("jobs.rollback", "restore a model family's previous production version (two_tower: with its index)"),
    "retrieve": ("jobs.retrieve", "a user's top-k pins from the promoted model and index"),
    "nightly": (
        "jobs.nightly",
        "every stage for one date (--date D): resumable (pipeline_runs), one nightly per date at a time",
    ),
    "report": ("jobs.nightly_report", "(re)write the nightly's HTML report of a date (--date D) from the lake"),
    "maintain": ("jobs.maintain", "compact (OPTIMIZE) and VACUUM the lake's Delta tables"),
    "package": ("runtime.package", "build dist/pinpipe.zip for spark-submit --py-files"),
}


def usage() -> str:
    lines = ["usage: pinpipe <command> [options]   (pinpipe <command> --help for its options)", "", "commands:"]
    lines += [f"  {name:<17} {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"pinpipe: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    importlib.import_module(COMMANDS[command][0]).main(rest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
