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
from perfpred.datasets import STATUSES, Measurement, MeasurementStore
from perfpred.errors import InvalidInputError

DESIGNS = ("grid", "random", "sobol")
# How many times a config has been measured from scratch (a re-measure adds one; absent: once).
ATTEMPTS_METRIC = "attempts"


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
    kept: int = 0  # re-measured configs whose earlier row was steadier and stayed in the store
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
    picks stored rows to time again (e.g. ones the noise monitors flagged); the steadier of
    the old and the new row stays in the store (see ``steadier``), so a re-run in a busy
    period cannot make a row worse (``SweepReport.kept`` counts the old rows kept), and the
    row's ``metric.attempts`` counts how often the config was measured.

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
        pending = _Pending(cfg, done, previous, replace_stored=store.contains(key))
        if fresh and key in stored:
            pending.earlier = Measurement.from_row(stored[key])
        todo.append(pending)
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
                held = pending.store(m, store)
                first = pending.previous is None
                pending.previous, pending.done, pending.replace_stored = m, pending.done + 1, True
                report.measured += int(first)
                report.remeasured += int(first and pending.was_stored)
                report.visits += 1
                if pending.done >= visits or visits == 1:
                    report.kept += int(pending.kept_earlier)
                    report.statuses[held.status] = report.statuses.get(held.status, 0) + 1
                    report.failed += int(held.status != "ok")
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
    earlier: Measurement | None = None  # the stored row a re-measure competes with
    kept_earlier: bool = False  # the store holds the earlier row (with its attempt counted)

    def __post_init__(self) -> None:
        self.was_stored = self.replace_stored

    def store(self, m: Measurement, store: MeasurementStore) -> Measurement:
        """Write ``m``, or keep the earlier row where that one is steadier; returns what the store holds."""
        if self.earlier is None:
            store.append([m], replace=self.replace_stored)
            return m
        attempts = {ATTEMPTS_METRIC: float(attempts_made(self.earlier.metrics) + 1)}
        if steadier(m, self.earlier) is m:
            m = replace(m, metrics={**m.metrics, **attempts})
            store.append([m], replace=True)
            self.kept_earlier = False
            return m
        if not self.kept_earlier:  # count the attempt, or undo what an earlier visit wrote
            store.append([replace(self.earlier, metrics={**self.earlier.metrics, **attempts})], replace=True)
            self.kept_earlier = True
        return self.earlier


def attempts_made(metrics: dict[str, Any]) -> int:
    """How many times a row's config was measured (rows from before the count existed: once)."""
    value = metrics.get(ATTEMPTS_METRIC)
    return 1 if value is None or (isinstance(value, float) and math.isnan(value)) else int(value)


def _unsteadiness(m: Measurement) -> float:
    if m.status != "ok":
        return math.inf
    return math.inf if m.cv is None or math.isnan(m.cv) else m.cv


def steadier(new: Measurement, old: Measurement) -> Measurement:
    """The row a re-measure keeps: an ok row over a failed one, then the lower cv; on a tie the newer."""
    if (old.status == "ok") != (new.status == "ok"):
        return new if new.status == "ok" else old
    return old if _unsteadiness(old) < _unsteadiness(new) else new


def noisy_row(max_cv: float) -> Callable[[dict[str, Any]], bool]:
    """A ``remeasure`` rule: failed rows, and rows whose replicates spread more than max_cv."""
    if not max_cv > 0:
        raise InvalidInputError(f"`max_cv > 0` must hold, but got max_cv={max_cv}")

    def rule(row: dict[str, Any]) -> bool:
        cv = row.get("cv")
        return row.get("status") != "ok" or cv is None or math.isnan(cv) or cv > max_cv

    return rule


def failed_row(statuses: Sequence[str], max_attempts: int = 2) -> Callable[[dict[str, Any]], bool]:
    """A ``remeasure`` rule: rows with one of ``statuses`` measured fewer than ``max_attempts`` times.

    A timeout in a busy period is worth another try; a config that failed the same way twice
    (each try of a hung config costs the whole timeout) is left alone unless the cap is raised.
    """
    bad = [s for s in statuses if s not in STATUSES or s == "ok"]
    if bad:
        failed = ", ".join(s for s in STATUSES if s != "ok")
        raise InvalidInputError(f"each retried status must be one of {failed}, but got {bad[0]!r}")
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise InvalidInputError(f"`max_attempts >= 1` must hold, but got max_attempts={max_attempts!r}")
    wanted = frozenset(statuses)

    def rule(row: dict[str, Any]) -> bool:
        metrics = {ATTEMPTS_METRIC: row.get(f"metric.{ATTEMPTS_METRIC}")}
        return row.get("status") in wanted and attempts_made(metrics) < max_attempts

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
