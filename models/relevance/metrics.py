"""Relevance metrics shared by the teacher and the students.

Labels are graded levels ``1..L`` (CrowdFlower: L = 4). A model gives, per (query, pin), a
probability for each level; from those come the predicted level (argmax) and the expected
relevance ``sum_l l * p_l``. Reported:

* accuracy overall and per true level (the share of each level predicted right);
* quadratic weighted kappa of predicted vs true levels (the CrowdFlower competition metric);
* AUROC of the expected relevance for each binarisation ``label >= t``, t = 2..L;
* nDCG@k per query (gain ``2^label - 1``, ranked by expected relevance), averaged over
  queries with at least one non-zero gain.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

# The figures a relevance model's promotion gate may compare (RelevanceReport.gate_metrics).
RELEVANCE_GATE_METRICS = ("kappa_cuts", "kappa", "ndcg_at_20", "accuracy")


def _as_int(values: Sequence[int] | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr.astype(np.int64)


def quadratic_weighted_kappa(y_true, y_pred, min_level: int, max_level: int) -> float:
    """Cohen's kappa with quadratic weights over levels ``min_level..max_level``."""
    t, p = _as_int(y_true, "y_true"), _as_int(y_pred, "y_pred")
    if len(t) != len(p) or len(t) == 0:
        raise ValueError(f"need equal, non-zero lengths, got {len(t)} and {len(p)}")
    for name, arr in (("y_true", t), ("y_pred", p)):
        if arr.min() < min_level or arr.max() > max_level:
            raise ValueError(f"{name} has levels outside {min_level}..{max_level}")
    n = max_level - min_level + 1
    observed = np.zeros((n, n))
    np.add.at(observed, (t - min_level, p - min_level), 1)
    expected = np.outer(observed.sum(1), observed.sum(0)) / len(t)
    i, j = np.indices((n, n))
    weights = (i - j) ** 2 / (n - 1) ** 2
    denominator = (weights * expected).sum()
    return 1.0 if denominator == 0 else float(1 - (weights * observed).sum() / denominator)


def average_ranks(values) -> np.ndarray:
    """1-based ranks of ``values``, ties sharing their average rank."""
    s = np.asarray(values, dtype=np.float64)
    order = np.argsort(s, kind="mergesort")
    first = np.concatenate([[True], np.diff(s[order]) != 0])
    starts = np.flatnonzero(first)
    ends = np.append(starts[1:], len(s))
    ranks = np.empty(len(s))
    ranks[order] = ((starts + ends + 1) / 2.0)[np.cumsum(first) - 1]
    return ranks


