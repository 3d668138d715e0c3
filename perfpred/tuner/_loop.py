"""Predictor-first tuning of one objective: score the space, confirm the most promising configs,
learn, repeat. The rounds are :class:`~perfpred.tuner._rounds.PredictorFirstLoop`'s; this is
how :class:`Tuner` proposes and records.

Each round (after a space-filling start when there is no prior):
1. fit the surrogate on everything measured so far (all workers' measurements, read back
   from the study), on top of a transferred prior when one is given;
2. score every candidate: lower confidence bound ``mean - kappa * std`` of log(objective)
   (of log(1 / objective) for one maximised: ``TuneSettings.direction``);
   configs predicted to fail go last (a space too large to score whole keeps a pool of
   candidates that an Optuna study on this score grows first: ``_predictor_search``);
3. take a quarter of the batch from the untried neighbours (one parameter away) of measured
   configs, starting from those that beat the prior's prediction most (a local search that
   leaves a misleading prior's basin), and the rest greedily by that score, skipping picks
   within Hamming distance 1 of one already taken that way (so a batch is not k near-copies);
4. claim, measure and record each pick; failures are data the surrogate learns from;
5. stop at the budget, at the wall-time cap, or (``early_stop_rel``) when no candidate's
   optimistic prediction beats the best measurement by more than the noise.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from perfpred.datasets import Measurement
from perfpred.errors import InvalidInputError
from perfpred.tuner._objectives import check_metric, known_metrics
from perfpred.tuner._predictor_search import INNER_SAMPLERS, search_predictor
from perfpred.tuner._rounds import (
    HardwareBackend,
    PredictorFirstLoop,
    Proposal,
    check_setting_types,
    check_tuner_args,
    level_codes,
    maximin_design,
    tuning_candidates,
)
from perfpred.tuner._space import SearchSpace
from perfpred.tuner._study import CLAIM_GRACE_S, CandidateIndex, StudyRecorder, row_config
from perfpred.tuner._surrogate import MEMBER_VIEWS, BlendSurrogate, EnsembleSurrogate, GPSurrogate, param_features

# Configs confirmed a round unless told: a space scored whole takes 4 (2 did no better with a
# prior, at twice the time: tuning_5seeds_batch2.json); an open space one, since each
# measurement moves its GP and inner search where the next pick should go (best / optimum after
# 16 evaluations, 10 seeds: valley 1.37 -> 1.06, branin 1.31 -> 1.10; open_space.json).
SCORED_SPACE_BATCH = 4
OPEN_SPACE_BATCH = 1
ACQUISITIONS = ("lcb", "thompson")
DIRECTIONS = ("minimize", "maximize")
SURROGATES = ("ensemble", "gp", "blend")
LOCAL_STARTS = ("surprise", "best")
PRIOR_PICKS = ("per-source", "blend")
INT_SETTINGS = ("budget", "batch_size", "n_initial", "ensemble", "seed", "min_hamming", "early_stop_patience",
                "calibration_picks", "flag_flip_rounds", "pool_size", "inner_trials", "inner_keep")
NUMBER_SETTINGS = ("kappa", "early_stop_rel", "max_wall_s", "explore_fraction", "local_fraction", "claim_grace_s")
OPTIONAL_SETTINGS = ("batch_size", "n_initial", "early_stop_rel", "max_wall_s")


@dataclass(frozen=True)
class TuneSettings:
    """How the tuner spends its hardware budget.

    Attributes:
        budget: hardware evaluations in total (shared by all workers of one study).
        batch_size: configs confirmed per round (one surrogate refit per round). None (default):
            1 for a space too large to score whole (continuous parameters), 4 for one scored whole.
            On a continuous space fewer find more per evaluation (1 a round: 1.06x the optimum
            after 16 on the valley landscape, 4: 1.37x; ``benchmarks/open_space.py``); on the
            recorded spaces with a prior, 2 scored like 4 at twice the time
            (``tuning_5seeds_batch2.json``).
        n_initial: cold-start space-filling design size (default: max(batch, min(8, budget // 4))).
        kappa: exploration weight of the lower confidence bound.
        ensemble: surrogate members (bootstrap resamples) giving the spread.
        early_stop_rel: stop when no candidate is predicted to beat the best by more than this
            fraction; None never stops early.
        max_wall_s: wall-time cap in seconds, model fitting included.
        objective: Measurement field tuned (``runtime_ms``, ``energy_j``, ``power_w``, another
            numeric Measurement field, or ``metric.X``); a replayed backend must have recorded it.
        direction: ``minimize`` (default) or ``maximize`` the objective (``metric.gflops``, a
            throughput). The tuner works on log(value) either way, minimising log(1 / value) for a
            maximised objective (so its values must be > 0: a recording holding 0 or less is refused,
            a measurement of 0 or less counts as a failure, as when minimising); every value it
            reports, records or predicts is the objective as measured, and the Optuna study's
            direction is this one.
        seed: seeds the design, the surrogate and the tie-breaks.
        min_hamming: configs of one batch differ in at least this many parameters.
        early_stop_patience: rounds without an improvement of ``early_stop_rel`` before stopping.
        explore_fraction: share of each model-guided batch drawn at random from the unmeasured
            configs predicted to work (epsilon-greedy, as AutoTVM does). Off by default: on the
            recorded spaces 0.25-0.5 helped convolution at 64 evaluations but hurt GEMM.
        calibration_picks: with a prior, this many configs of the first batch come from a
            space-filling design instead of the prior's top, so a prior that is wrong for this
            hardware does not spend the first rounds on its own picks. On the UCI SGEMM GTX 680
            space (which the RTX GPUs' GEMM recordings order at Spearman ~0) 2 of a batch of 4
            took best/optimum at 16 evaluations from 3.90 to 1.51 (5 seeds); on spaces where the
            prior is right it cost 0-0.05 (benchmarks/results/tuning_calibration.json).
        local_fraction: share of each model-guided batch taken from the untried configs one
            parameter away from measured incumbents (the best-scoring neighbour of each,
            incumbent by incumbent): a local search inside the predictor-first loop.
        local_from: which incumbents the local picks start from: ``surprise`` (default) takes
            first the configs that ran fastest RELATIVE TO THE PRIOR's prediction (measured /
            predicted), ``best`` the fastest outright. With a misleading prior the fastest
            configs sit in the prior's basin, while a config that beat its prediction marks a
            region the prior underrates (convolution/A100, whose optimum uses shared memory
            that the other GPUs' recordings rank slow). Without a prior both are the same.
            A quarter of each batch from ``surprise`` raised P over the old default (no local
            picks) on all four spaces where it was lowest, 20 seeds: convolution/A100 0.37 ->
            0.45, gemm/RTX_3090 0.80 -> 0.86, convolution/W6600 0.92 -> 0.94, dedispersion/W6600
            0.64 -> 0.65; ``best`` lowered convolution/A100 to 0.21 (half a batch: 0.14).
        flag_flip_rounds: with a prior, in the first this many model-guided rounds the local picks are
            first the configs one binary parameter away from the measured configs the prior ranks best
            (``Tuner._flag_flip_picks``); 0: off. Default 2 since Dec 6: on the 12 recorded spaces (20 seeds,
            against the same seeds without it; ``tuning_20seeds_flips.json``) RTX 3090 GEMM P 0.857 -> 0.987
            (1.116 -> 1.007x the optimum at 16 evaluations), UCI SGEMM 0.645 -> 0.682, convolution/A100 0.526
            -> 0.379 (+- 0.094; 0.437 -> 0.332 +- 0.051 over 50 seeds: see below), the others within 0.015;
            mean P 0.872 -> 0.875, mean best/optimum at 16 1.122 -> 1.101; over 50 seeds on the 11 spaces
            besides UCI SGEMM (``tuning_50seeds_flips.json``) 0.881 -> 0.883, every GEMM space <= 1.017 at 16;
            all 12 at 50 seeds 0.860 -> 0.861 (UCI SGEMM 0.621 -> 0.623; ``tuning_50seeds_flips_uci.json``).
            As a pick of its own beside the local pick instead (scratch), UCI SGEMM fell to 0.554 and
            convolution/A100 rose only to 0.431; in the first round only (1), convolution/A100 fell further,
            to 0.301 (RTX 3090 0.988; ``tuning_20seeds_flips1.json``). There the prior's favourite with shared
            memory switched on runs 2.15x the optimum, so the flip tells the surrogate that shared memory is
            slow, while every config within 1.2x of the optimum uses it, most with 1x3 tiles (the favourite's
            are 2x4).
        prior_picks: with priors from several sources, how the model-guided picks of a batch use
            them (``lcb`` acquisition). ``blend`` ranks every candidate once, on top of the sources' predictions
            averaged in log space by their weights (``Tuner.source_weights``). ``per-source``
            does that until three configs have run, then shares each batch out among the
            sources by their weights (largest remainder, ties drawn by the seed; the weight left
            to no prior goes to the blend) and fills each source's share with the candidates
            the same fitted surrogate ranks best on top of that source's own prediction. A
            sibling GPU's recording ranks well alone and badly averaged with a less alike one:
            by the RTX 2080 Ti's recording alone the TITAN RTX's optimum is the third config, by
            the geometric mean with the RTX 3090's the first config within 2% of it comes at
            rank 282 (``tuning.py --ceiling``). Before anything has run the weights are equal
            for want of evidence, and a share for every source spends the first batch on the
            worst of them too (convolution/W6600, whose A100 source ranks it 12.7x off at 16:
            1.14 -> 1.29x the optimum at 16 evaluations, 20 seeds), so that batch stays with
            the blend.
        acquisition: ``lcb`` ranks by ``mean - kappa * std``; ``thompson`` gives each pick of a
            batch to one ensemble member's best config in turn (bootstrap Thompson sampling).
            Thompson sampling did no better than the lower bound on those four spaces (20 seeds).
        surrogate: None (default): ``ensemble`` for a space scored whole, ``gp`` for an open one
            (continuous parameters: trees answer piecewise constant and cannot carry a trend past the
            configs measured; on two synthetic landscapes, 10 seeds x 32 evaluations, the GP ended
            1.01x both times the optimum, the ensemble 1.14x and 1.19x: benchmarks/results/open_space.json);
            ``ensemble`` (bootstrap XGBoost, the spread is the members' disagreement),
            ``gp`` (an exact GP, the spread is its posterior standard deviation): about twice as
            fast, but mean P 0.544 vs 0.547 cold and 0.775 vs 0.827 with priors (12 spaces,
            10 seeds, ``benchmarks/results/tuning_10seeds_gp_surrogate.json``), or ``blend``
            (both averaged): 0.561 cold and 0.812 with priors, 1.3-1.5x slower
            (``tuning_10seeds_blend_surrogate.json``).
        member_views: ``alternate`` (default): with derived kernel quantities among the features
            (``--features mixed`` / ``derived``), the ensemble's odd members fit on the raw
            parameters only (``EnsembleSurrogate``), a hedge between the two; ``all``: every
            member on every column (how ``--features derived`` ran before Dec 6). Without derived
            columns (raw features) the two are the same.
        pool_size / inner_sampler / inner_trials / inner_keep: for a space that cannot be scored
            whole (a continuous parameter, or more than ``MAX_ENUMERATE`` configs): how many
            valid configs of a Sobol sequence the search starts from, the Optuna sampler ("tpe", "cmaes",
            "gp", "random") that searches the predictor each round, its trials per round, and
            how many of its best configs join the candidates (``perfpred.tuner._predictor_search``).
        claim_grace_s: with workers sharing a study (``storage``), seconds a claimed config may go
            without a heartbeat from its worker before another worker takes the claim over and
            measures the config: its worker is taken for dead (SIGKILL, a machine gone). Default
            180; the worker refreshes it every sixth of that (at most 15 s apart) while it
            measures, so only a worker stalled that long (a suspended laptop) loses a live claim.
            A dead worker of this host (its pid gone) is taken over after two refreshes instead.
    """

    budget: int
    batch_size: int | None = None
    n_initial: int | None = None
    kappa: float = 1.0
    ensemble: int = 5
    early_stop_rel: float | None = None
    max_wall_s: float | None = None
    objective: str = "runtime_ms"
    direction: str = "minimize"
    seed: int = 0
    min_hamming: int = 2
    early_stop_patience: int = 2
    explore_fraction: float = 0.0
    calibration_picks: int = 2
    local_fraction: float = 0.25
    local_from: str = "surprise"
    flag_flip_rounds: int = 2
    prior_picks: str = "per-source"
    acquisition: str = "lcb"
    surrogate: str | None = None
    member_views: str = "alternate"
    pool_size: int = 2000
    inner_sampler: str = "tpe"
    inner_trials: int = 256
    inner_keep: int = 32
    claim_grace_s: float = CLAIM_GRACE_S

    def __post_init__(self) -> None:
        check_setting_types(self, integers=INT_SETTINGS, numbers=NUMBER_SETTINGS, optional=OPTIONAL_SETTINGS)
        check_metric(self.objective, "`objective`")
        if self.direction not in DIRECTIONS:
            raise InvalidInputError(f"`direction in {DIRECTIONS}` must hold, but got direction={self.direction!r}")
        if self.seed < 0:
            raise InvalidInputError(f"`seed >= 0` must hold, but got seed={self.seed}")
        for name in ("explore_fraction", "local_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise InvalidInputError(f"`0 <= {name} <= 1` must hold, but got {name}={getattr(self, name)}")
        if self.acquisition not in ACQUISITIONS:
            raise InvalidInputError(f"`acquisition in {ACQUISITIONS}` must hold, "
                                    f"but got acquisition={self.acquisition!r}")
        if self.surrogate is not None and self.surrogate not in SURROGATES:
            raise InvalidInputError(f"`surrogate in {SURROGATES}` must hold, but got surrogate={self.surrogate!r}")
        if self.acquisition == "thompson" and self.surrogate not in (None, "ensemble"):
            raise InvalidInputError("`acquisition == 'thompson'` needs surrogate='ensemble' (its members are the "
                                    f"samples), but got surrogate={self.surrogate!r}")
        if self.inner_sampler not in INNER_SAMPLERS:
            raise InvalidInputError(f"`inner_sampler in {INNER_SAMPLERS}` must hold, "
                                    f"but got inner_sampler={self.inner_sampler!r}")
        if self.prior_picks not in PRIOR_PICKS:
            raise InvalidInputError(f"`prior_picks in {PRIOR_PICKS}` must hold, "
                                    f"but got prior_picks={self.prior_picks!r}")
        if self.member_views not in MEMBER_VIEWS:
            raise InvalidInputError(f"`member_views in {MEMBER_VIEWS}` must hold, "
                                    f"but got member_views={self.member_views!r}")
        if self.local_from not in LOCAL_STARTS:
            raise InvalidInputError(f"`local_from in {LOCAL_STARTS}` must hold, but got local_from={self.local_from!r}")
        checks = [("budget", self.budget >= 1, ">= 1"),
                  ("batch_size", self.batch_size is None or self.batch_size >= 1, ">= 1"),
                  ("kappa", self.kappa >= 0, ">= 0"), ("ensemble", self.ensemble >= 2, ">= 2"),
                  ("min_hamming", self.min_hamming >= 1, ">= 1"),
                  ("early_stop_patience", self.early_stop_patience >= 1, ">= 1"),
                  ("calibration_picks", self.calibration_picks >= 0, ">= 0"),
                  ("flag_flip_rounds", self.flag_flip_rounds >= 0, ">= 0"),
                  ("pool_size", self.pool_size >= 1, ">= 1"), ("inner_trials", self.inner_trials >= 1, ">= 1"),
                  ("inner_keep", self.inner_keep >= 1, ">= 1"),
                  # A fraction of 1 or more can never be beaten, so the stop would never fire.
                  ("early_stop_rel", self.early_stop_rel is None or 0 < self.early_stop_rel < 1, "in (0, 1)"),
                  ("max_wall_s", self.max_wall_s is None or self.max_wall_s > 0, "> 0"),
                  ("claim_grace_s", 0 < self.claim_grace_s < float("inf"), "> 0 (finite)")]
        if self.n_initial is not None:
            checks.append(("n_initial", self.n_initial >= 1, ">= 1"))
        for name, ok, rule in checks:
            if not ok:
                raise InvalidInputError(f"`{name} {rule}` must hold, but got {name}={getattr(self, name)}")

    def for_space(self, open_space: bool) -> TuneSettings:
        """These settings with the batch size resolved for a space scored whole or an open one."""
        if self.batch_size is not None:
            return self
        return dataclasses.replace(self, batch_size=OPEN_SPACE_BATCH if open_space else SCORED_SPACE_BATCH)

    @property
    def initial_size(self) -> int:
        return self.n_initial or max(self.batch_size or SCORED_SPACE_BATCH, min(8, self.budget // 4))

    @property
    def sign(self) -> float:
        """+1 to minimise, -1 to maximise: the tuner minimises ``sign * log(value)``."""
        return 1.0 if self.direction == "minimize" else -1.0


@dataclass
class TuneResult:
    history: pd.DataFrame  # one row per hardware evaluation, in order
    best_config: dict[str, Any] | None
    best_value: float | None
    n_evaluations: int
    stopped_by: str  # "budget" | "early_stop" | "wall_time" | "space_exhausted" | "callback"
    wall_s: float
    fit_s: float
    extra: dict[str, Any] = field(default_factory=dict)
    # Every evaluation of the study, this run's and those of earlier runs or other workers on it
    # (``StudyRecorder.history``): what a report of the study holds.
    study_history: pd.DataFrame | None = None
    direction: str = "minimize"  # TuneSettings.direction: which of the values is the best

    def best_so_far(self) -> np.ndarray:
        values = self.history["value"].to_numpy(dtype=float)
        if self.direction == "maximize":
            values = np.where(np.isfinite(values), values, -np.inf)
            return np.maximum.accumulate(values) if len(values) else values
        values = np.where(np.isfinite(values), values, np.inf)
        return np.minimum.accumulate(values) if len(values) else values


def objective_value(m: Measurement, objective: str) -> float | None:
    """The value a tuner optimises for one measurement; None when it failed or the value is missing or <= 0."""
    value = _raw_value(m, objective)
    return value if value is not None and value > 0 else None


def _raw_value(m: Measurement, objective: str) -> float | None:
    """``objective`` of a working measurement as a finite float (None: failed, missing or not finite)."""
    if m.status != "ok":
        return None
    if objective.startswith("metric."):
        value = m.metrics.get(objective[len("metric."):])
    else:
        value = getattr(m, objective, None)
    try:
        value = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


def _non_positive_refusal(objective: str, value: float, where: str) -> InvalidInputError:
    return InvalidInputError(f"a maximised objective must be > 0 (the tuner minimises log(1 / {objective})), but "
                             f"{where} {objective}={value:g}: minimise it instead, or tune a positive metric")


def check_positive_recording(backend: Any, objective: str) -> None:
    """A replayed backend whose recording holds a working config with ``objective <= 0`` cannot have
    ``objective`` maximised on the log scale: refused in one line before anything is measured."""
    table = getattr(backend, "table", None)
    if not isinstance(table, pd.DataFrame) or objective not in table:
        return
    values = pd.to_numeric(table[objective], errors="coerce")
    ok = (table["status"] == "ok") if "status" in table else pd.Series(True, index=table.index)
    bad = values[ok & np.isfinite(values) & (values <= 0)]
    if len(bad):
        raise _non_positive_refusal(objective, float(bad.iloc[0]),
                                    f"the recording has {len(bad)} working config(s) with")


def check_prior_shape(prior: Any) -> None:
    """One-line error for a prior that is neither a predictor nor a non-empty mapping of them."""
    if prior is None:
        return
    if isinstance(prior, Mapping):
        if not prior:
            raise InvalidInputError("`prior` must map at least one source name to a predictor, but got an empty "
                                    "mapping (pass prior=None for no prior)")
        for name, fn in prior.items():
            _check_predictor(fn, f"prior {name!r}")
    else:
        _check_predictor(prior, "`prior`")


def _is_performance_model(obj: Any) -> bool:
    if callable(obj):
        return False
    try:
        from perfpred.models import PerformanceModel
    except ImportError:  # pragma: no cover - the models package ships with perfpred
        return False
    return isinstance(obj, PerformanceModel)


def _check_predictor(fn: Any, what: str) -> None:
    if callable(fn) or _is_performance_model(fn):
        return
    raise InvalidInputError(f"{what} must be a function from a candidates DataFrame to predicted values (or a "
                            f"fitted PerformanceModel, on a replayed backend), but got {type(fn).__name__}")


def model_priors(prior: Any, backend: Any, objective: str, candidates: pd.DataFrame) -> Any:
    """``prior`` with each fitted PerformanceModel wrapped as a function of the candidates, as
    ``perfpred tune --model`` wraps one (``prior_from_model``): it predicts the row a replayed
    recording would hold for each candidate, on the replayed hardware. Checked on two candidates,
    so a model that cannot predict this space fails before anything is measured."""
    if prior is None:
        return None
    if isinstance(prior, Mapping):
        return {name: _model_prior(fn, backend, objective, candidates, f"prior {name!r}")
                for name, fn in prior.items()}
    return _model_prior(prior, backend, objective, candidates, "`prior`")


def _model_prior(model: Any, backend: Any, objective: str, candidates: pd.DataFrame, what: str) -> Any:
    if not _is_performance_model(model):
        return model
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    from perfpred.tuner._session import replayed_rows

    try:
        check_is_fitted(model, "regressor_")
    except NotFittedError:
        raise InvalidInputError(f"{what} must be a fitted PerformanceModel, but it was never fitted") from None
    if model.target != objective:
        raise InvalidInputError(f"{what} must predict the objective {objective}, but the PerformanceModel predicts "
                                f"{model.target}")
    table = getattr(backend, "table", None)
    if not isinstance(table, pd.DataFrame):
        raise InvalidInputError(f"{what}: a PerformanceModel predicts Measurement rows, which only a replayed backend "
                                f"can describe; for a {type(backend).__name__}, pass a function from the candidates "
                                "DataFrame to predictions (build the rows: kind, workload.*, config.*, hardware)")
    describe = replayed_rows(table)

    def predict(frame: pd.DataFrame) -> np.ndarray:
        try:
            return np.asarray(model.predict(describe(frame)), dtype=float)
        except (InvalidInputError, KeyError, ValueError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InvalidInputError(f"{what} (PerformanceModel of kind {model.kind!r}) cannot predict this space's "
                                    f"configs: {first[:300]}") from None

    predict(candidates.head(2))
    return predict


# Measurements after which a model of the tuned hardware alone competes with the priors (5-fold CV).
MIN_TARGET_VOTE = 8
# Working measurements the sources' weights need before they rest on evidence (fewer: equal).
MIN_RANKED = 3


def diverse_top(score: np.ndarray, codes: np.ndarray, k: int, min_hamming: int = 2,
                taken: Sequence[int] = ()) -> list[int]:
    """The k best-scoring (lowest) indices, no two closer than ``min_hamming`` differing params,
    nor that close to a config already ``taken`` for the batch."""
    order = np.argsort(score, kind="stable")
    picks: list[int] = []
    for i in order:
        if not np.isfinite(score[i]):
            break
        if all((codes[i] != codes[j]).sum() >= min_hamming for j in [*taken, *picks]):
            picks.append(int(i))
            if len(picks) == k:
                break
    if len(picks) < k:  # the rule was too strict for what is left: fill by score alone
        for i in order:
            if np.isfinite(score[i]) and int(i) not in picks and int(i) not in taken:
                picks.append(int(i))
                if len(picks) == k:
                    break
    return picks


def thompson_top(members: np.ndarray, penalty: np.ndarray, k: int, codes: np.ndarray,
                 min_hamming: int = 2) -> list[int]:
    """One pick per ensemble member in turn, each member's best config (bootstrap Thompson
    sampling): the members disagree where data is thin, so a batch spreads over the regions
    some plausible model rates best. Picks skip configs within ``min_hamming`` - 1 differing
    params of an earlier pick while any other finite candidate is left."""
    picks: list[int] = []
    for j in range(k):
        score = members[j % len(members)] + penalty
        score[picks] = np.inf
        finite = np.flatnonzero(np.isfinite(score))
        if not len(finite):
            break
        order = finite[np.argsort(score[finite], kind="stable")]
        # Scanning the 4096 best is plenty for a diverse pick and bounds the Python loop on big spaces.
        chosen = next((int(i) for i in order[:4096]
                       if all((codes[i] != codes[p]).sum() >= min_hamming for p in picks)), int(order[0]))
        picks.append(chosen)
    return picks


class Tuner(PredictorFirstLoop):
    """Tune ``space`` on ``backend`` with the predictor first.

    Parameters:
        space: the search space (finite spaces are enumerated and scored whole).
        backend: measures one config (``measure(config) -> Measurement``).
        settings: budget, batch size, exploration, stopping rules.
        candidates: the configs to choose from, each within the space (repeated rows are
            measured once). Default: a replayed backend's recorded configs that lie in the space
            (``ReplayBackend.recorded_configs``: a replay answers only what was recorded, as
            ``perfpred tune --backend replay:PATH`` tunes it), else ``space.enumerate()``, or for
            a space too large for that, a pool that an Optuna study on the predictor grows each
            round (``TuneSettings.inner_sampler``).
        prior: transferred knowledge: a function from a candidates DataFrame to predicted
            objective values, or a non-empty dict of such functions, one per source hardware,
            weighted by how well each orders the configs measured here (see ``source_weights``).
            A fitted ``PerformanceModel`` (e.g. trained on other hardware) is taken too on a
            replayed backend: it predicts each candidate from the row the recording would hold
            for it, on the replayed hardware, as ``perfpred tune --model`` does; on any other
            backend wrap it in a function that builds those rows.
        storage / study_name: Optuna RDB storage URL shared by workers (default: in memory).
        featurize: candidates DataFrame -> numeric features (default: ``param_features``, the raw
            values, and without a prior also where they are powers of two: on the 8 convolution
            and dedispersion spaces that raised cold start's P by 0.47 in sum, 20 seeds, while with
            a prior, which already carries those steps, it cost 0.19; for a kernel,
            ``mixed_tuning_features(problem, hardware)`` adds the quantities derived from them,
            which the ensemble's even members see (``TuneSettings.member_views``): ``perfpred
            tune``'s default when tuning from a prior on a space scored whole); for an open
            space ``SearchSpace.unit_features``, each parameter's position in the unit cube (log2
            of a fraction near 0, which ``param_features`` adds, stretches the GP's inputs where
            nothing happens): on the two landscapes of ``benchmarks/open_space.py``, 30 seeds, best/optimum at 16 / 32
            evaluations went from 1.203 / 1.024 (valley) and 1.201 / 1.001 (branin) to 1.185 /
            1.003 and 1.142 / 1.001 at 2 configs a round; at 4 a round from 1.385 / 1.019 and
            1.236 / 1.010 to 1.324 / 1.009 and 1.338 / 1.009 (branin worse at 16).
        on_evaluation: called with each evaluation's row; returning True stops the run.
        study_refusal: ``open_study``'s ``remedy`` / ``mixes`` wording when the study tunes something else.
    Each measured trial records the ``seed`` that picked it (``measured_seeds``).
    """

    def __init__(self, space: SearchSpace, backend: HardwareBackend, settings: TuneSettings, *,
                 candidates: pd.DataFrame | None = None,
                 prior: Callable[[pd.DataFrame], np.ndarray] | Mapping[str, Callable[[pd.DataFrame], np.ndarray]]
                 | None = None,
                 storage: str | None = None, study_name: str = "perfpred-tune",
                 study_identity: Mapping[str, Any] | None = None,
                 featurize: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
                 on_evaluation: Callable[[dict[str, Any]], bool | None] | None = None,
                 study_refusal: Mapping[str, str] | None = None) -> None:
        check_tuner_args(space, backend, settings, TuneSettings)
        if (known := known_metrics(backend)) is not None:  # a replay: the objective must be recorded
            check_metric(settings.objective, "`objective`", known)
        if settings.direction == "maximize":
            check_positive_recording(backend, settings.objective)
        check_prior_shape(prior)
        self.space = space
        self.backend = backend
        candidates = tuning_candidates(space, backend, candidates)
        # A space too large to score whole is searched through a pool that grows (``_grow_pool``).
        self.open_space = candidates is None and not space.enumerable
        self.settings = settings = settings.for_space(self.open_space)
        if self.open_space:
            pool = space.sample(settings.pool_size, seed=settings.seed)
        else:
            pool = space.enumerate() if candidates is None else candidates
        if pool.empty:
            raise InvalidInputError("the search space has no valid config (check the constraints)")
        prior = model_priors(prior, backend, settings.objective, pool)
        self.prior = prior
        self.recorder = StudyRecorder(space, storage=storage, study_name=study_name, objective=settings.objective,
                                      direction=settings.direction,
                                      identity=study_identity, claim_grace_s=settings.claim_grace_s,
                                      refusal=study_refusal)
        if featurize is None and self.open_space:
            featurize = space.unit_features
        elif featurize is None:
            featurize = functools.partial(param_features, powers_of_two=prior is None)
        self.featurize = featurize
        self._set_candidates(pool.reset_index(drop=True))
        ensemble = EnsembleSurrogate(n_members=settings.ensemble, seed=settings.seed,
                                     member_views=settings.member_views)
        surrogate = settings.surrogate or ("gp" if self.open_space and settings.acquisition == "lcb" else "ensemble")
        self.surrogate = {"ensemble": ensemble, "gp": GPSurrogate(seed=settings.seed),
                          "blend": BlendSurrogate(ensemble, GPSurrogate(seed=settings.seed))}[surrogate]
        self.on_evaluation = on_evaluation
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.claims = self.recorder.claims
        self._last_fit: tuple[Any, Any] | None = None  # (inputs, fitted surrogate): see _fit_surrogate

    def _set_candidates(self, candidates: pd.DataFrame) -> None:
        self.candidates = candidates
        self.features = self.featurize(candidates)
        self.codes = level_codes(candidates)
        self.index = CandidateIndex(candidates)

    def _design_picks(self, measured: np.ndarray, k: int, iteration: int) -> list[int]:
        if not self.open_space:
            return super()._design_picks(measured, k, iteration)
        # The pool begins as a Sobol sequence: its first rows are the space-filling start (a
        # maximin design over it takes the corners of every range, the worst place to begin on
        # a smooth landscape: 2.5x the optimum after 8 evaluations against 1.5x for random draws).
        return [int(i) for i in np.flatnonzero(~measured)[:k]]

    def _grow_pool(self, configs: pd.DataFrame) -> None:
        """Add ``configs`` not yet among the candidates (an open space's pool only grows, so the
        rows measured so far keep their numbers)."""
        new = [c for c in configs[self.space.names].to_dict("records") if self.index.get(c) is None]
        if not new:
            return
        self._set_candidates(pd.concat([self.candidates, self.space.configs_frame(new)], ignore_index=True))
        if self.prior is not None:
            self._source_logs_ = self._source_logs()

    def _source_logs(self, frame: pd.DataFrame | None = None) -> np.ndarray | None:
        """log predictions of each prior source for every candidate (or row of ``frame``):
        (n_sources, n_rows)."""
        if self.prior is None:
            return None
        frame = self.candidates if frame is None else frame
        sources = self.prior if isinstance(self.prior, Mapping) else {"prior": self.prior}
        logs = []
        for name, fn in sources.items():
            pred = np.asarray(fn(frame), dtype=float)
            if pred.shape != (len(frame),) or not np.all(np.isfinite(pred) & (pred > 0)):
                raise InvalidInputError(f"prior {name!r} must give one positive finite prediction per candidate")
            logs.append(self.settings.sign * np.log(pred))  # on the tuner's scale: log(1 / pred) when maximising
        return np.stack(logs)

    def _fit_surrogate(self, X_measured: pd.DataFrame, m_y: np.ndarray, m_ok: np.ndarray,
                       prior_measured: np.ndarray | None) -> Any:
        """The surrogate fitted on these rows; the fit of the same inputs is reused (the fits are
        seeded, so a refit would give the same model): an open space's round scores its predictor
        search's batches and then the grown pool with one fit where it made five."""
        key = (tuple(X_measured.columns), X_measured.to_numpy(dtype=float).tobytes(), m_y.tobytes(), m_ok.tobytes(),
               None if prior_measured is None else np.asarray(prior_measured, dtype=float).tobytes())
        if self._last_fit is None or self._last_fit[0] != key:
            self._last_fit = (key, self.surrogate.fit(X_measured, m_y, m_ok, prior_measured=prior_measured))
        return self._last_fit[1]

    def _search_predictor(self, m_idx: np.ndarray, m_y: np.ndarray, m_ok: np.ndarray, iteration: int,
                          weights: np.ndarray | None) -> None:
        """An open space's round: an Optuna study on the acquisition over the whole space; its
        best configs join the pool. Every batch it scores is featurized together with the pool
        (a featurizer may choose its columns, or code categories, from the rows it is given) and
        the surrogate is fitted on the measured rows of that same table: with a featurizer that
        works row by row (the default ``SearchSpace.unit_features``) that is one fit a round."""
        s = self.settings
        source_logs = self._source_logs_
        pool = self.candidates
        prior_m = None if weights is None else (weights @ source_logs)[m_idx]

        def acquisition(frame: pd.DataFrame) -> np.ndarray:
            feats = self.featurize(pd.concat([pool, frame], ignore_index=True))
            prior_c = None if weights is None else weights @ self._source_logs(frame)
            fitted = self._fit_surrogate(feats.iloc[m_idx], m_y, m_ok, prior_m)
            fit = fitted.predict(feats.iloc[len(pool):], prior_candidates=prior_c)
            return fit.mean_log - s.kappa * fit.std_log + np.where(fit.p_ok < 0.5, 1e6, 0.0)

        order = np.argsort(np.where(m_ok, m_y, np.inf), kind="stable")[:min(5, int(m_ok.sum()))]
        found = search_predictor(self.space, acquisition, n_trials=s.inner_trials, keep=s.inner_keep,
                                 sampler=s.inner_sampler, seed=s.seed * 1000 + iteration,
                                 start=pool.iloc[m_idx[order]])
        self._grow_pool(found)

    def _target_cv_logs(self, idx: np.ndarray, y: np.ndarray) -> np.ndarray | None:
        """Cross-validated log predictions, at the measured configs, of a model of this hardware alone."""
        if len(y) < MIN_TARGET_VOTE:
            return None
        from xgboost import XGBRegressor

        X = self.features.iloc[idx].to_numpy(dtype=float)
        folds = np.random.default_rng(self.settings.seed).permutation(len(y)) % 5
        out = np.empty(len(y))
        for fold in range(5):
            held = folds == fold
            model = XGBRegressor(n_estimators=100, max_depth=3, learning_rate=0.1, n_jobs=1,
                                 random_state=self.settings.seed)
            out[held] = model.fit(X[~held], y[~held]).predict(X[held])
        return out

    def source_weights(self, source_logs: np.ndarray, m_idx: np.ndarray, m_y: np.ndarray,
                       m_ok: np.ndarray) -> np.ndarray:
        """How much to trust each source, from how well it orders what was measured here.

        As in RGPE (Feurer et al.): over bootstrap resamples of the measured configs, each
        source's ranking loss (mis-ordered pairs) is counted, and a source's weight is the
        share of resamples in which its loss is lowest (ties share). From MIN_TARGET_VOTE
        measurements on, a model of this hardware alone competes too (with its cross-validated
        predictions); its share goes to no prior at all, so priors that order this hardware's
        configs no better than its own measurements fade out (the UCI SGEMM GTX 680 space,
        which the newer GPUs' GEMM recordings order at Spearman -0.08..-0.01). Until three
        configs have run, every source counts the same.
        """
        n_sources = len(source_logs)
        idx, y = m_idx[m_ok], m_y[m_ok]
        if len(y) < MIN_RANKED:
            return np.full(n_sources, 1.0 / n_sources)
        preds = source_logs[:, idx]
        target = self._target_cv_logs(idx, y)
        if target is not None:
            preds = np.vstack([preds, target])
        elif n_sources == 1:
            return np.ones(1)
        rng = np.random.default_rng(self.settings.seed)
        votes = np.zeros(len(preds))
        for _ in range(64):
            b = rng.integers(0, len(y), len(y))
            truth = y[b][:, None] < y[b][None, :]
            losses = np.array([(truth != (p[b][:, None] < p[b][None, :])).sum() for p in preds])
            winners = np.flatnonzero(losses == losses.min())
            votes[winners] += 1.0 / len(winners)
        return votes[:n_sources] / votes.sum()

    def _local_picks(self, score: np.ndarray, m_idx: np.ndarray, m_y: np.ndarray, m_ok: np.ndarray,
                     n: int, prior_log: np.ndarray | None = None) -> list[int]:
        """The ``n`` best-scoring unmeasured configs one parameter away from measured incumbents.

        Recorded spaces have their best configs next to good ones: on the Kernel Tuner GEMM
        spaces every within-2% config differs in one to three parameters from a config the other
        GPUs' recordings rank in their top 16, while the first such config is at rank 162-282 of
        that ranking (benchmarks/results/tuning_ceiling.json). Searching the incumbents'
        neighbourhoods (by the surrogate's score) can reach it where the global ranking does not.
        Incumbents are taken best first until ``n`` neighbours are found; given ``prior_log``
        (the prior's log prediction per candidate), those that most beat their prediction first.
        """
        picks: list[int] = []
        key = m_y if prior_log is None else m_y - prior_log[m_idx]
        order = np.argsort(np.where(m_ok, key, np.inf), kind="stable")
        for j in order[: int(m_ok.sum())]:
            for i in self._one_step_from(int(m_idx[j]), score):
                if int(i) not in picks:
                    picks.append(int(i))
                    if len(picks) == n:
                        return picks
                    break  # one pick per incumbent, so a batch does not crowd one config
        return picks

    def _one_step_from(self, row: int, score: np.ndarray, columns: np.ndarray | None = None) -> np.ndarray:
        """Candidates one parameter away from candidate ``row`` (a parameter among ``columns``, a
        boolean mask, when given), best ``score`` first; measured configs (score inf) and predicted
        failures (the 1e6 penalty) left out."""
        differs = self.codes != self.codes[row]
        near = differs.sum(axis=1) == 1
        if columns is not None:
            near &= differs[:, columns].any(axis=1)
        near = np.flatnonzero(near & (score < 1e5))
        return near[np.argsort(score[near], kind="stable")]

    def _flag_flip_picks(self, score: np.ndarray, m_idx: np.ndarray, prior_log: np.ndarray, n: int) -> list[int]:
        """Up to ``n`` unmeasured configs that differ from a measured one in one binary parameter
        only, starting from the measured configs the prior ranks best (the best-scoring flip of each).

        Hardware generations disagree most on implementation switches (cache a tile in shared
        memory or not, read-only loads, strided access): the RTX 3090's optimum is the Turing
        recordings' favourite with ``SA`` = 1, which both rank 1.2x slower there. Once the
        favourite has run slow, the surrogate marks its whole neighbourhood slow, the flip included;
        measuring the flip directly takes one evaluation.
        """
        binary = np.array([len(np.unique(self.codes[:, j])) == 2 for j in range(self.codes.shape[1])])
        if not binary.any():
            return []
        picks: list[int] = []
        for j in np.argsort(prior_log[m_idx], kind="stable"):
            for i in self._one_step_from(int(m_idx[j]), score, binary):
                if int(i) not in picks:
                    picks.append(int(i))
                    break
            if len(picks) == n:
                break
        return picks

    def _per_source_picks(self, fitted: Any, weights: np.ndarray, blend_score: np.ndarray, penalty: np.ndarray,
                          n: int, iteration: int) -> tuple[list[int], dict[int, float]]:
        """``n`` picks shared out among the prior's sources by weight (``TuneSettings.prior_picks``).

        Each source's share is ranked by the surrogate's lower bound on top of that source's own
        log prediction; the weight no source has (the model of this hardware alone won it) goes
        to ``blend_score``. Picks are interleaved source by source, so a batch cut short (the
        random picks of ``explore_fraction`` replace its tail) keeps every source's best. Also
        returns the log prediction each source-ranked pick was chosen on.
        """
        s = self.settings
        shares = np.append(weights, max(0.0, 1.0 - float(weights.sum())))
        exact = shares / shares.sum() * n
        slots = np.floor(exact).astype(int)
        # Largest remainder; equal remainders (equal weights) drawn by the seed, not by source order.
        tie_break = np.random.default_rng([s.seed, iteration]).random(len(shares))
        for j in np.lexsort((tie_break, -(exact - slots)))[: n - int(slots.sum())]:
            slots[j] += 1
        ranked: list[list[int]] = []
        taken: list[int] = []
        predicted_log: dict[int, float] = {}
        for j, count in enumerate(slots):
            if not count:
                ranked.append([])
                continue
            if j < len(weights):
                # On the scale of the offset the surrogate learned over (the weights' sum is below
                # 1 once the model of this hardware alone has votes).
                fit = fitted.predict(self.features, prior_candidates=self._source_logs_[j] * weights.sum())
                score = fit.mean_log - s.kappa * fit.std_log + penalty
            else:
                score = blend_score.copy()
            score[taken] = np.inf
            chosen = diverse_top(score, self.codes, int(count), s.min_hamming, taken=taken)
            if j < len(weights):
                predicted_log.update({i: float(fit.mean_log[i]) for i in chosen})
            ranked.append(chosen)
            taken.extend(chosen)
        # Heavier shares first, equal ones in the seed's order: a cut batch drops no source by its index.
        ranked = [ranked[j] for j in np.lexsort((tie_break, -shares))]
        interleaved = []
        for depth in range(max(map(len, ranked))):
            interleaved.extend(picks[depth] for picks in ranked if depth < len(picks))
        return interleaved, predicted_log

    def _measured_state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(candidate indices, log values (nan if failed; of 1 / value when maximising), ok flags) of
        everything measured."""
        idx, y, ok = [], [], []
        measured = self.recorder.measured()
        if self.open_space:  # what other workers of the study measured joins this worker's pool
            self._grow_pool(self.space.configs_frame(config for config, _, _ in measured))
        for config, value, status in measured:
            i = self.index.get(config)
            if i is None:
                continue
            idx.append(i)
            good = status == "ok" and value is not None
            ok.append(good)
            y.append(self.settings.sign * np.log(value) if good else np.nan)
        return np.asarray(idx, dtype=int), np.asarray(y, dtype=float), np.asarray(ok, dtype=bool)

    def _n_measured(self) -> int:
        return len(self.recorder.measured())

    def _has_prior(self) -> bool:
        return self.prior is not None

    def run(self) -> TuneResult:
        """Tune until the budget is spent (or the wall-time cap, the early stop, the callback or an
        exhausted space ends it): rounds of predict, confirm on the backend, refit.

        Returns a :class:`TuneResult`: ``history`` holds this run's evaluations in order (the
        parameters, ``value``, ``status``, ``predicted``, ``iteration``, ``elapsed_s``);
        ``best_config`` / ``best_value`` the best measured config of the whole study (None when
        nothing ran successfully); ``study_history`` every evaluation of the study.
        """
        self._source_logs_ = self._source_logs()
        self._weights_history: list[list[float]] = []
        self._best_history: list[float] = []
        outcome = self.run_rounds()
        _, all_y, all_ok = self._measured_state()
        best_config, best_value = self.best()
        return TuneResult(history=pd.DataFrame(outcome.rows), best_config=best_config, best_value=best_value,
                          n_evaluations=len(outcome.rows), stopped_by=outcome.stopped_by, wall_s=outcome.wall_s,
                          fit_s=outcome.fit_s, extra={"study_evaluations": len(all_y),
                                                      "study_failures": int((~all_ok).sum()),
                                                      "prior_weights": self._weights_history},
                          study_history=self.recorder.history(), direction=self.settings.direction)

    def _propose(self, state: tuple[np.ndarray, ...], measured: np.ndarray, k: int, iteration: int) -> Proposal:
        s = self.settings
        m_idx, m_y, m_ok = state
        # The sources' weights depend on the measured rows only, which keep their numbers as an
        # open space's pool grows: computed once, for the search of the predictor and the picks.
        weights = (self.source_weights(self._source_logs_, m_idx, m_y, m_ok)
                   if self._source_logs_ is not None else None)
        if self.open_space and m_ok.any():
            self._search_predictor(m_idx, m_y, m_ok, iteration, weights)
            measured = np.zeros(len(self.candidates), dtype=bool)
            measured[m_idx] = True
        source_logs = self._source_logs_
        prior_log = None
        if weights is not None:
            self._weights_history.append(weights.round(3).tolist())
            prior_log = weights @ source_logs
        fitted = self._fit_surrogate(self.features.iloc[m_idx], m_y, m_ok,
                                     prior_log[m_idx] if prior_log is not None else None)
        fit = fitted.predict(self.features, prior_candidates=prior_log)
        penalty = np.where(fit.p_ok < 0.5, 1e6, 0.0)  # predicted failures go last
        penalty[measured] = np.inf
        score = fit.mean_log - s.kappa * fit.std_log + penalty
        if s.early_stop_rel is not None and m_ok.any() and len(m_idx) >= s.initial_size:
            # Trees never predict below the best seen and the spread shrinks as data grows,
            # so "nothing predicted better" alone fires early: the best must also have
            # stalled for `early_stop_patience` rounds.
            best_log = np.nanmin(m_y)
            self._best_history.append(best_log)
            history = self._best_history
            stalled = (len(history) > s.early_stop_patience and
                       history[-1 - s.early_stop_patience] - best_log < -np.log1p(-s.early_stop_rel))
            if stalled and np.min(score) > best_log + np.log1p(-s.early_stop_rel):
                return Proposal([], stop="early_stop")
        n_local = round(k * s.local_fraction) if m_ok.any() else 0
        predicted_log: dict[int, float] = {}
        surprise = prior_log if (prior_log is not None and s.local_from == "surprise") else None
        local = self._local_picks(score, m_idx, m_y, m_ok, n_local, surprise) if n_local else []
        if prior_log is not None and n_local and iteration <= s.flag_flip_rounds:
            flips = self._flag_flip_picks(score, m_idx, prior_log, n_local)
            local = (flips + [i for i in local if i not in flips])[:n_local]
        penalty[local] = score[local] = np.inf
        if s.acquisition == "thompson":
            picks = local + thompson_top(fit.members_log, penalty, k - len(local), self.codes, s.min_hamming)
        elif (s.prior_picks == "per-source" and weights is not None and len(weights) > 1
              and int(m_ok.sum()) >= MIN_RANKED):
            by_source, predicted_log = self._per_source_picks(fitted, weights, score, penalty, k - len(local),
                                                              iteration)
            picks = local + by_source
        else:
            picks = local + diverse_top(score, self.codes, k - len(local), s.min_hamming)
        n_random = min(len(picks), round(k * s.explore_fraction))
        if n_random:
            pool = np.flatnonzero(~measured & (fit.p_ok >= 0.5))
            pool = np.setdiff1d(pool, picks[: k - n_random])
            if len(pool):
                rng = np.random.default_rng([s.seed, iteration])
                extra = rng.choice(pool, size=min(n_random, len(pool)), replace=False).tolist()
                picks = picks[: k - len(extra)] + [int(i) for i in extra]
        if s.calibration_picks and self.prior is not None and not len(m_idx):
            chosen = set(picks[: k - min(k, s.calibration_picks)])
            spread = [i for i in maximin_design(self.candidates, s.calibration_picks, s.seed)
                      if i not in chosen][: min(k, s.calibration_picks)]
            picks = picks[: k - len(spread)] + spread
        mean_log = fit.mean_log
        if predicted_log:
            mean_log = mean_log.copy()
            mean_log[list(predicted_log)] = list(predicted_log.values())
        # Predictions as the objective is measured (the tuner's scale is log(1 / value) when maximising).
        return Proposal(picks, predicted=np.exp(s.sign * mean_log))

    def _evaluate(self, i: int, proposal: Proposal, iteration: int, t_start: float) -> dict[str, Any]:
        s = self.settings
        config = row_config(self.candidates, i)
        m = self.backend.measure(config)
        # A value <= 0 (which log(1 / value) cannot take when maximising) counts as a failure, as when
        # minimising: the measurement is recorded, and the run goes on.
        value = objective_value(m, s.objective)
        pred = None
        if proposal.predicted is not None and np.isfinite(proposal.predicted[i]):
            pred = float(proposal.predicted[i])
        self.recorder.record(config, value, m.status, predicted=pred, iteration=iteration, worker=self.worker,
                             extra={"seed": s.seed})
        return {**config, "value": value, "status": m.status, "predicted": pred, "iteration": iteration,
                "elapsed_s": time.perf_counter() - t_start}

    def best(self) -> tuple[dict[str, Any] | None, float | None]:
        """The best measured config of the whole study (all workers): the lowest value, or the
        highest for a maximised objective."""
        sign = self.settings.sign
        best = None
        for config, value, status in self.recorder.measured():
            if status == "ok" and value is not None and (best is None or sign * value < sign * best[1]):
                best = (config, value)
        return best if best is not None else (None, None)
