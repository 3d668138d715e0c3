"""benchmarks/tuning.py's figure: y range from the data, one colour per strategy in every figure, one
shared legend, a title that says what the curves are; ``--replot`` redraws a committed JSON's figure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture()
def tuning(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import tuning as module

    return module


def _summary(ratios: dict[str, list[float]]) -> dict:
    return {"n_configs": 100, "optimum_ms": 1.0,
            "strategies": {s: {f"best_over_opt@{b}": r for b, r in zip((8, 16, 32, 64, 128), rs, strict=True)}
                           for s, rs in ratios.items()}}


def _colours(fig) -> dict[str, str]:
    from matplotlib.colors import to_hex

    (legend,) = fig.legends
    return {h.get_label(): to_hex(h.get_color()) for h in legend.legend_handles}


def test_replot_draws_the_summary_with_data_ranges_shared_legend_and_title(tuning, tmp_path, figures):
    result = tmp_path / "tuning_7seeds.json"
    payload = {"budget": 128, "seeds": 7, "spaces": {
        "gemm/A": _summary({"random": [3.5, 3.0, 2.6, 2.3, 2.1], "perfpred-transfer": [1.5, 1.2, 1.1, 1.05, 1.0]}),
        "dedispersion/B": _summary({"random": [1.04, 1.03, 1.02, 1.01, 1.005],
                                    "perfpred-transfer": [1.01, 1.0, 1.0, 1.0, 1.0]})}}
    result.write_text(json.dumps(payload))
    before = result.read_bytes()
    written = tuning.replot(result)
    assert written == [tmp_path / "tuning_7seeds.png"] and written[0].read_bytes()[:4] == b"\x89PNG"
    assert result.read_bytes() == before  # the JSON is only read
    (fig,) = figures
    wide, narrow = fig.axes[:2]
    assert wide.get_yscale() == "log" and wide.get_ylim()[1] >= 3.5  # not cut at 2.0
    assert narrow.get_yscale() == "linear" and narrow.get_ylim()[1] < 1.1  # not squashed into 0.98-2.0
    assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("1.02" in label for label in labels)  # the dashed line is named
    title = fig._suptitle.get_text()
    assert "mean over 7 seeds" in title and "1.02" in title
    from matplotlib.image import imread

    height, width = imread(written[0]).shape[:2]
    assert width >= 1000 and height >= 500  # not 400 x 300


def test_a_strategy_has_the_same_colour_in_every_figure(tuning, tmp_path, figures):
    res_a = [{"space": "s", **_summary({"random": [2, 1.8, 1.5, 1.2, 1.1], "perfpred-transfer": [1.2] * 5})}]
    res_b = [{"space": "s", **_summary({"perfpred-transfer-flips": [1.1] * 5, "kt-bayes_opt": [2] * 5,
                                        "perfpred-transfer": [1.2] * 5, "random": [2, 1.8, 1.5, 1.2, 1.1]})}]
    tuning.plot(res_a, tmp_path / "a.png", seeds=5)
    tuning.plot(res_b, tmp_path / "b.png", seeds=5)
    first, second = (_colours(fig) for fig in figures)
    for strategy in ("random", "perfpred-transfer"):
        assert first[strategy] == second[strategy] == tuning.strategy_colour(strategy)
    assert len({second[s] for s in res_b[0]["strategies"]}) == 4
    assert tuning.strategy_colour("some-new-strategy") == tuning.strategy_colour("some-new-strategy")


def test_runs_are_drawn_per_evaluation_and_their_seeds_counted(tuning, tmp_path, figures):
    rng = np.random.default_rng(0)
    runs = {s: [list(1 + scale * np.exp(rng.normal(size=128))) for _ in range(3)]
            for s, scale in (("random", 2.0), ("perfpred-cold", 0.5))}
    tuning.plot([{"space": "cpu/x", "optimum_ms": 1.0, "runs": runs}], tmp_path / "runs.png")
    (fig,) = figures
    lines = [line for line in fig.axes[0].get_lines() if line.get_label() in runs or len(line.get_xdata()) == 128]
    assert len(lines) == 2 and all(len(line.get_xdata()) == 128 for line in lines)
    assert "mean over 3 seeds" in fig._suptitle.get_text()


def test_replot_of_cpu_kernels_json_and_a_json_without_curves(tuning, tmp_path):
    result = tmp_path / "cpu_kernels.json"
    result.write_text(json.dumps({"kernels": {"sgemm": {"tuning": {"seeds": 4, **_summary(
        {"random": [4, 3, 2.5, 2.2, 2.0]})}}, "jacobi2d": {"live": {}}}}))
    assert tuning.replot(result) == [tmp_path / "cpu_kernels_tuning_sgemm.png"]
    other = tmp_path / "serving.json"
    other.write_text(json.dumps({"rows": []}))
    with pytest.raises(SystemExit, match="no tuning summary"):
        tuning.replot(other)


def test_replot_option_runs_nothing(tmp_path):
    result = tmp_path / "tuning_x.json"
    result.write_text(json.dumps({"seeds": 2, "spaces": {"gemm/A": _summary({"random": [2, 1.5, 1.2, 1.1, 1.0]})}}))
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "tuning.py"), "--replot", str(result)],
                          capture_output=True, text=True, timeout=120, cwd=REPO / "benchmarks")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"wrote {tmp_path / 'tuning_x.png'}" in proc.stdout
