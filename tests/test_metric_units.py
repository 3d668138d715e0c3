"""One home for a metric's unit and label (perfpred.units) and for plain-number tick labels
(perfpred._plot_ticks): the CLI tables, the best-so-far plot, the Pareto plot, the
predicted-vs-measured plot and benchmarks/tuning.py's figure all say the same; a ``--space``
run's plot names its optimum as its table does."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from test_report_plots import _is_plain_number
from test_tune_cli_fixes import _space, _tune
from test_tune_cli_safety import _replay
from test_tune_objective_fixes import _cache

from perfpred._plot_ticks import PlainNumberFormatter, plain_number, plain_number_ticks, tick_decimals
from perfpred.units import metric_label, metric_unit

REPO = Path(__file__).resolve().parent.parent

# ---------------------------------------------------------------------------- 1. units and labels


@pytest.mark.parametrize(("metric", "unit", "label"), [
    ("runtime_ms", "ms", "runtime (ms)"),
    ("metric.itl_p99_ms", "ms", "itl_p99 (ms)"),
    ("metric.ttft_s", "s", "ttft (s)"),
    ("metric.time_us", "µs", "time (µs)"),
    ("power_w", "W", "power (W)"),
    ("energy_j", "J", "energy (J)"),
    ("metric.gflops", "GFLOP/s", "gflops (GFLOP/s)"),
    ("metric.gbs", "GB/s", "gbs (GB/s)"),
    ("peak_gflops", "GFLOP/s", "peak_gflops (GFLOP/s)"),
    ("metric.images_per_s", "images/s", "images/s"),
    ("metric.videos_per_s", "videos/s", "videos/s"),
    ("metric.tokens_per_s", "tokens/s", "tokens/s"),
    ("metric.output_tokens_per_s", "tokens/s", "output_tokens_per_s (tokens/s)"),
    ("goodput_requests_per_s", "requests/s", "goodput_requests_per_s (requests/s)"),
    ("metric.energy_per_token_j", "J/token", "energy (J/token)"),
    ("energy_per_request_j", "J/request", "energy (J/request)"),
    ("tokens_per_joule", "tokens/J", "tokens/J"),
    ("metric.occupancy", "", "occupancy"),
    ("metric.calls_per_sample", "", "calls_per_sample"),
])
def test_a_metric_has_one_unit_and_one_label(metric, unit, label):
    assert metric_unit(metric) == unit
    assert metric_label(metric) == label


def test_every_caller_uses_the_one_home():
    from perfpred import cli
    from perfpred.models import _plots
    from perfpred.tuner import _pareto_plot, _report_plot

    assert cli.metric_unit is metric_unit and not hasattr(cli, "_metric_unit")
    assert _report_plot.metric_label is metric_label and _pareto_plot.metric_label is metric_label
    assert _plots.metric_label is metric_label
    assert _report_plot.plain_number_ticks is plain_number_ticks is _pareto_plot.plain_number_ticks


def test_tune_names_a_maximised_metric_by_its_unit(monkeypatch, capsys, tmp_path):
    synth = f"replay:{_cache(tmp_path / 'synth.json')}"
    code, stdout, err = _tune(monkeypatch, capsys, synth, tmp_path / "run", "--objective", "metric.gflops:max",
                              "--budget", "4", "--compare", "random")
    assert code == 0, err
    text = " ".join((stdout + err).split())
    assert "best (GFLOP/s)" in text and "random best (GFLOP/s)" in text and "best so far (GFLOP/s)" in text
    assert "(metric.gflops)" not in text


# ---------------------------------------------------------------------------- 2. plain-number ticks


@pytest.mark.parametrize(("locs", "labels"), [
    ([1234.5, 1234.5004, 1234.5008, 1234.5012], ["1234.5", "1234.5004", "1234.5008", "1234.5012"]),
    ([0.0, 500000.0, 1000000.0, 1500000.0], ["0", "500000", "1000000", "1500000"]),
    ([13.0, 13.25, 13.5, 13.75], ["13", "13.25", "13.5", "13.75"]),
    ([0.001, 0.01, 0.1, 1.0, 10.0, 1e6], ["0.001", "0.01", "0.1", "1", "10", "1000000"]),
    ([0.005, 0.015, 0.025], ["0.005", "0.015", "0.025"]),
    ([0.0, 0.2, 0.4, 0.6000000000000001], ["0", "0.2", "0.4", "0.6"]),
    ([-2.0, -1.0, 0.0, 1.0], ["-2", "-1", "0", "1"]),
])
def test_tick_labels_are_plain_and_tell_neighbours_apart(locs, labels):
    decimals = tick_decimals(locs)
    assert [plain_number(v, decimals) for v in locs] == labels


def test_only_the_extremes_keep_an_exponent():
    assert plain_number(1e12) == "1000000000000" and plain_number(1e-6) == "0.000001"
    assert "e" in plain_number(1e13) and "e" in plain_number(1e-7)
    assert plain_number(1 / 3) == "0.333333333333"


@pytest.mark.parametrize("lims", [(1234.5, 1234.5012), (0.0, 2e6), (13.1, 13.7), (-0.003, 0.004)])
def test_a_drawn_linear_axis_has_distinct_plain_labels(lims):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], lims)
    ax.set_ylim(*lims)
    plain_number_ticks(ax.yaxis)
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    plt.close(fig)
    assert len(labels) >= 2 and len(set(labels)) == len(labels), labels
    assert all(_is_plain_number(t) for t in labels), labels


def test_a_log_axis_labels_minor_ticks_at_2_and_5_only():
    formatter = PlainNumberFormatter(leading="25")
    formatter.set_locs([2, 3, 4, 5, 20, 30, 50])
    assert [formatter(v) for v in (2, 3, 5, 20, 30, 50)] == ["2", "", "5", "20", "", "50"]


def test_the_predicted_vs_measured_plot_has_plain_labels(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from perfpred.models._plots import plot_predicted_vs_measured

    measured = [1000.0, 1100.0, 1300.0, 1700.0, 2500.0]
    shown = []
    original = plt.close
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plt, "close", lambda fig=None: (shown.append(fig), original(fig)))
        plot_predicted_vs_measured(measured, {"m": [v * 1.1 for v in measured]}, tmp_path / "p.png",
                                   target="metric.images_per_s")
    ax = shown[0].axes[0]
    assert ax.get_xlabel() == "measured images/s" and ax.get_ylabel() == "predicted images/s"
    assert isinstance(ax.xaxis.get_major_formatter(), PlainNumberFormatter)
    labels = [t.get_text() for t in ax.get_xticklabels() + ax.get_xticklabels(minor=True) if t.get_text()]
    assert labels and all(_is_plain_number(t) for t in labels), labels


def test_the_benchmark_figure_uses_the_shared_formatter(monkeypatch, tmp_path, figures):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import tuning

    summary = {"n_configs": 100, "optimum_ms": 1.0,
               "strategies": {"random": {f"best_over_opt@{b}": r for b, r in
                                         zip((8, 16, 32, 64, 128), (3.5, 3.0, 2.6, 2.3, 2.1), strict=True)}}}
    tuning.plot([{"space": "s", **summary}], tmp_path / "t.png", seeds=1)
    ax = figures[-1].axes[0]
    assert isinstance(ax.yaxis.get_major_formatter(), PlainNumberFormatter)
    assert isinstance(ax.xaxis.get_major_formatter(), PlainNumberFormatter)
    labels = [t.get_text() for t in ax.get_xticklabels() + ax.get_yticklabels() if t.get_text()]
    assert labels and all(_is_plain_number(t) for t in labels), labels


# ---------------------------------------------------------------------------- 3. the optimum's label


def test_a_space_runs_plot_names_its_optimum_as_its_table_does(monkeypatch, capsys, tmp_path, figures):
    out = tmp_path / "run"
    code, stdout, err = _tune(monkeypatch, capsys, _replay("A4000"), out, "--budget", "4", "--space", _space(tmp_path))
    assert code == 0, err
    label = "optimum of the 32 recorded configs in --space"
    assert label in " ".join(stdout.split())
    legend = [t.get_text() for t in figures[-1].axes[0].get_legend().get_texts()]
    assert label in legend and "optimum (recorded)" not in legend
    assert json.loads((out / "result.json").read_text())["optimum_label"] == label


def test_write_report_keeps_the_plots_default_label_without_one(tmp_path, figures):
    from perfpred.tuner._session import write_report

    history = pd.DataFrame({"x": range(3), "value": [3.0, 2.0, 1.5], "status": "ok"})
    write_report(tmp_path, history=history, settings={"objective": "runtime_ms"}, best_config=None, best_value=1.5,
                 comparisons={}, optimum=1.0, budget=3, description="test")
    legend = [t.get_text() for t in figures[-1].axes[0].get_legend().get_texts()]
    assert "optimum (recorded)" in legend
    assert "optimum_label" not in json.loads((tmp_path / "result.json").read_text())
