"""What a replayed recording knows in hindsight about the configs a tuner searches.

A replay answers only what was recorded, so where every candidate of a run is a recorded config
the recording holds the whole searched space: its best value of one objective (in the objective's
direction, under the run's constraints) and the true Pareto front of several are known, and a
report can say how close the tuner came. Nothing here is shown to the tuner: reports only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from perfpred.tuner._objectives import MetricBound, Objective, feasible_mask, tracked_metrics
from perfpred.tuner._report_plot import plot_best_so_far


def recorded_grid(backend: Any, candidates: pd.DataFrame | None, metrics: Iterable[str]) -> pd.DataFrame | None:
    """Every candidate with its recorded values of ``metrics`` (NaN where the config failed or the
    value is not positive and finite, as ``metric_value`` reads a measurement), or None where the
    backend is no replay (no recorded table) or a candidate was never recorded (the recording does
    not hold the whole searched space)."""
    table = getattr(backend, "table", None)
    keys = getattr(backend, "keys", None)
    if not isinstance(table, pd.DataFrame) or candidates is None or keys is None or candidates.empty:
        return None
    keys = list(keys)
    if sorted(candidates.columns) != sorted(keys):
        return None
    columns = [f"config.{k}" if f"config.{k}" in table else f"workload.{k}" for k in keys]
    if any(c not in table for c in columns):
        return None
    ok = (table["status"] == "ok").to_numpy() if "status" in table else np.ones(len(table), dtype=bool)
    values = {}
    for m in metrics:
        raw = pd.to_numeric(table[m], errors="coerce").to_numpy(dtype=float) if m in table else np.full(len(table),
                                                                                                        np.nan)
        values[m] = np.where(ok & np.isfinite(raw) & (raw > 0), raw, np.nan)
    # A config recorded twice keeps its last record, as the replay answers it.
    position = {key: i for i, key in enumerate(zip(*(table[c].tolist() for c in columns), strict=True))}
    rows = [position.get(key) for key in zip(*(candidates[k].tolist() for k in keys), strict=True)]
    if any(r is None for r in rows):
        return None
    index = np.asarray(rows, dtype=int)
    grid = candidates[keys].reset_index(drop=True).copy()
    for m, v in values.items():
        grid[m] = v[index]
    return grid


def _feasible(grid: pd.DataFrame, objectives: Sequence[Objective], constraints: Sequence[MetricBound]) -> np.ndarray:
    return feasible_mask({m: grid[m] for m in tracked_metrics(objectives, constraints)}, objectives, constraints)


def grid_front(grid: pd.DataFrame, objectives: Sequence[Objective],
               constraints: Sequence[MetricBound] = ()) -> pd.DataFrame:
    """The feasible Pareto front of a recorded grid (hindsight: every config measured)."""
    from perfpred.tuner._pareto import min_form, pareto_mask

    feasible = grid[_feasible(grid, objectives, constraints)].reset_index(drop=True)
    if feasible.empty:
        return feasible
    points = feasible[[o.metric for o in objectives]].to_numpy(dtype=float)
    return feasible[pareto_mask(min_form(points, objectives))].reset_index(drop=True)


def grid_optimum(grid: pd.DataFrame, objective: Objective, constraints: Sequence[MetricBound] = ()) -> float | None:
    """The best feasible recorded value of ``objective`` in its direction (None: no config feasible)."""
    values = grid.loc[_feasible(grid, [objective], constraints), objective.metric].to_numpy(dtype=float)
    if not len(values):
        return None
    return float(values.max() if objective.direction == "maximize" else values.min())


def recorded_optimum(backend: Any, candidates: pd.DataFrame | None, metric: str, direction: str = "minimize",
                     constraints: Sequence[MetricBound] = ()) -> float | None:
    """The recorded best of ``metric`` over ``candidates`` in ``direction`` where the replay holds them
    all (None for a live backend, a partial recording or no feasible config)."""
    objective = Objective(metric, direction)
    grid = recorded_grid(backend, candidates, [metric, *(c.metric for c in constraints)])
    return None if grid is None else grid_optimum(grid, objective, constraints)


def ratio_text(direction: str) -> str:
    """Which way ``best / optimum`` falls short, as a report says it (1 is the optimum either way)."""
    return ("1 = the optimum; maximised, so below 1 falls short" if direction == "maximize"
            else "1 = the optimum; minimised, so above 1 falls short")


def best_so_far_plot(out_dir: str | Path, values: Sequence[float | None], *, objective: Objective,
                     optimum: float | None, description: str, budget: int | None = None,
                     optimum_label: str = "best of every recorded config") -> Path:
    """``best_so_far.png`` of a run's values (None: failed or infeasible) in ``out_dir``, drawn by the
    kernel tune's own best-so-far plot; ``optimum`` (a replay's hindsight) is drawn as a line."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / "best_so_far.png"
    clean = [None if v is None or not np.isfinite(v) else float(v) for v in values]
    return Path(plot_best_so_far(target, {"perfpred": clean}, objective=objective.metric,
                                 maximize=objective.direction == "maximize", budget=budget or max(len(clean), 1),
                                 title=description, optimum=optimum, optimum_label=optimum_label))
