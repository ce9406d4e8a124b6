"""Scoring impressions with the teacher: the real job end to end, and fair plain baselines.

    .venv/bin/python bench/score.py [--impressions 100000] [--teacher lake/artifacts/teacher/v0001]

1. One simulated day of Zipf search traffic (``--impressions``) and its pin text go into a
   scratch lake; the teacher (``--teacher``, a published folder, or the bundled MiniLM with an
   untrained head: speed does not depend on the weights' values) is published there with its
   int8 plan and its OpenVINO export (as ``train_teacher`` publishes one).
2. End to end, measured: the real ``score_impressions`` job (``run``: dedup, quarantine, model
   load on every worker, int8 scoring on ``--engine``, one MERGE commit per chunk,
   ``labeled_impressions``)
   timed over the whole day: impressions/s.
3. Spark vs plain, same pairs, same int8 plan, same length sorting, same cores, both warmed up:
   the job's scoring path (``mapInPandas``, one 1-thread model per core) against the same scorer
   (``models.relevance.scoring.TeacherScorer``: length-ordered batches) in one process with all cores.
4. Naive: a plain fp32 loop over every impression (no dedup, input order, batches padded to
   their longest), its rate measured on ``--naive-sample`` impressions; the ratio of rates is
   derived, the naive loop's time for the whole day a projection.

Writes ``reports/score.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from bench.record import Figure, Record, write_record  # noqa: E402
from bench.worker_memory import WorkerMemory  # noqa: E402
from jobs import pin_features, score_impressions, simulate  # noqa: E402
from jobs.config import load_config  # noqa: E402
from models.artifacts.registry import Registry  # noqa: E402
from models.packaged import minilm_dir  # noqa: E402
from models.relevance.scoring import (  # noqa: E402
    ScoringSettings,
    TeacherScorer,
    calibrate_teacher_int8,
    export_teacher_openvino,
)
from models.relevance.teacher import CrossEncoderTeacher  # noqa: E402
from models.relevance.teacher_settings import TeacherSettings  # noqa: E402
from runtime.entry import configure_logging  # noqa: E402
from runtime.lake import Lake  # noqa: E402
from runtime.session import build_session  # noqa: E402


def publish_teacher(lake: Lake, source: Path | None, calibration: tuple[list[str], list[str]]) -> str:
    """Publish ``source`` (a teacher folder) or an untrained-head MiniLM teacher, promoted."""

    def build(folder: Path) -> None:
        if source is not None:
            shutil.copytree(source, folder, dirs_exist_ok=True, ignore=shutil.ignore_patterns("manifest.json"))
            return
        torch.manual_seed(0)
        model = CrossEncoderTeacher.build(TeacherSettings(backbone_path=str(minilm_dir())))
        model.save(folder, AutoTokenizer.from_pretrained(minilm_dir()))
        (folder / "encoding.json").write_text(json.dumps({"max_length": 128, "query_tokens": 16}))
        calibrate_teacher_int8(folder, *calibration, target=0.993).save(folder)
        export_teacher_openvino(folder, *calibration, target=0.993)

    registry = Registry(lake.artifacts())
    version = registry.publish("teacher", build)
    registry.promote("teacher", version)
    return str(registry.path("teacher", version))


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def naive_rate(folder: str, queries: list[str], texts: list[str], batch_size: int, max_length: int) -> float:
    """Impressions/s of a plain fp32 loop: input order, per-batch tokenization, pad to longest."""
    model = CrossEncoderTeacher.load(folder)
    tokenizer = AutoTokenizer.from_pretrained(f"{folder}/tokenizer")

    def loop(qs, ts):
        with torch.inference_mode():
            for i in range(0, len(qs), batch_size):
                enc = tokenizer(
                    qs[i : i + batch_size],
                    ts[i : i + batch_size],
                    truncation="only_second",
                    max_length=max_length,
                    padding="longest",
                    return_tensors="pt",
                )
                torch.softmax(model(enc["input_ids"], enc["attention_mask"]), -1)

    loop(queries[: batch_size * 2], texts[: batch_size * 2])  # warm-up
    return len(queries) / timed(lambda: loop(queries, texts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", type=Path, default=None, help="a published teacher folder (default: see 1.)")
    parser.add_argument("--impressions", type=int, default=100_000)
    parser.add_argument("--pins", type=int, default=20_000)
    parser.add_argument("--queries", type=int, default=2_000)
    parser.add_argument("--pair-sample", type=int, default=2_000, help="unique pairs for Spark vs plain")
    parser.add_argument("--naive-sample", type=int, default=1_000, help="impressions timed in the naive loop")
    parser.add_argument("--batch-size", type=int, default=16, help="model batch of every loop (scorer.batch_size)")
    parser.add_argument("--engine", default="openvino", help="scorer.cpu_engine: openvino | torch")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    configure_logging()  # the jobs' progress lines (chunks committed, epochs, ETA)

    work = args.workdir or Path(tempfile.mkdtemp(prefix="pinpipe-bench-score-"))
    cfg = load_config(
        "local",
        overrides=[
            f"lake.root={work / 'lake'}",
            "simulate.days=1",
            f"simulate.impressions_per_day={args.impressions}",
            f"simulate.n_pins={args.pins}",
            f"simulate.n_queries={args.queries}",
            "simulate.n_labels=10",
            "spark.log_level=ERROR",
            "features.as_of=2026-11-02",
            "scorer.start_date=2026-11-01",
            "scorer.precision=int8",
            f"scorer.batch_size={args.batch_size}",
            f"scorer.cpu_engine={args.engine}",
        ],
    )
    spark = build_session("pinpipe-bench-score", cfg.spark)
    lake = Lake.of(cfg.lake)
    cores = spark.sparkContext.defaultParallelism
    simulate.run(spark, cfg)
    pin_features.run(spark, cfg)
    text = lake.read(spark, "pin_text_features").select("pin_id", F.col("pin_text").alias("text"))
    sample = lake.read(spark, "search_impressions").limit(args.naive_sample).join(text, "pin_id").toPandas()
    queries, texts = sample["query"].fillna("").tolist(), sample["text"].tolist()
    folder = publish_teacher(lake, args.teacher, (queries[:128], texts[:128]))
    print(f"scratch lake and teacher ready in {work}", flush=True)

    # 2. the real job, end to end
    with WorkerMemory() as memory:
        started = time.perf_counter()
        job = score_impressions.run(spark, cfg)
        job_s = time.perf_counter() - started
    print(job.line(), flush=True)

    # 3. Spark scoring path vs the same scorer in one process, on the same pairs
    pairs = (
        lake.read(spark, "teacher_scores")
        .select("query", "pin_id")
        .orderBy(F.xxhash64("query", "pin_id"))
        .limit(args.pair_sample)
        .join(text, "pin_id")
        .persist()
    )
    n = pairs.count()
    pairs_pd = pairs.toPandas()
    scoring = ScoringSettings("int8", args.batch_size, cfg.scorer.max_batch_tokens, engine=args.engine)

    def spark_pass(rows):
        score_impressions.score_chunk(rows, folder, scoring, "bench", cores).write.format("noop").mode(
            "overwrite"
        ).save()

    spark_pass(pairs.limit(cores * 32))  # warm-up (the workers hold the model after the job anyway)
    spark_rate = n / timed(lambda: spark_pass(pairs))
    spark.stop()
    scorer = TeacherScorer(folder, scoring)
    scorer.score(pairs_pd["query"][:64].tolist(), pairs_pd["text"][:64].tolist())  # warm-up
    plain_rate = n / timed(lambda: scorer.score(pairs_pd["query"].tolist(), pairs_pd["text"].tolist()))

    # 4. naive fp32 loop over impressions
    naive = naive_rate(folder, queries, texts, args.batch_size, scorer.max_length)
    job_rate = job.impressions / job_s
    write_record(
        Record(
            "score",
            f"score_impressions end to end, {job.impressions:,} impressions ({job.precision} MiniLM teacher, CPU)",
            "bench/score.py " + " ".join(sys.argv[1:]),
            [
                Figure("impressions", float(job.impressions), "", headline=False),
                Figure("unique scorable pairs", float(job.scored), ""),
                Figure("dedup", job.unique_pairs and job.impressions / job.unique_pairs, "x", "derived", headline=True),
                Figure("job wall time", job_s, "s"),
                Figure("job end to end", job_rate, "impressions/s", headline=True),
                Figure("naive fp32 loop", naive, "impressions/s", headline=True),
                Figure("end to end vs naive", job_rate / naive, "x", "derived", headline=True),
                Figure("naive loop for the whole day", job.impressions / naive, "s", "projection"),
                Figure("Spark scoring path", spark_rate, "pairs/s"),
                Figure("plain scorer, 1 process", plain_rate, "pairs/s"),
                Figure("Spark / plain", spark_rate / plain_rate, "x", "derived", headline=True),
                Figure("peak RSS per Python worker", max(memory.peak.values(), default=0) / 2**30, "GiB"),
            ],
            inputs={
                "impressions_per_day": args.impressions,
                "pins": args.pins,
                "queries": args.queries,
                "pair_sample": n,
                "naive_sample": len(sample),
                "batch_size": args.batch_size,
                "spark_cores": cores,
                "torch_threads_plain": torch.get_num_threads(),
                "precision": f"{job.precision} (job, Spark, plain); torch fp32 (naive)",
                "engine": args.engine,
                "teacher": str(args.teacher)
                if args.teacher
                else "bundled MiniLM, untrained head, int8 plan on 128 pairs",
                "int8_fp32_layers (torch plan)": len(scorer.int8_plan.keep_fp32) if scorer.int8_plan else None,
            },
        )
    )


if __name__ == "__main__":
    main()
