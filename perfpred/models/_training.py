"""Train a PerformanceModel on a table, report held-out error, and log it to MLflow."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone

from perfpred.datasets import leave_one_group_out, make_split
from perfpred.datasets._splits import configuration_labels, group_labels, workload_columns
from perfpred.errors import InvalidInputError
from perfpred.features import ReferenceTimes
from perfpred.models import _evaluation

# evaluate_models: kept importable from here, where tests patch the held-out fit (now held_out_scores,
# whose folds are scored by _evaluation._score).
from perfpred.models._evaluation import check_row_limits, data_hash, evaluate_models, training_frame  # noqa: F401
from perfpred.models._metrics import ape
from perfpred.models._performance_model import PerformanceModel, row_kind

# The learner ``train_model`` uses when none is named, by the kind of rows it reads. A kernel's
# rows are usually a measured tuning space, whose run times jump between neighbouring configs:
# deep trees follow those steps where depth-3 XGBoost smooths them. ``perfpred train --split
# random`` (seed 0), XGBoost -> deep-trees: Kernel Tuner GEMM on the RTX 3090 7.30% -> 1.26%
# MAPE (fit 0.7 s -> 41 s on 14,364 rows), convolution on the A6000 9.06% -> 3.50% (0.2 s -> 8 s
# on 3,111); UCI SGEMM's 2,000 training rows 11.3% -> 10.4% by 4-fold CV (benchmarks/accuracy.py).
# On a noisy CPU recording (this machine's Jacobi-2D, 400 sampled configs) the two are level:
# 12.0% / 12.4% at 80/20, 27.1% / 26.3% trained on 10% (3 seeds). Elsewhere XGBoost (CPU GEMM
# shapes: 4.72% on unseen shapes).
DEFAULT_REGRESSORS = {"kernel": "deep-trees"}


def default_regressor(kind: str) -> str:
    """The regressor ``train_model`` and ``perfpred train`` use for ``kind`` when none is named."""
    return DEFAULT_REGRESSORS.get(row_kind(kind), "xgb")


def default_comparison(kind: str) -> list[str]:
    """The regressors ``perfpred evaluate`` compares for ``kind`` when none are named: the default
    one, XGBoost and GPPerf's forest, and the roofline baseline where rows have what it needs (a
    GEMM's FLOP count and the hardware's peaks)."""
    first = default_regressor(kind)
    names = list(dict.fromkeys([first, "xgb", "rf"]))
    return [*names, "roofline"] if row_kind(kind) == "gemm" else names


@dataclass
class TrainResult:
    model: PerformanceModel
    run_id: str | None
    holdout: dict[str, float]
    n_rows: int
    data_hash: str
    hardware_ids: list[str] = field(default_factory=list)
    split: str = "shape"  # the held-out split the error was scored on
    target: str = "runtime_ms"
    n_kind_rows: int = 0  # the table's rows of the kind trained on, before the unusable ones were left out
    left_out: dict[str, int] = field(default_factory=dict)  # why rows of that kind were not trained on: count
    # What rebuilds the run: the rows trained on (measurement_id, timestamp, hardware_id, target),
    # logged as training_rows.parquet, and the --reference store's path where one was given.
    training_rows: pd.DataFrame | None = None
    reference_source: str | None = None


def left_out_rows(df: pd.DataFrame, *, kind: str, target: str, max_ref_drift: float | None,
                  n_used: int) -> tuple[int, dict[str, int]]:
    """How many of ``df``'s rows are of ``kind``'s row kind, and why the ones ``training_frame``
    did not keep (``n_used`` kept) were left out: reason -> count, in training_frame's order."""
    import numpy as np

    if "kind" not in df or "status" not in df:
        return n_used, {}
    rows = df[df["kind"] == row_kind(kind)]
    reasons: dict[str, int] = {}

    def drop(keep: pd.Series | np.ndarray, reason: str) -> pd.DataFrame:
        keep = np.asarray(keep, dtype=bool)
        if (~keep).sum():
            reasons[reason] = reasons.get(reason, 0) + int((~keep).sum())
        return rows[keep]

    if (rows["status"] != "ok").any():
        failed = rows.loc[rows["status"] != "ok", "status"].value_counts()
        rows = drop(rows["status"] == "ok", "status not ok (" + ", ".join(f"{s} {n}" for s, n in failed.items()) + ")")
    values = pd.to_numeric(rows[target], errors="coerce") if target in rows else pd.Series(np.nan, index=rows.index)
    rows = drop(values.notna(), f"no {target} value")
    values = values[values.notna()].astype(float)
    rows = drop(np.isfinite(values) & (values > 0), f"{target} not a positive number")
    if row_kind(kind) == "serving" and len(rows):
        from perfpred.collect.serving import timed_decoding

        rows = drop(timed_decoding(target, rows[target]), f"{target} timed a burst, not decoding")
    if max_ref_drift is not None and "ref_runtime_ms" in rows and rows["ref_runtime_ms"].notna().any():
        ref = rows["ref_runtime_ms"].astype(float)
        drift = (ref / ref.median() - 1).abs()
        rows = drop(drift.isna() | (drift <= max_ref_drift), f"reference GEMM drifted > {max_ref_drift:g}")
    n_kind = len(df[df["kind"] == row_kind(kind)])
    other = n_kind - n_used - sum(reasons.values())
    if other > 0:  # a rule of training_frame's this count does not follow
        reasons["other"] = other
    return n_kind, reasons


