"""Edge cases of the reports and figures: a tuning space where every run failed, a results JSON
without curves, history.csv's exact config values, an empty best-so-far plot, a 3-objective Pareto
plot, the serving replay's device in its title, and the one recorded-grid implementation."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import same_color

from perfpred.tuner._objectives import MetricBound, Objective
from perfpred.tuner._recorded import grid_front

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def tuning(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import tuning as module

    return module


def _texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


# ---------------------------------------------------------------------------- 1. benchmarks/tuning.py


def test_a_space_where_every_run_failed_is_an_empty_panel_that_says_so(tuning, tmp_path, figures):
    ok = [[2.0, 1.5, *[1.1] * 126]] * 2
    failed = [[None] * 128] * 2
    results = [{"space": "gemm/failed", "optimum_ms": 1.0, "runs": {"random": failed}},
               {"space": "gemm/ok", "optimum_ms": 1.0, "runs": {"random": ok}}]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        tuning.plot(results, tmp_path / "failed.png")
    (fig,) = figures
    empty, drawn = fig.axes[:2]
    assert "no successful run" in _texts(empty) and "no successful run" not in _texts(drawn)
    lo, hi = empty.get_ylim()
    assert lo <= 1.0 and 2.0 <= hi < 2.5 and empty.get_yscale() == "linear"


def _summary(ratios: list[float]) -> dict:
    return {"n_configs": 10, "optimum_ms": 1.0,
            "strategies": {"random": {f"best_over_opt@{b}": r for b, r in zip((8, 16, 32, 64, 128), ratios,
                                                                                strict=True)}}}


def test_replot_of_the_ceiling_json_is_a_one_line_error(tuning, tmp_path):
    ceiling = tmp_path / "tuning_ceiling.json"
    ceiling.write_text((REPO / "benchmarks" / "results" / "tuning_ceiling.json").read_text())
    with pytest.raises(SystemExit) as exc:
        tuning.replot(ceiling)
    message = str(exc.value)
    assert message.startswith("error:") and "no tuning summary" in message and "\n" not in message
    assert not (tmp_path / "tuning_ceiling.png").exists()


def test_replot_skips_spaces_without_curves_with_a_note(tuning, tmp_path, figures, capsys):
    result = tmp_path / "tuning_mixed.json"
    result.write_text(json.dumps({"seeds": 3, "spaces": {
        "gemm/A": _summary([2.0, 1.5, 1.2, 1.1, 1.0]),
        "gemm/B": {"sources": ["gemm/A"], "best_over_opt@8": 1.4}}}))  # a ceiling entry: no strategies
    assert tuning.replot(result) == [tmp_path / "tuning_mixed.png"]
    (fig,) = figures
    assert [ax.get_title() for ax in fig.axes if ax.axison] == ["gemm/A"]
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "gemm/B" in notes[0]


# ---------------------------------------------------------------------------- 2. history.csv


def test_history_csv_rounds_measured_values_but_never_config_values(tmp_path):
    from perfpred.tuner._session import _is_prefix, write_report

    history = pd.DataFrame({"alpha": [0.123456789012345, 0.5], "block": [32, 64],
                            "value": [12.665567999999999, np.nan], "status": ["ok", "failed"],
                            "predicted": [1 / 3, np.nan], "elapsed_s": [0.10000000000000002, 0.2]})
    write_report(tmp_path, history=history, settings={"backend": "replay:x.json", "objective": "runtime_ms"},
                 best_config=None, best_value=12.665568, comparisons={}, optimum=None, budget=2,
                 description="test")
    text = (tmp_path / "history.csv").read_text()
    assert "0.123456789012345," in text  # the config value as given
    assert "12.665568," in text and "12.665567999999999" not in text
    assert "0.3333333333," in text and ",0.1\n" in text
    assert _is_prefix(pd.read_csv(tmp_path / "history.csv"), history)  # a resumed study still matches


# ---------------------------------------------------------------------------- 3. best-so-far plot


def test_an_empty_history_draws_no_legend_and_warns_nothing(tmp_path, figures):
    from perfpred.tuner._report_plot import plot_best_so_far

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plot_best_so_far(tmp_path / "empty.png", {"perfpred": []}, objective="runtime_ms", maximize=False,
                         budget=4, title="nothing measured")
    assert not [w for w in caught if "legend" in str(w.message)]  # "No artists with labels found to put in legend"
    (fig,) = figures
    assert fig.axes[0].get_legend() is None and "no successful evaluation" in _texts(fig.axes[0])
    plot_best_so_far(tmp_path / "one.png", {"perfpred": [3.0, 2.0]}, objective="runtime_ms", maximize=False,
                     budget=2, title="two measured")
    assert figures[-1].axes[0].get_legend() is not None


# ---------------------------------------------------------------------------- 4. Pareto plot


def _pareto_result(metrics: list[str]) -> SimpleNamespace:
    rng = np.random.default_rng(0)
    hist = pd.DataFrame({m: rng.uniform(1, 10, 6) for m in metrics})
    for m in metrics:
        hist[f"predicted_{m}"] = hist[m] * 1.1
    hist["feasible"] = True
    front = hist.iloc[:3][metrics].reset_index(drop=True)
    pred = pd.DataFrame({"p": range(8), **{f"predicted_{m}": rng.uniform(1, 10, 8) for m in metrics},
                         "measured": [True] * 6 + [False] * 2})
    return SimpleNamespace(objectives=[Objective(m, "minimize") for m in metrics], constraints=[], history=hist,
                           study_history=None, predictions=pred, front=front, true_front=None,
                           reference_point=[20.0] * len(metrics), hypervolume=1.0, description="synthetic")


@pytest.mark.parametrize("n_objectives", [2, 3])
def test_a_measured_front_is_a_staircase_only_with_two_objectives(tmp_path, figures, n_objectives):
    from perfpred.tuner._pareto_plot import plot_pareto

    metrics = ["runtime_ms", "metric.energy_j", "power_w"][:n_objectives]
    plot_pareto(_pareto_result(metrics), tmp_path / "pareto.png")
    ax = figures[-1].axes[0]
    staircases = [line for line in ax.lines if same_color(line.get_color(), "tab:orange")]
    assert len(staircases) == (1 if n_objectives == 2 else 0)
    stars = [c for c in ax.collections if c.get_label() == "measured front"]
    assert len(stars) == 1 and len(stars[0].get_offsets()) == 3  # the front's dots either way
    # The history lacks the candidates' parameter "p": the flags the result set say which are measured.
    (grey,) = [c for c in ax.collections if c.get_label() == "predicted, not measured"]
    assert len(grey.get_offsets()) == 2


# ---------------------------------------------------------------------------- 5./6. serving replay


@pytest.fixture(scope="module")
def serving_table(ml_energy_table):
    return ml_energy_table


def test_serving_device_is_named_from_the_rows():
    from perfpred.tuner._serving_replay import serving_device

    def rows(*ids):
        return pd.DataFrame({"hardware_id": list(ids)})

    assert serving_device(rows("gpu-nvidia-h100-80gb-hbm3", "gpu-nvidia-h100-80gb-hbm3")) == "H100"
    assert serving_device(rows("gpu-nvidia-a100-sxm4-40gb")) == "A100"
    assert serving_device(rows("gpu-nvidia-l40s", "gpu-nvidia-h100-80gb-hbm3")) == "L40S/H100"
    assert serving_device(rows("gpu-acme-fast")) == "acme-fast"
    assert serving_device(pd.DataFrame({"x": [1]})) == "unknown GPU"


def test_a_serving_replay_title_names_the_recorded_device(serving_table):
    from perfpred.tuner._serving_replay import serving_group, serving_groups, tune_serving

    model, task = serving_groups(serving_table)[0]
    assert serving_group(serving_table, model, task).device == "H100"
    h100 = tune_serving(serving_table, model, task, ["metric.output_tokens_per_s:max", "metric.energy_per_token_j"],
                        budget=2, prior=None, ensemble=2, n_estimators=10)
    assert h100.description == f"ML.ENERGY H100 replay, {model} / {task}"
    other = serving_table.assign(hardware_id="gpu-nvidia-a100-sxm4-40gb")
    a100 = tune_serving(other, model, task, ["metric.output_tokens_per_s:max", "metric.energy_per_token_j"],
                        budget=2, prior=None, ensemble=2, n_estimators=10)
    assert a100.description.startswith("ML.ENERGY A100 replay") and "H100" not in a100.description


def test_the_serving_true_front_is_the_recorded_grid_front(serving_table):
    from perfpred.tuner._recorded import recorded_grid
    from perfpred.tuner._serving_replay import serving_group, serving_groups, true_front

    objectives = [Objective.parse("metric.output_tokens_per_s:max"), Objective.parse("metric.energy_per_token_j")]
    metrics = [o.metric for o in objectives] + ["metric.itl_p99_ms"]
    for model, task in serving_groups(serving_table)[:5]:
        group = serving_group(serving_table, model, task)
        grid = group.grid(metrics)
        pd.testing.assert_frame_equal(grid, recorded_grid(group.backend, group.candidates, metrics))
        table = group.backend.table  # every recorded row, as recorded
        assert len(grid) == len(table)
        assert np.allclose(np.sort(grid["metric.itl_p99_ms"].dropna()),
                           np.sort(pd.to_numeric(table["metric.itl_p99_ms"]).dropna()))
        slo = float(np.nanmedian(grid["metric.itl_p99_ms"]))
        constraints = [MetricBound("metric.itl_p99_ms", "<=", slo)]
        pd.testing.assert_frame_equal(true_front(group, objectives, constraints),
                                      grid_front(grid, objectives, constraints))


def test_grid_front_keeps_a_config_exactly_at_its_bound():
    grid = pd.DataFrame({"x": [1, 2, 3, 4], "runtime_ms": [1.0, 2.0, 3.0, np.nan],
                         "metric.gflops": [10.0, 30.0, 40.0, 50.0]})
    objectives = [Objective("runtime_ms", "minimize"), Objective("metric.gflops", "maximize")]
    bound = MetricBound("runtime_ms", "<=", 2.0)
    front = grid_front(grid, objectives, [bound])
    assert front["x"].tolist() == [1, 2]  # 2.0 meets "<= 2" (MetricBound.violation 0); NaN is infeasible
    assert all(bound.satisfied(v) for v in front["runtime_ms"])
    assert grid_front(grid, objectives, [MetricBound("metric.gflops", ">=", 30.0)])["x"].tolist() == [2, 3]
