"""Published peak numbers of common GPUs (dense, no sparsity), keyed by the name torch reports.

``peak_gflops[dtype]`` is the rate a plain matmul of that dtype can reach: CUDA-core FP32
for fp32 (torch keeps TF32 off for matmul by default), tensor cores for fp16/bf16 where the
GPU has them, and for fp64 on A100/H100/H200 (cuBLAS runs DGEMM on their FP64 tensor cores:
twice the vector FP64 rate). Bandwidth is the spec sheet's DRAM bandwidth in GB/s.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from perfpred.errors import InvalidInputError


def _spec(fp64: float, fp32: float, fp16: float, bf16: float | None, bw: float) -> dict:
    peaks = {"fp64": fp64 * 1e3, "fp32": fp32 * 1e3, "fp16": fp16 * 1e3}
    if bf16 is not None:
        peaks["bf16"] = bf16 * 1e3
    return {"peak_gflops": peaks, "mem_bw_gbs": bw}


# TFLOP/s from the vendors' data sheets; GB/s bandwidth. GA102/GA104 (A40, A6000, A4000, 3090) run
# FP64 at 1/64 of FP32.
GPU_SPECS: dict[str, dict] = {
    "NVIDIA H200": _spec(67, 67, 989, 989, 4800),
    "NVIDIA H100 80GB HBM3": _spec(67, 67, 989, 989, 3350),
    "NVIDIA H100 PCIe": _spec(51, 51, 756, 756, 2000),
    "NVIDIA A100-SXM4-40GB": _spec(19.5, 19.5, 312, 312, 1555),
    "NVIDIA A100-SXM4-80GB": _spec(19.5, 19.5, 312, 312, 2039),
    "NVIDIA A100-PCIE-40GB": _spec(19.5, 19.5, 312, 312, 1555),
    "NVIDIA A100 80GB PCIe": _spec(19.5, 19.5, 312, 312, 1935),
    "NVIDIA A40": _spec(0.58, 37.4, 149.7, 149.7, 696),
    "NVIDIA L4": _spec(0.49, 30.3, 121, 121, 300),
    "NVIDIA RTX A6000": _spec(0.6, 38.7, 154.8, 154.8, 768),
    "NVIDIA RTX A4000": _spec(0.3, 19.2, 76.7, 76.7, 448),
    "NVIDIA GeForce RTX 3090": _spec(0.56, 35.6, 71, 71, 936),
    "NVIDIA GeForce RTX 2080 Ti": _spec(0.42, 13.4, 53.8, None, 616),
    "NVIDIA TITAN RTX": _spec(0.51, 16.3, 130, None, 672),
    "Tesla V100-PCIE-32GB": _spec(7, 14, 112, None, 900),
    "Tesla V100-SXM2-16GB": _spec(7.8, 15.7, 125, None, 900),
    "Tesla T4": _spec(0.25, 8.1, 65, None, 320),
    "Tesla P100-PCIE-16GB": _spec(4.7, 9.3, 18.7, None, 732),
    "Tesla P4": _spec(0.17, 5.5, 0.09, None, 192),
}


# Per-SM resource limits by CUDA compute capability (the CUDA C++ Programming Guide's table
# "Technical Specifications per Compute Capability"): resident threads and blocks, shared memory
# (the most a kernel can configure), 32-bit registers, and registers one thread may use (beyond
# it the compiler spills to local memory). OpenCL kernels on the same GPU share these limits.
SM_LIMITS_BY_CC: dict[str, dict[str, float]] = {
    cc: {"max_threads_per_sm": threads, "max_blocks_per_sm": blocks, "shared_kib_per_sm": shared_kib,
         "registers_per_sm": 65536, "max_registers_per_thread": max_regs}
    for cc, threads, blocks, shared_kib, max_regs in (
        ("3.0", 2048, 16, 48, 63), ("3.5", 2048, 16, 48, 255), ("5.0", 2048, 32, 64, 255),
        ("5.2", 2048, 32, 96, 255), ("6.0", 2048, 32, 64, 255), ("6.1", 2048, 32, 96, 255),
        ("7.0", 2048, 32, 96, 255), ("7.5", 1024, 16, 64, 255), ("8.0", 2048, 32, 164, 255),
        ("8.6", 1536, 16, 100, 255), ("8.9", 1536, 24, 100, 255), ("9.0", 2048, 32, 228, 255),
    )
}

# Compute capability of the NVIDIA GPUs in GPU_SPECS and the recorded datasets, for specs that do
# not carry it (a live CUDA collector records it; the importers know only the name).
GPU_COMPUTE_CAPABILITY: dict[str, str] = {
    "NVIDIA GeForce GTX 680": "3.0",
    "Tesla P100-PCIE-16GB": "6.0", "Tesla P4": "6.1",
    "Tesla V100-PCIE-32GB": "7.0", "Tesla V100-SXM2-16GB": "7.0",
    "NVIDIA GeForce RTX 2080 Ti": "7.5", "NVIDIA TITAN RTX": "7.5", "Tesla T4": "7.5",
    "NVIDIA A100-SXM4-40GB": "8.0", "NVIDIA A100-SXM4-80GB": "8.0", "NVIDIA A100-PCIE-40GB": "8.0",
    "NVIDIA A100 80GB PCIe": "8.0",
    "NVIDIA GeForce RTX 3090": "8.6", "NVIDIA RTX A6000": "8.6", "NVIDIA RTX A4000": "8.6", "NVIDIA A40": "8.6",
    "NVIDIA L4": "8.9",
    "NVIDIA H100 80GB HBM3": "9.0", "NVIDIA H100 PCIe": "9.0", "NVIDIA H200": "9.0",
}


def device_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The facts of the device a row ran on, as one flat dict.

    perfpred's own CUDA rows carry the whole machine's fingerprint: ``device`` "cuda" or "cuda:N",
    the host's ``caches_kib`` and ``memory_gib``, and a ``gpus`` list. For those, the GPU's entry
    (``gpu_name``, ``sm_count``, ``l2_cache_kib``, ``memory_gib``, ``compute_capability``) replaces
    the host's caches and memory, so a GPU row's features see the GPU's 60 MiB L2 and 132 SMs, not
    the CPU's 2 MiB L2. Any other spec (CPU rows, recorded GPUs, which state their facts at the
    top level) comes back as it is. Anything but a dict (a GPU's name, a JSON text) is a one-line
    InvalidInputError: ``json.loads`` a row's ``hardware_json`` first; a GPU's published peaks by
    name are ``GPU_SPECS[name]``.
    """
    if not isinstance(spec, Mapping):
        hint = (f" (the published peaks of that GPU are GPU_SPECS[{spec!r}])"
                if isinstance(spec, str) and spec in GPU_SPECS else "")
        raise InvalidInputError(f"device_spec takes a hardware spec dict (a row's hardware_json, parsed with "
                                f"json.loads), but got {type(spec).__name__} {repr(spec)[:60]}{hint}")
    device = str(spec.get("device", ""))
    gpus = spec.get("gpus") or []
    if not device.startswith("cuda") or not isinstance(gpus, list):
        return dict(spec)
    suffix = device.partition(":")[2]
    index = int(suffix) if suffix.isdigit() else 0
    gpu = next((g for g in gpus if isinstance(g, dict) and g.get("index", 0) == index), None)
    if gpu is None:
        return dict(spec)
    return {**{k: v for k, v in spec.items() if k not in ("caches_kib", "memory_gib")}, **gpu}


