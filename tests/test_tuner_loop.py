"""The predictor-first tuning loop on synthetic hardware and on a replayed recorded space."""

from __future__ import annotations

import time
from math import comb
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from perfpred.collect._replay import ReplayBackend
from perfpred.datasets import Measurement
from perfpred.errors import DatasetNotFoundError, InvalidInputError
from perfpred.settings import datasets_dir
from perfpred.tuner import SearchSpace, Tuner, TuneSettings, config_key, diverse_top, maximin_design
from perfpred.tuner._loop import MIN_TARGET_VOTE, row_config, thompson_top
from perfpred.tuner._rounds import PredictorFirstLoop, Proposal, level_codes
from perfpred.tuner._study import CandidateIndex

# ---------------------------------------------------------------------------- synthetic hardware

# 8 x 8 x 4 = 256 configs; the smooth landscape has its optimum (1.0 ms) at x=5, y=2, z=4.
PARAMS = {"x": list(range(8)), "y": list(range(8)), "z": [1, 2, 4, 8]}


def bowl_ms(frame) -> np.ndarray | float:
    """Runtime of the smooth landscape; works on a config dict and on a candidates DataFrame."""
    x, y, z = (np.asarray(frame[k], dtype=float) for k in ("x", "y", "z"))
    out = 1.0 + 0.3 * (x - 5) ** 2 + 0.2 * (y - 2) ** 2 + 0.5 * np.abs(np.log2(z) - 2)
    return out if out.ndim else float(out)


class SyntheticHardware:
    """A HardwareBackend: a deterministic function of the params; ``fails(config)`` configs fail to compile."""

    def __init__(self, runtime=bowl_ms, fails=None, delay_s: float = 0.0) -> None:
        self.runtime = runtime
        self.fails = fails or (lambda config: False)
        self.delay_s = delay_s
        self.calls: list[dict] = []

    def measure(self, config) -> Measurement:
        config = dict(config)
        self.calls.append(config)
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fails(config):
            return Measurement(kind="kernel", workload={}, config=config, hardware_id="synthetic-0",
                               status="compile_error", error="synthetic: too many registers")
        return Measurement(kind="kernel", workload={}, config=config, hardware_id="synthetic-0",
                           runtime_ms=float(self.runtime(config)))


def keys(configs) -> list[str]:
    return [config_key(c) for c in configs]


def history_configs(result, names) -> list[dict]:
    return [{n: row[n] for n in names} for row in result.history.to_dict("records")]


# ---------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [({"budget": 0}, "budget >= 1"), ({"budget": 4, "batch_size": 0}, "batch_size >= 1"),
     ({"budget": 4, "kappa": -1.0}, "kappa >= 0"), ({"budget": 4, "ensemble": 1}, "ensemble >= 2"),
     ({"budget": 4, "min_hamming": 0}, "min_hamming >= 1"), ({"budget": 4, "n_initial": 0}, "n_initial >= 1"),
     ({"budget": 4, "local_fraction": 1.5}, "0 <= local_fraction <= 1"),
     ({"budget": 4, "acquisition": "ucb"}, "acquisition in"),
     ({"budget": 4, "local_from": "worst"}, "local_from in"),
     ({"budget": 4, "prior_picks": "mixed"}, "prior_picks in"),
     ({"budget": 4, "flag_flip_rounds": -1}, "flag_flip_rounds >= 0")],
)
def test_bad_settings_give_one_line_errors(kwargs: dict, fragment: str) -> None:
    with pytest.raises(InvalidInputError, match=fragment) as excinfo:
        TuneSettings(**kwargs)
    assert "\n" not in str(excinfo.value)


def test_a_space_with_no_valid_config_is_refused() -> None:
    space = SearchSpace({"x": [1, 2]}, ["x > 5"])
    with pytest.raises(InvalidInputError, match="no valid config"):
        Tuner(space, SyntheticHardware(), TuneSettings(budget=4, ensemble=2))


# ---------------------------------------------------------------------------- budget and bookkeeping


@pytest.mark.parametrize(("budget", "batch_size"), [(12, 4), (10, 4), (7, 3)])
def test_exactly_budget_distinct_valid_configs_are_measured(budget: int, batch_size: int) -> None:
    space = SearchSpace(dict(PARAMS), ["x + y >= 3", "z * x <= 24 or y == 0"])
    valid = set(keys(space.enumerate().to_dict("records")))
    hw = SyntheticHardware()
    seen_rows: list[dict] = []
    tuner = Tuner(space, hw, TuneSettings(budget=budget, batch_size=batch_size, ensemble=2, seed=1),
                  on_evaluation=seen_rows.append)
    result = tuner.run()
    assert result.stopped_by == "budget"
    assert result.n_evaluations == len(result.history) == len(hw.calls) == len(seen_rows) == budget
    assert len(set(keys(hw.calls))) == budget  # no config measured twice
    assert set(keys(hw.calls)) <= valid  # every measured config satisfies the constraints
    assert keys(history_configs(result, space.names)) == keys(hw.calls)
    assert result.extra["study_evaluations"] == budget
    values = result.history["value"].to_numpy(dtype=float)
    assert result.best_value == values.min()
    assert bowl_ms(result.best_config) == result.best_value
    assert np.array_equal(result.best_so_far(), np.minimum.accumulate(values))


