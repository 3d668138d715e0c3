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
from perfpred.tuner._loop import objective_value
from perfpred.tuner._rounds import HardwareBackend
from perfpred.tuner._samplers import optuna_sampler
from perfpred.tuner._space import SearchSpace
from perfpred.tuner._study import config_key, row_config


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
    return [objective_value(backend.measure(row_config(candidates, int(i))), objective) for i in picks]


def optuna_search(backend: HardwareBackend, space: SearchSpace, candidates: pd.DataFrame | None, budget: int, *,
                  sampler: str = "tpe", seed: int = 0, objective: str = "runtime_ms",
                  max_invalid_per_eval: int = 200, infeasible: str | None = None,
                  storage: str | None = None, study_name: str | None = None,
                  direction: str = "minimize") -> list[float | None]:
    """An Optuna study directly on the hardware (no predictor), as a user would run it.

    Suggestions outside ``candidates`` (configs that violate the space's constraints; with
    ``candidates=None``, for a space too large to list, the constraints are checked) cost no
    hardware evaluation, as with a tuner that checks constraints before launching; a repeated
    suggestion reuses its first result. ``infeasible`` says how Optuna hears of them and of failed
    configs:

    - ``"fail"`` (the default for TPE, random, NSGA-II): a failed trial, which the sampler ignores;
    - ``"constraint"`` (the default for GP): a completed trial with a violated constraint
      (``Trial.set_constraint``) and the worst value measured so far, so the GP also models
      feasibility and steers away. The GP ignores failed trials, and its deterministic acquisition
      then re-proposes the same invalid point until the run gives up. (On a small grid where a
      tenth of the configs is valid, the smooth feasibility model helps little: there "fail",
      which leaves the GP in its random start-up longer, found better configs in a probe.)

    ``storage`` (an Optuna storage URL) keeps the study, as ``study_name``, for optuna-dashboard;
    ``direction`` (``minimize`` or ``maximize``) is the objective's.
    """
    import optuna

    infeasible = infeasible or ("constraint" if sampler == "gp" else "fail")
    if infeasible not in ("fail", "constraint"):
        raise InvalidInputError(f"`infeasible` must be 'fail' or 'constraint', but got infeasible={infeasible!r}")
    if direction not in ("minimize", "maximize"):
        raise InvalidInputError(f"`direction` must be 'minimize' or 'maximize', but got direction={direction!r}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction=direction, sampler=optuna_sampler(sampler, seed), storage=storage,
                                study_name=study_name)
    valid = None if candidates is None else {config_key(r) for r in candidates.to_dict("records")}
    seen: dict[str, float | None] = {}
    values: list[float | None] = []
    worst: float | None = None
    if budget < 1 or (valid is not None and not valid):
        return values
    for _ in range(budget * max_invalid_per_eval):
        trial = study.ask()
        config = space.suggest(trial)
        key = config_key(config)
        value = None
        if key in seen:
            value = seen[key]
        elif (key in valid) if valid is not None else space.is_valid(config):
            value = objective_value(backend.measure(config), objective)
            seen[key] = value
            values.append(value)
        if value is not None:
            worst = value if worst is None else (max(worst, value) if direction == "minimize" else min(worst, value))
            if infeasible == "constraint":
                trial.set_constraint("infeasible", -1.0)
            study.tell(trial, value)
        elif infeasible == "constraint" and worst is not None:
            trial.set_constraint("infeasible", 1.0)
            study.tell(trial, worst)
        else:  # nothing measured yet to stand in for an infeasible config's value
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        if len(values) >= budget or (valid is not None and len(seen) >= len(valid)):
            break
    return values
