"""Usability fixes of ``perfpred predict`` found by a QA pass: no prediction across device types
without --allow-other-device, prediction columns never cut (CSV where the table cannot fit),
--output in the format its suffix names, --json, the trained dtype as --dtype's default, --threads
refused for a GPU, the pass-through note only for columns not kept, and --coverage checked first
and named by the model's user-facing learner.

Small synthetic stores in tmp dirs; the models are small and trained once per module."""

from __future__ import annotations

import io
import json
import uuid
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from perfpred._predict_inputs import device_type, gemm_threads
from perfpred.collect.importers import gpu_hardware
from perfpred.datasets import Measurement, MeasurementStore
from perfpred.errors import InvalidInputError
from tests.test_cli import assert_one_line_error, invoke, run_main
from tests.test_cli_predict_errors import KERNEL_PARAMS, kernel_rows

# A CPU as perfpred's own collector fingerprints one (device "cpu", caches, peaks by microbenchmark).
CPU = {"arch": "x86_64", "caches_kib": {"l1d": 32, "l2": 1024, "l3": 32768}, "cpu_model": "Test CPU",
       "device": "cpu", "gpus": [], "hardware_id": "cpu-test-0123456789", "hardware_name": "Test CPU",
       "logical_cpus": 2, "mem_bw_gbs": 11.2, "memory_gib": 23.5, "peak_gflops": {"fp32": 32.7, "fp64": 19.3},
       "peaks_source": "microbenchmark", "peaks_threads": 1, "usable_cpus": 2}
A40 = gpu_hardware("NVIDIA A40")
H100 = "gpu-nvidia-h100-80gb-hbm3"


def cpu_gemm_rows() -> list[Measurement]:
    """fp32 and fp64 GEMMs on a CPU, timed by its roofline, one thread each."""
    rows, rng = [], np.random.default_rng(1)
    for _ in range(60):
        m, n, k = (int(2 ** rng.uniform(5, 10)) for _ in range(3))
        dtype = "fp32" if rng.random() < 0.5 else "fp64"
        ms = max(2 * m * n * k / (CPU["peak_gflops"][dtype] * 1e6), 8 * (m * k + k * n + m * n) / 11.2e6) + 0.002
        rows.append(Measurement(kind="gemm", workload={"m": m, "n": n, "k": k, "b": 1, "dtype": dtype,
                                                       "trans_a": False, "trans_b": False},
                                config={"backend": "numpy", "device": "cpu", "threads": 1},
                                hardware_id=CPU["hardware_id"], runtime_ms=ms, hardware=CPU, source="synthetic"))
    return rows


def gpu_fp16_rows() -> list[Measurement]:
    """fp16 GEMMs on one GPU, as Vidur's profiles record them: no CPU threads."""
    rows, rng = [], np.random.default_rng(2)
    for _ in range(60):
        m, n, k = (int(2 ** rng.uniform(6, 12)) for _ in range(3))
        ms = max(2 * m * n * k / (A40["peak_gflops"]["fp16"] * 1e6), 2 * (m * k + k * n + m * n) / 696e6) + 0.005
        rows.append(Measurement(kind="gemm", workload={"m": m, "n": n, "k": k, "b": 1, "dtype": "fp16"},
                                config={"backend": "torch"}, hardware_id=A40["hardware_id"], runtime_ms=ms,
                                hardware=A40, source="synthetic"))
    return rows


def train(store, *args: str) -> str:
    name = f"usable-{uuid.uuid4().hex[:8]}"
    invoke("train", "--store", str(store), "--split", "random", "--name", name, *args)
    return name


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict-usability")
    for kind, rows in (("cpu", cpu_gemm_rows()), ("gpu", gpu_fp16_rows()), ("kernel", kernel_rows())):
        MeasurementStore(root / kind, create=True).append(rows)
    return {"cpu": train(root / "cpu", "--model", "xgb-quantile"),  # a model with intervals
            "gpu": train(root / "gpu", "--model", "xgb"),
            "kernel": train(root / "kernel", "--kind", "kernel", "--model", "xgb")}


def predict(monkeypatch, capsys, *args: str, columns: int = 200):
    monkeypatch.setenv("COLUMNS", str(columns))
    return run_main(monkeypatch, capsys, "predict", *args)


def gemm(model: str, *args: str) -> list[str]:
    return ["--model", model, "--m", "512", "--n", "512", "--k", "512", *args]


