"""The engine interface: knobs, a command line, start -> healthy -> load -> metrics -> stop.

An engine knows its knobs (named as the engine names them, with their defaults, limits and
flag), turns a config into a command line and environment, and starts a server that binds
127.0.0.1 on a free port. ``start`` returns only once the server answers its health check;
otherwise it raises :class:`EngineStartError` carrying the status a Measurement row should
get (``timeout``, ``oom``, ``invalid`` or ``runtime_error``) and the log tail. Every knob is
passed explicitly (its default when the config leaves it out), so a row's config says all
that was run, whatever the engine's own defaults become.
"""

from __future__ import annotations

import math
import re
import shlex
import signal
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perfpred.collect.serving._loadgen import get_text
from perfpred.collect.serving._models import LocalModel
from perfpred.collect.serving._process import ServerProcess, free_port
from perfpred.collect.serving._prometheus import parse_prometheus
from perfpred.errors import InvalidInputError, PerfPredError

# Evidence in a server's log that it ran out of memory: allocation failures (llama.cpp, C++, torch),
# and vLLM's KV cache larger than the memory it has ("... is larger than the available KV cache
# memory", on CPU "Available memory on node 0 ... is less than requested memory for kv").
_OOM = re.compile(r"out of memory|failed to allocate|bad_alloc|cannot allocate memory|outofmemory|"
                  r"insufficient memory|not enough memory|memoryerror|available kv cache memory|"
                  r"less than requested memory|no available memory for the cache blocks", re.IGNORECASE)
# Evidence that it refused its arguments; pydantic (vLLM's configs) writes "Value error, ..." and
# "[type=value_error, ...]", Python "ValueError: ...".
_INVALID = re.compile(r"invalid argument|unknown argument|unrecognized argument|invalid value|error: argument|"
                      r"value[ _]?error|must be (?:greater|less|at least|a multiple)|requires flash", re.IGNORECASE)
# How much of a log is read to classify a failure: vLLM prints the root cause (a worker's
# ValueError) and then 100+ lines of tracebacks of the processes above it, so the last 20 lines
# (what an error message shows) hold only "Engine core initialization failed".
CLASSIFY_LINES = 1000
CLASSIFY_CHARS = 128 * 1024


