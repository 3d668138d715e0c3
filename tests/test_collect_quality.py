"""Collect-quality fixes: a sweep counts its noisy rows (not converged, cv above a threshold) and
warns when they are many; it re-checks the load during the sweep; each timed row records its
timing policy, and a re-run re-times rows stored under a looser one (the QA case: `--quick` rows
skipped by a normal-policy run). Fake timers, clocks and load averages throughout."""

from __future__ import annotations

import os
import re
from dataclasses import replace
from types import SimpleNamespace

import pytest
from test_cli import run_main
from test_sweep_fixes import Cfg

import perfpred.collect
from perfpred.collect import (
    KERNEL_POLICY,
    GemmCollector,
    GemmConfig,
    KernelCollector,
    SweepReport,
    TimingPolicy,
    TimingResult,
    _gemm,
    _kernel,
    noisy_row,
    quality_warning,
    run_sweep,
)
from perfpred.collect import _sweep as sweep_module
from perfpred.collect._kernel import _Outcome
from perfpred.collect._timing import looser_fields, policy_metrics
from perfpred.collect.kernels import SGEMM
from perfpred.datasets import Measurement, MeasurementStore, measurement_key

QUICK = TimingPolicy(max_time_s=0.5, max_runs=20)
NORMAL = TimingPolicy(max_time_s=1.5, max_runs=50)

# ---------------------------------------------------------------------------- a scripted timer


class Timed:
    """A collector with a timing policy: per config, the next (stopped_by, cv) from a script,
    recorded with the policy as GemmCollector records it; each measure takes 10 s of a fake clock."""

    name = "timed"

    def __init__(self, script: dict[int, list], policy: TimingPolicy, clock: list[float] | None = None) -> None:
        self.script = {k: list(v) for k, v in script.items()}
        self.policy = policy
        self.clock = clock
        self.timed: list[int] = []

    def measurement_id(self, cfg: Cfg) -> str:
        return measurement_key("gemm", {"m": cfg.size}, {}, "hw")

    def measure(self, cfg: Cfg) -> Measurement:
        if self.clock is not None:
            self.clock[0] += 10.0
        self.timed.append(cfg.size)
        stopped_by, cv = self.script[cfg.size].pop(0)
        metrics = {"timing_converged": float(stopped_by == "stable"), **policy_metrics(self.policy)}
        return Measurement(kind="gemm", workload={"m": cfg.size}, config={}, hardware_id="hw", runtime_ms=1.0,
                           raw_times_ms=[1.0], n_runs=1, cv=cv, load_avg_1m=0.1, metrics=metrics)


def _sweep(script: dict[int, list], store: MeasurementStore, policy: TimingPolicy = NORMAL,
           **kwargs) -> tuple[SweepReport, Timed]:
    collector = Timed(script, policy, kwargs.pop("clock", None))
    kwargs.setdefault("load_check_s", None)
    return run_sweep(collector, [Cfg(k) for k in script], store, progress=False, **kwargs), collector


def _rows(store: MeasurementStore) -> dict[int, dict]:
    df = MeasurementStore(store.path).load()
    return {int(r["workload.m"]): r for r in df.to_dict("records")}


# ---------------------------------------------------------------------------- 1. noisy data made visible


def test_the_report_counts_unconverged_and_high_cv_rows(tmp_path):
    store = MeasurementStore(tmp_path / "s", create=True)
    script = {1: [("time_cap", 0.45)], 2: [("time_cap", 0.05)], 3: [("stable", 0.30)], 4: [("stable", 0.01)]}
    report, _ = _sweep(script, store)
    assert (report.ok_rows, report.unconverged, report.noisy, report.poor) == (4, 2, 2, 3)
    assert report.noisy_cv == 0.15 and report.poor_share == pytest.approx(0.75)
    again, _ = _sweep({1: [], 2: [], 3: [], 4: []}, store, noisy_cv=0.5)
    assert again.ok_rows == 0  # skipped rows are not this sweep's: nothing to say


