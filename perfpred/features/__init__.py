"""Pure feature functions: (workload, config, hardware spec) -> numbers. No I/O."""

from perfpred.features._gemm import (
    DTYPE_BYTES,
    config_frame,
    flops,
    gemm_features,
    gemm_roofline_ms,
    min_bytes,
    padding_efficiency,
    pow2_alignment,
    roofline_ms,
)
from perfpred.features._specs import GPU_SPECS

__all__ = [
    "DTYPE_BYTES",
    "GPU_SPECS",
    "config_frame",
    "flops",
    "gemm_features",
    "gemm_roofline_ms",
    "min_bytes",
    "padding_efficiency",
    "pow2_alignment",
    "roofline_ms",
]
