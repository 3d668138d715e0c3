"""Evaluate XGBoost vs the GPPerf RandomForest vs plain roofline on a GEMM store."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from perfpred.datasets import MeasurementStore, make_split
from perfpred.models import PerformanceModel, evaluate_models, training_frame

SEEDS = (0, 1, 2, 3, 4)
MODELS = ("xgb", "rf", "roofline")
TARGET_XGB_SHAPE_MAPE_PCT = 8.0
TARGET_RF_OVER_XGB = 2.0


def noise_summary(df) -> dict:
    """How noisy the measurements themselves were (the floor any predictor sits on)."""
    ref = df["ref_runtime_ms"].astype(float)
    return {
        "median_cv": float(df["cv"].median()),
        "p90_cv": float(df["cv"].quantile(0.9)),
        "median_timing_rel_ci": float(df["metric.timing_rel_ci"].median()) if "metric.timing_rel_ci" in df else None,
        "reference_gemm_ms_median": float(ref.median()),
        "reference_gemm_drift_p90_pct": float(((ref / ref.median() - 1).abs() * 100).quantile(0.9)),
        "load_avg_1m_median": float(df["load_avg_1m"].median()),
    }


def evaluate_store(store: MeasurementStore) -> dict:
    df = training_frame(store.load(), kind="gemm")
    models = {name: PerformanceModel(kind="gemm", regressor=name) for name in MODELS}
    out: dict = {
        "store_rows": len(df),
        "hardware_ids": sorted(df["hardware_id"].unique()),
        "dtypes": sorted(df["workload.dtype"].unique()),
        "size_range": [int(df[[f"workload.{c}" for c in "mnk"]].min().min()),
                       int(df[[f"workload.{c}" for c in "mnk"]].max().max())],
        "threads": sorted(int(t) for t in df["config.threads"].unique()),
        "seeds": list(SEEDS),
        "noise": noise_summary(df),
        "splits": {},
    }
    for split in ("random", "shape"):
        res = evaluate_models(df, models, split=split, seeds=SEEDS)
        out["splits"][split] = {name: {"mean": res[name]["mean"],
                                       "mape_pct_per_seed": [f["mape_pct"] for f in res[name]["folds"]]}
                                for name in MODELS}
    shape = out["splits"]["shape"]
    xgb_mape = shape["xgb"]["mean"]["mape_pct"]
    rf_ratio = shape["rf"]["mean"]["mape_pct"] / xgb_mape
    out["targets"] = {
        "xgb_shape_mape_pct": xgb_mape,
        "xgb_shape_mape_target_pct": TARGET_XGB_SHAPE_MAPE_PCT,
        "xgb_shape_mape_met": bool(xgb_mape <= TARGET_XGB_SHAPE_MAPE_PCT),
        "rf_over_xgb_mape_ratio": float(rf_ratio),
        "rf_over_xgb_target": TARGET_RF_OVER_XGB,
        "rf_over_xgb_met": bool(rf_ratio >= TARGET_RF_OVER_XGB),
        "xgb_shape_mape_worst_seed_pct": float(np.max(shape["xgb"]["mape_pct_per_seed"])),
    }
    out["plot"] = plot_holdout(df, Path(__file__).resolve().parent / "results" / "cpu_gemm_holdout.png")
    return out


def plot_holdout(df, path: Path) -> str:
    """Predicted vs measured on one unseen-shape split, for all three models."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train_idx, test_idx = make_split(df, "shape", seed=0)
    train, test = df.iloc[train_idx], df.iloc[test_idx]
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, marker in zip(MODELS, ("o", "s", "^"), strict=True):
        pred = PerformanceModel(kind="gemm", regressor=name).fit(train).predict(test)
        ax.scatter(test["runtime_ms"], pred, s=12, marker=marker, alpha=0.6, label=name)
    lims = [test["runtime_ms"].min() / 2, test["runtime_ms"].max() * 2]
    ax.plot(lims, lims, "k--", lw=0.8)
    ax.set(xscale="log", yscale="log", xlim=lims, ylim=lims, xlabel="measured runtime (ms)",
           ylabel="predicted runtime (ms)", title=f"CPU GEMM, unseen shapes ({len(test)} rows)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name
