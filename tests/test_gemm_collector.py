"""GemmCollector on tiny real GEMMs (CPU), input refusal before running, and failures as rows."""

from __future__ import annotations

import os

import pandas as pd
import pytest

from perfpred.collect import (
    GemmCollector,
    GemmConfig,
    TimingPolicy,
    _gemm,
    _power,
    config_from_dict,
    fingerprint,
    run_sweep,
)
from perfpred.datasets import MeasurementStore
from perfpred.errors import InvalidInputError

FAST = TimingPolicy(warmup_runs=1, min_runs=3, max_runs=10, max_time_s=0.05, target_rel_ci=0.05, min_sample_ms=0.5)


@pytest.fixture
def collector() -> GemmCollector:
    return GemmCollector(policy=FAST, measure_power=True, power_duration_s=0.05, reference=True)


def rapl_readable() -> bool:
    return bool(_power._rapl_package_domains(_power._RAPL_ROOT))


def check_ok(m, cfg: GemmConfig) -> None:
    assert m.status == "ok", m.error
    assert m.kind == "gemm"
    assert m.runtime_ms is not None and m.runtime_ms > 0
    assert len(m.raw_times_ms) == m.n_runs >= 3
    assert all(t > 0 for t in m.raw_times_ms)
    assert min(m.raw_times_ms) <= m.runtime_ms <= max(m.raw_times_ms)
    assert m.min_ms == min(m.raw_times_ms)
    assert m.load_avg_1m is not None and m.load_avg_1m >= 0
    assert m.workload == cfg.workload()
    assert m.hardware_id == fingerprint(cfg.device)["hardware_id"]
    assert m.hardware["hardware_id"] == m.hardware_id
    assert m.hardware["peak_gflops"][cfg.dtype] > 0  # roofline features need the peaks
    assert m.metrics["gflops"] > 0
    assert m.metrics["calls_per_sample"] >= 1
    if cfg.device == "cpu" and not rapl_readable():
        assert m.power_source == "unavailable"
        assert m.power_w is None and m.energy_j is None
    elif m.power_source != "unavailable":
        assert m.power_w > 0 and m.energy_j > 0


@pytest.mark.parametrize(
    "cfg",
    [
        GemmConfig(32, 48, 16, dtype="fp32", backend="torch"),
        GemmConfig(32, 48, 16, dtype="fp64", backend="torch"),
        GemmConfig(32, 48, 16, dtype="bf16", backend="torch"),
        GemmConfig(16, 24, 40, dtype="fp32", backend="torch", trans_a=True, trans_b=True, b=3),
        GemmConfig(32, 48, 16, dtype="fp32", backend="numpy"),
        GemmConfig(32, 48, 16, dtype="fp64", backend="numpy", trans_b=True),
        GemmConfig(16, 24, 40, dtype="fp32", backend="numpy", trans_a=True, b=2),
    ],
    ids=lambda c: f"{c.backend}-{c.dtype}-b{c.b}-{'t' if c.trans_a else 'n'}{'t' if c.trans_b else 'n'}",
)
def test_measures_tiny_configs_on_cpu(collector, cfg):
    m = collector.measure(cfg)
    check_ok(m, cfg)
    assert m.config == {"backend": cfg.backend, "device": "cpu", "threads": 1, "cold_cache": False}
    assert m.ref_runtime_ms is not None and m.ref_runtime_ms > 0
    assert m.measurement_id == collector.measurement_id(cfg)


def test_no_reference_leaves_ref_runtime_empty():
    m = GemmCollector(policy=FAST, reference=False).measure(GemmConfig(16, 16, 16))
    assert m.status == "ok"
    assert m.ref_runtime_ms is None


def test_a_row_says_whether_its_timing_converged():
    capped = TimingPolicy(warmup_runs=1, min_runs=3, max_runs=3, max_time_s=0.05, target_rel_ci=1e-9)
    m = GemmCollector(policy=capped, reference=False).measure(GemmConfig(16, 16, 16))
    assert m.status == "ok" and m.metrics["timing_converged"] == 0.0  # max_runs stopped it, not the CI


