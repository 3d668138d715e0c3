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
from collections.abc import Callable, Mapping, Sequence
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
        if col.dtype == object and col.map(lambda v: isinstance(v, (int, float, np.number))
                                           and not isinstance(v, (bool, np.bool_))).all():
            col = col.astype(float)  # [1, 2, 0.5] keeps its int 1 in an object column: still numbers
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
    The Xgemm warp access columns (Dec 6) left the four GEMM spaces level (transfer P 0.578 on
    UCI SGEMM against 0.632 with occupancy alone, 20 seeds: noise; ``tuning_features_access.json``).
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


# Column names the kernel feature rules give the quantities they derive (``kernel_features``):
# what an ensemble's raw-parameter members leave out (``EnsembleSurrogate(member_views="alternate")``).
DERIVED_PREFIXES = ("d_", "log2_d_", "pow2_d_")


def is_derived_column(name: str) -> bool:
    """Whether a feature column is a quantity derived from the parameters (not a parameter)."""
    return name.startswith(DERIVED_PREFIXES)


def mixed_tuning_features(workload: Mapping[str, Any] | None = None, hardware: Mapping[str, Any] | None = None,
                          powers_of_two: bool = False) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """A featurizer for tuning a kernel: the raw features (``param_features``, as without this
    option) plus the derived quantities of ``kernel_tuning_features`` (its ``d_`` columns).

    Meant for the ensemble with ``member_views="alternate"``, whose odd members see the raw
    columns only: derived columns let a few measurements find what, say, accumulators per
    thread do (UCI SGEMM's 14 parameters), and cost a little where the raw ones already
    suffice; half the members on each keeps most of the first and little of the second
    (``perfpred tune --features mixed``, its default when tuning from a prior on a space scored
    whole; from a cold start the raw features did better). Where the kernel
    feature rules know none of the parameters (the CPU kernels' block sizes), nothing is derived
    and these are the raw features.
    ``powers_of_two`` as in ``param_features`` (the Tuner's default adds them without a prior).
    """
    derived = kernel_tuning_features(workload, hardware)

    def featurize(candidates: pd.DataFrame) -> pd.DataFrame:
        feats = derived(candidates)
        return pd.concat([param_features(candidates, powers_of_two=powers_of_two),
                          feats[[c for c in feats.columns if is_derived_column(c)]]], axis=1)

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


def residual_target(X_measured: pd.DataFrame, y_log: np.ndarray, ok: np.ndarray,
                    prior_measured: np.ndarray | None) -> tuple[pd.DataFrame, np.ndarray]:
    """What a surrogate learns from: the measured rows that ran and their log objective minus the
    prior's (if any). The prior's prediction is also a feature (the correction may depend on it)."""
    y_ok = np.asarray(y_log, dtype=float)[ok]
    Xo = X_measured[ok]
    if prior_measured is None:
        return Xo, y_ok
    offset = np.asarray(prior_measured, dtype=float)[ok]
    return Xo.assign(prior_log=offset), y_ok - offset


def candidate_inputs(X_candidates: pd.DataFrame, prior_candidates: np.ndarray | None,
                     fitted_with_prior: bool) -> tuple[pd.DataFrame, np.ndarray]:
    """The candidates as a surrogate fitted by ``residual_target`` reads them, and the prior's
    log prediction to add back (zero without one)."""
    if fitted_with_prior != (prior_candidates is not None):
        raise InvalidInputError("the surrogate was fitted " + ("with" if fitted_with_prior else "without")
                                + " a prior, so its candidates must come " + ("with" if fitted_with_prior else
                                                                               "without") + " the prior's predictions")
    if prior_candidates is None:
        return X_candidates, np.zeros(len(X_candidates))
    offset = np.asarray(prior_candidates, dtype=float)
    return X_candidates.assign(prior_log=offset), offset


def few_points_spread(target: np.ndarray, n_candidates: int) -> np.ndarray:
    """The spread of a constant correction fitted to too few points: their own spread, at least 0.25."""
    return np.full(n_candidates, max(float(target.std()) if len(target) > 1 else 0.0, 0.25))


class FailureModel:
    """Predicted probability that a config runs correctly, learned from the measured ones (a
    random forest; a constant while every measured config ran, or none did). Fitted on its first
    use: a blend of surrogates asks only one of them."""

    def __init__(self, X_measured: pd.DataFrame, ok: np.ndarray, seed: int) -> None:
        self.ok = np.asarray(ok, dtype=bool)
        self.X_measured = X_measured
        self.seed = seed
        self.classifier = None

    def predict(self, X_candidates: pd.DataFrame) -> np.ndarray:
        ok = self.ok
        if ok.all() or (~ok).all():
            return np.full(len(X_candidates), 1.0 if ok.all() else 0.5)
        if self.classifier is None:
            from sklearn.ensemble import RandomForestClassifier

            self.classifier = RandomForestClassifier(n_estimators=60, min_samples_leaf=1, random_state=self.seed,
                                                     n_jobs=1).fit(self.X_measured, ok)
        return self.classifier.predict_proba(X_candidates)[:, list(self.classifier.classes_).index(True)]


