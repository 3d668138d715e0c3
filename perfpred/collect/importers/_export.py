"""Write a GEMM or kernel table back as a Kernel Tuner cache file.

Kernel Tuner (``simulation_mode=True``), the benchmark hub and other tuners read this
format, so any table perfpred holds (imported, collected or replayed) can be shared with
them. One file describes one device, one kind of row and one problem: the tune parameters
are the ``config.*`` columns, and every ``workload.*`` column must hold one value (a GEMM
table's m, n, k are picked with ``workload=``, not tuned: Kernel Tuner tunes a space of
configurations for a fixed problem). A Kernel Tuner cache holds one entry per configuration,
so of a configuration measured more than once (stored repeats, ``<id>-<hash>``) only the
latest record is written; :class:`KernelTunerExport` says how many rows that left out.

Kernel Tuner ignores keys it does not know, so the file also carries what its format has
no slot for: a top-level ``perfpred`` block (kind, the workload, the full hardware spec)
and ``perfpred_*`` entry keys (statuses other than its three failure strings, power,
statistics of rows without replicates). The Kernel Tuner importer reads them back, so
import -> export -> import gives the same rows (same ``measurement_id``, statuses, times
and metrics; only ``source`` names the new file), repeats aside.

Kernel Tuner keys an entry by ``str()`` of each typed value, and a store column holds one
type. Rows imported from a Kernel Tuner cache keep that cache's ``tune_params`` (see
``_kernel_tuner``); where every exported row keeps the same ones and each stored value is one
of them, the file gets those ``tune_params`` as they were (order of parameters and of values,
1 and 1.0 apart) and every value in its original form, so the keys are the original cache's.
Otherwise (rows perfpred measured, rows of several caches) the values are written as stored,
whole numbers among fractions as ints (:func:`_ints_among_fractions`), ``tune_params`` sorted.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from perfpred._files import write_text_atomically
from perfpred.collect.importers._frame import restore_int_columns
from perfpred.collect.importers._kernel_tuner import (
    FAILURE_STATUS,
    ORIGINAL_TUNE_PARAMS,
    PERFPRED_BLOCK,
    PERFPRED_ENTRY_FIELDS,
    PERFPRED_STAT_FIELDS,
    RATE_METRICS,
    STATUS_FAILURE,
    TIMING_METRICS,
    TUNE_PARAMS_RECORD,
)
from perfpred.datasets import MeasurementStore
from perfpred.datasets._schema import CONFIG_PREFIX, METRIC_PREFIX, WORKLOAD_PREFIX, key_value, python_scalar
from perfpred.errors import InvalidInputError

EXPORT_KINDS = ("kernel", "gemm")
OUTPUT_SUFFIXES = (".json", ".json.gz")
_METRIC_KEYS = {**{v: k for k, v in TIMING_METRICS.items()}, **{v: k for k, v in RATE_METRICS.items()}}
KERNEL_NAME = WORKLOAD_PREFIX + "kernel_name"


class ExportSelectionError(InvalidInputError):
    """An export refused for its arguments, worded for whoever gave them: the message names the
    Python arguments (``workload=``, with the ``perfpred export`` flag as a hint), ``cli_message``
    only the flags (``--workload``), for the CLI to show instead. Both are one line."""

    def __init__(self, message: str, cli_message: str) -> None:
        super().__init__(message)
        self.cli_message = cli_message


def _workload_flags(workload: dict[str, Any]) -> str:
    """``{'m': 4096, 'op': 'mlp'}`` as the CLI takes it: ``--workload m=4096 --workload op=mlp``."""
    return " ".join(f"--workload {key}={key_value(value)}" for key, value in workload.items())


@dataclass(frozen=True)
class KernelTunerExport:
    """What :func:`export_kernel_tuner_cache` wrote: the file, its entries and the rows left out."""

    path: Path
    entries: int
    repeated_configs: int = 0  # configurations with more than one row in the selection
    rows_left_out: int = 0  # their older rows, not written

    @property
    def note(self) -> str | None:
        """One line about the repeats left out, or None when there were none."""
        if not self.repeated_configs:
            return None
        return (f"{self.repeated_configs} configurations had repeats; each is exported as its latest record, "
                f"{self.rows_left_out} rows left out")


def _python_json(value: Any) -> Any:
    """json.dumps fallback for numpy scalars and arrays left in object columns."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _matches(column: pd.Series, value: Any) -> pd.Series:
    """Which cells of ``column`` hold ``value``, given as stored or as the CLI's text: a number
    column matches 0.5 and '0.5' (4096 and '4096'), a text column the value's text."""
    if pd.api.types.is_bool_dtype(column):
        return column == (str(value).lower() == "true")
    if pd.api.types.is_numeric_dtype(column):
        try:
            return column == float(value)
        except (TypeError, ValueError):
            return pd.Series(False, index=column.index)
    return column.map(lambda cell: not _missing(cell) and str(cell) == str(value))


