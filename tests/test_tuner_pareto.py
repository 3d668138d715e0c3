"""Multi-objective tuning: Pareto arithmetic, the predictor-first loop, SLOs, baselines, bad input."""

from __future__ import annotations

import numpy as np
import optuna
import pandas as pd
import pytest

from perfpred.datasets import Measurement
from perfpred.errors import InvalidInputError
from perfpred.tuner import (
    MetricBound,
    Objective,
    ParetoSettings,
    ParetoTuner,
    SearchSpace,
    config_key,
    hypervolume,
    hypervolume_curve,
    hypervolume_improvement,
    optuna_pareto_search,
    pareto_mask,
    plot_pareto,
    random_order_search,
    tune_pareto,
)

# ---------------------------------------------------------------------------- synthetic hardware

# 16 x 8 = 128 configs. Runtime falls and energy rises with x (a real trade-off); y = 2 is best
# for both, so the true Pareto front is the 16 configs with y = 2. Power rises with x.
PARAMS = {"x": list(range(16)), "y": list(range(8))}
OBJECTIVES = ("runtime_ms", "energy_j")


def metrics_of(frame) -> dict[str, np.ndarray]:
    x, y = (np.asarray(frame[k], dtype=float) for k in ("x", "y"))
    penalty = 0.15 * (y - 2) ** 2
    runtime = (1.0 + 0.5 * (15 - x)) * (1 + penalty)
    energy = (2.0 + 0.4 * x) * (1 + penalty)
    return {"runtime_ms": runtime, "energy_j": energy, "power_w": 100.0 + 20.0 * x,
            "tokens_per_s": 1000.0 / runtime}


class TwoObjectiveHardware:
    """A HardwareBackend with runtime, energy, power and a throughput metric; some configs fail."""

    def __init__(self, fails=None) -> None:
        self.fails = fails or (lambda config: False)
        self.calls: list[dict] = []

    def measure(self, config) -> Measurement:
        config = dict(config)
        self.calls.append(config)
        if self.fails(config):
            return Measurement(kind="kernel", workload={}, config=config, hardware_id="synthetic-0",
                               status="runtime_error", error="synthetic: out of memory")
        m = {k: float(v[0]) for k, v in metrics_of(pd.DataFrame([config])).items()}
        return Measurement(kind="kernel", workload={}, config=config, hardware_id="synthetic-0",
                           runtime_ms=m["runtime_ms"], energy_j=m["energy_j"], power_w=m["power_w"],
                           power_source="recorded", metrics={"tokens_per_s": m["tokens_per_s"]})


@pytest.fixture
def space() -> SearchSpace:
    return SearchSpace(dict(PARAMS))


def grid_values(space, objectives, constraints=()):
    """(rows of the full grid, the feasible true front's hypervolume) for scoring."""
    rows = []
    for config in space.enumerate().to_dict("records"):
        m = {k: float(v[0]) for k, v in metrics_of(pd.DataFrame([config])).items()}
        rows.append({**config, "runtime_ms": m["runtime_ms"], "energy_j": m["energy_j"], "power_w": m["power_w"],
                     "metric.tokens_per_s": m["tokens_per_s"]})
    return rows


def hv_ratio(rows, objectives, constraints, grid, budget):
    objectives = [Objective.parse(o) for o in objectives]
    constraints = [MetricBound.parse(c) for c in constraints]
    worst = [max(r[o.metric] for r in grid) if o.direction == "minimize" else min(r[o.metric] for r in grid)
             for o in objectives]
    ref = [w * 1.1 if o.direction == "minimize" else w * 0.9 for w, o in zip(worst, objectives, strict=True)]
    full = hypervolume_curve(grid, objectives, constraints, ref, len(grid))[-1]
    return hypervolume_curve(rows, objectives, constraints, ref, budget) / full


# ---------------------------------------------------------------------------- Pareto arithmetic


