"""Students vs teacher vs BM25 on held-out CrowdFlower folds, the scale-up curve, and inference.

    .venv/bin/python bench/students.py [--workdir DIR] [--holdout-folds 6 7] [--sizes 1000 3000 10000 30000 0]

Every number comes from the real jobs on a lake under ``--workdir`` (stages already done there
are re-run idempotently; the teacher is trained only if none is promoted):

1. ``ingest`` (CrowdFlower) and ``pin_features``; ``train_teacher`` with the held-out folds.
2. ``distill_corpus`` (queries x products: BM25 candidates + random products + judged pairs),
   ``score_impressions`` (the int8 teacher labels them) and ``student_features``.
3. ``train_student`` variants, each with ``--seeds`` training seeds (mean and std) — MLP and
   MMoE, with distillation (MLP pointwise KL, MMoE pointwise + pairwise) and without (hard
   teacher levels), and a student on human labels only. Each reports, on the held-out folds'
   labels (which trained nothing and chose nothing), the student, the teacher and BM25 on the
   same rows.
4. The scale-up curves: the distilled MLP on a seeded sample of N teacher-labeled pairs (0 = all),
   with the training human labels mixed in and with teacher labels only.
5. Inference: the distilled MLP and MMoE over ``student_features`` in a Spark Arrow UDF vs a
   plain torch loop over the same Arrow batches in one process with the same cores (and the
   Spark side with no model: the cost of shipping the rows); both take each row's two text
   positions (joined in Spark) and dense features (``dense_vector``, one column), and gather
   the embeddings from one lookup of the slice's texts (a broadcast in Spark). fp32 vs bf16
   (CPU autocast) with the metric change on the held-out rows.

Writes ``reports/students.json`` and ``reports/students.png``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa  # module-level: Spark reads the Arrow UDF's type hints from here

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.record import REPORTS, Figure, Record, write_record  # noqa: E402
from jobs import (  # noqa: E402
    distill_corpus,
    ingest,
    pin_features,
    score_impressions,
    student_features,
    train_student,
    train_teacher,
)
from jobs.config import PinpipeConfig, load_config  # noqa: E402
from models.artifacts.registry import Registry  # noqa: E402
from models.relevance.metrics import CUTS_KAPPA  # noqa: E402
from runtime.entry import configure_logging  # noqa: E402
from runtime.lake import Lake  # noqa: E402
from runtime.session import spark_session  # noqa: E402

CORPUS_DATE = "2026-11-20"
VARIANTS: dict[str, list[str]] = {
    "mlp_distilled": ["student.model.kind=mlp", "student.training.distillation=pointwise"],
    "mlp_no_distillation": ["student.model.kind=mlp", "student.training.distillation=none"],
    "mmoe_distilled": ["student.model.kind=mmoe", "student.training.distillation=both"],
    "mmoe_no_distillation": ["student.model.kind=mmoe", "student.training.distillation=none"],
    "mlp_human_only": ["student.model.kind=mlp", "student.human_only=true"],
}


def base_overrides(work: Path, folds: list[int]) -> list[str]:
    return [
        f"lake.root={work / 'lake'}",
        "ingest.sources=[crowdflower]",
        "teacher.label_sources=[crowdflower]",
        f"evaluation.holdout_folds=[{','.join(map(str, folds))}]",
        f"corpus.date={CORPUS_DATE}",
        f"scorer.start_date={CORPUS_DATE}",
        f"scorer.end_date={CORPUS_DATE}",
        f"student_features.as_of={CORPUS_DATE}",
        "student_features.impression_sources=[corpus]",
        "student.impression_sources=[corpus]",
        "student.label_sources=[crowdflower]",
        "student.promote=false",
        "student.registry_keep=100",
    ]


def prepare(spark, cfg: PinpipeConfig) -> dict[str, Any]:
    """Run the stages before the students; returns their summary lines."""
    lines = {}
    for name, job in (("ingest", ingest), ("pin_features", pin_features)):
        lines[name] = job.run(spark, cfg).line()
    registry = Registry(Lake.of(cfg.lake).artifacts())
    if registry.current(cfg.teacher.family) is None:
        lines["train_teacher"] = train_teacher.run(spark, cfg).line()
    for name, job in (
        ("distill_corpus", distill_corpus),
        ("score_impressions", score_impressions),
        ("student_features", student_features),
    ):
        lines[name] = job.run(spark, cfg).line()
    return lines


def train(spark, work: Path, folds: list[int], extra: list[str]) -> dict[str, Any]:
    cfg = load_config("local", overrides=[*base_overrides(work, folds), *extra])
    started = time.perf_counter()
    report = train_student.run(spark, cfg)
    family, version = report.version.split("/")
    folder = Registry(Lake.of(cfg.lake).artifacts()).path(family, version)
    metrics = json.loads((folder / "metrics.json").read_text())
    manifest = json.loads((folder / "manifest.json").read_text())
    return {
        "folder": str(folder),
        "seconds": time.perf_counter() - started,
        "metrics": metrics,
        "inputs": manifest["inputs"],
    }


def summary(m: dict[str, Any]) -> dict[str, float]:
    return {
        "kappa": m["kappa"],
        "kappa_cuts": m["extra"][CUTS_KAPPA] if CUTS_KAPPA in m["extra"] else m["kappa"],
        **{f"auroc_{t}": v for t, v in m["auroc_at"].items()},
        "ndcg_20": m["ndcg_at_20"],
        "n": m["n"],
    }


def lift_kept(student: float, teacher: float, bm25: float) -> float:
    """The share of the teacher's lift over BM25 the student keeps."""
    return (student - bm25) / (teacher - bm25)


