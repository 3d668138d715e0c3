"""The accuracy benchmark runs end to end on small slices of the recorded datasets (via the importers)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from perfpred.errors import DatasetNotFoundError
from perfpred.settings import datasets_dir

REPO = Path(__file__).resolve().parent.parent
PROTOCOLS = ("uci_random", "uci_2000", "kt_gemm", "kt_convolution", "kt_convolution_reference", "neusight_logo",
             "vidur_lomo", "mlenergy_lomo")
WITHOUT_TARGET = ("intervals",)


@pytest.fixture(scope="module")
def smoke_result(tmp_path_factory) -> dict:
    try:
        root = datasets_dir()
    except DatasetNotFoundError as exc:
        pytest.skip(str(exc))
    out = tmp_path_factory.mktemp("accuracy") / "accuracy_smoke.json"
    env = {**os.environ, "PERFPRED_DATASETS": str(root), "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "accuracy.py"), "--smoke", "--output", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(out.read_text())


def _mapes(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _mapes(v)
    elif isinstance(value, list):
        yield from value
    else:
        yield value


def test_every_protocol_reports_scores_anchor_and_target(smoke_result):
    assert smoke_result["smoke"] is True
    assert set(smoke_result["protocols"]) == set(PROTOCOLS) | set(WITHOUT_TARGET)
    for row in smoke_result["summary"]:
        assert "error" not in row
        if row["protocol"] in WITHOUT_TARGET:
            continue
        assert row["anchor"] and row["target_mape_pct"] > 0
        assert all(math.isfinite(m) and m >= 0 for m in _mapes(row["ours_mape_pct"]))
    uci = smoke_result["protocols"]["uci_random"]
    for key in ("mape_pct", "median_ape_pct", "p90_ape_pct", "r2_log", "spearman_rho", "fit_s", "predict_s"):
        assert key in uci
    assert uci["gpperf"]["ours"]["mean_rel_err"] == pytest.approx(uci["mape_pct"] / 100, rel=1e-3)
    assert 0 < uci["noise_floor_mape_pct"] < 5


def test_protocols_hold_out_what_they_claim(smoke_result):
    protocols = smoke_result["protocols"]
    neusight = protocols["neusight_logo"]["per_held_out_gpu"]
    assert len(neusight) >= 2
    for gpu in neusight.values():
        assert gpu["n_train"] > 0 and set(gpu["per_op"]) >= {"linear"}
    assert len(protocols["vidur_lomo"]["per_held_out_model"]) >= 2
    ml = protocols["mlenergy_lomo"]["targets"]
    assert set(ml) == {"power_w", "metric.energy_per_token_j", "metric.itl_p50_ms"}
    cv = protocols["uci_2000"]["cv_mape_pct_on_training_rows"]
    assert protocols["uci_2000"]["model"] in cv  # the chosen model is one the training-rows CV scored
    assert smoke_result["imports"]["uci-sgemm"]["rows_imported"] > 0
    # The reference protocol scores the same GPUs on the same split as kt_convolution.
    plain, ref = protocols["kt_convolution"]["per_gpu"], protocols["kt_convolution_reference"]["per_gpu"]
    assert set(ref) == set(plain) and len(ref) >= 2
    assert all(ref[gpu]["n"] == plain[gpu]["n"] and ref[gpu]["n_train"] == plain[gpu]["n_train"] for gpu in ref)


def test_interval_coverage_is_measured_on_held_out_rows(smoke_result):
    coverage = smoke_result["protocols"]["intervals"]["coverage"]
    shifted = {"vidur_leave_one_model_out": "workload.model", "neusight_leave_one_gpu_out": "hardware_id"}
    assert set(coverage) == {"kt_gemm_random_80_20", *shifted,
                             *(f"{name}, calibrated across {column}" for name, column in shifted.items())}
    for levels in coverage.values():
        assert set(levels) == {"50%", "80%", "90%"}
    for name, column in shifted.items():  # calibrated for the shift, bands widen
        grouped = coverage[f"{name}, calibrated across {column}"]["90%"]
        assert grouped["median_width_ratio"] > coverage[name]["90%"]["median_width_ratio"]
        shares = [levels[k]["coverage"] for k in ("50%", "80%", "90%")]
        assert all(0 <= c <= 1 for c in shares)
        assert shares == sorted(shares)  # wider bands never hold fewer rows
        assert levels["90%"]["n"] > 0
    # Random rows are exchangeable: the conformal 90% band must hold near 90% even on a smoke slice.
    assert 0.8 <= coverage["kt_gemm_random_80_20"]["90%"]["coverage"] <= 0.98
