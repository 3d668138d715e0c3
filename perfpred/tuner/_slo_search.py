"""Predictor-first search that maximises a measured goal subject to upper bounds on other metrics (an SLO).

Each round, on everything measured so far:

1. a surrogate of log(goal) over every run that worked, whether or not it met the bounds (a
   run over the SLO still tells where throughput is high): a Gaussian process on the knobs'
   log2 values (``surrogate="gp"``, the default) or the bootstrap :class:`EnsembleSurrogate`
   (``"xgb"``); the ensemble's failure model gives P(runs) (runs that crashed or never started);
2. one such surrogate per bounded metric (``ttft_p99_ms``...): P(metric <= bound) per
   candidate, a normal in log space with the surrogate's spread (floored at the measurement noise);
3. score = log(upper confidence bound of the goal) + log(P(every bound met) x P(runs)),
   i.e. an optimistic goal weighted by the probability that it counts, as constrained
   Bayesian optimisation weights by the probability of feasibility;
4. the next launch is the best score (with ``batch_size`` > 1, the best scores no two closer
   than ``min_hamming`` differing knobs).

The first ``n_initial`` configs are a space-filling (maximin) design. With a ``prior`` (each
candidate's predicted log goal from a model of earlier runs: other models, engines or
machines) there is no such start: the first launch is the prior's best config, the next
``calibration_picks`` go to the configs farthest from those launched, and after them the goal's
surrogate models the measured log goal minus the prior weighted by how well the prior has
ordered the launches so far (``prior_agreement``), so a prior that ranks this engine's knobs
backwards fades. The SLO metrics are learned from the launches alone. No config is evaluated
twice; the search stops at the budget or when the space is exhausted (the rounds are
:class:`~perfpred.tuner._rounds.PredictorFirstLoop`'s).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from perfpred.datasets import Measurement
from perfpred.errors import InvalidInputError
from perfpred.tuner._loop import diverse_top
from perfpred.tuner._rounds import PredictorFirstLoop, Proposal, level_codes
from perfpred.tuner._study import row_config
from perfpred.tuner._surrogate import MIN_TREE_ROWS, EnsembleSurrogate, param_features


@dataclass(frozen=True)
class SloSearchSettings:
    budget: int
    # One launch per refit: launches run one at a time anyway and a GP refit takes milliseconds, so
    # each pick sees every result before it. Replayed on the recorded serving grids (9 scenarios,
    # 40 seeds, benchmarks/serving_search.py's set-up) 1 reached 0.953 of the best on average
    # against 0.946 for 2, and the best within 2% on 253 of 360 runs against 227: a batch of two
    # at least two knobs apart spent vLLM's 5-launch budget on a max_num_seqs it had ruled out.
    batch_size: int = 1
    n_initial: int | None = None  # default: max(3, min(8, budget // 4))
    kappa: float = 0.5  # exploration weight on the goal's spread (log space)
    ensemble: int = 5
    seed: int = 0
    min_hamming: int = 2
    noise_log: float = 0.1  # floor of a bounded metric's log spread: run-to-run noise is ~5-10%
    # "gp": a Gaussian process on log2 knobs throughout; "xgb": the tuner's bootstrap ensemble (a
    # GP until MIN_TREE_ROWS launches worked: trees cannot split fewer). Replayed on the three
    # recorded CPU serving grids, stated and tight SLOs, 25% of each grid as budget
    # (benchmarks/serving_search.py, 20 seeds to choose and 20 more to check): the GP with kappa
    # 0.5 reached 0.915 / 0.916 of the grid's best on average against 0.872 / 0.882 for the
    # ensemble with kappa 1; the GP interpolates and extrapolates a trend over 12 launches where
    # trees give a config the value of its measured neighbours (the grids' best is a corner).
    # Its fits take milliseconds beside launches of seconds to minutes.
    surrogate: str = "gp"
    # A linear trend in the log2 knobs added to the GP's kernel (``_gp``): it carries a slope to
    # the grid's edge. Off: replayed it gained without noise and not with noisy launches (``_gp``).
    gp_trend: bool = False
    # With a prior: launches after the prior's first pick that go to the config farthest from
    # everything launched, whatever the prior says, so its ranking is tested early (see
    # ``prior_agreement``); the tuner's ``calibration_picks`` does the same for its priors.
    # Replayed on the 9 serving grids with a prior from the other grids, launches noisy (sd 0.1,
    # 20 seeds): 2 reached 0.932 of the best (99 of 180 runs within 2%), 1 reached 0.908 (72),
    # no prior 0.903 (82); with 1, a tight SLO's search began at two corners over the SLO.
    calibration_picks: int = 2

    def __post_init__(self) -> None:
        for name, ok, rule in (("budget", self.budget >= 1, ">= 1"), ("batch_size", self.batch_size >= 1, ">= 1"),
                               ("kappa", self.kappa >= 0, ">= 0"), ("ensemble", self.ensemble >= 2, ">= 2"),
                               ("noise_log", self.noise_log > 0, "> 0"),
                               ("calibration_picks", self.calibration_picks >= 0, ">= 0"),
                               ("surrogate", self.surrogate in ("gp", "xgb"), "in ('gp', 'xgb')")):
            if not ok:
                raise InvalidInputError(f"`{name} {rule}` must hold, but got {name}={getattr(self, name)}")

    @property
    def initial_size(self) -> int:
        return self.n_initial or max(3, min(8, self.budget // 4))


@dataclass
class Evaluation:
    index: int  # row of the candidates
    config: dict[str, Any]
    measurement: Measurement = field(repr=False)
    goal: float | None  # the goal metric when the run worked (met the bounds or not)
    feasible: bool  # worked and met every bound: it may be reported as the best
    predicted_goal: float | None
    p_feasible: float | None
    iteration: int


def _normal_cdf(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.vectorize(math.erf)(z / math.sqrt(2.0)))


class SloSearch(PredictorFirstLoop):
    """The SLO search as a :class:`PredictorFirstLoop` policy: no study, no claims (one process
    launches servers one at a time); what is measured is the list of evaluations."""

    def __init__(self, candidates: pd.DataFrame, measure: Callable[[dict[str, Any]], Measurement], *,
                 goal_metric: str, bounds: Mapping[str, float], feasible: Callable[[Measurement], bool],
                 settings: SloSearchSettings, on_evaluation: Callable[[Evaluation], None] | None = None,
                 prior: np.ndarray | None = None) -> None:
        if candidates.empty:
            raise InvalidInputError("the search space has no valid config (check the constraints)")
        self.prior = _checked_prior(prior, len(candidates))
        self.candidates = candidates.reset_index(drop=True)
        self.measure = measure
        self.goal_metric = goal_metric
        self.bounds = bounds
        self.feasible = feasible
        self.settings = settings
        self.on_evaluation = on_evaluation
        self.features = param_features(self.candidates)
        self.codes = level_codes(self.candidates)
        self.done: list[Evaluation] = []

    def _measured_state(self) -> tuple[np.ndarray, ...]:
        return (np.array([e.index for e in self.done], dtype=int),)

    def _n_measured(self) -> int:
        return len(self.done)

    def _has_prior(self) -> bool:
        return self.prior is not None

    def _propose(self, state: tuple[np.ndarray, ...], measured: np.ndarray, k: int, iteration: int) -> Proposal:
        if self.prior is not None and 1 <= len(self.done) <= self.settings.calibration_picks:
            return Proposal([_farthest(self.codes, measured, self.settings.seed + len(self.done))])
        score, predicted, p_feasible = _score(self.done, self.features, self.bounds, self.settings, self.prior)
        score[measured] = np.inf
        return Proposal(diverse_top(score, self.codes, k, self.settings.min_hamming),
                        predicted=(predicted, p_feasible))

    def _evaluate(self, i: int, proposal: Proposal, iteration: int, t_start: float) -> Evaluation:
        config = row_config(self.candidates, i)
        m = self.measure(config)
        value = m.metrics.get(self.goal_metric) if m.status == "ok" else None
        good = value is not None and math.isfinite(value) and value > 0
        predicted, p_feasible = proposal.predicted if proposal.predicted is not None else (None, None)
        ev = Evaluation(index=i, config=config, measurement=m, goal=float(value) if good else None,
                        feasible=bool(good and self.feasible(m)),
                        predicted_goal=_finite(predicted, i), p_feasible=_finite(p_feasible, i),
                        iteration=iteration)
        self.done.append(ev)
        return ev


def _checked_prior(prior: np.ndarray | None, n: int) -> np.ndarray | None:
    """The prior as a float array of finite log goals, one per candidate."""
    if prior is None:
        return None
    arr = np.asarray(prior, dtype=float)
    if arr.shape != (n,) or not np.isfinite(arr).all():
        raise InvalidInputError(f"a prior must be {n} finite log goals, one per candidate, but got shape "
                                f"{arr.shape} with {int((~np.isfinite(arr)).sum())} non-finite")
    return arr


def _farthest(codes: np.ndarray, measured: np.ndarray, seed: int) -> int:
    """The unmeasured config farthest (normalised level codes) from every measured one; ties at random."""
    x = codes.astype(float)
    span = x.max(axis=0) - x.min(axis=0)
    x = x / np.where(span > 0, span, 1.0)
    dist = np.min(np.linalg.norm(x[:, None, :] - x[measured][None, :, :], axis=2), axis=1)
    dist[measured] = -np.inf
    best = np.flatnonzero(dist >= dist.max() - 1e-12)
    return int(np.random.default_rng(seed).choice(best))


def prior_agreement(prior_log: np.ndarray, measured_log: np.ndarray) -> float:
    """How far to trust a prior here: Kendall's tau between its predictions and the measured
    values over the pairs it tells apart, floored at 0 (1 until such a pair is measured). A prior
    from another engine can rank the knobs backwards (llama-server's rate grids: 1 slot best on
    `tiny`; vLLM's: 16); weighted by this, it fades once launches contradict it."""
    pairs = concordant = 0
    for i in range(len(prior_log)):
        for j in range(i + 1, len(prior_log)):
            dp, dm = prior_log[i] - prior_log[j], measured_log[i] - measured_log[j]
            if abs(dp) < 1e-9 or dm == 0:
                continue
            pairs += 1
            concordant += (dp > 0) == (dm > 0)
    return 1.0 if pairs == 0 else max(0.0, 2.0 * concordant / pairs - 1.0)


def _finite(values: np.ndarray | None, i: int) -> float | None:
    return float(values[i]) if values is not None and np.isfinite(values[i]) else None


def slo_search(candidates: pd.DataFrame, measure: Callable[[dict[str, Any]], Measurement], *, goal_metric: str,
               bounds: Mapping[str, float], feasible: Callable[[Measurement], bool], settings: SloSearchSettings,
               on_evaluation: Callable[[Evaluation], None] | None = None,
               prior: np.ndarray | None = None) -> list[Evaluation]:
    """Evaluate up to ``settings.budget`` distinct candidates, the predictor choosing each batch
    (``prior``: the log goal predicted for each candidate row; see the module docstring)."""
    search = SloSearch(candidates, measure, goal_metric=goal_metric, bounds=bounds, feasible=feasible,
                       settings=settings, on_evaluation=on_evaluation, prior=prior)
    search.run_rounds()
    return search.done


def _score(done: list[Evaluation], features: pd.DataFrame, bounds: Mapping[str, float],
           s: SloSearchSettings, prior: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(score to minimise, predicted goal, P(feasible)) for every candidate; with a ``prior`` (log
    goal per candidate) the goal's surrogate models the rest, the prior weighted by its agreement."""
    idx = np.array([e.index for e in done], dtype=int)
    works = np.array([e.goal is not None for e in done], dtype=bool)
    y = np.array([math.log(e.goal) if e.goal is not None else np.nan for e in done])
    offset = np.zeros(len(features)) if prior is None else prior * prior_agreement(prior[idx[works]], y[works])
    y = y - offset[idx]
    surrogate = EnsembleSurrogate(n_members=s.ensemble, seed=s.seed)
    fit = surrogate.fit_predict(features.iloc[idx], y, works, features)

    def trees(n_rows: int) -> bool:
        # Below MIN_TREE_ROWS the ensemble predicts one constant for every config (the default
        # start is 3 launches), so its first picks would be blind; a GP interpolates from 3 rows.
        return s.surrogate == "xgb" and n_rows >= MIN_TREE_ROWS

    if trees(int(works.sum())):
        mean, std = fit.mean_log, fit.std_log
    else:
        mean, std = _gp(features, idx[works], y[works], s.gp_trend)
    mean = mean + offset
    log_p = np.log(np.clip(fit.p_ok, 1e-6, 1.0))
    for metric, bound in bounds.items():
        vals = np.array([e.measurement.metrics.get(metric, np.nan) if e.goal is not None else np.nan for e in done])
        have = np.isfinite(vals) & (vals > 0)
        if not have.any():
            continue
        if trees(int(have.sum())):
            m_fit = surrogate.fit_predict(features.iloc[idx], np.log(np.where(have, vals, 1.0)), have, features)
            m_mean, m_std = m_fit.mean_log, m_fit.std_log
        else:
            m_mean, m_std = _gp(features, idx[have], np.log(vals[have]), s.gp_trend)
        z = (math.log(bound) - m_mean) / np.maximum(m_std, s.noise_log)
        log_p = log_p + np.log(np.clip(_normal_cdf(z), 1e-6, 1.0))
    ucb = mean + s.kappa * std
    return -(ucb + log_p), np.exp(mean), np.exp(log_p)


def _gp(features: pd.DataFrame, idx: np.ndarray, y: np.ndarray, trend: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Mean and spread of ``y`` over every candidate from a GP on the measured ones.

    Trees cannot interpolate: with slots 1 and 8 measured, slots 4 gets the prediction of one
    side, so a config whose TTFT and TPOT are both fine only between the two is never tried. A
    GP on the knobs' log2 values, scaled to [0, 1], interpolates and widens its spread away
    from the data, which is what the probability of meeting a bound needs.

    With ``trend`` (off by default) the kernel also has a linear part in those scaled knobs (a
    Bayesian linear trend, its weight fitted with the other settings). Away from the launches a GP
    alone falls back to the mean: with max_num_seqs 1 and 8 launched and 8 far faster, 16 can look
    no better than 4; the trend carries the slope to the grid's edge. Replayed on the 9 recorded
    serving grids (benchmarks/serving_search.py, 40 seeds; benchmarks/README.md) it gained on the
    grids' rows (throughput 0.982 / 0.976 -> 0.984 / 0.980 of the best, seeds 0-19 / 20-39; rate
    0.906 -> 0.912; vLLM 0.957 / 0.959 -> 0.972 / 0.963) but not with each launch noisy as a live
    one is (sd 0.1: throughput 0.917 / 0.871 -> 0.906 / 0.875, lost under the tight SLOs, where it
    extrapolates the latency bounds too), so it stays off.

    Below 3 values nothing can be fitted: the GP's settings are fixed (a spread of 0.5 in log
    around the values' mean, length scale half the knobs' range, no trend), so the spread still
    grows away from what was measured. With a prior that matters: after its first launch, a flat
    spread let the prior's smallest differences pick every next launch, however wrong its
    ranking (a prior from llama-server's rate grids sent vLLM's 3 launches to max_num_seqs 1).
    """
    if len(y) == 0:
        return np.zeros(len(features)), np.ones(len(features))
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import ConstantKernel, DotProduct, Matern, WhiteKernel

    cols = [c for c in features.columns if f"log2_{c}" not in features.columns]
    X = features[cols].to_numpy(dtype=float)
    span = X.max(axis=0) - X.min(axis=0)
    # Centred: the Matern part does not mind, and the trend's prior then favours no end of a range.
    X = (X - X.min(axis=0)) / np.where(span > 0, span, 1.0) - 0.5
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bounds reached on tiny samples: a fit still results
        if len(y) < 3:
            kernel = ConstantKernel(0.25, "fixed") * Matern(0.5, "fixed", nu=2.5) + WhiteKernel(0.01, "fixed")
            gp = GaussianProcessRegressor(kernel, optimizer=None).fit(X[idx], y - y.mean())
            mean, std = gp.predict(X, return_std=True)
            return mean + y.mean(), std
        kernel = ConstantKernel(1.0, (1e-2, 1e2)) * Matern(np.ones(X.shape[1]), (0.05, 20.0), nu=2.5)
        if trend:
            kernel = kernel + ConstantKernel(1.0, (1e-3, 1e2)) * DotProduct(0.0, "fixed")
        kernel = kernel + WhiteKernel(0.01, (1e-4, 0.5))
        gp = GaussianProcessRegressor(kernel, normalize_y=True, n_restarts_optimizer=2, random_state=0)
        gp.fit(X[idx], y)
        mean, std = gp.predict(X, return_std=True)
    return mean, std
