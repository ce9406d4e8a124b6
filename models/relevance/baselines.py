"""The trivial relevance predictors every teacher and student must beat (the gate's floor).

* ``bm25``: the lexical score of the query against the pin's text, cut into levels at the
  share-matched cuts fit on the validation rows (as a model's expected relevance is), ranked by
  the score itself;
* ``constant``: the level most frequent among the validation labels, for every row (its kappa is
  0 by construction; its accuracy is that level's share).

Both are reported with the same code as the models (``evaluate_predictions``) on the same test
rows, with the figures a gate may compare (``RelevanceReport.gate_metrics``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from models.relevance.levels import LevelThresholds
from models.relevance.metrics import CUTS_KAPPA, RelevanceReport, evaluate_predictions

BM25, CONSTANT = "bm25", "constant"


def _decoded(report: RelevanceReport) -> RelevanceReport:
    """A baseline predicts levels directly: its kappa is also its kappa at cuts."""
    report.extra[CUTS_KAPPA] = report.kappa
    return report


def relevance_baselines(
    validation_levels: Sequence[int],
    validation_bm25: Sequence[float],
    test_queries: Sequence[str],
    test_levels: Sequence[int],
    test_bm25: Sequence[float],
    levels: Sequence[int],
) -> dict[str, RelevanceReport]:
    """The ``bm25`` and ``constant`` baselines on the test rows (cuts and the constant level
    chosen on validation)."""
    levels = list(levels)
    scores = np.asarray(test_bm25, dtype=np.float64)
    cuts = LevelThresholds.fit(np.asarray(validation_bm25, dtype=np.float64), validation_levels, levels)
    bm25 = evaluate_predictions(test_queries, test_levels, cuts.predict(scores), scores, levels)
    values, counts = np.unique(np.asarray(validation_levels, dtype=np.int64), return_counts=True)
    most_frequent = int(values[counts.argmax()])
    constant = evaluate_predictions(
        test_queries, test_levels, np.full(len(scores), most_frequent), np.zeros(len(scores)), levels
    )
    return {BM25: _decoded(bm25), CONSTANT: _decoded(constant)}


def gate_floors(baselines: dict[str, RelevanceReport], metric: str) -> dict[str, float]:
    """Each baseline's figure of the gated ``metric``."""
    return {name: report.gate_metrics()[metric] for name, report in baselines.items()}
