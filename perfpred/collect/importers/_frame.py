"""Flat Measurement rows built column-wise, with the same ids ``Measurement`` computes.

Big recorded tables (241,600 UCI rows) cannot afford one Python object per row, so
:func:`build_frame` writes the flat layout directly, with ids from
``perfpred.datasets._schema.measurement_ids``, which rebuilds ``Measurement``'s canonical JSON
column by column before hashing it: rows written in bulk
de-duplicate against rows written one Measurement at a time. Replicate statistics use the
definitions of ``perfpred.collect.TimingResult``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from perfpred.datasets import SCHEMA_VERSION
from perfpred.datasets._schema import CONFIG_PREFIX, FIXED_COLUMNS, METRIC_PREFIX, WORKLOAD_PREFIX, measurement_ids


def replicate_stats(raw: np.ndarray) -> dict[str, np.ndarray]:
    """Median / min / mean / std (ddof=1) / IQR / cv of each row of a (rows x replicates) array.

    The same definitions as ``perfpred.collect.TimingResult`` so imported and collected
    spreads compare like with like.
    """
    raw = np.asarray(raw, dtype=float)
    n = raw.shape[1] if raw.ndim == 2 else 0
    if raw.ndim != 2 or n == 0:
        empty = np.full(raw.shape[0] if raw.ndim else 0, np.nan)
        return {"runtime_ms": empty, "min_ms": empty, "mean_ms": empty, "std_ms": empty, "iqr_ms": empty,
                "cv": empty}
    with np.errstate(over="ignore", invalid="ignore"):  # absurd times give inf, refused by finish()
        median = np.median(raw, axis=1)
        mean = raw.mean(axis=1)
        std = raw.std(axis=1, ddof=1) if n > 1 else np.zeros(raw.shape[0])
        q75, q25 = np.percentile(raw, [75, 25], axis=1)
        cv = np.divide(std, mean, out=np.zeros_like(std), where=mean > 0)
    return {"runtime_ms": median, "min_ms": raw.min(axis=1), "mean_ms": mean, "std_ms": std,
            "iqr_ms": q75 - q25, "cv": cv}


def ragged_stats(raw: Sequence[Sequence[float]]) -> dict[str, np.ndarray]:
    """:func:`replicate_stats` for rows with different replicate counts (0 -> NaN)."""
    n = len(raw)
    out = {k: np.full(n, np.nan) for k in ("runtime_ms", "min_ms", "mean_ms", "std_ms", "iqr_ms", "cv")}
    lengths = np.fromiter((len(r) for r in raw), dtype=np.int64, count=n)
    for length in np.unique(lengths):
        if length == 0:
            continue
        idx = np.flatnonzero(lengths == length)
        stats = replicate_stats(np.array([raw[i] for i in idx], dtype=float))
        for key, values in stats.items():
            out[key][idx] = values
    return out


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _column(value: Any, n: int, dtype: Any = None) -> Any:
    if isinstance(value, (pd.Series, np.ndarray, list)):
        arr = value.to_numpy() if isinstance(value, pd.Series) else value
        if len(arr) != n:
            raise ValueError(f"column length {len(arr)} != {n}")
        return arr
    if dtype is object:  # object arrays: pandas would otherwise convert every string column to Arrow
        return np.full(n, value, dtype=object)
    return np.full(n, value if value is not None else np.nan, dtype=dtype)


def _frame_of(values: Mapping[str, Any], n: int) -> pd.DataFrame:
    cols = {}
    for key, value in values.items():
        if isinstance(value, (pd.Series, np.ndarray, list)):
            cols[key] = pd.Series(value.to_numpy() if isinstance(value, pd.Series) else value)
        else:
            cols[key] = pd.Series([value] * n, dtype=object if isinstance(value, str) else None)
    frame = pd.DataFrame(cols, index=pd.RangeIndex(n))
    for key in frame.columns:
        if frame[key].isna().any():
            raise ValueError(f"workload/config column {key!r} has missing values")
    return frame


def build_frame(
    *,
    kind: str,
    hardware: dict[str, Any],
    source: str,
    workload: Mapping[str, Any],
    config: Mapping[str, Any],
    n: int,
    metrics: Mapping[str, Any] | None = None,
    status: Any = "ok",
    error: Any = None,
    runtime_ms: Any = None,
    raw_times_ms: list[list[float]] | None = None,
    n_runs: Any = None,
    min_ms: Any = None,
    mean_ms: Any = None,
    std_ms: Any = None,
    iqr_ms: Any = None,
    cv: Any = None,
    power_w: Any = None,
    energy_j: Any = None,
    power_source: Any = "unavailable",
    timestamp: Any = None,
    software: dict[str, Any] | pd.Series | None = None,
) -> pd.DataFrame:
    """``n`` rows in the flat Measurement layout, equal to ``Measurement(...).to_row()`` row by row.

    Scalars broadcast; arrays give one value per row. Workload and config columns must be
    complete (they define the row's id); metric columns may hold NaN where a row has no value.
    """
    hardware_id = hardware["hardware_id"]
    wl = _frame_of(workload, n)
    cf = _frame_of(config, n)
    raw = raw_times_ms if raw_times_ms is not None else [[] for _ in range(n)]
    if n_runs is None:
        n_runs = np.array([len(r) if len(r) else np.nan for r in raw], dtype=float)
    out: dict[str, Any] = {
        "measurement_id": measurement_ids(kind, hardware_id, wl, cf),
        "schema_version": np.full(n, SCHEMA_VERSION, dtype=np.int64),
        "kind": _column(kind, n, object),
        "hardware_id": _column(hardware_id, n, object),
        "status": _column(status, n, object),
        "runtime_ms": _column(runtime_ms, n, float),
        "raw_times_ms": raw,
        "n_runs": _column(n_runs, n, float),
        "min_ms": _column(min_ms, n, float),
        "mean_ms": _column(mean_ms, n, float),
        "std_ms": _column(std_ms, n, float),
        "iqr_ms": _column(iqr_ms, n, float),
        "cv": _column(cv, n, float),
        "power_w": _column(power_w, n, float),
        "energy_j": _column(energy_j, n, float),
        "power_source": _column(power_source, n, object),
        "load_avg_1m": np.full(n, np.nan),
        "ref_runtime_ms": np.full(n, np.nan),
        "error": _column(error, n, object),
        "source": _column(source, n, object),
        "timestamp": _column(timestamp if timestamp is not None else now_iso(), n, object),
        "hardware_json": _column(json.dumps(hardware, sort_keys=True, separators=(",", ":"), default=str), n, object),
        "software_json": (software.to_numpy(dtype=object) if isinstance(software, pd.Series) else
                          _column(json.dumps(software or {}, sort_keys=True, separators=(",", ":"), default=str),
                                  n, object)),
    }
    out.update({WORKLOAD_PREFIX + k: wl[k].to_numpy() for k in wl.columns})
    out.update({CONFIG_PREFIX + k: cf[k].to_numpy() for k in cf.columns})
    for key, value in (metrics or {}).items():
        out[METRIC_PREFIX + key] = _column(value, n, float)
    return pd.DataFrame({key: _series(value, n) for key, value in out.items()}, index=pd.RangeIndex(n))


def _series(values: Any, n: int) -> pd.Series:
    """A column as given: object arrays stay object (no per-string conversion to Arrow)."""
    if isinstance(values, list) or (isinstance(values, np.ndarray) and values.dtype == object):
        return pd.Series(values, dtype=object, index=pd.RangeIndex(n))
    return pd.Series(values, index=pd.RangeIndex(n))


def restore_int_columns(rows: pd.DataFrame, table: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Undo the float upcast pandas applies to integer columns that other rows lacked.

    ``MeasurementStore.load`` concatenates parts; a ``workload.m`` column absent from some
    parts comes back as float (4096.0), which would change the canonical JSON and so the
    ``measurement_id`` of a row rebuilt from it. Only columns that held NaN in the whole
    ``table`` (the sign of that upcast) and hold whole numbers in ``rows`` are converted.
    """
    rows = rows.copy()
    for column in columns:
        values = rows[column]
        if (values.dtype.kind == "f" and table[column].isna().any() and values.notna().all()
                and bool(np.all(np.floor(values) == values))):
            rows[column] = values.astype(np.int64)
    return rows


def concat_frames(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=list(FIXED_COLUMNS))
    if len(frames) == 1:
        return frames[0]
    return pd.concat(frames, ignore_index=True, sort=False)
