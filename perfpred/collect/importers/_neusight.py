"""NeuSight kernel tables: ``neusight/train/{bmm,linear}/<GPU>.csv[.gz]``.

Columns ``OPName, Latency, Device, Torch Version, CUDNN Version, Kernel Name, Warps per SM,
Blocks per SM, Grid x/y/z, Block x/y/z, CUDA Version, Kernels, B, M, N, K``, written by
NeuSight's ``Dataset/collect.py``:

- ``bmm``: ``torch.bmm(randn(B, M, N), randn(B, N, K))``, so NeuSight's N is the reduction
  dimension and K the output columns. In perfpred's convention (C[m, n] = A[m, k] @ B[k, n])
  that is b=B, m=M, k=N, n=K.
- ``linear``: ``nn.Linear(N, K, bias=True)`` applied to ``randn(B, M, N)``: one GEMM with
  m=B*M rows, k=N, n=K and the weight transposed (``trans_b``).
- ``Latency`` (ms) is the mean of the 5 fastest of 25 CUDA-event timings, the only
  statistic published: it becomes ``runtime_ms`` (no replicates).
- fp32 throughout (``sgemm`` kernels, TF32 off).

The cuBLAS kernel that ran is kept as ``workload.kernel_name`` (an observed extra, not an
input); its launch shape (grid, block, warps and blocks per SM, kernels launched) as metrics.
The GPU's spec comes from ``neusight/device_configs/<GPU>.json`` (found beside ``train/``)
merged with ``GPU_SPECS``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from perfpred.collect.importers._base import FileImport, Importer, finish
from perfpred.collect.importers._checks import RowChecks
from perfpred.collect.importers._frame import build_frame
from perfpred.collect.importers._gpus import gpu_hardware, read_neusight_sheet
from perfpred.collect.importers._read import check_columns, head_text, read_csv
from perfpred.errors import InvalidInputError

OPS = ("bmm", "linear")
LAUNCH_METRICS = {"Warps per SM": "warps_per_sm", "Blocks per SM": "blocks_per_sm",
                  "Grid x": "grid_x", "Grid y": "grid_y", "Grid z": "grid_z",
                  "Block x": "block_x", "Block y": "block_y", "Block z": "block_z"}
DIMS = ("B", "M", "N", "K")
REQUIRED = ("OPName", "Device", "Kernel Name", *LAUNCH_METRICS, *DIMS)
LATENCY_COLUMNS = ("Latency", "Latency (ms)")
SOFTWARE_COLUMNS = {"Torch Version": "torch", "CUDA Version": "cuda", "CUDNN Version": "cudnn"}
# Columns NeuSight's collector and merge scripts also write.
KNOWN = (*LATENCY_COLUMNS, *SOFTWARE_COLUMNS, "Kernels", "TileX", "TileY", "OOD")


def find_device_config(path: Path, device: str, folder: Path | None = None) -> Path | None:
    """``device_configs/<name>.json`` for this CSV: next to ``train/`` or in ``folder``."""
    stem = path.name.removesuffix(".gz").removesuffix(".csv")
    roots = [folder] if folder is not None else [p / "device_configs" for p in path.parents[:4]]
    for root in roots:
        for name in (stem, device.replace(" ", "_")):
            candidate = root / f"{name}.json"
            if candidate.is_file():
                return candidate
    return None


def _software_json(table: pd.DataFrame, good: np.ndarray) -> pd.Series | None:
    present = [c for c in SOFTWARE_COLUMNS if c in table.columns]
    if not present:
        return None
    # Missing versions are left out (they are provenance, not part of the measurement).
    sub = table.loc[good, present].astype(object).reset_index(drop=True)
    keys = sub.apply(lambda row: tuple("" if pd.isna(v) else str(v) for v in row), axis=1)
    mapping = {}
    for combo in pd.unique(keys):
        versions = {SOFTWARE_COLUMNS[c]: v for c, v in zip(present, combo, strict=True) if v}
        if "torch" in versions:
            versions["torch"] = versions["torch"].removeprefix("p")
        mapping[combo] = json.dumps(versions, sort_keys=True, separators=(",", ":"))
    return keys.map(mapping)


class NeuSightImporter(Importer):
    """NeuSight bmm / linear latency tables -> ``kind="gemm"`` Measurements (fp32)."""

    name = "neusight"
    description = "NeuSight bmm/linear kernel tables (train/{bmm,linear}/<GPU>.csv[.gz])"
    patterns = ("*.csv", "*.csv.gz")
    options = ("device_configs",)

    def check_options(self, options: Mapping[str, Any]) -> None:
        super().check_options(options)
        folder = options.get("device_configs")
        if folder is not None and not (str(folder) and Path(folder).is_dir()):
            what = "is a file" if str(folder) and Path(folder).exists() else "does not exist"
            raise InvalidInputError(f"option device_configs must be an existing folder of NeuSight device configs "
                                    f"(<GPU>.json), but '{folder}' {what}")

    def sniff(self, path: Path) -> bool:
        head = head_text(path, 512)
        return head.startswith("OPName,") and ",Kernel Name," in head and ",M," in head

    def read(self, path: Path, **options: Any) -> FileImport:
        path = Path(path)
        csv = read_csv(path, self.name)
        table = csv.frame
        check_columns(path, self.name, table, REQUIRED, known=KNOWN)
        latency_col = next((c for c in LATENCY_COLUMNS if c in table.columns), None)
        if latency_col is None:
            raise InvalidInputError(f"{path.name}: a neusight file needs a 'Latency' column, which it lacks")
        checks = RowChecks(path, csv.labels)
        op = table["OPName"].astype(str).to_numpy()
        checks.require(np.isin(op, OPS), f"OPName in {OPS}", op)
        dims = {d: checks.require_int(table[d], d) for d in DIMS}
        latency = checks.require_positive(table[latency_col], f"{latency_col} (ms)")
        launch = {out: checks.require_positive(table[col], col, allow_zero=True) for col, out in LAUNCH_METRICS.items()}
        kernel = table["Kernel Name"]
        checks.require(kernel.notna().to_numpy() & (kernel.astype(str).str.len() > 0).to_numpy(),
                       "Kernel Name is a non-empty string", kernel.to_numpy())
        device = table["Device"]
        checks.require(device.notna().to_numpy(), "Device is a GPU name", device.to_numpy())
        good = ~checks.bad
        software = _software_json(table, good)
        frames, notes = [], []
        folder = options.get("device_configs")
        sub_index = np.flatnonzero(good)
        devices = device.astype(str).to_numpy()[good]
        for name in pd.unique(devices):
            rows = sub_index[devices == name]
            sheet_path = find_device_config(path, name, Path(folder) if folder else None)
            sheet = read_neusight_sheet(sheet_path) if sheet_path is not None else None
            if sheet is None and folder:  # the folder was named to be used: say when it could not be
                notes.append(f"device_configs '{folder}' holds no spec sheet for {name!r}: its built-in spec is used")
            frames.append(self._frame(path, name, sheet, rows, op, dims, latency, launch, table, software,
                                      np.isin(sub_index, rows)))
        return finish(path, frames, csv.n_lines, csv.bad + checks.examples(), csv.n_bad + int(checks.bad.sum()),
                      notes)

    def _frame(self, path: Path, device: str, sheet: dict[str, Any] | None, rows: np.ndarray, op: np.ndarray,
               dims: dict[str, np.ndarray], latency: np.ndarray, launch: dict[str, np.ndarray],
               table: pd.DataFrame, software: pd.Series | None, in_good: np.ndarray) -> pd.DataFrame:
        is_linear = op[rows] == "linear"
        b, m, n_ns, k_ns = (dims[d][rows] for d in DIMS)
        gemm_b = np.where(is_linear, 1, b)
        gemm_m = np.where(is_linear, b * m, m)
        runtime = latency[rows]
        flop = 2.0 * gemm_b * gemm_m * n_ns * k_ns
        metrics = {name: values[rows] for name, values in launch.items()}
        if "Kernels" in table.columns:
            launched = table["Kernels"].fillna("").astype(str).to_numpy()[rows]
            metrics["n_kernels"] = np.array([max(len([k for k in s.split(";") if k]), 1) for s in launched], float)
        metrics["gflops"] = flop / (runtime * 1e6)
        parent = path.parent.name
        return build_frame(
            kind="gemm", hardware=gpu_hardware(device, sheet=sheet),
            source=f"{self.name}:{parent}/{path.name}" if parent else f"{self.name}:{path.name}",
            n=len(rows),
            workload={"op": op[rows], "b": gemm_b, "m": gemm_m, "n": k_ns, "k": n_ns, "dtype": "fp32",
                      "trans_a": False, "trans_b": is_linear, "bias": is_linear,
                      "kernel_name": table["Kernel Name"].astype(str).to_numpy()[rows]},
            config={"backend": "torch", "device": "cuda"},
            metrics=metrics, runtime_ms=runtime,
            software=software[in_good].reset_index(drop=True) if software is not None else None,
        )
