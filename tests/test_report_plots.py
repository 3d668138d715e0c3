"""The best-so-far plot of `perfpred tune` / `perfpred demo` reports: it draws the evaluations the
study holds (a resumed or early-stopped run's too), keeps an earlier run's comparisons, marks the
demo's re-timed answers, reads plainly (units, plain numbers, integer x), names the recording's
kernel, device and problem, and a missing matplotlib costs the plot only."""

from __future__ import annotations

import json
import sys
import zlib

import numpy as np
import pandas as pd
import pytest
from test_cli import run_main
from test_tune_cli_safety import _replay

from perfpred.collect._kernel import KernelCollector
from perfpred.datasets import Measurement
from perfpred.tuner._report_plot import metric_label
from perfpred.tuner._session import open_session, write_report

DEDISPERSION = "kernel-tuner/dedispersion/{}.json.gz"


def _lines(fig) -> dict[str, object]:
    return {line.get_label(): line for line in fig.axes[0].get_lines()}


def _report(run_dir, values, *, budget, comparisons=None, settings=None, **kwargs):
    history = pd.DataFrame({"x": range(len(values)), "value": values, "status": "ok"})
    return write_report(run_dir, history=history, settings={"backend": "replay:x.json", "objective": "runtime_ms",
                                                            "direction": "minimize", **(settings or {})},
                        best_config=None, best_value=min(values), comparisons=comparisons or {}, optimum=None,
                        budget=budget, description="test", **kwargs)


# ---------------------------------------------------------------------------- 1. resumed and early-stopped runs


def test_a_resumed_report_draws_every_evaluation_and_keeps_the_earlier_comparisons(tmp_path, figures):
    values = [20.0 - i * 0.5 for i in range(16)]
    random = [25.0 - i * 0.2 for i in range(16)]
    _report(tmp_path, values, budget=16, comparisons={"random": random})
    # The same study resumed with --budget 4 and no --compare: nothing new measured.
    _report(tmp_path, values, budget=4, n_this_run=0)
    ax = figures[-1].axes[0]
    lines = _lines(figures[-1])
    assert len(lines["perfpred"].get_xdata()) == 16
    assert len(lines["random (earlier run)"].get_xdata()) == 16
    assert "16 in the study, budget 4" in ax.get_xlabel()
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["comparisons"]["random"] == random and result["comparisons_from_earlier_run"] == ["random"]


def test_another_studys_comparisons_are_not_kept(tmp_path, figures):
    _report(tmp_path, [3.0, 2.0, 1.0], budget=3, comparisons={"random": [4.0, 3.0, 2.0]})
    _report(tmp_path, [5.0, 6.0, 7.0], budget=3)  # another history: not the same study grown
    assert "random" not in json.loads((tmp_path / "result.json").read_text())["comparisons"]
    assert [k for k in _lines(figures[-1]) if "random" in k] == []


def test_an_early_stopped_curve_ends_at_its_last_evaluation(tmp_path, figures):
    values = [2.0 - 0.01 * i for i in range(20)]
    _report(tmp_path, values, budget=200, comparisons={"random": [3.0 - 0.01 * i for i in range(30)]})
    ax = figures[-1].axes[0]
    lines = _lines(figures[-1])
    assert max(lines["perfpred"].get_xdata()) == 20
    assert max(lines["random, 30 evaluations"].get_xdata()) == 30  # its own length
    assert ax.get_xlim()[1] <= 31
    assert "20 of budget 200" in ax.get_xlabel()