def _select(table: pd.DataFrame, hardware_id: str | None, kind: str | None,
            workload: dict[str, Any] | None) -> pd.DataFrame:
    """The rows to export: one kind, one device, optionally one workload; else a clear error."""
    rows = table[table["kind"].isin([kind] if kind else EXPORT_KINDS)] if "kind" in table else table.iloc[0:0]
    if hardware_id is not None:
        rows = rows[rows["hardware_id"] == hardware_id]
    for key, value in (workload or {}).items():
        column = WORKLOAD_PREFIX + key
        rows = rows[_matches(rows[column], value)] if column in rows else rows.iloc[0:0]
    if rows.empty:
        what = f"no {kind or ' or '.join(EXPORT_KINDS)} rows"
        flags = " ".join(([f"--hardware-id {hardware_id}"] if hardware_id is not None else [])
                         + ([_workload_flags(workload)] if workload else []))
        raise ExportSelectionError(
            f"{what} match the selection (hardware_id={hardware_id!r}, workload={workload!r}); nothing to export",
            f"{what} match the selection ({flags}); nothing to export" if flags
            else f"{what} in the store; nothing to export")
    for name in ("kind", "hardware_id"):
        values = [str(v) for v in sorted(rows[name].dropna().unique())]
        if len(values) > 1:
            flag = f"--{name.replace('_', '-')}"
            raise ExportSelectionError(
                f"a Kernel Tuner cache holds one {name}, but the selection has {values}; "
                f"pass {name}={values[0]!r} (CLI: {flag} {values[0]}) to choose one",
                f"a Kernel Tuner cache holds one {name}, but the selection has {', '.join(values)}; "
                f"pass {flag} (e.g. {flag} {values[0]}) to choose one")
    return rows


def _problem_size(value: Any) -> Any:
    if value is None:
        return []
    parts = str(value).split("x")
    return [int(p) for p in parts] if all(p.isdigit() for p in parts) else str(value)


