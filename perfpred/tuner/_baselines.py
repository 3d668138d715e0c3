"""Baseline strategies run on the same hardware backend, for fair comparisons.

Each returns the objective value of every hardware evaluation in order (None for a failed
config), so best-so-far curves of all strategies line up evaluation by evaluation.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from perfpred.errors import InvalidInputError
from perfpred.tuner._loop import HardwareBackend, _objective_value
from perfpred.tuner._space import SearchSpace
from perfpred.tuner._study import config_key, row_config


def optuna_sampler(name: str, seed: int, *, population_size: int | None = None) -> Any:
    """A seeded Optuna sampler by name: tpe, gp, random, or nsga2 (``population_size``: its generation)."""
    import optuna

    factories = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed),
        "gp": lambda: optuna.samplers.GPSampler(seed=seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "nsga2": lambda: optuna.samplers.NSGAIISampler(
            seed=seed, **({"population_size": population_size} if population_size else {})),
    }
    if name not in factories:
        raise InvalidInputError(f"`sampler` must be one of {sorted(factories)}, but got sampler={name!r}")
    return factories[name]()


def suggestions_in(study: Any, space: SearchSpace, valid: set[str], max_asks: int) -> Iterator[tuple[Any, dict, str]]:
    """(trial, config, key) for each of Optuna's suggestions that is a candidate, at most ``max_asks`` asks.

    A suggestion outside the candidates (a config violating the space's constraints) is told as a
    failure without costing a hardware evaluation, as a tuner that checks constraints before
    launching would.
    """
    import optuna

    for _ in range(max_asks):
        trial = study.ask()
        config = space.suggest(trial)
        key = config_key(config)
        if key in valid:
            yield trial, config, key
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)


def random_search(backend: HardwareBackend, candidates: pd.DataFrame, budget: int, *, seed: int = 0,
                  objective: str = "runtime_ms") -> list[float | None]:
    """Measure ``budget`` distinct candidates drawn uniformly (executed, not simulated)."""
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(candidates), size=min(budget, len(candidates)), replace=False)
    return [_objective_value(backend.measure(row_config(candidates, int(i))), objective) for i in picks]


def optuna_search(backend: HardwareBackend, space: SearchSpace, candidates: pd.DataFrame, budget: int, *,
                  sampler: str = "tpe", seed: int = 0, objective: str = "runtime_ms",
                  max_invalid_per_eval: int = 200) -> list[float | None]:
    """An Optuna study directly on the hardware (no predictor), as a user would run it.

    Suggestions outside ``candidates`` (configs that violate the space's constraints) are told
    to Optuna as failures without costing a hardware evaluation, as a tuner that checks
    constraints before launching would; a repeated suggestion reuses its first result.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", sampler=optuna_sampler(sampler, seed))
    valid = {config_key(r) for r in candidates.to_dict("records")}
    seen: dict[str, float | None] = {}
    values: list[float | None] = []
    if budget < 1 or not valid:
        return values
    for trial, config, key in suggestions_in(study, space, valid, budget * max_invalid_per_eval):
        if key in seen:
            value = seen[key]
        else:
            value = _objective_value(backend.measure(config), objective)
            seen[key] = value
            values.append(value)
        if value is None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, value)
        if len(values) >= budget or len(seen) >= len(valid):
            break
    return values
