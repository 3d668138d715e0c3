"""Several launches of one serving config, summarised as one row.

A serving measurement on a shared machine moves from launch to launch: which core the server
lands on, what the hypervisor takes that minute. On the 2-core VM this project grew up on,
one grid of 50 llama-server configs put p50 TPOT of 2-slot configs at either ~5 or ~8 ms with
no pattern in the knobs. Launching every config a few times, in separate passes over the grid,
and keeping the median of each metric is what a grid should rank by and a predictor should
learn from; the launch-to-launch spread stays in the row as ``launch_cv_<metric>``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from perfpred.collect.serving._collector import latency_spread
from perfpred.datasets import Measurement
from perfpred.errors import InvalidInputError

LAUNCHES_METRIC = "launches"
FAILED_LAUNCHES_METRIC = "failed_launches"
# The metrics whose launch-to-launch spread is kept beside the median.
SPREAD_METRICS = ("tpot_p50_ms", "tpot_p99_ms", "ttft_p50_ms", "ttft_p99_ms", "output_tokens_per_s")


def _cv(values: list[float]) -> float:
    return float(np.std(values, ddof=1) / np.mean(values))


def median_of_launches(launches: Sequence[Measurement]) -> Measurement:
    """One row for several launches of the same config: each metric's median over the launches
    that worked, their pooled raw times, and how many launches there were and failed.

    The config counts as working when at least half its launches did; otherwise the row takes
    the most common failure status (with the last such launch's error), since a config that
    mostly fails to start is not one to recommend.
    """
    if not launches:
        raise InvalidInputError("median_of_launches needs at least one launch, but got none")
    ids = {m.measurement_id for m in launches}
    if len(ids) > 1:
        raise InvalidInputError(f"launches must all be of one config, but got {len(ids)} different configs")
    ok = [m for m in launches if m.status == "ok"]
    counts = {LAUNCHES_METRIC: float(len(launches)), FAILED_LAUNCHES_METRIC: float(len(launches) - len(ok))}
    if 2 * len(ok) < len(launches):
        status = Counter(m.status for m in launches if m.status != "ok").most_common(1)[0][0]
        last = [m for m in launches if m.status == status][-1]
        return replace(last, metrics={**last.metrics, **counts})
    names = sorted({k for m in ok for k in m.metrics})
    metrics: dict[str, float] = {}
    for name in names:
        values = [m.metrics[name] for m in ok if m.metrics.get(name) is not None]
        if values:
            metrics[name] = float(np.median(values))
        if name in SPREAD_METRICS and len(values) >= 2 and np.mean(values) > 0:
            metrics[f"launch_cv_{name}"] = _cv(values)
    metrics.update(counts)
    raw = [t for m in ok for t in m.raw_times_ms]
    runtimes = [m.runtime_ms for m in ok if m.runtime_ms is not None]
    spread = {**latency_spread(raw), "runtime_ms": float(np.median(runtimes)) if runtimes else None}
    return replace(ok[-1], metrics=metrics, raw_times_ms=raw, n_runs=len(raw) or None, **spread)
