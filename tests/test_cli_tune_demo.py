"""CLI: import recorded files, tune a replayed space, and the quick demo on this CPU."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from test_cli import assert_one_line_error, invoke, run_main

from perfpred.datasets import MeasurementStore
from perfpred.errors import InvalidInputError
from perfpred.settings import datasets_dir

GEMM = "kernel-tuner/gemm/{}.json.gz"
CONV = "kernel-tuner/convolution/{}.json.gz"


def test_import_kernel_tuner_cache_into_a_store(tmp_path):
    store = tmp_path / "store"
    result = invoke("import", "kernel-tuner", str(datasets_dir() / CONV.format("A4000")), "--into", str(store))
    assert "imported" in result.output
    df = MeasurementStore(store).load()
    assert len(df) == 4362
    assert set(df["status"]) >= {"ok"}
    assert (df["kind"] == "kernel").all()


def test_import_refuses_bad_options(monkeypatch, capsys, tmp_path):
    code, out, err = run_main(monkeypatch, capsys, "import", "kernel-tuner", str(datasets_dir() / CONV.format("A4000")),
                              "--into", str(tmp_path / "s"), "--option", "novalue")
    assert_one_line_error(code, out, err, "KEY=VALUE")


def test_import_unknown_format(monkeypatch, capsys, tmp_path):
    code, out, err = run_main(monkeypatch, capsys, "import", "no-such-format", str(tmp_path), "--into",
                              str(tmp_path / "s"))
    assert_one_line_error(code, out, err, "no-such-format")


def test_tune_replay_with_transfer_prior_and_random_comparison(tmp_path):
    target = datasets_dir() / CONV.format("A4000")
    prior = datasets_dir() / CONV.format("A6000")
    out = tmp_path / "run"
    result = invoke("tune", "--backend", f"replay:{target}", "--prior", str(prior), "--budget", "8", "--batch", "4",
                    "--compare-random", "--output", str(out))
    assert "best config" in result.output
    report = json.loads((out / "result.json").read_text())
    assert report["n_evaluations"] == 8
    assert len(report["comparisons"]["random"]) == 8
    assert report["best_value"] >= report["optimum"] > 0
    assert (out / "best_so_far.png").stat().st_size > 1000
    history = (out / "history.csv").read_text().splitlines()
    assert len(history) == 9  # header + one row per hardware evaluation


@pytest.fixture(scope="module")
def a6000_convolution_store(tmp_path_factory):
    """The A6000's recorded convolution space, imported through the CLI."""
    store = tmp_path_factory.mktemp("a6000") / "store"
    invoke("import", "kernel-tuner", str(datasets_dir() / CONV.format("A6000")), "--into", str(store))
    return store


@pytest.fixture(scope="module")
def a6000_convolution_model(a6000_convolution_store, tmp_path_factory):
    """A runtime model of the A6000's convolution space, trained and registered through the CLI.

    Trained on 1,000 of the space's 4,362 recorded configs (the default deep-trees learner takes
    minutes on all of them): the tests that use it read what a model of the space predicts, not
    how well it does."""
    some = MeasurementStore(tmp_path_factory.mktemp("a6000-some") / "store", create=True)
    some.append_frame(MeasurementStore(a6000_convolution_store).load().sample(1000, random_state=0))
    invoke("train", "--store", str(some.path), "--kind", "kernel", "--split", "random", "--name", "conv-a6000")
    return "conv-a6000"


def test_evaluate_on_a_tuning_space_compares_deep_trees_with_xgb_and_rf(a6000_convolution_store, tmp_path):
    output = tmp_path / "eval.json"
    invoke("evaluate", "--store", str(a6000_convolution_store), "--kind", "kernel", "--split", "random",
           "--seeds", "0", "--output", str(output))
    mape = {name: res["mean"]["mape_pct"] for name, res in json.loads(output.read_text()).items()}
    assert set(mape) == {"deep-trees", "xgb", "rf"}  # no roofline: a kernel's rows have no FLOP count
    assert mape["deep-trees"] < 0.5 * mape["xgb"], mape  # the learner perfpred train uses on kernel rows


