"""A job's report to MLflow (``runtime.tracking``): the job's own config section as parameters,
its figures as metrics, the gate's decision and the published artifact's URI as tags. Reports
that have something to track (training jobs, ``build_index``) implement ``tracked()``."""

from __future__ import annotations

import logging
from typing import Any

from jobs import table
from runtime.errors import explain
from runtime.lake import Lake
from runtime.tracking import TrackedRun, flat, log_run

log = logging.getLogger(__name__)


def track(cfg: Any, job: str, report: Any) -> str | None:
    """Log ``report`` of ``job`` to MLflow when ``tracking.mlflow_uri`` is set and the report has
    something to track; the run id, or None. A tracking server that fails is a warning: the
    registry, not MLflow, is the record a run must not lose."""
    tracked = getattr(report, "tracked", None)
    if not cfg.tracking.mlflow_uri or tracked is None:
        return None
    run: TrackedRun = tracked()
    section = table.job(job).section
    params = {**flat(section, cfg.to_dict()[section]), "lake.root": cfg.lake.root, "env": cfg.env}
    uri = Lake.of(cfg.lake).artifacts().uri(run.artifact)
    tags = {"pinpipe.job": job}
    if getattr(cfg, "nightly", None) is not None and cfg.nightly.date:
        tags["pinpipe.date"] = str(cfg.nightly.date)
    try:
        run_id = log_run(cfg.tracking, f"{job} {run.artifact}", params, run, uri, tags)
    except Exception as exc:
        log.warning("%s: not logged to MLflow at %s: %s", job, cfg.tracking.mlflow_uri, explain(exc))
        return None
    log.info("%s: MLflow run %s (%s)", job, run_id, cfg.tracking.mlflow_uri)
    return run_id