def test_a_space_smaller_than_the_budget_is_exhausted() -> None:
    space = SearchSpace({"x": [1, 2, 3], "y": [1, 2]})
    hw = SyntheticHardware(runtime=lambda c: c["x"] + c["y"] / 10)
    result = Tuner(space, hw, TuneSettings(budget=20, batch_size=4, ensemble=2)).run()
    assert result.stopped_by == "space_exhausted"
    assert result.n_evaluations == len(hw.calls) == 6
    assert len(set(keys(hw.calls))) == 6
    assert result.best_config == {"x": 1, "y": 1} and result.best_value == pytest.approx(1.1)


def test_failures_are_recorded_as_rows() -> None:
    space = SearchSpace(dict(PARAMS))
    hw = SyntheticHardware(fails=lambda c: c["z"] == 8)
    rows: list[dict] = []
    tuner = Tuner(space, hw, TuneSettings(budget=16, batch_size=4, ensemble=2, seed=0), on_evaluation=rows.append)
    result = tuner.run()
    failed = [r for r in rows if r["z"] == 8]
    assert failed, "the design should hit the failing z=8 plane at least once"
    assert all(r["status"] == "compile_error" and r["value"] is None for r in failed)
    assert all(r["status"] == "ok" and r["value"] > 0 for r in rows if r["z"] != 8)
    hist = result.history
    assert (hist["status"] == "compile_error").sum() == len(failed)
    assert hist.loc[hist["status"] != "ok", "value"].isna().all()
    assert result.extra["study_failures"] == len(failed)
    # the study keeps them too: a FAIL trial with its status
    trials = tuner.recorder.study.get_trials(deepcopy=False)
    fails = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(fails) == len(failed)
    assert {t.user_attrs["status"] for t in fails} == {"compile_error"}
    assert result.best_config["z"] != 8


def test_the_surrogate_learns_to_avoid_a_failing_region() -> None:
    """Half the space fails (y >= 4), and the runtime falls towards it: a regressor alone would
    keep probing the border; the failure model must steer the guided rounds away from it."""

    def runtime(c):
        return 1.0 + 0.3 * (c["x"] - 5) ** 2 + 2.0 * (7 - c["y"]) + 0.5 * abs(np.log2(c["z"]) - 2)

    space = SearchSpace(dict(PARAMS))
    guided_failures, guided = 0, 0
    for seed in range(3):
        hw = SyntheticHardware(runtime=runtime, fails=lambda c: c["y"] >= 4)
        result = Tuner(space, hw, TuneSettings(budget=24, batch_size=4, ensemble=2, seed=seed)).run()
        assert result.n_evaluations == 24
        later = result.history[result.history["iteration"] >= 3]  # after two rounds of data
        guided += len(later)
        guided_failures += int((later["status"] != "ok").sum())
        assert result.best_config["y"] < 4
    # random picks would fail half the time
    assert guided >= 40
    assert guided_failures / guided < 0.25, (guided_failures, guided)


# ---------------------------------------------------------------------------- stopping rules


def test_early_stop_on_an_easy_landscape() -> None:
    space = SearchSpace(dict(PARAMS))
    hw = SyntheticHardware(runtime=lambda c: 1.0 + 0.001 * c["x"])  # everything is within 1 %
    result = Tuner(space, hw, TuneSettings(budget=64, batch_size=4, ensemble=2, early_stop_rel=0.05)).run()
    assert result.stopped_by == "early_stop"
    assert result.n_evaluations < 64
    assert result.n_evaluations >= TuneSettings(budget=64, batch_size=4).initial_size


def test_early_stop_does_not_fire_while_the_optimum_is_far_away() -> None:
    """On the smooth bowl (optimum 1.0 ms, the design's best is ~2 ms), stopping "because no
    candidate is predicted to beat the best by 5 %" must not happen at twice the optimum."""
    space = SearchSpace(dict(PARAMS))
    outcomes = []
    for seed in range(3):
        result = Tuner(space, SyntheticHardware(), TuneSettings(budget=40, ensemble=5, early_stop_rel=0.05,
                                                                seed=seed)).run()
        outcomes.append((result.stopped_by, result.n_evaluations, result.best_value))
    premature = [o for o in outcomes if o[0] == "early_stop" and o[2] > 1.5]
    assert not premature, f"stopped early at > 1.5x the optimum: {outcomes}"


def test_wall_time_cap() -> None:
    space = SearchSpace(dict(PARAMS))
    hw = SyntheticHardware(delay_s=0.05)
    settings = TuneSettings(budget=200, batch_size=2, ensemble=2, max_wall_s=0.5)
    result = Tuner(space, hw, settings).run()
    assert result.stopped_by == "wall_time"
    assert result.n_evaluations >= 1 and result.n_evaluations < 200
    # the cap is checked between rounds: it is overrun by at most one round
    assert result.wall_s < 0.5 + 5.0


def test_a_spent_wall_time_measures_nothing_and_zero_is_refused() -> None:
    hw = SyntheticHardware()
    result = Tuner(SearchSpace(dict(PARAMS)), hw, TuneSettings(budget=8, ensemble=2, max_wall_s=1e-9)).run()
    assert result.stopped_by == "wall_time" and result.n_evaluations == 0 and not hw.calls
    assert result.best_config is None and result.best_value is None and result.history.empty
    with pytest.raises(InvalidInputError, match="max_wall_s > 0"):  # a cap that allows nothing is a mistake
        TuneSettings(budget=8, max_wall_s=0.0)


def test_a_callback_returning_true_stops_the_run_after_that_evaluation() -> None:
    hw = SyntheticHardware()
    seen: list[dict] = []

    def stop_at_five(row: dict) -> bool:
        seen.append(row)
        return len(seen) == 5

    result = Tuner(SearchSpace(dict(PARAMS)), hw, TuneSettings(budget=20, batch_size=4, ensemble=2),
                   on_evaluation=stop_at_five).run()
    assert result.stopped_by == "callback" and result.n_evaluations == 5 and len(hw.calls) == 5


