"""Teacher training speed: pinpipe's loop vs a plain fine-tuning loop, same model, same machine.

    .venv/bin/python bench/teacher_train.py [--examples 1024] [--batch-size 32] [--max-length 128]

Both train the MiniLM cross-encoder for one pass over the same CrowdFlower (query, product)
pairs, with the same optimizer, batch size, token budget and threads, from the same initial
weights, after the same warm-up (``--warmup`` steps each, untimed):

* plain: random batches, each tokenized when it is drawn and padded to its own longest pair
  (dynamic padding, ``padding="longest"``): a fair, ordinary fine-tuning loop;
* pinpipe: tokenized once (cached), batches of similar length (length-sorted windows), each
  padded to its own longest pair (``models.relevance.teacher_training``).

So the difference measured is tokenizing once plus length-sorted batching. Prints examples/s
of each (tokenization included), their ratio and the padding share, and writes
``reports/teacher_train.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from bench.record import Figure, Record, write_record  # noqa: E402
from models.packaged import minilm_dir  # noqa: E402
from models.relevance.teacher import CrossEncoderTeacher  # noqa: E402
from models.relevance.teacher_inference import collate, encode_pairs  # noqa: E402
from models.relevance.teacher_settings import TeacherSettings, TrainSettings  # noqa: E402
from models.relevance.teacher_training import length_sorted_batches  # noqa: E402

DEFAULT_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "crowdflower" / "labels.csv"


def load_pairs(csv: Path, n: int, seed: int) -> pd.DataFrame:
    rows = pd.read_csv(csv).sample(frac=1.0, random_state=seed).head(n)
    rows["text"] = rows["product_title"].fillna("") + " " + rows["product_description"].fillna("")
    rows["level"] = rows["median_relevance"].astype(int) - 1
    return rows.reset_index(drop=True)


def fresh_model(seed: int) -> CrossEncoderTeacher:
    torch.manual_seed(seed)
    return CrossEncoderTeacher.build(TeacherSettings(backbone_path=str(minilm_dir())))


def step(model, optimizer, ids, mask, labels) -> float:
    loss = nn.functional.cross_entropy(model(ids, mask), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def run_plain(rows, tokenizer, args) -> tuple[float, float]:
    """(examples/s, padding share) of per-batch tokenization padded to max_length."""
    model = fresh_model(args.seed).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)
    order = np.random.default_rng(args.seed).permutation(len(rows))
    real = padded = 0
    started = time.perf_counter()
    for start in range(0, len(order), args.batch_size):
        batch = rows.iloc[order[start : start + args.batch_size]]
        enc = tokenizer(
            list(batch["query"]),
            list(batch["text"]),
            truncation="only_second",
            max_length=args.max_length,
            padding="max_length",
            return_tensors="pt",
        )
        real += int(enc["attention_mask"].sum())
        padded += enc["attention_mask"].numel()
        step(model, optimizer, enc["input_ids"], enc["attention_mask"], torch.as_tensor(batch["level"].to_numpy()))
    return len(rows) / (time.perf_counter() - started), 1 - real / padded


def run_pinpipe(rows, tokenizer, args) -> tuple[float, float]:
    """(examples/s, padding share) of cached tokenization + length-sorted dynamic padding."""
    model = fresh_model(args.seed).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)
    settings = TrainSettings(
        max_length=args.max_length, query_tokens=min(16, args.max_length - 8), batch_size=args.batch_size
    )
    real = padded = 0
    started = time.perf_counter()
    encoded = encode_pairs(tokenizer, list(rows["query"]), list(rows["text"]), settings, list(rows["level"]))
    batches = length_sorted_batches(
        encoded.lengths, settings.batch_size, settings.sort_window, np.random.default_rng(args.seed)
    )
    for idx in batches:
        ids, mask = collate(encoded, idx, tokenizer.pad_token_id, torch.device("cpu"))
        real += int(mask.sum())
        padded += mask.numel()
        step(model, optimizer, ids, mask, torch.as_tensor(encoded.labels[idx]))
    return len(rows) / (time.perf_counter() - started), 1 - real / padded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    parser.add_argument("--examples", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warmup", type=int, default=3, help="untimed training steps before each timed pass")
    args = parser.parse_args()

    rows = load_pairs(args.csv, args.examples, args.seed)
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    print(
        f"{len(rows):,} CrowdFlower pairs, batch {args.batch_size}, max_length {args.max_length}, "
        f"{torch.get_num_threads()} torch threads",
        flush=True,
    )
    plain, plain_pad = run_plain(rows, tokenizer, args)
    print(
        f"plain loop (tokenize per batch, dynamic padding): {plain:7.1f} examples/s, padding {plain_pad:.1%}",
        flush=True,
    )
    ours, ours_pad = run_pinpipe(rows, tokenizer, args)
    print(f"pinpipe loop (cached, length-sorted, dynamic pad): {ours:7.1f} examples/s, padding {ours_pad:.1%}")
    write_record(
        Record(
            "teacher_train",
            "Teacher training speed, pinpipe loop vs plain dynamic-padding loop (MiniLM, CPU)",
            "bench/teacher_train.py " + " ".join(sys.argv[1:]),
            [
                Figure("plain", plain, "examples/s"),
                Figure("pinpipe", ours, "examples/s"),
                Figure("speed-up", ours / plain, "x", "derived", headline=True),
                Figure("padding plain", plain_pad * 100, "%", headline=True),
                Figure("padding pinpipe", ours_pad * 100, "%", headline=True),
            ],
            inputs={
                "examples": len(rows),
                "batch_size": args.batch_size,
                "max_length": args.max_length,
                "warmup_steps": args.warmup,
                "seed": args.seed,
                "threads": torch.get_num_threads(),
                "data": "CrowdFlower labels.csv",
            },
        )
    )


if __name__ == "__main__":
    main()
