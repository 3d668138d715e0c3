"""The analysis notebook runs on what the repository ships, with and without a GEMM store.

Its code cells are executed in order in one namespace (no Jupyter kernel needed), so a renamed
result key or store column breaks this test instead of the notebook a user opens later.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "cpu_gemm_analysis.ipynb"


def run_notebook(monkeypatch, store: Path) -> tuple[dict, list]:
    """Executes every code cell from notebooks/, as Jupyter would; returns the namespace and what it displayed."""
    shown: list = []
    display_module = types.ModuleType("IPython.display")
    display_module.display = shown.append
    display_module.Image = lambda filename: ("image", Path(filename))
    try:
        import IPython  # noqa: F401  (the real package, which matplotlib also asks about)
    except ImportError:  # not a dependency of perfpred: a bare stand-in for the notebook's import
        ipython = types.ModuleType("IPython")
        ipython.display = display_module
        ipython.version_info = (9, 0)
        ipython.get_ipython = lambda: None
        monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "IPython.display", display_module)
    monkeypatch.setenv("PERFPRED_CPU_GEMM_STORE", str(store))
    monkeypatch.chdir(REPO / "notebooks")
    namespace: dict = {}
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    for number, cell in enumerate(cells):
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), f"{NOTEBOOK.name} cell {number}", "exec"), namespace)
    return namespace, shown


def test_notebook_runs_without_a_store(monkeypatch, tmp_path, capsys):
    namespace, shown = run_notebook(monkeypatch, tmp_path / "missing")
    assert namespace["df"] is None
    assert "no Measurement store at" in capsys.readouterr().out
    # The committed results it reads exist and are the ones it names.
    assert shown == [("image", REPO / "benchmarks" / "results" / "cpu_gemm_holdout.png")]
    assert shown[0][1].is_file()


def test_notebook_reads_a_gemm_store(monkeypatch, tmp_path, capsys, gemm_table_factory):
    import matplotlib.pyplot as plt

    from perfpred.datasets import MeasurementStore

    store = MeasurementStore(tmp_path / "store", create=True)
    table = gemm_table_factory(40, seed=3)
    # As `perfpred collect gemm` stores it (the synthetic rows carry no metrics).
    flops = 2.0 * table["workload.b"] * table["workload.m"] * table["workload.n"] * table["workload.k"]
    table["metric.gflops"] = flops / (table["runtime_ms"] * 1e6)
    store.append_frame(table)
    namespace, shown = run_notebook(monkeypatch, store.path)
    assert len(namespace["df"]) == 40
    assert "40 GEMM rows from" in capsys.readouterr().out
    by_dtype = shown[-1]
    assert set(by_dtype.index) == {"fp32", "fp64"} and by_dtype["count"].sum() == 40
    ax = namespace["ax"]  # the reference-GEMM noise monitor was drawn
    assert ax.get_ylabel() == "reference GEMM runtime (ms)"
    plt.close("all")
