"""Fixes of ``perfpred train / evaluate / predict`` found by a QA pass: a GEMM model predicting a GPU
it never saw from its spec, the roofline refused where it describes nothing, warnings for kernel
inputs never trained on, YAML inputs, the train hint per kind, energy per request, interval
coverage in evaluate, and --input columns passed through to the output.

Small synthetic stores in tmp dirs; the models are small and trained once per module."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from perfpred.cli import app
from perfpred.collect.importers import gpu_hardware
from perfpred.datasets import Measurement, MeasurementStore
from perfpred.errors import InvalidInputError
from perfpred.models import PerformanceModel, evaluate_models
from tests.test_api_model_checks import fast_model, kernel_table
from tests.test_cli import assert_one_line_error, invoke, run_main
from tests.test_cli_predict_errors import KERNEL_PARAMS, kernel_rows, serving_rows

TRAINED_GPUS = ("Tesla T4", "Tesla V100-PCIE-32GB", "NVIDIA A100-PCIE-40GB")  # in perfpred's spec table
# NVIDIA's L4 sheet in NeuSight's device_configs layout: perfpred's spec table knows the L4's peaks,
# but not its SM count or L2, which the gemm-gpu features read.
runner = CliRunner()
L4_SHEET = {"Device": "NVIDIA L4", "Dev_Mem": 24, "Mem_Bw": 300, "Num_Sm": 60, "Core_Per_SM": 128, "Freq": 2040,
            "SingleFLOPs": 31334, "L2Cache": 48}


def gpu_gemm_rows() -> list[Measurement]:
    """fp32 GEMMs on three GPUs of the spec table, timed by their roofline (plus a launch floor)."""
    rows = []
    rng = np.random.default_rng(0)
    for name in TRAINED_GPUS:
        spec = gpu_hardware(name)
        for _ in range(40):
            m, n, k = (int(2 ** rng.uniform(6, 12)) for _ in range(3))
            ms = max(2 * m * n * k / (spec["peak_gflops"]["fp32"] * 1e6),
                     4 * (m * k + k * n + m * n) / (spec["mem_bw_gbs"] * 1e6)) + 0.005
            # B transposed in every row, as NeuSight's linear layers record it
            rows.append(Measurement(kind="gemm", workload={"m": m, "n": n, "k": k, "dtype": "fp32", "trans_b": True},
                                    config={"backend": "torch"}, hardware_id=spec["hardware_id"], runtime_ms=ms,
                                    hardware=spec, source="synthetic"))
    return rows


def energy_rows() -> list[Measurement]:
    """LLM serving rows as the ML.ENERGY importer writes them: energy_j is a request's energy."""
    rows = []
    for row in serving_rows():
        itl = row.metrics["itl_p50_ms"]
        per_token = 0.002 * itl
        out_tokens = 300 + 200 * len(row.workload["model"]) % 7  # the LLM's answers, not the deployment
        rows.append(Measurement(kind="serving", workload=row.workload, config=row.config, hardware_id=row.hardware_id,
                                hardware=row.hardware, energy_j=per_token * out_tokens, power_source="recorded",
                                source="synthetic",
                                metrics={"energy_per_token_j": per_token, "avg_output_len_tokens": out_tokens}))
    return rows


def train(store, *args: str) -> tuple[str, str]:
    name = f"fixes-{uuid.uuid4().hex[:8]}"
    result = invoke("train", "--store", str(store), "--split", "random", "--name", name, *args)
    return name, " ".join(result.output.split())


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict-fixes")
    for kind, rows in (("kernel", kernel_rows()), ("gpu-gemm", gpu_gemm_rows()), ("energy", energy_rows())):
        MeasurementStore(root / kind, create=True).append(rows)
    return {kind: root / kind for kind in ("kernel", "gpu-gemm", "energy")}


@pytest.fixture(scope="module")
def models(stores):
    gemm, gemm_output = train(stores["gpu-gemm"], "--kind", "gemm-gpu", "--model", "xgb")
    kernel, _ = train(stores["kernel"], "--kind", "kernel", "--model", "xgb")
    return {"gemm-gpu": gemm, "gemm-gpu-output": gemm_output, "kernel": kernel}


def predict_file(monkeypatch, capsys, tmp_path, model: str, name: str, text: str, *args: str):
    path = tmp_path / name
    path.write_text(text)
    return run_main(monkeypatch, capsys, "predict", "--model", model, "--input", str(path), *args)


