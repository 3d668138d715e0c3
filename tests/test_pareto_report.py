"""What a multi-objective (Pareto) run's plot and report say: measured configs are never drawn as
unmeasured predictions, an SLO on a plotted axis is a line with its infeasible side shaded, the title
says what was tuned where with the hypervolume's reference point, and a replay that holds every
candidate reports its recorded optimum (either direction) or its true front."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_cli import run_main
from test_tune_objective_fixes import TUNE_PARAMS, _cache, _gflops

from perfpred.collect._replay import ReplayBackend
from perfpred.tuner import Objective, ParetoSettings, ParetoTuner, SearchSpace
from perfpred.tuner._recorded import grid_front, recorded_grid, recorded_optimum

N_CONFIGS = int(np.prod([len(v) for v in TUNE_PARAMS.values()]))  # 120


@pytest.fixture
def cache(tmp_path) -> Path:
    return _cache(tmp_path / "synth.json")


def _run(cache: Path, objectives, constraints=(), budget: int = 8, batch: int = 4):
    backend = ReplayBackend.from_file(cache)
    candidates = backend.recorded_configs()
    space = SearchSpace({k: sorted(candidates[k].unique().tolist()) for k in candidates.columns})
    settings = ParetoSettings(objectives=tuple(objectives), constraints=tuple(constraints), budget=budget,
                              batch_size=batch, ensemble=2, n_estimators=20, seed=0)
    return ParetoTuner(space, backend, settings, candidates=candidates).run(), backend, candidates


def _labelled(ax, label: str) -> list:
    return [a for a in [*ax.collections, *ax.lines, *ax.patches] if a.get_label() == label]


# ---------------------------------------------------------------------------- 1. measured is not "not measured"


def test_configs_measured_in_the_last_round_are_not_drawn_as_unmeasured_predictions(cache, tmp_path, figures):
    from perfpred.tuner import plot_pareto

    result, _, _ = _run(cache, ["runtime_ms", "metric.gflops:max"], budget=8, batch=4)
    assert len(result.history) == 8 and int(result.predictions["measured"].sum()) == 8
    plot_pareto(result, tmp_path / "p.png")
    (grey,) = _labelled(figures[-1].axes[0], "predicted, not measured")
    assert len(grey.get_offsets()) == N_CONFIGS - 8
    # The plot goes by the history, whatever flags the predictions carry (a result built elsewhere).
    result.predictions = result.predictions.assign(measured=False)
    plot_pareto(result, tmp_path / "q.png")
    (grey,) = _labelled(figures[-1].axes[0], "predicted, not measured")
    assert len(grey.get_offsets()) == N_CONFIGS - 8


# ---------------------------------------------------------------------------- 2. an SLO on an axis is drawn


def _span(patch, vertical: bool) -> tuple[float, float]:
    if vertical:
        return patch.get_x(), patch.get_x() + patch.get_width()
    return patch.get_y(), patch.get_y() + patch.get_height()


def test_an_slo_on_a_plotted_axis_is_a_line_at_its_bound_with_the_breaking_side_shaded(cache, tmp_path, figures):
    from perfpred.tuner import plot_pareto

    result, _, _ = _run(cache, ["runtime_ms", "metric.gflops:max"],
                        ["runtime_ms <= 4", "metric.gflops >= 20", "energy_j <= 1"], budget=6, batch=3)
    plot_pareto(result, tmp_path / "p.png")
    ax = figures[-1].axes[0]
    (vline,) = _labelled(ax, "SLO runtime_ms <= 4")
    (hline,) = _labelled(ax, "SLO metric.gflops >= 20")
    assert set(vline.get_xdata()) == {4} and set(hline.get_ydata()) == {20}
    lo, hi = ax.get_xlim()
    assert lo < 4 < hi
    lo_y, hi_y = ax.get_ylim()
    assert lo_y < 20 < hi_y
    spans = [p for p in ax.patches if p.get_facecolor()[3] < 0.2]
    assert len(spans) == 2 and _labelled(ax, "breaks the SLO (shaded)")
    x_span = next(p for p in spans if p.get_width() != 1)  # axvspan: data x, axes y (height 1)
    y_span = next(p for p in spans if p is not x_span)
    assert _span(x_span, True)[0] == pytest.approx(4) and _span(x_span, True)[1] >= hi * 0.999  # above 4 breaks <=
    assert _span(y_span, False)[1] == pytest.approx(20) and _span(y_span, False)[0] <= lo_y * 1.001  # below 20: >=
    notes = [t.get_text() for t in ax.texts]
    assert any("energy_j <= 1" in t for t in notes)  # a bound on neither axis: noted
    assert not any("runtime_ms <= 4" in t and "SLO" in t for t in notes)


# ---------------------------------------------------------------------------- 3. the title


def test_a_cli_pareto_plot_is_titled_with_what_was_tuned_where_and_the_hypervolume_reference(
        monkeypatch, capsys, tmp_path, cache, figures):
    from perfpred.tuner._session import open_session

    out = tmp_path / "run"
    code, _, err = run_main(monkeypatch, capsys, "tune", "--backend", f"replay:{cache}", "--output", str(out),
                            "--budget", "6", "--objective", "runtime_ms", "--objective", "metric.gflops:max")
    assert code == 0, err
    title = " ".join(figures[-1].axes[0].get_title().split())
    description = " ".join(str(open_session(f"replay:{cache}").description).split())
    report = json.loads((out / "pareto.json").read_text())
    assert title.startswith(description) and "6 evaluations" in title
    ref = report["reference_point"]
    assert f"hypervolume {report['hypervolume']:.4g}" in title
    assert f"reference point: runtime_ms {ref[0]:.4g}, gflops {ref[1]:.4g}" in title
    assert report["description"] == str(open_session(f"replay:{cache}").description)


def test_an_ml_energy_pareto_plot_says_it_is_the_h100_replay_of_the_model(lm_arena_table, tmp_path, figures):
    from perfpred.tuner import tune_serving
    from perfpred.tuner._serving_replay import ServingPredictor, serving_regressor

    model = "Qwen/Qwen3-8B"
    prior = ServingPredictor(["metric.energy_per_token_j", "metric.itl_p99_ms"], serving_regressor(20),
                             cv_folds=0).fit(lm_arena_table[lm_arena_table["workload.model"] != model])
    result = tune_serving(lm_arena_table, model, "lm-arena-chat",
                          ["metric.energy_per_token_j", "metric.itl_p99_ms"], budget=3, prior=prior,
                          constraints=["metric.itl_p99_ms <= 100"], out_dir=tmp_path / "run", ensemble=2,
                          n_estimators=20)
    ax = figures[-1].axes[0]
    title = " ".join(ax.get_title().split())
    assert title.startswith(f"ML.ENERGY H100 replay, {model}") and "3 evaluations" in title
    assert "reference point" in title
    assert _labelled(ax, "SLO metric.itl_p99_ms <= 100") and result.true_front is not None


# ---------------------------------------------------------------------------- 4. known optima and fronts


def test_a_maximised_objective_on_a_full_replay_reports_its_recorded_optimum(monkeypatch, capsys, tmp_path, cache):
    out = tmp_path / "run"
    code, stdout, err = run_main(monkeypatch, capsys, "tune", "--backend", f"replay:{cache}", "--output", str(out),
                                 "--budget", "6", "--objective", "metric.gflops:max")
    assert code == 0, err
    report = json.loads((out / "result.json").read_text())
    best_possible = max(_gflops(*c) for c in __import__("itertools").product(*TUNE_PARAMS.values()))
    assert report["optimum"] == pytest.approx(best_possible)  # the highest, not the least
    text = " ".join(stdout.replace("│", " ").split())  # the table's cells, wrapped or not
    ratio = report["best_value"] / report["optimum"]
    assert ratio <= 1
    assert "best / recorded optimum" in text and f"{ratio:.4g} (1 = the optimum; maximised, so below" in text


def test_tune_serving_with_one_objective_reports_the_grid_best_and_plots_best_so_far(monkeypatch, capsys, tmp_path,
                                                                                     lm_arena_table):
    from test_tune_serving_replay_cli import MODEL, use_small_replay

    use_small_replay(monkeypatch, lm_arena_table)
    out = tmp_path / "run"
    code, stdout, err = run_main(monkeypatch, capsys, "tune-serving", "--engine", "ml-energy", "--model", MODEL,
                                 "--budget", "2", "--output", str(out))
    assert code == 0, err
    rows = lm_arena_table[lm_arena_table["workload.model"] == MODEL]
    grid_best = rows["metric.output_tokens_per_s"].max()
    report = json.loads((out / "result.json").read_text())
    assert report["optimum"] == pytest.approx(grid_best)
    assert report["best_over_optimum"] == pytest.approx(report["best_value"] / grid_best)
    text = " ".join(stdout.split())
    assert f"{grid_best:.4g} tokens/s; best / recorded best {report['best_value'] / grid_best:.4g}" in text
    assert "maximised, so below 1 falls short" in text
    assert (out / "best_so_far.png").is_file() and f"plot: {out / 'best_so_far.png'}" in text


def test_a_kernel_replay_pareto_run_gets_the_recordings_true_front(cache, monkeypatch, capsys, tmp_path, figures):
    objectives = [Objective.parse("runtime_ms"), Objective.parse("metric.gflops:max")]
    result, backend, _ = _run(cache, [str(o) for o in objectives], ["runtime_ms <= 4"], budget=4)
    # The brute-force front of the recording, by hand.
    table = backend.table
    ok = table["runtime_ms"] <= 4
    pts = table.loc[ok, ["runtime_ms", "metric.gflops"]].to_numpy(float)
    on_front = [not any((q[0] <= p[0] and q[1] >= p[1]) and (q != p).any() for q in pts) for p in pts]
    assert result.true_front is not None and len(result.true_front) == sum(on_front)
    assert sorted(result.true_front["runtime_ms"]) == pytest.approx(sorted(pts[on_front, 0]))
    # Through the CLI: the plot dashes it, the text says how much of it was found.
    out = tmp_path / "run"
    code, stdout, err = run_main(monkeypatch, capsys, "tune", "--backend", f"replay:{cache}", "--output", str(out),
                                 "--budget", "4", "--objective", "runtime_ms", "--objective", "metric.gflops:max")
    assert code == 0, err
    assert _labelled(figures[-1].axes[0], "true front (every recorded config)")
    assert "true front of every recorded config" in " ".join(stdout.split())


def test_no_hindsight_without_a_recording_of_every_candidate(cache) -> None:
    backend = ReplayBackend.from_file(cache)
    candidates = backend.recorded_configs()
    grid = recorded_grid(backend, candidates, ["runtime_ms", "metric.gflops"])
    assert grid is not None and len(grid) == N_CONFIGS
    assert recorded_optimum(backend, candidates, "runtime_ms") == pytest.approx(grid["runtime_ms"].min())
    assert len(grid_front(grid, [Objective.parse("runtime_ms"), Objective.parse("metric.gflops:max")]))
    unrecorded = pd.concat([candidates.head(3), pd.DataFrame([{"block_size_x": 7, "tile": 1, "unroll": 0}])])
    assert recorded_grid(backend, unrecorded, ["runtime_ms"]) is None  # a candidate never recorded
    assert recorded_optimum(object(), candidates, "runtime_ms") is None  # a live backend: no table


# ---------------------------------------------------------------------------- no matplotlib


def test_a_pareto_report_without_matplotlib_writes_its_data_and_says_which_plot_it_skipped(cache, tmp_path,
                                                                                          monkeypatch):
    import sys

    result, _, _ = _run(cache, ["runtime_ms", "metric.gflops:max"], budget=4, batch=4)
    (tmp_path / "pareto.png").write_bytes(b"an earlier run's plot")
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    said: list[str] = []
    paths = result.write(tmp_path, on_warning=said.append)
    assert "plot" not in paths and paths["json"].is_file() and paths["front"].is_file()
    assert said == ["plot skipped: matplotlib is not installed (pip install matplotlib); no pareto.png"]
    assert not (tmp_path / "pareto.png").exists()  # an earlier plot would belie this report
