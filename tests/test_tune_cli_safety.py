"""`perfpred tune` keeps what it measured and refuses what would mix or lose it: a study of
another space or GPU, a storage it cannot open, a space file that does not fit the recording,
a prior that is the tuned recording itself, and an interrupted measurement's claim."""

from __future__ import annotations

import json
import pathlib

import pandas as pd
import pytest
import yaml
from test_cli import assert_one_line_error, invoke, run_main

from perfpred.settings import datasets_dir
from perfpred.tuner import SearchSpace, Tuner, TuneSettings
from perfpred.tuner._study import ClaimTable

CONV = "kernel-tuner/convolution/{}.json.gz"
GEMM = "kernel-tuner/gemm/{}.json.gz"


def _replay(name: str, pattern: str = CONV) -> str:
    return f"replay:{datasets_dir() / pattern.format(name)}"


def test_a_study_refuses_another_gpu_or_another_kernel(monkeypatch, capsys, tmp_path):
    out = tmp_path / "run"
    invoke("tune", "--backend", _replay("A4000"), "--budget", "4", "--study", "shared", "--output", str(out))
    for backend, needle in ((_replay("A6000"), "backend=replay-a6000-json-gz"),
                            (_replay("RTX_3090", GEMM), "parameters=")):
        code, stdout, err = run_main(monkeypatch, capsys, "tune", "--backend", backend, "--budget", "8",
                                     "--study", "shared", "--output", str(out))
        assert_one_line_error(code, stdout, err, "study 'shared'", needle)
    assert json.loads((out / "result.json").read_text())["n_evaluations"] == 4  # the first run's report stands


@pytest.mark.parametrize("url, needle, exit_code", [("foo://bar", "Can't load plugin", 2),
                                                    ("not-a-url", "Could not parse", 2),
                                                    ("sqlite:////no/such/dir/x.db", "unable to open", 1)])
def test_a_storage_that_cannot_be_opened_is_one_line(monkeypatch, capsys, tmp_path, url, needle, exit_code):
    """A URL that is no storage URL is bad input (2); one whose database cannot be opened, the environment (1)."""
    code, out, err = run_main(monkeypatch, capsys, "tune", "--backend", _replay("A4000"), "--budget", "4",
                              "--storage", url, "--output", str(tmp_path / "run"))
    assert_one_line_error(code, out, err, f"--storage {url}", needle, exit_code=exit_code)


def test_a_study_with_other_objectives_is_refused(monkeypatch, capsys, tmp_path):
    out = tmp_path / "run"
    invoke("tune", "--backend", _replay("A4000"), "--budget", "4", "--study", "s", "--output", str(out))
    code, stdout, err = run_main(monkeypatch, capsys, "tune", "--backend", _replay("A4000"), "--budget", "4",
                                 "--study", "s", "--output", str(out), "--objective", "runtime_ms",
                                 "--objective", "metric.compile_time_ms")
    assert_one_line_error(code, stdout, err, "study 's'", "minimize, minimize")


def _space_file(tmp_path, **changes) -> str:
    import gzip

    with gzip.open(datasets_dir() / CONV.format("A4000")) as f:
        recorded = json.load(f)
    params = {**recorded["tune_params"], **changes}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"params": params}))
    return str(path)


def test_a_space_file_narrows_a_replayed_space(tmp_path):
    out = tmp_path / "run"
    space = _space_file(tmp_path, block_size_x=[32, 64], use_shmem=[1])
    invoke("tune", "--backend", _replay("A4000"), "--budget", "8", "--space", space, "--output", str(out))
    history = pd.read_csv(out / "history.csv")
    assert len(history) == 8
    assert set(history["block_size_x"]) <= {32, 64} and set(history["use_shmem"]) == {1}



def test_a_space_file_reads_exponent_numbers_as_numbers(tmp_path):
    """YAML 1.1 (PyYAML's safe_load) reads 3.2e1 as the string '3.2e1'; a space file means 32."""
    out = tmp_path / "run"
    space = pathlib.Path(_space_file(tmp_path))
    spec = yaml.safe_load(space.read_text())
    del spec["params"]["block_size_x"]
    space.write_text(yaml.safe_dump(spec) + "  block_size_x: [3.2e1, 6.4e1]\n")  # under params:
    invoke("tune", "--backend", _replay("A4000"), "--budget", "4", "--space", str(space), "--output", str(out))
    assert set(pd.read_csv(out / "history.csv")["block_size_x"]) <= {32, 64}

@pytest.mark.parametrize("content, needle", [("", "must hold a mapping"), ("params:\n  FOO: [1, 2]\n", "['FOO']"),
                                             (None, "it is a directory")])