# ---------------------------------------------------------------------------- 1: a GPU never trained on


def test_a_gemm_gpu_model_predicts_a_gpu_of_the_spec_table_with_a_warning(monkeypatch, capsys, models):
    code, out, err = run_main(monkeypatch, capsys, "predict", "--model", models["gemm-gpu"], "--hardware-id",
                              "gpu-nvidia-h100-80gb-hbm3", "--m", "4096", "--n", "4096", "--k", "4096")
    assert code == 0, err
    assert "predicted runtime_ms" in out and "gpu-nvidia-h100-80gb-hbm3" in " ".join(out.split())
    warning = " ".join(err.split())
    assert "was not trained on gpu-nvidia-h100-80gb-hbm3" in warning and "spec table" in warning, err


def test_a_gemm_layout_not_given_is_the_trained_one(monkeypatch, capsys, models):
    gemm = ["predict", "--model", models["gemm-gpu"], "--m", "1024", "--n", "1024", "--k", "1024"]
    code, _, err = run_main(monkeypatch, capsys, *gemm, "--hardware-id", "gpu-nvidia-a100-sxm4-40gb")
    assert code == 0 and "trans_b" not in err, err
    code, _, err = run_main(monkeypatch, capsys, *gemm, "--no-trans-b", "--hardware-id", "gpu-nvidia-a100-sxm4-40gb")
    assert code == 0 and "workload.trans_b=False differs" in " ".join(err.split()), err


def test_a_spec_lacking_what_the_features_read_is_refused_and_a_spec_file_supplies_it(monkeypatch, capsys, tmp_path,
                                                                                      models):
    gemm = ["--m", "2048", "--n", "2048", "--k", "2048"]
    code, out, err = run_main(monkeypatch, capsys, "predict", "--model", models["gemm-gpu"], "--hardware-id",
                              "gpu-nvidia-l4", *gemm)  # the spec table knows the L4's SMs and L2 too
    assert code == 0 and "on gpu-nvidia-l4" in " ".join(out.split()), err
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps({"peak_gflops": {"fp32": 30000.0}, "mem_bw_gbs": 300.0}))
    code, out, err = run_main(monkeypatch, capsys, "predict", "--model", models["gemm-gpu"], "--hardware-spec",
                              str(bare), "--hardware-id", "gpu-bare", *gemm)
    assert_one_line_error(code, out, err, "gpu-bare", "lacks sm_count")
    sheet = tmp_path / "NVIDIA_L4.json"
    sheet.write_text(json.dumps(L4_SHEET))
    code, out, err = run_main(monkeypatch, capsys, "predict", "--model", models["gemm-gpu"], "--hardware-spec",
                              str(sheet), *gemm)
    assert code == 0, err
    assert "on gpu-nvidia-l4" in " ".join(out.split()) and "not trained on gpu-nvidia-l4" in " ".join(err.split())
    # a spec of perfpred's own keys, named by --hardware-id
    own = tmp_path / "own.json"
    own.write_text(json.dumps({"peak_gflops": {"fp32": 30000.0}, "mem_bw_gbs": 300.0, "sm_count": 58,
                               "l2_cache_kib": 49152}))
    code, out, err = run_main(monkeypatch, capsys, "predict", "--model", models["gemm-gpu"], "--hardware-spec",
                              str(own), "--hardware-id", "gpu-my-l4", *gemm)
    assert code == 0 and "on gpu-my-l4" in " ".join(out.split()), err


@pytest.mark.parametrize(
    ("spec", "extra", "needles"),
    [
        (None, ["--hardware-id", "gpu-bogus"], ["--hardware-id", "'gpu-bogus'", "spec table", "--hardware-spec"]),
        ({"peak_gflops": {"fp32": 1000.0}}, [], ["no hardware_id", "--hardware-id"]),
        ({"hardware_id": "gpu-x", "peak_gflops": {"fp32": -1}}, [], ["peak_gflops.fp32 > 0", "-1"]),
        ([1, 2], [], ["JSON object", "list"]),
        ({"hardware_id": "gpu-tesla-t4"}, [], ["gpu-tesla-t4", "trained on", "leave --hardware-spec out"]),
    ],
    ids=["unknown-id", "no-id", "bad-peak", "not-an-object", "trained-gpu"],
)
def test_a_gpu_without_a_usable_spec_is_one_line(monkeypatch, capsys, tmp_path, models, spec, extra, needles):
    args = list(extra)
    if spec is not None:
        (tmp_path / "spec.json").write_text(json.dumps(spec))
        args += ["--hardware-spec", str(tmp_path / "spec.json")]
    code, out, err = run_main(monkeypatch, capsys, "predict", "--model", models["gemm-gpu"], *args, "--m", "64",
                              "--n", "64", "--k", "64")
    assert_one_line_error(code, out, err, *needles)


