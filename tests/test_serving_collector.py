"""The serving collector against a fake OpenAI-compatible server: rows, failures as statuses, no orphans."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

pytest.importorskip("aiohttp")

from perfpred.collect._power import PowerObserver, PowerReading
from perfpred.collect.serving import (
    BURST_TPOT_MS,
    EngineStartError,
    LlamaServerEngine,
    ServingCollector,
    ServingConfig,
    ServingWorkload,
    Slo,
    describe_model,
    get_engine,
)
from perfpred.collect.serving._collector import wait_until_idle
from perfpred.collect.serving._process import group_alive
from perfpred.datasets import MeasurementStore
from perfpred.errors import InvalidInputError

HARDWARE = {"hardware_id": "cpu-test-0000000001", "hardware_name": "test cpu"}
SMALL = ServingWorkload(n_requests=12, concurrency=3, prompt_tokens=16, output_tokens=8, warmup_requests=1)


def make_collector(tmp_path) -> ServingCollector:
    """A collector on the test hardware that logs under ``tmp_path`` (the fake engine starts fast)."""
    return ServingCollector(hardware=HARDWARE, log_dir=tmp_path / "logs", startup_timeout_s=10.0)


def fake_config(workload: ServingWorkload, **knobs) -> ServingConfig:
    """The fake engine (1 ms a token unless ``token_ms`` says otherwise) under ``workload``."""
    return ServingConfig("fake", {"token_ms": 1.0, **knobs}, workload)


@pytest.fixture
def collector(tmp_path):
    return make_collector(tmp_path)


def _fake(workload=SMALL, **knobs):
    return fake_config(workload, **knobs)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie waiting for its reaper is gone for our purposes
        return fh.read().rsplit(")", 1)[1].split()[0] != "Z"


def _wait_gone(pid: int, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_a_healthy_run_gives_an_ok_row_whose_counts_match_the_server(collector):
    m = collector.measure(_fake(bunch=4, token_ms=3.0))
    assert m.kind == "serving" and m.status == "ok" and m.error is None
    assert m.power_source == collector.power.source  # this machine's sensor, or none
    assert (m.power_w is None) == (m.power_source == "unavailable")
    assert m.metrics["n_ok"] == 12 and m.metrics["server_requests"] == 12
    assert m.metrics["server_output_tokens"] == m.metrics["client_output_tokens"] == 12 * 8
    assert m.metrics["server_counts_match"] == 1.0
    # 4 tokens per chunk: the gaps between chunks are ~4 steps, the per-token pace stays ~1 step
    assert m.metrics["itl_p50_ms"] > 2.5 * m.metrics["tpot_p50_ms"]
    assert m.metrics["tpot_p50_ms"] == pytest.approx(3.0 * 1.2, rel=0.5)  # 3 ms x batch penalty, loose on a busy box
    assert m.runtime_ms == pytest.approx(m.metrics["e2e_p50_ms"]) and len(m.raw_times_ms) == 12
    assert m.workload["concurrency"] == 3 and m.workload["prompt_tokens"] == 16 and m.workload["n_params"] > 0
    assert m.config["engine"] == "fake" and m.config["max_num_seqs"] == 4
    assert m.metrics["client_cpu_s"] >= 0 and m.metrics["startup_ms"] > 0
    assert m.software["engine_version"] == "fake-1"


class SteadyPower(PowerObserver):
    """A test double of a power sensor: a constant draw, energy = watts x the observed seconds."""

    source = "rapl"

    def __init__(self, watts: float) -> None:
        self.watts = watts

    def start(self) -> None:
        self.t0 = time.perf_counter()

    def stop(self) -> PowerReading:
        seconds = time.perf_counter() - self.t0
        return PowerReading("rapl", power_w=self.watts, energy_j=self.watts * seconds, duration_s=seconds)


def test_a_power_sensor_gives_each_row_its_energy_and_tokens_per_joule(tmp_path):
    collector = ServingCollector(hardware=HARDWARE, log_dir=tmp_path / "logs", power=SteadyPower(40.0))
    m = collector.measure(_fake(token_ms=2.0))
    assert m.status == "ok" and m.power_source == "rapl" and m.power_w == 40.0
    tokens = m.metrics["client_output_tokens"]
    assert m.metrics["output_tokens_per_j"] == pytest.approx(tokens / m.energy_j)
    assert m.metrics["energy_per_output_token_j"] == pytest.approx(m.energy_j / tokens)
    # the sensor watched the measured load only, not the server's start-up (~0.14 s here) or warm-up
    load_s = m.workload["n_requests"] / m.metrics["requests_per_s"]
    assert 40.0 * load_s <= m.energy_j <= 40.0 * (load_s + 0.1)


def test_a_response_sent_in_one_burst_reads_as_a_burst_and_keeps_the_servers_own_pace(collector):
    # The whole response arrives at once: the client's TPOT collapses to ~0, the server's stays a step.
    # (32 tokens: the client's own ~0.03 ms a chunk, or a stall of its event loop, stays under the bound.)
    workload = ServingWorkload(n_requests=12, concurrency=3, prompt_tokens=16, output_tokens=32, warmup_requests=1)
    m = collector.measure(_fake(workload, token_ms=3.0, burst=True))
    assert m.status == "ok"
    assert m.metrics["burst_frac"] >= 11 / 12
    # the bursts time no decoding, so they stay out of the TPOT quantiles (absent when all burst)
    assert m.metrics.get("tpot_p50_ms", BURST_TPOT_MS) >= BURST_TPOT_MS
    assert ("tpot_p50_ms" in m.metrics) == (m.metrics["burst_frac"] < 1.0)
    assert m.metrics["server_tpot_mean_ms"] >= 3.0  # each step sleeps 3 ms x the batch penalty (>= 1)
    paced = collector.measure(_fake(workload, token_ms=3.0))
    assert paced.metrics["burst_frac"] == 0.0 and paced.metrics["server_tpot_mean_ms"] >= 3.0


def test_open_loop_rows_record_the_rate_and_goodput(tmp_path):
    collector = ServingCollector(hardware=HARDWARE, log_dir=tmp_path, slo=Slo(ttft_ms=1000.0, e2e_ms=5000.0))
    w = ServingWorkload(n_requests=10, rate_rps=50.0, prompt_tokens=8, output_tokens=4, warmup_requests=0)
    m = collector.measure(_fake(w))
    assert m.status == "ok" and m.workload["arrival"] == "poisson" and m.workload["rate_rps"] == 50.0
    assert m.metrics["goodput_requests_per_s"] == pytest.approx(m.metrics["requests_per_s"])


def test_http_500s_are_counted_errors_not_a_crash(collector):
    m = collector.measure(_fake(http_500_every=3))
    assert m.status == "ok"  # the server stayed up and most requests worked
    assert m.metrics["n_errors"] == 4 and "HTTP 500" in m.error
    assert m.metrics["n_ok"] == 8


def test_a_malformed_stream_fails_that_request(collector):
    m = collector.measure(_fake(malformed_every=4))
    assert m.metrics["n_errors"] >= 2 and "malformed stream" in m.error


def test_a_server_dying_mid_run_gives_a_runtime_error_row_with_its_log(collector):
    m = collector.measure(_fake(die_after_requests=5, spawn_child=True, token_ms=5.0))
    assert m.status == "runtime_error"
    assert "exited with code 3 during the load test" in m.error and "server log tail" in m.error
    assert m.runtime_ms is None and m.metrics["n_errors"] >= 1


@pytest.mark.parametrize(("knobs", "status", "text"), [
    ({"never_healthy": True}, "timeout", "did not become healthy within 1.5 s"),
    ({"oom_at_start": True}, "oom", "failed to allocate"),
    ({"exit_at_start": "error: invalid argument: --bogus"}, "invalid", "invalid argument"),
    ({"exit_at_start": "segmentation fault"}, "runtime_error", "segmentation fault"),
])
def test_start_failures_become_rows_with_a_status(tmp_path, knobs, status, text):
    collector = ServingCollector(hardware=HARDWARE, log_dir=tmp_path, startup_timeout_s=1.5)
    m = collector.measure(_fake(**knobs))
    assert m.status == status and text in m.error
    assert m.runtime_ms is None and m.raw_times_ms == []


def test_a_slow_start_within_the_timeout_is_fine(collector):
    m = collector.measure(_fake(startup_delay_s=0.6))
    assert m.status == "ok" and m.metrics["startup_ms"] >= 600


def test_unknown_knobs_and_impossible_values_are_one_line_errors():
    with pytest.raises(InvalidInputError, match="unknown knob `slotz` for engine 'fake'") as err:
        ServingConfig("fake", {"slotz": 2}).validate()
    assert "\n" not in str(err.value)
    with pytest.raises(InvalidInputError, match=r"knob `slots >= 1` must hold, but got slots=0"):
        ServingConfig("fake", {"slots": 0}).validate()
    with pytest.raises(InvalidInputError, match="`engine` must be one of"):
        ServingConfig("sglang", {}).validate()


@pytest.mark.parametrize(("knobs", "rule"), [
    ({"ubatch_size": 1024, "batch_size": 512}, "`ubatch_size <= batch_size` must hold, but got ubatch_size=1024"),
    ({"np": 0}, "knob `parallel >= 1` must hold, but got parallel=0"),
    ({"parallel": 8, "ctx_size": 4}, "`ctx_size >= parallel` must hold"),
    ({"ctv": "q8_0", "fa": "off"}, "a quantised V cache needs flash attention"),
    ({"cache_type_k": "q3"}, "knob `cache_type_k` must be one of"),
    ({"cont_batching": "yes"}, "knob `cont_batching` must be true or false"),
    ({"parallel": 8, "ctx_size": 512}, "context per slot >= longest prompt + output"),
    ({"np": 2, "parallel": 2}, "given twice"),
])
def test_llama_server_knob_rules(knobs, rule):
    cfg = ServingConfig("llama-server", knobs, ServingWorkload(concurrency=1, prompt_tokens=64, output_tokens=32))
    with pytest.raises(InvalidInputError) as err:
        cfg.validate()
    assert rule in str(err.value) and "\n" not in str(err.value)


def test_llama_server_renders_a_ready_to_paste_command():
    engine = LlamaServerEngine(binary="/opt/llama/llama-server")
    line = engine.command_line({"np": 4, "b": 512, "ub": 128, "t": 2, "fa": "on", "ctk": "q8_0", "ctv": "q8_0",
                                "cont_batching": False}, describe_model("tiny"), port=8081)
    assert line.startswith("/opt/llama/llama-server --model ") and "model.gguf" in line
    for part in ("--parallel 4", "--batch-size 512", "--ubatch-size 128", "--threads 2", "--threads-batch 2",
                 "--flash-attn on", "--cache-type-k q8_0", "--cache-type-v q8_0", "--no-cont-batching",
                 "--no-kv-unified", "--metrics", "--host 127.0.0.1", "--port 8081"):
        assert part in line, part


def test_rows_go_to_the_store_one_by_one_and_resume(tmp_path, collector):
    store = MeasurementStore(tmp_path / "store", create=True)
    configs = [_fake(slots=1), _fake(slots=2), _fake(oom_at_start=True)]
    report = collector.run(configs, store)
    assert report.measured == 3 and report.statuses == {"ok": 2, "oom": 1}
    assert len(store.part_files()) == 3  # one append per config: a crash keeps what was measured
    df = store.load(kind="serving")
    assert set(df["status"]) == {"ok", "oom"} and "metric.ttft_p50_ms" in df and "config.slots" in df
    again = collector.run(configs, store)
    assert again.skipped == 3 and again.measured == 0


def test_sustainable_rate_brackets_and_bisects_on_one_server(collector):
    cfg = _fake(ServingWorkload(concurrency=1, prompt_tokens=8, output_tokens=10, warmup_requests=1),
                slots=2, token_ms=4.0, batch_penalty=0.0)
    m = collector.sustainable_rate(cfg, Slo(e2e_ms=150.0), start_rps=4.0, max_probes=5, probe_duration_s=0.5,
                                   min_requests=6, max_requests=40)
    assert m.status == "ok", m.error
    rate = m.metrics["sustainable_rate_rps"]
    assert rate >= 4.0 and m.metrics["n_probes"] <= 5
    assert m.workload["search"] == "sustainable_rate" and m.workload["slo_e2e_p99_ms"] == 150.0
    assert "rate_rps" not in m.workload


def test_a_capacity_start_measures_the_closed_loop_rate_first_and_starts_below_it(collector):
    cfg = _fake(ServingWorkload(concurrency=1, prompt_tokens=8, output_tokens=10, warmup_requests=1),
                slots=2, token_ms=4.0, batch_penalty=0.0)
    # An SLO every probe meets: the search climbs from 0.8 x capacity by 1.25 per probe, so two
    # probes end exactly at the capacity the closed-loop run measured.
    m = collector.sustainable_rate(cfg, Slo(e2e_ms=60_000.0), start_rps=None, growth=1.25, max_probes=2,
                                   probe_duration_s=0.5, min_requests=4, max_requests=40, capacity_concurrency=4)
    assert m.status == "ok", m.error
    capacity = m.metrics["capacity_rps"]
    assert 5.0 < capacity < 200.0  # 2 slots x 10 steps of 4 ms: ~45 requests/s, less on a loaded machine
    assert m.metrics["sustainable_rate_rps"] == pytest.approx(capacity, rel=1e-9)
    assert m.metrics["n_probes"] == 2


def test_every_load_of_a_rate_search_sends_prompts_the_server_has_not_seen(collector, monkeypatch):
    # A repeated prompt is served from the engine's prompt cache and would inflate the rate.
    seeds = []
    measure_on = collector._measure_on

    def spy(server, cfg, engine, knobs, workload=None, workload_extra=None, stop_early=None):
        seeds.append((workload or cfg.workload).seed)
        return measure_on(server, cfg, engine, knobs, workload, workload_extra, stop_early)

    monkeypatch.setattr(collector, "_measure_on", spy)
    cfg = _fake(ServingWorkload(concurrency=1, prompt_tokens=8, output_tokens=4, warmup_requests=0, seed=7), slots=2)
    # growth 1.1: three probes (0.8, 0.88, 0.97 x capacity) stay below the capacity that caps the search
    collector.sustainable_rate(cfg, Slo(e2e_ms=60_000.0), start_rps=None, growth=1.1, max_probes=3,
                               probe_duration_s=0.3, min_requests=3, max_requests=20, capacity_concurrency=2)
    assert len(seeds) == 4 and len(set(seeds)) == 4


def test_every_load_of_a_rate_search_is_reported_as_its_own_row_at_its_rate(collector):
    cfg = _fake(ServingWorkload(concurrency=1, prompt_tokens=8, output_tokens=10, warmup_requests=1),
                slots=2, token_ms=4.0, batch_penalty=0.0)
    loads = []
    m = collector.sustainable_rate(cfg, Slo(e2e_ms=60_000.0), start_rps=None, growth=1.25, max_probes=3,
                                   probe_duration_s=0.3, min_requests=4, max_requests=40, capacity_concurrency=4,
                                   on_load=loads.append)
    assert m.status == "ok", m.error
    assert len(loads) == 1 + m.metrics["n_probes"]  # the capacity run, then each probe
    capacity, *probes = loads
    assert capacity.workload["concurrency"] == 4 and "rate_rps" not in capacity.workload
    assert [p.workload["rate_rps"] for p in probes] == pytest.approx(
        [0.8 * m.metrics["capacity_rps"] * 1.25 ** i for i in range(len(probes))])
    assert all(p.workload["search"] == "sustainable_rate_load" for p in loads)
    assert all(p.metrics["slo_met"] == 1.0 for p in probes)  # an SLO every probe meets
    assert probes[-1].metrics["ttft_p50_ms"] == m.metrics["ttft_p50_ms"]  # the search row is its best probe's
    # ... and still describes the search, not one probe's load.
    assert m.workload["search"] == "sustainable_rate" and "rate_rps" not in m.workload and "slo_met" not in m.metrics


def test_a_probe_that_misses_the_slo_is_reported_as_missed(collector):
    cfg = _fake(ServingWorkload(concurrency=1, prompt_tokens=8, output_tokens=10, warmup_requests=0),
                slots=1, token_ms=4.0)
    loads = []
    collector.sustainable_rate(cfg, Slo(e2e_ms=1.0), start_rps=4.0, max_probes=2, probe_duration_s=0.3,
                               min_requests=3, max_requests=10, on_load=loads.append)
    assert len(loads) == 2 and all(p.metrics["slo_met"] == 0.0 for p in loads)


def test_an_overloaded_probe_stops_once_its_ttft_bound_is_missed_and_the_server_drains_first(collector):
    # ~10 requests/s of capacity (1 slot, 5 tokens of 20 ms) offered 40/s for 3 s: run to the end,
    # the queue would take ~12 s; 3 requests waiting 300 ms already decide p99 TTFT > 300 ms.
    cfg = _fake(ServingWorkload(concurrency=1, prompt_tokens=4, output_tokens=5, warmup_requests=0),
                slots=1, token_ms=20.0)
    loads = []
    m = collector.sustainable_rate(cfg, Slo(ttft_ms=300.0), start_rps=40.0, growth=8.0, max_probes=2,
                                   probe_duration_s=3.0, min_requests=3, max_requests=200, on_load=loads.append)
    first, second = loads
    assert first.metrics["stopped_early"] == 1.0 and first.metrics["slo_met"] == 0.0
    # Its latencies are the fastest requests': no ok row for a latency model to learn from.
    assert first.status == "timeout" and "stopped early" in first.error and first.metrics["n_ok"] > 0
    assert first.metrics["n_not_sent"] > 0 and first.metrics["duration_s"] < 3.0
    assert 0.0 <= first.metrics["idle_wait_s"] < 60.0
    # The next probe (5/s, half the capacity) starts on a drained server and meets the bound.
    assert second.workload["rate_rps"] == pytest.approx(5.0) and second.metrics["slo_met"] == 1.0
    assert "stopped_early" not in second.metrics
    assert m.metrics["sustainable_rate_rps"] == pytest.approx(5.0)


def test_waiting_for_an_idle_server_reads_its_busy_gauges():
    class Server:
        engine = type("E", (), {"busy_gauges": ("running", "queued")})()
        scrapes = iter([{"running": 2.0, "queued": 5.0}, {"running": 1.0, "queued": 0.0},
                        {"running": 0.0, "queued": 0.0}])

        def alive(self):
            return True

        def metrics(self):
            return next(self.scrapes)

    server = Server()
    wait_until_idle(server, poll_s=0.01)
    assert next(server.scrapes, None) is None  # it read until both gauges were zero
    silent = Server()
    silent.scrapes = iter([{}])  # no gauges: no wait
    assert wait_until_idle(silent, poll_s=0.01) < 1.0


def test_a_capacity_run_that_fails_is_the_row_with_its_reason(collector):
    cfg = _fake(ServingWorkload(concurrency=1, prompt_tokens=8, output_tokens=10, warmup_requests=0),
                die_after_requests=3)
    m = collector.sustainable_rate(cfg, Slo(e2e_ms=1000.0), start_rps=None, capacity_concurrency=2,
                                   probe_duration_s=0.5)
    assert m.status != "ok"
    assert "the capacity run before the rate search failed" in m.error


# ---------------------------------------------------------------------------- no orphan survives


def test_leaving_the_with_block_by_an_exception_kills_the_whole_group(collector):
    cfg = _fake(spawn_child=True)
    with pytest.raises(RuntimeError, match="boom"), collector.start(cfg) as server:
        pid = server.process.pid
        assert server.alive() and group_alive(pid)
        raise RuntimeError("boom")
    assert _wait_gone(pid) and not group_alive(pid)


def test_a_start_timeout_leaves_no_process(tmp_path):
    engine = get_engine("fake")
    with pytest.raises(EngineStartError) as err:
        engine.start({"never_healthy": True, "spawn_child": True}, describe_model("tiny"), startup_timeout_s=1.0,
                     log_path=tmp_path / "server.log")
    assert err.value.status == "timeout"
    child_lines = [line for line in (tmp_path / "server.log").read_text().splitlines() if "child pid" in line]
    assert child_lines and _wait_gone(int(child_lines[0].rsplit(" ", 1)[1]))


_OWNER = textwrap.dedent("""
    import sys, time
    from perfpred.collect.serving import get_engine, describe_model
    server = get_engine("fake").start({"spawn_child": True}, describe_model("tiny"), log_path=sys.argv[2])
    print(server.process.pid, flush=True)
    if sys.argv[1] == "raise":
        raise SystemExit("the owner fails without stopping its server")
    time.sleep(600)