class _NoPicksPolicy(PredictorFirstLoop):
    """A policy whose model scores nothing (all non-finite): the loop must still make progress."""

    def __init__(self, candidates: pd.DataFrame, budget: int) -> None:
        self.candidates = candidates
        self.settings = TuneSettings(budget=budget, batch_size=3, n_initial=2, seed=0)
        self.measured_rows: list[int] = []
        self.proposals = 0

    def _measured_state(self):
        return (np.asarray(self.measured_rows, dtype=int),)

    def _n_used(self) -> int:
        return len(self.measured_rows)

    def _propose(self, state, measured, k, iteration) -> Proposal:
        self.proposals += 1
        assert self.proposals < 50, "the loop spins on empty proposals"
        return Proposal([])

    def _evaluate(self, i, proposal, iteration, t_start):
        self.measured_rows.append(i)
        return {"row": i}


def test_an_empty_proposal_is_filled_with_unmeasured_configs_instead_of_spinning() -> None:
    candidates = SearchSpace(dict(PARAMS)).enumerate()
    loop = _NoPicksPolicy(candidates, budget=11)
    outcome = loop.run_rounds()
    assert outcome.stopped_by == "budget" and len(outcome.rows) == 11
    assert len(set(loop.measured_rows)) == 11  # distinct configs
    small = _NoPicksPolicy(candidates.iloc[:5].reset_index(drop=True), budget=11)
    assert small.run_rounds().stopped_by == "space_exhausted" and sorted(small.measured_rows) == list(range(5))

# ---------------------------------------------------------------------------- cold start


def test_cold_start_measures_the_maximin_design_first() -> None:
    space = SearchSpace(dict(PARAMS))
    candidates = space.enumerate()
    settings = TuneSettings(budget=12, batch_size=4, ensemble=2, seed=3)
    assert settings.initial_size == 4
    hw = SyntheticHardware()
    Tuner(space, hw, settings).run()
    design = maximin_design(candidates, settings.initial_size, settings.seed)
    assert keys(hw.calls[:4]) == keys(candidates.iloc[design].to_dict("records"))


def test_the_whole_initial_design_is_measured_before_the_model_takes_over() -> None:
    """``n_initial`` is the size of the cold-start design; it may exceed one batch."""
    space = SearchSpace(dict(PARAMS))
    candidates = space.enumerate()
    settings = TuneSettings(budget=16, batch_size=4, n_initial=8, ensemble=2, seed=3)
    hw = SyntheticHardware()
    Tuner(space, hw, settings).run()
    design = maximin_design(candidates, 8, settings.seed)
    assert keys(hw.calls[:8]) == keys(candidates.iloc[design].to_dict("records"))


def test_maximin_design_spreads_out() -> None:
    candidates = SearchSpace({"a": list(range(10)), "b": list(range(10))}).enumerate()
    design = maximin_design(candidates, 5, seed=0)
    assert len(design) == len(set(design)) == 5 and all(0 <= i < 100 for i in design)
    assert design == maximin_design(candidates, 5, seed=0)  # seeded
    pts = candidates.iloc[design].to_numpy(float) / 9
    min_dist = min(np.linalg.norm(p - q) for i, p in enumerate(pts) for q in pts[i + 1:])
    rng = np.random.default_rng(0)
    random_min = np.median([min(np.linalg.norm(p - q) for i, p in enumerate(r) for q in r[i + 1:])
                            for r in (candidates.to_numpy(float)[rng.choice(100, 5, replace=False)] / 9
                                      for _ in range(50))])
    assert min_dist > 2 * random_min
    assert min_dist >= 0.5
    # asking for more points than there are candidates gives every candidate once
    assert sorted(maximin_design(candidates.iloc[:7], 20, seed=1)) == list(range(7))


# ---------------------------------------------------------------------------- diverse_top


def test_diverse_top_respects_min_hamming() -> None:
    codes = np.array([[0, 0, 0], [0, 0, 1], [0, 1, 1], [1, 1, 1], [1, 1, 0], [2, 2, 2]])
    score = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    assert diverse_top(score, codes, 3, min_hamming=1) == [0, 1, 2]
    picks = diverse_top(score, codes, 3, min_hamming=2)
    assert picks == [0, 2, 4]
    for i, a in enumerate(picks):
        for b in picks[i + 1:]:
            assert (codes[a] != codes[b]).sum() >= 2
    assert diverse_top(score, codes, 2, min_hamming=3) == [0, 3]


def test_diverse_top_fills_by_score_when_the_rule_is_too_strict_and_skips_infinite_scores() -> None:
    codes = np.array([[0, 0], [0, 1], [1, 1], [1, 0]])
    score = np.array([0.0, 0.1, np.inf, 0.3])
    picks = diverse_top(score, codes, 3, min_hamming=2)
    assert picks == [0, 1, 3]  # 0 first; nothing else is 2 away except inf-scored 2; fill by score
    assert diverse_top(score, codes, 10, min_hamming=1) == [0, 1, 3]  # never an infinite score
    assert diverse_top(np.full(4, np.inf), codes, 2) == []


