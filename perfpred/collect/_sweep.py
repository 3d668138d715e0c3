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

from perfpred.collect._timing import TimingPolicy, looser_fields
from perfpred.collect._visits import combine_visits, gate_visits, visits_done
from perfpred.datasets import STATUSES, Measurement, MeasurementStore
from perfpred.errors import InvalidInputError

DESIGNS = ("grid", "random", "sobol")
# How many times a config has been measured from scratch (a re-measure adds one; absent: once).
ATTEMPTS_METRIC = "attempts"
# A row whose replicates spread more than this (cv = std/mean) counts as noisy in the sweep's
# summary unless --remeasure-above-cv names another threshold; on an idle machine GEMM rows
# spread a few percent, on the loaded one of the QA run the median cv was 0.45.
NOISY_CV = 0.15
# The share of a sweep's rows that are noisy (not converged, or above the cv threshold) above
# which the summary warns that the data are not fit to train on as they are.
NOISY_SHARE = 0.25
# The machine is busy (timings spoiled) above this 1-minute load average per CPU; the sweep
# checks it again every LOAD_CHECK_S seconds.
BUSY_LOAD_PER_CPU = 0.5
LOAD_CHECK_S = 30.0


class Collector(Protocol):
    """What run_sweep measures with. A collector with a ``policy`` (a ``TimingPolicy``) records
    it on each timed row, and a re-run re-times rows stored under a looser one."""

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
    remeasure_s: float = 0.0  # of wall_s, the time spent re-timing stored configs
    discarded_s: float = 0.0  # of remeasure_s, the re-measures that came out noisier (``kept`` of them): dropped
    # The quality of the ok rows this sweep left in the store (measured or kept), so noisy data is seen:
    ok_rows: int = 0
    unconverged: int = 0  # metric.timing_converged == 0: a time or run cap, not the CI target, stopped sampling
    noisy: int = 0  # cv above noisy_cv
    poor: int = 0  # either of the two
    noisy_cv: float = NOISY_CV
    peak_load: float | None = None  # the highest 1-minute load average seen (rows and the sweep's checks)
    busy_warnings: int = 0  # warnings given during the sweep that the machine had become busy
    # Stored rows re-timed because their recorded timing policy was looser than this sweep's, by
    # what was looser ("max_time_s=0.5, max_runs=20" -> rows); they count in ``remeasured`` too.
    retimed_policy: int = 0
    looser_policies: dict[str, int] = field(default_factory=dict)

    @property
    def new(self) -> int:
        """Configs measured for the first time (``measured`` counts the re-measured ones too)."""
        return self.measured - self.remeasured

    @property
    def poor_share(self) -> float:
        """The share of the ok rows that are noisy (not converged, or spread above ``noisy_cv``)."""
        return self.poor / self.ok_rows if self.ok_rows else 0.0


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
    respect_policy: bool = True,
    noisy_cv: float = NOISY_CV,
    load_check_s: float | None = LOAD_CHECK_S,
    warn: Callable[[str], None] | None = None,
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

    With ``respect_policy``, a stored ok row timed under a looser ``TimingPolicy`` than the
    collector's (its ``metric.timing_*`` fields: a shorter ``max_time_s`` or fewer ``max_runs``
    where the row did not converge, fewer warm-up or minimum runs, a wider ``target_rel_ci``) is
    re-measured like a ``remeasure`` pick, the steadier row kept (``steadier``: a converged row
    over one a cap stopped); a kept earlier row keeps the policy it was timed under, so a later
    run under the stricter one tries it again. Rows without a recorded policy (stored before it
    was recorded) count as timed under the collector's.

    Quality is counted, not hidden: ``SweepReport`` says how many ok rows did not converge or
    spread above ``noisy_cv``; every ``load_check_s`` seconds the load average is read again and
    ``warn`` (default: a line on stderr) is called once if the machine became busy.
    """
    if isinstance(visits, bool) or not isinstance(visits, int) or visits < 1:
        raise InvalidInputError(f"`visits >= 1` must hold, but got visits={visits!r}")
    if ref_tolerance is not None and not ref_tolerance >= 1:
        raise InvalidInputError(f"`ref_tolerance >= 1` must hold, but got ref_tolerance={ref_tolerance!r}")
    for cfg in configs:
        cfg.validate()
    if not noisy_cv > 0:
        raise InvalidInputError(f"`noisy_cv > 0` must hold, but got noisy_cv={noisy_cv!r}")
    warn = warn or _warn
    policy = getattr(collector, "policy", None) if respect_policy else None
    policy = policy if isinstance(policy, TimingPolicy) else None
    report = SweepReport(noisy_cv=noisy_cv)
    stored: dict[str, dict[str, Any]] = {}
    keys = [collector.measurement_id(cfg) for cfg in configs]
    if (remeasure is not None or visits > 1 or policy is not None) and len(store):
        # Only this sweep's rows are read (a big store holds many others), every column of them.
        rows = store.rows_of(keys, store.column_types()).reset_index()
        stored = {row["measurement_id"]: row for row in rows.to_dict("records")}
    todo: list[_Pending] = []
    for cfg, key in zip(configs, keys, strict=True):
        row = stored.get(key)
        looser = _looser_policy(row, policy) if row is not None and policy is not None else {}
        fresh = not store.contains(key) or (row is not None and (bool(looser) or (remeasure is not None
                                                                                  and remeasure(row))))
        done = 0 if fresh else (visits_done(row) if row is not None else 1)
        if done >= visits:
            report.skipped += 1
            continue
        previous = None if fresh else Measurement.from_row(row)
        pending = _Pending(cfg, done, previous, replace_stored=store.contains(key))
        if fresh and row is not None:
            pending.earlier = Measurement.from_row(row)
            if looser:
                pending.looser = ", ".join(f"{name}={value:g}" for name, value in looser.items())
                pending.policy = policy
        todo.append(pending)
    t0 = time.perf_counter()
    bar = None
    total = sum(visits - p.done for p in todo)
    remeasures = sum(p.earlier is not None for p in todo)
    remeasures_done = 0
    if progress and total:
        bar = _progress_bar()
        bar.start()
        label = f"{collector.name} sweep" + (f" ({visits} visits)" if visits > 1 else "")
        task = bar.add_task(label, total=total, last="")
        # The re-measures of stored configs on a line of their own: how many are done, the time
        # they took, and how many came out noisier and were discarded (the earlier row kept).
        retask = bar.add_task("re-measured", total=remeasures, last="", spent_s=0.0) if remeasures else None
    rng = np.random.default_rng(seed)
    last_load_check, timed = t0, 0
    try:
        for visit in range(1, visits + 1):
            round_ = [p for p in todo if p.done < visit]
            if visit > 1:
                round_ = [round_[i] for i in rng.permutation(len(round_))]
            for pending in round_:
                started = time.perf_counter()
                m = collector.measure(pending.cfg)
                if visits > 1:
                    m = combine_visits(pending.previous, m)
                held = pending.store(m, store)
                if pending.earlier is not None:  # a re-measure: its time is re-measure time
                    spent = time.perf_counter() - started
                    pending.spent_s += spent
                    report.remeasure_s += spent
                first = pending.previous is None
                pending.previous, pending.done, pending.replace_stored = m, pending.done + 1, True
                report.measured += int(first)
                report.remeasured += int(first and pending.was_stored)
                report.visits += 1
                if pending.done >= visits or visits == 1:
                    report.kept += int(pending.kept_earlier)
                    report.statuses[held.status] = report.statuses.get(held.status, 0) + 1
                    report.failed += int(held.status != "ok")
                    if pending.earlier is not None:
                        remeasures_done += 1
                        report.discarded_s += pending.spent_s if pending.kept_earlier else 0.0
                    if pending.looser:
                        report.retimed_policy += 1
                        report.looser_policies[pending.looser] = report.looser_policies.get(pending.looser, 0) + 1
                    _count_quality(report, held)
                if on_measured:
                    on_measured(pending.cfg, m)
                if bar is not None:
                    bar.update(task, advance=1, last=progress_note(m, held, pending.earlier))
                    if retask is not None and pending.earlier is not None:
                        bar.update(retask, completed=remeasures_done, spent_s=report.remeasure_s,
                                   last=f"{report.kept} noisier ({report.discarded_s:.1f} s) discarded")
                timed += 1
                now = time.perf_counter()
                if load_check_s is not None and not report.busy_warnings and now - last_load_check >= load_check_s:
                    last_load_check = now
                    load = os.getloadavg()[0]
                    report.peak_load = load if report.peak_load is None else max(report.peak_load, load)
                    text = busy_warning(during=f"after {timed} of {total} timings, {now - t0:.0f} s in",
                                        load=load)
                    if text:
                        report.busy_warnings += 1
                        warn(text)
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
    spent_s: float = 0.0  # time spent re-measuring it (its visits)
    looser: str = ""  # re-timed because the earlier row's timing policy was looser: what was looser
    policy: TimingPolicy | None = None  # with ``looser``: the stricter policy it is re-timed under

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
            # The kept row keeps the policy it was timed under (it never ran under the stricter one),
            # so a later run under that policy tries it again.
            store.append([replace(self.earlier, metrics={**self.earlier.metrics, **attempts})], replace=True)
            self.kept_earlier = True
        return self.earlier


def _looser_policy(row: dict[str, Any], policy: TimingPolicy) -> dict[str, float]:
    """The fields of a stored row's timing policy looser than ``policy`` (empty: skip the row)."""
    if row.get("status") != "ok":
        return {}  # failed rows are retried by their status (--retry-status), not by the policy
    metrics = {k[len("metric."):]: v for k, v in row.items() if k.startswith("metric.")}
    converged = metrics.get("timing_converged")
    return looser_fields(metrics, policy, converged=converged is not None and converged == 1)


