"""Replay a recorded complete search space as if it were hardware.

A brute-forced Kernel Tuner cache or the UCI SGEMM table holds every configuration of a
space with its measured times, so a tuner can run end to end without the GPU: asking
:class:`ReplayBackend` to measure a configuration returns what was recorded (or its
recorded failure). Tuners are compared fairly by what they would have cost on the real
device: every evaluation adds the recorded compile + verification + benchmark time (or,
where the record has none, runtime x replicates) to ``simulated_time_s``, as Kernel
Tuner's ``simulation_mode`` does.

With ``resample_noise=True`` each measurement is re-drawn from the raw replicates (a
bootstrap resample; ``runtime_ms`` its median), so repeated evaluations show the
run-to-run noise a real device would.

The backend has the collector interface of :class:`perfpred.collect.GemmCollector`
(``name``, ``measurement_id(cfg)``, ``measure(cfg)``), and :class:`ReplayConfig` has
``validate()``, so ``run_sweep(backend, backend.configs(), store)`` works unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from perfpred.collect.importers._frame import replicate_stats, restore_int_columns
from perfpred.collect.importers._registry import read_files
from perfpred.datasets import Measurement, MeasurementStore
from perfpred.datasets._schema import CONFIG_PREFIX, WORKLOAD_PREFIX, python_scalar
from perfpred.errors import InvalidInputError

# Recorded cost of one evaluation on the device, in ms, when the record has it.
COST_METRICS = ("metric.compile_time_ms", "metric.verification_time_ms", "metric.benchmark_time_ms")


@dataclass(frozen=True)
class ReplayConfig:
    """One point of a replayed space (hashable); ``validate()`` checks it was recorded."""

    values: tuple[tuple[str, Any], ...]
    backend: ReplayBackend = field(compare=False, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.values)

    def validate(self) -> None:
        self.backend._locate(self.as_dict())


class ReplayBackend:
    """Answers "measure this config" from a recorded table of one space on one device.

    Args:
        table: rows in the flat Measurement layout (an importer's frame, ``store.load()``).
        hardware_id, kind, workload: pick one space when the table holds several.
        resample_noise: re-draw each measurement from its raw replicates (bootstrap).
        seed: seed of that resampling, so a replayed run is repeatable.
        space_keys: the tuned parameters; default: the ``config.*`` columns plus any
            ``workload.*`` column that varies across the chosen rows.
    """

    name = "replay"

    def __init__(self, table: pd.DataFrame, *, hardware_id: str | None = None, kind: str | None = None,
                 workload: Mapping[str, Any] | None = None, resample_noise: bool = False, seed: int = 0,
                 space_keys: Iterable[str] | None = None) -> None:
        if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise InvalidInputError(f"`seed` must be an integer >= 0, but got seed={seed!r}")
        rows = _select(table, hardware_id, kind, workload)
        self._columns = _space_columns(rows, space_keys)
        rows = restore_int_columns(rows, table, [c for c in rows.columns
                                                 if c.startswith((CONFIG_PREFIX, WORKLOAD_PREFIX))])
        self.keys = [c.split(".", 1)[1] for c in self._columns]
        self._rows = rows.reset_index(drop=True)
        self._index: dict[tuple[Any, ...], int] = {}
        columns = [self._rows[c].tolist() for c in self._columns]
        for i, values in enumerate(zip(*columns, strict=True)):
            self._index[values] = i  # a repeated point keeps its last record, as the store does
        self._values = {key: sorted(pd.unique(self._rows[c]).tolist(), key=lambda v: (type(v).__name__, v))
                        for key, c in zip(self.keys, self._columns, strict=True)}
        self._cache: dict[int, Measurement] = {}
        self.resample_noise = resample_noise
        self.seed = seed
        self.kind = str(self._rows["kind"].iloc[0])
        self.hardware_id = str(self._rows["hardware_id"].iloc[0])
        self.reset()

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], format: str = "kernel-tuner", **kwargs: Any) -> ReplayBackend:
        """Replay a recorded file read with the ``format`` importer (default: a Kernel Tuner cache)."""
        results, _ = read_files(format, [Path(path)])
        frames = [frame for result in results for frame in result.frames]
        kind = kwargs.get("kind")
        if kind is not None:
            frames = [f for f in frames if (f["kind"] == kind).all()]
        if not frames:
            raise InvalidInputError(f"'{Path(path).name}' holds no {kind} rows; nothing to replay")
        if len(frames) > 1:
            kinds = sorted({str(k) for f in frames for k in f["kind"].unique()})
            raise InvalidInputError(f"'{Path(path).name}' holds several tables ({kinds}); pass kind=... to pick one")
        return cls(frames[0], **kwargs)

    @classmethod
    def from_store(cls, store: MeasurementStore, **kwargs: Any) -> ReplayBackend:
        """Replay the rows of a Measurement store (one device and kind, see ``hardware_id``/``kind``)."""
        return cls(store.load(), **kwargs)

    # ------------------------------------------------------------------ the space

    def __len__(self) -> int:
        return len(self._index)

    @property
    def table(self) -> pd.DataFrame:
        """The replayed rows in the flat Measurement layout (read-only: do not modify)."""
        return self._rows

    def problem(self) -> dict[str, Any]:
        """The workload every replayed row shares (its ``workload.*`` columns that are not tuned
        and never vary; e.g. ``problem_size_x``), without the prefix."""
        rows = self._rows
        return {c[len(WORKLOAD_PREFIX):]: python_scalar(rows[c].iloc[0]) for c in rows.columns
                if c.startswith(WORKLOAD_PREFIX) and c not in self._columns and rows[c].nunique(dropna=False) == 1}

    def hardware(self) -> dict[str, Any] | None:
        """The recorded device's spec (``hardware_json`` of the replayed rows), None if not recorded."""
        if "hardware_json" not in self._rows or self._rows["hardware_json"].isna().all():
            return None
        return json.loads(self._rows["hardware_json"].dropna().iloc[0])

    def space(self) -> dict[str, list[Any]]:
        """The tune parameters and the values recorded for each (Kernel Tuner's ``tune_params``)."""
        return {key: list(values) for key, values in self._values.items()}

    def configs(self) -> list[ReplayConfig]:
        """Every recorded point, in recorded order."""
        return [ReplayConfig(tuple(zip(self.keys, values, strict=True)), self) for values in self._index]

    def recorded_configs(self) -> pd.DataFrame:
        """Every recorded point as a DataFrame (a column per tune parameter), in recorded order:
        the candidates a tuner searches by default on a replay, which answers only what was recorded
        (as ``perfpred tune --backend replay:PATH`` and Kernel Tuner's simulation mode do)."""
        # From the index's keys (plain Python values already): building a config object per row
        # took ~1 s for UCI SGEMM's 241,600 points.
        return pd.DataFrame(list(self._index), columns=self.keys)

    def config(self, values: Mapping[str, Any]) -> ReplayConfig:
        """A validated :class:`ReplayConfig` from a plain dict."""
        position = self._locate(values)
        recorded = [self._rows[c].iloc[position] for c in self._columns]
        return ReplayConfig(tuple(zip(self.keys, (python_scalar(v) for v in recorded), strict=True)), self)

    def _locate(self, values: Mapping[str, Any]) -> int:
        if not isinstance(values, Mapping):
            raise InvalidInputError(f"a replay config must be a dict of {self.keys}, but got {type(values).__name__}")
        missing = [k for k in self.keys if k not in values]
        unknown = [k for k in values if k not in self._values]
        if missing or unknown:
            raise InvalidInputError(f"a config must set exactly the parameters {self.keys}, but it lacks {missing} "
                                    f"and has unknown {unknown}")
        key = tuple(python_scalar(values[k]) for k in self.keys)
        position = self._index.get(key)
        if position is None:
            for name, value in zip(self.keys, key, strict=True):
                if value not in self._values[name]:
                    raise InvalidInputError(f"`{name}` must be one of {self._values[name]} in this recorded space, "
                                            f"but got {name}={value!r}")
            shown = ", ".join(f"{k}={v!r}" for k, v in zip(self.keys, key, strict=True))
            raise InvalidInputError(f"config ({shown}) is not in the recorded space of {len(self)} configurations: "
                                    "every value is known but this combination was never measured (infeasible)")
        return position

    # ------------------------------------------------------------------ measuring

    def reset(self) -> None:
        """Forget the evaluations counted so far (and restart the noise from ``seed``)."""
        self.n_evaluations = 0
        self.simulated_time_s = 0.0
        self.history: list[tuple[dict[str, Any], Measurement]] = []
        self._rng = np.random.default_rng(self.seed)

    def _recorded(self, position: int) -> Measurement:
        if position not in self._cache:
            self._cache[position] = Measurement.from_row(self._rows.iloc[position].to_dict())
        return self._cache[position]

    def recorded(self, cfg: ReplayConfig | Mapping[str, Any]) -> Measurement:
        """The recorded Measurement of ``cfg`` as stored (no noise, not counted as an evaluation)."""
        return self._recorded(self._locate(_as_dict(cfg)))

    def measurement_id(self, cfg: ReplayConfig | Mapping[str, Any]) -> str:
        """Id of the Measurement ``measure(cfg)`` returns (the recorded row's id)."""
        return self.recorded(cfg).measurement_id

    def cost_s(self, m: Measurement) -> float:
        """What evaluating ``m`` costs on the device: recorded compile + verify + benchmark
        time, else runtime x replicates (one run when the record keeps none)."""
        recorded = [m.metrics.get(c.split(".", 1)[1]) for c in COST_METRICS]
        recorded = [v for v in recorded if v is not None and math.isfinite(v)]
        if recorded:
            return sum(recorded) / 1e3
        if m.runtime_ms is not None:
            return m.runtime_ms * (m.n_runs or len(m.raw_times_ms) or 1) / 1e3
        return 0.0

    def measure(self, cfg: ReplayConfig | Mapping[str, Any]) -> Measurement:
        """The recorded Measurement of ``cfg`` (re-sampled when ``resample_noise``)."""
        values = _as_dict(cfg)
        recorded = self._recorded(self._locate(values))
        m = self._resample(recorded) if self.resample_noise else recorded
        m = dataclasses.replace(m, source=f"replay:{recorded.source}")
        self.n_evaluations += 1
        self.simulated_time_s += self.cost_s(recorded)
        self.history.append((values, m))
        return m

    def _resample(self, m: Measurement) -> Measurement:
        if m.status != "ok" or len(m.raw_times_ms) < 2:
            return m
        sample = self._rng.choice(np.asarray(m.raw_times_ms, dtype=float), size=len(m.raw_times_ms), replace=True)
        stats = {k: float(v[0]) for k, v in replicate_stats(sample[None, :]).items()}
        return dataclasses.replace(m, raw_times_ms=sample.tolist(), n_runs=len(sample), **stats)

    def optimum(self) -> Measurement:
        """The fastest recorded ``ok`` configuration (not counted as an evaluation)."""
        ok = self._rows[(self._rows["status"] == "ok") & self._rows["runtime_ms"].notna()]
        if ok.empty:
            raise InvalidInputError(f"the recorded space of {len(self)} configurations has no successful one")
        return self._recorded(int(ok["runtime_ms"].idxmin()))

    def best_so_far(self) -> Measurement | None:
        """The fastest ``ok`` Measurement among the evaluations made since the last reset."""
        done = [m for _, m in self.history if m.status == "ok" and m.runtime_ms is not None]
        return min(done, key=lambda m: m.runtime_ms) if done else None


def _as_dict(cfg: ReplayConfig | Mapping[str, Any]) -> dict[str, Any]:
    return cfg.as_dict() if isinstance(cfg, ReplayConfig) else dict(cfg) if isinstance(cfg, Mapping) else cfg


def _select(table: pd.DataFrame, hardware_id: str | None, kind: str | None,
            workload: Mapping[str, Any] | None) -> pd.DataFrame:
    if not isinstance(table, pd.DataFrame) or "kind" not in table or "hardware_id" not in table:
        raise InvalidInputError("a replay needs a Measurement table (kind, hardware_id, config.* columns)")
    rows = table
    if hardware_id is not None:
        rows = rows[rows["hardware_id"] == hardware_id]
    if kind is not None:
        rows = rows[rows["kind"] == kind]
    for key, value in (workload or {}).items():
        column = WORKLOAD_PREFIX + key
        rows = rows[rows[column] == value] if column in rows else rows.iloc[0:0]
    if rows.empty:
        raise InvalidInputError(f"no recorded rows match hardware_id={hardware_id!r}, kind={kind!r}, "
                                f"workload={dict(workload or {})!r}; nothing to replay")
    for column in ("hardware_id", "kind"):
        values = sorted(rows[column].dropna().unique())
        if len(values) > 1:
            raise InvalidInputError(f"a replay covers one {column}, but the table has {values}; "
                                    f"pass {column}=... to choose one")
    if "measurement_id" in rows:
        rows = rows.drop_duplicates("measurement_id", keep="last")
    return rows.dropna(axis=1, how="all")


def _space_columns(rows: pd.DataFrame, space_keys: Iterable[str] | None) -> list[str]:
    if space_keys is not None:
        columns = []
        for key in space_keys:
            column = next((p + key for p in (CONFIG_PREFIX, WORKLOAD_PREFIX) if p + key in rows), None)
            if column is None:
                raise InvalidInputError(f"space key {key!r} must be a config or workload column of the table, "
                                        "but it is neither")
            columns.append(column)
    else:
        columns = [c for c in rows.columns if c.startswith(CONFIG_PREFIX)]
        columns += [c for c in rows.columns if c.startswith(WORKLOAD_PREFIX) and rows[c].nunique(dropna=False) > 1]
    if not columns:
        raise InvalidInputError("a replay needs tune parameters (config.* or varying workload.* columns), "
                                "but the table has none")
    incomplete = [c for c in columns if rows[c].isna().any()]
    if incomplete:
        raise InvalidInputError(f"parameters {incomplete} must be set in every replayed row, but some rows lack "
                                "them; pick one kind of row with kind=... / workload=...")
    return columns
