"""Tunable-kernel collector: compile, verify and time one kernel config per Measurement.

A kernel is a source with tune parameters injected as ``#define``s, a problem size and a
numpy reference (:class:`perfpred.collect.kernels.KernelSpec`). Measuring one config:

1. validate it (unknown parameters, values outside the domain, restrictions, problem-size
   rules: a one-line ``InvalidInputError`` before anything runs);
2. in a child process: compile it (the shared library is cached under
   ``cache_dir("kernels")``, keyed by the prepared source, compiler and flags), run it once
   on fresh inputs and compare with the reference, then time it with adaptive replicates
   (``TimingPolicy``: warm-up, median, stop once the median is stable or at a cap);
3. return a ``kind="kernel"`` Measurement; ``metrics`` hold ``compile_time_ms``,
   ``verification_time_ms`` and ``benchmark_time_ms`` separately (the names Kernel Tuner's
   cache files use, so replayed and collected rows count tuning cost alike), plus
   ``compile_cache_hit``, ``gflops`` and ``gbs``; ``timing_converged`` is 1 when sampling
   stopped because the median's CI met the target, 0 when a time or run cap stopped it (a
   row to treat as noisy), ``pinned_cpu_mask`` says which CPUs timed a CPU kernel, and
   ``timing_warmup_runs`` ... ``timing_min_sample_ms`` record the ``TimingPolicy`` (a re-run
   under a stricter one times the row again: ``perfpred.collect.run_sweep``).

CPU kernels are pinned (``pin_cpus="auto"``) to the first ``threads`` CPUs this process may
use (the kernel's OpenMP threads parameter, else 1): the vCPUs of a VM differ in speed (here
one ran a 256^3 GEMM 16% faster than the other, every time).

Failures are rows: ``compile_error``, ``invalid`` (wrong result), ``runtime_error`` (the
child died, e.g. SIGSEGV or SIGILL), ``timeout`` (the child is killed with its process
group when a config overruns ``timeout_s``) and ``oom``. The child is a worker process
kept across configs (starting one costs ~2 s, mostly importing perfpred, several times a
compile); a crash, a timeout or ``recycle_after`` configs replace it with a fresh one.

The collector is also a tuner backend: ``space()`` and ``restrictions`` describe the
search space in Kernel Tuner's terms, and ``measure`` accepts a plain dict of parameter
values (``measure_dict`` is the explicit spelling).
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from perfpred.collect._gemm import resolve_pin_cpus
from perfpred.collect._hardware import fingerprint, software_versions
from perfpred.collect._timing import TimingPolicy, TimingResult, policy_metrics
from perfpred.collect.kernels._engine import Job, compiler_identity
from perfpred.collect.kernels._registry import KERNEL_DIR, KernelSpec, get_kernel, problem_label
from perfpred.datasets import Measurement, measurement_key
from perfpred.datasets._schema import python_scalar
from perfpred.errors import InvalidInputError, PerfPredError
from perfpred.settings import cache_dir

# Tuned for kernels whose good configs run for milliseconds to tens of milliseconds: one
# warm-up beyond the checked run, 5 to 50 samples of >= 1 ms, at most ~1 s of sampling.
KERNEL_POLICY = TimingPolicy(warmup_runs=1, min_runs=5, max_runs=50, max_time_s=1.0, target_rel_ci=0.02,
                             min_sample_ms=1.0)
_SIGNAL_NAMES = {int(s): s.name for s in signal.Signals}


@dataclass(frozen=True, eq=False)
class KernelConfig:
    """One configuration of one kernel at one problem size.

    Build it with ``collector.config({...})`` or ``KernelConfig(spec, params, problem_size)``;
    ``problem_size`` defaults to the spec's default size. Equal (and hashing equal) when the
    kernel source, parameter values and problem size are equal.
    """

    kernel: KernelSpec
    params: Mapping[str, Any]
    problem_size: Mapping[str, int] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.kernel, KernelSpec):
            object.__setattr__(self, "kernel", get_kernel(self.kernel))
        if isinstance(self.params, Mapping):
            object.__setattr__(self, "params", self.kernel.canonical_params(self.params))
        size = self.kernel.default_problem_size if self.problem_size is None else self.problem_size
        if isinstance(size, Mapping):
            size = {k: python_scalar(v) for k, v in size.items()}
        object.__setattr__(self, "problem_size", size)

    def validate(self) -> None:
        """One-line InvalidInputError (or MissingDependencyError) for anything that would fail before running."""
        self.kernel.check_params(self.params)
        self.kernel.check_problem_size(self.problem_size)  # type: ignore[arg-type]
        self.kernel.check_runtime()
        if self.kernel.device == "cpu" and self.kernel.threads_param:
            usable = usable_cpus()
            if self.threads() > usable:  # oversubscribed: it would time the scheduler, not the kernel
                name = self.kernel.threads_param
                raise InvalidInputError(f"`{name} <= {usable}` (the CPUs this process may use) must hold for kernel "
                                        f"{self.kernel.name!r}, but got {name}={self.threads()}")

    def threads(self) -> int:
        """CPU threads the config runs (its threads parameter, else 1)."""
        return int(self.params.get(self.kernel.threads_param, 1)) if self.kernel.threads_param else 1

    def workload(self) -> dict[str, Any]:
        size = dict(self.problem_size)  # type: ignore[arg-type]
        dtype = {"dtype": self.kernel.element_dtype} if self.kernel.element_dtype else {}
        return {"kernel_name": self.kernel.name, "problem_size": problem_label(self.kernel, size),
                "kernel_source_sha": self.kernel.source_sha(), **size, **dtype}

    def config(self) -> dict[str, Any]:
        return dict(self.params)

    def _key(self) -> tuple[Any, ...]:
        return (self.kernel.name, self.kernel.source_sha(), tuple(sorted(self.params.items(), key=str)),
                tuple(sorted(self.problem_size.items())))  # type: ignore[union-attr]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KernelConfig) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# ---------------------------------------------------------------------------- the worker process


@dataclass
class _Outcome:
    status: str
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


# The child runs this. Given the path of ``_hide.py`` (argv[2]), it makes torch unimportable before
# anything is imported: loading that file by path runs no package __init__.
_CHILD_CODE = (
    "import sys\n"
    "if len(sys.argv) > 2:\n"
    "    import importlib.util\n"
    "    spec = importlib.util.spec_from_file_location('_perfpred_kernel_hide', sys.argv[2])\n"
    "    hide = importlib.util.module_from_spec(spec)\n"
    "    spec.loader.exec_module(hide)\n"
    "    hide.hide_modules('torch')\n"
    "from perfpred.collect.kernels._engine import main\n"
    "main()\n"
)
_HIDE_FILE = str(KERNEL_DIR / "_hide.py")


def _kill_group(process: subprocess.Popen) -> None:
    """SIGKILL a worker's process group (the worker and any compiler it runs) and reap it."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            process.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)