def seeded(spark, work: Path, folds: list[int], extra: list[str], seeds: list[int]) -> list[dict[str, Any]]:
    """The same student trained with each seed (initialisation and batch order)."""
    return [train(spark, work, folds, [*extra, f"student.training.seed={seed}"]) for seed in seeds]


def mean_std(runs: list[dict[str, Any]], part: str = "test") -> dict[str, dict[str, float]]:
    """Per metric: the mean and standard deviation over seeded runs."""
    import numpy as np

    rows = [summary(r["metrics"][part]) for r in runs]
    return {
        k: {"mean": float(np.mean([r[k] for r in rows])), "std": float(np.std([r[k] for r in rows]))} for k in rows[0]
    }


def inference(
    spark,
    cfg: PinpipeConfig,
    folders: dict[str, str],
    arrow_rows: int,
    model_rows: int,
    repeats: int,
    trials: int,
) -> dict[str, dict[str, float]]:
    """Per student: rows/s in a Spark Arrow UDF vs a plain loop over the same Arrow batches (fp32
    and bf16), and the Spark side with no model (shipping the rows only). The rows are built
    once, with their texts' lookup positions joined in Spark; both sides take the same columns
    (two positions and the dense-feature vector per row) and gather embeddings from the same
    lookup (built once, a broadcast in Spark)."""
    import numpy as np
    import torch
    from pyspark.sql import functions as F

    from jobs.embedding_tables import embedding_lookup
    from models.relevance.student_scoring import StudentScorer
    from schemas import student_features as SF
    from udfs.student_scorer import INPUTS, score_arrays, scores, with_positions

    lake = Lake.of(cfg.lake)
    features = lake.read(spark, "student_features").filter(F.col(SF.FEATURE_VERSION) == cfg.student.feature_version)
    started = time.perf_counter()
    lookup = embedding_lookup(lake.read(spark, "text_embeddings"), features)
    shared = spark.sparkContext.broadcast(lookup)
    lookup_seconds = time.perf_counter() - started
    rows = with_positions(features, lookup).select(SF.QUERY, SF.PIN_ID, *INPUTS)
    if repeats > 1:  # more rows than the corpus has, to time steady state
        base = rows
        for _ in range(repeats - 1):
            rows = rows.unionByName(base)
    cores = spark.sparkContext.defaultParallelism
    rows = rows.repartition(cores).persist()
    n = rows.count()
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(arrow_rows))

    batches = [  # the same rows and columns, in Arrow batches of the same size
        [batch.column(name) for name in INPUTS] for batch in rows.toArrow().to_batches(max_chunksize=arrow_rows)
    ]
    torch.set_num_threads(cores)  # the plain loop: one process, every core

    def spark_pass(frame) -> Callable[[], None]:
        return lambda: frame.write.format("noop").mode("overwrite").save()

    def plain_pass(scorer: StudentScorer) -> Callable[[], None]:
        def run() -> None:
            for columns in batches:
                score_arrays(scorer, lookup, columns, model_rows)

        return run

    @F.arrow_udf("double")
    def nothing(*columns: pa.Array) -> pa.Array:  # the floor: the same columns shipped, no model
        return pa.array(np.zeros(len(columns[0])))

    def medians(passes: dict[str, Callable[[], None]]) -> dict[str, float]:
        """Median seconds of ``trials`` passes each, after one warm-up pass each (Spark workers
        load the model and the lookup; torch's first pass runs ~1.5x slower), the sides taking
        turns so that a slow spell of the machine falls on both."""
        for run in passes.values():
            run()
        seconds: dict[str, list[float]] = {name: [] for name in passes}
        for _ in range(trials):
            for name, run in passes.items():
                started = time.perf_counter()
                run()
                seconds[name].append(time.perf_counter() - started)
        return {name: statistics.median(values) for name, values in seconds.items()}

    transfer = medians({"transfer": spark_pass(rows.select(SF.QUERY, SF.PIN_ID, nothing(*INPUTS)))})["transfer"]
    out = {}
    for name, folder in folders.items():
        t = medians(
            {f"spark_{p}": spark_pass(scores(rows, folder, shared, p, model_rows)) for p in ("fp32", "bf16")}
            | {f"plain_{p}": plain_pass(StudentScorer(folder, precision=p)) for p in ("fp32", "bf16")}
        )
        out[name] = {
            "rows": float(n),
            "cores": float(cores),
            "trials": float(trials),
            "spark_rows_per_s": n / t["spark_fp32"],
            "spark_bf16_rows_per_s": n / t["spark_bf16"],
            "spark_transfer_only_rows_per_s": n / transfer,
            "plain_rows_per_s": n / t["plain_fp32"],
            "plain_bf16_rows_per_s": n / t["plain_bf16"],
            "lookup_texts": float(len(lookup)),
            "lookup_mb": lookup.matrix.nbytes / 2**20,
            "lookup_build_and_broadcast_s": lookup_seconds,
        }
    rows.unpersist()
    return out


