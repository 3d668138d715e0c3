"""Row rules checked column-wise, each failure kept as a one-line reason.

``RowChecks`` walks a table once per rule with numpy, and remembers for each row the first
rule it broke as ``"<file>: <where>: <rule> must hold, but got <value>"``; a row with a
reason is a bad row, counted and quoted in the import report, never a crash.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from perfpred.errors import InvalidInputError

MAX_EXAMPLES = 5


class NoGoodRows(InvalidInputError):
    """A file whose every row broke a rule: a one-line error that carries the counts, so the
    import report still says how many rows were read and refused."""

    def __init__(self, message: str, rows_read: int, rows_bad: int, bad_examples: Sequence[str]) -> None:
        super().__init__(message)
        self.rows_read, self.rows_bad, self.bad_examples = rows_read, rows_bad, list(bad_examples)[:MAX_EXAMPLES]


def fmt_value(value: Any) -> str:
    if value is None or (isinstance(value, (float, np.floating)) and np.isnan(value)):
        return "nan (an empty or NaN field)"  # a missing cell (a short line) reads as NaN too
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    if isinstance(value, (np.integer,)):
        return repr(int(value))
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class RowChecks:
    """First broken rule of each row, collected column-wise.

    ``labels`` locate a row for the user ("line 17", "cache['16,16,32']"). Rules are checked
    in order and a row keeps the reason of the first rule it breaks.
    """

    def __init__(self, path: Path, labels: Sequence[str] | pd.Series) -> None:
        self.path = path
        self.labels = np.asarray(labels, dtype=object)
        self.reasons = np.full(len(self.labels), None, dtype=object)
        self.failed = np.zeros(len(self.labels), dtype=bool)

    def __len__(self) -> int:
        return len(self.labels)

    def require(self, ok: np.ndarray | pd.Series, rule: str, values: Any) -> None:
        """Rows where ``ok`` is False (and no earlier rule failed) get '<rule> must hold'."""
        ok_arr = np.asarray(ok, dtype=bool)
        fresh = ~ok_arr & ~self.failed
        if not fresh.any():
            return
        self.failed |= fresh
        vals = np.asarray(values, dtype=object) if not np.isscalar(values) else None
        for i in np.flatnonzero(fresh):
            value = vals[i] if vals is not None else values
            # A rule already phrased as one ("`x` must be an integer") is not wrapped in "... must hold".
            said = rule if " must " in rule else f"{rule} must hold"
            self.reasons[i] = f"{self.path.name}: {self.labels[i]}: {said}, but got {fmt_value(value)}"

    def fail(self, index: int, reason: str) -> None:
        """Mark one row bad with a reason written by the caller (first reason wins)."""
        if not self.failed[index]:
            self.failed[index] = True
            self.reasons[index] = f"{self.path.name}: {self.labels[index]}: {reason}"

    def require_positive(self, values: pd.Series | np.ndarray, name: str, *, allow_zero: bool = False) -> np.ndarray:
        """Numbers parsed from ``values``; rows with text, NaN, inf or <= 0 (< 0) marked bad."""
        nums = pd.to_numeric(pd.Series(values).reset_index(drop=True), errors="coerce").to_numpy(dtype=float)
        raw = np.asarray(values, dtype=object)
        self.require(np.isfinite(nums), f"`{name}` must be a finite number", raw)
        rule_ok = nums >= 0 if allow_zero else nums > 0
        self.require(np.where(np.isfinite(nums), rule_ok, True), f"{name} {'>= 0' if allow_zero else '> 0'}", nums)
        return nums

    def require_int(self, values: pd.Series | np.ndarray, name: str, *, minimum: int | None = 1) -> np.ndarray:
        """Integers parsed from ``values`` (1 and 1.0 are fine; 1.5, text, NaN are not)."""
        nums = pd.to_numeric(pd.Series(values).reset_index(drop=True), errors="coerce").to_numpy(dtype=float)
        raw = np.asarray(values, dtype=object)
        finite = np.isfinite(nums)
        whole = finite & (np.abs(nums) < 2**53) & (np.floor(np.where(finite, nums, 0)) == np.where(finite, nums, 0))
        self.require(whole, f"`{name}` must be an integer", raw)
        if minimum is not None:
            self.require(np.where(whole, nums >= minimum, True), f"{name} >= {minimum}", nums)
        return np.where(whole, nums, 0).astype(np.int64)

    def inherit(self, other: RowChecks) -> None:
        """Start from the failures found by ``other`` (checks of the same rows)."""
        self.failed[:] = other.failed
        self.reasons[:] = other.reasons

    @property
    def bad(self) -> np.ndarray:
        return self.failed

    def examples(self, k: int = MAX_EXAMPLES) -> list[str]:
        return [str(r) for r in self.reasons[self.bad][:k]]


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    return is_number(value) and math.isfinite(value)


_POSITIVE = ("runtime_ms", "min_ms", "mean_ms", "power_w", "energy_j")
_NON_NEGATIVE = ("std_ms", "iqr_ms", "cv", "load_avg_1m", "ref_runtime_ms")


def schema_violations(frame: pd.DataFrame) -> pd.Series:
    """For each flat row, the first numeric rule of ``Measurement.validate`` it breaks (else None).

    Checked column-wise: finite and > 0 for times, power and energy; finite and >= 0 for
    spreads; finite for every ``metric.*``. Empty (NaN) values are allowed, as in the schema.
    """
    reasons = pd.Series([None] * len(frame), index=frame.index, dtype=object)
    columns = [(c, "> 0") for c in _POSITIVE] + [(c, ">= 0") for c in _NON_NEGATIVE]
    columns += [(c, None) for c in frame.columns if str(c).startswith("metric.")]
    for column, rule in columns:
        if column not in frame:
            continue
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
        present = frame[column].notna().to_numpy()
        finite = np.isfinite(values)
        fresh = reasons.isna().to_numpy()
        not_finite = present & ~finite & fresh
        for i in np.flatnonzero(not_finite):
            reasons.iloc[i] = f"measurement {frame['measurement_id'].iloc[i]}: `{column}` must be a finite number, " \
                              f"but got {fmt_value(frame[column].iloc[i])}"
        if rule is not None:
            broken = present & finite & ((values <= 0) if rule == "> 0" else (values < 0)) & reasons.isna().to_numpy()
            for i in np.flatnonzero(broken):
                reasons.iloc[i] = f"measurement {frame['measurement_id'].iloc[i]}: `{column} {rule}` must hold, " \
                                  f"but got {fmt_value(values[i])}"
    return reasons