def csv_file(tmp_path, text: str, name: str = "c.csv") -> str:
    (tmp_path / name).write_text(text)
    return str(tmp_path / name)


# ---------------------------------------------------------------------------- 1: across device types


def test_device_type_tells_cpus_from_gpus():
    assert device_type(CPU) == "cpu" and device_type(json.dumps(CPU)) == "cpu"
    assert device_type(A40) == "gpu"
    # perfpred's own CUDA row: the host's fingerprint, device cuda:0
    assert device_type({**CPU, "device": "cuda:0", "gpus": [{"index": 0, "gpu_name": "NVIDIA A40"}]}) == "gpu"
    # a CPU row of a host with a GPU it did not run on
    assert device_type({**CPU, "gpus": [{"index": 0, "gpu_name": "NVIDIA A40"}]}) == "cpu"
    assert device_type({"peak_gflops": {"fp32": 1.0}}, "gpu-bare") == "gpu"
    assert device_type({"peak_gflops": {"fp32": 1.0}}, "my-box") is None


def test_a_cpu_model_refuses_a_gpu_unless_asked(monkeypatch, capsys, models):
    code, out, err = predict(monkeypatch, capsys, *gemm(models["cpu"], "--hardware-id", H100))
    assert_one_line_error(code, out, err, "CPU rows only", CPU["hardware_id"], f"--hardware-id {H100}", "a GPU",
                          "--allow-other-device")
    code, out, err = predict(monkeypatch, capsys, *gemm(models["cpu"], "--hardware-id", H100, "--allow-other-device"))
    assert code == 0 and "predicted runtime_ms" in out, err
    text = " ".join(err.split())
    assert "WARNING: --allow-other-device" in text and "a GPU" in text and "orders of magnitude" in text, err


def test_a_gpu_model_refuses_a_cpu_spec(monkeypatch, capsys, tmp_path, models):
    spec = tmp_path / "cpu.json"
    spec.write_text(json.dumps({**CPU, "hardware_id": "cpu-other"}))
    code, out, err = predict(monkeypatch, capsys, *gemm(models["gpu"], "--hardware-spec", str(spec)))
    assert_one_line_error(code, out, err, "GPU rows only", A40["hardware_id"], "cpu-other", "a CPU",
                          "--allow-other-device")


def test_another_gpu_of_a_gpu_model_is_still_predicted(monkeypatch, capsys, models):
    code, out, err = predict(monkeypatch, capsys, *gemm(models["gpu"], "--hardware-id", H100))
    assert code == 0 and f"on {H100}" in " ".join(out.split()), err
    assert "--allow-other-device" not in err


# ---------------------------------------------------------------------------- 2: the table, --output, --json


def kernel_csv(tmp_path) -> str:
    return csv_file(tmp_path, f"id,{KERNEL_PARAMS}\na7,16,1,1,0,row\nb9,128,4,2,1,col\n")


def test_a_table_too_wide_is_printed_whole_as_csv(monkeypatch, capsys, tmp_path, models):
    code, out, err = predict(monkeypatch, capsys, "--model", models["kernel"], "--input", kernel_csv(tmp_path),
                             "--keep", "id", columns=50)
    assert code == 0, err
    pred = pd.read_csv(io.StringIO(out))
    assert list(pred.columns) == ["id", *KERNEL_PARAMS.split(","), "predicted_runtime_ms"]
    assert pred["id"].tolist() == ["a7", "b9"] and (pred["predicted_runtime_ms"] > 0).all()
    assert err.strip() == "", err  # piped: the CSV alone (a terminal also gets a note on stderr)


@pytest.mark.parametrize("columns", [70, 80, 200])
def test_a_table_that_fits_keeps_its_prediction_column_whole(monkeypatch, capsys, tmp_path, models, columns):
    code, out, err = predict(monkeypatch, capsys, "--model", models["kernel"], "--input", kernel_csv(tmp_path),
                             "--keep", "id", columns=columns)
    assert code == 0, err
    lines = out.splitlines()
    assert all(len(line) <= columns for line in lines), out
    assert any("predicted_runtime_ms" in line for line in lines), out  # the name on one line, not folded
    assert all(line.rstrip()[-1] in "┓┃┩│┘" for line in lines if line.strip()), out  # the right border: nothing cut


