"""The rules of ``Measurement.validate``, checked column-wise on rows already in the flat layout.

A merge source or a frame given to ``MeasurementStore.append_frame`` may hold 250,000 rows (an
imported UCI SGEMM store): a Measurement per row would take minutes, so each rule is checked
on whole columns, and each row keeps the first rule it breaks. The id rule rebuilds each row's
``measurement_key`` column by column, as the importers make ids (a repeat's id,
``<measurement_id>-<hash>``, must start with it).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from perfpred.datasets._schema import (
    CONFIG_PREFIX,
    FIXED_COLUMNS,
    KINDS,
    METRIC_PREFIX,
    POWER_SOURCES,
    STATUSES,
    WORKLOAD_PREFIX,
    configuration_ids,
    is_number,
    measurement_ids,
    python_scalar,
)

POSITIVE = ("runtime_ms", "min_ms", "mean_ms", "power_w", "energy_j")
NON_NEGATIVE = ("std_ms", "iqr_ms", "cv", "load_avg_1m", "ref_runtime_ms")
PARAM_PREFIXES = (WORKLOAD_PREFIX, CONFIG_PREFIX)
_SCALAR_DTYPES = {"string", "empty", "boolean", "integer", "floating", "mixed-integer-float", "decimal"}


@dataclass
class BadRows:
    """Which rows break a rule, and per rule how many rows broke it first and the first value."""

    bad: np.ndarray
    rules: dict[str, list[Any]] = field(default_factory=dict)  # rule -> [rows, value as shown]

    @property
    def count(self) -> int:
        return int(self.bad.sum())

    def add(self, broken: np.ndarray, rule: str, values: Any) -> None:
        """Rows where ``broken`` (and no earlier rule) broke ``rule``; ``values``: the row's values,
        or a text shown as is."""
        fresh = np.asarray(broken, dtype=bool) & ~self.bad
        if not fresh.any():
            return
        first = int(np.flatnonzero(fresh)[0])
        if isinstance(values, str):
            shown = values
        else:
            shown = _shown(values.iloc[first] if isinstance(values, pd.Series) else values[first])
        self.rules.setdefault(rule, [0, shown])[0] += int(fresh.sum())
        self.bad |= fresh

    def first(self) -> str:
        """The rule most rows broke, with its value: '<rule>, but got <value>'."""
        rule, (_, shown) = max(self.rules.items(), key=lambda item: item[1][0])
        return f"{rule}, but got {shown}"

    def lines(self) -> list[str]:
        return rule_lines(self.rules)


def rule_lines(rules: dict[str, list[Any]]) -> list[str]:
    """'<rule>, but got <value> (<n> row(s))' per rule of ``BadRows.rules``, the most broken first."""
    ordered = sorted(rules.items(), key=lambda item: -item[1][0])
    return [f"{rule}, but got {shown} ({n} row(s))" for rule, (n, shown) in ordered]


def _shown(value: Any) -> str:
    value = python_scalar(value)
    if isinstance(value, np.ndarray):
        value = value.tolist()
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_rows(frame: pd.DataFrame, schema_version: int) -> BadRows:
    """Each row's first broken rule of ``Measurement.validate`` (plus: its ``schema_version`` is
    the store's, its id is its content's, it fills no column the schema lacks)."""
    rows = BadRows(np.zeros(len(frame), dtype=bool))
    if frame.empty:
        return rows
    ids = _column(frame, "measurement_id")
    rows.add(~_filled_strings(ids), "`measurement_id` must be a non-empty string", ids)
    _check_choice(rows, frame, "kind", KINDS, required=True)
    _check_choice(rows, frame, "status", STATUSES, required=True)
    hardware = _column(frame, "hardware_id")
    rows.add(~_filled_strings(hardware), "`hardware_id` must be a non-empty string", hardware)
    _check_choice(rows, frame, "power_source", POWER_SOURCES, required=False)
    _check_version(rows, frame, schema_version)
    _check_numbers(rows, frame)
    _check_raw_times(rows, frame)
    _check_result(rows, frame)
    _check_params(rows, frame)
    _check_json(rows, frame)
    _check_unknown(rows, frame)
    _check_ids(rows, frame)
    return rows


def unknown_columns(frame: pd.DataFrame) -> list[str]:
    """Columns no Measurement has: neither fixed nor ``workload.`` / ``config.`` / ``metric.``."""
    prefixes = (*PARAM_PREFIXES, METRIC_PREFIX)
    return [c for c in frame.columns if c not in FIXED_COLUMNS and not str(c).startswith(prefixes)]


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    """A column, or one of nothing but missing values where the frame lacks it."""
    return frame[name] if name in frame else pd.Series([None] * len(frame), index=frame.index, dtype=object)


def _each(values: pd.Series, test: Callable[[Any], bool]) -> np.ndarray:
    """``test`` of each value, called once per distinct value (a column holds few)."""
    try:
        codes, uniques = pd.factorize(values, use_na_sentinel=False)
    except TypeError:  # unhashable values (lists): one call each
        return np.fromiter((test(v) for v in values), dtype=bool, count=len(values))
    return np.array([test(u) for u in uniques] or [True], dtype=bool)[codes]


def _filled_strings(values: pd.Series) -> np.ndarray:
    """Whether each value is a string with more than spaces in it (blank counts as empty, as in
    Measurement); whole-column string operations where the column holds only strings (ids: no
    distinct values to share the work)."""
    if pd.api.types.infer_dtype(values, skipna=True) != "string":
        return np.fromiter((isinstance(v, str) and v.strip() != "" for v in values), dtype=bool, count=len(values))
    return (values.str.strip().str.len() > 0).to_numpy(dtype=bool, na_value=False)


def _equals(frame: pd.DataFrame, name: str, value: str) -> np.ndarray:
    """Whether each row's ``name`` is ``value`` (a missing one, NaN or pd.NA, is not)."""
    return _each(_column(frame, name), lambda v: isinstance(v, str) and v == value)


