"""GEMM collector: time C = op(A) @ op(B) (batched when b > 1) with torch or numpy.

One code path for CPU and CUDA: the device is a parameter. Every config is validated before
anything runs; an error while running one config (out of memory, a backend failure) becomes
that config's status and the sweep goes on.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from perfpred.collect._hardware import fingerprint, last_level_cache_kib, software_versions
from perfpred.collect._power import observe_sustained, power_observer
from perfpred.collect._timing import CacheFlusher, TimingPolicy, policy_metrics, time_function
from perfpred.datasets import Measurement
from perfpred.errors import DeviceNotFoundError, InvalidInputError

DTYPE_BYTES = {"fp64": 8, "fp32": 4, "bf16": 2, "fp16": 2}
BACKENDS = ("torch", "numpy")
_NUMPY_DTYPES = {"fp64": np.float64, "fp32": np.float32, "fp16": np.float16}

# A small, fast config re-timed beside every measurement: its drift shows noisy periods.
REFERENCE_SHAPE = 256
# CacheFlusher (perfpred.collect._timing) streams over a buffer of this many times the LLC, at least 8 MiB.
_FLUSH_LLC_FACTOR, _FLUSH_MIN_BYTES = 2, 8 << 20
# Out-of-memory texts: CUDA's, torch's CPU allocator's ("DefaultCPUAllocator: can't allocate memory:
# ... Error code 12 (Cannot allocate memory)"), numpy's ("Unable to allocate 7.45 GiB for an array ...").
_OOM_TEXT = re.compile(r"out of memory|can't allocate memory|cannot allocate memory|unable to allocate", re.I)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity: taskset, a cgroup cpuset), which may be fewer than the machine's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass(frozen=True)
class GemmConfig:
    """One GEMM to time. Sizes are element counts; ``threads`` only applies on the CPU."""

    m: int
    n: int
    k: int
    b: int = 1
    dtype: str = "fp32"
    trans_a: bool = False
    trans_b: bool = False
    backend: str = "torch"
    device: str = "cpu"
    threads: int | None = 1

    def workload(self) -> dict[str, Any]:
        return {"b": self.b, "m": self.m, "n": self.n, "k": self.k, "dtype": self.dtype,
                "trans_a": self.trans_a, "trans_b": self.trans_b}

    def config(self, cold_cache: bool = False) -> dict[str, Any]:
        return {"backend": self.backend, "device": self.device,
                "threads": self.threads if self.device == "cpu" else None, "cold_cache": cold_cache}

    def bytes_needed(self) -> int:
        """Peak bytes ``_make_operation`` allocates. Torch makes A, B and C in the dtype; numpy draws
        each operand as float64 and converts it, so a float64 operand lives beside the converted ones
        (at m=n=k: 2x the operands' bytes for fp16, 1.33x for fp32)."""
        size = DTYPE_BYTES[self.dtype]
        a, b, c = (self.b * x for x in (self.m * self.k, self.k * self.n, self.m * self.n))
        if self.backend == "numpy":
            return max((8 + size) * a, size * a + (8 + size) * b, size * (a + b + c))
        return size * (a + b + c)

    def validate(self) -> None:
        """Refuse a config that cannot run here (bad values, more threads than usable CPUs, too little memory)."""
        for name in ("m", "n", "k", "b"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise InvalidInputError(f"`{name} > 0` must hold for a GEMM, but got {name}={value!r}")
        if self.backend not in BACKENDS:
            raise InvalidInputError(f"`backend` must be one of {BACKENDS}, but got backend={self.backend!r}")
        if self.dtype not in DTYPE_BYTES:
            raise InvalidInputError(f"`dtype` must be one of {tuple(DTYPE_BYTES)}, but got dtype={self.dtype!r}")
        if self.device != "cpu" and not (self.device == "cuda" or self.device.startswith("cuda:")):
            raise InvalidInputError(f"`device` must be 'cpu', 'cuda' or 'cuda:N', but got device={self.device!r}")
        if self.backend == "numpy":
            if self.device != "cpu":
                raise InvalidInputError(f"backend 'numpy' runs on the CPU only, but got device={self.device!r}")
            if self.dtype not in _NUMPY_DTYPES:
                raise InvalidInputError(
                    f"dtype {self.dtype!r} is not supported by backend 'numpy' (supported: {tuple(_NUMPY_DTYPES)})"
                )
        if self.device == "cpu":
            cpus = usable_cpus()
            if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)):
                raise InvalidInputError(f"`threads` must be an integer, but got threads={self.threads!r}")
            if self.threads is not None and not (1 <= self.threads <= cpus):
                raise InvalidInputError(f"`1 <= threads <= {cpus}` (the CPUs this process may use) must hold, "
                                        f"but got threads={self.threads}")
        else:
            _check_cuda_device(self.device, self.dtype)
        self.check_memory()

    def check_memory(self, extra_bytes: int = 0) -> None:
        """Refuse a config whose operands, plus ``extra_bytes`` the timing needs (a cache-flush
        buffer), would take more than 80% of the device's free memory."""
        need = self.bytes_needed() + extra_bytes
        free = _free_memory_bytes(self.device)
        if need > 0.8 * free:
            flush = f" (with a {extra_bytes / 2**30:.2f} GiB cache-flush buffer)" if extra_bytes else ""
            raise InvalidInputError(
                f"{self.label()} needs {need / 2**30:.2f} GiB{flush}, more than 80% of the "
                f"{free / 2**30:.2f} GiB free on {self.device}"
            )

    def label(self) -> str:
        return f"GEMM b={self.b} m={self.m} n={self.n} k={self.k} {self.dtype} ({self.backend})"