def _entry(row: dict[str, Any], keys: list[str], metric_cols: list[str], filled: list[str]) -> dict[str, Any]:
    entry: dict[str, Any] = {key: row[key] for key in keys}
    status = row.get("status", "ok")
    raw = row.get("raw_times_ms")
    raw = [] if raw is None or (not isinstance(raw, (list, np.ndarray))) else [float(t) for t in raw]
    if status == "ok":
        time = row.get("runtime_ms") if _missing(row.get("mean_ms")) else row["mean_ms"]
        if _missing(time):
            raise InvalidInputError(f"a Kernel Tuner entry needs a time, but the ok row {row.get('measurement_id')} "
                                    "has no runtime_ms")
        entry["time"] = float(time)
        if raw:
            entry["times"] = raw
    else:
        entry["time"] = STATUS_FAILURE[status]
    for column in metric_cols:
        value = row.get(column)
        if not _missing(value):
            name = column[len(METRIC_PREFIX):]
            entry[_METRIC_KEYS.get(name, name)] = float(value)
    for key in filled:
        entry[key] = 0.0
    entry["timestamp"] = str(row.get("timestamp") or "")
    extras: dict[str, Any] = {}
    error = row.get("error")
    # Kept exactly only where Kernel Tuner's failure string would not give them back.
    expected_error = None if status == "ok" else STATUS_FAILURE[status]
    if (status != "ok" and FAILURE_STATUS[STATUS_FAILURE[status]] != status) or (
            not _missing(error) and error != expected_error):
        extras["status"] = status
        if not _missing(error):
            extras["error"] = error
    for name in ("power_w", "energy_j", "load_avg_1m", "ref_runtime_ms"):
        if not _missing(row.get(name)):
            extras[name] = float(row[name])
    if row.get("power_source") not in (None, "unavailable"):
        extras["power_source"] = row["power_source"]
    software = json.loads(row.get("software_json") or "{}")
    software.pop(TUNE_PARAMS_RECORD, None)  # the file's tune_params say it
    if software:
        extras["software"] = software
    if status == "ok" and not raw:
        for name in PERFPRED_STAT_FIELDS:
            if not _missing(row.get(name)):
                extras[name] = python_scalar(row[name])
    for name in PERFPRED_ENTRY_FIELDS + PERFPRED_STAT_FIELDS:
        if name in extras:
            entry[f"perfpred_{name}"] = extras[name]
    return entry


def _sort_key(value: Any) -> tuple[str, Any]:
    # ints and floats of one parameter sort together (0.5, 1, 1.5); other types apart by type name
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return ("number" if number else type(value).__name__, value)