def test_tune_starts_from_a_model_trained_on_other_hardware(tmp_path, a6000_convolution_model):
    from perfpred.models import load_model
    from perfpred.tuner._session import open_session

    target = f"replay:{datasets_dir() / CONV.format('A4000')}"
    out = tmp_path / "run"
    invoke("tune", "--backend", target, "--model", a6000_convolution_model, "--budget", "8", "--batch", "4",
           "--output", str(out))
    report = json.loads((out / "result.json").read_text())
    assert report["settings"]["priors"] == [f"model {a6000_convolution_model}"]
    assert report["n_evaluations"] == 8
    # The model's fastest config for the A4000 is among the first round's picks: the search
    # started from it, where a cold start would have begun with a space-filling design.
    session = open_session(target)
    predicted = load_model(a6000_convolution_model).predict(session.describe(session.candidates))
    favourite = session.candidates.iloc[int(predicted.argmin())].to_dict()
    history = pd.read_csv(out / "history.csv")
    first_round = history[history["iteration"] == history["iteration"].min()][list(favourite)]
    assert favourite in first_round.to_dict("records")


def test_predict_scores_a_csv_of_kernel_configs_in_any_column_order(tmp_path, monkeypatch, capsys,
                                                                   a6000_convolution_model):
    from perfpred.collect._replay import ReplayBackend
    from perfpred.models import load_model

    table = ReplayBackend.from_file(datasets_dir() / CONV.format("A6000")).table
    table = table[table["status"] == "ok"].head(3)
    params = [c for c in table.columns if c.startswith("config.")]
    csv = tmp_path / "configs.csv"
    # the parameters in reverse order and without their prefix, the problem left to the model
    table[params[::-1]].rename(columns=lambda c: c[len("config."):]).to_csv(csv, index=False)
    out = tmp_path / "predicted.csv"
    invoke("predict", "--model", a6000_convolution_model, "--input", str(csv), "--output", str(out))
    predicted = pd.read_csv(out)["predicted_runtime_ms"].to_numpy()
    expected = load_model(a6000_convolution_model).predict(table)
    assert predicted == pytest.approx(expected)
    pd.DataFrame({"no_such_param": [1]}).to_csv(tmp_path / "bad.csv", index=False)
    code, text, err = run_main(monkeypatch, capsys, "predict", "--model", a6000_convolution_model, "--input",
                               str(tmp_path / "bad.csv"))
    assert_one_line_error(code, text, err, "cannot predict these configs", "lack")


def test_tune_refuses_a_model_that_cannot_score_the_space(monkeypatch, capsys, a6000_convolution_model):
    target = datasets_dir() / GEMM.format("RTX_2080_Ti")
    code, out, err = run_main(monkeypatch, capsys, "tune", "--backend", f"replay:{target}", "--model",
                              a6000_convolution_model, "--budget", "4")
    assert_one_line_error(code, out, err, f"--model {a6000_convolution_model}", "cannot predict this space's configs")


@pytest.mark.parametrize("model, needle", [("no-such-model", "no model at"), ("conv", "single-objective")])
def test_tune_refuses_a_missing_model_or_one_with_objectives(monkeypatch, capsys, model, needle):
    target = datasets_dir() / CONV.format("A4000")
    objectives = ["--objective", "runtime_ms", "--objective", "metric.compile_time_ms"]
    extra = objectives if needle == "single-objective" else []
    code, out, err = run_main(monkeypatch, capsys, "tune", "--backend", f"replay:{target}", "--model", model,
                              "--budget", "4", *extra)
    assert_one_line_error(code, out, err, needle)


def test_tune_keeps_its_study_in_the_run_directory_and_resumes_it(tmp_path):
    target = f"replay:{datasets_dir() / CONV.format('A4000')}"
    out = tmp_path / "run"
    first = invoke("tune", "--backend", target, "--budget", "8", "--output", str(out))
    assert (out / "study.db").exists() and "perfpred-tune-replay-a4000-json-gz" in "".join(first.output.split())
    first_rows = (out / "history.csv").read_text().splitlines()[1:]
    again = invoke("tune", "--backend", target, "--budget", "8", "--output", str(out))
    assert "nothing was measured" in " ".join(again.output.split())
    report = json.loads((out / "result.json").read_text())
    # The report is the study's: a resumed run that measured nothing keeps the first run's rows.
    assert (report["n_evaluations"], report["n_evaluations_this_run"]) == (8, 0)
    assert (out / "history.csv").read_text().splitlines()[1:] == first_rows
    more = invoke("tune", "--backend", target, "--budget", "12", "--output", str(out))
    assert "nothing was measured" not in " ".join(more.output.split())
    report = json.loads((out / "result.json").read_text())
    assert (report["n_evaluations"], report["n_evaluations_this_run"]) == (12, 4)  # the first 8 not measured again
    history = pd.read_csv(out / "history.csv")
    params = ["block_size_x", "block_size_y", "tile_size_x", "tile_size_y", "read_only", "use_padding", "use_shmem"]
    assert len(history) == 12 and not history.duplicated(subset=params).any()
    # another space tuned into the same directory is its own study, with its own budget
    other = f"replay:{datasets_dir() / CONV.format('A6000')}"
    invoke("tune", "--backend", other, "--budget", "8", "--output", str(out))
    assert json.loads((out / "result.json").read_text())["n_evaluations"] == 8


