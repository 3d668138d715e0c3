"""The serving collector: one engine config under one workload -> one ``kind="serving"`` Measurement.

Measuring a config: validate it (unknown knob, impossible value, a sequence that cannot
fit the context: a one-line InvalidInputError before anything starts), start the server
and wait for its health check, send the discarded warm-up requests, scrape ``/metrics``,
run the load, scrape again, stop the server (always: ``with`` + atexit + process-group
kill), and build the row. A server that fails to start, exits, never becomes healthy or
runs out of memory gives a row with that status and its log tail, never an exception.

The row (names as the ML.ENERGY importer spells them where it has them):

- ``workload.*``: model (name, ``total_params_b``, ``n_params``, hidden size, layers, heads,
  vocabulary), prompt / output length distribution (``prompt_tokens`` when fixed, and
  ``*_mean``), arrival (``poisson`` + ``rate_rps``, or ``closed_loop`` + ``concurrency``),
  request count, seed;
- ``config.*``: ``engine`` and every knob as the engine names it, plus ``max_num_seqs``
  (slots / max_num_seqs: the one batching knob every engine has);
- ``runtime_ms``: the median end-to-end request latency; ``raw_times_ms``: each
  successful request's end-to-end latency, so min / mean / std / iqr / cv describe the
  request distribution;
- ``metric.*``: ``ttft_p50/p90/p99/mean_ms``, ``tpot_*``, ``itl_p50/p90/p95/p99/mean_ms``,
  ``e2e_*``, ``requests_per_s``, ``output_tokens_per_s``, ``total_tokens_per_s``,
  ``goodput_requests_per_s`` (with an SLO), ``n_requests`` / ``n_ok`` / ``n_errors`` /
  ``error_rate``, ``avg_output_len_tokens``, ``startup_ms``, ``client_cpu_s`` and
  ``client_cpu_frac`` (the client's share of one core), the server's own counts
  (``server_output_tokens``, ``server_prompt_tokens``, ``server_requests``) with
  ``server_counts_match`` (1 or 0), and ``avg_batch_size`` where the engine tells it;
- ``power_source="unavailable"``: no power meter is read here, and none is invented.

``status`` is ``ok`` when the server stayed up and at least one request succeeded (the
error count is in the metrics); ``runtime_error`` / ``oom`` when it died or stopped serving
(``oom`` only with an out-of-memory message in its log: a SIGKILL from outside is
``runtime_error``), ``timeout`` when every request timed out, a probe was stopped early before
any request finished, or the server never became healthy, ``invalid`` when it rejected its
arguments. A re-run measures again the rows whose failure may not recur (``retryable``:
``runtime_error``, ``timeout``, and ``oom`` without that evidence); ``invalid`` and evidenced
``oom`` rows stay.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from perfpred.collect._power import PowerObserver, PowerReading, power_observer
from perfpred.collect._timing import spread_stats
from perfpred.collect.serving._engine import (
    Engine,
    EngineStartError,
    RunningServer,
    describe_exit,
    failure_message,
    shows_oom,
)
from perfpred.collect.serving._loadgen import STOPPED_EARLY, LoadResult, StopEarly, run_load
from perfpred.collect.serving._models import LocalModel, TinyModelSpec, describe_model, ensure_model
from perfpred.collect.serving._prometheus import delta
from perfpred.collect.serving._rate import RateSearch, find_sustainable_rate
from perfpred.collect.serving._registry import get_engine
from perfpred.collect.serving._stats import RequestResult, Slo, summarize
from perfpred.collect.serving._workload import ServingWorkload
from perfpred.datasets import Measurement, MeasurementStore, measurement_key
from perfpred.errors import InvalidInputError

# Seconds a server whose requests failed gets to finish exiting before its row is built.
DYING_SERVER_GRACE_S = 2.0


@dataclass(frozen=True, eq=False)
class ServingConfig:
    """One engine configuration under one workload, on one generated model."""

    engine: str
    knobs: Mapping[str, Any] = field(default_factory=dict)
    workload: ServingWorkload = field(default_factory=lambda: ServingWorkload(concurrency=1))
    model: str | TinyModelSpec = "tiny"

    def validate(self, engine: Engine | None = None) -> dict[str, Any]:
        """The resolved knobs; a one-line InvalidInputError for anything that cannot run."""
        engine = engine or get_engine(self.engine)
        knobs = engine.resolve(self.knobs)
        self.workload.validate()
        engine.check_fit(knobs, self.workload.prompt.max + self.workload.output.max)
        engine.check_model(knobs, describe_model(self.model))
        return knobs


def latency_spread(values: Sequence[float]) -> dict[str, float]:
    """The row's timing fields from per-request latencies: their median as runtime_ms, and the
    spread statistics every other collector stores (``spread_stats``); empty without latencies."""
    if not len(values):
        return {}
    return {"runtime_ms": float(np.median(values)), **spread_stats(values)}


# Statuses a re-run measures again: the failure may not recur (a server stopped or killed from
# outside, a machine too loaded to answer in time). ``invalid`` (the engine refused the knobs) and
# ``oom`` with an out-of-memory message in the stored log would fail again.
RETRIED_STATUSES = ("runtime_error", "timeout")


def retryable(row: Mapping[str, Any]) -> bool:
    """Whether a stored serving row is measured again by a re-run: a status that means interrupted
    or unknown (``RETRIED_STATUSES``), or ``oom`` without any out-of-memory message in its error
    and log (an unexplained SIGKILL that older versions stored as oom)."""
    status = row.get("status")
    if status in RETRIED_STATUSES:
        return True
    error = row.get("error")
    return status == "oom" and not (isinstance(error, str) and shows_oom(error))


def _first_error(results: list[RequestResult]) -> str | None:
    errors = [r.error for r in results if r.error]
    if not errors:
        return None
    return f"{len(errors)} of {len(results)} requests failed; first: {errors[0]}"


class ServingCollector:
    """Measures serving configs on this machine; a tuner backend like the GEMM and kernel collectors.

    ``engines`` overrides the engine objects by name (``{"llama-server":
    LlamaServerEngine(binary=...)}``); ``slo`` adds goodput to every row; ``log_dir`` keeps
    the server logs (default: a temporary folder). ``power`` reads the energy each load test
    used (default: this machine's real sensor, RAPL where readable, else none; on a GPU server
    pass ``power_observer("cuda")`` for NVML): the row then carries power, energy and output
    tokens per joule; without a sensor its ``power_source`` is ``unavailable`` and no number is
    recorded.
    """

    name = "serving"

    def __init__(self, *, engines: Mapping[str, Engine] | None = None, slo: Slo | None = None,
                 startup_timeout_s: float | None = None, log_dir: str | os.PathLike[str] | None = None,
                 hardware: Mapping[str, Any] | None = None, power: PowerObserver | None = None) -> None:
        self.engines = dict(engines or {})
        self.power = power if power is not None else power_observer("cpu")
        if slo is not None:
            slo.validate()
        self.slo = slo
        self.startup_timeout_s = startup_timeout_s
        self.log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="perfpred-serving-"))
        self._hardware = dict(hardware) if hardware else None
        self._n_started = 0

    # ------------------------------------------------------------------ identity
    def engine(self, name: str) -> Engine:
        return self.engines[name] if name in self.engines else get_engine(name)

    @property
    def hardware(self) -> dict[str, Any]:
        if self._hardware is None:
            from perfpred.collect._hardware import fingerprint

            self._hardware = fingerprint("cpu")
        return self._hardware

    def _model(self, cfg: ServingConfig, engine: Engine) -> LocalModel:
        return describe_model(cfg.model) if engine.name == "fake" else ensure_model(cfg.model)

    def _workload_row(self, cfg: ServingConfig, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        row = {**describe_model(cfg.model).workload(), **cfg.workload.describe(), **(extra or {})}
        return {k: v for k, v in row.items() if v is not None}

    def measurement_id(self, cfg: ServingConfig | Mapping[str, Any]) -> str:
        cfg = _as_config(cfg)
        engine = self.engine(cfg.engine)
        knobs = cfg.validate(engine)
        return measurement_key("serving", self._workload_row(cfg), engine.config_row(knobs),
                               self.hardware["hardware_id"])

    def describe(self, cfg: ServingConfig | Mapping[str, Any]) -> dict[str, Any]:
        """The columns ``cfg``'s row will have that are known before launching it (kind,
        hardware, ``workload.*``, ``config.*``; no metric): what a model predicts it from."""
        cfg = _as_config(cfg)
        engine = self.engine(cfg.engine)
        knobs = cfg.validate(engine)
        return {"kind": "serving", "hardware_id": self.hardware["hardware_id"],
                "hardware_json": json.dumps(self.hardware, sort_keys=True, separators=(",", ":"), default=str),
                **{f"workload.{k}": v for k, v in self._workload_row(cfg).items()},
                **{f"config.{k}": v for k, v in engine.config_row(knobs).items()}}

    def command_line(self, cfg: ServingConfig, port: int = 8080) -> str:
        """The ready-to-paste command that starts this config's server."""
        engine = self.engine(cfg.engine)
        return engine.command_line(cfg.knobs, self._model(cfg, engine), port)

    # ------------------------------------------------------------------ measuring
    def _software(self, engine: Engine) -> dict[str, Any]:
        from perfpred import __version__

        software: dict[str, Any] = {"python": platform.python_version(), "perfpred": __version__,
                                    "engine": engine.name, "engine_version": engine.version()}
        with contextlib.suppress(ImportError):
            import aiohttp

            software["aiohttp"] = aiohttp.__version__
        return software

    def _row(self, cfg: ServingConfig, engine: Engine, knobs: dict[str, Any], status: str, *,
             metrics: dict[str, float] | None = None, raw_ms: Sequence[float] = (), error: str | None = None,
             workload_extra: Mapping[str, Any] | None = None, power: PowerReading | None = None) -> Measurement:
        spread = latency_spread(raw_ms) if status == "ok" else {}
        clean = {k: float(v) for k, v in (metrics or {}).items() if v is not None and math.isfinite(v)}
        return Measurement(
            kind="serving", workload=self._workload_row(cfg, workload_extra), config=engine.config_row(knobs),
            hardware_id=self.hardware["hardware_id"], hardware=self.hardware, status=status,
            raw_times_ms=[float(t) for t in raw_ms] if status == "ok" else [],
            n_runs=len(raw_ms) if status == "ok" and raw_ms else None, metrics=clean, error=error,
            power_source=power.power_source if power else "unavailable",
            power_w=power.power_w if power else None, energy_j=power.energy_j if power else None,
            load_avg_1m=os.getloadavg()[0], software=self._software(engine), **spread,
        )

    def start(self, cfg: ServingConfig) -> RunningServer:
        """Start this config's server (healthy) for use outside ``measure``; stop it with ``with``."""
        engine = self.engine(cfg.engine)
        cfg.validate(engine)
        self._n_started += 1
        log_path = self.log_dir / f"{engine.name}-{os.getpid()}-{self._n_started}.log"
        return engine.start(cfg.knobs, self._model(cfg, engine), startup_timeout_s=self.startup_timeout_s,
                            log_path=log_path)

    def measure(self, cfg: ServingConfig | Mapping[str, Any]) -> Measurement:
        """Run one config's load test; every failure is a row with its status, never an exception."""
        cfg = _as_config(cfg)
        engine = self.engine(cfg.engine)
        knobs = cfg.validate(engine)
        try:
            server = self.start(cfg)
        except EngineStartError as exc:
            metrics = {"startup_ms": exc.startup_ms} if exc.startup_ms is not None else {}
            return self._row(cfg, engine, knobs, exc.status, metrics=metrics, error=_with_log(str(exc), exc.log_tail))
        with server:
            return self._measure_on(server, cfg, engine, knobs)

    def _load(self, server: RunningServer, workload: ServingWorkload, *, warmup: bool = False,
              stop_early: StopEarly | None = None) -> LoadResult:
        vocab = server.model.spec.vocab_size
        return run_load(server.base_url, workload, model_name=server.engine.served_name(server.model),
                        vocab_tokens=vocab, warmup=warmup, stop_early=stop_early, alive=server.alive)

    def _measure_on(self, server: RunningServer, cfg: ServingConfig, engine: Engine, knobs: dict[str, Any],
                    workload: ServingWorkload | None = None,
                    workload_extra: Mapping[str, Any] | None = None,
                    stop_early: StopEarly | None = None) -> Measurement:
        workload = workload or cfg.workload
        if workload.warmup_requests:
            warm = self._load(server, workload, warmup=True)
            if warm.server_lost is not None:
                server.lost = warm.server_lost
                return self._failed(server, cfg, engine, knobs, {}, workload_extra, None,
                                    _first_error(warm.results), warm.server_lost, "warm-up")
        before = server.metrics()
        self.power.start()
        load = self._load(server, workload, stop_early=stop_early)
        power = self.power.stop()
        metrics = summarize(load.results, load.duration_s, self.slo)
        out_tokens = sum(r.output_tokens for r in load.results if r.ok)
        if power.energy_j and out_tokens:
            metrics["output_tokens_per_j"] = out_tokens / power.energy_j
            metrics["energy_per_output_token_j"] = power.energy_j / out_tokens
        if load.stopped_early:
            metrics["stopped_early"] = 1.0
            metrics["n_not_sent"] = float(load.n_not_sent)
            # The cancelled requests must leave the server before the next load starts on it.
            metrics["idle_wait_s"] = wait_until_idle(server)
        metrics["startup_ms"] = server.startup_ms
        metrics["client_cpu_s"] = load.client_cpu_s
        if load.duration_s > 0:
            metrics["client_cpu_frac"] = load.client_cpu_s / load.duration_s
        metrics.update(_settled_cross_check(server, before, load.results))
        ok_ms = [r.e2e_ms for r in load.results if r.ok and r.e2e_ms is not None]
        error = _first_error(load.results)
        # Requests fail the moment a dying server drops its sockets, which can be before the
        # process has exited on a loaded machine: after a failed request (not one the client
        # cancelled itself on stopping early), give it a moment so the row says it died.
        if load.server_lost is not None:
            server.lost = load.server_lost
        failed = any(r.error and r.error != STOPPED_EARLY for r in load.results)
        if server.exited(within_s=DYING_SERVER_GRACE_S if failed or server.lost else 0.0) or server.lost:
            return self._failed(server, cfg, engine, knobs, metrics, workload_extra, power, error,
                                server.lost, "load test")
        if not ok_ms:
            if load.stopped_early:  # it measured what it had to (the bound was missed), but no request finished
                return self._row(cfg, engine, knobs, "timeout", metrics=metrics, workload_extra=workload_extra,
                                 power=power, error="stopped early before any request finished: the TTFT bound was "
                                                    f"missed ({error or 'no request finished'})")
            timeouts = all((r.error or "").startswith("timeout") for r in load.results)
            return self._row(cfg, engine, knobs, "timeout" if timeouts else "runtime_error", metrics=metrics,
                             workload_extra=workload_extra, error=_with_log(error or "no request succeeded",
                                                                            server.log_tail()), power=power)
        if load.stopped_early:
            # Its latencies are those of the requests that finished before the bound was missed,
            # the fastest: no "ok" row for a model of latency under load to learn from.
            return self._row(cfg, engine, knobs, "timeout", metrics=metrics, raw_ms=ok_ms,
                             workload_extra=workload_extra, power=power,
                             error=f"stopped early: the TTFT bound was missed; its latencies cover only the "
                                   f"{len(ok_ms)} requests that finished first")
        return self._row(cfg, engine, knobs, "ok", metrics=metrics, raw_ms=ok_ms, error=error,
                         workload_extra=workload_extra, power=power)

    def _failed(self, server: RunningServer, cfg: ServingConfig, engine: Engine, knobs: dict[str, Any],
                metrics: dict[str, float], workload_extra: Mapping[str, Any] | None, power: PowerReading | None,
                error: str | None, lost: str | None, during: str) -> Measurement:
        """The row of a server that died or stopped serving during a load: its status from the log
        (an out-of-memory message, a refused argument, else ``runtime_error``) and how it ended."""
        code = server.process.poll()
        status, reason = failure_message(server.log_for_classification(), code)
        how = describe_exit(code) if code is not None else "stopped serving"
        message = f"{engine.name} {how} during the {during} ({reason})" + (f": {lost}" if code is None else "")
        return self._row(cfg, engine, knobs, status, metrics=metrics, workload_extra=workload_extra,
                         error=_with_log(message + (f"; {error}" if error else ""), server.log_tail()), power=power)

    def run(self, configs: Sequence[ServingConfig], store: MeasurementStore, *, progress: bool = False) -> Any:
        """Measure each config not yet in ``store``, and again each whose stored row is
        :func:`retryable` (its new row replaces the old); each row is appended as soon as it exists."""
        from perfpred.collect._sweep import run_sweep

        return run_sweep(self, list(configs), store, progress=progress, remeasure=retryable)

    # ------------------------------------------------------------------ sustainable rate
    def sustainable_rate_id(self, cfg: ServingConfig | Mapping[str, Any], slo: Slo,
                            probe_duration_s: float = 10.0) -> str:
        """The ``measurement_id`` of the row :meth:`sustainable_rate` gives for these arguments,
        known before any launch (so a re-run can skip a search already stored)."""
        cfg = _as_config(cfg)
        engine = self.engine(cfg.engine)
        knobs = cfg.validate(engine)
        search_cfg, extra = _rate_search(cfg, slo, probe_duration_s)
        return measurement_key("serving", self._workload_row(search_cfg, extra), engine.config_row(knobs),
                               self.hardware["hardware_id"])

    def sustainable_rate(self, cfg: ServingConfig, slo: Slo, *, start_rps: float | None = 1.0, max_probes: int = 8,
                         rel_tol: float = 0.15, min_rps: float = 0.05, max_rps: float = 1000.0,
                         probe_duration_s: float = 10.0, min_requests: int = 10,
                         max_requests: int | None = None, growth: float = 2.0, capacity_fraction: float = 0.8,
                         capacity_concurrency: int = 16,
                         on_load: Callable[[Measurement], None] | None = None) -> Measurement:
        """The highest Poisson rate whose run meets ``slo`` (bracketing, then bisection), as one row.

        One server serves every probe. Probe ``i`` sends ``rate x probe_duration_s`` requests (at
        least ``min_requests``) at that rate, so its arrivals span ``probe_duration_s`` at any
        rate: a queue that builds faster than the server drains it shows in its latencies.
        ``max_requests`` (default: none) caps a probe for safety; a capped probe's arrivals span
        less, which its rows say (``probe_arrivals_s``; the search row counts ``probes_capped``).
        The row's metrics are those of the best passing probe plus ``sustainable_rate_rps``,
        ``n_probes`` and ``first_failing_rate_rps`` (the lowest probed rate that missed); where no
        probe missed, ``sustainable_rate_is_lower_bound`` = 1 (the search stopped at ``max_rps`` or
        its probe budget). Where none passed, the row has no ``sustainable_rate_rps`` (the rate is
        below ``first_failing_rate_rps``, not 0) and the probes' rates and outcomes go to ``error``.

        ``start_rps=None`` first measures the server's capacity (requests/s completed in a
        closed loop of ``capacity_concurrency`` or of the engine's slots, ``max_num_seqs``, where it
        has more: the server saturated, as vLLM's auto_tune.sh starts from an infinite rate),
        starts the search at ``capacity_fraction`` of it and never probes above it (the search's
        ``max_rps`` becomes the capacity): no rate above capacity is sustainable, so none is
        reported, however short a probe hides the queue; and the search skips the probes a fixed
        start spends far below it. That run is not counted in ``max_probes``; the row
        keeps it as ``capacity_rps``.

        A probe stops as soon as its TTFT quantile is sure to miss the bound (``StopEarly``: that
        many requests already waited longer for a first token), cancels what is in flight, and
        waits for the server to go idle before the next probe: the verdict is the one the whole
        probe would give, at a fraction of the time an overloaded server takes to drain it.

        ``on_load`` receives every load the search ran (the capacity run and each probe) as its
        own row the moment it ends: an ordinary load-test row at that rate or concurrency, with
        ``workload.search`` = ``"sustainable_rate_load"`` and ``metric.slo_met`` (1/0). A search
        measures each config under 4-6 loads; a predictor of latency at a given load learns from
        all of them, not only from the rate the search settled on.
        """
        slo.validate()
        cfg = _as_config(cfg)
        engine = self.engine(cfg.engine)
        knobs = cfg.validate(engine)
        search_cfg, extra = _rate_search(cfg, slo, probe_duration_s)
        try:
            server = self.start(search_cfg)
        except EngineStartError as exc:
            return self._row(search_cfg, engine, knobs, exc.status, workload_extra=extra,
                             error=_with_log(str(exc), exc.log_tail))
        rows: dict[float, Measurement] = {}
        capacity_rps = None
        load_extra = {"search": "sustainable_rate_load", **slo.describe()}

        def report(row: Measurement, met: bool | None = None) -> None:
            if on_load is not None:
                met = row.status == "ok" and _meets(row, slo)[0] if met is None else met
                on_load(replace_row(row, metrics={**row.metrics, "slo_met": float(met)}))

        with server:
            if start_rps is None:
                # Fewer requests in flight than the engine has slots would leave it unsaturated:
                # its closed-loop rate would be no capacity, and the cap below would be wrong.
                slots = int(engine.config_row(knobs).get("max_num_seqs") or 0)
                capacity_concurrency = max(capacity_concurrency, slots)
                capacity_rps, failed = self._capacity(server, search_cfg, engine, knobs, load_extra,
                                                      capacity_concurrency, report)
                if failed is not None:
                    return replace_row(failed, workload=self._workload_row(search_cfg, extra))
                max_rps = min(max_rps, capacity_rps)  # no rate above capacity is sustainable
                min_rps = min(min_rps, max_rps)
                start_rps = min(max(capacity_fraction * capacity_rps, min_rps), max_rps)
            capped: list[float] = []

            def probe(rate: float) -> tuple[bool, list[str]]:
                wanted = max(min_requests, math.ceil(rate * probe_duration_s))
                n = int(wanted if max_requests is None else min(max_requests, wanted))
                if n < wanted:
                    capped.append(rate)
                # A probe whose TTFT quantile is already over the bound stops there: same verdict.
                stop = StopEarly.for_quantile(slo.ttft_ms, slo.quantile, n) if slo.ttft_ms is not None else None
                # A seed per probe: a prompt the server has seen is served from its prompt cache
                # (llama-server: 2.3x the requests/s on a repeated closed-loop run of small-20m).
                workload = replace(cfg.workload, rate_rps=rate, concurrency=None, n_requests=n,
                                   seed=cfg.workload.seed + 1 + len(rows),
                                   warmup_requests=0 if rows else cfg.workload.warmup_requests)
                load_cfg = replace(search_cfg, workload=workload)
                row = self._measure_on(server, load_cfg, engine, knobs, workload, load_extra, stop)
                # The span its arrivals covered (probe_duration_s unless max_requests capped it).
                row = replace_row(row, metrics={**row.metrics, "probe_arrivals_s": n / rate})
                if row.metrics.get("stopped_early") and server.lost is None:
                    verdict = False, [*_meets(row, slo)[1]] or ["stopped early"]  # missed, whatever its status
                elif row.status != "ok" or not server.alive() or server.lost is not None:
                    verdict = False, [f"status {row.status}"]
                else:
                    verdict = _meets(row, slo)
                report(row, verdict[0])
                # The search's row describes the search, not this probe's load.
                rows[rate] = replace_row(row, workload=self._workload_row(search_cfg, extra))
                return verdict

            search = find_sustainable_rate(probe, start_rps=start_rps, max_probes=max_probes, rel_tol=rel_tol,
                                           min_rps=min_rps, max_rps=max_rps, growth=growth,
                                           stop=lambda: not server.alive() or server.lost is not None)
        found = {} if capacity_rps is None else {"capacity_rps": capacity_rps}
        if capped:
            found["probes_capped"] = float(len(capped))
        return self._rate_row(search_cfg, engine, knobs, search, rows, extra, found)

    def _capacity(self, server: RunningServer, cfg: ServingConfig, engine: Engine, knobs: dict[str, Any],
                  extra: dict[str, Any], concurrency: int,
                  report: Callable[[Measurement], None]) -> tuple[float, Measurement | None]:
        """Requests/s the server completes with ``concurrency`` requests always in flight (its
        warm-up included); a failed run comes back as the row to report instead."""
        workload = replace(cfg.workload, rate_rps=None, concurrency=concurrency,
                           n_requests=max(3 * concurrency, cfg.workload.n_requests))
        load_cfg = replace(cfg, workload=workload)
        row = self._measure_on(server, load_cfg, engine, knobs, workload, extra)
        report(row)
        capacity = row.metrics.get("requests_per_s")
        if row.status != "ok" or not server.alive() or not capacity or not math.isfinite(capacity):
            reason = row.error or f"status {row.status}, requests_per_s={capacity!r}"
            return 0.0, replace_row(row, status=row.status if row.status != "ok" else "runtime_error",
                                    error=f"the capacity run before the rate search failed: {reason}")
        return float(capacity), None

    def _rate_row(self, cfg: ServingConfig, engine: Engine, knobs: dict[str, Any], search: RateSearch,
                  rows: dict[float, Measurement], extra: dict[str, Any],
                  found: dict[str, float]) -> Measurement:
        """The search's row; ``found``: what the search measured besides the probes (its capacity run)."""
        probes = "; ".join(f"{p.rate_rps:.3g} rps {'met' if p.met else 'missed: ' + ', '.join(p.violations)}"
                           for p in search.probes)
        if search.rate_rps is None:
            last = rows[search.probes[-1].rate_rps] if search.probes else None
            # A probe stopped early missed the SLO (its status says whether any request finished);
            # any other failed probe is the search's failure.
            if last is not None and last.status != "ok" and not last.metrics.get("stopped_early"):
                return replace_row(last, metrics={**last.metrics, **found}, error=f"{last.error} [probes: {probes}]")
            # Censored, not zero: the search may have spent its probes far above min_rps.
            metrics = {**found, "n_probes": float(len(search.probes))}
            if search.failed_rps is not None:
                metrics["first_failing_rate_rps"] = search.failed_rps
            return self._row(cfg, engine, knobs, "ok", metrics=metrics, workload_extra=extra,
                             error="no probed rate met the SLO" + (
                                 f" (the sustainable rate is below {search.failed_rps:.3g} rps)"
                                 if search.failed_rps is not None else "") + f": {probes}")
        best = rows[search.rate_rps]
        metrics = {**best.metrics, **found, "sustainable_rate_rps": search.rate_rps,
                   "n_probes": float(len(search.probes))}
        if search.failed_rps is not None:
            metrics["first_failing_rate_rps"] = search.failed_rps
        else:  # every probe met it: the search stopped at its ceiling or budget, not at a miss
            metrics["sustainable_rate_is_lower_bound"] = 1.0
        return self._row(cfg, engine, knobs, "ok", metrics=metrics, raw_ms=best.raw_times_ms, workload_extra=extra)


