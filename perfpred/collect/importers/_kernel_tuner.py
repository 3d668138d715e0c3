"""Kernel Tuner files: cache files (``.json`` / ``.json.gz``) and T4 results files.

A cache file (Kernel Tuner's ``cache=`` output, the format of the FAIR benchmark hub) is
``{device_name, kernel_name, problem_size, tune_params_keys, tune_params, objective, cache}``
where ``cache["v1,v2,..."]`` holds the tune parameters, ``time`` (mean ms, or a failure
string such as ``"RuntimeFailedConfig"``), ``times`` (raw ms), ``compile_time``,
``verification_time``, ``benchmark_time``, ``framework_time``, ``strategy_time`` (ms),
``GFLOP/s`` or ``GB/s`` and ``timestamp``. Kernel Tuner 1.5 marks a failed configuration
with ``"__error__": "<failure>"`` (older versions put the failure string in ``time``); like
its ``read_cache``, any of its failure strings in an entry makes the entry a failed row.

Kernel Tuner writes a cache while it tunes: a header ending in ``"cache": {``, then one
``"key": {...},`` line per configuration, closed only when tuning ends. A file without the
closing braces (an interrupted run) is read as ``kernel_tuner.util.read_cache`` reads it:
drop one trailing comma, append ``}\n}``, parse. Its complete entries import, and the
report says the cache was unfinished. A file cut in the middle of an entry cannot be
closed that way (Kernel Tuner refuses it too) and stays a one-line invalid-JSON error.

A T4 results file (Kernel Tuner's ``output_file=``, schema ``T4/1.0.0/results-schema.json``)
is ``{schema_version, results: [{configuration, times: {compilation, benchmark, framework,
search_algorithm, validation, runtimes}, invalidity, correctness, measurements, objectives}]}``.
Its times (the ``times`` block) are in the unit its ``metadata.timeunit`` names (Kernel Tuner
1.5 writes ``"milliseconds"``; older versions write no metadata, and ms); a measurement
carries its own ``unit`` (Kernel Tuner: ``"ms"`` for ``time``). Both are converted to ms.
It does not name the device: pass ``device_name=...`` or keep the T4 metadata file (with
its nvidia-smi query) beside it. ``kernel_name`` defaults to the file's stem, and it records
no problem size: pass ``problem_size=4096x4096`` (and the cache's ``kernel_name``) to give
its rows the workload, hence the ids, of the same run's cache rows.

Each configuration becomes one ``kind="kernel"`` Measurement: workload = kernel name and
problem size, config = the tune parameters, ``runtime_ms`` = median of the raw times,
``mean_ms`` = Kernel Tuner's ``time``. A failed configuration is a row with its status
(``runtime_error`` / ``compile_error`` / ``invalid``) and the failure string in ``error``.

Files written by :func:`export_kernel_tuner_cache` also carry a ``perfpred`` block (kind,
workload, hardware spec) and ``perfpred_*`` entry keys, which Kernel Tuner ignores and
this importer reads back, so export -> import reproduces the original rows.

A store column holds one type, so it cannot tell a parameter written ``[0.5, 1.0]`` from one
written ``[0.5, 1]``, yet Kernel Tuner keys an entry by ``str()`` of each typed value ("1.0"
vs "1"). So each row of a cache file also keeps the file's ``tune_params`` (values with their
types, parameters and values in the file's order) in its ``software_json``, under
``kernel_tuner_tune_params`` as ``[[name, [values...]], ...]``; the exporter writes them back
as they were. The software column is in neither the ``measurement_id`` nor the values a
duplicate is told by, so ids and de-duplication are those of a row without it. A file written
by the exporter (it has a ``perfpred`` block) carries them only where its block says
``"original_tune_params": true`` (its rows had one such record); its other tune_params are
the exporter's own and are not recorded.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from perfpred.collect.importers._base import FileImport, Importer, finish
from perfpred.collect.importers._checks import MAX_EXAMPLES, is_finite_number
from perfpred.collect.importers._frame import build_frame, now_iso, ragged_stats
from perfpred.collect.importers._gpus import gpu_hardware
from perfpred.collect.importers._read import head_text, json_text, read_json
from perfpred.datasets import KINDS, POWER_SOURCES, STATUSES
from perfpred.datasets._store import value_kind
from perfpred.errors import InvalidInputError

# Kernel Tuner 1.5's failure strings (``kernel_tuner.util.ErrorConfig`` and its subclasses);
# the bare base class says only that the configuration failed, so it counts as a runtime error.
FAILURE_STATUS = {"RuntimeFailedConfig": "runtime_error", "CompilationFailedConfig": "compile_error",
                  "InvalidConfig": "invalid", "ErrorConfig": "runtime_error"}
ERROR_KEY = "__error__"
# Statuses Kernel Tuner has no string for are written as the closest one (and kept exactly
# in the ``perfpred_status`` entry key).
STATUS_FAILURE = {"runtime_error": "RuntimeFailedConfig", "compile_error": "CompilationFailedConfig",
                  "invalid": "InvalidConfig", "timeout": "RuntimeFailedConfig", "oom": "RuntimeFailedConfig"}
TIMING_METRICS = {"compile_time": "compile_time_ms", "verification_time": "verification_time_ms",
                  "benchmark_time": "benchmark_time_ms", "framework_time": "framework_time_ms",
                  "strategy_time": "strategy_time_ms"}
RATE_METRICS = {"GFLOP/s": "gflops", "GB/s": "gbs"}
T4_TIMES = {"compilation": "compile_time_ms", "compilation_time": "compile_time_ms",
            "benchmark": "benchmark_time_ms", "framework": "framework_time_ms",
            "search_algorithm": "strategy_time_ms", "validation": "verification_time_ms"}
T4_STATUS = {"correct": "ok", "compile": "compile_error", "runtime": "runtime_error", "timeout": "timeout",
             "constraints": "invalid", "correctness": "runtime_error"}
# ms per unit of a T4 time: the names `metadata.timeunit` takes, and the short ones a measurement's
# `unit` may use too.
T4_TIME_UNITS = {"seconds": 1e3, "milliseconds": 1.0, "microseconds": 1e-3, "nanoseconds": 1e-6}
MEASUREMENT_UNITS = {**T4_TIME_UNITS, "s": 1e3, "ms": 1.0, "us": 1e-3, "µs": 1e-3, "ns": 1e-6}
PERFPRED_BLOCK = "perfpred"
# Row fields a Kernel Tuner cache has no slot for; written as "perfpred_<name>" entry keys.
PERFPRED_ENTRY_FIELDS = ("status", "error", "power_w", "energy_j", "power_source", "load_avg_1m",
                         "ref_runtime_ms", "software")
# Statistics of rows recorded without replicates (they cannot be recomputed from `times`);
# where `perfpred_runtime_ms` is given, these keys alone define the row's statistics.
PERFPRED_STAT_FIELDS = ("runtime_ms", "n_runs", "min_ms", "mean_ms", "std_ms", "iqr_ms", "cv")
_RESERVED = {"time", "times", "timestamp", ERROR_KEY} | set(TIMING_METRICS)
# Kernel Tuner's read_cache treats a file whose text does not end like this as unfinished.
_CLOSED_ENDINGS = ("}\n}", "}}}")
# A parameter's kinds of value, most likely first when as many rows have each (a string among
# numbers is a damaged number far more often than the other way round).
_VALUE_KINDS = ("number", "string", "bool")
_PERFPRED_KEYS = {f"perfpred_{name}" for name in PERFPRED_ENTRY_FIELDS + PERFPRED_STAT_FIELDS}
# Where a row keeps its cache file's tune_params (software_json key), and the perfpred block's
# flag saying an exported file's tune_params are the recorded ones (see the module docstring).
TUNE_PARAMS_RECORD = "kernel_tuner_tune_params"
ORIGINAL_TUNE_PARAMS = "original_tune_params"


def metric_name(key: str) -> str:
    """Metric column name of a cache entry key: 'GFLOP/s' -> 'gflops', 'my Value' -> 'my_value'."""
    if key in RATE_METRICS:
        return RATE_METRICS[key]
    return re.sub(r"[^a-z0-9]+", "_", key.lower()).strip("_") or "value"


def parse_problem_size(text: str) -> int | str | list[int | str]:
    """The ``problem_size`` option as Kernel Tuner writes it in a cache: '4096x4096' (or
    '4096,4096') -> [4096, 4096], '4096' -> 4096, so it gives a cache's workload keys."""
    parts: list[int | str] = [int(d) if d.strip().isdigit() else d.strip() for d in re.split(r"[x,]", text)]
    return parts if len(parts) > 1 else parts[0]


