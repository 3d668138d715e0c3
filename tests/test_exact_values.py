"""Exact hand-computed values where the other tests check only properties or loose bands.

Each test here kills a mutant (an off-by-one, a swap, mean for median, ...) that a mutation pass
found the rest of the suite let through: symmetric fixtures, perfect fits, values nothing read.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from perfpred.collect import TimingPolicy, _timing, median_rel_ci, time_function
from perfpred.collect.serving._stats import RequestResult, summarize
from perfpred.features._gemm_gpu import gpu_gemm_features
from perfpred.models._metrics import r2_log
from perfpred.models._uncertainty import _conformal_quantile, interval_coverage
from perfpred.tuner._space import Continuous, SearchSpace


def test_r2_log_scores_the_prediction_against_the_truth_not_the_reverse():
    # In logs: truth [0, 1, 2], prediction [0, 2, 4]: 1 - 5/2 (swapped arguments give 0.375).
    assert r2_log([1, 10, 100], [1, 100, 10000]) == pytest.approx(-1.5)


def test_median_ci_uses_the_right_order_statistics():
    # 100 samples 1..100: the 95% order statistics are the 41st and 60th values, the median 50.5.
    assert median_rel_ci(np.arange(1, 101, dtype=float)) == pytest.approx(19 / 101)


def test_a_sample_of_several_calls_reports_the_time_per_call(monkeypatch):
    clock_us = [0]  # a fake clock in whole microseconds: each call takes exactly 1 ms
    monkeypatch.setattr(_timing.time, "perf_counter", lambda: clock_us[0] / 1e6)

    def one_ms_call():
        clock_us[0] += 1000

    result = time_function(one_ms_call, TimingPolicy(warmup_runs=1, min_runs=5, max_runs=20, max_time_s=10.0,
                                                     min_sample_ms=5.0))
    assert result.number == 5  # calls per sample, to reach min_sample_ms
    assert result.median_ms == pytest.approx(1.0) and result.raw_times_ms == pytest.approx([1.0] * 5)


def test_a_memory_bound_gemm_takes_its_memory_time_in_the_wave_bound():
    gpu = {"hardware_id": "gpu-test", "peak_gflops": {"fp32": 10000.0}, "mem_bw_gbs": 500.0, "sm_count": 40,
           "l2_cache_kib": 4096, "memory_gib": 16.0}
    table = pd.DataFrame({"workload.b": [1], "workload.m": [4096], "workload.n": [4096], "workload.k": [8],
                          "workload.dtype": ["fp32"], "hardware_json": [json.dumps(gpu)]})
    features = gpu_gemm_features(table)
    memory_ms = 4 * (4096 * 8 * 2 + 4096 * 4096) / 500e6  # A and B read once, C written: 0.1347 ms
    assert features["log2_wave_roofline_ms"].iloc[0] == pytest.approx(np.log2(memory_ms))
    # 16,384 32x32 tiles over 40 SMs: 410 waves, each one tile's 2 * 32 * 32 * 8 FLOPs at one SM's share of peak.
    assert features["log2_wave_compute_ms"].iloc[0] == pytest.approx(np.log2(410 * 2 * 32 * 32 * 8 / 2.5e8))


def test_conformal_quantile_takes_the_finite_sample_rank():
    assert _conformal_quantile(np.arange(1.0, 11.0), 0.9) == 10.0  # rank ceil((10 + 1) * 0.9) = 10
    assert _conformal_quantile(np.arange(1.0, 6.0), 0.9) == math.inf  # too few scores for a 90% band


def test_interval_coverage_tells_below_from_above():
    out = interval_coverage([0.5, 0.6, 2.0, 4.0], [1.0] * 4, [3.0] * 4)
    assert (out["coverage"], out["below"], out["above"]) == (0.25, 0.5, 0.25)


def _request(ttft_ms: float, e2e_ms: float, tokens: int) -> RequestResult:
    return RequestResult(index=0, prompt_tokens=4, max_tokens=16, ok=True, output_tokens=tokens, ttft_ms=ttft_ms,
                         e2e_ms=e2e_ms)


def test_serving_summary_means_are_means():
    summary = summarize([_request(10.0, 50.0, 5), _request(20.0, 60.0, 5), _request(60.0, 100.0, 5)],
                        duration_s=1.0)
    assert summary["ttft_mean_ms"] == pytest.approx(30.0) and summary["ttft_p50_ms"] == pytest.approx(20.0)


def test_burst_share_counts_only_requests_with_a_tpot():
    # One burst (TPOT 0.05 ms), one paced answer, one single-token answer (no TPOT): half burst.
    summary = summarize([_request(100.0, 100.2, 5), _request(100.0, 140.0, 5), _request(50.0, 50.0, 1)],
                        duration_s=1.0)
    assert summary["burst_frac"] == pytest.approx(0.5)


def test_a_continuous_domain_includes_its_upper_edge():
    space = SearchSpace({"x": Continuous(1.0, 10.0)})
    assert space.in_domains(pd.DataFrame({"x": [1.0, 10.0, 10.5]})).tolist() == [True, True, False]


def test_an_integer_range_with_fractional_bounds_rounds_inwards():
    space = SearchSpace({"n": Continuous(0.5, 3.5, integer=True)})
    assert space.params["n"].int_bounds == (1, 3)
    assert space.from_unit(np.array([[0.0], [1.0]]))["n"].tolist() == [1, 3]
