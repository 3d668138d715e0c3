"""Hardware spec of a recorded GPU, from its name: one resolver shared by every importer.

Recorded datasets name their GPU in different ways ("NVIDIA GeForce RTX 3090", "a100",
"H100"). Each importer maps its spelling to the name torch reports (the key of
``perfpred.features.GPU_SPECS``) and asks :func:`gpu_hardware` for the spec, so the same
GPU gets the same ``hardware_id`` whichever dataset it comes from, and the roofline
features find ``peak_gflops[dtype]`` and ``mem_bw_gbs`` under the keys they read.

``GPU_SPECS`` holds the peaks. :data:`GPU_FACTS` below adds what it lacks (SM count, L2
size, memory) for the GPUs in the recorded datasets, and the peaks of the two GPUs that
``GPU_SPECS`` does not list (GTX 680 of UCI SGEMM, Radeon PRO W6600 of the Kernel Tuner
hub). Numbers come from the vendors' data sheets and architecture white papers.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from perfpred.errors import InvalidInputError
from perfpred.features import GPU_SPECS

# name -> facts missing from GPU_SPECS: sm_count (SMs / CUs), l2_cache_kib, memory_gib,
# and peak_gflops / mem_bw_gbs only for GPUs that GPU_SPECS lacks.
GPU_FACTS: dict[str, dict[str, Any]] = {
    "NVIDIA GeForce GTX 680": {"sm_count": 8, "l2_cache_kib": 512, "memory_gib": 2.0,
                               "peak_gflops": {"fp32": 3090.4, "fp64": 128.8}, "mem_bw_gbs": 192.2},
    "AMD Radeon PRO W6600": {"sm_count": 28, "l2_cache_kib": 2048, "memory_gib": 8.0,
                             "peak_gflops": {"fp32": 10400.0, "fp16": 20800.0}, "mem_bw_gbs": 224.0},
    "NVIDIA GeForce RTX 3090": {"sm_count": 82, "l2_cache_kib": 6144, "memory_gib": 24.0},
    "NVIDIA GeForce RTX 2080 Ti": {"sm_count": 68, "l2_cache_kib": 5632, "memory_gib": 11.0},
    "NVIDIA TITAN RTX": {"sm_count": 72, "l2_cache_kib": 6144, "memory_gib": 24.0},
    "NVIDIA RTX A4000": {"sm_count": 48, "l2_cache_kib": 4096, "memory_gib": 16.0},
    "NVIDIA RTX A6000": {"sm_count": 84, "l2_cache_kib": 6144, "memory_gib": 48.0},
    "NVIDIA A40": {"sm_count": 84, "l2_cache_kib": 6144, "memory_gib": 48.0},
    "NVIDIA A100-PCIE-40GB": {"sm_count": 108, "l2_cache_kib": 40960, "memory_gib": 40.0},
    "NVIDIA A100-SXM4-40GB": {"sm_count": 108, "l2_cache_kib": 40960, "memory_gib": 40.0},
    "NVIDIA A100-SXM4-80GB": {"sm_count": 108, "l2_cache_kib": 40960, "memory_gib": 80.0},
    "NVIDIA A100 80GB PCIe": {"sm_count": 108, "l2_cache_kib": 40960, "memory_gib": 80.0},
    "NVIDIA H100 80GB HBM3": {"sm_count": 132, "l2_cache_kib": 51200, "memory_gib": 80.0},
    "NVIDIA H100 PCIe": {"sm_count": 114, "l2_cache_kib": 51200, "memory_gib": 80.0},
    "NVIDIA H200": {"sm_count": 132, "l2_cache_kib": 51200, "memory_gib": 141.0},
    "Tesla V100-PCIE-32GB": {"sm_count": 80, "l2_cache_kib": 6144, "memory_gib": 32.0},
    "Tesla V100-SXM2-16GB": {"sm_count": 80, "l2_cache_kib": 6144, "memory_gib": 16.0},
    "Tesla T4": {"sm_count": 40, "l2_cache_kib": 4096, "memory_gib": 16.0},
    "Tesla P100-PCIE-16GB": {"sm_count": 56, "l2_cache_kib": 4096, "memory_gib": 16.0},
    # The NeuSight sheets of these two count SMs otherwise (P4: 40 of 64 cores; L4: 60 of 128).
    "Tesla P4": {"sm_count": 20, "cores_per_sm": 128, "l2_cache_kib": 2048, "memory_gib": 8.0},
    "NVIDIA L4": {"sm_count": 58, "cores_per_sm": 128, "l2_cache_kib": 49152, "memory_gib": 24.0},
}


def hardware_id_for(name: str) -> str:
    """Stable slug of a GPU name: 'NVIDIA GeForce RTX 3090' -> 'gpu-nvidia-geforce-rtx-3090'."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    if not slug:
        raise InvalidInputError(f"a GPU name must contain letters or digits, but got {name!r}")
    return f"gpu-{slug}"


