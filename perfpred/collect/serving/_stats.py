"""Per-request timings, the SLO, and the summary of a load test.

Definitions (those of vLLM's ``benchmark_serving`` and DistServe's goodput):

- TTFT: from sending the request to the first streamed chunk that carries a choice;
- ITL: the gaps between consecutive chunks (a chunk may carry several tokens: servers flush
  in bunches, so ITLs are chunk gaps, not per-token times);
- TPOT: ``(e2e - TTFT) / (output tokens - 1)``, the mean pace per token after the first,
  which bunching after the first chunk does not distort; undefined for one-token outputs. A
  server that is behind on its HTTP side can deliver a whole response in one burst: its TPOT
  then reads ~0 and its TTFT ~ e2e. Tokens after the first that came faster than
  ``BURST_TPOT_MS`` each (a pace no server decodes at) time the HTTP side, not decoding: such a
  request has no TPOT (``decode_tpot_ms`` is None), ``burst_frac`` counts them, and the
  ``tpot_*`` quantiles and the SLO's TPOT bound go by the requests that streamed apace (a
  burst's TTFT, ~ e2e, still counts against the TTFT bound; when every response burst, or every
  answer had one token, the run has no ``tpot_*`` and meets the TPOT bound: its client waited for
  no token after the first).
  The engines' own timings
  (``server_*_mean_ms``, from their ``/metrics``) are kept beside the client's;
- goodput: requests per second that finished without error *and* within every per-request
  bound of the SLO.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from perfpred.errors import InvalidInputError

QUANTILES = (50, 90, 99)
# Below this many ms per token after the first, the tokens were delivered together, not decoded apace.
BURST_TPOT_MS = 0.1


def timed_decoding(metric: str, values: Any) -> np.ndarray:
    """Which stored values of ``metric`` measure what they name: all of them, except a TPOT under
    ``BURST_TPOT_MS``, which timed responses delivered in one burst (rows summarized before
    bursts were left out of the TPOT percentiles carry such values)."""
    v = np.asarray(values, dtype=float)
    if not metric.removeprefix("metric.").startswith("tpot_"):
        return np.ones(v.shape, dtype=bool)
    return ~(v < BURST_TPOT_MS)


@dataclass
class RequestResult:
    """One request as the client saw it; times in ms from the moment it was sent."""

    index: int
    prompt_tokens: int
    max_tokens: int
    sent_s: float = 0.0  # offset from the start of the run
    ok: bool = False
    output_tokens: int = 0
    ttft_ms: float | None = None
    e2e_ms: float | None = None
    itl_ms: list[float] = field(default_factory=list)
    n_chunks: int = 0
    usage_tokens: int | None = None  # completion_tokens the server reported, when it did
    http_status: int | None = None
    error: str | None = None

    @property
    def tpot_ms(self) -> float | None:
        if not self.ok or self.ttft_ms is None or self.e2e_ms is None or self.output_tokens < 2:
            return None
        return (self.e2e_ms - self.ttft_ms) / (self.output_tokens - 1)

    @property
    def in_one_burst(self) -> bool:
        """Whether the tokens after the first arrived together rather than as they were decoded."""
        tpot = self.tpot_ms
        return tpot is not None and tpot < BURST_TPOT_MS

    @property
    def decode_tpot_ms(self) -> float | None:
        """The TPOT when the response streamed apace; None for a burst, whose TPOT times no decoding."""
        return None if self.in_one_burst else self.tpot_ms


class StreamTimer:
    """Turns the timestamps of a streamed response's chunks into a RequestResult.

    Feed it ``chunk(t_s, n_tokens)`` for each data chunk that carries a token,
    ``finish_chunk(t_s)`` for an empty-text chunk that carries the finish reason, and
    ``usage(completion_tokens)`` if the server reports it; ``finish(t_s)`` closes it. Kept
    apart from the HTTP code so the arithmetic is tested on scripted streams.
    """

    def __init__(self, result: RequestResult, start_s: float) -> None:
        self.result = result
        self.start_s = start_s
        self.last_s: float | None = None
        self.counted_tokens = 0
        self.finish_chunk_s: float | None = None

    def finish_chunk(self, t_s: float) -> None:
        # llama-server ends a stream with an empty chunk after its last token (no token); vLLM
        # sends its last token's chunk with empty text when it holds back a partial UTF-8 byte
        # or skips a special token (a token). ``finish`` counts it only for an answer with no
        # other token whose usage says it has one: after bunched chunks the usage exceeds the
        # chunks either way, and a no-token chunk counted would add a ~0 ms gap to the ITLs.
        self.finish_chunk_s = t_s

    def chunk(self, t_s: float, n_tokens: int = 1) -> None:
        r = self.result
        if self.last_s is None:
            r.ttft_ms = (t_s - self.start_s) * 1e3
        else:
            r.itl_ms.append((t_s - self.last_s) * 1e3)
        self.last_s = t_s
        r.n_chunks += 1
        self.counted_tokens += n_tokens

    def usage(self, completion_tokens: int) -> None:
        self.result.usage_tokens = int(completion_tokens)

    def finish(self, t_s: float) -> RequestResult:
        r = self.result
        if self.finish_chunk_s is not None and self.counted_tokens == 0 and (r.usage_tokens or 0) >= 1:
            self.chunk(self.finish_chunk_s)  # the server counted a token this chunk carried
        r.e2e_ms = (t_s - self.start_s) * 1e3
        # The server's own count wins: chunks may merge tokens or hold back partial UTF-8.
        r.output_tokens = r.usage_tokens if r.usage_tokens is not None else self.counted_tokens
        if r.n_chunks == 0 and r.error is None:
            r.error = "the stream ended without any token"
        r.ok = r.error is None
        return r


@dataclass(frozen=True)
class Slo:
    """Latency bounds in ms; ``None`` leaves a bound out.

    Per request (goodput) each bound applies to that request; for a rate to count as
    sustainable the ``quantile`` (default p99) of each must stay within it and no request
    may fail.
    """

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2e_ms: float | None = None
    quantile: float = 99.0
    max_error_rate: float = 0.0

    def validate(self) -> None:
        for name in ("ttft_ms", "tpot_ms", "e2e_ms"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise InvalidInputError(f"`slo.{name} > 0` must hold, but got {name}={value!r}")
        if not 0 < self.quantile <= 100:
            raise InvalidInputError(f"`0 < slo.quantile <= 100` must hold, but got quantile={self.quantile!r}")
        if not 0 <= self.max_error_rate < 1:
            raise InvalidInputError(f"`0 <= slo.max_error_rate < 1` must hold, but got {self.max_error_rate!r}")

    def request_ok(self, r: RequestResult) -> bool:
        if not r.ok:
            return False
        checks = ((self.ttft_ms, r.ttft_ms), (self.tpot_ms, r.decode_tpot_ms), (self.e2e_ms, r.e2e_ms))
        return all(bound is None or value is None or value <= bound for bound, value in checks)

    def violations(self, results: list[RequestResult]) -> list[str]:
        """Which aggregate bounds a run breaks (empty when it meets the SLO)."""
        out = []
        n_err = sum(not r.ok for r in results)
        if not results or n_err / len(results) > self.max_error_rate:
            out.append(f"errors {n_err}/{len(results)}")
        for name, bound in (("ttft_ms", self.ttft_ms), ("tpot_ms", self.tpot_ms), ("e2e_ms", self.e2e_ms)):
            if bound is None:
                continue
            field_name = "decode_tpot_ms" if name == "tpot_ms" else name
            ok = [r for r in results if r.ok]
            values = [v for v in (getattr(r, field_name) for r in ok) if v is not None]
            if not values and name == "tpot_ms" and ok and (any(r.in_one_burst for r in ok)
                                                            or all(r.output_tokens < 2 for r in ok)):
                continue  # one burst, or one token each: no token after the first was waited for
            q = float(np.percentile(values, self.quantile)) if values else math.inf
            if q > bound:
                out.append(f"p{self.quantile:g} {name} {q:.1f} > {bound:g}")
        return out

    def metric_violations(self, metrics: Mapping[str, float]) -> list[str]:
        """Which bounds a run breaks, judged from its summary (``summarize``'s metric names).

        A bound whose quantile the run did not report is broken: nothing shows it held; except
        TPOT when every response came in one burst (``burst_frac`` 1) or had one token, where the
        client waited for no token after the first. A quantile ``summarize`` never reports is refused rather
        than failing every run.
        """
        q = f"p{self.quantile:g}"
        out = []
        if (metrics.get("error_rate") or 0.0) > self.max_error_rate:
            out.append(f"error_rate {metrics.get('error_rate'):.2f} > {self.max_error_rate:g}")
        for name, bound in (("ttft", self.ttft_ms), ("tpot", self.tpot_ms), ("e2e", self.e2e_ms)):
            if bound is None:
                continue
            value = metrics.get(f"{name}_{q}_ms")
            if value is None and self.quantile not in QUANTILES:
                raise InvalidInputError(f"`slo.quantile` must be one of {', '.join(map(str, QUANTILES))} to judge "
                                        f"a run's summary, but got quantile={self.quantile!r}")
            if value is None and name == "tpot" and (metrics.get("burst_frac") == 1.0
                                                     or 0 < (metrics.get("avg_output_len_tokens") or 0) <= 1.0):
                continue  # one burst, or one token each: no decode pace was timed, none was waited for
            if value is None or value > bound:
                out.append(f"{name}_{q}_ms {value if value is None else round(value, 1)} > {bound:g}")
        return out

    def describe(self) -> dict[str, Any]:
        q = f"p{self.quantile:g}"
        out = {f"slo_ttft_{q}_ms": self.ttft_ms, f"slo_tpot_{q}_ms": self.tpot_ms, f"slo_e2e_{q}_ms": self.e2e_ms}
        return {k: v for k, v in out.items() if v is not None}


def _quantiles(name: str, values: list[float], quantiles: tuple[int, ...] = QUANTILES) -> dict[str, float]:
    if not values:
        return {}
    arr = np.asarray(values, dtype=float)
    out = {f"{name}_p{q}_ms": float(np.percentile(arr, q)) for q in quantiles}
    out[f"{name}_mean_ms"] = float(arr.mean())
    return out


def summarize(results: list[RequestResult], duration_s: float, slo: Slo | None = None) -> dict[str, float]:
    """The metrics of one run (names as the ML.ENERGY importer spells them where it has them)."""
    ok = [r for r in results if r.ok]
    metrics: dict[str, float] = {"n_requests": float(len(results)), "n_ok": float(len(ok)),
                                 "n_errors": float(len(results) - len(ok)),
                                 "error_rate": (len(results) - len(ok)) / len(results) if results else 0.0,
                                 "duration_s": duration_s}
    metrics.update(_quantiles("ttft", [r.ttft_ms for r in ok if r.ttft_ms is not None]))
    with_tpot = [r for r in ok if r.tpot_ms is not None]
    metrics.update(_quantiles("tpot", [r.decode_tpot_ms for r in with_tpot if not r.in_one_burst]))
    if with_tpot:
        metrics["burst_frac"] = sum(r.in_one_burst for r in with_tpot) / len(with_tpot)
    metrics.update(_quantiles("itl", [g for r in ok for g in r.itl_ms], (50, 90, 95, 99)))
    metrics.update(_quantiles("e2e", [r.e2e_ms for r in ok if r.e2e_ms is not None]))
    out_tokens = sum(r.output_tokens for r in ok)
    if ok:
        metrics["avg_output_len_tokens"] = out_tokens / len(ok)
        metrics["avg_prompt_len_tokens"] = sum(r.prompt_tokens for r in ok) / len(ok)
    if duration_s > 0:
        metrics["requests_per_s"] = len(ok) / duration_s
        metrics["output_tokens_per_s"] = out_tokens / duration_s
        metrics["total_tokens_per_s"] = (out_tokens + sum(r.prompt_tokens for r in ok)) / duration_s
        if slo is not None:
            metrics["goodput_requests_per_s"] = sum(slo.request_ok(r) for r in results) / duration_s
    return metrics
