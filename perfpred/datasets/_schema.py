"""The Measurement record: one row of every perfpred table.

A Measurement is flat on disk: fixed columns, plus the free-form dictionaries flattened
with a prefix (``workload.m``, ``config.dtype``, ``metric.ttft_ms_p50``), so a table of GEMMs,
kernels and serving runs stays tidy and a model can pick the columns it needs.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from perfpred.errors import InvalidInputError

SCHEMA_VERSION = 1

KINDS = ("gemm", "kernel", "serving", "collective", "operator")
STATUSES = ("ok", "compile_error", "runtime_error", "timeout", "oom", "invalid")
POWER_SOURCES = ("nvml", "rapl", "recorded", "unavailable")

WORKLOAD_PREFIX = "workload."
CONFIG_PREFIX = "config."
METRIC_PREFIX = "metric."

# Fixed columns in the order they are written; the flattened dictionaries follow.
FIXED_COLUMNS = (
    "measurement_id",
    "schema_version",
    "kind",
    "hardware_id",
    "status",
    "runtime_ms",
    "raw_times_ms",
    "n_runs",
    "min_ms",
    "mean_ms",
    "std_ms",
    "iqr_ms",
    "cv",
    "power_w",
    "energy_j",
    "power_source",
    "load_avg_1m",
    "ref_runtime_ms",
    "error",
    "source",
    "timestamp",
    "hardware_json",
    "software_json",
)

_Scalar = int | float | str | bool | None


def canonical_json(obj: dict[str, Any]) -> str:
    """The one JSON text of a dict that ids and stored hardware/software columns are made of."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def python_scalar(value: Any) -> Any:
    """A numpy scalar (as a table cell gives it back) as the Python value; anything else as is."""
    return value.item() if isinstance(value, np.generic) else value


