"""Scores of tuning runs: best-so-far curves, the performance score P, evaluations-to-target.

P follows Willemsen et al. (2024): at each budget b, the fraction of the way a strategy's
mean best-so-far has come from the baseline's (executed random search, same repeats) to the
optimum, ``P(b) = (base(b) - s(b)) / (base(b) - opt)``, averaged over the budget window.
P = 0 is random search, P = 1 finds the optimum at once, P < 0 is worse than random.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from perfpred.errors import InvalidInputError


def best_so_far(values: Sequence[float | None], budget: int) -> np.ndarray:
    """Best value after each evaluation, padded to ``budget`` with the last best (inf before any ok)."""
    v = np.array([np.inf if x is None or not np.isfinite(x) else x for x in values], dtype=float)[:budget]
    curve = np.minimum.accumulate(v) if len(v) else np.full(0, np.inf)
    if len(curve) < budget:
        pad = curve[-1] if len(curve) else np.inf
        curve = np.concatenate([curve, np.full(budget - len(curve), pad)])
    return curve


def mean_curve(runs: Sequence[Sequence[float | None]], budget: int) -> np.ndarray:
    """Mean best-so-far over repeats; a repeat with no ok value yet counts at the worst seen."""
    curves = np.stack([best_so_far(r, budget) for r in runs])
    finite = curves[np.isfinite(curves)]
    worst = finite.max() if finite.size else np.nan
    return np.where(np.isfinite(curves), curves, worst).mean(axis=0)


def performance_score(strategy_runs, baseline_runs, optimum: float, budget: int) -> float:
    """Mean over budgets 1..budget of (base - strategy) / (base - optimum)."""
    if not optimum > 0:
        raise InvalidInputError(f"`optimum > 0` must hold, but got optimum={optimum}")
    s = mean_curve(strategy_runs, budget)
    b = mean_curve(baseline_runs, budget)
    gap = b - optimum
    valid = gap > 1e-12 * optimum
    if not valid.any():
        return 0.0
    return float(np.mean((b[valid] - s[valid]) / gap[valid]))


def evaluations_to_within(values: Sequence[float | None], optimum: float, rel: float = 0.02) -> int | None:
    """1-based index of the first evaluation within ``rel`` of the optimum; None if never."""
    for i, x in enumerate(values, start=1):
        if x is not None and np.isfinite(x) and x <= optimum * (1 + rel):
            return i
    return None
