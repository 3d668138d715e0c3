"""The picture of a multi-objective run: what was predicted, what was measured, the front.

The first two objectives span the axes (log scales: performance quantities span decades).
Grey dots are the last round's predictions for configs never measured; each measured config
is a filled dot (a cross if it broke an SLO or failed) joined by a thin line to the hollow
marker of what the predictor expected when it was picked; the measured feasible front is
the highlighted staircase (stars only with 3+ objectives, whose front is no 2-D staircase of the
first two); a known true front (a replayed complete space) is dashed. An SLO on
either axis's metric is a dotted red line at its bound, the side that breaks it lightly shaded.
The title says what was tuned where (the result's ``description``), how many evaluations, and
the hypervolume with the reference point it is measured against.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from perfpred._plot_ticks import plain_number_ticks
from perfpred.errors import InvalidInputError
from perfpred.units import metric_label


def _staircase(ax: Any, points: np.ndarray, directions: list[str], **style: Any) -> None:
    """Draw a 2-D front as steps, sorted along the first objective."""
    if len(points) == 0:
        return
    order = np.argsort(points[:, 0] * (1 if directions[0] == "minimize" else -1))
    ax.step(points[order, 0], points[order, 1], where="post", **style)


def _measured_mask(pred: pd.DataFrame, hist: pd.DataFrame) -> np.ndarray:
    """Which predicted candidates the history measured, matched on their parameters. A
    :class:`ParetoResult` sets ``measured`` itself (the last round's picks included), which this
    agrees with; matching on the history keeps a result built elsewhere, whose flags may be stale
    or missing, from drawing a measured config as "predicted, not measured". The flags are used
    where the history lacks the parameters."""
    params = [c for c in pred.columns if not c.startswith("predicted_") and c not in ("p_feasible", "measured")]
    if not params or any(c not in hist for c in params):
        return pred["measured"].to_numpy(dtype=bool) if "measured" in pred else np.zeros(len(pred), dtype=bool)
    done = set(zip(*(hist[c].tolist() for c in params), strict=True))
    return np.array([key in done for key in zip(*(pred[c].tolist() for c in params), strict=True)], dtype=bool)


def _number(value: float) -> str:
    return f"{value:.4g}"


def _stats_line(result: Any, n_evaluations: int) -> str:
    """Evaluations and the hypervolume with its reference point (every objective's, raw units)."""
    line = f"{n_evaluations} evaluation{'' if n_evaluations == 1 else 's'}"
    reference = getattr(result, "reference_point", None)
    if not len(result.front) or reference is None:
        return f"{line}; no feasible config measured, so no hypervolume"
    names = [o.metric.removeprefix("metric.") for o in result.objectives]
    point = ", ".join(f"{n} {_number(r)}" for n, r in zip(names, reference, strict=True))
    return f"{line}; hypervolume {_number(result.hypervolume)} (reference point: {point})"


def _draw_slos(ax: Any, constraints: list[Any], x: str, y: str) -> list[Any]:
    """A dotted line at each bound on an axis's metric, the infeasible side shaded; the constraints
    on neither axis are returned (for a note)."""
    off_axes = []
    shaded = False
    for c in constraints:
        if c.metric not in (x, y):
            off_axes.append(c)
            continue
        vertical = c.metric == x
        get_lim, set_lim = (ax.get_xlim, ax.set_xlim) if vertical else (ax.get_ylim, ax.set_ylim)
        lo, hi = get_lim()
        lo, hi = min(lo, c.bound / 1.2), max(hi, c.bound * 1.2)  # the bound in view
        set_lim(lo, hi)
        line = ax.axvline if vertical else ax.axhline
        span = ax.axvspan if vertical else ax.axhspan
        line(c.bound, c="tab:red", ls=":", lw=1.4, zorder=3, label=f"SLO {c.metric} {c.op} {c.bound:g}")
        start, end = (c.bound, hi) if c.op == "<=" else (lo, c.bound)
        span(start, end, color="tab:red", alpha=0.07, lw=0, zorder=0,
             label=None if shaded else "breaks the SLO (shaded)")
        shaded = True
        text = f"{c.op} {c.bound:g}"
        if vertical:
            ax.annotate(text, (c.bound, 1.0), xycoords=("data", "axes fraction"), xytext=(2, -2),
                        textcoords="offset points", ha="left", va="top", fontsize=7, color="tab:red")
        else:
            ax.annotate(text, (1.0, c.bound), xycoords=("axes fraction", "data"), xytext=(-2, 2),
                        textcoords="offset points", ha="right", va="bottom", fontsize=7, color="tab:red")
        set_lim(lo, hi)
    return off_axes


def plot_pareto(result: Any, path: str | os.PathLike[str], *, true_front: pd.DataFrame | None = None,
                title: str | None = None) -> Path:
    """Save the plot of a :class:`ParetoResult` to ``path`` (PNG); returns the path.

    ``title``: what was tuned on which hardware or dataset (default: the result's ``description``);
    the evaluations and the hypervolume with its reference point follow it. ``true_front`` (default:
    the result's ``true_front``, known where a replay holds every candidate) is drawn dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    objectives = result.objectives
    if len(objectives) < 2:
        raise InvalidInputError(f"a Pareto plot needs at least 2 objectives, but the run has {len(objectives)}")
    x, y = objectives[0].metric, objectives[1].metric
    directions = [objectives[0].direction, objectives[1].direction]
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    pred = result.predictions
    # Every evaluation of the study, as the front is the study's (a resumed run's own history may be empty).
    hist = result.history if getattr(result, "study_history", None) is None else result.study_history
    if pred is not None and f"predicted_{x}" in pred and f"predicted_{y}" in pred:
        unmeasured = pred[~_measured_mask(pred, hist)]
        ax.scatter(unmeasured[f"predicted_{x}"], unmeasured[f"predicted_{y}"], s=12, c="0.75",
                   label="predicted, not measured")
    if len(hist) and x in hist and y in hist:
        ok = hist[x].notna() & hist[y].notna()
        feasible = hist["feasible"].astype(bool) & ok
        for _, row in hist[ok & hist[f"predicted_{x}"].notna() & hist[f"predicted_{y}"].notna()].iterrows():
            ax.plot([row[f"predicted_{x}"], row[x]], [row[f"predicted_{y}"], row[y]], c="tab:blue", lw=0.5,
                    alpha=0.5)
        has_pred = hist[f"predicted_{x}"].notna() & hist[f"predicted_{y}"].notna()
        ax.scatter(hist.loc[has_pred, f"predicted_{x}"], hist.loc[has_pred, f"predicted_{y}"], s=28,
                   facecolors="none", edgecolors="tab:blue", label="predicted when picked")
        ax.scatter(hist.loc[feasible, x], hist.loc[feasible, y], s=30, c="tab:blue", label="measured")
        if (ok & ~feasible).any():
            ax.scatter(hist.loc[ok & ~feasible, x], hist.loc[ok & ~feasible, y], s=36, marker="x", c="tab:red",
                       label="measured, breaks an SLO")
    if true_front is None:
        true_front = getattr(result, "true_front", None)
    if true_front is not None and len(true_front) and len(objectives) == 2:
        # (With 3+ objectives the full front is not a 2-D staircase of the first two.)
        true_pts = true_front[[x, y]].to_numpy(float)
        _staircase(ax, true_pts, directions, c="k", ls="--", lw=1)
        ax.scatter(true_pts[:, 0], true_pts[:, 1], s=60, marker="D", facecolors="none", edgecolors="k",
                   label="true front (every recorded config)", zorder=4)
    if len(result.front):
        pts = result.front[[x, y]].to_numpy(float)
        if len(objectives) == 2:  # (with 3+ objectives the front is no 2-D staircase of the first two: dots only)
            _staircase(ax, pts, directions, c="tab:orange", lw=2)
        ax.scatter(pts[:, 0], pts[:, 1], s=90, marker="*", c="tab:orange", zorder=5, label="measured front")
    ax.set(xscale="log", yscale="log", xlabel=f"{metric_label(x)}, {objectives[0].direction}",
           ylabel=f"{metric_label(y)}, {objectives[1].direction}")
    title = title if title is not None else getattr(result, "description", None)
    stats = _stats_line(result, len(hist))
    ax.set_title("\n".join(textwrap.wrap(title, 90) + textwrap.wrap(stats, 105)) if title
                 else "\n".join(textwrap.wrap(stats, 105)), fontsize=8.5)
    for axis in (ax.xaxis, ax.yaxis):
        plain_number_ticks(axis)
    off_axes = _draw_slos(ax, list(result.constraints), x, y)
    if off_axes:  # bounds on metrics neither axis shows
        ax.text(0.01, 0.01, "SLO (not on the axes): " + "; ".join(str(c) for c in off_axes), transform=ax.transAxes,
                fontsize=7, va="bottom")
    # Below the axes, in columns: inside, it hid the front it describes.
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3, frameon=False)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
