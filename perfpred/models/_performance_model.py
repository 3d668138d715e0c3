"""``PerformanceModel``: Measurement table in, predicted target out.

It chains the kind's pure feature function with a regressor chosen by name, and remembers
the hardware specs it was trained on so a one-config prediction needs only the config.
It keeps the scikit-learn contract (``get_params``/``set_params``/``clone`` work), with one
convenience: ``fit(df)`` takes the target from ``df[target]`` when ``y`` is not given.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.dummy import DummyRegressor
from sklearn.linear_model import Ridge, RidgeCV
from sklearn.utils.validation import check_is_fitted

from perfpred.datasets._schema import python_scalar
from perfpred.datasets._splits import configuration_labels, kfold_splits
from perfpred.errors import InvalidInputError
from perfpred.features import ReferenceTimes, config_frame, gemm_features
from perfpred.models._auto import AutoRegressor
from perfpred.models._regressors import LogTargetXGBRegressor, RooflineRegressor, gpperf_random_forest

FEATURIZERS: dict[str, Callable[[pd.DataFrame], pd.DataFrame]] = {"gemm": gemm_features}
REFERENCE_MODES = ("features", "offset", "linear", "auto")
ROOFLINE_TARGETS = ("runtime_ms", "min_ms", "mean_ms")  # the times a GEMM row records
# ``linear``: the ridge fit is the whole model, so its shrinkage is chosen by leave-one-out on the rows.
LINEAR_ALPHAS = (0.01, 0.1, 1.0, 10.0)
# Feature sets that are variants of another kind's ("kernel-occupancy" reads "kernel" rows):
# featurizer name -> the Measurement kind of the rows it takes.
FEATURIZER_ROWS: dict[str, str] = {}

# name -> (factory, fits log target itself?) ; the registry later issues extend.
REGRESSORS: dict[str, Callable[[int], BaseEstimator]] = {
    "xgb": lambda seed: LogTargetXGBRegressor(random_state=seed),
    "rf": lambda seed: gpperf_random_forest(random_state=seed),
    "roofline": lambda seed: RooflineRegressor(),
}


def register_featurizer(kind: str, fn: Callable[[pd.DataFrame], pd.DataFrame], rows: str | None = None) -> None:
    """Features ``kind`` for ``PerformanceModel(kind=...)``; ``rows``: the Measurement kind it reads,
    when it is a variant of another kind's features (default: ``kind`` itself)."""
    FEATURIZERS[kind] = fn
    if rows is not None and rows != kind:
        FEATURIZER_ROWS[kind] = rows


def row_kind(kind: str) -> str:
    """The Measurement kind whose rows the features ``kind`` take ("serving-attention" -> "serving")."""
    return FEATURIZER_ROWS.get(kind, kind)


def register_regressor(name: str, factory: Callable[[int], BaseEstimator]) -> None:
    """Make ``PerformanceModel(regressor=name)`` build ``factory(random_state)``, an unfitted
    estimator (a name registered before is replaced)."""
    REGRESSORS[name] = factory


def featurize(df: pd.DataFrame, kind: str) -> pd.DataFrame:
    """The feature table the ``kind`` featurizer gives for the Measurement rows ``df`` (one row per
    row, same index); an unknown ``kind`` is an InvalidInputError listing the known ones."""
    if kind not in FEATURIZERS:
        raise InvalidInputError(f"`kind` must be one of {sorted(FEATURIZERS)} for features, but got kind={kind!r}")
    return FEATURIZERS[kind](df)


