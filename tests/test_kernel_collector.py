"""KernelCollector on tiny real kernels: compile / check / time, the compile cache, failures
as rows (compile error, wrong result, segfault, hang), input refusal, sweeps and export."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import psutil
import pytest

from perfpred.collect import TimingPolicy, run_sweep
from perfpred.collect._kernel import KernelCollector, KernelConfig
from perfpred.collect.kernels import (
    JACOBI2D,
    KERNELS,
    MATMUL_CUDA,
    MATMUL_TRITON,
    SGEMM,
    eval_rule,
    get_kernel,
    space_size,
    tolerance_check,
)
from perfpred.datasets import MeasurementStore
from perfpred.errors import InvalidInputError, MissingDependencyError, PerfPredError

FAST = TimingPolicy(warmup_runs=1, min_runs=3, max_runs=10, max_time_s=0.05, target_rel_ci=0.05, min_sample_ms=0.2)
GOOD_SGEMM = {"block_m": 16, "block_n": 32, "block_k": 8, "loop_order": 1, "unroll": 4, "isa": "sse2", "threads": 1}
FAULT_TIMEOUT_S = 8.0

# A test-only kernel with Jacobi's signature, arguments and numpy reference; `fault` picks how
# it misbehaves. The null pointer is volatile so the compiler cannot turn the store into a trap.
FAULTS_SOURCE = r"""
#include <omp.h>
#include <string.h>
float jacobi2d(float *u, float *v, int nx, int ny, int steps) {
    const double start = omp_get_wtime();
#if fault == 2
    float *volatile nowhere = 0;
    *nowhere = 1.0f;
#endif
#if fault == 3
    volatile int spin = 1;
    while (spin) { }
#endif
    memcpy(v, u, sizeof(float) * (size_t)nx * (size_t)ny);
    for (int s = 0; s < steps; ++s) {
        const float *src = (s % 2 == 0) ? u : v;
        float *dst = (s % 2 == 0) ? v : u;
#pragma omp parallel for num_threads(threads)
        for (int y = 1; y < ny - 1; ++y)
            for (int x = 1; x < nx - 1; ++x)
                dst[y * nx + x] = 0.2f * (src[y * nx + x] + src[y * nx + x - 1] + src[y * nx + x + 1]
                                          + src[(y - 1) * nx + x] + src[(y + 1) * nx + x]);
    }
    if (steps % 2 == 1) memcpy(u, v, sizeof(float) * (size_t)nx * (size_t)ny);
#if fault == 1
    u[nx + 1] += 1.0f;
#endif
#if fault == 4
    this is not C;
#endif
    return (float)((omp_get_wtime() - start) * 1e3);
}
"""
FAULTS = dataclasses.replace(
    JACOBI2D, name="jacobi2d_faults", source_file=None, source_text=FAULTS_SOURCE,
    tune_params={"fault": (0, 1, 2, 3, 4), "threads": (1, 2)}, restrictions=("fault != 4 or threads == 1",),
    description="test-only: 0 correct, 1 wrong result, 2 segfault, 3 hang, 4 compile error",
)


@pytest.fixture(scope="module")
def sgemm() -> KernelCollector:
    with KernelCollector("sgemm", problem_size=SGEMM.test_problem_size, policy=FAST, with_peaks=False) as c:
        yield c


@pytest.fixture(scope="module")
def faults() -> KernelCollector:
    with KernelCollector(FAULTS, problem_size=FAULTS.test_problem_size, policy=FAST, with_peaks=False,
                         timeout_s=FAULT_TIMEOUT_S) as c:
        yield c


def check_ok(m, collector: KernelCollector) -> None:
    assert m.status == "ok", m.error
    assert m.kind == "kernel"
    assert m.runtime_ms > 0 and m.n_runs == len(m.raw_times_ms) >= 3
    assert m.min_ms <= m.runtime_ms
    for name in ("compile_time_ms", "verification_time_ms", "benchmark_time_ms", "gflops", "gbs"):
        assert m.metrics[name] is not None and m.metrics[name] > 0, name
    assert 0 <= m.metrics["verify_error_ratio"] <= 1
    assert m.workload["kernel_name"] == collector.kernel.name
    assert m.workload["kernel_source_sha"] == collector.kernel.source_sha()
    assert all(m.workload[k] == v for k, v in collector.problem_size.items())
    assert m.software["compiler"].startswith("gcc")


# ---------------------------------------------------------------------------- the happy path


def test_sgemm_compiles_checks_times_and_hits_the_compile_cache(sgemm: KernelCollector) -> None:
    cfg = sgemm.config(GOOD_SGEMM)
    first = sgemm.measure(cfg)
    check_ok(first, sgemm)
    assert first.workload["problem_size"] == "48x64x40"
    assert first.config == GOOD_SGEMM
    assert first.measurement_id == sgemm.measurement_id(cfg)
    second = sgemm.measure(cfg)
    check_ok(second, sgemm)
    assert second.metrics["compile_cache_hit"] == 1.0
    assert second.metrics["worker_start_ms"] == 0.0  # the worker is reused across configs
    # A cache hit only loads the library: far below a gcc run (~100+ ms even on an idle machine).
    assert second.metrics["compile_time_ms"] < 50.0
    if first.metrics["compile_cache_hit"] == 0.0:
        assert second.metrics["compile_time_ms"] < first.metrics["compile_time_ms"] / 5


def test_plain_dicts_and_other_problem_sizes(sgemm: KernelCollector) -> None:
    params = {**GOOD_SGEMM, "isa": "avx2", "threads": 2, "loop_order": 5, "unroll": 8}
    m = sgemm.measure_dict(params)  # what a tuner backend passes
    check_ok(m, sgemm)
    from_numpy = {k: (np.int64(v) if isinstance(v, int) else v) for k, v in params.items()}
    assert sgemm.config(from_numpy).config() == params  # numpy scalars (pandas rows) are canonicalised
    bigger = sgemm.measure(sgemm.config(params, problem_size={"m": 33, "n": 72, "k": 65}))
    assert bigger.status == "ok", bigger.error
    assert bigger.workload["problem_size"] == "33x72x65"
    assert bigger.metrics["compile_cache_hit"] == 1.0  # the library does not depend on the problem size
    assert bigger.measurement_id != m.measurement_id


def test_jacobi_in_place_stencil_with_odd_sizes() -> None:
    params = {"tile_x": 16, "tile_y": 4, "unroll": 2, "isa": "avx2", "threads": 2}
    with KernelCollector("jacobi2d", problem_size=JACOBI2D.test_problem_size, policy=FAST, with_peaks=False) as c:
        m = c.measure(params)
    check_ok(m, c)
    assert m.workload["problem_size"] == "70x37x3"


# ---------------------------------------------------------------------------- failures are rows


def test_compile_error_and_wrong_result_are_rows(faults: KernelCollector) -> None:
    broken = faults.measure({"fault": 4, "threads": 1})
    assert broken.status == "compile_error"
    assert "error" in broken.error and "jacobi2d.c" in broken.error and ".tmp-" not in broken.error
    assert broken.runtime_ms is None and broken.metrics["compile_time_ms"] > 0
    wrong = faults.measure({"fault": 1, "threads": 1})
    assert wrong.status == "invalid"
    assert wrong.error.startswith("wrong result:") and "1 of" in wrong.error
    assert wrong.metrics["verification_time_ms"] > 0
    assert faults.measure({"fault": 0, "threads": 2}).status == "ok"


def test_segfault_is_a_runtime_error_and_the_collector_survives(faults: KernelCollector) -> None:
    faults.measure({"fault": 0, "threads": 1})
    pid = faults.worker_pid
    crashed = faults.measure({"fault": 2, "threads": 1})
    assert crashed.status == "runtime_error"
    assert "SIGSEGV" in crashed.error and "verify" in crashed.error
    assert crashed.metrics["compile_time_ms"] > 0  # what the child reported before dying is kept
    assert not psutil.pid_exists(pid)
    again = faults.measure({"fault": 0, "threads": 1})  # a fresh worker takes over
    assert again.status == "ok", again.error
    assert faults.worker_pid != pid and again.metrics["worker_start_ms"] > 0


def test_hanging_kernel_times_out_and_leaves_no_process(faults: KernelCollector) -> None:
    faults.measure({"fault": 0, "threads": 2})
    pid = faults.worker_pid
    t0 = time.perf_counter()
    hung = faults.measure({"fault": 3, "threads": 2})
    wall_s = time.perf_counter() - t0
    assert hung.status == "timeout"
    assert f"{FAULT_TIMEOUT_S:g} s" in hung.error and "verify" in hung.error
    assert FAULT_TIMEOUT_S <= wall_s < FAULT_TIMEOUT_S + 5
    assert not psutil.pid_exists(pid)
    assert not [p for p in psutil.process_iter(["ppid"]) if p.info["ppid"] == pid]
    assert faults.worker_pid is None  # the next measure starts a fresh worker


# ---------------------------------------------------------------------------- refusal before running


@pytest.mark.parametrize(("params", "fragment"), [
    ({**GOOD_SGEMM, "tile": 3}, "unknown parameter(s) ['tile'] for kernel 'sgemm'"),
    ({k: v for k, v in GOOD_SGEMM.items() if k != "unroll"}, "['unroll'] are missing"),
    ({**GOOD_SGEMM, "block_m": 7}, "`block_m` must be one of [8, 16, 32, 64, 128, 256] for kernel 'sgemm', "
                                   "but got block_m=7"),
    ({**GOOD_SGEMM, "isa": "avx512"}, "but got isa='avx512'"),
    ({**GOOD_SGEMM, "threads": True}, "but got threads=True"),
    ({**GOOD_SGEMM, "block_m": 256, "block_n": 256, "block_k": 256},
     "restriction `block_m * block_k + block_k * block_n + block_m * block_n <= 65536` of kernel 'sgemm' must hold, "
     "but got block_m=256, block_n=256, block_k=256"),
])
def test_bad_configs_are_refused_in_one_line(sgemm: KernelCollector, params: dict, fragment: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        sgemm.measure_dict(params)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_bad_problem_sizes_and_options_are_refused() -> None:
    with pytest.raises(InvalidInputError, match=r"`n % 8 == 0` must hold for kernel 'sgemm' \(problem size\), "
                                                r"but got n=100"):
        KernelConfig(SGEMM, GOOD_SGEMM, {"m": 64, "n": 100, "k": 64}).validate()
    with pytest.raises(InvalidInputError, match=r"must set exactly \['m', 'n', 'k'\]"):
        KernelCollector("sgemm", problem_size={"n": 64})
    with pytest.raises(InvalidInputError, match="`timeout_s > 0` must hold, but got timeout_s=0"):
        KernelCollector("sgemm", timeout_s=0)
    with pytest.raises(InvalidInputError, match="`kernel` must be one of"):
        KernelCollector("sgemm2")
    with pytest.raises(InvalidInputError, match="names unknown parameter"):
        dataclasses.replace(SGEMM, restrictions=("block_q > 2",))


def test_run_sweep_into_a_store_then_export_and_replay(sgemm: KernelCollector, tmp_path) -> None:
    from perfpred.collect._replay import ReplayBackend
    from perfpred.collect.importers import export_kernel_tuner_cache

    configs = [*sgemm.configs(sample=4, seed=3), sgemm.config({**GOOD_SGEMM, "loop_order": 0})]
    store = MeasurementStore(tmp_path / "store", create=True)
    report = run_sweep(sgemm, configs, store, progress=False)
    assert report.measured == 5 and report.statuses == {"ok": 5}
    assert run_sweep(sgemm, configs, store, progress=False).skipped == 5  # resumes: nothing re-measured
    table = store.load()
    assert set(table["kind"]) == {"kernel"} and len(table) == 5
    assert table["metric.compile_time_ms"].notna().all() and table["config.isa"].isin(["sse2", "avx2"]).all()
    path = export_kernel_tuner_cache(store, tmp_path / "sgemm.json").path
    replay = ReplayBackend.from_file(path)
    assert len(replay) == 5
    recorded = replay.measure(configs[0].config())
    assert recorded.status == "ok"
    assert recorded.runtime_ms == pytest.approx(table.set_index("measurement_id").loc[
        sgemm.measurement_id(configs[0]), "runtime_ms"])


# ---------------------------------------------------------------------------- the space, for tuners


@pytest.mark.parametrize("name", ["sgemm", "jacobi2d", "matmul_cuda", "matmul_triton"])
def test_space_and_restrictions_agree_with_the_tuner_search_space(name: str) -> None:
    from perfpred.tuner import SearchSpace

    spec = get_kernel(name)
    collector = KernelCollector(name, with_peaks=False)  # no GPU or worker is needed for the space
    space = SearchSpace.from_kernel_tuner(collector.space(), collector.restrictions)
    frame = space.enumerate()
    cartesian, valid = space_size(spec)
    assert len(frame) == valid < cartesian
    sample = frame.sample(min(200, len(frame)), random_state=0).to_dict("records")
    for params in sample:
        spec.check_params(spec.canonical_params(params))  # every enumerated config passes validate()


@pytest.mark.parametrize("spec", [SGEMM, JACOBI2D], ids=lambda s: s.name)
def test_restrictions_mean_the_same_to_kernel_tuner(spec) -> None:
    searchspace = pytest.importorskip("kernel_tuner.searchspace")
    kt_space = searchspace.Searchspace(spec.space(), list(spec.restrictions), 1024)
    assert kt_space.size == space_size(spec)[1]


def test_rules_and_tolerance_helpers() -> None:
    assert eval_rule("a % 8 == 0 and not b", {"a": 16, "b": False})
    with pytest.raises(NameError):
        eval_rule("__import__('os')", {})  # no builtins in a rule
    ref = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    assert tolerance_check([ref + 1e-7], [ref], 1e-4, 0.0)[0]
    ok, message, _ = tolerance_check([np.array([1.0, np.nan, 3.0])], [ref], 1e-4, 0.0)
    assert not ok and "index 1" in message


@pytest.mark.parametrize("spec", [SGEMM, JACOBI2D], ids=lambda s: s.name)
def test_shipped_source_runs_unchanged_under_kernel_tuner(spec, tmp_path, monkeypatch) -> None:
    """The same source and argument list through Kernel Tuner's own runner (no perfpred worker)."""
    kernel_tuner = pytest.importorskip("kernel_tuner")
    monkeypatch.chdir(tmp_path)  # Kernel Tuner compiles in the working directory
    kwargs = spec.kernel_tuner_args(spec.test_problem_size)
    answer = kwargs.pop("answer")
    for name in ("tune_params", "restrictions", "atol"):
        kwargs.pop(name)
    out = kernel_tuner.run_kernel(params=next(spec.configs()), **kwargs)
    assert tolerance_check(out, answer, spec.rtol, spec.atol)[0]


