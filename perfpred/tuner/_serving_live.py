"""Predictor-first tuning of real serving-engine launches (llama-server, vLLM) under an SLO.

Each evaluation starts the engine with one knob setting, runs a load test, stops it and
appends the row to the store (a failed start or a crashed server is a row too). The goal
is maximised subject to a p99 SLO:

- ``throughput`` (default): output tokens per second at a fixed concurrency (closed loop),
  counted only when the run's p99 TTFT / TPOT / e2e meet the SLO and no request failed.
  One load test per launch, so a launch costs seconds on a small model;
- ``sustainable_rate``: the highest Poisson request rate whose run meets the SLO (bracketing
  and bisection on one server, up to ``max_probes`` load tests per launch: ~5x dearer).

The search (:func:`perfpred.tuner._slo_search.slo_search`) fits the goal's surrogate on every
run that worked, SLO met or not, and one surrogate per SLO metric, and launches next the
config with the best optimistic goal times the probability that it meets the SLO (refitting
after every launch by default); only runs that met it can be reported as the best.

Re-running a tuning run launches again: the machine's state now is what its answer is about,
and a config's new launch replaces its stored row (``MeasurementStore.append(replace=True)``),
so the store and ``history.csv`` show the same values; the Optuna study keeps every launch of
every run as a trial.

A single launch is a noisy verdict on a shared machine (re-launches of one llama-server config
on 2 cores move its throughput by 2-17%), so the best first launch may be a lucky one.
``confirm_repeats`` re-launches the ``confirm_top`` best configs that many times each, in
interleaved rounds of a shuffled order, and answers with the one whose median over all its
launches is highest (a re-launch that fails or misses the SLO counts as 0).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from perfpred.datasets import Measurement, MeasurementStore
from perfpred.errors import InvalidInputError
from perfpred.tuner._serving_prior import fit_serving_prior, serving_prior
from perfpred.tuner._slo_search import Evaluation, SloSearchSettings, slo_search
from perfpred.tuner._space import SearchSpace
from perfpred.tuner._study import row_config

# goodput: requests per second that finished within every per-request bound of the SLO (the
# collector counts them when given the SLO), so the SLO is in the goal itself, not a constraint.
# tokens_per_joule: output tokens per joule of the load test (the inverse of energy per token), from
# a real power sensor only.
GOALS = {"throughput": ("output_tokens_per_s", "tok/s"), "sustainable_rate": ("sustainable_rate_rps", "req/s"),
         "goodput": ("goodput_requests_per_s", "req/s"), "tokens_per_joule": ("output_tokens_per_j", "tok/J")}
# Goals whose runs count only where the SLO's p99 bounds hold (Optuna constraints of the study).
BOUNDED_GOALS = ("throughput", "tokens_per_joule")

# The two batching knobs of each engine, as the engine names them.
DEFAULT_SPACES: dict[str, dict[str, Any]] = {
    "llama-server": {"params": {"parallel": [1, 2, 4, 8, 16], "batch_size": [64, 128, 256, 512],
                                "ubatch_size": [64, 128, 256, 512]},
                     "constraints": ["ubatch_size <= batch_size"]},
    "vllm": {"params": {"max_num_seqs": [1, 2, 4, 8, 16], "max_num_batched_tokens": [128, 256, 512, 1024]}},
    "fake": {"params": {"slots": [1, 2, 4, 8], "token_ms": [0.5, 1.0, 2.0]}},
}
# Knobs held fixed unless given: one thread (llama.cpp's threads spin; on a few shared cores a
# second thread fights the load generator and other jobs and roughly halves throughput), and
# a context that fits 16 slots of the default workload.
DEFAULT_FIXED: dict[str, dict[str, Any]] = {
    "llama-server": {"threads": 1, "ctx_size": 4096},
    "vllm": {"max_model_len": 512},
    "fake": {},
}


def default_space(engine: str) -> SearchSpace:
    if engine not in DEFAULT_SPACES:
        raise InvalidInputError(f"`engine` must be one of {sorted(DEFAULT_SPACES)} for a default space, "
                                f"but got engine={engine!r}")
    return SearchSpace.from_dict(DEFAULT_SPACES[engine])


def default_workload(goal: str = "throughput") -> Any:
    """A short closed-loop probe (throughput) or the per-probe shape of a rate search."""
    from perfpred.collect.serving import ServingWorkload

    if goal == "sustainable_rate":
        return ServingWorkload(n_requests=16, rate_rps=1.0, prompt_tokens=128, output_tokens=16, warmup_requests=2)
    return ServingWorkload(n_requests=48, concurrency=16, prompt_tokens=128, output_tokens=24, warmup_requests=2)


def workload_summary(workload: Any, goal: str, rate_search: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The load every launch of a tuning run is measured under, as ``result.json`` records it."""
    described = workload.describe()
    lengths = {}
    for part in ("prompt", "output"):  # a fixed length as its count, any other as its distribution
        key = f"{part}_tokens" if f"{part}_tokens" in described else f"{part}_dist"
        lengths[key] = described[key]
    if goal == "sustainable_rate":
        rs = dict(rate_search or {})
        out: dict[str, Any] = {"arrival": "poisson", "search": "sustainable_rate",
                               "probe_duration_s": rs.get("probe_duration_s", 10.0)}
        if rs.get("start_rps", 1.0) is None:  # the search starts from a closed-loop capacity run
            out["capacity_concurrency"] = rs.get("capacity_concurrency", 16)
        else:
            out["start_rps"] = rs.get("start_rps", 1.0)
    else:
        out = {"arrival": described["arrival"], "concurrency": workload.concurrency, "rate_rps": workload.rate_rps,
               "n_requests": workload.n_requests}
        out = {k: v for k, v in out.items() if v is not None}
    return {**out, **lengths, "warmup_requests": workload.warmup_requests, "seed": workload.seed}


