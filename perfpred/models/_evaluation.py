"""Honest error figures: fit on the training split only, score on held-out rows only."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone

from perfpred.datasets import leave_one_group_out, make_split
from perfpred.datasets._schema import FIXED_COLUMNS
from perfpred.errors import InvalidInputError
from perfpred.models._metrics import regression_report
from perfpred.models._performance_model import PerformanceModel, row_kind

FIRST_FOLD_KEY = "_first_fold"
"""``evaluate_models(..., keep_first_fold=True)``'s key for its first fold's rows and predictions."""


def training_frame(df: pd.DataFrame, *, kind: str = "gemm", target: str = "runtime_ms",
                   max_ref_drift: float | None = None) -> pd.DataFrame:
    """Rows usable for training: this kind, status ok, a positive target (for serving TPOTs, one
    that timed decoding, not a burst: ``timed_decoding``).

    ``kind`` names the features; a variant ("kernel-occupancy", "gemm-gpu", "serving-attention")
    takes the rows of the kind it extends.

    ``max_ref_drift`` drops rows measured while the machine was noisy: those whose reference
    config time deviates from its median by more than this fraction (e.g. 0.25).
    """
    if not isinstance(df, pd.DataFrame):
        raise InvalidInputError(f"training_frame takes a pandas DataFrame of Measurements, but got "
                                f"{type(df).__name__}")
    if df.empty:
        raise InvalidInputError("the Measurement table is empty: collect or import something first")
    lacking = [c for c in ("kind", "status") if c not in df.columns]
    if lacking:
        raise InvalidInputError(f"a Measurement table needs the column(s) {lacking} (which rows are '{row_kind(kind)}' "
                                f"rows, which ran ok), but this table lacks them")
    rows = df[(df["kind"] == row_kind(kind)) & (df["status"] == "ok")]
    if target not in rows:
        if target in FIXED_COLUMNS:  # a store drops the columns no row has a value in
            raise InvalidInputError(f"target column '{target}' has no values: every row of the table leaves it "
                                    "empty (e.g. power_w/energy_j without a power sensor)")
        raise InvalidInputError(f"target column '{target}' is not in the table (columns: {sorted(df.columns)[:12]}...)")
    values = pd.to_numeric(rows[target], errors="coerce")
    text = rows[target].notna() & values.isna()
    if text.any():
        raise InvalidInputError(f"the target must be a numeric column, but '{target}' holds text, e.g. "
                                f"{rows.loc[text, target].iloc[0]!r}")
    if len(rows) and rows[target].isna().all():
        raise InvalidInputError(f"target column '{target}' has no values in the {len(rows)} '{row_kind(kind)}' rows "
                                "with status ok")
    values = values.astype(float)
    rows = rows[np.isfinite(values) & (values > 0)]
    if row_kind(kind) == "serving":
        from perfpred.collect.serving import timed_decoding

        rows = rows[timed_decoding(target, rows[target])]  # a TPOT that timed a burst is no decode pace
    if max_ref_drift is not None and "ref_runtime_ms" in rows and rows["ref_runtime_ms"].notna().any():
        ref = rows["ref_runtime_ms"].astype(float)
        drift = (ref / ref.median() - 1).abs()
        rows = rows[drift.isna() | (drift <= max_ref_drift)]
    if len(rows) < 10:
        raise InvalidInputError(f"training needs >= 10 usable '{row_kind(kind)}' rows with {target}, "
                                f"but got {len(rows)}")
    # Columns only other rows fill (another kernel's parameters in a store of several): as
    # features they are all-missing, and a model that kept them asked every prediction for them.
    return rows.dropna(axis=1, how="all").reset_index(drop=True)


def check_row_limits(models: dict[str, PerformanceModel], n_rows: int, what: str) -> None:
    """Refuse, before any fit, a regressor that caps its table (the exact GP's ``max_train_rows``)
    given more rows: it would fail only after the fits before it had run for minutes."""
    for name, model in models.items():
        make = getattr(model, "make_regressor", None)
        limit = getattr(make(), "max_train_rows", None) if make is not None else None
        if limit is not None and n_rows > limit:
            raise InvalidInputError(f"`rows <= max_train_rows` must hold for regressor {name!r} (its time grows as "
                                    f"rows^3), but {what} has {n_rows} rows > {limit}: use a tree model "
                                    "(xgb, deep-trees) or fewer rows")


def data_hash(df: pd.DataFrame, target: str = "runtime_ms") -> str:
    """Content hash of what a model was trained on (ids and target values, order-free)."""
    cols = [c for c in ("measurement_id", target) if c in df]
    payload = df[cols].astype(str).agg("|".join, axis=1).sort_values().str.cat(sep="\n")
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _score(model: PerformanceModel, train: pd.DataFrame, test: pd.DataFrame, target: str,
           coverage: float | None = None) -> dict[str, Any]:
    return _score_predictions(model, train, test, target, coverage)[0]


def _score_predictions(model: PerformanceModel, train: pd.DataFrame, test: pd.DataFrame, target: str,
                       coverage: float | None = None) -> tuple[dict[str, Any], np.ndarray]:
    """``_score``'s figures, and the predictions on ``test`` they were computed from."""
    t0 = time.perf_counter()
    model.fit(train, train[target])
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred = np.asarray(model.predict(test), dtype=float)
    predict_s = time.perf_counter() - t0
    missing = ~np.isfinite(pred)
    if missing.any():  # a metric over NaN is a traceback deep in scikit-learn; say which model and why
        raise InvalidInputError(f"regressor {model.regressor!r} gives no finite prediction for {int(missing.sum())} of "
                                f"{len(pred)} held-out {model.kind!r} rows (roofline needs a FLOP count and peaks, "
                                "which these rows lack?): leave it out of --models")
    report = regression_report(test[target].to_numpy(float), pred)
    if coverage is not None:
        report.update(_band_report(model, test, target, pred, coverage))
    return {**report, "fit_s": fit_s, "predict_s": predict_s, "n_train": len(train)}, pred


def _band_report(model: PerformanceModel, test: pd.DataFrame, target: str, pred: np.ndarray,
                 coverage: float) -> dict[str, float]:
    """For a fitted model with predictive intervals: the share of held-out rows inside its
    ``coverage`` band (in %) and the band's mean width relative to the prediction; else nothing."""
    if not getattr(model, "has_intervals", False) or getattr(model, "reference_mode_", None) == "linear":
        return {}
    band = model.predict_interval(test, coverage=coverage)
    y = test[target].to_numpy(float)
    lower, upper = band["lower"].to_numpy(float), band["upper"].to_numpy(float)
    return {"interval_coverage_pct": float(np.mean((y >= lower) & (y <= upper)) * 100),
            "interval_width_rel": float(np.mean((upper - lower) / pred))}


def evaluate_models(
    df: pd.DataFrame,
    models: dict[str, PerformanceModel],
    *,
    split: str = "random",
    seeds: Sequence[int] = (0,),
    test_size: float = 0.2,
    target: str = "runtime_ms",
    group_columns: Sequence[str] | None = None,
    train_size: int | None = None,
    coverage: float | None = None,
    keep_first_fold: bool = False,
) -> dict[str, Any]:
    """Score each model under ``split`` ("random", "shape", "hardware"), averaged over seeds.
    ``seeds``: one split per seed (at least one; ignored by "hardware", whose folds are the
    hardware ids). ``train_size`` (random split): train on that many rows, test on all the others.
    ``coverage`` (e.g. 0.9): a model with predictive intervals is also scored on its band of that
    coverage: ``interval_coverage_pct`` (held-out rows inside it) and ``interval_width_rel`` (its
    mean width over the prediction).

    Returns {model name: {"mean": metrics averaged over folds, "folds": [...]}}. With
    ``keep_first_fold``, also ``FIRST_FOLD_KEY``: the first fold scored (the first seed's; for
    "hardware", the first hardware id left out) as {"fold": its label in "folds", "label": the same
    for a title ("seed 0", "<hardware id> held out"), "test": its held-out rows, "predictions":
    {model name: the very predictions scored on them}}, so a plot needs no fit of its own.
    """
    if not isinstance(models, Mapping):
        raise InvalidInputError(f"`models` must be a dict of name -> PerformanceModel, but got {type(models).__name__}")
    if isinstance(seeds, (int, np.integer)) and not isinstance(seeds, (bool, np.bool_)):
        seeds = (int(seeds),)  # one seed given alone
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Iterable):
        raise InvalidInputError(f"`seeds` must be a list of integer seeds, but got seeds={seeds!r}")
    seeds = list(seeds)
    if not seeds and split != "hardware":
        raise InvalidInputError("`seeds` must hold at least one seed (one split per seed), but got seeds=()")
    wrong = next((s for s in seeds if isinstance(s, (bool, np.bool_)) or not isinstance(s, (int, np.integer))), None)
    if wrong is not None:
        raise InvalidInputError(f"`seeds` must hold integer seeds, but got {wrong!r}")
    if coverage is not None and not (isinstance(coverage, (int, float)) and 0 < coverage < 1):
        raise InvalidInputError(f"`0 < coverage < 1` must hold, but got coverage={coverage!r}")
    results: dict[str, Any] = {name: {"folds": []} for name in models}
    folds: list[tuple[str, np.ndarray, np.ndarray]] = []
    titles: list[str] = []
    if split == "hardware":
        if train_size is not None:
            raise InvalidInputError("`train_size` needs split='random', but got split='hardware'")
        folds = list(leave_one_group_out(df, "hardware_id"))
        titles = [f"{label} held out" for label, _, _ in folds]
    else:
        for seed in seeds:
            tr, te = make_split(df, split, test_size=test_size, seed=seed, group_columns=group_columns,
                                train_size=train_size)
            folds.append((f"seed={seed}", tr, te))
            titles.append(f"seed {seed}")
    check_row_limits(models, max(len(tr) for _, tr, _ in folds), "the largest training split")
    first: dict[str, Any] | None = None
    for i, (label, tr, te) in enumerate(folds):
        train, test = df.iloc[tr], df.iloc[te]
        if keep_first_fold and i == 0:
            first = {"fold": label, "label": titles[0], "test": test, "predictions": {}}
        for name, model in models.items():
            fold, pred = _score_predictions(clone(model), train, test, target, coverage)
            results[name]["folds"].append({"fold": label, **fold})
            if first is not None and i == 0:
                first["predictions"][name] = pred
    for name in models:
        fold_list = results[name]["folds"]
        keys = [k for k, v in fold_list[0].items() if isinstance(v, (int, float)) and k != "fold"]
        results[name]["mean"] = {k: float(np.mean([f[k] for f in fold_list])) for k in keys}
    if first is not None:
        results[FIRST_FOLD_KEY] = first
    return results
