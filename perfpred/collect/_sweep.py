"""Sweep designs (grid, random log-uniform, Sobol) and a resumable sweep runner."""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from perfpred.collect._visits import combine_visits, gate_visits, visits_done
from perfpred.datasets import Measurement, MeasurementStore
from perfpred.errors import InvalidInputError

DESIGNS = ("grid", "random", "sobol")


class Collector(Protocol):
    name: str

    def measurement_id(self, cfg: Any) -> str: ...

    def measure(self, cfg: Any) -> Measurement: ...


def _check_range(name: str, lo: int, hi: int) -> None:
    if not (isinstance(lo, int) and isinstance(hi, int)) or lo < 1 or hi < lo:
        raise InvalidInputError(f"`1 <= {name}_min <= {name}_max` must hold, but got {name}=({lo}, {hi})")


def loguniform_shapes(n_shapes: int, ranges: dict[str, tuple[int, int]], *, seed: int = 0,
                      sobol: bool = False) -> list[dict[str, int]]:
    """Shapes with each dimension log-uniform in its [lo, hi] range (random or scrambled Sobol).

    Duplicates after rounding are dropped, so a design may return slightly fewer shapes.
    """
    if n_shapes < 1:
        raise InvalidInputError(f"`n_shapes >= 1` must hold, but got n_shapes={n_shapes}")
    for name, (lo, hi) in ranges.items():
        _check_range(name, lo, hi)
    names = list(ranges)
    if sobol:
        from scipy.stats import qmc

        # Sobol points are balanced in blocks of 2^m: draw the next power of two, keep n.
        u = qmc.Sobol(d=len(names), scramble=True, seed=seed).random(2 ** math.ceil(math.log2(n_shapes)))[:n_shapes]
    else:
        u = np.random.default_rng(seed).random((n_shapes, len(names)))
    shapes, seen = [], set()
    for row in u:
        shape = {}
        for j, name in enumerate(names):
            lo, hi = ranges[name]
            shape[name] = round(math.exp(math.log(lo) + row[j] * (math.log(hi) - math.log(lo))))
        key = tuple(shape.values())
        if key not in seen:
            seen.add(key)
            shapes.append(shape)
    return shapes


def grid_shapes(values: dict[str, Sequence[int]]) -> list[dict[str, int]]:
    for name, vals in values.items():
        if not vals or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in vals):
            raise InvalidInputError(f"grid values of `{name}` must be integers >= 1, but got {list(vals)}")
    names = list(values)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*values.values())]


def expand(shapes: Iterable[dict[str, Any]], **options: Sequence[Any]) -> list[dict[str, Any]]:
    """Cartesian product of shapes with option lists (dtype=['fp32','fp64'], threads=[1], ...)."""
    keys = list(options)
    combos = list(itertools.product(*options.values()))
    return [{**shape, **dict(zip(keys, combo, strict=True))} for shape in shapes for combo in combos]


@dataclass
class SweepReport:
    measured: int = 0
    remeasured: int = 0
    visits: int = 0  # timing visits made (== measured unless visits > 1)
    gated: int = 0  # rows whose runtime was re-derived from their quiet visits
    skipped: int = 0
    failed: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0


