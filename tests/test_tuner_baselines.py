"""Baseline strategies on the same hardware backend: random search, Optuna, Kernel Tuner's own."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from perfpred.collect._replay import ReplayBackend
from perfpred.datasets import Measurement
from perfpred.errors import DatasetNotFoundError, InvalidInputError
from perfpred.settings import datasets_dir
from perfpred.tuner import KERNEL_TUNER_STRATEGIES, SearchSpace, config_key, kernel_tuner_search, optuna_search
from perfpred.tuner import random_search as random_search_fn


class SyntheticHardware:
    """A HardwareBackend: runtime = 1 + x + y/10 ms; configs with x == 3 fail to compile."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def measure(self, config) -> Measurement:
        config = dict(config)
        self.calls.append(config)
        if config["x"] == 3:
            return Measurement(kind="kernel", workload={}, config=config, hardware_id="synthetic-0",
                               status="compile_error", error="synthetic")
        return Measurement(kind="kernel", workload={}, config=config, hardware_id="synthetic-0",
                           runtime_ms=1.0 + config["x"] + config["y"] / 10)


def runtime(config: dict) -> float | None:
    return None if config["x"] == 3 else 1.0 + config["x"] + config["y"] / 10


def keys(configs) -> list[str]:
    return [config_key(c) for c in configs]


SPACE = SearchSpace({"x": list(range(8)), "y": list(range(8))})


# ---------------------------------------------------------------------------- random search


def test_random_search_measures_distinct_configs_in_order() -> None:
    candidates = SPACE.enumerate()
    hw = SyntheticHardware()
    values = random_search_fn(hw, candidates, 20, seed=5)
    assert len(values) == len(hw.calls) == 20
    assert len(set(keys(hw.calls))) == 20
    assert values == [runtime(c) for c in hw.calls]  # failures are None, in evaluation order
    assert all(isinstance(v, int) for c in hw.calls for v in c.values())  # plain Python values
    again = SyntheticHardware()
    assert random_search_fn(again, candidates, 20, seed=5) == values and again.calls == hw.calls
    other = SyntheticHardware()
    random_search_fn(other, candidates, 20, seed=6)
    assert other.calls != hw.calls


def test_random_search_stops_at_the_size_of_the_space() -> None:
    candidates = SPACE.enumerate().iloc[:10]
    hw = SyntheticHardware()
    assert len(random_search_fn(hw, candidates, 50)) == 10
    assert sorted(keys(hw.calls)) == sorted(keys(candidates.to_dict("records")))


# ---------------------------------------------------------------------------- Optuna


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_optuna_search_never_measures_a_config_twice(sampler: str) -> None:
    space = SearchSpace({"x": list(range(8)), "y": list(range(8))}, ["x + y <= 9"])
    candidates = space.enumerate()
    hw = SyntheticHardware()
    values = optuna_search(hw, space, candidates, 30, sampler=sampler, seed=0)
    assert len(values) == len(hw.calls) == 30
    assert len(set(keys(hw.calls))) == 30
    assert all(space.is_valid(c) for c in hw.calls)
    assert values == [runtime(c) for c in hw.calls]


def test_optuna_search_counts_invalid_suggestions_as_no_evaluation() -> None:
    """8 of 64 configs are valid: the sampler suggests many invalid ones, none reaches the hardware,
    and the search ends when every valid config has been measured once."""
    space = SearchSpace({"x": list(range(8)), "y": list(range(8))}, ["x == y"])
    candidates = space.enumerate()
    assert len(candidates) == 8
    hw = SyntheticHardware()
    values = optuna_search(hw, space, candidates, 20, sampler="tpe", seed=1)
    assert len(values) == len(hw.calls) == 8
    assert sorted(keys(hw.calls)) == sorted(keys(candidates.to_dict("records")))
    assert values.count(None) == 1  # x == y == 3 fails


def test_optuna_search_gives_up_after_too_many_invalid_suggestions() -> None:
    space = SearchSpace({"x": list(range(8)), "y": list(range(8))}, ["x == 7 and y == 7"])
    hw = SyntheticHardware()
    values = optuna_search(hw, space, space.enumerate(), 4, sampler="random", seed=0, max_invalid_per_eval=2)
    assert len(values) == len(hw.calls) <= 1  # 8 suggestions at most, each 1/64 likely to be valid


