"""An AutoTVM-style baseline: XGBoost rank model + simulated annealing, in 64-config plans.

What TVM's ``XGBTuner`` (feature_type="knob", loss_type="rank") does, on perfpred's backends:

1. until ``plan_size`` configs are measured, measure random unvisited configs;
2. then, each time another ``plan_size`` are measured: fit an XGBoost *ranking* model
   (``rank:pairwise``) of the measured configs' knob values against their speed (failures
   ranked last), and run ``n_chains`` parallel simulated-annealing chains over the space
   (a move changes one knob to another value; invalid configs are never entered; the
   temperature falls linearly from ``temperature[0]`` to ``temperature[1]``) that keep the
   ``plan_size`` best-predicted unvisited configs seen;
3. measure the plan in order, replacing each pick by a random unvisited config with
   probability ``epsilon`` (AutoTVM's 0.05 epsilon-greedy).

It spends ``budget`` distinct hardware evaluations and returns the objective value of each
(None for a failure), like the other baselines. At budgets up to ``plan_size`` it is random
search by construction, as AutoTVM is.
"""

from __future__ import annotations

import heapq
import math

import numpy as np
import pandas as pd

from perfpred.errors import InvalidInputError
from perfpred.tuner._loop import objective_value
from perfpred.tuner._rounds import HardwareBackend, level_codes
from perfpred.tuner._study import row_config
from perfpred.tuner._surrogate import param_features

PLAN_SIZE = 64
N_CHAINS = 128
N_ITER = 500
TEMPERATURE = (1.0, 0.0)
EPSILON = 0.05


def _rank_model(features: pd.DataFrame, values: np.ndarray, seed: int):
    """XGBoost pairwise ranking of configs by speed (higher relevance = faster; failures lowest)."""
    from xgboost import XGBRanker

    ok = np.isfinite(values)
    relevance = np.zeros(len(values), dtype=int)
    if ok.any():
        rank_fastest_first = np.argsort(np.argsort(values[ok]))
        relevance[ok] = int(ok.sum()) - rank_fastest_first  # the fastest highest, failures 0
    model = XGBRanker(objective="rank:pairwise", n_estimators=100, max_depth=6, learning_rate=0.3,
                      subsample=1.0, min_child_weight=1, random_state=seed, n_jobs=1)
    model.fit(features, relevance, qid=np.zeros(len(values), dtype=int))
    return model


def _anneal(scores: np.ndarray, codes: np.ndarray, cardinalities: np.ndarray, lookup: dict[tuple, int],
            visited: np.ndarray, plan_size: int, rng: np.random.Generator, *, n_chains: int, n_iter: int,
            temperature: tuple[float, float]) -> list[int]:
    """Indices of the ``plan_size`` best-scored unvisited configs found by parallel annealing chains."""
    n = len(scores)
    points = rng.choice(n, size=min(n_chains, n), replace=False)
    current = scores[points]
    heap: list[tuple[float, int]] = []  # (score, index): the plan's worst on top
    in_heap: set[int] = set()

    def offer(idx: int) -> None:
        if visited[idx] or idx in in_heap:
            return
        if len(heap) < plan_size:
            heapq.heappush(heap, (scores[idx], idx))
            in_heap.add(idx)
        elif scores[idx] > heap[0][0]:
            _, dropped = heapq.heapreplace(heap, (scores[idx], idx))
            in_heap.discard(dropped)
            in_heap.add(idx)

    for idx in points:
        offer(int(idx))
    t0, t1 = temperature
    for step in range(n_iter):
        t = t0 + (t1 - t0) * step / max(n_iter - 1, 1)
        proposals = points.copy()
        for c, idx in enumerate(points):
            code = codes[idx].copy()
            knob = rng.integers(len(cardinalities))
            if cardinalities[knob] > 1:
                code[knob] = (code[knob] + rng.integers(1, cardinalities[knob])) % cardinalities[knob]
            proposals[c] = lookup.get(tuple(code), idx)  # an invalid neighbour: stay
        new = scores[proposals]
        with np.errstate(over="ignore"):
            accept = np.exp(np.minimum((new - current) / (t + 1e-5), 0.0)) > rng.random(len(points))
        points = np.where(accept, proposals, points)
        current = np.where(accept, new, current)
        for idx in points:
            offer(int(idx))
    return [idx for _, idx in sorted(heap, reverse=True)]


def autotvm_search(backend: HardwareBackend, candidates: pd.DataFrame, budget: int, *, seed: int = 0,
                   objective: str = "runtime_ms", plan_size: int = PLAN_SIZE, n_chains: int = N_CHAINS,
                   n_iter: int = N_ITER, temperature: tuple[float, float] = TEMPERATURE,
                   epsilon: float = EPSILON) -> list[float | None]:
    """Measure ``budget`` distinct candidates the way AutoTVM's XGBTuner picks them (module doc)."""
    if plan_size < 1 or not 0 <= epsilon <= 1:
        raise InvalidInputError(f"`plan_size >= 1` and `0 <= epsilon <= 1` must hold, but got "
                                f"plan_size={plan_size}, epsilon={epsilon}")
    if candidates.empty:
        raise InvalidInputError("the search space has no valid config (check the constraints)")
    rng = np.random.default_rng(seed)
    candidates = candidates.reset_index(drop=True)
    features = param_features(candidates)
    codes = level_codes(candidates)
    cardinalities = codes.max(axis=0) + 1
    lookup = {tuple(row): i for i, row in enumerate(codes)}
    visited = np.zeros(len(candidates), dtype=bool)
    measured_idx: list[int] = []
    values: list[float | None] = []
    plan: list[int] = []
    budget = min(budget, len(candidates))

    def random_unvisited() -> int:
        return int(rng.choice(np.flatnonzero(~visited)))

    while len(values) < budget:
        if len(values) >= plan_size and len(values) % plan_size == 0:
            y = np.array([math.nan if v is None else float(v) for v in values])
            model = _rank_model(features.iloc[measured_idx], y, seed)
            scores = model.predict(features)
            plan = _anneal(scores, codes, cardinalities, lookup, visited, plan_size, rng, n_chains=n_chains,
                           n_iter=n_iter, temperature=temperature)
        while plan and visited[plan[0]]:
            plan.pop(0)
        idx = plan.pop(0) if plan and rng.random() >= epsilon else random_unvisited()
        visited[idx] = True
        measured_idx.append(idx)
        values.append(objective_value(backend.measure(row_config(candidates, idx)), objective))
    return values
