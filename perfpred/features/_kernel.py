"""Features of tunable kernels: the tuning parameters, quantities derived from them, and the GPU.

A ``kind="kernel"`` Measurement carries its tuning parameters as ``config.<PARAM>`` columns
(Kernel Tuner caches, UCI SGEMM), its problem as ``workload.*`` (``problem_size_x/y/z``,
``m/n/k``) and its GPU as ``hardware_json``. :func:`kernel_features` turns such rows into
numbers, with no fitted state and no I/O (a row's features never depend on other rows):

- ``p_<PARAM>``: every ``config.*`` column as a number (booleans as 0/1, text as a stable
  hash code), and ``log2_p_<PARAM>`` (zero and negatives map to -1), which makes the
  products of power-of-two tile sizes additive for linear layers and MLPs;
- ``pow2_p_<PARAM>``: 1 where the value is a power of two (1, 2, 4, ...), else 0. Compilers
  turn index arithmetic over power-of-two sizes into shifts and masks and unroll and vectorise
  such loops fully; on the Kernel Tuner convolution spaces a power-of-two ``block_size_x`` with
  a tile of 1, 2 or 4 runs 10-50x faster on the AMD W6600 than its neighbours 48, 80, 96
  (a cliff trees carve out of a numeric axis only with many splits);
- ``d_<name>``: the derived quantities of :data:`DERIVED_FEATURES`, a table of documented
  rules that apply when the parameters they need are present (the CLBlast/CLTune GEMM
  names ``MWG, NWG, ...``, the Kernel Tuner names ``block_size_x, tile_size_x, ...`` and the
  Triton names ``BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages``),
  plus ``log2_d_<name>`` and ``pow2_d_<name>`` for multiplicative ones;
- ``hw_*``: peak FLOP/s, DRAM bandwidth, SM count, L2 size and clock of the row's GPU, so
  one model can span GPUs; ``d_waves`` (work-groups per SM) where both are known;
- ``log2_roofline_ms``: the analytic lower bound on the time from :data:`ANALYTIC_WORK`
  (FLOPs and compulsory bytes of known kernels against the GPU's peaks); NaN where the
  kernel's work is not known, in which case ``PerformanceModel`` fits the time directly.

:func:`kernel_occupancy_features` (``PerformanceModel(kind="kernel-occupancy")``) adds the
occupancy on the row's GPU where its per-SM limits are known (:func:`occupancy_features`).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from perfpred.errors import InvalidInputError
from perfpred.features._gemm import is_power_of_two
from perfpred.features._gemm_access import gemm_access_features
from perfpred.features._specs import device_specs, sm_limits

CONFIG_PREFIX = "config."
WARP = 32  # threads per warp (NVIDIA); AMD wave64 GPUs still schedule in multiples of 32
DEFAULT_ELEMENT_BYTES = 4.0  # fp32, the precision of every recorded tunable-kernel space

_Params = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class DerivedFeature:
    """``d_<name> = formula(params)`` for rows whose kernel has every parameter in ``needs``.

    ``params`` maps parameter names (and ``_m, _n, _k, _px, _py, _bytes``: problem size and
    element size, NaN where unknown) to float arrays. ``log`` adds ``log2_d_<name>``.
    """

    name: str
    needs: tuple[str, ...]
    formula: Callable[[_Params], np.ndarray]
    doc: str
    log: bool = True


def _ceil_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.ceil(a / b)


def _threads(p: _Params) -> np.ndarray:
    return p["block_size_x"] * p.get("block_size_y", 1.0) * p.get("block_size_z", 1.0)


# The rules. GEMM names are CLBlast's Xgemm / CLTune's gemm_fast (UCI SGEMM, Kernel Tuner hub):
# MWG x NWG is the C tile of a work-group, KWG its k step, MDIMC x NDIMC its threads, MDIMA/NDIMB
# the thread layouts for loading A/B, VWM/VWN vector widths, SA/SB "cache A/B in local memory".
DERIVED_FEATURES: tuple[DerivedFeature, ...] = (
    DerivedFeature("wg_threads", ("MDIMC", "NDIMC"), lambda p: p["MDIMC"] * p["NDIMC"],
                   "threads per work-group"),
    DerivedFeature("tile_area", ("MWG", "NWG"), lambda p: p["MWG"] * p["NWG"],
                   "elements of C one work-group computes"),
    DerivedFeature("tile_volume", ("MWG", "NWG", "KWG"), lambda p: p["MWG"] * p["NWG"] * p["KWG"],
                   "multiply-adds of one work-group per k step"),
    DerivedFeature("mwi", ("MWG", "MDIMC"), lambda p: p["MWG"] / p["MDIMC"], "rows of C per thread"),
    DerivedFeature("nwi", ("NWG", "NDIMC"), lambda p: p["NWG"] / p["NDIMC"], "columns of C per thread"),
    DerivedFeature("work_per_thread", ("MWG", "NWG", "MDIMC", "NDIMC"),
                   lambda p: p["MWG"] * p["NWG"] / (p["MDIMC"] * p["NDIMC"]),
                   "accumulators per thread (register pressure, instruction-level parallelism)"),
    DerivedFeature("registers", ("MWG", "NWG", "MDIMC", "NDIMC"),
                   lambda p: (p["MWG"] / p["MDIMC"]) * (p["NWG"] / p["NDIMC"]) + p["MWG"] / p["MDIMC"]
                   + p["NWG"] / p["NDIMC"],
                   "registers of the accumulator tile plus one A column and one B row"),
    DerivedFeature("thread_tile_aspect", ("MWG", "NWG", "MDIMC", "NDIMC"),
                   lambda p: (p["MWG"] / p["MDIMC"]) / (p["NWG"] / p["NDIMC"]), "mwi / nwi"),
    DerivedFeature("wg_aspect", ("MWG", "NWG"), lambda p: p["MWG"] / p["NWG"], "MWG / NWG"),
    DerivedFeature("tile_intensity", ("MWG", "NWG"), lambda p: p["MWG"] * p["NWG"] / (p["MWG"] + p["NWG"]),
                   "multiply-adds per element loaded from global memory (per k)"),
    DerivedFeature("kdima", ("MDIMC", "NDIMC", "MDIMA"), lambda p: p["MDIMC"] * p["NDIMC"] / p["MDIMA"],
                   "k extent of the thread layout that loads A"),
    DerivedFeature("kdimb", ("MDIMC", "NDIMC", "NDIMB"), lambda p: p["MDIMC"] * p["NDIMC"] / p["NDIMB"],
                   "k extent of the thread layout that loads B"),
    DerivedFeature("a_loads_per_thread", ("MWG", "KWG", "MDIMC", "NDIMC"),
                   lambda p: p["MWG"] * p["KWG"] / (p["MDIMC"] * p["NDIMC"]),
                   "elements of A each thread loads per k step"),
    DerivedFeature("b_loads_per_thread", ("NWG", "KWG", "MDIMC", "NDIMC"),
                   lambda p: p["NWG"] * p["KWG"] / (p["MDIMC"] * p["NDIMC"]),
                   "elements of B each thread loads per k step"),
    DerivedFeature("a_vector_loads", ("MWG", "MDIMA", "VWM"), lambda p: p["MWG"] / (p["MDIMA"] * p["VWM"]),
                   "vector loads of A per thread row"),
    DerivedFeature("b_vector_loads", ("NWG", "NDIMB", "VWN"), lambda p: p["NWG"] / (p["NDIMB"] * p["VWN"]),
                   "vector loads of B per thread column"),
    DerivedFeature("m_vector_ops", ("MWG", "MDIMC", "VWM"), lambda p: p["MWG"] / (p["MDIMC"] * p["VWM"]),
                   "vector operations per thread along m"),
    DerivedFeature("n_vector_ops", ("NWG", "NDIMC", "VWN"), lambda p: p["NWG"] / (p["NDIMC"] * p["VWN"]),
                   "vector operations per thread along n"),
    DerivedFeature("vector_area", ("VWM", "VWN"), lambda p: p["VWM"] * p["VWN"], "VWM * VWN"),
    DerivedFeature("local_mem_bytes", ("MWG", "NWG", "KWG", "SA", "SB"),
                   lambda p: (p["SA"] * p["MWG"] + p["SB"] * p["NWG"]) * p["KWG"] * p["_bytes"],
                   "local (shared) memory per work-group: the cached A and B tiles", log=False),
    DerivedFeature("local_mem_flags", ("SA", "SB"), lambda p: 2 * p["SA"] + p["SB"],
                   "which operands go through local memory (0..3)", log=False),
    DerivedFeature("stride_flags", ("STRM", "STRN"), lambda p: 2 * p["STRM"] + p["STRN"],
                   "strided (1) or contiguous (0) thread access along m and n (0..3)", log=False),
    DerivedFeature("k_unroll_steps", ("KWG", "KWI"), lambda p: p["KWG"] / p["KWI"],
                   "inner-loop iterations per k step"),
    DerivedFeature("gemm_workgroups", ("MWG", "NWG"),
                   lambda p: _ceil_div(p["_m"], p["MWG"]) * _ceil_div(p["_n"], p["NWG"]),
                   "work-groups launched for the problem (m x n)"),
    # Kernel Tuner naming (convolution, dedispersion, stencils, ...).
    DerivedFeature("block_threads", ("block_size_x",), _threads, "threads per block"),
    DerivedFeature("warp_efficiency", ("block_size_x",),
                   lambda p: _threads(p) / (WARP * np.ceil(_threads(p) / WARP)),
                   "useful fraction of the warps a block occupies", log=False),
    DerivedFeature("x_coalescing", ("block_size_x",),
                   lambda p: p["block_size_x"] / (WARP * np.ceil(p["block_size_x"] / WARP)),
                   "useful fraction of the 32-wide rows a block's x extent covers", log=False),
    DerivedFeature("tile_work", ("tile_size_x",),
                   lambda p: p["tile_size_x"] * p.get("tile_size_y", 1.0) * p.get("tile_size_z", 1.0),
                   "outputs per thread"),
    DerivedFeature("out_tile_x", ("block_size_x", "tile_size_x"), lambda p: p["block_size_x"] * p["tile_size_x"],
                   "outputs per block along x"),
    DerivedFeature("out_tile_y", ("block_size_y", "tile_size_y"), lambda p: p["block_size_y"] * p["tile_size_y"],
                   "outputs per block along y"),
    DerivedFeature("out_tile_area", ("block_size_x", "block_size_y", "tile_size_x", "tile_size_y"),
                   lambda p: p["block_size_x"] * p["tile_size_x"] * p["block_size_y"] * p["tile_size_y"],
                   "outputs per block"),
    DerivedFeature("grid_blocks", ("block_size_x", "block_size_y", "tile_size_x", "tile_size_y"),
                   lambda p: _ceil_div(p["_px"], p["block_size_x"] * p["tile_size_x"])
                   * _ceil_div(p["_py"], p["block_size_y"] * p["tile_size_y"]),
                   "blocks launched for the problem (problem_size_x x problem_size_y)"),
    DerivedFeature("tail_efficiency", ("block_size_x", "block_size_y", "tile_size_x", "tile_size_y"),
                   lambda p: p["_px"] * p["_py"] / (
                       _ceil_div(p["_px"], p["block_size_x"] * p["tile_size_x"]) * p["block_size_x"] * p["tile_size_x"]
                       * _ceil_div(p["_py"], p["block_size_y"] * p["tile_size_y"]) * p["block_size_y"]
                       * p["tile_size_y"]),
                   "useful fraction of the padded output grid", log=False),
    DerivedFeature("input_tile_elems", ("block_size_x", "block_size_y", "tile_size_x", "tile_size_y",
                                        "filter_width", "filter_height"),
                   lambda p: (p["block_size_x"] * p["tile_size_x"] + p["filter_width"] - 1)
                   * (p["block_size_y"] * p["tile_size_y"] + p["filter_height"] - 1),
                   "input elements (with halo) one block reads"),
    DerivedFeature("halo_ratio", ("block_size_x", "block_size_y", "tile_size_x", "tile_size_y",
                                  "filter_width", "filter_height"),
                   lambda p: (p["block_size_x"] * p["tile_size_x"] + p["filter_width"] - 1)
                   * (p["block_size_y"] * p["tile_size_y"] + p["filter_height"] - 1)
                   / (p["block_size_x"] * p["tile_size_x"] * p["block_size_y"] * p["tile_size_y"]),
                   "input elements read per output (halo overhead)"),
    DerivedFeature("shared_mem_bytes", ("block_size_x", "block_size_y", "tile_size_x", "tile_size_y",
                                        "filter_width", "filter_height", "use_shmem"),
                   lambda p: p["use_shmem"] * (p["block_size_x"] * p["tile_size_x"] + p["filter_width"] - 1)
                   * (p["block_size_y"] * p["tile_size_y"] + p["filter_height"] - 1) * p["_bytes"],
                   "shared memory per block when the input tile is staged there", log=False),
    DerivedFeature("strided_tiles", ("tile_stride_x", "tile_stride_y"),
                   lambda p: 2 * p["tile_stride_x"] + p["tile_stride_y"],
                   "strided (1) or contiguous (0) tiles along x and y (0..3)", log=False),
    # Triton naming (the tutorial matmul: BLOCK_M/N/K tiles, num_warps, num_stages pipelining).
    DerivedFeature("programs", ("BLOCK_M", "BLOCK_N"),
                   lambda p: _ceil_div(p["_m"], p["BLOCK_M"]) * _ceil_div(p["_n"], p["BLOCK_N"]),
                   "programs (thread blocks) launched for the m x n output"),
    DerivedFeature("block_tile_intensity", ("BLOCK_M", "BLOCK_N"),
                   lambda p: p["BLOCK_M"] * p["BLOCK_N"] / (p["BLOCK_M"] + p["BLOCK_N"]),
                   "multiply-adds per loaded element of each k step: the tile's data reuse"),
    DerivedFeature("program_threads", ("num_warps",), lambda p: WARP * p["num_warps"], "threads per program"),
    DerivedFeature("accumulators_per_thread", ("BLOCK_M", "BLOCK_N", "num_warps"),
                   lambda p: p["BLOCK_M"] * p["BLOCK_N"] / (WARP * p["num_warps"]),
                   "fp32 accumulators each thread holds (register pressure)"),
    DerivedFeature("pipeline_smem_bytes", ("BLOCK_M", "BLOCK_N", "BLOCK_K", "num_stages"),
                   lambda p: p["num_stages"] * (p["BLOCK_M"] + p["BLOCK_N"]) * p["BLOCK_K"] * p["_bytes"],
                   "shared memory of the software pipeline: num_stages A and B tiles in flight"),
    DerivedFeature("k_steps", ("BLOCK_K",), lambda p: _ceil_div(p["_k"], p["BLOCK_K"]),
                   "iterations of the k loop"),
)


@dataclass(frozen=True)
class AnalyticWork:
    """FLOPs and compulsory DRAM bytes of a kernel family, for the roofline bound."""

    name: str
    needs: tuple[str, ...]
    flops: Callable[[_Params], np.ndarray]
    bytes: Callable[[_Params], np.ndarray]
    doc: str


# Checked in order; the first whose ``needs`` are present (and finite for a row) gives the row's bound.
ANALYTIC_WORK: tuple[AnalyticWork, ...] = (
    AnalyticWork("gemm", ("MWG", "NWG"), lambda p: 2.0 * p["_m"] * p["_n"] * p["_k"],
                 lambda p: p["_bytes"] * (p["_m"] * p["_k"] + p["_k"] * p["_n"] + p["_m"] * p["_n"]),
                 "C = A B: 2mnk FLOPs, A, B read and C written once"),
    AnalyticWork("gemm (Triton naming)", ("BLOCK_M", "BLOCK_N"), lambda p: 2.0 * p["_m"] * p["_n"] * p["_k"],
                 lambda p: p["_bytes"] * (p["_m"] * p["_k"] + p["_k"] * p["_n"] + p["_m"] * p["_n"]),
                 "C = A B: 2mnk FLOPs, A, B read and C written once"),
    AnalyticWork("convolution", ("filter_width", "filter_height"),
                 lambda p: 2.0 * p["_px"] * p["_py"] * p["filter_width"] * p["filter_height"],
                 lambda p: p["_bytes"] * ((p["_px"] + p["filter_width"] - 1) * (p["_py"] + p["filter_height"] - 1)
                                          + p["_px"] * p["_py"]),
                 "2D convolution of a px x py image: 2 px py fw fh FLOPs, padded input read, output written"),
)


def _numeric(col: pd.Series) -> np.ndarray:
    """A config column as floats: numbers as they are, booleans 0/1, text a stable hash code."""
    if col.dtype == bool or col.dtype.kind in "iuf":
        return col.to_numpy(dtype=float, copy=True)
    mapping: dict[Any, float] = {}
    for value in pd.unique(col.dropna()):
        if isinstance(value, (bool, np.bool_, int, float, np.number)):
            mapping[value] = float(value)
            continue
        try:
            mapping[value] = float(value)  # numbers written as text ("32")
        except (TypeError, ValueError):
            mapping[value] = float(zlib.crc32(str(value).encode()) % 1_000_003)
    return col.map(mapping).to_numpy(dtype=float, copy=True)


def _log2_param(x: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x > 0, np.log2(np.where(x > 0, x, 1.0)), np.where(np.isnan(x), np.nan, -1.0))


def _workload(df: pd.DataFrame, name: str) -> np.ndarray:
    col = f"workload.{name}"
    return pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float) if col in df else np.full(len(df), np.nan)


_DTYPE_BYTES = {"fp64": 8.0, "fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "float64": 8.0, "float32": 4.0,
                "float16": 2.0, "bfloat16": 2.0}
_PRECISION_DTYPE = {64: "fp64", 32: "fp32", 16: "fp16"}


def _dtypes(df: pd.DataFrame, params: dict[str, np.ndarray]) -> pd.Series:
    """Element type of each row: ``workload.dtype``, else the ``PRECISION`` parameter (bits), else fp32."""
    dtype = pd.Series("fp32", index=df.index, dtype=object)
    if "PRECISION" in params:
        bits = params["PRECISION"]
        known = np.isin(bits, list(_PRECISION_DTYPE))
        dtype[known] = [_PRECISION_DTYPE[int(b)] for b in bits[known]]
    if "workload.dtype" in df:
        given = df["workload.dtype"].notna()
        dtype[given] = df.loc[given, "workload.dtype"].astype(str)
    return dtype


def hardware_features(df: pd.DataFrame, dtypes: pd.Series | None = None) -> pd.DataFrame:
    """``hw_*`` columns from each row's ``hardware_json`` (NaN where a fact is unknown).

    ``dtypes`` picks the peak of each row's element type (default fp32).
    """
    n = len(df)
    names = ("hw_log2_peak_gflops", "hw_log2_mem_bw_gbs", "hw_sm_count", "hw_log2_l2_kib", "hw_clock_mhz",
             "hw_log2_flop_per_byte")
    out = pd.DataFrame({c: np.full(n, np.nan) for c in names}, index=df.index)
    if "hardware_json" not in df:
        return out
    dtypes = dtypes if dtypes is not None else pd.Series("fp32", index=df.index)
    specs = df["hardware_json"]
    for spec_json, spec in device_specs(specs).items():
        rows = (specs == spec_json).to_numpy()
        peaks = spec.get("peak_gflops") or {}
        if not isinstance(peaks, dict):
            peaks = {"fp32": peaks}
        peak = dtypes[rows].map(lambda d, peaks=peaks: peaks.get(d, peaks.get("fp32", np.nan))).astype(float)
        caches = spec.get("caches_kib") or {}
        l2 = caches.get("l2", spec.get("l2_cache_kib", np.nan))
        with np.errstate(divide="ignore", invalid="ignore"):
            out.loc[rows, "hw_log2_peak_gflops"] = np.log2(peak.to_numpy())
            out.loc[rows, "hw_log2_mem_bw_gbs"] = np.log2(float(spec.get("mem_bw_gbs", np.nan)))
            out.loc[rows, "hw_sm_count"] = float(spec.get("sm_count", np.nan))
            out.loc[rows, "hw_log2_l2_kib"] = np.log2(float(l2))
            out.loc[rows, "hw_clock_mhz"] = float(spec.get("clock_mhz", np.nan))
    out["hw_log2_flop_per_byte"] = out["hw_log2_peak_gflops"] - out["hw_log2_mem_bw_gbs"]
    return out


def _launched(feats: pd.DataFrame) -> pd.Series | None:
    """Thread blocks (work-groups, programs) a row launches, under whichever naming its kernel uses."""
    for name in ("d_gemm_workgroups", "d_grid_blocks", "d_programs"):
        if name in feats:
            return feats[name]
    return None


def kernel_features(df: pd.DataFrame) -> pd.DataFrame:
    """Numeric features of each tunable-kernel row (any ``config.*`` columns; see the module doc)."""
    params_cols = [c for c in df.columns if c.startswith(CONFIG_PREFIX)]
    if not params_cols:
        raise InvalidInputError("kernel features need at least one 'config.*' column, but the table has none")
    params = {c[len(CONFIG_PREFIX):]: _numeric(df[c]) for c in params_cols}
    dtypes = _dtypes(df, params)
    unknown = sorted(set(dtypes) - set(_DTYPE_BYTES))
    if unknown:
        raise InvalidInputError(f"`dtype` must be one of {tuple(_DTYPE_BYTES)}, but got {unknown[0]!r}")
    px, py, pz = (_workload(df, f"problem_size_{axis}") for axis in "xyz")
    m, n, k = _workload(df, "m"), _workload(df, "n"), _workload(df, "k")
    if "MWG" in params:  # Kernel Tuner's Xgemm caches give the (square) GEMM as problem_size only
        m = np.where(np.isnan(m), px, m)
        n = np.where(np.isnan(n), np.where(np.isnan(py), px, py), n)
        k = np.where(np.isnan(k), px, k)
    context = {**params, "_m": m, "_n": n, "_k": k, "_px": np.where(np.isnan(px), m, px),
               "_py": np.where(np.isnan(py), n, py), "_bytes": dtypes.map(_DTYPE_BYTES).to_numpy(dtype=float)}

    cols: dict[str, np.ndarray] = {}
    for name, values in params.items():
        cols[f"p_{name}"] = values
        cols[f"log2_p_{name}"] = _log2_param(values)
        cols[f"pow2_p_{name}"] = is_power_of_two(values)
    for name, values in (("m", m), ("n", n), ("k", k), ("x", px), ("y", py), ("z", pz)):
        cols[f"log2_problem_{name}"] = _log2_param(values)
    cols["element_bytes"] = context["_bytes"]
    with np.errstate(divide="ignore", invalid="ignore"):
        for rule in DERIVED_FEATURES:
            if all(p in params for p in rule.needs):
                values = np.asarray(rule.formula(context), dtype=float)
                cols[f"d_{rule.name}"] = values
                if rule.log:
                    cols[f"log2_d_{rule.name}"] = _log2_param(values)
                    cols[f"pow2_d_{rule.name}"] = is_power_of_two(values)
    feats = pd.DataFrame(cols, index=df.index)
    hw = hardware_features(df, dtypes)
    feats = pd.concat([feats, hw], axis=1)
    sm = hw["hw_sm_count"].to_numpy()
    launched = _launched(feats)
    feats["d_waves"] = launched.to_numpy() / sm if launched is not None else np.nan
    feats["log2_d_waves"] = _log2_param(feats["d_waves"].to_numpy())
    feats["log2_roofline_ms"] = _roofline(context, params, hw)
    return feats


def kernel_occupancy_features(df: pd.DataFrame) -> pd.DataFrame:
    """:func:`kernel_features` plus :func:`occupancy_features` and, for the CLBlast Xgemm
    parameters, the warps' bank conflicts and sector use (:func:`gemm_access_features`).

    Opt-in (``PerformanceModel(kind="kernel-occupancy")``): from 2,000 UCI SGEMM rows (GTX 680,
    where Kepler's 63 registers a thread make large thread tiles spill) the occupancy took XGBoost
    from 9.68% to 9.05% MAPE, while on the Kernel Tuner GEMM grid blends (RTX 3090, 80/20 split) it
    moved the error from 1.48% to 1.51%: with most of a space measured, the neighbours already say
    it. The access columns then took the 4-fold CV MAPE of the UCI candidates down again (tuned
    XGBoost 9.90% -> 9.11%, the four-kernel GP 8.03% -> 7.46%).
    """
    feats = kernel_features(df)
    params = {c[len(CONFIG_PREFIX):]: _numeric(df[c]) for c in df.columns if c.startswith(CONFIG_PREFIX)}
    access = gemm_access_features(params, index=df.index)
    return pd.concat([feats, occupancy_features(df, feats), access], axis=1)


# Registers a CLBlast-style GEMM thread holds beyond its accumulator tile and operand vectors
# (indices, pointers, loop counters): a rough constant; the estimate orders configs, it does not
# predict the compiler's count. On UCI SGEMM from 2,000 rows, 10, 20 or 30 gave the same error.
GEMM_REGISTER_OVERHEAD = 20.0


def _limits_per_row(df: pd.DataFrame) -> pd.DataFrame:
    names = ("max_threads_per_sm", "max_blocks_per_sm", "shared_kib_per_sm", "registers_per_sm",
             "max_registers_per_thread")
    out = pd.DataFrame({c: np.full(len(df), np.nan) for c in names}, index=df.index)
    if "hardware_json" not in df:
        return out
    specs = df["hardware_json"]
    for spec_json, spec in device_specs(specs).items():
        limits = sm_limits(spec)
        if limits:
            rows = (specs == spec_json).to_numpy()
            for name in names:
                out.loc[rows, name] = limits.get(name, np.nan)
    return out


def occupancy_features(df: pd.DataFrame, feats: pd.DataFrame) -> pd.DataFrame:
    """How many work-groups fit on one SM of the row's GPU, and what that does to the launch.

    Uses the threads per work-group (``d_wg_threads`` / ``d_block_threads``), its shared memory
    where the kernel's parameters say it (``d_local_mem_bytes`` / ``d_shared_mem_bytes`` /
    ``d_pipeline_smem_bytes``) and, for
    the CLBlast GEMM, the per-thread register estimate ``d_registers`` plus
    :data:`GEMM_REGISTER_OVERHEAD`, against the GPU's per-SM limits (``sm_limits``; NaN where
    they are unknown, e.g. AMD GPUs). Kepler's 63 registers a thread make large thread tiles
    spill on the GTX 680 (UCI SGEMM), and resident work-groups set how many waves the launch
    takes and how full its last wave is. Empty when the kernel's threads per work-group are not
    known.
    """
    threads_col = next((c for c in ("d_wg_threads", "d_block_threads", "d_program_threads") if c in feats), None)
    if threads_col is None:
        return pd.DataFrame(index=df.index)
    lim = _limits_per_row(df)
    threads = feats[threads_col].to_numpy(dtype=float)
    smem_col = next((c for c in ("d_local_mem_bytes", "d_shared_mem_bytes", "d_pipeline_smem_bytes") if c in feats),
                    None)
    smem = feats[smem_col].to_numpy(dtype=float) if smem_col else np.zeros(len(df))
    regs = (feats["d_registers"].to_numpy(dtype=float) + GEMM_REGISTER_OVERHEAD if "d_registers" in feats
            else np.full(len(df), np.nan))
    max_regs = lim["max_registers_per_thread"].to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        by_smem = np.where(smem > 0, np.floor(lim["shared_kib_per_sm"].to_numpy() * 1024 / smem), np.inf)
        by_regs = np.where(np.isnan(regs), np.inf,
                           np.floor(lim["registers_per_sm"].to_numpy() / (threads * np.fmin(regs, max_regs))))
        blocks = np.minimum.reduce([np.floor(lim["max_threads_per_sm"].to_numpy() / threads),
                                    lim["max_blocks_per_sm"].to_numpy(), by_smem, by_regs])
        launched = _launched(feats)
        launched = launched.to_numpy(dtype=float) if launched is not None else np.full(len(df), np.nan)
        waves = np.where(blocks > 0, launched / (feats["hw_sm_count"].to_numpy(dtype=float) * blocks), np.nan)
        out = pd.DataFrame({
            "d_blocks_per_sm": blocks,
            "d_occupancy": blocks * threads / lim["max_threads_per_sm"].to_numpy(),
            "d_register_spill": np.where(np.isnan(regs) | np.isnan(max_regs), np.nan, np.maximum(regs - max_regs, 0)),
            "d_resident_waves": waves,
            "log2_d_resident_waves": _log2_param(waves),
            "d_wave_tail_efficiency": waves / np.ceil(waves),
        }, index=df.index)
    return out


def _roofline(context: dict[str, np.ndarray], params: dict[str, np.ndarray], hw: pd.DataFrame) -> np.ndarray:
    """log2 of max(FLOPs / peak, bytes / bandwidth) in ms, by the first matching ANALYTIC_WORK rule."""
    out = np.full(len(hw), np.nan)
    peak = np.exp2(hw["hw_log2_peak_gflops"].to_numpy())
    bw = np.exp2(hw["hw_log2_mem_bw_gbs"].to_numpy())
    with np.errstate(divide="ignore", invalid="ignore"):
        for rule in ANALYTIC_WORK:
            if not all(p in params for p in rule.needs):
                continue
            ms = np.maximum(rule.flops(context) / (peak * 1e6), rule.bytes(context) / (bw * 1e6))
            fill = np.isnan(out) & np.isfinite(ms) & (ms > 0)
            out[fill] = np.log2(ms[fill])
    return out
