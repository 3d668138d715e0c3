"""``perfpred collect serving`` against the scripted fake engine: a knob grid into a store, and one-line errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from perfpred.cli import _spelled_as_commands, app, parse_knob_grid
from perfpred.datasets import MeasurementStore
from tests.test_cli import assert_one_line_error, run_main

pytest.importorskip("aiohttp")
runner = CliRunner()


def test_a_knob_grid_becomes_one_row_per_combination(tmp_path):
    store = tmp_path / "store"
    args = ["collect", "serving", "--engine", "fake", "--store", str(store), "--knob", "token_ms=1,2",
            "--knob", "max_num_seqs=1,4", "--requests", "6", "--concurrency", "2", "--prompt-tokens", "8",
            "--output-tokens", "4"]
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    df = MeasurementStore(store).load(kind="serving")
    assert len(df) == 4 and (df["status"] == "ok").all()
    assert (df["metric.output_tokens_per_s"] > 0).all() and df["power_source"].eq("unavailable").all()
    again = runner.invoke(app, args, env={"COLUMNS": "200"})  # resumes: nothing new to measure
    assert again.exit_code == 0 and len(MeasurementStore(store).load(kind="serving")) == 4


def test_sustainable_rate_from_the_cli_measures_capacity_first(tmp_path):
    store, loads = tmp_path / "store", tmp_path / "loads"
    args = ["collect", "serving", "--engine", "fake", "--store", str(store), "--knob", "max_num_seqs=2",
            "--knob", "token_ms=2", "--prompt-tokens", "8", "--output-tokens", "8", "--slo-e2e-ms", "500",
            "--sustainable-rate", "--probe-s", "0.5", "--loads-into", str(loads)]
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    row = MeasurementStore(store).load(kind="serving").iloc[0]
    assert row["status"] == "ok" and row["metric.capacity_rps"] > 0
    assert row["metric.sustainable_rate_rps"] > 0 and row["workload.probe_duration_s"] == 0.5
    runs = MeasurementStore(loads).load(kind="serving")
    assert len(runs) == 1 + row["metric.n_probes"]  # the capacity run and each probe
    assert runs["workload.rate_rps"].max() >= row["metric.sustainable_rate_rps"]
    assert "1 row(s)" in result.output and f"{row['metric.sustainable_rate_rps']:.4g}" in result.output
    # A re-run skips the search already stored (no launch, no new loads) and still shows its row.
    again = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert again.exit_code == 0, f"{again.output}\n{again.exception!r}"
    assert "already searched" in again.output and "1 row(s)" in again.output
    assert len(MeasurementStore(loads).load(kind="serving")) == len(runs)


def test_knob_grids_parse_values_as_the_engine_sees_them():
    assert parse_knob_grid(["parallel=1,8", "cont_batching=true", "cache_type_k=q8_0"]) == [
        {"parallel": 1, "cont_batching": True, "cache_type_k": "q8_0"},
        {"parallel": 8, "cont_batching": True, "cache_type_k": "q8_0"}]
    assert parse_knob_grid([]) == [{}]


@pytest.mark.parametrize(("args", "needles"), [
    (["--knob", "parallel"], ["--knob", "NAME=V1,V2"]),
    (["--knob", "no_such_knob=1"], ["no_such_knob"]),
    (["--concurrency", "2", "--rate-rps", "1"], ["--concurrency", "--rate-rps"]),
    (["--sustainable-rate"], ["SLO"]),
    (["--loads-into", "x"], ["--loads-into", "--sustainable-rate"]),
    (["--slo-ttft-ms", "-5"], ["ttft_ms"]),
])
def test_bad_serving_input_is_one_line(monkeypatch, capsys, tmp_path, args, needles):
    code, out, err = run_main(monkeypatch, capsys, "collect", "serving", "--engine", "fake", "--store",
                              str(tmp_path / "s"), *args)
    assert_one_line_error(code, out, err, *needles)
    assert not (tmp_path / "s").exists()  # refused before anything was created


def test_tune_serving_on_the_ml_energy_replay_answers_within_the_slo(tmp_path):
    from perfpred.errors import DatasetNotFoundError
    from perfpred.settings import datasets_dir

    try:
        datasets_dir()
    except DatasetNotFoundError as exc:
        pytest.skip(str(exc))
    out = tmp_path / "run"
    result = runner.invoke(app, ["tune-serving", "--engine", "ml-energy", "--model", "Qwen/Qwen3-8B", "--task",
                                 "lm-arena-chat", "--budget", "3", "--objective", "metric.output_tokens_per_s:max",
                                 "--constraint", "metric.itl_p99_ms <= 50", "--output", str(out)],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    import json

    report = json.loads((out / "result.json").read_text())  # one objective: pareto.json is for 2+
    assert report["n_evaluations"] == 3
    assert report["front"] and all(row["metric.itl_p99_ms"] <= 50 for row in report["front"])


def test_tune_serving_is_also_spelled_as_two_commands(monkeypatch, capsys):
    code, out, err = run_main(monkeypatch, capsys, "tune", "serving", "--engine", "llama-server", "--objective",
                              "metric.output_tokens_per_s:max")
    assert_one_line_error(code, out, err, "--objective", "ml-energy")  # reached tune-serving's own check
    assert _spelled_as_commands(["tune", "--backend", "kernel:sgemm"]) == ["tune", "--backend", "kernel:sgemm"]


def test_tune_serving_live_refuses_replay_options(monkeypatch, capsys):
    code, out, err = run_main(monkeypatch, capsys, "tune-serving", "--engine", "llama-server", "--objective",
                              "metric.output_tokens_per_s:max")
    assert_one_line_error(code, out, err, "--objective", "ml-energy")


def test_tune_serving_keeps_loads_only_for_a_rate_search(monkeypatch, capsys, tmp_path):
    code, out, err = run_main(monkeypatch, capsys, "tune-serving", "--engine", "fake", "--goal", "throughput",
                              "--loads-into", str(tmp_path / "loads"))
    assert_one_line_error(code, out, err, "--loads-into", "--goal throughput")
    assert not (tmp_path / "loads").exists()


@pytest.mark.parametrize(("args", "needles"), [(["--surrogate", "forest"], ["surrogate", "forest"]),
                                               (["--kappa", "-1"], ["kappa >= 0", "-1"]),
                                               (["--confirm", "-1"], ["confirm_repeats >= 0", "-1"]),
                                               (["--confirm", "1", "--confirm-top", "0"], ["confirm_top >= 1", "0"])])
def test_tune_serving_refuses_an_unknown_surrogate_or_negative_kappa(monkeypatch, capsys, tmp_path, args, needles):
    code, out, err = run_main(monkeypatch, capsys, "tune-serving", "--engine", "fake", "--budget", "2",
                              "--output", str(tmp_path / "run"), "--store", str(tmp_path / "store"), *args)
    assert_one_line_error(code, out, err, *needles)
    assert not (tmp_path / "store").exists()  # refused before any launch


def test_tune_serving_confirms_its_finalists_with_relaunches(monkeypatch, capsys, tmp_path):
    code, out, err = run_main(monkeypatch, capsys, "tune-serving", "--engine", "fake", "--budget", "3",
                              "--confirm", "1", "--confirm-top", "2", "--output", str(tmp_path / "run"),
                              "--store", str(tmp_path / "store"))
    assert code == 0, err
    summary = json.loads((tmp_path / "run" / "result.json").read_text())
    assert summary["n_launches"] == 3 and summary["n_confirm_launches"] == len(summary["confirmation"]) == 2
    assert "finalists, each re-launched 1 time(s)" in out and "+ 2 re-launches" in out
    assert len(MeasurementStore(tmp_path / "store").measurements(kind="serving")) == 5


def test_tune_serving_starts_from_a_prior_store_and_refuses_a_missing_one(monkeypatch, capsys, tmp_path):
    code, out, err = run_main(monkeypatch, capsys, "tune-serving", "--engine", "fake", "--budget", "2",
                              "--output", str(tmp_path / "run"), "--store", str(tmp_path / "store"),
                              "--prior", str(tmp_path / "nowhere"))
    assert_one_line_error(code, out, err, "prior's store must exist", "nowhere")
    assert not (tmp_path / "store").exists()  # refused before any launch
    code, out, err = run_main(monkeypatch, capsys, "tune-serving", "--engine", "fake", "--budget", "5",
                              "--output", str(tmp_path / "earlier"), "--store", str(tmp_path / "earlier-store"))
    assert code == 0, err
    code, out, err = run_main(monkeypatch, capsys, "tune-serving", "--engine", "fake", "--model", "small-20m",
                              "--budget", "2", "--output", str(tmp_path / "run"), "--store", str(tmp_path / "store"),
                              "--prior", str(tmp_path / "earlier-store"))
    assert code == 0, err
    history = (tmp_path / "run" / "history.csv").read_text().splitlines()
    header, first = history[0].split(","), history[1].split(",")
    assert first[header.index("predicted_goal")] != ""  # the first launch was the prior's pick, not a design's


def test_a_serving_model_trains_from_recorded_ml_energy_rows_holding_out_whole_models(tmp_path):
    from perfpred.errors import DatasetNotFoundError
    from perfpred.models import load_model
    from perfpred.settings import datasets_dir

    try:
        tasks = datasets_dir() / "ml-energy" / "tasks"
    except DatasetNotFoundError as exc:
        pytest.skip(str(exc))
    store = tmp_path / "store"
    result = runner.invoke(app, ["import", "ml-energy", str(tasks / "lm-arena-chat.json"), "--into", str(store)])
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    name = "mlenergy-itl-cli-test"
    result = runner.invoke(app, ["train", "--store", str(store), "--kind", "serving-attention", "--target",
                                 "metric.itl_p50_ms", "--name", name], env={"COLUMNS": "200"})
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    assert "(shape split)" in result.output  # the held-out rows are whole models, not rows of seen ones
    result = runner.invoke(app, ["evaluate", "--store", str(store), "--kind", "serving-attention", "--target",
                                 "metric.itl_p50_ms", "--models", "xgb", "--seeds", "0"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "shape split" in result.output, f"{result.output}\n{result.exception!r}"
    rows = MeasurementStore(store).load(kind="serving")
    rows = rows[rows["config.max_num_seqs"].notna()]
    assert (load_model(name).predict(rows) > 0).all()
    # deployments never launched, as a CSV with the names a user writes: predicted before launching
    deployments = tmp_path / "deployments.csv"
    deployments.write_text("model,task,total_params_b,activated_params_b,precision,max_num_seqs,tensor_parallel,"
                           "expert_parallel,data_parallel,num_gpus\n"
                           "my-org/new-8b,lm-arena-chat,8,8,bfloat16,64,1,1,1,1\n"
                           "my-org/new-8b,lm-arena-chat,8,8,bfloat16,256,1,1,1,1\n")
    out = tmp_path / "predicted.csv"
    result = runner.invoke(app, ["predict", "--model", name, "--input", str(deployments), "--output", str(out)])
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    import pandas as pd

    predicted = pd.read_csv(out)["predicted_itl_p50_ms"]
    # a bigger batch, a longer decode step; both in the range of the recorded 8B models (7-63 ms)
    assert 5 < predicted[0] < predicted[1] < 100
    result = runner.invoke(app, ["predict", "--model", name, "--input", str(deployments), "--hardware-id", "gpu-x"])
    assert result.exit_code != 0 and "hardware_id" in str(result.exception) and "gpu-x" in str(result.exception)
