"""Pure feature functions: (workload, config, hardware spec) -> numbers. No I/O."""

from perfpred.features._gemm import (
    DTYPE_BYTES,
    config_frame,
    flops,
    gemm_features,
    gemm_roofline_ms,
    is_power_of_two,
    min_bytes,
    padding_efficiency,
    pow2_alignment,
    roofline_ms,
)
from perfpred.features._gemm_gpu import GPU_IDENTITY_FEATURES, gpu_gemm_features, gpu_gemm_transfer_features
from perfpred.features._kernel import (
    DERIVED_FEATURES,
    hardware_features,
    kernel_features,
    kernel_occupancy_features,
)
from perfpred.features._reference import ReferenceTimes, reference_key_columns
from perfpred.features._serving import serving_attention_features, serving_features
from perfpred.features._specs import GPU_SPECS, device_spec

__all__ = [
    "DERIVED_FEATURES",
    "DTYPE_BYTES",
    "GPU_IDENTITY_FEATURES",
    "GPU_SPECS",
    "ReferenceTimes",
    "config_frame",
    "device_spec",
    "flops",
    "gemm_features",
    "gemm_roofline_ms",
    "gpu_gemm_features",
    "gpu_gemm_transfer_features",
    "hardware_features",
    "is_power_of_two",
    "kernel_features",
    "kernel_occupancy_features",
    "min_bytes",
    "padding_efficiency",
    "pow2_alignment",
    "reference_key_columns",
    "roofline_ms",
    "serving_attention_features",
    "serving_features",
]