""")


@pytest.mark.parametrize("how", ["raise", "sigkill"])
def test_no_orphan_when_the_owner_process_dies(tmp_path, how):
    """atexit stops the server on an uncaught exit; PR_SET_PDEATHSIG covers a SIGKILL of the owner."""
    log = tmp_path / "server.log"
    owner = subprocess.Popen([sys.executable, "-c", _OWNER, how, str(log)], stdout=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        pid = int(owner.stdout.readline())
        child_lines = []
        deadline = time.monotonic() + 5
        while not child_lines and time.monotonic() < deadline:
            child_lines = [line for line in log.read_text().splitlines() if "child pid" in line]
            time.sleep(0.05)
        child = int(child_lines[0].rsplit(" ", 1)[1])
        if how == "sigkill":
            os.kill(owner.pid, signal.SIGKILL)
        owner.wait(20)
        assert _wait_gone(pid), "the server outlived its owner"
        assert _wait_gone(child), "the server's child outlived the owner"
    finally:
        if owner.poll() is None:
            os.killpg(owner.pid, signal.SIGKILL)
            owner.wait()


@pytest.mark.parametrize(("tail", "code", "status"), [
    ("ggml_backend_cpu_buffer_type_alloc_buffer: failed to allocate buffer of size 68719476736", 1, "oom"),
    ("ValueError: 2.0 GiB KV cache is needed, which is larger than the available KV cache memory (1.0 GiB)", 1, "oom"),
    ("", -9, "runtime_error"),  # a SIGKILL alone: `kill -9` or the OOM killer, no evidence which
    ("failed to allocate buffer for kv cache", -9, "oom"),  # ... with the evidence in its log
    ("error: invalid argument: --bogus", 1, "invalid"),
    ("ValueError: max_model_len (8192) is greater than the derived max_model_len (4096)", 1, "invalid"),
    ("Segmentation fault (core dumped)", -11, "runtime_error"),
])
def test_failure_classification_from_the_log(tail, code, status):
    from perfpred.collect.serving._engine import classify_failure

    assert classify_failure(tail, code) == status


def test_vllm_renders_env_and_flags_and_checks_its_scheduler_rules():
    from perfpred.collect.serving import VllmEngine

    engine = VllmEngine(python="/venv/bin/python")
    line = engine.command_line({"max_num_seqs": 8, "enable_prefix_caching": True, "kv_cache_space_gib": 4,
                                "tp": 1}, describe_model("tiny"), port=9000)
    assert line.startswith("DO_NOT_TRACK=1 HF_HUB_OFFLINE=1 ") and "VLLM_CPU_KVCACHE_SPACE=4" in line
    for part in ("/venv/bin/python -m vllm.entrypoints.openai.api_server", "--max-num-seqs 8",
                 "--enable-prefix-caching", "--enable-chunked-prefill", "--enforce-eager", "--dtype float32",
                 "--tensor-parallel-size 1", "--host 127.0.0.1", "--port 9000", "/hf"):
        assert part in line, part
    with pytest.raises(InvalidInputError, match="`max_num_batched_tokens >= max_num_seqs` must hold"):
        engine.resolve({"max_num_seqs": 64, "max_num_batched_tokens": 32})
    with pytest.raises(InvalidInputError, match="without chunked prefill"):
        engine.resolve({"enable_chunked_prefill": False, "max_num_batched_tokens": 512, "max_model_len": 2048})
    with pytest.raises(InvalidInputError, match="knob `gpu_memory_utilization <= 1` must hold"):
        engine.resolve({"gpu_memory_utilization": 1.5})
