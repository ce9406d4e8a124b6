"""CrowdFlower cross-validation: BM25 vs the MiniLM cross-encoder teacher (full fine-tune, LoRA).

    .venv/bin/python bench/crowdflower_cv.py --split row --variants bm25,full --epochs 2
    .venv/bin/python bench/crowdflower_cv.py --split query --variants bm25,full,lora

Rows come through the project's own ingest adapter (``jobs.ingest.transform_crowdflower``), so
quarantined rows are excluded exactly as in the lake. Folds: ``--split row`` deals rows into k
folds at random (as the 2015 competition's CV did: the same queries appear in train and test);
``--split query`` keeps every query's rows in one fold (unseen queries at test time). Prints a
table of mean ± std over folds and writes it as Markdown to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from bench.record import Figure, Record, write_record  # noqa: E402
from models.packaged import minilm_dir  # noqa: E402
from models.relevance.bm25 import BM25  # noqa: E402
from models.relevance.levels import LevelThresholds, label_shares  # noqa: E402
from models.relevance.metrics import evaluate_predictions  # noqa: E402
from models.relevance.teacher import CrossEncoderTeacher, TeacherSettings  # noqa: E402
from models.relevance.teacher_inference import encode_pairs  # noqa: E402
from models.relevance.teacher_settings import TrainSettings  # noqa: E402
from models.relevance.teacher_training import train  # noqa: E402

LEVELS = [1, 2, 3, 4]
DEFAULT_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "crowdflower" / "labels.csv"


def load_rows(csv: Path):
    """CrowdFlower rows through the ingest adapter (Spark), with the pin text joined."""
    from jobs import ingest
    from runtime.config import SparkConfig
    from runtime.session import build_session

    spark = build_session(
        "crowdflower-cv",
        SparkConfig(
            master="local[2]", driver_memory="2g", shuffle_partitions=2, ui_enabled=False, log_level="ERROR", extra={}
        ),
    )
    try:
        batch = ingest.transform_crowdflower(ingest.read_crowdflower(spark, str(csv)), scale_max=4)
        labels = batch.outputs["human_labels"].toPandas()
        pins = batch.outputs["pins"].toPandas()
    finally:
        spark.stop()
    rows = labels.merge(pins[["pin_id", "title", "description"]], on="pin_id", how="left")
    rows["text"] = rows["title"].fillna("") + " " + rows["description"].fillna("")
    return rows.sort_values("label_id").reset_index(drop=True)


def folds_of(rows, split: str, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if split == "row":
        return rng.permutation(len(rows)) % k
    queries = rows["query"].unique()
    fold_of_query = dict(zip(rng.permutation(queries), np.arange(len(queries)) % k, strict=False))
    return rows["query"].map(fold_of_query).to_numpy()


def run_bm25(train_rows, test_rows):
    bm25 = BM25().fit(list(train_rows["text"]) + list(test_rows["text"]))  # unsupervised statistics
    train_scores = bm25.score_pairs(train_rows["query"], train_rows["text"])
    thresholds = LevelThresholds.fit(train_scores, train_rows["relevance"], LEVELS)
    scores = bm25.score_pairs(test_rows["query"], test_rows["text"])
    return thresholds.predict(scores), scores


def run_teacher(train_rows, test_rows, lora_r: int, args, tokenizer):
    """Per-level probabilities of the test rows from a teacher trained on the train rows."""
    settings = TrainSettings(
        max_length=args.max_length,
        query_tokens=16,
        batch_size=args.batch_size,
        epochs=args.epochs,
        lr=args.lora_lr if lora_r else args.lr,
        select_best=False,
        seed=args.seed,
        progress=not args.quiet,
    )

    def enc(rows):
        return encode_pairs(
            tokenizer,
            list(rows["query"]),
            list(rows["text"]),
            settings,
            list(rows["relevance"] - 1),
            list(rows["query"]),
        )

    train_set, test_set = enc(train_rows), enc(test_rows)
    torch.manual_seed(args.seed)
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    model = CrossEncoderTeacher.build(
        TeacherSettings(backbone_path=str(minilm_dir()), lora_r=lora_r, head_hidden=256), device
    )
    # Choosing the epoch on the test fold would be optimistic: train a fixed number of epochs and
    # keep the last weights (select_best=False).
    return train(model, train_set, test_set, settings, LEVELS, tokenizer.pad_token_id).val_probabilities


def decoded(probs, train_labels):
    """(argmax levels, share-matched levels, expected relevance) of per-level probabilities.
    Share-matched: the expected relevance cut where the training label shares say (no test labels)."""
    levels = np.asarray(LEVELS)
    expected = probs @ levels
    cuts = LevelThresholds.matching_shares(expected, label_shares(train_labels, LEVELS), LEVELS)
    return levels[probs.argmax(1)], cuts.predict(expected), expected


def cv_record(
    name: str,
    split: str,
    per_variant: dict[str, list[dict]],
    command: str,
    inputs: dict,
    epochs: int,
    commit: str = "",
    machine: dict | None = None,
) -> Record:
    """Mean over folds (test folds: no epoch selection, cuts from the training labels' shares)."""
    figures = []
    for variant, folds in per_variant.items():
        for metric, key in (("kappa", "kappa"), ("nDCG@20", "ndcg_at_20")):
            values = [f[key] for f in folds]
            figures.append(
                Figure(
                    f"{variant} {metric}",
                    float(np.mean(values)),
                    f"(± {np.std(values):.3f})",
                    headline=variant in ("bm25", "lora+cuts", "full+cuts"),
                )
            )
    folds = len(next(iter(per_variant.values())))
    title = f"CrowdFlower {split}-split CV ({folds} folds, {epochs} epochs, last epoch): BM25 vs MiniLM teacher"
    return Record(name, title, command, figures, inputs=inputs, commit=commit, machine=machine or {})


def record_from_folds(path: Path, device: str) -> Record:
    """The record of an earlier run of this script, from the per-fold file it wrote; the commit
    is the one that added that file."""
    import subprocess

    folds = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    per_variant: dict[str, list[dict]] = {}
    for fold in folds:
        per_variant.setdefault(fold["variant"], []).append(fold)
    commit = subprocess.run(
        ["git", "log", "--diff-filter=A", "--format=%H", "--", str(path)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    ).stdout.split()
    header = path.with_name(path.name.replace(".folds.jsonl", ".md")).read_text().splitlines()[0]
    epochs = int(re.search(r"epochs=(\d+)", header).group(1))
    return cv_record(
        path.name.replace(".folds.jsonl", ""),
        folds[0]["split"],
        per_variant,
        f"bench/crowdflower_cv.py --split {folds[0]['split']} --epochs {epochs}",
        {"run": header},
        epochs,
        commit=(commit[-1] if commit else "unknown"),
        machine={"device": device, "cores": "?"},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    parser.add_argument("--split", choices=["row", "query"], default="row")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--only-folds", type=int, default=None, help="run just the first N folds")
    parser.add_argument("--variants", default="bm25,full,lora")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-5, help="full fine-tune learning rate")
    parser.add_argument("--lora-lr", type=float, default=2e-3)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--rows",
        type=Path,
        default=None,
        help="read the rows from this parquet (written by --dump-rows) instead of Spark ingest",
    )
    parser.add_argument("--dump-rows", type=Path, default=None, help="write the ingested rows as parquet and stop")
    parser.add_argument(
        "--record-from",
        type=Path,
        default=None,
        help="write the record of an earlier run's .folds.jsonl and stop (with --device naming where it ran)",
    )
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.record_from:
        write_record(record_from_folds(args.record_from, args.device), args.record_from.parent)
        return

    rows = pd.read_parquet(args.rows) if args.rows else load_rows(args.csv)
    if args.dump_rows:
        rows.to_parquet(args.dump_rows)
        print(f"{len(rows):,} rows -> {args.dump_rows}")
        return
    fold = folds_of(rows, args.split, args.folds, args.seed)
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    variants = args.variants.split(",")
    results: dict[str, list] = {}
    log_path = args.out.with_suffix(".folds.jsonl") if args.out else None
    for f in range(args.only_folds or args.folds):
        train_rows, test_rows = rows[fold != f], rows[fold == f]
        for variant in variants:
            started = time.perf_counter()
            if variant == "bm25":
                predicted, scores = run_bm25(train_rows, test_rows)
                outcomes = {"bm25": (predicted, scores)}
            else:
                probs = run_teacher(train_rows, test_rows, 0 if variant == "full" else args.lora_r, args, tokenizer)
                by_argmax, by_cuts, expected = decoded(probs, train_rows["relevance"])
                outcomes = {variant: (by_argmax, expected), f"{variant}+cuts": (by_cuts, expected)}
            for name, (predicted, scores) in outcomes.items():
                report = evaluate_predictions(test_rows["query"], test_rows["relevance"], predicted, scores, LEVELS)
                results.setdefault(name, []).append(report)
                line = (
                    f"fold {f + 1} {name:10s} kappa {report.kappa:.4f} acc {report.accuracy:.4f} "
                    f"AUROC>=4 {report.auroc_at[4]:.4f} nDCG@20 {report.ndcg_at_20:.4f} "
                    f"({time.perf_counter() - started:.0f} s)"
                )
                print(line, flush=True)
                if log_path:
                    log_path.parent.mkdir(parents=True, exist_ok=True)
                    with log_path.open("a") as out:
                        out.write(
                            json.dumps(
                                {
                                    "split": args.split,
                                    "fold": f + 1,
                                    "variant": name,
                                    "seconds": round(time.perf_counter() - started),
                                    **report.to_dict(),
                                }
                            )
                            + "\n"
                        )

    def cell(values):
        return f"{np.mean(values):.4f} ± {np.std(values):.4f}"

    header = "| variant | kappa | accuracy | AUROC ≥2 | AUROC ≥3 | AUROC ≥4 | nDCG@20 |"
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
    lines = [
        f"CrowdFlower {args.split}-split CV, {len(next(iter(results.values())))} of {args.folds} folds, "
        f"{len(rows):,} rows, epochs={args.epochs}, max_length={args.max_length}, lr={args.lr} (full) / "
        f"{args.lora_lr} (LoRA r={args.lora_r}), seed={args.seed}, on {device}",
        "",
        header,
        "|" + "---|" * 7,
    ]
    for v, reports in results.items():
        lines.append(
            f"| {v} | {cell([r.kappa for r in reports])} | {cell([r.accuracy for r in reports])} | "
            + " | ".join(cell([r.auroc_at[t] for r in reports]) for t in (2, 3, 4))
            + f" | {cell([r.ndcg_at_20 for r in reports])} |"
        )
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
        per_variant = {v: [r.to_dict() for r in reports] for v, reports in results.items()}
        inputs = {k: v for k, v in vars(args).items() if k not in ("out", "rows", "dump_rows", "record_from")}
        write_record(
            cv_record(
                args.out.stem,
                args.split,
                per_variant,
                "bench/crowdflower_cv.py " + " ".join(sys.argv[1:]),
                {**inputs, "csv": str(args.csv), "rows": len(rows)},
                args.epochs,
            ),
            args.out.parent,
        )


if __name__ == "__main__":
    main()