def problem_size_workload(problem_size: Any) -> dict[str, Any]:
    """Workload keys of a Kernel Tuner problem size: a 'AxB' string plus per-dim ints (x, y, z)."""
    if problem_size is None or problem_size == []:
        return {}
    dims = problem_size if isinstance(problem_size, list) else [problem_size]
    out: dict[str, Any] = {"problem_size": "x".join(str(d) for d in dims)}
    if len(dims) <= 3 and all(isinstance(d, int) and not isinstance(d, bool) for d in dims):
        out.update({f"problem_size_{axis}": d for axis, d in zip("xyz", dims, strict=False)})
    return out


@dataclass
class _Rows:
    """Column lists of the configurations parsed so far (one entry per good row)."""

    params: list[list[Any]] = field(default_factory=list)
    status: list[str] = field(default_factory=list)
    error: list[str | None] = field(default_factory=list)
    mean_ms: list[float] = field(default_factory=list)
    times: list[list[float]] = field(default_factory=list)
    metrics: list[dict[str, float]] = field(default_factory=list)
    timestamp: list[str] = field(default_factory=list)
    extras: list[dict[str, Any]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)
    n_bad: int = 0

    def reject(self, reason: str) -> None:
        self.n_bad += 1
        if len(self.bad) < MAX_EXAMPLES:
            self.bad.append(reason)

    def drop(self, rows: set[int]) -> None:
        """Forget the parsed rows at these positions (they turned out bad)."""
        for name in ("params", "status", "error", "mean_ms", "times", "metrics", "timestamp", "extras", "labels"):
            values = getattr(self, name)
            values[:] = [v for i, v in enumerate(values) if i not in rows]