class _Worker:
    """One child Python process that runs jobs, with a hard deadline per job.

    A plain subprocess (not multiprocessing): nothing of the caller's ``__main__`` is
    re-imported, so it works from scripts without a main guard, notebooks and stdin. Jobs
    and results travel as pickles over a socket pair, apart from the child's stdout, which
    the kernels may write to. The child leads its own session, so killing its process
    group also ends a compiler it started; it also asks the OS to SIGKILL it should this
    process die first, and a finalizer kills it at interpreter exit.
    """

    def __init__(self, hide_torch: bool, startup_timeout_s: float) -> None:
        t0 = time.perf_counter()
        parent_sock, child_sock = socket.socketpair()
        # The child's stderr, kept for the message when it fails to start or dies (closed in kill()).
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115
        argv = [sys.executable, "-c", _CHILD_CODE, str(child_sock.fileno())]
        if hide_torch:
            argv.append(_HIDE_FILE)
        try:
            self.process = subprocess.Popen(argv, pass_fds=[child_sock.fileno()], stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, stderr=self.stderr, start_new_session=True)
        finally:
            child_sock.close()
        self._finalizer = weakref.finalize(self, _kill_group, self.process)
        self.conn = Connection(parent_sock.detach())
        self.jobs_run = 0
        self.conn.send(("init", list(sys.path)))  # so jobs can name functions of modules the caller imported
        message = None
        deadline = time.monotonic() + startup_timeout_s
        while message is None and time.monotonic() < deadline and self.process.poll() is None:
            if self.conn.poll(0.1):
                try:
                    message = self.conn.recv()
                except (EOFError, OSError):
                    break
        if not message or message[0] != "ready":
            if message and message[0] == "fatal":
                reason = message[1]
            elif self.process.poll() is not None:
                reason = f"it exited with code {self.process.returncode}: {self._stderr_tail()}"
            else:
                reason = f"no answer within {startup_timeout_s:g} s"
            self.kill()
            raise PerfPredError(f"the kernel worker process did not start: {reason}")
        self.info = message[1]
        self.start_ms = (time.perf_counter() - t0) * 1e3

    def _stderr_tail(self, limit: int = 300) -> str:
        with contextlib.suppress(OSError):
            self.stderr.seek(0, os.SEEK_END)
            size = self.stderr.tell()
            self.stderr.seek(max(0, size - limit))
            lines = self.stderr.read().decode(errors="replace").strip().splitlines()
            return lines[-1] if lines else "(no output)"
        return "(no output)"

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def run(self, job: Job, timeout_s: float) -> _Outcome:
        """Send one job; wait for its result, the child's death or the deadline."""
        self.jobs_run += 1
        try:
            self.conn.send(job)
        except OSError:
            return self._died("setup", {})
        deadline = time.monotonic() + timeout_s
        phase, metrics = "setup", {}
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                return _Outcome("timeout", error=f"timeout: no result within {timeout_s:g} s (killed while in "
                                                 f"phase '{phase}')", metrics=metrics)
            if self.conn.poll(min(remaining, 0.25)):
                try:
                    message = self.conn.recv()
                except (EOFError, OSError):
                    return self._died(phase, metrics)
                if message[0] == "phase":
                    phase, metrics = message[1], message[2]
                elif message[0] == "result":
                    result = message[1]
                    return _Outcome(result["status"], result=result, error=result.get("error"),
                                    metrics=result.get("metrics", {}))
            elif self.process.poll() is not None:
                return self._died(phase, metrics)

    def _died(self, phase: str, metrics: dict[str, Any]) -> _Outcome:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)
        code = self.process.returncode
        if code is not None and code < 0:
            how = f"killed by {_SIGNAL_NAMES.get(-code, f'signal {-code}')}"
        else:
            how = f"exited with code {code} ({self._stderr_tail()})"
        self.kill()
        # Nothing here sends SIGKILL to a live worker without saying so; the OOM killer does.
        status = "oom" if code == -signal.SIGKILL else "runtime_error"
        return _Outcome(status, error=f"the kernel process was {how} during phase '{phase}'", metrics=metrics)

    def stop(self) -> None:
        """Ask the child to exit; kill it if it does not."""
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                self.conn.send(None)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(2)
        self.kill()

    def kill(self) -> None:
        """SIGKILL the child's process group and reap it; release the pipe and the log."""
        self._finalizer()
        with contextlib.suppress(OSError):
            self.conn.close()
        with contextlib.suppress(OSError):
            self.stderr.close()