def _check_cuda_device(device: str, dtype: str) -> None:
    import torch

    if not torch.cuda.is_available():
        raise DeviceNotFoundError(f"device {device!r} was asked for, but torch sees no CUDA GPU")
    index = int(device.split(":")[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        raise DeviceNotFoundError(f"`cuda index < {torch.cuda.device_count()}` must hold, but got device={device!r}")
    if dtype == "bf16" and not torch.cuda.is_bf16_supported():
        raise InvalidInputError(f"dtype 'bf16' is not supported on {torch.cuda.get_device_name(index)}")


def _free_memory_bytes(device: str) -> int:
    if device == "cpu":
        import psutil

        return int(psutil.virtual_memory().available)
    import torch

    index = int(device.split(":")[1]) if ":" in device else 0
    return int(torch.cuda.mem_get_info(index)[0])


@contextmanager
def cpu_threads(threads: int | None, pin_cpus: tuple[int, ...] | None = None) -> Iterator[tuple[int, ...] | None]:
    """Limit torch and the BLAS libraries numpy uses to ``threads`` for the duration, and pin the
    process to ``pin_cpus`` meanwhile. Yields the CPUs actually pinned to: None where affinity
    cannot be set (not Linux, or a sandbox that forbids it), and the timing goes on unpinned."""
    if threads is None:
        yield None
        return
    import torch
    from threadpoolctl import threadpool_limits

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    affinity = None
    if pin_cpus and hasattr(os, "sched_setaffinity"):
        try:
            affinity = os.sched_getaffinity(0)
            os.sched_setaffinity(0, pin_cpus)
        except OSError:
            affinity = None
    try:
        with threadpool_limits(limits=threads):
            yield pin_cpus if affinity is not None else None
    finally:
        if affinity is not None:
            os.sched_setaffinity(0, affinity)
        torch.set_num_threads(previous)


def resolve_pin_cpus(pin: str | tuple[int, ...] | None, threads: int) -> tuple[int, ...] | None:
    """The CPUs a CPU config is timed on: "auto" = the first ``threads`` CPUs this process may use,
    "none"/None = no pinning, or an explicit tuple (at least ``threads`` allowed CPUs)."""
    if pin is None or pin == "none" or not hasattr(os, "sched_getaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    if pin == "auto":
        if len(allowed) < threads:  # fewer CPUs would time threads=N on fewer cores, silently
            raise InvalidInputError(f"`len(pin_cpus) >= threads` must hold, but pin_cpus='auto' finds "
                                    f"{len(allowed)} CPU(s) this process may use {allowed} for threads={threads}")
        return tuple(allowed[:threads])
    if isinstance(pin, str) or not all(isinstance(c, int) and not isinstance(c, bool) for c in pin):
        raise InvalidInputError(f"`pin_cpus` must be 'auto', 'none' or CPU indices, but got pin_cpus={pin!r}")
    bad = sorted(set(pin) - set(allowed))
    if bad:
        raise InvalidInputError(f"`pin_cpus` must be CPUs this process may use {allowed}, but got {bad[0]}")
    if len(set(pin)) < threads:
        raise InvalidInputError(f"`len(pin_cpus) >= threads` must hold, but got {len(set(pin))} CPU(s) "
                                f"for threads={threads}")
    return tuple(sorted(set(pin)))


def _make_operation(cfg: GemmConfig) -> tuple[Callable[[], object], Callable[[], None] | None]:
    """Allocate the operands once and return (call, sync)."""
    rng = np.random.default_rng(0)
    a_shape = (cfg.b, cfg.k, cfg.m) if cfg.trans_a else (cfg.b, cfg.m, cfg.k)
    b_shape = (cfg.b, cfg.n, cfg.k) if cfg.trans_b else (cfg.b, cfg.k, cfg.n)
    if cfg.backend == "numpy":
        dt = _NUMPY_DTYPES[cfg.dtype]
        a = rng.standard_normal(a_shape).astype(dt)
        b = rng.standard_normal(b_shape).astype(dt)
        a_op = a.transpose(0, 2, 1) if cfg.trans_a else a
        b_op = b.transpose(0, 2, 1) if cfg.trans_b else b
        out = np.empty((cfg.b, cfg.m, cfg.n), dtype=dt)
        if cfg.b == 1:
            a2, b2, o2 = a_op[0], b_op[0], out[0]
            return (lambda: np.matmul(a2, b2, out=o2)), None
        return (lambda: np.matmul(a_op, b_op, out=out)), None

    import torch

    dt = {"fp64": torch.float64, "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.dtype]
    dev = torch.device(cfg.device)
    a = torch.randn(a_shape, dtype=dt, device=dev)
    b = torch.randn(b_shape, dtype=dt, device=dev)
    a_op = a.transpose(1, 2) if cfg.trans_a else a
    b_op = b.transpose(1, 2) if cfg.trans_b else b
    out = torch.empty((cfg.b, cfg.m, cfg.n), dtype=dt, device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else None
    if cfg.b == 1:
        a2, b2, o2 = a_op[0], b_op[0], out[0]
        return (lambda: torch.mm(a2, b2, out=o2)), sync
    return (lambda: torch.bmm(a_op, b_op, out=out)), sync


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or bool(_OOM_TEXT.search(str(exc)))


@dataclass
class GemmCollector:
    """Measures GemmConfigs on this machine and returns Measurements.

    Attributes:
        policy: warm-up / replicate / stability rules for each config.
        measure_power: read power from a real sensor during a sustained loop (when one exists).
        power_duration_s: length of that sustained loop.
        reference: re-time a fixed 256^3 fp32 GEMM beside each config (noise monitor).
        pin_cpus: CPUs a CPU config is timed on ("auto": the first ``threads`` allowed CPUs;
            "none"; or indices). On a VM the vCPUs differ: here one ran a 256^3 GEMM 16% faster
            than the other, every time, so an unpinned run's time depends on where it landed.
        max_config_s: refuse a config whose fewest calls (see ``min_seconds``) would take longer
            at the device's peak; None: no limit. A BLAS call cannot be interrupted midway.
    """

    policy: TimingPolicy = field(default_factory=TimingPolicy)
    measure_power: bool = True
    power_duration_s: float = 1.0
    reference: bool = True
    pin_cpus: str | tuple[int, ...] | None = "auto"
    max_config_s: float | None = 300.0
    source: str = "perfpred.collect.gemm"

    name = "gemm"

    def __post_init__(self) -> None:
        resolve_pin_cpus(self.pin_cpus, 1)  # a malformed choice is refused before anything runs

    def hardware(self, cfg: GemmConfig) -> dict[str, Any]:
        """Fingerprint + peaks (for the dtypes in play and this thread count) of cfg's device."""
        from perfpred.collect._peaks import hardware_with_peaks

        dtypes = tuple(dict.fromkeys(("fp32", "fp64", cfg.dtype)))
        return hardware_with_peaks(cfg.device, dtypes, threads=cfg.threads or 1)

    def flushed_llc_bytes(self, cfg: GemmConfig) -> int:
        """The last-level cache the cold-cache flush must evict for cfg (0: no flush): the largest one
        instance of which the timed CPUs reach. Not lscpu's total over instances: the flush runs on
        those CPUs, and a bigger buffer only costs time and memory."""
        if not (self.policy.cold_cache and cfg.device == "cpu"):
            return 0
        pinned = resolve_pin_cpus(self.pin_cpus, cfg.threads or 1)
        cpus = pinned or (sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0])
        return (last_level_cache_kib(cpus) or 32 * 1024) * 1024

    def _validate(self, cfg: GemmConfig) -> int:
        """cfg.validate(), then the memory check again with the flush buffer counted; returns the LLC to flush."""
        cfg.validate()  # first: flushed_llc_bytes reads cfg.threads
        llc = self.flushed_llc_bytes(cfg)
        if llc:
            cfg.check_memory(max(_FLUSH_LLC_FACTOR * llc, _FLUSH_MIN_BYTES))  # the CacheFlusher buffer
        return llc

    def min_seconds(self, cfg: GemmConfig, hardware: dict[str, Any]) -> float | None:
        """A lower bound on the time measuring cfg takes: its fewest calls (one warm-up and 3 samples,
        time_function's floor for calls that overrun the time cap) at the peak GFLOP/s in ``hardware``."""
        peak = (hardware.get("peak_gflops") or {}).get(cfg.dtype)
        if not peak or peak <= 0:
            return None
        calls = (self.policy.warmup_runs > 0) + min(self.policy.min_runs, 3)
        return calls * 2.0 * cfg.b * cfg.m * cfg.n * cfg.k / (peak * 1e9)

    def _check_time(self, cfg: GemmConfig, hardware: dict[str, Any]) -> None:
        seconds = self.min_seconds(cfg, hardware) if self.max_config_s is not None else None
        if seconds is not None and seconds > self.max_config_s:
            peak = hardware["peak_gflops"][cfg.dtype]
            raise InvalidInputError(
                f"`minimum time per config <= max_config_s` must hold, but {cfg.label()} needs >= {seconds:.0f} s "
                f"(its fewest calls at the {peak:g} GFLOP/s peak) for max_config_s={self.max_config_s:g}")

    def check(self, cfg: GemmConfig) -> None:
        """Refuse cfg before anything runs: ``cfg.validate()`` with the cache-flush buffer counted, and
        the ``max_config_s`` limit (this reads, or once measures, the device's peaks)."""
        self._validate(cfg)
        self._check_time(cfg, self.hardware(cfg))

    def measurement_id(self, cfg: GemmConfig) -> str:
        from perfpred.datasets import measurement_key

        return measurement_key("gemm", cfg.workload(), cfg.config(self.policy.cold_cache),
                               fingerprint(cfg.device)["hardware_id"])

    def _reference_ms(self, cfg: GemmConfig) -> float | None:
        ref = GemmConfig(REFERENCE_SHAPE, REFERENCE_SHAPE, REFERENCE_SHAPE, dtype="fp32", backend=cfg.backend,
                         device=cfg.device, threads=cfg.threads)
        call, sync = _make_operation(ref)
        quick = TimingPolicy(warmup_runs=1, min_runs=5, max_runs=15, max_time_s=0.15, target_rel_ci=0.05,
                             min_sample_ms=1.0)
        return time_function(call, quick, sync=sync, cuda_events=cfg.device != "cpu").median_ms

    def measure(self, cfg: GemmConfig) -> Measurement:
        llc = self._validate(cfg)
        hardware = self.hardware(cfg)
        self._check_time(cfg, hardware)
        base: dict[str, Any] = {
            "kind": "gemm",
            "workload": cfg.workload(),
            "config": cfg.config(self.policy.cold_cache),
            "hardware_id": hardware["hardware_id"],
            "hardware": hardware,
            "source": self.source,
            "load_avg_1m": os.getloadavg()[0],
        }
        pin = resolve_pin_cpus(self.pin_cpus, cfg.threads or 1) if cfg.device == "cpu" else None
        try:
            with cpu_threads(cfg.threads if cfg.device == "cpu" else None, pin) as pinned:
                base["software"] = software_versions()  # read here: the thread counts in force while timing
                call, sync = _make_operation(cfg)
                flush = CacheFlusher(llc) if llc else None
                timing = time_function(call, self.policy, sync=sync, flush=flush, cuda_events=cfg.device != "cpu")
                reading = None
                if self.measure_power:
                    observer = power_observer(cfg.device)
                    reading = observe_sustained(call, observer, min_duration_s=self.power_duration_s, sync=sync)
                ref_ms = self._reference_ms(cfg) if self.reference else None
        except Exception as exc:  # one failing config is data, not a crash
            base.setdefault("software", software_versions())
            status = "oom" if _is_oom(exc) else "runtime_error"
            return Measurement(status=status, error=f"{type(exc).__name__}: {exc}"[:500], **base)
        power = {}
        if reading is not None and reading.power_source != "unavailable":
            power = {"power_w": reading.power_w, "energy_j": reading.energy_j, "power_source": reading.power_source}
        return Measurement(
            status="ok",
            runtime_ms=timing.median_ms,
            raw_times_ms=timing.raw_times_ms,
            n_runs=len(timing.raw_times_ms),
            min_ms=timing.min_ms,
            mean_ms=timing.mean_ms,
            std_ms=timing.std_ms,
            iqr_ms=timing.iqr_ms,
            cv=timing.cv,
            ref_runtime_ms=ref_ms,
            metrics={"timing_rel_ci": timing.rel_ci if math.isfinite(timing.rel_ci) else None,
                     # 1: the median's CI met the target; 0: a time or run cap stopped sampling
                     "timing_converged": float(timing.stopped_by == "stable"),
                     "calls_per_sample": float(timing.number),
                     # which CPUs timed it, as a bit mask (NaN: not pinned)
                     "pinned_cpu_mask": float(sum(1 << c for c in pinned)) if pinned else None,
                     "gflops": 2.0 * cfg.b * cfg.m * cfg.n * cfg.k / (timing.median_ms * 1e6),
                     # the timing policy (metric.timing_max_time_s, ...): a re-run under a stricter one re-times it
                     **policy_metrics(self.policy)},
            **power,
            **base,
        )


def config_from_dict(values: dict[str, Any]) -> GemmConfig:
    """Build a GemmConfig from loose keys (CLI / JSON); unknown keys are refused."""
    known = set(GemmConfig.__dataclass_fields__)
    unknown = sorted(set(values) - known)
    if unknown:
        raise InvalidInputError(f"unknown GEMM parameter(s) {unknown}; known: {sorted(known)}")
    return GemmConfig(**values)


def as_dict(cfg: GemmConfig) -> dict[str, Any]:
    return asdict(cfg)