def _reject_mixed_kinds(path: Path, keys: list[str], rows: _Rows) -> None:
    """Rows whose tune parameter is of another kind than most of its values in the file are bad.

    A store column holds one type; one ``"block_size_y": "abc"`` among numbers would turn
    the whole column, old rows included, into strings.
    """
    bad: dict[int, str] = {}
    for position, key in enumerate(keys):
        kinds = [value_kind(params[position]) for params in rows.params]
        counts = Counter(kind for kind in kinds if kind is not None)  # None: a missing value
        if len(counts) < 2:
            continue
        # Ties go to the first kind in _VALUE_KINDS.
        major = max(counts, key=lambda kind: (counts[kind], -_VALUE_KINDS.index(kind) if kind in _VALUE_KINDS else -99))
        for i, kind in enumerate(kinds):
            if kind is not None and kind != major and i not in bad:
                value = rows.params[i][position]
                bad[i] = (f"{path.name}: {rows.labels[i]}: tune parameter {key!r} must be a {major} like "
                          f"{counts[major]} of its {len(kinds)} values in the file, but got {value!r}")
    for i in sorted(bad):
        rows.reject(bad[i])
    if bad:
        rows.drop(set(bad))


class _Bad(Exception):
    """One configuration breaks a rule; the message says which and the value."""


def _param_values(entry: dict[str, Any], keys: list[str]) -> list[Any]:
    try:  # fast path: every parameter present as an int or a string
        values = [entry[key] for key in keys]
        if set(map(type, values)) <= {int, str}:
            return values
    except KeyError:
        pass
    values = []
    for key in keys:
        if key not in entry:
            raise _Bad(f"tune parameter {key!r} must be present, but it is missing")
        value = entry[key]
        if not isinstance(value, (int, float, str, bool)) or (isinstance(value, float) and not np.isfinite(value)):
            raise _Bad(f"tune parameter {key!r} must be a finite number or a string, but got {value!r}")
        values.append(value)
    return values


def _raw_times(times: Any, name: str) -> list[float]:
    if times is None:
        return []
    if not isinstance(times, list):
        raise _Bad(f"`{name}` must be a list of ms, but got {type(times).__name__}")
    if set(map(type, times)) <= {float, int}:  # fast path: plain numbers, checked at once
        arr = np.array(times, dtype=float)
        if np.isfinite(arr).all() and (arr > 0).all():
            return arr.tolist()
    for i, t in enumerate(times):
        if not is_finite_number(t):
            raise _Bad(f"`{name}[{i}]` must be a finite number, but got {t!r}")
        if t <= 0:
            raise _Bad(f"`{name}[{i}] > 0` must hold, but got {t!r}")
    return [float(t) for t in times]


