"""Published peak numbers of common GPUs (dense, no sparsity), keyed by the name torch reports.

``peak_gflops[dtype]`` is the rate a plain matmul of that dtype can reach: CUDA-core FP32
for fp32 (torch keeps TF32 off for matmul by default), tensor cores for fp16/bf16 where the
GPU has them. Bandwidth is the spec sheet's DRAM bandwidth in GB/s.
"""

from __future__ import annotations


def _spec(fp64: float, fp32: float, fp16: float, bf16: float | None, bw: float) -> dict:
    peaks = {"fp64": fp64 * 1e3, "fp32": fp32 * 1e3, "fp16": fp16 * 1e3}
    if bf16 is not None:
        peaks["bf16"] = bf16 * 1e3
    return {"peak_gflops": peaks, "mem_bw_gbs": bw}


# TFLOP/s from the vendors' data sheets; GB/s bandwidth.
GPU_SPECS: dict[str, dict] = {
    "NVIDIA H200": _spec(34, 67, 989, 989, 4800),
    "NVIDIA H100 80GB HBM3": _spec(34, 67, 989, 989, 3350),
    "NVIDIA H100 PCIe": _spec(26, 51, 756, 756, 2000),
    "NVIDIA A100-SXM4-40GB": _spec(9.7, 19.5, 312, 312, 1555),
    "NVIDIA A100-SXM4-80GB": _spec(9.7, 19.5, 312, 312, 2039),
    "NVIDIA A100-PCIE-40GB": _spec(9.7, 19.5, 312, 312, 1555),
    "NVIDIA A100 80GB PCIe": _spec(9.7, 19.5, 312, 312, 1935),
    "NVIDIA A40": _spec(0.58, 37.4, 149.7, 149.7, 696),
    "NVIDIA L4": _spec(0.49, 30.3, 121, 121, 300),
    "NVIDIA RTX A6000": _spec(1.2, 38.7, 154.8, 154.8, 768),
    "NVIDIA RTX A4000": _spec(0.6, 19.2, 76.7, 76.7, 448),
    "NVIDIA GeForce RTX 3090": _spec(0.56, 35.6, 71, 71, 936),
    "NVIDIA GeForce RTX 2080 Ti": _spec(0.42, 13.4, 53.8, None, 616),
    "NVIDIA TITAN RTX": _spec(0.51, 16.3, 130, None, 672),
    "Tesla V100-PCIE-32GB": _spec(7, 14, 112, None, 900),
    "Tesla V100-SXM2-16GB": _spec(7.8, 15.7, 125, None, 900),
    "Tesla T4": _spec(0.25, 8.1, 65, None, 320),
    "Tesla P100-PCIE-16GB": _spec(4.7, 9.3, 18.7, None, 732),
    "Tesla P4": _spec(0.17, 5.5, 0.09, None, 192),
}
