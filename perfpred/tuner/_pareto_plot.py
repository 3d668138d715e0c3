"""The picture of a multi-objective run: what was predicted, what was measured, the front.

The first two objectives span the axes (log scales: performance quantities span decades).
Grey dots are the last round's predictions for configs never measured; each measured config
is a filled dot (a cross if it broke an SLO or failed) joined by a thin line to the hollow
marker of what the predictor expected when it was picked; the measured feasible front is
the highlighted staircase; a known true front (a replayed complete space) is dashed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from perfpred.errors import InvalidInputError


def _staircase(ax: Any, points: np.ndarray, directions: list[str], **style: Any) -> None:
    """Draw a 2-D front as steps, sorted along the first objective."""
    if len(points) == 0:
        return
    order = np.argsort(points[:, 0] * (1 if directions[0] == "minimize" else -1))
    ax.step(points[order, 0], points[order, 1], where="post", **style)


def plot_pareto(result: Any, path: str | os.PathLike[str], *, true_front: pd.DataFrame | None = None,
                title: str | None = None) -> Path:
    """Save the plot of a :class:`ParetoResult` to ``path`` (PNG); returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    objectives = result.objectives
    if len(objectives) < 2:
        raise InvalidInputError(f"a Pareto plot needs at least 2 objectives, but the run has {len(objectives)}")
    x, y = objectives[0].metric, objectives[1].metric
    directions = [objectives[0].direction, objectives[1].direction]
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    pred = result.predictions
    if pred is not None and f"predicted_{x}" in pred and f"predicted_{y}" in pred:
        unmeasured = pred[~pred["measured"]]
        ax.scatter(unmeasured[f"predicted_{x}"], unmeasured[f"predicted_{y}"], s=12, c="0.75",
                   label="predicted, not measured")
    hist = result.history
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
    if true_front is not None and len(true_front):
        true_pts = true_front[[x, y]].to_numpy(float)
        _staircase(ax, true_pts, directions, c="k", ls="--", lw=1)
        ax.scatter(true_pts[:, 0], true_pts[:, 1], s=60, marker="D", facecolors="none", edgecolors="k",
                   label="true front (full grid)", zorder=4)
    if len(result.front):
        pts = result.front[[x, y]].to_numpy(float)
        _staircase(ax, pts, directions, c="tab:orange", lw=2)
        ax.scatter(pts[:, 0], pts[:, 1], s=90, marker="*", c="tab:orange", zorder=5, label="measured front")
    ax.set(xscale="log", yscale="log", xlabel=f"{x} ({objectives[0].direction})",
           ylabel=f"{y} ({objectives[1].direction})",
           title=title or f"{len(hist)} evaluations, hypervolume {result.hypervolume:.4g}")
    for axis in (ax.xaxis, ax.yaxis):  # plain numbers; minor labels at 2 and 5 only, so they never collide
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))
    if result.constraints:
        ax.text(0.01, 0.01, "SLO: " + "; ".join(str(c) for c in result.constraints), transform=ax.transAxes,
                fontsize=7, va="bottom")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