class PerformanceModel(RegressorMixin, BaseEstimator):
    """Predicts ``target`` (default ``runtime_ms``) of Measurements of one ``kind``.

    Parameters:
        kind: which feature extractor to use ("gemm", ...).
        regressor: "xgb" (default), "rf" (GPPerf baseline), "roofline", or any registered name,
            or an unfitted estimator instance.
        target: the column predicted when ``fit`` is given no ``y``.
        random_state: seed handed to the regressor.
        residual_of: a log2 feature the regressor's prediction is relative to ("log2_roofline_ms"
            by default for log-target regressors): the model then learns the achieved fraction of
            the analytic bound, which varies far less across sizes than the time itself, so few
            measurements go a long way. ``None`` fits the target directly.
        calibration_groups: a column of the training table (e.g. "hardware_id") whose values the
            regressor's predictive intervals are calibrated across, so that they cover a GPU or
            model it never saw; needs a regressor whose ``fit`` takes ``groups`` ("xgb-quantile").
        reference: Measurements of the same kernel on OTHER hardware (e.g. the recorded caches of
            GPUs already tuned): each reference GPU's time for the row's config becomes a feature
            (:class:`perfpred.features.ReferenceTimes`), so the model learns the new hardware as
            a correction of the old. Configs are matched on the ``config.*`` / ``workload.*``
            columns both tables have; a reference on the training rows' own hardware is an error.
            A :class:`~perfpred.features.ReferenceTimes` built once may be given instead, to share
            one lookup between many models of the same recordings.
        reuse_measured: where a row's hardware and features equal a training row's exactly,
            predict the median target measured there instead of the regressor's estimate. A GEMM's
            time depends on its shape and GPU, not on the LLM it belongs to, so a shape another
            model's profile already holds is the best estimate there is (Vidur, leave one model
            out: pooled MAPE 4.52 -> 4.28%); the regressor smooths such points over. Rows without
            such a match, and the intervals, are the regressor's.
        reference_mode: how the ``reference`` times enter: ``features`` (default: columns the
            regressor splits on), ``offset`` (the regressor learns the ratio to a ridge fit of log
            target on the reference log times, so a sibling GPU's recording is followed from few
            rows, where trees on 50 rows cannot follow a near-identity map; on a GPU its references
            order badly it costs), ``linear`` (that ridge fit alone, its shrinkage chosen by
            leave-one-out: a sibling GPU scaled, what one does by hand; no intervals), or ``auto``
            (whichever of the three scores lowest in 4-fold cross-validation on the training rows;
            twelve fits more, four of them a ridge only). A new GPU from 50 / 200 / 1,000 / 2,000 of its
            configs (``benchmarks/new_hardware.py``, mean over the recorded GPUs, 3 seeds): ``auto``
            5.8 / 4.6 / 2.9 / 2.3% MAPE on GEMM against ``features``' 7.7 / 5.1 / 3.2 / 2.4% (a
            sibling GPU followed as well as by hand from 50 rows), convolution 31.7 / 13.3 / 6.5 /
            4.5% against 31.9 / 13.5 / 6.9 / 4.9%, lower in 17 of 18 kernel x N cases; it misses
            where cross-validation on 50-100 rows picks wrongly (the A4000's convolution at 50
            rows 10.3 -> 11.5%), and on convolution the config it predicts fastest ran 1.38x the
            optimum at 1,000 against 1.10x.
    """

    def __init__(self, kind: str = "gemm", regressor: str | BaseEstimator = "xgb", target: str = "runtime_ms",
                 random_state: int = 0, residual_of: str | None = "log2_roofline_ms",
                 calibration_groups: str | None = None, reference: pd.DataFrame | ReferenceTimes | None = None,
                 reuse_measured: bool = False, reference_mode: str = "features"):
        self.kind = kind
        self.regressor = regressor
        self.target = target
        self.random_state = random_state
        self.residual_of = residual_of
        self.calibration_groups = calibration_groups
        self.reference = reference
        self.reuse_measured = reuse_measured
        self.reference_mode = reference_mode

    def make_regressor(self) -> BaseEstimator:
        """A fresh, unfitted regressor as ``fit`` builds it; an unknown regressor name fails here."""
        if isinstance(self.regressor, BaseEstimator):
            regressor = clone(self.regressor)
        elif self.regressor not in REGRESSORS:
            raise InvalidInputError(
                f"`regressor` must be one of {sorted(REGRESSORS)}, but got regressor={self.regressor!r}"
            )
        else:
            regressor = REGRESSORS[self.regressor](self.random_state)
        self._check_roofline(regressor)
        return regressor

    def _check_roofline(self, regressor: BaseEstimator) -> None:
        """The roofline is a GEMM's analytic time (FLOPs and bytes against the peaks): other rows
        (a kernel's tuning space: one bound for every config; a serving run) or a target that is
        no time would be scored against a number that does not describe them."""
        if not isinstance(regressor, RooflineRegressor):
            return
        if row_kind(self.kind) != "gemm":
            gemm_kinds = ", ".join(k for k in FEATURIZERS if row_kind(k) == "gemm")
            raise InvalidInputError(f"regressor 'roofline' is a GEMM's analytic time, for GEMM rows only (kind "
                                    f"{gemm_kinds}), but got kind={self.kind!r}")
        if self.target not in ROOFLINE_TARGETS:
            raise InvalidInputError(f"regressor 'roofline' predicts a time, so the target must be one of "
                                    f"{', '.join(ROOFLINE_TARGETS)}, but got target={self.target!r}")

    def _features(self, X: pd.DataFrame) -> pd.DataFrame:
        if not isinstance(X, pd.DataFrame):
            raise InvalidInputError(
                f"PerformanceModel takes a pandas DataFrame of Measurements, but got {type(X).__name__}"
            )
        feats = featurize(X, self.kind)
        if getattr(self, "reference_times_", None) is None:
            return feats
        return pd.concat([feats, self.reference_times_.features(X).set_axis(feats.index)], axis=1)

    def _fit_reference(self, X: pd.DataFrame) -> ReferenceTimes | None:
        if self.reference is None:
            return None
        if isinstance(self.reference, ReferenceTimes):
            # Built once and shared (reference_mode="auto"'s cross-validation folds, train_model's
            # held-out fits): the checks a table gets when its lookup is built.
            self.reference.check_usable_for(X, self.target)
            return self.reference
        if not isinstance(self.reference, pd.DataFrame):
            raise InvalidInputError(f"`reference` must be a DataFrame of Measurements or ReferenceTimes, but got "
                                    f"{type(self.reference).__name__}")
        return ReferenceTimes.for_rows(self.reference, X, target=self.target)

    def fit(self, X: pd.DataFrame, y: Any = None) -> PerformanceModel:
        _check_random_state(self.random_state)
        if y is None:
            if self.target not in X:
                raise InvalidInputError(f"fit needs y or a '{self.target}' column, but the table has neither")
            y = X[self.target]
        y = np.asarray(y, dtype=float)
        if y.ndim != 1 or not np.all(np.isfinite(y)):
            bad = y[~np.isfinite(y)][0] if y.ndim == 1 else y.shape
            raise InvalidInputError(f"`{self.target}` must be finite for every row, but got {bad!r}")
        if len(y) != len(X):
            raise InvalidInputError(f"X and y must have equal length, but got {len(X)} and {len(y)}")
        if len(X) < 2:
            raise InvalidInputError(f"fit needs at least 2 rows, but got {len(X)}")
        self.reference_times_ = self._fit_reference(X)
        feats = self._features(X)
        if self.reference_times_ is not None and (feats["ref_missing_fraction"] == 1.0).all():
            # e.g. a workload column that differs per GPU (the kernel a library picked there)
            raise InvalidInputError(f"`reference` must hold some of the training configs, but none of them matched "
                                    f"on the shared columns {self.reference_times_.key_columns}")
        self.regressor_ = self.make_regressor()
        if positive_target(self.regressor_) and (y <= 0).any():
            # Checked here, on the user's values: the regressor itself sees y / roofline (a ratio).
            bad = y[y <= 0]
            name = self.regressor if isinstance(self.regressor, str) else type(self.regressor).__name__
            raise InvalidInputError(f"`target > 0` must hold for every row of the log-target regressor {name!r}, "
                                    f"but got {self.target}={float(bad[0])!r} ({len(bad)} bad value(s))")
        if isinstance(self.regressor_, RooflineRegressor):
            self.regressor_.set_params(column=list(feats.columns).index("log2_roofline_ms"))
        self.reference_mode_ = self._choose_reference_mode(X, y)
        self.reference_offset_ = None
        linear = self.reference_mode_ == "linear"
        if linear or (self.reference_mode_ == "offset" and positive_target(self.regressor_)):
            columns = [c for c in feats.columns if c.startswith(f"ref_log2_{self.target}__")]
            ridge = RidgeCV(alphas=LINEAR_ALPHAS) if linear else Ridge(alpha=1.0)
            self.reference_offset_ = (columns, ridge.fit(feats[columns].to_numpy(float), np.log2(y)))
        if linear:  # the references' fit alone: the regressor's ratio to it is 1
            self.regressor_ = DummyRegressor(strategy="constant", constant=1.0)
        self.uses_residual_ = self.reference_offset_ is not None or self._residual_applies(self.regressor_, feats)
        fit_params = {} if linear else self._group_fit_params(X)
        if self.uses_residual_:
            self.regressor_.fit(feats, y / self._offset(feats), **fit_params)
        else:
            self.regressor_.fit(feats, y, **fit_params)
        self.feature_names_ = list(feats.columns)
        self.measured_ = (pd.Series(y).groupby(_row_keys(X, feats)).median()
                          if self.reuse_measured else None)
        self.n_train_ = len(X)
        # The problem every training row shares (a tuning space's size): what a config given
        # alone (``perfpred predict --input``) is taken to solve unless it says otherwise.
        self.constant_workload_ = {c: X[c].iloc[0] for c in X.columns
                                   if c.startswith("workload.") and X[c].nunique(dropna=False) == 1}
        self.input_columns_ = input_summary(X)
        self.hardware_specs_: dict[str, str] = {}
        if "hardware_id" in X and "hardware_json" in X:
            pairs = X[["hardware_id", "hardware_json"]].dropna().drop_duplicates("hardware_id", keep="last")
            self.hardware_specs_ = dict(zip(pairs["hardware_id"], pairs["hardware_json"], strict=True))
        return self

    def _group_fit_params(self, X: pd.DataFrame) -> dict[str, np.ndarray]:
        if self.calibration_groups is None:
            repeats = configuration_labels(X)
            if repeats is not None and isinstance(self.regressor_, AutoRegressor):
                return {"groups": repeats}  # its inner CV keeps a configuration's repeats in one fold
            return {}
        if self.calibration_groups not in X:
            raise InvalidInputError(f"`calibration_groups` must name a column of the training table, but got "
                                    f"calibration_groups={self.calibration_groups!r}")
        if "groups" not in inspect.signature(self.regressor_.fit).parameters:
            raise InvalidInputError(f"`calibration_groups` needs a regressor whose fit takes groups (e.g. "
                                    f"'xgb-quantile'), but got {type(self.regressor_).__name__}")
        return {"groups": X[self.calibration_groups].astype(str).to_numpy()}

    def _choose_reference_mode(self, X: pd.DataFrame, y: np.ndarray) -> str:
        """``reference_mode`` resolved: ``features`` without a reference; for ``auto`` the mode
        with the lowest 4-fold cross-validated MAPE on these rows."""
        if self.reference_mode not in REFERENCE_MODES:
            raise InvalidInputError(f"`reference_mode` must be one of {REFERENCE_MODES}, but got "
                                    f"reference_mode={self.reference_mode!r}")
        if self.reference is None:
            return "features"
        if self.reference_mode != "auto":
            return self.reference_mode
        if len(X) < 8:
            return "features"  # too few rows to cross-validate the choice
        folds = kfold_splits(len(X), 4, self.random_state, configuration_labels(X))
        errors: dict[str, list[float]] = {"features": [], "offset": [], "linear": []}
        # The folds share this fit's reference lookup (no rebuild, no deep copy of the recordings).
        params = {**self.get_params(deep=False), "reference": self.reference_times_}
        for train, test in folds:
            for mode, errs in errors.items():
                fitted = type(self)(**{**params, "reference_mode": mode}).fit(X.iloc[train], y[train])
                errs.append(float(np.mean(np.abs(fitted.predict(X.iloc[test]) / y[test] - 1))))
        self.reference_cv_mape_pct_ = {mode: 100 * float(np.mean(errs)) for mode, errs in errors.items()}
        return min(self.reference_cv_mape_pct_, key=self.reference_cv_mape_pct_.get)

    def _residual_applies(self, regressor: BaseEstimator, feats: pd.DataFrame) -> bool:
        """Only log-target regressors learn a ratio well, and only where the offset is known."""
        if self.residual_of is None or not positive_target(regressor):
            return False
        if self.residual_of not in feats:
            raise InvalidInputError(f"`residual_of` must name a feature, but got residual_of={self.residual_of!r}")
        return bool(np.isfinite(feats[self.residual_of]).all())

    def _offset(self, feats: pd.DataFrame, X: pd.DataFrame | None = None) -> np.ndarray:
        if getattr(self, "reference_offset_", None) is not None:
            columns, ridge = self.reference_offset_
            return np.exp2(ridge.predict(feats[columns].to_numpy(float)))
        offset = np.exp2(feats[self.residual_of].to_numpy(dtype=float))
        if not np.isfinite(offset).all():
            unknown = ~np.isfinite(offset)
            no_spec = (np.ones(len(feats), dtype=bool) if X is None or "hardware_json" not in X
                       else X["hardware_json"].isna().to_numpy())
            if X is not None and (unknown & no_spec).any():
                i = int(np.flatnonzero(unknown & no_spec)[0])
                hardware_id = X["hardware_id"].iloc[i] if "hardware_id" in X else None
                whose = ("no hardware_id either" if hardware_id is None or pd.isna(hardware_id)
                         else f"their hardware_id {hardware_id!r} is unknown to the model (trained on "
                              f"{sorted(getattr(self, 'hardware_specs_', {}))})")
                raise InvalidInputError(
                    f"feature {self.residual_of!r} is unknown for {int((unknown & no_spec).sum())} row(s), e.g. row "
                    f"{X.index[i]!r}: they have no hardware spec (no hardware_json) and {whose}, but this model "
                    "predicts relative to it: give their hardware_json"
                )
            raise InvalidInputError(
                f"feature {self.residual_of!r} is unknown for some rows (no peaks in their hardware spec), "
                "but this model was trained relative to it"
            )
        return offset

    def _trained_columns(self, feats: pd.DataFrame) -> pd.DataFrame:
        """``feats`` in the training's column order (rows built elsewhere, e.g. from a CSV, may
        list the parameters in another order); a feature the rows cannot give is an error."""
        names = getattr(self, "feature_names_", None)
        if names is None or list(feats.columns) == names:
            return feats
        missing = [c for c in names if c not in feats]
        if missing:
            raise InvalidInputError(f"these rows lack {len(missing)} feature(s) the model was trained on, e.g. "
                                    f"{missing[:3]}: give the config.* and workload.* columns its training rows had")
        return feats[names]

    def check_inputs(self, X: pd.DataFrame) -> None:
        """Refuse rows whose inputs the model cannot give a meaningful prediction for, in one line
        naming the row (its index label), column and value: a value that is not a finite number in
        a ``config.*`` / ``workload.*`` column that held numbers in every training row (text such as
        "big", infinity), and, for kernel and GEMM models, a missing value (NaN, None) in such a
        column that every training row gave (a config whose tuning parameter is unknown). Columns
        the training rows lacked or left empty in some rows are not checked; a serving model reads
        missing model facts from its model cards, so its missing values pass. Nothing is checked
        for models fitted before ``input_columns_`` was kept. ``predict`` and
        ``predict_interval`` call this."""
        if not isinstance(X, pd.DataFrame):
            raise InvalidInputError(
                f"PerformanceModel takes a pandas DataFrame of Measurements, but got {type(X).__name__}")
        strict_missing = row_kind(self.kind) != "serving"
        for column, info in (getattr(self, "input_columns_", None) or {}).items():
            if column not in X:
                continue
            col = X[column]
            missing = col.isna().to_numpy(dtype=bool)
            if strict_missing and not info["missing"] and column not in NEW_BY_DESIGN and missing.any():
                i = int(np.flatnonzero(missing)[0])
                raise InvalidInputError(
                    f"row {python_scalar(X.index[i])!r}, column {column!r}: a value is needed (every training "
                    f"row has one; a prediction for a config whose {column} is unknown means nothing), but got "
                    f"{python_scalar(col.iloc[i])!r}")
            if not info.get("numeric") or col.dtype.kind in "iub":
                continue
            numbers = pd.to_numeric(col, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
            bad = ~missing & ~np.isfinite(numbers)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                trained = f"{info['min']:g}..{info['max']:g}" if info["min"] != info["max"] else f"{info['min']:g}"
                raise InvalidInputError(
                    f"row {python_scalar(X.index[i])!r}, column {column!r}: must be a finite number as in every "
                    f"training row ({trained}), but got {python_scalar(col.iloc[i])!r}")

    def _prediction_rows(self, X: pd.DataFrame) -> pd.DataFrame:
        """``X`` checked (:meth:`check_inputs`), with the ``hardware_json`` of the hardware this
        model was trained on filled in where a row names its ``hardware_id`` but lacks the spec."""
        self.check_inputs(X)
        return self._with_trained_specs(X)

    def _with_trained_specs(self, X: pd.DataFrame) -> pd.DataFrame:
        """``X`` with the spec of each trained hardware id it names but lacks."""
        specs = getattr(self, "hardware_specs_", None) or {}
        if not specs or "hardware_id" not in X or X.empty:
            return X
        given = X["hardware_json"] if "hardware_json" in X else pd.Series(np.nan, index=X.index, dtype=object)
        lacking = given.isna() & X["hardware_id"].isin(list(specs))
        if not lacking.any():
            return X
        filled = given.astype(object).where(~lacking, X["hardware_id"].map(specs))
        return X.assign(hardware_json=filled)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """The predicted target per row of ``X`` (Measurement rows: ``config.*`` / ``workload.*``
        columns and the hardware); an empty ``X`` gives an empty array. Inputs the model cannot
        mean are refused (:meth:`check_inputs`)."""
        check_is_fitted(self, "regressor_")
        X = self._prediction_rows(X)
        if len(X) == 0:
            return np.empty(0, dtype=float)
        feats = self._trained_columns(self._features(X))
        pred = np.asarray(self.regressor_.predict(feats), dtype=float)
        pred = pred * self._offset(feats, X) if self.uses_residual_ else pred
        if getattr(self, "measured_", None) is not None:
            measured = _row_keys(X, feats).map(self.measured_).to_numpy(dtype=float)
            pred = np.where(np.isnan(measured), pred, measured)
        return pred

    @property
    def has_intervals(self) -> bool:
        """Whether the fitted regressor gives predictive intervals ("xgb-quantile", "xgb-ensemble")."""
        check_is_fitted(self, "regressor_")
        return hasattr(self.regressor_, "predict_interval")

    def predict_interval(self, X: pd.DataFrame, coverage: float = 0.9) -> pd.DataFrame:
        """lower / median / upper of the target per row of ``X`` (same index), a band meant to hold
        ``coverage`` of outcomes; needs a regressor with intervals ("xgb-quantile", "xgb-ensemble")."""
        if getattr(self, "reference_mode_", None) == "linear":
            raise InvalidInputError("intervals need a regressor with predict_interval, but this model is "
                                    "reference_mode='linear' (the references' fit alone, no regressor)")
        if not self.has_intervals:
            # The regressor as it was asked for (regressor='xgb'), not its class (LogTargetXGBRegressor).
            name = repr(self.regressor) if isinstance(self.regressor, str) else type(self.regressor_).__name__
            raise InvalidInputError(
                f"intervals need a regressor with predict_interval ('xgb-quantile' or 'xgb-ensemble'), "
                f"but this model's is {name}")
        X = self._prediction_rows(X)
        if len(X) == 0:
            return pd.DataFrame({c: np.empty(0, dtype=float) for c in ("lower", "median", "upper")}, index=X.index)
        feats = self._trained_columns(self._features(X))
        band = self.regressor_.predict_interval(feats, coverage=coverage)
        if self.uses_residual_:
            band = band.mul(self._offset(feats, X), axis=0)
        band.index = X.index
        return band[["lower", "median", "upper"]]

    def config_rows(self, configs: list[dict[str, Any]], hardware_id: str | None = None) -> pd.DataFrame:
        """Rows for plain config dicts, on ``hardware_id`` (default: the only one trained on)."""
        check_is_fitted(self, "regressor_")
        if hardware_id is None:
            if len(self.hardware_specs_) != 1:
                raise InvalidInputError(
                    f"this model was trained on {len(self.hardware_specs_)} hardware ids "
                    f"({sorted(self.hardware_specs_)}): pass hardware_id"
                )
            hardware_id = next(iter(self.hardware_specs_))
        if hardware_id not in self.hardware_specs_:
            raise InvalidInputError(
                f"`hardware_id` must be one the model was trained on {sorted(self.hardware_specs_)}, "
                f"but got {hardware_id!r}"
            )
        import json

        return config_frame(configs, json.loads(self.hardware_specs_[hardware_id]))

    def input_warnings(self, X: pd.DataFrame) -> list[str]:
        """One line per input column of ``X`` whose values lie outside what the training rows held
        (a text value never seen, a number far outside the trained range): trees answer there with
        the nearest trained value, so the prediction is a guess; for a kernel model also a tuning
        parameter's value no training row ran (``block_size_x=7`` where 16, 32, ... were recorded).
        Unseen text values (a dtype, a precision) come first. Empty for models fitted before
        ``input_columns_`` was kept."""
        out, unseen_text = [], []
        # A kernel's tuning parameters take a few recorded values (powers of two, multiples of a
        # warp); one never recorded, even inside the range, meets trees that never split there.
        tuning_space = row_kind(self.kind) == "kernel"
        for column, info in (getattr(self, "input_columns_", None) or {}).items():
            if column not in X or column in NEW_BY_DESIGN:
                continue
            given = X[column].dropna()
            if given.empty:
                continue
            if info["numeric"]:
                values = pd.to_numeric(given, errors="coerce").astype(float).dropna()
                outside = _far_outside(values.to_numpy(), info["min"], info["max"])
                far = values[outside]
                if len(far):
                    lo, hi = info["min"], info["max"]
                    one, many = ("differs", "differ") if lo == hi else ("lies", "lie")
                    shown = _shown_values(far, info.get("flag"))
                    verb = one if far.nunique() == 1 else many
                    trained = (f"{verb} from the one value the training rows hold, {lo:g}," if lo == hi
                               else f"{verb} far outside the training rows' {lo:g}..{hi:g}")
                    if info.get("flag"):  # a true/false input, as the user wrote it
                        trained = f"{verb} from the one value the training rows hold, {bool(lo)},"
                    out.append(f"{column}={shown} {trained} ({len(far)} row(s)): the prediction there "
                               "is an extrapolation")
                levels = info.get("levels")
                if tuning_space and column.startswith("config.") and levels and not info.get("flag"):
                    unseen = values[~outside & ~values.isin(levels)]
                    if len(unseen):
                        trained = ", ".join(f"{v:g}" for v in levels[:8]) + (", ..." if len(levels) > 8 else "")
                        out.append(f"{column}={_shown_values(unseen, False)} is not among the trained values "
                                   f"{trained} ({len(unseen)} row(s)): no training row ran it, so the "
                                   "prediction there is a guess")
            elif info["values"] is not None:
                unseen = sorted(set(given.astype(str)) - set(info["values"]))
                if unseen:
                    seen = ", ".join(info["values"][:6]) + (", ..." if len(info["values"]) > 6 else "")
                    unseen_text.append(f"{column}={unseen[0]!r} never occurs in the training rows (they hold "
                                       f"{seen}): the prediction there is a guess")
        if row_kind(self.kind) == "serving":  # a deployment no engine could start predicts all the same
            from perfpred.features._serving import deployment_warnings

            out = deployment_warnings(self._with_trained_specs(X)) + out
        reference = getattr(self, "reference_times_", None)
        if reference is not None and len(X):  # a config no reference GPU recorded gets their mean time
            missing = reference.features(X)["ref_missing_fraction"].to_numpy() >= 1
            if missing.any():
                out.append(f"reference times: {int(missing.sum())} of {len(X)} row(s) are configs none of the "
                           f"reference hardware ({', '.join(reference.hardware_ids)}) recorded: their reference "
                           "times are filled in from the references' means, so the prediction there is a guess")
        return unseen_text + out

    def predict_one(self, hardware_id: str | None = None, **config: Any) -> float:
        """Prediction for one config given as keywords, e.g. ``predict_one(m=512, n=512, k=512)``."""
        return float(self.predict(self.config_rows([config], hardware_id))[0])


# Inputs whose value is new by design: a serving model predicts LLMs it never saw from their size
# columns (the name itself is no feature), so an unseen name is no warning.
NEW_BY_DESIGN = frozenset({"workload.model"})
# Text values an input column's summary keeps (to warn on unseen ones); a column with more (an id,
# a free-form name) is not checked.
MAX_SEEN_VALUES = 200
# Distinct numbers a numeric input column's summary keeps as its ``levels`` (a tuning parameter's
# recorded values, to warn on one never run); a column with more (a size swept finely) keeps none.
MAX_LEVELS = 32


def _shown_values(values: pd.Series, flag: Any) -> str:
    """The distinct values of ``values`` as a warning names them (the first four)."""
    distinct = list(dict.fromkeys(values.tolist()))
    shown = [str(bool(v)) if flag else f"{v:g}" for v in distinct[:4]]
    return ", ".join(shown) + (", ..." if len(distinct) > 4 else "")


def input_summary(X: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """What the training rows held per ``config.*`` / ``workload.*`` column with any value: numbers
    (their min and max, and their distinct values where few: ``levels``) or text (its distinct
    values), and whether some rows lacked it. Kept by a
    fitted model so a prediction can name a missing or bad input column, and warn outside the data."""
    out: dict[str, dict[str, Any]] = {}
    for column in X.columns:
        if not column.startswith(("config.", "workload.")):
            continue
        col = X[column]
        given = pd.Series(col.dropna().unique())  # distinct values only: a fit pays little for this
        if given.empty:
            continue
        info: dict[str, Any] = {"missing": bool(col.isna().any()), "constant": bool(len(given) == 1)}
        # Numbers as stored, not text that parses as one: a source hash '15609950e788' is text.
        is_number = given.map(lambda v: isinstance(v, (int, float, np.number, np.bool_)))
        values = given.astype(float) if is_number.all() else None
        if values is not None:
            info.update(numeric=True, min=float(values.min()), max=float(values.max()),
                        flag=bool(pd.api.types.is_bool_dtype(col) or given.map(type).eq(bool).all()),
                        levels=sorted(set(values.tolist())) if len(values) <= MAX_LEVELS else None)
        else:
            seen = sorted(set(given.astype(str)))
            info.update(numeric=False, values=seen if len(seen) <= MAX_SEEN_VALUES else None)
        out[column] = info
    return out


def _far_outside(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Whether each value lies far from the trained range [lo, hi]: any other value where training
    saw one; beyond a factor of 2 of a positive range; else beyond one range width."""
    if lo == hi:
        return values != lo
    if lo > 0:
        return (values < lo / 2) | (values > hi * 2)
    return (values < lo - (hi - lo)) | (values > hi + (hi - lo))


def _check_random_state(random_state: Any) -> None:
    """``random_state`` must be a whole number (or None: the regressors' own default)."""
    if random_state is None:
        return
    if isinstance(random_state, (bool, np.bool_)) or not isinstance(random_state, (int, np.integer)):
        raise InvalidInputError(f"`random_state` must be an integer seed (or None), but got "
                                f"random_state={random_state!r}")


def positive_target(regressor: BaseEstimator) -> bool:
    """Whether ``regressor`` fits a positive target on a log scale (it can learn a ratio)."""
    tags = getattr(regressor, "__sklearn_tags__", None)
    return bool(tags and tags().target_tags.positive_only)


def _row_keys(X: pd.DataFrame, feats: pd.DataFrame) -> pd.Series:
    """One hash per row of its hardware id and feature values: equal rows, equal keys."""
    keyed = feats.reset_index(drop=True)
    if "hardware_id" in X:
        keyed = keyed.assign(_hardware_id=X["hardware_id"].astype(str).to_numpy())
    return pd.util.hash_pandas_object(keyed, index=False)
