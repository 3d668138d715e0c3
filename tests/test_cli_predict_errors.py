"""One-line errors (and warnings) of ``perfpred predict/train/evaluate/env/dataset ls`` on bad input.

Small synthetic stores (kernel, GEMM, serving, operator rows) in tmp dirs; the models are trained
once per module through the CLI. Each error is checked to be one line naming the rule and value,
raised before the expensive step where the command has one (a fit, a prediction, a model load).
"""

from __future__ import annotations

import uuid

import pandas as pd
import pytest
from typer.testing import CliRunner

from perfpred.cli import app
from perfpred.datasets import Measurement, MeasurementStore
from tests.test_cli import assert_one_line_error, run_main

runner = CliRunner()

GPU = {"hardware_id": "gpu-synthetic-0000000009", "gpu_name": "Synthetic GPU", "sm_count": 40, "memory_gib": 80.0,
       "peak_gflops": {"fp32": 20000.0, "fp16": 80000.0, "bf16": 80000.0}, "mem_bw_gbs": 1000.0}
KERNEL_PARAMS = "block_size_x,block_size_y,tile_size_x,use_shmem,layout"
SERVING_COLUMNS = "model,task,total_params_b,activated_params_b,precision,max_num_seqs,tensor_parallel,num_gpus"


def kernel_rows() -> list[Measurement]:
    rows = []
    for bx in (16, 32, 64, 128):
        for by in (1, 2, 4):
            for tx in (1, 2):
                for shmem in (0, 1):
                    for layout in ("row", "col"):
                        ms = 1.0 + 64 / bx + 0.3 * by + 0.2 * tx + 0.5 * shmem + (0.1 if layout == "col" else 0.0)
                        rows.append(Measurement(
                            kind="kernel", workload={"kernel_name": "toy", "problem_size_x": 4096},
                            config={"block_size_x": bx, "block_size_y": by, "tile_size_x": tx, "use_shmem": shmem,
                                    "layout": layout},
                            hardware_id=GPU["hardware_id"], runtime_ms=ms, hardware=GPU, source="synthetic"))
    return rows


def serving_rows() -> list[Measurement]:
    rows = []
    for name, size in (("org/a-1b", 1), ("org/b-3b", 3), ("org/c-8b", 8), ("org/d-14b", 14)):
        for seqs in (8, 16, 32, 64, 128, 256):
            for tp in (1, 2):
                itl = 2.0 + 0.8 * size / tp + 0.01 * seqs
                rows.append(Measurement(
                    kind="serving", workload={"model": name, "task": "chat", "total_params_b": size,
                                              "activated_params_b": size, "precision": "bfloat16"},
                    config={"max_num_seqs": seqs, "tensor_parallel": tp, "num_gpus": tp},
                    hardware_id=GPU["hardware_id"], metrics={"itl_p50_ms": itl}, hardware=GPU, source="synthetic"))
    return rows


def train(store, *args: str) -> str:
    name = f"errors-{uuid.uuid4().hex[:8]}"
    result = runner.invoke(app, ["train", "--store", str(store), "--model", "xgb", "--split", "random", "--name", name,
                                 *args])
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return name


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    from conftest import make_gemm_table as gemm_table

    root = tmp_path_factory.mktemp("predict-errors")
    kernel = MeasurementStore(root / "kernel", create=True)
    kernel.append(kernel_rows())
    gemm = MeasurementStore(root / "gemm", create=True)
    table = gemm_table(240, seed=3)
    gemm.append_frame(table[table["workload.dtype"] == "fp32"])  # fp64 has peaks, but no training row
    serving = MeasurementStore(root / "serving", create=True)
    serving.append(serving_rows())
    operator = MeasurementStore(root / "operator", create=True)
    operator.append([Measurement(kind="operator", workload={"op": "rmsnorm", "num_tokens": t, "n_embd": 4096},
                                 config={"tensor_parallel": 1}, hardware_id=GPU["hardware_id"],
                                 runtime_ms=0.01 * t, hardware=GPU, source="synthetic") for t in range(1, 40)])
    return {"kernel": root / "kernel", "gemm": root / "gemm", "serving": root / "serving",
            "operator": root / "operator"}