def test_pareto_mask_and_hypervolume_match_optuna() -> None:
    from optuna._hypervolume import compute_hypervolume

    rng = np.random.default_rng(0)
    points = rng.random((40, 2))
    mask = pareto_mask(points)
    for i in range(len(points)):
        dominated = any(np.all(points[j] <= points[i]) and np.any(points[j] < points[i]) for j in range(len(points)))
        assert mask[i] == (not dominated)
    ref = np.array([1.2, 1.2])
    assert hypervolume(points, ref) == pytest.approx(compute_hypervolume(points, ref))
    assert hypervolume(np.array([[2.0, 0.1]]), ref) == 0.0  # beyond the reference: no volume


@pytest.mark.parametrize("d", [1, 2, 3])
def test_hypervolume_improvement_is_exact(d) -> None:
    rng = np.random.default_rng(d)
    front = rng.random((6, d))
    front = front[pareto_mask(front)]
    cands = rng.random((25, d)) * 1.3
    ref = np.full(d, 1.1)
    gain = hypervolume_improvement(cands, front, ref)
    base = hypervolume(front, ref)
    expected = [hypervolume(np.vstack([front, c]), ref) - base for c in cands]
    np.testing.assert_allclose(gain, expected, atol=1e-12)
    assert np.all(gain >= 0)


# ---------------------------------------------------------------------------- the loop


def test_finds_the_known_front_within_budget_and_beats_random(space) -> None:
    backend = TwoObjectiveHardware()
    settings = ParetoSettings(objectives=OBJECTIVES, budget=32, batch_size=2, seed=0, ensemble=3, n_estimators=60)
    result = ParetoTuner(space, backend, settings).run()
    grid = grid_values(space, OBJECTIVES)
    ours = hv_ratio(result.history.to_dict("records"), OBJECTIVES, (), grid, 32)
    randoms = [hv_ratio(random_order_search(TwoObjectiveHardware(), space.enumerate(), 32, list(OBJECTIVES), seed=s),
                        OBJECTIVES, (), grid, 32) for s in range(5)]
    assert ours[-1] >= 0.97, ours[-1]
    assert ours[-1] > np.mean([r[-1] for r in randoms])
    assert set(result.front["y"]) == {2}  # every reported front config is on the true front
    # No config measured twice; the budget is spent exactly; the study holds every evaluation.
    assert len({config_key(c) for c in backend.calls}) == len(backend.calls) == 32
    assert result.n_evaluations == 32 and len(result.study.trials) == 32
    assert result.stopped_by == "budget"
    assert result.hypervolume > 0 and len(result.reference_point) == 2


def test_constraints_are_respected_and_recorded_as_optuna_constraints(space) -> None:
    # power_w <= 260 allows x <= 8 only; the front must come from those, and infeasible configs
    # measured along the way must never be reported.
    constraints = ("power_w <= 260",)
    settings = ParetoSettings(objectives=OBJECTIVES, budget=24, constraints=constraints, seed=1, ensemble=3,
                              n_estimators=60)
    result = ParetoTuner(space, TwoObjectiveHardware(), settings).run()
    assert len(result.front) > 0
    assert (result.front["x"] <= 8).all() and (result.front["power_w"] <= 260).all()
    infeasible = result.history[~result.history["feasible"]]
    front_keys = {config_key({"x": r["x"], "y": r["y"]}) for r in result.front.to_dict("records")}
    assert not front_keys & {config_key({"x": r["x"], "y": r["y"]}) for r in infeasible.to_dict("records")}
    trials = result.study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    assert all(set(t.constraints) == {"power_w <= 260"} for t in trials)
    assert {t.number for t in result.study.best_trials} == set(result.front["trial"])
    grid = grid_values(space, OBJECTIVES, constraints)
    assert hv_ratio(result.history.to_dict("records"), OBJECTIVES, constraints, grid, 24)[-1] >= 0.9


def test_maximize_direction_and_failures(space) -> None:
    objectives = ("metric.tokens_per_s:max", "energy_j:min")
    backend = TwoObjectiveHardware(fails=lambda c: c["y"] == 7)
    settings = ParetoSettings(objectives=objectives, budget=20, seed=2, ensemble=3, n_estimators=60)
    result = ParetoTuner(space, backend, settings).run()
    study = result.study
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert set(result.front["y"]) == {2}
    failed = result.history[result.history["status"] != "ok"]
    assert not failed["feasible"].any()
    front_tp = result.front["metric.tokens_per_s"].to_numpy()
    assert np.all(np.diff(front_tp) <= 0)  # sorted best (highest throughput) first


