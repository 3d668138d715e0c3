"""Predictive intervals: how sure is a prediction, and are the intervals honest on held-out data?

- ``QuantileXGBRegressor`` ("xgb-quantile"): XGBoost with the ``reg:quantileerror``
  objective on log(y), one output per quantile level. ``predict_interval(X, coverage)``
  interpolates between the fitted levels and, when ``calibration_fraction > 0``, widens or
  narrows the band by conformalized quantile regression (CQR) on a slice of the training rows
  held out from the fit, so its coverage holds on new data from the same distribution.
  ``fit(X, y, groups=...)`` calibrates across groups instead (cross-conformal: each group
  scored by a fit that never saw it), for bands meant to cover an unseen GPU or model.
- ``EnsembleIntervalRegressor`` ("xgb-ensemble"): members fitted on bootstrap resamples
  with different seeds; the median is the geometric mean, the interval is the members' log
  spread scaled by a split-conformal factor learned on a calibration slice.
- ``UncertainPerformanceModel``: a ``PerformanceModel`` whose regressor has
  ``predict_interval``; ``predict_interval(df, coverage=0.9)`` returns lower/median/upper
  in the target's unit (times the roofline offset in residual mode).
- ``interval_coverage`` / ``evaluate_intervals``: empirical coverage and width on held-out rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.utils.validation import check_is_fitted, validate_data

from perfpred.errors import InvalidInputError
from perfpred.models._performance_model import PerformanceModel, register_regressor
from perfpred.models._regressors import LogTargetXGBRegressor, check_positive_target, log_target_tags

INTERVAL_COLUMNS = ("lower", "median", "upper")


def _check_coverage(coverage: Any) -> float:
    if not isinstance(coverage, (int, float)) or not 0 < coverage < 1:
        raise InvalidInputError(f"`0 < coverage < 1` must hold, but got coverage={coverage!r}")
    return float(coverage)


def _conformal_quantile(scores: np.ndarray, coverage: float) -> float:
    """The ceil((n+1) coverage)/n empirical quantile of the calibration scores (inf if n too small)."""
    n = len(scores)
    rank = int(np.ceil((n + 1) * coverage))
    if n == 0 or rank > n:
        return float("inf")
    return float(np.sort(scores)[rank - 1])


def _split_calibration(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.RandomState(seed).permutation(n)
    n_cal = round(n * fraction) if fraction > 0 and n >= 20 else 0
    return order[n_cal:], order[:n_cal]


class QuantileXGBRegressor(RegressorMixin, BaseEstimator):
    """XGBoost quantile regression of log(y): ``predict`` gives the median, ``predict_interval`` a band.

    Parameters:
        quantiles: the fitted levels; must include 0.5. A band of ``coverage`` needs the levels
            (1 - coverage) / 2 and (1 + coverage) / 2 inside [min, max] of them.
        calibration_fraction: share of the training rows held out to calibrate the band (CQR);
            0 trusts the raw quantiles. Unused when ``fit`` is given ``groups``.
        max_calibration_groups: with ``groups``, at most this many groups (picked at random)
            are each held out for one extra fit.
        the rest: as ``xgboost.XGBRegressor``.
    """

    def __init__(self, quantiles: Sequence[float] = (0.05, 0.25, 0.5, 0.75, 0.95), n_estimators: int = 400,
                 max_depth: int = 6, learning_rate: float = 0.05, subsample: float = 0.8,
                 colsample_bytree: float = 0.8, min_child_weight: float = 1.0, calibration_fraction: float = 0.2,
                 max_calibration_groups: int = 10, random_state: int = 0, n_jobs: int | None = None):
        self.quantiles = quantiles
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.min_child_weight = min_child_weight
        self.calibration_fraction = calibration_fraction
        self.max_calibration_groups = max_calibration_groups
        self.random_state = random_state
        self.n_jobs = n_jobs

    def __sklearn_tags__(self):
        return log_target_tags(super().__sklearn_tags__())

    def fit(self, X, y, groups=None):
        """Fit on log(y). ``groups`` (one label per row, e.g. the GPU): calibrate the band by
        holding out whole groups, so it covers the shift to a group the model never saw."""
        X, y = validate_data(self, X, y, ensure_all_finite="allow-nan", y_numeric=True)
        y = check_positive_target(y)
        levels = np.asarray(sorted(float(q) for q in self.quantiles))
        if len(levels) < 2 or np.any((levels <= 0) | (levels >= 1)) or 0.5 not in levels or len(set(levels)) < len(
                levels):
            raise InvalidInputError(
                f"`quantiles` must be distinct levels in (0, 1) including 0.5, but got {list(self.quantiles)}")
        if not 0 <= self.calibration_fraction < 1:
            raise InvalidInputError(
                f"`0 <= calibration_fraction < 1` must hold, but got calibration_fraction={self.calibration_fraction}")
        self.levels_ = levels
        if groups is not None:
            return self._fit_group_calibrated(X, y, groups)
        fit_idx, cal_idx = _split_calibration(len(X), self.calibration_fraction, self.random_state)
        self.booster_ = self._booster().fit(X[fit_idx], np.log(y[fit_idx]))
        self.calibration_log_y_ = np.log(y[cal_idx])
        self.calibration_log_q_ = self._log_quantiles(X[cal_idx]) if len(cal_idx) else np.zeros((0, len(levels)))
        return self

    def _booster(self):
        from xgboost import XGBRegressor

        return XGBRegressor(
            objective="reg:quantileerror", quantile_alpha=self.levels_, n_estimators=self.n_estimators,
            max_depth=self.max_depth, learning_rate=self.learning_rate, subsample=self.subsample,
            colsample_bytree=self.colsample_bytree, min_child_weight=self.min_child_weight,
            random_state=self.random_state, n_jobs=self.n_jobs, tree_method="hist")

    def _fit_group_calibrated(self, X: np.ndarray, y: np.ndarray, groups: Any) -> QuantileXGBRegressor:
        """Cross-conformal over groups: every calibration group is scored by a booster fitted on
        the other groups; the final booster then fits every row."""
        groups = np.asarray(groups)
        if groups.shape != (len(X),):
            raise InvalidInputError(f"`groups` must give one label per row ({len(X)}), but got shape {groups.shape}")
        labels = np.unique(groups)
        if len(labels) < 2:
            raise InvalidInputError(f"calibration by groups needs at least 2 groups, but got {len(labels)}")
        cap = self.max_calibration_groups
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
            raise InvalidInputError(f"`max_calibration_groups >= 1` must hold, but got max_calibration_groups={cap!r}")
        rng = np.random.RandomState(self.random_state)
        held_labels = rng.permutation(labels)[:cap]
        log_y, log_q = [], []
        for label in held_labels:
            held = groups == label
            booster = self._booster().fit(X[~held], np.log(y[~held]))
            log_y.append(np.log(y[held]))
            log_q.append(self._log_quantiles(X[held], booster))
        self.calibration_log_y_ = np.concatenate(log_y)
        self.calibration_log_q_ = np.vstack(log_q)
        self.booster_ = self._booster().fit(X, np.log(y))
        return self

    def _log_quantiles(self, X: np.ndarray, booster: Any = None) -> np.ndarray:
        booster = booster if booster is not None else self.booster_
        q = np.asarray(booster.predict(X), dtype=float).reshape(len(X), -1)
        return np.sort(q, axis=1)  # quantile crossing repaired by sorting

    def _band(self, log_q: np.ndarray, coverage: float) -> tuple[np.ndarray, np.ndarray]:
        lo_level, hi_level = (1 - coverage) / 2, (1 + coverage) / 2
        if lo_level < self.levels_[0] - 1e-12 or hi_level > self.levels_[-1] + 1e-12:
            raise InvalidInputError(
                f"coverage={coverage} needs quantile levels {lo_level:.3f}..{hi_level:.3f}, but the model was fitted "
                f"on {self.levels_[0]}..{self.levels_[-1]}: refit with wider `quantiles`")

        def at(level: float) -> np.ndarray:
            i = int(np.clip(np.searchsorted(self.levels_, level, side="right") - 1, 0, len(self.levels_) - 2))
            w = float(np.clip((level - self.levels_[i]) / (self.levels_[i + 1] - self.levels_[i]), 0.0, 1.0))
            return log_q[:, i] * (1 - w) + log_q[:, i + 1] * w

        return at(lo_level), at(hi_level)

    def predict(self, X):
        check_is_fitted(self, "booster_")
        X = validate_data(self, X, ensure_all_finite="allow-nan", reset=False)
        log_q = self._log_quantiles(X)
        return np.exp(log_q[:, int(np.searchsorted(self.levels_, 0.5))])

    def predict_interval(self, X, coverage: float = 0.9) -> pd.DataFrame:
        """lower / median / upper of y for each row, a band meant to hold ``coverage`` of outcomes."""
        check_is_fitted(self, "booster_")
        coverage = _check_coverage(coverage)
        X = validate_data(self, X, ensure_all_finite="allow-nan", reset=False)
        log_q = self._log_quantiles(X)
        lo, hi = self._band(log_q, coverage)
        if len(self.calibration_log_y_):
            cal_lo, cal_hi = self._band(self.calibration_log_q_, coverage)
            scores = np.maximum(cal_lo - self.calibration_log_y_, self.calibration_log_y_ - cal_hi)
            shift = _conformal_quantile(scores, coverage)
            lo, hi = lo - shift, hi + shift
            # A negative shift (raw bands too wide) can cross a narrow band: it collapses to its midpoint.
            crossed = lo > hi
            lo[crossed] = hi[crossed] = (lo[crossed] + hi[crossed]) / 2
        median = log_q[:, int(np.searchsorted(self.levels_, 0.5))]
        median = np.clip(median, lo, hi)
        return pd.DataFrame({"lower": np.exp(lo), "median": np.exp(median), "upper": np.exp(hi)})


class EnsembleIntervalRegressor(RegressorMixin, BaseEstimator):
    """Bootstrap/seed ensemble of a log-target regressor with split-conformal intervals.

    Parameters:
        base: a positive-target regressor with ``random_state`` (default ``LogTargetXGBRegressor``).
        n_members: ensemble size.
        bootstrap: resample the fit rows for each member (else only the seed differs).
        calibration_fraction: share of the training rows held out to scale the band; the
            score is |log y - mean log prediction| / (member spread + floor).
    """

    def __init__(self, base: BaseEstimator | None = None, n_members: int = 5, bootstrap: bool = True,
                 calibration_fraction: float = 0.2, random_state: int = 0):
        self.base = base
        self.n_members = n_members
        self.bootstrap = bootstrap
        self.calibration_fraction = calibration_fraction
        self.random_state = random_state

    def __sklearn_tags__(self):
        return log_target_tags(super().__sklearn_tags__())

    def fit(self, X, y):
        X, y = validate_data(self, X, y, ensure_all_finite="allow-nan", y_numeric=True)
        y = check_positive_target(y)
        if isinstance(self.n_members, bool) or not isinstance(self.n_members, int) or self.n_members < 2:
            raise InvalidInputError(f"`n_members >= 2` must hold, but got n_members={self.n_members!r}")
        if not 0 <= self.calibration_fraction < 1:
            raise InvalidInputError(
                f"`0 <= calibration_fraction < 1` must hold, but got calibration_fraction={self.calibration_fraction}")
        fit_idx, cal_idx = _split_calibration(len(X), self.calibration_fraction, self.random_state)
        base = self.base if self.base is not None else LogTargetXGBRegressor(n_estimators=300, max_depth=6,
                                                                             learning_rate=0.1)
        rng = np.random.RandomState(self.random_state)
        self.members_ = []
        for i in range(self.n_members):
            member = clone(base)
            if "random_state" in member.get_params():
                member.set_params(random_state=self.random_state + i)
            rows = fit_idx[rng.randint(0, len(fit_idx), len(fit_idx))] if self.bootstrap else fit_idx
            self.members_.append(member.fit(X[rows], y[rows]))
        if len(cal_idx):
            mu, sd = self._log_stats(X[cal_idx])
            self.spread_floor_ = float(np.median(sd)) * 0.1 + 1e-6
            self.calibration_scores_ = np.abs(np.log(y[cal_idx]) - mu) / (sd + self.spread_floor_)
        else:
            self.spread_floor_ = 1e-6
            self.calibration_scores_ = np.zeros(0)
        return self

    def _log_stats(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logs = np.log(np.column_stack([m.predict(X) for m in self.members_]))
        return logs.mean(axis=1), logs.std(axis=1)

    def predict(self, X):
        check_is_fitted(self, "members_")
        X = validate_data(self, X, ensure_all_finite="allow-nan", reset=False)
        return np.exp(self._log_stats(X)[0])

    def predict_interval(self, X, coverage: float = 0.9) -> pd.DataFrame:
        check_is_fitted(self, "members_")
        coverage = _check_coverage(coverage)
        X = validate_data(self, X, ensure_all_finite="allow-nan", reset=False)
        mu, sd = self._log_stats(X)
        if len(self.calibration_scores_):
            scale = _conformal_quantile(self.calibration_scores_, coverage)
        else:  # no calibration: a normal band on the raw spread
            from scipy.stats import norm

            scale = float(norm.ppf((1 + coverage) / 2))
        half = scale * (sd + self.spread_floor_)
        return pd.DataFrame({"lower": np.exp(mu - half), "median": np.exp(mu), "upper": np.exp(mu + half)})


class UncertainPerformanceModel(PerformanceModel):
    """A ``PerformanceModel`` with ``predict_interval(df, coverage)``; regressor "xgb-quantile" by default."""

    def __init__(self, kind: str = "gemm", regressor: str | BaseEstimator = "xgb-quantile",
                 target: str = "runtime_ms", random_state: int = 0, residual_of: str | None = "log2_roofline_ms",
                 calibration_groups: str | None = None):
        super().__init__(kind=kind, regressor=regressor, target=target, random_state=random_state,
                         residual_of=residual_of, calibration_groups=calibration_groups)

    def fit(self, X: pd.DataFrame, y: Any = None) -> UncertainPerformanceModel:
        super().fit(X, y)
        if not hasattr(self.regressor_, "predict_interval"):
            raise InvalidInputError(
                f"`regressor` must have predict_interval (e.g. 'xgb-quantile', 'xgb-ensemble'), "
                f"but got {type(self.regressor_).__name__}")
        return self


def interval_coverage(y_true, lower, upper) -> dict[str, float]:
    """Empirical coverage of [lower, upper], and how wide the bands are (ratio upper/lower)."""
    t = np.asarray(y_true, dtype=float)
    lo = np.asarray(lower, dtype=float)
    hi = np.asarray(upper, dtype=float)
    if not (t.shape == lo.shape == hi.shape) or t.ndim != 1 or len(t) == 0:
        raise InvalidInputError(f"y_true, lower, upper must be 1-D of equal non-zero length, but got "
                                f"{t.shape}, {lo.shape}, {hi.shape}")
    if np.any(lo > hi):
        raise InvalidInputError(f"`lower <= upper` must hold, but got {int(np.sum(lo > hi))} row(s) with lower > upper")
    inside = (t >= lo) & (t <= hi)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = hi / lo
    return {"coverage": float(inside.mean()), "median_width_ratio": float(np.median(ratio)),
            "mean_log_width": float(np.mean(np.log(ratio))), "below": float(np.mean(t < lo)),
            "above": float(np.mean(t > hi)), "n": len(t)}


def evaluate_intervals(model: UncertainPerformanceModel, train: pd.DataFrame, test: pd.DataFrame,
                       coverage: float = 0.9) -> dict[str, float]:
    """Fit on ``train`` only, then the coverage of ``coverage``-bands on the held-out ``test`` rows."""
    fitted = clone(model).fit(train)
    band = fitted.predict_interval(test, coverage=coverage)
    return {"nominal": coverage, **interval_coverage(test[model.target].to_numpy(float), band["lower"], band["upper"])}


register_regressor("xgb-quantile", lambda seed: QuantileXGBRegressor(random_state=seed))
register_regressor("xgb-ensemble", lambda seed: EnsembleIntervalRegressor(random_state=seed))
