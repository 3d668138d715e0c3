"""Predictive intervals: shape, ordering, calibration on held-out rows, and errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from perfpred.errors import InvalidInputError
from perfpred.models import (
    EnsembleIntervalRegressor,
    LogTargetXGBRegressor,
    QuantileXGBRegressor,
    UncertainPerformanceModel,
    evaluate_intervals,
    interval_coverage,
)


def noisy_problem(n: int, seed: int):
    """log y = f(x) + noise whose spread grows with x[:, 1] (heteroscedastic)."""
    r = np.random.default_rng(seed)
    X = r.uniform(0, 1, size=(n, 3))
    sigma = 0.05 + 0.3 * X[:, 1]
    y = np.exp(2 * X[:, 0] + sigma * r.normal(size=n))
    return X, y, sigma


def test_quantile_intervals_are_ordered_and_calibrated_on_held_out_rows():
    X, y, _ = noisy_problem(2500, 0)
    Xt, yt, sigma = noisy_problem(2000, 1)
    model = QuantileXGBRegressor(n_estimators=150, max_depth=3, n_jobs=1).fit(X, y)
    band = model.predict_interval(Xt, coverage=0.9)
    assert list(band.columns) == ["lower", "median", "upper"]
    assert (band["lower"] <= band["median"]).all() and (band["median"] <= band["upper"]).all()
    cov = interval_coverage(yt, band["lower"], band["upper"])
    assert 0.85 <= cov["coverage"] <= 0.95
    # Heteroscedastic: bands are wider where the noise is larger.
    width = np.log(band["upper"] / band["lower"])
    assert width[sigma > 0.25].mean() > 1.5 * width[sigma < 0.1].mean()
    # A narrower nominal coverage gives narrower bands, and its coverage follows.
    band50 = model.predict_interval(Xt, coverage=0.5)
    assert (np.log(band50["upper"] / band50["lower"]) <= width + 1e-9).all()
    assert 0.42 <= interval_coverage(yt, band50["lower"], band50["upper"])["coverage"] <= 0.58
    np.testing.assert_allclose(model.predict(Xt), band["median"], rtol=1e-6)


def test_quantile_rules():
    X, y, _ = noisy_problem(100, 0)
    with pytest.raises(NotFittedError):
        QuantileXGBRegressor().predict_interval(X)
    with pytest.raises(InvalidInputError, match="quantiles"):
        QuantileXGBRegressor(quantiles=(0.1, 0.9)).fit(X, y)
    model = QuantileXGBRegressor(quantiles=(0.1, 0.5, 0.9), n_estimators=10, calibration_fraction=0.0).fit(X, y)
    with pytest.raises(InvalidInputError, match="wider `quantiles`"):
        model.predict_interval(X, coverage=0.95)
    with pytest.raises(InvalidInputError, match="coverage"):
        model.predict_interval(X, coverage=1.0)
    assert model.predict_interval(X, coverage=0.8).shape == (100, 3)


def test_ensemble_intervals_cover_held_out_rows():
    X, y, _ = noisy_problem(1500, 2)
    Xt, yt, _ = noisy_problem(1000, 3)
    base = LogTargetXGBRegressor(n_estimators=60, max_depth=3, n_jobs=1)
    model = EnsembleIntervalRegressor(base=base, n_members=4).fit(X, y)
    assert len(model.members_) == 4
    assert len({m.random_state for m in model.members_}) == 4
    band = model.predict_interval(Xt, coverage=0.8)
    assert (band["lower"] <= band["median"]).all() and (band["median"] <= band["upper"]).all()
    assert 0.72 <= interval_coverage(yt, band["lower"], band["upper"])["coverage"] <= 0.88
    with pytest.raises(InvalidInputError, match="n_members"):
        EnsembleIntervalRegressor(n_members=1).fit(X, y)


def test_uncertain_performance_model_on_measurements(gemm_table_factory):
    train = gemm_table_factory(600, seed=1)
    test = gemm_table_factory(300, seed=2)
    model = UncertainPerformanceModel(kind="gemm", regressor=QuantileXGBRegressor(n_estimators=100, n_jobs=1))
    fitted = clone(model).fit(train)
    band = fitted.predict_interval(test.set_index(test.index + 1000), coverage=0.9)
    assert list(band.index) == list(test.index + 1000)
    assert fitted.uses_residual_  # bands are relative to the roofline, then scaled back to ms
    np.testing.assert_allclose(band["median"].to_numpy(), fitted.predict(test), rtol=1e-6)
    report = evaluate_intervals(model, train, test, coverage=0.9)
    assert report["nominal"] == 0.9 and 0.8 <= report["coverage"] <= 0.98
    with pytest.raises(InvalidInputError, match="predict_interval"):
        UncertainPerformanceModel(kind="gemm", regressor=LogTargetXGBRegressor(n_estimators=5)).fit(train)


def test_interval_coverage_by_hand():
    out = interval_coverage([1.0, 2.0, 3.0, 4.0], [0.5, 2.5, 2.0, 1.0], [1.5, 3.0, 3.5, 2.0])
    assert out["coverage"] == 0.5 and out["below"] == 0.25 and out["above"] == 0.25 and out["n"] == 4
    with pytest.raises(InvalidInputError, match="lower <= upper"):
        interval_coverage([1.0], [2.0], [1.0])
    with pytest.raises(InvalidInputError, match="equal"):
        interval_coverage([1.0, 2.0], [1.0], [2.0])
    assert isinstance(pd.Series([1.0]), pd.Series)


def test_a_negative_conformal_shift_never_crosses_a_band():
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 1, size=(600, 3))
    y = np.exp(X @ np.array([1.0, -0.5, 0.3])) * np.exp(rng.normal(0, 0.05 + 0.3 * X[:, 0]))
    model = QuantileXGBRegressor(n_estimators=60, calibration_fraction=0.3).fit(X[:500], y[:500])
    # Calibration targets at their bands' midpoints: every score is minus a half-width, so the
    # conformal shift is negative and larger than the half-width of the narrower test bands.
    lo, hi = model._band(model.calibration_log_q_, 0.8)
    model.calibration_log_y_ = (lo + hi) / 2
    raw_lo, raw_hi = model._band(model._log_quantiles(X[500:]), 0.8)
    assert np.any(raw_hi - raw_lo < np.median(hi - lo))  # some test bands would cross without the guard
    band = model.predict_interval(X[500:], coverage=0.8)
    assert (band["lower"] <= band["median"]).all() and (band["median"] <= band["upper"]).all()


def grouped_problem(n_groups: int, per_group: int, seed: int):
    """log y = f(x) + a per-group level + noise; x[:, 2] names the group (as spec-sheet features
    name a GPU), so a model memorises each training group's level and misjudges a new one."""
    r = np.random.default_rng(seed)
    X = r.uniform(0, 1, size=(n_groups * per_group, 3))
    groups = np.repeat(np.arange(n_groups), per_group)
    X[:, 2] = groups / n_groups
    level = np.append(0.45 * (-1.0) ** np.arange(n_groups - 1), 0.3)[groups]  # last group: unlike its neighbour
    y = np.exp(2 * X[:, 0] + level + 0.05 * r.normal(size=len(X)))
    return X, y, groups