def test_a_kernel_model_keeps_to_its_hardware(monkeypatch, capsys, tmp_path, models):
    code, out, err = predict_file(monkeypatch, capsys, tmp_path, models["kernel"], "c.csv",
                                  f"{KERNEL_PARAMS}\n16,1,1,0,row\n", "--hardware-id", "gpu-nvidia-h100-80gb-hbm3")
    assert_one_line_error(code, out, err, "--hardware-id", "kernel model", "predicts only that",
                          "'gpu-nvidia-h100-80gb-hbm3'")
    (tmp_path / "l4.json").write_text(json.dumps(L4_SHEET))
    code, out, err = predict_file(monkeypatch, capsys, tmp_path, models["kernel"], "c.csv",
                                  f"{KERNEL_PARAMS}\n16,1,1,0,row\n", "--hardware-spec", str(tmp_path / "l4.json"))
    assert_one_line_error(code, out, err, "--hardware-spec", "kernel model", "predicts only that")


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_help_names_every_kind_and_what_hardware_id_takes(command):
    from perfpred.models import FEATURIZERS

    text = runner.invoke(app, [command, "--help"], env={"COLUMNS": "2000"}).output
    for kind in FEATURIZERS:
        assert kind in text, kind
    text = runner.invoke(app, ["predict", "--help"], env={"COLUMNS": "2000"}).output
    assert "GPU of perfpred's spec table" in text and "--hardware-spec" in text


# ---------------------------------------------------------------------------- 2: the roofline


@pytest.mark.parametrize(
    "args",
    [["train", "--kind", "kernel", "--model", "roofline"],
     ["evaluate", "--kind", "kernel", "--models", "xgb,roofline"]],
    ids=["train", "evaluate"],
)
def test_the_roofline_is_refused_for_kernel_rows_before_any_fit(monkeypatch, capsys, stores, args):
    import perfpred.models._evaluation

    monkeypatch.setattr(perfpred.models._evaluation, "_score", lambda *a, **k: pytest.fail("a fit ran"))
    command, *rest = args
    code, out, err = run_main(monkeypatch, capsys, command, "--store", str(stores["kernel"]), *rest)
    assert_one_line_error(code, out, err, "'roofline'", "GEMM rows only", "kind='kernel'")


def test_the_roofline_takes_gemm_rows_and_a_time_target_only():
    assert PerformanceModel(kind="gemm-gpu", regressor="roofline").make_regressor() is not None
    with pytest.raises(InvalidInputError, match=r"GEMM rows only .* kind='serving'"):
        PerformanceModel(kind="serving", regressor="roofline").make_regressor()
    with pytest.raises(InvalidInputError, match=r"predicts a time.*target='energy_j'"):
        PerformanceModel(regressor="roofline", target="energy_j").make_regressor()


# ---------------------------------------------------------------------------- 3: kernel inputs never trained on


def test_a_kernel_model_warns_on_values_far_outside_or_never_recorded():
    model = fast_model(kind="kernel").fit(kernel_table())  # block_size_x 16, 32, 48, 64, 128
    rows = kernel_table().iloc[:5].assign(**{"config.block_size_x": [9999, 1, 7, 40, 48]})
    warnings = model.input_warnings(rows)
    far = [w for w in warnings if "far outside" in w]
    assert len(far) == 1 and "config.block_size_x=9999, 1, 7 lie far outside" in far[0] and "3 row(s)" in far[0]
    unseen = [w for w in warnings if "not among the trained values" in w]
    assert len(unseen) == 1 and "config.block_size_x=40 " in unseen[0] and "16, 32, 48, 64, 128" in unseen[0]
    assert model.input_warnings(kernel_table().iloc[:5]) == []  # recorded values: nothing to say