# ---------------------------------------------------------------------------- the collector


class KernelCollector:
    """Measures configs of one tunable kernel and returns Measurements.

    Args:
        kernel: a registered name ("sgemm", "jacobi2d", "matmul_cuda", "matmul_triton") or a
            :class:`KernelSpec` (e.g. a test-only kernel).
        problem_size: default problem size of the configs this collector builds (the
            spec's default when None). Problem size is a workload parameter of each row.
        policy: warm-up / replicate / stability rules of the timing.
        timeout_s: wall-time limit of one config (compile + check + timing); the child is
            killed past it and the row gets status "timeout".
        verify: compare each config's output with the numpy reference before timing it.
        recycle_after: configs per worker process before a fresh one is started (bounds
            what loaded libraries accumulate; 1 isolates every config in its own process).
        with_peaks: attach the device peaks (roofline features) to the hardware spec.
        startup_timeout_s: how long a new worker may take to start.
        seed: seed of the input data.
        pin_cpus: CPUs a CPU kernel's worker is pinned to while it runs a config ("auto": the
            first ``threads`` CPUs this process may use; "none"; or indices).
    """

    def __init__(self, kernel: str | KernelSpec, *, problem_size: Mapping[str, int] | None = None,
                 policy: TimingPolicy = KERNEL_POLICY, timeout_s: float = 60.0, verify: bool = True,
                 recycle_after: int = 200, with_peaks: bool = True, startup_timeout_s: float = 120.0,
                 seed: int = 0, source: str = "perfpred.collect.kernel",
                 pin_cpus: str | tuple[int, ...] | None = "auto") -> None:
        self.kernel = get_kernel(kernel)
        resolve_pin_cpus(pin_cpus, 1)  # a malformed choice is refused before anything runs
        if problem_size is not None:
            self.kernel.check_problem_size(problem_size)
        if not (isinstance(timeout_s, (int, float)) and timeout_s > 0):
            raise InvalidInputError(f"`timeout_s > 0` must hold, but got timeout_s={timeout_s!r}")
        if not (isinstance(recycle_after, int) and recycle_after >= 1):
            raise InvalidInputError(f"`recycle_after >= 1` must hold, but got recycle_after={recycle_after!r}")
        if not (isinstance(startup_timeout_s, (int, float)) and startup_timeout_s > 0):
            raise InvalidInputError(
                f"`startup_timeout_s > 0` must hold, but got startup_timeout_s={startup_timeout_s!r}")
        self.problem_size = dict(problem_size or self.kernel.default_problem_size)
        self.policy = policy
        self.timeout_s = float(timeout_s)
        self.verify = verify
        self.recycle_after = recycle_after
        self.with_peaks = with_peaks
        self.startup_timeout_s = float(startup_timeout_s)
        self.seed = seed
        self.source = source
        self.pin_cpus = pin_cpus
        self.name = f"kernel-{self.kernel.name}"
        self._worker: _Worker | None = None
        self._software: dict[str, Any] | None = None

    # ------------------------------------------------------------------ the space (for tuners)

    def space(self) -> dict[str, list[Any]]:
        """Tune parameters and their values (Kernel Tuner's ``tune_params``)."""
        return self.kernel.space()

    @property
    def restrictions(self) -> list[str]:
        """Restriction strings, valid for Kernel Tuner and (after and/or/not -> &,|,~) ``DataFrame.eval``."""
        return list(self.kernel.restrictions)

    def config(self, params: Mapping[str, Any], problem_size: Mapping[str, int] | None = None) -> KernelConfig:
        """A validated config from plain parameter values (at this collector's problem size by default)."""
        cfg = KernelConfig(self.kernel, params, dict(problem_size or self.problem_size))
        cfg.kernel.check_params(cfg.params)
        cfg.kernel.check_problem_size(cfg.problem_size)  # type: ignore[arg-type]
        return cfg

    def configs(self, sample: int | None = None, *, seed: int = 0,
                problem_size: Mapping[str, int] | None = None) -> list[KernelConfig]:
        """Every valid config, or a seeded uniform sample of ``sample`` of them."""
        if sample is not None and (isinstance(sample, bool) or not isinstance(sample, int) or sample < 1):
            raise InvalidInputError(f"`sample >= 1` must hold, but got sample={sample!r}")
        valid = list(self.kernel.configs())
        if sample is not None and sample < len(valid):
            valid = random.Random(seed).sample(valid, sample)
        size = dict(problem_size or self.problem_size)
        return [KernelConfig(self.kernel, params, size) for params in valid]

    # ------------------------------------------------------------------ collector interface

    def hardware(self, cfg: KernelConfig) -> dict[str, Any]:
        device = self.kernel.device
        if not self.with_peaks:
            return fingerprint(device)
        from perfpred.collect._peaks import hardware_with_peaks

        return hardware_with_peaks(device, threads=cfg.threads())

    def cpus_for(self, cfg: KernelConfig) -> tuple[int, ...] | None:
        """The CPUs ``cfg`` is timed on (None: unpinned, as GPU kernels are)."""
        if self.kernel.device != "cpu":
            return None
        return resolve_pin_cpus(self.pin_cpus, cfg.threads())

    def measurement_id(self, cfg: KernelConfig | Mapping[str, Any]) -> str:
        cfg = self._as_config(cfg)
        return measurement_key("kernel", cfg.workload(), cfg.config(), fingerprint(self.kernel.device)["hardware_id"])

    def measure_dict(self, params: Mapping[str, Any]) -> Measurement:
        """Measure a config given as plain parameter values (what a tuner backend passes)."""
        return self.measure(self.config(params))

    def measure(self, cfg: KernelConfig | Mapping[str, Any]) -> Measurement:
        cfg = self._as_config(cfg)
        if cfg.kernel is not self.kernel and cfg.kernel.name != self.kernel.name:
            raise InvalidInputError(f"this collector measures kernel {self.kernel.name!r}, but got a config of "
                                    f"{cfg.kernel.name!r}")
        cfg.validate()
        cpus = self.cpus_for(cfg)
        hardware = self.hardware(cfg)
        base: dict[str, Any] = {
            "kind": "kernel",
            "workload": cfg.workload(),
            "config": cfg.config(),
            "hardware_id": hardware["hardware_id"],
            "hardware": hardware,
            "software": self._software_versions(),
            "source": self.source,
            "load_avg_1m": os.getloadavg()[0],
        }
        t0 = time.perf_counter()
        worker_start_ms = 0.0
        if self._worker is None or not self._worker.alive():
            self._worker = _Worker(hide_torch=self.kernel.lang == "C", startup_timeout_s=self.startup_timeout_s)
            worker_start_ms = self._worker.start_ms
        job = Job(spec=self.kernel, params=dict(cfg.params), problem_size=dict(cfg.problem_size),  # type: ignore[arg-type]
                  policy=self.policy, cache_dir=str(cache_dir("kernels")), verify=self.verify, seed=self.seed,
                  cpus=cpus)
        outcome = self._worker.run(job, self.timeout_s)
        if (outcome.status in ("timeout", "runtime_error", "oom") or outcome.result.get("restart")
                or self._worker.jobs_run >= self.recycle_after):
            self._close_worker()
        wall_ms = (time.perf_counter() - t0) * 1e3
        metrics = {k: (None if v is None else float(v)) for k, v in outcome.metrics.items()}
        metrics["worker_start_ms"] = worker_start_ms
        spent = sum(metrics.get(k) or 0.0 for k in ("setup_time_ms", "compile_time_ms", "verification_time_ms",
                                                    "benchmark_time_ms"))
        metrics["framework_time_ms"] = max(wall_ms - spent - worker_start_ms, 0.0)
        if outcome.status != "ok":
            return Measurement(status=outcome.status, error=(outcome.error or outcome.status)[:500], metrics=metrics,
                               **base)
        t = outcome.result["timing"]
        timing = TimingResult(raw_times_ms=t["raw_times_ms"], number=t["number"], stopped_by=t["stopped_by"],
                              rel_ci=t["rel_ci"])
        seconds = timing.median_ms / 1e3
        metrics.update({
            "timing_rel_ci": timing.rel_ci if math.isfinite(timing.rel_ci) else None,
            "calls_per_sample": float(timing.number),
            "timing_converged": float(timing.stopped_by == "stable"),
            "gflops": self.kernel.flops(cfg.problem_size) / seconds / 1e9,  # type: ignore[arg-type]
            "gbs": self.kernel.bytes_moved(cfg.problem_size) / seconds / 1e9,  # type: ignore[arg-type]
            **policy_metrics(self.policy),  # metric.timing_max_time_s, ...: a stricter re-run re-times the row
        })
        return Measurement(status="ok", runtime_ms=timing.median_ms, raw_times_ms=timing.raw_times_ms,
                           n_runs=len(timing.raw_times_ms), min_ms=timing.min_ms, mean_ms=timing.mean_ms,
                           std_ms=timing.std_ms, iqr_ms=timing.iqr_ms, cv=timing.cv, metrics=metrics, **base)

    # ------------------------------------------------------------------ lifetime

    @property
    def worker_pid(self) -> int | None:
        """Process id of the current worker (None when none is running)."""
        return self._worker.pid if self._worker is not None and self._worker.alive() else None

    def close(self) -> None:
        """Stop the worker process (a later measure starts a new one)."""
        self._close_worker()

    def _close_worker(self) -> None:
        if self._worker is not None:
            self._worker.stop()
            self._worker = None

    def __enter__(self) -> KernelCollector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    # ------------------------------------------------------------------ helpers

    def _as_config(self, cfg: KernelConfig | Mapping[str, Any]) -> KernelConfig:
        if isinstance(cfg, KernelConfig):
            return cfg
        if isinstance(cfg, Mapping):
            return self.config(cfg)
        raise InvalidInputError(f"a kernel config must be a KernelConfig or a dict of {list(self.kernel.tune_params)}, "
                                f"but got {type(cfg).__name__}")

    def _software_versions(self) -> dict[str, Any]:
        if self._software is None:
            software = software_versions()
            if self.kernel.lang == "C":
                try:
                    software["compiler"] = compiler_identity(self.kernel.compiler)
                except Exception:  # recorded as unknown; the compile step reports the real problem
                    software["compiler"] = None
            software["compiler_flags"] = " ".join(self.kernel.compiler_flags)
            with contextlib.suppress(Exception):
                from importlib.metadata import version

                software["kernel_tuner"] = version("kernel_tuner")
            self._software = software
        return dict(self._software)