def test_this_runs_evaluations_are_marked_where_they_are(tmp_path, figures):
    values = [5.0 - 0.1 * i for i in range(8)]
    history = pd.DataFrame({"x": range(8), "value": values, "status": "ok",
                            "worker": ["a", "b", "a", "b", "b", "a", "a", "b"]})
    settings = {"objective": "runtime_ms", "direction": "minimize"}
    common = dict(history=history, settings=settings, best_config=None, best_value=min(values), comparisons={},
                  optimum=None, budget=8, description="test")
    # Workers sharing one study interleave: a tick under each of this worker's evaluations.
    write_report(tmp_path, **common, n_this_run=4, worker="a")
    ticks = _lines(figures[-1])["this run's evaluations (4 of 8)"]
    assert list(ticks.get_xdata()) == [1, 3, 6, 7]
    assert "this run's evaluations from here" not in _lines(figures[-1])
    # A resumed study (this run's are the last ones): one line where they begin.
    write_report(tmp_path, **{**common, "history": history.assign(worker=["a"] * 5 + ["b"] * 3)},
                 n_this_run=3, worker="b")
    assert list(_lines(figures[-1])["this run's evaluations from here"].get_xdata()) == [5.5, 5.5]
    # An earlier run with this run's worker id (a container's same host name and PID): the
    # worker column cannot tell them apart, the count can.
    write_report(tmp_path, **{**common, "history": history.assign(worker="a")}, n_this_run=3, worker="a")
    assert list(_lines(figures[-1])["this run's evaluations from here"].get_xdata()) == [5.5, 5.5]
    # Only this run's evaluations: nothing to mark.
    write_report(tmp_path, **common, n_this_run=8)
    assert not [k for k in _lines(figures[-1]) if k.startswith("this run")]


def test_a_resumed_tune_run_keeps_its_plot(monkeypatch, capsys, tmp_path, figures):
    out = tmp_path / "run"
    code, _, err = run_main(monkeypatch, capsys, "tune", "--backend", _replay("A4000"), "--budget", "6",
                            "--compare", "random", "--output", str(out))
    assert code == 0, err
    code, _, err = run_main(monkeypatch, capsys, "tune", "--backend", _replay("A4000"), "--budget", "4",
                            "--output", str(out))
    assert code == 0, err
    lines = _lines(figures[-1])
    assert len(lines["perfpred"].get_xdata()) == 6 and len(lines["random (earlier run)"].get_xdata()) == 6


# ---------------------------------------------------------------------------- 2. the demo's re-timed answers


