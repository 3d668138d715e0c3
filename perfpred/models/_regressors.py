"""Regressors with the scikit-learn contract that work on numeric feature matrices.

- ``LogTargetXGBRegressor``: XGBoost on log(target). Runtimes span six orders of magnitude
  and their errors are relative, so fitting log time gives every size equal weight.
- ``gpperf_random_forest``: the seed paper's baseline (GPPerf), a RandomForest with 100
  trees of depth 6 on the raw runtime.
- ``RooflineRegressor``: no learning at all; returns the analytic roofline time.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.ensemble import RandomForestRegressor
from sklearn.utils.validation import check_is_fitted, validate_data

from perfpred.errors import InvalidInputError


def log_target_tags(tags):
    """Tags of a regressor that fits log(y): positive targets only, NaN inputs allowed."""
    tags.target_tags.positive_only = True
    tags.input_tags.allow_nan = True
    return tags


def check_positive_target(y) -> np.ndarray:
    """``y`` as a float array, or InvalidInputError naming its first value that is not finite and > 0."""
    y = np.asarray(y, dtype=float)
    bad = ~np.isfinite(y) | (y <= 0)
    if bad.any():
        raise InvalidInputError(
            f"`target > 0` and finite must hold for a log-target model, but got {float(y[bad][0])!r} "
            f"({int(bad.sum())} bad value(s))"
        )
    return y


def check_int(name: str, value, minimum: int) -> None:
    """A hyperparameter that must be an integer (not a bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InvalidInputError(f"`{name} >= {minimum}` must hold (an integer), but got {name}={value!r}")


def standardise_with_indicators(X: np.ndarray, mean: np.ndarray, scale: np.ndarray,
                                indicator_columns: np.ndarray) -> np.ndarray:
    """``(X - mean) / scale`` with missing values at 0 (the training mean), plus a 0/1
    missing-indicator column for each of ``indicator_columns`` (for models without NaN support)."""
    Z = (np.asarray(X, dtype=float) - mean) / scale
    missing = ~np.isfinite(Z)
    Z[missing] = 0.0
    if indicator_columns.size:
        Z = np.hstack([Z, missing[:, indicator_columns].astype(float)])
    return Z


class LogTargetXGBRegressor(RegressorMixin, BaseEstimator):
    """XGBoost regression of log(y); predictions are exp(.) so they stay positive.

    Parameters mirror xgboost's; defaults were chosen on the CPU GEMM data with grouped CV
    (many shallow trees, a moderate learning rate and row/column subsampling: the data are
    few and noisy, so depth-3 interactions generalise best to unseen shapes).
    """

    def __init__(self, n_estimators: int = 600, max_depth: int = 3, learning_rate: float = 0.05,
                 subsample: float = 0.8, colsample_bytree: float = 0.8, min_child_weight: float = 2.0,
                 reg_lambda: float = 1.0, random_state: int = 0, n_jobs: int | None = None):
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.min_child_weight = min_child_weight
        self.reg_lambda = reg_lambda
        self.random_state = random_state
        self.n_jobs = n_jobs

    def __sklearn_tags__(self):
        return log_target_tags(super().__sklearn_tags__())

    def fit(self, X, y):
        from xgboost import XGBRegressor

        X, y = validate_data(self, X, y, ensure_all_finite="allow-nan", y_numeric=True)
        y = check_positive_target(y)
        self.booster_ = XGBRegressor(
            n_estimators=self.n_estimators, max_depth=self.max_depth, learning_rate=self.learning_rate,
            subsample=self.subsample, colsample_bytree=self.colsample_bytree,
            min_child_weight=self.min_child_weight, reg_lambda=self.reg_lambda,
            random_state=self.random_state, n_jobs=self.n_jobs, tree_method="hist",
        )
        self.booster_.fit(X, np.log(y))
        return self

    def predict(self, X):
        check_is_fitted(self, "booster_")
        X = validate_data(self, X, ensure_all_finite="allow-nan", reset=False)
        return np.exp(self.booster_.predict(X))


def gpperf_random_forest(random_state: int = 0) -> RandomForestRegressor:
    """GPPerf's baseline: RandomForestRegressor(n_estimators=100, max_depth=6) on raw runtime."""
    return RandomForestRegressor(n_estimators=100, max_depth=6, random_state=random_state)


class RooflineRegressor(RegressorMixin, BaseEstimator):
    """Predicts 2**X[:, column] (the analytic roofline time); fitting learns nothing.

    ``column`` is the index of the ``log2_roofline_ms`` feature in the matrix it is given.
    """

    def __init__(self, column: int = 0):
        self.column = column

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.regressor_tags.poor_score = True  # it does not learn: scores only mean something on roofline data
        return tags

    def fit(self, X, y=None):
        if y is None:
            X = validate_data(self, X, ensure_all_finite="allow-nan")
        else:
            X, y = validate_data(self, X, y, ensure_all_finite="allow-nan", y_numeric=True)
        if not 0 <= self.column < X.shape[1]:
            raise InvalidInputError(f"`0 <= column < {X.shape[1]}` must hold, but got column={self.column}")
        self.fitted_ = True
        return self

    def predict(self, X):
        check_is_fitted(self, "fitted_")
        X = validate_data(self, X, ensure_all_finite="allow-nan", reset=False)
        return np.exp2(X[:, self.column])