def test_a_mostly_noisy_sweep_gets_a_warning_saying_what_to_do(tmp_path):
    store = MeasurementStore(tmp_path / "s", create=True)
    report, _ = _sweep({k: [("time_cap", 0.45)] for k in range(1, 8)} | {8: [("stable", 0.01)]}, store)
    text = quality_warning(report, ["re-run on an idle machine", "re-time them with --remeasure-above-cv 0.15"])
    assert text is not None
    assert "7 of the 8 rows (88%) are noisy" in text and "1-min load average up to 0.1" in text
    assert "7 did not converge" in text and "7 spread above cv 0.15" in text
    assert "What to do: re-run on an idle machine; re-time them with --remeasure-above-cv 0.15." in text
    quiet, _ = _sweep({20: [("stable", 0.01)], 21: [("stable", 0.02)], 22: [("stable", 0.01)],
                       23: [("time_cap", 0.02)]}, store)
    assert quality_warning(quiet, ["x"]) is None  # one in four: below the 25% share


def test_the_sweep_rechecks_the_load_and_warns_once_when_it_becomes_busy(tmp_path, monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(sweep_module, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    cpus = os.cpu_count() or 1
    # Quiet for the first 40 s of the sweep, then a neighbour starts: 4.5 per CPU.
    monkeypatch.setattr(os, "getloadavg", lambda: ((0.1 if clock[0] < 40 else 4.5) * cpus,) * 3)
    warnings: list[str] = []
    store = MeasurementStore(tmp_path / "s", create=True)
    report, _ = _sweep({k: [("stable", 0.01)] for k in range(1, 11)}, store, clock=clock, load_check_s=30.0,
                       warn=warnings.append)
    assert len(warnings) == 1 and report.busy_warnings == 1  # once, not at every check
    assert f"1-min load average {4.5 * cpus:.1f} on {cpus} CPUs" in warnings[0]
    assert "became busy during the sweep (after 6 of 10 timings, 60 s in)" in warnings[0]
    assert report.peak_load == pytest.approx(4.5 * cpus)


def test_the_load_warning_goes_to_stderr_by_default(tmp_path, monkeypatch, capsys):
    clock = [0.0]
    monkeypatch.setattr(sweep_module, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    monkeypatch.setattr(os, "getloadavg", lambda: (99.0, 99.0, 99.0))
    store = MeasurementStore(tmp_path / "s", create=True)
    _sweep({1: [("stable", 0.01)], 2: [("stable", 0.01)], 3: [("stable", 0.01)], 4: [("stable", 0.01)]}, store,
           clock=clock, load_check_s=30.0)
    err = " ".join(capsys.readouterr().err.split())
    assert err.count("warning: this machine became busy during the sweep") == 1, err
    assert "1-min load average 99.0" in err


def collect_gemm_reporting(report: SweepReport, tmp_path, monkeypatch, capsys, *flags: str) -> tuple[int, str, str]:
    """``perfpred collect gemm`` on one tiny shape whose sweep returns ``report``: (exit code, out, err)."""
    monkeypatch.setattr(perfpred.collect, "run_sweep", lambda *a, **k: report)
    monkeypatch.setenv("COLUMNS", "200")
    return run_main(monkeypatch, capsys, "collect", "gemm", "--store", str(tmp_path / "g"), "--design", "grid",
                    "--sizes", "16", "--dtypes", "fp32", "--no-power", "--no-reference", "--max-config-s", "0", *flags)


def test_collect_gemm_summary_counts_noisy_rows_and_warns(tmp_path, monkeypatch, capsys):
    done = SweepReport(measured=256, visits=256, ok_rows=256, unconverged=222, noisy=200, poor=230, peak_load=6.6)
    code, out, err = collect_gemm_reporting(done, tmp_path, monkeypatch, capsys, "--max-time-s", "0.5",
                                            "--pin-cpus", "none")
    assert code == 0, err
    text, err = " ".join(out.split()), " ".join(err.split())
    assert "noisy rows (of the ok ones) │ 230 of 256 (90%): 222 not converged, 200 above cv 0.15" in text, out
    assert re.search(r"1-min load average \(highest\) │ 6\.6 on \d+ CPUs", text), out
    assert "warning: 230 of the 256 rows (90%) are noisy" in err, err
    for advice in ("re-run on an idle machine", "--remeasure-above-cv 0.15", "--pin-cpus auto",
                   "longer --max-time-s (now 0.5 s)", "--visits 3"):
        assert advice in err, (advice, err)


def test_the_noisy_rows_advice_does_not_repeat_what_the_run_already_did(tmp_path, monkeypatch, capsys):
    done = SweepReport(measured=256, visits=768, ok_rows=256, unconverged=222, noisy=200, poor=230)
    code, _, err = collect_gemm_reporting(done, tmp_path, monkeypatch, capsys, "--remeasure-above-cv", "0.15",
                                          "--visits", "3")
    assert code == 0, err
    err = " ".join(err.split())
    assert "re-time the noisy rows with" not in err
    assert "(with --remeasure-above-cv 0.15) again to re-time them once more" in err
    assert "several passes with --visits 3" not in err and "--visits 5; now 3" in err


def test_collect_gemm_uses_the_remeasure_threshold_as_the_noisy_one(tmp_path, monkeypatch, capsys):
    seen = {}

    def fake_sweep(*args, **kwargs):
        seen.update(kwargs)
        return SweepReport(ok_rows=4, noisy=1, poor=1, noisy_cv=kwargs["noisy_cv"])

    monkeypatch.setattr(perfpred.collect, "run_sweep", fake_sweep)
    code, _, err = run_main(monkeypatch, capsys, "collect", "gemm", "--store", str(tmp_path / "g"), "--design",
                            "grid", "--sizes", "16", "--dtypes", "fp32", "--no-power", "--no-reference",
                            "--max-config-s", "0", "--remeasure-above-cv", "0.08")
    assert code == 0, err
    assert seen["noisy_cv"] == 0.08
    assert "are noisy" not in err  # 1 of 4: no warning


# ---------------------------------------------------------------------------- 2. the timing policy on each row


def test_rows_stored_under_a_looser_policy_are_retimed_and_the_steadier_kept(tmp_path):
    """The QA case: --quick (0.5 s cap) rows are re-timed by a normal-policy run, not skipped."""
    store = MeasurementStore(tmp_path / "s", create=True)
    _sweep({1: [("time_cap", 0.40)], 2: [("time_cap", 0.05)], 3: [("stable", 0.02)]}, store, QUICK)
    assert _rows(store)[1]["metric.timing_max_time_s"] == 0.5 and _rows(store)[1]["metric.timing_max_runs"] == 20
    # 1 comes out steadier (replaced), 2 noisier (the quick row kept); 3 converged: its caps never bound.
    report, timer = _sweep({1: [("stable", 0.01)], 2: [("time_cap", 0.30)], 3: []}, store, NORMAL)
    assert sorted(timer.timed) == [1, 2]
    assert (report.retimed_policy, report.remeasured, report.kept, report.skipped) == (2, 2, 1, 1)
    assert report.looser_policies == {"max_runs=20, max_time_s=0.5": 2}
    rows = _rows(store)
    assert rows[1]["cv"] == pytest.approx(0.01) and rows[1]["metric.timing_max_time_s"] == 1.5
    assert rows[2]["cv"] == pytest.approx(0.05) and rows[2]["metric.attempts"] == 2
    # The kept row keeps the policy it ran under (it never ran under the stricter one): the same
    # command again tries it once more, and the converged re-time wins this time.
    assert rows[2]["metric.timing_max_time_s"] == 0.5 and rows[2]["metric.timing_max_runs"] == 20
    again, timer = _sweep({1: [], 2: [("stable", 0.08)], 3: []}, store, NORMAL)
    assert (timer.timed, again.skipped, again.retimed_policy, again.kept) == ([2], 2, 1, 0)
    assert _rows(store)[2]["cv"] == pytest.approx(0.08) and _rows(store)[2]["metric.timing_max_time_s"] == 1.5
    third, timer = _sweep({1: [], 2: [], 3: []}, store, NORMAL)
    assert (timer.timed, third.skipped) == ([], 3)
    # A looser run than what is stored skips everything too.
    looser, timer = _sweep({1: [], 2: [], 3: []}, store, QUICK)
    assert (timer.timed, looser.skipped) == ([], 3)


def test_a_wider_ci_target_or_fewer_warmups_is_looser_even_when_converged(tmp_path):
    store = MeasurementStore(tmp_path / "s", create=True)
    _sweep({1: [("stable", 0.02)]}, store, TimingPolicy(target_rel_ci=0.05))
    _sweep({2: [("stable", 0.02)]}, store, TimingPolicy(warmup_runs=0))
    report, timer = _sweep({1: [("stable", 0.01)], 2: [("stable", 0.01)]}, store, TimingPolicy())
    assert sorted(timer.timed) == [1, 2]
    assert report.looser_policies == {"target_rel_ci=0.05": 1, "warmup_runs=0": 1}


def test_rows_stored_before_the_policy_was_recorded_are_not_retimed(tmp_path):
    store = MeasurementStore(tmp_path / "s", create=True)
    store.append([Measurement(kind="gemm", workload={"m": 1}, config={}, hardware_id="hw", runtime_ms=1.0, cv=0.4,
                              metrics={"timing_converged": 0.0})])
    report, timer = _sweep({1: []}, store, NORMAL)
    assert (timer.timed, report.skipped) == ([], 1)


def test_failed_rows_are_left_to_their_retry_rule_and_remeasure_rules_still_apply(tmp_path):
    store = MeasurementStore(tmp_path / "s", create=True)
    store.append([Measurement(kind="gemm", workload={"m": 1}, config={}, hardware_id="hw", status="timeout",
                              error="timeout", metrics=policy_metrics(QUICK))])
    _sweep({2: [("stable", 0.30)]}, store, NORMAL)
    noisy = noisy_row(0.2)
    report, timer = _sweep({1: [], 2: [("stable", 0.01)]}, store, NORMAL,
                           remeasure=lambda row: row["status"] == "ok" and noisy(row))
    assert timer.timed == [2]  # the timeout row is not re-timed for its policy; the noisy ok row is
    assert (report.remeasured, report.retimed_policy) == (1, 0)


def test_policy_respect_can_be_turned_off(tmp_path):
    store = MeasurementStore(tmp_path / "s", create=True)
    _sweep({1: [("time_cap", 0.4)]}, store, QUICK)
    report, timer = _sweep({1: []}, store, NORMAL, respect_policy=False)
    assert (timer.timed, report.skipped) == ([], 1)


def test_looser_fields_rules():
    recorded = policy_metrics(QUICK)
    assert looser_fields(recorded, NORMAL) == {"max_runs": 20.0, "max_time_s": 0.5}
    assert looser_fields(recorded, NORMAL, converged=True) == {}
    assert looser_fields(policy_metrics(NORMAL), QUICK) == {}
    assert looser_fields({}, NORMAL) == {}  # nothing recorded: satisfies
    assert looser_fields({"timing_max_time_s": float("nan")}, NORMAL) == {}


def _fake_timing(stopped_by: str, cv_spread: float = 0.0):
    calls = []

    def time_function(call, policy, **kwargs):
        calls.append(policy)
        return TimingResult(raw_times_ms=[1.0, 1.0 + cv_spread, 1.0 - cv_spread], number=1, stopped_by=stopped_by,
                            rel_ci=0.01 if stopped_by == "stable" else 0.3)

    return time_function, calls


def test_gemm_rows_record_the_policy_and_ids_ignore_it(tmp_path, monkeypatch):
    fake, calls = _fake_timing("time_cap")
    monkeypatch.setattr(_gemm, "time_function", fake)
    cfg = GemmConfig(16, 16, 16, dtype="fp32")
    quick = GemmCollector(policy=QUICK, measure_power=False, reference=False)
    normal = GemmCollector(policy=NORMAL, measure_power=False, reference=False)
    m = quick.measure(cfg)
    assert calls == [QUICK]
    assert {k: m.metrics[k] for k in m.metrics if k.startswith("timing_") and k not in
            ("timing_rel_ci", "timing_converged")} == {
        "timing_warmup_runs": 2.0, "timing_min_runs": 5.0, "timing_max_runs": 20.0, "timing_max_time_s": 0.5,
        "timing_target_rel_ci": 0.02, "timing_min_sample_ms": 2.0}
    # The id is what was measured, never how: stores written before keep their ids.
    assert quick.measurement_id(cfg) == normal.measurement_id(cfg) == m.measurement_id == measurement_key(
        "gemm", cfg.workload(), cfg.config(False), m.hardware_id)


def test_collect_gemm_retimes_rows_of_a_quick_policy_and_says_so(tmp_path, monkeypatch, capsys):
    fake, calls = _fake_timing("time_cap", 0.01)
    monkeypatch.setattr(_gemm, "time_function", fake)
    monkeypatch.setenv("COLUMNS", "200")
    args = ["collect", "gemm", "--store", str(tmp_path / "g"), "--design", "grid", "--sizes", "16,32",
            "--dtypes", "fp32", "--no-power", "--no-reference", "--max-config-s", "0"]
    code, _, err = run_main(monkeypatch, capsys, *args, "--max-time-s", "0.5", "--max-runs", "20")
    assert code == 0, err
    assert len(calls) == 8
    code, out, err = run_main(monkeypatch, capsys, *args)
    assert code == 0, err
    text = " ".join(out.split())
    assert len(calls) == 16 and calls[-1].max_time_s == 1.5  # all 8 re-timed, under the normal policy
    assert ("of them, stored with a looser policy │ 8 rows re-timed: 8 with max_runs=20, max_time_s=0.5 (--quick)"
            in text), out
    assert "skipped (already in store) │ 0" in text
    code, out, err = run_main(monkeypatch, capsys, *args)
    assert len(calls) == 16 and "skipped (already in store) │ 8" in " ".join(out.split())
    df = MeasurementStore(tmp_path / "g").load()
    assert set(df["metric.timing_max_time_s"]) == {1.5}


# ---------------------------------------------------------------------------- kernels


class FakeWorker:
    """Stands in for the kernel worker process: answers every job with a capped (unconverged) timing."""

    policies: list = []  # noqa: RUF012

    def __init__(self, hide_torch: bool, startup_timeout_s: float) -> None:
        self.start_ms, self.jobs_run = 1.0, 0

    def alive(self) -> bool:
        return True

    def run(self, job, timeout_s):
        FakeWorker.policies.append(job.policy)
        timing = {"raw_times_ms": [1.0, 1.5, 0.6], "number": 4, "stopped_by": "time_cap", "rel_ci": 0.5}
        return _Outcome("ok", result={"timing": timing}, metrics={})

    def stop(self) -> None:
        pass


def test_kernel_rows_record_the_policy_and_collect_kernel_retimes_looser_ones(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(_kernel, "_Worker", FakeWorker)
    FakeWorker.policies = []
    with KernelCollector("sgemm", problem_size=SGEMM.test_problem_size, with_peaks=False, pin_cpus="none") as c:
        m = c.measure(c.configs(1)[0])
    assert m.metrics["timing_max_time_s"] == KERNEL_POLICY.max_time_s == 1.0
    assert m.metrics["timing_target_rel_ci"] == KERNEL_POLICY.target_rel_ci

    monkeypatch.setenv("COLUMNS", "200")
    args = ["collect", "kernel", "--kernel", "sgemm", "--size", "test", "--configs", "2", "--pin-cpus", "none",
            "--store", str(tmp_path / "k")]
    code, out, err = run_main(monkeypatch, capsys, *args, "--max-time-s", "0.25")
    assert code == 0, err
    assert FakeWorker.policies[-1] == replace(KERNEL_POLICY, max_time_s=0.25)
    text, err = " ".join(out.split()), " ".join(err.split())
    assert "noisy rows (of the ok ones) │ 2 of 2 (100%): 2 not converged, 2 above cv 0.15" in text, out
    assert "warning: 2 of the 2 rows (100%) are noisy" in err and "--max-time-s (now 0.25 s)" in err, err
    code, out, err = run_main(monkeypatch, capsys, *args)
    assert code == 0, err
    text = " ".join(out.split())
    assert "of them, stored with a looser policy │ 2 rows re-timed: 2 with max_time_s=0.25" in text, out
    assert FakeWorker.policies[-1].max_time_s == 1.0
    timed = len(FakeWorker.policies)
    code, out, err = run_main(monkeypatch, capsys, *args, "--remeasure-above-cv", "0.2")
    assert code == 0, err
    assert len(FakeWorker.policies) == timed + 2  # cv 0.44: both re-timed
    assert "re-measured (were timeout, above cv 0.2) │ 2" in " ".join(out.split()), out
    # the advice names the threshold this run used (and does not tell it to use the flag it used)
    assert "(with --remeasure-above-cv 0.2) again" in " ".join(err.split()), err


def test_a_converged_retime_wins_over_a_capped_row_that_spread_less_by_chance(tmp_path):
    """Review case: a --quick row stopped by its cap at cv 0.05 against a converged re-time at cv 0.06:
    the converged one is kept (cv alone kept the capped row and recorded a policy it never ran under)."""
    store = MeasurementStore(tmp_path / "s", create=True)
    _sweep({1: [("time_cap", 0.05)]}, store, QUICK)
    report, _ = _sweep({1: [("stable", 0.06)]}, store, NORMAL)
    row = _rows(store)[1]
    assert (report.remeasured, report.kept) == (1, 0)
    assert row["cv"] == pytest.approx(0.06) and row["metric.timing_converged"] == 1
    assert row["metric.timing_max_time_s"] == 1.5