@pytest.mark.parametrize("suffix", [".json", ".parquet", ".csv"])
def test_output_is_written_in_the_format_its_suffix_names(monkeypatch, capsys, tmp_path, models, suffix):
    output = tmp_path / f"p{suffix}"
    code, _, err = predict(monkeypatch, capsys, "--model", models["kernel"], "--input", kernel_csv(tmp_path),
                           "--keep", "id", "--output", str(output))
    assert code == 0, err
    if suffix == ".json":
        records = json.loads(output.read_text())
        assert [r["id"] for r in records] == ["a7", "b9"] and all(r["predicted_runtime_ms"] > 0 for r in records)
    else:
        pred = pd.read_parquet(output) if suffix == ".parquet" else pd.read_csv(output)
        assert pred["id"].tolist() == ["a7", "b9"] and (pred["predicted_runtime_ms"] > 0).all()


def test_an_output_of_another_suffix_is_refused_before_the_model_loads(monkeypatch, capsys, tmp_path):
    code, out, err = predict(monkeypatch, capsys, "--model", "no-such-model", "--input",
                             csv_file(tmp_path, "m,n,k\n64,64,64\n"), "--output", str(tmp_path / "p.txt"))
    assert_one_line_error(code, out, err, "--output", ".csv, .json, .parquet", "p.txt")
    assert not (tmp_path / "p.txt").exists()


def test_json_prints_one_object_for_one_gemm(monkeypatch, capsys, models):
    code, out, err = predict(monkeypatch, capsys, *gemm(models["cpu"], "--json", "--coverage", "0.8"))
    assert code == 0, err
    record = json.loads(out)
    assert record["inputs"] == {"m": 512, "n": 512, "k": 512, "b": 1, "dtype": "fp32", "threads": 1,
                                "trans_a": False, "trans_b": False}
    assert record["target"] == "runtime_ms" and record["unit"] == "ms" and record["prediction"] > 0
    assert record["hardware_id"] == CPU["hardware_id"]
    band = record["interval"]
    assert band["coverage"] == 0.8 and 0 < band["lower"] <= band["upper"]
    code, out, err = predict(monkeypatch, capsys, *gemm(models["cpu"], "--json"))
    assert code == 0 and "interval" not in json.loads(out), err


def test_json_prints_records_for_an_input_and_is_refused_with_output(monkeypatch, capsys, tmp_path, models):
    code, out, err = predict(monkeypatch, capsys, "--model", models["kernel"], "--input", kernel_csv(tmp_path),
                             "--keep", "id", "--json")
    assert code == 0, err
    assert [r["id"] for r in json.loads(out)] == ["a7", "b9"]
    code, out, err = predict(monkeypatch, capsys, "--model", models["kernel"], "--input", kernel_csv(tmp_path),
                             "--json", "--output", str(tmp_path / "p.json"))
    assert_one_line_error(code, out, err, "--json", "--output")


# ---------------------------------------------------------------------------- 3: the trained dtype


def test_dtype_defaults_to_the_one_the_training_rows_hold(monkeypatch, capsys, tmp_path, models):
    code, out, err = predict(monkeypatch, capsys, *gemm(models["gpu"], "--json"))
    assert code == 0 and "never occurs" not in err, err
    assert json.loads(out)["inputs"]["dtype"] == "fp16"
    code, out, err = predict(monkeypatch, capsys, *gemm(models["gpu"]))
    assert code == 0 and " fp16" in out and "fp32" not in out + err, err
    # an --input without a dtype column: the trained dtype too
    code, out, err = predict(monkeypatch, capsys, "--model", models["gpu"], "--input",
                             csv_file(tmp_path, "m,n,k\n512,512,512\n"), "--json")
    assert code == 0 and "never occurs" not in err, err
    assert json.loads(out)[0]["dtype"] == "fp16"
    # rows of several dtypes: fp32, as before
    code, out, err = predict(monkeypatch, capsys, *gemm(models["cpu"], "--json"))
    assert code == 0 and json.loads(out)["inputs"]["dtype"] == "fp32", err


def test_gemm_options_with_an_input_are_refused(monkeypatch, capsys, tmp_path, models):
    code, out, err = predict(monkeypatch, capsys, "--model", models["gpu"], "--input",
                             csv_file(tmp_path, "m,n,k\n512,512,512\n"), "--dtype", "fp16")
    assert_one_line_error(code, out, err, "--dtype", "--m/--n/--k", "column dtype")


# ---------------------------------------------------------------------------- 4: threads on a GPU


