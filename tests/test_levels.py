import numpy as np
import pytest

from models.relevance.levels import LevelThresholds, label_shares


def test_thresholds_reproduce_label_shares():
    rng = np.random.default_rng(0)
    labels = rng.choice([1, 2, 3, 4], size=1000, p=[0.1, 0.2, 0.3, 0.4])
    scores = labels + rng.normal(0, 0.5, 1000)
    predicted = LevelThresholds.fit(scores, labels, [1, 2, 3, 4]).predict(scores)
    for level in (1, 2, 3, 4):
        assert abs((predicted == level).mean() - (labels == level).mean()) < 0.01
    assert (predicted == labels).mean() > 0.6


def test_matching_shares_needs_no_labels_and_cuts_are_ordered():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=2000)
    cuts = LevelThresholds.matching_shares(scores, [0.25, 0.25, 0.5], [1, 2, 3])
    predicted = cuts.predict(scores)
    assert [round((predicted == v).mean(), 2) for v in (1, 2, 3)] == [0.25, 0.25, 0.5]
    assert cuts.cuts[0] < cuts.cuts[1]
    assert cuts.predict([cuts.cuts[0] - 1e-9, cuts.cuts[1] + 1e-9]).tolist() == [1, 3]


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="not among the levels"):
        label_shares([1, 5], [1, 2, 3, 4])
    with pytest.raises(ValueError, match="sum to 1"):
        LevelThresholds.matching_shares([0.1, 0.2], [0.5, 0.4], [1, 2])
    with pytest.raises(ValueError, match="need 2 cuts"):
        LevelThresholds([1, 2, 3], [0.5])
    with pytest.raises(ValueError, match="non-decreasing"):
        LevelThresholds([1, 2, 3], [0.5, 0.1])