def test_tune_compares_with_optuna_on_the_same_hardware(tmp_path, monkeypatch, capsys):
    target = f"replay:{datasets_dir() / CONV.format('A4000')}"
    out = tmp_path / "run"
    result = invoke("tune", "--backend", target, "--budget", "8", "--compare", "tpe", "--compare-random",
                    "--output", str(out))
    assert "optuna-tpe best (ms)" in result.output and "random best (ms)" in result.output
    report = json.loads((out / "result.json").read_text())
    assert sorted(report["comparisons"]) == ["optuna-tpe", "random"]
    assert len(report["comparisons"]["optuna-tpe"]) == 8
    assert min(v for v in report["comparisons"]["optuna-tpe"] if v is not None) >= report["optimum"]
    code, out_text, err = run_main(monkeypatch, capsys, "tune", "--backend", target, "--compare", "cmaes")
    assert_one_line_error(code, out_text, err, "--compare", "cmaes")


def test_export_writes_a_kernel_tuner_cache_that_replays_as_the_original(tmp_path, monkeypatch, capsys):
    from perfpred.collect._replay import ReplayBackend

    original = datasets_dir() / CONV.format("W6600")
    store = tmp_path / "store"
    invoke("import", "kernel-tuner", str(original), "--into", str(store))
    exported = tmp_path / "w6600.json.gz"
    result = invoke("export", "kernel-tuner", "--store", str(store), "--output", str(exported))
    assert "perfpred tune --backend replay:" in " ".join(result.output.split())
    before, after = ReplayBackend.from_file(original), ReplayBackend.from_file(exported)
    assert len(after) == len(before)
    assert after.optimum().runtime_ms == pytest.approx(before.optimum().runtime_ms)
    assert after.optimum().config == before.optimum().config
    code, out, err = run_main(monkeypatch, capsys, "export", "kernel-tuner", "--store", str(tmp_path / "none"),
                              "--output", str(tmp_path / "x.json"))
    assert_one_line_error(code, out, err, "--store")


def test_tune_refuses_a_bad_backend(monkeypatch, capsys):
    code, out, err = run_main(monkeypatch, capsys, "tune", "--backend", "gpu:whatever", "--budget", "4")
    assert_one_line_error(code, out, err, "replay:PATH")


def test_tune_refuses_a_zero_budget(monkeypatch, capsys):
    target = datasets_dir() / CONV.format("A4000")
    code, out, err = run_main(monkeypatch, capsys, "tune", "--backend", f"replay:{target}", "--budget", "0")
    assert_one_line_error(code, out, err, "budget")


def test_demo_quick_runs_the_whole_loop(tmp_path):
    out = tmp_path / "demo"
    result = invoke("demo", "--quick", "--budget", "6", "--output", str(out))
    assert "perfpred" in result.output and "random search" in result.output
    summary = json.loads((out / "demo.json").read_text())
    strategies = [row["strategy"] for row in summary["comparison"]]
    assert strategies == ["default", "perfpred", "random search"]
    assert summary["hardware_evaluations"] == 12
    finalists = {row["strategy"] for row in summary["retimed_finalists"]}
    assert finalists == {"default", "perfpred", "random search"}
    assert 3 < len(summary["retimed_finalists"]) <= 7  # the default plus up to 3 per strategy
    for row in summary["comparison"]:
        assert row["status"] == "ok" and row["confirmed_ms"] > 0
    # result.json's answer is the one printed: perfpred's re-timed finalist, not a first-pass timing
    ours = next(row for row in summary["comparison"] if row["strategy"] == "perfpred")
    report = json.loads((out / "result.json").read_text())
    assert report["best_config"] == json.loads(ours["config"]) and report["best_value"] == ours["confirmed_ms"]
    assert report["best_value_is"].startswith("re-timed") and report["search_best_value"] > 0
    stored = MeasurementStore(out / "store").load()
    assert len(stored) >= 6 and (stored["kind"] == "kernel").all()