def _timing(value: Any, name: str) -> float:
    if not is_finite_number(value):
        raise _Bad(f"`{name}` must be a finite number of ms, but got {value!r}")
    if value < 0:
        raise _Bad(f"`{name} >= 0` must hold, but got {value!r}")
    return float(value)


def _extras(entry: dict[str, Any]) -> dict[str, Any]:
    """perfpred_* keys written by the exporter, checked against the schema's vocabularies."""
    out: dict[str, Any] = {}
    present = entry.keys() & _PERFPRED_KEYS
    if not present:
        return out
    for name in PERFPRED_ENTRY_FIELDS + PERFPRED_STAT_FIELDS:
        value = entry.get(f"perfpred_{name}")
        if value is None:
            continue
        if name == "status" and value not in STATUSES:
            raise _Bad(f"`perfpred_status` must be one of {STATUSES}, but got {value!r}")
        if name == "power_source" and value not in POWER_SOURCES:
            raise _Bad(f"`perfpred_power_source` must be one of {POWER_SOURCES}, but got {value!r}")
        if name in ("power_w", "energy_j", "load_avg_1m", "ref_runtime_ms") and not is_finite_number(value):
            raise _Bad(f"`perfpred_{name}` must be a finite number, but got {value!r}")
        if name in PERFPRED_STAT_FIELDS and (not is_finite_number(value) or value < 0):
            raise _Bad(f"`perfpred_{name} >= 0` must hold, but got {value!r}")
        if name == "software" and not isinstance(value, dict):
            raise _Bad(f"`perfpred_software` must be an object, but got {value!r}")
        out[name] = value
    has_power = out.get("power_w") is not None or out.get("energy_j") is not None
    if has_power and out.get("power_source", "unavailable") == "unavailable":
        raise _Bad("`perfpred_power_source` must name the sensor of a power reading, "
                   f"but got {out.get('power_source')!r}")
    return out


def _failure(entry: dict[str, Any]) -> str | None:
    """The Kernel Tuner failure string of an entry: ``__error__`` (1.5), else ``time`` (older
    caches), else any value that is one, as ``kernel_tuner.util.read_cache`` looks for it."""
    error = entry.get(ERROR_KEY)
    if error is not None:
        if error not in FAILURE_STATUS:
            raise _Bad(f"`{ERROR_KEY}` must be one of {tuple(FAILURE_STATUS)}, but got {error!r}")
        return error
    candidates = [entry.get("time"), *entry.values()]
    return next((v for v in candidates if isinstance(v, str) and v in FAILURE_STATUS), None)


def _cache_entry(entry: Any, keys: list[str], rows: _Rows, filled: frozenset[str] = frozenset()) -> None:
    if not isinstance(entry, dict):
        raise _Bad(f"a cache entry must be an object, but got {type(entry).__name__}")
    params = _param_values(entry, keys)
    time = entry.get("time")
    failure = _failure(entry)
    if failure is not None:
        status, error, mean, times = FAILURE_STATUS[failure], failure, np.nan, []
    elif isinstance(time, str):
        raise _Bad(f"`time` must be a number or one of {tuple(FAILURE_STATUS)}, but got {time!r}")
    else:
        if not is_finite_number(time):
            raise _Bad(f"`time` must be a finite number of ms, but got {time!r}")
        if time <= 0:
            raise _Bad(f"`time > 0` must hold, but got {time!r}")
        status, error, mean = "ok", None, float(time)
        times = _raw_times(entry.get("times"), "times")
    metrics = {}
    for key, value in entry.items():
        if key in filled:
            continue
        if key in TIMING_METRICS:
            metrics[TIMING_METRICS[key]] = _timing(value, key)
        elif key in _RESERVED or key in keys or key.startswith("perfpred_"):
            continue
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            if not np.isfinite(value):
                raise _Bad(f"{key!r} must be a finite number, but got {value!r}")
            metrics[metric_name(key)] = float(value)
    extras = _extras(entry)
    if "status" in extras:
        status = extras["status"]
        error = extras.get("error", error)
        if status != "ok":
            mean, times = np.nan, []
        elif not np.isfinite(mean):
            raise _Bad(f"`time` must be a number for perfpred_status='ok', but got {time!r}")
    timestamp = entry.get("timestamp")
    rows.params.append(params)
    rows.status.append(status)
    rows.error.append(error)
    rows.mean_ms.append(mean)
    rows.times.append(times)
    rows.metrics.append(metrics)
    rows.timestamp.append(timestamp if isinstance(timestamp, str) else None)
    rows.extras.append(extras)


