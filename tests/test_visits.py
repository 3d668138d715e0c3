"""Several visits per config: median of visit medians, resumable, no data lost to a failed visit."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from perfpred.collect import combine_visits, gate_visits, run_sweep, visits_done
from perfpred.datasets import Measurement, MeasurementStore, measurement_key
from perfpred.errors import InvalidInputError


@dataclass(frozen=True)
class Cfg:
    size: int

    def validate(self) -> None:
        if self.size <= 0:
            raise InvalidInputError(f"`size > 0` must hold, but got size={self.size}")


class ScriptedCollector:
    """Returns, per config, the next runtime from a script (None = a failed visit); an entry may be
    (runtime, reference time), the reference defaulting to a steady 0.1 ms."""

    name = "scripted"

    def __init__(self, script: dict[int, list[float | None]], crash_after: int | None = None):
        self.script = {k: list(v) for k, v in script.items()}
        self.calls: list[int] = []
        self.crash_after = crash_after

    def measurement_id(self, cfg: Cfg) -> str:
        return measurement_key("gemm", {"m": cfg.size}, {}, "hw")

    def measure(self, cfg: Cfg) -> Measurement:
        if self.crash_after is not None and len(self.calls) >= self.crash_after:
            raise KeyboardInterrupt  # the sweep dies here, as under Ctrl-C
        self.calls.append(cfg.size)
        t = self.script[cfg.size].pop(0)
        t, ref = t if isinstance(t, tuple) else (t, 0.1)
        if t is None:
            return Measurement(kind="gemm", workload={"m": cfg.size}, config={}, hardware_id="hw",
                               status="runtime_error", error="boom")
        raw = [t * 0.99, t, t * 1.01]
        return Measurement(kind="gemm", workload={"m": cfg.size}, config={}, hardware_id="hw", runtime_ms=t,
                           raw_times_ms=raw, n_runs=3, cv=0.01, ref_runtime_ms=ref,
                           metrics={"gflops": 100.0 / t, "timing_rel_ci": 0.01})


def _rows(store: MeasurementStore):
    return MeasurementStore(store.path).load().set_index("workload.m").sort_index()


def test_each_config_gets_three_visits_and_the_median_of_their_medians(tmp_path):
    script = {1: [1.0, 3.0, 1.2], 2: [5.0, 4.0, 9.0]}
    collector = ScriptedCollector(script)
    store = MeasurementStore(tmp_path / "s", create=True)
    report = run_sweep(collector, [Cfg(1), Cfg(2)], store, progress=False, visits=3)
    assert (report.measured, report.visits, report.statuses) == (2, 6, {"ok": 2})
    rows = _rows(store)
    assert len(rows) == 2
    assert rows.loc[1, "runtime_ms"] == pytest.approx(1.2)
    assert rows.loc[2, "runtime_ms"] == pytest.approx(5.0)
    assert rows.loc[2, "metric.visits"] == 3
    assert [rows.loc[2, f"metric.visit{i}_ms"] for i in (1, 2, 3)] == [5.0, 4.0, 9.0]
    assert rows.loc[2, "metric.visit_spread_pct"] == pytest.approx((9.0 / 4.0 - 1) * 100)
    assert rows.loc[2, "n_runs"] == 9 and len(rows.loc[2, "raw_times_ms"]) == 9
    assert rows.loc[2, "ref_runtime_ms"] == pytest.approx(0.1)
    # the rate metric follows the combined runtime, not the last visit's
    assert rows.loc[2, "metric.gflops"] == pytest.approx(100.0 / 5.0)
    # pooled spread includes the visit-to-visit drift
    assert rows.loc[2, "cv"] > 0.3


def test_visits_timed_while_the_reference_ran_slow_are_left_out_of_the_median(tmp_path):
    # config 1: visits 2 and 3 fell in a noisy period (the reference beside them ran 30% slow)
    script = {1: [(1.0, 0.10), (1.4, 0.13), (1.5, 0.13)], 2: [(2.0, 0.10), (2.2, 0.10), (2.1, 0.10)],
              3: [(3.0, 0.10), (3.3, 0.10), (3.9, 0.13)]}
    store = MeasurementStore(tmp_path / "s", create=True)
    report = run_sweep(ScriptedCollector(script), [Cfg(s) for s in (1, 2, 3)], store, progress=False, visits=3)
    rows = _rows(store)
    assert report.gated == 3
    assert rows["runtime_ms"].tolist() == pytest.approx([1.0, 2.1, 3.15])  # config 2 had no slow visit
    assert rows["metric.quiet_visits"].tolist() == [1, 3, 2]
    assert rows.loc[1, "metric.gflops"] == pytest.approx(100.0)  # rate follows the gated runtime
    assert [rows.loc[1, f"metric.visit{i}_ms"] for i in (1, 2, 3)] == [1.0, 1.4, 1.5]  # nothing dropped
    ungated = MeasurementStore(tmp_path / "u", create=True)
    run_sweep(ScriptedCollector(script), [Cfg(s) for s in (1, 2, 3)], ungated, progress=False, visits=3,
              ref_tolerance=None)
    assert _rows(ungated)["runtime_ms"].tolist() == pytest.approx([1.4, 2.1, 3.3])


def test_gating_is_idempotent_and_reruns_rewrite_nothing(tmp_path):
    script = {1: [(1.0, 0.10), (1.4, 0.13), (1.5, 0.13)], 2: [(2.0, 0.10), (2.2, 0.10), (2.1, 0.10)]}
    store = MeasurementStore(tmp_path / "s", create=True)
    run_sweep(ScriptedCollector(script), [Cfg(1), Cfg(2)], store, progress=False, visits=3)
    again = run_sweep(ScriptedCollector({}), [Cfg(1), Cfg(2)], store, progress=False, visits=3)
    assert (again.visits, again.gated) == (0, 0)
    assert _rows(store)["runtime_ms"].tolist() == pytest.approx([1.0, 2.1])


def test_when_every_visit_was_noisy_all_of_them_count():
    rows = pd.DataFrame([{
        "measurement_id": "a", "kind": "gemm", "hardware_id": "hw", "status": "ok", "runtime_ms": 2.0, "workload.m": 1,
        "raw_times_ms": [2.0], "metric.visits": 2, "metric.visit1_ms": 1.0, "metric.visit2_ms": 3.0,
        "metric.visit1_ref_ms": 0.2, "metric.visit2_ref_ms": 0.3}, {
        "measurement_id": "b", "kind": "gemm", "hardware_id": "hw", "status": "ok", "runtime_ms": 1.0, "workload.m": 2,
        "raw_times_ms": [1.0], "metric.visits": 2, "metric.visit1_ms": 1.0, "metric.visit2_ms": 1.0,
        "metric.visit1_ref_ms": 0.1, "metric.visit2_ref_ms": 0.1}])
    gated = {m.workload["m"]: m for m in gate_visits(rows, 1.1)}
    assert gated[1].runtime_ms == 2.0 and gated[1].metrics["quiet_visits"] == 2  # both slow: both count
    assert gated[2].runtime_ms == 1.0 and gated[2].metrics["quiet_visits"] == 2


def test_later_passes_visit_configs_in_a_shuffled_order(tmp_path):
    sizes = list(range(1, 21))
    collector = ScriptedCollector({s: [1.0, 1.0] for s in sizes})
    run_sweep(collector, [Cfg(s) for s in sizes], MeasurementStore(tmp_path / "s", create=True),
              progress=False, visits=2, seed=3)
    assert collector.calls[:20] == sizes
    assert sorted(collector.calls[20:]) == sizes and collector.calls[20:] != sizes


def test_a_rerun_with_more_visits_adds_only_the_missing_ones(tmp_path):
    store = MeasurementStore(tmp_path / "s", create=True)
    run_sweep(ScriptedCollector({1: [2.0], 2: [4.0]}), [Cfg(1), Cfg(2)], store, progress=False)
    assert np.isnan(_rows(store).loc[1].get("metric.visits", np.nan))  # a plain single visit
    more = ScriptedCollector({1: [3.0, 10.0], 2: [1.0, 1.0]})
    report = run_sweep(more, [Cfg(1), Cfg(2)], store, progress=False, visits=3)
    assert (report.measured, report.skipped, report.visits) == (0, 0, 4)
    rows = _rows(store)
    assert rows.loc[1, "runtime_ms"] == pytest.approx(3.0)  # median of 2, 3, 10
    assert rows.loc[2, "runtime_ms"] == pytest.approx(1.0)
    assert rows.loc[1, "metric.visit1_ms"] == 2.0
    again = run_sweep(ScriptedCollector({}), [Cfg(1), Cfg(2)], store, progress=False, visits=3)
    assert (again.skipped, again.visits) == (2, 0)


def test_an_interrupted_multi_visit_sweep_resumes_without_losing_or_repeating_a_visit(tmp_path):
    store = MeasurementStore(tmp_path / "s", create=True)
    script = {s: [float(s), float(s) + 1, float(s) + 2] for s in (1, 2, 3)}
    with pytest.raises(KeyboardInterrupt):
        run_sweep(ScriptedCollector(script, crash_after=4), [Cfg(s) for s in (1, 2, 3)], store,
                  progress=False, visits=3)
    done = {int(m): visits_done(r) for m, r in _rows(store).iterrows()}
    assert sorted(done.values()) == [1, 1, 2]  # three first visits and one second visit were stored
    rest = ScriptedCollector({s: script[s][done[s]:] for s in script})
    report = run_sweep(rest, [Cfg(s) for s in (1, 2, 3)], store, progress=False, visits=3)
    assert report.visits == 5
    rows = _rows(store)
    assert len(rows) == 3 and (rows["metric.visits"] == 3).all()
    assert rows["runtime_ms"].tolist() == [2.0, 3.0, 4.0]


def test_a_failed_visit_keeps_what_earlier_visits_measured(tmp_path):
    store = MeasurementStore(tmp_path / "s", create=True)
    report = run_sweep(ScriptedCollector({1: [2.0, None, 4.0]}), [Cfg(1)], store, progress=False, visits=3)
    row = _rows(store).loc[1]
    assert report.statuses == {"ok": 1}
    assert row["status"] == "ok" and row["runtime_ms"] == pytest.approx(3.0)
    assert row["metric.failed_visits"] == 1 and row["metric.visits"] == 3


def test_a_config_that_fails_on_every_visit_is_stored_as_failed(tmp_path):
    store = MeasurementStore(tmp_path / "s", create=True)
    report = run_sweep(ScriptedCollector({1: [None, None]}), [Cfg(1)], store, progress=False, visits=2)
    assert report.failed == 1
    row = _rows(store).loc[1]
    assert row["status"] == "runtime_error" and row["metric.visits"] == 2
    assert run_sweep(ScriptedCollector({}), [Cfg(1)], store, progress=False, visits=2).skipped == 1


def test_combine_visits_of_a_single_plain_measurement_starts_the_count():
    m = Measurement(kind="gemm", workload={"m": 1}, config={}, hardware_id="hw", runtime_ms=2.0)
    first = combine_visits(None, m)
    assert first.metrics["visits"] == 1 and first.metrics["visit1_ms"] == 2.0
    assert combine_visits(m, m).metrics["visits"] == 2


def test_a_tolerance_below_one_is_refused(tmp_path):
    with pytest.raises(InvalidInputError, match="ref_tolerance >= 1"):
        run_sweep(ScriptedCollector({}), [Cfg(1)], MeasurementStore(tmp_path / "s", create=True),
                  progress=False, visits=2, ref_tolerance=0.9)


@pytest.mark.parametrize("visits", [0, -1, 1.5, True])
def test_bad_visit_counts_are_refused(tmp_path, visits):
    with pytest.raises(InvalidInputError, match="visits >= 1"):
        run_sweep(ScriptedCollector({}), [Cfg(1)], MeasurementStore(tmp_path / "s", create=True),
                  progress=False, visits=visits)


def _cpu_rows(pinned: bool) -> pd.DataFrame:
    base = {"kind": "gemm", "hardware_id": "hw", "status": "ok", "raw_times_ms": [1.0], "metric.visits": 3,
            "config.device": "cpu", "metric.pinned_cpu_mask": 1.0 if pinned else np.nan}
    return pd.DataFrame([
        {**base, "measurement_id": "a", "workload.m": 1, "runtime_ms": 1.4, "metric.visit1_ms": 1.0,
         "metric.visit2_ms": 1.4, "metric.visit3_ms": 1.5, "metric.visit1_ref_ms": 0.10,
         "metric.visit2_ref_ms": 0.13, "metric.visit3_ref_ms": 0.13},
        {**base, "measurement_id": "b", "workload.m": 2, "runtime_ms": 2.0, "metric.visit1_ms": 2.0,
         "metric.visit2_ms": 2.0, "metric.visit3_ms": 2.0, "metric.visit1_ref_ms": 0.10,
         "metric.visit2_ref_ms": 0.10, "metric.visit3_ref_ms": 0.10}])


def test_unpinned_cpu_rows_are_not_gated_because_their_reference_may_have_run_elsewhere():
    assert gate_visits(_cpu_rows(pinned=False), 1.1) == []
    forced = {m.workload["m"]: m.runtime_ms for m in gate_visits(_cpu_rows(pinned=False), 1.1, unpinned_cpu_rows=True)}
    pinned = {m.workload["m"]: m.runtime_ms for m in gate_visits(_cpu_rows(pinned=True), 1.1)}
    assert forced[1] == pinned[1] == 1.0