def test_thompson_top_takes_each_members_best_in_turn() -> None:
    codes = np.array([[0, 0], [1, 1], [2, 2], [2, 3], [3, 3]])
    members = np.array([[0.0, 5.0, 5.0, 5.0, 1.0],   # member 0 rates config 0 best
                        [5.0, 0.0, 5.0, 5.0, 1.0],   # member 1 rates config 1 best
                        [0.1, 0.2, 5.0, 5.0, 1.0]])  # member 2 rates 0 and 1 best, both taken: 4 next
    assert thompson_top(members, np.zeros(5), 3, codes) == [0, 1, 4]
    # measured / failing configs (infinite penalty) are never picked; members cycle when k > members
    penalty = np.array([np.inf, 0.0, 0.0, 0.0, 0.0])
    assert thompson_top(members[:1], penalty, 2, codes) == [4, 1]
    # a pick within min_hamming - 1 differing params of an earlier one is skipped while others remain
    near = np.array([[0.0, 5.0, 5.0, 0.5, 5.0]])
    assert thompson_top(near, np.zeros(5), 2, np.array([[0, 0], [1, 1], [2, 2], [0, 1], [3, 3]])) == [0, 1]
    assert thompson_top(members, np.full(5, np.inf), 2, codes) == []


def test_thompson_acquisition_runs_the_loop_without_repeats() -> None:
    space = SearchSpace(dict(PARAMS))
    hw = SyntheticHardware()
    result = Tuner(space, hw, TuneSettings(budget=24, batch_size=4, ensemble=3, acquisition="thompson", seed=1),
                   prior=lambda f: bowl_ms(f) * (1 + 0.05 * np.asarray(f["y"]))).run()
    assert len(set(keys(hw.calls))) == len(hw.calls) == 24
    assert result.best_value <= 1.2  # a close prior and 24 evaluations land at or next to the optimum


def test_gp_surrogate_runs_the_loop_cold_and_with_a_prior() -> None:
    space = SearchSpace(dict(PARAMS))
    for prior in (None, lambda f: bowl_ms(f) * (1 + 0.05 * np.asarray(f["y"]))):
        hw = SyntheticHardware(fails=lambda c: c["x"] == 7)
        result = Tuner(space, hw, TuneSettings(budget=24, batch_size=4, surrogate="gp", seed=2), prior=prior).run()
        assert len(set(keys(hw.calls))) == len(hw.calls) == 24
        # The smooth bowl is what a GP models best: the optimum (1.0 ms) or a neighbour (<= 1.2 ms).
        assert result.best_value <= 1.2, (prior, result.best_value)


def test_gp_surrogate_is_uncertain_where_nothing_was_measured() -> None:
    from perfpred.tuner._surrogate import GPSurrogate, param_features

    candidates = SearchSpace(dict(PARAMS)).enumerate()
    X = param_features(candidates)
    y_log = np.log(bowl_ms(candidates))
    measured = np.flatnonzero(candidates["x"].to_numpy() <= 3)  # the optimum (x=5) is outside
    fit = GPSurrogate(seed=0).fit_predict(X.iloc[measured], y_log[measured], np.ones(len(measured), bool), X)
    near, far = candidates["x"].to_numpy() <= 3, candidates["x"].to_numpy() == 7
    assert np.median(fit.std_log[far]) > 3 * np.median(fit.std_log[near])
    assert fit.members_log is None and np.all(fit.p_ok == 1.0)


def test_blend_surrogate_averages_the_two_and_widens_where_they_disagree() -> None:
    from perfpred.tuner._surrogate import BlendSurrogate, EnsembleSurrogate, GPSurrogate, param_features

    candidates = SearchSpace(dict(PARAMS)).enumerate()
    X = param_features(candidates)
    y_log = np.log(bowl_ms(candidates))
    measured = np.arange(0, len(candidates), 7)
    args = (X.iloc[measured], y_log[measured], np.ones(len(measured), bool), X)
    a, b = EnsembleSurrogate(seed=0).fit_predict(*args), GPSurrogate(seed=0).fit_predict(*args)
    blend = BlendSurrogate(EnsembleSurrogate(seed=0), GPSurrogate(seed=0)).fit_predict(*args)
    np.testing.assert_allclose(blend.mean_log, 0.5 * (a.mean_log + b.mean_log))
    assert np.all(blend.std_log >= 0.5 * np.abs(a.mean_log - b.mean_log) - 1e-12)
    assert np.all(blend.std_log >= np.minimum(a.std_log, b.std_log) - 1e-12)


def test_thompson_sampling_needs_the_ensemble_surrogate() -> None:
    for surrogate in ("gp", "blend"):
        with pytest.raises(InvalidInputError, match=rf"thompson.*surrogate='{surrogate}'"):
            TuneSettings(budget=8, acquisition="thompson", surrogate=surrogate)
    with pytest.raises(InvalidInputError, match=r"surrogate in .*surrogate='forest'"):
        TuneSettings(budget=8, surrogate="forest")


def test_candidate_index_finds_rows_by_value_and_refuses_other_configs() -> None:
    candidates = pd.DataFrame({"x": [1, 2, 2], "kind": ["a", "a", "b"]})
    index = CandidateIndex(candidates)
    assert index.get({"x": 2, "kind": "b"}) == 2
    assert index.get({"kind": "a", "x": 2.0}) == 1  # read back from storage as a float
    assert index.get({"x": 3, "kind": "a"}) is None
    assert index.get({"x": 1}) is None and index.get({"x": 1, "kind": "a", "y": 0}) is None


