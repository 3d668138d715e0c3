"""More regressors with the scikit-learn contract, a multi-target wrapper, and their registration.

Every regressor here fits log(target) and predicts exp(.) (runtimes, power and energy are
positive and their errors relative), and says so with the ``positive_only`` target tag, so
``PerformanceModel`` applies its residual-over-roofline mode to them as it does to XGBoost.

- ``LogTargetHGBRegressor`` ("hgb"): scikit-learn's HistGradientBoosting.
- ``LogTargetForestRegressor`` ("forest"): ExtraTrees (default) or RandomForest.
- ``TorchMLPRegressor`` ("mlp"): a torch MLP; inputs standardised with statistics of the
  training rows only, Adam(W) with a one-cycle schedule, early stopping on a validation slice
  of the training data, fixed seeds, CPU unless told otherwise. torch is imported lazily.
- ``GridNeighbourRegressor`` ("grid-xgb"): for complete or dense tuning spaces. For each
  tuning parameter it looks up the training configurations that differ from a row in that
  parameter only (its Hamming-1 neighbours on the parameter grid), estimates the row's
  log target from them, and hands those estimates to a base regressor, which then learns
  the residual over their mean. Training rows get out-of-fold estimates (no row sees its own
  target); with few training rows the estimates are simply missing and the base model
  carries the prediction alone.
- ``MultiTargetModel``: one ``PerformanceModel`` per target (runtime, power, energy, serving
  latencies), each fitted on the rows where its target is known; predicts a DataFrame.

Importing this module also registers the "kernel", "kernel-occupancy", "gemm-gpu", "gemm-gpu-transfer",
"serving" and "serving-attention" featurizers.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.utils.validation import check_is_fitted, validate_data

from perfpred.errors import InvalidInputError, MissingDependencyError
from perfpred.features._gemm_gpu import gpu_gemm_features, gpu_gemm_transfer_features
from perfpred.features._kernel import kernel_features, kernel_occupancy_features
from perfpred.features._serving import serving_attention_features, serving_features
from perfpred.models._auto import AutoRegressor
from perfpred.models._gp import TorchGPRegressor
from perfpred.models._performance_model import PerformanceModel, register_featurizer, register_regressor
from perfpred.models._regressors import (
    LogTargetXGBRegressor,
    check_int,
    check_positive_target,
    log_target_tags,
    standardise_with_indicators,
)


def _check_fraction(name: str, value: Any, *, low_open: bool = True) -> None:
    ok = isinstance(value, (int, float)) and (0 < value < 1 if low_open else 0 <= value < 1)
    if not ok:
        rule = "0 < {0} < 1" if low_open else "0 <= {0} < 1"
        raise InvalidInputError(f"`{rule.format(name)}` must hold, but got {name}={value!r}")


# --------------------------------------------------------------------------- gradient boosting


class LogTargetHGBRegressor(RegressorMixin, BaseEstimator):
    """scikit-learn ``HistGradientBoostingRegressor`` on log(y); NaN-aware, fast on large tables.

    ``n_threads`` caps the OpenMP threads while fitting and predicting (None: library default).
    """

    def __init__(self, max_iter: int = 600, learning_rate: float = 0.1, max_leaf_nodes: int = 63,
                 min_samples_leaf: int = 10, l2_regularization: float = 0.0, max_features: float = 1.0,
                 max_bins: int = 255, random_state: int = 0, n_threads: int | None = None):
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.l2_regularization = l2_regularization
        self.max_features = max_features
        self.max_bins = max_bins
        self.random_state = random_state
        self.n_threads = n_threads

    def __sklearn_tags__(self):
        return log_target_tags(super().__sklearn_tags__())

    def fit(self, X, y):
        from sklearn.ensemble import HistGradientBoostingRegressor
        from threadpoolctl import threadpool_limits

        X, y = validate_data(self, X, y, ensure_all_finite="allow-nan", y_numeric=True)
        y = check_positive_target(y)
        check_int("max_iter", self.max_iter, 1)
        self.model_ = HistGradientBoostingRegressor(
            max_iter=self.max_iter, learning_rate=self.learning_rate, max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf, l2_regularization=self.l2_regularization,
            max_features=self.max_features, max_bins=self.max_bins, early_stopping=False,
            random_state=self.random_state)
        # Columns without a single known value carry nothing (and break the binning): skipped.
        self.used_columns_ = np.flatnonzero(np.isfinite(X).any(axis=0)) if len(X) else np.arange(X.shape[1])
        with threadpool_limits(self.n_threads):
            self.model_.fit(X[:, self.used_columns_], np.log(y))
        return self

    def predict(self, X):
        from threadpoolctl import threadpool_limits

        check_is_fitted(self, "model_")
        X = validate_data(self, X, ensure_all_finite="allow-nan", reset=False)
        with threadpool_limits(self.n_threads):
            return np.exp(self.model_.predict(X[:, self.used_columns_]))


# --------------------------------------------------------------------------- forests

FOREST_METHODS = ("extra", "random")


class LogTargetForestRegressor(RegressorMixin, BaseEstimator):
    """ExtraTrees (``method="extra"``) or RandomForest (``"random"``) on log(y).

    Missing feature values are filled with the training median of the column (trees of both
    kinds then split on them as on any value); the medians are learned in ``fit`` only.
    """

    def __init__(self, method: str = "extra", n_estimators: int = 300, max_features: float | str | None = 1.0,
                 min_samples_leaf: int = 1, max_depth: int | None = None, bootstrap: bool = False,
                 random_state: int = 0, n_jobs: int | None = None):
        self.method = method
        self.n_estimators = n_estimators
        self.max_features = max_features
        self.min_samples_leaf = min_samples_leaf
        self.max_depth = max_depth
        self.bootstrap = bootstrap
        self.random_state = random_state
        self.n_jobs = n_jobs

    def __sklearn_tags__(self):
        return log_target_tags(super().__sklearn_tags__())

    def fit(self, X, y):
        from sklearn.ensemble import ExtraTreesRegressor, RandomForestRegressor

        if self.method not in FOREST_METHODS:
            raise InvalidInputError(f"`method` must be one of {FOREST_METHODS}, but got method={self.method!r}")
        X, y = validate_data(self, X, y, ensure_all_finite="allow-nan", y_numeric=True)
        y = check_positive_target(y)
        check_int("n_estimators", self.n_estimators, 1)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-missing columns are filled with 0
            med = np.nanmedian(np.where(np.isfinite(X), X, np.nan), axis=0) if len(X) else np.zeros(X.shape[1])
        self.fill_values_ = np.where(np.isfinite(med), med, 0.0)
        cls = ExtraTreesRegressor if self.method == "extra" else RandomForestRegressor
        self.forest_ = cls(n_estimators=self.n_estimators, max_features=self.max_features,
                           min_samples_leaf=self.min_samples_leaf, max_depth=self.max_depth,
                           bootstrap=self.bootstrap, random_state=self.random_state, n_jobs=self.n_jobs)
        self.forest_.fit(self._fill(X), np.log(y))
        return self

    def _fill(self, X: np.ndarray) -> np.ndarray:
        X = np.array(X, dtype=float, copy=True)
        bad = ~np.isfinite(X)
        if bad.any():
            X[bad] = np.broadcast_to(self.fill_values_, X.shape)[bad]
        return X

    def predict(self, X):
        check_is_fitted(self, "forest_")
        X = validate_data(self, X, ensure_all_finite="allow-nan", reset=False)
        return np.exp(self.forest_.predict(self._fill(X)))


# --------------------------------------------------------------------------- torch MLP

ACTIVATIONS = ("silu", "relu", "gelu", "tanh")


def _torch():
    try:
        import torch
    except ImportError as exc:  # torch is a core dependency, but may be stripped in slim installs
        raise MissingDependencyError("regressor 'mlp' needs torch: pip install torch") from exc
    return torch


class TorchMLPRegressor(RegressorMixin, BaseEstimator):
    """A fully connected network on standardised features, fitting standardised log(y).

    Missing values become the training mean (0 after standardising) plus a 0/1 indicator
    column for every feature that had any missing value in training. The last
    ``validation_fraction`` of a seeded shuffle of the training rows is held out for early
    stopping (``patience`` epochs without a better validation loss); the best weights are
    kept. Seeds fix initialisation and shuffling, so a refit gives the same model.
    """

    def __init__(self, hidden_layer_sizes: Sequence[int] = (256, 256, 256), activation: str = "silu",
                 learning_rate: float = 3e-3, weight_decay: float = 1e-5, batch_size: int = 512,
                 max_epochs: int = 200, patience: int = 20, validation_fraction: float = 0.1,
                 dropout: float = 0.0, random_state: int = 0, device: str = "cpu", n_threads: int | None = None):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.dropout = dropout
        self.random_state = random_state
        self.device = device
        self.n_threads = n_threads

    def __sklearn_tags__(self):
        return log_target_tags(super().__sklearn_tags__())

    def _check_params(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise InvalidInputError(
                f"`activation` must be one of {ACTIVATIONS}, but got activation={self.activation!r}")
        for size in self.hidden_layer_sizes:
            check_int("hidden_layer_sizes[i]", size, 1)
        check_int("batch_size", self.batch_size, 1)
        check_int("max_epochs", self.max_epochs, 1)
        check_int("patience", self.patience, 1)
        _check_fraction("validation_fraction", self.validation_fraction, low_open=False)
        _check_fraction("dropout", self.dropout, low_open=False)
        if not self.learning_rate > 0:
            raise InvalidInputError(f"`learning_rate > 0` must hold, but got learning_rate={self.learning_rate!r}")

    def _transform(self, X: np.ndarray) -> np.ndarray:
        return standardise_with_indicators(X, self.mean_, self.scale_, self.indicator_columns_).astype(np.float32)

    def _build(self, torch, n_in: int):
        act = {"silu": torch.nn.SiLU, "relu": torch.nn.ReLU, "gelu": torch.nn.GELU, "tanh": torch.nn.Tanh}
        layers: list[Any] = []
        width = n_in
        for size in self.hidden_layer_sizes:
            layers += [torch.nn.Linear(width, int(size)), act[self.activation]()]
            if self.dropout > 0:
                layers.append(torch.nn.Dropout(self.dropout))
            width = int(size)
        layers.append(torch.nn.Linear(width, 1))
        return torch.nn.Sequential(*layers)

    def fit(self, X, y):
        torch = _torch()
        X, y = validate_data(self, X, y, ensure_all_finite="allow-nan", y_numeric=True)
        y = check_positive_target(y)
        self._check_params()
        rng = np.random.RandomState(self.random_state)
        order = rng.permutation(len(X))
        n_val = round(len(X) * self.validation_fraction) if len(X) >= 20 else 0
        val_idx, fit_idx = order[:n_val], order[n_val:]
        Xf = np.asarray(X, dtype=float)[fit_idx]
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-missing columns: mean 0, scale 1 below
            finite = np.where(np.isfinite(Xf), Xf, np.nan)
            mean = np.nanmean(finite, axis=0)
            scale = np.nanstd(finite, axis=0)
        self.mean_ = np.where(np.isfinite(mean), mean, 0.0)
        self.scale_ = np.where(np.isfinite(scale) & (scale > 1e-12), scale, 1.0)
        self.indicator_columns_ = np.flatnonzero((~np.isfinite(Xf)).any(axis=0))
        ly = np.log(y)
        self.y_mean_ = float(ly[fit_idx].mean())
        self.y_scale_ = float(ly[fit_idx].std()) or 1.0
        Z = self._transform(X)
        target = ((ly - self.y_mean_) / self.y_scale_).astype(np.float32)

        previous_threads = torch.get_num_threads()
        if self.n_threads:
            torch.set_num_threads(int(self.n_threads))
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.random_state)
                self.net_, self.history_ = self._train(torch, Z, target, fit_idx, val_idx)
        finally:
            torch.set_num_threads(previous_threads)
        self.n_epochs_ = len(self.history_)
        return self

    def _train(self, torch, Z: np.ndarray, target: np.ndarray, fit_idx: np.ndarray, val_idx: np.ndarray):
        device = torch.device(self.device)
        net = self._build(torch, Z.shape[1]).to(device)
        Xt = torch.from_numpy(Z[fit_idx]).to(device)
        yt = torch.from_numpy(target[fit_idx]).to(device)
        Xv = torch.from_numpy(Z[val_idx]).to(device)
        yv = torch.from_numpy(target[val_idx]).to(device)
        batch = min(int(self.batch_size), len(fit_idx))
        steps = (len(fit_idx) + batch - 1) // batch
        opt = torch.optim.AdamW(net.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.learning_rate,
                                                    total_steps=steps * int(self.max_epochs))
        gen = torch.Generator().manual_seed(int(self.random_state))
        best, best_state, stale, history = np.inf, None, 0, []
        for _ in range(int(self.max_epochs)):
            net.train()
            perm = torch.randperm(len(fit_idx), generator=gen).to(device)
            total = 0.0
            for i in range(steps):
                idx = perm[i * batch:(i + 1) * batch]
                loss = torch.nn.functional.mse_loss(net(Xt[idx]).squeeze(1), yt[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += loss.item() * len(idx)
            net.eval()
            if len(val_idx):
                with torch.no_grad():
                    val = float(torch.nn.functional.mse_loss(net(Xv).squeeze(1), yv))
            else:
                val = total / len(fit_idx)
            history.append(val)
            if val < best - 1e-9:
                best, stale = val, 0
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            else:
                stale += 1
                if stale >= self.patience:
                    break
        if best_state is not None:
            net.load_state_dict(best_state)
        return net.to("cpu").eval(), history

    def predict(self, X):
        check_is_fitted(self, "net_")
        torch = _torch()
        X = validate_data(self, X, ensure_all_finite="allow-nan", reset=False)
        Z = torch.from_numpy(self._transform(X))
        out = []
        with torch.no_grad():
            for i in range(0, len(Z), 65536):
                out.append(self.net_(Z[i:i + 65536]).squeeze(1).numpy())
        pred = np.concatenate(out) if out else np.zeros(0)
        return np.exp(pred.astype(float) * self.y_scale_ + self.y_mean_)


# --------------------------------------------------------------------------- grid neighbours


MAX_ONE_HOT_LEVELS = 64  # parameters with more levels stay numeric only


class GridNeighbourRegressor(RegressorMixin, BaseEstimator):
    """Hamming-1 neighbour estimates on the tuning-parameter grid, stacked under a base regressor.

    Parameters:
        base: a positive-target (log) regressor; default ``LogTargetXGBRegressor`` sized for
            large tuning spaces.
        grid_prefix: feature columns whose names start with this are the grid's parameters
            (``p_`` for :func:`perfpred.features.kernel_features`); all columns when the
            input has no column names.
        n_folds: folds for the out-of-fold estimates of the training rows.
        one_hot: also give the base regressor one 0/1 column per level of every feature with
            3 to ``MAX_ONE_HOT_LEVELS`` distinct training values (tuning parameters and the
            quantities derived from them). MLPs then need not carve levels out of a numeric
            axis; on the Kernel Tuner GEMM spaces this more than halved an MLP's error. Trees
            do not need it.
        random_state: seed of the fold assignment and of the base regressor.

    For parameter j, the estimate from the neighbours that differ only in j is the mean of
    their log target, shifted by the average effect of parameter j's level (learned within
    neighbour groups of the training rows). The base regressor sees the original features
    plus each estimate minus their mean, their spread and count, and fits y / exp(mean).
    """

    def __init__(self, base: BaseEstimator | None = None, grid_prefix: str = "p_", n_folds: int = 5,
                 one_hot: bool = False, random_state: int = 0):
        self.base = base
        self.grid_prefix = grid_prefix
        self.n_folds = n_folds
        self.one_hot = one_hot
        self.random_state = random_state

    def __sklearn_tags__(self):
        return log_target_tags(super().__sklearn_tags__())

    def _grid_indices(self) -> np.ndarray:
        names = getattr(self, "feature_names_in_", None)
        if names is None:
            return np.arange(self.n_features_in_)
        picked = [i for i, name in enumerate(names) if str(name).startswith(self.grid_prefix)]
        if not picked:
            raise InvalidInputError(
                f"no feature column starts with grid_prefix={self.grid_prefix!r} (columns: {list(names)[:6]}...)")
        return np.asarray(picked)

    def _codes(self, X: np.ndarray) -> np.ndarray:
        """Level index of each grid value (-1 for a level unseen in training)."""
        codes = np.full((len(X), len(self.levels_)), -1, dtype=np.int64)
        for j, levels in enumerate(self.levels_):
            col = X[:, self.grid_columns_[j]]
            pos = np.clip(np.searchsorted(levels, col), 0, max(len(levels) - 1, 0))
            hit = len(levels) > 0
            codes[:, j] = np.where(hit & (levels[pos] == col), pos, -1) if hit else -1
        return codes

    def _keys(self, codes: np.ndarray) -> list[np.ndarray]:
        """For each parameter j, one integer key per row of all the other parameters' levels."""
        radix = np.array([len(levels) + 1 for levels in self.levels_], dtype=object)
        keys = []
        exact = float(np.prod([float(r) for r in radix])) < 2.0**62
        for j in range(codes.shape[1]):
            key = np.zeros(len(codes), dtype=np.uint64 if not exact else np.int64)
            for i in range(codes.shape[1]):
                if i == j:
                    continue
                level = (codes[:, i] + 1).astype(key.dtype)
                if exact:
                    key = key * int(radix[i]) + level
                else:  # a 64-bit polynomial hash; collisions are negligible at these sizes
                    with np.errstate(over="ignore"):
                        key = key * np.uint64(1_000_003) + level
            keys.append(key)
        return keys

    def _tables(self, codes: np.ndarray, ly: np.ndarray) -> list[tuple[pd.Series, pd.Series, np.ndarray]]:
        """Per parameter: (sum, count) of level-adjusted log targets by neighbour key, and level effects."""
        tables = []
        for j, key in enumerate(self._keys(codes)):
            group = pd.Series(ly).groupby(key)
            mean = group.transform("mean").to_numpy()
            size = group.transform("size").to_numpy()
            shared = size >= 2
            n_levels = len(self.levels_[j])
            effect = np.zeros(n_levels + 1)
            if shared.any():
                centred = pd.Series(ly[shared] - mean[shared]).groupby(codes[shared, j]).mean()
                effect[centred.index.to_numpy() + 1] = centred.to_numpy()
            adjusted = pd.Series(ly - effect[codes[:, j] + 1]).groupby(key).agg(["sum", "count"])
            tables.append((adjusted["sum"], adjusted["count"], effect))
        return tables

    def _estimates(self, tables, codes: np.ndarray) -> np.ndarray:
        est = np.full(codes.shape, np.nan)
        for j, key in enumerate(self._keys(codes)):
            sums, counts, effect = tables[j]
            s = pd.Series(key).map(sums).to_numpy(dtype=float)
            c = pd.Series(key).map(counts).to_numpy(dtype=float)
            found = np.isfinite(c) & (c > 0)
            est[found, j] = s[found] / c[found] + effect[codes[found, j] + 1]
        return est

    def _augment(self, X: np.ndarray, est: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # rows without neighbours: NaN, handled below
            mean = np.nanmean(est, axis=1)
            spread = np.nanstd(est, axis=1)
        count = np.isfinite(est).sum(axis=1).astype(float)
        offset = np.where(np.isfinite(mean), mean, self.global_log_mean_)
        blocks = [np.asarray(X, dtype=float), est - offset[:, None], spread[:, None], count[:, None], mean[:, None]]
        if self.one_hot:
            Xf = np.asarray(X, dtype=float)
            blocks += [(Xf[:, [c]] == levels).astype(float) for c, levels in self.one_hot_levels_]
        return np.hstack(blocks), offset

    def fit(self, X, y):
        X, y = validate_data(self, X, y, ensure_all_finite="allow-nan", y_numeric=True)
        y = check_positive_target(y)
        check_int("n_folds", self.n_folds, 2)
        self.grid_columns_ = self._grid_indices()
        self.levels_ = [np.unique(X[np.isfinite(X[:, c]), c]) for c in self.grid_columns_]
        self.one_hot_levels_: list[tuple[int, np.ndarray]] = []
        if self.one_hot:
            for c in range(X.shape[1]):
                levels = np.unique(X[np.isfinite(X[:, c]), c])
                if 2 < len(levels) <= MAX_ONE_HOT_LEVELS:
                    self.one_hot_levels_.append((c, levels))
        codes = self._codes(X)
        ly = np.log(y)
        self.global_log_mean_ = float(ly.mean())
        est = np.full(codes.shape, np.nan)
        folds = np.random.RandomState(self.random_state).permutation(len(X)) % self.n_folds
        for fold in range(self.n_folds):
            held = folds == fold
            if held.all() or not held.any():
                continue
            est[held] = self._estimates(self._tables(codes[~held], ly[~held]), codes[held])
        self.tables_ = self._tables(codes, ly)
        Xa, offset = self._augment(X, est, codes)
        base = self.base if self.base is not None else LogTargetXGBRegressor(
            n_estimators=1500, max_depth=8, learning_rate=0.05, subsample=0.8, colsample_bytree=0.8,
            min_child_weight=1.0, random_state=self.random_state)
        self.base_ = clone(base)
        if self.base is not None and "random_state" in self.base_.get_params(deep=False):
            self.base_.set_params(random_state=self.random_state)
        self.base_.fit(Xa, y / np.exp(offset))
        return self

    def predict(self, X):
        check_is_fitted(self, "base_")
        X = validate_data(self, X, ensure_all_finite="allow-nan", reset=False)
        codes = self._codes(X)
        Xa, offset = self._augment(X, self._estimates(self.tables_, codes), codes)
        return np.asarray(self.base_.predict(Xa), dtype=float) * np.exp(offset)


# --------------------------------------------------------------------------- blends


class BlendRegressor(RegressorMixin, BaseEstimator):
    """Weighted geometric mean of positive-target regressors (an average of their log predictions).

    Parameters:
        estimators: ``[(name, estimator), ...]``; each is cloned and fitted on all rows. Members
            with a ``random_state`` parameter get ``random_state + i`` (so "three seeds of one MLP"
            is three copies of it).
        weights: one per member (normalised); None weighs them equally.
        random_state: base seed of the members.
        reseed_members: False keeps each member's own seed, so the blend of already
            cross-validated candidates makes exactly their predictions (and its CV score is
            the blend of theirs, with no refit).
        n_jobs: members fitted at once, each in its own process (joblib); None or 1 fits them
            one after the other. Two one-thread MLP fits side by side on two cores take about a
            third less time than the same fits one after the other on two threads each.
    """

    def __init__(self, estimators: Sequence[tuple[str, BaseEstimator]] = (), weights: Sequence[float] | None = None,
                 random_state: int = 0, reseed_members: bool = True, n_jobs: int | None = None):
        self.estimators = estimators
        self.weights = weights
        self.random_state = random_state
        self.reseed_members = reseed_members
        self.n_jobs = n_jobs

    def __sklearn_tags__(self):
        return log_target_tags(super().__sklearn_tags__())

    def fit(self, X, y):
        original = X
        X, y = validate_data(self, X, y, ensure_all_finite="allow-nan", y_numeric=True)
        y = check_positive_target(y)
        members = list(self.estimators)
        if not members:
            raise InvalidInputError("`estimators` must name at least one (name, estimator) pair, but got none")
        weights = np.ones(len(members)) if self.weights is None else np.asarray(self.weights, dtype=float)
        if weights.shape != (len(members),) or np.any(weights < 0) or weights.sum() <= 0:
            raise InvalidInputError(
                f"`weights` must be {len(members)} non-negative numbers with a positive sum, but got {self.weights!r}")
        if self.n_jobs is not None and (not isinstance(self.n_jobs, int) or isinstance(self.n_jobs, bool)
                                        or self.n_jobs == 0):
            raise InvalidInputError(f"`n_jobs` must be None or a non-zero integer (-1: all cores), "
                                    f"but got n_jobs={self.n_jobs!r}")
        self.weights_ = weights / weights.sum()
        unfitted = []
        for i, (_, est) in enumerate(members):
            member = clone(est)
            if self.reseed_members and "random_state" in member.get_params(deep=False):
                member.set_params(random_state=self.random_state + i)
            unfitted.append(member)
        # Members see the input as given: a DataFrame keeps the column names they select by.
        data = original if isinstance(original, pd.DataFrame) else X
        if self.n_jobs in (None, 1) or len(unfitted) == 1:
            self.estimators_ = [member.fit(data, y) for member in unfitted]
        else:
            from joblib import Parallel, delayed

            self.estimators_ = Parallel(n_jobs=self.n_jobs)(delayed(_fitted)(m, data, y) for m in unfitted)
        return self

    def predict(self, X):
        check_is_fitted(self, "estimators_")
        checked = validate_data(self, X, ensure_all_finite="allow-nan", reset=False)
        X = X if isinstance(X, pd.DataFrame) else checked
        logs = np.column_stack([np.log(np.asarray(m.predict(X), dtype=float)) for m in self.estimators_])
        return np.exp(logs @ self.weights_)


def _fitted(member: BaseEstimator, X: Any, y: np.ndarray) -> BaseEstimator:
    """``member`` fitted (a module-level function: joblib sends it to another process)."""
    return member.fit(X, y)


# --------------------------------------------------------------------------- multi-target


class MultiTargetModel(BaseEstimator):
    """One ``PerformanceModel`` per target column; ``predict`` returns a DataFrame of named targets.

    Parameters:
        kind: featurizer of every target's model.
        targets: target columns (``runtime_ms``, ``power_w``, ``energy_j``, ``metric.itl_p50_ms``, ...).
        regressor: a name/estimator for all targets, or a dict target -> name/estimator.
        residual_of: as ``PerformanceModel``'s, for all targets or as a dict target -> value
            (a missing key means the default, ``"log2_roofline_ms"``).
        random_state: seed handed to every target's model.

    Each target's model is fitted on the rows where that target is finite and positive, so a
    table where power was recorded for some rows only still trains the runtime model on all.
    """

    def __init__(self, kind: str = "gemm", targets: Sequence[str] = ("runtime_ms",),
                 regressor: str | BaseEstimator | Mapping[str, Any] = "xgb",
                 residual_of: str | Mapping[str, str | None] | None = "log2_roofline_ms", random_state: int = 0):
        self.kind = kind
        self.targets = targets
        self.regressor = regressor
        self.residual_of = residual_of
        self.random_state = random_state

    def _per_target(self, value: Any, target: str, default: Any) -> Any:
        if isinstance(value, Mapping):
            return value.get(target, default)
        return value

    def fit(self, X: pd.DataFrame, y: pd.DataFrame | None = None) -> MultiTargetModel:
        if not isinstance(X, pd.DataFrame):
            raise InvalidInputError(
                f"MultiTargetModel takes a pandas DataFrame of Measurements, but got {type(X).__name__}")
        targets = list(self.targets)
        if not targets or len(set(targets)) != len(targets):
            raise InvalidInputError(f"`targets` must be distinct column names, at least one, but got {targets}")
        table = y if y is not None else X
        if not isinstance(table, pd.DataFrame):
            raise InvalidInputError(f"`y` must be a DataFrame with the target columns, but got {type(table).__name__}")
        missing = [t for t in targets if t not in table]
        if missing:
            raise InvalidInputError(f"target column(s) {missing} are not in the table")
        if len(table) != len(X):
            raise InvalidInputError(f"X and y must have equal length, but got {len(X)} and {len(table)}")
        self.models_: dict[str, PerformanceModel] = {}
        self.n_train_: dict[str, int] = {}
        for target in targets:
            values = pd.to_numeric(table[target], errors="coerce").to_numpy(dtype=float)
            usable = np.isfinite(values) & (values > 0)
            if usable.sum() < 2:
                raise InvalidInputError(
                    f"target '{target}' needs >= 2 finite positive values, but got {int(usable.sum())}")
            model = PerformanceModel(kind=self.kind, regressor=self._per_target(self.regressor, target, "xgb"),
                                     target=target, random_state=self.random_state,
                                     residual_of=self._per_target(self.residual_of, target, "log2_roofline_ms"))
            rows = X.loc[usable]
            self.models_[target] = model.fit(rows, values[usable])
            self.n_train_[target] = int(usable.sum())
        self.targets_ = targets
        return self

    def predict(self, X: pd.DataFrame) -> pd.DataFrame:
        check_is_fitted(self, "models_")
        return pd.DataFrame({t: self.models_[t].predict(X) for t in self.targets_}, index=X.index)


def deep_tree_blend(random_state: int = 0, n_jobs: int | None = None, xgb_rounds: int = 2000,
                    forest_trees: int = 300) -> BlendRegressor:
    """XGBoost of depth 12 and ExtraTrees, an even geometric mean: for measured tuning spaces.

    Kernel run times jump 10-50x between neighbouring configs (a power-of-two block width, a
    tile that spills registers); deep trees follow such cliffs where shallow ones and MLPs
    smooth them over. On the Kernel Tuner convolution spaces (5-fold CV on each GPU's training
    rows, mean of four GPUs) this blend scored 4.39% MAPE, ExtraTrees alone 4.49%, XGBoost of
    depth 12 4.81%, of depth 6 ~5.9% (benchmarks/accuracy.py, ``kt_convolution``).
    """
    return BlendRegressor(estimators=[
        ("xgb-depth12", LogTargetXGBRegressor(n_estimators=xgb_rounds, max_depth=12, learning_rate=0.03,
                                              subsample=0.8, colsample_bytree=0.8, n_jobs=n_jobs)),
        ("extra-trees", LogTargetForestRegressor(n_estimators=forest_trees, n_jobs=n_jobs))],
        weights=[0.5, 0.5], random_state=random_state)


# --------------------------------------------------------------------------- registration

def _grid_xgb(seed: int) -> GridNeighbourRegressor:
    return GridNeighbourRegressor(random_state=seed)


register_featurizer("kernel", kernel_features)
register_featurizer("kernel-occupancy", kernel_occupancy_features, rows="kernel")
register_featurizer("gemm-gpu", gpu_gemm_features, rows="gemm")
register_featurizer("gemm-gpu-transfer", gpu_gemm_transfer_features, rows="gemm")
register_featurizer("serving", serving_features)
register_featurizer("serving-attention", serving_attention_features, rows="serving")
register_regressor("hgb", lambda seed: LogTargetHGBRegressor(random_state=seed))
register_regressor("forest", lambda seed: LogTargetForestRegressor(random_state=seed))
register_regressor("mlp", lambda seed: TorchMLPRegressor(random_state=seed))
register_regressor("grid-xgb", _grid_xgb)
register_regressor("deep-trees", lambda seed: deep_tree_blend(random_state=seed))
register_regressor("gp", lambda seed: TorchGPRegressor())  # deterministic: no seed to take
register_regressor("gp4", lambda seed: TorchGPRegressor(n_kernels=4))  # four summed kernels (UCI 2,000 rows)
register_regressor("auto", lambda seed: AutoRegressor(random_state=seed))  # xgb, deep-trees or gp4 by CV
