"""The two-tower bench reports, per dataset, the run that validation chose, never the test's best."""

from bench.two_tower import chosen_run


def run(validation: float, test: float) -> dict:
    return {"validation": {"ndcg@10": validation}, "test": {"ndcg@10": test}}


def test_the_chosen_run_is_the_best_validation_ndcg_of_the_dataset_among_the_logq_runs():
    runs = {
        "LastFM logQ": run(0.02, 0.09),  # best test: not chosen
        "LastFM logQ+mean": run(0.04, 0.03),
        "LastFM no logQ": run(0.08, 0.01),  # the logQ-off measurement is not a candidate
        "Beauty logQ": run(0.09, 0.05),  # another dataset
    }
    assert chosen_run(runs, "LastFM") == "LastFM logQ+mean"
    assert chosen_run(runs, "Beauty") == "Beauty logQ"
