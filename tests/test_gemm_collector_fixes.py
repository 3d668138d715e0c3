"""`collect gemm` fixes: threads vs the CPUs the process may use, CPU out-of-memory texts, the memory
each backend really allocates, the cold-cache flush size, software read under the thread limit,
and the per-config time limit. None of these tests depends on a timing."""

from __future__ import annotations

import os
import re
import tracemalloc

import pytest
from test_cli import assert_one_line_error, run_main

from perfpred.collect import GemmCollector, GemmConfig, TimingPolicy, _gemm, _hardware
from perfpred.errors import InvalidInputError

FAST = TimingPolicy(warmup_runs=1, min_runs=3, max_runs=5, max_time_s=0.05, target_rel_ci=0.05, min_sample_ms=0.5)
needs_affinity = pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no CPU affinity on this OS")


def quiet(**kwargs) -> GemmCollector:
    return GemmCollector(**{"policy": FAST, "measure_power": False, "reference": False, **kwargs})


def must_not_run(cfg):
    raise AssertionError("a refused config must not be run")


# ---------------------------------------------------------------------------- 1. threads vs usable CPUs


@needs_affinity
def test_more_threads_than_the_process_may_use_is_refused(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {1})  # as under `taskset -c 1`
    with pytest.raises(InvalidInputError) as info:
        GemmConfig(64, 64, 64, threads=2).validate()
    assert str(info.value) == "`1 <= threads <= 1` (the CPUs this process may use) must hold, but got threads=2"
    GemmConfig(64, 64, 64, threads=1).validate()


@needs_affinity
def test_pin_cpus_auto_refuses_fewer_cpus_than_threads(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {1})
    with pytest.raises(InvalidInputError, match="pin_cpus='auto' finds 1 CPU") as info:
        _gemm.resolve_pin_cpus("auto", 2)
    assert "threads=2" in str(info.value) and "\n" not in str(info.value)
    assert _gemm.resolve_pin_cpus("auto", 1) == (1,)


@needs_affinity
def test_collect_refuses_threads_above_the_usable_cpus(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {1})
    store = tmp_path / "store"
    code, out, err = run_main(monkeypatch, capsys, "collect", "gemm", "--store", str(store), "--design", "grid",
                              "--sizes", "8", "--dtypes", "fp32", "--threads", "2", "--no-power", "--no-reference")
    assert_one_line_error(code, out, err, "threads <= 1", "threads=2")
    assert not store.exists()


# ---------------------------------------------------------------------------- 2. out-of-memory texts

TORCH_CPU_OOM = ("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you "
                 "tried to allocate 9600000000 bytes. Error code 12 (Cannot allocate memory)")
NUMPY_OOM = "Unable to allocate 8.94 GiB for an array with shape (20000, 20000, 3) and data type float64"