def bf16_metrics(spark, cfg: PinpipeConfig, folder: str, folds: list[int]) -> dict[str, dict[str, float]]:
    """The held-out rows scored by the published student in fp32 and in bf16."""
    import numpy as np
    from pyspark.sql import functions as F

    from jobs.embedding_tables import embedding_lookup
    from jobs.train_student import LEVEL, human_rows
    from models.relevance.levels import LevelThresholds, to_model_levels
    from models.relevance.metrics import evaluate_relevance, quadratic_weighted_kappa
    from models.relevance.student_scoring import StudentScorer
    from schemas import human_labels as HL
    from schemas import student_features as SF

    lake = Lake.of(cfg.lake)
    labels = human_rows(lake.read(spark, "human_labels").filter(F.col(HL.SOURCE) == "crowdflower"))
    held = labels.filter(F.col(HL.FOLD).isin(folds))
    features = lake.read(spark, "student_features").filter(F.col(SF.FEATURE_VERSION) == cfg.student.feature_version)
    held_features = features.join(held.select(SF.QUERY, SF.PIN_ID), [SF.QUERY, SF.PIN_ID], "left_semi")
    lookup = embedding_lookup(lake.read(spark, "text_embeddings"), held_features)
    rows = held.join(features, [SF.QUERY, SF.PIN_ID]).toPandas().sort_values(HL.LABEL_ID, ignore_index=True)
    rows[LEVEL] = to_model_levels(rows[HL.RELEVANCE], rows[HL.SCALE_MAX], 4)
    cuts = json.loads((Path(folder) / "decoding.json").read_text())
    thresholds = LevelThresholds(cuts["levels"], cuts["cuts"])
    out = {}
    for precision in ("fp32", "bf16"):
        probs, expected = StudentScorer(folder, precision=precision).score(rows, lookup)
        report = evaluate_relevance(rows[SF.QUERY], rows[LEVEL], probs, [1, 2, 3, 4])
        out[precision] = {
            "kappa": report.kappa,
            "kappa_cuts": quadratic_weighted_kappa(rows[LEVEL], thresholds.predict(expected), 1, 4),
            "auroc_3": report.auroc_at[3],
            "ndcg_20": report.ndcg_at_20,
            "max_abs_prob_diff": 0.0,
        }
        out[precision]["_probs"] = probs
    out["bf16"]["max_abs_prob_diff"] = float(np.abs(out["bf16"]["_probs"] - out["fp32"]["_probs"]).max())
    for v in out.values():
        v.pop("_probs")
    return out