def _unit_ms(unit: Any, units: dict[str, float] = MEASUREMENT_UNITS) -> float | None:
    """ms per ``unit`` (None when it names none of ``units``)."""
    return units.get(unit.strip().lower()) if isinstance(unit, str) else None


def _t4_entry(result: Any, keys: list[str], rows: _Rows, scale: float = 1.0) -> None:
    """One T4 result; ``scale`` is ms per unit of its ``times`` block."""
    if not isinstance(result, dict):
        raise _Bad(f"a T4 result must be an object, but got {type(result).__name__}")
    config = result.get("configuration")
    if not isinstance(config, dict):
        raise _Bad(f"`configuration` must be an object, but got {config!r}")
    params = _param_values(config, keys)
    invalidity = result.get("invalidity")
    if not isinstance(invalidity, str) or invalidity not in T4_STATUS:
        raise _Bad(f"`invalidity` must be one of {tuple(T4_STATUS)}, but got {invalidity!r}")
    status = T4_STATUS[invalidity]
    times_block = result.get("times") or {}
    if not isinstance(times_block, dict):
        raise _Bad(f"`times` must be an object, but got {times_block!r}")
    metrics = {out: _timing(times_block[key], f"times.{key}") * scale for key, out in T4_TIMES.items()
               if times_block.get(key) is not None}
    measured = result.get("measurements") or []
    if not isinstance(measured, list):
        raise _Bad(f"`measurements` must be a list, but got {measured!r}")
    mean = np.nan
    for item in measured:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise _Bad(f"a measurement must be an object with a name, but got {item!r}")
        name, value = item["name"], item.get("value")
        if name == "time":
            if status == "ok":
                if not is_finite_number(value) or value <= 0:
                    raise _Bad(f"`time > 0` must hold for a correct configuration, but got {value!r}")
                # its own unit where it names one, else the file's
                unit = _unit_ms(item.get("unit")) if item.get("unit") else scale
                if unit is None:
                    raise _Bad(f"the `time` measurement's unit must be one of {tuple(MEASUREMENT_UNITS)}, but got "
                               f"{item.get('unit')!r}")
                mean = float(value) * unit
        elif is_finite_number(value):
            metrics[metric_name(name)] = float(value)
    times = _raw_times(times_block.get("runtimes"), "times.runtimes") if status == "ok" else []
    times = [t * scale for t in times] if scale != 1.0 else times
    if status == "ok" and not times and not np.isfinite(mean):
        raise _Bad("a correct configuration needs `times.runtimes` or a `time` measurement, but has neither")
    if status == "ok" and not np.isfinite(mean):
        mean = float(np.mean(times))
    timestamp = result.get("timestamp")
    rows.params.append(params)
    rows.status.append(status)
    rows.error.append(None if status == "ok" else f"T4 invalidity={invalidity}")
    rows.mean_ms.append(mean)
    rows.times.append(times)
    rows.metrics.append(metrics)
    rows.timestamp.append(timestamp if isinstance(timestamp, str) else None)
    rows.extras.append({})


def _t4_device_name(path: Path) -> str | None:
    """The GPU named by a T4 metadata file beside ``path`` (nvidia-smi product name), if any."""
    stem = path.name.removesuffix(".gz").removesuffix(".json")
    candidates = [path.parent / f"{stem}_metadata.json", path.parent / f"{stem}-metadata.json",
                  path.parent / "metadata.json", *sorted(path.parent.glob("*metadata*.json"))]
    for candidate in dict.fromkeys(candidates):
        if not candidate.is_file() or candidate == path:
            continue
        try:
            doc = read_json(candidate)
            gpu = doc["metadata"]["environment"]["device_query"]["nvidia-smi"]["nvidia_smi_log"]["gpu"]
        except (InvalidInputError, KeyError, TypeError):
            continue
        gpu = gpu[0] if isinstance(gpu, list) and gpu else gpu
        name = gpu.get("product_name") if isinstance(gpu, dict) else None
        if isinstance(name, str) and name.strip():
            return name.strip()
    return None


@dataclass
class _Header:
    """What a file says about all its rows: hardware, kind, constant workload, and which
    tune parameters are really workload keys (files exported from GEMM tables)."""

    hardware: dict[str, Any]
    kind: str
    workload: dict[str, Any]
    workload_keys: tuple[str, ...] = ()
    filled_keys: frozenset[str] = frozenset()


