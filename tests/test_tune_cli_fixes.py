"""`perfpred tune` after a QA pass: a study knows its GPU and problem (not its file's name), only
written files are named, Ctrl-C leaves the study's report, a narrowed space is scored against its
own optimum, and the replay says which runtime statistic it tunes."""

from __future__ import annotations

import gzip
import json
import shutil

import pandas as pd
import pytest
import yaml
from test_cli import assert_one_line_error, run_main
from test_tune_cli_safety import CONV, _replay

from perfpred.collect import ReplayBackend
from perfpred.errors import InvalidInputError
from perfpred.settings import datasets_dir


def _tune(monkeypatch, capsys, backend: str, out, *extra: str) -> tuple[int, str, str]:
    return run_main(monkeypatch, capsys, "tune", "--backend", backend, "--output", str(out), *extra)


# ---------------------------------------------------------------------------- 1. a study's identity


def test_a_second_gpus_recording_under_the_first_ones_file_name_is_refused(monkeypatch, capsys, tmp_path):
    import optuna

    out = tmp_path / "run"
    code, _, err = _tune(monkeypatch, capsys, _replay("A4000"), out, "--budget", "4")
    assert code == 0, err
    (first,) = optuna.get_all_study_names(f"sqlite:///{out / 'study.db'}")
    copy = tmp_path / "cp" / "A4000.json.gz"  # the A6000's recording, saved under the A4000's name
    copy.parent.mkdir()
    shutil.copy(datasets_dir() / CONV.format("A6000"), copy)
    # Named as the A4000's study: refused. Without --study its default name is its own (tests/test_tune_usability.py).
    code, stdout, err = _tune(monkeypatch, capsys, f"replay:{copy}", out, "--budget", "6", "--study", first)
    assert_one_line_error(code, stdout, err, "hardware=gpu-nvidia-rtx-a4000", "hardware=gpu-nvidia-rtx-a6000")
    assert json.loads((out / "result.json").read_text())["n_evaluations"] == 4  # nothing of the A6000 joined


def test_the_same_recording_renamed_resumes_its_study(monkeypatch, capsys, tmp_path):
    out = tmp_path / "run"
    renamed = tmp_path / "conv-a4000-copy.json.gz"
    shutil.copy(datasets_dir() / CONV.format("A4000"), renamed)
    for backend, budget in ((_replay("A4000"), "4"), (f"replay:{renamed}", "6")):
        code, _, err = _tune(monkeypatch, capsys, backend, out, "--budget", budget, "--study", "s")
        assert code == 0, err
    report = json.loads((out / "result.json").read_text())
    assert (report["n_evaluations"], report["n_evaluations_this_run"]) == (6, 2)


def test_a_study_made_before_hardware_was_recorded_resumes_by_its_backend_name(tmp_path):
    from perfpred.tuner._study import open_study

    url = f"sqlite:///{tmp_path / 'study.db'}"
    old = {"parameters": ["x"], "backend": "replay-a4000-json-gz"}  # what an earlier perfpred recorded
    open_study(url, "s", ["minimize"], old)
    with pytest.raises(InvalidInputError, match="tunes backend=replay-a4000-json-gz, but this run has backend=b"):
        open_study(url, "s", ["minimize"], {**old, "backend": "b", "hardware": "gpu-a"})
    study = open_study(url, "s", ["minimize"], {**old, "hardware": "gpu-a"})
    assert study.user_attrs["perfpred_identity"]["hardware"] == "gpu-a"  # told apart by its GPU from now on
    with pytest.raises(InvalidInputError, match=r"hardware=gpu-a .*hardware=gpu-b"):
        open_study(url, "s", ["minimize"], {**old, "hardware": "gpu-b"})


def test_a_live_kernel_study_refuses_another_machine_or_problem(monkeypatch, tmp_path):
    import perfpred.collect
    from perfpred.tuner._session import open_session
    from perfpred.tuner._study import open_study

    url = f"sqlite:///{tmp_path / 'study.db'}"
    here = open_session("kernel:sgemm:test").study_identity()
    assert here["workload"] == {"kernel": "sgemm", "m": 48, "n": 64, "k": 40}
    open_study(url, "s", ["minimize"], here)
    with pytest.raises(InvalidInputError, match="workload="):
        open_study(url, "s", ["minimize"], open_session("kernel:sgemm:m=64,n=64,k=64").study_identity())
    monkeypatch.setattr(perfpred.collect, "fingerprint", lambda device="cpu": {"hardware_id": "cpu-another-host"})
    with pytest.raises(InvalidInputError, match="this run has hardware=cpu-another-host"):
        open_study(url, "s", ["minimize"], open_session("kernel:sgemm:test").study_identity())


# ---------------------------------------------------------------------------- 2. only written files


