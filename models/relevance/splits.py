"""Which labeled rows train, which choose (validation) and which only evaluate (test).

Rows are grouped by query so a query's labels never sit on two sides of a query split. With
held-out folds (``evaluation.holdout_folds``), exactly the rows of those folds are test, for the
teacher and the students alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from schemas import human_labels as HL

TRAIN, VALIDATION, TEST = "train", "validation", "test"


@dataclass(frozen=True)
class EvaluationConfig:
    """The ``evaluation`` section: which human labels only ever evaluate."""

    holdout_folds: list[int] = field(
        metadata={
            "help": "Human labels whose fold is listed here train nothing (no training, validation, level cuts or "
            "int8 plan) and are the rows the published metrics are computed on. Empty: a query-grouped test slice "
            "(teacher.test_fraction)."
        }
    )

    def __post_init__(self) -> None:
        if any(fold < 0 for fold in self.holdout_folds):
            raise ValueError(f"holdout_folds: folds must be >= 0, got {self.holdout_folds}")


@dataclass(frozen=True)
class QuerySplit:
    """Shares of whole queries held out for validation and for test, and the shuffle's seed."""

    validation_fraction: float
    test_fraction: float
    seed: int


def split_by_query(queries: Sequence[str], validation_fraction: float, test_fraction: float, seed: int) -> np.ndarray:
    """Each row's side, ``train`` / ``validation`` / ``test``; every query's rows fall on one side.

    The distinct queries are shuffled by ``seed``; the first ``round(test_fraction * n)`` (at
    least one, none when ``test_fraction`` is 0) go to test, the next
    ``round(validation_fraction * n)`` (at least one) to validation, and at least one query is
    left for training.
    """
    unique = np.array(sorted(set(queries)), dtype=object)
    needed = 3 if test_fraction > 0 else 2
    if len(unique) < needed:
        raise ValueError(f"a split by query needs at least {needed} distinct queries, got {len(unique)}")
    n_test = max(1, round(test_fraction * len(unique))) if test_fraction > 0 else 0
    n_val = max(1, round(validation_fraction * len(unique)))
    if n_test + n_val >= len(unique):
        raise ValueError(
            f"{len(unique)} queries leave none for training with {n_test} test and {n_val} validation "
            f"queries: lower teacher.test_fraction / teacher.validation_fraction"
        )
    shuffled = np.random.default_rng(seed).permutation(unique).tolist()
    side = dict.fromkeys(shuffled[:n_test], TEST) | dict.fromkeys(shuffled[n_test : n_test + n_val], VALIDATION)
    return np.array([side.get(q, TRAIN) for q in queries], dtype=object)


def assign_sides(rows: pd.DataFrame, split: QuerySplit, holdout_folds: Sequence[int]) -> np.ndarray:
    """Each row's side. With ``holdout_folds``, exactly the rows of those folds are test (they
    train and choose nothing) and the other rows split by query into train and validation;
    without, a query-grouped test slice of ``split.test_fraction``."""
    if not holdout_folds:
        return split_by_query(list(rows[HL.QUERY]), split.validation_fraction, split.test_fraction, split.seed)
    held = rows[HL.FOLD].isin(list(holdout_folds)).to_numpy()
    if not held.any():
        present = sorted(int(f) for f in rows[HL.FOLD].dropna().unique())
        raise ValueError(
            f"no valid label is in evaluation.holdout_folds {list(holdout_folds)}; folds present: {present}"
        )
    if held.all():
        raise ValueError(
            f"every valid label is in evaluation.holdout_folds {list(holdout_folds)}: none left to train on"
        )
    side = np.full(len(rows), TEST, dtype=object)
    side[~held] = split_by_query(list(rows.loc[~held, HL.QUERY]), split.validation_fraction, 0.0, split.seed)
    return side
