"""Collector fixes: re-measures keep the steadier row, kernel sweeps retry timeouts, kernels are
pinned, samples reach their target length, all-failed stores sort by runtime, GPU kernels are
refused before a store exists. Fake collectors and clocks; one tiny live kernel run."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from types import SimpleNamespace
from typing import ClassVar

import pytest
from test_cli import assert_one_line_error, run_main

from perfpred.collect import KernelCollector, SweepReport, TimingPolicy, _kernel, _timing, noisy_row, run_sweep
from perfpred.collect._kernel import KernelConfig, _Outcome
from perfpred.collect._sweep import failed_row
from perfpred.collect.kernels import SGEMM, _engine, _registry
from perfpred.datasets import Measurement, MeasurementStore, measurement_key
from perfpred.errors import InvalidInputError

GOOD_SGEMM = {"block_m": 16, "block_n": 32, "block_k": 8, "loop_order": 1, "unroll": 4, "isa": "sse2", "threads": 1}
ALLOWED = sorted(os.sched_getaffinity(0))


# ---------------------------------------------------------------------------- a scripted collector


@dataclass(frozen=True)
class Cfg:
    size: int

    def validate(self) -> None:
        pass


class Scripted:
    """Per config, the next (runtime, cv) from a script; a string is a failure with that status.
    With a ``clock`` (a one-item list a fake perf_counter reads), each measure takes one second."""

    name = "scripted"

    def __init__(self, script: dict[int, list], clock: list[float] | None = None) -> None:
        self.script = {k: list(v) for k, v in script.items()}
        self.clock = clock

    def measurement_id(self, cfg: Cfg) -> str:
        return measurement_key("gemm", {"m": cfg.size}, {}, "hw")

    def measure(self, cfg: Cfg) -> Measurement:
        if self.clock is not None:
            self.clock[0] += 1.0
        entry = self.script[cfg.size].pop(0)
        base = {"kind": "gemm", "workload": {"m": cfg.size}, "config": {}, "hardware_id": "hw"}
        if isinstance(entry, str):
            return Measurement(status=entry, error=entry, **base)
        t, cv = entry
        return Measurement(runtime_ms=t, raw_times_ms=[t], n_runs=1, cv=cv, **base)


def _row(store: MeasurementStore, size: int = 1) -> dict:
    rows = MeasurementStore(store.path).load()
    return rows[rows["workload.m"] == size].iloc[0].to_dict()


def _sweep(script: dict[int, list], store: MeasurementStore, **kwargs) -> SweepReport:
    return run_sweep(Scripted(script), [Cfg(k) for k in script], store, progress=False, **kwargs)


# ---------------------------------------------------------------------------- 1. keep the steadier row


def test_a_noisier_remeasure_keeps_the_earlier_row_and_says_so(tmp_path):
    store = MeasurementStore(tmp_path / "s", create=True)
    _sweep({1: [(0.123, 0.27)], 2: [(1.0, 0.30)]}, store)
    report = _sweep({1: [(0.673, 1.57)], 2: [(0.9, 0.05)]}, store, remeasure=noisy_row(0.2))
    assert (report.remeasured, report.kept) == (2, 1)
    assert _row(store, 1)["runtime_ms"] == pytest.approx(0.123)  # the QA case: 0.673 ms at cv 1.57 is worse
    assert _row(store, 2)["runtime_ms"] == pytest.approx(0.9)  # a steadier re-run replaces
    assert _row(store, 1)["metric.attempts"] == _row(store, 2)["metric.attempts"] == 2


@pytest.mark.parametrize(("old", "new", "kept_old"), [
    ((1.0, 0.3), (2.0, 0.3), False),  # a tie: the newer
    ((1.0, 0.3), "timeout", True),  # a failure never replaces a measured row
    ("timeout", (2.0, 0.9), False),
    ("timeout", "runtime_error", False),
])
def test_ties_and_failures_in_a_remeasure(tmp_path, old, new, kept_old):
    store = MeasurementStore(tmp_path / "s", create=True)
    _sweep({1: [old]}, store)
    report = _sweep({1: [new]}, store, remeasure=lambda row: True)
    assert report.kept == int(kept_old)
    held = old if kept_old else new
    assert _row(store)["status"] == ("ok" if isinstance(held, tuple) else held)
    assert report.statuses == {_row(store)["status"]: 1}  # what the store holds


def test_a_remeasure_over_visits_restores_the_earlier_row_when_the_visits_end_noisier(tmp_path):
    store = MeasurementStore(tmp_path / "s", create=True)
    _sweep({1: [(1.0, 0.3)]}, store)
    # The first new visit is steadier (written), the combined visits spread more: the old row is back.
    report = _sweep({1: [(1.0, 0.0), (3.0, 0.0)]}, store, remeasure=noisy_row(0.2), visits=2, ref_tolerance=None)
    assert report.kept == 1
    assert _row(store)["runtime_ms"] == pytest.approx(1.0) and _row(store)["cv"] == pytest.approx(0.3)


# ---------------------------------------------------------------------------- 2. retrying failed kernel rows


def test_timeouts_are_retried_up_to_max_attempts_and_deterministic_failures_are_not(tmp_path):
    store = MeasurementStore(tmp_path / "s", create=True)
    rule = failed_row(["timeout"], max_attempts=2)
    _sweep({1: ["timeout"], 2: ["compile_error"]}, store, remeasure=rule)
    again = _sweep({1: ["timeout"], 2: []}, store, remeasure=rule)
    assert (again.measured, again.remeasured, again.skipped) == (1, 1, 1)
    assert _row(store, 1)["metric.attempts"] == 2
    third = _sweep({1: [], 2: []}, store, remeasure=rule)  # two tries made: a hung config costs no more
    assert (third.measured, third.skipped) == (0, 2)
    fixed = _sweep({1: [(1.0, 0.01)], 2: []}, store, remeasure=failed_row(["timeout"], max_attempts=3))
    assert fixed.remeasured == 1 and _row(store, 1)["status"] == "ok"
    with pytest.raises(InvalidInputError, match=r"each retried status must be one of .*, but got 'ok'"):
        failed_row(["ok"])


def test_collect_kernel_retries_timeouts_by_default_and_takes_other_statuses(monkeypatch, capsys, tmp_path):
    import perfpred.collect

    rules = []
    monkeypatch.setattr(perfpred.collect, "run_sweep", lambda *a, remeasure=None, **k: rules.append(remeasure)
                        or SweepReport())
    common = ["collect", "kernel", "--kernel", "sgemm", "--size", "test", "--configs", "2", "--store",
              str(tmp_path / "k")]
    assert run_main(monkeypatch, capsys, *common)[0] == 0
    assert run_main(monkeypatch, capsys, *common, "--retry-status", "timeout,runtime_error",
                    "--max-attempts", "3")[0] == 0
    default, wider = rules
    assert default({"status": "timeout"}) and not default({"status": "timeout", "metric.attempts": 2.0})
    assert not default({"status": "compile_error"}) and not default({"status": "runtime_error"})
    assert wider({"status": "runtime_error", "metric.attempts": 2.0})
    assert_one_line_error(*run_main(monkeypatch, capsys, *common, "--retry-status", "ok"), "--retry-status", "'ok'")


# ---------------------------------------------------------------------------- 3. pinning kernels


class FakeWorker:
    """Stands in for the worker process: records the jobs, answers with a given timing."""

    jobs: ClassVar[list] = []
    stopped_by = "stable"

    def __init__(self, hide_torch: bool, startup_timeout_s: float) -> None:
        self.start_ms, self.jobs_run = 1.0, 0

    def alive(self) -> bool:
        return True

    def run(self, job, timeout_s):
        FakeWorker.jobs.append(job)
        timing = {"raw_times_ms": [1.0, 1.0, 1.0], "number": 4, "stopped_by": FakeWorker.stopped_by, "rel_ci": 0.5}
        return _Outcome("ok", result={"timing": timing}, metrics={"pinned_cpu_mask": 1.0})

    def stop(self) -> None:
        pass


@pytest.fixture
def fake_worker(monkeypatch):
    monkeypatch.setattr(_kernel, "_Worker", FakeWorker)
    FakeWorker.jobs = []
    return FakeWorker


@pytest.mark.skipif(len(ALLOWED) < 2, reason="needs 2 usable CPUs")
def test_each_kernel_config_is_pinned_to_its_first_threads_cpus(fake_worker):
    with KernelCollector("sgemm", problem_size=SGEMM.test_problem_size, with_peaks=False) as c:
        c.measure({**GOOD_SGEMM, "threads": 1})
        c.measure({**GOOD_SGEMM, "threads": 2})
    with KernelCollector("sgemm", problem_size=SGEMM.test_problem_size, with_peaks=False, pin_cpus="none") as c:
        c.measure(GOOD_SGEMM)
    assert [job.cpus for job in fake_worker.jobs] == [tuple(ALLOWED[:1]), tuple(ALLOWED[:2]), None]
    with pytest.raises(InvalidInputError, match="pin_cpus"):
        KernelCollector("sgemm", pin_cpus="first")


def test_more_threads_than_usable_cpus_is_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(_kernel, "usable_cpus", lambda: 1)
    with pytest.raises(InvalidInputError) as err:
        KernelConfig(SGEMM, {**GOOD_SGEMM, "threads": 2}, SGEMM.test_problem_size).validate()
    assert str(err.value) == ("`threads <= 1` (the CPUs this process may use) must hold for kernel 'sgemm', "
                              "but got threads=2")
    KernelConfig(SGEMM, GOOD_SGEMM, SGEMM.test_problem_size).validate()


def test_pinning_moves_every_thread_of_the_worker_and_is_undone_for_an_unpinned_job():
    started, stop = threading.Event(), threading.Event()

    def spin() -> None:  # a pool thread an earlier config started
        started.set()
        stop.wait(10)

    thread = threading.Thread(target=spin)
    thread.start()
    started.wait(10)
    engine = _engine.Engine()
    try:
        assert engine._pin((ALLOWED[0],)) == (ALLOWED[0],)
        assert os.sched_getaffinity(thread.native_id) == {ALLOWED[0]} == os.sched_getaffinity(0)
        assert engine._pin(None) is None
        assert os.sched_getaffinity(thread.native_id) == set(ALLOWED) == os.sched_getaffinity(0)
    finally:
        os.sched_setaffinity(0, ALLOWED)
        stop.set()
        thread.join()


def test_a_live_kernel_run_is_pinned_and_records_its_mask_and_convergence():
    policy = TimingPolicy(warmup_runs=1, min_runs=3, max_runs=5, max_time_s=0.05, target_rel_ci=0.05,
                          min_sample_ms=0.2)
    with KernelCollector("sgemm", problem_size=SGEMM.test_problem_size, policy=policy, with_peaks=False) as c:
        m = c.measure(GOOD_SGEMM)
        assert m.status == "ok", m.error
        assert os.sched_getaffinity(c.worker_pid) == {ALLOWED[0]}
    assert m.metrics["pinned_cpu_mask"] == float(1 << ALLOWED[0])
    assert m.metrics["timing_converged"] in (0.0, 1.0)


# ---------------------------------------------------------------------------- 4. sample length, warm-up, why it stopped


class FakeClock:
    """``perf_counter`` for _timing: only the timed function moves it."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


