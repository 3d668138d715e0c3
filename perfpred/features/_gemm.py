"""Analytic GEMM features: FLOPs, bytes, intensity, alignment, cache fit and roofline time.

Pure functions of a table of Measurements (or configs) with ``workload.*``, ``config.*`` and
``hardware_json`` columns. No I/O, no fitted state: the same row always gives the same
features, so they are safe to compute before a train/test split.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from perfpred.datasets._schema import python_scalar
from perfpred.errors import InvalidInputError
from perfpred.features._specs import device_specs

DTYPE_BYTES = {"fp64": 8, "fp32": 4, "bf16": 2, "fp16": 2}
ALIGN_CAP_LOG2 = 7  # alignment beyond 128 elements no longer changes how kernels tile
PAD_TILES = (8, 16, 32, 64)  # SIMD widths and micro-kernel tiles of CPU and GPU GEMMs


def flops(b, m, n, k):
    """Multiply-adds count twice: 2*b*m*n*k."""
    return 2.0 * np.asarray(b, float) * m * n * k


def min_bytes(b, m, n, k, dtype_bytes):
    """Compulsory traffic: read A and B once, write C once."""
    m, n, k = (np.asarray(x, float) for x in (m, n, k))
    return np.asarray(dtype_bytes, float) * b * (m * k + k * n + m * n)


def pow2_alignment(x, cap_log2: int = ALIGN_CAP_LOG2):
    """log2 of the largest power of two dividing x, capped (x=96 -> 5, x=1024 -> cap)."""
    x = np.asarray(x, dtype=np.int64)
    lowbit = x & -x
    return np.minimum(np.log2(np.maximum(lowbit, 1)), cap_log2)


def is_power_of_two(x) -> np.ndarray:
    """1.0 where x is a positive integer power of two (1 included), 0.0 elsewhere, NaN where NaN."""
    x = np.asarray(x, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        exponent = np.log2(np.where(x > 0, x, np.nan))
        hit = (x > 0) & (x == np.round(x)) & (exponent == np.round(exponent))
    return np.where(np.isnan(x), np.nan, hit.astype(float))


def padding_efficiency(x, tile: int):
    """Useful fraction of the work when x is padded up to a multiple of tile."""
    x = np.asarray(x, dtype=float)
    return x / (np.ceil(x / tile) * tile)


def roofline_ms(flop, n_bytes, peak_gflops, mem_bw_gbs):
    """max(compute time, memory time) in ms, from peaks in GFLOP/s and GB/s."""
    compute_ms = np.asarray(flop) / (np.asarray(peak_gflops) * 1e6)
    memory_ms = np.asarray(n_bytes) / (np.asarray(mem_bw_gbs) * 1e6)
    return np.maximum(compute_ms, memory_ms)


def _hardware_columns(df: pd.DataFrame, dtypes: pd.Series) -> pd.DataFrame:
    """Peak GFLOP/s for each row's dtype, bandwidth and cache sizes, from hardware_json."""
    n = len(df)
    out = pd.DataFrame({"peak_gflops": np.full(n, np.nan), "mem_bw_gbs": np.full(n, np.nan),
                        "l2_kib": np.full(n, np.nan), "llc_kib": np.full(n, np.nan)}, index=df.index)
    if "hardware_json" not in df:
        return out
    for spec_json, spec in device_specs(df["hardware_json"]).items():
        rows = df["hardware_json"] == spec_json
        peaks = spec.get("peak_gflops", {})
        out.loc[rows, "peak_gflops"] = dtypes[rows].map(lambda d, p=peaks: p.get(d, np.nan)).astype(float)
        out.loc[rows, "mem_bw_gbs"] = spec.get("mem_bw_gbs", np.nan)
        caches = spec.get("caches_kib") or {}
        out.loc[rows, "l2_kib"] = caches.get("l2", spec.get("l2_cache_kib", np.nan))
        out.loc[rows, "llc_kib"] = max(caches.values()) if caches else spec.get("l2_cache_kib", np.nan)
    return out


def _column(df: pd.DataFrame, name: str, default: Any) -> pd.Series:
    return df[name] if name in df else pd.Series(default, index=df.index)


def _size(col: pd.Series, name: str) -> pd.Series:
    """A GEMM size column as floats; a value that is not a finite number > 0 (text, NaN, inf, 0)
    is a one-line error naming the column and value."""
    values = pd.to_numeric(col, errors="coerce").astype(float)
    bad = ~(np.isfinite(values) & (values > 0))
    if bad.any():
        value = col[bad].iloc[0]
        shown = repr(python_scalar(value))
        raise InvalidInputError(f"`{name} > 0` must hold for GEMM features (a finite number), but got "
                                f"{name}={shown} (column workload.{name}, row {col.index[bad.to_numpy()][0]!r})")
    return values


