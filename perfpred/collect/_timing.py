"""Timing done right on a noisy machine: warm-up, adaptive replicates, median and spread.

Each *sample* times ``number`` back-to-back calls and records the time per call, with
``number`` chosen (like ``torch.utils.benchmark.Timer.blocked_autorange``) so that a sample
lasts at least ``min_sample_ms``: tiny kernels are then not drowned by timer resolution and
call overhead. ``number`` is first guessed from a probe call, then re-chosen from the median
of the first samples (a cold first call, e.g. a thread pool starting, made 7 us GEMMs look
slow enough for one call per sample). Samples are taken until the 95% confidence interval of the median is
narrower than ``target_rel_ci`` (relative half-width), or a run/time cap is hit. The median
is the reported runtime because this machine's noise is one-sided (occasional 2x outliers).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from perfpred.errors import InvalidInputError


@dataclass(frozen=True)
class TimingPolicy:
    """How long and how often to time one configuration.

    Attributes:
        warmup_runs: calls made and discarded before timing (JIT, page faults, clocks); all of
            them are made, however long a call takes.
        min_runs: samples taken at least, even when the first ones agree.
        max_runs: samples taken at most.
        max_time_s: wall-time cap for the samples of one config (warm-up excluded).
        target_rel_ci: stop once the 95% CI half-width of the median / median is below this.
        min_sample_ms: each sample repeats the call until it lasts this long.
        cold_cache: flush the CPU caches before every sample (one call per sample).
    """

    warmup_runs: int = 2
    min_runs: int = 5
    max_runs: int = 100
    max_time_s: float = 2.0
    target_rel_ci: float = 0.02
    min_sample_ms: float = 2.0
    cold_cache: bool = False

    def __post_init__(self) -> None:
        rules = [
            ("warmup_runs", "warmup_runs >= 0", self.warmup_runs >= 0),
            ("min_runs", "min_runs >= 1", self.min_runs >= 1),
            ("max_runs", "max_runs >= min_runs", self.max_runs >= self.min_runs),
            ("max_time_s", "max_time_s > 0", self.max_time_s > 0),
            ("target_rel_ci", "0 < target_rel_ci < 1", 0 < self.target_rel_ci < 1),
            ("min_sample_ms", "min_sample_ms >= 0", self.min_sample_ms >= 0),
        ]
        for name, rule, ok in rules:
            if not ok:
                raise InvalidInputError(f"`{rule}` must hold, but got {name}={getattr(self, name)}")


# The timing policy as each timed row records it (``metric.timing_<field>``), so a re-run can tell a
# row timed under a looser policy (``--quick``'s 0.5 s cap) from one its own policy would give.
POLICY_FIELDS = ("warmup_runs", "min_runs", "max_runs", "max_time_s", "target_rel_ci", "min_sample_ms")
POLICY_METRIC_PREFIX = "timing_"
# Per field: is a larger value stricter (more warm-up, more samples, a longer cap) or a smaller one
# (a tighter CI target)? min_sample_ms is recorded, not ranked: longer samples are not stricter.
_STRICTER_IF_LARGER = {"warmup_runs": True, "min_runs": True, "max_runs": True, "max_time_s": True,
                       "target_rel_ci": False}
# The caps: they only matter to a row whose sampling they stopped (metric.timing_converged 0).
_CAPS = ("max_runs", "max_time_s")


def policy_metrics(policy: TimingPolicy) -> dict[str, float]:
    """The ``metric.timing_*`` values a row timed under ``policy`` records."""
    return {POLICY_METRIC_PREFIX + name: float(getattr(policy, name)) for name in POLICY_FIELDS}


def _recorded(metrics: dict, name: str) -> float | None:
    value = metrics.get(POLICY_METRIC_PREFIX + name)
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def recorded_policy(metrics: dict) -> dict[str, float] | None:
    """The policy fields a row's metrics record (None: a row from before policies were recorded)."""
    values = {name: _recorded(metrics, name) for name in POLICY_FIELDS}
    return {k: v for k, v in values.items() if v is not None} or None