def _header(path: Path, doc: dict[str, Any], options: dict[str, Any]) -> _Header:
    """The file's :class:`_Header`, from its perfpred block or its Kernel Tuner header keys."""
    block = doc.get(PERFPRED_BLOCK)
    if isinstance(block, dict) and isinstance(block.get("hardware"), dict) and block["hardware"].get("hardware_id"):
        kind = block.get("kind", "kernel")
        if kind not in KINDS:
            raise InvalidInputError(f"{path.name}: `perfpred.kind` must be one of {KINDS}, but got {kind!r}")
        workload = block.get("workload") or {}
        workload_keys = block.get("workload_keys") or []
        if not isinstance(workload, dict) or not isinstance(workload_keys, list):
            raise InvalidInputError(
                f"{path.name}: `perfpred.workload` must be an object and `workload_keys` a list, but got "
                f"{type(workload).__name__} and {type(workload_keys).__name__}")
        filled = block.get("filled_keys") or []
        return _Header(block["hardware"], kind, workload, tuple(str(k) for k in workload_keys),
                       frozenset(str(k) for k in filled) if isinstance(filled, list) else frozenset())
    device = options.get("device_name") or doc.get("device_name")
    if device is None and "results" in doc:
        device = _t4_device_name(path)
        if device is None:
            raise InvalidInputError(
                f"{path.name}: a T4 results file does not name its GPU; pass device_name=... (CLI: --option "
                "device_name=...) or keep its T4 metadata file (with the nvidia-smi query) beside it")
    if not isinstance(device, str) or not device.strip():
        raise InvalidInputError(f"{path.name}: `device_name` must be a non-empty string, but got {device!r}")
    kernel = options.get("kernel_name") or doc.get("kernel_name") or path.name.removesuffix(".gz").removesuffix(".json")
    if not isinstance(kernel, str):
        raise InvalidInputError(f"{path.name}: `kernel_name` must be a string, but got {kernel!r}")
    problem_size = options.get("problem_size", doc.get("problem_size"))
    if isinstance(options.get("problem_size"), str):  # CLI: --option problem_size=4096x4096
        problem_size = parse_problem_size(problem_size)
        if "" in (problem_size if isinstance(problem_size, list) else [problem_size]):
            raise InvalidInputError(f"{path.name}: option problem_size must look like 4096x4096, but got "
                                    f"{options['problem_size']!r}")
    if not (problem_size is None or isinstance(problem_size, (int, str))
            or (isinstance(problem_size, list) and all(isinstance(d, (int, str)) for d in problem_size))):
        raise InvalidInputError(
            f"{path.name}: `problem_size` must be an int, a string or a list of them, but got {problem_size!r}")
    workload = {"kernel_name": kernel, **problem_size_workload(problem_size)}
    return _Header(gpu_hardware(device.strip()), "kernel", workload)


def _t4_scale(path: Path, doc: dict[str, Any]) -> float:
    """ms per unit of the file's ``times`` blocks, from its ``metadata.timeunit`` (default ms)."""
    metadata = doc.get("metadata")
    unit = metadata.get("timeunit", "milliseconds") if isinstance(metadata, dict) else "milliseconds"
    scale = _unit_ms(unit, T4_TIME_UNITS)
    if scale is None:
        raise InvalidInputError(f"{path.name}: `metadata.timeunit` must be one of {', '.join(T4_TIME_UNITS)}, "
                                f"but got {unit!r}")
    return scale


def _tune_keys(path: Path, doc: dict[str, Any]) -> list[str]:
    keys = doc.get("tune_params_keys")
    if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
        raise InvalidInputError(
            f"{path.name}: `tune_params_keys` must be a non-empty list of names, but got {str(keys)[:80]}")
    if not all(k.isprintable() and k for k in keys):
        raise InvalidInputError(f"{path.name}: tune parameter names must be printable, but got {keys}")
    if len(set(keys)) != len(keys):
        raise InvalidInputError(f"{path.name}: `tune_params_keys` must be unique, but got {keys}")
    return keys


def _tune_param_value(value: Any) -> bool:
    return isinstance(value, (bool, int, str)) or (isinstance(value, float) and np.isfinite(value))