def device_specs(hardware_json: Iterable[Any]) -> dict[str, dict[str, Any]]:
    """Each distinct ``hardware_json`` text of a column, parsed and flattened by :func:`device_spec`.

    The one place features read a row's hardware from; a text that is not a JSON object is a
    one-line InvalidInputError.
    """
    specs: dict[str, dict[str, Any]] = {}
    for text in pd.Series(hardware_json, dtype=object).dropna().unique():
        try:
            specs[text] = device_spec(json.loads(text))
        except (TypeError, AttributeError, json.JSONDecodeError, InvalidInputError) as exc:
            raise InvalidInputError(f"`hardware_json` must be a JSON object, but got {str(text)[:60]!r}") from exc
    return specs


def sm_limits(spec: dict) -> dict[str, float] | None:
    """Per-SM limits of the GPU a hardware spec describes, or None where they are not known.

    Limits the spec states itself win; otherwise its ``compute_capability``, else its name, picks
    a row of :data:`SM_LIMITS_BY_CC`. AMD GPUs schedule differently and get None.
    """
    keys = ("max_threads_per_sm", "max_blocks_per_sm", "shared_kib_per_sm", "registers_per_sm",
            "max_registers_per_thread")
    cc = spec.get("compute_capability") or GPU_COMPUTE_CAPABILITY.get(spec.get("gpu_name") or spec.get("name") or "")
    base = SM_LIMITS_BY_CC.get(str(cc)) if cc else None
    stated = {k: float(spec[k]) for k in keys if isinstance(spec.get(k), (int, float))}
    if base is None and len(stated) < len(keys):
        return None
    return {**(base or {}), **stated}