def looser_fields(metrics: dict, policy: TimingPolicy, *, converged: bool = False) -> dict[str, float]:
    """The recorded policy fields of a row that are looser than ``policy`` (empty: the row satisfies it).

    A row without a recorded policy (stored before policies were recorded) satisfies any policy,
    so old stores are not re-timed wholesale. The caps (``max_runs``, ``max_time_s``) do not count
    for a row whose median met its CI target (``converged``): under higher caps its sampling would
    have stopped at the same sample.
    """
    recorded = recorded_policy(metrics) or {}
    looser = {}
    for name, larger in _STRICTER_IF_LARGER.items():
        value = recorded.get(name)
        if value is None or (converged and name in _CAPS):
            continue
        current = float(getattr(policy, name))
        if (value < current * (1 - 1e-9)) if larger else (value > current * (1 + 1e-9)):
            looser[name] = value
    return looser


# Samples re-choose the calls per sample from, and the most calls one sample makes.
CALIBRATION_RUNS = 3
MAX_CALLS_PER_SAMPLE = 10_000


@dataclass
class TimingResult:
    raw_times_ms: list[float]
    number: int
    stopped_by: str  # "stable" (the median's CI met the target) | "time_cap" | "max_runs"
    rel_ci: float
    median_ms: float = field(init=False)
    min_ms: float = field(init=False)
    mean_ms: float = field(init=False)
    std_ms: float = field(init=False)
    iqr_ms: float = field(init=False)
    cv: float = field(init=False)

    def __post_init__(self) -> None:
        self.median_ms = float(np.median(self.raw_times_ms))
        for name, value in spread_stats(self.raw_times_ms).items():
            setattr(self, name, value)

    def as_dict(self) -> dict:
        return asdict(self)


def spread_stats(raw_times_ms: Sequence[float]) -> dict[str, float]:
    """min_ms, mean_ms, std_ms, iqr_ms and cv of a set of timed samples (ms)."""
    t = np.asarray(raw_times_ms, dtype=float)
    mean = float(t.mean())
    std = float(t.std(ddof=1)) if len(t) > 1 else 0.0
    q75, q25 = np.percentile(t, [75, 25])
    return {"min_ms": float(t.min()), "mean_ms": mean, "std_ms": std, "iqr_ms": float(q75 - q25),
            "cv": std / mean if mean > 0 else 0.0}


def median_rel_ci(samples: list[float] | np.ndarray, z: float = 1.96) -> float:
    """Relative half-width of the distribution-free (binomial order-statistic) CI of the median."""
    t = np.sort(np.asarray(samples, dtype=float))
    n = len(t)
    if n < 3:
        return math.inf
    half = z * math.sqrt(n) / 2
    lo = max(0, math.floor(n / 2 - half))
    hi = min(n - 1, math.ceil(n / 2 + half) - 1)
    med = float(np.median(t))
    return float((t[hi] - t[lo]) / (2 * med)) if med > 0 else math.inf


def replicate_until_stable(take: Callable[[], Sequence[float]], policy: TimingPolicy, *,
                           min_runs: int | None = None,
                           before_each: Callable[[], None] | None = None,
                           recalibrate: Callable[[list[float]], bool] | None = None) -> tuple[list[float], str]:
    """Take samples until the median is stable or a cap is hit: the one stopping rule of every timer.

    ``take`` returns one or more samples (ms) per call; ``before_each`` runs untimed before it
    (a cache flush). Once ``CALIBRATION_RUNS`` samples exist, ``recalibrate(samples)`` is asked
    once whether they were taken the wrong way (too few calls per sample); if so they are
    dropped and sampling starts over within the same time cap. Returns the samples (at most
    ``max_runs``) and why sampling stopped: "stable" (95% CI of the median within
    ``target_rel_ci``), "time_cap" or "max_runs".
    """
    min_runs = policy.min_runs if min_runs is None else min_runs
    samples: list[float] = []
    deadline = time.perf_counter() + policy.max_time_s
    stopped_by = "max_runs"
    while len(samples) < policy.max_runs:
        if before_each is not None:
            t_flush = time.perf_counter()
            before_each()
            # Untimed work (a 960 MiB cache flush: ~70 ms) does not eat the sampling time cap.
            deadline += time.perf_counter() - t_flush
        samples.extend(take())
        if recalibrate is not None and len(samples) >= CALIBRATION_RUNS:
            redo, recalibrate = recalibrate(samples), None
            if redo:
                samples.clear()
                continue
        if len(samples) >= min_runs:
            if median_rel_ci(samples) <= policy.target_rel_ci:
                stopped_by = "stable"
                break
            if time.perf_counter() >= deadline:
                stopped_by = "time_cap"
                break
    return samples[: policy.max_runs], stopped_by


