"""From a continuous relevance score to a graded level, so that kappa is not left to argmax.

A classifier's most probable level under-predicts the rare levels (quadratic weighted kappa
punishes that); cutting the expected relevance at quantiles that reproduce the label shares
does not. ``LevelThresholds.fit`` takes the cuts from scores with their labels (a validation
set); ``LevelThresholds.matching_shares`` takes them from unlabelled scores and the shares
seen in training, as the 2015 CrowdFlower winners decoded their test predictions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def label_shares(labels: Sequence[int], levels: Sequence[int]) -> list[float]:
    y = np.asarray(labels)
    if len(y) == 0:
        raise ValueError("need at least one label")
    unknown = sorted(set(np.unique(y).tolist()) - set(levels))
    if unknown:
        raise ValueError(f"labels {unknown} are not among the levels {list(levels)}")
    return [float((y == lvl).mean()) for lvl in levels]


@dataclass
class LevelThresholds:
    """Score cut-offs: a score below ``cuts[0]`` is ``levels[0]``, ... above ``cuts[-1]`` the last level."""

    levels: list[int]
    cuts: list[float]

    def __post_init__(self) -> None:
        if len(self.cuts) != len(self.levels) - 1:
            raise ValueError(f"{len(self.levels)} levels need {len(self.levels) - 1} cuts, got {len(self.cuts)}")
        if any(b < a for a, b in zip(self.cuts, self.cuts[1:], strict=False)):
            raise ValueError(f"cuts must be non-decreasing, got {self.cuts}")

    @classmethod
    def matching_shares(
        cls, scores: Sequence[float], shares: Sequence[float], levels: Sequence[int]
    ) -> LevelThresholds:
        s = np.asarray(scores, dtype=np.float64)
        if len(s) == 0:
            raise ValueError("need at least one score")
        if len(shares) != len(levels) or abs(sum(shares) - 1.0) > 1e-6:
            raise ValueError(f"shares must give one share per level and sum to 1, got {list(shares)}")
        cumulative = np.cumsum(shares)[:-1]
        return cls([int(v) for v in levels], [float(np.quantile(s, q)) for q in cumulative])

    @classmethod
    def fit(cls, scores: Sequence[float], labels: Sequence[int], levels: Sequence[int]) -> LevelThresholds:
        """Cuts that, on these scores, predict each level as often as it occurs in ``labels``."""
        return cls.matching_shares(scores, label_shares(labels, levels), levels)

    def predict(self, scores: Sequence[float]) -> np.ndarray:
        idx = np.searchsorted(np.asarray(self.cuts), np.asarray(scores, dtype=np.float64), side="right")
        return np.asarray(self.levels)[idx]

    def to_dict(self) -> dict:
        return {"levels": list(self.levels), "cuts": list(self.cuts)}


def to_model_levels(relevance, scale_max, num_levels: int) -> np.ndarray:
    """Relevance on ``1..scale_max`` mapped linearly onto ``1..num_levels``, rounded half up (the
    mapping ``jobs.train_teacher.model_level`` applies in Spark)."""
    r = np.asarray(relevance, dtype=np.float64)
    scale = np.asarray(scale_max, dtype=np.float64)
    return (np.floor((r - 1) * (num_levels - 1) / (scale - 1) + 0.5) + 1).astype(np.int64)
