"""The benchmark scripts' bookkeeping: stages merge into one results file; the README tables render."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture()
def cpu_kernels(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import _common
    import cpu_kernels as module

    monkeypatch.setattr(_common, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(module, "RESULTS_DIR", tmp_path)
    return module


def test_each_stage_merges_its_section_and_keeps_the_others(cpu_kernels, tmp_path):
    cpu_kernels._merge_result("cpu_kernels", {"sgemm": {"recording": {"n": 1}}}, {"stage_wall_s": {"recording": 5}})
    cpu_kernels._merge_result("cpu_kernels", {"sgemm": {"tuning": {"p": 0.5}}, "jacobi2d": {"live": {"r": 1.0}}},
                              {"stage_wall_s": {"tuning": 7}})
    cpu_kernels._merge_result("cpu_kernels", {"sgemm": {"tuning": {"p": 0.6}}}, {"stage_wall_s": {"tuning": 8}})
    result = json.loads((tmp_path / "cpu_kernels.json").read_text())
    assert result["kernels"] == {"sgemm": {"recording": {"n": 1}, "tuning": {"p": 0.6}},
                                 "jacobi2d": {"live": {"r": 1.0}}}
    assert result["stage_wall_s"] == {"recording": 5, "tuning": 8}
    assert result["benchmark"] == "cpu_kernels"


def test_summarize_renders_every_committed_result():
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "summarize.py")], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = {p.stem for p in (REPO / "benchmarks" / "results").glob("*.json")}
    for name in ("cpu_gemm", "accuracy", "tuning", "serving", "serving_vllm", "serving_first_picks", "serving_rate",
                 "serving_replay", "cpu_kernels"):
        if name in results:
            assert f"### {name}\n" in proc.stdout
