"""Predictor-first multi-objective tuning: model every objective and SLO metric, confirm the most
promising trade-offs on hardware, refit, repeat.

Each round:
1. fit one surrogate per tracked metric (objectives and constrained metrics; log values,
   :class:`EnsembleSurrogate`) on everything measured so far, on top of a prior when given;
2. for every unmeasured candidate: an optimistic objective vector (``mean - kappa * std`` of
   log value in minimisation form: lower confidence bounds) and a probability of feasibility
   (the product over SLOs of P(metric within bound) under the surrogate's spread, times the
   probability that the config runs at all);
3. pick greedily by hypervolume improvement of the optimistic vector over the measured
   feasible front, times the probability of feasibility (constrained expected improvement,
   Gardner et al. 2014, with the optimistic bound for the improvement). The improvement is
   zero for a candidate whose optimistic prediction a measured config already dominates, so
   the pick goes where the front can still move; after each pick its predicted mean joins
   the front (a "believer"), so the next pick of a batch looks elsewhere on the front.
   Candidates below ``min_feasible_prob`` are left out while any other remains; when no
   improvement is predicted anywhere the candidate closest to the front (additive epsilon)
   goes first;
4. claim, measure and record each pick as a trial of a multi-objective Optuna study with
   the SLOs as Optuna constraints (``study.best_trials`` is the measured feasible front);
5. stop at the budget, the wall-time cap, when the space is exhausted, or when the
   ``on_evaluation`` callback returns True.

With no prior, the first ``n_initial`` configs are a space-filling (maximin) design. The rounds
are :class:`~perfpred.tuner._rounds.PredictorFirstLoop`'s; this module is how a multi-objective
run proposes and records.
"""

from __future__ import annotations

import json
import os
import socket
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import norm

from perfpred.errors import InvalidInputError
from perfpred.tuner._objectives import (
    MetricBound,
    Objective,
    is_feasible,
    known_metrics,
    metric_value,
    parse_constraints,
    parse_objectives,
    tracked_metrics,
)
from perfpred.tuner._pareto import epsilon_gap, hypervolume, hypervolume_improvement, min_form, pareto_mask
from perfpred.tuner._pareto_study import ParetoStudyRecorder
from perfpred.tuner._rounds import (
    HardwareBackend,
    PredictorFirstLoop,
    Proposal,
    check_setting_types,
    check_tuner_args,
    tuning_candidates,
)
from perfpred.tuner._space import SearchSpace
from perfpred.tuner._study import CLAIM_GRACE_S, CandidateIndex, row_config
from perfpred.tuner._surrogate import EnsembleSurrogate, param_features

# Floor of the surrogate's log-space spread when turning it into feasibility probabilities: a
# bootstrap ensemble that agrees is not certain.
MIN_STD_LOG = 0.05

# Below this many successful measurements the surrogate has no spread of its own (EnsembleSurrogate).
FEW_MEASURED = 4
# Log-space error assumed for a prior that comes without a calibration (the surrogate's own default).
DEFAULT_PRIOR_ERROR = 0.25

Prior = Callable[[pd.DataFrame], np.ndarray]


