"""Tune LLM serving configs on recorded ML.ENERGY spaces, predicting before launching.

One (model, task) group of the ML.ENERGY v3 LLM rows is a complete recorded space of serving
configs (``max_num_seqs``, ``tensor_parallel``, ``expert_parallel``, ``data_parallel``,
``num_gpus``) on H100s; a :class:`ReplayBackend` over it answers "launch this config and
measure" with the recorded throughput, energy per token, power and ITL percentiles.

The prior is honest "predict before launching": a :class:`ServingPredictor` trained on the
OTHER models' rows only (leave one model out: every task of the tuned model is held out),
with the serving features and analytic offsets of ``benchmarks/accuracy.py``'s
``mlenergy_lomo``. A decode step gives each sequence of the batch a token, so throughput is
``max_num_seqs`` x (tokens per sequence per step) / ITL p50, and energy per token is total power
/ throughput (exactly so in ML.ENERGY's rows); the ITL is learned over the decode step's time
(roofline plus a fixed time per decoder layer).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, clone

from perfpred.collect._replay import ReplayBackend
from perfpred.collect.importers._ml_energy import LLM_CONFIG
from perfpred.datasets._schema import configuration_ids
from perfpred.errors import InvalidInputError
from perfpred.tuner._objectives import (
    MetricBound,
    Objective,
    known_metrics,
    parse_constraints,
    parse_objectives,
    tracked_metrics,
)
from perfpred.tuner._pareto_loop import ParetoResult, ParetoSettings, ParetoTuner
from perfpred.tuner._space import SearchSpace

CONFIG_COLUMNS = tuple(f"config.{k}" for k in LLM_CONFIG)
# What a predictor may see of a recorded row: the model, the task, the hardware, the config.
INPUT_PREFIXES = ("workload.", "config.")
INPUT_COLUMNS = ("kind", "hardware_id", "hardware_json")
GPU_S_PER_TOKEN = "metric.gpu_s_per_token"
# Output tokens per sequence per decode step: below 1 where prefills take steps or the batch is
# not full (median 0.92 in ML.ENERGY); learned, as throughput's other factor beside the ITL.
TOKENS_PER_SEQ_STEP = "metric.tokens_per_seq_step"
# metric -> (column the model learns, analytic offset feature of the serving featurizer).
SERVING_TARGETS: dict[str, tuple[str, str]] = {
    "metric.output_tokens_per_s": (GPU_S_PER_TOKEN, "log2_decode_gpu_seconds_per_token"),
    "metric.energy_per_token_j": ("metric.energy_per_token_j", "log2_decode_gpu_seconds_per_token"),
    "metric.energy_per_request_j": ("metric.energy_per_request_j", "log2_decode_gpu_seconds_per_token"),
    "metric.itl_p50_ms": ("metric.itl_p50_ms", "log2_decode_step_ms"),
    "metric.itl_p90_ms": ("metric.itl_p90_ms", "log2_decode_step_ms"),
    "metric.itl_p95_ms": ("metric.itl_p95_ms", "log2_decode_step_ms"),
    "metric.itl_p99_ms": ("metric.itl_p99_ms", "log2_decode_step_ms"),
    "power_w": ("power_w", "log2_num_gpus"),
}
# A live search's --goal as the replay's objective, where the runs recorded that metric: tokens
# per joule is 1 / energy per token, so both rank configs alike. goodput and sustainable_rate need
# per-request latencies (TTFT, TPOT) the runs did not record.
GOAL_OBJECTIVES = {"throughput": "metric.output_tokens_per_s:max", "tokens_per_joule": "metric.energy_per_token_j:min"}
# The weights-only featurizer ("serving") has no per-layer step time: its rooflines instead.
WEIGHTS_ONLY_OFFSETS = {"log2_decode_step_ms": "log2_roofline_ms",
                        "log2_decode_gpu_seconds_per_token": "log2_gpu_seconds_per_token"}
# Tail latencies are learned as a multiple of the median: p99 / p50 is set largely by the task
# (its prompts are prefilled between decode steps; the task alone explains 64% of the ratio's log
# variance in ML.ENERGY), so it carries to an unseen model better than the tail itself (leave one
# model out: ITL p99 31% off directly, 24% as p50 x the predicted ratio).
TAIL_OF_MEDIAN = {"metric.itl_p90_ms": "metric.itl_p50_ms", "metric.itl_p95_ms": "metric.itl_p50_ms",
                  "metric.itl_p99_ms": "metric.itl_p50_ms"}


def load_serving_table(paths: Sequence[str | os.PathLike[str]] | None = None) -> pd.DataFrame:
    """The ML.ENERGY LLM rows (``config.max_num_seqs`` set), read by the ``ml-energy`` importer.

    ``paths``: task files or folders (default: ``<datasets>/ml-energy/tasks``). The rows go
    through a temporary Measurement store, so they are deduplicated as ``perfpred import`` does.
    A configuration the files list twice with other values (an import keeps both, the second as
    ``<id>-<hash>``) is one replayed config: its later record, as the files list them.
    """
    from perfpred.collect.importers import run_import
    from perfpred.datasets import MeasurementStore

    if paths is None:
        from perfpred.settings import datasets_dir

        paths = [datasets_dir() / "ml-energy" / "tasks"]
    with tempfile.TemporaryDirectory() as scratch:
        store = MeasurementStore(Path(scratch) / "store", create=True)
        run_import("ml-energy", [str(p) for p in paths], store)
        table = store.load(status="ok")
    table = table[~configuration_ids(table["measurement_id"]).duplicated(keep="last")]
    if "config.max_num_seqs" not in table:
        raise InvalidInputError("the ML.ENERGY files hold no LLM rows (config.max_num_seqs); nothing to tune")
    table = table[table["config.max_num_seqs"].notna()].dropna(axis=1, how="all").reset_index(drop=True)
    missing = [c for c in CONFIG_COLUMNS if c not in table]
    if missing:
        raise InvalidInputError(f"LLM serving rows must set {list(CONFIG_COLUMNS)}, but they lack {missing}")
    return table.astype({c: "int64" for c in CONFIG_COLUMNS})


def serving_groups(table: pd.DataFrame, min_configs: int = 2) -> list[tuple[str, str]]:
    """(model, task) pairs with at least ``min_configs`` recorded configs, sorted."""
    sizes = table.groupby(["workload.model", "workload.task"]).size()
    return sorted((str(m), str(t)) for (m, t), n in sizes.items() if n >= min_configs)


@dataclass
class ServingGroup:
    """One recorded serving space: a (model, task) on one recorded node (ML.ENERGY's: H100s)."""

    model: str
    task: str
    backend: ReplayBackend
    space: SearchSpace
    candidates: pd.DataFrame  # the recorded configs (params named as in LLM_CONFIG)
    inputs: dict[str, Any]  # what a predictor may know of this group before launching

    def rows(self, candidates: pd.DataFrame) -> pd.DataFrame:
        """Predictor input rows for ``candidates``: the group's workload and hardware, their configs."""
        frame = pd.DataFrame({k: [v] * len(candidates) for k, v in self.inputs.items()}, index=candidates.index)
        for key in LLM_CONFIG:
            frame[f"config.{key}"] = candidates[key].to_numpy()
        return frame

    @property
    def device(self) -> str:
        """The recorded hardware, as a title names it (``serving_device``): "H100" for ML.ENERGY's."""
        return serving_device(self.backend.table)

    def grid(self, metrics: Iterable[str]) -> pd.DataFrame:
        """Every recorded config with its recorded metrics (hindsight, for scoring only): the
        replay's :func:`~perfpred.tuner._recorded.recorded_grid` over the group's candidates."""
        from perfpred.tuner._recorded import recorded_grid

        grid = recorded_grid(self.backend, self.candidates, list(metrics))
        if grid is None:
            raise InvalidInputError(f"the group's candidates must all be recorded configs of its replay "
                                    f"({self.model} / {self.task})")
        return grid


def serving_device(rows: pd.DataFrame) -> str:
    """The GPU of serving rows, short: its model number from ``hardware_id``
    (``gpu-nvidia-h100-80gb-hbm3`` -> ``H100``), else the id itself; several joined by ``/``."""
    ids = rows["hardware_id"].dropna().astype(str).unique().tolist() if "hardware_id" in rows else []
    names = []
    for hardware_id in ids:
        match = re.search(r"(?<![a-z0-9])([a-z]{1,3}\d{2,4}[a-z]?)(?![a-z0-9])", hardware_id.lower())
        name = match.group(1).upper() if match else hardware_id.removeprefix("gpu-")
        if name not in names:
            names.append(name)
    return "/".join(names) or "unknown GPU"


def serving_group(table: pd.DataFrame, model: str, task: str) -> ServingGroup:
    """The replayed space of one (model, task) of ``load_serving_table()``'s table."""
    rows = table[(table["workload.model"] == model) & (table["workload.task"] == task)]
    if rows.empty:
        known = serving_groups(table)
        raise InvalidInputError(f"(model, task) must be a recorded pair (e.g. {known[:3]}), "
                                f"but got ({model!r}, {task!r})")
    backend = ReplayBackend(rows, space_keys=LLM_CONFIG)
    candidates = pd.DataFrame([c.as_dict() for c in backend.configs()])
    space = SearchSpace({k: sorted(candidates[k].unique().tolist()) for k in LLM_CONFIG})
    first = rows.iloc[0]
    inputs = {c: first[c] for c in rows.columns
              if (c.startswith("workload.") or c in INPUT_COLUMNS) and pd.notna(first[c])}
    return ServingGroup(model, task, backend, space, candidates, inputs)


def serving_regressor(n_estimators: int = 200) -> BaseEstimator:
    """The blend ``mlenergy_lomo`` measures: XGBoost and ExtraTrees on log target."""
    from perfpred.models import BlendRegressor, LogTargetForestRegressor, LogTargetXGBRegressor

    return BlendRegressor([
        ("xgb", LogTargetXGBRegressor(n_estimators=n_estimators, max_depth=3, learning_rate=0.05, n_jobs=1)),
        ("forest", LogTargetForestRegressor(n_estimators=max(50, n_estimators * 3 // 4), min_samples_leaf=2,
                                            n_jobs=1))])


class TailOverMedian:
    """A tail percentile predicted as (the median's model) x (the model of tail / median)."""

    def __init__(self, median: Any, ratio: Any) -> None:
        self.median = median
        self.ratio = ratio

    def predict(self, rows: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.median.predict(rows), dtype=float) * np.asarray(self.ratio.predict(rows), dtype=float)


class ThroughputOfSteps:
    """Output tokens/s as ``max_num_seqs`` x (tokens per sequence per step) / (ITL p50): each
    decode step gives every sequence of the batch a token, less where prefills take steps."""

    def __init__(self, itl_p50_ms: Any, tokens_per_seq_step: Any) -> None:
        self.itl_p50_ms = itl_p50_ms
        self.tokens_per_seq_step = tokens_per_seq_step

    def predict(self, rows: pd.DataFrame) -> np.ndarray:
        seqs = pd.to_numeric(rows["config.max_num_seqs"], errors="coerce").to_numpy(dtype=float)
        steps_per_s = 1e3 / np.asarray(self.itl_p50_ms.predict(rows), dtype=float)
        return seqs * np.asarray(self.tokens_per_seq_step.predict(rows), dtype=float) * steps_per_s


class GpuSecondsToThroughput:
    """Output tokens/s from a model of GPU-seconds per output token (where the rows have no ITL)."""

    def __init__(self, gpu_s_per_token: Any) -> None:
        self.gpu_s_per_token = gpu_s_per_token

    def predict(self, rows: pd.DataFrame) -> np.ndarray:
        gpus = pd.to_numeric(rows["config.num_gpus"], errors="coerce").to_numpy(dtype=float)
        return gpus / np.asarray(self.gpu_s_per_token.predict(rows), dtype=float)


class EnergyOfPower:
    """Energy per output token as total power / output tokens/s (so it is in ML.ENERGY's rows)."""

    def __init__(self, power_w: Any, throughput: Any) -> None:
        self.power_w = power_w
        self.throughput = throughput

    def predict(self, rows: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.power_w.predict(rows), dtype=float) / np.asarray(self.throughput.predict(rows),
                                                                                dtype=float)


class ServingPredictor:
    """Serving metrics of configs never launched, from recorded rows of other models.

    Tail ITL percentiles (``TAIL_OF_MEDIAN``) are predicted as the median's prediction times a
    predicted tail / median ratio (directly where the rows have no median). Output tokens/s is
    ``max_num_seqs`` x a learned tokens per sequence per step / the ITL p50 (``ThroughputOfSteps``),
    and energy per token the predicted total power / that throughput (``EnergyOfPower``); where
    the rows have no ITL p50 they are learned directly (throughput as GPU-seconds per token). Leave
    one model out on ML.ENERGY (``benchmarks/accuracy.py``): energy per token 13.1% learned directly
    over the decode step, 11.8% composed; in the serving replay's leave-one-model-out priors,
    throughput 18.1 -> 12.6% and energy per token 17.1 -> 11.9% (row-weighted mean APE).

    Parameters:
        metrics: what to predict (keys of ``SERVING_TARGETS``).
        regressor: unfitted positive-target estimator (default: :func:`serving_regressor`).
        cv_folds: folds of the grouped (by model) cross-validation on the training rows that
            estimates ``error_std_``, the log-space error on a model never seen; < 2 skips it.
        random_state: seed of every metric's model.
        kind: the featurizer; "serving-attention" (default) adds the decode step's KV-cache reads
            and its time per decoder layer to "serving"'s weights-only features (leave one model
            out on ML.ENERGY, KV reads: power 11.0 -> 9.3%, energy per token 17.0 -> 16.7%, p50 ITL
            12.9 -> 12.8%; the per-layer step time as the ITL's offset: p50 ITL 12.8 -> 11.6%;
            with the expert-parallel time per MoE layer: 10.4%; with the batch's matmul time
            at peak over that step: 10.1%; with the step as weight reads plus matmuls: 9.8%).
    """

    def __init__(self, metrics: Sequence[str], regressor: BaseEstimator | None = None, cv_folds: int = 4,
                 random_state: int = 0, kind: str = "serving-attention") -> None:
        unknown = [m for m in metrics if m not in SERVING_TARGETS]
        if unknown:
            raise InvalidInputError(f"serving metrics must be among {sorted(SERVING_TARGETS)}, but got {unknown}")
        self.metrics = list(metrics)
        self.regressor = regressor
        self.cv_folds = cv_folds
        self.random_state = random_state
        self.kind = kind

    def _fit_all(self, table: pd.DataFrame) -> dict[str, Any]:
        """One model per metric; a median several tails (or the metrics themselves) need is fitted once."""
        fitted: dict[str, Any] = {}
        for metric in self.metrics:
            fitted[metric] = self._fit_one(table, metric, fitted)
        return {m: fitted[m] for m in self.metrics}

    def _fit_one(self, table: pd.DataFrame, metric: str, fitted: dict[str, Any]):
        if metric in fitted:
            return fitted[metric]
        median = TAIL_OF_MEDIAN.get(metric)
        if median is not None and SERVING_TARGETS[median][0] in table:
            ratio = self._column(table, metric) / self._column(table, median)
            fitted[median] = self._fit_one(table, median, fitted)
            return TailOverMedian(fitted[median],
                                  self._fit_values(table, f"{metric} / {median}", ratio, offset=None))
        has_steps = all(c in table for c in ("metric.itl_p50_ms", "metric.output_tokens_per_s", "config.max_num_seqs"))
        if metric == "metric.output_tokens_per_s" and has_steps:
            fitted["metric.itl_p50_ms"] = self._fit_one(table, "metric.itl_p50_ms", fitted)
            raw = {c: pd.to_numeric(table[c], errors="coerce").to_numpy(dtype=float)
                   for c in ("metric.output_tokens_per_s", "metric.itl_p50_ms", "config.max_num_seqs")}
            per_step = (raw["metric.output_tokens_per_s"] * raw["metric.itl_p50_ms"] / 1e3
                        / raw["config.max_num_seqs"])
            return ThroughputOfSteps(fitted["metric.itl_p50_ms"],
                                     self._fit_values(table, TOKENS_PER_SEQ_STEP, per_step, offset=None))
        if metric == "metric.output_tokens_per_s":
            return GpuSecondsToThroughput(self._fit_values(table, GPU_S_PER_TOKEN, self._column(table, metric),
                                                           offset=SERVING_TARGETS[metric][1]))
        if metric == "metric.energy_per_token_j" and has_steps and "power_w" in table:
            for part in ("power_w", "metric.output_tokens_per_s"):
                fitted[part] = self._fit_one(table, part, fitted)
            return EnergyOfPower(fitted["power_w"], fitted["metric.output_tokens_per_s"])
        return self._fit_values(table, SERVING_TARGETS[metric][0], self._column(table, metric),
                                offset=SERVING_TARGETS[metric][1])

    @staticmethod
    def _column(table: pd.DataFrame, metric: str) -> np.ndarray:
        return pd.to_numeric(table[SERVING_TARGETS[metric][0]], errors="coerce").to_numpy(dtype=float)

    def _fit_values(self, table: pd.DataFrame, name: str, y: np.ndarray, offset: str | None):
        from perfpred.models import PerformanceModel

        usable = np.isfinite(y) & (y > 0)
        if usable.sum() < 2:
            raise InvalidInputError(f"`{name}` needs >= 2 positive recorded values to learn, "
                                    f"but got {int(usable.sum())}")
        if self.kind == "serving":
            offset = WEIGHTS_ONLY_OFFSETS.get(offset, offset)
        model = PerformanceModel(kind=self.kind, regressor=clone(self.regressor or serving_regressor()),
                                 residual_of=offset, random_state=self.random_state)
        inputs = [c for c in table.columns if c.startswith(INPUT_PREFIXES) or c in INPUT_COLUMNS]
        return model.fit(table.loc[usable, inputs], y[usable])

    def fit(self, table: pd.DataFrame) -> ServingPredictor:
        table = table.assign(**{GPU_S_PER_TOKEN: table["config.num_gpus"] / table["metric.output_tokens_per_s"]})
        self.models_ = self._fit_all(table)
        self.error_std_ = self._grouped_cv_error(table) if self.cv_folds >= 2 else {}
        return self

    def _grouped_cv_error(self, table: pd.DataFrame) -> dict[str, float]:
        """RMS log error per metric on held-out models (GroupKFold over ``workload.model``)."""
        from sklearn.model_selection import GroupKFold

        groups = table["workload.model"].astype(str).to_numpy()
        folds = min(self.cv_folds, len(set(groups)))
        if folds < 2:
            return {}
        residuals: dict[str, list[np.ndarray]] = {m: [] for m in self.metrics}
        for train, test in GroupKFold(n_splits=folds).split(table, groups=groups):
            part = ServingPredictor(self.metrics, self.regressor, cv_folds=0, random_state=self.random_state,
                                    kind=self.kind)
            part.models_ = self._fit_all(table.iloc[train])
            pred = part.predict(table.iloc[test])
            for m in self.metrics:
                truth = pd.to_numeric(table.iloc[test][m], errors="coerce").to_numpy(dtype=float)
                ok = np.isfinite(truth) & (truth > 0)
                residuals[m].append(np.log(pred[m].to_numpy()[ok] / truth[ok]))
        return {m: float(np.sqrt(np.mean(np.concatenate(r) ** 2))) for m, r in residuals.items()}

    def predict(self, rows: pd.DataFrame) -> pd.DataFrame:
        if not hasattr(self, "models_"):
            raise InvalidInputError("this ServingPredictor is not fitted yet: call fit(table) first")
        out = {}
        for metric, model in self.models_.items():
            out[metric] = model.predict(rows)
        return pd.DataFrame(out, index=rows.index)

    def prior_for(self, group: ServingGroup) -> dict[str, Callable[[pd.DataFrame], np.ndarray]]:
        """Per-metric prior callables over ``group``'s candidates, as :class:`ParetoTuner` takes them."""
        return {m: (lambda c, m=m: self.predict(group.rows(c))[m].to_numpy()) for m in self.metrics}


def lomo_predictor(table: pd.DataFrame, held_out_model: str, metrics: Sequence[str],
                   regressor: BaseEstimator | None = None, cv_folds: int = 4) -> ServingPredictor:
    """A :class:`ServingPredictor` fitted on every row whose model is not ``held_out_model``."""
    train = table[table["workload.model"] != held_out_model]
    return ServingPredictor(metrics, regressor, cv_folds=cv_folds).fit(train)


def replay_metric_name(name: str, known: Iterable[str]) -> str:
    """``name`` as the replay table spells it: ``power_w`` and ``metric.power_w`` are one target,
    as are ``itl_p99_ms`` and ``metric.itl_p99_ms`` (a Measurement field has no prefix, a metric
    has one; the user need not know which). A name neither spelling knows is returned as given."""
    known = set(known)
    bare = name.removeprefix("metric.")
    for spelling in (name, bare, f"metric.{bare}"):
        if spelling in known:
            return spelling
    return name


def _spelled_as_recorded(specs: Any, known: set[str], parse: Callable[[Any], Any], pattern: str) -> Any:
    """Objective / constraint specs with each string's metric name (``pattern``'s group 1) respelled."""
    def respell(spec: Any) -> Any:
        if not isinstance(spec, str):
            return spec
        return re.sub(pattern, lambda m: replay_metric_name(m.group(1), known), spec, count=1)

    if specs is None or isinstance(specs, (str, Objective, MetricBound)):
        return parse(respell(specs))
    return parse([respell(s) for s in specs])


def serving_commands(front: pd.DataFrame, model: str) -> list[str]:
    """The ``vllm serve`` line of each config of ``front`` (rows with the ``LLM_CONFIG`` columns)."""
    from perfpred.collect.serving._vllm import serve_command

    return [serve_command(model, row) for row in front[list(LLM_CONFIG)].to_dict("records")]


def _warn_if_prior_rules_out(group: ServingGroup, prior: Mapping[str, Callable[[pd.DataFrame], np.ndarray]],
                             constraints: Sequence[MetricBound], warn: Callable[[str], None]) -> None:
    """Say before any launch when the prior predicts that no recorded config meets the constraints."""
    bounded = [c for c in constraints if c.metric in prior]
    if not bounded:
        return
    predicted = {c.metric: np.asarray(prior[c.metric](group.candidates), dtype=float) for c in bounded}
    meets = np.all([[c.satisfied(v) for v in predicted[c.metric]] for c in bounded], axis=0)
    if meets.any():
        return
    nearest = ", ".join(f"{c.metric} {(np.nanmin if c.op == '<=' else np.nanmax)(predicted[c.metric]):.3g}"
                        for c in bounded)
    warn(f"the prior predicts that none of the {len(group.candidates)} recorded configs of {group.model} / "
         f"{group.task} meets {', '.join(str(c) for c in bounded)} (its nearest: {nearest}); searching anyway, "
         "as the prior can be wrong")


def tune_serving(table: pd.DataFrame, model: str, task: str, objectives: Sequence[str | Objective], *,
                 budget: int, constraints: Sequence[str | MetricBound] = (),
                 prior: str | ServingPredictor | Mapping[str, Callable[[pd.DataFrame], np.ndarray]] | None = "lomo",
                 seed: int = 0, storage: str | None = None, study_name: str | None = None,
                 out_dir: str | os.PathLike[str] | None = None,
                 on_evaluation: Callable[[dict[str, Any]], bool | None] | None = None,
                 on_warning: Callable[[str], None] | None = None,
                 **settings: Any) -> ParetoResult:
    """Tune one recorded (model, task) serving space on its replay, predictor first.

    ``prior="lomo"`` trains a :class:`ServingPredictor` on the other models' rows of ``table`` (its
    grouped-CV error calibrates the spread); a fitted ``ServingPredictor`` is used as given (it should
    not have seen this model); a mapping gives one prior callable per metric; None tunes from
    measurements only. Metric names may be given with or without ``metric.`` (``power_w``,
    ``itl_p99_ms``). ``settings`` go to
    :class:`ParetoSettings` (``batch_size``, ``kappa``, ``ensemble``, ...). With ``out_dir`` the
    report (json with each front config's ``vllm serve`` command, csv, and with 2+ objectives a
    png with the full grid's true front dashed) is written there. Where the prior predicts that
    no config meets the constraints, ``on_warning`` (default: :func:`warnings.warn`) is told so
    before any launch.
    """
    group = serving_group(table, model, task)
    known = set(SERVING_TARGETS) | (known_metrics(group.backend) or set())
    objectives = _spelled_as_recorded(objectives, known, parse_objectives, r"^\s*([^\s:]+)")
    constraints = _spelled_as_recorded(constraints, known, parse_constraints, r"^\s*([^\s<>=]+)")
    metrics = tracked_metrics(objectives, constraints)
    prior_error = None
    if isinstance(prior, str):
        if prior != "lomo":
            raise InvalidInputError(f"`prior` must be 'lomo', a ServingPredictor, a mapping of callables or None, "
                                    f"but got {prior!r}")
        unknown = [m for m in metrics if m not in SERVING_TARGETS]
        if unknown:
            raise InvalidInputError(f"a 'lomo' prior predicts {sorted(SERVING_TARGETS)} (with or without "
                                    f"'metric.'), but the run tracks {unknown}")
        prior = lomo_predictor(table, model, metrics)
    if isinstance(prior, ServingPredictor):
        prior, prior_error = prior.prior_for(group), getattr(prior, "error_std_", None)
    run_settings = ParetoSettings(objectives=objectives, budget=budget, constraints=constraints, seed=seed,
                                  **settings)
    if prior is not None and constraints:
        _warn_if_prior_rules_out(group, prior, constraints,
                                 on_warning or (lambda message: warnings.warn(message, stacklevel=3)))
    result = ParetoTuner(group.space, group.backend, run_settings, candidates=group.candidates, prior=prior,
                         prior_error=prior_error, storage=storage, study_name=study_name or f"serving-{model}-{task}",
                         on_evaluation=on_evaluation).run()
    result.description = f"ML.ENERGY {group.device} replay, {model} / {task}"
    # The replay is the full recorded grid: the tuner's hindsight (true front, or one objective's best) is its.
    if out_dir is not None:
        # Two or more objectives: pareto.png with the grid's true front; one: best_so_far.png with the grid's best.
        paths = result.write(out_dir, on_warning=on_warning)
        report = json.loads(paths["json"].read_text())
        for row, command in zip(report["front"], serving_commands(result.front, model), strict=True):
            row["command"] = command  # the answer as one would deploy it
        paths["json"].write_text(json.dumps(report, indent=2) + "\n")
    return result


def true_front(group: ServingGroup, objectives: Sequence[Objective],
               constraints: Sequence[MetricBound] = ()) -> pd.DataFrame:
    """The feasible Pareto front of the full recorded grid (hindsight: every config launched):
    :func:`~perfpred.tuner._recorded.grid_front` of ``group.grid``, as a replayed run's report finds it."""
    from perfpred.tuner._recorded import grid_front

    return grid_front(group.grid(tracked_metrics(objectives, constraints)), objectives, constraints)
