"""Scoring impressions with the teacher: the Spark job vs plain loops, measured in one run.

    .venv/bin/python bench/score.py --teacher lake/artifacts/teacher/v0001 [--impressions 1000000]

1. Simulates one day of search traffic (Zipf queries and pins) into a scratch lake and builds
   pin text; counts impressions and unique (query, pin) pairs (the dedup ratio).
2. Spark vs plain, same precision (int8) and cores: the Spark scoring path of
   ``jobs/score_impressions.py`` (mapInPandas, one int8 model per worker, length-ordered batches)
   over a sample of the unique pairs, against a plain Hugging Face loop over the same pairs in
   one process with all the cores (batches in input order, padded to their longest), and
   against the same loop on one thread times the number of workers (the ideal for the job's
   one-thread workers). Every loop uses the same model batch size (``--batch-size``) and the
   same int8 layers (the teacher's ``int8.json``).
3. End to end vs naive: impressions/s of the job (dedup time + every unique pair at the Spark
   rate measured in 2) against a naive fp32 loop over every impression (rate measured on a
   sample of impressions). Both rates are measured; the end-to-end time is extrapolated from them.
4. int8 vs fp32 fidelity on the CrowdFlower pairs: Spearman of expected relevance, agreement of
   argmax labels and of share-matched levels.
5. Peak resident memory of each Spark Python worker.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from bench.worker_memory import WorkerMemory  # noqa: E402
from jobs import pin_features, simulate  # noqa: E402
from jobs.config import load_config  # noqa: E402
from jobs.lake import Lake  # noqa: E402
from jobs.score_impressions import TEXT, candidate_pairs, chunk_of, score_chunk  # noqa: E402
from jobs.session import build_session  # noqa: E402
from models.teacher import CrossEncoderTeacher  # noqa: E402
from models.int8 import Int8Plan, quantize_int8  # noqa: E402
from models.metrics import spearman  # noqa: E402
from models.scoring import ScoringSettings, TeacherScorer  # noqa: E402

DEFAULT_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "crowdflower" / "labels.csv"


def plain_loop(folder: Path, queries, texts, precision: str, batch_size: int, max_length: int,
               threads: int | None = None) -> float:
    """pairs/s of a plain loop: tokenize each batch in input order, pad to its longest, forward."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        return _plain_loop(folder, queries, texts, precision, batch_size, max_length)
    finally:
        torch.set_num_threads(before)


