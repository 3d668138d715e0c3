"""Spaces too large to score whole (continuous parameters, huge products): the tuner searches its
predictor with an Optuna study each round and grows a pool of candidates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_tuner_loop import PARAMS, SyntheticHardware, keys

import perfpred.tuner._space as space_module
from perfpred.errors import InvalidInputError
from perfpred.tuner import Continuous, SearchSpace, Tuner, TuneSettings
from perfpred.tuner._predictor_search import search_predictor

# Optimum 1.0 ms at x=0.37, lr=10^-2.5, n=20, mode "a"; the constraint cuts off large n * x.
VALLEY = SearchSpace({"x": Continuous(0.0, 1.0), "lr": Continuous(1e-5, 1.0, log=True),
                      "n": Continuous(1, 64, integer=True), "mode": ["a", "b"]}, ["n * x <= 40"])


def valley_ms(config) -> float:
    x, lr, n = float(config["x"]), float(config["lr"]), float(config["n"])
    return (1.0 + 4 * (x - 0.37) ** 2 + 0.5 * (np.log10(lr) + 2.5) ** 2 + 0.02 * abs(n - 20)
            + (0.3 if config["mode"] == "b" else 0.0))


def test_sample_draws_distinct_valid_configs_inside_the_domains() -> None:
    frame = VALLEY.sample(300, seed=0)
    assert len(frame) == 300 and not frame.duplicated().any()
    assert VALLEY.mask(frame).all()
    assert frame["x"].between(0, 1).all() and frame["lr"].between(1e-5, 1).all()
    assert frame["n"].between(1, 64).all() and (frame["n"] == frame["n"].round()).all()
    assert set(frame["mode"]) == {"a", "b"}
    # a log range is drawn on a log scale: about as many draws below 10^-2.5 as above
    assert 0.35 < (np.log10(frame["lr"]) < -2.5).mean() < 0.65
    assert VALLEY.sample(300, seed=0).equals(frame)  # seeded


def test_unit_cube_coordinates_round_trip_and_feed_the_open_space_surrogate() -> None:
    frame = VALLEY.sample(50, seed=1)
    u = VALLEY.to_unit(frame)
    assert u.shape == (50, 4) and ((u >= 0) & (u <= 1)).all()
    back = VALLEY.from_unit(u)
    np.testing.assert_allclose(back["lr"], frame["lr"], rtol=1e-12)
    assert back[["n", "mode"]].equals(frame[["n", "mode"]])
    # a log range sits on its log scale: 10^-2.5 is 0.5 of the way from 1e-5 to 1
    assert VALLEY.to_unit(frame.head(1).assign(lr=10 ** -2.5))[0, 1] == pytest.approx(0.5)
    feats = VALLEY.unit_features(frame)
    assert list(feats.columns) == ["u_x", "u_lr", "u_n", "u_mode"]
    assert set(feats["u_mode"]) == {0.25, 0.75}
    # a list of more than two strings: one 0/1 column per value, no order between them
    space = SearchSpace({"layout": ["row", "col", "tile"], "w": [16, 32, 64]})
    feats = space.unit_features(space.enumerate())
    assert list(feats.columns) == ["is_layout_row", "is_layout_col", "is_layout_tile", "u_w"]
    assert (feats.filter(like="is_layout").sum(axis=1) == 1).all()
    # what the tuner's surrogate sees in an open space
    tuner = Tuner(VALLEY, SyntheticHardware(runtime=valley_ms), TuneSettings(budget=8, pool_size=100))
    assert list(tuner.features.columns) == ["u_x", "u_lr", "u_n", "u_mode"]
    with pytest.raises(InvalidInputError, match=r"`mode in \['a', 'b'\]` must hold, but got mode='c'"):
        VALLEY.to_unit(frame.head(1).assign(mode="c"))


def test_which_spaces_are_scored_whole(monkeypatch) -> None:
    assert SearchSpace(dict(PARAMS)).enumerable
    assert not VALLEY.enumerable
    monkeypatch.setattr(space_module, "MAX_ENUMERATE", 100)
    assert not SearchSpace(dict(PARAMS)).enumerable  # 256 configs, over the limit


def test_a_continuous_space_is_tuned_through_its_predictor() -> None:
    tuned, drawn = [], []
    for seed in range(3):
        hw = SyntheticHardware(runtime=valley_ms)
        # 96 inner trials (default 256): one batch of 64 asks, then 32 that TPE draws from what the first
        # batch was told; the checks below still fail when the study does not search the predictor
        # (e.g. maximising the acquisition: no measured config beyond the pool)
        settings = TuneSettings(budget=32, seed=seed, pool_size=500, inner_trials=96)
        result = Tuner(VALLEY, hw, settings).run()
        assert result.n_evaluations == 32 and len(set(keys(hw.calls))) == 32
        assert all(VALLEY.is_valid(c) for c in hw.calls)
        # configs the Optuna study on the predictor found, between and beyond the sampled pool
        pool = set(keys(VALLEY.sample(500, seed=seed).to_dict("records")))
        assert len(set(keys(hw.calls)) - pool) >= 8
        tuned.append(result.best_value)
        drawn.append(min(valley_ms(c) for c in VALLEY.sample(32, seed=100 + seed).to_dict("records")))
    assert np.mean(tuned) < 1.1 < np.mean(drawn)  # random search with the same budget stays further off


def test_a_huge_discrete_space_is_searched_like_a_continuous_one(monkeypatch) -> None:
    monkeypatch.setattr(space_module, "MAX_ENUMERATE", 100)
    space = SearchSpace(dict(PARAMS), ["x + y <= 12"])
    hw = SyntheticHardware()
    result = Tuner(space, hw, TuneSettings(budget=16, seed=0, pool_size=40)).run()
    assert result.n_evaluations == 16 and len(set(keys(hw.calls))) == 16
    assert all(space.is_valid(c) for c in hw.calls)
    assert result.best_value <= 1.5  # the bowl's optimum is 1.0; the 40-config pool's median is ~4


def test_an_open_space_confirms_one_config_a_round_unless_told() -> None:
    hw = SyntheticHardware(runtime=valley_ms)
    tuner = Tuner(VALLEY, hw, TuneSettings(budget=12, seed=0, pool_size=200))
    assert tuner.settings.batch_size == 1
    result = tuner.run()
    # the space-filling start (max(1, min(8, 12 // 4)) = 3 configs), then one config a round
    assert result.history.groupby("iteration").size().tolist() == [3] + [1] * 9
    told = Tuner(VALLEY, hw, TuneSettings(budget=12, seed=0, pool_size=200, batch_size=2))
    assert told.settings.batch_size == 2
    scored = Tuner(SearchSpace(dict(PARAMS)), SyntheticHardware(), TuneSettings(budget=12))
    assert scored.settings.batch_size == 4


def test_workers_of_one_open_space_study_share_what_they_measured(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    hw = SyntheticHardware(runtime=valley_ms)
    first = Tuner(VALLEY, hw, TuneSettings(budget=8, seed=0, pool_size=200), storage=url, study_name="s").run()
    second = Tuner(VALLEY, hw, TuneSettings(budget=12, seed=1, pool_size=200), storage=url, study_name="s").run()
    assert first.n_evaluations == 8 and second.n_evaluations == 4
    assert len(hw.calls) == 12 and len(set(keys(hw.calls))) == 12
    assert second.extra["study_evaluations"] == 12  # the first worker's configs joined its pool
    assert second.best_value == min(valley_ms(c) for c in hw.calls)


def _count_fits(tuner: Tuner) -> list[int]:
    fits: list[int] = []
    fit = tuner.surrogate.fit

    def counted(*args, **kwargs):
        fits.append(1)
        return fit(*args, **kwargs)

    tuner.surrogate.fit = counted
    return fits


def test_an_open_space_round_fits_its_surrogate_once_when_features_go_row_by_row() -> None:
    # 16 evaluations, 4 a round: the space-filling start, then 3 model-guided rounds, each
    # scoring 4 batches of 64 inner trials and then the grown pool
    settings = TuneSettings(budget=16, seed=0, pool_size=200, batch_size=4)
    tuner = Tuner(VALLEY, SyntheticHardware(runtime=valley_ms), settings)
    fits = _count_fits(tuner)
    once = tuner.run()
    assert len(fits) == 3

    # a featurizer that scales each column by its mean over the rows it is given: the measured rows' features
    # change with every batch, so each batch gets its own fit (and the pool one more)
    def by_frame(frame):
        feats = VALLEY.unit_features(frame)
        return feats / feats.mean()

    tuner = Tuner(VALLEY, SyntheticHardware(runtime=valley_ms), settings, featurize=by_frame)
    fits = _count_fits(tuner)
    tuner.run()
    assert len(fits) == 3 * (4 + 1)
    # reusing the fit is only a saving: the same inputs give the same seeded model, so a run
    # whose surrogate is refitted every time measures the same configs
    tuner = Tuner(VALLEY, SyntheticHardware(runtime=valley_ms), settings)
    tuner._fit_surrogate = lambda X, y, ok, prior: tuner.surrogate.fit(X, y, ok, prior_measured=prior)
    again = tuner.run()
    assert again.history[["x", "lr", "n", "mode"]].equals(once.history[["x", "lr", "n", "mode"]])


def test_search_predictor_minimises_the_acquisition_within_the_constraints() -> None:
    def acquisition(frame):
        return np.array([valley_ms(c) for c in frame.to_dict("records")])

    found = search_predictor(VALLEY, acquisition, n_trials=200, keep=5, seed=0)
    assert len(found) == 5 and VALLEY.mask(found).all() and not found.duplicated().any()
    scores = acquisition(found)
    assert np.all(np.diff(scores) >= 0)  # best first
    assert scores[0] < 1.3


@pytest.mark.parametrize("kwargs, fragment", [({"inner_sampler": "nope"}, "inner_sampler"),
                                              ({"pool_size": 0}, "pool_size"), ({"inner_keep": 0}, "inner_keep")])
def test_bad_open_space_settings_give_one_line_errors(kwargs, fragment) -> None:
    with pytest.raises(InvalidInputError) as excinfo:
        TuneSettings(budget=8, **kwargs)
    message = str(excinfo.value)
    assert fragment in message and "\n" not in message



def test_optuna_on_the_hardware_checks_an_open_space_s_constraints_itself() -> None:
    from perfpred.tuner._baselines import optuna_search

    tight = SearchSpace(dict(VALLEY.params), ["n * x <= 8"])  # most random draws break it
    hw = SyntheticHardware(runtime=valley_ms)
    values = optuna_search(hw, tight, None, 12, sampler="tpe", seed=0)
    assert len(values) == 12 == len(hw.calls) and all(v is not None for v in values)
    assert all(tight.is_valid(c) for c in hw.calls)  # an invalid suggestion never ran
