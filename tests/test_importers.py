"""Importers of the recorded datasets: real files (or slices of them) in their published formats."""

from __future__ import annotations

import gzip
import json
import shutil
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from perfpred.collect.importers import (
    IMPORTERS,
    export_kernel_tuner_cache,
    get_importer,
    gpu_hardware,
    hardware_id_for,
    run_import,
)
from perfpred.datasets import Measurement, MeasurementStore
from perfpred.errors import InvalidInputError


def gz_text(path: Path) -> str:
    """The text of a gzipped file (read whole: the samples are small)."""
    return gzip.decompress(Path(path).read_bytes()).decode()


def csv_slice(src: Path, dst: Path, n_rows: int) -> Path:
    """The header and the first ``n_rows`` lines of a (gzipped) CSV, written as plain text."""
    lines = gz_text(src).splitlines()[: n_rows + 1] if src.suffix == ".gz" \
        else src.read_text().splitlines()[: n_rows + 1]
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text("\n".join(lines) + "\n")
    return dst


def cache_slice(src: Path, dst: Path, keys: list[str] | None = None, n: int = 20) -> Path:
    doc = json.loads(gz_text(src))
    chosen = keys if keys is not None else list(doc["cache"])[:n]
    doc["cache"] = {k: doc["cache"][k] for k in chosen}
    dst.write_text(json.dumps(doc))
    return dst


def assert_ids_match_schema(frames: list[pd.DataFrame], n: int = 25) -> None:
    """Bulk-built ids equal the ids ``Measurement`` computes, and every row passes its rules."""
    for frame in frames:
        for i in np.linspace(0, len(frame) - 1, min(n, len(frame))).astype(int):
            row = frame.iloc[i].to_dict()
            assert Measurement.from_row(row).measurement_id == row["measurement_id"]