# One maximised --objective is single-objective tuning now (tests/test_tune_objective_fixes.py); a constraint
# keeps the Pareto tuner with its one objective.
@pytest.mark.parametrize("extra", [["--constraint", "runtime_ms <= 0.1"]])
def test_one_objective_names_no_plot_it_did_not_write(monkeypatch, capsys, tmp_path, extra):
    out = tmp_path / "run"
    code, stdout, err = _tune(monkeypatch, capsys, _replay("A4000"), out, "--budget", "4", *extra)
    assert code == 0, err
    assert not (out / "pareto.png").exists()  # one objective: its best so far is the plot
    assert f"plot: {out / 'best_so_far.png'}" in stdout and (out / "best_so_far.png").is_file()
    assert f"report: {out / 'result.json'}" in stdout and (out / "result.json").is_file()  # pareto.json: 2+


def test_two_objectives_name_the_plot_they_wrote(monkeypatch, capsys, tmp_path):
    out = tmp_path / "run"
    code, stdout, err = _tune(monkeypatch, capsys, _replay("A4000"), out, "--budget", "4", "--objective",
                              "runtime_ms", "--objective", "metric.compile_time_ms")
    assert code == 0, err
    assert f"plot: {out / 'pareto.png'}" in stdout and (out / "pareto.png").is_file()


# ---------------------------------------------------------------------------- 3. Ctrl-C


def _interrupt_at(monkeypatch, call: int) -> None:
    """The replay raises KeyboardInterrupt (Ctrl-C) at its ``call``-th measurement."""
    measure, calls = ReplayBackend.measure, [0]

    def interrupted(self, cfg):
        calls[0] += 1
        if calls[0] == call:
            raise KeyboardInterrupt
        return measure(self, cfg)

    monkeypatch.setattr(ReplayBackend, "measure", interrupted)


def test_ctrl_c_writes_the_report_of_the_study_so_far(monkeypatch, capsys, tmp_path):
    out = tmp_path / "run"
    _interrupt_at(monkeypatch, 7)
    code, _, err = _tune(monkeypatch, capsys, _replay("A4000"), out, "--budget", "400")
    last = err.strip().splitlines()[-1]
    assert code == 130 and "Traceback" not in err
    assert "interrupted after 6 evaluation(s)" in last and f"report of its 6 evaluation(s) so far: {out}" in last
    report = json.loads((out / "result.json").read_text())
    assert report["n_evaluations"] == 6 and report["best_value"] is not None
    assert len(pd.read_csv(out / "history.csv")) == 6 and (out / "best_so_far.png").is_file()
    monkeypatch.undo()  # the same command resumes; its report covers both runs
    code, _, err = _tune(monkeypatch, capsys, _replay("A4000"), out, "--budget", "8")
    assert code == 0, err
    report = json.loads((out / "result.json").read_text())
    assert (report["n_evaluations"], report["n_evaluations_this_run"]) == (8, 2)


def test_ctrl_c_writes_the_pareto_report_of_the_study_so_far(monkeypatch, capsys, tmp_path):
    out = tmp_path / "run"
    _interrupt_at(monkeypatch, 6)
    code, _, err = _tune(monkeypatch, capsys, _replay("A4000"), out, "--budget", "400", "--objective",
                         "runtime_ms", "--objective", "metric.compile_time_ms")
    assert code == 130 and f"report of its 5 evaluation(s) so far: {out / 'pareto.json'}" in err.splitlines()[-1]
    report = json.loads((out / "pareto.json").read_text())
    assert report["study_evaluations"] == 5 and report["front"] and report["stopped_by"] == "interrupted"
    assert (out / "pareto.png").is_file()


# ---------------------------------------------------------------------------- 4. a narrowed space


NARROW = {"block_size_x": [32, 64], "block_size_y": [2, 4], "tile_size_x": [1, 2], "tile_size_y": [1, 2],
          "read_only": [0], "use_padding": [0], "use_shmem": [0, 1], "use_cmem": [1], "filter_height": [15],
          "filter_width": [15]}


def _space(tmp_path, **changes) -> str:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"params": {**NARROW, **changes}}))
    return str(path)


def test_a_narrowed_space_is_scored_against_the_optimum_it_admits(monkeypatch, capsys, tmp_path):
    out = tmp_path / "run"
    code, stdout, err = _tune(monkeypatch, capsys, _replay("A4000"), out, "--budget", "40", "--space",
                              _space(tmp_path, block_size_x=[32, 64, 1000]))
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "block_size_x [1000]" in warnings[0] and "not in the recording" in warnings[0]
    table = ReplayBackend.from_file(datasets_dir() / CONV.format("A4000")).table
    inside = pd.Series(True, index=table.index)
    for name, values in NARROW.items():
        inside &= table[f"config.{name}"].isin(values)
    assert inside.sum() == 32
    optimum = table.loc[inside & (table["status"] == "ok"), "runtime_ms"].min()
    report = json.loads((out / "result.json").read_text())
    assert report["optimum"] == pytest.approx(optimum) and report["best_value"] == pytest.approx(optimum)
    text = " ".join(stdout.split())
    assert "space_exhausted" in text and "best / optimum of the 32 recorded configs in --space" in text


