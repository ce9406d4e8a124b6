"""The gate's floor: every version, the first of a family included, must beat the trivial
baselines measured on the same rows; the baselines themselves are computed by the models' code."""

import math

import numpy as np
import pytest
import torch

from models.artifacts.gate import GateSettings, decide, gate_version
from models.artifacts.registry import NoProductionModel, Registry
from models.relevance.baselines import BM25, CONSTANT, gate_floors, relevance_baselines
from models.retrieval.evaluation import evaluate_popularity
from models.retrieval.sequences import Sequences

SETTINGS = GateSettings(metric="kappa", tolerance=0.01, margin=0.02)


def first_version(candidate, baselines, settings=SETTINGS):
    return decide(
        settings,
        family="teacher",
        candidate_version="v0001",
        candidate=candidate,
        production_version=None,
        production=None,
        rows=100,
        baselines=baselines,
    )


def test_a_first_version_below_a_baseline_is_rejected_and_one_above_every_baseline_passes():
    below = first_version(0.20, {"bm25": 0.21, "constant": 0.0})
    assert not below.passed
    assert "does not beat bm25 by more than 0.02" in below.reason and "teacher has no production model" in below.reason
    assert "bm25 0.2100" in below.reason and "constant 0.0000" in below.reason  # the baselines beside the candidate
    within_margin = first_version(0.225, {"bm25": 0.21, "constant": 0.0})
    assert not within_margin.passed  # above BM25, but not by the margin
    above = first_version(0.30, {"bm25": 0.21, "constant": 0.0})
    assert above.passed and "no production model to compare with" in above.reason
    assert above.baselines == {"bm25": 0.21, "constant": 0.0} and above.margin == 0.02


def test_a_constant_predictor_never_passes_even_without_a_margin():
    exact = GateSettings(metric="kappa", tolerance=0.01, margin=0.0)
    assert not first_version(0.0, {"constant": 0.0}, exact).passed  # beat means more than, not as good as
    assert not first_version(float("nan"), {}, exact).passed
    assert first_version(0.01, {"constant": 0.0, "bm25": float("nan")}, exact).passed  # a NaN baseline is no floor


def test_the_floor_holds_with_production_too():
    decision = decide(
        SETTINGS,
        family="student",
        candidate_version="v0003",
        candidate=0.30,
        production_version="v0002",
        production=0.28,
        rows=50,
        baselines={"bm25": 0.35},
    )
    assert not decision.passed and "production stays student/v0002" in decision.reason


def test_gate_version_logs_the_baselines_and_a_rejected_first_version_leaves_no_production(tmp_path):
    registry = Registry(tmp_path)

    def build(folder):
        (folder / "weights").write_text("x")

    version = registry.publish("teacher", build, metrics={}, config={})
    decision = gate_version(registry, "teacher", version, SETTINGS, lambda folder: 0.1, 40, {"bm25": 0.2})
    assert not decision.passed
    [logged] = registry.gates("teacher")
    assert logged["baselines"] == {"bm25": 0.2} and logged["margin"] == 0.02 and not logged["passed"]
    assert registry.current("teacher") is None
    with pytest.raises(NoProductionModel, match="its gate rejected teacher/v0001 kappa=0.1000"):
        registry.resolve("teacher")


def test_relevance_baselines_cut_bm25_on_validation_and_predict_the_most_frequent_level():
    levels = [1, 2, 3]
    val_levels = np.array([1, 1, 2, 3, 3, 3])
    val_bm25 = np.array([0.0, 0.1, 1.0, 2.0, 2.5, 3.0])  # BM25 orders validation perfectly
    test_levels = np.array([1, 2, 3, 3, 1])
    test_bm25 = np.array([0.05, 1.2, 2.8, 2.2, 0.0])
    queries = np.array(["a", "a", "b", "b", "b"])
    baselines = relevance_baselines(val_levels, val_bm25, queries, test_levels, test_bm25, levels)
    # cuts from the validation shares 2/6, 1/6, 3/6 at the BM25 quantiles: 0.7 and 1.5
    assert baselines[BM25].accuracy == pytest.approx(1.0) and baselines[BM25].kappa == pytest.approx(1.0)
    constant = baselines[CONSTANT]
    assert constant.accuracy == pytest.approx(2 / 5)  # level 3, the most frequent in validation
    assert constant.kappa == pytest.approx(0.0)
    floors = gate_floors(baselines, "kappa_cuts")
    assert floors == {BM25: pytest.approx(1.0), CONSTANT: pytest.approx(0.0)}


def test_popularity_ranks_the_most_engaged_unseen_items_by_the_ranking_protocol():
    counts = torch.tensor([0, 5, 9, 1, 9])  # item 2 and item 4 tie: the lower index first
    rows = torch.tensor(
        [
            [0, 1, 2],  # history {1}: ranking 2, 4, 3 -> target 2 at rank 0 (2 before 4: the lower index)
            [0, 1, 3],  # history {1}: ranking 2, 4, 3 -> target 3 at rank 2
            [2, 4, 3],  # history {2, 4}: ranking 1, 3 -> target 3 at rank 1
            [0, 0, 1],  # history {}: ranking 2, 4, 1, 3 -> target 1 at rank 2
            [1, 2, 3],  # history {1, 2}: ranking 4, 3 -> target 3 at rank 1
        ]
    )
    metrics = evaluate_popularity(counts, Sequences(rows))
    ranks = [0, 2, 1, 2, 1]
    assert metrics.users == 5 and metrics.hr[5] == 1.0
    assert metrics.ndcg[5] == pytest.approx(sum(1 / math.log2(r + 2) for r in ranks) / 5)
    assert metrics.coverage[5] == 1.0