def test_samples_reach_their_length_when_the_first_call_was_slow(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(_timing, "time", SimpleNamespace(perf_counter=clock.perf_counter))
    calls = []

    def gemm() -> None:  # 50 ms for the first call (a thread pool starting), then 7 us
        clock.now += 0.05 if not calls else 7e-6
        calls.append(1)

    policy = TimingPolicy(warmup_runs=2, min_runs=5, max_runs=30, max_time_s=1.0, target_rel_ci=0.02)
    result = _timing.time_function(gemm, policy)
    assert result.median_ms == pytest.approx(0.007)
    assert result.number * result.median_ms >= policy.min_sample_ms  # was 1 call per sample


def test_kernel_samples_reach_their_length_when_the_probe_call_was_slow():
    reported = iter([50.0])  # the kernel times itself: the first call was cold

    def call() -> float:
        return next(reported, 0.007)

    policy = TimingPolicy(warmup_runs=1, min_runs=5, max_runs=30, max_time_s=1.0, min_sample_ms=1.0)
    timing = _engine.time_returned(call, policy)
    assert timing["number"] * min(timing["raw_times_ms"]) >= 1.0


def test_every_warmup_run_is_made_even_for_long_calls(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(_timing, "time", SimpleNamespace(perf_counter=clock.perf_counter))
    calls = []

    def slow() -> None:
        clock.now += 0.3
        calls.append(1)

    policy = TimingPolicy(warmup_runs=3, min_runs=3, max_runs=3, max_time_s=60.0, min_sample_ms=0.0)
    assert len(_timing.time_function(slow, policy).raw_times_ms) == 3
    assert len(calls) == 3 + 3  # was 1 + 3: the rest of the warm-up was dropped for calls >= 0.2 s
    kernel_calls = []
    _engine.time_returned(lambda: kernel_calls.append(1) or 300.0, policy)
    assert len(kernel_calls) == 3 + 3


@pytest.mark.parametrize(("stopped_by", "converged"), [("stable", 1.0), ("time_cap", 0.0), ("max_runs", 0.0)])
def test_kernel_rows_say_whether_sampling_converged(fake_worker, stopped_by, converged, monkeypatch):
    monkeypatch.setattr(FakeWorker, "stopped_by", stopped_by)
    with KernelCollector("sgemm", problem_size=SGEMM.test_problem_size, with_peaks=False) as c:
        m = c.measure(GOOD_SGEMM)
    assert m.metrics["timing_converged"] == converged


# ---------------------------------------------------------------------------- 5. sorting a store of failures


def test_a_store_whose_rows_all_failed_sorts_by_runtime(monkeypatch, capsys, tmp_path):
    store = MeasurementStore(tmp_path / "failed", create=True)
    store.append([Measurement(kind="kernel", workload={"kernel_name": "sgemm"}, config={"threads": t},
                              hardware_id="hw", status="timeout", error="timeout") for t in (1, 2)])
    code, out, err = run_main(monkeypatch, capsys, "dataset", "ls", str(store.path), "--sort", "runtime_ms")
    assert code == 0, err
    assert "threads" in out and "status=time" in out  # both rows listed
    assert_one_line_error(*run_main(monkeypatch, capsys, "dataset", "ls", str(store.path), "--sort", "speed"),
                          "--sort must name a column")


# ---------------------------------------------------------------------------- 6. refusing GPU kernels up front


def test_a_gpu_kernel_without_a_gpu_is_refused_before_the_store_exists(monkeypatch, capsys, tmp_path):
    def no_gpu(lang: str, compiler: str, name: str) -> None:
        if lang != "C":
            raise InvalidInputError(f"kernel {name!r} runs on a CUDA GPU, but torch sees none on this machine")

    monkeypatch.setattr(_registry, "_check_runtime", no_gpu)
    code, out, err = run_main(monkeypatch, capsys, "collect", "kernel", "--kernel", "matmul_triton", "--store",
                              str(tmp_path / "kbad"))
    assert_one_line_error(code, out, err, "matmul_triton")
    assert "config(s)" not in out + err and not (tmp_path / "kbad").exists()


def test_too_many_threads_are_refused_before_the_store_exists(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(_kernel, "usable_cpus", lambda: 1)
    code, out, err = run_main(monkeypatch, capsys, "collect", "kernel", "--kernel", "sgemm", "--size", "test",
                              "--store", str(tmp_path / "k"))
    assert_one_line_error(code, out, err, "but got threads=2")
    assert not (tmp_path / "k").exists()
