"""Serving replay tuning on the recorded ML.ENERGY files: a few (model, task) groups, end to end."""

from __future__ import annotations

import numpy as np
import pytest

from perfpred.errors import InvalidInputError
from perfpred.tuner import (
    Objective,
    ServingPredictor,
    config_key,
    lomo_predictor,
    serving_group,
    serving_groups,
    true_front,
    tune_serving,
)
from perfpred.tuner._serving_replay import (
    EnergyOfPower,
    GpuSecondsToThroughput,
    TailOverMedian,
    ThroughputOfSteps,
    serving_regressor,
)

THROUGHPUT, ENERGY, ITL = "metric.output_tokens_per_s", "metric.energy_per_token_j", "metric.itl_p99_ms"
# Small groups of two models (8 + 12 configs, 5 configs), to keep the suite fast.
GROUPS = [("Qwen/Qwen3-8B", "lm-arena-chat"), ("Qwen/Qwen3-8B", "gpqa"), ("google/gemma-3-12b-it", "lm-arena-chat")]


@pytest.fixture(scope="module")
def table(ml_energy_table):
    return ml_energy_table


@pytest.fixture(scope="module")
def predictors(table) -> dict[str, ServingPredictor]:
    """Leave-one-model-out predictors (small regressor, 2-fold grouped CV) for the models of GROUPS."""
    return {model: lomo_predictor(table, model, [THROUGHPUT, ENERGY, ITL], serving_regressor(40), cv_folds=2)
            for model in sorted({m for m, _ in GROUPS})}


def test_table_groups_and_replay(table) -> None:
    groups = serving_groups(table)
    assert len(groups) >= 40 and all(g in groups for g in GROUPS)
    assert table["config.max_num_seqs"].dtype.kind == "i"
    group = serving_group(table, *GROUPS[0])
    assert len(group.candidates) == len(group.backend) >= 3
    config = group.candidates.iloc[0].to_dict()
    m = group.backend.measure(config)
    recorded = group.grid([THROUGHPUT]).iloc[0][THROUGHPUT]
    assert m.metrics["output_tokens_per_s"] == pytest.approx(recorded)
    assert group.backend.n_evaluations == 1
    # What the predictor sees: the model, task and hardware, never a measured outcome.
    assert not any(k.startswith("metric.") or k in ("power_w", "energy_j") for k in group.inputs)


def test_predictor_is_trained_without_the_tuned_model(table, predictors) -> None:
    model = GROUPS[0][0]
    others = int((table["workload.model"] != model).sum())
    fitted = predictors[model].models_[ITL]
    assert fitted.median.n_train_ == fitted.ratio.n_train_ == others < len(table)
    assert set(predictors[model].error_std_) == {THROUGHPUT, ENERGY, ITL}
    assert all(0 < v < 2 for v in predictors[model].error_std_.values())


def test_a_tail_latency_is_the_median_times_a_learned_tail_ratio(table, predictors) -> None:
    model = GROUPS[0][0]
    predictor = predictors[model]
    rows = table[table["workload.model"] == model]
    tail = predictor.models_[ITL]
    assert isinstance(tail, TailOverMedian)
    p50, ratio = tail.median.predict(rows), tail.ratio.predict(rows)
    assert np.allclose(predictor.predict(rows)[ITL], p50 * ratio)
    # The ratio model learned p99 / p50 (>= 1 in every recorded row), not the p99 itself.
    train = table[table["workload.model"] != model]
    assert (train[ITL] / train["metric.itl_p50_ms"] >= 1).all() and (ratio > 0.9).all()
    assert np.median(ratio) < np.median(p50)
    # Rows without a recorded median: the tail is learned directly.
    direct = ServingPredictor([ITL], serving_regressor(20), cv_folds=0).fit(
        train.drop(columns=["metric.itl_p50_ms"]))
    assert not isinstance(direct.models_[ITL], TailOverMedian)
    assert np.isfinite(direct.predict(rows)[ITL]).all()


