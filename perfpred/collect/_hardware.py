"""Hardware fingerprint: what the machine is, with a short stable id.

The id hashes only what identifies the hardware (CPU model, cores, ISA, caches, memory
size, GPU model and memory), never load or thread settings, so the same machine gets the
same id across runs and software upgrades. BLAS, torch and driver versions are recorded
beside it as software.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

_ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile",
              "amx_bf16", "amx_int8", "neon", "asimd", "sve")
_SYSFS_CPU = Path("/sys/devices/system/cpu")


def _read(path: str | Path) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    for line in _read("/proc/cpuinfo").splitlines():
        if ":" in line:
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    return info


def _cache_name(index: Path) -> str | None:
    level = _read(index / "level").strip()
    ctype = _read(index / "type").strip().lower()
    return (f"l{level}" + {"data": "d", "instruction": "i"}.get(ctype, "")) if level else None


def _caches_kib(cpu: int = 0) -> dict[str, int]:
    """Cache sizes CPU ``cpu`` reaches, one instance each, from sysfs: {'l1d': 48, 'l2': 2048, 'l3': 32768}
    (KiB). An instance may be shared (an L3 by a socket or a CCX); lscpu's "L3 cache" line is the
    total over instances, this size times ``cache_instances``."""
    caches: dict[str, int] = {}
    for index in sorted((_SYSFS_CPU / f"cpu{cpu}" / "cache").glob("index*")):
        name = _cache_name(index)
        m = re.match(r"(\d+)([KMG]?)", _read(index / "size").strip())
        if not name or not m:
            continue
        caches[name] = int(m.group(1)) * {"": 1, "K": 1, "M": 1024, "G": 1024 * 1024}[m.group(2)]
    return caches


def _cache_instances() -> dict[str, int]:
    """How many separate instances of each cache this machine's CPUs have: {'l2': 2, 'l3': 1}
    (CPUs listed in the same sysfs shared_cpu_list share one instance)."""
    shared: dict[str, set[str]] = {}
    for cpu in _SYSFS_CPU.glob("cpu[0-9]*"):
        for index in cpu.glob("cache/index*"):
            name = _cache_name(index)
            if name:
                shared.setdefault(name, set()).add(_read(index / "shared_cpu_list").strip() or cpu.name)
    return {name: len(lists) for name, lists in sorted(shared.items())}


def last_level_cache_kib(cpus: Iterable[int]) -> int | None:
    """The largest cache one instance of which a CPU in ``cpus`` reaches (KiB), None if sysfs says nothing."""
    sizes = [max(caches.values()) for caches in map(_caches_kib, cpus) if caches]
    return max(sizes, default=None)


def _memory_bytes() -> int:
    m = re.search(r"MemTotal:\s+(\d+) kB", _read("/proc/meminfo"))
    return int(m.group(1)) * 1024 if m else 0


def cpu_spec() -> dict[str, Any]:
    """This machine's CPU: model, architecture, logical and usable CPUs, ISA extensions (AVX2,
    AVX-512, ...), cache sizes in KiB (``caches_kib``: one instance of each, as CPU 0 sees it; the
    instance counts in ``cache_instances``) and memory in GiB, from /proc, sysfs and ``platform``."""
    info = _cpuinfo()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    return {
        "cpu_model": info.get("model name") or platform.processor() or platform.machine(),
        "arch": platform.machine(),
        "logical_cpus": os.cpu_count() or 1,
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1,
        "isa": sorted(f for f in _ISA_FLAGS if f in flags),
        "caches_kib": _caches_kib(),  # one instance each; the machine has cache_instances of them
        "cache_instances": _cache_instances(),
        "memory_gib": round(_memory_bytes() / 2**30, 1),
    }


def gpu_specs() -> list[dict[str, Any]]:
    """One dict per visible CUDA GPU (torch first, NVML for the driver), [] without one."""
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    gpus = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        gpus.append({
            "index": index,
            "gpu_name": props.name,
            "sm_count": props.multi_processor_count,
            "memory_gib": round(props.total_memory / 2**30, 1),
            "compute_capability": f"{props.major}.{props.minor}",
            "l2_cache_kib": getattr(props, "L2_cache_size", 0) // 1024,
        })
    try:
        import pynvml  # from nvidia-ml-py, the [gpu] extra

        pynvml.nvmlInit()
        driver = pynvml.nvmlSystemGetDriverVersion()
        for gpu in gpus:
            gpu["driver"] = driver.decode() if isinstance(driver, bytes) else driver
    except Exception:  # NVML missing or not initialisable: the driver is optional information
        pass
    return gpus


def software_versions() -> dict[str, Any]:
    """Versions that change measured times: Python, numpy, perfpred and, where installed, torch
    (its CUDA, threads, parallel backend, oneDNN) and the BLAS libraries threadpoolctl finds."""
    versions: dict[str, Any] = {"python": platform.python_version()}
    try:
        import numpy

        versions["numpy"] = numpy.__version__
    except ImportError:
        pass
    try:
        import torch

        versions["torch"] = torch.__version__
        versions["torch_cuda"] = torch.version.cuda
        versions["torch_num_threads"] = torch.get_num_threads()
        parallel = torch.__config__.parallel_info()
        m = re.search(r"ATen parallel backend: (\S+)", parallel)
        versions["torch_parallel_backend"] = m.group(1) if m else None
        versions["torch_mkldnn"] = bool(torch.backends.mkldnn.is_available())
    except ImportError:
        pass
    try:
        from threadpoolctl import threadpool_info

        versions["blas"] = [
            {k: pool.get(k) for k in ("internal_api", "version", "num_threads", "architecture")}
            for pool in threadpool_info()
            if pool.get("user_api") == "blas"
        ]
    except ImportError:
        pass
    from perfpred import __version__

    versions["perfpred"] = __version__
    return versions


def _short_hash(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:10]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:32]


@cache
def _fingerprint_cached(device: str) -> str:
    cpu = cpu_spec()
    gpus = gpu_specs()
    spec: dict[str, Any] = {"device": device, **cpu, "gpus": gpus}
    if device.startswith("cuda"):
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= len(gpus):
            from perfpred.errors import DeviceNotFoundError

            raise DeviceNotFoundError(f"device {device!r} is not present: {len(gpus)} CUDA GPU(s) visible")
        gpu = gpus[index]
        identity = {k: gpu[k] for k in ("gpu_name", "sm_count", "memory_gib", "compute_capability")}
        spec["hardware_id"] = f"cuda-{_slug(gpu['gpu_name'])}-{_short_hash(identity)}"
        spec["hardware_name"] = gpu["gpu_name"]
    else:
        identity = {k: cpu[k] for k in ("cpu_model", "arch", "logical_cpus", "isa", "caches_kib")}
        identity["memory_gib"] = round(cpu["memory_gib"])
        spec["hardware_id"] = f"cpu-{_slug(cpu['cpu_model'])}-{_short_hash(identity)}"
        spec["hardware_name"] = cpu["cpu_model"]
    return json.dumps(spec)


def fingerprint(device: str = "cpu") -> dict[str, Any]:
    """The hardware spec of ``device`` ("cpu", "cuda", "cuda:1") with its ``hardware_id``."""
    return json.loads(_fingerprint_cached(device))