@pytest.mark.requires_cuda
def test_demo_gpu_runs_the_triton_kernel(tmp_path):
    result = invoke("demo", "--gpu", "--quick", "--budget", "6", "--output", str(tmp_path / "demo"))
    assert "perfpred" in result.output and "random search" in result.output


def test_tune_with_two_objectives_reports_a_pareto_front(tmp_path):
    target = datasets_dir() / CONV.format("A4000")
    out = tmp_path / "pareto"
    result = invoke("tune", "--backend", f"replay:{target}", "--budget", "10", "--objective", "runtime_ms",
                    "--objective", "metric.compile_time_ms", "--constraint", "runtime_ms <= 50",
                    "--output", str(out))
    assert "Pareto front" in result.output and "hypervolume" in result.output
    report = json.loads((out / "pareto.json").read_text())
    assert report["n_evaluations"] == 10
    front = report["front"]
    assert front and all(row["runtime_ms"] <= 50 for row in front)
    # No front member is dominated by another.
    for a in front:
        assert not any(b["runtime_ms"] <= a["runtime_ms"] and b["metric.compile_time_ms"] < a["metric.compile_time_ms"]
                       for b in front)
    assert (out / "pareto.png").exists()


def test_tune_refuses_an_unknown_direction(monkeypatch, capsys):
    target = datasets_dir() / CONV.format("A4000")
    code, out, err = run_main(monkeypatch, capsys, "tune", "--backend", f"replay:{target}", "--objective",
                              "runtime_ms:upwards", "--objective", "metric.compile_time_ms")
    assert_one_line_error(code, out, err, "upwards")


def test_demo_tunes_the_stencil_and_retimes_extra_finalists(tmp_path):
    from perfpred.tuner._demo import run_demo

    optimum = {"tile_x": 64, "tile_y": 4, "unroll": 2, "isa": "avx2", "threads": 1}
    result = run_demo(run_dir=tmp_path / "demo", budget=4, quick=True, kernel="jacobi2d",
                      extra_finalists={"recorded optimum": [optimum]})
    assert list(result.table["strategy"]) == ["default", "perfpred", "random search", "recorded optimum"]
    assert json.loads(result.table.iloc[-1]["config"]) == optimum
    assert result.n_hardware_evaluations == 8


def test_demo_refuses_an_unknown_kernel_or_an_invalid_finalist(tmp_path):
    from perfpred.tuner._demo import run_demo

    with pytest.raises(InvalidInputError, match="kernel='gemm9'"):
        run_demo(run_dir=tmp_path / "demo", budget=4, quick=True, kernel="gemm9")
    with pytest.raises(InvalidInputError, match="tile_x"):
        run_demo(run_dir=tmp_path / "demo", budget=4, quick=True, kernel="jacobi2d",
                 extra_finalists={"recorded optimum": [{"tile_x": 3, "tile_y": 4, "unroll": 2, "isa": "avx2",
                                                        "threads": 1}]})


def test_demo_starts_from_a_prior_recording_instead_of_cold(tmp_path):
    from perfpred.collect.importers import export_kernel_tuner_cache
    from perfpred.tuner._demo import run_demo

    cold = run_demo(run_dir=tmp_path / "cold", budget=4, quick=True, kernel="jacobi2d", seed=1)
    # A budget of 4 is all space-filling start: nothing was chosen by a prediction.
    assert cold.predicted_vs_measured_mape_pct is None
    cache = export_kernel_tuner_cache(MeasurementStore(tmp_path / "cold" / "store"), tmp_path / "prior.json",
                                      kind="kernel").path
    warm = run_demo(run_dir=tmp_path / "warm", budget=4, quick=True, kernel="jacobi2d", seed=1, prior_files=[cache])
    # With a prior there is no cold start: every pick is a prediction, so its error is known.
    assert warm.predicted_vs_measured_mape_pct is not None


@pytest.mark.parametrize(("option", "value", "budget"), [("features", "derived", 8), ("features", "raw", 8),
                                                     ("surrogate", "gp", 12)])
def test_tune_with_a_non_default_setting(tmp_path, option, value, budget):
    # --features derived: the surrogate also sees the kernel quantities derived from the parameters;
    # --features raw: the parameters only; --surrogate gp: an exact GP instead of the tree ensemble.
    target = datasets_dir() / CONV.format("A4000")
    out = tmp_path / "run"
    result = invoke("tune", "--backend", f"replay:{target}", "--budget", str(budget), f"--{option}", value,
                    "--output", str(out))
    assert "best config" in result.output
    report = json.loads((out / "result.json").read_text())
    assert report["n_evaluations"] == budget and report["settings"][option] == value


