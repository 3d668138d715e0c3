"""The child side of the kernel collector: compile, check and time one config per job.

This module runs in a worker subprocess (see ``perfpred.collect._kernel``), so a
kernel that segfaults, executes an illegal instruction or never returns takes down only the
worker; the collector records the config's status and starts a fresh worker.

How Kernel Tuner is used, and where it is not:

* C kernels: Kernel Tuner's ``KernelSource`` injects the tune parameters as ``#define``s
  (exactly as ``tune_kernel`` does), and its C backend (``CompilerFunctions``) prepares the
  ctypes argument list, calls the function and restores the arrays between runs. Its
  ``compile`` is replaced by :class:`CachedCompilerFunctions.compile`, because Kernel
  Tuner compiles every config afresh into temporary files and deletes the library: here
  the shared library is kept under perfpred's cache, keyed by a hash of the prepared
  source, compiler identity and flags, so re-measuring a config (or measuring it at
  another problem size) skips the compiler. Timing follows Kernel Tuner's C convention:
  the function times itself and returns milliseconds (the C backend has no clock of its
  own); perfpred's adaptive loop (TimingPolicy semantics) decides how many runs to take
  instead of Kernel Tuner's fixed ``iterations``.
* CUDA kernels: Kernel Tuner's ``DeviceInterface`` does everything (block/grid set-up,
  compile, output check, CUDA-event timing); perfpred calls its ``benchmark`` repeatedly
  until the median is stable or a cap is hit.
* Triton kernels: Kernel Tuner cannot run them; Triton compiles on first launch (with its
  on-disk cache pointed into perfpred's cache) and ``time_function`` times with CUDA events.

Protocol (pickles over a socket): the parent sends ``("init", sys.path)``, the worker
answers ``("ready", info)`` (or ``("fatal", message)``); then per job the parent sends a
:class:`Job` and the worker answers any number of ``("phase", name, partial_metrics)``
and one ``("result", dict)``; ``None`` asks it to exit.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from perfpred.collect._timing import TimingPolicy, median_rel_ci, replicate_until_stable, sample_calls
from perfpred.collect.kernels._registry import KernelSpec, tolerance_check


@dataclass(frozen=True)
class Job:
    """One config to compile, check and time (pickled to the worker)."""

    spec: KernelSpec
    params: Mapping[str, Any]
    problem_size: Mapping[str, int]
    policy: TimingPolicy
    cache_dir: str
    verify: bool = True
    seed: int = 0
    cpus: tuple[int, ...] | None = None  # pin the worker to these CPUs (None: every CPU it may use)


class CompileError(Exception):
    """The source did not compile for this config (message: the compiler's first error)."""


class InvalidConfigError(Exception):
    """The backend refused the config before running it (e.g. too many threads per block)."""


class KernelFailure(Exception):
    """A run failed in a way the process survived (status and message for the row)."""

    def __init__(self, status: str, message: str, *, poisoned: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.poisoned = poisoned  # the device context may be corrupt: the worker must restart


def _first_error(stderr: str, limit: int = 400) -> str:
    """The compiler's first ``error:`` line (with its location), else its first line."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for ln in lines:
        if "error" in ln.lower():
            return ln[:limit]
    return (lines[0] if lines else "compiler failed without a message")[:limit]


def compiler_identity(compiler: str) -> str:
    """First line of ``compiler --version``: part of the compile-cache key."""
    try:
        out = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CompileError(f"compiler {compiler!r} cannot be run: {exc}") from None
    return (out.stdout.splitlines() or [compiler])[0].strip()


# ---------------------------------------------------------------------------- timing


def time_returned(call: Callable[[], float], policy: TimingPolicy) -> dict[str, Any]:
    """Adaptive replicates of a call that returns its own run time in ms.

    Same rules as :func:`perfpred.collect.time_function` (warm-up, calls-per-sample chosen
    so a sample lasts ``min_sample_ms`` and re-chosen from the first samples, stop when the
    median's 95% CI is narrow enough or at a run/time cap), but each sample is the mean of
    the times the kernel reports, so the Python and ctypes call overhead is not part of it.
    """

    def checked(ms: float) -> float:
        if not (isinstance(ms, float) and math.isfinite(ms) and ms > 0):
            raise KernelFailure("runtime_error", f"the kernel reported a run time of {ms!r} ms (must be > 0)")
        return ms

    # Every warm-up call is made (at least one: it is also the probe of the call's cost).
    probe_ms = min(checked(call()) for _ in range(max(policy.warmup_runs, 1)))
    min_runs = policy.min_runs if probe_ms / 1e3 * policy.min_runs <= policy.max_time_s else min(policy.min_runs, 3)
    samples, number, stopped_by = sample_calls(
        lambda number: sum(checked(call()) for _ in range(number)) / number, probe_ms, policy, min_runs=min_runs)
    return {"raw_times_ms": samples, "number": number, "stopped_by": stopped_by, "rel_ci": median_rel_ci(samples)}


def time_batches(batch: Callable[[], list[float]], policy: TimingPolicy) -> dict[str, Any]:
    """Adaptive replicates from a function returning one batch of per-launch times (ms)."""
    for _ in range(policy.warmup_runs):
        batch()
    samples, stopped_by = replicate_until_stable(lambda: [float(t) for t in batch()], policy)
    return {"raw_times_ms": samples, "number": 1, "stopped_by": stopped_by, "rel_ci": median_rel_ci(samples)}


# ---------------------------------------------------------------------------- C (Kernel Tuner's C backend)


def _cached_compiler_class() -> type:
    """``CompilerFunctions`` with a content-addressed library cache (built lazily: needs kernel_tuner)."""
    from kernel_tuner.backends.compiler import CompilerFunctions

    class CachedCompilerFunctions(CompilerFunctions):
        """Kernel Tuner's C backend, compiling each distinct source once into ``cache_dir``."""

        def __init__(self, cache_dir: Path, compiler: str, compiler_options: list[str]) -> None:
            super().__init__(iterations=1, compiler_options=list(compiler_options), compiler=compiler)
            self.cache_dir = Path(cache_dir)
            self.compiler_id = compiler_identity(compiler)
            self.last_cache_hit = False

        def library_path(self, kernel_string: str, name: str) -> Path:
            key = hashlib.sha256(json.dumps([kernel_string, name, self.compiler, self.compiler_id,
                                             self.compiler_options]).encode()).hexdigest()[:24]
            return self.cache_dir / f"{name}-{key}.so"

        def compile(self, kernel_instance: Any) -> Any:
            name = kernel_instance.name
            lib_path = self.library_path(kernel_instance.kernel_string, name)
            hit = lib_path.exists()
            if not hit:
                self.cache_dir.mkdir(parents=True, exist_ok=True)
                stem = self.cache_dir / f".tmp-{name}-{os.getpid()}-{time.monotonic_ns()}"
                src, tmp_lib = stem.with_suffix(".c"), stem.with_suffix(".so")
                src.write_text(kernel_instance.kernel_string, encoding="utf-8")
                try:
                    proc = subprocess.run([self.compiler, *self.compiler_options, "-shared", str(src), "-o",
                                           str(tmp_lib)], capture_output=True, text=True, check=False)
                    if proc.returncode != 0:  # name the kernel, not the temporary file, in the message
                        raise CompileError(_first_error(proc.stderr.replace(str(src), f"{name}.c")))
                    os.replace(tmp_lib, lib_path)  # atomic: concurrent workers never load half a file
                finally:
                    for leftover in (src, tmp_lib):
                        with contextlib.suppress(FileNotFoundError):
                            leftover.unlink()
            # Libraries using OpenMP must stay loaded (unloading them crashes, as Kernel Tuner notes);
            # the worker is recycled every so many configs instead.
            self.lib = ctypes.CDLL(str(lib_path))
            try:
                func = getattr(self.lib, name)
            except AttributeError:
                raise CompileError(f"the compiled library has no function {name!r}") from None
            func.restype = ctypes.c_float
            self.last_cache_hit = hit
            return func

    return CachedCompilerFunctions


class _CWorkload:
    """Arguments, reference answer and the C backend of one (kernel, problem size)."""

    def __init__(self, spec: KernelSpec, problem: Mapping[str, int], seed: int, cache_dir: str) -> None:
        from kernel_tuner.core import KernelInstance, KernelSource
        from kernel_tuner.util import default_block_size_names

        self.spec = spec
        self.args = spec.arguments(problem, np.random.default_rng(seed))
        self.answer = spec.reference([a.copy() if isinstance(a, np.ndarray) else a for a in self.args], problem)
        self.dev = _cached_compiler_class()(Path(cache_dir), spec.compiler, list(spec.compiler_flags))
        self.c_args = self.dev.ready_argument_list(self.args)
        self.source = KernelSource(spec.function, spec.source_code(), "C")
        self._instance_type = KernelInstance
        self._block_size_names = default_block_size_names
        # Every array is restored before a checked run (kernels such as Jacobi update in place).
        self._sync = [isinstance(a, np.ndarray) for a in self.args]

    def compile(self, params: Mapping[str, Any]) -> tuple[Callable[[], float], bool]:
        threads, grid = (1, 1, 1), (1, 1, 1)
        name, kernel_string, temp_files = self.source.prepare_list_of_files(
            self.spec.function, dict(params), grid, threads, self._block_size_names)
        instance = self._instance_type(name, self.source, kernel_string, temp_files, threads, grid, dict(params),
                                       self.args)
        func = self.dev.compile(instance)
        c_args = self.c_args

        def call() -> float:
            return float(self.dev.run_kernel(func, c_args, threads, grid))

        return call, bool(self.dev.last_cache_hit)

    def check(self, call: Callable[[], float]) -> tuple[bool, str, float]:
        self.dev.refresh_memory(self.c_args, self.args, self._sync)
        call()
        outputs = [a if ref is not None else None for a, ref in zip(self.args, self.answer, strict=True)]
        return tolerance_check(outputs, self.answer, self.spec.rtol, self.spec.atol)

    def benchmark(self, call: Callable[[], float], policy: TimingPolicy) -> dict[str, Any]:
        return time_returned(call, policy)


# ---------------------------------------------------------------------------- CUDA (Kernel Tuner's DeviceInterface)


# Kernel Tuner skips a launch that asks for more than the GPU has (threads, registers) silently.
_LAUNCH_OUT_OF_RESOURCES = "out of resources at launch: too many registers or threads per block for this GPU"


class _CudaWorkload:
    """A CUDA kernel on device 0 through Kernel Tuner's ``DeviceInterface`` (no compile cache)."""

    poisons_on_failure = True

    def __init__(self, spec: KernelSpec, problem: Mapping[str, int], seed: int, cache_dir: str) -> None:
        from kernel_tuner.core import DeviceInterface, KernelSource
        from kernel_tuner.interface import Options, _kernel_options

        self.spec = spec
        self.args = spec.arguments(problem, np.random.default_rng(seed))
        self.answer = spec.reference([a.copy() if isinstance(a, np.ndarray) else a for a in self.args], problem)
        self.source = KernelSource(spec.function, spec.source_code(), "CUDA")
        self.dev = DeviceInterface(self.source, iterations=7, compiler_options=list(spec.compiler_flags), quiet=True)
        self.gpu_args = self.dev.ready_argument_list(self.args)
        grid_div = {f"grid_div_{axis}": (list(div) if div else None)
                    for axis, div in zip("xyz", spec.grid_div, strict=True)}
        kt_size = spec.kernel_tuner_problem_size(problem)
        self.options = Options({**dict.fromkeys(_kernel_options), "kernel_name": spec.function,
                                "problem_size": kt_size, "arguments": self.args,
                                "block_size_names": list(spec.block_size_names or ()) or None, **grid_div})
        self._instance: Any = None
        self._verdict: tuple[bool, str, float] | None = None

    def compile(self, params: Mapping[str, Any]) -> tuple[Any, bool]:
        from kernel_tuner import util

        instance = self.dev.create_kernel_instance(self.source, self.options, dict(params), False)
        if isinstance(instance, util.ErrorConfig):
            raise InvalidConfigError("Kernel Tuner refused the config: too many threads per block for this GPU")
        try:
            func = self.dev.compile_kernel(instance, False)
        except Exception as exc:
            raise CompileError(_first_error(str(getattr(exc, "stderr", "") or exc))) from None
        if func is None:
            raise CompileError("the kernel uses more shared memory than this GPU has")
        self._instance = instance
        return func, False

    def _verify(self, answer: list[Any], result_host: list[Any], atol: float | None = None) -> bool:
        self._verdict = tolerance_check(result_host, answer, self.spec.rtol, self.spec.atol)
        return self._verdict[0]

    def check(self, func: Any) -> tuple[bool, str, float]:
        self._verdict = None  # Kernel Tuner skips the check, silently, when the launch ran out of resources
        try:
            self.dev.check_kernel_output(func, self.gpu_args, self._instance, self.answer, self.spec.atol,
                                         self._verify, False)
        except RuntimeError as exc:
            if "verification failed" in str(exc) and self._verdict is not None:
                return self._verdict
            raise KernelFailure("runtime_error", f"{type(exc).__name__}: {exc}"[:400], poisoned=True) from None
        if self._verdict is None:
            raise CompileError(_LAUNCH_OUT_OF_RESOURCES)
        return self._verdict

    def benchmark(self, func: Any, policy: TimingPolicy) -> dict[str, Any]:
        def batch() -> list[float]:
            result = self.dev.benchmark(func, self.gpu_args, self._instance, False, "time")
            if "__error__" in result:
                if type(result["__error__"]).__name__ == "RuntimeFailedConfig":  # a skippable launch failure
                    raise CompileError(_LAUNCH_OUT_OF_RESOURCES)
                raise KernelFailure("runtime_error", f"Kernel Tuner reported {type(result['__error__']).__name__}",
                                    poisoned=True)
            return list(result["times"])

        return time_batches(batch, policy)


# ---------------------------------------------------------------------------- Triton


class _TritonWorkload:
    """A Triton kernel on CUDA device 0; Triton's own on-disk cache serves as the compile cache."""

    poisons_on_failure = True

    def __init__(self, spec: KernelSpec, problem: Mapping[str, int], seed: int, cache_dir: str) -> None:
        self.triton_cache = Path(cache_dir) / "triton"
        self.triton_cache.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("TRITON_CACHE_DIR", str(self.triton_cache))
        import importlib

        import torch

        self.torch = torch
        self.module = importlib.import_module(f"perfpred.collect.kernels.{Path(spec.source_file or '').stem}")
        self.spec = spec
        host = spec.arguments(problem, np.random.default_rng(seed))
        self.answer = spec.reference([a.copy() for a in host], problem)
        self.tensors = [torch.from_numpy(a).to("cuda") for a in host]

    def compile(self, params: Mapping[str, Any]) -> tuple[Callable[[], None], bool | None]:
        from triton.compiler.errors import CompilationError
        from triton.runtime.errors import OutOfResources

        before = sum(1 for _ in self.triton_cache.iterdir())
        params = dict(params)

        def call() -> None:
            self.module.launch(*self.tensors, params)

        try:
            call()  # Triton compiles on the first launch with these constants
            self.torch.cuda.synchronize()
        except OutOfResources as exc:
            raise CompileError(f"out of resources: {exc}"[:400]) from None
        except CompilationError as exc:
            raise CompileError(_first_error(str(exc))) from None
        except self.torch.cuda.OutOfMemoryError as exc:
            raise KernelFailure("oom", str(exc).splitlines()[0][:400]) from None
        except Exception as exc:
            raise KernelFailure("runtime_error", f"{type(exc).__name__}: {exc}"[:400], poisoned=True) from None
        hit = sum(1 for _ in self.triton_cache.iterdir()) == before
        return call, hit

    def check(self, call: Callable[[], None]) -> tuple[bool, str, float]:
        for t, ref in zip(self.tensors, self.answer, strict=True):
            if ref is not None:
                t.zero_()
        call()
        self.torch.cuda.synchronize()
        outputs = [t.cpu().numpy() if ref is not None else None for t, ref in zip(self.tensors, self.answer,
                                                                                strict=True)]
        return tolerance_check(outputs, self.answer, self.spec.rtol, self.spec.atol)

    def benchmark(self, call: Callable[[], None], policy: TimingPolicy) -> dict[str, Any]:
        from perfpred.collect._timing import time_function

        timing = time_function(call, policy, sync=self.torch.cuda.synchronize, cuda_events=True)
        return {"raw_times_ms": timing.raw_times_ms, "number": timing.number, "stopped_by": timing.stopped_by,
                "rel_ci": timing.rel_ci}


_WORKLOADS = {"C": _CWorkload, "CUDA": _CudaWorkload, "triton": _TritonWorkload}


# ---------------------------------------------------------------------------- one job


def _set_affinity(cpus: set[int] | tuple[int, ...]) -> bool:
    """Move every thread of this process to ``cpus``; False where affinity cannot be set.

    Each thread has its own mask, and a new thread inherits its creator's: setting only the
    main thread would leave the OpenMP pool an earlier config started on its old CPUs.
    """
    if not hasattr(os, "sched_setaffinity"):
        return False
    try:
        threads = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        threads = [0]
    try:
        for tid in threads:
            with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
                os.sched_setaffinity(tid, cpus)
    except OSError:  # a sandbox that forbids it: timed unpinned, and the row says so
        return False
    return True


class Engine:
    """Runs jobs; keeps the arguments and reference of the last (kernel, problem size)."""

    def __init__(self) -> None:
        self._key: tuple[Any, ...] | None = None
        self._workload: Any = None
        self._allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        self._pinned = False

    def _pin(self, cpus: tuple[int, ...] | None) -> tuple[int, ...] | None:
        """Pin to ``cpus`` (or undo an earlier job's pinning); the CPUs pinned to, or None."""
        if cpus:
            self._pinned = _set_affinity(cpus)
            return tuple(cpus) if self._pinned else None
        if self._pinned and self._allowed:
            _set_affinity(self._allowed)
            self._pinned = False
        return None

    def _workload_for(self, job: Job) -> tuple[Any, float]:
        key = (job.spec.name, job.spec.source_sha(), tuple(sorted(job.problem_size.items())), job.seed,
               job.cache_dir)
        if key == self._key:
            return self._workload, 0.0
        self._workload = None  # free the previous arrays before allocating new ones
        t0 = time.perf_counter()
        self._workload = _WORKLOADS[job.spec.lang](job.spec, job.problem_size, job.seed, job.cache_dir)
        self._key = key
        return self._workload, (time.perf_counter() - t0) * 1e3

    def run(self, job: Job, progress: Callable[[str, dict[str, Any]], None]) -> dict[str, Any]:
        metrics: dict[str, Any] = {}
        try:
            pinned = self._pin(job.cpus)
            # which CPUs timed it, as a bit mask (None: not pinned), as GEMM rows record it
            metrics["pinned_cpu_mask"] = float(sum(1 << c for c in pinned)) if pinned else None
            progress("setup", metrics)
            workload, setup_ms = self._workload_for(job)
            metrics["setup_time_ms"] = setup_ms
            progress("compile", metrics)
            t0 = time.perf_counter()
            try:
                handle, hit = workload.compile(job.params)
            finally:
                metrics["compile_time_ms"] = (time.perf_counter() - t0) * 1e3
            metrics["compile_cache_hit"] = None if hit is None else float(hit)
            if job.verify:
                progress("verify", metrics)
                t0 = time.perf_counter()
                ok, message, ratio = workload.check(handle)
                metrics["verification_time_ms"] = (time.perf_counter() - t0) * 1e3
                # Largest |out - ref| / (atol + rtol |ref|): how much of the tolerance was used (<= 1 passes).
                metrics["verify_error_ratio"] = ratio if math.isfinite(ratio) else None
                if not ok:
                    return {"status": "invalid", "error": f"wrong result: {message}", "metrics": metrics}
            progress("benchmark", metrics)
            t0 = time.perf_counter()
            try:
                timing = workload.benchmark(handle, job.policy)
            finally:
                metrics["benchmark_time_ms"] = (time.perf_counter() - t0) * 1e3
            return {"status": "ok", "timing": timing, "metrics": metrics}
        except CompileError as exc:
            return {"status": "compile_error", "error": f"compile error: {exc}", "metrics": metrics}
        except InvalidConfigError as exc:
            return {"status": "invalid", "error": str(exc), "metrics": metrics}
        except KernelFailure as exc:
            return {"status": exc.status, "error": str(exc), "metrics": metrics, "restart": exc.poisoned}
        except MemoryError:
            return {"status": "oom", "error": "MemoryError: the host ran out of memory", "metrics": metrics,
                    "restart": True}


# ---------------------------------------------------------------------------- the worker process


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this worker when its parent dies (it leads its own session)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            pr_set_pdeathsig = 1
            libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


def serve(conn: Any) -> None:
    """Worker main loop: answer jobs until the parent sends None or goes away."""
    try:
        kind, parent_path = conn.recv()
        if kind == "init":
            sys.path.extend(p for p in parent_path if p not in sys.path)
        import kernel_tuner
    except Exception as exc:  # reported to the parent, which raises a one-line error
        with contextlib.suppress(OSError):
            conn.send(("fatal", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", {"pid": os.getpid(), "kernel_tuner": getattr(kernel_tuner, "__version__", "unknown")}))
    engine = Engine()
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return

        def progress(phase: str, metrics: dict[str, Any]) -> None:
            conn.send(("phase", phase, dict(metrics)))

        try:
            result = engine.run(job, progress)
        except Exception as exc:  # an engine bug or an unexpected backend error: a row, not a dead worker
            result = {"status": "runtime_error", "error": f"{type(exc).__name__}: {exc}"[:500], "metrics": {},
                      "restart": True}
        conn.send(("result", result))


def main() -> None:
    """Entry point of the worker process: ``argv[1]`` is the file descriptor of its socket."""
    from multiprocessing.connection import Connection

    _die_with_parent()
    serve(Connection(int(sys.argv[1])))
