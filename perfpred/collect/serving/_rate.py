"""The highest request rate that still meets an SLO: bracket by doubling / halving, then bisect.

Each probe is a whole load test, so the budget is counted in probes. Latency grows with
load (queues form once the arrival rate passes the service rate), so "meets the SLO" is
treated as monotone in the rate: the search keeps the highest passing rate ``lo`` and the
lowest failing rate ``hi`` and stops when ``hi / lo <= 1 + rel_tol`` or the budget is spent.
Bisection is geometric (rates span orders of magnitude).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from perfpred.errors import InvalidInputError


@dataclass(frozen=True)
class RateProbe:
    rate_rps: float
    met: bool
    violations: tuple[str, ...] = ()


@dataclass
class RateSearch:
    rate_rps: float | None = None  # highest rate that met the SLO (None: none did)
    failed_rps: float | None = None  # lowest rate that missed it (None: none did)
    probes: list[RateProbe] = field(default_factory=list)


def find_sustainable_rate(probe: Callable[[float], tuple[bool, list[str]]], *, start_rps: float = 1.0,
                          max_probes: int = 8, rel_tol: float = 0.15, min_rps: float = 0.05,
                          max_rps: float = 1000.0, growth: float = 2.0,
                          stop: Callable[[], bool] | None = None) -> RateSearch:
    """``probe(rate) -> (met, violations)``; at most ``max_probes`` calls."""
    if not 0 < min_rps <= start_rps <= max_rps:
        raise InvalidInputError("`0 < min_rps <= start_rps <= max_rps` must hold, but got "
                                f"(min_rps={min_rps}, start_rps={start_rps}, max_rps={max_rps})")
    if not isinstance(max_probes, int) or max_probes < 1:
        raise InvalidInputError(f"`max_probes >= 1` must hold, but got max_probes={max_probes!r}")
    if not rel_tol > 0 or not growth > 1:
        raise InvalidInputError(f"`rel_tol > 0` and `growth > 1` must hold, but got rel_tol={rel_tol}, growth={growth}")
    search = RateSearch()
    rate = start_rps
    while len(search.probes) < max_probes:
        met, violations = probe(rate)
        search.probes.append(RateProbe(rate, met, tuple(violations)))
        if met:
            search.rate_rps = rate if search.rate_rps is None else max(search.rate_rps, rate)
        else:
            search.failed_rps = rate if search.failed_rps is None else min(search.failed_rps, rate)
        if stop is not None and stop():
            break
        lo, hi = search.rate_rps, search.failed_rps
        if hi is None:  # every probe met it: go up
            if lo is not None and lo >= max_rps:
                break
            rate = min(rate * growth, max_rps)
        elif lo is None:  # every probe missed it: go down
            if rate <= min_rps:
                break
            rate = max(rate / growth, min_rps)
        else:
            if hi / lo <= 1 + rel_tol:
                break
            rate = math.sqrt(lo * hi)
    return search