@pytest.mark.parametrize(("with_prior", "expected"), [(True, "mixed"), (False, "raw")])
def test_tune_features_default_to_mixed_when_tuning_from_a_prior(tmp_path, with_prior, expected):
    target = datasets_dir() / CONV.format("A4000")
    prior = ["--prior", str(datasets_dir() / CONV.format("A6000"))] if with_prior else []
    invoke("tune", "--backend", f"replay:{target}", "--budget", "8", *prior, "--output", str(tmp_path / "run"))
    settings = json.loads((tmp_path / "run" / "result.json").read_text())["settings"]
    assert (settings["features"], settings["features_used"], settings["member_views"]) == ("auto", expected,
                                                                                         "alternate")


TWO_OBJECTIVES = ["--objective", "runtime_ms", "--objective", "metric.compile_time_ms"]  # multi-objective tuning


@pytest.mark.parametrize("extra", [["--surrogate", "forest"], ["--surrogate", "gp", *TWO_OBJECTIVES]])
def test_tune_refuses_unknown_or_unsupported_surrogates(monkeypatch, capsys, extra):
    target = datasets_dir() / CONV.format("A4000")
    code, out, err = run_main(monkeypatch, capsys, "tune", "--backend", f"replay:{target}", *extra)
    assert_one_line_error(code, out, err, "surrogate")


@pytest.mark.parametrize("extra", [["--features", "tiles"], ["--features", "derived", *TWO_OBJECTIVES],
                                   ["--features", "mixed", *TWO_OBJECTIVES]])
def test_tune_refuses_unknown_or_unsupported_features(monkeypatch, capsys, extra):
    target = datasets_dir() / CONV.format("A4000")
    code, out, err = run_main(monkeypatch, capsys, "tune", "--backend", f"replay:{target}", *extra)
    assert_one_line_error(code, out, err, "--features")


def test_a_kernel_session_describes_each_config_as_its_measured_row_would_be():
    from perfpred.tuner._session import open_session

    session = open_session("kernel:sgemm:test")
    config = session.candidates.iloc[[0]]
    described = session.describe(config).iloc[0].to_dict()
    measured = session.backend.measure(config.iloc[0].to_dict()).to_row()
    assert measured["status"] == "ok"
    before_measuring = {k: v for k, v in measured.items()
                        if k in ("kind", "hardware_id", "hardware_json") or k.startswith(("workload.", "config."))}
    assert described == before_measuring  # what a trained model saw in training, it sees when tuning


@pytest.fixture(scope="module")
def two_gpu_convolution_store(tmp_path_factory):
    """The A4000's and the A6000's recorded convolution spaces in one store, as a user imports them."""
    store = tmp_path_factory.mktemp("two-gpus") / "store"
    invoke("import", "kernel-tuner", str(datasets_dir() / CONV.format("A4000")),
           str(datasets_dir() / CONV.format("A6000")), "--into", str(store))
    return store


def test_evaluate_a_new_gpu_from_a_few_rows_with_another_gpus_recording(two_gpu_convolution_store, tmp_path):
    """100 measured configs of the A6000 predict the rest of its space better with the A4000's recording
    as a feature (benchmarks/new_hardware.py, 3 seeds: 16.4 -> 9.9% MAPE at N=100), and a learning
    curve has one row per training size."""
    store = str(two_gpu_convolution_store)
    common = ["evaluate", "--store", store, "--kind", "kernel", "--hardware", "gpu-nvidia-rtx-a6000",
              "--models", "deep-trees", "--seeds", "0"]
    scores = {}
    for name, extra in (("own", []), ("reference", ["--reference", store])):
        output = tmp_path / f"{name}.json"
        result = invoke(*common, "--train-size", "50,100", *extra, "--output", str(output))
        curve = json.loads(output.read_text())
        assert set(curve) == {"50", "100"}
        for size, results in curve.items():
            fold = results["deep-trees"]["folds"][0]
            assert fold["n_train"] == int(size) and fold["n"] == 3889 - int(size)  # the rest of the working configs
        scores[name] = curve["100"]["deep-trees"]["folds"][0]["mape_pct"]
    assert "3889 rows: N trained on, the rest scored, reference times of 1 other device" in " ".join(
        result.output.split())
    assert scores["reference"] < 0.8 * scores["own"], scores