@pytest.mark.parametrize("local_fraction", [0.0, 0.25])
def test_a_model_guided_batch_is_diverse(local_fraction: float) -> None:
    """The cold-start design is spread by distance; in every later batch the model's picks differ
    pairwise in at least ``min_hamming`` parameters (a local pick, first in its batch, is one
    parameter away from a measured incumbent instead)."""
    space = SearchSpace(dict(PARAMS))
    hw = SyntheticHardware()
    settings = TuneSettings(budget=16, batch_size=4, ensemble=2, min_hamming=2, seed=2, local_fraction=local_fraction)
    result = Tuner(space, hw, settings).run()
    codes = level_codes(space.enumerate())
    index = {config_key(c): i for i, c in enumerate(space.enumerate().to_dict("records"))}
    guided = result.history[result.history["iteration"] > 1]
    assert guided["iteration"].nunique() == 3
    n_local = round(4 * local_fraction)
    for _, batch in guided.groupby("iteration"):
        rows = [codes[index[config_key({n: r[n] for n in space.names})]] for r in batch.to_dict("records")]
        model_picks = rows[n_local:]
        assert len(model_picks) == 4 - n_local
        for i, a in enumerate(model_picks):
            for b in model_picks[i + 1:]:
                assert (a != b).sum() >= 2


# ---------------------------------------------------------------------------- transfer prior


def test_a_perfect_prior_picks_the_optimum_first() -> None:
    space = SearchSpace(dict(PARAMS))
    for seed in range(2):
        hw = SyntheticHardware()
        result = Tuner(space, hw, TuneSettings(budget=4, batch_size=4, ensemble=2, seed=seed),
                       prior=lambda frame: bowl_ms(frame)).run()
        assert hw.calls[0] == {"x": 5, "y": 2, "z": 4}
        assert result.history["predicted"].iloc[0] == pytest.approx(1.0)
        assert result.best_value == 1.0


def test_calibration_picks_put_space_filling_configs_in_the_first_prior_guided_batch() -> None:
    space = SearchSpace(dict(PARAMS))
    adversarial = {"reversed": lambda f: 1.0 / bowl_ms(f)}  # its top picks are the slowest configs
    plain, calibrated = SyntheticHardware(), SyntheticHardware()
    Tuner(space, plain, TuneSettings(budget=4, batch_size=4, ensemble=2, calibration_picks=0), prior=adversarial).run()
    Tuner(space, calibrated, TuneSettings(budget=8, batch_size=4, ensemble=2, calibration_picks=2),
                   prior=adversarial).run()
    candidates = space.enumerate()
    design = [row_config(candidates, i) for i in maximin_design(candidates, 2, 0)]
    assert calibrated.calls[:2] == plain.calls[:2]  # the prior's own top two stay
    assert calibrated.calls[2:4] == design  # the rest of the first batch spans the space
    assert min(bowl_ms(c) for c in calibrated.calls[:4]) < min(bowl_ms(c) for c in plain.calls[:4])
    # later batches are prior-guided again, and a cold start ignores the setting
    cold = SyntheticHardware()
    Tuner(space, cold, TuneSettings(budget=4, batch_size=4, ensemble=2, calibration_picks=2)).run()
    assert cold.calls == [row_config(candidates, i) for i in maximin_design(candidates, 4, 0)]


def test_local_picks_take_the_untried_neighbours_of_the_best_measured_configs() -> None:
    space = SearchSpace(dict(PARAMS))
    candidates = space.enumerate()
    codes = level_codes(candidates)
    hw = SyntheticHardware()
    settings = TuneSettings(budget=12, batch_size=4, ensemble=2, local_fraction=0.5, local_from="best",
                            calibration_picks=0)
    result = Tuner(space, hw, settings, prior=lambda f: bowl_ms(f) * (1 + 0.1 * np.asarray(f["z"]))).run()
    index = {config_key(row_config(candidates, i)): i for i in range(len(candidates))}
    history = result.history
    for it in sorted(history["iteration"].unique())[1:]:
        before = history[history["iteration"] < it]
        batch = history[history["iteration"] == it]
        incumbents = before.sort_values("value", kind="stable")
        inc_codes = [codes[index[config_key({n: r[n] for n in PARAMS})]] for r in incumbents.to_dict("records")]
        local = [codes[index[config_key({n: r[n] for n in PARAMS})]] for r in batch.to_dict("records")][:2]
        # the first two of a batch are one parameter away from the best and second-best measured
        assert (local[0] != inc_codes[0]).sum() == 1
        assert (local[1] != inc_codes[1]).sum() == 1
    assert len(set(keys(hw.calls))) == len(hw.calls) == 12


def test_surprise_local_picks_start_from_the_config_that_beat_its_prior_most() -> None:
    space = SearchSpace(dict(PARAMS))
    tuner = Tuner(space, SyntheticHardware(), TuneSettings(budget=8, ensemble=2))
    codes = tuner.codes
    fast, underrated = 0, 100  # measured: 1.0 ms as predicted, and 2.0 ms where the prior said 8.0 ms
    m_idx, m_ok = np.array([fast, underrated]), np.array([True, True])
    m_y = np.log([1.0, 2.0])
    prior_log = np.zeros(len(codes))
    prior_log[underrated] = np.log(8.0)
    score = np.zeros(len(codes))
    score[m_idx] = np.inf
    by_best = tuner._local_picks(score, m_idx, m_y, m_ok, 1)
    by_surprise = tuner._local_picks(score, m_idx, m_y, m_ok, 1, prior_log)
    assert (codes[by_best[0]] != codes[fast]).sum() == 1
    assert (codes[by_surprise[0]] != codes[underrated]).sum() == 1
    both = tuner._local_picks(score, m_idx, m_y, m_ok, 2, prior_log)
    assert both[0] == by_surprise[0] and (codes[both[1]] != codes[fast]).sum() == 1


FLAGGED = {**PARAMS, "shared": [0, 1]}