def _vendor(name: str) -> str:
    lowered = name.lower()
    # AMD's data-centre GPUs go by their model alone as often as not ("MI300X", "mi250").
    if "amd" in lowered or "radeon" in lowered or "instinct" in lowered or re.search(r"(?<![a-z0-9])mi\d", lowered):
        return "amd"
    if "intel" in lowered:
        return "intel"
    return "nvidia"


def neusight_sheet_facts(sheet: dict[str, Any]) -> dict[str, Any]:
    """Map a NeuSight ``device_configs/*.json`` spec sheet onto perfpred's hardware keys.

    NeuSight's units: Dev_Mem GB, Mem_Bw GB/s, Freq MHz, SingleFLOPs (NVIDIA) or
    SingleFLOPsMM (AMD matrix cores) GFLOP/s of fp32, L2Cache MB.
    """
    facts: dict[str, Any] = {}
    fp32 = sheet.get("SingleFLOPs", sheet.get("SingleFLOPsMM"))
    if _positive(fp32):
        facts["peak_gflops"] = {"fp32": float(fp32)}
    for key, out, scale in (("Mem_Bw", "mem_bw_gbs", 1.0), ("Dev_Mem", "memory_gib", 1.0),
                            ("L2Cache", "l2_cache_kib", 1024.0), ("Freq", "clock_mhz", 1.0)):
        if _positive(sheet.get(key)):
            facts[out] = float(sheet[key]) * scale
    for key, out in (("Num_Sm", "sm_count"), ("Core_Per_SM", "cores_per_sm")):
        if _positive(sheet.get(key)):
            facts[out] = int(sheet[key])
    if "l2_cache_kib" in facts:
        facts["l2_cache_kib"] = round(facts["l2_cache_kib"])
    return facts


def _positive(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value > 0)


def read_neusight_sheet(path: Path) -> dict[str, Any]:
    """Load one NeuSight spec sheet; a one-line error when it is not one."""
    try:
        sheet = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"{path.name}: unreadable NeuSight device config ({type(exc).__name__})") from exc
    if not isinstance(sheet, dict) or not isinstance(sheet.get("Device"), str):
        raise InvalidInputError(f"{path.name}: a NeuSight device config needs a 'Device' name, but got none")
    return sheet


def _keep_data_sheet_sms(sheet_facts: dict[str, Any], facts: dict[str, Any]) -> None:
    """A sheet that counts SMs its own way gives way to the data sheet (the P4's says 40 SMs of 64
    cores: the GP104 has 20 of 128, as its recorded launches show). Where its cores add up to
    another total (the L4's 60 x 128 against 58 x 128), its fp32 peak, made from them, is scaled to
    the data sheet's cores."""
    sheet_cores = sheet_facts.pop("sm_count") * sheet_facts.pop("cores_per_sm", 0)
    cores = facts["sm_count"] * facts.get("cores_per_sm", 0)
    if sheet_cores and cores and sheet_cores != cores and "peak_gflops" in sheet_facts:
        sheet_facts["peak_gflops"] = {k: v * cores / sheet_cores for k, v in sheet_facts["peak_gflops"].items()}


def gpu_hardware(name: str, *, sheet: dict[str, Any] | None = None,
                 overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``hardware`` dict of a Measurement on GPU ``name``.

    Peaks come from ``GPU_SPECS`` (all dtypes it knows), then :data:`GPU_FACTS`, then the
    spec ``sheet`` (a NeuSight device config, whose fp32 peak, bandwidth, L2, memory and clock
    win because they describe the measured card; its SM count only where GPU_FACTS has none),
    then ``overrides`` (facts a dataset's own documentation states). ``spec_source`` says which
    of them contributed.
    """
    hardware: dict[str, Any] = {"hardware_id": hardware_id_for(name), "name": name, "gpu_name": name,
                                "vendor": _vendor(name)}
    sources = []
    peaks: dict[str, float] = {}
    spec = GPU_SPECS.get(name)
    if spec is not None:
        peaks.update(spec["peak_gflops"])
        hardware["mem_bw_gbs"] = spec["mem_bw_gbs"]
        sources.append("GPU_SPECS")
    facts = GPU_FACTS.get(name)
    if facts is not None:
        for key, value in facts.items():
            if key == "peak_gflops":
                peaks = {**value, **peaks}
            elif key not in hardware:
                hardware[key] = value
        sources.append("GPU_FACTS")
    sheet_facts = neusight_sheet_facts(sheet) if sheet else None
    if sheet_facts and facts and "sm_count" in facts and sheet_facts.get("sm_count") not in (None, facts["sm_count"]):
        _keep_data_sheet_sms(sheet_facts, facts)
    for extra, label in ((sheet_facts, "neusight-device-config"), (overrides, "dataset-readme")):
        if not extra:
            continue
        for key, value in extra.items():
            if key == "peak_gflops":
                peaks.update(value)
            else:
                hardware[key] = value
        sources.append(label)
    if peaks:
        hardware["peak_gflops"] = dict(sorted(peaks.items()))
    hardware["spec_source"] = "+".join(sources) if sources else "name-only"
    return hardware
