"""What a load test sends: request count, arrivals and prompt / output length distributions.

Prompts are sent as token-id lists (both llama-server and vLLM accept them on
``/v1/completions``), so a prompt of 128 tokens is exactly 128 tokens without a tokenizer
in the client, and outputs are forced to their length with ``ignore_eos``. Everything is
drawn from one seeded generator: the same workload sends the same requests at the same
offsets every time.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from perfpred.errors import InvalidInputError

LENGTH_KINDS = ("fixed", "uniform", "trace")
# Token ids below this are the tokenizer's special tokens (<s>, </s>, <unk>); prompts avoid them.
FIRST_PLAIN_TOKEN = 3


@dataclass(frozen=True)
class LengthDist:
    """Token counts: ``fixed`` (value), ``uniform`` (low..high inclusive) or ``trace`` (sampled from values)."""

    kind: str = "fixed"
    value: int = 0
    low: int = 0
    high: int = 0
    values: tuple[int, ...] = ()
    trace_name: str = ""

    @classmethod
    def fixed(cls, tokens: int) -> LengthDist:
        return cls("fixed", value=tokens)

    @classmethod
    def uniform(cls, low: int, high: int) -> LengthDist:
        return cls("uniform", low=low, high=high)

    @classmethod
    def from_trace(cls, path: str | Path, column: str) -> LengthDist:
        """Lengths from a trace file: a CSV with ``column``, or JSON / JSON-lines records having it."""
        path = Path(path)
        if not path.is_file():
            raise InvalidInputError(f"a length trace must be a file, but got path='{path}'")
        if path.suffix == ".csv":
            import pandas as pd

            frame = pd.read_csv(path)
            if column not in frame:
                raise InvalidInputError(f"trace '{path.name}' must have a `{column}` column, but has {list(frame)}")
            raw = frame[column].tolist()
        else:
            text = path.read_text()
            try:
                records = json.loads(text)
            except json.JSONDecodeError:
                records = [json.loads(line) for line in text.splitlines() if line.strip()]
            if isinstance(records, dict):
                records = [records]
            raw = [r.get(column) for r in records if isinstance(r, dict)]
        values = tuple(int(v) for v in raw if isinstance(v, (int, float)) and math.isfinite(v) and v >= 1)
        if not values:
            raise InvalidInputError(f"trace '{path.name}' must hold positive `{column}` values, but has none")
        digest = hashlib.sha1(json.dumps(values).encode()).hexdigest()[:8]
        return cls("trace", values=values, trace_name=f"{path.stem}#{digest}")

    def validate(self, name: str) -> None:
        if self.kind not in LENGTH_KINDS:
            raise InvalidInputError(f"`{name}.kind` must be one of {LENGTH_KINDS}, but got kind={self.kind!r}")
        if self.kind == "fixed" and (not isinstance(self.value, int) or self.value < 1):
            raise InvalidInputError(f"`{name} >= 1` must hold, but got {name}={self.value!r}")
        if self.kind == "uniform" and not (isinstance(self.low, int) and isinstance(self.high, int)
                                           and 1 <= self.low <= self.high):
            raise InvalidInputError(f"`1 <= {name}.low <= {name}.high` must hold, but got ({self.low}, {self.high})")
        if self.kind == "trace" and not self.values:
            raise InvalidInputError(f"`{name}` trace must hold at least one length, but it is empty")

    def sample(self, rng: np.random.Generator, n: int) -> list[int]:
        if self.kind == "fixed":
            return [self.value] * n
        if self.kind == "uniform":
            return [int(v) for v in rng.integers(self.low, self.high + 1, size=n)]
        return [int(v) for v in rng.choice(np.asarray(self.values), size=n)]

    @property
    def max(self) -> int:
        return {"fixed": self.value, "uniform": self.high}.get(self.kind) or max(self.values)

    @property
    def mean(self) -> float:
        if self.kind == "fixed":
            return float(self.value)
        if self.kind == "uniform":
            return (self.low + self.high) / 2
        return float(np.mean(self.values))

    def label(self) -> str:
        if self.kind == "fixed":
            return f"fixed:{self.value}"
        if self.kind == "uniform":
            return f"uniform:{self.low}-{self.high}"
        return f"trace:{self.trace_name}"


def _dist(value: int | LengthDist) -> LengthDist:
    return LengthDist.fixed(value) if isinstance(value, int) and not isinstance(value, bool) else value


@dataclass(frozen=True)
class RequestSpec:
    index: int
    send_at_s: float | None  # offset from the start (open loop); None in closed loop
    prompt_ids: list[int] = field(repr=False)
    output_tokens: int = 0


@dataclass(frozen=True)
class ServingWorkload:
    """One load test: ``rate_rps`` (open loop, Poisson arrivals) xor ``concurrency`` (closed loop).

    ``warmup_requests`` are sent first and discarded (they pay for the server's first-request
    costs: thread pools, page faults, caches). ``request_timeout_s`` bounds one request.
    """

    n_requests: int = 20
    prompt_tokens: int | LengthDist = 64
    output_tokens: int | LengthDist = 32
    rate_rps: float | None = None
    concurrency: int | None = None
    seed: int = 0
    warmup_requests: int = 2
    request_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "prompt_tokens", _dist(self.prompt_tokens))
        object.__setattr__(self, "output_tokens", _dist(self.output_tokens))

    @property
    def prompt(self) -> LengthDist:
        return self.prompt_tokens  # type: ignore[return-value]

    @property
    def output(self) -> LengthDist:
        return self.output_tokens  # type: ignore[return-value]

    def validate(self) -> None:
        if not isinstance(self.n_requests, int) or self.n_requests < 1:
            raise InvalidInputError(f"`n_requests >= 1` must hold, but got n_requests={self.n_requests!r}")
        if (self.rate_rps is None) == (self.concurrency is None):
            raise InvalidInputError("exactly one of `rate_rps` (open loop) and `concurrency` (closed loop) must be "
                                    f"set, but got rate_rps={self.rate_rps!r}, concurrency={self.concurrency!r}")
        if self.rate_rps is not None and not (isinstance(self.rate_rps, (int, float)) and math.isfinite(self.rate_rps)
                                              and self.rate_rps > 0):
            raise InvalidInputError(f"`rate_rps > 0` must hold, but got rate_rps={self.rate_rps!r}")
        if self.concurrency is not None and (not isinstance(self.concurrency, int) or self.concurrency < 1):
            raise InvalidInputError(f"`concurrency >= 1` must hold, but got concurrency={self.concurrency!r}")
        if not isinstance(self.warmup_requests, int) or self.warmup_requests < 0:
            raise InvalidInputError(
                f"`warmup_requests >= 0` must hold, but got warmup_requests={self.warmup_requests!r}")
        if not self.request_timeout_s > 0:
            raise InvalidInputError(f"`request_timeout_s > 0` must hold, but got {self.request_timeout_s!r}")
        self.prompt.validate("prompt_tokens")
        self.output.validate("output_tokens")

    def requests(self, vocab_tokens: int, *, warmup: bool = False) -> list[RequestSpec]:
        """The seeded request list: arrival offsets (Poisson when open loop), prompts, output lengths."""
        # One generator per stream, so changing the length distributions never moves the arrivals.
        phase = 1 if warmup else 0
        arrivals, lengths, tokens = (np.random.default_rng([self.seed, phase, stream]) for stream in range(3))
        n = self.warmup_requests if warmup else self.n_requests
        prompts = self.prompt.sample(lengths, n)
        outputs = self.output.sample(lengths, n)
        if self.rate_rps is not None and not warmup:
            gaps = arrivals.exponential(1.0 / self.rate_rps, size=n)
            offsets: list[float | None] = [0.0, *np.cumsum(gaps[1:]).tolist()]
        else:
            offsets = [None] * n
        high = max(FIRST_PLAIN_TOKEN + 1, vocab_tokens)
        return [RequestSpec(i, offsets[i], tokens.integers(FIRST_PLAIN_TOKEN, high, size=prompts[i]).tolist(),
                            outputs[i]) for i in range(n)]

    def describe(self) -> dict[str, Any]:
        """The workload's columns of a Measurement row (``workload.*``)."""
        out: dict[str, Any] = {
            "n_requests": self.n_requests, "arrival": "poisson" if self.rate_rps is not None else "closed_loop",
            "rate_rps": self.rate_rps, "concurrency": self.concurrency, "seed": self.seed,
            "prompt_dist": self.prompt.label(), "output_dist": self.output.label(),
            "prompt_tokens_mean": self.prompt.mean, "output_tokens_mean": self.output.mean,
        }
        if self.prompt.kind == "fixed":
            out["prompt_tokens"] = self.prompt.value
        if self.output.kind == "fixed":
            out["output_tokens"] = self.output.value
        return {k: v for k, v in out.items() if v is not None}
