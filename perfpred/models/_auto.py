"""A regressor that picks its learner by cross-validation on the training rows ("auto").

Which learner predicts best depends on how much of a space was measured: with most of a
tuning space recorded, deep trees lean on grid neighbours (Kernel Tuner GEMM, 1.0-1.3% MAPE);
with 2,000 of UCI SGEMM's 241,600 configs, the four-kernel GP interpolates between them (7.5%
4-fold CV against 9.1% for tuned XGBoost, ``benchmarks/accuracy.py`` uci_2000). A user with a
table in hand should not have to know which case they are in (on those 2,000 UCI rows, kind
"kernel-occupancy", ``regressor="auto"`` picks gp4 at 7.5% CV MAPE against 10.4% for deep-trees
and 11.3% for xgb, and is 6.6% off on the 48,320 held-out rows; 249 s to fit on 2 cores).
:class:`AutoRegressor` scores each registered candidate by k-fold cross-validated MAPE on the
rows it is given, keeps the best, and refits it on all of them. Candidates that refuse the table (the exact GP above its
``max_train_rows``) are skipped, not failed on. Nothing here sees held-out rows: the choice is
part of the fit.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.utils.validation import check_is_fitted

from perfpred.datasets._splits import kfold_splits
from perfpred.errors import InvalidInputError
from perfpred.models._regressors import check_int, check_positive_target, log_target_tags

DEFAULT_CANDIDATES = ("xgb", "deep-trees", "gp4")


class AutoRegressor(RegressorMixin, BaseEstimator):
    """Cross-validates ``candidates`` (names of registered regressors) and keeps the best.

    Parameters:
        candidates: regressor names as ``PerformanceModel(regressor=...)`` takes them.
        cv_folds: folds of the shuffled k-fold split that scores them (MAPE of the target).
        random_state: seed of the split and of each candidate.

    After ``fit``: ``chosen_`` (the name), ``cv_mape_pct_`` (name -> CV MAPE; a skipped
    candidate is absent) and ``estimator_`` (the chosen one, refitted on every row).
    """

    def __init__(self, candidates: tuple[str, ...] = DEFAULT_CANDIDATES, cv_folds: int = 4, random_state: int = 0):
        self.candidates = candidates
        self.cv_folds = cv_folds
        self.random_state = random_state

    def __sklearn_tags__(self):
        return log_target_tags(super().__sklearn_tags__())

    def _make(self, name: str) -> BaseEstimator:
        from perfpred.models._performance_model import REGRESSORS

        if name not in REGRESSORS or name == "auto":
            raise InvalidInputError(f"`candidates` must name registered regressors other than 'auto', but got "
                                    f"{name!r}; known: {sorted(set(REGRESSORS) - {'auto'})}")
        return REGRESSORS[name](self.random_state)

    def fit(self, X, y, groups=None):
        """``groups``: one label per row whose rows must share a fold (repeats of one configuration)."""
        y = check_positive_target(y)
        check_int("cv_folds", self.cv_folds, 2)
        if len(y) < self.cv_folds:
            raise InvalidInputError(f"`rows >= cv_folds` must hold to choose a regressor, but got rows={len(y)} "
                                    f"< cv_folds={self.cv_folds}")
        makers = {name: self._make(name) for name in self.candidates}
        if not makers:
            raise InvalidInputError("`candidates` must name at least one regressor, but got none")
        usable = {name: est for name, est in makers.items() if len(y) <= getattr(est, "max_train_rows", np.inf)}
        if not usable:
            raise InvalidInputError(f"no candidate takes {len(y)} rows (candidates={list(self.candidates)})")
        folds = kfold_splits(len(y), self.cv_folds, self.random_state, None if groups is None else np.asarray(groups))
        rows = X.iloc if hasattr(X, "iloc") else X
        scores = {}
        for name, est in usable.items():
            pred = np.empty(len(y))
            for train, test in folds:
                pred[test] = clone(est).fit(rows[train], y[train]).predict(rows[test])
            scores[name] = float(np.mean(np.abs(pred - y) / y) * 100)
        self.cv_mape_pct_ = scores
        # A candidate that predicted NaN somewhere scores NaN: it is never the choice.
        self.chosen_ = min(scores, key=lambda n: scores[n] if np.isfinite(scores[n]) else np.inf)
        self.estimator_ = clone(usable[self.chosen_]).fit(X, y)
        return self

    def predict(self, X):
        check_is_fitted(self, "estimator_")
        return self.estimator_.predict(X)
