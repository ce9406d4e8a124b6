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
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from jobs import ingest  # noqa: E402
from jobs.config import SparkConfig  # noqa: E402
from jobs.session import build_session  # noqa: E402
from models.bm25 import BM25, LevelThresholds  # noqa: E402
from models.metrics import evaluate_predictions  # noqa: E402
from models.random_models import minilm_dir  # noqa: E402
from models.teacher import CrossEncoderTeacher, TeacherSettings  # noqa: E402
from models.teacher_training import TrainSettings, encode_pairs, predict_proba, train  # noqa: E402

LEVELS = [1, 2, 3, 4]
DEFAULT_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "crowdflower" / "labels.csv"


def load_rows(csv: Path):
    spark = build_session("crowdflower-cv", SparkConfig(
        master="local[2]", driver_memory="2g", shuffle_partitions=2, ui_enabled=False, log_level="ERROR", extra={}))
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
    fold_of_query = dict(zip(rng.permutation(queries), np.arange(len(queries)) % k))
    return rows["query"].map(fold_of_query).to_numpy()


def run_bm25(train_rows, test_rows):
    bm25 = BM25().fit(list(train_rows["text"]) + list(test_rows["text"]))  # unsupervised statistics
    train_scores = bm25.score_pairs(train_rows["query"], train_rows["text"])
    thresholds = LevelThresholds.fit(train_scores, train_rows["relevance"], LEVELS)
    scores = bm25.score_pairs(test_rows["query"], test_rows["text"])
    return thresholds.predict(scores), scores


def run_teacher(train_rows, test_rows, lora_r: int, args, tokenizer):
    settings = TrainSettings(max_length=args.max_length, query_tokens=16, batch_size=args.batch_size,
                             epochs=args.epochs, lr=args.lr if not lora_r else args.lr * 10, patience=args.epochs,
                             seed=args.seed, progress=not args.quiet)
    def enc(rows):
        return encode_pairs(tokenizer, list(rows["query"]), list(rows["text"]), settings,
                            list(rows["relevance"] - 1), list(rows["query"]))
    train_set, test_set = enc(train_rows), enc(test_rows)
    torch.manual_seed(args.seed)
    model = CrossEncoderTeacher.build(TeacherSettings(backbone_path=str(minilm_dir()), lora_r=lora_r, head_hidden=256))
    # Model selection on the test fold would be optimistic: train a fixed number of epochs and
    # evaluate the last one (patience = epochs, and the history's last epoch is reported).
    result = train(model, train_set, test_set, settings, LEVELS, tokenizer.pad_token_id)
    probs = predict_proba(model, test_set, 256, tokenizer.pad_token_id)
    levels = np.asarray(LEVELS)
    return levels[probs.argmax(1)], probs @ levels, result.history


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
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    rows = load_rows(args.csv)
    fold = folds_of(rows, args.split, args.folds, args.seed)
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    variants = args.variants.split(",")
    results: dict[str, list] = {v: [] for v in variants}
    for f in range(args.only_folds or args.folds):
        train_rows, test_rows = rows[fold != f], rows[fold == f]
        for variant in variants:
            started = time.perf_counter()
            if variant == "bm25":
                predicted, scores = run_bm25(train_rows, test_rows)
            else:
                predicted, scores, _ = run_teacher(train_rows, test_rows, 0 if variant == "full" else 16, args, tokenizer)
            report = evaluate_predictions(test_rows["query"], test_rows["relevance"], predicted, scores, LEVELS)
            results[variant].append(report)
            print(f"fold {f + 1} {variant:5s} kappa {report.kappa:.4f} acc {report.accuracy:.4f} "
                  f"AUROC>=4 {report.auroc_at[4]:.4f} nDCG@20 {report.ndcg_at_20:.4f} "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)

    def cell(values):
        return f"{np.mean(values):.4f} ± {np.std(values):.4f}"

    header = "| variant | kappa | accuracy | AUROC ≥2 | AUROC ≥3 | AUROC ≥4 | nDCG@20 |"
    lines = [f"CrowdFlower {args.split}-split CV, {len(results[variants[0]])} of {args.folds} folds, "
             f"{len(rows):,} rows, epochs={args.epochs}, max_length={args.max_length}", "",
             header, "|" + "---|" * 7]
    for v, reports in results.items():
        lines.append(f"| {v} | {cell([r.kappa for r in reports])} | {cell([r.accuracy for r in reports])} | "
                     + " | ".join(cell([r.auroc_at[t] for r in reports]) for t in (2, 3, 4))
                     + f" | {cell([r.ndcg_at_20 for r in reports])} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
