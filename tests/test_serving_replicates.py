"""Several launches of one serving config folded into one row: medians, spread, failures."""

from __future__ import annotations

import numpy as np
import pytest

from perfpred.collect.serving import median_of_launches
from perfpred.datasets import Measurement
from perfpred.errors import InvalidInputError

WORKLOAD = {"model": "tiny", "concurrency": 4}


def launch(tpot_ms: float | None, tok_s: float = 100.0, status: str = "ok", slots: int = 4) -> Measurement:
    if status != "ok":
        return Measurement(kind="serving", workload=WORKLOAD, config={"engine": "fake", "parallel": slots},
                           hardware_id="cpu-test", status=status, error=f"{status} at start",
                           metrics={"startup_ms": 5.0})
    raw = [tpot_ms * 10, tpot_ms * 12, tpot_ms * 11]
    return Measurement(kind="serving", workload=WORKLOAD, config={"engine": "fake", "parallel": slots},
                       hardware_id="cpu-test", runtime_ms=float(np.median(raw)), raw_times_ms=raw,
                       metrics={"tpot_p50_ms": tpot_ms, "output_tokens_per_s": tok_s, "n_ok": 3.0})


def test_each_metric_is_the_median_of_the_launches_that_worked():
    row = median_of_launches([launch(5.0, 200.0), launch(8.0, 120.0), launch(5.5, 190.0), launch(None, status="oom")])
    assert row.status == "ok"
    assert row.metrics["tpot_p50_ms"] == 5.5 and row.metrics["output_tokens_per_s"] == 190.0
    assert row.metrics["launches"] == 4 and row.metrics["failed_launches"] == 1
    assert row.metrics["launch_cv_tpot_p50_ms"] == pytest.approx(np.std([5, 8, 5.5], ddof=1) / np.mean([5, 8, 5.5]))
    assert "launch_cv_n_ok" not in row.metrics  # only the headline metrics keep their spread
    assert len(row.raw_times_ms) == 9 and row.runtime_ms == 60.5  # median of the launches' medians (55, 88, 60.5)
    assert row.min_ms == 50.0 and row.cv > 0


def test_a_config_that_mostly_fails_is_a_failure_row():
    row = median_of_launches([launch(5.0), launch(None, status="oom"), launch(None, status="oom")])
    assert row.status == "oom" and row.error == "oom at start"
    assert row.metrics["launches"] == 3 and row.metrics["failed_launches"] == 2
    assert "tpot_p50_ms" not in row.metrics
    assert median_of_launches([launch(5.0), launch(None, status="timeout")]).status == "ok"  # half is enough
    single = median_of_launches([launch(6.0)])
    assert single.metrics["tpot_p50_ms"] == 6.0 and "launch_cv_tpot_p50_ms" not in single.metrics


def test_launches_of_different_configs_or_none_are_refused():
    with pytest.raises(InvalidInputError, match="one config"):
        median_of_launches([launch(5.0, slots=4), launch(5.0, slots=8)])
    with pytest.raises(InvalidInputError, match="at least one launch"):
        median_of_launches([])
