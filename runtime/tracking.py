"""MLflow tracking, where users already look: a run per training job and index build, when
``tracking.mlflow_uri`` is set. The registry stays the source of truth (versions, promotion,
checksums); MLflow gets a copy of what each run decided, with the artifact's URI on the lake.
``mlflow`` is an optional extra (``pinpipe[mlflow]``), imported only when tracking is on."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runtime.config import setting

PARAM_VALUE_LIMIT = 6000  # MLflow's limit on one parameter's value


@dataclass(frozen=True)
class TrackingConfig:
    mlflow_uri: str = setting(
        "MLflow tracking URI (sqlite:///path/mlflow.db, http://host:5000, databricks, ...); empty = no tracking.",
        default="",
    )
    experiment: str = setting("MLflow experiment the runs go to.", default="pinpipe")


@dataclass(frozen=True)
class TrackedRun:
    """What a training job or index build reports to tracking."""

    artifact: str  # <family>/<version> under the artifacts root (indexes/<name>/<version> for an index)
    metrics: Mapping[str, float]
    gate: str  # the gate's decision in words ("" when it did not run)
    approved: bool  # promoted (or made the candidate)


def flat(prefix: str, value: Any) -> dict[str, str]:
    """Nested settings as MLflow parameters: dotted keys, string values."""
    if isinstance(value, Mapping):
        out: dict[str, str] = {}
        for k, v in value.items():
            out.update(flat(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    return {prefix: str(value)[:PARAM_VALUE_LIMIT]}


def metric_name(name: str) -> str:
    """``name`` in the characters MLflow allows (``hr@10`` -> ``hr_at_10``)."""
    return re.sub(r"[^\w\-. /]", "_", name.replace("@", "_at_"))


def log_run(
    cfg: TrackingConfig,
    run_name: str,
    params: Mapping[str, str],
    run: TrackedRun,
    artifact_uri: str,
    tags: Mapping[str, str],
) -> str:
    """One MLflow run with ``params``, ``run``'s metrics and decision; returns its run id."""
    try:
        import mlflow
    except ImportError as err:
        raise RuntimeError(
            f"tracking.mlflow_uri is set but MLflow is not installed: pip install 'pinpipe[mlflow]' ({err})"
        ) from err
    mlflow.set_tracking_uri(cfg.mlflow_uri)
    mlflow.set_experiment(cfg.experiment)
    with mlflow.start_run(run_name=run_name) as active:
        mlflow.log_params(dict(params))
        mlflow.log_metrics({metric_name(k): float(v) for k, v in run.metrics.items()})
        mlflow.set_tags(
            {
                **tags,
                "pinpipe.artifact": run.artifact,
                "pinpipe.artifact_uri": artifact_uri,
                "pinpipe.gate": run.gate[:PARAM_VALUE_LIMIT] or "not run",
                "pinpipe.approved": str(run.approved).lower(),
            }
        )
        return active.info.run_id
