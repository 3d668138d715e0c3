"""Several visits per configuration: the second level of replication.

Replicates taken back to back share whatever state the machine is in for those seconds (a
neighbour on the hypervisor, a clock change, where the buffers landed in memory). On the
2-core VM this project grew up on, two sweeps of the same 1,280 GEMMs an hour apart
disagreed by a median 9% per config although each config's own median was stable to 2%.
Timing each config on several *visits*, in different passes over a shuffled sweep, and
reporting the median of the visit medians removes most of that: one slow period spoils
one visit, not the result.

The per-visit medians are kept as ``metric.visit<i>_ms`` (and the reference time beside
each as ``metric.visit<i>_ref_ms``), so a store can be re-combined or audited later. At the end
of a sweep ``gate_visits`` drops the visits whose reference ran slow (a noisy period) from each
config's median.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from perfpred.collect._timing import spread_stats
from perfpred.datasets import Measurement
from perfpred.errors import InvalidInputError

VISITS_METRIC = "visits"
# Rate metrics scale with 1/runtime; they are rescaled to the combined runtime.
_RATE_SUFFIXES = ("gflops", "_per_s")


def visits_done(row: dict[str, Any]) -> int:
    """How many visits a stored row holds (rows from before visits existed count as one)."""
    value = row.get(f"metric.{VISITS_METRIC}")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return 1
    return int(value)


def _visit_medians(m: Measurement) -> tuple[list[float], list[float | None]]:
    n = int(m.metrics.get(VISITS_METRIC) or 1)
    if VISITS_METRIC not in m.metrics:  # a plain single-visit measurement
        return [m.runtime_ms], [m.ref_runtime_ms]
    runtimes = [m.metrics[f"visit{i}_ms"] for i in range(1, n + 1) if m.metrics.get(f"visit{i}_ms") is not None]
    refs = [m.metrics.get(f"visit{i}_ref_ms") for i in range(1, n + 1)]
    return runtimes, refs


def combine_visits(previous: Measurement | None, new: Measurement) -> Measurement:
    """Fold the newest visit of a config into what earlier visits measured.

    runtime_ms is the median of the visit medians; raw_times_ms and the spread statistics
    pool every visit's samples (so cv includes the visit-to-visit drift). A failed visit is
    counted but never replaces data an earlier visit measured.
    """
    visit = (int(previous.metrics.get(VISITS_METRIC) or 1) if previous is not None else 0) + 1
    if previous is None or previous.status != "ok" or previous.runtime_ms is None:
        if new.status != "ok" or new.runtime_ms is None:
            return replace(new, metrics={**new.metrics, VISITS_METRIC: float(visit)})
        metrics = {**new.metrics, VISITS_METRIC: float(visit), "visit1_ms": new.runtime_ms,
                   "visit1_ref_ms": new.ref_runtime_ms}
        return replace(new, metrics=metrics)
    if new.status != "ok" or new.runtime_ms is None:
        failed = float(previous.metrics.get("failed_visits") or 0) + 1
        return replace(previous, metrics={**previous.metrics, VISITS_METRIC: float(visit), "failed_visits": failed})

    runtimes, refs = _visit_medians(previous)
    runtimes.append(new.runtime_ms)
    refs.append(new.ref_runtime_ms)
    runtime_ms = float(np.median(runtimes))
    raw = [*previous.raw_times_ms, *new.raw_times_ms]
    known_refs = [r for r in refs if r is not None]
    metrics = {
        k: (v * new.runtime_ms / runtime_ms if v is not None and k.endswith(_RATE_SUFFIXES) else v)
        for k, v in new.metrics.items()
    }
    metrics.update({k: v for k, v in previous.metrics.items() if k.startswith("visit") or k == "failed_visits"})
    metrics.update({VISITS_METRIC: float(visit), f"visit{visit}_ms": new.runtime_ms,
                    f"visit{visit}_ref_ms": new.ref_runtime_ms,
                    "visit_spread_pct": (max(runtimes) / min(runtimes) - 1) * 100})
    if "visit1_ms" not in metrics:  # the earlier visit was a plain measurement
        metrics.update({"visit1_ms": runtimes[0], "visit1_ref_ms": refs[0]})
    return replace(
        new,
        runtime_ms=runtime_ms,
        raw_times_ms=raw if previous.raw_times_ms and new.raw_times_ms else [],
        n_runs=(previous.n_runs or 0) + (new.n_runs or 0) or None,
        ref_runtime_ms=float(np.median(known_refs)) if known_refs else None,
        metrics=metrics,
        **(spread_stats(raw) if previous.raw_times_ms and new.raw_times_ms else {}),
    )


def gate_visits(rows: pd.DataFrame, tolerance: float, quiet_quantile: float = 0.1, *,
                unpinned_cpu_rows: bool = False) -> list[Measurement]:
    """Re-derive each multi-visit row's runtime from its *quiet* visits only.

    A visit is quiet when the reference GEMM timed beside it ran within ``tolerance`` of the
    quiet machine's reference time: the ``quiet_quantile`` of every visit's reference time among
    rows timed the same way (hardware, backend, device, threads). runtime_ms becomes the median of
    the quiet visits (of all visits when none was quiet). On this VM whole passes ran 20-30% slow
    (the reference slowed with them); the median of five visits, two of them slow, was 10.8% MAPE
    away from the predictor, the median of the quiet ones 4.7%. Returns the rows that changed.

    CPU rows timed without pinning are left alone unless ``unpinned_cpu_rows``: their reference
    may have run on another (here 16% faster) vCPU than the config, and gating them measured
    worse than the plain median (15.6% against 9.0%).
    """
    if not tolerance >= 1:
        raise InvalidInputError(f"`ref_tolerance >= 1` must hold, but got ref_tolerance={tolerance}")
    if rows.empty or "metric.visits" not in rows:
        return []
    n = int(np.nanmax(rows["metric.visits"].to_numpy(dtype=float)))
    ms_cols = [f"metric.visit{i}_ms" for i in range(1, n + 1)]
    ref_cols = [f"metric.visit{i}_ref_ms" for i in range(1, n + 1)]
    rows = rows.reindex(columns=[*rows.columns, *(c for c in ms_cols + ref_cols if c not in rows)])
    if not unpinned_cpu_rows and "config.device" in rows:
        pinned = rows.get("metric.pinned_cpu_mask", pd.Series(np.nan, index=rows.index)).notna()
        rows = rows[(rows["config.device"] != "cpu") | pinned]
        if rows.empty:
            return []
    group_cols = ["hardware_id", *sorted(c for c in rows.columns if c.startswith("config."))]
    changed = []
    for _, group in rows.groupby(group_cols, dropna=False, sort=False):
        refs = group[ref_cols].to_numpy(dtype=float)
        if not np.isfinite(refs).any():
            continue
        quiet_ref = float(np.nanquantile(refs, quiet_quantile))
        for (_, row), ref in zip(group.iterrows(), refs, strict=True):
            ms = row[ms_cols].to_numpy(dtype=float)
            if row["status"] != "ok" or np.isfinite(ms).sum() < 2:
                continue
            keep = np.isfinite(ms) & (~np.isfinite(ref) | (ref <= tolerance * quiet_ref))
            if not keep.any():
                keep = np.isfinite(ms)
            runtime_ms = float(np.median(ms[keep]))
            if (math.isclose(runtime_ms, row["runtime_ms"], rel_tol=1e-12)
                    and row.get("metric.quiet_visits") == keep.sum()):
                continue
            m = Measurement.from_row(row.to_dict())
            metrics = {k: (v * m.runtime_ms / runtime_ms if v is not None and k.endswith(_RATE_SUFFIXES) else v)
                       for k, v in m.metrics.items()}
            metrics.update({"quiet_visits": float(keep.sum()), "quiet_ref_ms": quiet_ref,
                            "ref_tolerance": float(tolerance)})
            changed.append(replace(m, runtime_ms=runtime_ms, metrics=metrics))
    return changed