@pytest.fixture(scope="module")
def models(stores):
    return {"kernel": train(stores["kernel"], "--kind", "kernel"), "gemm": train(stores["gemm"]),
            "serving": train(stores["serving"], "--kind", "serving", "--target", "metric.itl_p50_ms")}


def predict_csv(monkeypatch, capsys, tmp_path, model: str, text: str, *args: str):
    csv = tmp_path / "configs.csv"
    csv.write_text(text)
    return run_main(monkeypatch, capsys, "predict", "--model", model, "--input", str(csv), *args)


# ---------------------------------------------------------------------------- kernel CSVs


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        (f"{KERNEL_PARAMS}\n16,1,1,0,row\nnan,1,1,0,row\n", ["row 2 (line 3)", "'block_size_x'", "nan"]),
        (f"{KERNEL_PARAMS}\n16,1,1,0,row\nabc,1,1,0,row\n", ["row 2 (line 3)", "'block_size_x'", "'abc'"]),
        (f"{KERNEL_PARAMS}\n-16,1,1,0,row\n", ["row 1 (line 2)", "block_size_x > 0", "-16"]),
        (f"{KERNEL_PARAMS}\n16,1,1,-1,row\n", ["'use_shmem'", "use_shmem >= 0", "-1"]),
        (f"{KERNEL_PARAMS}\n16,1,1,0,row\n16,1,1\n", ["row 2 (line 3)", "3 field(s)", "header has 5"]),
        (f"{KERNEL_PARAMS},colour\n16,1,1,0,row,red\n", ["cannot predict", "'colour'", "no training row"]),
        (f"{KERNEL_PARAMS},block_size_x\n16,1,1,0,row,16\n", ["'block_size_x'", "more than once"]),
        (f"{KERNEL_PARAMS}\n", ["no rows", "header"]),
        ("block_size_y,tile_size_x,use_shmem,layout\n1,1,0,row\n", ["lacks", "'block_size_x'"]),
        (f"{KERNEL_PARAMS}\n16,1,1,0,\n", ["'layout'", "empty cell"]),
    ],
    ids=["nan", "text", "negative", "negative-flag", "short-row", "unknown-column", "duplicate-column",
         "header-only", "missing-column", "empty-text-cell"],
)
def test_a_kernel_csv_with_a_bad_cell_or_column_is_one_line(monkeypatch, capsys, tmp_path, models, text, needles):
    code, out, err = predict_csv(monkeypatch, capsys, tmp_path, models["kernel"], text)
    assert_one_line_error(code, out, err, *needles)


def test_a_good_kernel_csv_predicts_and_warns_outside_the_training_rows(monkeypatch, capsys, tmp_path, models):
    code, out, err = predict_csv(monkeypatch, capsys, tmp_path, models["kernel"],
                                 f"{KERNEL_PARAMS}\n16,1,1,0,row\n32,2,1,1,col\n")
    assert code == 0 and err.strip() == "", err
    assert "predicted_runtime_ms" in " ".join(out.split()) or "predicted" in out
    # a text parameter value never trained on and a block far beyond the trained 16..128: warned, still answered
    code, out, err = predict_csv(monkeypatch, capsys, tmp_path, models["kernel"],
                                 f"{KERNEL_PARAMS}\n1024,1,1,0,diagonal\n")
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.strip()]
    assert any("config.layout='diagonal'" in w and "never occurs" in w for w in warnings), err
    assert any("config.block_size_x=1024" in w and "16..128" in w for w in warnings), err


def test_a_kernel_model_given_a_gemm_shape_says_to_give_a_csv(monkeypatch, capsys, models):
    code, out, err = run_main(monkeypatch, capsys, "predict", "--model", models["kernel"], "--m", "64", "--n", "64",
                              "--k", "64")
    assert_one_line_error(code, out, err, "kernel model", "--input", "block_size_x")