def test_flag_flips_change_one_binary_parameter_of_the_priors_favourites_first() -> None:
    tuner = Tuner(SearchSpace(dict(FLAGGED)), SyntheticHardware(), TuneSettings(budget=8, ensemble=2))
    codes, names = tuner.codes, list(tuner.candidates.columns)
    shared = names.index("shared")
    m_idx = np.array([10, 300])
    prior_log = np.zeros(len(codes))
    prior_log[10] = 1.0  # the prior ranks config 300 first
    score = np.arange(len(codes), dtype=float)
    score[m_idx] = np.inf
    picks = tuner._flag_flip_picks(score, m_idx, prior_log, 2)
    assert len(picks) == 2
    for pick, start in zip(picks, (300, 10), strict=True):
        differs = np.flatnonzero(codes[pick] != codes[start])
        assert list(differs) == [shared]  # only the binary parameter moved
    # a space without a binary parameter has no flips to offer
    plain = Tuner(SearchSpace(dict(PARAMS)), SyntheticHardware(), TuneSettings(budget=8, ensemble=2))
    assert plain._flag_flip_picks(np.zeros(len(plain.codes)), np.array([0]), np.zeros(len(plain.codes)), 1) == []


def test_flag_flip_rounds_measure_the_flip_of_a_favourite_that_ran_slow() -> None:
    # The prior prefers shared=0 everywhere; on this hardware shared=0 runs 3x slower, so the
    # optimum is the prior's favourite with the flag flipped.
    def here_ms(frame):
        return bowl_ms(frame) * np.where(np.asarray(frame["shared"]) == 1, 1.0, 3.0)

    def prior(frame):
        return bowl_ms(frame) * np.where(np.asarray(frame["shared"]) == 1, 1.3, 1.0)

    optimum = {"x": 5, "y": 2, "z": 4, "shared": 1}
    settings = TuneSettings(budget=8, batch_size=4, ensemble=2, flag_flip_rounds=1, seed=0)
    result = Tuner(SearchSpace(dict(FLAGGED)), SyntheticHardware(runtime=here_ms), settings, prior=prior).run()
    configs = history_configs(result, list(FLAGGED))
    rounds = result.history["iteration"].tolist()
    # the first batch (history round 1) holds the favourite; the next one holds its flip
    assert {"x": 5, "y": 2, "z": 4, "shared": 0} in [c for c, it in zip(configs, rounds, strict=True) if it == 1]
    assert optimum in [c for c, it in zip(configs, rounds, strict=True) if it == 2]


def test_prior_source_weights_favour_the_source_that_orders_configs_right() -> None:
    space = SearchSpace(dict(PARAMS))
    hw = SyntheticHardware()
    prior = {"good": lambda f: 2.0 * bowl_ms(f),  # off by a factor, right order
             "adversarial": lambda f: 1.0 / np.sqrt(bowl_ms(f))}  # reversed order
    result = Tuner(space, hw, TuneSettings(budget=16, batch_size=4, ensemble=2, seed=0), prior=prior).run()
    weights = result.extra["prior_weights"]
    assert len(weights) == 4 and weights[0] == [0.5, 0.5]  # no data yet: equal trust
    assert weights[-1][0] > 0.9 and weights[-1][1] < 0.1
    assert result.best_value == 1.0


def test_source_weights_directly() -> None:
    space = SearchSpace({"x": list(range(10))})
    tuner = Tuner(space, SyntheticHardware(runtime=lambda c: 1.0 + c["x"]), TuneSettings(budget=4, ensemble=2))
    truth = np.log(1.0 + np.arange(10.0))
    logs = np.stack([truth, -truth, np.zeros(10)])
    idx = np.array([0, 3, 6, 9])
    w = tuner.source_weights(logs, idx, truth[idx], np.ones(4, dtype=bool))
    assert w.sum() == pytest.approx(1.0) and w[0] == 1.0
    # fewer than three ok measurements: every source counts the same
    w = tuner.source_weights(logs, idx[:2], truth[idx[:2]], np.ones(2, dtype=bool))
    assert np.allclose(w, 1 / 3)


def test_a_model_of_this_hardware_alone_outvotes_priors_that_order_it_wrongly() -> None:
    # RGPE's target model: from MIN_TARGET_VOTE measurements on, priors that order this hardware
    # no better than its own measurements lose their weight (their share goes to no prior).
    space = SearchSpace({"x": list(range(40))})
    tuner = Tuner(space, SyntheticHardware(runtime=lambda c: 1.0 + c["x"]), TuneSettings(budget=4, ensemble=2))
    truth = np.log(1.0 + np.arange(40.0))
    reversed_logs = np.stack([-truth, -2 * truth])
    idx = np.arange(0, 40, 2)  # 20 measured configs
    w = tuner.source_weights(reversed_logs, idx, truth[idx], np.ones(len(idx), dtype=bool))
    assert w.sum() < 0.1
    # a prior that orders them right keeps its weight
    w = tuner.source_weights(np.stack([truth, -truth]), idx, truth[idx], np.ones(len(idx), dtype=bool))
    assert w[0] > 0.5 and w[1] == 0.0
    # below MIN_TARGET_VOTE measurements the priors share everything, as before
    few = idx[: MIN_TARGET_VOTE - 1]
    assert tuner.source_weights(reversed_logs, few, truth[few], np.ones(len(few), dtype=bool)).sum() == (
        pytest.approx(1.0))


def elsewhere_ms(frame) -> np.ndarray | float:
    """A landscape unlike ``bowl_ms``: its optimum (1.0 ms) at x=0, y=7, z=1."""
    x, y, z = (np.asarray(frame[k], dtype=float) for k in ("x", "y", "z"))
    out = 1.0 + 0.3 * x ** 2 + 0.2 * (y - 7) ** 2 + 0.5 * np.log2(z)
    return out if out.ndim else float(out)