def tune_params_record(doc: dict[str, Any], keys: list[str]) -> list[list[Any]] | None:
    """A cache's ``tune_params`` as rows keep them: ``[[name, [values...]], ...]`` in the order of
    ``tune_params_keys``, values as written (1 and 1.0 apart). None where the file has none that
    fit (missing, other names than ``tune_params_keys``, a value that is no scalar), and for a
    file the exporter wrote without the original ones."""
    block = doc.get(PERFPRED_BLOCK)
    if isinstance(block, dict) and block.get(ORIGINAL_TUNE_PARAMS) is not True:
        return None
    tune_params = doc.get("tune_params")
    if not isinstance(tune_params, dict) or set(tune_params) != set(keys):
        return None
    record = []
    for key in keys:
        values = tune_params[key]
        if not isinstance(values, list) or not values or not all(map(_tune_param_value, values)):
            return None
        record.append([key, list(values)])
    return record


def _t4_keys(path: Path, results: list[Any]) -> list[str]:
    keys: dict[str, None] = {}
    for result in results:
        if isinstance(result, dict) and isinstance(result.get("configuration"), dict):
            keys.update(dict.fromkeys(result["configuration"]))
    if not keys:
        raise InvalidInputError(f"{path.name}: a T4 results file needs results with a `configuration`, but has none")
    if not all(k.isprintable() and k for k in keys):
        raise InvalidInputError(f"{path.name}: tune parameter names must be printable, but got {list(keys)}")
    return list(keys)


class KernelTunerImporter(Importer):
    """Kernel Tuner cache files and T4 results files -> ``kind="kernel"`` Measurements."""

    name = "kernel-tuner"
    description = "Kernel Tuner cache files (.json/.json.gz) and T4 results files"
    patterns = ("*.json", "*.json.gz")
    options = ("device_name", "kernel_name", "problem_size")

    def sniff(self, path: Path) -> bool:
        head = head_text(path)
        return '"tune_params_keys"' in head or '"invalidity"' in head or ('"cache"' in head and '"device_name"' in head)

    def read(self, path: Path, **options: Any) -> FileImport:
        path = Path(path)
        doc, unfinished = read_cache_json(path)
        if not isinstance(doc, dict) or not ({"cache", "results"} & set(doc)):
            keys = list(doc)[:6] if isinstance(doc, dict) else type(doc).__name__
            raise InvalidInputError(
                f"{path.name}: a Kernel Tuner file needs a `cache` (cache file) or `results` (T4) key, but got {keys}")
        rows = _Rows()
        record = None
        if "cache" in doc:
            cache = doc["cache"]
            if not isinstance(cache, dict):
                raise InvalidInputError(f"{path.name}: `cache` must be an object, but got {type(cache).__name__}")
            keys = _tune_keys(path, doc)
            header = _header(path, doc, options)
            record = tune_params_record(doc, keys)
            if unfinished and not cache:
                raise InvalidInputError(f"{path.name}: an unfinished Kernel Tuner cache (no closing braces) must "
                                        "hold at least one complete entry, but it holds none")
            for key, entry in cache.items():
                try:
                    _cache_entry(entry, keys, rows, header.filled_keys)
                    rows.labels.append(f"cache[{key!r}]")
                except _Bad as exc:
                    rows.reject(f"{path.name}: cache[{key!r}]: {exc}")
            n_read = len(cache)
        else:
            results = doc["results"]
            if not isinstance(results, list):
                raise InvalidInputError(f"{path.name}: `results` must be a list, but got {type(results).__name__}")
            keys = _t4_keys(path, results)
            header = _header(path, doc, options)
            scale = _t4_scale(path, doc)
            for i, result in enumerate(results):
                try:
                    _t4_entry(result, keys, rows, scale)
                    rows.labels.append(f"results[{i}]")
                except _Bad as exc:
                    rows.reject(f"{path.name}: results[{i}]: {exc}")
            n_read = len(results)
        _reject_mixed_kinds(path, keys, rows)
        # The folder names the kernel (convolution/A100.json.gz, dedispersion/A100.json.gz).
        source = f"kernel-tuner:{path.parent.name}/{path.name}" if path.parent.name else f"kernel-tuner:{path.name}"
        frames = [_assemble(rows, keys, header, source, record)] if rows.params else []
        notes = [f"{path.name}: unfinished Kernel Tuner cache (no closing braces: an interrupted tuning run); "
                 f"read its {n_read} complete entries as Kernel Tuner's read_cache does"] if unfinished else []
        return finish(path, frames, n_read, rows.bad, rows.n_bad, notes)


