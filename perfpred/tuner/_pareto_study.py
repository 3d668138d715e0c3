"""The record of a multi-objective tuning run: an Optuna study with one direction per objective.

Every hardware evaluation becomes a trial with ``values`` in the objectives' units and one
named Optuna constraint per SLO (``trial.constraints["metric.itl_p99_ms <= 50"]``, the
relative violation), so ``study.best_trials`` is the measured feasible Pareto front and
optuna-dashboard draws it. Trials are tagged as ``StudyRecorder``'s are (``source``,
``status``, ``iteration``, ``worker``, ``predicted_<metric>``), plus the measured value of
every tracked metric (``measured_<metric>``), so constraint metrics show in the dashboard too.
Workers sharing an RDB storage claim configs in the same claims table as the single-objective
tuner, so no config is measured twice and the budget is never overrun (a dead worker's claim is
taken over after ``claim_grace_s``: ``ClaimTable``).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from perfpred.datasets._schema import python_scalar
from perfpred.tuner._objectives import MetricBound, Objective, is_feasible
from perfpred.tuner._study import CLAIM_GRACE_S, ClaimTable, open_study


class ParetoStudyRecorder:
    """Adds measured configs to a multi-objective Optuna study and reads back what all workers measured."""

    def __init__(self, space, objectives: Sequence[Objective], constraints: Sequence[MetricBound] = (), *,
                 storage: str | None = None, study_name: str = "perfpred-pareto",
                 identity: Mapping[str, Any] | None = None, claim_grace_s: float = CLAIM_GRACE_S,
                 refusal: Mapping[str, str] | None = None) -> None:
        """``refusal``: ``open_study``'s ``remedy`` / ``mixes`` wording for a study that tunes something else."""
        import optuna

        self.space = space
        self.objectives = list(objectives)
        self.constraints = list(constraints)
        self.distributions = space.optuna_distributions()
        self.study = open_study(storage, study_name, [o.direction for o in self.objectives],
                                {"parameters": sorted(space.names),
                                 "objectives": [str(o) for o in self.objectives], **(identity or {})},
                                **dict(refusal or {}))
        with warnings.catch_warnings():  # experimental since Optuna 3.2; it names the dashboard's axes
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.study.set_metric_names([o.metric for o in self.objectives])
        self.study.set_user_attr("objectives", [str(o) for o in self.objectives])
        self.study.set_user_attr("constraints", [str(c) for c in self.constraints])
        self.claims = ClaimTable(storage, study_name, grace_s=claim_grace_s) if storage else None

    def record(self, config: Mapping[str, Any], measured: Mapping[str, float | None], status: str, *,
               predicted: Mapping[str, float | None] | None = None, iteration: int = 0, worker: str = "",
               extra: Mapping[str, Any] | None = None) -> None:
        """One evaluation: ``measured`` maps every tracked metric to its value (None if missing)."""
        from optuna.trial import TrialState, create_trial

        attrs: dict[str, Any] = {"source": "measured", "status": status, "iteration": iteration, "worker": worker}
        attrs.update({f"measured_{k}": v for k, v in measured.items()})
        attrs.update({f"predicted_{k}": v for k, v in (predicted or {}).items()})
        attrs.update(extra or {})
        values = [measured.get(o.metric) for o in self.objectives]
        ok = status == "ok" and all(v is not None for v in values)
        constraints = None
        if ok and self.constraints:
            # A constraint metric the run did not report cannot be shown to hold: infinitely violated.
            constraints = {str(c): c.violation(measured[c.metric]) if measured.get(c.metric) is not None
                           else float("inf") for c in self.constraints}
            attrs["feasible"] = is_feasible(measured, self.objectives, self.constraints)
        trial = create_trial(
            params={k: python_scalar(v) for k, v in config.items()},
            distributions=self.distributions,
            values=[float(v) for v in values] if ok else None,
            state=TrialState.COMPLETE if ok else TrialState.FAIL,
            user_attrs={k: python_scalar(v) for k, v in attrs.items() if v is not None},
            constraints=constraints,
        )
        self.study.add_trial(trial)

    def history(self, metrics: Sequence[str]) -> Any:
        """Every measured trial of the study (all workers, all runs that resumed it), in trial
        order: the parameters, each metric measured, ``status``, ``feasible``, ``predicted_<metric>``,
        ``iteration``, ``worker``."""
        import pandas as pd

        rows = []
        for t in self.study.get_trials(deepcopy=False):
            if t.user_attrs.get("source") != "measured":
                continue
            a = t.user_attrs
            measured = {m: a.get(f"measured_{m}") for m in metrics}
            status = a.get("status", "ok")
            rows.append({**t.params, **measured, "status": status,
                         "feasible": status == "ok" and is_feasible(measured, self.objectives, self.constraints),
                         **{f"predicted_{m}": a.get(f"predicted_{m}") for m in metrics},
                         "iteration": a.get("iteration"), "worker": a.get("worker"), "trial": t.number})
        return pd.DataFrame(rows, columns=[*self.space.names, *metrics, "status", "feasible",
                                           *[f"predicted_{m}" for m in metrics], "iteration", "worker", "trial"])

    def measured(self) -> list[tuple[dict[str, Any], dict[str, float | None], str]]:
        """(config, measured metric values, status) of every measured trial, from every worker."""
        out = []
        for t in self.study.get_trials(deepcopy=False):
            if t.user_attrs.get("source") != "measured":
                continue
            values = {k[len("measured_"):]: v for k, v in t.user_attrs.items() if k.startswith("measured_")}
            out.append((dict(t.params), values, t.user_attrs.get("status", "ok")))
        return out