def test_a_space_file_that_does_not_fit_is_one_line(monkeypatch, capsys, tmp_path, content, needle):
    path = tmp_path / "space.yaml"
    if content is None:
        path.mkdir()
    else:
        path.write_text(content)
    code, out, err = run_main(monkeypatch, capsys, "tune", "--backend", _replay("A4000"), "--budget", "4",
                              "--space", str(path), "--output", str(tmp_path / "run"))
    assert_one_line_error(code, out, err, needle)


def test_a_space_file_outside_the_recording_is_one_line(monkeypatch, capsys, tmp_path):
    space = _space_file(tmp_path, block_size_x=[17])
    code, out, err = run_main(monkeypatch, capsys, "tune", "--backend", _replay("A4000"), "--budget", "4",
                              "--space", space, "--output", str(tmp_path / "run"))
    assert_one_line_error(code, out, err, "no recorded config lies in")


def test_the_replayed_recording_is_not_its_own_prior(monkeypatch, capsys, tmp_path):
    recording = str(datasets_dir() / CONV.format("A4000"))
    code, out, err = run_main(monkeypatch, capsys, "tune", "--backend", f"replay:{recording}", "--budget", "4",
                              "--prior", recording, "--output", str(tmp_path / "run"))
    assert_one_line_error(code, out, err, "is the replayed recording itself")


@pytest.mark.parametrize("extra, needle", [(["--max-wall-s", "0"], "max_wall_s > 0"),
                                           (["--early-stop", "1"], "early_stop_rel in (0, 1)"),
                                           (["--early-stop", "nan"], "early_stop_rel in (0, 1)")])
def test_limits_that_could_never_act_are_refused(monkeypatch, capsys, tmp_path, extra, needle):
    code, out, err = run_main(monkeypatch, capsys, "tune", "--backend", _replay("A4000"), "--budget", "4",
                              "--output", str(tmp_path / "run"), *extra)
    assert_one_line_error(code, out, err, needle)


class _Interrupting:
    """Hardware that is interrupted (Ctrl-C) in the middle of its ``at``-th measurement."""

    def __init__(self, at: int | None = 3) -> None:
        self.calls = 0
        self.at = at

    def measure(self, config):
        from perfpred.datasets import Measurement

        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return Measurement(kind="kernel", workload={}, config=dict(config), hardware_id="synthetic",
                           runtime_ms=1.0 + config["x"] / 10)


def test_an_interrupted_measurement_gives_its_claim_back(tmp_path):
    space = SearchSpace({"x": list(range(16))})
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    with pytest.raises(KeyboardInterrupt):
        Tuner(space, _Interrupting(), TuneSettings(budget=8, batch_size=4, ensemble=2), storage=storage,
              study_name="s").run()
    claims = ClaimTable(storage, "s")
    assert claims.n_claimed() == 2  # the two finished measurements; the interrupted one is free again
    result = Tuner(space, _Interrupting(at=None), TuneSettings(budget=8, batch_size=4, ensemble=2), storage=storage,
                   study_name="s").run()
    # Resumed, the study reaches its whole budget, every config measured once.
    assert claims.n_claimed() == 8 and result.extra["study_evaluations"] == 8
    assert len(result.study_history) == 8 and not result.study_history["x"].duplicated().any()


def test_interrupting_the_cli_says_how_to_resume(monkeypatch, capsys, tmp_path):
    import perfpred.tuner as tuner_module

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(tuner_module.Tuner, "run", interrupted)
    code, _out, err = run_main(monkeypatch, capsys, "tune", "--backend", _replay("A4000"), "--budget", "4",
                              "--output", str(tmp_path / "run"))
    assert code == 130 and "the same command resumes it" in " ".join(err.split())


def test_interrupting_a_serving_search_says_where_its_launches_are(monkeypatch, capsys, tmp_path):
    import perfpred.tuner as tuner_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tuner_module, "tune_serving_live", interrupted)
    code, _out, err = run_main(monkeypatch, capsys, "tune-serving", "--budget", "2", "--store",
                               str(tmp_path / "store"), "--output", str(tmp_path / "run"))
    assert code == 130 and "finished launch(es)" in " ".join(err.split())


@pytest.mark.parametrize("value", ["0", "-5", "inf"])
def test_a_claim_grace_that_cannot_work_is_one_line(monkeypatch, capsys, tmp_path, value):
    code, out, err = run_main(monkeypatch, capsys, "tune", "--backend", _replay("A4000"), "--budget", "4",
                              "--claim-grace-s", value, "--output", str(tmp_path / "run"))
    assert_one_line_error(code, out, err, "claim_grace_s")
    assert not (tmp_path / "run").exists()