def test_train_with_a_reference_keeps_it_for_predictions(two_gpu_convolution_store, tmp_path):
    from perfpred.models import load_model

    few = MeasurementStore(tmp_path / "a6000-few", create=True)
    rows = MeasurementStore(two_gpu_convolution_store).load()
    a6000 = rows[(rows["hardware_id"] == "gpu-nvidia-rtx-a6000") & (rows["status"] == "ok")]
    few.append_frame(a6000.sample(200, random_state=0))
    # xgb, not the kernel default deep-trees: --reference-mode auto fits 26 models here
    result = invoke("train", "--store", str(few.path), "--kind", "kernel", "--model", "xgb", "--reference",
                    str(two_gpu_convolution_store), "--reference-mode", "auto", "--name", "conv-a6000-from-200")
    assert "leaving out its 3889 rows of the hardware trained on" in " ".join(result.output.split())
    model = load_model("conv-a6000-from-200")
    assert model.reference_times_.hardware_ids == ["gpu-nvidia-rtx-a4000"]
    assert model.reference is model.reference_times_  # the log times per config, not the recordings' rows
    assert f"--reference-mode auto chose {model.reference_mode_}" in " ".join(result.output.split())
    unseen = a6000.drop(a6000.sample(200, random_state=0).index).head(50)
    predicted = model.predict(unseen)
    ape = abs(predicted / unseen["runtime_ms"].to_numpy() - 1)
    assert ape.mean() < 0.25, ape.mean()


@pytest.mark.parametrize("extra, needles", [
    (["--hardware", "gpu-no-such"], ["--hardware (or --hardware-id) must name a hardware id", "gpu-nvidia-rtx-a4000"]),
    (["--hardware", "gpu-nvidia-rtx-a4000", "--reference", "SAME"],
     ["--reference", ": it must hold rows of hardware other than the training rows'"]),
    (["--reference", "GEMM"], ["--reference", ": reference times need 'config.*' columns in both"]),
    (["--split", "shape", "--train-size", "50"], ["--train-size needs --split random"]),
    (["--reference", "MISSING"], ["no Measurement store"]),
    (["--reference-mode", "both"], ["--reference-mode must be one of features, offset, linear, auto", "'both'"]),
])
def test_evaluate_refuses_a_bad_hardware_reference_or_train_size(monkeypatch, capsys, tmp_path, extra, needles):
    store = tmp_path / "store"
    invoke("import", "kernel-tuner", str(datasets_dir() / CONV.format("A4000")), "--into", str(store))
    if "GEMM" in extra:  # another kernel's recording: no tuning parameter in common
        invoke("import", "kernel-tuner", str(datasets_dir() / GEMM.format("RTX_Titan")),
               "--into", str(tmp_path / "gemm"))
    extra = [{"SAME": str(store), "MISSING": str(tmp_path / "missing"), "GEMM": str(tmp_path / "gemm")}.get(e, e)
             for e in extra]
    code, out, err = run_main(monkeypatch, capsys, "evaluate", "--store", str(store), "--kind", "kernel",
                              "--models", "xgb", *extra)
    assert_one_line_error(code, out, err, *needles)


def test_tune_takes_a_store_of_every_gpu_as_its_prior_and_leaves_the_tuned_one_out(two_gpu_convolution_store,
                                                                                 tmp_path):
    target = datasets_dir() / CONV.format("A4000")
    out = tmp_path / "run"
    result = invoke("tune", "--backend", f"replay:{target}", "--prior", str(two_gpu_convolution_store),
                    "--budget", "8", "--batch", "4", "--output", str(out))
    report = json.loads((out / "result.json").read_text())
    # one prior per GPU in the store, the replayed A4000's own recording not among them
    assert report["settings"]["priors"] == [f"{two_gpu_convolution_store.name}:gpu-nvidia-rtx-a6000"]
    assert "gpu-nvidia-rtx-a4000's own rows in the stores left out" in " ".join(result.output.split())
    assert report["n_evaluations"] == 8


def test_tune_refuses_a_prior_store_without_the_spaces_parameters(monkeypatch, capsys, tmp_path,
                                                                 two_gpu_convolution_store):
    target = datasets_dir() / GEMM.format("RTX_2080_Ti")
    code, out, err = run_main(monkeypatch, capsys, "tune", "--backend", f"replay:{target}", "--prior",
                              str(two_gpu_convolution_store), "--budget", "4")
    assert_one_line_error(code, out, err, "no rows with the space's parameters")
