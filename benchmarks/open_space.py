"""Spaces too large to score whole: perfpred's predictor search against Optuna on the hardware.

    python benchmarks/open_space.py                 # -> results/open_space.json (~15 min here)
    python benchmarks/open_space.py --seeds 3 --output open_space_smoke

No recorded dataset has continuous tuning parameters, so the hardware here is two synthetic
landscapes with a known optimum (a measurement is the function's value, no noise):
- ``valley``: a learning rate on a log scale (1e-5..1), a fraction, an integer count and a
  categorical mode, with a constraint (``n * x <= 40``); optimum 1.0 at x=0.37, lr=10^-2.5,
  n=20, mode "a";
- ``branin``: the Branin function on its usual box, shifted to 1 + value / 10 (three global
  optima, 1.0398), plus a categorical ``layout`` that adds 0.1 when it is "row".
Strategies, each with the same budget of hardware evaluations and the same seeds: perfpred's
tuner as shipped (a GP surrogate on the configs' unit-cube positions, searched by Optuna TPE each
round, one config measured a round, as Optuna's samplers measure), the same measuring 4 configs a
round (the default before Dec 6, and still a space scored whole's), with the XGBoost ensemble as
surrogate, with a random inner search instead of TPE, and Optuna's TPE, GP and random samplers
run directly on the hardware (invalid configs cost no run, as in the tuning benchmark:
``perfpred.tuner._baselines.optuna_search``).
Scored by best found / optimum after 8, 16 and 32 evaluations.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from _common import write_result

from perfpred.datasets import Measurement
from perfpred.tuner import Continuous, SearchSpace, Tuner, TuneSettings
from perfpred.tuner._baselines import optuna_search

BUDGETS = (8, 16, 32)


def valley(c: dict[str, Any]) -> float:
    x, lr, n = float(c["x"]), float(c["lr"]), float(c["n"])
    return (1.0 + 4 * (x - 0.37) ** 2 + 0.5 * (math.log10(lr) + 2.5) ** 2 + 0.02 * abs(n - 20)
            + (0.3 if c["mode"] == "b" else 0.0))


def branin(c: dict[str, Any]) -> float:
    x, y = float(c["x"]), float(c["y"])
    b, cc, t = 5.1 / (4 * math.pi ** 2), 5 / math.pi, 1 / (8 * math.pi)
    value = (y - b * x ** 2 + cc * x - 6) ** 2 + 10 * (1 - t) * math.cos(x) + 10
    return 1.0 + value / 10 + (0.1 if c["layout"] == "row" else 0.0)


LANDSCAPES: dict[str, tuple[SearchSpace, Callable[[dict[str, Any]], float], float]] = {
    "valley": (SearchSpace({"x": Continuous(0.0, 1.0), "lr": Continuous(1e-5, 1.0, log=True),
                            "n": Continuous(1, 64, integer=True), "mode": ["a", "b"]}, ["n * x <= 40"]),
               valley, 1.0),
    "branin": (SearchSpace({"x": Continuous(-5.0, 10.0), "y": Continuous(0.0, 15.0), "layout": ["col", "row"]}),
               branin, 1.0 + 0.397887 / 10),
}


class Landscape:
    """A HardwareBackend answering with the function's value; counts what it measured."""

    def __init__(self, fn: Callable[[dict[str, Any]], float]) -> None:
        self.fn = fn
        self.values: list[float] = []

    def measure(self, config) -> Measurement:
        value = self.fn(dict(config))
        self.values.append(value)
        return Measurement(kind="kernel", workload={}, config=dict(config), hardware_id="synthetic",
                           runtime_ms=value)


def run_tuner(space: SearchSpace, fn, budget: int, seed: int, **settings: Any) -> list[float]:
    hw = Landscape(fn)
    Tuner(space, hw, TuneSettings(budget=budget, seed=seed, **settings)).run()
    return hw.values


def run_optuna(space: SearchSpace, fn, budget: int, seed: int, sampler: str) -> list[float]:
    """Optuna on the hardware, as the tuning benchmark runs it (invalid configs cost no run; TPE
    hears of them as failed trials, the GP sampler as violated constraints)."""
    values = optuna_search(Landscape(fn), space, None, budget, sampler=sampler, seed=seed)
    return [v for v in values if v is not None]


STRATEGIES: dict[str, Callable[[SearchSpace, Any, int, int], list[float]]] = {
    "perfpred": lambda space, fn, budget, seed: run_tuner(space, fn, budget, seed),
    "perfpred-batch4": lambda space, fn, budget, seed: run_tuner(space, fn, budget, seed, batch_size=4),
    "perfpred-ensemble": lambda space, fn, budget, seed: run_tuner(space, fn, budget, seed, surrogate="ensemble"),
    "perfpred-random-inner": lambda space, fn, budget, seed: run_tuner(space, fn, budget, seed,
                                                                       inner_sampler="random"),
    "optuna-tpe": lambda space, fn, budget, seed: run_optuna(space, fn, budget, seed, "tpe"),
    "optuna-gp": lambda space, fn, budget, seed: run_optuna(space, fn, budget, seed, "gp"),
    "random": lambda space, fn, budget, seed: run_optuna(space, fn, budget, seed, "random"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--output", default="open_space")
    args = parser.parse_args()
    budget = max(BUDGETS)
    out: dict[str, Any] = {}
    for name, (space, fn, optimum) in LANDSCAPES.items():
        out[name] = {"optimum": optimum, "strategies": {}}
        for strategy, run in STRATEGIES.items():
            t0 = time.perf_counter()
            curves = []
            for seed in range(args.seeds):
                values = run(space, fn, budget, seed)
                curves.append(np.minimum.accumulate(values) / optimum)
            seconds = (time.perf_counter() - t0) / args.seeds
            out[name]["strategies"][strategy] = {
                f"best_over_optimum_at_{b}": round(float(np.mean([c[b - 1] for c in curves])), 4) for b in BUDGETS}
            out[name]["strategies"][strategy]["s_per_run"] = round(seconds, 2)
            print(name, strategy, out[name]["strategies"][strategy], flush=True)
    print(write_result(args.output, {"seeds": args.seeds, "budgets": list(BUDGETS), "landscapes": out}))


if __name__ == "__main__":
    from _common import run

    run(main)