def calls_per_sample(call_ms: float, policy: TimingPolicy) -> int:
    """Back-to-back calls one sample makes so it lasts ``min_sample_ms`` (1 in cold-cache mode)."""
    if policy.cold_cache or policy.min_sample_ms <= 0 or call_ms >= policy.min_sample_ms:
        return 1
    return min(MAX_CALLS_PER_SAMPLE, max(1, math.ceil(policy.min_sample_ms / max(call_ms, 1e-6))))


def sample_calls(run_sample: Callable[[int], float], probe_ms: float, policy: TimingPolicy, *,
                 min_runs: int | None = None,
                 before_each: Callable[[], None] | None = None) -> tuple[list[float], int, str]:
    """Samples of ``run_sample(number)`` (ms per call over ``number`` calls) under ``policy``.

    ``number`` starts from the probe and is raised once from the median of the first samples
    when those were shorter than ``min_sample_ms`` (the probe ran slow: cold caches, a thread
    pool starting). Returns the samples, the final ``number`` and why sampling stopped.
    """
    number = calls_per_sample(probe_ms, policy)

    def recalibrate(samples: list[float]) -> bool:
        nonlocal number
        per_call = float(np.median(samples))
        # 10% headroom: warm calls run a little faster than the ones measured so far.
        better = calls_per_sample(per_call / 1.1, policy)
        if number * per_call >= policy.min_sample_ms or better <= number:
            return False
        number = better
        return True

    samples, stopped_by = replicate_until_stable(lambda: [run_sample(number)], policy, min_runs=min_runs,
                                                 before_each=before_each, recalibrate=recalibrate)
    return samples, number, stopped_by


class CacheFlusher:
    """Evicts the CPU caches by streaming over a buffer larger than the last-level cache."""

    def __init__(self, llc_bytes: int) -> None:
        self._buf = np.zeros(max(2 * llc_bytes, 8 << 20) // 8, dtype=np.float64)

    def __call__(self) -> None:
        self._buf += 1.0


def time_function(
    fn: Callable[[], object],
    policy: TimingPolicy = TimingPolicy(),
    *,
    sync: Callable[[], None] | None = None,
    flush: Callable[[], None] | None = None,
    cuda_events: bool = False,
) -> TimingResult:
    """Time ``fn`` under ``policy``; ``sync`` waits for asynchronous devices before reading a clock.

    With ``cuda_events`` the device's own events time each sample (``sync`` is then still used
    to wait for the end event); the host clock is used otherwise.
    """
    # The first call is warm-up and a probe of the call's cost.
    t0 = time.perf_counter()
    if policy.warmup_runs > 0:
        fn()
        if sync:
            sync()
    first_call_s = time.perf_counter() - t0
    for _ in range(policy.warmup_runs - 1):
        fn()
    if sync:
        sync()

    def run_sample(number: int) -> float:
        if cuda_events:
            import torch

            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(number):
                fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / number
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        if sync:
            sync()
        return (time.perf_counter() - t0) * 1e3 / number

    # A first guess of the calls per sample from one probe call (sample_calls re-checks it against
    # the first samples); cold-cache mode times single calls.
    probe_ms = first_call_s * 1e3
    if not policy.cold_cache and policy.min_sample_ms > 0 and first_call_s * 1e3 < 5 * policy.min_sample_ms:
        probe_ms = run_sample(1)

    # A config whose calls alone overrun the time cap gets 3 samples, not min_runs of them.
    min_runs = policy.min_runs
    if first_call_s * policy.min_runs > policy.max_time_s:
        min_runs = min(min_runs, 3)
    samples, number, stopped_by = sample_calls(
        run_sample, probe_ms, policy, min_runs=min_runs,
        before_each=flush if (flush is not None and policy.cold_cache) else None)
    return TimingResult(raw_times_ms=samples, number=number, stopped_by=stopped_by, rel_ci=median_rel_ci(samples))
