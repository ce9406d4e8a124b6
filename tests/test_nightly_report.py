import base64
import datetime as dt
import re

from jobs.nightly_report import ArtifactHealth, Histogram, ReportData, ReportWritten, render
from models.retrieval.serving import IndexVersion
from schemas import pipeline_runs as PR

T0 = dt.datetime(2026, 11, 1, 2, 0)


def stage(name, status, seconds, summary="", error=None, rows=None):
    return {
        PR.STAGE: name,
        PR.STATUS: status,
        PR.STARTED_AT: T0,
        PR.SECONDS: seconds,
        PR.SUMMARY: summary,
        PR.ERROR: error,
        PR.ROWS_WRITTEN: rows or {},
    }


def gate(candidate_version, candidate, production, passed, baselines=None):
    return {
        "at": "2026-11-01T02:10:00+00:00",
        "candidate_version": candidate_version,
        "production_version": "v0001" if production is not None else None,
        "metric": "kappa",
        "candidate": candidate,
        "production": production,
        "rows": 26,
        "passed": passed,
        "reason": "why <it> was decided",
        "baselines": baselines or {},
        "margin": 0.02,
    }


def test_the_report_is_one_self_contained_page_with_every_section():
    data = ReportData(
        date=dt.date(2026, 11, 1),
        lake_root="/lake",
        stages=[
            stage("ingest", PR.SUCCEEDED, 12.5, "ingest: ok", rows={"pins": 20000, "human_labels": 7109}),
            stage("train_student", PR.SKIPPED, 0.0, "not on its schedule today"),
            stage("serving_corpus", PR.FAILED, 3.0, error="disk <full>"),
        ],
        quarantine=[("crowdflower", "human_labels", "relevance 9 outside 1..4", 3)],
        production={"student": "v0001", "two_tower": None},
        gates={
            "student": [
                gate("v0001", 0.80, None, True, {"bm25": 0.2183, "constant": 0.0}),
                gate("v0002", -0.10, 0.80, False, {"bm25": 0.2190, "constant": 0.0}),
            ],
            "two_tower": [],
        },
        histograms=[Histogram("teacher", [1.0 + 0.1 * i for i in range(31)], [i % 4 for i in range(30)])],
        indexes=[IndexVersion("v0001", "two_tower/v0001", 2000, 2, "Flat", 0.9987, "2026-11-01", True)],
        index_name="two_tower_items",
        candidates=[("two_tower/v0001", "two_tower_items/v0001", 1090, 109000, 2417, 4)],
        health=[
            ArtifactHealth("student/v0001"),
            ArtifactHealth(
                "index two_tower_items/v0001", "two_tower_items/v0001: shard-00000.faiss is missing or changed"
            ),
        ],
    )
    page = render(data)
    assert "<b>Production is damaged: index two_tower_items/v0001</b>" in page
    assert "<td>student/v0001</td><td>intact (checksums verified)</td>" in page
    assert "DAMAGED: two_tower_items/v0001: shard-00000.faiss is missing or changed" in page
    assert ReportWritten("r.html", tuple(data.damaged)).line() == (
        "report: r.html\nreport: WARNING production index two_tower_items/v0001 is damaged: "
        "two_tower_items/v0001: shard-00000.faiss is missing or changed"
    )
    assert page.startswith("<!doctype html>") and "FAILED at serving_corpus" in page
    assert "disk &lt;full&gt;" in page and "why &lt;it&gt; was decided" in page  # escaped, never raw HTML
    assert "human_labels=7,109, pins=20,000" in page
    assert "relevance 9 outside 1..4" in page and "0.9987" in page and "student: production v0001" in page
    assert "rejected" in page and "No gate decisions yet." in page
    # The page opens (after the alarm) with the quality panel: the latest candidate beside its
    # baselines and production, on the same rows.
    quality = page.index("<h2>Quality: each model against its baselines and production (same rows)</h2>")
    assert quality < page.index("<h2>Production</h2>") < page.index("<h2>Stages</h2>")
    panel = page[quality : page.index("<h2>Production</h2>")]
    assert (
        "<td>student</td><td>kappa</td><td>v0002 -0.1000</td><td>bm25 0.2190, constant 0.0000</td>"
        "<td>v0001 0.8000</td><td>v0001</td><td>REJECTED</td>"
    ) in panel
    assert "<td>two_tower</td>" in panel and "no gate decision yet" in panel
    assert "<td>bm25 0.2183, constant 0.0000</td>" in page  # each decision's baselines in the gate table
    assert "Retrieval candidates of 2026-11-01" in page and "109,000" in page and "2,417" in page
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 3  # stage durations, the student's gate history, one histogram
    assert all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    assert "http" not in page  # nothing to fetch: the file is the whole report


def test_a_date_with_nothing_run_still_renders():
    page = render(ReportData(dt.date(2026, 11, 2), "/lake", [], [], {}, {}))
    assert "No stage has run for this date." in page and "No quarantined rows." in page
    assert "No candidates for this date." in page