def _missing(values: pd.Series) -> np.ndarray:
    return values.isna().to_numpy()


def _check_choice(rows: BadRows, frame: pd.DataFrame, name: str, choices: tuple[str, ...], *,
                  required: bool) -> None:
    values = _column(frame, name)
    ok = _each(values, lambda v: isinstance(v, str) and v in choices)  # pd.NA has no truth value
    if not required:
        ok |= _missing(values)
    rows.add(~ok, f"`{name}` must be one of {', '.join(choices)}", values)


def _numbers(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Each value as a float (NaN where missing or no number) and whether it is a number (a bool
    or a text is none, as ``Measurement`` takes them)."""
    if series.dtype.kind in "iuf":
        values = series.to_numpy(dtype=float)
        return values, ~np.isnan(values)
    numeric = _each(series, is_number) if series.dtype.kind != "b" else np.zeros(len(series), dtype=bool)
    numeric &= ~_missing(series)
    values = np.full(len(series), np.nan)
    values[numeric] = series.to_numpy(dtype=object)[numeric].astype(float)
    return values, numeric


def _check_number(rows: BadRows, frame: pd.DataFrame, name: str, rule: str | None) -> None:
    """``name``'s values, where given: finite numbers, and ``> 0`` / ``>= 0`` where ``rule`` says."""
    values, numeric = _numbers(frame[name])
    finite = numeric & np.isfinite(values)
    rows.add(~_missing(frame[name]) & ~finite, f"`{name}` must be a finite number", frame[name])
    if rule is not None:
        with np.errstate(invalid="ignore"):
            broken = finite & ((values <= 0) if rule == "> 0" else (values < 0))
        rows.add(broken, f"`{name} {rule}` must hold", values)


def _check_numbers(rows: BadRows, frame: pd.DataFrame) -> None:
    columns = [(c, "> 0") for c in POSITIVE] + [(c, ">= 0") for c in NON_NEGATIVE]
    columns += [(c, None) for c in frame.columns if str(c).startswith(METRIC_PREFIX)]
    for name, rule in columns:
        if name in frame:
            _check_number(rows, frame, name, rule)
    if "n_runs" in frame:
        values, numeric = _numbers(frame["n_runs"])
        with np.errstate(invalid="ignore"):
            whole = numeric & np.isfinite(values) & (np.mod(values, 1) == 0) & (values >= 1)
        rows.add(~_missing(frame["n_runs"]) & ~whole, "`n_runs` must be an integer >= 1 or empty", frame["n_runs"])


def _check_version(rows: BadRows, frame: pd.DataFrame, schema_version: int) -> None:
    """A row of a schema version this perfpred does not know cannot be read by its rules."""
    if "schema_version" not in frame:
        return
    values, numeric = _numbers(frame["schema_version"])
    with np.errstate(invalid="ignore"):
        known = numeric & (np.mod(values, 1) == 0) & (values >= 1) & (values <= schema_version)
    rows.add(~_missing(frame["schema_version"]) & ~known,
             f"`schema_version` must be one this perfpred reads (1..{schema_version})",
             frame["schema_version"])


def _check_raw_times(rows: BadRows, frame: pd.DataFrame) -> None:
    """``raw_times_ms``: a list of finite numbers > 0 per row, where given."""
    if "raw_times_ms" not in frame:
        return
    values = frame["raw_times_ms"].to_numpy(dtype=object)
    is_list = np.fromiter((isinstance(v, (list, tuple)) or (isinstance(v, np.ndarray) and v.ndim > 0) for v in values),
                          dtype=bool, count=len(values))
    rows.add(~is_list & ~_missing(frame["raw_times_ms"]), "`raw_times_ms` must be a list of numbers", values)
    # A nested list ([1.0, [2.0]]) is flattened to its items, which are then no numbers.
    lists = [np.asarray(v) if _flat(v) else _items(v) for v in values[is_list]]
    lengths = np.fromiter((len(v) for v in lists), dtype=np.int64, count=len(lists))
    if not lengths.sum():
        return
    # Float lists (as Parquet gives them back) stay numeric; anything else is looked at value by value.
    numeric_lists = all(v.dtype.kind in "iuf" for v in lists)
    flat = np.concatenate([v if numeric_lists else v.astype(object) for v in lists])
    times, numeric = _numbers(pd.Series(flat))
    with np.errstate(invalid="ignore"):
        bad_time = ~(numeric & np.isfinite(times) & (times > 0))
    row_of = np.repeat(np.flatnonzero(is_list), lengths)[bad_time]
    broken = np.zeros(len(frame), dtype=bool)
    broken[row_of] = True
    shown = np.full(len(frame), None, dtype=object)
    shown[row_of] = flat[bad_time]  # a bad time of each such row
    rows.add(broken, "`raw_times_ms` must hold finite numbers > 0", shown)


def _flat(values: Any) -> bool:
    """Whether a list holds no list (numpy makes a 2-D array of [[1.0, 2.0]] and refuses [1.0, [2.0]])."""
    if isinstance(values, np.ndarray) and values.dtype != object:
        return values.ndim == 1
    return not any(isinstance(v, (list, tuple, np.ndarray)) for v in values)


def _items(values: Any) -> np.ndarray:
    """A 1-D object array of a list's items, each kept whole (a nested list stays one item)."""
    out = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        out[i] = value
    return out


def _check_result(rows: BadRows, frame: pd.DataFrame) -> None:
    """An ok row has a result; power figures need a power source."""
    metrics = [c for c in frame.columns if str(c).startswith(METRIC_PREFIX)]
    no_result = frame["runtime_ms"].isna().to_numpy() if "runtime_ms" in frame else np.ones(len(frame), dtype=bool)
    if metrics:
        no_result = no_result & frame[metrics].isna().all(axis=1).to_numpy()
    rows.add(_equals(frame, "status", "ok") & no_result,
             "a row with status='ok' needs runtime_ms or a metric", "neither")
    power = [c for c in ("power_w", "energy_j") if c in frame]
    if power:
        has_power = frame[power].notna().any(axis=1).to_numpy()
        rows.add(_equals(frame, "power_source", "unavailable") & has_power,
                 "power_source='unavailable' must carry no power_w/energy_j", frame[power[0]])


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, bool, np.bool_)) or is_number(value)


