"""Serving load generator pieces without any server: stream arithmetic, arrivals, lengths, SLOs, rate search."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from perfpred.collect.serving import (
    BURST_TPOT_MS,
    LengthDist,
    RequestResult,
    ServingWorkload,
    Slo,
    StreamTimer,
    find_sustainable_rate,
    get_engine,
    parse_prometheus,
    summarize,
)
from perfpred.collect.serving._collector import _cross_check
from perfpred.collect.serving._loadgen import StopEarly, _n_late, _read_stream
from perfpred.errors import InvalidInputError


def _scripted(events, start=10.0, usage=None, end=None):
    """A RequestResult from (time_s, tokens_in_chunk) events."""
    timer = StreamTimer(RequestResult(index=0, prompt_tokens=8, max_tokens=10), start)
    for t, n in events:
        timer.chunk(t, n)
    if usage is not None:
        timer.usage(usage)
    return timer.finish(end if end is not None else events[-1][0])


def test_ttft_itl_tpot_on_a_scripted_stream():
    # first chunk at +100 ms, then chunks 20 ms apart, one of them a bunch of 3 tokens
    r = _scripted([(10.100, 1), (10.120, 1), (10.140, 3), (10.160, 1)], usage=6, end=10.200)
    assert r.ok and r.error is None
    assert r.ttft_ms == pytest.approx(100.0)
    assert r.itl_ms == pytest.approx([20.0, 20.0, 20.0])
    assert r.e2e_ms == pytest.approx(200.0)
    assert r.output_tokens == 6  # the server's usage count, not the 4 chunks
    assert r.tpot_ms == pytest.approx((200.0 - 100.0) / 5)


def test_tokens_fall_back_to_chunk_counts_and_one_token_has_no_tpot():
    r = _scripted([(1.01, 2), (1.02, 2)], start=1.0)
    assert r.output_tokens == 4 and r.tpot_ms == pytest.approx((20.0 - 10.0) / 3)
    one = _scripted([(1.05, 1)], start=1.0, usage=1)
    assert one.ok and one.tpot_ms is None


def test_a_stream_without_tokens_is_an_error():
    timer = StreamTimer(RequestResult(index=0, prompt_tokens=1, max_tokens=1), 0.0)
    r = timer.finish(0.5)
    assert not r.ok and "without any token" in r.error


class _Content:
    def __init__(self, lines):
        self.lines = lines

    def __aiter__(self):
        async def gen():
            for line in self.lines:
                yield line

        return gen()


class _Response:
    def __init__(self, lines):
        self.content = _Content(lines)


def _parse(lines):
    timer = StreamTimer(RequestResult(index=0, prompt_tokens=1, max_tokens=4), 0.0)
    clock = iter(np.arange(1, 100) * 0.01)
    asyncio.run(_read_stream(_Response(lines), timer, lambda: float(next(clock))))
    return timer.finish(1.0)


def _data(obj):
    return b"data: " + json.dumps(obj).encode() + b"\n"


def _stream(texts, usage):
    return [*(_data({"choices": [{"text": t, "finish_reason": None}]}) for t in texts), b"\n",
            _data({"choices": [{"text": "", "finish_reason": "length"}]}),
            _data({"choices": [], "usage": {"completion_tokens": usage}}), b"data: [DONE]\n"]


def test_stream_parser_counts_tokens_and_ignores_the_finish_marker():
    # llama-server: one token a chunk, then an empty chunk that only ends the stream
    r = _parse(_stream(["a", "b", "c"], usage=3))
    assert r.ok and r.n_chunks == 3 and r.output_tokens == 3
    assert r.ttft_ms == pytest.approx(10.0) and r.itl_ms == pytest.approx([10.0, 10.0])


@pytest.mark.parametrize(("texts", "usage", "n_chunks", "itl_ms"), [
    ([], 1, 1, []),  # a 1-token answer whose text vLLM held back: ok, not "no token"
    # after a bunched chunk the usage exceeds the chunks whether or not the finish chunk carried
    # a token: it adds no gap of its own (a ~0 ms ITL if it did not)
    (["a", "bc"], 4, 2, [10.0]),
])
def test_an_empty_finish_chunk_is_a_token_only_for_an_answer_with_no_other(texts, usage, n_chunks, itl_ms):
    # vLLM sends its last token's chunk with empty text when it holds back a partial UTF-8 byte
    # or skips a special token; the usage says the chunk carried a token.
    r = _parse(_stream(texts, usage))
    assert r.ok and r.output_tokens == usage and r.n_chunks == n_chunks
    assert r.ttft_ms == pytest.approx(10.0) and r.itl_ms == pytest.approx(itl_ms)


@pytest.mark.parametrize(("lines", "message"), [
    ([_data({"choices": [{"text": "a"}]}), b'data: {"choices": [{"text": "oo\n'], "not JSON"),
    ([b"event: x\n"], "without 'data:'"),
    ([_data({"choices": [{"text": "a"}]})], "before [DONE]"),
    ([_data({"error": {"message": "slot unavailable"}})], "slot unavailable"),
])
def test_stream_parser_flags_malformed_streams(lines, message):
    r = _parse(lines)
    assert not r.ok and message in r.error


def test_poisson_arrivals_are_seeded_and_have_the_asked_rate():
    w = ServingWorkload(n_requests=4000, rate_rps=8.0, seed=3, prompt_tokens=4, output_tokens=2)
    offsets = [r.send_at_s for r in w.requests(100)]
    again = [r.send_at_s for r in w.requests(100)]
    other = [r.send_at_s for r in ServingWorkload(n_requests=4000, rate_rps=8.0, seed=4).requests(100)]
    assert offsets == again and offsets != other and offsets[0] == 0.0
    gaps = np.diff(offsets)
    assert gaps.mean() == pytest.approx(1 / 8.0, rel=0.05)
    assert gaps.std() == pytest.approx(1 / 8.0, rel=0.08)  # exponential: std == mean
    # arrivals do not move when only the length distributions change
    longer = ServingWorkload(n_requests=4000, rate_rps=8.0, seed=3, prompt_tokens=LengthDist.uniform(4, 64))
    assert [r.send_at_s for r in longer.requests(100)] == offsets


def test_requests_have_the_asked_lengths_and_avoid_special_tokens():
    w = ServingWorkload(n_requests=50, concurrency=2, prompt_tokens=LengthDist.uniform(5, 9), output_tokens=7)
    reqs = w.requests(64)
    assert all(5 <= len(r.prompt_ids) <= 9 and r.output_tokens == 7 and r.send_at_s is None for r in reqs)
    assert min(min(r.prompt_ids) for r in reqs) >= 3 and max(max(r.prompt_ids) for r in reqs) < 64
    assert len(w.requests(64, warmup=True)) == w.warmup_requests


def test_lengths_from_a_trace_file(tmp_path):
    csv = tmp_path / "trace.csv"
    csv.write_text("input_len,output_len\n10,5\n20,6\n30,7\n")
    dist = LengthDist.from_trace(csv, "input_len")
    assert dist.values == (10, 20, 30) and dist.max == 30 and dist.label().startswith("trace:trace#")
    assert set(dist.sample(np.random.default_rng(0), 50)) <= {10, 20, 30}
    jsonl = tmp_path / "trace.jsonl"
    jsonl.write_text('{"output_len": 3}\n{"output_len": 4}\n')
    assert LengthDist.from_trace(jsonl, "output_len").values == (3, 4)
    with pytest.raises(InvalidInputError, match="output_len"):
        LengthDist.from_trace(csv, "missing_column")


@pytest.mark.parametrize(("kwargs", "rule"), [
    ({"rate_rps": 1.0, "concurrency": 2}, "exactly one of"),
    ({}, "exactly one of"),
    ({"rate_rps": -1.0}, "rate_rps > 0"),
    ({"concurrency": 0}, "concurrency >= 1"),
    ({"concurrency": 1, "prompt_tokens": 0}, "prompt_tokens >= 1"),
    ({"concurrency": 1, "output_tokens": LengthDist.uniform(9, 3)}, "output_tokens.low"),
    ({"concurrency": 1, "n_requests": 0}, "n_requests >= 1"),
])
def test_bad_workloads_give_one_line_errors(kwargs, rule):
    with pytest.raises(InvalidInputError, match="must") as err:
        ServingWorkload(**kwargs).validate()
    assert rule in str(err.value) and "\n" not in str(err.value)


def test_summary_percentiles_throughput_and_goodput():
    results = []
    for i in range(10):
        r = _scripted([(0.01 * (i + 1), 1), (0.01 * (i + 1) + 0.005, 1)], start=0.0, usage=2,
                      end=0.01 * (i + 1) + 0.005)
        r.index = i
        results.append(r)
    failed = RequestResult(index=10, prompt_tokens=8, max_tokens=10, error="HTTP 500: boom")
    metrics = summarize([*results, failed], duration_s=2.0, slo=Slo(ttft_ms=50.0))
    assert metrics["n_requests"] == 11 and metrics["n_errors"] == 1
    assert metrics["ttft_p50_ms"] == pytest.approx(np.percentile([10.0 * (i + 1) for i in range(10)], 50))
    assert metrics["tpot_p50_ms"] == pytest.approx(5.0)
    assert metrics["requests_per_s"] == pytest.approx(10 / 2.0)
    assert metrics["output_tokens_per_s"] == pytest.approx(20 / 2.0)
    assert metrics["goodput_requests_per_s"] == pytest.approx(5 / 2.0)  # ttft 10..50 ms meet the bound
    assert {"itl_p95_ms", "e2e_p99_ms", "avg_output_len_tokens"} <= set(metrics)


def test_burst_frac_counts_responses_delivered_at_once_not_decoded_apace():
    paced = _scripted([(0.100, 1), (0.110, 1), (0.120, 1)], start=0.0, usage=3)  # 10 ms a token
    # a server behind on its HTTP side: 24 tokens in chunks 10 us apart, 300 ms after the request
    burst = _scripted([(0.300 + 1e-5 * i, 1) for i in range(24)], start=0.0, usage=24)
    assert burst.tpot_ms < BURST_TPOT_MS < paced.tpot_ms
    assert burst.in_one_burst and burst.decode_tpot_ms is None and paced.decode_tpot_ms == paced.tpot_ms
    metrics = summarize([paced, burst, burst, burst], duration_s=1.0, slo=Slo(ttft_ms=1000.0, tpot_ms=5.0))
    assert metrics["burst_frac"] == pytest.approx(0.75)
    # the TPOT quantiles time decoding: the paced response alone, not three near-zero bursts
    assert metrics["tpot_p50_ms"] == metrics["tpot_p99_ms"] == pytest.approx(paced.tpot_ms)
    # a burst breaks no TPOT bound by itself (its ~e2e TTFT is judged); the paced one at 10 ms breaks 5 ms
    assert metrics["goodput_requests_per_s"] == pytest.approx(3.0)
    assert Slo(tpot_ms=5.0).violations([paced, burst]) == ["p99 tpot_ms 10.0 > 5"]
    assert Slo(tpot_ms=5.0).violations([burst, burst]) == []  # all at once: no token after the first was waited for
    assert Slo(ttft_ms=200.0).violations([burst]) == ["p99 ttft_ms 300.0 > 200"]  # but the wait for the burst counts
    all_burst = summarize([burst, burst], duration_s=1.0)
    assert all_burst["burst_frac"] == 1.0 and "tpot_p50_ms" not in all_burst
    assert summarize([paced], duration_s=1.0)["burst_frac"] == 0.0


def test_one_token_answers_break_no_tpot_bound():
    # No token after the first: nothing to time, nothing waited for (as for a burst); goodput agrees.
    single = _scripted([(0.050, 1)], start=0.0, usage=1)
    assert single.ok and single.tpot_ms is None
    slo = Slo(ttft_ms=100.0, tpot_ms=5.0)
    assert slo.violations([single, single]) == []
    metrics = summarize([single, single], duration_s=1.0, slo=slo)
    assert "tpot_p99_ms" not in metrics and slo.metric_violations(metrics) == []
    assert metrics["goodput_requests_per_s"] == pytest.approx(2.0)
    assert Slo(tpot_ms=5.0).metric_violations({"error_rate": 0.0}) == ["tpot_p99_ms None > 5"]  # nothing measured


def test_the_engines_own_latency_means_come_from_histogram_sums_and_counts():
    before = {"vllm:request_time_per_output_token_seconds_sum": 1.0,
              "vllm:request_time_per_output_token_seconds_count": 10.0,
              "vllm:time_to_first_token_seconds_sum": 2.0, "vllm:time_to_first_token_seconds_count": 10.0}
    after = {"vllm:request_time_per_output_token_seconds_sum": 1.3,  # 10 more requests at 30 ms a token
             "vllm:request_time_per_output_token_seconds_count": 20.0,
             "vllm:time_to_first_token_seconds_sum": 2.0, "vllm:time_to_first_token_seconds_count": 10.0}
    out = _cross_check(get_engine("vllm"), before, after, [])
    assert out["server_tpot_mean_ms"] == pytest.approx(30.0)
    assert "server_ttft_mean_ms" not in out  # no request finished its first token in the run: no mean
    assert "server_itl_mean_ms" not in out  # absent from both scrapes
    llama = {"llamacpp:tokens_predicted_seconds_total": 0.5, "llamacpp:tokens_predicted_total": 100.0}
    out = _cross_check(get_engine("llama-server"), {k: 0.0 for k in llama}, llama, [])
    assert out["server_tpot_mean_ms"] == pytest.approx(5.0)


def test_slo_violations_name_the_bound():
    ok = [_scripted([(0.1, 1), (0.2, 1)], start=0.0, usage=2)]
    assert Slo(ttft_ms=200.0).violations(ok) == []
    assert Slo(ttft_ms=50.0).violations(ok) == ["p99 ttft_ms 100.0 > 50"]
    with pytest.raises(InvalidInputError, match=r"slo\.ttft_ms > 0"):
        Slo(ttft_ms=-1.0).validate()


def test_prometheus_text_sums_label_sets_and_skips_junk():
    text = """# HELP vllm:request_success_total Count
