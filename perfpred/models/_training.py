"""Train a PerformanceModel on a table, report held-out error, and log it to MLflow."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from sklearn.base import clone

from perfpred.datasets._splits import group_labels, workload_columns
from perfpred.errors import InvalidInputError
from perfpred.models._evaluation import data_hash, evaluate_models, training_frame
from perfpred.models._performance_model import PerformanceModel


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
    regressor: str = "xgb",
    target: str = "runtime_ms",
    split: str | None = "shape",
    seed: int = 0,
    max_ref_drift: float | None = None,
    reuse_measured: bool = False,
    log_to_mlflow: bool = True,
    registered_name: str | None = None,
    source: str = "",
) -> TrainResult:
    """Score on a held-out split first (honest error), then refit on all rows and log.

    ``split=None``: ``shape`` (unseen workloads) where the rows hold more than one workload,
    else ``random`` (a kernel's tuning space recorded for one problem size)."""
    rows = training_frame(df, kind=kind, target=target, max_ref_drift=max_ref_drift)
    if split is None:
        split = "shape" if has_workloads(rows) else "random"
    template = PerformanceModel(kind=kind, regressor=regressor, target=target, random_state=seed,
                                reuse_measured=reuse_measured)
    holdout = evaluate_models(rows, {regressor: template}, split=split, seeds=(seed,), target=target)[regressor]["mean"]
    model = clone(template).fit(rows)
    digest = data_hash(rows, target)
    hardware_ids = sorted(rows["hardware_id"].astype(str).unique())
    run_id = None
    if log_to_mlflow:
        from perfpred.models._tracking import log_training_run

        params: dict[str, Any] = {"kind": kind, "regressor": regressor, "target": target, "split": split,
                                  "seed": seed, "n_rows": len(rows), "max_ref_drift": max_ref_drift,
                                  "reuse_measured": reuse_measured,
                                  **{f"regressor.{k}": v for k, v in model.regressor_.get_params().items()
                                     if isinstance(v, (int, float, str, bool, type(None)))}}
        metrics = {f"holdout_{split}_{k}": v for k, v in holdout.items()}
        tags = {"data_hash": digest, "hardware_ids": ",".join(hardware_ids), "source": source}
        run_id = log_training_run(model, params=params, metrics=metrics, tags=tags, registered_name=registered_name)
    return TrainResult(model=model, run_id=run_id, holdout=holdout, n_rows=len(rows), data_hash=digest,
                       hardware_ids=hardware_ids, split=split)


def has_workloads(rows: pd.DataFrame) -> bool:
    """Whether ``rows`` hold more than one workload (what split='shape' holds out)."""
    try:
        return len(set(group_labels(rows, workload_columns(rows)))) >= 2
    except InvalidInputError:
        return False