def load_line(summary: Mapping[str, Any]) -> str:
    """A :func:`workload_summary` in words, for the printed report."""
    tokens = (f"{summary.get('prompt_tokens', summary.get('prompt_dist'))} prompt + "
              f"{summary.get('output_tokens', summary.get('output_dist'))} output tokens")
    if summary.get("search") == "sustainable_rate":
        start = (f"capacity first at {summary['capacity_concurrency']} in flight, or the engine's slots where more"
                 if "capacity_concurrency" in summary
                 else f"from {summary.get('start_rps')} req/s")
        return f"Poisson rate search, {summary['probe_duration_s']:g} s probes ({start}), {tokens} each"
    if summary.get("arrival") == "closed_loop":
        return f"closed loop, {summary['concurrency']} in flight, {summary['n_requests']} requests of {tokens}"
    return f"Poisson arrivals at {summary.get('rate_rps')} req/s, {summary['n_requests']} requests of {tokens}"


def slo_bounds(slo: Any | None) -> dict[str, float]:
    """The SLO's latency bounds as metric names of a row: ``{"ttft_p99_ms": 500.0, ...}``."""
    if slo is None:
        return {}
    q = f"p{slo.quantile:g}"
    return {f"{name}_{q}_ms": float(bound) for name, bound in (("ttft", slo.ttft_ms), ("tpot", slo.tpot_ms),
                                                                ("e2e", slo.e2e_ms)) if bound is not None}


def goal_value(m: Measurement, goal: str, slo: Any | None) -> float | None:
    """The goal (larger is better) of one row, or None when it failed or missed the SLO."""
    if m.status != "ok":
        return None
    value = m.metrics.get(GOALS[goal][0])
    if value is None or not math.isfinite(value) or value <= 0:
        return None
    if goal in BOUNDED_GOALS and slo is not None and slo.metric_violations(m.metrics):
        return None  # the rate search already enforced the SLO on its own rows
    return float(value)


