"""Train a PerformanceModel on a table, report held-out error, and log it to MLflow."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
from sklearn.base import clone

from perfpred.datasets._splits import group_labels, workload_columns
from perfpred.errors import InvalidInputError
from perfpred.features import ReferenceTimes
from perfpred.models._evaluation import check_row_limits, data_hash, evaluate_models, training_frame
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
) -> TrainResult:
    """Score on a held-out split first (honest error), then refit on all rows and log.

    ``split=None``: ``shape`` (unseen workloads) where the rows hold more than one workload,
    else ``random`` (a kernel's tuning space recorded for one problem size). ``regressor=None``:
    :func:`default_regressor` of ``kind``. ``reference``: Measurements of the same kernel on OTHER
    hardware, whose time for each config becomes a feature (``PerformanceModel(reference=...)``):
    a new GPU learned from a few of its own measurements as a correction of the old ones;
    ``reference_mode`` says how (``PerformanceModel``)."""
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
    holdout = evaluate_models(rows, {regressor: template}, split=split, seeds=(seed,), target=target)[regressor]["mean"]
    model = clone(template).fit(rows)
    digest = data_hash(rows, target)
    hardware_ids = sorted(rows["hardware_id"].astype(str).unique())
    result = TrainResult(model=model, run_id=None, holdout=holdout, n_rows=len(rows), data_hash=digest,
                         hardware_ids=hardware_ids, split=split)
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
