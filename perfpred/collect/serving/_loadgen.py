"""The load generator: an asyncio + aiohttp client of OpenAI-compatible ``/v1/completions`` streams.

Open loop (``rate_rps``): requests leave at seeded Poisson offsets whether or not earlier
ones finished, as real users arrive. Closed loop (``concurrency``): that many workers each
send their next request as soon as the last one ends. The client is one thread and one
event loop, and does nothing per chunk beyond a timestamp and a small JSON parse, because on
a 2-core machine it competes with the server for CPU; its own CPU time is measured and
reported (``client_cpu_s``) so a run that starved the server can be recognised.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from perfpred.collect.serving._stats import RequestResult, StreamTimer
from perfpred.collect.serving._workload import RequestSpec, ServingWorkload
from perfpred.errors import MissingDependencyError


@dataclass
class LoadResult:
    results: list[RequestResult]
    duration_s: float  # first send to last completion
    client_cpu_s: float  # CPU time of this process during the run (all threads)


def _aiohttp() -> Any:
    try:
        import aiohttp
    except ImportError as exc:
        raise MissingDependencyError("the serving load generator needs the [serving] extra (aiohttp): "
                                     "pip install 'perfpred[serving]'") from exc
    return aiohttp


def _payload(spec: RequestSpec, model_name: str, extra: dict[str, Any] | None) -> dict[str, Any]:
    body = {"model": model_name, "prompt": spec.prompt_ids, "max_tokens": spec.output_tokens, "stream": True,
            "temperature": 0.0, "ignore_eos": True, "stream_options": {"include_usage": True}}
    body.update(extra or {})
    return body


def _counts_as_token(choice: dict[str, Any]) -> bool:
    # An empty-text chunk that only carries finish_reason ends the stream; it is no token.
    text = choice.get("text")
    return bool(text) or (text is not None and choice.get("finish_reason") is None)


async def _read_stream(response: Any, timer: StreamTimer, clock: Callable[[], float]) -> None:
    """Parse ``data: ...`` lines until ``[DONE]``; a broken line or an error object fails the request."""
    result = timer.result
    done = finished = False
    async for raw in response.content:
        line = raw.strip()
        if not line or line.startswith(b":"):
            continue
        if not line.startswith(b"data:"):
            result.error = f"malformed stream: a line without 'data:': {line[:80]!r}"
            return
        data = line[5:].strip()
        if data == b"[DONE]":
            done = True
            break
        try:
            obj = json.loads(data)
        except ValueError:
            result.error = f"malformed stream: a chunk that is not JSON: {data[:80]!r}"
            return
        if not isinstance(obj, dict):
            result.error = f"malformed stream: a chunk that is not an object: {data[:80]!r}"
            return
        if obj.get("error"):
            result.error = f"error in stream: {str(obj['error'])[:200]}"
            return
        choices = obj.get("choices") or []
        if choices and isinstance(choices[0], dict):
            if _counts_as_token(choices[0]):
                timer.chunk(clock())
            finished = finished or choices[0].get("finish_reason") is not None
        usage = obj.get("usage")
        if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
            timer.usage(usage["completion_tokens"])
    if not (done or finished):
        result.error = "stream ended before [DONE] (server closed the connection)"


async def _one(session: Any, url: str, spec: RequestSpec, model_name: str, t0: float, timeout_s: float,
               extra: dict[str, Any] | None) -> RequestResult:
    aiohttp = _aiohttp()
    clock = time.perf_counter
    result = RequestResult(index=spec.index, prompt_tokens=len(spec.prompt_ids), max_tokens=spec.output_tokens)
    start = clock()
    result.sent_s = start - t0
    timer = StreamTimer(result, start)
    try:
        async with asyncio.timeout(timeout_s):
            async with session.post(url, json=_payload(spec, model_name, extra)) as response:
                result.http_status = response.status
                if response.status != 200:
                    body = (await response.text())[:200].replace("\n", " ")
                    result.error = f"HTTP {response.status}: {body}"
                else:
                    await _read_stream(response, timer, clock)
    except TimeoutError:
        result.error = f"timeout: no complete response within {timeout_s:g} s"
    except aiohttp.ClientError as exc:
        result.error = f"connection: {type(exc).__name__}: {str(exc)[:200]}"
    except OSError as exc:
        result.error = f"connection: {exc}"
    return timer.finish(clock())


async def _run(base_url: str, specs: list[RequestSpec], workload: ServingWorkload, model_name: str,
               concurrency: int | None, extra: dict[str, Any] | None) -> tuple[list[RequestResult], float]:
    aiohttp = _aiohttp()
    url = base_url.rstrip("/") + "/v1/completions"
    # A fresh connection per request: llama-server's HTTP library closes a kept-alive connection
    # after a few requests, and a pooled socket the server already closed fails the next request.
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    results: list[RequestResult] = []
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as session:
        t0 = time.perf_counter()
        if concurrency is None:  # open loop: each request at its own offset
            async def at_offset(spec: RequestSpec) -> RequestResult:
                delay = (spec.send_at_s or 0.0) - (time.perf_counter() - t0)
                if delay > 0:
                    await asyncio.sleep(delay)
                return await _one(session, url, spec, model_name, t0, workload.request_timeout_s, extra)

            results = list(await asyncio.gather(*(at_offset(s) for s in specs)))
        else:  # closed loop: `concurrency` workers drain one queue
            queue = list(reversed(specs))

            async def worker() -> None:
                while queue:
                    spec = queue.pop()
                    results.append(await _one(session, url, spec, model_name, t0, workload.request_timeout_s,
                                              extra))

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        ends = [r.sent_s + (r.e2e_ms or 0.0) / 1e3 for r in results]
        duration_s = max(ends, default=0.0)
    results.sort(key=lambda r: r.index)
    return results, duration_s


def _run_coroutine(coro: Any) -> Any:
    """asyncio.run, also from code that already runs an event loop (a notebook): then in a thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def run_load(base_url: str, workload: ServingWorkload, *, model_name: str, vocab_tokens: int,
             warmup: bool = False, extra_body: dict[str, Any] | None = None) -> LoadResult:
    """Send the workload's requests (or its warm-up requests) and time each one."""
    workload.validate()
    specs = workload.requests(vocab_tokens, warmup=warmup)
    if not specs:
        return LoadResult([], 0.0, 0.0)
    concurrency = workload.concurrency
    if warmup:  # warm-up requests go a few at a time, to touch the batched paths too
        concurrency = min(len(specs), workload.concurrency or 2)
    cpu0 = time.process_time()
    results, duration_s = _run_coroutine(_run(base_url, specs, workload, model_name, concurrency, extra_body))
    return LoadResult(results, duration_s, time.process_time() - cpu0)


def get_text(url: str, timeout_s: float = 5.0) -> tuple[int, str]:
    """A plain GET (health, metrics): status and body; status 0 when nothing answered."""
    import urllib.error
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1 never goes via a proxy
    try:
        with opener.open(url, timeout=timeout_s) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        with contextlib.suppress(OSError):
            return exc.code, exc.read().decode(errors="replace")
        return exc.code, ""
    except (urllib.error.URLError, OSError, ValueError):
        return 0, ""