@dataclass
class LiveTuneResult:
    """What a live tuning run found: the best config (knobs as the engine names them) and how."""

    engine: str
    model: str
    goal: str
    unit: str
    best_config: dict[str, Any] | None  # the searched knobs plus the fixed ones
    best_value: float | None  # in ``unit``; met the SLO (confirmed: the median over the config's launches)
    command_line: str | None  # ready to paste
    n_launches: int  # the search's launches (confirmation re-launches: ``n_confirm_launches``)
    history: pd.DataFrame  # one row per launch, in order (``phase``: search or confirm)
    stopped_by: str  # "budget" | "space_exhausted"
    wall_s: float
    study: Any = field(default=None, repr=False)  # the Optuna study holding every launch as a trial
    storage: str | None = None  # its RDB URL (None: in memory)
    loads: str | None = None  # the store holding every load the rate searches ran (None: not kept)
    # The load each launch was measured under (``workload_summary``): arrival, concurrency or probe
    # length, requests, prompt and output tokens.
    workload: dict[str, Any] | None = None
    # One row per finalist re-launched (knobs, ``goal_values`` of every launch, ``median_goal``,
    # ``chosen``); None when confirmation was off.
    confirmation: pd.DataFrame | None = None

    @property
    def n_confirm_launches(self) -> int:
        if self.confirmation is None or self.confirmation.empty:
            return 0
        return int(self.confirmation["goal_values"].map(len).sum() - len(self.confirmation))

    def summary(self) -> dict[str, Any]:
        confirmation = None if self.confirmation is None else self.confirmation.to_dict("records")
        return {"engine": self.engine, "model": self.model, "goal": self.goal, "unit": self.unit,
                "best_config": self.best_config, "best_value": self.best_value, "command_line": self.command_line,
                "n_launches": self.n_launches, "n_confirm_launches": self.n_confirm_launches,
                "stopped_by": self.stopped_by, "wall_s": round(self.wall_s, 1),
                "study_name": self.study.study_name if self.study is not None else None, "storage": self.storage,
                "loads": self.loads, "workload": self.workload, "confirmation": confirmation}


class LiveServingBackend:
    """Launches one config (or answers with a recorded row) and appends the row to the store
    (replacing the row an earlier run stored for it); ``on_stored`` hears of each row stored."""

    def __init__(self, *, engine: str, model: str, workload: Any, goal: str, slo: Any | None,
                 fixed: Mapping[str, Any], collector: Any, store: MeasurementStore | None,
                 space: SearchSpace | None = None, measure: Callable[[Any], Measurement] | None = None,
                 rate_search: Mapping[str, Any] | None = None, loads: MeasurementStore | None = None,
                 on_stored: Callable[[Measurement], None] | None = None) -> None:
        self.engine, self.model, self.workload, self.goal, self.slo = engine, model, workload, goal, slo
        self.loads = loads
        self.on_stored = on_stored
        self.fixed = dict(fixed)
        self.collector = collector
        self.store = store
        self._measure = measure
        self.rate_search = dict(rate_search or {})
        self.space = space

    def config(self, knobs: Mapping[str, Any]) -> Any:
        from perfpred.collect.serving import ServingConfig

        return ServingConfig(self.engine, {**self.fixed, **knobs}, self.workload, self.model)

    def native(self, knobs: Mapping[str, Any]) -> dict[str, Any]:
        """Knob values as the space lists them: a DataFrame row upcasts ints to floats next to a float column."""
        if self.space is None:
            return dict(knobs)
        out = {}
        for name, value in knobs.items():
            domain = self.space.params.get(name)
            matches = [d for d in domain if d == value] if isinstance(domain, list) else []
            out[name] = matches[0] if matches else value
        return out

    def measure(self, knobs: Mapping[str, Any], relaunch: int | None = None) -> Measurement:
        """One launch of ``knobs``; ``relaunch`` (1, 2, ...) tags a repeat launch of a config in its
        rows' workload, which is what keeps it a row of its own in the store."""
        cfg = self.config(self.native(knobs))

        def tagged(m: Measurement) -> Measurement:
            return m if relaunch is None else replace(m, workload={**m.workload, "relaunch": relaunch})

        if self._measure is not None:
            m = self._measure(cfg)
        elif self.goal == "sustainable_rate":
            on_load = None if self.loads is None else (lambda row: self.loads.append([tagged(row)], replace=True))
            m = self.collector.sustainable_rate(cfg, self.slo, on_load=on_load, **self.rate_search)
        else:
            m = self.collector.measure(cfg)
        m = tagged(m)
        if self.store is not None:
            # A re-run's launch replaces the earlier run's row: the store holds what history.csv shows.
            self.store.append([m], replace=True)
        if self.on_stored is not None:
            self.on_stored(m)
        return m

    def slo_met(self, m: Measurement) -> bool:
        """Whether a launch worked and met every p99 bound of the SLO (True without an SLO).

        For ``throughput`` and ``tokens_per_joule`` this is what lets a launch be the answer; for
        ``goodput`` the SLO is in the goal (each request counted only within its bounds), so a
        launch can have the best goodput while its p99 misses a bound: history says so."""
        return m.status == "ok" and not (self.slo is not None and self.slo.metric_violations(m.metrics))

    def summary(self, ev: Evaluation, launch_s: float) -> dict[str, Any]:
        """One launch as a history row: knobs, status, goal, SLO verdict (``slo_met`` and the
        ``slo_violations`` behind it always agree), the latencies behind it; a failed launch's
        throughput and latencies are left empty (what it measured before failing is no result)."""
        m = ev.measurement
        ok = m.status == "ok"
        violations = self.slo.metric_violations(m.metrics) if self.slo is not None and ok else []
        shown = ("output_tokens_per_s", "requests_per_s", "goodput_requests_per_s", "output_tokens_per_j",
                 "sustainable_rate_rps", "ttft_p99_ms", "tpot_p50_ms", "tpot_p99_ms", "e2e_p99_ms")
        return {**self.native(ev.config), "status": m.status, "goal_value": goal_value(m, self.goal, self.slo),
                "slo_met": self.slo_met(m), "slo_violations": "; ".join(violations) or None,
                "launch_s": round(launch_s, 2), "predicted_goal": ev.predicted_goal, "p_feasible": ev.p_feasible,
                **{k: m.metrics.get(k) if ok else None for k in shown}, "error_rate": m.metrics.get("error_rate"),
                "power_w": m.power_w}