def _count_quality(report: SweepReport, held: Measurement) -> None:
    """Count a row the sweep left in the store: is it noisy, and what load was it timed at?"""
    if held.load_avg_1m is not None:
        report.peak_load = held.load_avg_1m if report.peak_load is None else max(report.peak_load, held.load_avg_1m)
    if held.status != "ok":
        return
    report.ok_rows += 1
    unconverged = held.metrics.get("timing_converged") == 0
    noisy = held.cv is not None and held.cv > report.noisy_cv
    report.unconverged += int(unconverged)
    report.noisy += int(noisy)
    report.poor += int(unconverged or noisy)


def _warn(text: str) -> None:
    from perfpred._console import err_console

    err_console.print(f"[yellow]warning:[/] {text}", highlight=False)


def quality_warning(report: SweepReport, advice: Sequence[str], share: float = NOISY_SHARE) -> str | None:
    """A warning when more than ``share`` of the sweep's ok rows are noisy, with ``advice`` (what to do)."""
    if not report.ok_rows or report.poor_share <= share:
        return None
    load = f" (1-min load average up to {report.peak_load:.1f} on {os.cpu_count() or 1} CPUs)" \
        if report.peak_load is not None else ""
    return (f"{report.poor} of the {report.ok_rows} rows ({report.poor_share:.0%}) are noisy{load}: "
            f"{report.unconverged} did not converge (a time or run cap stopped sampling before the median's "
            f"95% CI met its target) and {report.noisy} spread above cv {report.noisy_cv:g}. They are stored "
            "as measured, but a model trained on them inherits the noise. What to do: " + "; ".join(advice) + ".")