def test_cold_cache_is_part_of_the_config_and_the_id():
    cold = GemmCollector(policy=TimingPolicy(warmup_runs=1, min_runs=3, max_runs=3, cold_cache=True),
                         reference=False, measure_power=False)
    cfg = GemmConfig(16, 16, 16)
    m = cold.measure(cfg)
    assert m.status == "ok"
    assert m.config["cold_cache"] is True
    assert m.metrics["calls_per_sample"] == 1.0
    assert cold.measurement_id(cfg) != GemmCollector(policy=FAST).measurement_id(cfg)


def test_the_operation_computes_the_right_product():
    import numpy as np

    cfg = GemmConfig(5, 7, 3, b=2, dtype="fp64", trans_a=True, trans_b=True, backend="numpy")
    call, sync = _gemm._make_operation(cfg)
    out = call()
    assert sync is None
    assert out.shape == (2, 5, 7)
    torch_cfg = GemmConfig(5, 7, 3, dtype="fp64", trans_b=True)
    out_t = _gemm._make_operation(torch_cfg)[0]()
    assert tuple(out_t.shape) == (5, 7)
    assert np.isfinite(out_t.numpy()).all()


def test_threads_are_restored_after_measuring(collector):
    import torch

    before = torch.get_num_threads()
    collector.measure(GemmConfig(16, 16, 16, threads=1))
    assert torch.get_num_threads() == before


# ---------------------------------------------------------------------------- refusal before running


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"m": 0}, "m > 0"),
        ({"n": -4}, "n > 0"),
        ({"k": 32.0}, "k > 0"),
        ({"m": "64"}, "m > 0"),
        ({"b": 0}, "b > 0"),
        ({"m": True}, "m > 0"),
        ({"dtype": "fp8"}, "fp8"),
        ({"backend": "jax"}, "jax"),
        ({"backend": "numpy", "dtype": "bf16"}, "bf16"),
        ({"threads": 0}, "threads=0"),
        ({"threads": (os.cpu_count() or 1) + 1}, f"threads={(os.cpu_count() or 1) + 1}"),
        ({"device": "tpu"}, "tpu"),
        ({"backend": "numpy", "device": "cuda"}, "numpy"),
        ({"m": 10**6, "n": 10**6, "k": 10**6}, "GiB"),
    ],
)
def test_bad_configs_are_refused_before_running(monkeypatch, collector, kwargs, needle):
    def must_not_run(cfg):
        raise AssertionError("a refused config must not be run")

    monkeypatch.setattr(_gemm, "_make_operation", must_not_run)
    cfg = GemmConfig(**{"m": 32, "n": 32, "k": 32, **kwargs})
    with pytest.raises(InvalidInputError) as info:
        cfg.validate()
    assert needle in str(info.value)
    assert "\n" not in str(info.value)
    with pytest.raises(InvalidInputError):
        collector.measure(cfg)


def test_cuda_without_a_gpu_is_refused(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InvalidInputError, match="no CUDA GPU") as info:
        GemmConfig(32, 32, 32, device="cuda").validate()
    assert "\n" not in str(info.value)


def test_a_bad_config_stops_a_sweep_before_anything_is_stored(tmp_path, collector):
    store = MeasurementStore(tmp_path / "s", create=True)
    configs = [GemmConfig(16, 16, 16), GemmConfig(0, 16, 16)]
    with pytest.raises(InvalidInputError, match="m > 0"):
        run_sweep(collector, configs, store, progress=False)
    assert len(MeasurementStore(store.path)) == 0


def test_config_from_dict_refuses_unknown_keys():
    assert config_from_dict({"m": 8, "n": 8, "k": 8, "dtype": "fp64"}) == GemmConfig(8, 8, 8, dtype="fp64")
    with pytest.raises(InvalidInputError, match="colour"):
        config_from_dict({"m": 8, "n": 8, "k": 8, "colour": "red"})


# ---------------------------------------------------------------------------- failures become rows