class EngineStartError(PerfPredError):
    """The server did not become healthy; ``status`` is the Measurement status it earns."""

    exit_code = 1  # a run failed, not the user's input

    def __init__(self, message: str, *, status: str, log_tail: str = "", startup_ms: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.log_tail = log_tail
        self.startup_ms = startup_ms


@dataclass(frozen=True)
class Knob:
    """One engine setting: its type, default, limits, and how the engine takes it (flag or env)."""

    name: str
    kind: type
    default: Any
    help: str
    flag: str | None = None  # "--parallel"; bools: "--flag" / "--no-flag" given as "on|off"
    env: str | None = None
    choices: tuple[Any, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    aliases: tuple[str, ...] = ()

    def check(self, value: Any) -> Any:
        if self.kind is bool:
            if not isinstance(value, bool):
                raise InvalidInputError(f"knob `{self.name}` must be true or false, but got {self.name}={value!r}")
            return value
        if self.kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidInputError(f"knob `{self.name}` must be an integer, but got {self.name}={value!r}")
        elif self.kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InvalidInputError(f"knob `{self.name}` must be a finite number, but got {self.name}={value!r}")
            value = float(value)
        elif self.kind is str and not isinstance(value, str):
            raise InvalidInputError(f"knob `{self.name}` must be a string, but got {self.name}={value!r}")
        if self.choices and value not in self.choices:
            raise InvalidInputError(f"knob `{self.name}` must be one of {list(self.choices)}, "
                                    f"but got {self.name}={value!r}")
        if self.minimum is not None and value < self.minimum:
            raise InvalidInputError(f"knob `{self.name} >= {self.minimum:g}` must hold, but got {self.name}={value!r}")
        if self.maximum is not None and value > self.maximum:
            raise InvalidInputError(f"knob `{self.name} <= {self.maximum:g}` must hold, but got {self.name}={value!r}")
        return value


def classify_failure(log: str, returncode: int | None) -> str:
    """The Measurement status of a server that exited (or stopped serving) on its own, from its log
    (pass ``CLASSIFY_LINES`` of it, not the short tail an error message shows) and exit code.

    ``oom`` needs evidence in the log (an allocation failure, a KV cache larger than memory): a
    SIGKILL alone is no evidence, since the kernel's OOM killer and a ``kill -9`` look the same
    from here (the kernel's log is not readable), so an unexplained kill is ``runtime_error``,
    which a re-run retries. ``invalid``: the server refused its arguments.
    """
    if _OOM.search(log):
        return "oom"
    if _INVALID.search(log):
        return "invalid"
    return "runtime_error"


def shows_oom(text: str) -> bool:
    """Whether ``text`` (a log, or an error message with its log tail) holds an out-of-memory message."""
    return bool(_OOM.search(text))


def failure_evidence(log: str) -> str | None:
    """The log line that decided :func:`classify_failure` (None: no evidence, ``runtime_error``)."""
    for pattern in (_OOM, _INVALID):
        lines = [line.strip() for line in log.splitlines() if pattern.search(line)]
        if lines:
            return lines[0][:300]
    return None


def describe_exit(returncode: int | None) -> str:
    """An exit code in words: ``exited with code 1``, ``was killed by SIGKILL (exit code -9) ...``."""
    if returncode is None or returncode >= 0:
        return f"exited with code {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    why = (" with no out-of-memory message in its log (a `kill -9` or the kernel's OOM killer: perfpred "
           "cannot tell them apart)" if returncode == -9 else "")
    return f"was killed by {name} (exit code {returncode}){why}"


def failure_message(log: str, returncode: int | None) -> tuple[str, str]:
    """(status, its reason in words) of a server that failed: the evidence line, else how it exited."""
    status = classify_failure(log, returncode)
    evidence = failure_evidence(log)
    return status, f"{status}: {evidence}" if evidence else status


class RunningServer:
    """A started, healthy server; stop it with ``stop()`` or by leaving its ``with`` block."""

    def __init__(self, engine: Engine, knobs: dict[str, Any], model: LocalModel, port: int,
                 process: ServerProcess, startup_ms: float) -> None:
        self.engine = engine
        self.knobs = knobs
        self.model = model
        self.port = port
        self.process = process
        self.startup_ms = startup_ms
        self.lost: str | None = None  # set when a load found the server gone (stopped listening, exited)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.process.alive()

    def exited(self, within_s: float = 0.0) -> bool:
        """Whether the server process has exited, waiting up to ``within_s`` seconds for it to."""
        return self.process.exited(within_s)

    def metrics(self) -> dict[str, float]:
        """One scrape of the server's Prometheus metrics ({} when it does not answer)."""
        status, text = get_text(self.base_url + self.engine.metrics_path)
        return parse_prometheus(text) if status == 200 else {}

    def log_tail(self, n_lines: int = 20) -> str:
        return self.process.log_tail(n_lines)

    def log_for_classification(self) -> str:
        return self.process.log_tail(CLASSIFY_LINES, CLASSIFY_CHARS)

    def stop(self) -> int | None:
        return self.process.stop()

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Engine(ABC):
    """Base of the serving engines (registry: ``ENGINES``; get one with ``get_engine(name)``)."""

    name: str = ""
    knobs: tuple[Knob, ...] = ()
    health_path = "/health"
    metrics_path = "/metrics"
    default_startup_timeout_s = 120.0
    # Prometheus counters for the client cross-check (None where the engine has none).
    requests_counter: str | None = None
    requests_counter_counts_failures = True  # False: the counter only counts successful requests (vLLM)
    output_tokens_counter: str | None = None
    prompt_tokens_counters: tuple[str, ...] = ()
    # The engine's own latency means over a run: (metric, sum counter, count counter, ms per unit).
    # Timed inside the engine, they do not see how late the HTTP side delivered the tokens.
    server_latency_means: tuple[tuple[str, str, str, float], ...] = ()
    # Prometheus gauges of requests running or queued: all zero once the server is idle.
    busy_gauges: tuple[str, ...] = ()

    # ------------------------------------------------------------------ config
    def knob(self, name: str) -> Knob:
        for knob in self.knobs:
            if name == knob.name or name in knob.aliases:
                return knob
        raise InvalidInputError(f"unknown knob `{name}` for engine '{self.name}'; known knobs: "
                                f"{', '.join(k.name for k in self.knobs)}")

    def resolve(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """Canonical knob values (aliases resolved, defaults filled, every rule checked)."""
        given: dict[str, Any] = {}
        for name, value in config.items():
            if name == "engine":
                if value != self.name:
                    raise InvalidInputError(f"`engine` must be '{self.name}' here, but got engine={value!r}")
                continue
            knob = self.knob(name)
            if knob.name in given:
                raise InvalidInputError(f"knob `{knob.name}` is given twice (once by alias), but got {name}={value!r}")
            given[knob.name] = None if value is None else knob.check(value)
        knobs = {k.name: given[k.name] if given.get(k.name) is not None else self.default(k.name, given)
                 for k in self.knobs}
        self.check(knobs)
        return knobs

    def default(self, name: str, given: Mapping[str, Any]) -> Any:
        """A knob's default; engines override this for defaults that depend on the machine or other knobs."""
        return self.knob(name).default

    def check(self, knobs: dict[str, Any]) -> None:  # noqa: B027 (optional hook: most engines have rules)
        """Rules between knobs (``ubatch <= batch``); one-line InvalidInputError."""

    def check_fit(self, knobs: dict[str, Any], max_sequence_tokens: int) -> None:  # noqa: B027 (optional hook)
        """Rules between knobs and the workload (a sequence must fit the context)."""

    def check_model(self, knobs: dict[str, Any], model: LocalModel) -> None:  # noqa: B027 (optional hook)
        """Rules between knobs and the model perfpred made (a context longer than its positions)."""

    def config_row(self, knobs: dict[str, Any]) -> dict[str, Any]:
        """The ``config.*`` columns: the engine, its knobs, and ``max_num_seqs`` across engines."""
        return {"engine": self.name, **knobs}

    # ------------------------------------------------------------------ launching
    def available(self) -> str | None:
        """None when the engine can start here, else why not (and how to fix it)."""
        return None

    def version(self) -> str:
        return "unknown"

    def served_name(self, model: LocalModel) -> str:
        return model.workload()["model"]

    @abstractmethod
    def argv(self, knobs: dict[str, Any], model: LocalModel, port: int) -> list[str]:
        """The command that starts the server for these knobs."""

    def env(self, knobs: dict[str, Any]) -> dict[str, str]:
        """Environment variables the command needs (beyond the inherited environment)."""
        return {}

    def command_line(self, config: Mapping[str, Any], model: LocalModel, port: int = 8080) -> str:
        """A ready-to-paste shell line: environment assignments, then the command."""
        knobs = self.resolve(config)
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(self.env(knobs).items()))
        return (env + " " if env else "") + shlex.join(self.argv(knobs, model, port))

    def start(self, config: Mapping[str, Any], model: LocalModel, *, startup_timeout_s: float | None = None,
              log_path: str | Path | None = None) -> RunningServer:
        """Start a server and wait until it is healthy; EngineStartError (with a status) otherwise."""
        import os

        knobs = self.resolve(config)
        reason = self.available()
        if reason:
            raise EngineStartError(reason, status="runtime_error")
        timeout_s = startup_timeout_s or self.default_startup_timeout_s
        port = free_port()
        if log_path is None:
            log_path = Path(tempfile.mkdtemp(prefix=f"perfpred-{self.name}-")) / "server.log"
        process = ServerProcess(self.argv(knobs, model, port), log_path, env={**os.environ, **self.env(knobs)})
        t0 = time.monotonic()
        process.start()
        try:
            self._wait_healthy(process, port, timeout_s, t0)
        except BaseException:
            process.stop()
            raise
        return RunningServer(self, knobs, model, port, process, (time.monotonic() - t0) * 1e3)

    def _wait_healthy(self, process: ServerProcess, port: int, timeout_s: float, t0: float) -> None:
        url = f"http://127.0.0.1:{port}{self.health_path}"
        delay = 0.05
        while True:
            code = process.poll()
            if code is not None:
                time.sleep(0.1)  # let the last lines reach the log
                tail = process.log_tail()
                status, reason = failure_message(process.log_tail(CLASSIFY_LINES, CLASSIFY_CHARS), code)
                detail = f"({reason})" if reason != status else f"({status}): {_last_line(tail)}"
                raise EngineStartError(f"{self.name} {describe_exit(code)} before becoming healthy {detail}",
                                       status=status, log_tail=tail, startup_ms=(time.monotonic() - t0) * 1e3)
            if get_text(url, timeout_s=2.0)[0] == 200:
                return
            if time.monotonic() - t0 > timeout_s:
                tail = process.log_tail()
                raise EngineStartError(f"{self.name} did not become healthy within {timeout_s:g} s: "
                                       f"{_last_line(tail)}", status="timeout", log_tail=tail,
                                       startup_ms=(time.monotonic() - t0) * 1e3)
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(no output)"