def read_cache_json(path: Path) -> tuple[Any, bool]:
    """The parsed file, and whether it was an unfinished cache closed the way Kernel Tuner does.

    Only a text that fails to parse as it is gets closed, and the closed text counts only if
    it parses to a document with a ``cache``; otherwise the original JSON error is raised.
    """
    text = json_text(path, "kernel-tuner")
    try:
        return json.loads(text), False
    except json.JSONDecodeError as exc:
        original = exc
    except RecursionError as exc:
        raise InvalidInputError(f"{path.name}: JSON nested too deeply to read") from exc
    closed = text.strip()
    if closed and closed[-3:] not in _CLOSED_ENDINGS:
        closed = closed.removesuffix(",") + "}\n}"
        try:
            doc = json.loads(closed)
        except (json.JSONDecodeError, RecursionError):
            doc = None
        if isinstance(doc, dict) and isinstance(doc.get("cache"), dict):
            return doc, True
    at_end = original.pos >= len(text.rstrip()) or original.msg.startswith("Unterminated string")
    cut = " (the file ends inside an entry, so it cannot be closed as Kernel Tuner closes an unfinished " \
          "cache)" if at_end and '"cache"' in text else ""
    raise InvalidInputError(f"{path.name}: line {original.lineno}: invalid JSON ({original.msg}){cut}") from original


def _optional(values: list[Any]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def _assemble(rows: _Rows, keys: list[str], header: _Header, source: str,
              record: list[list[Any]] | None = None) -> pd.DataFrame:
    """The flat frame of the good rows (statistics computed per replicate count); ``record`` is
    the file's tune_params (:func:`tune_params_record`), kept in each row's software."""
    n = len(rows.params)
    columns = list(zip(*rows.params, strict=True))
    config = {k: list(col) for k, col in zip(keys, columns, strict=True) if k not in header.workload_keys}
    varying = {k: list(col) for k, col in zip(keys, columns, strict=True) if k in header.workload_keys}
    stats = ragged_stats(rows.times)
    ok = np.array([s == "ok" for s in rows.status])
    mean = np.array(rows.mean_ms, dtype=float)
    stats["runtime_ms"] = np.where(ok, np.where(np.isnan(stats["runtime_ms"]), mean, stats["runtime_ms"]), np.nan)
    stats["n_runs"] = np.array([len(t) if t else np.nan for t in rows.times], dtype=float)
    stats["mean_ms"] = np.where(ok, mean, np.nan)
    exported = ~np.isnan(_optional([e.get("runtime_ms") for e in rows.extras]))
    for name in PERFPRED_STAT_FIELDS:  # statistics recorded without replicates, kept by the exporter
        stats[name] = np.where(exported, _optional([e.get(name) for e in rows.extras]), stats[name])
    metric_names = sorted({k for m in rows.metrics for k in m})
    metrics = {name: np.array([m.get(name, np.nan) for m in rows.metrics], dtype=float) for name in metric_names}
    import_time = now_iso()
    timestamps = [t if t is not None else import_time for t in rows.timestamp]
    extra = {name: [e.get(name) for e in rows.extras] for name in PERFPRED_ENTRY_FIELDS}
    power_source = [p if p is not None else "unavailable" for p in extra["power_source"]]
    software: dict[str, Any] | pd.Series | None = {TUNE_PARAMS_RECORD: record} if record is not None else None
    if any(s is not None for s in extra["software"]):
        recorded = {TUNE_PARAMS_RECORD: record} if record is not None else {}
        software = pd.Series([json.dumps({**(s or {}), **recorded}, sort_keys=True, separators=(",", ":"),
                                         default=str) for s in extra["software"]])
    return build_frame(
        kind=header.kind, hardware=header.hardware, source=source, n=n,
        workload={**header.workload, **varying}, config=config, metrics=metrics,
        status=list(rows.status), error=list(rows.error),
        runtime_ms=stats["runtime_ms"], raw_times_ms=rows.times, n_runs=stats["n_runs"],
        mean_ms=stats["mean_ms"], min_ms=stats["min_ms"], std_ms=stats["std_ms"], iqr_ms=stats["iqr_ms"],
        cv=stats["cv"],
        power_w=_optional(extra["power_w"]), energy_j=_optional(extra["energy_j"]),
        power_source=power_source,
        timestamp=timestamps, software=software,
    ).assign(load_avg_1m=_optional(extra["load_avg_1m"]), ref_runtime_ms=_optional(extra["ref_runtime_ms"]))
