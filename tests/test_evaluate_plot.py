"""``perfpred evaluate``: its table whole at 80 columns, and ``--plot`` (predicted vs measured on the
first seed's held-out rows: the predictions the table scored there, no fit more), drawn by the package
helper the GEMM benchmark uses too."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from conftest import make_gemm_table
from test_cli import run_main

from perfpred.datasets import MeasurementStore
from perfpred.models import PerformanceModel

TWO_HARDWARE = ("cpu-synthetic-a-0000000001", "cpu-synthetic-b-0000000002")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def gemm_store(tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("evaluate-plot") / "gemm"
    MeasurementStore(store, create=True).append_frame(make_gemm_table(80, seed=11))
    return store


@pytest.fixture(scope="module")
def two_hardware_store(tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("evaluate-plot-hw") / "gemm"
    MeasurementStore(store, create=True).append_frame(make_gemm_table(80, seed=12, hardware_ids=TWO_HARDWARE))
    return store


@pytest.fixture
def fits(monkeypatch) -> list:
    """The regressor of every ``PerformanceModel.fit`` call while the test runs (clones included)."""
    calls: list = []
    original = PerformanceModel.fit

    def counted(self, *args, **kwargs):
        calls.append(self.regressor)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(PerformanceModel, "fit", counted)
    return calls


def _table_rows(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("│")]


def test_the_table_keeps_every_column_at_80_columns(monkeypatch, capsys, gemm_store, tmp_path):
    """Ten columns (an interval model adds two) and a 12-character model name in 80 columns, piped:
    no line runs past 80, every row keeps its last column (fit s) and right border, no name or
    number is cut."""
    monkeypatch.setenv("COLUMNS", "80")
    output = tmp_path / "ev.json"
    code, out, err = run_main(monkeypatch, capsys, "evaluate", "--store", str(gemm_store), "--models",
                              "xgb-quantile,roofline", "--split", "random", "--seeds", "0", "--output", str(output))
    assert code == 0, err
    assert max(len(line) for line in out.splitlines()) <= 80, out
    rows = _table_rows(out)
    assert len(rows) == 2, out
    results = json.loads(output.read_text())
    for row in rows:
        cells = [c.strip() for c in row.strip("│").split("│")]
        assert row.endswith("│") and len(cells) == 10, row  # model, 6 metrics, 2 band columns, fit s
        name = cells[0]
        mean = results[name]["mean"]
        assert cells[1] == f"{mean['mape_pct']:.3g}" and cells[-1] == f"{mean['fit_s']:.3g}", row
    header = [line.strip("┃").split("┃") for line in out.splitlines() if line.startswith("┃")]
    assert all(len(cells) == 10 for cells in header), out
    assert " ".join(cells[-1].strip() for cells in header if cells[-1].strip()) == "fit s"  # folded, whole


def test_a_narrow_terminal_folds_headers_not_numbers(monkeypatch, capsys, gemm_store):
    monkeypatch.setenv("COLUMNS", "60")
    code, out, err = run_main(monkeypatch, capsys, "evaluate", "--store", str(gemm_store), "--models",
                              "xgb,roofline", "--split", "random", "--seeds", "0")
    assert code == 0, err
    assert max(len(line) for line in out.splitlines()) <= 60, out
    for row in _table_rows(out):
        cells = [c.strip() for c in row.strip("│").split("│")]
        assert len(cells) == 8 and all(re.fullmatch(r"-?[\d.]+(e[+-]\d+)?", c) for c in cells[1:]), row


def test_plot_draws_predicted_vs_measured_for_the_first_seed(monkeypatch, capsys, gemm_store, tmp_path,
                                                            figures):
    plot, output = tmp_path / "pred_vs_measured.png", tmp_path / "ev.json"
    code, out, err = run_main(monkeypatch, capsys, "evaluate", "--store", str(gemm_store), "--models", "xgb,roofline",
                              "--split", "shape", "--seeds", "3,4", "--output", str(output), "--plot", str(plot))
    assert code == 0, err
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    said = " ".join(out.split())
    assert f"wrote {plot}" in said
    # The table is the mean over both splits; the plot one split's: each says which.
    assert "mean over 2 splits (seed=3, seed=4)" in said and "the table's numbers are the mean over every split" in said
    (fig,) = figures
    (ax,) = fig.axes
    assert ax.get_xscale() == ax.get_yscale() == "log"
    assert "(ms)" in ax.get_xlabel() and "(ms)" in ax.get_ylabel() and "measured" in ax.get_xlabel()
    results = json.loads(output.read_text())
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    for name in ("xgb", "roofline"):
        first = results[name]["folds"][0]
        assert first["fold"] == "seed=3"
        # the first seed's held-out rows, the MAPE evaluate scored on them
        assert f"{name} (MAPE {first['mape_pct']:.1f}%)" in labels, labels
    assert any("y = x" in label for label in labels)
    n_points = [len(c.get_offsets()) for c in ax.collections]
    assert n_points == [results["xgb"]["folds"][0]["n"]] * 2
    colours = {tuple(c.get_facecolor()[0][:3]) for c in ax.collections}
    assert len(colours) == 2  # one colour per model


def test_plot_target_units_follow_the_target():
    from perfpred.units import metric_label as target_label

    assert target_label("runtime_ms") == "runtime (ms)"
    assert target_label("power_w") == "power (W)"
    assert target_label("energy_j") == "energy (J)"
    assert target_label("metric.tpot_ms") == "tpot (ms)"
    assert "tokens/s" in target_label("metric.output_tokens_per_s")


@pytest.mark.parametrize("name, needle", [("plot.txt", ".png"), ("missing/plot.png", "does not exist")])
def test_a_bad_plot_path_is_refused_before_any_fit(monkeypatch, capsys, gemm_store, tmp_path, name, needle):
    from test_cli import assert_one_line_error

    code, out, err = run_main(monkeypatch, capsys, "evaluate", "--store", str(gemm_store), "--models", "xgb",
                              "--seeds", "0", "--plot", str(tmp_path / name))
    assert_one_line_error(code, out, err, "--plot", needle)
    assert out == ""  # refused before the table


def test_the_gemm_benchmark_draws_with_the_package_helper(monkeypatch):
    """benchmarks/evaluate_gemm.py keeps no copy of the plotting code."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    sys.modules.pop("evaluate_gemm", None)
    import evaluate_gemm

    from perfpred.models import _plots

    assert evaluate_gemm.plot_predicted_vs_measured is _plots.plot_predicted_vs_measured
    assert evaluate_gemm.holdout_predictions is _plots.holdout_predictions
    source = (REPO / "benchmarks" / "evaluate_gemm.py").read_text()
    assert "matplotlib" not in source and "make_split" not in source


