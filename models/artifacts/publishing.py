"""Publishing a trained model: the settings every model family shares (its registry family, how
many versions to keep, whether to promote, its gate) and the one publish -> gate -> promote step
the families run (teacher, students, two-tower)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from models.artifacts.gate import GateDecision, GateSettings, gate_version
from models.artifacts.registry import Registry, content_key


@dataclass(frozen=True)
class PublishSettings:
    """A model family's publishing settings; a job's settings inherit them (the YAML keys sit in
    the job's section). ``GATE_METRICS``: the metrics the family's gate may compare."""

    family: str = field(
        metadata={"help": "Registry family the artifact is published under (<lake>/artifacts/<family>)."}
    )
    registry_keep: int = field(metadata={"help": "Versions kept per family; the promoted one is never pruned."})
    promote: bool = field(
        metadata={
            "help": "Promote a new version once it is published and passes its gate (the two-tower: make it the "
            "candidate, which build_index promotes together with its index)."
        }
    )
    gate: GateSettings = field(
        metadata={
            "help": "Promotion gate: metric of the new version and of production, both measured on the new "
            "version's test rows; promoted only if not worse by more than tolerance (enabled: false promotes "
            "every new version)."
        }
    )

    GATE_METRICS: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        if not self.family.strip():
            raise ValueError(f"family must not be empty, got {self.family!r}")
        if self.registry_keep < 1:
            raise ValueError(f"registry_keep must be >= 1, got {self.registry_keep}")
        if self.GATE_METRICS and self.gate.metric not in self.GATE_METRICS:
            raise ValueError(f"gate.metric must be one of {list(self.GATE_METRICS)}, got {self.gate.metric!r}")


@dataclass(frozen=True)
class Published:
    version: str
    decision: GateDecision | None  # None: not promoting, or the gate is off
    approved: bool  # promoted (or made the candidate)


def publish_gated(
    registry: Registry,
    settings: PublishSettings,
    build: Callable[[Path], Any],
    *,
    metrics: dict[str, Any],
    config: dict[str, Any],
    inputs: dict[str, Any],
    measure: Callable[[Path], float],
    rows: int,
    baselines: dict[str, float] | None = None,
    external: dict[str, str | Path] | None = None,
    on_pass: Callable[[str, str], None] | None = None,
) -> Published:
    """Publish ``build``'s artifact as a version of ``settings.family`` (idempotently: the same
    config and inputs give back the version they made); with ``settings.promote``, gate it
    (``measure`` scores a published folder on the ``rows`` evaluation rows, for the new version
    and for production alike; ``baselines``: the gated metric of trivial predictors on the same
    rows, the floor every version must clear) and, when it passes, ``on_pass(family, version)`` —
    ``registry.promote`` unless given (the two-tower passes ``registry.approve``)."""
    family = settings.family
    key = content_key(config, inputs)
    version = registry.publish(family, build, metrics=metrics, config=config, inputs=inputs, external=external, key=key)
    decision = (
        gate_version(registry, family, version, settings.gate, measure, rows, baselines) if settings.promote else None
    )
    approved = settings.promote and (decision is None or decision.passed)
    if approved:
        (on_pass or registry.promote)(family, version)
    return Published(version, decision, approved)