def test_per_source_picks_give_each_source_its_own_best_where_a_blend_gives_neither() -> None:
    # A sibling GPU's recording (right order, 9 ms slower) and an unlike one's, trusted alike
    # (weights held at 0.5 each): averaged in log space, their top picks are compromises between
    # the two optima; shared out, each source's best runs in the second batch. The first batch,
    # before any evidence, is the blend's either way.
    space = SearchSpace(dict(PARAMS))
    prior = {"sibling": lambda f: 9.0 + bowl_ms(f), "unlike": lambda f: 9.0 + elsewhere_ms(f)}
    runs = {}
    for picks in ("per-source", "blend"):
        hw = SyntheticHardware()
        settings = TuneSettings(budget=8, batch_size=4, ensemble=2, calibration_picks=0, local_fraction=0.0,
                                prior_picks=picks)
        tuner = Tuner(space, hw, settings, prior=prior)
        tuner.source_weights = lambda logs, *_: np.full(len(logs), 0.5)
        runs[picks] = (hw, tuner.run())
    (hw, result), (blend_hw, blend) = runs["per-source"], runs["blend"]
    assert hw.calls[:4] == blend_hw.calls[:4]
    second = hw.calls[4:]
    assert {"x": 5, "y": 2, "z": 4} in second  # the sibling's optimum
    assert any(c["x"] <= 1 and c["y"] >= 6 for c in second)  # and the unlike source's region
    assert result.best_value == 1.0
    assert {"x": 5, "y": 2, "z": 4} not in blend_hw.calls and blend.best_value > 1.0
    assert not any(c["x"] <= 1 and c["y"] >= 6 for c in blend_hw.calls)
    assert len(set(keys(hw.calls))) == len(hw.calls) == 8


class _PriorOnlyFit:
    """A fitted surrogate stub that predicts exactly the prior it is given (no spread, no failures)."""

    def predict(self, features, prior_candidates=None):
        from perfpred.tuner._surrogate import SurrogateFit

        mean = np.asarray(prior_candidates, dtype=float)
        return SurrogateFit(mean_log=mean, std_log=np.zeros_like(mean), p_ok=np.ones_like(mean),
                            members_log=mean[None, :])


def test_per_source_shares_follow_the_weights_and_leave_the_rest_to_the_blend() -> None:
    space = SearchSpace({"x": list(range(40))})
    prior = {"up": lambda f: 1.0 + np.asarray(f["x"], float), "down": lambda f: 41.0 - np.asarray(f["x"], float)}
    tuner = Tuner(space, SyntheticHardware(runtime=lambda c: 1.0 + c["x"]),
                  TuneSettings(budget=8, ensemble=2, min_hamming=1), prior=prior)
    tuner._source_logs_ = tuner._source_logs()
    blend_score = np.abs(np.arange(40.0) - 20.0)  # the blend's favourites sit in the middle
    no_penalty = np.zeros(40)
    # 3 : 1 -> three from "up" (x = 0, 1, 2), one from "down" (x = 39), heavier share first
    picks, predicted = tuner._per_source_picks(_PriorOnlyFit(), np.array([0.75, 0.25]), blend_score, no_penalty,
                                               4, iteration=1)
    assert picks == [0, 39, 1, 2]
    assert predicted[0] == pytest.approx(0.0) and predicted[39] == pytest.approx(np.log(2.0))
    # half the weight went to the model of this hardware alone: that half is the blend's
    picks, predicted = tuner._per_source_picks(_PriorOnlyFit(), np.array([0.5, 0.0]), blend_score, no_penalty,
                                               4, iteration=1)
    assert sorted(picks) == [0, 1, 19, 20]  # the blend's two best (19 and 21 tie: the first wins)
    assert set(predicted) == {0, 1}
    # measured or failing configs (infinite penalty) are never picked
    penalty = np.zeros(40)
    penalty[[0, 39]] = np.inf
    picks, _ = tuner._per_source_picks(_PriorOnlyFit(), np.array([0.5, 0.5]), blend_score, penalty, 2, iteration=1)
    assert sorted(picks) == [1, 38]


def test_equal_shares_are_drawn_by_the_seed_not_by_source_order() -> None:
    space = SearchSpace({"x": list(range(40))})
    prior = {name: (lambda f, c=c: 1.0 + np.abs(np.asarray(f["x"], float) - c)) for name, c in
             (("a", 0), ("b", 13), ("c", 26))}
    first = set()
    for seed in range(12):
        tuner = Tuner(space, SyntheticHardware(runtime=lambda c: 1.0 + c["x"]),
                      TuneSettings(budget=8, ensemble=2, min_hamming=1, seed=seed), prior=prior)
        tuner._source_logs_ = tuner._source_logs()
        picks, _ = tuner._per_source_picks(_PriorOnlyFit(), np.full(3, 1 / 3), np.zeros(40), np.zeros(40), 2, 0)
        assert len(picks) == 2 and set(picks) <= {0, 13, 26}
        first.add(picks[0])
    assert first == {0, 13, 26}  # every source leads some seed's batch


def test_a_prior_with_bad_predictions_is_refused() -> None:
    space = SearchSpace(dict(PARAMS))
    tuner = Tuner(space, SyntheticHardware(), TuneSettings(budget=4, ensemble=2),
                  prior={"broken": lambda f: np.zeros(len(f))})
    with pytest.raises(InvalidInputError, match=r"'broken'.*positive finite"):
        tuner.run()


# ---------------------------------------------------------------------------- the Optuna study


