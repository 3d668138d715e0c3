"""Options that would be silently ignored or overridden are refused in one line, before
anything runs; `perfpred collect kernel` measures a tunable kernel into a store."""

from __future__ import annotations

import pytest
from test_cli import assert_one_line_error, invoke, run_main

from perfpred.datasets import MeasurementStore


@pytest.mark.parametrize("args, needle", [
    (["collect", "gemm", "--quick", "--n-shapes", "5"], "--quick sets --n-shapes itself"),
    (["collect", "serving", "--concurrency", "0"], "--concurrency >= 1"),
    (["collect", "serving", "--sustainable-rate", "--slo-ttft-ms", "1000", "--probe-s", "0"], "--probe-s > 0"),
    (["tune-serving", "--probe-s", "5"], "it needs --goal sustainable_rate"),
    (["tune-serving", "--goal", "sustainable_rate", "--slo-ttft-ms", "4000", "--probe-s", "0"], "--probe-s > 0"),
    (["tune-serving", "--model", "/tmp"], "--model must be one of"),
    (["demo", "--budget", "0"], "budget >= 4"),
    (["demo", "--kernel", "matmul_triton"], "needs `perfpred demo --gpu`"),
    (["collect", "kernel", "--configs", "0"], "--configs >= 1"),
])
def test_options_that_would_be_ignored_are_refused(monkeypatch, capsys, tmp_path, args, needle):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(monkeypatch, capsys, *args)
    assert_one_line_error(code, out, err, needle)
    assert not (tmp_path / "perfpred-runs").exists()  # refused before any store or run directory exists


def test_a_store_that_is_a_file_is_refused(monkeypatch, capsys, tmp_path):
    path = tmp_path / "store.yaml"
    path.write_text("not a store")
    code, out, err = run_main(monkeypatch, capsys, "collect", "gemm", "--store", str(path))
    assert_one_line_error(code, out, err, "is a file")


def test_collect_kernel_measures_a_sample_into_a_store_and_resumes(tmp_path):
    store = tmp_path / "store"
    invoke("collect", "kernel", "--kernel", "sgemm", "--size", "test", "--configs", "3", "--store", str(store))
    rows = MeasurementStore(store).load()
    assert len(rows) == 3 and (rows["kind"] == "kernel").all()
    assert (rows["status"] == "ok").all() and (rows["runtime_ms"] > 0).all()
    again = invoke("collect", "kernel", "--kernel", "sgemm", "--size", "test", "--configs", "3", "--store", str(store))
    assert len(MeasurementStore(store).load()) == 3 and "skipped" in again.output


def test_ctrl_c_in_a_collect_command_says_it_resumes(monkeypatch, capsys, tmp_path):
    import perfpred.collect as collect_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(collect_module, "run_sweep", interrupted)
    code, _out, err = run_main(monkeypatch, capsys, "collect", "kernel", "--size", "test", "--configs", "2",
                               "--store", str(tmp_path / "store"))
    assert code == 130 and "resumes where it stopped" in " ".join(err.split())
