"""ML.ENERGY Benchmark v3 task files (``ml-energy/tasks/<task>.json``).

Each file is ``{task, task_display_name, [architecture], configurations: [...]}``; one
configuration is one serving setup measured on H100s, in one of two shapes:

- LLM serving (vLLM): ``model_id, max_num_seqs, tensor_parallel, expert_parallel,
  data_parallel, num_gpus, weight_precision, total/activated_params_billions,
  avg_power_watts, energy_per_request_joules, energy_per_token_joules,
  median/p90/p95/p99_itl_ms, output_throughput_tokens_per_sec, avg_batch_size,
  avg_output_len``;
- diffusion (diffusers): ``batch_size, inference_steps, image_height/width`` or
  ``video_height/width, num_frames, fps``, ``ulysses_degree, ring_degree``,
  ``batch_latency_s``, ``energy_per_image_joules`` / ``energy_per_video_joules``,
  ``throughput_images_per_sec`` / ``throughput_videos_per_sec``.

Both become ``kind="serving"`` rows with ``power_w`` = ``avg_power_watts`` as published
(``power_source="recorded"``) and ``energy_j`` = energy per request (LLM) or per generated
image / video (diffusion). Only diffusion has a runtime (``batch_latency_s``); LLM rows
carry their latencies as metrics (``itl_p50_ms`` ... ``itl_p99_ms``). The files are small,
so rows are built as Measurements and checked by the schema's own rules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from perfpred.collect.importers._base import FileImport, Importer, finish
from perfpred.collect.importers._checks import is_finite_number
from perfpred.collect.importers._frame import now_iso
from perfpred.collect.importers._gpus import gpu_hardware
from perfpred.collect.importers._read import head_text, read_json
from perfpred.datasets import Measurement
from perfpred.errors import InvalidInputError

# ML.ENERGY's GPU labels -> the name torch reports (v3 ran on H100 SXM 80 GB).
ML_ENERGY_GPUS = {"H100": "NVIDIA H100 80GB HBM3", "A100": "NVIDIA A100-SXM4-80GB", "B200": "NVIDIA B200"}

LLM_CONFIG = ("max_num_seqs", "tensor_parallel", "expert_parallel", "data_parallel", "num_gpus")
LLM_METRICS = {"energy_per_token_joules": "energy_per_token_j", "energy_per_request_joules": "energy_per_request_j",
               "median_itl_ms": "itl_p50_ms", "p90_itl_ms": "itl_p90_ms", "p95_itl_ms": "itl_p95_ms",
               "p99_itl_ms": "itl_p99_ms", "output_throughput_tokens_per_sec": "output_tokens_per_s",
               "avg_batch_size": "avg_batch_size", "avg_output_len": "avg_output_len_tokens"}
DIFFUSION_CONFIG = ("batch_size", "num_gpus", "ulysses_degree", "ring_degree")
DIFFUSION_WORKLOAD = ("inference_steps", "image_height", "image_width", "video_height", "video_width", "num_frames",
                      "fps")
DIFFUSION_OUTPUTS = (("energy_per_image_joules", "throughput_images_per_sec", "image"),
                     ("energy_per_video_joules", "throughput_videos_per_sec", "video"))


class _Bad(Exception):
    """One configuration breaks a rule; the message says which and the value."""


def _get(cfg: dict[str, Any], key: str, kind: type | tuple[type, ...] = (int, float)) -> Any:
    if key not in cfg:
        raise _Bad(f"key {key!r} must be present, but it is missing")
    value = cfg[key]
    numeric = kind in ((int, float), int)
    if numeric and not is_finite_number(value):
        raise _Bad(f"`{key}` must be a finite number, but got {value!r}")
    if kind is int and (not isinstance(value, int) or value < 1):
        raise _Bad(f"`{key}` must be an integer >= 1, but got {value!r}")
    if kind is str and (not isinstance(value, str) or not value):
        raise _Bad(f"`{key}` must be a non-empty string, but got {value!r}")
    return value


def _positive(cfg: dict[str, Any], key: str) -> float:
    value = _get(cfg, key)
    if value <= 0:
        raise _Bad(f"`{key} > 0` must hold, but got {value!r}")
    return float(value)


def _model_workload(cfg: dict[str, Any], task: str, architecture: Any) -> dict[str, Any]:
    workload: dict[str, Any] = {"model": _get(cfg, "model_id", str), "task": task,
                                "total_params_b": _positive(cfg, "total_params_billions"),
                                "activated_params_b": _positive(cfg, "activated_params_billions"),
                                "precision": _get(cfg, "weight_precision", str)}
    arch = cfg.get("architecture", architecture)
    if isinstance(arch, str) and arch:
        workload["architecture"] = arch
    return workload


def _llm(cfg: dict[str, Any], task: str, architecture: Any) -> dict[str, Any]:
    metrics = {out: _positive(cfg, key) for key, out in LLM_METRICS.items()}
    return {"workload": _model_workload(cfg, task, architecture),
            "config": {key: _get(cfg, key, int) for key in LLM_CONFIG},
            "energy_j": metrics["energy_per_request_j"], "metrics": metrics}


def _diffusion(cfg: dict[str, Any], task: str, architecture: Any) -> dict[str, Any]:
    workload = _model_workload(cfg, task, architecture)
    workload.update({key: _get(cfg, key, int) for key in DIFFUSION_WORKLOAD if key in cfg})
    energy_key, rate_key, unit = next(((e, r, u) for e, r, u in DIFFUSION_OUTPUTS if e in cfg), DIFFUSION_OUTPUTS[0])
    latency_ms = _positive(cfg, "batch_latency_s") * 1e3
    energy = _positive(cfg, energy_key)
    return {"workload": workload, "config": {key: _get(cfg, key, int) for key in DIFFUSION_CONFIG},
            "runtime_ms": latency_ms, "energy_j": energy,
            "metrics": {"batch_latency_ms": latency_ms, f"energy_per_{unit}_j": energy,
                        f"{unit}s_per_s": _positive(cfg, rate_key)}}


class MlEnergyImporter(Importer):
    """ML.ENERGY v3 task files -> ``kind="serving"`` Measurements with recorded power."""

    name = "ml-energy"
    description = "ML.ENERGY Benchmark v3 task files (tasks/<task>.json)"
    patterns = ("*.json", "*.json.gz")

    def sniff(self, path: Path) -> bool:
        return '"configurations"' in head_text(path, 2048)

    def read(self, path: Path, **options: Any) -> FileImport:
        path = Path(path)
        doc = read_json(path, self.name)
        if not isinstance(doc, dict) or not isinstance(doc.get("configurations"), list):
            keys = list(doc)[:6] if isinstance(doc, dict) else type(doc).__name__
            raise InvalidInputError(
                f"{path.name}: an ml-energy task file needs a `configurations` list, but got {keys}")
        task = doc.get("task") or path.name.removesuffix(".gz").removesuffix(".json")
        if not isinstance(task, str):
            raise InvalidInputError(f"{path.name}: `task` must be a string, but got {task!r}")
        rows, bad, n_bad = [], [], 0
        timestamp = now_iso()
        for i, cfg in enumerate(doc["configurations"]):
            try:
                rows.append(self._row(path, cfg, task, doc.get("architecture"), timestamp))
            except (_Bad, InvalidInputError) as exc:
                n_bad += 1
                if len(bad) < 5:
                    bad.append(f"{path.name}: configurations[{i}]: {exc}")
        frames = [pd.DataFrame.from_records(group) for group in _same_keys(rows)]
        return finish(path, frames, len(doc["configurations"]), bad, n_bad)

    def _row(self, path: Path, cfg: Any, task: str, architecture: Any, timestamp: str) -> dict[str, Any]:
        if not isinstance(cfg, dict):
            raise _Bad(f"a configuration must be an object, but got {type(cfg).__name__}")
        if "max_num_seqs" in cfg:
            parts = _llm(cfg, task, architecture)
        elif "batch_size" in cfg and "inference_steps" in cfg:
            parts = _diffusion(cfg, task, architecture)
        else:
            raise _Bad("a configuration needs `max_num_seqs` (LLM) or `batch_size` + `inference_steps` (diffusion)")
        gpu = _get(cfg, "gpu_model", str)
        hardware = gpu_hardware(ML_ENERGY_GPUS.get(gpu, gpu))
        measurement = Measurement(
            kind="serving", hardware_id=hardware["hardware_id"], hardware=hardware,
            power_w=_positive(cfg, "avg_power_watts"), power_source="recorded",
            source=f"{self.name}:{path.name}", timestamp=timestamp, **parts,
        )
        return measurement.to_row()


def _same_keys(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Rows grouped by their column set (LLM and diffusion rows differ), order kept."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row), []).append(row)
    return list(groups.values())