def train_model(
    df: pd.DataFrame,
    *,
    kind: str = "gemm",
    regressor: str | None = None,
    target: str = "runtime_ms",
    split: str | None = "shape",
    seed: int = 0,
    max_ref_drift: float | None = None,
    reuse_measured: bool = False,
    log_to_mlflow: bool = True,
    registered_name: str | None = None,
    source: str = "",
    reference: pd.DataFrame | ReferenceTimes | None = None,
    reference_mode: str = "features",
    reference_source: str | None = None,
) -> TrainResult:
    """Score on a held-out split first (honest error), then refit on all rows and log.

    ``split=None``: ``shape`` (unseen workloads) where the rows hold more than one workload,
    else ``random`` (a kernel's tuning space recorded for one problem size). ``regressor=None``:
    :func:`default_regressor` of ``kind``. ``reference``: Measurements of the same kernel on OTHER
    hardware, whose time for each config becomes a feature (``PerformanceModel(reference=...)``):
    a new GPU learned from a few of its own measurements as a correction of the old ones;
    ``reference_mode`` says how (``PerformanceModel``); ``reference_source``: where it was read
    from (a store path), logged with the run.

    ``holdout`` holds the held-out metrics (``regression_report``, fit and predict seconds,
    ``n_train``), ``n_test`` (the rows scored) and ``mape_pct_ci90_low`` / ``mape_pct_ci90_high``:
    a seeded bootstrap 90% interval of the MAPE over the held-out rows (over held-out workloads
    for ``split="shape"``), which says how far a MAPE scored on few rows can be trusted; left out
    where fewer than 5 workloads were held out (too few for an interval)."""
    regressor = regressor or default_regressor(kind)
    rows = training_frame(df, kind=kind, target=target, max_ref_drift=max_ref_drift)
    if split is None:
        split = "shape" if has_workloads(rows) else "random"
    if isinstance(reference, pd.DataFrame):
        # The model keeps its reference inside: the log times per config (3.5 MB for two recorded
        # GEMM spaces), not the recordings' every column (a 47 MB model), and the held-out fits
        # share the one lookup.
        reference = ReferenceTimes.for_rows(reference, rows, target=target)
    template = PerformanceModel(kind=kind, regressor=regressor, target=target, random_state=seed,
                                reuse_measured=reuse_measured, reference=reference, reference_mode=reference_mode)
    check_row_limits({regressor: template}, len(rows), "the final fit on every row")
    holdout = held_out_scores(rows, template, split=split, seed=seed, target=target)
    model = clone(template).fit(rows)
    digest = data_hash(rows, target)
    hardware_ids = sorted(rows["hardware_id"].astype(str).unique())
    n_kind_rows, left_out = left_out_rows(df, kind=kind, target=target, max_ref_drift=max_ref_drift, n_used=len(rows))
    result = TrainResult(model=model, run_id=None, holdout=holdout, n_rows=len(rows), data_hash=digest,
                         hardware_ids=hardware_ids, split=split, target=target, n_kind_rows=n_kind_rows,
                         left_out=left_out, training_rows=training_row_ids(rows, target),
                         reference_source=None if reference_source is None else str(reference_source))
    if log_to_mlflow:
        from perfpred.models._tracking import log_train_result

        result.run_id = log_train_result(result, registered_name=registered_name, max_ref_drift=max_ref_drift,
                                         source=source)
    return result


def has_workloads(rows: pd.DataFrame) -> bool:
    """Whether ``rows`` hold more than one workload (what split='shape' holds out)."""
    try:
        return len(set(group_labels(rows, workload_columns(rows)))) >= 2
    except InvalidInputError:
        return False


TRAINING_ROW_COLUMNS = ("measurement_id", "timestamp", "hardware_id")
BOOTSTRAP_RESAMPLES = 2000
MIN_BOOTSTRAP_UNITS = 5  # fewer held-out workloads give no interval (see bootstrap_mape_interval)


def training_row_ids(rows: pd.DataFrame, target: str) -> pd.DataFrame | None:
    """What names each training row in its store (id, timestamp, hardware) and its target value:
    the run's ``training_rows.parquet``. None for a table without measurement ids."""
    if "measurement_id" not in rows:
        return None
    out = pd.DataFrame({c: rows[c].astype(str) for c in TRAINING_ROW_COLUMNS if c in rows})
    if target in rows:
        out[target] = pd.to_numeric(rows[target], errors="coerce").astype(float)
    return out.reset_index(drop=True)