# ---------------------------------------------------------------------------- GEMM CSVs and options


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("m,n\n64,64\n", ["lacks", "'k'"]),
        ("m,n,k\n1024,1024,1024\nabc,4,5\n", ["row 2 (line 3)", "'m'", "'abc'"]),
        ("m,n,k\n64,64,64.5\n", ["row 1 (line 2)", "k > 0", "64.5"]),
        ("m,n,k\n", ["no rows"]),
        ("m,n,k,trans_a\n64,64,64,maybe\n", ["trans_a", "'maybe'"]),
    ],
    ids=["missing-k", "bad-second-row", "fractional", "header-only", "bad-flag"],
)
def test_a_gemm_csv_with_a_bad_cell_or_column_is_one_line(monkeypatch, capsys, tmp_path, models, text, needles):
    code, out, err = predict_csv(monkeypatch, capsys, tmp_path, models["gemm"], text)
    assert_one_line_error(code, out, err, *needles)
    assert "'1024'" not in err  # the good row is never blamed


def test_output_paths_are_checked_before_the_model_is_even_loaded(monkeypatch, capsys, tmp_path):
    import perfpred.models

    def no_load(ref):
        raise AssertionError("the model was loaded before --output was checked")

    monkeypatch.setattr(perfpred.models, "load_model", no_load)
    csv = tmp_path / "configs.csv"
    csv.write_text("m,n,k\n64,64,64\n")
    code, out, err = run_main(monkeypatch, capsys, "predict", "--model", "any", "--input", str(csv), "--output",
                              str(tmp_path / "nowhere" / "x.csv"))
    assert_one_line_error(code, out, err, "--output", "does not exist")
    code, out, err = run_main(monkeypatch, capsys, "predict", "--model", "any", "--input", str(csv), "--output",
                              str(tmp_path))
    assert_one_line_error(code, out, err, "--output", "is a folder")
    code, out, err = run_main(monkeypatch, capsys, "predict", "--model", "any", "--m", "8", "--n", "8", "--k", "8",
                              "--threads", "0")
    assert_one_line_error(code, out, err, "--threads", "threads > 0", "0")
    code, out, err = run_main(monkeypatch, capsys, "predict", "--model", "any", "--m", "8", "--n", "8", "--k", "8",
                              "--threads", "-3")
    assert_one_line_error(code, out, err, "--threads", "-3")


def test_predicting_a_gemm_too_big_for_this_machine_is_no_error_but_warns(monkeypatch, capsys, models):
    # 2^20 x 2^20 x 2^20 fp64: 24 TiB of operands; predicting it allocates nothing.
    code, out, err = run_main(monkeypatch, capsys, "predict", "--model", models["gemm"], "--m", "1048576", "--n",
                              "1048576", "--k", "1048576", "--dtype", "fp64")
    assert code == 0, err
    assert "predicted runtime_ms" in out and "GiB" not in err
    assert "workload.m=1.04858e+06 lies far outside the training rows' " in err
    assert "workload.dtype='fp64' never occurs in the training rows (they hold fp32)" in err
    code, out, err = run_main(monkeypatch, capsys, "predict", "--model", models["gemm"], "--m", "64", "--n", "64",
                              "--k", "64")
    assert code == 0 and err.strip() == "", err  # inside the training rows: no warning


def test_a_dtype_without_a_peak_in_the_hardware_spec_says_so(monkeypatch, capsys, models):
    code, out, err = run_main(monkeypatch, capsys, "predict", "--model", models["gemm"], "--m", "64", "--n", "64",
                              "--k", "64", "--dtype", "fp16")
    assert_one_line_error(code, out, err, "--dtype", "no peak GFLOP/s for 'fp16'", "fp32, fp64")


