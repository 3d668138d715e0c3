"""Error figures for runtime-like targets (all positive): percentage errors, R², rank agreement."""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr
from sklearn.metrics import r2_score

from perfpred.errors import InvalidInputError


def _check(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=float)
    p = np.asarray(y_pred, dtype=float)
    if t.shape != p.shape or t.ndim != 1:
        raise InvalidInputError(f"y_true and y_pred must be 1-D of equal length, but got {t.shape} and {p.shape}")
    if len(t) == 0:
        raise InvalidInputError("metrics need at least one row, but got 0")
    bad = ~np.isfinite(t) | (t <= 0)
    if bad.any():
        raise InvalidInputError(f"`y_true > 0` and finite must hold for percentage errors, but got "
                                f"{float(t[bad][0])!r} ({int(bad.sum())} bad value(s))")
    bad = ~np.isfinite(p)
    if bad.any():
        raise InvalidInputError(f"`y_pred` must be finite for every row, but got {float(p[bad][0])!r} "
                                f"({int(bad.sum())} non-finite value(s))")
    return t, p


def ape(y_true, y_pred) -> np.ndarray:
    """Absolute percentage error of each row, in percent."""
    t, p = _check(y_true, y_pred)
    return np.abs(p - t) / t * 100.0


def mape(y_true, y_pred) -> float:
    """Mean absolute percentage error, in percent (10.0 means predictions are 10% off on average)."""
    return float(np.mean(ape(y_true, y_pred)))


def median_ape(y_true, y_pred) -> float:
    """Median absolute percentage error, in percent."""
    return float(np.median(ape(y_true, y_pred)))


def p90_ape(y_true, y_pred) -> float:
    """90th percentile of the absolute percentage errors, in percent (the bad tail)."""
    return float(np.percentile(ape(y_true, y_pred), 90))


def r2_log(y_true, y_pred) -> float:
    """R² of log(prediction) against log(truth), unitless (1.0 is perfect); predictions <= 0
    count as 1e-12."""
    t, p = _check(y_true, y_pred)
    return float(r2_score(np.log(t), np.log(np.clip(p, 1e-12, None))))


def r2_linear(y_true, y_pred) -> float:
    """R² of prediction against truth on the raw scale, unitless (1.0 is perfect)."""
    t, p = _check(y_true, y_pred)
    return float(r2_score(t, p))


def spearman(y_true, y_pred) -> float:
    """Spearman rank correlation of predictions and truth, in [-1, 1]; nan when either is constant
    or there is a single row (nothing to rank)."""
    t, p = _check(y_true, y_pred)
    if len(t) < 2 or np.all(p == p[0]) or np.all(t == t[0]):
        return float("nan")  # a constant ranks nothing (e.g. a roofline of rows without FLOPs)
    return float(spearmanr(t, p).statistic)


def regression_report(y_true, y_pred) -> dict[str, float]:
    """The standard set: MAPE, median and p90 APE (percent), R² (log and linear), Spearman rho."""
    return {
        "mape_pct": mape(y_true, y_pred),
        "median_ape_pct": median_ape(y_true, y_pred),
        "p90_ape_pct": p90_ape(y_true, y_pred),
        "r2_log": r2_log(y_true, y_pred),
        "r2_linear": r2_linear(y_true, y_pred),
        "spearman_rho": spearman(y_true, y_pred),
        "n": len(np.asarray(y_true)),
    }