def confirm_finalists(done: list[Evaluation], relaunch: Callable[[dict[str, Any], int], Evaluation], *,
                      top: int, repeats: int, seed: int) -> tuple[Evaluation | None, pd.DataFrame]:
    """The ``top`` feasible evaluations by goal, each re-launched ``repeats`` times (every round
    in a new shuffled order, so a drift of the machine hits every finalist alike); the answer is
    the finalist with the highest median goal over all its launches, a launch that failed or
    missed the SLO counting as 0. ``relaunch(config, round)`` launches one config again (round
    1, 2, ...). Returns (the chosen finalist's first evaluation, one row per finalist)."""
    finalists = sorted((e for e in done if e.feasible), key=lambda e: -e.goal)[:top]
    goals: list[list[float]] = [[float(e.goal)] for e in finalists]
    rng = np.random.default_rng(seed)
    for round_ in range(1, repeats + 1):
        for i in rng.permutation(len(finalists)):
            ev = relaunch(finalists[i].config, round_)
            goals[i].append(float(ev.goal) if ev.feasible else 0.0)
    medians = [float(np.median(g)) for g in goals]
    chosen = int(np.argmax(medians)) if finalists else None  # argmax: ties go to the better first launch
    table = pd.DataFrame([{**e.config, "goal_values": g, "median_goal": m, "chosen": i == chosen}
                          for i, (e, g, m) in enumerate(zip(finalists, goals, medians, strict=True))])
    return (finalists[chosen] if chosen is not None else None), table


# What a refusal of a live study that tunes something else says (``open_study``).
STUDY_REFUSAL = {"mixes": "its launches would be mixed with this run's in one study",
                 "remedy": "use another --output or --storage (study_name=... in Python)"}


def study_identity(*, engine: str, model: str, hardware: Mapping[str, Any], workload: Mapping[str, Any],
                   slo: Any | None, fixed: Mapping[str, Any], space: SearchSpace) -> dict[str, Any]:
    """What a live study's launches were measured as, beside its knobs and goal: the engine, the
    model, this machine (the rows' ``hardware_id`` and its GPUs), the load (``workload_summary``),
    the SLO, the knobs held fixed and the searched knobs' domains. A run that differs in any of them
    is refused by the study (``open_study``), so one study never mixes two loads, SLOs or machines."""
    from dataclasses import asdict

    from perfpred.tuner._study import space_identity

    gpus = [g.get("gpu_name") for g in hardware.get("gpus") or [] if isinstance(g, Mapping)]
    return {"engine": engine, "model": model, "hardware": hardware.get("hardware_id"), "gpus": gpus,
            "workload": dict(workload), "slo": asdict(slo) if slo is not None else None,
            "fixed_knobs": dict(sorted(fixed.items())), **space_identity(space)}