def key_value(value: Any) -> Any:
    """A workload/config value as ``measurement_key`` hashes it: Python scalars, 3.0 as 3."""
    value = python_scalar(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _key_params(params: dict[str, Any]) -> dict[str, Any]:
    # A None-valued key is absent once stored in a column with gaps, so it never counts.
    return {k: key_value(v) for k, v in params.items()
            if v is not None and not (isinstance(v, float) and math.isnan(v))}


def measurement_key(kind: str, workload: dict[str, Any], config: dict[str, Any], hardware_id: str) -> str:
    """Stable id of *what* was measured (not when): the de-duplication and resume key.

    It survives a round trip through a table: None-valued params are left out and integral
    floats count as ints (a column with gaps turns 1 into 1.0).
    """
    payload = canonical_json({"kind": kind, "workload": _key_params(workload), "config": _key_params(config),
                          "hardware_id": hardware_id})
    return hashlib.sha1(payload.encode()).hexdigest()[:20]


def _fragments(key: str, values: pd.Series) -> list[str]:
    """'"key":<json value>' for each row, as ``Measurement``'s canonical JSON writes it."""
    head = json.dumps(key) + ":"
    if values.dtype.kind in "biuf" or pd.api.types.infer_dtype(values, skipna=False) in ("string", "boolean"):
        # One json.dumps per distinct value; safe because these columns hold one Python type.
        codes, uniques = pd.factorize(values, use_na_sentinel=False)
        texts = np.array([head + json.dumps(key_value(u), default=str) for u in uniques], dtype=object)
        return texts[codes].tolist()
    return [head + json.dumps(key_value(v), default=str) for v in values]


def measurement_ids(kind: str, hardware_id: str, workload: pd.DataFrame, config: pd.DataFrame) -> np.ndarray:
    """``measurement_key`` of every row, built column-wise (sha1 of the same canonical JSON)."""
    n = len(workload)

    def joined(frame: pd.DataFrame) -> list[str]:
        columns = [_fragments(key, frame[key]) for key in sorted(frame.columns)]
        if not columns:
            return [""] * n
        return [",".join(parts) for parts in zip(*columns, strict=True)]

    middle = ',"hardware_id":' + json.dumps(hardware_id) + ',"kind":' + json.dumps(kind) + ',"workload":{'
    texts = ('{"config":{' + c + "}" + middle + w + "}}" for c, w in zip(joined(config), joined(workload), strict=True))
    return np.array([hashlib.sha1(t.encode()).hexdigest()[:20] for t in texts], dtype=object)


def repeat_key(measurement_id: str, values_hash: str) -> str:
    """The id of a second record of a measured configuration with other values (an importer keeps
    it as its own row): ``<measurement_id>-<first 8 hex of its values' hash>``."""
    return f"{measurement_id}-{values_hash[:8]}"


def configuration_ids(measurement_ids: pd.Series) -> pd.Series:
    """Which configuration each id measured: a repeat's id without its ``-<hash>`` (``repeat_key``)."""
    return measurement_ids.astype(str).str.partition("-")[0]


def is_number(value: Any) -> bool:
    """An int or float (numpy ones included), but not a bool: True is no timing."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _check_finite_positive(name: str, value: float | None, *, allow_zero: bool = False) -> None:
    if value is None:
        return
    if not is_number(value) or math.isnan(value) or math.isinf(value):
        raise InvalidInputError(f"`{name}` must be a finite number, but got {name}={value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        rule = ">= 0" if allow_zero else "> 0"
        raise InvalidInputError(f"`{name} {rule}` must hold, but got {name}={value!r}")


def _check_params(name: str, params: Any) -> None:
    """``workload`` / ``config``: a dict of string keys to scalars (number, string, bool; None for
    a missing one), as one table cell holds each."""
    if not isinstance(params, dict):
        raise InvalidInputError(f"`{name}` must be a dict of scalar values, but got {name}={params!r}")
    for key, value in params.items():
        if not isinstance(key, str):
            raise InvalidInputError(f"`{name}` keys must be strings, but got key {key!r}")
        if value is not None and not isinstance(value, (str, bool)) and not is_number(value):
            raise InvalidInputError(f"`{name}.{key}` must be a scalar (number, string or bool), but got {value!r}")


@dataclass
class Measurement:
    """One measured (or recorded, or failed) configuration.

    Times are in milliseconds, power in watts, energy in joules. ``runtime_ms`` is the median
    of ``raw_times_ms`` when replicates exist. A failed configuration is still a Measurement,
    with ``status`` saying why and ``runtime_ms`` left empty. ``workload`` and ``config`` map
    names to scalars (number, string, bool), one table column each; ``n_runs`` counts the timed
    samples (an integer >= 1, or None when unknown).
    """

    kind: str
    workload: dict[str, _Scalar]
    config: dict[str, _Scalar]
    hardware_id: str
    status: str = "ok"
    runtime_ms: float | None = None
    raw_times_ms: list[float] = field(default_factory=list)
    n_runs: int | None = None
    min_ms: float | None = None
    mean_ms: float | None = None
    std_ms: float | None = None
    iqr_ms: float | None = None
    cv: float | None = None
    power_w: float | None = None
    energy_j: float | None = None
    power_source: str = "unavailable"
    load_avg_1m: float | None = None
    ref_runtime_ms: float | None = None
    metrics: dict[str, float | None] = field(default_factory=dict)
    error: str | None = None
    source: str = "perfpred"
    timestamp: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    hardware: dict[str, Any] = field(default_factory=dict)
    software: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        self.validate()

    @property
    def measurement_id(self) -> str:
        return measurement_key(self.kind, self.workload, self.config, self.hardware_id)

    def validate(self) -> None:
        """Check every field against the schema's rules; raise InvalidInputError naming the first
        broken rule and its value. Numpy numbers are turned into Python ones (in place)."""
        self._to_python()
        if self.kind not in KINDS:
            raise InvalidInputError(f"`kind` must be one of {KINDS}, but got kind={self.kind!r}")
        if self.status not in STATUSES:
            raise InvalidInputError(f"`status` must be one of {STATUSES}, but got status={self.status!r}")
        if self.power_source not in POWER_SOURCES:
            raise InvalidInputError(
                f"`power_source` must be one of {POWER_SOURCES}, but got power_source={self.power_source!r}"
            )
        if not isinstance(self.hardware_id, str) or not self.hardware_id.strip():  # blank ('  ') is empty too
            raise InvalidInputError(
                f"`hardware_id` must be a non-empty string, but got hardware_id={self.hardware_id!r}")
        for name in ("workload", "config"):
            _check_params(name, getattr(self, name))
        if not isinstance(self.metrics, dict):
            raise InvalidInputError(f"`metrics` must be a dict of numbers, but got metrics={self.metrics!r}")
        if not isinstance(self.raw_times_ms, (list, tuple)):
            raise InvalidInputError(
                f"`raw_times_ms` must be a list of numbers, but got raw_times_ms={self.raw_times_ms!r}")
        if self.n_runs is not None and (not isinstance(self.n_runs, int) or isinstance(self.n_runs, bool)
                                        or self.n_runs < 1):
            raise InvalidInputError(f"`n_runs` must be an integer >= 1 or None, but got n_runs={self.n_runs!r}")
        if self.status == "ok" and self.runtime_ms is None and not self.metrics:
            raise InvalidInputError("a measurement with status='ok' needs runtime_ms or metrics, but got neither")
        _check_finite_positive("runtime_ms", self.runtime_ms)
        for i, t in enumerate(self.raw_times_ms):
            _check_finite_positive(f"raw_times_ms[{i}]", t)
        for name in ("min_ms", "mean_ms", "power_w", "energy_j"):
            _check_finite_positive(name, getattr(self, name))
        for name in ("std_ms", "iqr_ms", "cv", "load_avg_1m", "ref_runtime_ms"):
            _check_finite_positive(name, getattr(self, name), allow_zero=True)
        if self.power_source == "unavailable" and (self.power_w is not None or self.energy_j is not None):
            raise InvalidInputError(
                "power_source='unavailable' must carry no power_w/energy_j, "
                f"but got power_w={self.power_w!r}, energy_j={self.energy_j!r}"
            )
        for name, value in self.metrics.items():
            if value is not None and (not isinstance(value, (int, float)) or not math.isfinite(value)):
                raise InvalidInputError(f"`metric.{name}` must be a finite number, but got {value!r}")

    def _to_python(self) -> None:
        """Numpy scalars (a float32 timing, an int64 parameter) as the Python numbers they hold."""
        for name in ("runtime_ms", "n_runs", "min_ms", "mean_ms", "std_ms", "iqr_ms", "cv", "power_w", "energy_j",
                     "load_avg_1m", "ref_runtime_ms"):
            setattr(self, name, python_scalar(getattr(self, name)))
        if isinstance(self.raw_times_ms, np.ndarray):
            self.raw_times_ms = self.raw_times_ms.tolist()
        if isinstance(self.raw_times_ms, (list, tuple)):
            self.raw_times_ms = [python_scalar(t) for t in self.raw_times_ms]
        for name in ("workload", "config", "metrics"):
            params = getattr(self, name)
            if isinstance(params, dict) and any(isinstance(v, np.generic) for v in params.values()):
                setattr(self, name, {k: python_scalar(v) for k, v in params.items()})

    def to_row(self) -> dict[str, Any]:
        row: dict[str, Any] = {
            "measurement_id": self.measurement_id,
            "schema_version": self.schema_version,
            "kind": self.kind,
            "hardware_id": self.hardware_id,
            "status": self.status,
            "runtime_ms": self.runtime_ms,
            "raw_times_ms": [float(t) for t in self.raw_times_ms],
            "n_runs": self.n_runs if self.n_runs is not None else (len(self.raw_times_ms) or None),
            "min_ms": self.min_ms,
            "mean_ms": self.mean_ms,
            "std_ms": self.std_ms,
            "iqr_ms": self.iqr_ms,
            "cv": self.cv,
            "power_w": self.power_w,
            "energy_j": self.energy_j,
            "power_source": self.power_source,
            "load_avg_1m": self.load_avg_1m,
            "ref_runtime_ms": self.ref_runtime_ms,
            "error": self.error,
            "source": self.source,
            "timestamp": self.timestamp,
            "hardware_json": canonical_json(self.hardware),
            "software_json": canonical_json(self.software),
        }
        row.update({WORKLOAD_PREFIX + k: v for k, v in self.workload.items()})
        row.update({CONFIG_PREFIX + k: v for k, v in self.config.items()})
        row.update({METRIC_PREFIX + k: v for k, v in self.metrics.items()})
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Measurement:
        def _none(v: Any) -> Any:
            if v is None or isinstance(v, (list, tuple, dict)) or (hasattr(v, "__len__") and not isinstance(v, str)):
                return v
            return None if pd.isna(v) else v

        def _prefixed(prefix: str) -> dict[str, Any]:
            return {
                k[len(prefix):]: _none(python_scalar(v))
                for k, v in row.items()
                if k.startswith(prefix) and _none(v) is not None
            }

        fields_ = {
            name: _none(row.get(name))
            for name in FIXED_COLUMNS
            if name not in ("measurement_id", "raw_times_ms", "hardware_json", "software_json")
        }
        if fields_.get("n_runs") is not None:
            fields_["n_runs"] = int(fields_["n_runs"])
        raw = row.get("raw_times_ms")
        return cls(
            workload=_prefixed(WORKLOAD_PREFIX),
            config=_prefixed(CONFIG_PREFIX),
            metrics=_prefixed(METRIC_PREFIX),
            raw_times_ms=[float(t) for t in raw] if raw is not None else [],
            hardware=json.loads(row.get("hardware_json") or "{}"),
            software=json.loads(row.get("software_json") or "{}"),
            **{k: v for k, v in fields_.items() if v is not None},
        )
