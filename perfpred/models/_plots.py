"""Predicted-vs-measured figures for held-out rows (``perfpred evaluate --plot``, benchmarks/evaluate_gemm.py)."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from perfpred.errors import InvalidInputError
from perfpred.models._metrics import mape
from perfpred.units import metric_label

PLOT_SUFFIXES = (".png", ".pdf", ".svg")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")


def check_plot_path(path: str | os.PathLike[str], option: str = "--plot") -> Path:
    """``path`` names a figure file matplotlib writes by its suffix (.png, .pdf, .svg)."""
    path = Path(path)
    if path.suffix.lower() not in PLOT_SUFFIXES:
        raise InvalidInputError(f"{option} must end in {', '.join(PLOT_SUFFIXES)}, but got {path.name!r}")
    return path


def holdout_predictions(df: pd.DataFrame, models: Mapping[str, Any], *, split: str = "random", seed: int = 0,
                        target: str = "runtime_ms", test_size: float = 0.2, train_size: int | None = None,
                        ) -> tuple[pd.DataFrame, dict[str, np.ndarray], str]:
    """Fit each model on one fold's training rows and predict its held-out rows: the fold
    ``evaluate_models`` scores first for this ``split`` and ``seed`` (for "hardware", the first
    hardware id left out). Returns (held-out rows, {model: predictions}, the fold's label).

    For a script that wants the figure alone (benchmarks/evaluate_gemm.py); where
    ``evaluate_models`` runs anyway, pass it ``keep_first_fold=True`` instead (no fit more)."""
    from perfpred.models._evaluation import FIRST_FOLD_KEY, evaluate_models

    first = evaluate_models(df, dict(models), split=split, seeds=(seed,), test_size=test_size, target=target,
                            train_size=train_size, keep_first_fold=True)[FIRST_FOLD_KEY]
    return first["test"], first["predictions"], first["label"]


def plot_predicted_vs_measured(measured: Sequence[float] | np.ndarray | pd.Series,
                               predictions: Mapping[str, Sequence[float] | np.ndarray],
                               path: str | os.PathLike[str], *, target: str = "runtime_ms",
                               title: str | None = None, dpi: int = 110) -> Path:
    """Save a log-log scatter of predicted against measured ``target`` to ``path``: one colour and
    marker per model, its MAPE on these rows in the legend, the y = x line dashed. Returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator

    from perfpred._plot_ticks import plain_number_ticks

    path = check_plot_path(path, "path")
    y = np.asarray(measured, dtype=float)
    if not len(y):
        raise InvalidInputError("a predicted-vs-measured plot needs at least one held-out row, but got 0")
    fig, ax = plt.subplots(figsize=(6, 5.5))
    colours = plt.get_cmap("tab10").colors
    shown = [y[(y > 0) & np.isfinite(y)]]
    for i, (name, pred) in enumerate(predictions.items()):
        pred = np.asarray(pred, dtype=float)
        if pred.shape != y.shape:
            raise InvalidInputError(f"model {name!r}: {len(pred)} predictions for {len(y)} measured rows")
        ok = np.isfinite(pred) & (pred > 0) & np.isfinite(y) & (y > 0)
        shown.append(pred[ok])
        ax.scatter(y[ok], pred[ok], s=14, marker=MARKERS[i % len(MARKERS)], color=colours[i % len(colours)],
                   alpha=0.55, linewidths=0.3, label=f"{name} (MAPE {mape(y[ok], pred[ok]):.1f}%)")
    values = np.concatenate(shown)
    lo, hi = float(values.min()), float(values.max())
    pad = max(1.05, (hi / lo) ** 0.04)
    lims = [lo / pad, hi * pad]
    ax.plot(lims, lims, "k--", lw=0.8, label="y = x (perfect prediction)")
    label = metric_label(target)
    ax.set(xscale="log", yscale="log", xlim=lims, ylim=lims, xlabel=f"measured {label}",
           ylabel=f"predicted {label}")
    ax.set_title("\n".join(textwrap.wrap(title or f"predicted vs measured ({len(y)} held-out rows)", 60)), fontsize=11)
    if hi / lo < 100:  # under two decades: plain numbers at 1, 2, 3, 5 x 10^k, not "2 x 10^2"
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_minor_locator(LogLocator(subs=(2, 3, 5)))
            plain_number_ticks(axis, minor_leading=None)
        ax.grid(True, which="minor", lw=0.3, alpha=0.4)
    ax.set_aspect("equal")
    ax.grid(True, which="major", lw=0.4, alpha=0.5)
    ax.legend(loc="upper left", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
