"""The promotion gate: a newly trained model replaces production only if, on the same
evaluation rows, its metric is not worse than production's by more than a tolerance.

Both sides are measured by the caller on the same rows with the same code (production is
re-evaluated, not read from its manifest: the evaluation set of its day may differ), so the gate
itself is a pure comparison. Higher is better for every gated metric (kappa, NDCG@10).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class GateSettings:
    metric: str = field(default="kappa", metadata={"help": "the gated metric, a key of the family's evaluation report"})
    tolerance: float = field(
        default=0.01, metadata={"help": "production - candidate may be at most this (absolute); 0 = never worse"}
    )
    enabled: bool = field(
        default=True, metadata={"help": "false: every published candidate is promoted (no re-evaluation of production)"}
    )

    def __post_init__(self) -> None:
        if not self.metric.strip():
            raise ValueError("the gate's metric must not be empty")
        if not 0.0 <= self.tolerance < 1.0:
            raise ValueError(f"the gate's tolerance must be in [0, 1), got {self.tolerance}")


@dataclass(frozen=True)
class GateDecision:
    family: str
    candidate_version: str
    production_version: str | None
    metric: str  # kappa of the levels production decodes (validation cuts); or kappa (argmax), ...
    candidate: float
    production: float | None
    tolerance: float  # absolute; 0 = never worse
    rows: int  # evaluation rows both were measured on
    passed: bool
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        verdict = "passed" if self.passed else "REJECTED"
        return f"gate {verdict}: {self.reason}"


def decide(
    settings: GateSettings,
    *,
    family: str,
    candidate_version: str,
    candidate: float,
    production_version: str | None,
    production: float | None,
    rows: int,
) -> GateDecision:
    """Pass when there is no production, or ``candidate >= production - tolerance``; a NaN
    candidate (a model that predicts one class everywhere, say) never passes."""
    m, tol = settings.metric, settings.tolerance
    candidate_text = f"{family}/{candidate_version} {m}={candidate:.4f}"
    if candidate != candidate:  # NaN
        passed, reason = False, f"{candidate_text} is not a number on {rows:,} evaluation rows"
    elif production_version is None or production is None:
        passed, reason = True, f"{candidate_text} on {rows:,} rows; no production model to compare with"
    else:
        passed = candidate >= production - tol
        relation = "within" if passed else "worse than"
        reason = (
            f"{candidate_text} vs production {family}/{production_version} {m}={production:.4f} on the same "
            f"{rows:,} rows: {relation} the tolerance {tol:g}"
        )
        if not passed:
            reason += f"; production stays {family}/{production_version}"
    return GateDecision(
        family, candidate_version, production_version, m, candidate, production, tol, rows, passed, reason
    )


def gate_version(
    registry, family: str, version: str, settings: GateSettings, measure: Callable[[Path], float], rows: int
) -> GateDecision | None:
    """Gate the published ``version`` of ``family`` against production: ``measure`` scores a
    published folder (checksums verified first) on the evaluation rows, the same for both. The
    decision is appended to the family's gate log. None when the gate is off."""
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
    )
    registry.record_gate(family, decision.as_dict())
    return decision