def test_threads_are_refused_for_a_gpu_only_model(monkeypatch, capsys, tmp_path, models):
    code, out, err = predict(monkeypatch, capsys, *gemm(models["gpu"], "--threads", "8"))
    assert_one_line_error(code, out, err, "--threads", "GPU", A40["hardware_id"], "GPU rows only", "8")
    code, out, err = predict(monkeypatch, capsys, "--model", models["gpu"], "--input",
                             csv_file(tmp_path, "m,n,k,threads\n512,512,512,4\n"))
    assert_one_line_error(code, out, err, "row 1 (line 2)", "'threads'", "GPU rows only")
    code, out, err = predict(monkeypatch, capsys, *gemm(models["gpu"]))
    assert code == 0 and "thread" not in out, out  # nothing about threads for a GPU
    code, out, err = predict(monkeypatch, capsys, *gemm(models["cpu"], "--threads", "2"))
    assert code == 0 and "2 thread(s)" in out, err


def test_threads_for_a_gpu_of_a_mixed_model_are_ignored_with_a_warning(capsys):
    est = SimpleNamespace(hardware_specs_={CPU["hardware_id"]: json.dumps(CPU), A40["hardware_id"]: json.dumps(A40)})
    configs = [{"m": 8, "n": 8, "k": 8, "threads": 8}]
    gemm_threads(est, "mixed", configs, A40["hardware_id"], "gpu", None, [])
    assert "threads" not in configs[0]
    err = " ".join(capsys.readouterr().err.split())
    assert "--threads" in err and "ignored" in err
    gpu_only = SimpleNamespace(hardware_specs_={A40["hardware_id"]: json.dumps(A40)})
    with pytest.raises(InvalidInputError, match="GPU rows only"):
        gemm_threads(gpu_only, "g", [{"m": 8, "n": 8, "k": 8, "threads": 8}], A40["hardware_id"], "gpu", None, [])


# ---------------------------------------------------------------------------- 5: the pass-through note


def test_kept_columns_are_not_noted(monkeypatch, capsys, tmp_path, models):
    code, _, err = predict(monkeypatch, capsys, "--model", models["kernel"], "--input", kernel_csv(tmp_path),
                           "--keep", "id", "--output", str(tmp_path / "p.csv"))
    assert code == 0 and err.strip() == "", err
    path = csv_file(tmp_path, f"id,{KERNEL_PARAMS},runtime_ms\na7,16,1,1,0,row,3.5\n", "m.csv")
    code, _, err = predict(monkeypatch, capsys, "--model", models["kernel"], "--input", path, "--keep", "id",
                           "--output", str(tmp_path / "p.csv"))
    text = " ".join(err.split())
    assert code == 0 and "column(s) runtime_ms pass through" in text and "id" not in text, err


# ---------------------------------------------------------------------------- 6: --coverage of a point model


def test_coverage_of_a_point_model_names_its_learner_before_any_column_error(monkeypatch, capsys, tmp_path, models):
    code, out, err = predict(monkeypatch, capsys, "--model", models["kernel"], "--input", kernel_csv(tmp_path),
                             "--coverage", "0.9")  # no --keep id: 'id' would be an unknown column
    assert_one_line_error(code, out, err, "--coverage", "--model xgb", "xgb-quantile", "xgb-ensemble")
    assert "Regressor" not in err and "'id'" not in err


def test_the_api_names_the_regressor_as_asked():
    from perfpred.models import PerformanceModel
    from tests.test_api_model_checks import kernel_table

    rows = kernel_table()
    model = PerformanceModel(kind="kernel", regressor="xgb").fit(rows.iloc[:40])
    with pytest.raises(InvalidInputError, match=r"this model's is 'xgb'$"):
        model.predict_interval(rows.iloc[:2])


def test_warnings_past_the_third_name_each_column_with_all_its_values(capsys):
    """The fourth and later warnings are summed up in one line: each column with every value it
    named ("workload.k=4096, 16384"), not the first word of each ("workload.k=4096,")."""
    from types import SimpleNamespace

    from perfpred._predict_inputs import warn_outside_training

    lines = [f"workload.{c}=1, 2 lie far outside the training rows' 16..2048 (2 row(s)): an extrapolation"
             for c in "abc"]
    lines += ["workload.k=4096, 16384 lie far outside the training rows' 16..2048 (2 row(s)): an extrapolation",
              "config.threads=2 is not among the trained values 1 (1 row(s)): no training row ran it"]
    warn_outside_training(SimpleNamespace(input_warnings=lambda rows: lines), None)
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.endswith("also outside the training rows: workload.k=4096, 16384; config.threads=2"), last