def spark_over_plain(name: str, sp: dict[str, float], precision: str, headline: bool = False) -> Figure:
    """The Spark UDF's rows/s over the plain loop's, at one precision (``inference`` keys)."""
    key = "" if precision == "fp32" else f"_{precision}"
    suffix = "" if precision == "fp32" else f", {precision}"
    ratio = sp[f"spark{key}_rows_per_s"] / sp[f"plain{key}_rows_per_s"]
    return Figure(f"{name} Spark / plain loop{suffix}", ratio, "x", "derived", headline)


def plot(curves: dict[str, list[dict[str, Any]]], refs: dict[str, dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    for ax, key, title in (
        (axes[0], "kappa_cuts", "quadratic kappa (validation cuts)"),
        (axes[1], "auroc_3", "AUROC label>=3"),
    ):
        for label, points in curves.items():
            xs = [c["teacher_pairs"] for c in points]
            ax.errorbar(
                xs,
                [c[key]["mean"] for c in points],
                yerr=[c[key]["std"] for c in points],
                fmt="o-",
                capsize=3,
                label=label,
            )
        for name, style in (("teacher", "--"), ("human_only", ":"), ("bm25", "-.")):
            ax.axhline(
                refs[name][key],
                linestyle=style,
                color={"teacher": "C3", "human_only": "C2", "bm25": "C7"}[name],
                label={"teacher": "teacher (int8)", "human_only": "student, human labels only", "bm25": "BM25"}[name],
            )
        ax.set_xscale("log")
        ax.set_xlabel("teacher-labeled pairs the student learned from")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle("MLP students on held-out CrowdFlower folds (mean and std over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--holdout-folds", type=int, nargs="+", default=[6, 7])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 3000, 10000, 30000, 0])
    parser.add_argument("--inference-repeats", type=int, default=10, help="copies of student_features timed")
    parser.add_argument("--arrow-batch-rows", type=int, default=16384, help="rows per Arrow batch, both sides")
    parser.add_argument("--model-batch-rows", type=int, default=4096, help="rows per torch forward, both sides")
    parser.add_argument("--inference-trials", type=int, default=5, help="timed passes per side (median reported)")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per student (mean and std reported)")
    args = parser.parse_args()
    configure_logging()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="pinpipe-bench-students-"))
    folds = args.holdout_folds
    cfg = load_config("local", overrides=base_overrides(work, folds))
    seeds = list(range(args.seeds))
    curve_variants = {
        "distilled + human labels": VARIANTS["mlp_distilled"],
        "distilled, teacher labels only": [*VARIANTS["mlp_distilled"], "student.training.human_weight=0"],
    }
    with spark_session("pinpipe-bench-students", cfg.spark) as spark:
        stages = prepare(spark, cfg)
        runs = {name: seeded(spark, work, folds, extra, seeds) for name, extra in VARIANTS.items()}
        curves: dict[str, list[dict[str, Any]]] = {}
        for label, extra in curve_variants.items():
            curves[label] = []
            for size in args.sizes:
                done = runs["mlp_distilled"] if size == 0 and label.startswith("distilled +") else None
                points = done or seeded(spark, work, folds, [*extra, f"student.max_teacher_pairs={size}"], seeds)
                pairs = points[0]["inputs"]["train_teacher_pairs"]
                curves[label].append({"teacher_pairs": pairs, **mean_std(points)})
        folders = {name: runs[name][0]["folder"] for name in ("mlp_distilled", "mmoe_distilled")}
        speed = inference(
            spark,
            cfg,
            folders,
            args.arrow_batch_rows,
            args.model_batch_rows,
            args.inference_repeats,
            args.inference_trials,
        )
        precision = bf16_metrics(spark, cfg, runs["mlp_distilled"][0]["folder"], folds)
    first = runs["mlp_distilled"][0]["metrics"]  # the teacher and BM25 are the same rows in every run
    teacher, bm25 = summary(first["teacher_on_test"]), summary(first["bm25_on_test"])
    human_only = {k: v["mean"] for k, v in mean_std(runs["mlp_human_only"]).items()}
    refs = {"teacher": teacher, "bm25": bm25, "human_only": human_only}
    png = REPORTS / "students.png"
    plot(curves, refs, png)
    figures = [
        Figure("teacher kappa (validation cuts)", teacher["kappa_cuts"]),
        Figure("teacher kappa (argmax)", teacher["kappa"]),
        Figure("teacher AUROC>=3", teacher["auroc_3"]),
        Figure("teacher nDCG@20", teacher["ndcg_20"]),
        Figure("BM25 kappa (validation cuts)", bm25["kappa_cuts"]),
        Figure("BM25 AUROC>=3", bm25["auroc_3"]),
        Figure("BM25 nDCG@20", bm25["ndcg_20"]),
    ]
    for name, seeded_runs in runs.items():
        s = mean_std(seeded_runs)
        best = name == "mlp_distilled"
        figures += [
            Figure(f"{name} kappa (validation cuts)", s["kappa_cuts"]["mean"], headline=best),
            Figure(f"{name} kappa (validation cuts) std", s["kappa_cuts"]["std"]),
            Figure(f"{name} kappa (argmax)", s["kappa"]["mean"]),
            Figure(f"{name} AUROC>=2", s["auroc_2"]["mean"]),
            Figure(f"{name} AUROC>=3", s["auroc_3"]["mean"], headline=best),
            Figure(f"{name} AUROC>=3 std", s["auroc_3"]["std"]),
            Figure(f"{name} AUROC>=4", s["auroc_4"]["mean"]),
            Figure(f"{name} nDCG@20", s["ndcg_20"]["mean"]),
            Figure(
                f"{name} lift kept, kappa",
                lift_kept(s["kappa_cuts"]["mean"], teacher["kappa_cuts"], bm25["kappa_cuts"]),
                kind="derived",
                headline=best,
            ),
            Figure(
                f"{name} lift kept, AUROC>=3",
                lift_kept(s["auroc_3"]["mean"], teacher["auroc_3"], bm25["auroc_3"]),
                kind="derived",
                headline=best,
            ),
            Figure(f"{name} training time (seed 0)", seeded_runs[0]["seconds"], "s"),
        ]
    for label, points in curves.items():
        for point in points:
            prefix = f"curve {label}, {point['teacher_pairs']:,} pairs"
            figures.append(Figure(f"{prefix} kappa", point["kappa_cuts"]["mean"]))
            figures.append(Figure(f"{prefix} AUROC>=3", point["auroc_3"]["mean"]))
    for name, sp in speed.items():
        figures += [
            Figure(f"{name} Spark UDF rows/s", sp["spark_rows_per_s"], "rows/s"),
            Figure(f"{name} plain loop rows/s", sp["plain_rows_per_s"], "rows/s"),
            spark_over_plain(name, sp, "fp32", headline=name == "mlp_distilled"),
            Figure(f"{name} Spark transfer only (no model) rows/s", sp["spark_transfer_only_rows_per_s"], "rows/s"),
            Figure(
                f"{name} bf16 / fp32 plain loop", sp["plain_bf16_rows_per_s"] / sp["plain_rows_per_s"], "x", "derived"
            ),
            Figure(f"{name} Spark UDF bf16 rows/s", sp["spark_bf16_rows_per_s"], "rows/s"),
            spark_over_plain(name, sp, "bf16"),
        ]
    figures += [
        Figure(
            "bf16 kappa change",
            precision["bf16"]["kappa_cuts"] - precision["fp32"]["kappa_cuts"],
            kind="derived",
            headline=True,
        ),
        Figure("bf16 AUROC>=3 change", precision["bf16"]["auroc_3"] - precision["fp32"]["auroc_3"], kind="derived"),
        Figure("bf16 max |prob diff|", precision["bf16"]["max_abs_prob_diff"]),
    ]
    write_record(
        Record(
            "students",
            f"Students on held-out CrowdFlower folds {folds} vs teacher and BM25 (same rows); scale-up; inference",
            "bench/students.py " + " ".join(sys.argv[1:]),
            figures,
            inputs={
                "holdout_folds": folds,
                "stages": stages,
                "seeds": seeds,
                "variants": {name: {"overrides": VARIANTS[name], "inputs": r[0]["inputs"]} for name, r in runs.items()},
                "variant_metrics": {name: mean_std(r) for name, r in runs.items()},
                "curves": {label: {"overrides": curve_variants[label], "points": pts} for label, pts in curves.items()},
                "inference": speed,
                "precision": precision,
                "plot": str(png.relative_to(REPORTS.parent)),
            },
        )
    )


if __name__ == "__main__":
    main()