def _plain_loop(folder: Path, queries, texts, precision: str, batch_size: int, max_length: int) -> float:
    model = CrossEncoderTeacher.load(folder)
    if precision == "int8":  # the same layers int8 as the scorer's
        plan = Int8Plan.load(folder)
        model = quantize_int8(model, plan.keep_fp32 if plan else ())
    tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer")
    started = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(queries), batch_size):
            enc = tokenizer(list(queries[i: i + batch_size]), list(texts[i: i + batch_size]), truncation="only_second",
                            max_length=max_length, padding="longest", return_tensors="pt")
            torch.softmax(model(enc["input_ids"], enc["attention_mask"]), -1)
    return len(queries) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", type=Path, required=True, help="a published teacher folder")
    parser.add_argument("--impressions", type=int, default=1_000_000)
    parser.add_argument("--pins", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=20_000)
    parser.add_argument("--pair-sample", type=int, default=8_000, help="unique pairs scored by Spark and plain")
    parser.add_argument("--naive-sample", type=int, default=1_000, help="impressions scored by the naive loop")
    parser.add_argument("--batch-size", type=int, default=16, help="model batch of every loop (scorer.batch_size)")
    parser.add_argument("--fidelity-pairs", type=int, default=0, help="CrowdFlower pairs (0 = all)")
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    cores = torch.get_num_threads()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="pinpipe-bench-score-"))
    cfg = load_config("local", overrides=[
        f"lake.root={work / 'lake'}", "simulate.days=1", f"simulate.impressions_per_day={args.impressions}",
        f"simulate.n_pins={args.pins}", f"simulate.n_queries={args.queries}", "simulate.n_labels=10",
        "simulate.partitions=8", "spark.shuffle_partitions=8", "spark.log_level=ERROR", "features.as_of=2026-11-02",
        "scorer.start_date=2026-11-01", "scorer.precision=int8", f"scorer.batch_size={args.batch_size}"])
    spark = build_session("pinpipe-bench-score", cfg.spark)
    lake = Lake.at(cfg.lake.root)
    started = time.perf_counter()
    simulate.run(spark, cfg)
    pin_features.run(spark, cfg)
    print(f"simulated day + pin text: {time.perf_counter() - started:.0f} s ({work})", flush=True)

    # 1. dedup
    impressions = lake.read(spark, "search_impressions")
    started = time.perf_counter()
    pairs, _ = candidate_pairs(impressions, lake.read(spark, "pins"), lake.read(spark, "pin_text_features"),
                               cfg.scorer.max_text_chars)
    pairs = pairs.persist()
    n_pairs = pairs.count()
    dedup_s = time.perf_counter() - started
    n_imps = impressions.count()
    print(f"impressions {n_imps:,} -> unique scorable pairs {n_pairs:,} (dedup {n_imps / n_pairs:.1f}x) in {dedup_s:.1f} s",
          flush=True)

    # 2. Spark vs plain on the same sample of unique pairs
    sample = (pairs.withColumn("_h", chunk_of(1 << 30)).orderBy("_h").limit(args.pair_sample).drop("_h", "impressions")
              .persist())
    sample_pd = sample.toPandas()
    n = len(sample_pd)
    partitions = spark.sparkContext.defaultParallelism
    # warm-up: every worker loads (and quantizes) its model once, as in a long job; not timed
    score_chunk(sample.limit(partitions * 8), str(args.teacher), cfg.scorer, "bench", partitions) \
        .write.format("noop").mode("overwrite").save()
    with WorkerMemory() as memory:
        started = time.perf_counter()
        score_chunk(sample, str(args.teacher), cfg.scorer, "bench", partitions) \
            .write.format("noop").mode("overwrite").save()
        spark_rate = n / (time.perf_counter() - started)
    scorer = TeacherScorer(args.teacher, ScoringSettings(precision="int8"))
    plain_rate = plain_loop(args.teacher, sample_pd["query"], sample_pd[TEXT], "int8", args.batch_size, scorer.max_length)
    print(f"Spark job, int8, {spark.sparkContext.defaultParallelism} workers x 1 thread: {spark_rate:8.1f} pairs/s "
          f"({n:,} pairs)")
    print(f"plain HF loop, int8, 1 process x {cores} threads:        {plain_rate:8.1f} pairs/s")
    print(f"ratio Spark / plain: {spark_rate / plain_rate:.2f}", flush=True)
    half = n // 2
    one_thread = plain_loop(args.teacher, sample_pd["query"][:half], sample_pd[TEXT][:half], "int8", args.batch_size,
                            scorer.max_length, threads=1)
    print(f"plain HF loop, int8, 1 thread: {one_thread:8.1f} pairs/s; x {partitions} workers = "
          f"{one_thread * partitions:.1f}; ratio Spark / that: {spark_rate / (one_thread * partitions):.2f}", flush=True)
    peaks = sorted(memory.peak.values(), reverse=True)
    print("peak RSS per Python worker: " + ", ".join(f"{p / 2**20:,.0f} MiB" for p in peaks[:4]), flush=True)

    # 3. end to end vs naive fp32 over every impression
    naive_rows = (impressions.limit(args.naive_sample).join(lake.read(spark, "pin_text_features")
                  .select("pin_id", F.col("pin_text").alias(TEXT)), "pin_id").toPandas())
    naive_rate = plain_loop(args.teacher, naive_rows["query"].fillna(""), naive_rows[TEXT], "fp32", args.batch_size,
                            scorer.max_length)
    ours_s = dedup_s + n_pairs / spark_rate
    print(f"naive fp32 loop over impressions: {naive_rate:8.1f} impressions/s ({len(naive_rows):,} measured)")
    print(f"pinpipe end to end: {n_imps / ours_s:8.1f} impressions/s (dedup {dedup_s:.0f} s + {n_pairs:,} pairs at "
          f"{spark_rate:.1f}/s = {ours_s:,.0f} s, extrapolated)")
    print(f"ratio end to end / naive: {n_imps / ours_s / naive_rate:.1f}x", flush=True)
    spark.stop()

    # 4. int8 vs fp32 fidelity on CrowdFlower
    cf = pd.read_csv(args.csv)
    if args.fidelity_pairs:
        cf = cf.head(args.fidelity_pairs)
    texts = (cf["product_title"].fillna("") + " " + cf["product_description"].fillna("")).tolist()
    fp32 = TeacherScorer(args.teacher, ScoringSettings(precision="fp32"))
    p32, e32, l32 = fp32.score(cf["query"].tolist(), texts)
    p8, e8, l8 = scorer.score(cf["query"].tolist(), texts)
    print(f"int8 vs fp32 on {len(cf):,} CrowdFlower pairs: Spearman {spearman(e32, e8):.4f}, "
          f"argmax agreement {(p32.argmax(1) == p8.argmax(1)).mean():.4f}, level agreement {(l32 == l8).mean():.4f}, "
          f"max |delta expected| {np.abs(e32 - e8).max():.4f}")
    plan = scorer.int8_plan
    print(f"int8 plan: {len(plan.keep_fp32) if plan else 0} linear layers kept fp32 "
          f"{list(plan.keep_fp32) if plan else '(no int8.json: all int8)'}")


if __name__ == "__main__":
    main()