def test_gp_search_hears_of_invalid_and_failed_configs_as_violated_constraints(tmp_path: Path) -> None:
    """The GP sampler ignores failed trials (and then re-proposes the same invalid point), so an
    invalid suggestion or a failed config is a completed trial with a violated constraint and the
    worst value measured so far; measured configs are feasible and carry their own value."""
    import optuna

    space = SearchSpace({"x": list(range(8)), "y": list(range(8))}, ["x + y <= 9"])
    hw = SyntheticHardware()
    storage = f"sqlite:///{tmp_path / 'gp.db'}"
    values = optuna_search(hw, space, space.enumerate(), 14, sampler="gp", seed=0, storage=storage,
                           study_name="gp")
    assert len(values) == len(hw.calls) == 14 and all(space.is_valid(c) for c in hw.calls)
    trials = optuna.load_study(study_name="gp", storage=storage).trials
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    infeasible = [t for t in complete if t.constraints["infeasible"] > 0]
    feasible = [t for t in complete if t.constraints["infeasible"] <= 0]
    assert infeasible, "the sampler suggested no invalid or failing config: the test proves nothing"
    for t in feasible:
        assert t.params["x"] != 3 and space.is_valid(t.params) and t.value == runtime(t.params)
    for t in infeasible:
        assert t.params["x"] == 3 or not space.is_valid(t.params)
        # the worst value measured before this trial stands in for it
        assert t.value == max(f.value for f in feasible if f.number < t.number)
    # a failed trial only while nothing has been measured to stand in for an infeasible config
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert all(t.number < min(f.number for f in feasible) for t in failed)


def test_tpe_search_hears_of_invalid_configs_as_failed_trials(tmp_path: Path) -> None:
    import optuna

    space = SearchSpace({"x": list(range(8)), "y": list(range(8))}, ["x + y <= 6"])
    storage = f"sqlite:///{tmp_path / 'tpe.db'}"
    optuna_search(SyntheticHardware(), space, space.enumerate(), 8, sampler="tpe", seed=1, storage=storage,
                  study_name="tpe")
    trials = optuna.load_study(study_name="tpe", storage=storage).trials
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert failed and all(t.params["x"] == 3 or not space.is_valid(t.params) for t in failed)
    assert all(not t.constraints for t in trials)


def test_optuna_search_refuses_an_unknown_infeasible_rule() -> None:
    with pytest.raises(InvalidInputError, match="infeasible='penalty'") as excinfo:
        optuna_search(SyntheticHardware(), SPACE, SPACE.enumerate(), 4, infeasible="penalty")
    assert "\n" not in str(excinfo.value)


def test_optuna_search_refuses_an_unknown_sampler() -> None:
    with pytest.raises(InvalidInputError, match="sampler") as excinfo:
        optuna_search(SyntheticHardware(), SPACE, SPACE.enumerate(), 4, sampler="cma")
    assert "\n" not in str(excinfo.value)


# ---------------------------------------------------------------------------- Kernel Tuner


@pytest.fixture(scope="module")
def conv_cache() -> Path:
    try:
        return datasets_dir() / "kernel-tuner" / "convolution" / "A4000.json.gz"
    except DatasetNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def conv_recorded(conv_cache: Path) -> dict:
    with gzip.open(conv_cache, "rt") as fh:
        return json.load(fh)["cache"]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["random_sample", "genetic_algorithm"])
def test_kernel_tuner_search_on_a_recorded_cache(strategy: str, conv_cache: Path, conv_recorded: dict,
                                                 tmp_path: Path) -> None:
    pytest.importorskip("kernel_tuner")
    values = kernel_tuner_search(conv_cache, strategy, 8, seed=0, workdir=tmp_path)
    assert len(values) == 8  # the whole budget, one value (or None for a failed config) per evaluation
    recorded_times = {e["time"] for e in conv_recorded.values() if not isinstance(e["time"], str)}
    assert all(v is None or v in recorded_times for v in values)
    assert any(v is not None for v in values)
    assert kernel_tuner_search(conv_cache, strategy, 8, seed=0, workdir=tmp_path) == values  # seeded
    assert not (Path(conv_cache).parent / "A4000.json").exists()  # the plain copy goes to the workdir