def test_prior_guides_and_one_objective_with_slo(space) -> None:
    # One objective under an SLO is the constrained single-objective case of the same loop; the best
    # feasible config is x=8, y=2 (runtime 4.5 ms at 260 W).
    prior = {"runtime_ms": lambda c: metrics_of(c)["runtime_ms"], "power_w": lambda c: metrics_of(c)["power_w"]}
    slo = ("power_w <= 275",)

    def run(budget, prior_error=None):
        settings = ParetoSettings(objectives=("runtime_ms",), budget=budget, constraints=slo, seed=0, ensemble=3,
                                  n_estimators=60)
        backend = TwoObjectiveHardware()
        return backend, ParetoTuner(space, backend, settings, prior=prior, prior_error=prior_error).run()

    # A prior known to be accurate goes straight to the best feasible config.
    backend, _ = run(1, prior_error={"runtime_ms": 0.01, "power_w": 0.01})
    assert backend.calls == [{"x": 8, "y": 2}]
    # With the default spread (0.25 in log) the first pick is a safer one, and the loop gets there after.
    backend, result = run(4)
    assert {"x": 8, "y": 2} in backend.calls
    assert result.front.iloc[0]["runtime_ms"] == pytest.approx(4.5)
    assert (result.front["power_w"] <= 275).all()
    with pytest.raises(InvalidInputError, match="prior error must be a positive number"):
        ParetoTuner(space, backend, ParetoSettings(objectives=("runtime_ms",), budget=1, constraints=slo),
                    prior=prior, prior_error={"power_w": -0.1})


def test_tune_pareto_writes_report_and_plot(space, tmp_path) -> None:
    result = tune_pareto(space, TwoObjectiveHardware(), ["runtime_ms", "energy_j"], budget=12, batch_size=3,
                         reference_point=[20.0, 10.0], out_dir=tmp_path)
    for name in ("pareto.json", "front.csv", "history.csv", "pareto.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert result.reference_point == [20.0, 10.0] and result.hypervolume > 0
    assert plot_pareto(result, tmp_path / "again.png").exists()


def test_shared_storage_never_measures_twice_or_overruns(space, tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    backend = TwoObjectiveHardware()
    for seed in (0, 1):  # a second worker (run) on the same study continues within the same budget
        settings = ParetoSettings(objectives=OBJECTIVES, budget=10, batch_size=3, seed=seed, ensemble=3,
                                  n_estimators=30)
        ParetoTuner(space, backend, settings, storage=url, study_name="shared").run()
    assert len(backend.calls) == 10
    assert len({config_key(c) for c in backend.calls}) == 10


# ---------------------------------------------------------------------------- baselines


@pytest.mark.parametrize("sampler", ["nsga2", "tpe"])
def test_optuna_baselines_respect_budget_and_constraints(space, sampler) -> None:
    backend = TwoObjectiveHardware()
    rows = optuna_pareto_search(backend, space, space.enumerate(), 15, OBJECTIVES, ("power_w <= 260",),
                                sampler=sampler, seed=0, population_size=6)
    assert len(rows) == len(backend.calls) == 15
    assert len({config_key(c) for c in backend.calls}) == 15


def test_mixed_int_and_float_params_are_never_measured_twice() -> None:
    # A row of ints beside floats comes back from pandas as floats; the config must keep its key.
    space = SearchSpace({"x": [0, 5, 10, 15], "y": [0.0, 2.0, 4.5]})
    backend = TwoObjectiveHardware()
    settings = ParetoSettings(objectives=OBJECTIVES, budget=12, seed=0, ensemble=2, n_estimators=20)
    result = ParetoTuner(space, backend, settings).run()
    assert result.n_evaluations == 12 and result.stopped_by == "budget"
    assert len({config_key(c) for c in backend.calls}) == 12
    assert all(isinstance(c["x"], int) for c in backend.calls)


def test_callback_stops_the_run(space) -> None:
    settings = ParetoSettings(objectives=OBJECTIVES, budget=30, seed=0, ensemble=3, n_estimators=30)
    result = ParetoTuner(space, TwoObjectiveHardware(), settings,
                         on_evaluation=lambda row: row["y"] == 2).run()
    assert result.stopped_by == "callback" and result.history.iloc[-1]["y"] == 2


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"objectives": ("latency",)}, "'latency'"),
    ({"objectives": ("runtime_ms:fastest",)}, "'fastest'"),
    ({"objectives": ()}, "at least one objective"),
    ({"objectives": ("runtime_ms", "runtime_ms:max")}, "different metric"),
    ({"constraints": ("metric.itl p99 < 50",)}, "'METRIC <= BOUND'"),
    ({"constraints": ("metric.itl_p99_ms <= -5",)}, "-5"),
    ({"budget": 0}, "budget >= 1"),
], ids=["unknown-objective", "bad-direction", "none", "duplicate", "bad-slo", "bad-bound",
        "budget"])