def _ints_among_fractions(rows: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Whole numbers as ints in a float column that also holds fractions.

    Kernel Tuner keys an entry by ``str()`` of each value, and a parameter written [0.5, 1, 1.5]
    is stored as float64, so its 1 would come back as "1.0", a key Kernel Tuner does not look
    up. For rows without one recorded ``tune_params`` (:func:`_recorded_tune_params`) the
    original types are not known; mixed int/float values are the common case in Kernel Tuner
    caches, so they win over a parameter written all as floats ([0.5, 1.0]).
    """
    for column in columns:
        values = rows[column]
        if values.dtype.kind != "f":
            continue
        whole = np.floor(values) == values
        if whole.any() and not whole.all():
            mixed = [int(v) if w else v for v, w in zip(values.tolist(), whole, strict=True)]
            rows = rows.assign(**{column: pd.Series(mixed, index=rows.index, dtype=object)})
    return rows


def _value_token(value: Any) -> tuple[str, Any] | None:
    """What a store keeps of a tune parameter value: its kind and value (1 and 1.0 are one)."""
    value = python_scalar(value)
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float)):
        return ("number", value)
    if isinstance(value, str):
        return ("string", value)
    return None


def _recorded_tune_params(rows: pd.DataFrame, config_cols: list[str]) -> list[list[Any]] | None:
    """The Kernel Tuner ``tune_params`` every row keeps (``[[name, [values...]], ...]``), if they
    all keep the same ones and those name exactly the exported parameters; else None."""
    if "software_json" not in rows:
        return None
    texts = set()
    for software in pd.unique(rows["software_json"]):
        try:
            record = json.loads(software).get(TUNE_PARAMS_RECORD) if isinstance(software, str) else None
        except (json.JSONDecodeError, AttributeError):
            return None
        if record is None:
            return None
        texts.add(json.dumps(record))
        if len(texts) > 1:
            return None
    record = json.loads(texts.pop())
    if not (isinstance(record, list) and all(isinstance(p, list) and len(p) == 2 and isinstance(p[0], str)
                                             and isinstance(p[1], list) for p in record)):
        return None
    names = [name for name, _ in record]
    if len(set(names)) != len(names) or set(names) != {c[len(CONFIG_PREFIX):] for c in config_cols}:
        return None
    return record


def _as_recorded(rows: pd.DataFrame, record: list[list[Any]]) -> pd.DataFrame | None:
    """``rows`` with each config value in its recorded form (1.0 as 1.0, 1 as 1, "1" as "1"), or
    None where a stored value is none of the recorded ones, or two of them (1 and 1.0)."""
    out = {}
    for name, values in record:
        column = CONFIG_PREFIX + name
        original: dict[tuple[str, Any], Any] = {}
        twice = set()
        for value in values:
            token = _value_token(value)
            if token in original:
                twice.add(token)
            original[token] = value
        cells = rows[column].tolist()
        tokens = [_value_token(v) for v in pd.unique(rows[column])]
        if any(t is None or t not in original or t in twice for t in tokens):
            return None
        out[column] = pd.Series([original[_value_token(v)] for v in cells], index=rows.index, dtype=object)
    return rows.assign(**out)


def _check_one_problem(rows: pd.DataFrame, config_cols: list[str], workload_cols: list[str]) -> None:
    """One-line errors for a selection that is not one kernel's configurations over one problem."""
    names = sorted(map(str, rows[KERNEL_NAME].dropna().unique())) if KERNEL_NAME in rows else []
    if rows["kind"].iloc[0] == "kernel" and len(names) > 1:  # a GEMM's kernel_name is what cuBLAS chose
        shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
        found = f"a Kernel Tuner cache holds one kernel, but the selection has {len(names)} kernels ({shown})"
        raise ExportSelectionError(
            f"{found}; pass workload={{'kernel_name': {names[0]!r}}} (CLI: --workload kernel_name={names[0]}) "
            "to choose one",
            f"{found}; pass --workload kernel_name={names[0]} to choose one")
    if not config_cols:
        raise InvalidInputError(f"a Kernel Tuner cache tunes config.* parameters, but the selected "
                                f"{rows['kind'].iloc[0]} rows have no config.* column: there are no "
                                "tunable parameters to export")
    varying = [c for c in workload_cols if rows[c].nunique(dropna=False) > 1]
    if varying:
        example = {c[len(WORKLOAD_PREFIX):]: key_value(rows[c].iloc[0]) for c in varying}
        found = (f"a Kernel Tuner cache tunes config.* over one problem, but the workload columns "
                 f"{', '.join(example)} vary across the {len(rows)} selected rows")
        raise ExportSelectionError(
            f"{found}; pick one with workload={{KEY: VALUE}}, e.g. workload={example!r} "
            f"(CLI: {_workload_flags(example)})",
            f"{found}; pick one with --workload KEY=VALUE, e.g. {_workload_flags(example)}")


def export_kernel_tuner_cache(
    data: pd.DataFrame | MeasurementStore,
    path: str | os.PathLike[str],
    *,
    hardware_id: str | None = None,
    kind: str | None = None,
    workload: dict[str, Any] | None = None,
    objective: str = "time",
) -> KernelTunerExport:
    """Write the kernel / GEMM rows of ``data`` as a Kernel Tuner cache file at ``path``.

    ``path`` ending in ``.gz`` is gzipped. ``hardware_id`` / ``kind`` / ``workload`` pick the
    rows when the table holds several devices, kinds or problems: the selected rows must share
    one value of every workload column, and their ``config.*`` columns are the tune parameters.
    Returns the path written with the counts of entries and of repeats left out.
    """
    _check_output(Path(path))
    table = data.load() if isinstance(data, MeasurementStore) else data
    if not isinstance(table, pd.DataFrame):
        raise InvalidInputError(f"`data` must be a DataFrame or a MeasurementStore, but got {type(data).__name__}")
    if kind is not None and kind not in EXPORT_KINDS:
        raise ExportSelectionError(f"`kind` must be one of {EXPORT_KINDS}, but got kind={kind!r}",
                                   f"--kind must be {' or '.join(EXPORT_KINDS)}, but got {kind!r}")
    rows = _select(table, hardware_id, kind, workload)
    rows = rows.dropna(axis=1, how="all")
    config_cols = [c for c in rows.columns if c.startswith(CONFIG_PREFIX)]
    workload_cols = [c for c in rows.columns if c.startswith(WORKLOAD_PREFIX)]
    _check_one_problem(rows, config_cols, workload_cols)
    for column in config_cols:
        missing = int(rows[column].isna().sum())
        if missing:
            raise InvalidInputError(f"`{column}` must be set in every exported row, but {missing} of {len(rows)} "
                                    "rows lack it; select rows that share the same parameters")
    rows = restore_int_columns(rows, table, config_cols + workload_cols)
    record = _recorded_tune_params(rows, config_cols)
    as_recorded = _as_recorded(rows, record) if record is not None else None
    if as_recorded is None:
        record = None
        rows = _ints_among_fractions(rows, config_cols)
    else:
        rows = as_recorded
        config_cols = [CONFIG_PREFIX + name for name, _ in record]  # the cache's order
    constant = {c[len(WORKLOAD_PREFIX):]: python_scalar(rows[c].iloc[0]) for c in workload_cols}
    renamed = {c: c[len(CONFIG_PREFIX):] for c in config_cols}
    keys = list(renamed.values())
    metric_cols = [c for c in rows.columns if c.startswith(METRIC_PREFIX)]
    filled = [k for k in TIMING_METRICS if METRIC_PREFIX + TIMING_METRICS[k] not in rows.columns]
    hardware_counts = rows["hardware_json"].value_counts()
    hardware = json.loads(hardware_counts.index[0]) if len(hardware_counts) else {}
    hardware.setdefault("hardware_id", str(rows["hardware_id"].iloc[0]))  # a spec without its id (e.g. "{}")
    rows = rows.rename(columns=renamed)
    names = list(rows.columns)
    columns = [rows[c].tolist() for c in names]  # Python scalars, column by column (fast)
    cache: dict[str, Any] = {}
    repeated: set[str] = set()
    for values in zip(*columns, strict=True):  # in stored order: a configuration's latest record wins
        entry = _entry(dict(zip(names, values, strict=True)), keys, metric_cols, filled)
        key = ",".join(str(entry[k]) for k in keys)
        if key in cache:
            repeated.add(key)
        cache[key] = entry
    doc = {
        "schema_version": "1.1.0",
        "device_name": hardware.get("name") or hardware.get("gpu_name") or hardware.get("hardware_name")
        or hardware["hardware_id"],
        "kernel_name": str(constant.get("kernel_name") or constant.get("op") or rows["kind"].iloc[0]),
        "problem_size": _problem_size(constant.get("problem_size")),
        "tune_params_keys": keys,
        "tune_params": dict(record) if record is not None
        else {k: sorted(pd.unique(rows[k]).tolist(), key=_sort_key) for k in keys},
        "objective": objective,
        PERFPRED_BLOCK: {"kind": rows["kind"].iloc[0], "hardware": hardware, "workload": constant,
                         "filled_keys": filled, **({ORIGINAL_TUNE_PARAMS: True} if record is not None else {})},
        # Last, as Kernel Tuner writes it: it treats a file not ending in "}}}" as cut short.
        "cache": cache,
    }
    written = _write(Path(path), doc)
    return KernelTunerExport(written, len(cache), len(repeated), len(rows) - len(cache))


def _check_output(path: Path) -> None:
    """Refuse, before any work, an output that would not be a Kernel Tuner cache file."""
    if path.is_dir():
        raise InvalidInputError(f"the output must be a file to write the cache to, but '{path}' is a folder")
    if not path.name.endswith(OUTPUT_SUFFIXES):
        raise InvalidInputError(f"the output name must end in {' or '.join(OUTPUT_SUFFIXES)} (a Kernel Tuner cache "
                                f"is JSON), but got '{path.name}'")


def _write(path: Path, doc: dict[str, Any]) -> Path:
    """Atomically (tuning workers sharing a space export the same cache at once)."""
    text = json.dumps(doc, allow_nan=False, default=_python_json)
    try:
        return write_text_atomically(path, text, compress=path.name.endswith(".gz"))
    except OSError as exc:
        raise InvalidInputError(f"cannot write the cache to '{path}': {exc.strerror or type(exc).__name__}") from exc