class _Collector(KernelCollector):
    """A KernelCollector that times nothing: first-pass and re-timed runtimes are made up and
    rank the configs differently, as a busy machine can."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def measure_dict(self, params):
        cfg = self.config(dict(params))
        h = zlib.crc32(json.dumps(cfg.config(), sort_keys=True, default=str).encode()) % 1000 / 1000
        ms = (0.02 + 0.01 * h) if self.policy is None else (0.05 - 0.02 * h)  # re-timing flips the order
        return Measurement(kind="kernel", workload=cfg.workload(), config=cfg.config(),
                           hardware_id="cpu-test-0000000001", runtime_ms=ms, raw_times_ms=[ms] * 3, n_runs=3)


def test_the_demo_plot_marks_the_retimed_answers_the_table_reports(monkeypatch, tmp_path, figures):
    import perfpred.collect
    from perfpred.tuner._demo import run_demo

    monkeypatch.setattr(perfpred.collect, "KernelCollector", _Collector)
    result = run_demo(run_dir=tmp_path / "demo", budget=4, quick=True)
    table = result.table.set_index("strategy")["confirmed_ms"]
    ax = figures[-1].axes[0]
    lines = _lines(figures[-1])
    for curve, strategy in (("perfpred", "perfpred"), ("random", "random search")):
        assert f"{curve}, first-pass timings" in lines
        marker = lines[f"{curve}, re-timed answer"]
        assert list(marker.get_xdata()) == [4] and marker.get_ydata()[0] == pytest.approx(table[strategy])
    assert lines["default config, re-timed"].get_ydata()[0] == pytest.approx(table["default"])
    title = ax.get_title().replace("\n", " ")
    assert "{" not in title and "m=" in title and "timed live" in title


# ---------------------------------------------------------------------------- 3. axes


@pytest.mark.parametrize(("metric", "label"), [("runtime_ms", "runtime (ms)"), ("metric.gbs", "gbs (GB/s)"),
                                                ("metric.gflops", "gflops (GFLOP/s)"), ("energy_j", "energy (J)"),
                                                ("power_w", "power (W)"), ("metric.ttft_s", "ttft (s)"),
                                                ("metric.output_tokens_per_s", "output_tokens_per_s (tokens/s)"),
                                                ("metric.occupancy", "occupancy")])
def test_a_metric_is_labelled_with_its_unit(metric, label):
    assert metric_label(metric) == label


def _is_plain_number(label: str) -> bool:
    """A tick label reads as a plain number: it parses as a float ("0" too) with no exponent, no
    "x 10^k" and no mathtext."""
    try:
        float(label.replace("\N{MINUS SIGN}", "-"))
    except ValueError:
        return False
    return not any(c in label.lower() for c in ("e", "\N{MULTIPLICATION SIGN}", "^", "$"))


def test_a_narrow_range_is_linear_with_plain_numbers_and_integer_x(tmp_path, figures):
    _report(tmp_path, [13.7, 13.5, 13.25, 13.2, 13.1], budget=5)
    fig = figures[-1]
    fig.canvas.draw()
    ax = fig.axes[0]
    assert ax.get_yscale() == "linear" and ax.get_ylabel() == "best runtime (ms)"
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert labels and all(_is_plain_number(t) for t in labels), labels
    assert all(float(t).is_integer() for t in ax.get_xticks() if 0.5 <= t <= 5.5)


def test_a_wide_range_is_log_with_plain_numbers(tmp_path, figures):
    _report(tmp_path, [3.0, 40.0, 500.0], budget=3,
            settings={"objective": "metric.gbs", "direction": "maximize"})
    fig = figures[-1]
    fig.canvas.draw()
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and ax.get_ylabel().startswith("best gbs (GB/s)")
    labels = [t.get_text() for t in ax.get_yticklabels() + ax.get_yticklabels(minor=True) if t.get_text()]
    assert labels and all(_is_plain_number(t) for t in labels), labels


# ---------------------------------------------------------------------------- 4. titles


def test_a_replay_is_named_by_its_kernel_device_and_problem(data):
    conv = open_session(_replay("A4000")).description
    dedisp = open_session(_replay("A4000", DEDISPERSION)).description
    assert conv != dedisp
    assert conv == "convolution on NVIDIA RTX A4000, problem 4096x4096 (replay of A4000.json.gz)"
    assert dedisp.startswith("dedispersion on NVIDIA RTX A4000, problem 25000x2048")


def test_a_live_kernel_is_named_by_the_device_it_runs_on(monkeypatch):
    from perfpred.collect import _hardware

    monkeypatch.setattr(_hardware, "gpu_specs", lambda: [{"gpu_name": "NVIDIA H100 80GB HBM3"}])
    gpu = open_session("kernel:matmul_cuda:test").description
    assert "on NVIDIA H100 80GB HBM3" in gpu and "CPU" not in gpu
    cpu = open_session("kernel:sgemm:test").description
    assert f"on {_hardware.cpu_spec()['cpu_model']}" in cpu and "m=" in cpu


# ---------------------------------------------------------------------------- 5. no matplotlib


def test_a_missing_matplotlib_skips_the_plot_only(monkeypatch, capsys, tmp_path):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code, _, err = run_main(monkeypatch, capsys, "tune", "--backend", _replay("A4000"), "--budget", "4",
                            "--output", str(tmp_path / "run"))
    assert code == 0, err
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if "plot skipped" in line] == [
        "warning: plot skipped: matplotlib is not installed (pip install matplotlib)"]
    assert json.loads((tmp_path / "run" / "result.json").read_text())["n_evaluations"] == 4
    assert len(pd.read_csv(tmp_path / "run" / "history.csv")) == 4
    assert not (tmp_path / "run" / "best_so_far.png").exists()


# ---------------------------------------------------------------------------- 6. minor


def test_history_floats_lose_their_noise_and_the_last_step_is_marked(tmp_path, figures):
    _report(tmp_path, [13.492208, 12.665567999999999], budget=2)
    text = (tmp_path / "history.csv").read_text()
    assert "12.665568," in text and "12.665567999999999" not in text
    ends = [line for line in figures[-1].axes[0].get_lines() if line.get_marker() == "o"]
    assert [(float(e.get_xdata()[0]), float(e.get_ydata()[0])) for e in ends] == [(2.0, pytest.approx(12.665568))]
    assert figures[-1].axes[0].get_xlim()[1] > 2
    assert np.isfinite(figures[-1].axes[0].get_ylim()).all()