def study_recorder(space: SearchSpace, goal: str, slo: Any | None, *, storage: str | None,
                   study_name: str, identity: Mapping[str, Any] | None = None) -> Any:
    """An Optuna study of the launches: the goal maximised, each p99 SLO a named Optuna constraint.

    The ``sustainable_rate`` goal's rate search enforces the SLO inside each launch, so its
    study has no constraints. A study of this name that holds launches of another ``identity``
    (:func:`study_identity`: another load, SLO, fixed knobs, machine or knob domains) is refused in
    one line naming what differs.
    """
    from perfpred.tuner._objectives import MetricBound, Objective
    from perfpred.tuner._pareto_study import ParetoStudyRecorder

    bounds = slo_bounds(slo) if goal in BOUNDED_GOALS else {}
    return ParetoStudyRecorder(space, [Objective(f"metric.{GOALS[goal][0]}", "maximize")],
                               [MetricBound(f"metric.{k}", "<=", v) for k, v in bounds.items()],
                               storage=storage, study_name=study_name, identity=identity, refusal=STUDY_REFUSAL)


def runnable_candidates(space: SearchSpace, backend: LiveServingBackend, engine_obj: Any) -> pd.DataFrame:
    """The space's configs the engine accepts with this workload (checked before anything starts)."""
    frame = space.enumerate()
    keep = []
    for config in frame.to_dict("records"):
        try:
            backend.config({k: v.item() if hasattr(v, "item") else v for k, v in config.items()}).validate(engine_obj)
            keep.append(True)
        except InvalidInputError:
            keep.append(False)
    out = frame[np.asarray(keep, dtype=bool)].reset_index(drop=True)
    if out.empty:
        raise InvalidInputError(f"no config of the space can run on engine '{backend.engine}' with this workload "
                                "(check the fixed knobs, e.g. ctx_size, against the slots and sequence length)")
    return out


