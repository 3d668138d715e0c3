"""Scores of tuning runs: best-so-far curves, the performance score P, evaluations-to-target."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from perfpred.collect._replay import ReplayBackend
from perfpred.errors import DatasetNotFoundError, InvalidInputError
from perfpred.settings import datasets_dir
from perfpred.tuner import best_so_far, evaluations_to_within, mean_curve, performance_score, random_search

INF = np.inf


# ---------------------------------------------------------------------------- best_so_far / mean_curve


def test_best_so_far_pads_and_treats_failures_as_inf() -> None:
    curve = best_so_far([None, 3.0, INF, 2.0, float("nan"), 2.5], budget=8)
    assert curve.tolist() == [INF, 3.0, 3.0, 2.0, 2.0, 2.0, 2.0, 2.0]
    assert best_so_far([5.0, 4.0, 1.0, 0.5], budget=2).tolist() == [5.0, 4.0]  # cut at the budget
    assert best_so_far([], budget=3).tolist() == [INF, INF, INF]
    assert best_so_far([None, None], budget=3).tolist() == [INF, INF, INF]
    assert best_so_far([2.0], budget=0).tolist() == []


def test_mean_curve_counts_a_repeat_without_an_ok_value_at_the_worst_seen() -> None:
    curve = mean_curve([[None, 4.0, 1.0], [2.0, 3.0, 3.0]], budget=4)
    # repeat 1: [inf->4, 4, 1, 1]; repeat 2: [2, 2, 2, 2]
    assert curve.tolist() == [3.0, 3.0, 1.5, 1.5]
    assert mean_curve([[1.0, 2.0], [3.0]], budget=2).tolist() == [2.0, 2.0]


# ---------------------------------------------------------------------------- performance_score


def test_identical_runs_score_zero() -> None:
    runs = [[5.0, 3.0, None, 2.0], [4.0, 4.0, 1.5], [None, 6.0, 2.5, 2.0]]
    assert performance_score(runs, runs, optimum=1.0, budget=6) == 0.0


def test_hitting_the_optimum_at_once_scores_one() -> None:
    baseline = [[5.0, 3.0, 2.0, 1.5], [4.0, 4.0, 3.0, 2.0]]
    strategy = [[1.0, 7.0, 9.0, 3.0], [1.0, None, 2.0, 1.0]]
    assert performance_score(strategy, baseline, optimum=1.0, budget=4) == pytest.approx(1.0)


def test_worse_than_the_baseline_is_negative_and_halfway_is_half() -> None:
    baseline = [[3.0, 3.0, 3.0]]
    assert performance_score([[5.0, 5.0, 5.0]], baseline, optimum=1.0, budget=3) == pytest.approx(-1.0)
    assert performance_score([[2.0, 2.0, 2.0]], baseline, optimum=1.0, budget=3) == pytest.approx(0.5)


def test_budgets_where_the_baseline_is_at_the_optimum_are_left_out() -> None:
    baseline = [[3.0, 1.0, 1.0]]
    assert performance_score([[2.0, 2.0, 2.0]], baseline, optimum=1.0, budget=3) == pytest.approx(0.5)
    assert performance_score([[2.0]], [[1.0]], optimum=1.0, budget=3) == 0.0  # nothing to gain anywhere


@pytest.mark.parametrize("optimum", [0.0, -1.0, float("nan")])
def test_a_non_positive_optimum_is_refused(optimum: float) -> None:
    with pytest.raises(InvalidInputError, match="optimum > 0") as excinfo:
        performance_score([[1.0]], [[2.0]], optimum=optimum, budget=1)
    assert "\n" not in str(excinfo.value)


# ---------------------------------------------------------------------------- evaluations_to_within


def test_evaluations_to_within() -> None:
    values = [None, 5.0, 1.05, 1.01, 1.0]
    assert evaluations_to_within(values, optimum=1.0) == 4  # default 2 %
    assert evaluations_to_within(values, optimum=1.0, rel=0.1) == 3
    assert evaluations_to_within(values, optimum=1.0, rel=0.0) == 5
    assert evaluations_to_within([None, 3.0, float("inf")], optimum=1.0) is None
    assert evaluations_to_within([], optimum=1.0) is None


# ---------------------------------------------------------------------------- on a replayed real space


@pytest.fixture(scope="module")
def conv_a4000() -> ReplayBackend:
    try:
        path = datasets_dir() / "kernel-tuner" / "convolution" / "A4000.json.gz"
    except DatasetNotFoundError as exc:
        pytest.skip(str(exc))
    return ReplayBackend.from_file(path)


def test_random_search_scores_zero_against_an_independent_random_search(conv_a4000: ReplayBackend) -> None:
    """The issue's acceptance check: random search scored against random search with other
    seeds has |P| < 0.05 at budget 32.

    P averages (base - s) / (base - optimum) over budgets 1..32; on this space the runtimes are
    heavy-tailed (the slowest config is 108x the optimum), so the score of 30 repeats against 30
    has a spread of about 0.09 and passes |P| < 0.05 for fewer than half of the seed choices.
    With 800 repeats each the spread is under 0.02, so the check holds with a margin of ~3 spreads.
    """
    replay = conv_a4000
    candidates = pd.DataFrame([c.as_dict() for c in replay.configs()])
    optimum = replay.optimum().runtime_ms
    budget, repeats = 32, 800
    baseline = [random_search(replay, candidates, budget, seed=s) for s in range(repeats)]
    strategy = [random_search(replay, candidates, budget, seed=10_000 + s) for s in range(repeats)]
    assert all(len(r) == budget for r in baseline + strategy)
    assert replay.optimum().runtime_ms == optimum
    score = performance_score(strategy, baseline, optimum, budget)
    assert abs(score) < 0.05, score
    # and a strategy that always finds the optimum first scores 1 against the same baseline
    assert performance_score([[optimum]] * 3, baseline, optimum, budget) == pytest.approx(1.0)