def _runtime_text(m: Measurement) -> str:
    return f"{m.runtime_ms:.4g} ms" if m.status == "ok" and m.runtime_ms is not None else m.status


def progress_note(new: Measurement, held: Measurement, earlier: Measurement | None) -> str:
    """The progress line's note on a config just timed: what the store now holds for it.

    ``new`` is the row just measured (over the visits so far), ``held`` the row the store keeps (see ``steadier``) and
    ``earlier`` the stored row a re-measure competed with (None for a config not stored before).
    A noisier re-measure is named as discarded, never shown as the config's result.
    """
    if earlier is None:
        return _runtime_text(held)
    attempt = attempts_made(earlier.metrics) + 1
    if held is earlier:
        return f"{_runtime_text(earlier)} kept (attempt {attempt}: {_runtime_text(new)}, noisier)"
    return f"{_runtime_text(held)} (attempt {attempt}, steadier)"


def _progress_bar() -> Any:
    """The sweep's progress display: a line per task, with the last result and the time taken;
    a task with a ``spent_s`` field (the re-measures) shows that time, not the time since start."""
    from datetime import timedelta

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        Task,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.table import Column
    from rich.text import Text

    class TimeSpentColumn(TimeElapsedColumn):
        def render(self, task: Task) -> Text:
            spent = task.fields.get("spent_s")
            if spent is None:
                return super().render(task)
            return Text(str(timedelta(seconds=int(spent))), style="progress.elapsed")

    def fixed() -> Column:
        return Column(no_wrap=True)

    # On a narrow terminal the note is cut short, never the counts and times before it.
    return Progress(TextColumn("[bold]{task.description}", table_column=fixed()),
                    BarColumn(bar_width=20, table_column=fixed()), MofNCompleteColumn(table_column=fixed()),
                    TimeSpentColumn(table_column=fixed()), TextColumn("ETA", table_column=fixed()),
                    TimeRemainingColumn(table_column=fixed()),
                    TextColumn("{task.fields[last]}", table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1)),
                    expand=True)


