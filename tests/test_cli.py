"""The ``perfpred`` CLI: help texts, the collect -> train -> predict path, and one-line user errors."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from perfpred.cli import app, main
from perfpred.datasets import MeasurementStore

runner = CliRunner()

TINY_COLLECT = ["--design", "grid", "--sizes", "8,16,32", "--dtypes", "fp32,fp64", "--threads", "1",
                "--max-time-s", "0.05", "--min-runs", "3", "--max-runs", "5", "--warmup-runs", "1",
                "--no-reference", "--no-power"]
N_TINY = 3**3 * 2

UNIT = re.compile(r"\(ms\)|\bms\b|_ms\b|GFLOP/s|GB/s|\bseconds\b|\bbytes\b|\belements\b|%")


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, f"{args}: exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    return result


def run_main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run the console entry point ``main()`` in-process: its error wrapper included."""
    monkeypatch.setattr(sys, "argv", ["perfpred", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(code: int, err: str) -> str:
    """The one ``error:`` line a failed command (exit 2) printed."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, f"exit {code}, stderr:\n{err}"
    assert lines[0].startswith("error:") and "Traceback" not in err
    return lines[0]


def assert_one_line_error(code: int, out: str, err: str, *needles: str, exit_code: int = 2) -> None:
    """One ``error:`` line naming ``needles``; exit 2 for bad input, 1 for a failed environment."""
    assert code == exit_code, f"exit code {code}\nstdout: {out}\nstderr: {err}"
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith("error:"), lines[0]
    assert "Traceback" not in out + err
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"


def perfpred_script() -> str:
    candidate = Path(sys.executable).with_name("perfpred")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("perfpred")
    if found is None:
        pytest.fail("the `perfpred` console script is not installed (pip install -e '.[dev]')")
    return found


# ---------------------------------------------------------------------------- help


@pytest.mark.parametrize(
    "command",
    [["env"], ["collect", "gemm"], ["dataset", "info"], ["dataset", "ls"], ["train"], ["evaluate"], ["predict"]],
    ids=" ".join,
)
def test_help_of_every_command_mentions_units(command):
    # `import` is left out: its arguments are a format name and paths, no quantities.
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert UNIT.search(text), f"`perfpred {' '.join(command)} --help` names no unit:\n{result.output}"


def test_help_reflows_a_docstring_paragraph_to_the_terminal_width():
    # The docstrings are wrapped at 120 columns in the source; help must not keep those breaks,
    # or an 80-column terminal shows ragged half-empty lines.
    result = runner.invoke(app, ["tune", "--help"], env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
    assert result.exit_code == 0, result.output
    assert any("scores every candidate (lower confidence bound of log runtime, predicted failures last), and "
               "measures a diverse batch" in line for line in result.output.splitlines()), result.output


def test_top_level_help_lists_the_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in ("env", "collect", "import", "dataset", "train", "evaluate", "predict"):
        assert name in result.output


def test_env_json_parses():
    result = invoke("env", "--json")
    data = json.loads(result.stdout)
    assert data["hardware"]["hardware_id"].startswith("cpu-")
    assert data["software"]["torch"]


def test_env_table_and_peaks():
    result = invoke("env", "--peaks")
    assert "hardware cpu-" in result.output
    assert "peak_gflops" in result.output


# ---------------------------------------------------------------------------- collect -> train -> predict


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    store = tmp_path_factory.mktemp("cli") / "store"
    result = runner.invoke(app, ["collect", "gemm", "--store", str(store), *TINY_COLLECT])
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return store


@pytest.fixture(scope="module")
def trained_name(collected):
    name = f"cli-model-{uuid.uuid4().hex[:8]}"
    result = runner.invoke(app, ["train", "--store", str(collected), "--name", name])
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    text = " ".join(result.output.split())  # rich wraps long lines at the console width
    assert re.search(r"MLflow run id: [0-9a-f]{32}", text), result.output
    assert f"registered as {name}" in text
    assert "mape_pct" in text
    return name


def test_collect_fills_the_store_and_resumes(collected):
    df = MeasurementStore(collected).load()
    assert len(df) == N_TINY
    assert (df["status"] == "ok").all()
    again = invoke("collect", "gemm", "--store", str(collected), *TINY_COLLECT)
    assert len(MeasurementStore(collected)) == N_TINY
    assert re.search(r"skipped \(already in store\)\s*│?\s*54", again.output), again.output


def test_collect_with_visits_stores_the_median_of_each_configs_visits(tmp_path):
    store = tmp_path / "store"
    invoke("collect", "gemm", "--store", str(store), "--design", "grid", "--sizes", "8,16", "--dtypes", "fp32",
           "--max-time-s", "0.05", "--min-runs", "3", "--no-power", "--no-reference", "--visits", "2")
    df = MeasurementStore(store).load()
    assert len(df) == 8 and (df["metric.visits"] == 2).all()
    visit_medians = df[["metric.visit1_ms", "metric.visit2_ms"]].to_numpy()
    assert df["runtime_ms"].to_numpy() == pytest.approx(visit_medians.mean(axis=1))


def test_dataset_info_json(collected):
    info = json.loads(invoke("dataset", "info", str(collected), "--json").stdout)
    assert info["rows"] == N_TINY
    assert info["status"] == {"ok": N_TINY}
    assert "workload.m" in info["workload_columns"]
    assert info["parts"] == 1  # the CLI compacts after a sweep


def test_the_default_store_falls_back_to_its_old_name_where_only_that_exists(collected, tmp_path, monkeypatch):
    # Measurements collected before the default store was renamed (gemm-store -> store, it holds
    # every kind) are still what `perfpred dataset info` / train / evaluate use by default.
    monkeypatch.chdir(tmp_path)
    shutil.copytree(collected, tmp_path / "perfpred-runs" / "gemm-store")
    result = invoke("dataset", "info", "--json")
    assert json.loads(result.stdout)["rows"] == N_TINY
    assert "using perfpred-runs/gemm-store (the default store's old name" in result.stderr
    # Once the new default exists it wins, and nothing is said.
    MeasurementStore(tmp_path / "perfpred-runs" / "store", create=True)
    result = invoke("dataset", "info", "--json")
    assert json.loads(result.stdout)["rows"] == 0 and "old name" not in result.stderr


def test_dataset_info_table(collected):
    assert "rows" in invoke("dataset", "info", str(collected)).output


def test_dataset_ls(collected):
    result = runner.invoke(app, ["dataset", "ls", str(collected), "--limit", "5", "--sort", "runtime_ms"],
                           env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "runtime_ms" in result.output
    assert sum(line.startswith("│") for line in result.output.splitlines()) == 5
    # What all five rows share (every one ok) is said once, under the table.
    assert "status=ok" in " ".join(result.output.split())
    empty = invoke("dataset", "ls", str(collected), "--status", "oom")
    assert "no measurements match" in empty.output


def test_dataset_ls_leaves_out_columns_no_listed_row_fills(tmp_path):
    """A store of two kernels: the rows listed (one kernel's) show none of the other's parameters."""
    from perfpred.datasets._checks import content_ids

    def rows(prefix: str, param: str, runtime_ms: float) -> pd.DataFrame:
        frame = pd.DataFrame({"schema_version": 1,
                              "kind": "kernel", "status": "ok", "hardware_id": "gpu-x", "runtime_ms": runtime_ms,
                              "timestamp": "2026-12-07T00:00:00+00:00", "source": "test",
                              "workload.kernel_name": prefix, f"config.{param}": [1, 2, 10240]})
        return frame.assign(measurement_id=content_ids(frame))  # the ids a store requires of these rows

    store = MeasurementStore(tmp_path / "s", create=True)
    store.append_frame(rows("slow", "block_size_x", 9.0))
    store.append_frame(rows("fast", "tile_size_x", 1.0))
    result = runner.invoke(app, ["dataset", "ls", str(store.path), "--limit", "3", "--sort", "runtime_ms"],
                           env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "block_size_x" in result.output and "tile_size_x" not in result.output and "nan" not in result.output
    assert "10240" in result.output and "e+04" not in result.output  # whole numbers read back as floats


def test_dataset_ls_prints_csv_where_its_columns_cannot_fit_and_counts_rows_left_out(collected):
    # Too narrow for its columns, rich would squeeze every cell to nothing: CSV keeps every value.
    narrow = runner.invoke(app, ["dataset", "ls", str(collected), "--limit", "4"], env={"COLUMNS": "20"})
    assert narrow.exit_code == 0, narrow.output
    table = pd.read_csv(io.StringIO(narrow.stdout))
    assert len(table) == 4 and "runtime_ms" in table and table["runtime_ms"].notna().all()
    assert "status" in table  # shared by every row: a table's caption, but a CSV column
    total = len(MeasurementStore(collected).load())
    assert f"4 of {total} matching rows shown" in " ".join(narrow.stderr.split())
    wide = runner.invoke(app, ["dataset", "ls", str(collected), "--limit", "4"], env={"COLUMNS": "250"})
    assert wide.exit_code == 0 and sum(line.startswith("│") for line in wide.stdout.splitlines()) == 4


def test_train_registers_a_model(trained_name):
    from perfpred.models import load_model

    model = load_model(trained_name)
    assert model.n_train_ == N_TINY


def test_train_with_reuse_measured_answers_training_shapes_with_their_times(collected):
    from perfpred.models import load_model

    name = f"cli-reuse-{uuid.uuid4().hex[:8]}"
    invoke("train", "--store", str(collected), "--name", name, "--reuse-measured")
    model = load_model(name)
    assert model.reuse_measured is True
    rows = MeasurementStore(collected).load()
    # Each stored shape was measured once, so the model answers it with that very time.
    assert model.predict(rows) == pytest.approx(rows["runtime_ms"].to_numpy())


def test_train_a_summed_kernel_gp_by_name(collected):
    from perfpred.models import TorchGPRegressor, load_model

    name = f"cli-gp4-{uuid.uuid4().hex[:8]}"
    invoke("train", "--store", str(collected), "--model", "gp4", "--name", name)
    model = load_model(name)
    assert isinstance(model.regressor_, TorchGPRegressor) and model.regressor_.length_scales_.shape[0] == 4
    rows = MeasurementStore(collected).load()
    assert (model.predict(rows) > 0).all()


def test_train_auto_says_what_it_chose_and_keeps_it(collected):
    from perfpred.models import AutoRegressor, load_model

    name = f"cli-auto-{uuid.uuid4().hex[:8]}"
    result = invoke("train", "--store", str(collected), "--model", "auto", "--name", name)
    model = load_model(name)
    assert isinstance(model.regressor_, AutoRegressor)
    chosen = model.regressor_.chosen_
    assert chosen in ("xgb", "deep-trees", "gp4") and f"auto chose {chosen}" in " ".join(result.output.split())
    assert model.regressor_.cv_mape_pct_[chosen] == min(model.regressor_.cv_mape_pct_.values())


def test_evaluate_writes_json(collected, tmp_path):
    output = tmp_path / "f.json"
    result = invoke("evaluate", "--store", str(collected), "--seeds", "0", "--output", str(output))
    assert "MAPE" in result.output
    data = json.loads(output.read_text())
    assert set(data) == {"xgb", "rf", "roofline"}
    for name, res in data.items():
        assert len(res["folds"]) == 1
        assert res["mean"]["mape_pct"] >= 0, name


def test_predict_one_config_prints_a_number(trained_name):
    result = runner.invoke(app, ["predict", "--model", trained_name, "--m", "64", "--n", "64", "--k", "64"],
                           env={"COLUMNS": "250"})
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    match = re.search(r"predicted runtime_ms:\s*([0-9.]+(?:e[-+]?\d+)?)", " ".join(result.output.split()))
    assert match, result.output
    assert float(match.group(1)) > 0


def test_predict_a_csv(trained_name, tmp_path):
    configs = tmp_path / "configs.csv"
    pd.DataFrame({"m": [8, 64, 512], "n": [8, 64, 512], "k": [8, 64, 512], "dtype": ["fp32", "fp64", "fp32"]}).to_csv(
        configs, index=False)
    out = tmp_path / "out.csv"
    invoke("predict", "--model", trained_name, "--input", str(configs), "--output", str(out))
    pred = pd.read_csv(out)
    assert len(pred) == 3
    assert list(pred.columns[:4]) == ["m", "n", "k", "dtype"]
    assert (pred["predicted_runtime_ms"] > 0).all()
    assert pred["predicted_runtime_ms"].iloc[2] > pred["predicted_runtime_ms"].iloc[0]
    # Without --output: a table of the same rows, each prediction whole (4 significant digits).
    lines = invoke("predict", "--model", trained_name, "--input", str(configs)).output.splitlines()
    for row in pred.itertuples(index=False):
        assert any(f" {row.m} " in line and f" {row.predicted_runtime_ms:.4g} " in line for line in lines), lines


def test_predict_with_an_interval(collected):
    name = f"cli-quantile-{uuid.uuid4().hex[:8]}"
    invoke("train", "--store", str(collected), "--model", "xgb-quantile", "--name", name)
    result = runner.invoke(app, ["predict", "--model", name, "--m", "64", "--n", "64", "--k", "64",
                                 "--coverage", "0.9"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    match = re.search(r"predicted runtime_ms:\s*(\S+) \[(\S+), (\S+)\] at 90%", " ".join(result.output.split()))
    assert match, result.output
    median, lower, upper = (float(g) for g in match.groups())
    assert 0 < lower <= median <= upper


def test_predict_an_interval_from_a_point_model(monkeypatch, capsys, trained_name):
    code, out, err = run_main(monkeypatch, capsys, "predict", "--model", trained_name, "--m", "64", "--n", "64",
                              "--k", "64", "--coverage", "0.9")
    assert_one_line_error(code, out, err, "predict_interval", "xgb-quantile")


# ---------------------------------------------------------------------------- one-line user errors


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--design", "random", "--m-range", "0:10"], ["--m-range", "0:10"]),
        (["--design", "sobol", "--m-range", "abc"], ["--m-range", "abc"]),
        (["--design", "random", "--k-range", "64:16"], ["--k-range", "64:16"]),
        (["--design", "grid", "--sizes", "8", "--dtypes", "fp8"], ["dtype", "fp8"]),
        (["--design", "foo"], ["--design", "foo"]),
        (["--design", "grid", "--sizes", "8", "--transposes", "xy"], ["--transposes", "xy"]),
        (["--design", "grid", "--sizes", "8", "--threads", "0"], ["threads", "0"]),
        (["--design", "grid", "--sizes", "0"], ["0"]),
        (["--design", "grid", "--sizes", "8", "--batch", "two"], ["--batch", "two"]),
        (["--design", "grid", "--sizes", "8", "--backend", "numpy", "--dtypes", "bf16"], ["bf16", "numpy"]),
        (["--design", "grid", "--sizes", "8", "--device", "cuda"], ["cuda"]),
        (["--design", "grid", "--sizes", "8", "--max-time-s", "0"], ["max_time_s"]),
        (["--design", "grid", "--sizes", "8", "--visits", "0"], ["visits >= 1", "0"]),
        (["--design", "grid", "--sizes", "8", "--pin-cpus", "9999"], ["pin_cpus", "9999"]),
        (["--design", "grid", "--sizes", "8", "--visits", "3", "--ref-tolerance", "0.5"], ["ref_tolerance", "0.5"]),
        (["--design", "grid", "--sizes", "8", "--pin-cpus", "fast"], ["--pin-cpus", "fast"]),
        (["--design", "grid", "--sizes", "8", "--power-duration-s", "0.01"], ["power_duration_s", "0.01"]),
        (["--design", "grid", "--sizes", "8", "--power-duration-s", "nan"], ["power_duration_s", "nan"]),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) and v and v[0].startswith("--") else None,
)
def test_collect_refuses_bad_input_in_one_line_before_creating_anything(monkeypatch, capsys, tmp_path, args,
                                                                         needles):
    import torch

    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    store = tmp_path / "store"
    code, out, err = run_main(monkeypatch, capsys, "collect", "gemm", "--store", str(store), *args)
    # a GPU this machine lacks is its environment (exit 1), not a typo (exit 2)
    assert_one_line_error(code, out, err, *needles, exit_code=1 if "cuda" in args else 2)
    assert not store.exists()


def test_dataset_commands_take_the_store_as_the_others_do(monkeypatch, capsys, collected, tmp_path):
    as_option = json.loads(invoke("dataset", "info", "--store", str(collected), "--json").stdout)
    assert as_option == json.loads(invoke("dataset", "info", str(collected), "--json").stdout)
    assert as_option["rows"] == N_TINY
    listed = invoke("dataset", "ls", "--store", str(collected), "--limit", "3").output
    assert listed == invoke("dataset", "ls", str(collected), "--limit", "3").output
    code, out, err = run_main(monkeypatch, capsys, "dataset", "info", str(tmp_path), "--store", str(collected))
    assert_one_line_error(code, out, err, "once", "--store")


def test_dataset_info_on_a_non_store_folder(monkeypatch, capsys, tmp_path):
    code, out, err = run_main(monkeypatch, capsys, "dataset", "info", str(tmp_path))
    assert_one_line_error(code, out, err, "no Measurement store", str(tmp_path))


def test_dataset_ls_with_an_unknown_sort_column(monkeypatch, capsys, collected):
    code, out, err = run_main(monkeypatch, capsys, "dataset", "ls", str(collected), "--sort", "colour")
    assert_one_line_error(code, out, err, "--sort", "colour")


def test_train_on_an_empty_store(monkeypatch, capsys, tmp_path):
    store = tmp_path / "empty"
    MeasurementStore(store, create=True)
    code, out, err = run_main(monkeypatch, capsys, "train", "--store", str(store))
    assert_one_line_error(code, out, err, "empty")


def test_train_on_a_missing_store(monkeypatch, capsys, tmp_path):
    code, out, err = run_main(monkeypatch, capsys, "train", "--store", str(tmp_path / "nowhere"))
    assert_one_line_error(code, out, err, "no Measurement store")


def test_train_with_an_unknown_model(monkeypatch, capsys, collected):
    code, out, err = run_main(monkeypatch, capsys, "train", "--store", str(collected), "--model", "foo")
    assert_one_line_error(code, out, err, "foo")


def test_evaluate_with_an_unknown_model(monkeypatch, capsys, collected):
    code, out, err = run_main(monkeypatch, capsys, "evaluate", "--store", str(collected), "--models", "xgb,foo")
    assert_one_line_error(code, out, err, "foo")


def test_evaluate_with_an_unknown_split(monkeypatch, capsys, collected):
    code, out, err = run_main(monkeypatch, capsys, "evaluate", "--store", str(collected), "--models", "roofline",
                              "--split", "bogus")
    assert_one_line_error(code, out, err, "bogus")


def test_predict_with_an_unknown_model(monkeypatch, capsys):
    code, out, err = run_main(monkeypatch, capsys, "predict", "--model", "no-such-model", "--m", "64", "--n", "64",
                              "--k", "64")
    assert_one_line_error(code, out, err, "no-such-model")


def test_predict_without_m(monkeypatch, capsys, trained_name):
    code, out, err = run_main(monkeypatch, capsys, "predict", "--model", trained_name, "--n", "64", "--k", "64")
    assert_one_line_error(code, out, err, "--m")


def test_predict_with_a_bad_size(monkeypatch, capsys, trained_name):
    code, out, err = run_main(monkeypatch, capsys, "predict", "--model", trained_name, "--m", "0", "--n", "64",
                              "--k", "64")
    assert_one_line_error(code, out, err, "m > 0")


@pytest.mark.parametrize(
    ("content", "needles"),
    [
        ("m,n,k,colour\n64,64,64,red\n", ["colour"]),
        ("m,n,k\n64,64,64\n1,2,3,4,5\n", ["--input", "unreadable CSV"]),
        ("", ["--input"]),
        ("m,n,k\nabc,64,64\n", ["abc"]),
        ("m,n,k,dtype\n64,64,64,fp8\n", ["fp8"]),
    ],
    ids=["unknown-column", "malformed", "empty", "non-integer-size", "unknown-dtype"],
)
def test_predict_refuses_a_bad_csv(monkeypatch, capsys, tmp_path, trained_name, content, needles):
    csv = tmp_path / "configs.csv"
    csv.write_text(content)
    code, out, err = run_main(monkeypatch, capsys, "predict", "--model", trained_name, "--input", str(csv))
    assert_one_line_error(code, out, err, *needles)


# ---------------------------------------------------------------------------- the real console script


def test_console_script_prints_one_error_line_and_exits_2(tmp_path):
    script = perfpred_script()
    done = subprocess.run([script, "collect", "gemm", "--store", str(tmp_path / "s"), "--design", "foo"],
                          capture_output=True, text=True, timeout=120)
    assert_one_line_error(done.returncode, done.stdout, done.stderr, "--design", "foo")
    done = subprocess.run([script, "dataset", "info", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert_one_line_error(done.returncode, done.stdout, done.stderr, "no Measurement store")


def test_console_script_runs_a_command(collected):
    done = subprocess.run([perfpred_script(), "dataset", "info", str(collected), "--json"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rows"] == N_TINY