def test_bad_settings_give_one_line_errors(kwargs, needle) -> None:
    args = {"objectives": OBJECTIVES, "budget": 5, **kwargs}
    with pytest.raises(InvalidInputError) as info:
        ParetoSettings(**args)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_objective_and_bound_objects_check_themselves() -> None:
    with pytest.raises(InvalidInputError, match="minimize or maximize, but got 'maximise'"):
        Objective("runtime_ms", "maximise")
    with pytest.raises(InvalidInputError, match="'<=' or '>=', but got '<'"):
        MetricBound("power_w", "<", 5.0)
    assert str(MetricBound.parse("metric.itl_p99_ms>=50")) == "metric.itl_p99_ms >= 50"
    assert Objective.parse("metric.x:MAX").direction == "maximize"


def test_feasible_mask_agrees_with_is_feasible_row_by_row() -> None:
    # Reports score whole recorded grids with the vectorised mask and runs row by row: one rule.
    from perfpred.tuner._objectives import feasible_mask, is_feasible

    rng = np.random.default_rng(3)
    objectives = [Objective("runtime_ms"), Objective("metric.tokens_per_s", "maximize")]
    constraints = [MetricBound.parse("power_w <= 200"), MetricBound.parse("metric.tokens_per_s >= 5")]
    rows = []
    for _ in range(300):
        rows.append({m: (None if rng.random() < 0.15 else float(rng.uniform(0, 400)))
                     for m in ("runtime_ms", "metric.tokens_per_s", "power_w")})
    columns = {m: [np.nan if r[m] is None else r[m] for r in rows] for m in rows[0]}
    expected = [is_feasible(r, objectives, constraints) for r in rows]
    assert feasible_mask(columns, objectives, constraints).tolist() == expected
    assert 0 < sum(expected) < len(rows)


def test_metrics_the_backend_does_not_record_are_refused() -> None:
    from perfpred.collect._replay import ReplayBackend

    rows = []
    for x in range(4):
        m = Measurement(kind="serving", workload={"model": "m"}, config={"x": x}, hardware_id="h",
                        power_w=100.0 + x, power_source="recorded", metrics={"itl_p99_ms": 10.0 + x})
        rows.append(m.to_row())
    backend = ReplayBackend(pd.DataFrame(rows))
    space = SearchSpace({"x": list(range(4))})
    with pytest.raises(InvalidInputError, match=r"records .*but got 'metric\.itl_p95_ms'"):
        ParetoTuner(space, backend, ParetoSettings(objectives=("power_w",), budget=2,
                                                   constraints=("metric.itl_p95_ms <= 50",)))
    with pytest.raises(InvalidInputError, match="but got 'energy_j'"):
        ParetoTuner(space, backend, ParetoSettings(objectives=("energy_j",), budget=2))
    result = ParetoTuner(space, backend, ParetoSettings(objectives=("power_w",), budget=2,
                                                        constraints=("metric.itl_p99_ms <= 11.5",))).run()
    assert result.n_evaluations == 2
