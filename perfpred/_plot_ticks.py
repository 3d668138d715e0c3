"""Plain-number tick labels, shared by every perfpred plot (and benchmarks/): 13.25, 0.01, 1000000,
never 1.325x10^1 or 1e+06, with as many decimals as the tick spacing needs to tell neighbouring
ticks apart (1234.5008, 1234.5012, not "1234.5" twice)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from typing import Any

# Values outside [_PLAIN_MIN, _PLAIN_MAX] in magnitude keep an exponent (a fixed-point 1e-9 or 1e15 is unreadable).
_PLAIN_MIN, _PLAIN_MAX = 1e-6, 1e12
_MAX_DECIMALS = 15


def tick_decimals(locs: Iterable[float]) -> int | None:
    """The fewest decimals that tell the distinct finite ``locs`` apart and write each as its
    spacing shows it (0.25 steps: 2, 0.0004 steps: 4, 1000s: 0); None for fewer than two."""
    values = sorted({float(v) for v in locs if math.isfinite(v)})
    steps = [b - a for a, b in itertools.pairwise(values) if b > a]
    if not steps:
        return None
    step = min(steps)
    least = max(0, math.ceil(-math.log10(step) - 1e-9))  # 10^-least <= step: neighbours differ once rounded
    # A few more where the ticks are not whole multiples of 10^-least (0.005, 0.015 at step 0.01).
    for decimals in range(least, min(least + 3, _MAX_DECIMALS) + 1):
        if all(abs(round(v, decimals) - v) <= 1e-6 * step for v in values):
            return decimals
    return min(least + 3, _MAX_DECIMALS)


def plain_number(value: float, decimals: int | None = None) -> str:
    """``value`` as a plain number with ``decimals`` decimals (more where it would keep fewer than 3
    significant digits; default: 12 significant digits), trailing zeros dropped; an exponent only
    outside 1e-6 <= |value| <= 1e12."""
    if not math.isfinite(value):
        return f"{value:g}"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if not _PLAIN_MIN <= magnitude <= _PLAIN_MAX:
        return f"{value:.6g}"
    # At most 12 significant digits by default, 15 at most: a float's noise shows past those.
    most = max(0, 14 - math.floor(math.log10(magnitude)))
    if decimals is None:
        decimals = max(0, 11 - math.floor(math.log10(magnitude)))
    else:  # 3 significant digits at least: 0.001 on a log axis running to 1e6 is not "0"
        decimals = min(max(decimals, 2 - math.floor(math.log10(magnitude))), most)
    text = f"{value:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


try:
    from matplotlib.ticker import Formatter as _Formatter
except ImportError:  # matplotlib is optional: the class is only made where it is installed
    _Formatter = object  # type: ignore[misc, assignment]


class PlainNumberFormatter(_Formatter):  # type: ignore[misc, valid-type]
    """A matplotlib tick formatter writing plain numbers (``plain_number``) at the precision the
    ticks' spacing needs. ``leading``: label only ticks whose leading digit is one of these (a log
    axis's minor ticks at 2 and 5: "25"); None labels every tick."""

    def __init__(self, leading: str | None = None) -> None:
        self.leading = leading
        self._decimals: int | None = None

    def set_locs(self, locs: Any) -> None:
        self._decimals = tick_decimals(locs)

    def __call__(self, x: float, pos: int | None = None) -> str:
        if self.leading is not None and (x == 0 or f"{abs(x):.0e}"[0] not in self.leading):
            return ""
        return plain_number(x, self._decimals)


def plain_number_ticks(axis: Any, minor_leading: str | None = "25") -> None:
    """Tick labels of ``axis`` as plain numbers (13.25, 0.01, 1000000), never 1.325x10^1 or 1e+06,
    precise enough to tell neighbouring ticks apart; minor ticks are labelled only where their
    leading digit is in ``minor_leading`` (on a log axis, 2 and 5, so they never collide; None: all)."""
    axis.set_major_formatter(PlainNumberFormatter())
    axis.set_minor_formatter(PlainNumberFormatter(leading=minor_leading))