class _Surrogate:
    """What the three surrogates share: ``fit`` returns a fitted model whose ``predict`` scores
    any number of candidate frames (an open space's predictor search scores its batches with one
    fit a round); ``fit_predict`` does both at once."""

    def fit(self, X_measured: pd.DataFrame, y_log: np.ndarray, ok: np.ndarray,
            prior_measured: np.ndarray | None = None) -> Any:
        raise NotImplementedError

    def fit_predict(self, X_measured: pd.DataFrame, y_log: np.ndarray, ok: np.ndarray, X_candidates: pd.DataFrame,
                    prior_measured: np.ndarray | None = None,
                    prior_candidates: np.ndarray | None = None) -> SurrogateFit:
        """Fit on measured rows (``y_log`` finite where ``ok``) and score the candidates."""
        return self.fit(X_measured, y_log, ok, prior_measured).predict(X_candidates, prior_candidates)


MEMBER_VIEWS = ("alternate", "all")


class EnsembleSurrogate(_Surrogate):
    """Bootstrap ensemble of XGBoost regressors on log(objective), plus a failure classifier.

    ``member_views="alternate"``: when the features hold derived quantities
    (``is_derived_column``) beside raw ones, the odd members fit on the raw columns only, so
    the ensemble hedges between the two views and their disagreement widens the spread where
    they differ. ``"all"``: every member sees every column.
    """

    def __init__(self, n_members: int = 5, max_depth: int = 4, n_estimators: int = 150,
                 learning_rate: float = 0.1, seed: int = 0, member_views: str = "all") -> None:
        if n_members < 2:
            raise InvalidInputError(f"`n_members >= 2` must hold for a spread, but got n_members={n_members}")
        if member_views not in MEMBER_VIEWS:
            raise InvalidInputError(f"`member_views in {MEMBER_VIEWS}` must hold, "
                                    f"but got member_views={member_views!r}")
        self.n_members = n_members
        self.max_depth = max_depth
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.seed = seed
        self.member_views = member_views

    def member_columns(self, columns: Sequence[str]) -> list[np.ndarray | None]:
        """Per member, the column positions it fits on (None: all of them)."""
        raw = np.flatnonzero([not is_derived_column(c) for c in columns])
        if self.member_views == "all" or len(raw) in (0, len(columns)):
            return [None] * self.n_members
        return [None if i % 2 == 0 else raw for i in range(self.n_members)]

    def fit(self, X_measured: pd.DataFrame, y_log: np.ndarray, ok: np.ndarray,
            prior_measured: np.ndarray | None = None) -> EnsembleFit:
        """Fit on the measured rows (``y_log`` finite where ``ok``), on top of the prior's log
        prediction for them when given."""
        from xgboost import XGBRegressor

        ok = np.asarray(ok, dtype=bool)
        Xo, target = residual_target(X_measured, y_log, ok, prior_measured)
        # Plain arrays: with a DataFrame XGBoost re-validates feature names on every boosting
        # round (a replayed 128-evaluation run on convolution/A100: 12.1 s -> 7.5-9.9 s, same picks).
        Xo_arr = Xo.to_numpy(dtype=float)
        rng = np.random.default_rng(self.seed)
        models = []
        views = self.member_columns(list(Xo.columns))
        if len(target) >= MIN_TREE_ROWS:
            for i, cols in enumerate(views):
                idx = rng.integers(0, len(target), len(target))
                model = XGBRegressor(n_estimators=self.n_estimators, max_depth=self.max_depth,
                                     learning_rate=self.learning_rate, subsample=1.0, colsample_bytree=0.8,
                                     min_child_weight=1.0, reg_lambda=1.0, random_state=self.seed + i, n_jobs=1,
                                     tree_method="hist")
                X_fit = Xo_arr[idx] if cols is None else Xo_arr[idx][:, cols]
                models.append(model.fit(X_fit, target[idx]))
        return EnsembleFit(models, target, self.n_members, prior_measured is not None,
                           FailureModel(X_measured, ok, self.seed), views)


