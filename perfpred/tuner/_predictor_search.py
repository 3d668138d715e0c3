"""Search a fitted predictor with an Optuna study: how the tuner finds candidates in a space too
large to score whole (continuous parameters, or more than ``MAX_ENUMERATE`` valid configs).

An enumerable space is scored config by config (the predictor is cheap). Otherwise the tuner
keeps a pool of candidates (valid configs from a Sobol sequence to begin with) and, each round,
runs a seeded Optuna study whose objective is the tuner's own acquisition (the lower confidence
bound, predicted failures last) over the whole space; the study's best configs join the pool, so
the picks can land between and beyond the sampled ones. Each batch of asked trials is scored in
one call (one surrogate fit per batch, not per trial).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from perfpred.tuner._samplers import optuna_sampler
from perfpred.tuner._space import SearchSpace

INNER_SAMPLERS = ("tpe", "cmaes", "gp", "random")


def search_predictor(space: SearchSpace, acquisition: Callable[[pd.DataFrame], np.ndarray], *, n_trials: int,
                     keep: int, sampler: str = "tpe", seed: int = 0, batch: int = 64,
                     start: pd.DataFrame | None = None) -> pd.DataFrame:
    """The ``keep`` best distinct valid configs that an Optuna study minimising ``acquisition``
    finds in ``n_trials`` trials (``acquisition``: a frame of valid configs -> one score per row,
    lower is better). ``start`` configs (e.g. the measured incumbents) are its first trials. A
    config that breaks a constraint is told the worst score seen, so the sampler learns to avoid
    its region."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", sampler=optuna_sampler(sampler, seed))
    distributions = space.optuna_distributions()
    if start is not None:
        for config in start[space.names].to_dict("records"):
            study.enqueue_trial(config, skip_if_exists=True)
    scored = []
    while len(study.trials) < n_trials:
        trials = [study.ask(distributions) for _ in range(min(batch, n_trials - len(study.trials)))]
        frame = space.configs_frame([t.params for t in trials])  # the domains' own values (1 stays 1)
        valid = space.mask(frame)
        values = np.full(len(frame), np.inf)
        if valid.any():
            values[valid] = np.asarray(acquisition(frame[valid].reset_index(drop=True)), dtype=float)
        finite = values[np.isfinite(values)]
        worst = float(finite.max()) + 1.0 if len(finite) else 1.0
        for trial, value in zip(trials, values, strict=True):
            study.tell(trial, float(value) if np.isfinite(value) else worst)
        scored.append(frame.assign(_score=values)[valid & np.isfinite(values)])
    found = pd.concat(scored) if scored else pd.DataFrame(columns=[*space.names, "_score"])
    found = found.sort_values("_score", kind="stable").drop_duplicates(subset=space.names)
    return found.head(keep)[space.names].reset_index(drop=True)
