"""GEMM features: hand-computed values, NaN behaviour, refusals, purity."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from perfpred.errors import InvalidInputError
from perfpred.features import (
    config_frame,
    flops,
    gemm_features,
    gemm_roofline_ms,
    min_bytes,
    padding_efficiency,
    pow2_alignment,
    roofline_ms,
)

SPEC = {"hardware_id": "cpu-hand-0000000000", "peak_gflops": {"fp32": 100.0, "fp64": 50.0}, "mem_bw_gbs": 10.0,
        "caches_kib": {"l1d": 32, "l2": 1024, "l3": 8192}}

# Columns that come from the hardware spec (peaks, bandwidth, caches): NaN when the spec lacks them.
HARDWARE_DERIVED = {"log2_bytes_per_l2", "log2_bytes_per_llc", "log2_peak_gflops", "log2_mem_bw_gbs",
                    "log2_roofline_ms", "log2_compute_ms", "log2_memory_ms"}


def table(spec: dict | None = SPEC, **overrides) -> pd.DataFrame:
    rows = {
        "workload.b": [1, 2, 1],
        "workload.m": [64, 96, 1000],
        "workload.n": [64, 128, 7],
        "workload.k": [64, 32, 3000],
        "workload.dtype": ["fp32", "fp64", "fp32"],
        "workload.trans_a": [False, True, False],
        "workload.trans_b": [False, False, True],
        "config.threads": [1, 2, 1],
    }
    rows.update(overrides)
    df = pd.DataFrame(rows)
    if spec is not None:
        df["hardware_json"] = json.dumps(spec, sort_keys=True)
        df["hardware_id"] = spec["hardware_id"]
    return df


# ---------------------------------------------------------------------------- the building blocks


def test_flops_and_min_bytes_by_hand():
    assert flops(1, 2, 3, 4) == 48.0
    assert flops(2, 64, 64, 64) == 2 * 2 * 64**3
    # A: 2x4, B: 4x3, C: 2x3 -> 8 + 12 + 6 = 26 elements of 4 bytes, batch 1
    assert min_bytes(1, 2, 3, 4, 4) == 104.0
    assert min_bytes(3, 2, 3, 4, 8) == 3 * 26 * 8
    np.testing.assert_allclose(flops(np.array([1, 2]), 2, 3, 4), [48.0, 96.0])


@pytest.mark.parametrize(("x", "expected"), [(1, 0), (2, 1), (7, 0), (96, 5), (64, 6), (128, 7), (1024, 7), (12, 2)])
def test_pow2_alignment_by_hand(x, expected):
    assert pow2_alignment(x) == expected


def test_pow2_alignment_cap_is_adjustable_and_vectorised():
    np.testing.assert_array_equal(pow2_alignment([1024, 96, 3], cap_log2=20), [10, 5, 0])


@pytest.mark.parametrize(("x", "tile", "expected"), [(64, 64, 1.0), (100, 64, 100 / 128), (1, 8, 1 / 8),
                                                     (33, 32, 33 / 64), (16, 8, 1.0)])
def test_padding_efficiency_by_hand(x, tile, expected):
    assert padding_efficiency(x, tile) == pytest.approx(expected)


def test_roofline_is_the_slower_of_compute_and_memory():
    # 2 GFLOP at 1000 GFLOP/s = 2 ms; 1 MB at 100 GB/s = 0.01 ms -> compute bound.
    assert roofline_ms(2e9, 1e6, 1000.0, 100.0) == pytest.approx(2.0)
    # 1 MFLOP at 1000 GFLOP/s = 0.001 ms; 1 GB at 100 GB/s = 10 ms -> memory bound.
    assert roofline_ms(1e6, 1e9, 1000.0, 100.0) == pytest.approx(10.0)


def test_gemm_roofline_matches_the_building_blocks():
    df = table()
    expected = [
        roofline_ms(flops(1, 64, 64, 64), min_bytes(1, 64, 64, 64, 4), 100.0, 10.0),
        roofline_ms(flops(2, 96, 128, 32), min_bytes(2, 96, 128, 32, 8), 50.0, 10.0),
        roofline_ms(flops(1, 1000, 7, 3000), min_bytes(1, 1000, 7, 3000, 4), 100.0, 10.0),
    ]
    np.testing.assert_allclose(gemm_roofline_ms(df), expected, rtol=1e-12)


# ---------------------------------------------------------------------------- the feature table


def test_feature_values_by_hand():
    feats = gemm_features(table())
    row = feats.iloc[1]  # b=2, m=96, n=128, k=32, fp64, A transposed, 2 threads
    assert row["log2_m"] == pytest.approx(math.log2(96))
    assert row["log2_b"] == 1.0
    assert row["log2_flops"] == pytest.approx(math.log2(2 * 2 * 96 * 128 * 32))
    nbytes = 8 * 2 * (96 * 32 + 32 * 128 + 96 * 128)
    assert row["log2_bytes"] == pytest.approx(math.log2(nbytes))
    assert row["log2_intensity"] == pytest.approx(row["log2_flops"] - row["log2_bytes"])
    assert row["dtype_bytes"] == 8.0
    assert (row["is_fp64"], row["is_fp32"], row["is_bf16"]) == (1.0, 0.0, 0.0)
    assert (row["trans_a"], row["trans_b"]) == (1.0, 0.0)
    assert row["threads"] == 2.0
    assert row["align_m"] == 5.0 and row["align_k"] == 5.0 and row["align_n"] == 7.0
    assert row["pad_eff_m_64"] == pytest.approx(96 / 128)
    assert row["log2_min_dim"] == 5.0
    assert row["log2_max_dim"] == 7.0
    assert row["log2_peak_gflops"] == pytest.approx(math.log2(50.0))
    assert row["log2_bytes_per_l2"] == pytest.approx(math.log2(nbytes / (1024 * 1024)))
    assert row["log2_bytes_per_llc"] == pytest.approx(math.log2(nbytes / (8192 * 1024)))
    compute_ms = 2 * 2 * 96 * 128 * 32 / (50.0 * 1e6)
    memory_ms = nbytes / (10.0 * 1e6)
    assert row["log2_roofline_ms"] == pytest.approx(math.log2(max(compute_ms, memory_ms)))


def test_no_nan_when_the_hardware_spec_has_peaks():
    feats = gemm_features(table())
    assert not feats.isna().any().any(), feats.columns[feats.isna().any()].tolist()
    assert np.isfinite(feats.to_numpy()).all()
    assert len(feats) == 3
    assert (feats.index == table().index).all()


def test_without_a_hardware_spec_only_hardware_columns_are_nan():
    feats = gemm_features(table(spec=None))
    nan_cols = set(feats.columns[feats.isna().any()])
    assert nan_cols == HARDWARE_DERIVED
    assert feats[sorted(HARDWARE_DERIVED)].isna().all().all()


def test_a_spec_without_the_rows_dtype_gives_nan_roofline_for_that_row_only():
    spec = {**SPEC, "peak_gflops": {"fp32": 100.0}}
    feats = gemm_features(table(spec=spec))
    assert np.isnan(feats["log2_roofline_ms"].iloc[1])  # the fp64 row
    assert np.isfinite(feats["log2_roofline_ms"].iloc[[0, 2]]).all()


def test_optional_columns_default_sensibly():
    minimal = pd.DataFrame({"workload.m": [32], "workload.n": [32], "workload.k": [32]})
    feats = gemm_features(minimal)
    assert feats["log2_b"].iloc[0] == 0.0
    assert feats["is_fp32"].iloc[0] == 1.0
    assert feats["trans_a"].iloc[0] == 0.0


def test_rows_on_two_hardware_specs_use_their_own_peaks():
    other = {**SPEC, "hardware_id": "cpu-other-1111111111", "peak_gflops": {"fp32": 400.0, "fp64": 200.0}}
    df = pd.concat([table(), table(spec=other)], ignore_index=True)
    feats = gemm_features(df)
    np.testing.assert_allclose(feats["log2_peak_gflops"].iloc[3:].to_numpy(),
                               feats["log2_peak_gflops"].iloc[:3].to_numpy() + 2.0)


def test_gpu_style_spec_with_l2_cache_only():
    spec = {"hardware_id": "cuda-x", "peak_gflops": {"fp32": 1e4, "fp64": 1e3}, "mem_bw_gbs": 900.0,
            "l2_cache_kib": 6144}
    feats = gemm_features(table(spec=spec))
    assert not feats.isna().any().any()
    assert feats["log2_bytes_per_l2"].equals(feats["log2_bytes_per_llc"])


# ---------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"workload.m": [0, 96, 1000]}, "m > 0"),
        ({"workload.k": [64, -1, 3000]}, "k > 0"),
        ({"workload.b": [1, 0, 1]}, "b > 0"),
        ({"workload.n": [64, np.nan, 7]}, "n > 0"),
        ({"workload.dtype": ["fp32", "fp8", "fp32"]}, "fp8"),
    ],
)
def test_bad_values_are_refused(overrides, needle):
    with pytest.raises(InvalidInputError) as info:
        gemm_features(table(**overrides))
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_columns_are_refused():
    with pytest.raises(InvalidInputError, match=r"workload\.k"):
        gemm_features(table().drop(columns=["workload.k"]))


# ---------------------------------------------------------------------------- purity


def test_features_are_pure():
    df = table()
    before = df.copy(deep=True)
    first = gemm_features(df)
    second = gemm_features(df)
    pd.testing.assert_frame_equal(first, second)
    pd.testing.assert_frame_equal(df, before)


def test_features_of_a_row_do_not_depend_on_the_other_rows():
    df = table()
    whole = gemm_features(df)
    alone = gemm_features(df.iloc[[2]])
    pd.testing.assert_frame_equal(whole.iloc[[2]], alone)


def test_config_frame_builds_feature_ready_rows():
    df = config_frame([{"m": 64, "n": 64, "k": 64, "dtype": "fp32", "threads": 1}], SPEC)
    assert {"workload.m", "workload.dtype", "config.threads", "hardware_json", "hardware_id"} <= set(df.columns)
    assert df["hardware_id"].iloc[0] == SPEC["hardware_id"]
    feats = gemm_features(df)
    assert not feats.isna().any().any()
    assert feats["log2_roofline_ms"].iloc[0] == pytest.approx(gemm_features(table()).iloc[0]["log2_roofline_ms"])
