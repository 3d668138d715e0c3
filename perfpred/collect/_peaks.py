"""Peak compute and memory bandwidth of a device: from the spec table, or measured once.

The roofline feature needs the device's peaks. Known GPUs come from
``perfpred.features.GPU_SPECS``; anything else (every CPU, in practice, since a CPU's
usable peak depends on its BLAS and thread count) is measured with a short microbenchmark
and cached per hardware id, so the cost is paid once per machine.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np

from perfpred._files import write_text_atomically
from perfpred.collect._hardware import fingerprint
from perfpred.collect._timing import TimingPolicy, time_function
from perfpred.features import GPU_SPECS
from perfpred.settings import cache_dir

_PEAK_POLICY = TimingPolicy(warmup_runs=2, min_runs=5, max_runs=20, max_time_s=1.0, target_rel_ci=0.02)
# Sizes large enough to reach the BLAS plateau, small enough to finish in about a second.
_PEAK_SIZES = {"fp64": 1024, "fp32": 1024, "bf16": 256, "fp16": 256}
# A GPU needs far larger products to hide launch overhead (a 1024^3 bf16 product takes a few
# microseconds on an H100-class GPU); these take about 1-3 ms there and under 0.5 GB.
_GPU_PEAK_SIZES = {"fp64": 4096, "fp32": 4096, "bf16": 8192, "fp16": 8192}


def _measure_peak_gflops(device: str, dtype: str, threads: int) -> float:
    from perfpred.collect._gemm import GemmConfig, _make_operation, cpu_threads

    size = (_PEAK_SIZES if device == "cpu" else _GPU_PEAK_SIZES)[dtype]
    cfg = GemmConfig(size, size, size, dtype=dtype, device=device, threads=threads)
    with cpu_threads(threads if device == "cpu" else None):
        call, sync = _make_operation(cfg)
        ms = time_function(call, _PEAK_POLICY, sync=sync, cuda_events=device != "cpu").min_ms
    return 2.0 * size**3 / (ms * 1e6)


def _measure_bandwidth_gbs(device: str) -> float:
    """Copy bandwidth (read + write bytes / time) of a buffer far larger than the caches."""
    n_bytes = 256 << 20
    if device == "cpu":
        src = np.ones(n_bytes // 8)
        dst = np.empty_like(src)
        call, sync = (lambda: np.copyto(dst, src)), None
    else:
        import torch

        src = torch.ones(n_bytes // 4, device=device)
        dst = torch.empty_like(src)
        call, sync = (lambda: dst.copy_(src)), torch.cuda.synchronize
    ms = time_function(call, _PEAK_POLICY, sync=sync, cuda_events=device != "cpu").min_ms
    return 2 * n_bytes / (ms * 1e6)


def device_peaks(device: str = "cpu", dtypes: tuple[str, ...] = ("fp32", "fp64"), threads: int = 1) -> dict[str, Any]:
    """{'peak_gflops': {dtype: GFLOP/s}, 'mem_bw_gbs': GB/s, 'peaks_source': 'spec'|'microbenchmark'}."""
    hw = fingerprint(device)
    name = hw.get("hardware_name", "")
    if device != "cpu" and name in GPU_SPECS:
        spec = GPU_SPECS[name]
        return {"peak_gflops": dict(spec["peak_gflops"]), "mem_bw_gbs": spec["mem_bw_gbs"], "peaks_source": "spec"}
    key = f"{hw['hardware_id']}-t{threads if device == 'cpu' else 0}"
    path = cache_dir("peaks") / f"{key}.json"
    cached: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    peaks = dict(cached.get("peak_gflops", {}))
    changed = False
    for dtype in dtypes:
        if dtype not in peaks:
            peaks[dtype] = round(_measure_peak_gflops(device, dtype, threads), 2)
            changed = True
    bw = cached.get("mem_bw_gbs")
    if bw is None:
        bw = round(_measure_bandwidth_gbs(device), 2)
        changed = True
    out = {"peak_gflops": peaks, "mem_bw_gbs": bw, "peaks_source": "microbenchmark", "peaks_threads": threads}
    if changed:
        out["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        write_text_atomically(path, json.dumps(out, indent=2))
    return out


def hardware_with_peaks(device: str = "cpu", dtypes: tuple[str, ...] = ("fp32", "fp64"), threads: int = 1) -> dict:
    """The fingerprint of ``device`` plus its peaks (what the roofline features read)."""
    return {**fingerprint(device), **device_peaks(device, dtypes, threads)}
