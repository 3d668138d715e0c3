"""Multi-objective baselines on the same hardware backend: Optuna samplers and random order.

Each returns one dict per hardware evaluation, in order: the config's params and the
measured value of every tracked metric (None when the run failed or did not report it), so
the scores of every strategy (:mod:`perfpred.tuner._pareto_scoring`) line up evaluation by
evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from perfpred.tuner._baselines import optuna_sampler, suggestions_in
from perfpred.tuner._objectives import (
    MetricBound,
    Objective,
    metric_value,
    parse_constraints,
    parse_objectives,
    tracked_metrics,
)
from perfpred.tuner._rounds import HardwareBackend
from perfpred.tuner._space import SearchSpace
from perfpred.tuner._study import config_key, row_config

Row = dict[str, Any]


def _measure(backend: HardwareBackend, config: Mapping[str, Any], metrics: Sequence[str]) -> Row:
    m = backend.measure(config)
    return {**config, **{name: metric_value(m, name) for name in metrics}, "status": m.status}


def random_order_search(backend: HardwareBackend, candidates: pd.DataFrame, budget: int,
                        metrics: Sequence[str], *, seed: int = 0,
                        stop: Callable[[list[Row]], bool] | None = None) -> list[Row]:
    """Measure distinct candidates in a uniformly random order (executed, not simulated)."""
    order = np.random.default_rng(seed).permutation(len(candidates))[:budget]
    rows: list[Row] = []
    for i in order:
        rows.append(_measure(backend, row_config(candidates, int(i)), metrics))
        if stop is not None and stop(rows):
            break
    return rows


def optuna_pareto_search(backend: HardwareBackend, space: SearchSpace, candidates: pd.DataFrame, budget: int,
                         objectives: Sequence[str | Objective], constraints: Sequence[str | MetricBound] = (), *,
                         sampler: str = "nsga2", seed: int = 0, population_size: int | None = None,
                         max_invalid_per_eval: int = 200,
                         stop: Callable[[list[Row]], bool] | None = None) -> list[Row]:
    """An Optuna study (one direction per objective, SLOs as ``trial.set_constraint``) directly on the
    hardware, no predictor, as a user would run it.

    As :func:`optuna_search`: a suggestion outside ``candidates`` is told as a failure and costs no
    evaluation, and a repeated suggestion reuses its first result. ``population_size`` (NSGA-II,
    default Optuna's 50) matters on small budgets: a generation must complete before evolution starts.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    objectives = parse_objectives(objectives)
    constraints = parse_constraints(constraints)
    study = optuna.create_study(directions=[o.direction for o in objectives],
                                sampler=optuna_sampler(sampler, seed, population_size=population_size))
    metrics = tracked_metrics(objectives, constraints)
    valid = {config_key(row_config(candidates, i)) for i in range(len(candidates))}
    seen: dict[str, Row] = {}
    rows: list[Row] = []
    if budget < 1 or not valid:
        return rows
    for trial, config, key in suggestions_in(study, space, valid, budget * max_invalid_per_eval):
        if key not in seen:
            seen[key] = _measure(backend, config, metrics)
            rows.append(seen[key])
        row = seen[key]
        values = [row[o.metric] for o in objectives]
        if row["status"] != "ok" or any(v is None for v in values):
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            for c in constraints:
                value = row[c.metric]
                trial.set_constraint(str(c), c.violation(value) if value is not None else float("inf"))
            study.tell(trial, values if len(values) > 1 else values[0])
        if stop is not None and rows and row is rows[-1] and stop(rows):
            break
        if len(rows) >= budget or len(seen) >= len(valid):
            break
    return rows