@pytest.mark.parametrize(
    ("exc", "oom"),
    [(RuntimeError(TORCH_CPU_OOM), True), (RuntimeError(NUMPY_OOM), True), (MemoryError(NUMPY_OOM), True),
     (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
     (RuntimeError("mkl: unsupported layout"), False)],
)
def test_cpu_out_of_memory_texts_are_recognised(exc, oom):
    assert _gemm._is_oom(exc) is oom


def test_torch_refusing_a_cpu_allocation_is_recognised():
    import torch

    with pytest.raises(RuntimeError) as info:  # 4 PiB: refused at once, nothing is touched
        torch.empty(2**50, dtype=torch.float32)
    assert _gemm._is_oom(info.value)


def test_a_torch_cpu_oom_is_stored_as_oom(monkeypatch):
    def out_of_memory(cfg):
        raise RuntimeError(TORCH_CPU_OOM)

    monkeypatch.setattr(_gemm, "_make_operation", out_of_memory)
    m = quiet().measure(GemmConfig(16, 16, 16))
    assert m.status == "oom"
    assert "DefaultCPUAllocator" in m.error


# ---------------------------------------------------------------------------- 3. what each backend allocates


@pytest.mark.parametrize(("dtype", "ratio"), [("fp16", 2.0), ("fp32", 16 / 12), ("fp64", 1.0)])
def test_numpy_counts_its_float64_draws(dtype, ratio):
    numpy_cfg = GemmConfig(1000, 1000, 1000, dtype=dtype, backend="numpy")
    torch_cfg = GemmConfig(1000, 1000, 1000, dtype=dtype, backend="torch")
    assert torch_cfg.bytes_needed() == 3 * _gemm.DTYPE_BYTES[dtype] * 1000**2
    assert numpy_cfg.bytes_needed() == pytest.approx(ratio * torch_cfg.bytes_needed())


@pytest.mark.parametrize("dtype", ["fp16", "fp32", "fp64"])
@pytest.mark.parametrize("trans_a", [False, True])
def test_numpy_estimate_matches_the_traced_peak(dtype, trans_a):
    cfg = GemmConfig(300, 200, 100, b=2, dtype=dtype, backend="numpy", trans_a=trans_a)
    tracemalloc.start()
    try:
        _gemm._make_operation(cfg)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert cfg.bytes_needed() <= peak <= 1.02 * cfg.bytes_needed()


def test_a_numpy_shape_that_cannot_fit_is_refused_before_running(monkeypatch):
    monkeypatch.setattr(_gemm, "_free_memory_bytes", lambda device: 12 * 1000**2)
    monkeypatch.setattr(_gemm, "_make_operation", must_not_run)
    GemmConfig(1000, 1000, 1000, dtype="fp16", backend="torch").validate()  # 6 MB of 12 MB free
    cfg = GemmConfig(1000, 1000, 1000, dtype="fp16", backend="numpy")  # 12 MB at its peak
    with pytest.raises(InvalidInputError, match=r"\(numpy\) needs 0\.01 GiB, more than 80%"):
        cfg.validate()
    with pytest.raises(InvalidInputError):
        quiet().measure(cfg)


def test_the_cold_cache_flush_buffer_counts_in_the_memory_check(monkeypatch):
    monkeypatch.setattr(_gemm, "last_level_cache_kib", lambda cpus: 480 * 1024)  # this VM's one L3
    monkeypatch.setattr(_gemm, "_free_memory_bytes", lambda device: 1 << 30)
    monkeypatch.setattr(_gemm, "_make_operation", must_not_run)
    cold = quiet(policy=TimingPolicy(warmup_runs=1, min_runs=3, max_runs=3, cold_cache=True))
    cfg = GemmConfig(64, 64, 64)
    with pytest.raises(InvalidInputError, match=r"with a 0\.94 GiB cache-flush buffer") as info:
        cold.check(cfg)
    assert "\n" not in str(info.value)
    with pytest.raises(InvalidInputError, match="cache-flush buffer"):
        cold.measure(cfg)
    quiet().check(cfg)  # without the flush it fits


# ---------------------------------------------------------------------------- 4. the flush size, the L3 in the spec


def fake_sysfs(root, caches: dict[int, list[tuple[int, str, str, str]]]) -> None:
    """caches: cpu -> [(level, type, size, shared_cpu_list)], written as sysfs lays them out."""
    for cpu, entries in caches.items():
        for i, (level, ctype, size, shared) in enumerate(entries):
            index = root / f"cpu{cpu}" / "cache" / f"index{i}"
            index.mkdir(parents=True)
            for name, value in (("level", level), ("type", ctype), ("size", size), ("shared_cpu_list", shared)):
                (index / name).write_text(f"{value}\n")


@pytest.fixture
def two_ccx_sysfs(tmp_path, monkeypatch):
    """4 CPUs, 2 L3 instances: CPUs 0-1 share 64 MiB, CPUs 2-3 share 32 MiB (lscpu: 96 MiB, 2 instances)."""
    l3 = {0: ("65536K", "0-1"), 1: ("65536K", "0-1"), 2: ("32768K", "2-3"), 3: ("32768K", "2-3")}
    fake_sysfs(tmp_path, {cpu: [(1, "Data", "48K", str(cpu)), (2, "Unified", "2048K", str(cpu)),
                                (3, "Unified", size, shared)] for cpu, (size, shared) in l3.items()})
    monkeypatch.setattr(_hardware, "_SYSFS_CPU", tmp_path)


def test_the_spec_gives_one_instance_of_each_cache_and_the_instance_count(two_ccx_sysfs):
    spec = _hardware.cpu_spec()
    assert spec["caches_kib"] == {"l1d": 48, "l2": 2048, "l3": 65536}  # what CPU 0 reaches, not the 96 MiB total
    assert spec["cache_instances"] == {"l1d": 4, "l2": 4, "l3": 2}
    assert _hardware.last_level_cache_kib([2, 3]) == 32768
    assert _hardware.last_level_cache_kib([1, 2]) == 65536
    assert _hardware.last_level_cache_kib([9]) is None


@needs_affinity
def test_the_flush_covers_the_l3_of_the_pinned_cpus(two_ccx_sysfs, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(os, "sched_setaffinity", lambda pid, cpus: None)
    given = []

    class RecordingFlusher:
        def __init__(self, llc_bytes):
            given.append(llc_bytes)

        def __call__(self):
            pass

    monkeypatch.setattr(_gemm, "CacheFlusher", RecordingFlusher)
    policy = TimingPolicy(warmup_runs=1, min_runs=3, max_runs=3, cold_cache=True)
    m = quiet(policy=policy, pin_cpus=(2,)).measure(GemmConfig(16, 16, 16))
    assert m.status == "ok", m.error
    assert given == [32 << 20]  # CPU 2's L3 instance, not CPU 0's nor the 96 MiB total
    assert quiet(policy=policy, pin_cpus=(2,)).flushed_llc_bytes(GemmConfig(16, 16, 16)) == 32 << 20
    assert quiet(policy=FAST).flushed_llc_bytes(GemmConfig(16, 16, 16)) == 0  # warm: no flush


def test_flush_time_does_not_eat_the_sampling_time_cap(monkeypatch):
    """A slow untimed flush before each sample: sampling still gets its whole --max-time-s."""
    from perfpred.collect import _timing

    clock = [0.0]
    monkeypatch.setattr(_timing.time, "perf_counter", lambda: clock[0])

    def flush() -> None:
        clock[0] += 1.0  # one second of flushing per sample

    def take() -> list[float]:
        clock[0] += 0.01
        return [1.0 + 0.5 * (len(taken) % 2)]  # never stable

    taken: list[int] = []

    def counted() -> list[float]:
        taken.append(1)
        return take()

    policy = _timing.TimingPolicy(warmup_runs=0, min_runs=3, max_runs=1000, max_time_s=0.5, target_rel_ci=1e-6)
    samples, stopped_by = _timing.replicate_until_stable(counted, policy, before_each=flush)
    assert stopped_by == "time_cap" and len(samples) >= 40  # 0.5 s / 0.01 s, not 1 sample per flushed second


def test_help_says_flushes_are_not_counted_and_ctrl_c_waits():
    from typer.testing import CliRunner

    from perfpred.cli import app

    result = CliRunner().invoke(app, ["collect", "gemm", "--help"], terminal_width=400)
    text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())
    assert "flush time does not count against --max-time-s" in text
    assert "Ctrl-C waits for the BLAS call in progress" in text
    assert "--max-config-s" in text


# ---------------------------------------------------------------------------- 5. software under the thread limit


def test_software_records_the_thread_counts_in_force_while_timing():
    import torch
    from threadpoolctl import threadpool_limits

    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with threadpool_limits(limits=2):
            m = quiet().measure(GemmConfig(16, 16, 16, threads=1))
    finally:
        torch.set_num_threads(previous)
    assert m.status == "ok", m.error
    assert m.software["torch_num_threads"] == 1
    assert m.software["blas"] and all(pool["num_threads"] == 1 for pool in m.software["blas"])


# ---------------------------------------------------------------------------- 6. the per-config time limit


def test_a_config_over_max_config_s_is_refused_before_running(monkeypatch):
    monkeypatch.setattr(_gemm, "_make_operation", must_not_run)
    slow = quiet()
    monkeypatch.setattr(slow, "hardware", lambda cfg: {"peak_gflops": {"fp64": 0.001}, "hardware_id": "cpu-x"})
    cfg = GemmConfig(512, 512, 512, dtype="fp64")
    # 4 calls (a warm-up, 3 samples) of 2 * 512^3 flop at 1 MFLOP/s
    assert slow.min_seconds(cfg, slow.hardware(cfg)) == pytest.approx(4 * 2 * 512**3 / 1e6)
    with pytest.raises(InvalidInputError) as info:
        slow.check(cfg)
    assert str(info.value) == ("`minimum time per config <= max_config_s` must hold, but GEMM b=1 m=512 n=512 k=512 "
                               "fp64 (torch) needs >= 1074 s (its fewest calls at the 0.001 GFLOP/s peak) for "
                               "max_config_s=300")
    with pytest.raises(InvalidInputError, match="max_config_s"):
        slow.measure(cfg)
    unlimited = quiet(max_config_s=None)
    monkeypatch.setattr(unlimited, "hardware", slow.hardware)
    unlimited.check(cfg)


def test_collect_refuses_a_config_over_max_config_s(monkeypatch, capsys, tmp_path):
    # the test session's cached fp64 peak is 25 GFLOP/s: 4 calls of 4096^3 take >= 22 s
    store = tmp_path / "store"
    args = ["collect", "gemm", "--store", str(store), "--design", "grid", "--sizes", "4096", "--dtypes", "fp64",
            "--no-power", "--no-reference"]
    code, out, err = run_main(monkeypatch, capsys, *args, "--max-config-s", "10")
    assert_one_line_error(code, out, err, "max_config_s=10", "m=4096", "fp64")
    assert not store.exists()
    code, out, err = run_main(monkeypatch, capsys, *args, "--max-config-s", "-1")
    assert_one_line_error(code, out, err, "max_config_s >= 0", "-1")
    assert not store.exists()