@pytest.mark.slow
def test_kernel_tuner_dual_annealing_spends_the_whole_budget(conv_cache: Path, tmp_path: Path) -> None:
    """Kernel Tuner hands max_fevals to scipy as maxfun, which counts repeated and snapped calls: a
    24-evaluation run ended after 15 distinct configs. It gets the whole budget now."""
    pytest.importorskip("kernel_tuner")
    values = kernel_tuner_search(conv_cache, "dual_annealing", 24, seed=1, workdir=tmp_path)
    assert len(values) == 24


@pytest.mark.slow
def test_kernel_tuner_bayes_opt_is_seeded(conv_cache: Path, tmp_path: Path) -> None:
    """Its starting design came from an unseeded LatinHypercube: one seed, another run each time."""
    pytest.importorskip("kernel_tuner")
    runs = [kernel_tuner_search(conv_cache, "bayes_opt", 12, seed=s, workdir=tmp_path) for s in (3, 3, 4)]
    assert runs[0] == runs[1] and runs[0] != runs[2]


@pytest.mark.slow
def test_kernel_tuner_values_are_the_replay_objective(conv_cache: Path, tmp_path: Path) -> None:
    """Curves of every strategy line up only if they measure the same thing: Kernel Tuner's values
    must be the runtime the replay (and so perfpred's tuner and the optimum) uses for that config."""
    pytest.importorskip("kernel_tuner")
    replay = ReplayBackend.from_file(conv_cache)
    ok = replay.table[replay.table["status"] == "ok"]["runtime_ms"].to_numpy(float)
    def replay_value(params):
        m = replay.recorded(params)
        return m.runtime_ms if m.status == "ok" else None

    values = [v for v in kernel_tuner_search(conv_cache, "random_sample", 8, seed=0, workdir=tmp_path,
                                             value_of=replay_value)
              if v is not None]
    assert values
    mismatched = [v for v in values if not np.isclose(ok, v, rtol=1e-9, atol=0).any()]
    assert not mismatched, f"{len(mismatched)} of {len(values)} values are not the replay's runtime_ms"


def test_kernel_tuner_search_refuses_an_unknown_strategy(conv_cache: Path) -> None:
    pytest.importorskip("kernel_tuner")
    assert "random_sample" in KERNEL_TUNER_STRATEGIES
    with pytest.raises(InvalidInputError, match="strategy") as excinfo:
        kernel_tuner_search(conv_cache, "brute_force_please", 8)
    assert "\n" not in str(excinfo.value)


# ---------------------------------------------------------------------------- AutoTVM-style


def test_autotvm_is_random_for_one_plan_then_follows_its_rank_model() -> None:
    from perfpred.tuner import autotvm_search

    space = SearchSpace({"x": list(range(16)), "y": list(range(16))}, constraints=["x + y != 5"])
    candidates = space.enumerate()
    hw = SyntheticHardware()
    values = autotvm_search(hw, candidates, 48, seed=3, plan_size=16, n_chains=32, n_iter=100, epsilon=0.0)
    assert len(values) == len(hw.calls) == 48
    assert len(set(keys(hw.calls))) == 48  # never the same config twice
    assert all(c["x"] + c["y"] != 5 for c in hw.calls)  # constraints respected (annealing stays in the space)
    assert values == [runtime(c) for c in hw.calls]
    # After the random first plan the ranking model steers to small x (runtime grows with x).
    first, rest = hw.calls[:16], hw.calls[16:]
    assert np.mean([c["x"] for c in rest]) < np.mean([c["x"] for c in first]) - 2
    assert min(v for v in values[16:] if v is not None) < min(v for v in values[:16] if v is not None)
    again = SyntheticHardware()
    assert autotvm_search(again, candidates, 48, seed=3, plan_size=16, n_chains=32, n_iter=100,
                          epsilon=0.0) == values


def test_autotvm_stops_at_the_space_and_refuses_bad_settings() -> None:
    from perfpred.tuner import autotvm_search

    candidates = SPACE.enumerate().iloc[:10]
    hw = SyntheticHardware()
    assert len(autotvm_search(hw, candidates, 50, plan_size=4, n_chains=4, n_iter=10)) == 10
    with pytest.raises(InvalidInputError, match="plan_size"):
        autotvm_search(hw, candidates, 5, plan_size=0)
