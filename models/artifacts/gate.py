"""The promotion gate: a newly trained model replaces production only if, on the same
evaluation rows, its metric beats every trivial baseline by more than a margin (the floor: BM25
and the most frequent level for relevance models, popularity for the two-tower) and is not worse
than production's by more than a tolerance.

The floor holds for every version, the first of a family included: a first version that does not
clear it leaves the family without production. All sides are measured by the caller on the same
rows with the same code (production is re-evaluated, not read from its manifest: the evaluation
set of its day may differ), so the gate itself is a pure comparison. Higher is better for every
gated metric (kappa, NDCG@10).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class GateSettings:
    metric: str = field(default="kappa", metadata={"help": "the gated metric, a key of the family's evaluation report"})
    tolerance: float = field(
        default=0.01, metadata={"help": "production - candidate may be at most this (absolute); 0 = never worse"}
    )
    margin: float = field(
        default=0.0,
        metadata={
            "help": "the floor: candidate - baseline must be more than this (absolute) for every trivial baseline "
            "measured on the same rows, first versions included"
        },
    )
    enabled: bool = field(
        default=True, metadata={"help": "false: every published candidate is promoted (no re-evaluation of production)"}
    )

    def __post_init__(self) -> None:
        if not self.metric.strip():
            raise ValueError("the gate's metric must not be empty")
        if not 0.0 <= self.tolerance < 1.0:
            raise ValueError(f"the gate's tolerance must be in [0, 1), got {self.tolerance}")
        if not 0.0 <= self.margin < 1.0:
            raise ValueError(f"the gate's margin must be in [0, 1), got {self.margin}")


@dataclass(frozen=True)
class GateDecision:
    family: str
    candidate_version: str
    production_version: str | None
    metric: str  # kappa of the levels production decodes (validation cuts); or kappa (argmax), ...
    candidate: float
    production: float | None
    tolerance: float  # absolute; 0 = never worse
    rows: int  # evaluation rows all sides were measured on
    passed: bool
    reason: str
    baselines: dict[str, float] = field(default_factory=dict)  # trivial baselines on the same rows
    margin: float = 0.0  # the candidate must beat each baseline by more than this

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        verdict = "passed" if self.passed else "REJECTED"
        return f"gate {verdict}: {self.reason}"


def _figure(value: float) -> str:
    return f"{value:.4f}"


def decide(
    settings: GateSettings,
    *,
    family: str,
    candidate_version: str,
    candidate: float,
    production_version: str | None,
    production: float | None,
    rows: int,
    baselines: Mapping[str, float] | None = None,
) -> GateDecision:
    """Pass when the candidate beats every baseline by more than ``settings.margin`` and, when
    there is production, ``candidate >= production - tolerance``. A NaN candidate (a model that
    predicts one class everywhere, say) never passes; a NaN baseline is no floor."""
    m, tol, margin = settings.metric, settings.tolerance, settings.margin
    floors = {name: float(value) for name, value in (baselines or {}).items()}
    candidate_text = f"{family}/{candidate_version} {m}={_figure(candidate)}"
    beside = ", ".join(f"{name} {_figure(value)}" for name, value in floors.items())
    beside = f" (baselines on the same rows: {beside}; margin {margin:g})" if floors else ""
    below = [name for name, value in floors.items() if value == value and not candidate - value > margin]
    if candidate != candidate:  # NaN
        passed, reason = False, f"{candidate_text} is not a number on {rows:,} evaluation rows"
    elif below:
        passed = False
        reason = (
            f"{candidate_text}{beside} on {rows:,} rows: does not beat {' and '.join(below)} by more than {margin:g}"
        )
    elif production_version is None or production is None:
        passed, reason = True, f"{candidate_text}{beside} on {rows:,} rows; no production model to compare with"
    else:
        passed = candidate >= production - tol
        relation = "within" if passed else "worse than"
        reason = (
            f"{candidate_text}{beside} vs production {family}/{production_version} {m}={_figure(production)} on the "
            f"same {rows:,} rows: {relation} the tolerance {tol:g}"
        )
    if not passed:
        reason += (
            f"; production stays {family}/{production_version}"
            if production_version
            else f"; {family} has no production model"
        )
    return GateDecision(
        family,
        candidate_version,
        production_version,
        m,
        candidate,
        production,
        tol,
        rows,
        passed,
        reason,
        floors,
        margin,
    )


def gate_version(
    registry,
    family: str,
    version: str,
    settings: GateSettings,
    measure: Callable[[Path], float],
    rows: int,
    baselines: Mapping[str, float] | None = None,
) -> GateDecision | None:
    """Gate the published ``version`` of ``family`` against its ``baselines`` (the gated metric
    of trivial predictors on the evaluation rows) and production: ``measure`` scores a published
    folder (checksums verified first) on the evaluation rows, the same for both. The decision is
    appended to the family's gate log. None when the gate is off."""
    if not settings.enabled:
        return None

    def measured(v: str) -> float:
        registry.verify(family, v)
        return float(measure(Path(registry.path(family, v))))

    production = registry.current(family)
    production = production if production != version else None
    decision = decide(
        settings,
        family=family,
        candidate_version=version,
        candidate=measured(version),
        production_version=production,
        production=measured(production) if production else None,
        rows=rows,
        baselines=baselines,
    )
    registry.record_gate(family, decision.as_dict())
    return decision
