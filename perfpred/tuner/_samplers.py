"""Seeded Optuna samplers by name: for the baselines run on the hardware and for the tuner's
search of its predictor in spaces too large to score whole."""

from __future__ import annotations

from typing import Any

from perfpred.errors import InvalidInputError, MissingDependencyError


def optuna_sampler(name: str, seed: int, *, population_size: int | None = None) -> Any:
    """A seeded Optuna sampler by name: tpe, gp, random, cmaes (needs the ``cmaes`` package) or
    nsga2 (``population_size``: its generation)."""
    import optuna

    factories = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed),
        "gp": lambda: optuna.samplers.GPSampler(seed=seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False),
        "nsga2": lambda: optuna.samplers.NSGAIISampler(
            seed=seed, **({"population_size": population_size} if population_size else {})),
    }
    if name not in factories:
        raise InvalidInputError(f"`sampler` must be one of {sorted(factories)}, but got sampler={name!r}")
    if name == "cmaes":
        try:
            import cmaes  # noqa: F401  (Optuna's CmaEsSampler needs it)
        except ImportError:
            raise MissingDependencyError("the 'cmaes' sampler needs the cmaes package: pip install cmaes") from None
    return factories[name]()