def _check_params(rows: BadRows, frame: pd.DataFrame) -> None:
    """Workload and config values are scalars (number, string, bool), one table cell each."""
    for name in (c for c in frame.columns if str(c).startswith(PARAM_PREFIXES)):
        series = frame[name]
        if series.dtype != object or pd.api.types.infer_dtype(series, skipna=True) in _SCALAR_DTYPES:
            continue
        values = series.to_numpy(dtype=object)
        scalar = np.fromiter((_is_scalar(v) for v in values), dtype=bool, count=len(values))
        rows.add(~scalar, f"`{name}` must be a scalar (number, string or bool)", values)


def _is_json_object(text: Any) -> bool:
    try:
        return isinstance(text, str) and isinstance(json.loads(text), dict)
    except ValueError:
        return False


def _check_json(rows: BadRows, frame: pd.DataFrame) -> None:
    """The hardware and software specs are JSON objects (``Measurement.from_row`` reads them)."""
    for name in ("hardware_json", "software_json"):
        values = _column(frame, name)
        rows.add(~(_each(values, _is_json_object) | _missing(values)), f"`{name}` must be a JSON object", values)


def _check_unknown(rows: BadRows, frame: pd.DataFrame) -> None:
    """A value in a column no Measurement has would be lost by every read as a Measurement."""
    for name in unknown_columns(frame):
        given = ~_missing(frame[name])
        shown = f"{name}={_shown(frame[name].iloc[np.flatnonzero(given)[0]])}" if given.any() else ""
        rows.add(given, "every column must be one of the Measurement schema (fixed, workload.*, config.*, "
                 "metric.*)", shown)