def test_group_calibrated_bands_cover_an_unseen_group():
    X, y, groups = grouped_problem(9, 300, 0)
    held = groups == 8
    plain, grouped = (QuantileXGBRegressor(n_estimators=80, max_depth=3, n_jobs=1) for _ in range(2))
    plain.fit(X[~held], y[~held])
    grouped.fit(X[~held], y[~held], groups=groups[~held])
    assert len(grouped.calibration_log_y_) == int((~held).sum())  # every training group scored out of group
    coverages = {}
    for name, model in (("plain", plain), ("grouped", grouped)):
        band = model.predict_interval(X[held], coverage=0.9)
        coverages[name] = interval_coverage(y[held], band["lower"], band["upper"])["coverage"]
    # Row-level calibration only knows the noise (0.05); the group level (sd 0.3) escapes it.
    assert coverages["plain"] < 0.5 and coverages["grouped"] >= 0.85
    assert max(grouped.calibration_log_y_.shape) == len(grouped.calibration_log_q_)
    capped = QuantileXGBRegressor(n_estimators=20, max_calibration_groups=2, n_jobs=1).fit(X, y, groups=groups)
    assert len(capped.calibration_log_y_) == 2 * 300


def test_group_calibration_rules(gemm_table_factory):
    X, y, groups = grouped_problem(3, 50, 0)
    with pytest.raises(InvalidInputError, match="one label per row"):
        QuantileXGBRegressor(n_estimators=5).fit(X, y, groups=groups[:-1])
    with pytest.raises(InvalidInputError, match="at least 2 groups"):
        QuantileXGBRegressor(n_estimators=5).fit(X, y, groups=np.zeros(len(X)))
    with pytest.raises(InvalidInputError, match="max_calibration_groups"):
        QuantileXGBRegressor(n_estimators=5, max_calibration_groups=0).fit(X, y, groups=groups)
    table = gemm_table_factory(200, seed=1)
    table["group"] = np.arange(len(table)) % 4
    with pytest.raises(InvalidInputError, match="calibration_groups"):
        UncertainPerformanceModel(kind="gemm", regressor=QuantileXGBRegressor(n_estimators=5),
                                  calibration_groups="nope").fit(table)
    with pytest.raises(InvalidInputError, match="fit takes groups"):
        UncertainPerformanceModel(kind="gemm", regressor=EnsembleIntervalRegressor(n_members=2),
                                  calibration_groups="group").fit(table)
    model = UncertainPerformanceModel(kind="gemm", regressor=QuantileXGBRegressor(n_estimators=5),
                                      calibration_groups="group").fit(table)
    assert len(model.regressor_.calibration_log_y_) == len(table)
