"""time_function, TimingPolicy and the median CI on a noisy 2-core machine (bands, not tight numbers)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perfpred.collect import CacheFlusher, TimingPolicy, TimingResult, _timing, median_rel_ci, time_function
from perfpred.errors import InvalidInputError


def sleeper(ms: float):
    def fn() -> None:
        time.sleep(ms / 1e3)

    return fn


class Counter:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1


# ---------------------------------------------------------------------------- time_function


def test_median_of_a_2ms_sleep_is_in_a_sane_band():
    policy = TimingPolicy(warmup_runs=1, min_runs=5, max_runs=20, max_time_s=0.5, target_rel_ci=0.05)
    result = time_function(sleeper(2.0), policy)
    # sleep never returns early; a loaded machine adds a little, never a factor of 3.
    assert result.median_ms >= 1.95 and result.median_ms <= 6.0
    assert result.min_ms <= result.median_ms <= max(result.raw_times_ms)
    assert result.number == 1  # a 2 ms call already lasts min_sample_ms
    assert len(result.raw_times_ms) >= 5


def test_min_runs_is_honoured_even_when_the_first_samples_agree(monkeypatch):
    # Every CI counts as narrow enough (no real timing is that steady on a loaded machine).
    monkeypatch.setattr(_timing, "median_rel_ci", lambda samples, z=1.96: 0.0 if len(samples) >= 3 else math.inf)
    policy = TimingPolicy(warmup_runs=0, min_runs=7, max_runs=50, max_time_s=5.0, target_rel_ci=0.5,
                          min_sample_ms=0.0)
    result = time_function(sleeper(0.2), policy)
    assert len(result.raw_times_ms) == 7
    assert result.stopped_by == "stable"


def test_a_steady_function_stops_as_stable_before_the_caps():
    policy = TimingPolicy(warmup_runs=1, min_runs=5, max_runs=10_000, max_time_s=30.0, target_rel_ci=0.5)
    result = time_function(sleeper(1.0), policy)
    assert result.stopped_by == "stable"
    assert result.rel_ci <= 0.5
    assert 5 <= len(result.raw_times_ms) < 10_000


def test_max_runs_caps_the_samples():
    # A target no real timing can meet: only the run cap stops it.
    policy = TimingPolicy(warmup_runs=0, min_runs=3, max_runs=6, max_time_s=60.0, target_rel_ci=1e-12,
                          min_sample_ms=0.0)
    result = time_function(sleeper(0.2), policy)
    assert len(result.raw_times_ms) == 6
    assert result.stopped_by == "max_runs"


def test_max_time_s_caps_the_sampling_time():
    policy = TimingPolicy(warmup_runs=0, min_runs=3, max_runs=100_000, max_time_s=0.05, target_rel_ci=1e-12,
                          min_sample_ms=0.0)
    t0 = time.perf_counter()
    result = time_function(sleeper(1.0), policy)
    elapsed = time.perf_counter() - t0
    assert result.stopped_by == "time_cap"
    assert 3 <= len(result.raw_times_ms) < 1000
    assert elapsed < 2.0  # 0.05 s cap plus one sample; generous for a loaded machine


def test_a_call_longer_than_the_cap_gets_three_samples_not_min_runs():
    policy = TimingPolicy(warmup_runs=1, min_runs=10, max_runs=100, max_time_s=0.03, target_rel_ci=1e-12)
    result = time_function(sleeper(15.0), policy)
    assert len(result.raw_times_ms) == 3
    assert result.stopped_by == "time_cap"


def test_a_tiny_function_gets_many_calls_per_sample():
    counter = Counter()
    policy = TimingPolicy(warmup_runs=2, min_runs=3, max_runs=5, max_time_s=0.2, min_sample_ms=1.0)
    result = time_function(counter, policy)
    assert result.number > 1
    # Every sample ran `number` calls; warm-up and the probe add a few more.
    assert counter.calls >= result.number * len(result.raw_times_ms)
    assert result.median_ms < 1.0  # time per call, not per sample


def test_warmup_calls_are_made_and_not_timed():
    counter = Counter()
    policy = TimingPolicy(warmup_runs=4, min_runs=3, max_runs=3, max_time_s=1.0, min_sample_ms=0.0)
    result = time_function(counter, policy)
    assert result.number == 1
    assert counter.calls == 4 + 3


def test_cold_cache_mode_flushes_before_every_sample_and_times_single_calls():
    flushes = Counter()
    calls = Counter()
    policy = TimingPolicy(warmup_runs=1, min_runs=4, max_runs=9, max_time_s=1.0, cold_cache=True,
                          target_rel_ci=1e-12)
    result = time_function(calls, policy, flush=flushes)
    assert result.number == 1
    assert flushes.calls == len(result.raw_times_ms) == 9
    assert calls.calls == 1 + 9


def test_flush_is_not_called_without_cold_cache():
    flushes = Counter()
    policy = TimingPolicy(warmup_runs=0, min_runs=3, max_runs=3, min_sample_ms=0.0)
    time_function(Counter(), policy, flush=flushes)
    assert flushes.calls == 0


def test_sync_is_called_so_asynchronous_work_is_waited_for():
    syncs = Counter()
    policy = TimingPolicy(warmup_runs=1, min_runs=3, max_runs=3, min_sample_ms=0.0)
    result = time_function(Counter(), policy, sync=syncs)
    assert syncs.calls >= len(result.raw_times_ms)


def test_cache_flusher_is_bigger_than_the_cache_and_callable():
    flusher = CacheFlusher(llc_bytes=1 << 20)
    flusher()
    flusher()
    assert flusher._buf.nbytes >= 2 << 20
    assert float(flusher._buf[0]) == 2.0


def test_timing_result_statistics():
    result = TimingResult(raw_times_ms=[1.0, 2.0, 3.0, 4.0, 10.0], number=1, stopped_by="max_runs", rel_ci=0.1)
    assert result.median_ms == 3.0
    assert result.min_ms == 1.0
    assert result.mean_ms == 4.0
    assert result.iqr_ms == pytest.approx(2.0)
    assert result.std_ms == pytest.approx(np.std([1, 2, 3, 4, 10], ddof=1))
    assert result.cv == pytest.approx(result.std_ms / 4.0)
    assert result.as_dict()["median_ms"] == 3.0
    single = TimingResult(raw_times_ms=[2.0], number=1, stopped_by="time_cap", rel_ci=math.inf)
    assert single.std_ms == 0.0 and single.cv == 0.0


# ---------------------------------------------------------------------------- median_rel_ci

positive_samples = st.lists(st.floats(min_value=1e-3, max_value=1e3, allow_nan=False), min_size=3, max_size=60)


@settings(max_examples=200, deadline=None)
@given(samples=positive_samples, scale=st.floats(min_value=1e-3, max_value=1e3))
def test_median_rel_ci_is_scale_invariant(samples, scale):
    a = median_rel_ci(samples)
    b = median_rel_ci([s * scale for s in samples])
    assert b == pytest.approx(a, rel=1e-9, abs=1e-12)


@settings(max_examples=200, deadline=None)
@given(samples=positive_samples)
def test_median_rel_ci_is_non_negative_and_order_free(samples):
    value = median_rel_ci(samples)
    assert value >= 0
    assert math.isfinite(value)
    assert median_rel_ci(list(reversed(samples))) == value


@settings(max_examples=100, deadline=None)
@given(value=st.floats(min_value=1e-3, max_value=1e3), n=st.integers(min_value=3, max_value=50))
def test_median_rel_ci_of_identical_samples_is_zero(value, n):
    assert median_rel_ci([value] * n) == 0.0


def test_median_rel_ci_needs_three_samples():
    assert median_rel_ci([]) == math.inf
    assert median_rel_ci([1.0, 1.0]) == math.inf


def test_median_rel_ci_narrows_with_more_samples():
    rng = np.random.default_rng(0)
    small = median_rel_ci(1.0 + 0.1 * rng.standard_normal(10))
    large = median_rel_ci(1.0 + 0.1 * rng.standard_normal(1000))
    assert large < small


# ---------------------------------------------------------------------------- TimingPolicy validation


@pytest.mark.parametrize(
    ("kwargs", "rule", "shown"),
    [
        ({"warmup_runs": -1}, "warmup_runs >= 0", "warmup_runs=-1"),
        ({"min_runs": 0}, "min_runs >= 1", "min_runs=0"),
        ({"min_runs": 5, "max_runs": 4}, "max_runs >= min_runs", "max_runs=4"),
        ({"max_time_s": 0}, "max_time_s > 0", "max_time_s=0"),
        ({"target_rel_ci": 0.0}, "0 < target_rel_ci < 1", "target_rel_ci=0.0"),
        ({"target_rel_ci": 1.5}, "0 < target_rel_ci < 1", "target_rel_ci=1.5"),
        ({"min_sample_ms": -1.0}, "min_sample_ms >= 0", "min_sample_ms=-1.0"),
    ],
)
def test_bad_policy_values_state_the_rule_and_the_value(kwargs, rule, shown):
    with pytest.raises(InvalidInputError) as info:
        TimingPolicy(**kwargs)
    message = str(info.value)
    assert rule in message
    assert shown in message
    assert "\n" not in message
