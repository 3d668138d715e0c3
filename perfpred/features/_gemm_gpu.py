"""GEMM features for models that span GPUs: the roofline of ``gemm_features`` plus waves and tiles.

A GPU GEMM runs as a grid of output tiles, one per thread block, in waves of (number of SMs)
blocks. Its time is roughly (waves, rounded up) x (time of one tile on one SM), so shapes whose
tile count is just above a multiple of the SM count waste most of a wave, and a GPU with more
SMs needs a bigger GEMM to fill up. The library picks the tile size, which a model cannot know
in advance, so the features cover the common sgemm/hgemm tiles of :data:`TILES`, and the
analytic time is the best of them (the library's heuristic aims for that choice too).

Pure functions of the rows (no fitted state, no I/O). Everything is relative where it can be
(waves per SM, time over the roofline), which is what lets a model trained on some GPUs carry
to another one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from perfpred.features._gemm import gemm_features
from perfpred.features._kernel import hardware_features

# (rows, columns) of the output tile one thread block computes: cuBLAS/CUTLASS sgemm and
# tensor-core kernels use these sizes (names like "sgemm_128x64", "volta_sgemm_32x128").
TILES = ((32, 32), (64, 32), (64, 64), (128, 64), (128, 128), (256, 128))
LAUNCH_FLOOR_MS = 0.005  # a kernel launch and its first wave take a few microseconds whatever the GPU


def gpu_gemm_features(df: pd.DataFrame) -> pd.DataFrame:
    """``gemm_features`` plus SM-relative tile/wave features and ``log2_wave_roofline_ms``."""
    feats = gemm_features(df)
    dtype = df["workload.dtype"].fillna("fp32").astype(str) if "workload.dtype" in df else pd.Series(
        "fp32", index=df.index)
    hw = hardware_features(df, dtype)
    b = (df["workload.b"].fillna(1) if "workload.b" in df else pd.Series(1.0, index=df.index)).to_numpy(float)
    m, n, k = (df[f"workload.{d}"].to_numpy(float) for d in "mnk")
    sm = hw["hw_sm_count"].to_numpy()
    peak = np.exp2(hw["hw_log2_peak_gflops"].to_numpy())
    memory_ms = np.exp2(feats["log2_memory_ms"].to_numpy())
    out: dict[str, np.ndarray] = {
        "hw_log2_sm_count": np.log2(sm),
        "hw_log2_peak_per_sm": np.log2(peak / sm),
        "hw_log2_flop_per_byte": hw["hw_log2_flop_per_byte"].to_numpy(),
        "hw_log2_l2_kib": hw["hw_log2_l2_kib"].to_numpy(),
    }
    best = np.full(len(df), np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        for tm, tn in TILES:
            tiles = b * np.ceil(m / tm) * np.ceil(n / tn)
            waves = tiles / sm
            full_waves = np.ceil(waves)
            tile_ms = 2.0 * tm * tn * k / (peak / sm * 1e6)
            wave_ms = full_waves * tile_ms
            out[f"log2_waves_{tm}x{tn}"] = np.log2(waves)
            out[f"wave_eff_{tm}x{tn}"] = waves / full_waves
            out[f"log2_wave_ms_{tm}x{tn}"] = np.log2(wave_ms)
            best = np.fmin(best, wave_ms)
        best = np.where(np.isfinite(best), best, np.nan)  # no SM count (not a GPU): unknown, not infinite
        bound = np.maximum(np.maximum(best, memory_ms), LAUNCH_FLOOR_MS)
        out["log2_wave_compute_ms"] = np.log2(best)
        out["log2_wave_roofline_ms"] = np.log2(bound)
        out["log2_roofline_over_floor"] = feats["log2_roofline_ms"].to_numpy() - np.log2(LAUNCH_FLOOR_MS)
        out["log2_wave_over_roofline"] = np.log2(bound) - feats["log2_roofline_ms"].to_numpy()
    extra = pd.DataFrame(out, index=df.index)
    return pd.concat([feats.drop(columns=[c for c in extra.columns if c in feats]), extra], axis=1)


# Columns that name the GPU rather than describe the work on it: with a handful of training GPUs
# a tree splits on these to memorise each GPU's level, which then lands an unseen GPU on its
# nearest neighbour's. Spec sheets still enter through the times and waves computed from them.
GPU_IDENTITY_FEATURES = ("hw_log2_sm_count", "hw_log2_peak_per_sm", "hw_log2_flop_per_byte", "hw_log2_l2_kib",
                         "log2_peak_gflops", "log2_mem_bw_gbs", "log2_bytes_per_l2", "log2_bytes_per_llc")


def gpu_gemm_transfer_features(df: pd.DataFrame) -> pd.DataFrame:
    """``gpu_gemm_features`` for a model meant to predict GPUs it never saw: without the
    :data:`GPU_IDENTITY_FEATURES`, plus the intensity relative to the GPU's ridge point.

    On NeuSight's five GPUs (leave one GPU out) this cut the mean per-kernel MAPE from 33% to
    26% and the worst from 55% to 35% (``benchmarks/accuracy.py``).
    """
    feats = gpu_gemm_features(df)
    feats["log2_intensity_over_ridge"] = feats["log2_intensity"] - feats["hw_log2_flop_per_byte"]
    return feats.drop(columns=[c for c in GPU_IDENTITY_FEATURES if c in feats])