def test_predict_warns_on_kernel_inputs_never_trained_on(monkeypatch, capsys, tmp_path, models):
    code, _, err = predict_file(monkeypatch, capsys, tmp_path, models["kernel"], "c.csv",
                                f"{KERNEL_PARAMS},workload.problem_size_x\n9999,1,1,0,row,4096\n"
                                "1,1,1,0,row,4096\n24,1,1,0,row,8192\n")
    assert code == 0, err
    text = " ".join(err.split())
    assert "config.block_size_x=9999, 1 lie far outside the training rows' 16..128" in text, err
    assert "config.block_size_x=24 is not among the trained values 16, 32, 64, 128" in text, err
    assert "workload.problem_size_x=8192 differs from the one value the training rows hold, 4096" in text, err


# ---------------------------------------------------------------------------- 4: YAML inputs


def test_predict_reads_a_yaml_list_of_configs(monkeypatch, capsys, tmp_path, models):
    text = "- {block_size_x: 16, block_size_y: 1, tile_size_x: 1, use_shmem: 0, layout: row}\n" \
           "- block_size_x: 32\n  block_size_y: 2\n  tile_size_x: 1\n  use_shmem: 1\n  layout: col\n"
    output = tmp_path / "pred.csv"
    code, _, err = predict_file(monkeypatch, capsys, tmp_path, models["kernel"], "few.yaml", text,
                                "--output", str(output))
    assert code == 0 and err.strip() == "", err
    pred = pd.read_csv(output)
    assert pred["block_size_x"].tolist() == [16, 32] and (pred["predicted_runtime_ms"] > 0).all()


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("block_size_x: 16\n", ["few.yml", "list of mappings", "dict"]),
        ("- {block_size_x: [16, 32]}\n", ["row 1 (line 1)", "'block_size_x'", "one value"]),
        ("- {block_size_x: 16\n", ["few.yml", "unreadable YAML"]),
        ("- {block_size_x: 16, block_size_y: 1, tile_size_x: 1, use_shmem: 0, layout: row}\n- {block_size_x: 32}\n",
         ["row 2 (line 2)", "'block_size_y'", "empty cell"]),
    ],
    ids=["not-a-list", "nested", "unreadable", "missing-key"],
)
def test_a_bad_yaml_input_is_one_line(monkeypatch, capsys, tmp_path, models, text, needles):
    code, out, err = predict_file(monkeypatch, capsys, tmp_path, models["kernel"], "few.yml", text)
    assert_one_line_error(code, out, err, *needles)


# ---------------------------------------------------------------------------- 5: the hint after train


def test_train_hints_a_gemm_prediction_for_a_gemm_gpu_model(models):
    text = models["gemm-gpu-output"]
    assert "--m 1024 --n 1024 --k 1024" in text and "--hardware-id gpu-" in text
    assert "tuning parameter" not in text and "tune from it" not in text


# ---------------------------------------------------------------------------- 6: energy per request


def test_energy_j_of_llm_serving_rows_warns_to_predict_energy_per_token(monkeypatch, capsys, stores):
    args = ["evaluate", "--store", str(stores["energy"]), "--kind", "serving", "--models", "rf", "--seeds", "0",
            "--split", "random"]
    code, _, err = run_main(monkeypatch, capsys, *args, "--target", "energy_j")
    assert code == 0, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "--target metric.energy_per_token_j" in lines[0] and "energy_j" in lines[0], err
    code, _, err = run_main(monkeypatch, capsys, *args, "--target", "metric.energy_per_token_j")
    assert code == 0 and "energy_per_token_j" not in err, err


# ---------------------------------------------------------------------------- 7: interval coverage