def attempts_made(metrics: dict[str, Any]) -> int:
    """How many times a row's config was measured (rows from before the count existed: once)."""
    value = metrics.get(ATTEMPTS_METRIC)
    return 1 if value is None or (isinstance(value, float) and math.isnan(value)) else int(value)


def _unsteadiness(m: Measurement) -> float:
    if m.status != "ok":
        return math.inf
    return math.inf if m.cv is None or math.isnan(m.cv) else m.cv


def _converged(m: Measurement) -> bool:
    """False where a time or run cap, not the CI target, stopped the sampling (``timing_converged`` 0)."""
    return m.metrics.get("timing_converged") != 0


def steadier(new: Measurement, old: Measurement) -> Measurement:
    """The row a re-measure keeps: an ok row over a failed one, then a converged row over one a cap
    stopped (its few samples can spread less by chance), then the lower cv; on a tie the newer."""
    if (old.status == "ok") != (new.status == "ok"):
        return new if new.status == "ok" else old
    if _converged(old) != _converged(new):
        return new if _converged(new) else old
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


def busy_warning(threshold_per_cpu: float = BUSY_LOAD_PER_CPU, *, during: str | None = None,
                 load: float | None = None) -> str | None:
    """A warning when the machine is busy enough to spoil timings (1-minute load average above
    ``threshold_per_cpu`` per CPU); ``during`` says where in a sweep it became so."""
    cpus = os.cpu_count() or 1
    load = os.getloadavg()[0] if load is None else load
    if load <= threshold_per_cpu * cpus:
        return None
    if during:
        return (f"this machine became busy during the sweep ({during}): 1-min load average {load:.1f} on {cpus} "
                f"CPUs, above {threshold_per_cpu * cpus:g}; timings from here on will be noisy (the cv, "
                "metric.timing_converged and load_avg_1m columns record it)")
    return (f"this machine is busy (1-min load average {load:.1f} on {cpus} CPUs): timings will be noisy; "
            "the cv and load_avg_1m columns record it, and --remeasure-above-cv re-times noisy rows later")


def with_overrides(configs: Iterable[Any], **overrides: Any) -> list[Any]:
    return [replace(c, **overrides) for c in configs]