def test_a_space_parameter_with_no_recorded_value_is_refused_naming_it(monkeypatch, capsys, tmp_path):
    code, out, err = _tune(monkeypatch, capsys, _replay("A4000"), tmp_path / "run", "--budget", "4", "--space",
                           _space(tmp_path, block_size_x=[17, 1000]))
    assert_one_line_error(code, out, err, "no recorded config lies in", "no block_size_x of [17, 1000] is recorded")


# ---------------------------------------------------------------------------- 5. the runtime statistic


def test_the_replay_says_its_runtime_is_the_median_once(monkeypatch, capsys, tmp_path):
    code, out, err = _tune(monkeypatch, capsys, _replay("A4000"), tmp_path / "run", "--budget", "4")
    assert code == 0, err
    assert " ".join(out.split()).count("median of each config's recorded times") == 1 and "mean_ms" in out


def test_mean_ms_tunes_kernel_tuners_own_time_on_a_replay(monkeypatch, capsys, tmp_path):
    out = tmp_path / "run"
    code, stdout, err = _tune(monkeypatch, capsys, _replay("A4000"), out, "--budget", "4", "--objective", "mean_ms")
    assert code == 0, err
    text = " ".join(stdout.split())  # one objective: the single-objective tuner, not a one-config Pareto front
    assert "Pareto front" not in text and "perfpred-tune-" in text and "median of each" not in text
    assert "objective: mean_ms" in text and "best / recorded optimum" in text  # mean_ms's own recorded optimum
    assert (out / "best_so_far.png").is_file() and not (out / "pareto.json").exists()
    with gzip.open(datasets_dir() / CONV.format("A4000")) as f:
        cache = json.load(f)
    names = list(cache["tune_params"])
    report = json.loads((out / "result.json").read_text())
    recorded = cache["cache"][",".join(str(report["best_config"][n]) for n in names)]
    assert report["best_value"] == pytest.approx(recorded["time"])  # Kernel Tuner's `time`
    assert 0 < report["optimum"] <= report["best_value"]


# ---------------------------------------------------------------------------- 6. resuming (second QA pass)


@pytest.mark.parametrize("order", ["space-later", "space-first"])
def test_a_study_resumed_in_another_space_is_refused_before_measuring(monkeypatch, capsys, tmp_path, order):
    out, narrowed = tmp_path / "run", ["--space", _space(tmp_path)]
    first, second = ([], narrowed) if order == "space-later" else (narrowed, [])
    code, _, err = _tune(monkeypatch, capsys, _replay("A4000"), out, "--budget", "6", *first)
    assert code == 0, err
    for budget in ("8", "4"):  # a larger budget, and one the study already holds (its best lay outside --space)
        code, stdout, err = _tune(monkeypatch, capsys, _replay("A4000"), out, "--budget", budget, *second)
        assert_one_line_error(code, stdout, err, "tunes block_size_x in", "use another --study or --output")
        assert json.loads((out / "result.json").read_text())["n_evaluations"] == 6


def test_a_renamed_recording_resumes_its_study_without_naming_it(monkeypatch, capsys, tmp_path):
    import optuna

    out = tmp_path / "run"
    renamed = tmp_path / "mycopy.json.gz"
    shutil.copy(datasets_dir() / CONV.format("A4000"), renamed)
    for backend, budget in ((_replay("A4000"), "4"), (f"replay:{renamed}", "6")):
        code, _, err = _tune(monkeypatch, capsys, backend, out, "--budget", budget)
        assert code == 0, err
    report = json.loads((out / "result.json").read_text())
    assert (report["n_evaluations"], report["n_evaluations_this_run"]) == (6, 2)
    (name,) = optuna.get_all_study_names(f"sqlite:///{out / 'study.db'}")
    assert name.startswith("perfpred-tune-replay-a4000-json-gz-")


def test_the_live_table_counts_the_studys_evaluations(monkeypatch, capsys, tmp_path):
    out = tmp_path / "run"
    code, _, err = _tune(monkeypatch, capsys, _replay("A4000"), out, "--budget", "6")
    assert code == 0, err
    best = json.loads((out / "result.json").read_text())["best_value"]
    code, _, err = _tune(monkeypatch, capsys, _replay("A4000"), out, "--budget", "8")
    assert code == 0, err
    text = " ".join(err.split())
    assert "8 / 8 (2 this run)" in text and "0 / 8" not in text
    final = json.loads((out / "result.json").read_text())["best_value"]
    assert f"{min(best, final):.4g}" in text
