"""The one predictor-first loop that every tuner runs: rounds of propose, confirm, learn.

Each round:
1. stop when the budget is spent (every worker's claims count), the wall-time cap has passed,
   or every candidate has been measured;
2. without a prior, until ``initial_size`` configs are measured: the next configs of a
   space-filling (maximin) design; otherwise the tuner's policy proposes a batch from what is
   measured so far (its surrogate, its acquisition, its diversity rule) or asks to stop;
3. measure each pick (claimed first when workers share a study: ``claims``) and record it;
   the ``on_evaluation`` callback sees each evaluation and may stop the run by returning True.

With shared claims, a worker first frees the claims of workers that died (no heartbeat for the
grace period: ``ClaimTable``), and when the budget looks spent while other workers' claims are
still in flight it waits for them (polling, within ``max_wall_s``): one that finishes ends the
run, one released or gone stale frees a slot this worker then measures, so a crashed worker
never leaves the study short of its budget.

Subclasses say what is measured, how a batch is chosen, and how one evaluation is recorded:
:class:`~perfpred.tuner.Tuner` (one objective, lower confidence bound, transfer priors),
:class:`~perfpred.tuner.ParetoTuner` (several objectives under SLOs, hypervolume improvement)
and the serving SLO search (a goal under upper bounds, a GP surrogate by default).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from perfpred.datasets import Measurement
from perfpred.errors import InvalidInputError
from perfpred.tuner._study import ClaimTable, config_key, row_config

# Seconds between looks at the claims table while other workers' claims hold the rest of the budget.
CLAIM_POLL_S = 1.0


class HardwareBackend(Protocol):
    """Anything that measures one config: a real collector adapter or a replayed space."""

    def measure(self, config: Mapping[str, Any]) -> Measurement: ...


def check_setting_types(settings: Any, integers: Sequence[str], numbers: Sequence[str],
                        optional: Sequence[str] = ()) -> None:
    """One-line error for a setting of the wrong type: ``integers`` must be ints (not bools, not
    floats such as 2.5), ``numbers`` real numbers; those in ``optional`` may also be None."""
    for name in (*integers, *numbers):
        value = getattr(settings, name)
        if value is None and name in optional:
            continue
        if isinstance(value, (bool, np.bool_)):
            ok = False
        elif name in integers:
            ok = isinstance(value, (int, np.integer))
        else:
            ok = isinstance(value, (int, float, np.integer, np.floating))  # NaN: the range checks refuse it
        if not ok:
            kind = "an integer" if name in integers else "a number"
            extra = " or None" if name in optional else ""
            raise InvalidInputError(f"`{name}` must be {kind}{extra}, but got {name}={value!r}")


def check_tuner_args(space: Any, backend: Any, settings: Any, settings_type: type) -> None:
    """One-line errors for a tuner given the wrong kind of space, backend or settings."""
    from perfpred.tuner._space import SearchSpace

    if not isinstance(space, SearchSpace):
        raise InvalidInputError(f"`space` must be a SearchSpace (e.g. SearchSpace.from_dict(...)), "
                                f"but got {type(space).__name__}")
    if not callable(getattr(backend, "measure", None)):
        raise InvalidInputError(f"`backend` must have a measure(config) -> Measurement method, "
                                f"but got {type(backend).__name__}")
    if not isinstance(settings, settings_type):
        raise InvalidInputError(f"`settings` must be a {settings_type.__name__} (e.g. "
                                f"{settings_type.__name__}(budget=16)), but got {type(settings).__name__}")


def tuning_candidates(space: Any, backend: Any, candidates: pd.DataFrame | None) -> pd.DataFrame | None:
    """The configs a tuner chooses from, checked before anything is measured.

    Given ``candidates``: their rows without repeats (first occurrences, in order), refused in
    one line when a row lies outside the space's domains or constraints. Without: a replayed
    backend's recorded configurations (``recorded_configs()``, as ``perfpred tune --backend
    replay:PATH`` tunes them) that lie in the space, since a replay answers only what was
    recorded; None for any other backend (the tuner enumerates or samples the space).
    """
    if candidates is not None:
        return space.check_candidates(candidates)
    lister = getattr(backend, "recorded_configs", None)
    if not callable(lister):
        return None
    recorded = lister()
    missing = [n for n in space.names if n not in recorded.columns]
    if missing or len(recorded.columns) != len(space.names):
        raise InvalidInputError(f"the space's parameters must be the recording's {list(recorded.columns)}, but got "
                                f"{space.names}: pass candidates=... with the configs to choose from")
    recorded = recorded[space.names]
    inside = space.admitted(recorded)
    if not inside.any():
        raise InvalidInputError(f"no recorded config of the backend ({len(recorded)}) lies in the space's domains "
                                "and constraints")
    return recorded[inside].reset_index(drop=True)


def level_codes(frame: pd.DataFrame) -> np.ndarray:
    """Each parameter's values as integer level codes (for distances between configs)."""
    return np.stack([pd.factorize(frame[c], sort=True)[0] for c in frame.columns], axis=1)


