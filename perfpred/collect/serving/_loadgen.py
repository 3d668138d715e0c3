"""The load generator: an asyncio + aiohttp client of OpenAI-compatible ``/v1/completions`` streams.

Open loop (``rate_rps``): requests leave at seeded Poisson offsets whether or not earlier
ones finished, as real users arrive. Closed loop (``concurrency``): that many workers each
send their next request as soon as the last one ends. The client is one thread and one
event loop, and does nothing per chunk beyond a timestamp and a small JSON parse, because on
a 2-core machine it competes with the server for CPU; its own CPU time is measured and
reported (``client_cpu_s``) so a run that starved the server can be recognised.

Given the server's ``alive`` check, the run also watches the server: once its process has exited,
or it refuses new connections (llama-server stops listening on SIGTERM and then holds the open
streams until they time out), the requests in flight fail at once with that reason and the rest
are never sent, instead of each waiting out its ``request_timeout_s``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from perfpred.collect.serving._stats import RequestResult, StreamTimer
from perfpred.collect.serving._workload import RequestSpec, ServingWorkload
from perfpred.errors import MissingDependencyError

# Each request sent so far: its send time (perf_counter s) and its result, filled in as it streams.
Sent = dict[int, tuple[float, RequestResult]]


@dataclass
class LoadResult:
    results: list[RequestResult]  # every request sent (an early stop leaves the rest unsent)
    duration_s: float  # first send to last completion
    client_cpu_s: float  # CPU time of this process during the run (all threads)
    stopped_early: bool = False
    n_not_sent: int = 0
    server_lost: str | None = None  # why the server stopped serving mid-run (exited / stopped listening)


@dataclass
class _Abort:
    """Why the requests still in flight were cancelled (the error each of them gets)."""

    reason: str = "cancelled"
    stopped_early: bool = False
    server_lost: str | None = None


# The error of a request the client cancelled because the run's TTFT bound was already missed.
STOPPED_EARLY = "stopped early: the run's TTFT bound was already missed"
# Seconds between checks of the server process, and between connection probes of its port.
WATCH_INTERVAL_S = 0.25
PROBE_INTERVAL_S = 0.5
PROBE_TIMEOUT_S = 2.0  # a probe's connect (and close) that takes longer: the server is busy, not gone
# Consecutive refused connections that mean the server stopped listening (not a blip).
REFUSALS_TO_GIVE_UP = 2


@dataclass(frozen=True)
class StopEarly:
    """Stop an open-loop run once ``max_late`` requests have waited longer than ``ttft_ms`` for
    their first token (whether it came or not): the run's TTFT quantile is then over the bound
    whatever the other requests do. The requests in flight are cancelled (errors "stopped
    early") and the ones not yet due are never sent.

    An overloaded llama-server on 2 cores collapses to a fraction of its capacity (one HTTP
    thread per waiting connection), so a probe above the sustainable rate ran 40-185 s instead
    of its 20; ``for_quantile`` gives the exact count at which the verdict is decided.
    """

    ttft_ms: float
    max_late: int

    @classmethod
    def for_quantile(cls, ttft_ms: float, quantile: float, n_requests: int) -> StopEarly:
        # numpy's linear percentile of n values lies at or above the value at floor((n-1) q/100)
        # in sorted order, so once n - floor(...) values exceed the bound, so does the quantile.
        return cls(ttft_ms, n_requests - math.floor((n_requests - 1) * quantile / 100.0))


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
    # An empty-text chunk that carries finish_reason is a token only if the usage says so
    # (StreamTimer.finish_chunk).
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
            elif choices[0].get("finish_reason") is not None:
                timer.finish_chunk(clock())
            finished = finished or choices[0].get("finish_reason") is not None
        usage = obj.get("usage")
        if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
            timer.usage(usage["completion_tokens"])
    if not (done or finished):
        result.error = "stream ended before [DONE] (server closed the connection)"


async def _one(session: Any, url: str, spec: RequestSpec, model_name: str, t0: float, timeout_s: float,
               extra: dict[str, Any] | None, sent: Sent | None = None,
               abort: _Abort | None = None) -> RequestResult:
    aiohttp = _aiohttp()
    clock = time.perf_counter
    result = RequestResult(index=spec.index, prompt_tokens=len(spec.prompt_ids), max_tokens=spec.output_tokens)
    start = clock()
    result.sent_s = start - t0
    timer = StreamTimer(result, start)
    if sent is not None:
        sent[spec.index] = (start, result)
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
    except asyncio.CancelledError:
        result.error = abort.reason if abort is not None else "cancelled"
        timer.finish(clock())
        raise
    return timer.finish(clock())


def _n_late(sent: Sent, ttft_ms: float, now: float) -> int:
    """Requests whose first token came, or is still missing, later than ``ttft_ms`` after sending."""
    late = 0
    for start, r in sent.values():
        if r.ttft_ms is not None:
            late += r.ttft_ms > ttft_ms
        elif r.e2e_ms is None:  # still waiting for its first token
            late += (now - start) * 1e3 > ttft_ms
    return late


async def _decided(sent: Sent, stop: StopEarly) -> str:
    """Returns once the run's TTFT quantile is sure to miss the bound."""
    while _n_late(sent, stop.ttft_ms, time.perf_counter()) < stop.max_late:
        await asyncio.sleep(0.1)
    return STOPPED_EARLY


async def _server_gone(base_url: str, alive: Callable[[], bool],
                       load: asyncio.Future[Any] | None = None) -> str | None:
    """Returns (with the reason) once the server process has exited or its port refuses connections;
    None once ``load`` (the run's requests) is over, so the watcher ends with its load even where a
    cancellation went astray: the server is stopped only after the load returns."""
    parts = urlsplit(base_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    refused, last_probe = 0, time.monotonic()
    while load is None or not load.done():
        await asyncio.sleep(WATCH_INTERVAL_S)
        if not alive():
            return "the server process exited during the run"
        if time.monotonic() - last_probe < PROBE_INTERVAL_S:
            continue
        last_probe = time.monotonic()
        try:
            # Not asyncio.wait_for: on Python 3.11 it returns the result of a connection that
            # completed as the watcher was cancelled, dropping the cancel (the watcher then probed
            # on for as long as the server lived, and the load never returned).
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                _, writer = await asyncio.open_connection(host, port)
        except ConnectionRefusedError:
            refused += 1
            if refused >= REFUSALS_TO_GIVE_UP:
                return f"the server stopped accepting connections on port {port} (shutting down?)"
            continue
        except (OSError, TimeoutError):  # busy or slow to accept: not gone
            refused = 0
            continue
        refused = 0
        writer.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                await writer.wait_closed()
    return None


async def _run(base_url: str, specs: list[RequestSpec], workload: ServingWorkload, model_name: str,
               concurrency: int | None, extra: dict[str, Any] | None,
               stop: StopEarly | None = None,
               alive: Callable[[], bool] | None = None) -> tuple[list[RequestResult], float, _Abort | None]:
    """Every request of the run; open loop (each at its offset) or closed loop (``concurrency``
    workers drain one queue). ``stop`` (open loop) and ``alive`` start watchers: the first to fire
    cancels what is in flight and leaves the rest unsent; its ``_Abort`` comes back (None: no
    watcher fired)."""
    aiohttp = _aiohttp()
    url = base_url.rstrip("/") + "/v1/completions"
    # A fresh connection per request: llama-server's HTTP library closes a kept-alive connection
    # after a few requests, and a pooled socket the server already closed fails the next request.
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    sent: Sent = {}
    abort = _Abort()
    fired: _Abort | None = None
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as session:
        t0 = time.perf_counter()

        def one(spec: RequestSpec) -> Any:
            return _one(session, url, spec, model_name, t0, workload.request_timeout_s, extra, sent, abort)

        if concurrency is None:  # open loop: each request at its own offset
            async def at_offset(spec: RequestSpec) -> RequestResult:
                delay = (spec.send_at_s or 0.0) - (time.perf_counter() - t0)
                if delay > 0:
                    await asyncio.sleep(delay)
                return await one(spec)

            tasks = [asyncio.ensure_future(at_offset(s)) for s in specs]
        else:  # closed loop: `concurrency` workers drain one queue
            queue = list(reversed(specs))

            async def worker() -> None:
                while queue:
                    await one(queue.pop())

            tasks = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
        everything = asyncio.gather(*tasks, return_exceptions=True)
        watchers: dict[asyncio.Future[str | None], str] = {}
        if stop is not None and concurrency is None:
            watchers[asyncio.ensure_future(_decided(sent, stop))] = "stop"
        if alive is not None:
            watchers[asyncio.ensure_future(_server_gone(base_url, alive, everything))] = "lost"
        if watchers:
            await asyncio.wait({everything, *watchers}, return_when=asyncio.FIRST_COMPLETED)
            done = [w for w in watchers if w.done() and not w.cancelled() and w.exception() is None
                    and w.result() is not None]
            if done and not everything.done():
                abort.reason = done[0].result()
                if watchers[done[0]] == "stop":
                    abort.stopped_early = True
                else:
                    abort.server_lost = abort.reason
                fired = abort
                for task in tasks:
                    task.cancel()
            for watcher in watchers:
                watcher.cancel()
        await asyncio.gather(everything, *watchers, return_exceptions=True)
        failures = [t.exception() for t in tasks if not t.cancelled() and t.exception() is not None]
        if failures:  # a fault of the client itself, as the run without a watcher would raise it
            raise failures[0]
        results = [sent[i][1] for i in sorted(sent)]
        ends = [r.sent_s + (r.e2e_ms or 0.0) / 1e3 for r in results]
        duration_s = max(ends, default=0.0)
    return results, duration_s, fired


def _run_coroutine(coro: Any) -> Any:
    """asyncio.run, also from code that already runs an event loop (a notebook): then in a thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def run_load(base_url: str, workload: ServingWorkload, *, model_name: str, vocab_tokens: int,
             warmup: bool = False, extra_body: dict[str, Any] | None = None,
             stop_early: StopEarly | None = None, alive: Callable[[], bool] | None = None) -> LoadResult:
    """Send the workload's requests (or its warm-up requests) and time each one; ``stop_early``
    (open loop only) ends the run once its TTFT quantile is decided to miss the bound; ``alive``
    (whether the server process still runs) ends it once the server is gone (module docstring)."""
    workload.validate()
    specs = workload.requests(vocab_tokens, warmup=warmup)
    if not specs:
        return LoadResult([], 0.0, 0.0)
    concurrency = workload.concurrency
    if warmup:  # warm-up requests go a few at a time, to touch the batched paths too
        concurrency = min(len(specs), workload.concurrency or 2)
    if concurrency is not None:
        stop_early = None
    cpu0 = time.process_time()
    results, duration_s, fired = _run_coroutine(_run(base_url, specs, workload, model_name, concurrency,
                                                     extra_body, stop_early, alive))
    return LoadResult(results, duration_s, time.process_time() - cpu0, bool(fired and fired.stopped_early),
                      len(specs) - len(results), fired.server_lost if fired else None)


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