@pytest.mark.parametrize("options, n_folds", [
    (["--split", "shape", "--seeds", "3,4"], 2),
    (["--split", "random", "--seeds", "0", "--train-size", "30,40"], 2),  # one fold per size
])
def test_plot_fits_no_model_more_than_the_table(monkeypatch, capsys, gemm_store, tmp_path, fits, figures,
                                                options, n_folds):
    """--plot draws the predictions the table's first fold made: one fit per model and fold, with or
    without it."""
    base = ["evaluate", "--store", str(gemm_store), "--models", "xgb,roofline", *options]
    code, _, err = run_main(monkeypatch, capsys, *base)
    assert code == 0, err
    assert sorted(fits) == sorted(["xgb", "roofline"] * n_folds)
    fits.clear()
    code, _, err = run_main(monkeypatch, capsys, *base, "--plot", str(tmp_path / "p.png"))
    assert code == 0, err
    assert len(figures) == 1
    assert sorted(fits) == sorted(["xgb", "roofline"] * n_folds)  # no fit for the figure


@pytest.mark.parametrize("options, first_label, title", [
    (["--split", "hardware"], TWO_HARDWARE[0], f"{TWO_HARDWARE[0]} held out"),
    (["--split", "random", "--seeds", "5,6", "--train-size", "30,50"], "seed=5", "seed 5, 30 rows trained on"),
])
def test_the_plotted_mape_is_the_first_fold_the_table_scored(monkeypatch, capsys, gemm_store, two_hardware_store,
                                                             tmp_path, figures, options, first_label, title):
    """--split hardware: the first hardware id left out; --train-size: the first size, first seed."""
    store = two_hardware_store if "hardware" in options else gemm_store
    plot, output = tmp_path / "p.png", tmp_path / "ev.json"
    code, out, err = run_main(monkeypatch, capsys, "evaluate", "--store", str(store), "--models", "xgb,roofline",
                              *options, "--output", str(output), "--plot", str(plot))
    assert code == 0, err
    results = json.loads(output.read_text())
    if "--train-size" in options:
        assert list(results) == ["30", "50"]
        results = results["30"]
    assert "_first_fold" not in results and set(results) == {"xgb", "roofline"}  # not in the JSON
    (fig,) = figures
    (ax,) = fig.axes
    assert title in " ".join(ax.get_title().split()) and title.split(",")[0] in " ".join(out.split())
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    for name in ("xgb", "roofline"):
        first = results[name]["folds"][0]
        assert first["fold"] == first_label
        assert f"{name} (MAPE {first['mape_pct']:.1f}%)" in labels, labels
    assert [len(c.get_offsets()) for c in ax.collections] == [results["xgb"]["folds"][0]["n"]] * 2


def test_evaluate_models_keeps_the_first_fold_only_when_asked(gemm_store):
    from perfpred.models import evaluate_models, training_frame
    from perfpred.models._evaluation import FIRST_FOLD_KEY
    from perfpred.models._metrics import mape
    from perfpred.models._plots import holdout_predictions

    rows = training_frame(MeasurementStore(gemm_store).load())
    models = {"rf": PerformanceModel(regressor="rf")}
    plain = evaluate_models(rows, models, split="shape", seeds=(1, 2))
    assert list(plain) == ["rf"]  # the default result is unchanged
    kept = evaluate_models(rows, models, split="shape", seeds=(1, 2), keep_first_fold=True)
    first = kept.pop(FIRST_FOLD_KEY)
    assert list(kept) == ["rf"]
    assert first["fold"] == "seed=1" and first["label"] == "seed 1"
    y, pred = first["test"]["runtime_ms"].to_numpy(float), first["predictions"]["rf"]
    assert len(y) == kept["rf"]["folds"][0]["n"] == len(pred)
    assert mape(y, pred) == pytest.approx(kept["rf"]["folds"][0]["mape_pct"])
    test, predictions, label = holdout_predictions(rows, models, split="shape", seed=1)  # the benchmark's helper
    assert label == "seed 1" and test.index.equals(first["test"].index) and list(predictions) == ["rf"]