@pytest.mark.parametrize(
    ("exc", "status"),
    [(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), "oom"),
     (MemoryError(), "oom"),
     (RuntimeError("mkl: unsupported layout"), "runtime_error")],
)
def test_a_config_that_fails_at_run_time_becomes_a_row_and_the_sweep_goes_on(
        tmp_path, monkeypatch, collector, exc, status):
    failing = GemmConfig(48, 48, 48)
    configs = [GemmConfig(16, 16, 16), failing, GemmConfig(24, 24, 24)]
    for cfg in configs:  # peaks are cached before the patch, so only the timed run fails
        collector.hardware(cfg)
    real = _gemm._make_operation

    def flaky(cfg):
        if (cfg.m, cfg.n, cfg.k) == (48, 48, 48):
            raise exc
        return real(cfg)

    monkeypatch.setattr(_gemm, "_make_operation", flaky)
    store = MeasurementStore(tmp_path / "s", create=True)
    report = run_sweep(collector, configs, store, progress=False)
    assert report.measured == 3
    assert report.failed == 1
    assert report.statuses == {"ok": 2, status: 1}
    df = MeasurementStore(store.path).load().set_index("measurement_id")
    assert len(df) == 3
    row = df.loc[collector.measurement_id(failing)]
    assert row["status"] == status
    assert pd.isna(row["runtime_ms"])  # no time for a failed config
    assert type(exc).__name__ in row["error"]
    assert (df.drop(index=collector.measurement_id(failing))["status"] == "ok").all()


def test_a_resumed_sweep_skips_what_is_stored(tmp_path, collector):
    store = MeasurementStore(tmp_path / "s", create=True)
    configs = [GemmConfig(16, 16, 16), GemmConfig(16, 16, 32)]
    first = run_sweep(collector, configs[:1], store, progress=False)
    second = run_sweep(collector, configs, store, progress=False)
    assert (first.measured, second.measured, second.skipped) == (1, 1, 1)
    assert len(MeasurementStore(store.path)) == 2


# ---------------------------------------------------------------------------- the same on a GPU


@pytest.mark.requires_cuda
@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
def test_measures_tiny_configs_on_cuda(tmp_path, dtype):
    collector = GemmCollector(policy=FAST, measure_power=True, power_duration_s=0.1, reference=True)
    cfg = GemmConfig(64, 64, 64, b=2, dtype=dtype, device="cuda", threads=None, trans_b=True)
    m = collector.measure(cfg)
    check_ok(m, cfg)
    assert m.config["device"] == "cuda"
    assert m.config["threads"] is None
    assert m.hardware_id.startswith("cuda-")
    store = MeasurementStore(tmp_path / "s", create=True)
    report = run_sweep(collector, [cfg, GemmConfig(32, 32, 32, device="cuda", threads=None)], store, progress=False)
    assert report.statuses.get("ok") == 2


# ---------------------------------------------------------------------------- CPU pinning

needs_affinity = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this OS")


@needs_affinity
def test_a_cpu_config_is_timed_pinned_and_the_affinity_is_restored(monkeypatch):
    allowed = os.sched_getaffinity(0)
    seen = []
    real = _gemm._make_operation

    def recording(cfg):
        call, sync = real(cfg)
        return (lambda: (seen.append(frozenset(os.sched_getaffinity(0))), call())), sync

    monkeypatch.setattr(_gemm, "_make_operation", recording)
    m = GemmCollector(policy=FAST, measure_power=False, reference=False).measure(GemmConfig(16, 16, 16))
    first = min(allowed)
    assert set(seen) == {frozenset({first})}
    assert m.metrics["pinned_cpu_mask"] == float(1 << first)
    assert os.sched_getaffinity(0) == allowed


@needs_affinity
def test_pinning_can_be_turned_off():
    m = GemmCollector(policy=FAST, measure_power=False, reference=False, pin_cpus="none").measure(
        GemmConfig(16, 16, 16))
    assert m.metrics.get("pinned_cpu_mask") is None


@needs_affinity
@pytest.mark.parametrize(
    ("pins", "threads", "needle"),
    [((10_000,), 1, "10000"), ((min(os.sched_getaffinity(0)),), 2, "threads=2"), ("all", 1, "'all'")],
)
def test_bad_pin_choices_are_refused(pins, threads, needle):
    with pytest.raises(InvalidInputError, match="pin_cpus") as info:
        _gemm.resolve_pin_cpus(pins, threads)
    assert needle in str(info.value)


def test_a_malformed_pin_choice_is_refused_when_the_collector_is_made():
    with pytest.raises(InvalidInputError, match="pin_cpus"):
        GemmCollector(pin_cpus="fastest")


@needs_affinity
def test_a_machine_that_forbids_pinning_times_unpinned_instead_of_failing(monkeypatch):
    def forbidden(pid, cpus):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setaffinity", forbidden)
    m = GemmCollector(policy=FAST, measure_power=False, reference=False).measure(GemmConfig(16, 16, 16))
    assert m.status == "ok"
    assert m.metrics.get("pinned_cpu_mask") is None
