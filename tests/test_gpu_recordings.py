"""The H200 recordings kept in benchmarks/results/gpu_recordings replay on any machine."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_cli import invoke

from perfpred.collect.importers import read_files
from perfpred.collect.kernels import get_kernel

RECORDINGS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "gpu_recordings"
TRITON = RECORDINGS / "matmul_triton_h200_4096x4096x4096.json"
CUDA = RECORDINGS / "matmul_cuda_h200_4096.json"


@pytest.mark.parametrize(("path", "kernel", "rows", "failed"), [(TRITON, "matmul_triton", 120, 10),
                                                                (CUDA, "matmul_cuda", 33, 3)])
def test_a_gpu_recording_imports_with_its_failures_and_matches_the_kernel_space(path, kernel, rows, failed):
    (result,), _ = read_files("kernel-tuner", [path])
    table = pd.concat(result.frames, ignore_index=True)
    assert len(table) == rows
    assert (table["status"] != "ok").sum() == failed
    assert table["hardware_id"].str.contains("h200").all()
    ok = table[table["status"] == "ok"]
    assert (ok["runtime_ms"] > 0).all()
    # Every config that ran is a valid config of the shipped kernel's space; CUDA's recorded failures
    # are the blocks over 1024 threads that Kernel Tuner ran anyway (InvalidConfig), now outside it.
    space = {tuple(sorted(c.items())) for c in get_kernel(kernel).configs()}
    names = list(get_kernel(kernel).tune_params)

    def configs(rows: pd.DataFrame) -> set:
        return {tuple(sorted((n, row[f"config.{n}"]) for n in names)) for _, row in rows.iterrows()}

    assert configs(ok) <= space
    if kernel == "matmul_cuda":
        assert not configs(table[table["status"] != "ok"]) & space


def test_the_triton_recording_is_tuned_replayed_on_the_cpu(tmp_path):
    out = tmp_path / "run"
    result = invoke("tune", "--backend", f"replay:{TRITON}", "--budget", "8", "--batch", "4", "--output", str(out))
    assert "best config" in result.output
    report = json.loads((out / "result.json").read_text())
    assert report["n_evaluations"] == 8
    assert report["best_value"] >= report["optimum"] > 0


def test_the_h200_rows_are_featurized_with_the_gpu_they_ran_on():
    from perfpred.features import kernel_occupancy_features

    (result,), _ = read_files("kernel-tuner", [TRITON])
    table = pd.concat(result.frames, ignore_index=True)
    feats = kernel_occupancy_features(table[table["status"] == "ok"])
    assert (feats["hw_sm_count"] == 132).all()
    assert np.allclose(feats["hw_log2_l2_kib"], np.log2(61440))
    assert np.isfinite(feats[["d_waves", "d_blocks_per_sm", "log2_roofline_ms"]].to_numpy()).all()