def test_an_unknown_hardware_id_names_the_option(monkeypatch, capsys, models):
    code, out, err = run_main(monkeypatch, capsys, "predict", "--model", models["gemm"], "--m", "8", "--n", "8",
                              "--k", "8", "--hardware-id", "gpu-bogus")
    assert_one_line_error(code, out, err, "--hardware-id", "'gpu-bogus'")


# ---------------------------------------------------------------------------- serving CSVs


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        (f"{SERVING_COLUMNS}\norg/new-5b,chat,5,5,bfloat16,-8,1,1\n", ["'max_num_seqs'", "max_num_seqs > 0", "-8"]),
        ("model,total_params_b,activated_params_b,precision\norg/new-5b,5,5,bfloat16\n",
         ["lacks", "'max_num_seqs'", "'tensor_parallel'"]),
        (f"{SERVING_COLUMNS.replace('max_num_seqs', 'max_num_seq')}\norg/new-5b,chat,5,5,bfloat16,8,1,1\n",
         ["'max_num_seq'", "did you mean 'max_num_seqs'"]),
    ],
    ids=["negative-knob", "missing-knobs", "misspelt-knob"],
)
def test_a_serving_csv_names_the_bad_column(monkeypatch, capsys, tmp_path, models, text, needles):
    code, out, err = predict_csv(monkeypatch, capsys, tmp_path, models["serving"], text)
    assert_one_line_error(code, out, err, *needles)
    assert "log2_roofline_ms" not in err


def test_a_serving_csv_of_a_new_llm_predicts_without_warning(monkeypatch, capsys, tmp_path, models):
    code, out, err = predict_csv(monkeypatch, capsys, tmp_path, models["serving"],
                                 f"{SERVING_COLUMNS}\norg/new-5b,chat,5,5,bfloat16,64,1,1\n")
    assert code == 0 and err.strip() == "", err
    code, out, err = run_main(monkeypatch, capsys, "predict", "--model", models["serving"], "--m", "8", "--n", "8",
                              "--k", "8")
    assert_one_line_error(code, out, err, "serving model", "--input", "max_num_seqs")


# ---------------------------------------------------------------------------- train / evaluate


@pytest.fixture
def no_fit(monkeypatch):
    """Every fit path fails the test: the error must come before any of them."""
    import perfpred.models
    import perfpred.models._evaluation
    import perfpred.models._training

    def boom(*args, **kwargs):
        raise AssertionError("a fit ran before the input was checked")

    # train_model's first fits are its held-out ones (evaluate_models); its row checks come before
    monkeypatch.setattr(perfpred.models._training, "evaluate_models", boom)
    monkeypatch.setattr(perfpred.models, "evaluate_models", boom)
    monkeypatch.setattr(perfpred.models._evaluation, "_score", boom)


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["train", "--name", ""], ["--name", "''"]),
        (["train", "--name", "bad/name"], ["--name", "'bad/name'"]),
        (["train", "--seed", "-1"], ["seed", "--seed -1"]),
        (["evaluate", "--seeds", "0,-1"], ["seed", "--seeds -1"]),
        (["train", "--kind", "bogus"], ["--kind", "'bogus'", "kernel (96 rows)"]),
        (["evaluate", "--kind", "bogus"], ["--kind", "'bogus'", "kernel (96 rows)"]),
        (["train", "--kind", "serving"], ["--kind serving", "has none", "kernel (96 rows)"]),
        (["train", "--target", "status"], ["numeric", "'status'", "'ok'"]),
        (["train", "--target", "workload.kernel_name"], ["numeric", "'toy'"]),
        (["train", "--target", "power_w"], ["'power_w'", "no values"]),
        (["train", "--max-ref-drift", "-1"], ["max_ref_drift >= 0", "-1"]),
        (["train", "--reference-mode", "offset"], ["--reference-mode offset", "no --reference"]),
        (["evaluate", "--reference-mode", "linear"], ["--reference-mode linear", "no --reference"]),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) and v and v[0] in ("train", "evaluate") else None,
)
def test_train_and_evaluate_refuse_bad_options_before_fitting(monkeypatch, capsys, stores, no_fit, args, needles):
    command, *rest = args
    kind = [] if "--kind" in rest else ["--kind", "kernel"]
    code, out, err = run_main(monkeypatch, capsys, command, "--store", str(stores["kernel"]), *kind, *rest)
    assert_one_line_error(code, out, err, *needles)