def wait_until_idle(server: RunningServer, timeout_s: float = 60.0, poll_s: float = 0.2) -> float:
    """Seconds until the server's busy gauges (requests running or queued) all read zero; at most
    ``timeout_s``, and no wait for an engine without such gauges or a server that is gone."""
    gauges = server.engine.busy_gauges
    t0 = time.monotonic()
    while gauges and server.alive() and time.monotonic() - t0 < timeout_s:
        values = server.metrics()
        if not all(g in values for g in gauges) or sum(values[g] for g in gauges) == 0:
            break
        time.sleep(poll_s)
    return time.monotonic() - t0


def replace_row(row: Measurement, **changes: Any) -> Measurement:
    return replace(row, **changes)


def _meets(row: Measurement, slo: Slo) -> tuple[bool, list[str]]:
    violations = slo.metric_violations(row.metrics)
    return not violations, violations


def _with_log(message: str, tail: str) -> str:
    return message + ("\n--- server log tail ---\n" + tail if tail else "")


def _as_config(cfg: ServingConfig | Mapping[str, Any]) -> ServingConfig:
    """A ServingConfig from itself or from a flat dict ``{"engine": ..., knob: value, ...}`` (tuner style)."""
    if isinstance(cfg, ServingConfig):
        return cfg
    if not isinstance(cfg, Mapping) or "engine" not in cfg:
        raise InvalidInputError(f"a serving config must be a ServingConfig or a dict with `engine`, but got {cfg!r}")
    knobs = {k: v for k, v in cfg.items() if k not in ("engine", "workload", "model")}
    return ServingConfig(cfg["engine"], knobs, cfg.get("workload") or ServingWorkload(concurrency=1),
                         cfg.get("model") or "tiny")