def gemm_features(df: pd.DataFrame) -> pd.DataFrame:
    """Numeric features for each GEMM row (``workload.m/n/k`` required; b, dtype, ... optional)."""
    missing = [c for c in ("workload.m", "workload.n", "workload.k") if c not in df]
    if missing:
        raise InvalidInputError(f"GEMM features need columns {missing}, which the table lacks")
    m, n, k = (_size(df[f"workload.{name}"], name) for name in ("m", "n", "k"))
    b = _size(_column(df, "workload.b", 1).fillna(1), "b")
    dtype = _column(df, "workload.dtype", "fp32").fillna("fp32").astype(str)
    unknown = sorted(set(dtype) - set(DTYPE_BYTES))
    if unknown:
        raise InvalidInputError(f"`dtype` must be one of {tuple(DTYPE_BYTES)}, but got {unknown[0]!r}")
    dbytes = dtype.map(DTYPE_BYTES).astype(float)
    flop = flops(b, m, n, k)
    nbytes = min_bytes(b, m, n, k, dbytes)
    hw = _hardware_columns(df, dtype)

    feats = pd.DataFrame(index=df.index)
    for name, col in (("m", m), ("n", n), ("k", k), ("b", b)):
        feats[f"log2_{name}"] = np.log2(col)
    feats["log2_flops"] = np.log2(flop)
    feats["log2_bytes"] = np.log2(nbytes)
    feats["log2_intensity"] = feats["log2_flops"] - feats["log2_bytes"]
    # Each operand's size: skinny GEMMs are limited by whichever matrix streams from memory.
    feats["log2_a_bytes"] = np.log2(m * k * dbytes * b)
    feats["log2_b_bytes"] = np.log2(k * n * dbytes * b)
    feats["log2_c_bytes"] = np.log2(m * n * dbytes * b)
    feats["log2_min_dim"] = np.log2(np.minimum(np.minimum(m, n), k))
    feats["log2_max_dim"] = np.log2(np.maximum(np.maximum(m, n), k))
    feats["dtype_bytes"] = dbytes
    for d in DTYPE_BYTES:
        feats[f"is_{d}"] = (dtype == d).astype(float)
    feats["trans_a"] = _column(df, "workload.trans_a", False).fillna(False).astype(float)
    feats["trans_b"] = _column(df, "workload.trans_b", False).fillna(False).astype(float)
    feats["threads"] = _column(df, "config.threads", np.nan).astype(float)
    for name, col in (("m", m), ("n", n), ("k", k)):
        feats[f"align_{name}"] = pow2_alignment(col.astype(np.int64))
        for tile in PAD_TILES:
            feats[f"pad_eff_{name}_{tile}"] = padding_efficiency(col, tile)
    # Working set against the caches: where a GEMM falls out of L2/LLC its speed changes regime.
    feats["log2_bytes_per_l2"] = np.log2(nbytes / (hw["l2_kib"] * 1024))
    feats["log2_bytes_per_llc"] = np.log2(nbytes / (hw["llc_kib"] * 1024))
    feats["log2_peak_gflops"] = np.log2(hw["peak_gflops"])
    feats["log2_mem_bw_gbs"] = np.log2(hw["mem_bw_gbs"])
    compute_ms = flop / (hw["peak_gflops"] * 1e6)
    memory_ms = nbytes / (hw["mem_bw_gbs"] * 1e6)
    feats["log2_roofline_ms"] = np.log2(np.maximum(compute_ms, memory_ms))
    feats["log2_compute_ms"] = np.log2(compute_ms)
    feats["log2_memory_ms"] = np.log2(memory_ms)
    return feats


def gemm_roofline_ms(df: pd.DataFrame) -> np.ndarray:
    """Plain roofline prediction (ms) for each row; NaN where the peaks are unknown."""
    return np.exp2(gemm_features(df)["log2_roofline_ms"].to_numpy())


def config_frame(configs: list[dict[str, Any]], hardware: dict[str, Any] | None = None) -> pd.DataFrame:
    """Rows in the Measurement column layout from plain config dicts (for one-off predictions)."""
    rows = []
    for cfg in configs:
        row: dict[str, Any] = {}
        for key, value in cfg.items():
            if key in ("b", "m", "n", "k", "dtype", "trans_a", "trans_b"):
                row[f"workload.{key}"] = value
            else:
                row[f"config.{key}"] = value
        if hardware is not None:
            row["hardware_json"] = json.dumps(hardware, sort_keys=True)
            row["hardware_id"] = hardware.get("hardware_id")
        rows.append(row)
    return pd.DataFrame(rows)