@dataclass(frozen=True)
class ParetoSettings:
    """How a multi-objective run spends its hardware budget.

    Attributes:
        objectives: what to optimise: :class:`Objective` or ``"NAME[:minimize|maximize]"``.
        budget: hardware evaluations in total (shared by all workers of one study).
        constraints: SLOs on measured metrics: :class:`MetricBound` or ``"METRIC <= BOUND"``.
        batch_size: configs confirmed per round (one refit per round).
        n_initial: cold-start design size without a prior (default: max(batch, min(8, budget // 4))).
        kappa: optimism of the objective bounds (``mean - kappa * std`` in log space).
        ensemble: surrogate members per metric (bootstrap resamples) giving the spread.
        n_estimators: trees per surrogate member.
        min_feasible_prob: candidates predicted feasible with less probability wait until no
            other remains.
        max_wall_s: wall-time cap in seconds, model fitting included.
        seed: seeds the design and the surrogates.
        claim_grace_s: with workers sharing a study, seconds a claimed config may go without a
            heartbeat from its worker before another worker takes it over (default 180; see
            ``TuneSettings.claim_grace_s``).
    """

    objectives: tuple[Objective, ...]
    budget: int
    constraints: tuple[MetricBound, ...] = ()
    batch_size: int = 1
    n_initial: int | None = None
    kappa: float = 1.0
    ensemble: int = 5
    n_estimators: int = 150
    min_feasible_prob: float = 0.05
    max_wall_s: float | None = None
    seed: int = 0
    claim_grace_s: float = CLAIM_GRACE_S

    def __post_init__(self) -> None:
        object.__setattr__(self, "objectives", parse_objectives(self.objectives))
        object.__setattr__(self, "constraints", parse_constraints(self.constraints))
        check_setting_types(self, integers=("budget", "batch_size", "n_initial", "ensemble", "n_estimators", "seed"),
                            numbers=("kappa", "min_feasible_prob", "max_wall_s", "claim_grace_s"),
                            optional=("n_initial", "max_wall_s"))
        if self.seed < 0:
            raise InvalidInputError(f"`seed >= 0` must hold, but got seed={self.seed}")
        checks = [("budget", self.budget >= 1, ">= 1"), ("batch_size", self.batch_size >= 1, ">= 1"),
                  ("kappa", self.kappa >= 0, ">= 0"), ("ensemble", self.ensemble >= 2, ">= 2"),
                  ("n_estimators", self.n_estimators >= 1, ">= 1"),
                  ("min_feasible_prob", 0 <= self.min_feasible_prob <= 1, "in [0, 1]"),
                  ("claim_grace_s", 0 < self.claim_grace_s < float("inf"), "> 0 (finite)")]
        if self.n_initial is not None:
            checks.append(("n_initial", self.n_initial >= 1, ">= 1"))
        if self.max_wall_s is not None:
            checks.append(("max_wall_s", self.max_wall_s > 0, "> 0"))
        for name, ok, rule in checks:
            if not ok:
                raise InvalidInputError(f"`{name} {rule}` must hold, but got {name}={getattr(self, name)}")

    @property
    def metrics(self) -> list[str]:
        return tracked_metrics(self.objectives, self.constraints)

    @property
    def initial_size(self) -> int:
        return self.n_initial or max(self.batch_size, min(8, self.budget // 4))


@dataclass
class ParetoResult:
    """A finished run: every evaluation, the measured feasible front, its hypervolume."""

    objectives: list[Objective]
    constraints: list[MetricBound]
    history: pd.DataFrame  # one row per evaluation: params, each metric, predicted_<metric>, feasible
    front: pd.DataFrame  # the measured feasible Pareto front (params + objective values), from study.best_trials
    hypervolume: float  # of the front, in the objectives' units, against reference_point
    reference_point: list[float] | None  # raw units, one per objective
    n_evaluations: int
    stopped_by: str  # "budget" | "wall_time" | "space_exhausted" | "callback" | "interrupted"
    wall_s: float
    fit_s: float
    predictions: pd.DataFrame | None = None  # last round's predictions for every candidate (for plots)
    study: Any = field(default=None, repr=False)
    # Every evaluation of the study, this run's and those of earlier runs or other workers on it:
    # what the written report holds (a resumed run's own history may be empty).
    study_history: pd.DataFrame | None = None
    # What was tuned on which hardware or dataset, as the plot's title says it (e.g. the CLI session's
    # backend description); None: the plot says only the run's numbers.
    description: str | None = None
    # Hindsight where a replay holds every candidate (reports only, never shown to the tuner): the
    # feasible Pareto front of all of them (2+ objectives), or the best feasible value (one objective).
    true_front: pd.DataFrame | None = None
    optimum: float | None = None

    @property
    def evaluations(self) -> pd.DataFrame:
        """Every evaluation of the study (``study_history``), else this run's (``history``)."""
        return self.history if self.study_history is None else self.study_history

    @property
    def best_value(self) -> float | None:
        """One objective: its best measured feasible value (None: none yet, or 2+ objectives)."""
        if len(self.objectives) != 1:
            return None
        o = self.objectives[0]
        values = pd.to_numeric(self.front.get(o.metric, pd.Series(dtype=float)), errors="coerce").dropna()
        return (float(values.max() if o.direction == "maximize" else values.min())) if len(values) else None

    @property
    def optimum_ratio(self) -> float | None:
        """One objective: best / known optimum (1 = the optimum; see ``ratio_text`` for which way is worse)."""
        best = self.best_value
        return best / self.optimum if best and self.optimum else None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary: settings, front, hypervolume, counts."""
        def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
            return json.loads(frame.to_json(orient="records"))

        if len(self.objectives) >= 2:
            score: dict[str, Any] = {"hypervolume": self.hypervolume, "reference_point": self.reference_point}
        else:  # one objective's hypervolume is only its distance from an internal reference: its best instead
            score = {"best_value": self.best_value}
            if self.optimum is not None:  # a replay holding every candidate: its recorded best
                from perfpred.tuner._recorded import ratio_text

                score.update(optimum=self.optimum, best_over_optimum=self.optimum_ratio,
                             best_over_optimum_reads=ratio_text(self.objectives[0].direction))
        if self.description:
            score["description"] = self.description
        return {"objectives": [str(o) for o in self.objectives], "constraints": [str(c) for c in self.constraints],
                "n_evaluations": self.n_evaluations, "stopped_by": self.stopped_by, **score,
                "study_evaluations": len(self.history if self.study_history is None else self.study_history),
                "front": records(self.front),
                "history": records(self.history if self.study_history is None else self.study_history),
                "wall_s": round(self.wall_s, 3), "fit_s": round(self.fit_s, 3)}

    @property
    def report_file(self) -> str:
        """The report's file name: ``pareto.json`` for a front of 2+ objectives, ``result.json`` for one
        objective (as single-objective tuning names its report)."""
        return "pareto.json" if len(self.objectives) >= 2 else "result.json"

    def write(self, out_dir: str | os.PathLike[str], plot: bool = True,
              on_warning: Callable[[str], None] | None = None) -> dict[str, Path]:
        """The report (``report_file``: ``pareto.json``, or ``result.json`` for one objective), ``front.csv``,
        ``history.csv`` and the plot: ``pareto.png`` for 2+ objectives (the known ``true_front`` dashed),
        ``best_so_far.png`` for one (the known ``optimum`` as a line), in ``out_dir``. Without matplotlib
        the plot is skipped and ``on_warning`` (default: ``warnings.warn``) says so."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"json": out / self.report_file, "front": out / "front.csv", "history": out / "history.csv"}
        paths["json"].write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        self.front.to_csv(paths["front"], index=False)
        self.evaluations.to_csv(paths["history"], index=False)
        if not plot:
            return paths
        # 2+ objectives: the front; one has no front to plot, its best so far instead. The other kind's file
        # from an earlier run would belie this report.
        name, other = ("pareto.png", "best_so_far.png") if len(self.objectives) >= 2 else ("best_so_far.png",
                                                                                          "pareto.png")
        (out / other).unlink(missing_ok=True)
        from perfpred.tuner._report_plot import matplotlib_missing

        if matplotlib_missing(on_warning or (lambda message: warnings.warn(message, stacklevel=3)), f"; no {name}"):
            (out / name).unlink(missing_ok=True)
            return paths
        if len(self.objectives) >= 2:
            from perfpred.tuner._pareto_plot import plot_pareto

            paths["plot"] = plot_pareto(self, out / name, true_front=self.true_front)
        else:
            from perfpred.tuner._recorded import best_so_far_plot

            o = self.objectives[0]
            values = [row.get(o.metric) if row.get("feasible") else None for row in self.evaluations.to_dict("records")]
            within = " within the constraints" if self.constraints else ""
            paths["plot"] = best_so_far_plot(out, values, objective=o, optimum=self.optimum,
                                             description=self.description or f"{o.metric} ({o.direction})",
                                             optimum_label=f"best of every recorded config{within}")
        return paths


def default_reference(values: np.ndarray, objectives: Sequence[Objective]) -> np.ndarray:
    """Optuna's rule (as its TPE sampler): 1.1 x the worst value to minimise, 0.9 x the worst to maximise."""
    z = min_form(values, objectives)
    worst = z.max(axis=0)
    return np.maximum(1.1 * worst, 0.9 * worst)


class ParetoTuner(PredictorFirstLoop):
    """Tune ``space`` on ``backend`` for several objectives under SLOs, with the predictor first.

    Parameters:
        space: the search space (finite spaces are enumerated and scored whole).
        backend: measures one config (``measure(config) -> Measurement``).
        settings: objectives, SLOs, budget, batch size, exploration.
        candidates: the configs to choose from, each within the space (repeated rows are measured
            once). Default: a replayed backend's recorded configs that lie in the space
            (``ReplayBackend.recorded_configs``), else ``space.enumerate()``.
        prior: transferred knowledge per metric: ``{metric: candidates -> predicted values}``
            (e.g. a model trained on other hardware or other models); metrics without one are
            learnt from this run's measurements only; priors of untracked metrics are not used.
        prior_error: per metric, the log-space spread of the prior's error on a new space (e.g.
            its grouped cross-validation error; default 0.25). Until the surrogate has the 4
            measurements it needs to estimate its own spread, this spread, shrinking as the
            measurements pin down the prior's offset, is the predictions' spread: a calibrated
            one makes SLO feasibility probabilities honest.
        storage / study_name: Optuna RDB storage URL shared by workers (default: in memory).
        featurize: candidates DataFrame -> numeric features (default: ``param_features``).
        on_evaluation: called with each evaluation's row; returning True stops the run.
        check_metrics: check the objectives and SLOs name metrics the backend records, when
            it can tell (a replayed table).
        study_refusal: ``open_study``'s ``remedy`` / ``mixes`` wording when the study tunes something else.
    """

    def __init__(self, space: SearchSpace, backend: HardwareBackend, settings: ParetoSettings, *,
                 candidates: pd.DataFrame | None = None, prior: Mapping[str, Prior] | None = None,
                 prior_error: Mapping[str, float] | None = None,
                 storage: str | None = None, study_name: str = "perfpred-pareto",
                 study_identity: Mapping[str, Any] | None = None,
                 featurize: Callable[[pd.DataFrame], pd.DataFrame] = param_features,
                 on_evaluation: Callable[[dict[str, Any]], bool | None] | None = None,
                 check_metrics: bool = True, study_refusal: Mapping[str, str] | None = None) -> None:
        check_tuner_args(space, backend, settings, ParetoSettings)
        self.space = space
        self.backend = backend
        self.settings = settings
        if check_metrics and (known := known_metrics(backend)) is not None:
            parse_objectives(settings.objectives, known)
            parse_constraints(settings.constraints, known)
        self.metrics = settings.metrics
        # The history has a column per metric and its prediction beside the parameters.
        clash = [n for n in space.names if n in self.metrics or n in {f"predicted_{m}" for m in self.metrics}]
        if clash:
            raise InvalidInputError(f"parameter names must differ from the run's metric columns {self.metrics} (and "
                                    f"their predicted_ columns), but got {clash}")
        if prior is not None and not isinstance(prior, Mapping):
            raise InvalidInputError(f"`prior` must map metrics to functions of the candidates, "
                                    f"but got {type(prior).__name__}")
        for name, fn in (prior or {}).items():
            if not callable(fn):
                raise InvalidInputError(f"the prior for {name!r} must be a function from a candidates DataFrame to "
                                        f"predicted values, but got {type(fn).__name__}")
        # A predictor of more metrics than this run tracks is fine: the others are not used.
        self.prior = {k: fn for k, fn in (prior or {}).items() if k in self.metrics}
        self.prior_error = {k: v for k, v in (prior_error or {}).items() if k in self.prior}
        for name, value in (prior_error or {}).items():
            if not (isinstance(value, (int, float)) and np.isfinite(value) and value > 0):
                raise InvalidInputError(f"a prior error must be a positive number (log-space spread), "
                                        f"but got {name}={value!r}")
        candidates = tuning_candidates(space, backend, candidates)
        self.candidates = (space.enumerate() if candidates is None else candidates).reset_index(drop=True)
        if self.candidates.empty:
            raise InvalidInputError("the search space has no valid config (check the constraints)")
        self.recorder = ParetoStudyRecorder(space, settings.objectives, settings.constraints, storage=storage,
                                            study_name=study_name, identity=study_identity,
                                            claim_grace_s=settings.claim_grace_s, refusal=study_refusal)
        self.features = featurize(self.candidates)
        self.index = CandidateIndex(self.candidates)
        self.surrogates = {m: EnsembleSurrogate(n_members=settings.ensemble, n_estimators=settings.n_estimators,
                                                seed=settings.seed + 7 * j) for j, m in enumerate(self.metrics)}
        self.on_evaluation = on_evaluation
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.claims = self.recorder.claims

    # ------------------------------------------------------------------ state

    def _prior_logs(self) -> dict[str, np.ndarray]:
        logs = {}
        for name, fn in self.prior.items():
            pred = np.asarray(fn(self.candidates), dtype=float)
            if pred.shape != (len(self.candidates),) or not np.all(np.isfinite(pred) & (pred > 0)):
                raise InvalidInputError(f"the prior for {name!r} must give one positive finite prediction per "
                                        f"candidate ({len(self.candidates)}), but it did not")
            logs[name] = np.log(pred)
        return logs

    def _measured_state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(candidate indices, log values (n, n_metrics; nan if missing), usable flags) of all measured."""
        idx, y, ok = [], [], []
        for config, values, status in self.recorder.measured():
            i = self.index.get(config)
            if i is None:
                continue
            row = [values.get(m) for m in self.metrics]
            good = status == "ok" and all(v is not None and v > 0 for v in row)
            idx.append(i)
            ok.append(good)
            y.append([np.log(v) if good else np.nan for v in row])
        return (np.asarray(idx, dtype=int), np.asarray(y, dtype=float).reshape(-1, len(self.metrics)),
                np.asarray(ok, dtype=bool))

    def _n_measured(self) -> int:
        return len(self.recorder.measured())

    def _feasible_front(self, m_y: np.ndarray, m_ok: np.ndarray) -> np.ndarray:
        """Measured feasible points, log minimisation form (n, n_objectives)."""
        s = self.settings
        rows = []
        for logs, ok in zip(m_y, m_ok, strict=True):
            values = dict(zip(self.metrics, np.exp(logs), strict=True))
            if ok and is_feasible(values, s.objectives, s.constraints):
                rows.append([o.sign * np.log(values[o.metric]) for o in s.objectives])
        return np.asarray(rows, dtype=float).reshape(-1, len(s.objectives))

    # ------------------------------------------------------------------ one round

    def _predict(self, m_idx, m_y, m_ok, prior_logs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mean log, std log) per candidate and metric, and P(runs ok) per candidate."""
        n = len(self.candidates)
        mean = np.empty((n, len(self.metrics)))
        std = np.empty_like(mean)
        p_ok = np.ones(n)
        for j, name in enumerate(self.metrics):
            prior = prior_logs.get(name)
            fit = self.surrogates[name].fit_predict(
                self.features.iloc[m_idx], m_y[:, j], m_ok, self.features,
                prior_measured=prior[m_idx] if prior is not None else None, prior_candidates=prior)
            spread = np.maximum(fit.std_log, MIN_STD_LOG)
            if prior is not None and m_ok.sum() < FEW_MEASURED:
                spread = np.full(n, self._few_point_spread(name, m_y[m_ok, j] - prior[m_idx[m_ok]]))
            mean[:, j], std[:, j] = fit.mean_log, spread
            p_ok = np.minimum(p_ok, fit.p_ok)
        return mean, std, p_ok

    def _few_point_spread(self, name: str, residuals: np.ndarray) -> float:
        """Spread of prior + constant correction after a few measurements (the surrogate's is a flat 0.25).

        The prior's error on a new space is mostly a shared offset (a model runs uniformly faster
        or slower than predicted), which the correction learns: after n measurements its
        uncertainty shrinks as 1/(n+1) in variance; what the residuals disagree on stays.
        """
        sigma0 = self.prior_error.get(name, DEFAULT_PRIOR_ERROR)
        spread = residuals.std() if len(residuals) > 1 else 0.0
        return float(np.sqrt(sigma0**2 / (len(residuals) + 1) + spread**2))

    def _feasible_prob(self, mean: np.ndarray, std: np.ndarray, p_ok: np.ndarray) -> np.ndarray:
        prob = p_ok.copy()
        for c in self.settings.constraints:
            j = self.metrics.index(c.metric)
            margin = (np.log(c.bound) - mean[:, j]) / std[:, j]
            prob *= norm.cdf(margin if c.op == "<=" else -margin)
        return prob

    def select(self, mean: np.ndarray, std: np.ndarray, p_feasible: np.ndarray, front: np.ndarray,
               available: np.ndarray, k: int) -> list[int]:
        """Greedy batch of ``k`` candidate indices (see the module docstring, step 3)."""
        s = self.settings
        cols = [self.metrics.index(o.metric) for o in s.objectives]
        signs = np.array([o.sign for o in s.objectives])
        z_mean = signs * mean[:, cols]
        z_opt = z_mean - s.kappa * std[:, cols]
        z_pess = z_mean + s.kappa * std[:, cols]
        # Reference: just beyond the worst plausible outcome of any candidate or measurement.
        everything = np.vstack([z_opt, z_pess, front])
        worst = everything.max(axis=0)
        reference = worst + 0.1 * np.maximum(worst - everything.min(axis=0), 1e-3)
        eligible = available & (p_feasible >= s.min_feasible_prob)
        if not eligible.any():
            eligible = available.copy()
        believed = front.copy()
        picks: list[int] = []
        for _ in range(min(k, int(available.sum()))):
            if not eligible.any():
                eligible = available.copy()
                eligible[picks] = False
            pool = np.flatnonzero(eligible)
            gain = hypervolume_improvement(z_opt[pool], believed, reference) * p_feasible[pool]
            if gain.max() > 0:
                best_i = pool[int(np.argmax(gain))]
            else:
                # Nothing predicted to improve: the candidate nearest the front, the likelier feasible first.
                gap = epsilon_gap(z_opt[pool], believed) if len(believed) else -p_feasible[pool]
                best_i = pool[np.lexsort((-p_feasible[pool], gap))[0]]
            picks.append(int(best_i))
            eligible[best_i] = False
            available = available.copy()
            available[best_i] = False
            if p_feasible[best_i] >= 0.5:
                believed = np.vstack([believed, z_mean[best_i]]) if len(believed) else z_mean[best_i][None, :]
                believed = believed[pareto_mask(believed)]
        return picks

    # ------------------------------------------------------------------ the loop

    def _has_prior(self) -> bool:
        return bool(self.prior)

    def run(self) -> ParetoResult:
        self._prior_logs_ = self._prior_logs()
        self._predictions: pd.DataFrame | None = None
        outcome = self.run_rounds()
        return self._result(outcome.rows, outcome.stopped_by, outcome.wall_s, outcome.fit_s, self._predictions)

    def result_so_far(self, rows: list[dict[str, Any]]) -> ParetoResult:
        """The study as it stands, for a run cut short (Ctrl-C): its front and every evaluation in
        the study; ``rows`` are this run's evaluations as ``on_evaluation`` saw them."""
        return self._result(rows, "interrupted", 0.0, 0.0, getattr(self, "_predictions", None))

    def _propose(self, state: tuple[np.ndarray, ...], measured: np.ndarray, k: int, iteration: int) -> Proposal:
        m_idx, m_y, m_ok = state
        available = ~measured
        mean, std, p_ok = self._predict(m_idx, m_y, m_ok, self._prior_logs_)
        p_feasible = self._feasible_prob(mean, std, p_ok)
        picks = self.select(mean, std, p_feasible, self._feasible_front(m_y, m_ok), available, k)
        predicted = np.exp(mean)
        self._predictions = self.candidates.assign(
            **{f"predicted_{m}": predicted[:, j] for j, m in enumerate(self.metrics)},
            p_feasible=p_feasible, measured=measured)
        return Proposal(picks, predicted=predicted)

    def _evaluate(self, i: int, proposal: Proposal, iteration: int, t_start: float) -> dict[str, Any]:
        s = self.settings
        config = row_config(self.candidates, i)
        m = self.backend.measure(config)
        measured = {name: metric_value(m, name) for name in self.metrics}
        predicted = proposal.predicted[i] if proposal.predicted is not None else [np.nan] * len(self.metrics)
        pred = {name: float(p) if np.isfinite(p) else None for name, p in zip(self.metrics, predicted, strict=True)}
        self.recorder.record(config, measured, m.status, predicted=pred, iteration=iteration, worker=self.worker,
                             extra={"seed": s.seed})
        return {**config, **measured, "status": m.status,
                "feasible": m.status == "ok" and is_feasible(measured, s.objectives, s.constraints),
                **{f"predicted_{k}": v for k, v in pred.items()}, "iteration": iteration,
                "elapsed_s": time.perf_counter() - t_start}

    def front(self) -> pd.DataFrame:
        """The measured feasible Pareto front of the whole study (all workers): ``study.best_trials``."""
        s = self.settings
        names = [o.metric for o in s.objectives]
        extra = [m for m in self.metrics if m not in names]
        records = []
        for t in self.recorder.study.best_trials:
            records.append({**t.params, **dict(zip(names, t.values, strict=True)),
                            **{m: t.user_attrs.get(f"measured_{m}") for m in extra}, "trial": t.number})
        frame = pd.DataFrame(records, columns=[*self.space.names, *names, *extra, "trial"])
        return frame.sort_values(names[0], ascending=s.objectives[0].direction == "minimize").reset_index(drop=True)

    def _result(self, rows, stopped_by, wall_s, fit_s, predictions) -> ParetoResult:
        s = self.settings
        front = self.front()
        names = [o.metric for o in s.objectives]
        reference = None
        hv = 0.0
        if len(front):
            values = front[names].to_numpy(dtype=float)
            ref_z = default_reference(values, s.objectives)
            reference = [float(o.sign * r) for o, r in zip(s.objectives, ref_z, strict=True)]
            hv = hypervolume(min_form(values, s.objectives), ref_z)
        if predictions is not None:
            # The last round's predictions were made before its picks were measured: mark what is measured now.
            measured = np.zeros(len(self.candidates), dtype=bool)
            measured[self._measured_state()[0]] = True
            predictions = predictions.assign(measured=measured)
        true, optimum = self._hindsight()
        return ParetoResult(objectives=list(s.objectives), constraints=list(s.constraints),
                            history=pd.DataFrame(rows), front=front, hypervolume=hv, reference_point=reference,
                            n_evaluations=len(rows), stopped_by=stopped_by, wall_s=wall_s, fit_s=fit_s,
                            predictions=predictions, study=self.recorder.study,
                            study_history=self.recorder.history(self.metrics), true_front=true, optimum=optimum)

    def _hindsight(self) -> tuple[pd.DataFrame | None, float | None]:
        """(true front, optimum) of the candidates where the backend's recording holds them all (a replay):
        for the report only."""
        from perfpred.tuner._recorded import grid_front, grid_optimum, recorded_grid

        s = self.settings
        grid = recorded_grid(self.backend, self.candidates, self.metrics)
        if grid is None:
            return None, None
        if len(s.objectives) >= 2:
            return grid_front(grid, s.objectives, s.constraints), None
        return None, grid_optimum(grid, s.objectives[0], s.constraints)


def _as_tuple(specs: Any, what: str) -> tuple[Any, ...]:
    """``objectives`` / ``constraints`` as a tuple; one spec given alone is one, not its characters."""
    if specs is None:
        return ()
    if isinstance(specs, (str, Objective, MetricBound)):
        return (specs,)
    try:
        return tuple(specs)
    except TypeError:
        raise InvalidInputError(f"`{what}` must be a list of specs, but got {specs!r}") from None


def tune_pareto(space: SearchSpace, backend: HardwareBackend, objectives: Sequence[str | Objective], *,
                budget: int, constraints: Sequence[str | MetricBound] = (), candidates: pd.DataFrame | None = None,
                prior: Mapping[str, Prior] | None = None, prior_error: Mapping[str, float] | None = None,
                storage: str | None = None, study_name: str = "perfpred-pareto",
                study_identity: Mapping[str, Any] | None = None, reference_point: Sequence[float] | None = None,
                batch_size: int = 1, seed: int = 0, out_dir: str | os.PathLike[str] | None = None,
                on_evaluation: Callable[[dict[str, Any]], bool | None] | None = None,
                claim_grace_s: float = CLAIM_GRACE_S) -> ParetoResult:
    """Multi-objective tuning in one call (what ``perfpred tune --objective ... --constraint ...`` runs).

    ``objectives`` like ``["metric.output_tokens_per_s:maximize", "metric.energy_per_token_j"]``;
    ``constraints`` like ``["metric.itl_p99_ms <= 50"]``; ``reference_point`` (raw units, one per
    objective) fixes the hypervolume's reference (default: Optuna's 1.1 / 0.9 x the front's worst);
    ``out_dir`` writes ``pareto.json`` (``result.json`` for one objective), ``front.csv``, ``history.csv`` and
    (2+ objectives) ``pareto.png``;
    ``claim_grace_s``: see ``ParetoSettings``.
    """
    settings = ParetoSettings(objectives=_as_tuple(objectives, "objectives"), budget=budget,
                              constraints=_as_tuple(constraints, "constraints"), batch_size=batch_size, seed=seed,
                              claim_grace_s=claim_grace_s)
    ref = None
    if reference_point is not None:  # checked before anything is measured
        try:
            ref = np.asarray(reference_point, dtype=float)
        except (TypeError, ValueError):
            ref = None
        if ref is None or ref.shape != (len(settings.objectives),) or not np.all(np.isfinite(ref)):
            raise InvalidInputError(f"`reference_point` must give one finite value per objective "
                                    f"({len(settings.objectives)}), but got {reference_point!r}")
    result = ParetoTuner(space, backend, settings, candidates=candidates, prior=prior, prior_error=prior_error,
                         storage=storage, study_name=study_name, study_identity=study_identity,
                         on_evaluation=on_evaluation).run()
    if ref is not None:
        result.reference_point = [float(r) for r in ref]
        values = result.front[[o.metric for o in settings.objectives]].to_numpy(dtype=float)
        result.hypervolume = hypervolume(min_form(values, settings.objectives), min_form(ref, settings.objectives)[0])
    if out_dir is not None:
        result.write(out_dir)
    return result
