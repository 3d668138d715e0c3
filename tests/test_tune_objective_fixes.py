"""`perfpred tune` with one objective is single-objective tuning whatever its direction (a maximised
metric included) and takes the single-objective options (--surrogate, --features, --model); a live
`tune-serving` study is told apart by its load, SLO, fixed knobs, machine and knob domains."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_cli import assert_one_line_error, run_main

from perfpred.datasets import Measurement
from perfpred.errors import InvalidInputError

# A synthetic Kernel Tuner cache: runtime is least at the smallest block and tile, GFLOP/s peaks
# away from them and away from the middle of the space (where a space-filling start begins).
TUNE_PARAMS = {"block_size_x": [16, 32, 64, 128, 256, 512], "tile": [1, 2, 4, 8, 16], "unroll": [0, 1, 2, 3]}
PEAK = {"block_size_x": 256, "tile": 2, "unroll": 3}
FASTEST = {"block_size_x": 16, "tile": 1, "unroll": 0}


def _gflops(bx: int, tile: int, unroll: int) -> float:
    return 1000.0 * math.exp(-(math.log2(bx) - 8) ** 2 / 4 - (math.log2(tile) - 1) ** 2 / 2 - (unroll - 3) ** 2 / 3)


def _cache(path: Path, gflops=_gflops) -> Path:
    cache = {}
    for bx, tile, unroll in itertools.product(*TUNE_PARAMS.values()):
        t = 1.0 + 0.01 * bx + 0.3 * tile + 0.1 * unroll
        cache[f"{bx},{tile},{unroll}"] = {"block_size_x": bx, "tile": tile, "unroll": unroll, "time": t,
                                          "times": [t, t * 1.01, t * 0.99], "GFLOP/s": gflops(bx, tile, unroll),
                                          "perfpred_power_w": 100.0, "perfpred_energy_j": 0.1 * t,
                                          "perfpred_power_source": "nvml", "timestamp": "2024-01-01 00:00:00"}
    path.write_text(json.dumps({"device_name": "NVIDIA RTX A4000", "kernel_name": "synthetic",
                                "problem_size": [4096, 4096], "tune_params_keys": list(TUNE_PARAMS),
                                "tune_params": TUNE_PARAMS, "objective": "time", "cache": cache}))
    return path


@pytest.fixture
def synth(tmp_path) -> str:
    return f"replay:{_cache(tmp_path / 'synth.json')}"


def _tune(monkeypatch, capsys, backend: str, out: Path, *extra: str) -> tuple[int, str, str]:
    return run_main(monkeypatch, capsys, "tune", "--backend", backend, "--output", str(out), *extra)


# ---------------------------------------------------------------------------- 1. one maximised objective


def test_one_maximised_objective_is_single_objective_tuning_that_finds_the_highest(monkeypatch, capsys, tmp_path,
                                                                                   synth):
    import optuna

    out = tmp_path / "run"
    code, stdout, err = _tune(monkeypatch, capsys, synth, out, "--objective", "metric.gflops:max", "--budget", "24")
    assert code == 0, err
    text = " ".join(stdout.split())
    assert "objective: metric.gflops (maximised)" in text and "Pareto front" not in text
    assert not (out / "pareto.json").exists() and (out / "best_so_far.png").is_file()
    report = json.loads((out / "result.json").read_text())
    assert report["best_config"] == PEAK and report["best_config"] != FASTEST
    assert report["best_value"] == pytest.approx(_gflops(*PEAK.values()))  # the value as measured, not 1 / value
    assert (report["objective"], report["direction"]) == ("metric.gflops", "maximize")
    # The recording's highest GFLOP/s (the synthetic cache holds the whole space), not runtime's least.
    assert report["settings"]["direction"] == "maximize" and report["optimum"] == pytest.approx(report["best_value"])
    history = pd.read_csv(out / "history.csv")
    assert len(history) == 24
    for row in history.to_dict("records"):  # every value the recorded GFLOP/s of its config
        assert row["value"] == pytest.approx(_gflops(row["block_size_x"], row["tile"], row["unroll"]))
    predicted = history["predicted"].dropna()
    assert len(predicted) and (predicted > 1).all()  # predictions on the metric's scale too (GFLOP/s, not 1/x)
    assert report["best_value"] == pytest.approx(history["value"].max())
    (name,) = optuna.get_all_study_names(f"sqlite:///{out / 'study.db'}")
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{out / 'study.db'}")
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE  # what optuna-dashboard shows
    assert study.best_trial.value == pytest.approx(report["best_value"]) and study.best_trial.params == PEAK
    assert study.user_attrs["perfpred_identity"]["objective"] == "metric.gflops:maximize"


@pytest.mark.parametrize("objective, needles", [
    ("metric.gflops", ["created to maximize", "this run would minimize"]),
    ("runtime_ms", ["metric.gflops", "would minimize (runtime_ms)"]),
])
def test_a_study_of_a_maximised_objective_refuses_another_objective_or_direction(monkeypatch, capsys, tmp_path,
                                                                                 synth, objective, needles):
    out = tmp_path / "run"
    code, _, err = _tune(monkeypatch, capsys, synth, out, "--objective", "metric.gflops:max", "--budget", "4")
    assert code == 0, err
    code, stdout, err = _tune(monkeypatch, capsys, synth, out, "--objective", objective, "--budget", "6")
    assert_one_line_error(code, stdout, err, *needles)
    assert json.loads((out / "result.json").read_text())["n_evaluations"] == 4  # nothing joined it


def test_a_study_refuses_another_objective_of_the_same_direction(monkeypatch, capsys, tmp_path, synth):
    out = tmp_path / "run"
    code, _, err = _tune(monkeypatch, capsys, synth, out, "--budget", "4")
    assert code == 0, err
    code, stdout, err = _tune(monkeypatch, capsys, synth, out, "--objective", "mean_ms", "--budget", "6")
    assert_one_line_error(code, stdout, err, "objective=runtime_ms", "objective=mean_ms")


def test_a_maximised_objective_recorded_at_zero_is_refused_in_one_line(monkeypatch, capsys, tmp_path):
    path = _cache(tmp_path / "zero.json", gflops=lambda bx, tile, unroll: 0.0 if bx == 16 else float(bx))
    code, stdout, err = _tune(monkeypatch, capsys, f"replay:{path}", tmp_path / "run", "--objective",
                              "metric.gflops:max", "--budget", "4")
    assert_one_line_error(code, stdout, err, "maximised objective must be > 0", "metric.gflops=0")
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------- 2. single-objective options


@pytest.mark.parametrize("extra", [["--surrogate", "gp"], ["--surrogate", "blend", "--features", "derived"],
                                   ["--features", "mixed"]])
def test_one_objective_takes_the_single_objective_options(monkeypatch, capsys, tmp_path, synth, extra):
    out = tmp_path / "run"
    code, _, err = _tune(monkeypatch, capsys, synth, out, "--objective", "runtime_ms", "--budget", "8", *extra)
    assert code == 0, err
    report = json.loads((out / "result.json").read_text())
    assert report["n_evaluations"] == 8 and report["settings"]["objective"] == "runtime_ms"
    if "--surrogate" in extra:
        assert report["settings"]["surrogate"] == extra[1]


@pytest.mark.parametrize("extra", [["--objective", "runtime_ms", "--objective", "metric.gflops"],
                                   ["--objective", "runtime_ms", "--constraint", "runtime_ms <= 3"]])
def test_pareto_tuning_still_refuses_the_single_objective_options(monkeypatch, capsys, tmp_path, synth, extra):
    code, stdout, err = _tune(monkeypatch, capsys, synth, tmp_path / "run", "--budget", "4", "--surrogate", "gp",
                              *extra)
    assert_one_line_error(code, stdout, err, "--surrogate gp", "single-objective")


def _fitted(path: str, target: str):
    """A PerformanceModel of ``target`` fitted on the synthetic recording (what `perfpred train` registers)."""
    from perfpred.collect import ReplayBackend
    from perfpred.models import PerformanceModel

    table = ReplayBackend.from_file(Path(path.partition(":")[2])).table
    return PerformanceModel(kind="kernel", regressor="xgb", target=target).fit(table[table["status"] == "ok"])


@pytest.fixture
def models(monkeypatch, synth):
    """``--model rt`` (a runtime model) and ``--model gf`` (a GFLOP/s model), without MLflow."""
    import perfpred.models

    fitted = {"rt": _fitted(synth, "runtime_ms"), "gf": _fitted(synth, "metric.gflops")}
    monkeypatch.setattr(perfpred.models, "load_model", lambda ref: fitted[ref])
    return fitted


@pytest.mark.parametrize("extra", [["--objective", "runtime_ms"], []])
def test_a_runtime_model_starts_single_objective_runtime_tuning(monkeypatch, capsys, tmp_path, synth, models, extra):
    out = tmp_path / "run"
    code, _, err = _tune(monkeypatch, capsys, synth, out, "--model", "rt", "--budget", "8", *extra)
    assert code == 0, err
    report = json.loads((out / "result.json").read_text())
    assert report["settings"]["priors"] == ["model rt"] and report["n_evaluations"] == 8
    assert report["best_config"] == FASTEST  # the model's favourite, measured from the first round


def test_a_model_of_a_maximised_metric_is_its_prior(monkeypatch, capsys, tmp_path, synth, models):
    out = tmp_path / "run"
    code, _, err = _tune(monkeypatch, capsys, synth, out, "--model", "gf", "--objective", "metric.gflops:max",
                         "--budget", "4", "--batch", "2")
    assert code == 0, err
    report = json.loads((out / "result.json").read_text())
    assert report["settings"]["priors"] == ["model gf"] and report["best_config"] == PEAK  # the prior's best first


@pytest.mark.parametrize("objective, model, needles", [
    ("energy_j", "rt", ["--model rt must predict the tuned objective energy_j", "it predicts runtime_ms"]),
    ("metric.gflops:max", "rt", ["--model rt must predict the tuned objective metric.gflops", "predicts runtime_ms"]),
    ("runtime_ms", "gf", ["--model gf must predict the tuned objective runtime_ms", "it predicts metric.gflops"]),
])
def test_a_model_of_another_quantity_than_the_objective_is_refused(monkeypatch, capsys, tmp_path, synth, models,
                                                                   objective, model, needles):
    code, stdout, err = _tune(monkeypatch, capsys, synth, tmp_path / "run", "--model", model, "--objective",
                              objective, "--budget", "4")
    assert_one_line_error(code, stdout, err, *needles)
    assert not (tmp_path / "run").exists()


def test_a_recorded_prior_needs_the_runtime_objective(monkeypatch, capsys, tmp_path, synth):
    other = _cache(tmp_path / "other.json")
    code, stdout, err = _tune(monkeypatch, capsys, synth, tmp_path / "run", "--prior", str(other), "--objective",
                              "energy_j", "--budget", "4")
    assert_one_line_error(code, stdout, err, "`--prior` trains runtime_ms models", "--objective energy_j")


# ---------------------------------------------------------------------------- 3. the Python API


class _Peak:
    """A backend whose metric.rate peaks at x = 6, y = 2 (metric.inverse is 1 / rate; rate 0 where asked)."""

    def __init__(self, zero_at: int | None = None) -> None:
        self.zero_at = zero_at

    def measure(self, config):
        x, y = config["x"], config.get("y", 2)
        rate = 0.0 if x == self.zero_at else 100.0 / (1 + (x - 6) ** 2 + (y - 2) ** 2)
        return Measurement(kind="kernel", workload={}, config=dict(config), hardware_id="synthetic",
                           runtime_ms=1.0 + x, metrics={"rate": rate, "inverse": 1 / rate if rate else 0.0})


def test_the_tuner_maximises_as_it_minimises_the_inverse(tmp_path):
    from perfpred.tuner import SearchSpace, Tuner, TuneSettings

    space = SearchSpace({"x": list(range(12)), "y": list(range(5))})
    settings = TuneSettings(budget=16, objective="metric.rate", direction="maximize")
    tuner = Tuner(space, _Peak(), settings, storage=f"sqlite:///{tmp_path / 'study.db'}", study_name="s")
    result = tuner.run()
    assert result.best_config == {"x": 6, "y": 2} and result.best_value == pytest.approx(100.0)
    curve = result.best_so_far()
    assert np.all(np.diff(curve) >= 0) and curve[-1] == pytest.approx(100.0)
    assert tuner.recorder.study.direction.name == "MAXIMIZE"
    # The same picks as minimising 1 / rate: the tuner's scale is log(1 / value).
    inverse = Tuner(space, _Peak(), TuneSettings(budget=16, objective="metric.inverse")).run()
    assert inverse.history[["x", "y"]].equals(result.history[["x", "y"]])
    assert np.allclose(inverse.history["value"], 1 / result.history["value"])
    with pytest.raises(InvalidInputError, match="direction in"):
        TuneSettings(budget=4, direction="max")


def test_a_live_maximised_measurement_of_zero_counts_as_a_failure(tmp_path):
    """log(1 / 0) has no value: the measurement is recorded as a failure (as a minimised one of 0
    is) and the run goes on; it used to abort the run and lose the measurement."""
    from perfpred.tuner import SearchSpace, Tuner, TuneSettings

    space = SearchSpace({"x": [0, 1, 2, 3]})
    settings = TuneSettings(budget=4, objective="metric.rate", direction="maximize", batch_size=4, n_initial=4)
    result = Tuner(space, _Peak(zero_at=0), settings).run()
    assert len(result.history) == 4
    zero = result.history[result.history["x"] == 0].iloc[0]
    assert zero["status"] == "ok" and pd.isna(zero["value"])
    assert result.best_config == {"x": 3}


# ---------------------------------------------------------------------------- 4. a live serving study's identity


HARDWARE = {"hardware_id": "cpu-test-0000000001", "hardware_name": "test cpu", "gpus": []}


def _serve(tmp_path, monkeypatch, *, hardware=HARDWARE, **changes):
    """One live tuning run into ``tmp_path/run`` on the fake engine, launches replaced by made-up rows."""
    from perfpred.collect.serving import ServingCollector, ServingWorkload, get_engine
    from perfpred.tuner import SearchSpace
    from perfpred.tuner._serving_live import tune_serving_live

    monkeypatch.setattr(ServingCollector, "hardware", property(lambda self: hardware))
    collector = ServingCollector(hardware=hardware)

    def measure(cfg):
        engine = get_engine("fake")
        knobs = cfg.validate(engine)
        return collector._row(cfg, engine, knobs, "ok", raw_ms=[1.0], metrics={
            "output_tokens_per_s": 10.0 * knobs.get("slots", 1), "error_rate": 0.0, "ttft_p99_ms": 5.0})

    kwargs = {"space": SearchSpace({"slots": [1, 2, 4]}), "budget": 2, "run_dir": tmp_path / "run",
              "workload": ServingWorkload(n_requests=6, concurrency=3, prompt_tokens=8, output_tokens=4,
                                          warmup_requests=0), "measure": measure, **changes}
    return tune_serving_live("fake", **kwargs)


def _serving_refused(excinfo, *needles: str) -> None:
    message = str(excinfo.value)
    assert len(message.splitlines()) == 1, message
    for needle in ("use another --output or --storage", *needles):
        assert needle in message, message


def test_a_live_study_resumes_with_the_same_load_and_refuses_another(tmp_path, monkeypatch):
    from perfpred.collect.serving import ServingWorkload, Slo
    from perfpred.tuner import SearchSpace

    first = _serve(tmp_path, monkeypatch)
    identity = first.study.user_attrs["perfpred_identity"]
    assert identity["hardware"] == HARDWARE["hardware_id"] and identity["workload"]["concurrency"] == 3
    assert identity["slo"] is None and identity["fixed_knobs"] == {} and identity["space.slots"] == [1, 2, 4]
    again = _serve(tmp_path, monkeypatch)  # the same run again joins its study
    assert len(again.study.get_trials()) == 4
    other_load = ServingWorkload(n_requests=6, concurrency=2, prompt_tokens=8, output_tokens=4, warmup_requests=0)
    refusals = [
        ({"workload": other_load}, {}, ["workload={'concurrency': 3}", "workload={'concurrency': 2}"]),
        ({"slo": Slo(ttft_ms=40.0)}, {}, ["slo=None", "'ttft_ms': 40.0"]),
        ({"fixed_knobs": {"token_ms": 2.0}}, {}, ["fixed_knobs={'token_ms': None}", "{'token_ms': 2.0}"]),
        ({}, {"hardware": {**HARDWARE, "hardware_id": "cpu-other-host"}},
         ["hardware=cpu-test-0000000001", "hardware=cpu-other-host"]),
        ({"space": SearchSpace({"slots": [1, 3, 6]})}, {}, ["tunes slots in [1, 2, 4]", "slots in [1, 3, 6]"]),
    ]
    for changes, hardware, needles in refusals:
        with pytest.raises(InvalidInputError) as excinfo:
            _serve(tmp_path, monkeypatch, **changes, **hardware)
        _serving_refused(excinfo, *needles)
    assert len(_serve(tmp_path, monkeypatch).study.get_trials()) == 6  # none of them joined it


def test_a_live_study_made_before_its_load_was_recorded_resumes_and_records_it(tmp_path, monkeypatch):
    import optuna

    first = _serve(tmp_path, monkeypatch)
    old = {k: first.study.user_attrs["perfpred_identity"][k] for k in ("parameters", "objectives", "engine", "model")}
    first.study.set_user_attr("perfpred_identity", old)  # what an earlier perfpred recorded
    second = _serve(tmp_path, monkeypatch)
    study = optuna.load_study(study_name=second.study.study_name, storage=second.storage)
    assert len(study.get_trials()) == 4 and study.user_attrs["perfpred_identity"]["workload"]["concurrency"] == 3


def test_tune_serving_refuses_a_second_load_into_the_same_output_in_one_line(monkeypatch, capsys, tmp_path):
    from perfpred.collect.serving import ServingCollector, get_engine

    monkeypatch.setattr(ServingCollector, "hardware", property(lambda self: HARDWARE))

    def measure(self, cfg):  # no server: a made-up row for the config
        engine = get_engine("fake")
        knobs = cfg.validate(engine)
        return self._row(cfg, engine, knobs, "ok", raw_ms=[1.0], metrics={
            "output_tokens_per_s": 10.0 * knobs["slots"], "error_rate": 0.0})

    monkeypatch.setattr(ServingCollector, "measure", measure)
    common = ["tune-serving", "--engine", "fake", "--budget", "2", "--requests", "6", "--prompt-tokens", "8",
              "--output-tokens", "4", "--store", str(tmp_path / "store")]
    code, out, err = run_main(monkeypatch, capsys, *common, "--concurrency", "3", "--output", str(tmp_path / "run"))
    assert code == 0, err
    code, out, err = run_main(monkeypatch, capsys, *common[:-1], str(tmp_path / "store2"), "--concurrency", "2",
                              "--output", str(tmp_path / "run"))
    assert_one_line_error(code, out, err, "workload={'concurrency': 3}", "workload={'concurrency': 2}",
                          "use another --output or --storage")
    assert not (tmp_path / "store2").exists()  # refused before anything was made
    code, out, err = run_main(monkeypatch, capsys, *common, "--concurrency", "2", "--output", str(tmp_path / "two"))
    assert code == 0, err