def test_the_study_holds_one_trial_per_evaluation() -> None:
    space = SearchSpace(dict(PARAMS))
    hw = SyntheticHardware(fails=lambda c: c["z"] == 8)
    tuner = Tuner(space, hw, TuneSettings(budget=12, batch_size=4, ensemble=2, seed=4))
    result = tuner.run()
    trials = tuner.recorder.study.get_trials(deepcopy=False)
    assert len(trials) == result.n_evaluations == 12
    assert keys(t.params for t in trials) == keys(hw.calls)
    for t, row in zip(trials, result.history.to_dict("records"), strict=True):
        assert t.user_attrs["source"] == "measured"
        assert t.user_attrs["status"] == row["status"]
        assert t.user_attrs["iteration"] == row["iteration"]
        if row["status"] == "ok":
            assert t.state == optuna.trial.TrialState.COMPLETE and t.value == row["value"]
        else:
            assert t.state == optuna.trial.TrialState.FAIL and t.value is None
        if row["iteration"] > 1:  # a model-guided pick carries the prediction that led to it
            assert t.user_attrs["predicted_runtime_ms"] == pytest.approx(row["predicted"])
            assert t.user_attrs["predicted_runtime_ms"] > 0
        else:
            assert "predicted_runtime_ms" not in t.user_attrs
    assert tuner.recorder.study.user_attrs["objective"] == "runtime_ms"
    assert tuner.best() == (result.best_config, result.best_value)


def test_a_sqlite_study_resumes_without_remeasuring(tmp_path: Path) -> None:
    space = SearchSpace(dict(PARAMS))
    url = f"sqlite:///{tmp_path / 'study.db'}"
    hw = SyntheticHardware()
    first = Tuner(space, hw, TuneSettings(budget=8, batch_size=4, ensemble=2), storage=url, study_name="s").run()
    assert first.n_evaluations == 8
    # the same study with a larger budget: only the difference is measured, never a repeat
    second = Tuner(space, hw, TuneSettings(budget=12, batch_size=4, ensemble=2, seed=1), storage=url,
                   study_name="s").run()
    assert second.n_evaluations == 4
    assert len(hw.calls) == 12 and len(set(keys(hw.calls))) == 12
    assert second.extra["study_evaluations"] == 12
    assert second.best_value == min(c for c in map(bowl_ms, hw.calls))
    # a third run with the budget already spent measures nothing
    third = Tuner(space, hw, TuneSettings(budget=12, ensemble=2), storage=url, study_name="s").run()
    assert third.n_evaluations == 0 and third.stopped_by == "budget" and len(hw.calls) == 12


# ---------------------------------------------------------------------------- a replayed real space


@pytest.fixture(scope="module")
def conv_a4000() -> ReplayBackend:
    try:
        path = datasets_dir() / "kernel-tuner" / "convolution" / "A4000.json.gz"
    except DatasetNotFoundError as exc:
        pytest.skip(str(exc))
    return ReplayBackend.from_file(path)


def expected_random_best(values: np.ndarray, n: int) -> float:
    """Mean best of ``n`` distinct uniform draws (failures count as the worst ok value), exactly."""
    ok = np.sort(values[np.isfinite(values)])
    v = np.concatenate([ok, np.full(len(values) - len(ok), ok[-1])])
    big_n = len(v)
    p = np.array([comb(big_n - k, n - 1) for k in range(1, big_n + 1)], dtype=float) / comb(big_n, n)
    return float(p @ v)


def test_replay_tuner_beats_random_search_on_convolution_a4000(conv_a4000: ReplayBackend) -> None:
    """At budget 32 over 5 seeds, the tuner's mean best is closer to the optimum than random
    search's expected best (computed exactly from the recorded space, so the baseline has no
    sampling noise)."""
    replay = conv_a4000
    candidates = pd.DataFrame([c.as_dict() for c in replay.configs()])
    space = SearchSpace(replay.space())
    optimum = replay.optimum().runtime_ms
    table = replay.table
    values = np.where(table["status"] == "ok", table["runtime_ms"], np.inf).astype(float)
    budget = 32
    tuned = []
    for seed in range(5):
        replay.reset()
        result = Tuner(space, replay, TuneSettings(budget=budget, ensemble=3, seed=seed), candidates=candidates).run()
        assert result.n_evaluations == replay.n_evaluations == budget
        assert len(set(keys(history_configs(result, space.names)))) == budget
        tuned.append(result.best_value / optimum)
    random_best = expected_random_best(values, budget) / optimum
    assert np.mean(tuned) < random_best, (np.round(tuned, 3), random_best)


def test_prior_from_another_recording_aligns_features():
    """A prior fitted where a parameter is constant (no log2 column) still scores candidates where it varies."""
    from xgboost import XGBRegressor

    from perfpred.tuner._surrogate import aligned_features, param_features, xgb_prior

    rng = np.random.default_rng(0)
    source = pd.DataFrame({"tile": rng.choice([8, 16, 32, 64], 200), "kwi": 2})
    model = XGBRegressor(n_estimators=20, max_depth=3).fit(param_features(source), np.log(source["tile"] * 1.0))
    target = pd.DataFrame({"tile": [8, 64, 16], "kwi": [2, 8, 2]})
    assert "log2_kwi" in param_features(target) and "log2_kwi" not in param_features(source)
    aligned = aligned_features(target, list(model.get_booster().feature_names))
    assert list(aligned.columns) == list(model.get_booster().feature_names)
    pred = xgb_prior(model)(target)
    assert pred.shape == (3,) and np.all(np.isfinite(pred)) and pred[1] > pred[0]