def test_evaluate_checks_its_output_before_fitting(monkeypatch, capsys, stores, no_fit, tmp_path):
    code, out, err = run_main(monkeypatch, capsys, "evaluate", "--store", str(stores["kernel"]), "--kind", "kernel",
                              "--models", "xgb", "--output", str(tmp_path / "nowhere" / "ev.json"))
    assert_one_line_error(code, out, err, "--output", "does not exist")


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_operator_rows_say_they_have_no_features(monkeypatch, capsys, stores, no_fit, command):
    code, out, err = run_main(monkeypatch, capsys, command, "--store", str(stores["operator"]), "--kind", "operator")
    assert_one_line_error(code, out, err, "'operator'", "no features", "operator (39 rows)")


def test_group_labels_take_missing_values():
    """pandas 3 keeps NaN through astype(str); grouping (the shape split) must still label such rows."""
    from perfpred.datasets._splits import group_labels

    df = pd.DataFrame({"workload.m": [1.0, None, 1.0, None], "workload.op": ["a", "a", None, None]})
    assert group_labels(df, ["workload.m", "workload.op"]).tolist() == [0, 1, 2, 3]


def test_a_gp_on_more_rows_than_it_takes_fails_before_any_fit(monkeypatch, capsys, stores):
    import perfpred.models._evaluation
    from perfpred.models import REGRESSORS, TorchGPRegressor

    monkeypatch.setattr(perfpred.models._evaluation, "_score", lambda *a: pytest.fail("xgb was fitted first"))
    monkeypatch.setitem(REGRESSORS, "gp", lambda seed: TorchGPRegressor(max_train_rows=20))
    code, out, err = run_main(monkeypatch, capsys, "evaluate", "--store", str(stores["kernel"]), "--kind", "kernel",
                              "--models", "xgb,gp", "--split", "random")
    assert_one_line_error(code, out, err, "max_train_rows", "'gp'", "> 20")


def test_train_model_checks_the_gp_row_limit_before_the_held_out_fit(monkeypatch, synthetic_gemm_table):
    import perfpred.models._training as training
    from perfpred.errors import InvalidInputError
    from perfpred.models import TorchGPRegressor

    monkeypatch.setattr(training, "evaluate_models", lambda *a, **k: pytest.fail("the held-out fit ran"))
    with pytest.raises(InvalidInputError, match=r"max_train_rows.*300 rows > 50"):
        training.train_model(synthetic_gemm_table, regressor=TorchGPRegressor(max_train_rows=50), log_to_mlflow=False)


# ---------------------------------------------------------------------------- env, dataset ls


@pytest.mark.parametrize("device", ["cuda:x", "tpu", "cpu:0"])
def test_env_refuses_an_unknown_device(monkeypatch, capsys, device):
    code, out, err = run_main(monkeypatch, capsys, "env", "--device", device)
    assert_one_line_error(code, out, err, "--device", repr(device))


def test_dataset_ls_refuses_an_unknown_kind_and_a_negative_limit(monkeypatch, capsys, stores):
    code, out, err = run_main(monkeypatch, capsys, "dataset", "ls", str(stores["kernel"]), "--kind", "bogus")
    assert_one_line_error(code, out, err, "--kind bogus", "no rows of that kind", "kernel (96 rows)")
    code, out, err = run_main(monkeypatch, capsys, "dataset", "ls", str(stores["kernel"]), "--limit", "-1")
    assert_one_line_error(code, out, err, "limit >= 0", "-1")