# TYPE vllm:request_success_total counter
vllm:request_success_total{finished_reason="length",model_name="m"} 7.0
vllm:request_success_total{finished_reason="stop",model_name="m"} 3.0
llamacpp:tokens_predicted_total 1234
garbage line here
llamacpp:n_busy_slots_per_decode 1.5 1700000000
bad_value NaN
"""
    values = parse_prometheus(text)
    assert values["vllm:request_success_total"] == 10.0
    assert values["llamacpp:tokens_predicted_total"] == 1234.0
    assert values["llamacpp:n_busy_slots_per_decode"] == 1.5
    assert "bad_value" not in values and "garbage" not in values


def test_rate_search_brackets_then_bisects_within_the_probe_budget():
    capacity = 7.3
    calls = []

    def probe(rate):
        calls.append(rate)
        return rate <= capacity, [] if rate <= capacity else ["p99 e2e too high"]

    search = find_sustainable_rate(probe, start_rps=1.0, max_probes=12, rel_tol=0.05)
    assert search.rate_rps <= capacity < search.failed_rps
    assert search.failed_rps / search.rate_rps <= 1.05
    assert calls[:4] == [1.0, 2.0, 4.0, 8.0] and len(calls) <= 12
    few = find_sustainable_rate(probe, start_rps=1.0, max_probes=3)
    assert len(few.probes) == 3 and few.rate_rps == 4.0 and few.failed_rps is None


def test_rate_search_goes_down_and_reports_none_when_nothing_passes():
    down = find_sustainable_rate(lambda r: (r <= 0.3, []), start_rps=2.0, max_probes=10, rel_tol=0.1)
    assert down.probes[1].rate_rps == 1.0 and 0.27 <= down.rate_rps <= 0.3
    never = find_sustainable_rate(lambda r: (False, ["errors"]), start_rps=1.0, min_rps=0.25, max_probes=10)
    assert never.rate_rps is None and [p.rate_rps for p in never.probes] == [1.0, 0.5, 0.25]
    with pytest.raises(InvalidInputError, match="min_rps <= start_rps"):
        find_sustainable_rate(lambda r: (True, []), start_rps=0.01, min_rps=0.1)


@pytest.mark.parametrize("quantile", [50.0, 90.0, 99.0])
def test_an_early_stop_count_of_late_requests_decides_the_quantile(quantile):
    # With that many requests over the bound, numpy's quantile over all of them is over it too,
    # however fast the others were; and the count stays near the share the quantile leaves over.
    for n in range(1, 400):
        late = StopEarly.for_quantile(100.0, quantile, n).max_late
        values = np.r_[np.zeros(n - late), np.full(late, 100.0 + 1e-6)]
        assert np.percentile(values, quantile) > 100.0, n
        assert late >= 1 and late <= n * (1 - quantile / 100) + 2
    assert StopEarly.for_quantile(2000.0, 99.0, 1600).max_late == 17


def test_late_requests_count_whether_or_not_their_first_token_came():
    done_late, done_fast, waiting, ended_without_token = (RequestResult(index=i, prompt_tokens=1, max_tokens=2)
                                                          for i in range(4))
    done_late.ttft_ms, done_fast.ttft_ms = 300.0, 10.0
    ended_without_token.e2e_ms = 500.0  # failed without a token: an error, not a late first token
    sent = {0: (0.0, done_late), 1: (0.0, done_fast), 2: (0.0, waiting), 3: (0.0, ended_without_token)}
    assert _n_late(sent, ttft_ms=200.0, now=0.1) == 1  # the waiting one is 100 ms in
    assert _n_late(sent, ttft_ms=200.0, now=0.25) == 2  # ... and now 250 ms
