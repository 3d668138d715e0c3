"""Features of tunable kernels, serving configurations and cross-GPU GEMMs: pure, documented, correct."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perfpred.errors import InvalidInputError
from perfpred.features._gemm import gemm_features
from perfpred.features._gemm_access import gemm_access_features
from perfpred.features._gemm_gpu import GPU_IDENTITY_FEATURES, TILES, gpu_gemm_features, gpu_gemm_transfer_features
from perfpred.features._kernel import (
    ANALYTIC_WORK,
    DERIVED_FEATURES,
    hardware_features,
    kernel_features,
    kernel_occupancy_features,
)
from perfpred.features._serving import (
    EXPERT_PARALLEL_LAYER_MS,
    LAYER_OVERHEAD_MS,
    attention_layout,
    moe_routing,
    serving_attention_features,
    serving_features,
    touched_params,
)
from perfpred.features._specs import SM_LIMITS_BY_CC, device_spec, sm_limits

GPU = {"hardware_id": "gpu-test", "peak_gflops": {"fp32": 10000.0, "fp16": 40000.0}, "mem_bw_gbs": 500.0,
       "sm_count": 40, "l2_cache_kib": 4096, "memory_gib": 16.0}
XGEMM = {"MWG": 64, "NWG": 32, "KWG": 32, "MDIMC": 16, "NDIMC": 8, "MDIMA": 16, "NDIMB": 8, "KWI": 2,
         "VWM": 2, "VWN": 4, "STRM": 0, "STRN": 1, "SA": 1, "SB": 0}


def rows(configs: list[dict], workload: dict | None = None, hardware: dict | None = GPU) -> pd.DataFrame:
    out = []
    for cfg in configs:
        row = {f"config.{k}": v for k, v in cfg.items()}
        row.update({f"workload.{k}": v for k, v in (workload or {}).items()})
        if hardware is not None:
            row["hardware_json"] = json.dumps(hardware, sort_keys=True)
        out.append(row)
    return pd.DataFrame(out)


def test_xgemm_derived_features_follow_their_rules():
    f = kernel_features(rows([XGEMM], {"problem_size_x": 4096, "problem_size_y": 4096})).iloc[0]
    assert f["p_MWG"] == 64 and f["log2_p_MWG"] == 6
    assert f["d_wg_threads"] == 16 * 8
    assert f["d_tile_area"] == 64 * 32
    assert f["d_mwi"] == 4 and f["d_nwi"] == 4 and f["d_work_per_thread"] == 16
    assert f["d_kdima"] == 16 * 8 / 16 and f["d_kdimb"] == 16 * 8 / 8
    assert f["d_local_mem_bytes"] == (1 * 64 + 0 * 32) * 32 * 4  # SA caches A only, fp32
    assert f["d_m_vector_ops"] == 64 / (16 * 2)
    assert f["d_gemm_workgroups"] == (4096 / 64) * (4096 / 32)
    assert f["d_waves"] == pytest.approx(f["d_gemm_workgroups"] / 40)
    assert f["log2_d_tile_area"] == pytest.approx(np.log2(64 * 32))
    # Square problem from problem_size only: 2 n^3 FLOPs at 10 TFLOP/s is compute bound.
    assert f["log2_roofline_ms"] == pytest.approx(np.log2(2 * 4096**3 / (10000 * 1e6)))


def test_convolution_rules_and_roofline():
    cfg = {"block_size_x": 48, "block_size_y": 4, "tile_size_x": 2, "tile_size_y": 3, "use_shmem": 1,
           "read_only": 0, "filter_width": 15, "filter_height": 15}
    f = kernel_features(rows([cfg], {"problem_size_x": 4096, "problem_size_y": 4096})).iloc[0]
    assert f["d_block_threads"] == 192
    assert f["d_warp_efficiency"] == 1.0  # 192 threads = 6 full warps
    assert f["d_x_coalescing"] == pytest.approx(48 / 64)
    assert f["d_out_tile_area"] == 96 * 12
    assert f["d_shared_mem_bytes"] == (96 + 14) * (12 + 14) * 4
    assert f["d_halo_ratio"] == pytest.approx((96 + 14) * (12 + 14) / (96 * 12))
    assert f["d_grid_blocks"] == np.ceil(4096 / 96) * np.ceil(4096 / 12)
    flop = 2.0 * 4096 * 4096 * 15 * 15
    nbytes = 4.0 * ((4096 + 14) ** 2 + 4096**2)
    assert f["log2_roofline_ms"] == pytest.approx(np.log2(max(flop / 1e10, nbytes / 5e8)))
    assert "d_tile_area" not in f  # GEMM rules need GEMM parameters


KEPLER = {**GPU, "name": "NVIDIA GeForce GTX 680", "sm_count": 8}  # compute capability 3.0, from the name


def test_xgemm_occupancy_on_a_kepler_gpu():
    # 128 threads; 64 x 32 tile: 4 x 4 accumulators + 4 + 4 operand registers + 20 = 44 <= 63;
    # 8 KiB of local memory (A only). Limits: 2048 / 128 = 16 threads-wise, 16 blocks, 48 KiB / 8 KiB = 6,
    # 65536 / (128 x 44) = 11.6 -> 11 registers-wise: shared memory binds at 6 work-groups.
    assert "d_blocks_per_sm" not in kernel_features(rows([XGEMM], {"problem_size_x": 4096}, KEPLER))  # opt-in
    f = kernel_occupancy_features(rows([XGEMM], {"problem_size_x": 4096}, KEPLER)).iloc[0]
    assert f["d_blocks_per_sm"] == 6
    assert f["d_occupancy"] == pytest.approx(6 * 128 / 2048)
    assert f["d_register_spill"] == 0
    waves = (4096 / 64) * (4096 / 32) / (8 * 6)
    assert f["d_resident_waves"] == pytest.approx(waves)
    assert f["d_wave_tail_efficiency"] == pytest.approx(waves / np.ceil(waves))
    # 8 x 8 accumulators per thread: 64 + 16 + 20 = 100 registers, 37 past Kepler's 63, and the
    # spill is capped at 63 a thread: 65536 / (64 threads x 63) = 16.3, no local memory, 16 blocks at most.
    big = {**XGEMM, "MWG": 64, "NWG": 64, "MDIMC": 8, "NDIMC": 8, "SA": 0}
    g = kernel_occupancy_features(rows([big], {"problem_size_x": 4096}, KEPLER)).iloc[0]
    assert g["d_register_spill"] == 100 - 63
    assert g["d_blocks_per_sm"] == min(2048 // 64, 16, 65536 // (64 * 63))


def test_xgemm_warp_access_patterns_match_hand_counts():
    # A: 64-wide tile, 16 x 16 threads, scalar loads, MWI = 4. Contiguous (STRM=0): thread t reads
    # words 4t..4t+3, one a step, so threads t and t+8 share a bank (2 wavefronts), and straight
    # from global memory 16 words touch 8 sectors of 8 (a quarter used). Filling the tile with the
    # 16 x 16 layout (MWA = 4, KWA = 1): a warp stores words 4 la0 + i of rows 0 and 1 (64 words
    # apart): 4 words a bank. Strided (STRM=1): the 16 threads read 16 neighbouring words.
    cfg = {**XGEMM, "MWG": 64, "MDIMC": 16, "NDIMC": 16, "MDIMA": 16, "VWM": 1, "KWG": 16, "SA": 1, "STRM": 0}
    contiguous, strided, direct = kernel_occupancy_features(rows(
        [cfg, {**cfg, "STRM": 1}, {**cfg, "SA": 0}], {"problem_size_x": 2048}, KEPLER)).to_dict("records")
    assert contiguous["log2_d_a_local_read_conflict"] == 1  # 2 wavefronts
    assert contiguous["log2_d_a_local_store_conflict"] == 2  # 4
    assert contiguous["log2_d_a_fill_sector_efficiency"] == -2  # a quarter of each sector
    assert contiguous["log2_d_a_direct_sector_efficiency"] == 0  # SA=1: that step does not run
    assert strided["log2_d_a_local_read_conflict"] == 0 and strided["log2_d_a_fill_sector_efficiency"] == 0
    assert direct["log2_d_a_direct_sector_efficiency"] == -2
    assert direct["log2_d_a_local_read_conflict"] == 0 and direct["log2_d_a_local_store_conflict"] == 0
    # B runs along local id 1: with 16 threads along m a warp holds two B columns, the rest broadcast.
    b = kernel_occupancy_features(rows([{**cfg, "SB": 1, "NWG": 32, "VWN": 1, "STRN": 0, "NDIMB": 16}],
                                       {"problem_size_x": 2048}, KEPLER)).iloc[0]
    assert b["log2_d_b_local_read_conflict"] == 0  # the two columns read words 0 and 2 (then 1 and 3)
    # A tiling the kernel rejects (MWG not a multiple of MDIMC x VWM) is unknown, not invented;
    # a kernel without the Xgemm parameters gets no such columns.
    uneven = kernel_occupancy_features(rows([{**cfg, "VWM": 8, "MDIMC": 16, "MWG": 64}], {"problem_size_x": 2048},
                                            KEPLER)).iloc[0]
    assert np.isnan(uneven["log2_d_a_local_read_conflict"]) and np.isnan(uneven["log2_d_a_direct_sector_efficiency"])
    huge = kernel_occupancy_features(rows([{**cfg, "MDIMC": 2**20, "MWG": 2**21}], {"problem_size_x": 2048},
                                          KEPLER)).iloc[0]  # no replay of a million-thread work-group
    assert np.isnan(huge["log2_d_a_local_read_conflict"])
    conv = kernel_occupancy_features(rows([{"block_size_x": 32, "tile_size_x": 2}], {"problem_size_x": 4096}))
    assert not any("conflict" in c or "sector" in c for c in conv.columns)


_XGEMM_VALUES = st.sampled_from([0.0, -4.0, 1.0, 2.0, 3.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, float("nan")])


@settings(max_examples=60, deadline=None)
@given(values=st.fixed_dictionaries({name: _XGEMM_VALUES for name in ("MWG", "NWG", "KWG", "MDIMC", "NDIMC", "MDIMA",
                                                                      "NDIMB", "VWM", "VWN")}),
       flags=st.fixed_dictionaries({name: st.sampled_from([0.0, 1.0]) for name in ("STRM", "STRN", "SA", "SB")}))
def test_access_features_stay_in_range_on_any_parameters(values, flags):
    # Any mix of valid, uneven, zero, negative or missing parameters: no crash, and every value
    # is NaN or inside its physical range (conflicts 1..32 wavefronts, efficiencies 1/8..1).
    params = {k: np.array([v]) for k, v in {**values, **flags}.items()}
    f = gemm_access_features(params).iloc[0]
    for name, value in f.items():
        if np.isnan(value):
            continue
        if "conflict" in name:
            assert 0 <= value <= 5, (name, value)
        else:
            assert -3 <= value <= 0, (name, value)


def test_occupancy_uses_limits_the_spec_states_and_is_unknown_without_them():
    cfg = {"block_size_x": 48, "block_size_y": 4, "tile_size_x": 2, "tile_size_y": 3, "use_shmem": 1,
           "filter_width": 15, "filter_height": 15}
    stated = {**GPU, "compute_capability": "8.0"}  # A100: 164 KiB shared memory, 2048 threads, 32 blocks
    f = kernel_occupancy_features(rows([cfg], {"problem_size_x": 4096, "problem_size_y": 4096}, stated)).iloc[0]
    smem = (96 + 14) * (12 + 14) * 4
    assert f["d_blocks_per_sm"] == min(2048 // 192, 32, (164 * 1024) // smem)
    assert np.isnan(f["d_register_spill"])  # no register estimate for this kernel
    # No name, no compute capability (e.g. an AMD GPU): the columns are there, unknown.
    u = kernel_occupancy_features(rows([cfg], {"problem_size_x": 4096, "problem_size_y": 4096})).iloc[0]
    assert np.isnan(u["d_blocks_per_sm"]) and np.isnan(u["d_occupancy"]) and np.isnan(u["d_resident_waves"])
    # A spec that states its own limits wins over its compute capability's row.
    own = sm_limits({"compute_capability": "8.0", "shared_kib_per_sm": 100})
    assert own["shared_kib_per_sm"] == 100 and own["max_threads_per_sm"] == 2048
    assert sm_limits({"name": "AMD Radeon PRO W6600"}) is None
    assert sm_limits({"name": "NVIDIA GeForce GTX 680"}) == SM_LIMITS_BY_CC["3.0"]


def test_rules_table_is_documented_and_names_are_unique():
    names = [r.name for r in DERIVED_FEATURES]
    assert len(names) == len(set(names))
    assert all(r.doc and r.needs for r in DERIVED_FEATURES)
    assert all(w.doc and w.needs for w in ANALYTIC_WORK)


def test_features_are_pure_per_row():
    configs = [XGEMM, {**XGEMM, "MWG": 128, "SA": 0}, {**XGEMM, "VWN": 1}]
    df = rows(configs, {"problem_size_x": 2048})
    whole = kernel_features(df)
    for i in range(len(df)):
        alone = kernel_features(df.iloc[[i]])
        pd.testing.assert_frame_equal(whole.iloc[[i]], alone)


def test_power_of_two_indicators_mark_parameters_and_multiplicative_quantities():
    configs = [{"block_size_x": bx, "block_size_y": 2, "tile_size_x": tx, "tile_size_y": 1}
               for bx, tx in ((64, 4), (48, 4), (64, 3), (1, 1))]
    f = kernel_features(rows(configs, {"problem_size_x": 4096, "problem_size_y": 4096}))
    assert list(f["pow2_p_block_size_x"]) == [1, 0, 1, 1]  # 1 = 2**0 counts
    assert list(f["pow2_p_tile_size_x"]) == [1, 1, 0, 1]
    assert list(f["pow2_d_out_tile_x"]) == [1, 0, 0, 1]  # 256, 192, 192, 1
    assert "pow2_d_warp_efficiency" not in f  # a fraction, not a size
    odd = kernel_features(rows([{"unroll": 0}, {"unroll": -4}, {"unroll": 0.5}, {"unroll": np.nan}], hardware=None))
    assert odd["pow2_p_unroll"].iloc[:3].tolist() == [0, 0, 0] and np.isnan(odd["pow2_p_unroll"].iloc[3])


def test_any_config_columns_become_features_text_and_bools_too():
    df = rows([{"unroll": 4, "layout": "row", "fast_math": True}, {"unroll": 0, "layout": "col", "fast_math": False}],
              hardware=None)
    f = kernel_features(df)
    assert list(f["p_unroll"]) == [4, 0]
    assert list(f["log2_p_unroll"]) == [2, -1]
    assert list(f["p_fast_math"]) == [1, 0]
    assert f["p_layout"].nunique() == 2 and f["p_layout"].notna().all()
    assert f["log2_roofline_ms"].isna().all()  # unknown kernel, no hardware: fit the time directly
    assert f["hw_log2_peak_gflops"].isna().all()
    # Stable codes: the same text gives the same number in another call.
    assert kernel_features(df.iloc[[1]])["p_layout"].iloc[0] == f["p_layout"].iloc[1]


def test_hardware_features_and_precision():
    df = rows([{**XGEMM, "PRECISION": 16}, {**XGEMM, "PRECISION": 32}], {"problem_size_x": 1024})
    f = kernel_features(df)
    assert list(f["hw_log2_peak_gflops"]) == pytest.approx([np.log2(40000), np.log2(10000)])
    assert list(f["element_bytes"]) == [2, 4]
    assert f["hw_sm_count"].iloc[0] == 40
    assert f["hw_log2_l2_kib"].iloc[0] == pytest.approx(12)
    assert f["hw_log2_flop_per_byte"].iloc[1] == pytest.approx(np.log2(10000 / 500))


def test_errors_are_one_line_invalid_input():
    with pytest.raises(InvalidInputError, match="config"):
        kernel_features(pd.DataFrame({"workload.m": [1]}))
    bad = rows([XGEMM])
    bad["hardware_json"] = "{not json"
    with pytest.raises(InvalidInputError, match="hardware_json"):
        kernel_features(bad)
    with pytest.raises(InvalidInputError, match="dtype"):
        kernel_features(rows([XGEMM], {"dtype": "int3"}))
    assert hardware_features(pd.DataFrame({"x": [1]})).isna().all().all()


def test_featurizers_are_registered():
    from perfpred.models import FEATURIZERS

    assert FEATURIZERS["kernel"] is kernel_features
    assert FEATURIZERS["kernel-occupancy"] is kernel_occupancy_features
    assert FEATURIZERS["serving"] is serving_features
    assert FEATURIZERS["serving-attention"] is serving_attention_features
    assert FEATURIZERS["gemm-gpu"] is gpu_gemm_features


def test_serving_features_offsets_and_no_outcomes():
    hw = {"hardware_id": "gpu-h", "peak_gflops": {"bf16": 989000.0, "fp32": 67000.0}, "mem_bw_gbs": 3350.0,
          "sm_count": 132, "memory_gib": 80.0}
    df = pd.DataFrame({
        "workload.model": ["a", "b"], "workload.task": ["chat", "chat"], "workload.precision": ["bfloat16", "fp8"],
        "workload.total_params_b": [8.0, 235.0], "workload.activated_params_b": [8.0, 22.0],
        "config.max_num_seqs": [64, 8], "config.tensor_parallel": [1, 1], "config.expert_parallel": [1, 8],
        "config.data_parallel": [1, 1], "config.num_gpus": [1, 8], "metric.avg_batch_size": [60.0, 7.0],
        "hardware_json": [json.dumps(hw)] * 2})
    f = serving_features(df)
    assert not any("avg_batch" in c for c in f.columns)
    assert list(f["log2_num_gpus"]) == [0, 3]
    assert list(f["is_moe"]) == [0, 1]
    # Dense 8B bf16 on one GPU: 16 GB of weights per step at 3.35 TB/s bounds the step.
    step_ms = max(8e9 * 2 / 3350e6, 2 * 8e9 * 64 / 989000e6)
    assert f["log2_roofline_ms"].iloc[0] == pytest.approx(np.log2(step_ms))
    assert f["log2_gpu_seconds_per_token"].iloc[0] == pytest.approx(np.log2(step_ms / 1e3 / 64))
    # MoE of unknown routing ("b"): 8 sequences touch at most 8 x 22B of the 235B weights, fp8, over 8 GPUs.
    moe_ms = 8 * 22e9 * 1 / 8 / 3350e6
    assert f["log2_memory_ms"].iloc[1] == pytest.approx(np.log2(moe_ms))


def test_a_mixture_of_experts_with_known_routing_reads_the_experts_its_batch_is_expected_to_hit():
    # 128 experts, 1 per token, 17B active of 400B: experts of 383/127 B, 13.98 B shared.
    expert_b, shared_b = 383 / 127, 17 - 383 / 127
    total = np.array([400.0, 400.0, 400.0, 109.0])
    active = np.array([17.0, 17.0, 17.0, 17.0])
    batch = np.array([1.0, 64.0, 4096.0, 64.0])
    touched = touched_params(total, active, batch, np.array([128.0, 128.0, 128.0, np.nan]),
                             np.array([1.0, 1.0, 1.0, np.nan]))
    assert touched[0] == pytest.approx(shared_b + expert_b)  # one sequence: its active weights
    assert touched[1] == pytest.approx(shared_b + 128 * expert_b * (1 - (127 / 128) ** 64))  # ~40% of experts
    assert touched[2] == pytest.approx(400.0, rel=1e-6)  # a huge batch hits every expert
    assert touched[3] == 109.0  # unknown routing: min(total, active x batch)
    # The routing of a row comes from its columns, else from the model card table by name.
    rows = pd.DataFrame({"workload.model": ["meta-llama/Llama-4-Maverick-17B-128E-Instruct-FP8", "x/dense-8b",
                                            "x/my-moe"], "workload.num_experts": [np.nan, np.nan, 64.0],
                         "workload.experts_per_token": [np.nan, np.nan, 2.0]})
    experts, per_token = moe_routing(rows)
    assert list(experts[[0, 2]]) == [128.0, 64.0] and list(per_token[[0, 2]]) == [1.0, 2.0]
    assert np.isnan(experts[1]) and np.isnan(per_token[1])


def test_serving_features_see_llama_cpp_knobs_and_the_load_of_own_rows():
    cpu = {"hardware_id": "cpu-x", "memory_gib": 24.0}
    df = pd.DataFrame({
        "workload.total_params_b": [0.02, 0.02], "workload.hidden_size": [512, 512], "workload.num_layers": [5, 5],
        "workload.concurrency": [16, 16], "workload.prompt_tokens_mean": [128.0, 128.0],
        "workload.output_tokens_mean": [24.0, 24.0], "config.max_num_seqs": [4, 4], "config.batch_size": [512, 512],
        "config.ubatch_size": [64, 256], "config.threads": [1, 1], "metric.output_tokens_per_s": [200.0, 250.0],
        "hardware_json": [json.dumps(cpu)] * 2})
    f = serving_features(df)
    assert list(f["log2_ubatch_size"]) == [6, 8] and list(f["log2_concurrency"]) == [4, 4]
    assert f["log2_hidden_size"].iloc[0] == 9 and f["log2_prompt_tokens_mean"].iloc[0] == 7
    assert f["log2_rate_rps"].isna().all()  # closed loop: no rate
    assert not any("output_tokens_per_s" in c for c in f.columns)


H100 = {"hardware_id": "gpu-h", "peak_gflops": {"bf16": 989000.0, "fp32": 67000.0}, "mem_bw_gbs": 3350.0,
        "sm_count": 132, "memory_gib": 80.0}


def test_serving_attention_features_count_the_kv_cache_a_decode_step_reads():
    df = pd.DataFrame({
        "workload.model": ["meta-llama/Llama-3.1-8B-Instruct", "Qwen/Qwen3-235B-A22B-Instruct-2507",
                           "google/gemma-3-12b-it", "someone/unknown-7b"],
        "workload.precision": ["bfloat16"] * 4, "workload.total_params_b": [8.0, 235.0, 12.0, 7.0],
        "workload.activated_params_b": [8.0, 22.0, 12.0, 7.0], "config.max_num_seqs": [64, 8, 16, 8],
        "config.tensor_parallel": [1, 1, 1, 1], "config.expert_parallel": [1, 8, 1, 1],
        "config.data_parallel": [1, 1, 1, 1], "config.num_gpus": [1, 8, 1, 1],
        "hardware_json": [json.dumps(H100)] * 4})
    f = serving_attention_features(df)
    assert set(serving_features(df).columns) < set(f.columns)
    # Llama 3.1 8B: 32 layers x 8 KV heads x 128 x (K and V) x 2 bytes = 128 KiB per token of context.
    assert f["log2_kv_bytes_per_token"].iloc[0] == pytest.approx(17.0)
    assert f["log2_kv_read_ms_per_1k_tokens"].iloc[0] == pytest.approx(np.log2(64 * 2**17 * 1024 / 3350e6))
    assert f["windowed_layer_fraction"].iloc[0] == 0.0
    # Qwen3 235B: 4 KV heads over 8 GPUs, so each GPU keeps one (replicated), over 94 layers.
    assert f["log2_kv_bytes_per_token"].iloc[1] == pytest.approx(np.log2(94 * 1 * 128 * 2 * 2))
    # Gemma 3 12B: 8 global layers; the other 40 read at most their 1024-token window.
    assert f["log2_kv_bytes_per_token"].iloc[2] == pytest.approx(np.log2(8 * 8 * 256 * 2 * 2))
    assert f["windowed_layer_fraction"].iloc[2] == pytest.approx(40 / 48)
    assert f["log2_windowed_kv_read_ms"].iloc[2] == pytest.approx(np.log2(16 * 40 * 8 * 256 * 2 * 2 * 1024 / 3350e6))
    headroom_gib = 80.0 - 12e9 * 2 / 2**30
    assert f["log2_kv_tokens_per_seq"].iloc[2] == pytest.approx(np.log2(headroom_gib * 2**30 / (8 * 8 * 256 * 4) / 16))
    # A model of unknown layout has no KV features rather than made-up ones.
    new = ["log2_kv_bytes_per_token", "log2_kv_read_ms_per_1k_tokens", "log2_windowed_kv_read_ms",
           "windowed_layer_fraction", "log2_kv_tokens_per_seq"]
    assert f[new].iloc[3].isna().all()


def test_the_decode_step_adds_a_fixed_time_per_decoder_layer_to_its_weight_reads_and_matmuls():
    df = pd.DataFrame({
        "workload.model": ["meta-llama/Llama-3.1-8B-Instruct", "nvidia/NVIDIA-Nemotron-Nano-12B-v2", "tiny"],
        "workload.precision": ["bfloat16"] * 3, "workload.total_params_b": [8.0, 12.0, 0.02],
        "workload.num_layers": [np.nan, np.nan, 5], "workload.num_kv_heads": [np.nan, np.nan, 8],
        "workload.hidden_size": [np.nan, np.nan, 512], "workload.num_heads": [np.nan, np.nan, 8],
        "config.max_num_seqs": [8, 8, 4], "config.num_gpus": [2, 1, 1], "hardware_json": [json.dumps(H100)] * 3})
    f = serving_attention_features(df)
    # Llama 3.1 8B: 32 layers; Nemotron Nano 12B v2: 62 (6 of them attention); a row's own count wins
    assert list(np.exp2(f["log2_decoder_layers"])) == pytest.approx([32, 62, 5])
    # the weights' read time and the batch's matmuls add up (they overlap little at decode's batches)
    matmul_ms = np.exp2(f["log2_memory_ms"]) + np.exp2(f["log2_compute_ms"])
    assert (matmul_ms > np.exp2(f["log2_roofline_ms"])).all()
    step_ms = matmul_ms + np.array([32, 62, 5]) * LAYER_OVERHEAD_MS
    assert np.allclose(f["log2_decode_step_ms"], np.log2(step_ms))
    assert np.allclose(f["log2_decode_gpu_seconds_per_token"], np.log2(np.array([2, 1, 1]) * step_ms / 1e3 / [8, 8, 4]))
    # the batch's matmuls at the bf16 peak (Llama 3.1 8B: 2 x 8e9 x 8 sequences over 2 GPUs) over that step
    assert np.exp2(f["log2_compute_over_decode_step"].iloc[0]) == pytest.approx(2 * 8e9 * 8 / 2 / 989e12 * 1e3
                                                                                 / step_ms[0])
    bigger = serving_attention_features(df.assign(**{"config.max_num_seqs": [64, 8, 4]}))
    assert bigger["log2_compute_over_decode_step"].iloc[0] > f["log2_compute_over_decode_step"].iloc[0]
    # a model of unknown layout: no step time rather than the roofline alone
    unknown = serving_attention_features(df.assign(**{"workload.model": "someone/unknown-7b",
                                                      "workload.num_layers": np.nan}).head(1))
    assert unknown[["log2_decoder_layers", "log2_decode_step_ms"]].isna().all(axis=None)


def test_expert_parallelism_costs_each_layer_that_routes_tokens():
    models = ["meta-llama/Llama-4-Scout-17B-16E-Instruct", "meta-llama/Llama-4-Maverick-17B-128E-Instruct-FP8",
              "Qwen/Qwen3-30B-A3B-Instruct-2507", "Qwen/Qwen3-30B-A3B-Instruct-2507",
              "meta-llama/Llama-3.1-70B-Instruct", "x/my-moe"]
    df = pd.DataFrame({
        "workload.model": models, "workload.precision": ["bfloat16", "fp8", "bfloat16", "bfloat16", "bfloat16", "bf16"],
        "workload.total_params_b": [109.0, 400.0, 30.0, 30.0, 70.0, 20.0],
        "workload.activated_params_b": [17.0, 17.0, 3.0, 3.0, 70.0, 4.0],
        "workload.num_layers": [np.nan] * 5 + [10], "workload.num_kv_heads": [np.nan] * 5 + [8],
        "workload.hidden_size": [np.nan] * 5 + [1024], "workload.num_heads": [np.nan] * 5 + [8],
        "workload.num_moe_layers": [np.nan] * 5 + [4],
        "config.max_num_seqs": [8] * 6, "config.tensor_parallel": [1, 1, 1, 1, 4, 1],
        "config.expert_parallel": [8, 8, 2, 1, 1, 2], "config.num_gpus": [8, 8, 2, 1, 4, 2],
        "hardware_json": [json.dumps(H100)] * 6})
    f = serving_attention_features(df)
    layers = np.exp2(f["log2_decoder_layers"].to_numpy())
    assert list(layers) == pytest.approx([48, 48, 48, 48, 80, 10])
    # Scout routes in all 48 layers, Maverick in every other one (its card), a row's own count
    # wins; no cost without expert parallelism (one GPU) or for a dense model (tensor parallel).
    routing = np.array([48, 24, 48, 0, 0, 4])
    matmul_ms = np.exp2(f["log2_memory_ms"]) + np.exp2(f["log2_compute_ms"])
    step_ms = matmul_ms + layers * LAYER_OVERHEAD_MS + routing * EXPERT_PARALLEL_LAYER_MS
    assert np.allclose(f["log2_decode_step_ms"], np.log2(step_ms))


def test_experts_only_quantisation_reads_the_shared_weights_at_16_bits():
    # gpt-oss-20b: 21B of which 3.6B active, 32 experts and 4 per token, MXFP4 experts only.
    df = pd.DataFrame({"workload.model": ["openai/gpt-oss-20b", "someone/unknown-moe"],
                       "workload.precision": ["mxfp4", "mxfp4"], "workload.total_params_b": [21.0, 21.0],
                       "workload.activated_params_b": [3.6, 3.6], "config.max_num_seqs": [1, 1],
                       "config.num_gpus": [1, 1], "hardware_json": [json.dumps(H100)] * 2})
    f = serving_features(df)
    expert_b = (21.0 - 3.6) / (32 - 4)
    shared_b = 3.6 - 4 * expert_b
    # one sequence reads its 4 experts at half a byte and the shared weights at two
    assert np.exp2(f["log2_memory_ms"].iloc[0]) == pytest.approx((shared_b * 2 + 4 * expert_b * 0.5) * 1e9 / 3350e6)
    # unknown routing: no split to make, every weight at the precision's bytes
    assert np.exp2(f["log2_memory_ms"].iloc[1]) == pytest.approx(3.6e9 * 0.5 / 3350e6)


def test_a_rows_own_model_shape_and_kv_cache_type_win_over_the_cards():
    cpu = {"hardware_id": "cpu-x", "memory_gib": 24.0, "mem_bw_gbs": 20.0}
    df = pd.DataFrame({
        "workload.model": ["llama-3.1-8b-lookalike", "tiny", "tiny"], "workload.precision": ["float32"] * 3,
        "workload.total_params_b": [0.02] * 3, "workload.hidden_size": [512] * 3, "workload.num_layers": [5] * 3,
        "workload.num_heads": [8] * 3, "workload.num_kv_heads": [8, 8, 8],
        "config.cache_type_k": ["f16", "q8_0", np.nan], "config.max_num_seqs": [4] * 3,
        "hardware_json": [json.dumps(cpu)] * 3})
    full, windowed, kv_heads, head_dim, window = attention_layout(df)
    assert list(full) == [5, 5, 5] and list(kv_heads) == [8, 8, 8] and list(head_dim) == [64, 64, 64]
    assert list(windowed) == [0, 0, 0] and list(window) == [0, 0, 0]
    f = serving_attention_features(df)
    per_element = np.array([2.0, 34 / 32, 4.0])  # f16, q8_0 (32 values in 34 bytes), else the fp32 activations
    assert np.allclose(f["log2_kv_bytes_per_token"], np.log2(5 * 8 * 64 * 2 * per_element))


def test_gpu_gemm_features_waves_and_bound(synthetic_gemm_table):
    df = pd.DataFrame({"workload.b": [1, 1], "workload.m": [4096, 100], "workload.n": [4096, 100],
                       "workload.k": [4096, 100], "workload.dtype": ["fp32", "fp32"],
                       "hardware_json": [json.dumps(GPU)] * 2})
    f = gpu_gemm_features(df)
    tiles = np.ceil(4096 / 128) ** 2
    assert f["log2_waves_128x128"].iloc[0] == pytest.approx(np.log2(tiles / 40))
    assert f["wave_eff_128x128"].iloc[0] == pytest.approx((tiles / 40) / np.ceil(tiles / 40))
    assert len([c for c in f.columns if c.startswith("log2_waves_")]) == len(TILES)
    # The wave-quantised bound is never below the plain roofline.
    assert (f["log2_wave_roofline_ms"] >= f["log2_roofline_ms"] - 1e-9).all()
    assert f["log2_wave_roofline_ms"].iloc[1] == pytest.approx(np.log2(0.005))  # tiny GEMM: launch floor


def test_gpu_gemm_transfer_features_drop_what_names_the_gpu():
    rows = {"workload.b": [1], "workload.m": [4096], "workload.n": [4096], "workload.k": [4096],
            "workload.dtype": ["fp32"]}
    other = {**GPU, "sm_count": 80, "peak_gflops": {"fp32": 14000.0}, "mem_bw_gbs": 900.0}
    one, two = (gpu_gemm_transfer_features(pd.DataFrame({**rows, "hardware_json": [json.dumps(spec)]}))
                for spec in (GPU, other))
    assert not set(GPU_IDENTITY_FEATURES) & set(one.columns)
    full = gpu_gemm_features(pd.DataFrame({**rows, "hardware_json": [json.dumps(GPU)]}))
    assert one["log2_intensity_over_ridge"].iloc[0] == pytest.approx(
        full["log2_intensity"].iloc[0] - full["hw_log2_flop_per_byte"].iloc[0])
    # The GPU still shows through the work it does: its times and waves differ.
    assert one["log2_wave_roofline_ms"].iloc[0] != two["log2_wave_roofline_ms"].iloc[0]
    assert one["log2_waves_128x128"].iloc[0] != two["log2_waves_128x128"].iloc[0]


# perfpred's own CUDA fingerprint: the host's caches and memory at the top, the GPU in `gpus`.
OWN_H200 = {"device": "cuda", "hardware_id": "cuda-nvidia-h200-test", "hardware_name": "NVIDIA H200",
            "caches_kib": {"l1d": 48, "l2": 2048, "l3": 307200}, "memory_gib": 125.8,
            "gpus": [{"index": 0, "gpu_name": "NVIDIA H200", "sm_count": 132, "l2_cache_kib": 61440,
                      "memory_gib": 139.8, "compute_capability": "9.0"}],
            "peak_gflops": {"fp32": 67000.0, "fp16": 989000.0}, "mem_bw_gbs": 4800}
TRITON = {"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 64, "GROUP_M": 4, "num_warps": 8, "num_stages": 4}


def test_an_own_cuda_row_is_featurized_with_its_gpu_not_its_host():
    assert device_spec(OWN_H200)["l2_cache_kib"] == 61440 and "caches_kib" not in device_spec(OWN_H200)
    assert device_spec({**OWN_H200, "device": "cuda:1"}) == {**OWN_H200, "device": "cuda:1"}  # no such GPU listed
    assert device_spec(GPU) == GPU  # recorded GPUs state their facts at the top level
    hw = hardware_features(rows([TRITON], hardware=OWN_H200)).iloc[0]
    assert hw["hw_sm_count"] == 132
    assert hw["hw_log2_l2_kib"] == pytest.approx(np.log2(61440))
    gemm = gemm_features(pd.DataFrame({"workload.m": [1024], "workload.n": [1024], "workload.k": [1024],
                                       "hardware_json": [json.dumps(OWN_H200)]})).iloc[0]
    assert gemm["log2_bytes_per_l2"] == pytest.approx(np.log2(3 * 1024 * 1024 * 4 / (61440 * 1024)))
    assert gemm["log2_bytes_per_llc"] == gemm["log2_bytes_per_l2"]  # the GPU's L2 is its last level


def test_triton_matmul_rules_size_the_fp16_tiles_and_waves_on_the_gpu():
    df = rows([TRITON], {"m": 4096, "n": 4096, "k": 4096, "dtype": "fp16"}, hardware=OWN_H200)
    f = kernel_occupancy_features(df).iloc[0]
    assert f["d_programs"] == 32 * 16
    assert f["d_accumulators_per_thread"] == 128 * 256 / (32 * 8)
    assert f["d_pipeline_smem_bytes"] == 4 * (128 + 256) * 64 * 2
    assert f["d_k_steps"] == 64
    assert f["d_waves"] == pytest.approx(512 / 132)
    # 192 KiB of pipeline buffers: one program per SM (228 KiB each on compute capability 9.0).
    assert f["d_blocks_per_sm"] == 1
    assert f["log2_roofline_ms"] == pytest.approx(np.log2(2 * 4096**3 / (989000 * 1e6)))  # fp16 peak, compute bound
