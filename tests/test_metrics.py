"""Metrics checked against scikit-learn as an independent implementation."""

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import cohen_kappa_score, ndcg_score, roc_auc_score

from models.relevance.metrics import auroc, evaluate_relevance, ndcg_at_k, quadratic_weighted_kappa, spearman

rng = np.random.default_rng(0)


@pytest.mark.parametrize("seed", range(5))
def test_kappa_matches_sklearn(seed):
    r = np.random.default_rng(seed)
    t = r.integers(1, 5, 300)
    p = np.clip(t + r.integers(-1, 2, 300), 1, 4)
    assert quadratic_weighted_kappa(t, p, 1, 4) == pytest.approx(
        cohen_kappa_score(t, p, weights="quadratic"), abs=1e-12
    )


def test_kappa_edges():
    assert quadratic_weighted_kappa([1, 2, 3, 4], [1, 2, 3, 4], 1, 4) == 1.0
    assert quadratic_weighted_kappa([1, 2, 3, 4], [4, 3, 2, 1], 1, 4) < 0
    with pytest.raises(ValueError, match="outside 1..4"):
        quadratic_weighted_kappa([1, 5], [1, 2], 1, 4)


@pytest.mark.parametrize("seed", range(5))
def test_auroc_matches_sklearn_with_ties(seed):
    r = np.random.default_rng(seed)
    y = r.random(400) < 0.3
    s = np.round(r.random(400) + y * 0.3, 1)  # coarse scores: many ties
    assert auroc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert np.isnan(auroc(s, np.ones(400, bool)))


@pytest.mark.parametrize("seed", range(5))
def test_spearman_matches_scipy_with_ties(seed):
    r = np.random.default_rng(seed)
    a = np.round(r.random(300), 1)  # many ties
    b = np.round(a + r.normal(0, 0.3, 300), 1)
    assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert np.isnan(spearman(a, np.ones(300)))


def test_ndcg_matches_sklearn_per_query_mean():
    r = np.random.default_rng(3)
    queries = np.repeat(np.arange(6), 30)
    levels = r.integers(1, 5, len(queries))
    scores = levels + r.normal(0, 1.5, len(queries))
    expected = np.mean(
        [ndcg_score([2.0 ** (levels[queries == q] - 1) - 1], [scores[queries == q]], k=20) for q in range(6)]
    )
    assert ndcg_at_k(queries, levels, scores, 20) == pytest.approx(expected, abs=1e-12)
    assert ndcg_at_k(queries, levels, levels, 20) == pytest.approx(1.0)


def test_evaluate_relevance_report():
    t = np.array([1, 2, 3, 4, 4, 3])
    probs = np.eye(4)[[0, 1, 2, 3, 2, 2]]  # predicts 1,2,3,4,3,3
    report = evaluate_relevance(["a", "a", "a", "b", "b", "b"], t, probs, [1, 2, 3, 4])
    assert report.accuracy == pytest.approx(5 / 6)
    assert report.accuracy_per_level == {1: 1.0, 2: 1.0, 3: 1.0, 4: 0.5}
    assert set(report.auroc_at) == {2, 3, 4}
    assert "quadratic weighted kappa" in report.table()
    assert report.to_dict()["accuracy_per_level"]["4"] == 0.5
    with pytest.raises(ValueError, match="shape"):
        evaluate_relevance(["a"], [1], [[1.0, 0.0]], [1, 2, 3, 4])