def test_evaluate_reports_the_held_out_coverage_of_interval_models(monkeypatch, capsys, stores, tmp_path):
    output = tmp_path / "ev.json"
    result = runner.invoke(app, ["evaluate", "--store", str(stores["kernel"]), "--kind", "kernel", "--models",
                                 "xgb-quantile,rf", "--seeds", "0", "--split", "random", "--coverage", "0.8",
                                 "--output", str(output)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "in 80% band %" in result.output and "band width / pred" in result.output
    data = json.loads(output.read_text())
    quantile = data["xgb-quantile"]["mean"]
    assert 0 <= quantile["interval_coverage_pct"] <= 100 and quantile["interval_width_rel"] > 0
    assert "interval_coverage_pct" not in data["rf"]["mean"]
    code, out, err = run_main(monkeypatch, capsys, "evaluate", "--store", str(stores["kernel"]), "--kind", "kernel",
                              "--models", "rf", "--coverage", "1.5")
    assert_one_line_error(code, out, err, "0 < coverage < 1", "1.5")


def test_evaluate_models_scores_bands_only_when_asked():
    rows = kernel_table()
    models = {"ens": PerformanceModel(kind="kernel", regressor="xgb-ensemble")}
    plain = evaluate_models(rows, models, split="random", seeds=(0,))["ens"]["mean"]
    assert "interval_coverage_pct" not in plain
    banded = evaluate_models(rows, models, split="random", seeds=(0,), coverage=0.9)["ens"]["mean"]
    assert 0 <= banded["interval_coverage_pct"] <= 100 and banded["mape_pct"] == plain["mape_pct"]


# ---------------------------------------------------------------------------- 8: columns that only pass through


def test_measured_and_kept_columns_pass_through_to_the_output(monkeypatch, capsys, tmp_path, models):
    output = tmp_path / "pred.csv"
    code, _, err = predict_file(monkeypatch, capsys, tmp_path, models["kernel"], "c.csv",
                                f"id,{KERNEL_PARAMS},runtime_ms\na7,16,1,1,0,row,3.5\nb9,32,2,1,1,col,2.25\n",
                                "--keep", "id", "--output", str(output))
    assert code == 0, err
    lines = [line for line in err.splitlines() if line.strip()]
    # --keep id asked for id; only runtime_ms passes through unasked
    assert len(lines) == 1 and "runtime_ms pass through" in lines[0] and "id," not in lines[0], err
    pred = pd.read_csv(output)
    assert list(pred.columns) == ["id", *KERNEL_PARAMS.split(","), "runtime_ms", "predicted_runtime_ms"]
    assert pred["id"].tolist() == ["a7", "b9"] and pred["runtime_ms"].tolist() == [3.5, 2.25]


def test_a_kept_column_the_model_reads_stays_an_input(monkeypatch, capsys, tmp_path, models):
    first = KERNEL_PARAMS.split(",")[0]
    output = tmp_path / "pred.csv"
    code, _, err = predict_file(monkeypatch, capsys, tmp_path, models["kernel"], "c.csv",
                                f"id,{KERNEL_PARAMS}\na7,16,1,1,0,row\n", "--keep", f"id,{first}",
                                "--output", str(output))
    assert code == 0, err
    assert first not in " ".join(err.split()).split("pass through")[0].split("note:")[-1], err
    assert pd.read_csv(output)[first].tolist() == [16]


@pytest.mark.parametrize(
    ("header", "extra", "needles"),
    [
        ("id", [], ["'id'", "no training row", "--keep NAME"]),
        ("block_size_z", [], ["'block_size_z'", "did you mean"]),
        ("id", ["--keep", "label"], ["--keep", "'label'", "lacks"]),
    ],
    ids=["unknown-column", "misspelt-parameter", "keep-a-missing-column"],
)
def test_other_columns_are_still_refused(monkeypatch, capsys, tmp_path, models, header, extra, needles):
    code, out, err = predict_file(monkeypatch, capsys, tmp_path, models["kernel"], "c.csv",
                                  f"{KERNEL_PARAMS},{header}\n16,1,1,0,row,7\n", *extra)
    assert_one_line_error(code, out, err, *needles)


def test_a_gemm_csv_passes_its_measured_time_through(monkeypatch, capsys, tmp_path, models):
    code, out, err = predict_file(monkeypatch, capsys, tmp_path, models["gemm-gpu"], "g.csv",
                                  "m,n,k,runtime_ms\n512,512,512,0.25\n", "--hardware-id", "gpu-tesla-t4")
    assert code == 0 and "runtime_ms pass through" in " ".join(err.split()), err
    assert "0.25" in out


def test_warnings_beyond_three_still_name_their_columns(capsys):
    from perfpred._predict_inputs import warn_outside_training

    class Est:
        def input_warnings(self, rows):
            return [f"config.p{i}={i} lies far outside the training rows' 16..256 (1 row(s))" for i in range(5)]

    warn_outside_training(Est(), None)
    err = " ".join(capsys.readouterr().err.split())
    assert "also outside the training rows: config.p3=3; config.p4=4" in err