def auroc(scores, positive) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half); NaN without both classes."""
    y = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = average_ranks(scores)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def spearman(a, b) -> float:
    """Spearman rank correlation (average ranks for ties); NaN when either side is constant."""
    ra, rb = average_ranks(a), average_ranks(b)
    if len(ra) < 2 or ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def ndcg_at_k(query_ids, gains_levels, scores, k: int = 20) -> float:
    """Mean over queries of nDCG@k, gain ``2^level - 1`` with levels shifted to start at 0."""
    q = np.asarray(query_ids)
    levels = np.asarray(gains_levels, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    gains = 2.0 ** (levels - levels.min()) - 1.0 if len(levels) else levels
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    values = []
    for query in np.unique(q):
        idx = np.flatnonzero(q == query)
        ideal = np.sort(gains[idx])[::-1][:k]
        idcg = (ideal * discounts[: len(ideal)]).sum()
        if idcg == 0:
            continue
        # stable order: ties keep input order, so the result does not depend on luck
        ranked = gains[idx][np.argsort(-s[idx], kind="mergesort")][:k]
        values.append((ranked * discounts[: len(ranked)]).sum() / idcg)
    return float(np.mean(values)) if values else float("nan")


@dataclass
class RelevanceReport:
    n: int
    accuracy: float
    accuracy_per_level: dict[int, float]
    kappa: float
    auroc_at: dict[int, float]  # threshold t -> AUROC of expected relevance for label >= t
    ndcg_at_20: float
    extra: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))  # int keys -> strings, as saved in JSON

    def gate_metrics(self) -> dict[str, float]:
        """The figures a promotion gate may compare (``kappa_cuts``: the levels production
        decodes, the expected relevance cut at the version's own validation cuts)."""
        out = {"kappa": self.kappa, "accuracy": self.accuracy, "ndcg_at_20": self.ndcg_at_20}
        if CUTS_KAPPA in self.extra:
            out["kappa_cuts"] = self.extra[CUTS_KAPPA]
        return out

    def table(self, title: str = "") -> str:
        rows = [("examples", f"{self.n:,}"), ("accuracy", f"{self.accuracy:.4f}")]
        rows += [(f"  accuracy | label={lvl}", f"{acc:.4f}") for lvl, acc in self.accuracy_per_level.items()]
        rows += [("quadratic weighted kappa", f"{self.kappa:.4f}")]
        rows += [(f"AUROC label>={t}", f"{a:.4f}") for t, a in self.auroc_at.items()]
        rows += [("nDCG@20 (mean over queries)", f"{self.ndcg_at_20:.4f}")]
        rows += [(k, f"{v:.4f}") for k, v in self.extra.items()]
        width = max(len(r[0]) for r in rows)
        lines = [title] if title else []
        lines += [f"{name:<{width}}  {value}" for name, value in rows]
        return "\n".join(lines)


def evaluate_relevance(query_ids, y_true, probabilities, levels: Sequence[int]) -> RelevanceReport:
    """All metrics from true levels and per-level probabilities (columns in ``levels`` order):
    the prediction is the most probable level, the ranking score the expected level."""
    t = _as_int(y_true, "y_true")
    probs = np.asarray(probabilities, dtype=np.float64)
    levels = list(levels)
    if probs.shape != (len(t), len(levels)):
        raise ValueError(f"probabilities must have shape ({len(t)}, {len(levels)}), got {probs.shape}")
    level_values = np.asarray(levels, dtype=np.float64)
    return evaluate_predictions(query_ids, t, level_values[probs.argmax(axis=1)], probs @ level_values, levels)


CUTS_KAPPA = "kappa, share-matched cuts (fit on validation)"


def evaluate_with_cuts(query_ids, y_true, probabilities, levels: Sequence[int], cuts) -> RelevanceReport:
    """:func:`evaluate_relevance`, plus (as ``extra[CUTS_KAPPA]``) the kappa of the expected
    relevance cut at ``cuts`` (a ``models.relevance.levels.LevelThresholds`` fit on validation)."""
    report = evaluate_relevance(query_ids, y_true, probabilities, levels)
    expected = np.asarray(probabilities, dtype=np.float64) @ np.asarray(levels, dtype=np.float64)
    report.extra[CUTS_KAPPA] = quadratic_weighted_kappa(y_true, cuts.predict(expected), min(levels), max(levels))
    return report


def evaluate_predictions(query_ids, y_true, predicted, scores, levels: Sequence[int]) -> RelevanceReport:
    """All metrics from true levels, predicted levels and a ranking score (e.g. BM25)."""
    t, predicted = _as_int(y_true, "y_true"), _as_int(predicted, "predicted")
    expected = np.asarray(scores, dtype=np.float64)
    levels = list(levels)
    per_level = {int(lvl): float((predicted[t == lvl] == lvl).mean()) for lvl in levels if (t == lvl).any()}
    return RelevanceReport(
        n=len(t),
        accuracy=float((predicted == t).mean()),
        accuracy_per_level=per_level,
        kappa=quadratic_weighted_kappa(t, predicted, min(levels), max(levels)),
        auroc_at={int(th): auroc(expected, t >= th) for th in levels[1:]},
        ndcg_at_20=ndcg_at_k(query_ids, t, expected, 20),
    )