# ---------------------------------------------------------------------------- GPU kernels


def test_gpu_kernels_refuse_in_one_line_without_their_stack() -> None:
    import importlib.util

    import torch

    for spec in (MATMUL_TRITON, MATMUL_CUDA):
        params = next(spec.configs())
        cfg = KernelConfig(spec, params, spec.test_problem_size)
        if torch.cuda.is_available() and importlib.util.find_spec("triton" if spec.lang == "triton" else "cuda"):
            continue
        with pytest.raises((MissingDependencyError, InvalidInputError)) as err:
            cfg.validate()
        assert spec.name in str(err.value) and "\n" not in str(err.value)
        assert isinstance(err.value, PerfPredError)
    assert KERNELS["matmul_triton"].device == "cuda"


@pytest.mark.requires_cuda
@pytest.mark.parametrize("name", ["matmul_triton", "matmul_cuda"])
def test_gpu_kernel_measures_on_cuda(name: str) -> None:
    spec = get_kernel(name)
    if spec.lang == "triton":
        pytest.importorskip("triton")
    else:
        pytest.importorskip("kernel_tuner")
    with KernelCollector(spec, problem_size=spec.test_problem_size, policy=FAST, with_peaks=False) as c:
        configs = c.configs(sample=3, seed=0)
        rows = [c.measure(cfg) for cfg in configs]
    assert all(m.status in ("ok", "compile_error") for m in rows), [m.error for m in rows]
    ok = [m for m in rows if m.status == "ok"]
    assert ok and all(m.runtime_ms > 0 and m.hardware_id.startswith("cuda-") for m in ok)