def same_rows(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Two flat tables hold the same measurements (source aside), value by value."""
    a = a.drop_duplicates("measurement_id", keep="last").set_index("measurement_id").sort_index()
    b = b.drop_duplicates("measurement_id", keep="last").set_index("measurement_id").sort_index()
    assert list(a.index) == list(b.index)
    columns = sorted((set(a.columns) | set(b.columns)) - {"source"})
    for column in columns:
        x, y = a[column], b[column]
        if column == "raw_times_ms":
            assert all(list(p) == list(q) for p, q in zip(x, y, strict=True)), column
        elif x.dtype.kind == "f" or y.dtype.kind == "f":
            assert np.array_equal(x.astype(float).to_numpy(), y.astype(float).to_numpy(), equal_nan=True), column
        else:
            assert (x.astype(object).fillna("<NA>") == y.astype(object).fillna("<NA>")).all(), column


# ---------------------------------------------------------------------------- registry


def test_registry_knows_every_format_and_refuses_unknown_ones() -> None:
    assert set(IMPORTERS) == {"kernel-tuner", "uci-sgemm", "neusight", "vidur", "ml-energy"}
    for name in IMPORTERS:
        assert get_importer(name).name == name
    with pytest.raises(InvalidInputError) as err:
        get_importer("csv-of-my-own")
    message = str(err.value)
    assert "\n" not in message and "csv-of-my-own" in message
    assert all(name in message for name in IMPORTERS)


def test_gpu_hardware_slugs_and_specs() -> None:
    assert hardware_id_for("NVIDIA GeForce RTX 3090") == "gpu-nvidia-geforce-rtx-3090"
    hw = gpu_hardware("NVIDIA GeForce RTX 3090")
    assert hw["peak_gflops"]["fp32"] == pytest.approx(35600.0)
    assert hw["mem_bw_gbs"] == 936 and hw["sm_count"] == 82 and hw["l2_cache_kib"] == 6144
    amd = gpu_hardware("AMD Radeon PRO W6600")
    assert amd["vendor"] == "amd" and amd["peak_gflops"]["fp32"] > 0
    unknown = gpu_hardware("Mystery GPU 9000")
    assert unknown["spec_source"] == "name-only" and "peak_gflops" not in unknown


# ---------------------------------------------------------------------------- Kernel Tuner


def test_kernel_tuner_gemm_cache_imports_every_config(data: Path) -> None:
    path = data / "kernel-tuner" / "gemm" / "RTX_3090.json.gz"
    doc = json.loads(gz_text(path))
    result = get_importer("kernel-tuner").read(path)
    assert result.rows_read == result.rows_good == len(doc["cache"]) == 17956 and result.rows_bad == 0
    frame = result.frames[0]
    assert set(frame["status"]) == {"ok"} and set(frame["kind"]) == {"kernel"}
    assert set(frame["hardware_id"]) == {"gpu-nvidia-geforce-rtx-3090"}
    assert set(frame["source"]) == {"kernel-tuner:gemm/RTX_3090.json.gz"}
    assert set(frame["power_source"]) == {"unavailable"} and frame["power_w"].isna().all()
    key, entry = next(iter(doc["cache"].items()))
    row = frame.iloc[0]
    assert row["runtime_ms"] == pytest.approx(statistics.median(entry["times"]))
    assert list(row["raw_times_ms"]) == pytest.approx(entry["times"])
    assert row["mean_ms"] == pytest.approx(entry["time"]) and row["n_runs"] == len(entry["times"])
    assert row["metric.gflops"] == pytest.approx(entry["GFLOP/s"])
    assert row["metric.compile_time_ms"] == pytest.approx(entry["compile_time"])
    assert [row[f"config.{k}"] for k in doc["tune_params_keys"]] == [int(v) for v in key.split(",")]
    assert row["workload.problem_size"] == "4096x4096" and row["workload.kernel_name"] == "Xgemm"
    hardware = json.loads(row["hardware_json"])
    assert hardware["name"] == "NVIDIA GeForce RTX 3090" and hardware["peak_gflops"]["fp32"] > 0
    assert_ids_match_schema(result.frames)


def test_kernel_tuner_failed_configs_are_rows_with_their_status(data: Path) -> None:
    result = get_importer("kernel-tuner").read(data / "kernel-tuner" / "convolution" / "A6000.json.gz")
    frame = result.frames[0]
    assert result.rows_good == 4362 and result.rows_bad == 0
    assert frame["status"].value_counts().to_dict() == {"ok": 3889, "compile_error": 252, "runtime_error": 221}
    failed = frame[frame["status"] != "ok"]
    assert failed["runtime_ms"].isna().all() and failed["raw_times_ms"].map(len).eq(0).all()
    assert set(failed["error"]) == {"CompilationFailedConfig", "RuntimeFailedConfig"}
    assert failed["metric.compile_time_ms"].notna().all()
    assert_ids_match_schema(result.frames)


def test_kernel_tuner_bad_entries_are_counted_not_fatal(tmp_path: Path, data: Path) -> None:
    path = cache_slice(data / "kernel-tuner" / "convolution" / "A100.json.gz", tmp_path / "conv.json", n=10)
    doc = json.loads(path.read_text())
    keys = list(doc["cache"])
    doc["cache"][keys[1]]["times"][3] = -1.0
    doc["cache"][keys[2]]["time"] = "MysteryFailure"
    del doc["cache"][keys[3]]["block_size_x"]
    doc["cache"][keys[4]] = ["not", "an", "entry"]
    path.write_text(json.dumps(doc))
    result = get_importer("kernel-tuner").read(path)
    assert (result.rows_read, result.rows_good, result.rows_bad) == (10, 6, 4)
    assert result.bad_examples[0] == f"conv.json: cache[{keys[1]!r}]: `times[3] > 0` must hold, but got -1.0"
    assert all("\n" not in reason and reason.startswith("conv.json: ") for reason in result.bad_examples)


def t4_results(entries: dict) -> dict:
    """A T4 results document as Kernel Tuner's ``store_output_file`` writes it."""
    results = []
    for entry in entries.values():
        failed = isinstance(entry["time"], str)
        results.append({
            "timestamp": entry["timestamp"],
            "configuration": {k: v for k, v in entry.items()
                              if k.startswith(("block", "tile", "read", "use", "filter"))},
            "times": {"compilation": entry["compile_time"], "benchmark": entry["benchmark_time"],
                      "framework": entry["framework_time"], "search_algorithm": entry["strategy_time"],
                      "validation": entry["verification_time"], "runtimes": entry.get("times", [])},
            "invalidity": {"RuntimeFailedConfig": "runtime", "CompilationFailedConfig": "compile"}.get(
                entry["time"], "correct") if failed else "correct",
            "correctness": 1,
            "measurements": [{"name": "time", "value": entry["time"], "unit": "ms"}],
            "objectives": ["time"],
        })
    return {"schema_version": "1.0.0", "results": results}


def test_kernel_tuner_t4_results_file(tmp_path: Path, data: Path) -> None:
    doc = json.loads(gz_text(data / "kernel-tuner" / "convolution" / "A100.json.gz"))
    failed = [k for k, e in doc["cache"].items() if isinstance(e["time"], str)][:2]
    keys = list(doc["cache"])[:6] + failed
    path = tmp_path / "conv_results.json"
    path.write_text(json.dumps(t4_results({k: doc["cache"][k] for k in keys})))
    importer = get_importer("kernel-tuner")
    with pytest.raises(InvalidInputError, match="does not name its GPU"):
        importer.read(path)
    (tmp_path / "conv_results_metadata.json").write_text(json.dumps({"schema_version": "1.0.0", "metadata": {
        "environment": {"device_query": {"nvidia-smi": {"nvidia_smi_log": {
            "gpu": {"product_name": "NVIDIA A100-PCIE-40GB"}}}}}}}))
    result = importer.read(path)
    frame = result.frame
    assert result.rows_good == 8 and set(frame["hardware_id"]) == {"gpu-nvidia-a100-pcie-40gb"}
    assert (frame["status"] != "ok").sum() == 2 and frame["error"].dropna().str.startswith("T4 invalidity=").all()
    ok = frame[frame["status"] == "ok"]
    first = doc["cache"][keys[0]]
    assert ok.iloc[0]["runtime_ms"] == pytest.approx(statistics.median(first["times"]))
    assert ok.iloc[0]["metric.compile_time_ms"] == pytest.approx(first["compile_time"])
    assert set(frame["workload.kernel_name"]) == {"conv_results"}
    named = importer.read(path, device_name="NVIDIA RTX A4000", kernel_name="convolution_kernel")
    assert set(named.frame["hardware_id"]) == {"gpu-nvidia-rtx-a4000"}


# ---------------------------------------------------------------------------- UCI SGEMM


def test_uci_sgemm_slice_with_bad_rows(tmp_path: Path, data: Path) -> None:
    path = csv_slice(data / "uci-sgemm" / "sgemm_product.csv.gz", tmp_path / "sgemm_product.csv", 40)
    lines = path.read_text().splitlines()
    row = lines[16].split(",")  # line 17 of the file
    row[15] = "-1"  # Run2 (ms)
    lines[16] = ",".join(row)
    lines[20] = lines[20].replace(lines[20].split(",")[14], "nan", 1)
    path.write_text("\n".join(lines) + "\n")
    result = get_importer("uci-sgemm").read(path)
    assert (result.rows_read, result.rows_good, result.rows_bad) == (40, 38, 2)
    assert result.bad_examples[0] == "sgemm_product.csv: line 17: runtime Run2 (ms) > 0 must hold, but got -1.0"
    frame = result.frames[0]
    first = [float(v) for v in lines[1].split(",")[14:]]
    assert list(frame.iloc[0]["raw_times_ms"]) == first
    assert frame.iloc[0]["runtime_ms"] == pytest.approx(statistics.median(first))
    assert frame.iloc[0]["std_ms"] == pytest.approx(statistics.stdev(first))
    assert frame.iloc[0]["cv"] == pytest.approx(statistics.stdev(first) / statistics.mean(first))
    assert set(frame["hardware_id"]) == {"gpu-nvidia-geforce-gtx-680"} and set(frame["n_runs"]) == {4.0}
    assert (frame["workload.m"] == 2048).all() and set(frame["workload.dtype"]) == {"fp32"}
    assert_ids_match_schema(result.frames)


@pytest.mark.slow
def test_uci_sgemm_full_file_imports_fast(tmp_path: Path, data: Path) -> None:
    store = MeasurementStore(tmp_path / "store", create=True)
    start = time.perf_counter()
    report = run_import("uci-sgemm", [data / "uci-sgemm"], store)
    elapsed = time.perf_counter() - start
    assert report.rows_read == report.rows_imported == 241_600 and report.rows_bad == 0
    assert len(store) == 241_600
    assert elapsed < 60, f"full UCI import took {elapsed:.1f} s"


# ---------------------------------------------------------------------------- NeuSight


def test_neusight_dimensions_and_device_spec(tmp_path: Path, data: Path) -> None:
    root = tmp_path / "neusight"
    shutil.copy(data / "neusight" / "device_configs" / "Tesla_T4.json", _mkdir(root / "device_configs"))
    bmm = csv_slice(data / "neusight" / "train" / "bmm" / "Tesla_T4.csv.gz",
                    root / "train" / "bmm" / "Tesla_T4.csv", 30)
    linear = csv_slice(data / "neusight" / "train" / "linear" / "Tesla_T4.csv.gz",
                       root / "train" / "linear" / "Tesla_T4.csv", 30)
    importer = get_importer("neusight")
    raw = pd.read_csv(bmm)
    frame = importer.read(bmm).frame
    assert len(frame) == 30 and set(frame["kind"]) == {"gemm"} and set(frame["workload.op"]) == {"bmm"}
    # NeuSight's bmm multiplies (B, M, N) by (B, N, K): N is the reduction dimension.
    assert frame["workload.b"].tolist() == raw["B"].tolist()
    assert frame["workload.m"].tolist() == raw["M"].tolist()
    assert frame["workload.k"].tolist() == raw["N"].tolist()
    assert frame["workload.n"].tolist() == raw["K"].tolist()
    assert frame["runtime_ms"].tolist() == pytest.approx(raw["Latency"].tolist())
    assert frame["metric.grid_z"].tolist() == raw["Grid z"].astype(float).tolist()
    assert frame["workload.kernel_name"].tolist() == raw["Kernel Name"].tolist()
    hardware = json.loads(frame.iloc[0]["hardware_json"])
    assert hardware["hardware_id"] == "gpu-tesla-t4" and hardware["sm_count"] == 40
    assert hardware["peak_gflops"]["fp32"] == 8141 and hardware["mem_bw_gbs"] == 320
    assert hardware["l2_cache_kib"] == 4096 and "neusight-device-config" in hardware["spec_source"]
    assert json.loads(frame.iloc[0]["software_json"])["torch"] == "2.1.0"
    lin_raw = pd.read_csv(linear)
    lin = importer.read(linear).frame
    assert (lin["workload.m"] == lin_raw["B"] * lin_raw["M"]).all() and lin["workload.trans_b"].all()
    assert set(lin["source"]) == {"neusight:linear/Tesla_T4.csv"}
    assert_ids_match_schema([frame, lin])


def test_neusight_sheet_keeps_the_data_sheets_sm_count(data: Path) -> None:
    """The P4's sheet says 40 SMs of 64 cores; the GP104 has 20 of 128 (its recorded launches: blocks
    over blocks per SM give 20), and the wave features divide by the SM count."""
    from perfpred.collect.importers._gpus import gpu_hardware, read_neusight_sheet

    sheet = read_neusight_sheet(data / "neusight" / "device_configs" / "Tesla_P4.json")
    assert sheet["Num_Sm"] == 40
    p4 = gpu_hardware("Tesla P4", sheet=sheet)
    assert p4["sm_count"] == 20 and p4["cores_per_sm"] == 128
    assert p4["peak_gflops"]["fp32"] == sheet["SingleFLOPs"]  # the rest of the sheet still wins
    # The L4's sheet counts 60 x 128 cores and makes its fp32 peak from them; the L4 has 58 x 128.
    l4 = gpu_hardware("NVIDIA L4", sheet={"Device": "NVIDIA L4", "Num_Sm": 60, "Core_Per_SM": 128,
                                          "SingleFLOPs": 31334})
    assert l4["sm_count"] == 58 and l4["cores_per_sm"] == 128
    assert l4["peak_gflops"]["fp32"] == pytest.approx(31334 * 58 / 60)  # 30.3 TFLOP/s, the data sheet's
    # A GPU perfpred has no facts for takes the sheet's count.
    assert gpu_hardware("Some GPU", sheet={"Device": "Some GPU", "Num_Sm": 30})["sm_count"] == 30


def test_neusight_real_file_finds_its_device_config(data: Path) -> None:
    result = get_importer("neusight").read(data / "neusight" / "train" / "linear" / "Tesla_P4.csv.gz")
    assert result.rows_good == 6423 and result.rows_bad == 0
    hardware = json.loads(result.frame.iloc[0]["hardware_json"])
    assert hardware["peak_gflops"]["fp32"] == 5699 and hardware["memory_gib"] == 8


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


# ---------------------------------------------------------------------------- Vidur


def test_vidur_compute_projections_are_gemms(data: Path) -> None:
    result = get_importer("vidur").read(data / "vidur" / "compute" / "a100" / "meta-llama" / "Meta-Llama-3-8B"
                                        / "mlp.csv.gz")
    assert result.rows_bad == 0 and result.rows_read == result.rows_good == 1824 * 10
    frames = {f["kind"].iloc[0]: f for f in result.frames}
    gemm, ops = frames["gemm"], frames["operator"]
    assert set(gemm["workload.op"]) == {"attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj"}
    assert set(ops["workload.op"]) == {"emb", "input_layernorm", "attn_rope", "post_attention_layernorm",
                                       "mlp_act", "add"}
    tp2 = gemm[(gemm["config.tensor_parallel"] == 2)].groupby("workload.op").first()
    # Llama 3 8B: 32 heads of 128, 8 KV heads, hidden 4096, gated MLP of 14336.
    assert (tp2.loc["attn_pre_proj", "workload.n"], tp2.loc["attn_pre_proj", "workload.k"]) == (3072, 4096)
    assert (tp2.loc["attn_post_proj", "workload.n"], tp2.loc["attn_post_proj", "workload.k"]) == (4096, 2048)
    assert (tp2.loc["mlp_up_proj", "workload.n"], tp2.loc["mlp_up_proj", "workload.k"]) == (14336, 4096)
    assert (tp2.loc["mlp_down_proj", "workload.n"], tp2.loc["mlp_down_proj", "workload.k"]) == (4096, 7168)
    assert (gemm["workload.m"] > 0).all() and set(gemm["workload.dtype"]) == {"fp16"}
    raw = pd.read_csv(data / "vidur" / "compute" / "a100" / "meta-llama" / "Meta-Llama-3-8B" / "mlp.csv.gz")
    first = gemm[gemm["workload.op"] == "attn_pre_proj"].iloc[0]
    assert first["runtime_ms"] == raw["time_stats.attn_pre_proj.median"].iloc[0]
    assert first["min_ms"] == raw["time_stats.attn_pre_proj.min"].iloc[0]
    assert first["metric.max_ms"] == raw["time_stats.attn_pre_proj.max"].iloc[0]
    assert set(gemm["hardware_id"]) == {"gpu-nvidia-a100-sxm4-80gb"}
    assert set(gemm["workload.model"]) == {"meta-llama/Meta-Llama-3-8B"}
    assert_ids_match_schema(result.frames)


def test_vidur_file_outside_its_layout_needs_device_and_model(tmp_path: Path, data: Path) -> None:
    path = csv_slice(data / "vidur" / "compute" / "a40" / "microsoft" / "phi-2" / "mlp.csv.gz",
                     tmp_path / "mlp.csv", 12)
    importer = get_importer("vidur")
    with pytest.raises(InvalidInputError, match="compute/<gpu>/<org>/<model>"):
        importer.read(path)
    result = importer.read(path, device="a40", model="microsoft/phi-2")
    gemm = next(f for f in result.frames if f["kind"].iloc[0] == "gemm")
    pre = gemm[gemm["workload.op"] == "attn_pre_proj"].iloc[0]
    assert (pre["workload.n"], pre["workload.k"]) == (7680, 2560)  # phi-2: 32 heads of 80, no GQA
    up = gemm[gemm["workload.op"] == "mlp_up_proj"].iloc[0]
    assert up["workload.n"] == 10240  # not gated
    assert set(gemm["hardware_id"]) == {"gpu-nvidia-a40"}


def test_vidur_collectives(data: Path) -> None:
    path = data / "vidur" / "network" / "a100_dgx" / "all_reduce.csv.gz"
    raw = pd.read_csv(path)
    result = get_importer("vidur").read(path)
    frame = result.frame
    assert result.rows_good == len(raw) and set(frame["kind"]) == {"collective"}
    assert (frame["workload.size_bytes"] == 2 * raw["size"]).all()
    assert (frame["workload.num_workers"] == raw["num_workers"]).all()
    assert set(frame["config.topology"]) == {"dgx"} and set(frame["workload.op"]) == {"all_reduce"}
    assert frame["runtime_ms"].tolist() == raw["time_stats.all_reduce.median"].tolist()
    assert_ids_match_schema(result.frames)


# ---------------------------------------------------------------------------- ML.ENERGY


def test_ml_energy_llm_and_diffusion_tasks(data: Path) -> None:
    importer = get_importer("ml-energy")
    path = data / "ml-energy" / "tasks" / "gpqa.json"
    raw = json.loads(path.read_text())["configurations"]
    frame = importer.read(path).frame
    assert len(frame) == len(raw) == 81
    assert set(frame["kind"]) == {"serving"} and set(frame["power_source"]) == {"recorded"}
    first = frame.iloc[0]
    assert first["power_w"] == raw[0]["avg_power_watts"]
    assert first["energy_j"] == raw[0]["energy_per_request_joules"]
    assert first["metric.itl_p99_ms"] == raw[0]["p99_itl_ms"]
    assert first["metric.energy_per_token_j"] == raw[0]["energy_per_token_joules"]
    assert first["config.max_num_seqs"] == raw[0]["max_num_seqs"] and first["workload.task"] == "gpqa"
    assert set(frame["hardware_id"]) == {"gpu-nvidia-h100-80gb-hbm3"}
    images = importer.read(data / "ml-energy" / "tasks" / "text-to-image.json").frame
    raw_images = json.loads((data / "ml-energy" / "tasks" / "text-to-image.json").read_text())["configurations"]
    assert images.iloc[0]["runtime_ms"] == pytest.approx(raw_images[0]["batch_latency_s"] * 1e3)
    assert images.iloc[0]["energy_j"] == raw_images[0]["energy_per_image_joules"]
    assert_ids_match_schema([frame, images])


def test_ml_energy_bad_configuration_is_counted(tmp_path: Path, data: Path) -> None:
    doc = json.loads((data / "ml-energy" / "tasks" / "sourcegraph-fim.json").read_text())
    doc["configurations"][2]["avg_power_watts"] = -5.0
    del doc["configurations"][3]["max_num_seqs"]
    path = tmp_path / "fim.json"
    path.write_text(json.dumps(doc))
    result = get_importer("ml-energy").read(path)
    assert result.rows_bad == 2 and result.rows_good == len(doc["configurations"]) - 2
    assert result.bad_examples[0] == "fim.json: configurations[2]: `avg_power_watts > 0` must hold, but got -5.0"


# ---------------------------------------------------------------------------- wrong or broken files


@pytest.mark.parametrize(("fmt", "relative", "match"), [
    ("uci-sgemm", "kernel-tuner/gemm/RTX_3090.json.gz", "must be CSV, but this one holds JSON"),
    ("neusight", "uci-sgemm/sgemm_product.csv.gz", "needs column"),
    ("vidur", "neusight/train/bmm/Tesla_P4.csv.gz", "needs the columns"),
    ("kernel-tuner", "uci-sgemm/sgemm_product.csv.gz", "invalid JSON"),
    ("ml-energy", "kernel-tuner/convolution/W6600.json.gz", "needs a `configurations` list"),
    ("kernel-tuner", "ml-energy/tasks/gpqa.json", "needs a `cache`"),
])
def test_wrong_format_is_one_line_error_naming_the_file(data: Path, fmt: str, relative: str, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match) as err:
        get_importer(fmt).read(data / relative)
    assert "\n" not in str(err.value) and str(err.value).startswith(Path(relative).name)


def test_truncated_gzip_and_unknown_columns(tmp_path: Path, data: Path) -> None:
    blob = (data / "kernel-tuner" / "convolution" / "W6600.json.gz").read_bytes()
    truncated = tmp_path / "W6600.json.gz"
    truncated.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(InvalidInputError, match=r"^W6600\.json\.gz: truncated or corrupt gzip data"):
        get_importer("kernel-tuner").read(truncated)
    path = csv_slice(data / "uci-sgemm" / "sgemm_product.csv.gz", tmp_path / "sgemm.csv", 5)
    frame = pd.read_csv(path)
    frame.assign(extra=1).to_csv(path, index=False)
    with pytest.raises(InvalidInputError, match=r"\['extra'\] are not part of the uci-sgemm format"):
        get_importer("uci-sgemm").read(path)
    frame.drop(columns=["KWG"]).to_csv(path, index=False)
    with pytest.raises(InvalidInputError, match=r"needs column\(s\) \['KWG'\]"):
        get_importer("uci-sgemm").read(path)
    frame.assign(**{"Run1 (ms)": -1.0}).to_csv(path, index=False)
    expected = r"^sgemm\.csv: line 2: runtime Run1 \(ms\) > 0 must hold, but got -1\.0$"
    with pytest.raises(InvalidInputError, match=expected):
        get_importer("uci-sgemm").read(path)


# ---------------------------------------------------------------------------- run_import


def test_run_import_walks_folders_reports_and_dedupes(tmp_path: Path, data: Path) -> None:
    folder = _mkdir(tmp_path / "caches")
    cache_slice(data / "kernel-tuner" / "convolution" / "A6000.json.gz", folder / "A6000.json", n=30)
    cache_slice(data / "kernel-tuner" / "dedispersion" / "A4000.json.gz", _mkdir(folder / "sub") / "A4000.json", n=20)
    shutil.copy(data / "ml-energy" / "tasks" / "sourcegraph-fim.json", folder / "not-a-cache.json")
    store = MeasurementStore(tmp_path / "store", create=True)
    report = run_import("kernel-tuner", [folder], store)
    assert len(report.files_read) == 2 and report.files_skipped == [str(folder / "not-a-cache.json")]
    assert (report.rows_read, report.rows_imported, report.rows_bad, report.rows_duplicate) == (50, 50, 0, 0)
    assert report.rows_by_kind == {"kernel": 50} and len(store) == 50
    assert "50 imported" in report.summary()
    again = run_import("kernel-tuner", [folder / "A6000.json"], store)
    assert (again.rows_imported, again.rows_duplicate) == (0, 30)
    stored = store.load()
    assert set(stored["source"]) == {"kernel-tuner:caches/A6000.json", "kernel-tuner:sub/A4000.json"}


def test_run_import_reports_an_unreadable_file_and_imports_the_others(tmp_path: Path, data: Path) -> None:
    folder = _mkdir(tmp_path / "caches")
    cache_slice(data / "kernel-tuner" / "gemm" / "RTX_Titan.json.gz", folder / "a.json", n=10)
    (folder / "b.json").write_text('{"device_name": "x", "tune_params_keys": ["A"], "cache": {"1": ')
    store = MeasurementStore(tmp_path / "store", create=True)
    report = run_import("kernel-tuner", [folder], store)
    assert len(report.files_failed) == 1 and report.files_failed[0].startswith("b.json: line 1: invalid JSON")
    assert report.rows_imported == len(store) == 10
    with pytest.raises(InvalidInputError, match="must be an existing file or folder"):
        run_import("kernel-tuner", [tmp_path / "nope"], store)
    with pytest.raises(InvalidInputError, match="no uci-sgemm files"):
        run_import("uci-sgemm", [_mkdir(tmp_path / "empty")], store)


# ---------------------------------------------------------------------------- export round trips


def test_export_import_round_trip_of_a_cache_with_failures(tmp_path: Path, data: Path) -> None:
    importer = get_importer("kernel-tuner")
    original = importer.read(data / "kernel-tuner" / "convolution" / "A6000.json.gz").frames[0]
    path = export_kernel_tuner_cache(original, tmp_path / "A6000.json.gz").path
    doc = json.loads(gz_text(path))
    assert doc["device_name"] == "NVIDIA RTX A6000" and doc["kernel_name"] == "convolution_kernel"
    assert doc["problem_size"] == [4096, 4096] and len(doc["cache"]) == 4362
    source = json.loads(gz_text(data / "kernel-tuner" / "convolution" / "A6000.json.gz"))
    assert doc["tune_params_keys"] == source["tune_params_keys"]
    assert set(doc["cache"]) == set(source["cache"])  # the same keys Kernel Tuner wrote
    back = importer.read(path).frames[0]
    same_rows(original, back)
    assert set(back["source"]) == {f"kernel-tuner:{tmp_path.name}/A6000.json.gz"}


@pytest.mark.parametrize(("fmt", "relative", "n_rows"), [
    ("uci-sgemm", "uci-sgemm/sgemm_product.csv.gz", 300),
    ("neusight", "neusight/train/bmm/Tesla_V100-PCIE-32GB.csv.gz", 300),
])
def test_export_import_round_trip_of_csv_tables(tmp_path: Path, data: Path, fmt: str, relative: str,
                                                n_rows: int) -> None:
    path = csv_slice(data / relative, tmp_path / Path(relative).name.removesuffix(".gz"), n_rows)
    original = get_importer(fmt).read(path).frames[0]
    # a cache tunes one problem: NeuSight's varying shapes (and the cuBLAS kernel each got) are picked
    varying = [c for c in original if c.startswith("workload.") and original[c].nunique() > 1]
    problem = {c.removeprefix("workload."): original[c].iloc[0] for c in varying}
    selected = original[(original[varying] == original[varying].iloc[0]).all(axis=1)]
    exported = export_kernel_tuner_cache(original, tmp_path / "out.json", workload=problem or None).path
    same_rows(selected, get_importer("kernel-tuner").read(exported).frames[0])


def test_export_from_a_store_with_several_kinds(tmp_path: Path, data: Path) -> None:
    store = MeasurementStore(tmp_path / "store", create=True)
    path = csv_slice(data / "vidur" / "compute" / "a40" / "microsoft" / "phi-2" / "mlp.csv.gz",
                     tmp_path / "vidur" / "compute" / "a40" / "microsoft" / "phi-2" / "mlp.csv", 20)
    run_import("vidur", [path], store)
    run_import("kernel-tuner", [cache_slice(data / "kernel-tuner" / "gemm" / "RTX_3090.json.gz",
                                            tmp_path / "g.json", n=15)], store)
    with pytest.raises(InvalidInputError, match="one kind"):
        export_kernel_tuner_cache(store, tmp_path / "mixed.json")
    with pytest.raises(InvalidInputError, match="workload columns op, m, n, k vary"):
        export_kernel_tuner_cache(store, tmp_path / "gemm.json", kind="gemm")
    export = export_kernel_tuner_cache(store, tmp_path / "gemm.json", kind="gemm",
                                       workload={"op": "mlp_up_proj", "m": 4096})
    back = get_importer("kernel-tuner").read(export.path).frames[0]
    stored = store.load(kind="gemm")
    stored = stored[(stored["workload.op"] == "mlp_up_proj") & (stored["workload.m"] == 4096)]
    # ints survive the store's upcast; Vidur profiles some token counts twice, and a cache holds one
    # record per configuration, so the stored repeats ("<id>-<hash>") come back under their plain id
    assert len(stored) == 2 and (export.entries, export.repeated_configs, export.rows_left_out) == (1, 1, 1)
    assert set(back["measurement_id"]) == {i.split("-")[0] for i in stored["measurement_id"]}
    assert back["workload.m"].dtype.kind == "i"


def test_kernel_tuner_simulation_mode_reads_an_exported_cache(tmp_path: Path, data: Path) -> None:
    kernel_tuner = pytest.importorskip("kernel_tuner")
    path = csv_slice(data / "uci-sgemm" / "sgemm_product.csv.gz", tmp_path / "sgemm_product.csv", 400)
    exported = export_kernel_tuner_cache(get_importer("uci-sgemm").read(path).frames[0], tmp_path / "uci.json").path
    assert exported.read_text().endswith("}}}")  # Kernel Tuner's test for a properly closed cache
    doc = json.loads(exported.read_text())
    keys = doc["tune_params_keys"]

    def recorded(params: dict) -> bool:
        return ",".join(str(params[k]) for k in keys) in doc["cache"]

    with warnings.catch_warnings():  # "None of the tunable parameters specify thread block dimensions"
        warnings.simplefilter("ignore", UserWarning)
        results, _ = kernel_tuner.tune_kernel(
            doc["kernel_name"], "", doc["problem_size"], [], doc["tune_params"], restrictions=[recorded],
            cache=str(exported), simulation_mode=True, strategy="random_sample",
            strategy_options={"max_fevals": 10}, verbose=False, quiet=True)
    assert results
    for result in results:
        entry = doc["cache"][",".join(str(result[k]) for k in keys)]
        assert result["time"] == pytest.approx(entry["time"])