def maximin_design(candidates: pd.DataFrame, n: int, seed: int, pool: int = 4000) -> list[int]:
    """Greedy maximin on normalised level codes over a random pool: a space-filling start."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(candidates), size=min(pool, len(candidates)), replace=False)
    codes = level_codes(candidates).astype(float)[idx]
    span = codes.max(axis=0) - codes.min(axis=0)
    codes = codes / np.where(span > 0, span, 1)
    chosen = [0]
    dist = np.linalg.norm(codes - codes[0], axis=1)
    while len(chosen) < min(n, len(idx)):
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(codes - codes[nxt], axis=1))
    return [int(idx[i]) for i in chosen]


@dataclass
class Proposal:
    """A policy's answer for one round: the picks (candidate rows, best first), whatever the
    tuner records beside each measurement (its predictions), or a reason to stop instead."""

    picks: list[int]
    predicted: Any = None
    stop: str | None = None


@dataclass
class RoundsOutcome:
    rows: list[Any]  # what ``_evaluate`` returned, one per evaluation this process made, in order
    stopped_by: str  # "budget" | "wall_time" | "space_exhausted" | "callback" | a policy's reason
    wall_s: float
    fit_s: float  # time spent proposing (model fitting and scoring)


class PredictorFirstLoop:
    """The round structure shared by the tuners; subclasses fill in the hooks below.

    A subclass sets ``candidates`` (a DataFrame, one row per config), ``settings`` (with
    ``budget``, ``batch_size``, ``initial_size``, ``seed`` and optionally ``max_wall_s``),
    ``on_evaluation`` and, when workers share a study, ``claims`` and ``worker`` before
    :meth:`run_rounds` is called.
    """

    candidates: pd.DataFrame
    settings: Any
    on_evaluation: Callable[[Any], bool | None] | None = None
    claims: ClaimTable | None = None  # workers sharing a study claim each config here first
    worker: str = ""  # this process, as its claims name it

    # ------------------------------------------------------------------ hooks

    def _measured_state(self) -> tuple[np.ndarray, ...]:
        """What is measured so far (by every worker of the study): candidate rows first, then
        whatever the policy needs of them (values, ok flags); read once per round."""
        raise NotImplementedError

    def _n_measured(self) -> int:
        """Evaluations made so far (by every worker of the study, when there is one)."""
        raise NotImplementedError

    def _n_used(self) -> int:
        """Hardware evaluations spent so far against the budget: with shared claims, every
        worker's claims (an evaluation in flight counts), else what is measured."""
        return self.claims.n_claimed() if self.claims is not None else self._n_measured()

    def _has_prior(self) -> bool:
        """With a prior the policy proposes from the first round; without, a design starts."""
        return False

    def _propose(self, state: tuple[np.ndarray, ...], measured: np.ndarray, k: int, iteration: int) -> Proposal:
        """Up to ``k`` unmeasured candidate rows to measure next (``measured`` masks ``state``'s rows)."""
        raise NotImplementedError

    def _evaluate(self, i: int, proposal: Proposal, iteration: int, t_start: float) -> Any:
        """Measure and record candidate row ``i`` (claimed already); the evaluation's row."""
        raise NotImplementedError

    def _claim(self, i: int) -> bool:
        """Whether this process may measure candidate row ``i``: always without shared claims; with
        them, unless another worker holds it or the shared budget is spent (a dead worker's stale
        claim is taken over first)."""
        if self.claims is None:
            return True
        key = config_key(row_config(self.candidates, i))
        return self.claims.claim(key, self.settings.budget, self.worker, self._finished_keys) is not None

    def _release(self, i: int) -> None:
        """Give back the claim on candidate row ``i`` when its evaluation did not finish (a claim
        kept would bar the config from the study for good, and count against its budget)."""
        if self.claims is not None:
            self.claims.release(config_key(row_config(self.candidates, i)), self.worker)

    def _finish(self, i: int) -> None:
        """Mark the claim on candidate row ``i`` finished (its trial is recorded): no heartbeat
        from now on, and never taken over."""
        if self.claims is None:
            return
        key = config_key(row_config(self.candidates, i))
        if not self.claims.finish(key, self.worker):
            warnings.warn(f"claim_grace_s={self.claims.grace_s:g}: the claim on config {key} was taken over as "
                          "stale while this worker measured it (its heartbeat was late), so another worker may "
                          "measure it again; raise claim_grace_s", RuntimeWarning, stacklevel=2)

    def _finished_keys(self) -> set[str]:
        """The claim keys of every config the study has a trial of: its parameters as recorded,
        and the candidate row they are (a value read back as 1.0 still names row ``x=1``)."""
        recorder = getattr(self, "recorder", None)
        if recorder is None:
            return set()
        index = getattr(self, "index", None)
        keys = set()
        for trial in recorder.study.get_trials(deepcopy=False):
            if trial.state.is_finished():
                keys.add(config_key(trial.params))
                row = index.get(trial.params) if index is not None else None
                if row is not None:
                    keys.add(config_key(row_config(self.candidates, row)))
        return keys

    def _await_claims(self, t_start: float, max_wall_s: float | None) -> bool:
        """The budget looks spent: whether to look again, after freeing dead workers' claims or
        (other workers' claims still in flight: one may be released or go stale) a short wait."""
        if self.claims is None:
            return False
        if self.claims.reclaim_stale(self._finished_keys):
            return True
        if not self.claims.in_flight(self._finished_keys):
            return False
        if max_wall_s is not None and time.perf_counter() - t_start > max_wall_s:
            return False
        time.sleep(min(CLAIM_POLL_S, self.claims.heartbeat_s))
        return True

    # ------------------------------------------------------------------ the loop

    def _design_picks(self, measured: np.ndarray, k: int, iteration: int) -> list[int]:
        s = self.settings
        picks = [i for i in maximin_design(self.candidates, s.initial_size, s.seed) if not measured[i]][:k]
        # The design is measured (another worker's failures count): fill at random.
        return picks or self._random_picks(measured, k, iteration)

    def _random_picks(self, measured: np.ndarray, k: int, iteration: int) -> list[int]:
        rng = np.random.default_rng([self.settings.seed, iteration])
        return [int(i) for i in rng.permutation(np.flatnonzero(~measured))[:k]]

    def run_rounds(self) -> RoundsOutcome:
        from threadpoolctl import threadpool_limits

        # The surrogates make hundreds of tiny single-threaded XGBoost fits; between them idle
        # OpenMP workers spin, so two tuner processes on a 2-core machine ran at half speed
        # (a replayed 128-evaluation GEMM run: 17.5 s -> 10 s each with the limit, same picks).
        with threadpool_limits(limits=1, user_api="openmp"):
            return self._rounds()

    def _rounds(self) -> RoundsOutcome:
        s = self.settings
        max_wall_s = getattr(s, "max_wall_s", None)
        t_start = time.perf_counter()
        fit_s = 0.0
        rows: list[Any] = []
        stopped_by = "budget"
        iteration = 0
        if self.claims is not None:  # claims left by workers that died, this host's earlier runs too
            self.claims.reclaim_stale(self._finished_keys)
        while stopped_by == "budget":
            used = self._n_used()
            if used >= s.budget:
                if self._await_claims(t_start, max_wall_s):
                    continue
                break
            if max_wall_s is not None and time.perf_counter() - t_start > max_wall_s:
                stopped_by = "wall_time"
                break
            state = self._measured_state()
            m_idx = state[0]
            measured = np.zeros(len(self.candidates), dtype=bool)
            measured[m_idx] = True
            if measured.all():
                stopped_by = "space_exhausted"
                break
            k = min(s.batch_size, s.budget - used)
            t0 = time.perf_counter()
            if not self._has_prior() and len(m_idx) < s.initial_size:
                k = min(s.initial_size - len(m_idx), s.budget - used)
                proposal = Proposal(self._design_picks(measured, k, iteration))
            else:
                proposal = self._propose(state, measured, k, iteration)
            fit_s += time.perf_counter() - t0
            if proposal.stop is not None:
                stopped_by = proposal.stop
                break
            if not proposal.picks:  # no candidate scored (all predicted non-finite): never spin
                proposal.picks = self._random_picks(measured, k, iteration)
            iteration += 1
            for i in proposal.picks[:k]:
                if not self._claim(int(i)):
                    continue
                try:
                    row = self._evaluate(int(i), proposal, iteration, t_start)
                except BaseException:  # Ctrl-C or a crash mid-measurement: nothing was recorded
                    self._release(int(i))
                    raise
                self._finish(int(i))
                rows.append(row)
                if self.on_evaluation is not None and self.on_evaluation(row):
                    stopped_by = "callback"
                    break
        return RoundsOutcome(rows=rows, stopped_by=stopped_by, wall_s=time.perf_counter() - t_start, fit_s=fit_s)
