"""`perfpred tune` on the live CPU kernels after a QA pass: an objective the backend never reports
(a misspelt metric, power without a sensor), an --output that is a file, and a --space the kernel
cannot run (its restrictions, values it does not take, constraints nothing meets) are refused
before anything is measured; a space file's candidates always satisfy the kernel's restrictions."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml
from test_cli import assert_one_line_error, run_main
from test_tune_cli_safety import _replay

KERNEL = "kernel:jacobi2d:test"  # the stencil at its tiny test size: a config compiles and runs in about a second


def _tune(monkeypatch, capsys, out, *extra: str, backend: str = KERNEL) -> tuple[int, str, str]:
    return run_main(monkeypatch, capsys, "tune", "--backend", backend, "--output", str(out), "--budget", "3", *extra)


def _space(tmp_path, params: dict, constraints: list[str] | None = None):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"params": params, "constraints": constraints or []}, sort_keys=False))
    return path


JACOBI = {"tile_x": [64, 128], "tile_y": [2, 4], "unroll": [1, 4], "isa": ["avx2"], "threads": [1]}


# ---------------------------------------------------------------------------- 1. an objective never reported


@pytest.mark.parametrize("flags", [["--objective", "metric.gflopz:max"],
                                   ["--objective", "runtime_ms", "--objective", "metric.gflopz:max"]])
def test_an_objective_the_kernel_never_reports_is_refused_before_anything_runs(monkeypatch, capsys, tmp_path,
                                                                                flags):
    out = tmp_path / "run"
    code, stdout, err = _tune(monkeypatch, capsys, out, *flags)
    assert_one_line_error(code, stdout, err, "--objective", "'metric.gflopz'", "metric.gflops", "runtime_ms")
    assert not out.exists()


def test_the_kernel_backend_lists_what_its_rows_measure(tmp_path):
    from perfpred.tuner._objectives import known_metrics
    from perfpred.tuner._session import KERNEL_METRICS, open_session

    known = known_metrics(open_session(KERNEL).backend)
    assert known == set(KERNEL_METRICS) and {"runtime_ms", "metric.gflops", "metric.gbs"} <= known
    assert not known & {"power_w", "energy_j"}


# ---------------------------------------------------------------------------- 2. power without a power reading


@pytest.mark.parametrize("flags", [["--objective", "energy_j"], ["--objective", "power_w"],
                                   ["--objective", "runtime_ms", "--objective", "energy_j"],
                                   ["--objective", "runtime_ms", "--constraint", "power_w <= 50"]])
def test_a_power_objective_is_refused_where_no_power_is_read(monkeypatch, capsys, tmp_path, flags):
    import perfpred.collect._power as power

    monkeypatch.setattr(power, "_rapl_package_domains", lambda root=None: [])  # a CPU without RAPL, as the QA's
    out = tmp_path / "run"
    code, stdout, err = _tune(monkeypatch, capsys, out, *flags)
    metric = flags[-1].split()[0]
    assert_one_line_error(code, stdout, err, f"{metric} needs a power reading", "record no power",
                          "power source is 'unavailable'", "metric.gflops")
    assert not out.exists()


def test_a_power_objective_is_refused_on_a_recording_without_power(monkeypatch, capsys, tmp_path):
    out = tmp_path / "run"
    code, stdout, err = _tune(monkeypatch, capsys, out, "--objective", "energy_j", backend=_replay("A4000"))
    assert_one_line_error(code, stdout, err, "energy_j needs a power reading", "the recording holds none",
                          "'unavailable'", "runtime_ms")
    assert not out.exists()


# ---------------------------------------------------------------------------- 3. --output that is a file


@pytest.mark.parametrize("under", [False, True])
def test_tune_and_demo_refuse_an_output_that_is_a_file(monkeypatch, capsys, tmp_path, under):
    afile = tmp_path / "afile.txt"
    afile.write_text("kept\n")
    out = afile / "sub" if under else afile
    for args in (["tune", "--backend", KERNEL, "--budget", "3"], ["tune", "--backend", _replay("A4000")],
                 ["demo", "--quick"]):
        code, stdout, err = run_main(monkeypatch, capsys, *args, "--output", str(out))
        assert_one_line_error(code, stdout, err, "--output must be a folder", f"{afile} is a file")
    assert afile.read_text() == "kept\n"


# ---------------------------------------------------------------------------- 4. the kernel's restrictions


def test_a_space_file_is_narrowed_by_the_kernels_restrictions(monkeypatch, capsys, tmp_path):
    from perfpred.datasets import MeasurementStore
    from perfpred.tuner._session import KERNEL_METRICS, open_session

    # 8 configs, 5 of them below jacobi2d's `tile_x * tile_y >= 64`: the collector refuses those.
    space = _space(tmp_path, {"tile_x": [8, 16], "tile_y": [1, 2, 4, 8], "unroll": [1], "isa": ["avx2"],
                              "threads": [1]}, ["tile_x >= 8"])
    candidates = open_session(KERNEL, str(space)).candidates
    assert len(candidates) == 3 and (candidates["tile_x"] * candidates["tile_y"] >= 64).all()
    out = tmp_path / "run"
    code, _, err = _tune(monkeypatch, capsys, out, "--space", str(space))
    assert code == 0, err
    history = pd.read_csv(out / "history.csv")
    assert len(history) == 3 and set(history["status"]) == {"ok"}
    assert json.loads((out / "result.json").read_text())["best_value"] > 0
    # What the rows measured is what the backend says it reports (less a run's constants).
    rows = MeasurementStore(out / "store").load()
    measured = {c for c in rows if c.startswith("metric.") and rows[c].notna().any()}
    constants = {c for c in measured if c.startswith("metric.timing_") and rows[c].nunique() == 1
                 and c not in KERNEL_METRICS} | {"metric.pinned_cpu_mask"}
    assert measured - constants == {m for m in KERNEL_METRICS if m.startswith("metric.")}


def test_the_default_space_keeps_to_the_cpus_this_process_may_use(monkeypatch):
    import perfpred.collect._kernel as kernel
    from perfpred.tuner._session import open_session

    monkeypatch.setattr(kernel, "usable_cpus", lambda: 1)
    candidates = open_session(KERNEL).candidates
    assert set(candidates["threads"]) == {1}  # threads=2 would be refused mid-run on one CPU


# ---------------------------------------------------------------------------- 5. values the kernel does not take


def test_every_value_the_kernel_does_not_take_is_named_at_load_time(monkeypatch, capsys, tmp_path):
    space = _space(tmp_path, {"tile_x": [64, 100, 128], "tile_y": [2, 4, 8], "unroll": [1, 3],
                              "isa": ["avx2", "avx512"], "threads": [1, 4]})
    out = tmp_path / "run"
    code, stdout, err = _tune(monkeypatch, capsys, out, "--space", str(space))
    assert_one_line_error(code, stdout, err, f"--space {space}", "kernel jacobi2d does not accept", "tile_x 100",
                          "unroll 3", "isa 'avx512'", "threads 4")
    assert not out.exists() and stdout == ""  # no study.db, and no progress view was drawn


def test_threads_beyond_the_usable_cpus_narrow_a_space_file_as_they_do_the_kernels_space(monkeypatch, tmp_path):
    import perfpred.collect._kernel as kernel
    from perfpred.tuner._session import open_session

    monkeypatch.setattr(kernel, "usable_cpus", lambda: 1)
    space = _space(tmp_path, {**JACOBI, "threads": [1, 2]})
    assert set(open_session(KERNEL, str(space)).candidates["threads"]) == {1}


def test_an_integer_range_is_checked_value_by_value_and_a_real_range_refused(monkeypatch, capsys, tmp_path):
    from perfpred.tuner._session import open_session

    whole = _space(tmp_path, {**JACOBI, "threads": {"low": 1, "high": 2, "integer": True}})
    session = open_session(KERNEL, str(whole))  # every integer in it is one the kernel takes: accepted
    assert session.space.params["threads"].int_bounds == (1, 2)
    for unroll, named in (({"low": 1, "high": 8, "integer": True}, "unroll 3, 5, 6, 7"),
                          ({"low": 1, "high": 8}, "unroll as a range of real numbers")):
        out = tmp_path / "run"
        code, stdout, err = _tune(monkeypatch, capsys, out, "--space", str(_space(tmp_path, {**JACOBI,
                                                                                              "unroll": unroll})))
        assert_one_line_error(code, stdout, err, named, "it takes [1, 2, 4, 8]")
        assert not out.exists()


# ---------------------------------------------------------------------------- 6. constraints nothing meets


def test_constraints_that_admit_no_config_are_named_with_the_file(monkeypatch, capsys, tmp_path):
    space = _space(tmp_path, JACOBI, ["tile_x * tile_y > 100000"])
    out = tmp_path / "run"
    code, stdout, err = _tune(monkeypatch, capsys, out, "--space", str(space))
    assert_one_line_error(code, stdout, err, f"--space {space}", "admit no configuration",
                          "`tile_x * tile_y > 100000`", "`tile_x * tile_y >= 64`")
    assert "candidates" not in err and not out.exists()