def _check_ids(rows: BadRows, frame: pd.DataFrame) -> None:
    """A row's id (before a repeat's ``-<hash>``) is the ``measurement_key`` of its content: a
    changed id would defeat de-duplication and resume."""
    good = np.flatnonzero(~rows.bad)
    if not len(good):
        return
    subset = frame.iloc[good]
    ids = subset["measurement_id"]
    wrong = np.zeros(len(frame), dtype=bool)
    wrong[good] = configuration_ids(ids).to_numpy(dtype=object) != content_ids(subset)
    rows.add(wrong, "`measurement_id` must be the measurement_key of the row's kind, workload, config and "
             "hardware_id", frame["measurement_id"])


def content_ids(frame: pd.DataFrame) -> np.ndarray:
    """``measurement_key`` of each row, made as the importers make it (``measurement_ids``) for
    each group of rows with one kind, hardware id and set of filled workload / config columns."""
    params = [c for c in frame.columns if str(c).startswith(PARAM_PREFIXES)]
    filled = frame[params].notna().to_numpy()
    keys = {"kind": frame["kind"].reset_index(drop=True), "hardware_id": frame["hardware_id"].reset_index(drop=True)}
    for i, code in enumerate(_fill_codes(filled)):
        keys[f"filled{i}"] = code
    out = np.empty(len(frame), dtype=object)
    for key, index in pd.DataFrame(keys).groupby(list(keys), sort=False).indices.items():
        rows = frame.iloc[index][[c for c, on in zip(params, filled[index[0]], strict=True) if on]]
        out[index] = measurement_ids(key[0], key[1], _unprefixed(rows, WORKLOAD_PREFIX),
                                     _unprefixed(rows, CONFIG_PREFIX))
    return out


def _unprefixed(rows: pd.DataFrame, prefix: str) -> pd.DataFrame:
    """The columns of ``rows`` named ``<prefix>key``, named ``key``."""
    mine = [c for c in rows.columns if c.startswith(prefix)]
    return rows[mine].set_axis([c[len(prefix):] for c in mine], axis=1)


def _fill_codes(filled: np.ndarray) -> list[np.ndarray]:
    """Which columns each row fills, as one integer per 62 columns (a bit each)."""
    codes = []
    for start in range(0, filled.shape[1], 62):
        block = filled[:, start:start + 62].astype(np.int64)
        codes.append(block @ (np.int64(1) << np.arange(block.shape[1], dtype=np.int64)))
    return codes or [np.zeros(len(filled), dtype=np.int64)]