@dataclass
class EnsembleFit:
    """A fitted :class:`EnsembleSurrogate` (no trees while there are fewer than ``MIN_TREE_ROWS``
    measured rows that ran: a constant correction with a wide spread instead)."""

    models: list[Any]
    target: np.ndarray
    n_members: int
    with_prior: bool
    failures: FailureModel
    views: list[np.ndarray | None]  # per member, the columns it fitted on (None: all)

    def predict(self, X_candidates: pd.DataFrame, prior_candidates: np.ndarray | None = None) -> SurrogateFit:
        Xc, offset_c = candidate_inputs(X_candidates, prior_candidates, self.with_prior)
        n_cand = len(Xc)
        if not len(self.target):
            preds = np.zeros((self.n_members, n_cand))
        elif not self.models:
            preds = np.tile(np.full(n_cand, self.target.mean()), (self.n_members, 1))
        else:
            Xc_arr = Xc.to_numpy(dtype=float)
            preds = np.stack([model.predict(Xc_arr if cols is None else Xc_arr[:, cols])
                              for model, cols in zip(self.models, self.views, strict=True)])
        std = preds.std(axis=0) if self.models else few_points_spread(self.target, n_cand)
        return SurrogateFit(offset_c + preds.mean(axis=0), std, self.failures.predict(X_candidates),
                            members_log=offset_c + preds)


class GPSurrogate(_Surrogate):
    """An exact GP (ARD Matern-5/2) on log(objective), or on its residual from a prior.

    The posterior standard deviation is the spread the lower confidence bound uses: unlike a
    bootstrap of trees it grows with the distance from what was measured, which is what
    exploration needs. The failure classifier is the ensemble's.
    """

    def __init__(self, n_iter: int = 60, learning_rate: float = 0.1, seed: int = 0) -> None:
        self.n_iter = n_iter
        self.learning_rate = learning_rate
        self.seed = seed

    def fit(self, X_measured: pd.DataFrame, y_log: np.ndarray, ok: np.ndarray,
            prior_measured: np.ndarray | None = None) -> GPFit:
        from perfpred.models._gp import TorchGPRegressor

        ok = np.asarray(ok, dtype=bool)
        Xo, target = residual_target(X_measured, y_log, ok, prior_measured)
        gp = None
        if len(target) >= MIN_TREE_ROWS and np.ptp(target) > 0:
            gp = TorchGPRegressor(n_iter=self.n_iter, learning_rate=self.learning_rate, n_threads=1)
            gp.fit(Xo.to_numpy(dtype=float), np.exp(target))
        return GPFit(gp, target, prior_measured is not None, FailureModel(X_measured, ok, self.seed))


@dataclass
class GPFit:
    """A fitted :class:`GPSurrogate` (no GP while fewer than ``MIN_TREE_ROWS`` rows ran or they
    all measured the same: a constant correction with a wide spread instead)."""

    gp: Any
    target: np.ndarray
    with_prior: bool
    failures: FailureModel

    def mean_and_std(self, X_candidates: pd.DataFrame,
                     prior_candidates: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The candidates' log-objective mean and posterior spread, without the failure odds."""
        Xc, offset_c = candidate_inputs(X_candidates, prior_candidates, self.with_prior)
        if self.gp is None:
            mean = np.full(len(Xc), self.target.mean() if len(self.target) else 0.0)
            std = few_points_spread(self.target, len(Xc))
        else:
            mean, std = self.gp.predict_log(Xc.to_numpy(dtype=float), return_std=True)
        return offset_c + mean, std

    def predict(self, X_candidates: pd.DataFrame, prior_candidates: np.ndarray | None = None) -> SurrogateFit:
        mean, std = self.mean_and_std(X_candidates, prior_candidates)
        return SurrogateFit(mean, std, self.failures.predict(X_candidates))


class BlendSurrogate(_Surrogate):
    """The ensemble and the GP, averaged: the mean of their log predictions, and the spread of
    the even mixture of the two (each one's variance plus how far apart they are)."""

    def __init__(self, ensemble: EnsembleSurrogate, gp: GPSurrogate) -> None:
        self.ensemble = ensemble
        self.gp = gp

    def fit(self, *args, **kwargs) -> BlendFit:
        return BlendFit(self.ensemble.fit(*args, **kwargs), self.gp.fit(*args, **kwargs))


@dataclass
class BlendFit:
    ensemble: EnsembleFit
    gp: GPFit

    def predict(self, X_candidates: pd.DataFrame, prior_candidates: np.ndarray | None = None) -> SurrogateFit:
        a = self.ensemble.predict(X_candidates, prior_candidates)
        gp_mean, gp_std = self.gp.mean_and_std(X_candidates, prior_candidates)  # the failure odds are the ensemble's
        mean = 0.5 * (a.mean_log + gp_mean)
        std = np.sqrt(0.5 * (a.std_log ** 2 + gp_std ** 2) + (0.5 * (a.mean_log - gp_mean)) ** 2)
        return SurrogateFit(mean, std, a.p_ok)
