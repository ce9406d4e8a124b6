"""The nightly's run report: one self-contained HTML file per date (plots as embedded PNGs).

    pinpipe report --date 2026-11-01          # (re)write it from the lake; the nightly writes it too

What it shows, all read from the lake and the registry (``gather``, the I/O) and drawn by
``render`` (pure: data in, HTML out):

* every stage of the date: status, start, duration, rows written per table, its summary line or
  error (the latest row per stage: a resumed nightly shows where each stage finally stood);
* quarantined input rows by source and reason;
* a quality panel at the top: each family's latest candidate, its trivial baselines (BM25, the
  constant level, popularity) and production, on the same rows;
* each model family's gate decisions, the newest first (candidate vs baselines and production on
  the same rows, promoted or not, and why) and the gated metric over past runs;
* score distributions: the teacher's expected relevance of the date's impressions and the
  serving corpus's decayed engagement scores;
* the index versions with the model each was built from and its recall@10;
* first of all, whether production is intact: every family's promoted version and the promoted
  index checked against their manifests' checksums (and the index against its model), as
  serving would load them. A damaged one heads the page, is named in ``pinpipe report``'s
  output, and makes it exit 1 (the report is written all the same).

The file goes to ``nightly.report_dir`` (empty: ``<lake.root>/_reports``), named
``nightly-<date>.html``.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from jobs.config import PinpipeConfig, run_job
from jobs.table import trained_families
from models.artifacts.registry import Registry, RegistryError
from models.artifacts.storage import Storage
from models.retrieval.serving import IndexVersion, IndexVersions, VersionMismatch
from models.retrieval.sharded_index import IndexIntegrityError
from runtime.entry import with_date_option
from runtime.errors import explain
from runtime.lake import Lake
from schemas import pipeline_runs as PR
from schemas import quarantine as Q
from schemas import search_impressions as SI
from schemas import serving_corpus as SC
from schemas import teacher_scores as TS
from schemas import user_candidates as UC

BINS = 30


@dataclass(frozen=True)
class Histogram:
    title: str
    edges: list[float]  # BINS + 1
    counts: list[int]
    log_x: bool = False


@dataclass(frozen=True)
class ArtifactHealth:
    artifact: str  # "teacher/v0003", "index two_tower_items/v0002"
    problem: str = ""  # why it cannot be served as published; "" when intact


@dataclass(frozen=True)
class ReportData:
    date: dt.date
    lake_root: str
    stages: list[dict[str, Any]]  # pipeline_runs rows, the latest per stage, in run order
    quarantine: list[tuple[str, str, str, int]]  # source, target table, reason, rows
    production: dict[str, str | None]  # family -> promoted version
    gates: dict[str, list[dict[str, Any]]]  # family -> gate decisions, oldest first
    histograms: list[Histogram] = field(default_factory=list)
    indexes: list[IndexVersion] = field(default_factory=list)
    index_name: str = ""
    candidates: list[tuple[str, str, int, int, int, int]] = field(default_factory=list)
    # (model, index, users, candidates, distinct pins, interests) of user_candidates on the date
    health: list[ArtifactHealth] = field(default_factory=list)

    @property
    def damaged(self) -> list[ArtifactHealth]:
        return [h for h in self.health if h.problem]


def candidate_rows(spark: SparkSession, lake: Lake, day: dt.date) -> list[tuple[str, str, int, int, int, int]]:
    """Per (model, index) of ``user_candidates`` on ``day``: users, rows, distinct pins, interests."""
    if not lake.exists(spark, "user_candidates"):
        return []
    rows = lake.read(spark, "user_candidates").filter(F.col(UC.DT) == F.lit(day))
    grouped = rows.groupBy(UC.MODEL_VERSION, UC.INDEX_VERSION).agg(
        F.countDistinct(UC.USER_ID), F.count(F.lit(1)), F.countDistinct(UC.PIN_ID), F.countDistinct(UC.INTEREST)
    )
    return sorted((r[0], r[1], int(r[2]), int(r[3]), int(r[4]), int(r[5])) for r in grouped.collect())


# --------------------------------------------------------------------------- gather (I/O)


def latest_stage_rows(spark: SparkSession, lake: Lake, day: dt.date) -> list[dict[str, Any]]:
    if not lake.exists(spark, "pipeline_runs"):
        return []
    rows = lake.read(spark, "pipeline_runs").filter(F.col(PR.RUN_DATE) == F.lit(day)).orderBy(PR.STARTED_AT).collect()
    latest: dict[str, dict[str, Any]] = {}
    for r in rows:  # started_at order: a later attempt of a stage replaces an earlier one
        latest.pop(r[PR.STAGE], None)
        latest[r[PR.STAGE]] = r.asDict()
    return list(latest.values())


def histogram(spark: SparkSession, lake: Lake, table: str, column: str, where, title: str, log_x: bool = False):
    """A ``BINS``-bin histogram of ``column`` over the rows ``where``, binned in Spark."""
    if not lake.exists(spark, table):
        return None
    values = lake.read(spark, table).filter(where).select(F.col(column).cast("double").alias("v"))
    if log_x:
        values = values.filter(F.col("v") > 0).select(F.log10("v").alias("v"))
    lo, hi = values.agg(F.min("v"), F.max("v")).first()
    if lo is None:
        return None
    width = (hi - lo) / BINS or 1.0
    binned = values.select(F.least(F.floor((F.col("v") - lo) / width), F.lit(BINS - 1)).cast("int").alias("b"))
    counts = dict(binned.groupBy("b").count().collect())
    edges = [lo + i * width for i in range(BINS + 1)]
    if log_x:
        edges = [10**e for e in edges]
    return Histogram(title, edges, [int(counts.get(i, 0)) for i in range(BINS)], log_x)


def _problem(check: Callable[[], object]) -> str:
    try:
        check()
    except (RegistryError, IndexIntegrityError, VersionMismatch, OSError, ValueError) as err:
        return explain(err)
    return ""


def production_health(registry: Registry, families: list[str], versions: IndexVersions) -> list[ArtifactHealth]:
    """Every promoted model version and the promoted index, verified against their manifests."""
    health = []
    for family in families:
        version = registry.current(family)
        if version:
            health.append(ArtifactHealth(f"{family}/{version}", _problem(partial(registry.verify, family, version))))
    index = versions.indexes.current(versions.name)
    if index:

        def check_index() -> None:
            versions.indexes.verify(versions.name, index)
            versions.promoted_pair()

        health.append(ArtifactHealth(f"index {versions.name}/{index}", _problem(check_index)))
    return health


def gather(spark: SparkSession, cfg: PinpipeConfig, day: dt.date) -> ReportData:
    lake = Lake.of(cfg.lake)
    registry = Registry(lake.artifacts())
    families = list(trained_families(cfg).values())
    quarantine = []
    if lake.exists(spark, "quarantine"):
        grouped = lake.read(spark, "quarantine").groupBy(Q.SOURCE, Q.TARGET_TABLE, Q.REASON).count()
        quarantine = sorted(((r[0], r[1], r[2], int(r[3])) for r in grouped.collect()), key=lambda r: -r[3])
    histograms = [
        histogram(
            spark,
            lake,
            "labeled_impressions",
            TS.EXPECTED_RELEVANCE,
            F.col(SI.DT) == F.lit(day),
            f"teacher expected relevance of the impressions of {day}",
        ),
        histogram(
            spark,
            lake,
            "serving_corpus",
            SC.SCORE,
            (F.col(SC.DT) == F.lit(day)) & F.col(SC.SERVED),
            f"serving corpus of {day}: decayed engagement score (served pins, log scale)",
            log_x=True,
        ),
    ]
    versions = IndexVersions(lake.artifacts(), cfg.index.name)
    return ReportData(
        date=day,
        lake_root=cfg.lake.root,
        stages=latest_stage_rows(spark, lake, day),
        quarantine=quarantine,
        production={f: registry.current(f) for f in families},
        gates={f: registry.gates(f) for f in families},
        histograms=[h for h in histograms if h is not None],
        indexes=versions.list(),
        index_name=cfg.index.name,
        candidates=candidate_rows(spark, lake, day),
        health=production_health(registry, families, versions),
    )


# --------------------------------------------------------------------------- render (pure)


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _figure(width: float = 7.0, height: float = 3.0):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


STATUS_COLOURS = {PR.SUCCEEDED: "#2a9d3f", PR.FAILED: "#d62728", PR.SKIPPED: "#999999"}


def stage_section(stages: list[dict[str, Any]]) -> str:
    if not stages:
        return "<h2>Stages</h2><p>No stage has run for this date.</p>"
    fig, ax = _figure(7.0, 0.35 * len(stages) + 0.8)
    names = [s[PR.STAGE] for s in stages][::-1]
    seconds = [s[PR.SECONDS] for s in stages][::-1]
    colours = [STATUS_COLOURS.get(s[PR.STATUS], "#1f77b4") for s in stages][::-1]
    ax.barh(names, seconds, color=colours)
    ax.set_xlabel("seconds (green succeeded, red failed, grey skipped)")
    ax.set_title("stage durations")
    rows = [
        (
            s[PR.STAGE],
            s[PR.STATUS],
            str(s[PR.STARTED_AT])[:19],
            f"{s[PR.SECONDS]:.1f}",
            ", ".join(f"{t}={n:,}" for t, n in sorted((s.get(PR.ROWS_WRITTEN) or {}).items())) or "-",
            s[PR.ERROR] or s[PR.SUMMARY] or "",
        )
        for s in stages
    ]
    table = _table(("stage", "status", "started", "seconds", "rows written", "summary / error"), rows)
    return f"<h2>Stages</h2>{_png(fig)}{table}"


def quarantine_section(rows: list[tuple[str, str, str, int]]) -> str:
    if not rows:
        return "<h2>Quarantine</h2><p>No quarantined rows.</p>"
    return "<h2>Quarantine</h2>" + _table(("source", "table", "reason", "rows"), rows)


def _baselines(decision: dict[str, Any]) -> str:
    floors = decision.get("baselines") or {}
    return ", ".join(f"{name} {value:.4f}" for name, value in floors.items()) or "-"


def quality_section(production: dict[str, str | None], gates: dict[str, list[dict[str, Any]]]) -> str:
    """The panel the report opens with: each family's latest gate decision, its candidate's metric
    beside the trivial baselines' and production's, all on the same rows."""
    rows = []
    for family, decisions in gates.items():
        if not decisions:
            rows.append((family, "-", "-", "-", "-", production.get(family) or "none", "no gate decision yet"))
            continue
        d = decisions[-1]
        held = "-" if d["production"] is None else f"{d['production_version']} {d['production']:.4f}"
        rows.append(
            (
                family,
                d["metric"],
                f"{d['candidate_version']} {d['candidate']:.4f}",
                _baselines(d),
                held,
                production.get(family) or "none",
                "promoted" if d["passed"] else "REJECTED",
            )
        )
    header = ("family", "metric", "latest candidate", "baselines", "production then", "production now", "gate")
    return "<h2>Quality: each model against its baselines and production (same rows)</h2>" + _table(header, rows)


def model_section(production: dict[str, str | None], gates: dict[str, list[dict[str, Any]]]) -> str:
    parts = ["<h2>Models: gate decisions (candidate vs production, same rows)</h2>"]
    for family, decisions in gates.items():
        parts.append(f"<h3>{html.escape(family)}: production {html.escape(production.get(family) or 'none')}</h3>")
        if not decisions:
            parts.append("<p>No gate decisions yet.</p>")
            continue
        metric = decisions[-1]["metric"]
        fig, ax = _figure(7.0, 2.6)
        xs = list(range(1, len(decisions) + 1))
        ax.plot(xs, [d["candidate"] for d in decisions], "o-", label="candidate")
        with_prod = [(x, d["production"]) for x, d in zip(xs, decisions, strict=True) if d["production"] is not None]
        if with_prod:
            ax.plot(*zip(*with_prod, strict=True), "s--", label="production (same rows)")
        for name in dict.fromkeys(n for d in decisions for n in d.get("baselines") or {}):
            points = [
                (x, d["baselines"][name]) for x, d in zip(xs, decisions, strict=True) if name in d.get("baselines", {})
            ]
            ax.plot(*zip(*points, strict=True), ":", label=f"{name} (same rows)")
        rejected = [(x, d["candidate"]) for x, d in zip(xs, decisions, strict=True) if not d["passed"]]
        if rejected:
            ax.plot(*zip(*rejected, strict=True), "x", color="#d62728", markersize=12, label="rejected")
        ax.set_xlabel("gate decision (oldest first)")
        ax.set_ylabel(metric)
        ax.legend(loc="best", fontsize=8)
        rows = [
            (
                d.get("at", ""),
                d["candidate_version"],
                d["production_version"] or "-",
                f"{d['candidate']:.4f}",
                "-" if d["production"] is None else f"{d['production']:.4f}",
                _baselines(d),
                d["rows"],
                "promoted" if d["passed"] else "rejected",
                d["reason"],
            )
            for d in reversed(decisions)
        ]
        header = (
            "at",
            "candidate",
            "production",
            f"candidate {metric}",
            f"production {metric}",
            "baselines",
            "rows",
            "",
            "why",
        )
        parts.append(_png(fig) + _table(header, rows))
    return "".join(parts)


def histogram_section(histograms: list[Histogram]) -> str:
    if not histograms:
        return "<h2>Score distributions</h2><p>No scores for this date.</p>"
    parts = ["<h2>Score distributions</h2>"]
    for h in histograms:
        fig, ax = _figure(7.0, 2.6)
        widths = [b - a for a, b in zip(h.edges, h.edges[1:], strict=False)]
        ax.bar(h.edges[:-1], h.counts, width=widths, align="edge")
        if h.log_x:
            ax.set_xscale("log")
        ax.set_title(h.title, fontsize=9)
        ax.set_ylabel("rows")
        parts.append(_png(fig) + f"<p>{sum(h.counts):,} rows.</p>")
    return "".join(parts)


def health_section(health: list[ArtifactHealth]) -> str:
    if not health:
        return "<h2>Production</h2><p>Nothing is promoted.</p>"
    rows = [(h.artifact, f"DAMAGED: {h.problem}" if h.problem else "intact (checksums verified)") for h in health]
    return "<h2>Production</h2>" + _table(("artifact", "state"), rows)


def index_section(name: str, versions: list[IndexVersion]) -> str:
    if not versions:
        return f"<h2>Index {html.escape(name)}</h2><p>No index versions.</p>"
    rows = [
        ("*" if v.current else "", v.version, v.model, f"{v.rows:,}", v.shards, v.factory, f"{v.recall_at_10:.4f}")
        for v in versions
    ]
    header = ("", "version", "model", "vectors", "shards", "factory", "recall@10")
    return f"<h2>Index {html.escape(name)} (* promoted)</h2>" + _table(header, rows)


def candidates_section(day: dt.date, rows: list[tuple[str, str, int, int, int, int]]) -> str:
    title = f"<h2>Retrieval candidates of {day} (user_candidates)</h2>"
    if not rows:
        return title + "<p>No candidates for this date.</p>"
    shown = [(m, i, f"{u:,}", f"{c:,}", f"{p:,}", n) for m, i, u, c, p, n in rows]
    return title + _table(("model", "index", "users", "candidates", "distinct pins", "interests"), shown)


STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 6px;"
    "font-size:13px;vertical-align:top}th{background:#f3f3f3}"
)


def render(data: ReportData) -> str:
    failed = [s[PR.STAGE] for s in data.stages if s[PR.STATUS] == PR.FAILED]
    verdict = f"FAILED at {', '.join(failed)}" if failed else f"{len(data.stages)} stages finished"
    damaged = ", ".join(h.artifact for h in data.damaged)
    alarm = f"<p style='color:#d62728'><b>Production is damaged: {html.escape(damaged)}</b></p>" if damaged else ""
    body = "".join(
        [
            f"<h1>pinpipe nightly {data.date}</h1>",
            f"<p>{html.escape(verdict)}; lake {html.escape(data.lake_root)}</p>",
            alarm,
            quality_section(data.production, data.gates),
            health_section(data.health),
            stage_section(data.stages),
            model_section(data.production, data.gates),
            index_section(data.index_name, data.indexes),
            candidates_section(data.date, data.candidates),
            histogram_section(data.histograms),
            quarantine_section(data.quarantine),
        ]
    )
    title = f"pinpipe nightly {data.date}"
    head = f"<meta charset='utf-8'><title>{title}</title><style>{STYLE}</style>"
    return f"<!doctype html><html><head>{head}</head><body>{body}</body></html>"


# --------------------------------------------------------------------------- write, run


def report_name(day: dt.date) -> str:
    return f"nightly-{day.isoformat()}.html"


def report_folders(cfg: PinpipeConfig) -> list[Storage]:
    """Where the report goes: ``<lake.root>/_reports``, and ``nightly.report_dir`` when set."""
    lake = Lake.of(cfg.lake)
    return [lake.storage("_reports"), *([lake.folder(cfg.nightly.report_dir, "")] if cfg.nightly.report_dir else [])]


def report_path(cfg: PinpipeConfig, day: dt.date) -> str:
    """The report's path or URI on the lake."""
    return report_folders(cfg)[0].uri(report_name(day))


@dataclass(frozen=True)
class ReportWritten:
    path: str  # on the lake (the first of report_folders)
    damaged: tuple[ArtifactHealth, ...] = ()

    def line(self) -> str:
        warnings = [f"report: WARNING production {h.artifact} is damaged: {h.problem}" for h in self.damaged]
        return "\n".join([f"report: {self.path}", *warnings])


def write(text: str, folders: list[Storage], name: str) -> str:
    """``text`` as ``name`` in each folder (each one whole or as it was); the first one's URI."""
    for folder in folders:
        folder.put(name, text.encode())
    return folders[0].uri(name)


def run(spark: SparkSession, cfg: PinpipeConfig) -> ReportWritten:
    day = cfg.nightly.date
    data = gather(spark, cfg, day)
    return ReportWritten(write(render(data), report_folders(cfg), report_name(day)), tuple(data.damaged))


def main(argv: Sequence[str] | None = None) -> ReportWritten:
    written = run_job("pinpipe report", __doc__, run, with_date_option("pinpipe report", argv))
    if written.damaged:
        raise SystemExit(1)  # written, and its line named the damage
    return written


if __name__ == "__main__":
    main()