def run_sweep(
    collector: Collector,
    configs: Sequence[Any],
    store: MeasurementStore,
    *,
    progress: bool = True,
    on_measured: Callable[[Any, Measurement], None] | None = None,
    remeasure: Callable[[dict[str, Any]], bool] | None = None,
    visits: int = 1,
    seed: int = 0,
    ref_tolerance: float | None = 1.1,
) -> SweepReport:
    """Measure each config not yet in ``store``, appending each result as soon as it exists.

    Configs are validated up front so a bad one stops the sweep before anything runs. Each
    Measurement is committed to the store on its own, so an interrupted sweep resumes where
    it stopped and loses at most the config that was being measured. ``remeasure(row)``
    picks stored rows to time again (e.g. ones the noise monitors flagged); the new row
    supersedes the old one.

    ``visits > 1`` times every config that many times, once per pass over the sweep (passes
    after the first in a shuffled order drawn from ``seed``), and stores the median of the
    visit medians (see ``perfpred.collect.combine_visits``); a re-run adds only the visits
    a config still lacks. With ``ref_tolerance``, once every visit is in, each config's runtime
    is re-derived from its quiet visits only: those whose reference GEMM ran within that factor
    of the quiet machine's (see ``perfpred.collect.gate_visits``; collectors without a reference
    are left as they are).
    """
    if isinstance(visits, bool) or not isinstance(visits, int) or visits < 1:
        raise InvalidInputError(f"`visits >= 1` must hold, but got visits={visits!r}")
    if ref_tolerance is not None and not ref_tolerance >= 1:
        raise InvalidInputError(f"`ref_tolerance >= 1` must hold, but got ref_tolerance={ref_tolerance!r}")
    for cfg in configs:
        cfg.validate()
    report = SweepReport()
    stored: dict[str, dict[str, Any]] = {}
    if (remeasure is not None or visits > 1) and len(store):
        stored = {row["measurement_id"]: row for row in store.load().to_dict("records")}
    todo: list[_Pending] = []
    for cfg in configs:
        key = collector.measurement_id(cfg)
        fresh = not store.contains(key) or (key in stored and remeasure is not None and remeasure(stored[key]))
        done = 0 if fresh else (visits_done(stored[key]) if key in stored else 1)
        if done >= visits:
            report.skipped += 1
            continue
        previous = None if fresh else Measurement.from_row(stored[key])
        todo.append(_Pending(cfg, done, previous, replace_stored=store.contains(key)))
    t0 = time.perf_counter()
    bar = None
    total = sum(visits - p.done for p in todo)
    if progress and total:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[last]}"))
        bar.start()
        label = f"{collector.name} sweep" + (f" ({visits} visits)" if visits > 1 else "")
        task = bar.add_task(label, total=total, last="")
    rng = np.random.default_rng(seed)
    try:
        for visit in range(1, visits + 1):
            round_ = [p for p in todo if p.done < visit]
            if visit > 1:
                round_ = [round_[i] for i in rng.permutation(len(round_))]
            for pending in round_:
                m = collector.measure(pending.cfg)
                if visits > 1:
                    m = combine_visits(pending.previous, m)
                store.append([m], replace=pending.replace_stored)
                first = pending.previous is None
                pending.previous, pending.done, pending.replace_stored = m, pending.done + 1, True
                report.measured += int(first)
                report.remeasured += int(first and pending.was_stored)
                report.visits += 1
                if pending.done >= visits or visits == 1:
                    report.statuses[m.status] = report.statuses.get(m.status, 0) + 1
                    report.failed += int(m.status != "ok")
                if on_measured:
                    on_measured(pending.cfg, m)
                if bar is not None:
                    last = f"{m.runtime_ms:.4g} ms" if m.runtime_ms is not None else m.status
                    bar.update(task, advance=1, last=last)
    finally:
        if bar is not None:
            bar.stop()
    if visits > 1 and ref_tolerance is not None and len(store):
        keys = {collector.measurement_id(cfg) for cfg in configs}
        rows = store.load()
        gated = gate_visits(rows[rows["measurement_id"].isin(keys)], ref_tolerance)
        store.append(gated, replace=True)
        report.gated = len(gated)
    report.wall_s = time.perf_counter() - t0
    return report


@dataclass
class _Pending:
    """A config that still needs visits, with what its earlier visits measured."""

    cfg: Any
    done: int
    previous: Measurement | None
    replace_stored: bool
    was_stored: bool = field(init=False)

    def __post_init__(self) -> None:
        self.was_stored = self.replace_stored


def noisy_row(max_cv: float) -> Callable[[dict[str, Any]], bool]:
    """A ``remeasure`` rule: failed rows, and rows whose replicates spread more than max_cv."""
    if not max_cv > 0:
        raise InvalidInputError(f"`max_cv > 0` must hold, but got max_cv={max_cv}")

    def rule(row: dict[str, Any]) -> bool:
        cv = row.get("cv")
        return row.get("status") != "ok" or cv is None or math.isnan(cv) or cv > max_cv

    return rule


def busy_warning(threshold_per_cpu: float = 0.5) -> str | None:
    """A warning when the machine is busy enough to spoil timings (1-minute load average)."""
    cpus = os.cpu_count() or 1
    load = os.getloadavg()[0]
    if load > threshold_per_cpu * cpus:
        return (f"this machine is busy (1-min load average {load:.1f} on {cpus} CPUs): timings will be noisy; "
                "the cv and load_avg_1m columns record it, and --remeasure-above-cv re-times noisy rows later")
    return None


def with_overrides(configs: Iterable[Any], **overrides: Any) -> list[Any]:
    return [replace(c, **overrides) for c in configs]
