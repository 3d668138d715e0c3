"""The tuner's surrogate: log-objective mean and spread over candidate configs.

An ensemble of small XGBoost models, each fitted on a bootstrap resample of the measured
configs, gives a mean and a standard deviation (in log space) per candidate; the spread
is what the acquisition uses to explore. With a transferred ``prior`` (a model trained on
other hardware), the ensemble learns the correction log(measured) - log(prior), which
needs far fewer measurements than learning the landscape from scratch: a config that is
fast on one GPU tends to be fast on another of the same kind.

A second, tiny model learns which configs fail (compile errors, out of memory, invalid
results), so candidates the tuner believes will fail are ranked last.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from perfpred.errors import InvalidInputError
from perfpred.features import is_power_of_two


def param_features(frame: pd.DataFrame, powers_of_two: bool = False) -> pd.DataFrame:
    """Numeric features of raw parameter values: the value, and log2 of positive ranges.

    Strings become category codes (in sorted order, so the coding is stable across calls).
    ``powers_of_two`` adds ``pow2_<name>`` (1 at powers of two) where a positive parameter mixes
    powers of two with other values: run times jump there (compilers turn index arithmetic over
    such sizes into shifts and unroll fully; the W6600 runs a 64-wide convolution block 10-50x
    faster than a 48- or 80-wide one), a step shallow trees cannot carve from a few points.
    """
    out = pd.DataFrame(index=frame.index)
    for name in frame.columns:
        col = frame[name]
        if pd.api.types.is_bool_dtype(col):
            out[name] = col.astype(float)
        elif pd.api.types.is_numeric_dtype(col):
            values = col.astype(float)
            out[name] = values
            if not (values > 0).all():
                continue
            if values.max() / max(values.min(), 1e-300) >= 4:
                out[f"log2_{name}"] = np.log2(values)
            if powers_of_two:
                pow2 = is_power_of_two(values.to_numpy())
                if 0 < pow2.sum() < len(pow2):  # only where the values mix both kinds
                    out[f"pow2_{name}"] = pow2
        else:
            cats = sorted(col.astype(str).unique())
            out[name] = col.astype(str).map({c: i for i, c in enumerate(cats)}).astype(float)
    return out


def kernel_tuning_features(workload: Mapping[str, Any] | None = None,
                           hardware: Mapping[str, Any] | None = None) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """A featurizer for tuning a kernel: each parameter (value and log2) plus the quantities the
    kernel feature rules derive from them and the problem (``perfpred.features.kernel_features``:
    work per thread, tile areas, local memory, blocks launched, halo overhead, ...).

    ``workload`` holds the problem, as the measurement rows name it (``problem_size_x``, ``m``,
    ...; a ``workload.`` prefix is optional); it is the same for every candidate, so it only
    matters through the derived quantities. ``hardware`` (the device's spec, e.g. a replayed
    recording's ``hardware_json``) adds the occupancy on that GPU where its per-SM limits are known
    (``kernel_occupancy_features``). Columns that are constant, not finite for every
    candidate, or a copy of an earlier column are dropped: they cannot split the configs.

    Why: the surrogate learns from 8-128 measurements, and from raw parameters a tree needs many
    of them to find that, say, MWG / MDIMC x NWG / NDIMC (accumulators per thread) matters; as a
    column it takes one split. Opt-in, not the default: on the 12 recorded spaces (20 seeds,
    ``benchmarks/results/tuning_features.json``) it lifted transfer tuning on UCI SGEMM (P 0.46 ->
    0.61, 14 parameters and priors that order it badly) and moved the mean P only from 0.848 to
    0.856, losing 0.01-0.06 on 4 spaces; cold start stayed at mean P 0.527 (-0.10..+0.11 per space).
    """
    from perfpred.features import kernel_features, kernel_occupancy_features

    constants = {(k if k.startswith("workload.") else f"workload.{k}"): v for k, v in (workload or {}).items()}
    if hardware is not None:
        constants["hardware_json"] = json.dumps(dict(hardware), sort_keys=True)
    features = kernel_occupancy_features if hardware is not None else kernel_features

    def featurize(candidates: pd.DataFrame) -> pd.DataFrame:
        frame = pd.DataFrame({f"config.{name}": candidates[name].to_numpy() for name in candidates.columns},
                             index=candidates.index)
        for column, value in constants.items():
            frame[column] = value
        feats = features(frame)
        values = feats.to_numpy(dtype=float)
        keep, seen = [], {}
        for j, name in enumerate(feats.columns):
            col = values[:, j]
            if not np.isfinite(col).all() or (len(col) and (col == col[0]).all()):
                continue
            key = hash(col.tobytes())
            if key in seen and np.array_equal(values[:, seen[key]], col):
                continue
            seen[key] = j
            keep.append(name)
        # One candidate (or all alike): nothing varies, but a model still needs its columns.
        return feats[keep or [c for c in feats.columns if c.startswith("p_")]]

    return featurize


def aligned_features(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """``param_features`` laid out as a fitted model expects: its columns, in its order.

    ``param_features`` adds log2 columns only where a parameter spans a wide range, so a model
    fitted on one recording (say KWI always 2) and candidates from another (KWI 2 or 8) can
    disagree; a column the model never saw is dropped, and one it expects but the candidates
    lack is computed when possible and left missing (NaN, which XGBoost handles) otherwise.
    """
    feats = param_features(frame)
    for col in columns:
        if col not in feats and col.startswith("log2_") and col[5:] in frame:
            values = frame[col[5:]].astype(float)
            feats[col] = np.log2(values.where(values > 0))
    return feats.reindex(columns=columns)


def xgb_prior(model) -> callable:
    """A prior callable (candidates -> predicted objective) from an XGBoost model of log objective."""
    columns = list(model.get_booster().feature_names)
    return lambda candidates: np.exp(model.predict(aligned_features(candidates, columns)))


# Fewer measured rows than this and the trees are not fitted: a constant correction instead.
MIN_TREE_ROWS = 4


@dataclass
class SurrogateFit:
    mean_log: np.ndarray  # predicted log(objective) per candidate
    std_log: np.ndarray  # ensemble spread per candidate
    p_ok: np.ndarray  # predicted probability that the config runs correctly
    members_log: np.ndarray | None = None  # each ensemble member's log prediction: (n_members, n_candidates)


def residual_problem(X_measured: pd.DataFrame, y_log: np.ndarray, ok: np.ndarray, X_candidates: pd.DataFrame,
                     prior_measured: np.ndarray | None, prior_candidates: np.ndarray | None
                     ) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray, np.ndarray]:
    """What a surrogate learns: the measured rows that ran, their log objective minus the prior's
    (if any), the candidates, and the prior's log prediction for each candidate (zero without one)."""
    y_ok = np.asarray(y_log, dtype=float)[ok]
    Xo, Xc = X_measured[ok], X_candidates
    offset_m = prior_measured[ok] if prior_measured is not None else np.zeros(len(y_ok))
    offset_c = prior_candidates if prior_candidates is not None else np.zeros(len(X_candidates))
    if prior_candidates is not None:
        # The prior's prediction is also a feature: the correction may depend on it.
        Xo, Xc = Xo.assign(prior_log=offset_m), Xc.assign(prior_log=offset_c)
    return Xo, Xc, y_ok - offset_m, offset_c


def few_points_spread(target: np.ndarray, n_candidates: int) -> np.ndarray:
    """The spread of a constant correction fitted to too few points: their own spread, at least 0.25."""
    return np.full(n_candidates, max(float(target.std()) if len(target) > 1 else 0.0, 0.25))


class EnsembleSurrogate:
    """Bootstrap ensemble of XGBoost regressors on log(objective), plus a failure classifier."""

    def __init__(self, n_members: int = 5, max_depth: int = 4, n_estimators: int = 150,
                 learning_rate: float = 0.1, seed: int = 0) -> None:
        if n_members < 2:
            raise InvalidInputError(f"`n_members >= 2` must hold for a spread, but got n_members={n_members}")
        self.n_members = n_members
        self.max_depth = max_depth
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.seed = seed

    def fit_predict(self, X_measured: pd.DataFrame, y_log: np.ndarray, ok: np.ndarray, X_candidates: pd.DataFrame,
                    prior_measured: np.ndarray | None = None,
                    prior_candidates: np.ndarray | None = None) -> SurrogateFit:
        """Fit on measured rows (``y_log`` finite where ``ok``) and score the candidates."""
        from xgboost import XGBRegressor

        n_cand = len(X_candidates)
        ok = np.asarray(ok, dtype=bool)
        Xo, Xc, target, offset_c = residual_problem(X_measured, y_log, ok, X_candidates, prior_measured,
                                                     prior_candidates)
        # Plain arrays: with a DataFrame XGBoost re-validates feature names on every boosting
        # round (a replayed 128-evaluation run on convolution/A100: 12.1 s -> 7.5-9.9 s, same picks).
        Xo_arr, Xc_arr = Xo.to_numpy(dtype=float), Xc.to_numpy(dtype=float)
        rng = np.random.default_rng(self.seed)
        if len(target) == 0:
            preds = np.zeros((self.n_members, n_cand))
        elif len(target) < MIN_TREE_ROWS:
            # Too few points for trees: a constant correction with a wide spread.
            preds = np.tile(np.full(n_cand, target.mean()), (self.n_members, 1))
        else:
            preds = np.empty((self.n_members, n_cand))
            for i in range(self.n_members):
                idx = rng.integers(0, len(target), len(target))
                model = XGBRegressor(n_estimators=self.n_estimators, max_depth=self.max_depth,
                                     learning_rate=self.learning_rate, subsample=1.0, colsample_bytree=0.8,
                                     min_child_weight=1.0, reg_lambda=1.0, random_state=self.seed + i, n_jobs=1,
                                     tree_method="hist")
                model.fit(Xo_arr[idx], target[idx])
                preds[i] = model.predict(Xc_arr)
        mean = offset_c + preds.mean(axis=0)
        std = preds.std(axis=0)
        if len(target) < MIN_TREE_ROWS:
            std = few_points_spread(target, n_cand)
        p_ok = probability_ok(X_measured, ok, X_candidates, self.seed)
        return SurrogateFit(mean, std, p_ok, members_log=offset_c + preds)


class GPSurrogate:
    """An exact GP (ARD Matern-5/2) on log(objective), or on its residual from a prior.

    The posterior standard deviation is the spread the lower confidence bound uses: unlike a
    bootstrap of trees it grows with the distance from what was measured, which is what
    exploration needs. The failure classifier is the ensemble's.
    """

    def __init__(self, n_iter: int = 60, learning_rate: float = 0.1, seed: int = 0) -> None:
        self.n_iter = n_iter
        self.learning_rate = learning_rate
        self.seed = seed

    def fit_predict(self, X_measured: pd.DataFrame, y_log: np.ndarray, ok: np.ndarray, X_candidates: pd.DataFrame,
                    prior_measured: np.ndarray | None = None,
                    prior_candidates: np.ndarray | None = None) -> SurrogateFit:
        ok = np.asarray(ok, dtype=bool)
        mean, std = self.mean_and_std(X_measured, y_log, ok, X_candidates, prior_measured, prior_candidates)
        return SurrogateFit(mean, std, probability_ok(X_measured, ok, X_candidates, self.seed))

    def mean_and_std(self, X_measured: pd.DataFrame, y_log: np.ndarray, ok: np.ndarray, X_candidates: pd.DataFrame,
                     prior_measured: np.ndarray | None = None,
                     prior_candidates: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The candidates' log-objective mean and posterior spread, without the failure classifier."""
        from perfpred.models._gp import TorchGPRegressor

        n_cand = len(X_candidates)
        ok = np.asarray(ok, dtype=bool)
        Xo, Xc, target, offset_c = residual_problem(X_measured, y_log, ok, X_candidates, prior_measured,
                                                     prior_candidates)
        if len(target) < MIN_TREE_ROWS or np.ptp(target) == 0:
            # Too few points for length scales: a constant correction with a wide spread.
            mean = np.full(n_cand, target.mean() if len(target) else 0.0)
            std = few_points_spread(target, n_cand)
        else:
            gp = TorchGPRegressor(n_iter=self.n_iter, learning_rate=self.learning_rate, n_threads=1)
            gp.fit(Xo.to_numpy(dtype=float), np.exp(target))
            mean, std = gp.predict_log(Xc.to_numpy(dtype=float), return_std=True)
        return offset_c + mean, std


class BlendSurrogate:
    """The ensemble and the GP, averaged: the mean of their log predictions, and the spread of
    the even mixture of the two (each one's variance plus how far apart they are)."""

    def __init__(self, ensemble: EnsembleSurrogate, gp: GPSurrogate) -> None:
        self.ensemble = ensemble
        self.gp = gp

    def fit_predict(self, *args, **kwargs) -> SurrogateFit:
        a = self.ensemble.fit_predict(*args, **kwargs)
        gp_mean, gp_std = self.gp.mean_and_std(*args, **kwargs)  # the failure odds are the ensemble's
        mean = 0.5 * (a.mean_log + gp_mean)
        std = np.sqrt(0.5 * (a.std_log ** 2 + gp_std ** 2) + (0.5 * (a.mean_log - gp_mean)) ** 2)
        return SurrogateFit(mean, std, a.p_ok)


def probability_ok(X_measured: pd.DataFrame, ok: np.ndarray, X_candidates: pd.DataFrame, seed: int) -> np.ndarray:
    """Predicted probability that each candidate runs correctly, from the measured ones."""
    if ok.all() or (~ok).all():
        return np.full(len(X_candidates), 1.0 if ok.all() or len(ok) == 0 else 0.5)
    from sklearn.ensemble import RandomForestClassifier

    clf = RandomForestClassifier(n_estimators=60, min_samples_leaf=1, random_state=seed, n_jobs=1)
    clf.fit(X_measured, ok)
    return clf.predict_proba(X_candidates)[:, list(clf.classes_).index(True)]