def tune_serving_live(engine: str = "llama-server", model: str = "tiny", *, space: SearchSpace | None = None,
                      slo: Any | None = None, goal: str = "throughput", budget: int = 8, seed: int = 0,
                      workload: Any | None = None, fixed_knobs: Mapping[str, Any] | None = None,
                      store: MeasurementStore | str | Path | None = None, run_dir: str | Path | None = None,
                      loads: MeasurementStore | str | Path | None = None,
                      batch_size: int = 1, n_initial: int | None = None, kappa: float = 0.5, surrogate: str = "gp",
                      startup_timeout_s: float | None = None, engines: Mapping[str, Any] | None = None,
                      measure: Callable[[Any], Measurement] | None = None,
                      rate_search: Mapping[str, Any] | None = None, power: Any | None = None,
                      progress: Callable[[dict[str, Any]], None] | None = None,
                      storage: str | None = None, study_name: str | None = None,
                      confirm_repeats: int = 0, confirm_top: int = 3, prior: Any | None = None,
                      calibration_picks: int = 2, gp_trend: bool = False,
                      on_launch: Callable[[Measurement], None] | None = None) -> LiveTuneResult:
    """Tune a serving engine's knobs with real launches, the predictor choosing each next launch.

    Args:
        engine / model: the engine (``llama-server``, ``vllm``, ``fake``) and generated model
            (``tiny``, ``small-20m``).
        space: knobs to search (default: the engine's two batching knobs, ``DEFAULT_SPACES``).
        slo: a :class:`perfpred.collect.serving.Slo` (p99 bounds); required for ``sustainable_rate``
            and ``goodput``.
        goal: ``throughput`` (output tok/s at the workload's concurrency, counted when the SLO's
            p99 bounds hold), ``goodput`` (requests/s that each met the SLO's bounds, at that
            concurrency: DistServe's goodput), ``tokens_per_joule`` (output tokens per joule, i.e.
            the least energy per token, counted when the SLO's bounds hold; needs a power sensor)
            or ``sustainable_rate``.
        power: the collector's power observer (default: this machine's real sensor; on a GPU
            server ``perfpred.collect.power_observer("cuda")``).
        budget: engine launches at most; no config is launched twice.
        workload: the load test (default: :func:`default_workload`).
        fixed_knobs: knobs held fixed (default: ``DEFAULT_FIXED[engine]``; given ones are added).
        store: where each launch's row is appended (a MeasurementStore or a path; default
            ``run_dir/store`` when ``run_dir`` is given). A config launched again (a re-run of the
            same tuning) gets its new row in place of the stored one: nothing is reused, nothing
            measured is dropped.
        run_dir: server logs and the default store.
        loads: with ``goal="sustainable_rate"``, where every load each rate search runs (its
            capacity run and each probe, at its rate, with ``metric.slo_met``) is appended: the
            training rows of latency under a given load (default ``run_dir/loads`` when
            ``run_dir`` is given). A search runs 5-10 loads per launch; this keeps them all.
        batch_size / n_initial / kappa / surrogate: launches per predictor refit (default 1), the
            space-filling start, exploration weight, ``gp`` or ``xgb`` (:class:`SloSearchSettings`).
        engines: engine objects by name (``{"llama-server": LlamaServerEngine(binary=...)}``).
        measure: replaces the launch with ``ServingConfig -> Measurement`` (replaying a recorded grid).
        rate_search: keyword arguments of ``ServingCollector.sustainable_rate``.
        progress: called with each launch's summary row.
        storage / study_name: the Optuna RDB storage every launch is recorded in as a trial
            (source ``measured``, the prediction that chose it, each SLO as a constraint; default
            ``sqlite:///RUN_DIR/study.db`` with a run directory, else in memory), for optuna-dashboard.
        confirm_repeats / confirm_top: after the search, re-launch the ``confirm_top`` best
            configs ``confirm_repeats`` times each and answer with the best median
            (:func:`confirm_finalists`); 0 repeats (default) answers with the best single launch.
            These launches come on top of ``budget`` and are rows of the store and trials of the
            study like the others (``phase`` confirm).
        prior: earlier serving runs to start from instead of a space-filling design (a table of
            rows, a MeasurementStore or its path: other models, engines or machines; or a
            model of the goal fitted on them, :func:`fit_serving_prior`). It predicts the goal
            of every candidate before the first launch; the search launches the prior's best
            first, then ``calibration_picks`` far from it, and models the launches relative to
            the prior as far as the prior has ordered them right (:mod:`perfpred.tuner._slo_search`).
        calibration_picks: with a prior, launches after its first pick that go to the config
            farthest from those launched, to test the prior's ranking early (``SloSearchSettings``).
        gp_trend: add a linear trend in the log2 knobs to the GP surrogate (default off; ``SloSearchSettings``).
        on_launch: called with each launch's row the moment it is stored (before the study
            records it), e.g. to count what an interrupted run kept.
    """
    from perfpred.collect.serving import ServingCollector

    if goal not in GOALS:
        raise InvalidInputError(f"`goal` must be one of {sorted(GOALS)}, but got goal={goal!r}")
    if goal in ("sustainable_rate", "goodput") and slo is None:
        raise InvalidInputError(f"`slo` must be given for goal={goal!r}, but got slo=None")
    if loads is not None and goal != "sustainable_rate":
        raise InvalidInputError(f"`loads` keeps a rate search's loads: it needs goal='sustainable_rate', "
                                f"but got loads={str(loads)!r} with goal={goal!r}")
    if not isinstance(budget, int) or budget < 1:
        raise InvalidInputError(f"`budget >= 1` must hold, but got budget={budget!r}")
    for name, value, low in (("confirm_repeats", confirm_repeats, 0), ("confirm_top", confirm_top, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InvalidInputError(f"`{name} >= {low}` must hold (an integer), but got {name}={value!r}")
    # Before anything is created or launched: the search settings check themselves.
    settings = SloSearchSettings(budget=budget, batch_size=batch_size, n_initial=n_initial, kappa=kappa, seed=seed,
                                 surrogate=surrogate, calibration_picks=calibration_picks, gp_trend=gp_trend)
    if slo is not None:
        slo.validate()
    if prior is not None and not hasattr(prior, "predict"):  # rows: learn from them before anything starts
        prior = fit_serving_prior(prior, GOALS[goal][0], random_state=seed)
    space = space or default_space(engine)
    workload = workload or default_workload(goal)
    fixed = {**DEFAULT_FIXED.get(engine, {}), **(fixed_knobs or {})}
    overlap = sorted(set(fixed) & set(space.names))
    fixed = {k: v for k, v in fixed.items() if k not in overlap}  # searched knobs win over defaults
    run_dir = Path(run_dir) if run_dir else None
    collector = ServingCollector(engines=engines, startup_timeout_s=startup_timeout_s,
                                 slo=slo if goal == "goodput" else None, log_dir=run_dir / "logs" if run_dir else None,
                                 power=power)
    if goal == "tokens_per_joule" and measure is None and collector.power.source == "unavailable":
        raise InvalidInputError("the goal tokens_per_joule needs a power sensor (NVML on a GPU, RAPL on a CPU), but "
                                "this machine's power_source is 'unavailable'")
    backend = LiveServingBackend(engine=engine, model=model, workload=workload, goal=goal, slo=slo, fixed=fixed,
                                 collector=collector, store=None, space=space, measure=measure,
                                 rate_search=rate_search, on_stored=on_launch)
    engine_obj = collector.engine(engine)
    candidates = runnable_candidates(space, backend, engine_obj)  # refused before any store is made
    bounds = slo_bounds(slo) if goal in BOUNDED_GOALS else {}
    prior_logs = None
    if prior is not None:
        described = pd.DataFrame([collector.describe(backend.config(backend.native(row_config(candidates, i))))
                                  for i in range(len(candidates))])
        prior_logs = serving_prior(prior, described, GOALS[goal][0])
    if storage is None and run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        storage = f"sqlite:///{(run_dir / 'study.db').resolve()}"
    model_name = model if isinstance(model, str) else model.name
    summary = workload_summary(workload, goal, rate_search)
    recorder = study_recorder(space, goal, slo, storage=storage,
                              study_name=study_name or f"serving-{engine}-{model_name}-{goal}-seed{seed}",
                              identity=study_identity(engine=engine, model=model_name, hardware=collector.hardware,
                                                      workload=summary, slo=slo, fixed=fixed, space=space))
    # Made once the study has taken this run (a study of another load refuses it before any store exists).
    if isinstance(store, (str, Path)):
        store = MeasurementStore(store, create=True)
    elif store is None and run_dir is not None:
        store = MeasurementStore(run_dir / "store", create=True)
    if isinstance(loads, (str, Path)):
        loads = MeasurementStore(loads, create=True)
    elif loads is None and run_dir is not None and goal == "sustainable_rate" and measure is None:
        loads = MeasurementStore(run_dir / "loads", create=True)
    backend.store, backend.loads = store, loads
    tracked = {GOALS[goal][0], *slo_bounds(slo)}
    rows: list[dict[str, Any]] = []
    clock = [time.perf_counter()]

    def record(ev: Evaluation, phase: str = "search") -> None:
        now = time.perf_counter()
        rows.append({**backend.summary(ev, now - clock[0]), "phase": phase})
        clock[0] = now
        m = ev.measurement
        recorder.record(backend.native(ev.config), {f"metric.{k}": m.metrics.get(k) for k in tracked}, m.status,
                        predicted={f"metric.{GOALS[goal][0]}": ev.predicted_goal}, iteration=ev.iteration,
                        extra={"p_feasible": ev.p_feasible, "launch_s": rows[-1]["launch_s"],
                               "slo_met": rows[-1]["slo_met"], "phase": phase})
        if progress is not None:
            progress(rows[-1])

    def is_feasible(m: Measurement) -> bool:
        return goal_value(m, goal, slo) is not None

    t0 = time.perf_counter()
    done = slo_search(candidates, backend.measure, goal_metric=GOALS[goal][0], bounds=bounds,
                      feasible=is_feasible, settings=settings, on_evaluation=record, prior=prior_logs)
    confirmation = None
    if confirm_repeats > 0:
        def relaunch(config: dict[str, Any], round_: int) -> Evaluation:
            m = backend.measure(config, relaunch=round_)
            ev = Evaluation(index=-1, config=config, measurement=m, goal=goal_value(m, goal, slo),
                            feasible=is_feasible(m), predicted_goal=None, p_feasible=None, iteration=-1)
            record(ev, phase="confirm")
            return ev

        best, confirmation = confirm_finalists(done, relaunch, top=confirm_top, repeats=confirm_repeats, seed=seed)
        best_value = float(confirmation.loc[confirmation["chosen"], "median_goal"].iloc[0]) if best else None
    else:
        best = max((e for e in done if e.feasible), key=lambda e: e.goal, default=None)
        best_value = best.goal if best else None
    best_knobs = command = None
    if best is not None:
        best_knobs = {**fixed, **backend.native(best.config)}
        command = collector.command_line(backend.config(backend.native(best.config)))
    return LiveTuneResult(engine=engine, model=model_name, goal=goal,
                          unit=GOALS[goal][1], best_config=best_knobs, best_value=best_value,
                          command_line=command, n_launches=len(done), history=pd.DataFrame(rows),
                          stopped_by="budget" if len(done) >= budget else "space_exhausted",
                          wall_s=time.perf_counter() - t0, study=recorder.study, storage=storage,
                          loads=str(loads.path) if loads is not None else None, confirmation=confirmation,
                          workload=summary)
