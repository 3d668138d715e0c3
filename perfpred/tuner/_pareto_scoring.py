"""Scores of constrained and multi-objective tuning runs, evaluation by evaluation.

A run is a list of evaluations (dicts of measured metric values, None when missing). Only
feasible evaluations (every objective measured, every SLO met) count. Curves are padded to
the budget with their last value, so runs that stopped early (space exhausted) line up.

- ``quality_curve``: best feasible value so far relative to the known optimum, in (0, 1]
  (``best / optimum`` when maximising, ``optimum / best`` when minimising; 0 before any
  feasible evaluation);
- ``hypervolume_curve``: hypervolume of the feasible front so far (optionally of log values,
  which weighs quantities spanning decades evenly), divided by a reference hypervolume
  (the full space's front) gives the hypervolume ratio;
- ``evaluations_to``: evaluations until a curve first reaches a level (1 = the optimum found).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from perfpred.tuner._objectives import MetricBound, Objective, feasible_mask, tracked_metrics
from perfpred.tuner._pareto import hypervolume, min_form

Rows = Sequence[Mapping[str, float | None]]


def _pad(curve: list[float], budget: int) -> np.ndarray:
    out = np.asarray(curve[:budget], dtype=float)
    if len(out) < budget:
        out = np.concatenate([out, np.full(budget - len(out), out[-1] if len(out) else 0.0)])
    return out


def feasible_points(rows: Rows, objectives: Sequence[Objective], constraints: Sequence[MetricBound]) -> np.ndarray:
    """Raw objective values (n, m) of every row, NaN rows where the evaluation is not feasible."""
    metrics = tracked_metrics(objectives, constraints)
    columns = {m: np.array([np.nan if row.get(m) is None else row[m] for row in rows], dtype=float) for m in metrics}
    out = np.column_stack([columns[o.metric] for o in objectives])
    out[~feasible_mask(columns, objectives, constraints)] = np.nan
    return out


def quality_curve(rows: Rows, objective: Objective, constraints: Sequence[MetricBound], optimum: float,
                  budget: int) -> np.ndarray:
    """Best feasible value after each evaluation relative to ``optimum`` (1 = optimum found, 0 = none yet)."""
    points = feasible_points(rows, [objective], constraints)[:, 0]
    ratio = optimum / points if objective.direction == "minimize" else points / optimum
    ratio = np.where(np.isfinite(ratio), ratio, 0.0)
    return _pad(np.maximum.accumulate(ratio).tolist() if len(ratio) else [], budget)


def hypervolume_curve(rows: Rows, objectives: Sequence[Objective], constraints: Sequence[MetricBound],
                      reference: Sequence[float], budget: int, *, log: bool = False) -> np.ndarray:
    """Hypervolume of the feasible front of the first b evaluations, b = 1..budget.

    ``reference`` is in raw units (one per objective); with ``log`` the volume is of
    ``sign * log(value)``, and the reference is logged the same way.
    """
    points = min_form(feasible_points(rows, objectives, constraints), objectives, log=log)
    ref = min_form(np.asarray(reference, dtype=float)[None, :], objectives, log=log)[0]
    curve, seen = [], np.empty((0, len(objectives)))
    for p in points:
        if np.all(np.isfinite(p)):
            seen = np.vstack([seen, p])
        curve.append(hypervolume(seen, ref))
    return _pad(curve, budget)


def evaluations_to(curve: np.ndarray, level: float = 1.0, rtol: float = 1e-9) -> int | None:
    """1-based index of the first evaluation where ``curve`` reaches ``level``; None if never."""
    hits = np.flatnonzero(np.asarray(curve) >= level * (1 - rtol))
    return int(hits[0]) + 1 if len(hits) else None