def held_out_scores(rows: pd.DataFrame, template: Any, *, split: str, seed: int, target: str,
                    test_size: float = 0.2, coverage: float = 0.9) -> dict[str, float]:
    """``evaluate_models``' figures of one model and seed (averaged over the folds: one held-out
    split, or one fold per hardware id for ``split="hardware"``), plus ``n_test`` and a seeded
    bootstrap ``coverage`` interval of the MAPE (``mape_pct_ci90_low`` / ``_high`` at 0.9; left out
    where too few workloads were held out for one: :func:`bootstrap_mape_interval`)."""
    if split == "hardware":
        folds = [(tr, te) for _, tr, te in leave_one_group_out(rows, "hardware_id")]
    else:
        tr, te = make_split(rows, split, test_size=test_size, seed=seed)
        folds = [(tr, te)]
    check_row_limits({str(template.regressor): template}, max(len(tr) for tr, _ in folds),
                     "the largest training split")
    reports, errors, by_workload = [], [], False
    for tr, te in folds:
        train, test = rows.iloc[tr], rows.iloc[te]
        model = clone(template)
        # evaluate_models' scoring of one fold (fit, predict, metrics, times), on a model kept here:
        # predicting its held-out rows again (a fraction of the fit's time) gives each row's error.
        reports.append(_evaluation._score(model, train, test, target))
        pred = np.asarray(model.predict(test), dtype=float)
        units, workloads = _bootstrap_units(test, split)
        by_workload = by_workload or workloads
        errors.append((ape(test[target].to_numpy(float), pred), units))
    keys = [k for k, v in reports[0].items() if isinstance(v, (int, float))]
    mean = {k: float(np.mean([r[k] for r in reports])) for k in keys}
    low, high = bootstrap_mape_interval(errors, seed=seed, coverage=coverage, whole_units=by_workload)
    label = f"ci{round(coverage * 100)}"
    out: dict[str, float] = {}
    for key, value in mean.items():
        out[key] = value
        if key == "mape_pct" and np.isfinite(low) and np.isfinite(high):  # none from too few held-out workloads
            out[f"mape_pct_{label}_low"], out[f"mape_pct_{label}_high"] = low, high
    out["n_test"] = float(sum(len(e) for e, _ in errors))
    return out


def _bootstrap_units(test: pd.DataFrame, split: str) -> tuple[np.ndarray, bool]:
    """What the bootstrap resamples, and whether those are held-out workloads: the workloads for
    a shape split (their rows err together), a configuration's repeats together, else single rows."""
    if split == "shape":
        try:
            return group_labels(test, workload_columns(test)), True
        except InvalidInputError:
            pass
    repeats = configuration_labels(test)
    return (np.asarray(repeats) if repeats is not None else np.arange(len(test))), False


def bootstrap_mape_interval(folds: list[tuple[np.ndarray, np.ndarray]], *, seed: int = 0, coverage: float = 0.9,
                            resamples: int = BOOTSTRAP_RESAMPLES, whole_units: bool = False) -> tuple[float, float]:
    """A percentile bootstrap ``coverage`` interval of the MAPE (mean of the folds' MAPEs, as the
    held-out figure is): each fold's (absolute % errors, unit labels) resampled by unit with
    replacement (units: ``_bootstrap_units``), seeded. Where a fold has fewer than
    ``MIN_BOOTSTRAP_UNITS`` units, its single rows are resampled instead; with ``whole_units``
    (the units are held-out workloads, whose rows err together and would give a falsely narrow
    interval) there is no interval then: ``(nan, nan)``."""
    rng = np.random.default_rng(seed)
    stats = np.zeros(resamples)
    for errors, units in folds:
        errors = np.asarray(errors, dtype=float)
        _, inverse = np.unique(np.asarray(units), return_inverse=True)
        if inverse.max(initial=0) + 1 < MIN_BOOTSTRAP_UNITS:  # too few units to resample
            if whole_units:
                return float("nan"), float("nan")
            inverse = np.arange(len(errors))  # the rows themselves
        sums = np.bincount(inverse, weights=errors)
        counts = np.bincount(inverse).astype(float)
        n_units = len(sums)
        chunk = max(1, 2_000_000 // n_units)  # bounded memory: ~16 MB of indices at a time
        fold_stats = np.empty(resamples)
        for start in range(0, resamples, chunk):
            picks = rng.integers(0, n_units, size=(min(chunk, resamples - start), n_units))
            fold_stats[start:start + len(picks)] = sums[picks].sum(axis=1) / counts[picks].sum(axis=1)
        stats += fold_stats / len(folds)
    tail = (1 - coverage) / 2 * 100
    low, high = np.percentile(stats, [tail, 100 - tail])
    return float(low), float(high)
