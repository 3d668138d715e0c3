"""Pareto-front arithmetic on points in minimisation form (each row a point, lower is better).

Hypervolumes come from Optuna's exact WFG implementation (``optuna._hypervolume``, the one
its samplers and ``optuna.visualization`` use); the hypervolume improvement of many
candidate points at once, which the tuner needs every round, has a vectorised exact form
in one and two dimensions and falls back to one WFG call per candidate above that.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from perfpred.errors import InvalidInputError
from perfpred.tuner._objectives import Objective


def min_form(values: np.ndarray, objectives: Sequence[Objective], log: bool = False) -> np.ndarray:
    """Raw objective values (n, m) -> minimisation form: ``sign * value`` (or ``sign * log(value)``)."""
    values = np.asarray(values, dtype=float).reshape(-1, len(objectives))
    signs = np.array([o.sign for o in objectives])
    return signs * (np.log(values) if log else values)


def pareto_mask(points: np.ndarray) -> np.ndarray:
    """True for the rows no other row dominates (<= everywhere, < somewhere); equal rows all stay."""
    points = np.asarray(points, dtype=float)
    if len(points) == 0:
        return np.zeros(0, dtype=bool)
    le = (points[:, None, :] <= points[None, :, :]).all(axis=2)  # le[i, j]: i is <= j everywhere
    lt = (points[:, None, :] < points[None, :, :]).any(axis=2)
    dominated = (le & lt).any(axis=0)
    return ~dominated


def hypervolume(points: np.ndarray, reference: np.ndarray) -> float:
    """Volume dominated by ``points`` and bounded by ``reference``; points not better than it count 0."""
    from optuna._hypervolume import compute_hypervolume

    points = np.asarray(points, dtype=float).reshape(-1, len(reference))
    reference = np.asarray(reference, dtype=float)
    inside = points[np.all(points < reference, axis=1) & np.all(np.isfinite(points), axis=1)]
    if len(inside) == 0:
        return 0.0
    if len(reference) == 1:
        return float(reference[0] - inside.min())
    return float(compute_hypervolume(inside, reference))


def hypervolume_improvement(candidates: np.ndarray, front: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """HV(front + {c}) - HV(front) for every candidate row ``c`` (exact)."""
    candidates = np.asarray(candidates, dtype=float)
    reference = np.asarray(reference, dtype=float)
    d = len(reference)
    front = np.asarray(front, dtype=float).reshape(-1, d)
    front = front[np.all(front < reference, axis=1)]
    front = front[pareto_mask(front)] if len(front) else front
    c = np.minimum(candidates, reference)  # a coordinate beyond the reference adds no volume
    if d == 1:
        best = front[:, 0].min() if len(front) else reference[0]
        return np.maximum(0.0, best - c[:, 0])
    if d == 2:
        return _hvi_2d(c, front, reference)
    out = np.zeros(len(c))
    base = hypervolume(front, reference)
    if len(front):
        dominated = ((front[None, :, :] <= c[:, None, :]).all(axis=2)).any(axis=1)
    else:
        dominated = np.zeros(len(c), dtype=bool)
    for i in np.flatnonzero(~dominated & np.all(c < reference, axis=1)):
        out[i] = hypervolume(np.vstack([front, c[i]]), reference) - base
    return np.maximum(out, 0.0)


def _hvi_2d(c: np.ndarray, front: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Area newly dominated by each point: integrate over x the height between it and the front's staircase."""
    rx, ry = reference
    order = np.argsort(front[:, 0], kind="stable")
    xs, ys = front[order, 0], np.minimum.accumulate(front[order, 1])
    # Segments of x: [-inf, x1), [x1, x2), ..., [xk, rx); over segment j the front reaches down to h_j.
    starts = np.concatenate([[-np.inf], xs])
    ends = np.concatenate([xs, [rx]])
    heights = np.concatenate([[ry], ys])
    a, b = c[:, :1], c[:, 1:]
    width = np.clip(np.minimum(ends, rx)[None, :] - np.maximum(starts[None, :], a), 0.0, None)
    height = np.clip(np.minimum(heights, ry)[None, :] - b, 0.0, None)
    return (width * height).sum(axis=1)


def epsilon_gap(candidates: np.ndarray, front: np.ndarray) -> np.ndarray:
    """How far each candidate must move (the same amount in every coordinate) to be non-dominated by
    ``front``: the additive epsilon indicator; <= 0 for points the front does not dominate."""
    candidates = np.asarray(candidates, dtype=float)
    front = np.asarray(front, dtype=float).reshape(-1, candidates.shape[1])
    if len(front) == 0:
        return np.full(len(candidates), -np.inf)
    return (candidates[:, None, :] - front[None, :, :]).min(axis=2).max(axis=1)


def reference_from(points: np.ndarray, margin: float = 0.1) -> np.ndarray:
    """A reference point just beyond the worst of ``points`` in every coordinate (margin x range)."""
    points = np.asarray(points, dtype=float)
    points = points[np.all(np.isfinite(points), axis=1)]
    if len(points) == 0:
        raise InvalidInputError("a reference point needs at least one finite point, but got none")
    worst, best = points.max(axis=0), points.min(axis=0)
    span = np.where(worst > best, worst - best, np.maximum(np.abs(worst), 1.0))
    return worst + margin * span