def _settled_cross_check(server: RunningServer, before: dict[str, float], results: list[RequestResult],
                         settle_s: float = 2.0) -> dict[str, float]:
    """The cross-check, re-scraped for up to ``settle_s`` while the counts disagree.

    Servers update their counters as a request is released, which may be just after the
    client read its last chunk; a mismatch that persists is real and is kept.
    """
    deadline = time.monotonic() + settle_s
    while True:
        after = server.metrics() if server.alive() else {}
        out = _cross_check(server.engine, before, after, results)
        if out.get("server_counts_match", 1.0) == 1.0 or time.monotonic() > deadline or not after:
            return out
        time.sleep(0.05)


def _cross_check(engine: Engine, before: dict[str, float], after: dict[str, float],
                 results: list[RequestResult]) -> dict[str, float]:
    """The server's own counts over the run, beside the client's, and whether they agree."""
    out: dict[str, float] = {}
    agree = []
    client_out = sum(r.output_tokens for r in results if r.ok)
    if engine.output_tokens_counter:
        server_out = delta(before, after, engine.output_tokens_counter)
        if server_out is not None:
            out["server_output_tokens"] = server_out
            out["client_output_tokens"] = float(client_out)
            agree.append(server_out == client_out)
    if engine.prompt_tokens_counters:
        parts = [delta(before, after, name) for name in engine.prompt_tokens_counters]
        if all(p is not None for p in parts):
            out["server_prompt_tokens"] = float(sum(parts))  # type: ignore[arg-type]
    if engine.requests_counter:
        server_req = delta(before, after, engine.requests_counter)
        if server_req is not None:
            out["server_requests"] = server_req
            client_req = len(results) if engine.requests_counter_counts_failures else sum(r.ok for r in results)
            agree.append(server_req == client_req)
    for key, total, count, to_ms in engine.server_latency_means:
        n, seconds = delta(before, after, count), delta(before, after, total)
        if n is not None and n > 0 and seconds is not None:
            out[key] = seconds / n * to_ms
    batch = _llama_avg_batch(before, after)
    if batch is not None:
        out["avg_batch_size"] = batch
    if agree:
        out["server_counts_match"] = float(all(agree))
    return out


def _llama_avg_batch(before: dict[str, float], after: dict[str, float]) -> float | None:
    """Busy slots per decode call over the run, from llama-server's running average and decode counter."""
    ratio, calls = "llamacpp:n_busy_slots_per_decode", "llamacpp:n_decode_total"
    if not all(name in d for name in (ratio, calls) for d in (before, after)):
        return None
    n = after[calls] - before[calls]
    if n <= 0:
        return None
    return (after[ratio] * after[calls] - before[ratio] * before[calls]) / n


def _rate_search(cfg: ServingConfig, slo: Slo, probe_duration_s: float) -> tuple[ServingConfig, dict[str, Any]]:
    """The config a rate search launches and the workload columns of its row, which describes the
    search, not one probe: no single rate or request count."""
    extra = {"search": "sustainable_rate", **slo.describe(), "probe_duration_s": probe_duration_s,
             "rate_rps": None, "n_requests": None, "arrival": "poisson"}
    return replace(cfg, workload=replace(cfg.workload, rate_rps=1.0, concurrency=None)), extra
