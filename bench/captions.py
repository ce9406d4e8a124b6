"""Captioning throughput: the Spark UDF path vs a plain loop, same model, same images, one run.

    .venv/bin/python bench/captions.py                      # real-size BLIP-base shape, random weights
    .venv/bin/python bench/captions.py --preset tiny --images 400
    .venv/bin/python bench/captions.py --model-path /models/blip-base   # real weights

Images are the COCO images in ../shared/data/coco_mini (repeated to --images). Both sides are
warmed up first (model loaded; Spark's Python workers started and holding the model), then
timed on the same paths. Prints images/s for each, the ratio, and peak resident memory of the
plain process and of each Spark Python worker. On a CUDA machine both sides use the GPU.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402
import torch  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from bench.record import Figure, Record, write_record  # noqa: E402
from bench.worker_memory import WorkerMemory  # noqa: E402
from models.random_models import save_random_blip  # noqa: E402
from runtime.config import SparkConfig  # noqa: E402
from runtime.session import build_session  # noqa: E402
from udfs.captioner import Captioner, caption_col, caption_paths  # noqa: E402
from udfs.captioner_settings import CaptionerSettings  # noqa: E402

DEFAULT_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco_mini" / "images"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="base", choices=["tiny", "base"], help="random BLIP shape")
    parser.add_argument("--model-path", help="use this BLIP folder instead of random weights")
    parser.add_argument("--images", type=int, default=32, help="images per timed run")
    parser.add_argument("--image-dir", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--cores", type=int, default=os.cpu_count())
    args = parser.parse_args()

    sources = sorted(str(p) for p in args.image_dir.glob("*.jpg"))
    if not sources:
        sys.exit(f"no .jpg images in {args.image_dir}")
    paths = [sources[i % len(sources)] for i in range(args.images)]
    tmp = Path(tempfile.mkdtemp(prefix="pinpipe-bench-"))
    model_path = args.model_path or str(save_random_blip(tmp / f"blip-{args.preset}", args.preset))
    cfg = CaptionerSettings(model_path=model_path, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens)
    # Random weights rarely emit EOS: every caption runs to max_new_tokens (the worst case).
    print(
        f"model={model_path} images={len(paths)} batch={cfg.batch_size} max_new_tokens={cfg.max_new_tokens} "
        f"cores={args.cores} cuda={torch.cuda.is_available()}"
    )

    # --- plain loop: one process, all cores as torch threads
    torch.set_num_threads(args.cores)
    captioner = Captioner(cfg)
    caption_paths(captioner, pd.Series(paths[: cfg.batch_size]))  # warm-up
    start = time.perf_counter()
    plain = caption_paths(captioner, pd.Series(paths))
    plain_s = time.perf_counter() - start
    plain_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    del captioner

    # --- Spark job: local[cores], one Python worker per core, each task one thread
    spark = build_session(
        "bench-captions",
        SparkConfig(
            master=f"local[{args.cores}]",
            driver_memory="4g",
            shuffle_partitions=args.cores,
            ui_enabled=False,
            log_level="ERROR",
            extra={"spark.python.worker.reuse": "true"},
        ),
    )
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(cfg.batch_size))

    def job(items: list[str]):
        df = spark.createDataFrame([(p,) for p in items], "path string").repartition(args.cores)
        return df.select(caption_col(F.col("path"), cfg).alias("r")).select("r.caption", "r.error")

    job(paths[: cfg.batch_size * args.cores]).write.format("noop").mode("overwrite").save()  # warm-up: load models
    with WorkerMemory() as memory:
        start = time.perf_counter()
        job(paths).write.format("noop").mode("overwrite").save()
        spark_s = time.perf_counter() - start
    captions = job(paths[:4]).toPandas()
    spark.stop()

    assert plain["error"].isna().all() and captions["error"].isna().all()
    plain_rate, spark_rate = len(paths) / plain_s, len(paths) / spark_s
    print(f"plain loop : {plain_rate:8.2f} images/s  ({plain_s:.1f} s)  peak RSS {plain_rss / 2**20:,.0f} MiB")
    peaks = sorted(memory.peak.values(), reverse=True)[: args.cores]
    print(
        f"spark job  : {spark_rate:8.2f} images/s  ({spark_s:.1f} s)  peak RSS per Python worker "
        f"{', '.join(f'{v / 2**20:,.0f}' for v in peaks) or 'n/a'} MiB"
    )
    print(f"ratio spark/plain: {spark_rate / plain_rate:.3f}")
    shape = "real weights" if args.model_path else f"BLIP-{args.preset} shape, random weights"
    write_record(
        Record(
            f"captions_{'model' if args.model_path else args.preset}",
            f"Captioning, Spark UDF vs plain loop ({shape})",
            "bench/captions.py " + " ".join(sys.argv[1:]),
            [
                Figure("plain loop", plain_rate, "images/s"),
                Figure("Spark job", spark_rate, "images/s"),
                Figure("Spark / plain", spark_rate / plain_rate, "x", "derived", headline=True),
                Figure("peak RSS plain", plain_rss / 2**30, "GiB"),
                Figure("peak RSS per Python worker", max(peaks, default=0) / 2**30, "GiB", headline=True),
            ],
            inputs={
                "images": len(paths),
                "batch_size": cfg.batch_size,
                "max_new_tokens": cfg.max_new_tokens,
                "cores": args.cores,
                "model": model_path if args.model_path else f"random {args.preset}",
            },
        )
    )


if __name__ == "__main__":
    main()