# ---------------------------------------------------------------------------- CUDA through Kernel Tuner, on the CPU


class _LaunchFailingDevice:
    """Kernel Tuner's DeviceInterface when a launch asks for too many resources: its output check
    returns without calling the verify function, and its benchmark reports a RuntimeFailedConfig."""

    def check_kernel_output(self, func, gpu_args, instance, answer, atol, verify, verbose):
        return None

    def benchmark(self, func, gpu_args, instance, verbose, objective):
        from kernel_tuner.util import RuntimeFailedConfig

        return {"__error__": RuntimeFailedConfig()}


def test_a_cuda_launch_out_of_resources_is_a_compile_error_not_a_stale_verdict():
    from perfpred.collect.kernels import _engine

    workload = object.__new__(_engine._CudaWorkload)
    workload.spec, workload.dev, workload.gpu_args, workload.answer = MATMUL_CUDA, _LaunchFailingDevice(), [], []
    workload._instance, workload._verdict = None, (True, "", 0.0)  # a passing verdict left by the previous config
    with pytest.raises(_engine.CompileError, match="out of resources at launch"):
        workload.check(func=None)
    with pytest.raises(_engine.CompileError, match="out of resources at launch"):
        workload.benchmark(None, FAST)


def test_only_a_kernel_with_a_non_fp32_element_type_records_it_in_its_workload():
    triton = KernelConfig(MATMUL_TRITON, next(MATMUL_TRITON.configs()), MATMUL_TRITON.test_problem_size)
    assert triton.workload()["dtype"] == "fp16"
    sgemm = KernelConfig(SGEMM, next(SGEMM.configs()), SGEMM.test_problem_size)
    assert "dtype" not in sgemm.workload()  # fp32 kernels keep the workload (and ids) they always had
