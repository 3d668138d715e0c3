"""Collectors: anything that produces Measurements (real hardware now; importers and replay later)."""

from perfpred.collect._gemm import (
    BACKENDS,
    DTYPE_BYTES,
    GemmCollector,
    GemmConfig,
    config_from_dict,
    cpu_threads,
    resolve_pin_cpus,
)
from perfpred.collect._hardware import cpu_spec, fingerprint, gpu_specs, software_versions
from perfpred.collect._kernel import KERNEL_POLICY, KernelCollector, KernelConfig
from perfpred.collect._peaks import device_peaks, hardware_with_peaks
from perfpred.collect._power import (
    NvmlPower,
    PowerObserver,
    PowerReading,
    RaplPower,
    UnavailablePower,
    observe_sustained,
    power_observer,
)
from perfpred.collect._replay import ReplayBackend, ReplayConfig
from perfpred.collect._sweep import (
    DESIGNS,
    NOISY_CV,
    SweepReport,
    busy_warning,
    expand,
    grid_shapes,
    loguniform_shapes,
    noisy_row,
    quality_warning,
    run_sweep,
)
from perfpred.collect._timing import (
    CacheFlusher,
    TimingPolicy,
    TimingResult,
    median_rel_ci,
    policy_metrics,
    time_function,
)
from perfpred.collect._visits import combine_visits, gate_visits, visits_done
from perfpred.collect.kernels import KERNELS, KernelSpec, get_kernel

__all__ = [
    "BACKENDS",
    "DESIGNS",
    "DTYPE_BYTES",
    "KERNELS",
    "KERNEL_POLICY",
    "NOISY_CV",
    "CacheFlusher",
    "GemmCollector",
    "GemmConfig",
    "KernelCollector",
    "KernelConfig",
    "KernelSpec",
    "NvmlPower",
    "PowerObserver",
    "PowerReading",
    "RaplPower",
    "ReplayBackend",
    "ReplayConfig",
    "SweepReport",
    "TimingPolicy",
    "TimingResult",
    "UnavailablePower",
    "busy_warning",
    "combine_visits",
    "config_from_dict",
    "cpu_spec",
    "cpu_threads",
    "device_peaks",
    "expand",
    "fingerprint",
    "gate_visits",
    "get_kernel",
    "gpu_specs",
    "grid_shapes",
    "hardware_with_peaks",
    "loguniform_shapes",
    "median_rel_ci",
    "noisy_row",
    "observe_sustained",
    "policy_metrics",
    "power_observer",
    "quality_warning",
    "resolve_pin_cpus",
    "run_sweep",
    "software_versions",
    "time_function",
    "visits_done",
]