def test_throughput_and_energy_are_built_from_the_step_time_and_the_power(table, predictors) -> None:
    model = GROUPS[0][0]
    predictor = predictors[model]
    rows = table[table["workload.model"] == model]
    throughput, energy = predictor.models_[THROUGHPUT], predictor.models_[ENERGY]
    assert isinstance(throughput, ThroughputOfSteps) and isinstance(energy, EnergyOfPower)
    # one model of the ITL p50 serves the throughput and the ITL tail; energy reuses the throughput
    assert throughput.itl_p50_ms is predictor.models_[ITL].median and energy.throughput is throughput
    seqs = rows["config.max_num_seqs"].to_numpy(float)
    per_step = throughput.tokens_per_seq_step.predict(rows)
    itl_p50 = throughput.itl_p50_ms.predict(rows)
    pred = predictor.predict(rows)
    assert np.allclose(pred[THROUGHPUT], seqs * per_step * 1e3 / itl_p50)
    assert np.allclose(pred[ENERGY], energy.power_w.predict(rows) / pred[THROUGHPUT])
    # what the step model learned: tokens per sequence per step, near one (0.16-1.05 recorded)
    train = table[table["workload.model"] != model]
    recorded = train[THROUGHPUT] * train["metric.itl_p50_ms"] / 1e3 / train["config.max_num_seqs"]
    assert recorded.between(0.1, 1.1).all() and np.all((per_step > 0.1) & (per_step < 1.1))
    # rows without an ITL p50: throughput from GPU-seconds per token, energy learned directly
    bare = ServingPredictor([THROUGHPUT, ENERGY], serving_regressor(20), cv_folds=0).fit(
        train.drop(columns=["metric.itl_p50_ms", "metric.itl_p99_ms"]))
    assert isinstance(bare.models_[THROUGHPUT], GpuSecondsToThroughput)
    assert not isinstance(bare.models_[ENERGY], EnergyOfPower)
    assert np.isfinite(bare.predict(rows).to_numpy()).all()


@pytest.mark.parametrize("group_key", GROUPS)
def test_slo_tuning_finds_the_best_feasible_config(table, predictors, group_key) -> None:
    group = serving_group(table, *group_key)
    grid = group.grid([THROUGHPUT, ITL])
    slo = float(np.quantile(grid[ITL], 0.5))
    feasible = grid[grid[ITL] <= slo]
    best = feasible[THROUGHPUT].max()
    n = len(group.candidates)
    result = tune_serving(table, *group_key, [f"{THROUGHPUT}:max"], constraints=[f"{ITL} <= {slo}"], budget=n,
                          prior=predictors[group_key[0]], ensemble=3, n_estimators=30)
    history = result.history
    # The whole budget is the grid: every config once, the grid's best feasible config found.
    assert result.n_evaluations == n and result.stopped_by == "budget"
    keys = [config_key({k: r[k] for k in group.space.names}) for r in history.to_dict("records")]
    assert len(set(keys)) == n
    assert result.front[THROUGHPUT].iloc[0] == pytest.approx(best)
    # Configs that broke the SLO are measured but never reported on the feasible front.
    assert (result.front[ITL] <= slo).all()
    assert history.loc[history[ITL] > slo, "feasible"].eq(False).all()
    # The prior puts the best feasible config early (a grid needs all n launches).
    first = int(np.flatnonzero(np.isclose(history[THROUGHPUT], best) & history["feasible"])[0]) + 1
    assert first <= max(3, n // 2)


def test_pareto_front_of_a_group_and_its_plot(table, predictors, tmp_path) -> None:
    group_key = GROUPS[0]
    objectives = [f"{ENERGY}:min", f"{ITL}:min"]
    n = len(serving_group(table, *group_key).candidates)
    result = tune_serving(table, *group_key, objectives, budget=n, prior=predictors[group_key[0]], out_dir=tmp_path,
                          ensemble=3, n_estimators=30)
    truth = true_front(serving_group(table, *group_key), [Objective.parse(o) for o in objectives])
    assert sorted(result.front[ENERGY].round(9)) == sorted(truth[ENERGY].round(9))
    assert len(result.study.best_trials) == len(truth)
    for name in ("pareto.json", "front.csv", "history.csv", "pareto.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_bad_serving_input_gives_one_line_errors(table, predictors) -> None:
    group_key = GROUPS[1]
    with pytest.raises(InvalidInputError, match=r"records .*but got 'metric\.ttft_ms'") as info:
        tune_serving(table, *group_key, [f"{THROUGHPUT}:max"], constraints=["metric.ttft_ms <= 50"], budget=2,
                     prior=None)
    assert "\n" not in str(info.value)
    with pytest.raises(InvalidInputError, match="must be a recorded pair"):
        serving_group(table, "no/such-model", "gpqa")
    with pytest.raises(InvalidInputError, match="'upwards'"):
        tune_serving(table, *group_key, [f"{THROUGHPUT}:upwards"], budget=2, prior=None)
    with pytest.raises(InvalidInputError, match="`prior` must be 'lomo'"):
        tune_serving(table, *group_key, [f"{THROUGHPUT}:max"], budget=2, prior="oracle")
