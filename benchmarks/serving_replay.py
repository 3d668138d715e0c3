"""Serving replay benchmark on ML.ENERGY (H100): tune LLM serving configs under SLOs, predictor first.

    python benchmarks/serving_replay.py            # every (model, task) group; writes results/serving_replay.json
    python benchmarks/serving_replay.py --smoke    # 3 groups, 1-3 seeds, ~15 s; writes under benchmarks/runs/

Each (model, task) group of the ML.ENERGY v3 LLM rows (read by the ``ml-energy`` importer) is a
complete recorded space of serving configs (max_num_seqs x tensor / expert / data parallel x GPUs),
replayed as hardware: one evaluation is one server launch. Scenarios per group:

- ``max_throughput_itl_slo``: maximise output tokens/s subject to ITL p99 <= SLO, the SLO at the
  25th / 50th / 75th percentile of the group's recorded ITL p99 (so each group has feasible and
  infeasible configs);
- ``min_energy_throughput_floor``: minimise energy per token subject to output tokens/s >= the
  50th / 75th percentile of the group's recorded throughput;
- ``pareto_throughput_energy``: the two-objective front (throughput up, energy per token down);
  on ML.ENERGY this front is a single config in most groups (more batching improves both);
- ``pareto_energy_itl``: the energy-latency front (energy per token down, ITL p99 down), the
  trade-off serving actually has.

Strategies (same replay, same budgets): ``perfpred`` (ParetoTuner; prior trained on the OTHER
models only, leave one model out, its spread calibrated by grouped CV on those models; refit after
every launch), ``perfpred-no-refit`` (the same prior's ranking, never refit: one batch),
``perfpred-cold`` (no prior: space-filling start, then the surrogate), ``random`` (random launch
order), ``optuna-tpe`` (Optuna TPE, constraints via ``trial.set_constraint``), ``optuna-nsga2``
(Pareto scenarios; population 4 so that it evolves within these budgets), and the full grid
(evaluations = group size). Scores per problem (group x scenario x SLO), averaged over seeds, then
over problems: quality at budgets 1, 2, 3, 5 (best feasible found / grid best feasible, or the
hypervolume ratio of the feasible front found, on log values, against the full grid's front), and
the evaluations until the target: the grid's best feasible config (single objective) or 95% of the
full front's hypervolume (Pareto; nearly every config is on an energy-latency front, so the whole
front costs nearly the grid), and until the quality first reaches 0.95.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see accuracy.py: spinning OpenMP pools crawl here
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, RUNS_DIR, write_result

from perfpred._files import write_text_atomically
from perfpred.settings import dataset_path
from perfpred.tuner import (
    MetricBound,
    Objective,
    ParetoSettings,
    ParetoTuner,
    evaluations_to,
    hypervolume_curve,
    optuna_pareto_search,
    plot_pareto,
    quality_curve,
    random_order_search,
)
from perfpred.tuner._serving_replay import (
    ServingGroup,
    load_serving_table,
    lomo_predictor,
    serving_group,
    serving_groups,
    serving_regressor,
    true_front,
)

BUDGETS = (1, 2, 3, 5)
THROUGHPUT, ENERGY, ITL = "metric.output_tokens_per_s", "metric.energy_per_token_j", "metric.itl_p99_ms"
METRICS = [THROUGHPUT, ENERGY, ITL]
SLO_QUANTILES = (0.25, 0.5, 0.75)
FLOOR_QUANTILES = (0.5, 0.75)
PARETO = {"pareto_throughput_energy": (f"{THROUGHPUT}:maximize", f"{ENERGY}:minimize"),
          "pareto_energy_itl": (f"{ENERGY}:minimize", f"{ITL}:minimize")}
EXAMPLE = ("meta-llama/Llama-4-Scout-17B-16E-Instruct", "lm-arena-chat", "pareto_energy_itl")
NSGA2_POPULATION = 4
# In spaces this small Optuna keeps suggesting configs it has measured (reused, not counted): a run
# gives up after 20 suggestions per evaluation, and what it has not reached counts as the full grid.
OPTUNA_MAX_ASKS_PER_EVAL = 20
NEAR = 0.95  # "within 5%": quality (or hypervolume ratio) >= 0.95
# Small surrogates: a group has at most 20 configs.
TUNER = {"ensemble": 3, "n_estimators": 50}


@dataclass
class Problem:
    scenario: str
    objectives: tuple[Objective, ...]
    constraints: tuple[MetricBound, ...]
    label: str

    @property
    def pareto(self) -> bool:
        return len(self.objectives) > 1


def problems_of(group: ServingGroup) -> list[Problem]:
    grid = group.grid(METRICS)
    out = []
    for q in SLO_QUANTILES:
        slo = float(np.quantile(grid[ITL], q))
        out.append(Problem("max_throughput_itl_slo", (Objective(THROUGHPUT, "maximize"),),
                           (MetricBound(ITL, "<=", slo),), f"itl_p99 <= q{q:g} ({slo:.1f} ms)"))
    for q in FLOOR_QUANTILES:
        floor = float(np.quantile(grid[THROUGHPUT], q))
        out.append(Problem("min_energy_throughput_floor", (Objective(ENERGY, "minimize"),),
                           (MetricBound(THROUGHPUT, ">=", floor),), f"tokens/s >= q{q:g} ({floor:.0f})"))
    for name, objectives in PARETO.items():
        out.append(Problem(name, tuple(Objective.parse(o) for o in objectives), (), name))
    return out


class Scorer:
    """Quality curve of a run for one problem (1 = the grid's best feasible config / whole front)."""

    def __init__(self, group: ServingGroup, problem: Problem) -> None:
        self.problem = problem
        self.n = len(group.candidates)
        grid = [{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in group.grid(METRICS).to_dict("records")]
        if problem.pareto:
            # Reference: Optuna's rule on the grid's worst values; volumes of log values.
            worst = [max(r[o.metric] for r in grid) if o.direction == "minimize" else min(r[o.metric] for r in grid)
                     for o in problem.objectives]
            self.reference = [w * (1.1 if o.direction == "minimize" else 0.9)
                              for w, o in zip(worst, problem.objectives, strict=True)]
            self.full = float(hypervolume_curve(grid, problem.objectives, (), self.reference, self.n, log=True)[-1])
        else:
            o = problem.objectives[0]
            values = [r[o.metric] for r in grid if all(c.satisfied(r[c.metric]) for c in problem.constraints)]
            self.optimum = max(values) if o.direction == "maximize" else min(values)

    def curve(self, rows: list[dict], budget: int | None = None) -> np.ndarray:
        budget = budget or self.n
        p = self.problem
        if p.pareto:
            return hypervolume_curve(rows, p.objectives, p.constraints, self.reference, budget, log=True) / self.full
        return quality_curve(rows, p.objectives[0], p.constraints, self.optimum, budget)

    @property
    def target(self) -> float:
        """The level a run is scored on reaching: the best feasible config, or 95% of the front's volume
        (most configs are on an energy-latency front, so its whole front takes nearly the whole grid)."""
        return NEAR if self.problem.pareto else 1.0

    def done(self, rows: list[dict]) -> bool:
        """Stop a run once the target is reached and every scored budget is covered."""
        return len(rows) >= max(BUDGETS) and self.curve(rows, len(rows))[-1] >= self.target * (1 - 1e-9)


def run_strategy(strategy: str, group: ServingGroup, problem: Problem, scorer: Scorer, seed: int,
                 prior: dict | None, prior_error: dict | None) -> list[dict]:
    n = len(group.candidates)
    metrics = [o.metric for o in problem.objectives] + [c.metric for c in problem.constraints]
    group.backend.reset()
    if strategy.startswith("perfpred"):
        rows: list[dict] = []

        def record(row: dict) -> bool:
            rows.append(row)
            return scorer.done(rows)

        no_refit = strategy == "perfpred-no-refit"
        settings = ParetoSettings(objectives=problem.objectives, constraints=problem.constraints, budget=n,
                                  batch_size=n if no_refit else 1, seed=seed, **TUNER)
        use_prior = strategy != "perfpred-cold"
        ParetoTuner(group.space, group.backend, settings, candidates=group.candidates,
                    prior=prior if use_prior else None, prior_error=prior_error if use_prior else None,
                    on_evaluation=record, study_name=f"{group.model}-{problem.label}-{strategy}-{seed}").run()
        return rows
    if strategy == "random":
        return random_order_search(group.backend, group.candidates, n, metrics, seed=seed, stop=scorer.done)
    sampler = strategy.split("-", 1)[1]
    return optuna_pareto_search(group.backend, group.space, group.candidates, n, problem.objectives,
                                problem.constraints, sampler=sampler, seed=seed, population_size=NSGA2_POPULATION,
                                max_invalid_per_eval=OPTUNA_MAX_ASKS_PER_EVAL, stop=scorer.done)


def _constant(values: np.ndarray):
    return lambda candidates: values


def run_model(model: str, tasks: list[str], seeds: dict[str, int], smoke: bool) -> dict[str, Any]:
    """Every group of one model: fit its leave-one-model-out predictor once, run every problem."""
    table = load_serving_table()
    t0 = time.perf_counter()
    predictor = lomo_predictor(table, model, METRICS, serving_regressor(80 if smoke else 150),
                               cv_folds=3)
    fit_s = time.perf_counter() - t0
    results, groups = [], []
    for task in tasks:
        group = serving_group(table, model, task)
        pred = predictor.predict(group.rows(group.candidates))
        # Predicted once per group (the candidates never change); every run gets the same numbers.
        prior = {m: _constant(pred[m].to_numpy()) for m in METRICS}
        grid = group.grid(METRICS)
        ape = {m: round(float(np.mean(np.abs(pred[m].to_numpy() / grid[m].to_numpy() - 1))), 4) for m in METRICS}
        groups.append({"task": task, "n_configs": len(group.candidates), "prior_mean_ape": ape})
        for problem in problems_of(group):
            scorer = Scorer(group, problem)
            entry: dict[str, Any] = {"model": model, "task": task, "n_configs": scorer.n,
                                     "scenario": problem.scenario, "problem": problem.label, "strategies": {}}
            if problem.pareto:
                entry["true_front_size"] = len(true_front(group, problem.objectives))
            for strategy, n_seeds in seeds.items():
                if strategy == "optuna-nsga2" and not problem.pareto:
                    continue
                curves, evals, evals95, walls = [], [], [], []
                for seed in range(n_seeds):
                    t = time.perf_counter()
                    rows = run_strategy(strategy, group, problem, scorer, seed, prior, predictor.error_std_)
                    walls.append(time.perf_counter() - t)
                    curve = scorer.curve(rows)
                    curves.append(curve)
                    # A run that never gets there would need the whole grid.
                    evals.append(evaluations_to(curve, scorer.target) or scorer.n)
                    evals95.append(evaluations_to(curve, NEAR) or scorer.n)
                mean_curve = np.mean(curves, axis=0)
                entry["strategies"][strategy] = {
                    **{f"quality@{b}": round(float(mean_curve[min(b, scorer.n) - 1]), 4) for b in BUDGETS},
                    "evals_to_target": round(float(np.mean(evals)), 3),
                    "evals_to_95pct": round(float(np.mean(evals95)), 3), "wall_s": round(float(np.mean(walls)), 3)}
            results.append(entry)
    return {"model": model, "fit_s": fit_s, "prior_error_std": predictor.error_std_, "groups": groups,
            "problems": results}


def summarise(problems: list[dict], strategies: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for scenario in sorted({p["scenario"] for p in problems}):
        rows = [p for p in problems if p["scenario"] == scenario]
        per: dict[str, Any] = {}
        for strategy in strategies:
            entries = [p["strategies"][strategy] for p in rows if strategy in p["strategies"]]
            if not entries:
                continue
            evals = np.array([e["evals_to_target"] for e in entries])
            evals95 = np.array([e["evals_to_95pct"] for e in entries])
            sizes = np.array([p["n_configs"] for p in rows if strategy in p["strategies"]])
            per[strategy] = {
                **{f"mean_quality@{b}": round(float(np.mean([e[f"quality@{b}"] for e in entries])), 4)
                   for b in BUDGETS},
                "mean_evals_to_target": round(float(evals.mean()), 3),
                "median_evals_to_target": float(np.median(evals)),
                "mean_evals_over_grid": round(float(np.mean(evals / sizes)), 4),
                "mean_evals_to_95pct": round(float(evals95.mean()), 3),
                "share_target_within_1": round(float(np.mean(evals <= 1)), 4),
                "share_target_within_3": round(float(np.mean(evals <= 3)), 4),
                "mean_wall_s_per_run": round(float(np.mean([e["wall_s"] for e in entries])), 4)}
        per["grid"] = {"mean_evals_to_target": round(float(np.mean([p["n_configs"] for p in rows])), 3),
                       "note": "the full grid launches every config: evaluations = group size"}
        losses = [{"model": p["model"], "task": p["task"], "problem": p["problem"],
                   "perfpred": p["strategies"]["perfpred"]["evals_to_target"],
                   "random": p["strategies"]["random"]["evals_to_target"]}
                  for p in rows if "perfpred" in p["strategies"] and "random" in p["strategies"]
                  and p["strategies"]["perfpred"]["evals_to_target"] > p["strategies"]["random"]["evals_to_target"]]
        target = "hypervolume ratio >= 0.95" if scenario.startswith("pareto") else "the grid's best feasible config"
        out[scenario] = {"problems": len(rows), "groups": len({(p["model"], p["task"]) for p in rows}),
                         "target": target,
                         "strategies": per, "perfpred_slower_than_random": losses}
    return out


def plot_example(table, group_key: tuple[str, str, str], path: Path) -> dict[str, Any]:
    """perfpred's run on one group's Pareto problem, the grid's true front dashed."""
    model, task, scenario = group_key
    group = serving_group(table, model, task)
    objectives = tuple(Objective.parse(o) for o in PARETO[scenario])
    predictor = lomo_predictor(table, model, METRICS, serving_regressor(150), cv_folds=3)
    settings = ParetoSettings(objectives=objectives, budget=5, seed=0, **TUNER)
    result = ParetoTuner(group.space, group.backend, settings, candidates=group.candidates,
                         prior=predictor.prior_for(group), prior_error=predictor.error_std_).run()
    front = true_front(group, objectives)
    plot_pareto(result, path, true_front=front,
                title=f"{model.split('/')[-1]} / {task}: 5 of {len(group.candidates)} launches")
    return {"model": model, "task": task, "scenario": scenario, "budget": 5, "n_configs": len(group.candidates),
            "front_found": result.front.to_dict("records"), "true_front_size": len(front), "plot": path.name}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="3 groups, 1-3 seeds: a quick end-to-end check")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--output", default=None, help="result JSON path (default results/serving_replay.json)")
    args = parser.parse_args()
    t0 = time.time()
    table = load_serving_table([dataset_path("ml-energy", "tasks")])  # missing: one line naming PERFPRED_DATASETS
    groups = serving_groups(table, min_configs=3)
    if args.smoke:
        groups = [g for g in groups if g[0] in ("Qwen/Qwen3-8B", "google/gemma-3-12b-it")][:3]
        seeds = {"perfpred": 1, "perfpred-no-refit": 1, "perfpred-cold": 1, "random": 3, "optuna-tpe": 1,
                 "optuna-nsga2": 1}
    else:
        seeds = {"perfpred": 2, "perfpred-no-refit": 1, "perfpred-cold": 2, "random": 20, "optuna-tpe": 3,
                 "optuna-nsga2": 3}
    by_model: dict[str, list[str]] = {}
    for model, task in groups:
        by_model.setdefault(model, []).append(task)
    outputs = []
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        futures = [pool.submit(run_model, m, tasks, seeds, args.smoke) for m, tasks in by_model.items()]
        for future in as_completed(futures):
            outputs.append(future.result())
            print(f"{outputs[-1]['model']:52s} done ({len(outputs)}/{len(by_model)}, {time.time() - t0:.0f} s)",
                  flush=True)
    outputs.sort(key=lambda o: o["model"])
    problems = [p for o in outputs for p in o["problems"]]
    payload: dict[str, Any] = {
        "budgets": list(BUDGETS), "seeds": seeds, "smoke": args.smoke, "groups": len(groups),
        "slo_quantiles": list(SLO_QUANTILES), "floor_quantiles": list(FLOOR_QUANTILES),
        "hardware": "ML.ENERGY v3 recordings, H100 SXM 80 GB nodes (replayed)",
        "prior": {"protocol": "leave one model out: trained on every other model's rows (all tasks of the tuned "
                              "model held out); spread = RMS log error of a 3-fold grouped CV on those rows",
                  "mean_error_std_log": {m: round(float(np.mean([o["prior_error_std"][m] for o in outputs])), 4)
                                         for m in METRICS},
                  "mean_fit_s_per_model": round(float(np.mean([o["fit_s"] for o in outputs])), 2)},
        "summary": summarise(problems, list(seeds)),
        "prior_accuracy_per_group": [{"model": o["model"], **g} for o in outputs for g in o["groups"]],
    }
    # Per-problem scores (group x scenario x SLO x strategy) go beside the git-ignored runs.
    details = RUNS_DIR / "serving_replay" / ("problems_smoke.json.gz" if args.smoke else "problems.json.gz")
    write_text_atomically(details, json.dumps(problems), compress=True)
    payload["per_problem_scores"] = str(details.relative_to(RUNS_DIR.parent))
    # A smoke run writes beside the git-ignored runs, never over the committed results.
    out_dir = RUNS_DIR / "serving_replay" if args.smoke else RESULTS_DIR
    example = EXAMPLE if not args.smoke else (groups[0][0], groups[0][1], "pareto_energy_itl")
    payload["example_plot"] = plot_example(table, example, out_dir / "serving_replay.png")
    payload["wall_s"] = round(time.time() - t0, 1)
    if args.output or args.smoke:
        path = Path(args.output) if args.output else out_dir / "serving_replay_smoke.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"benchmark": "serving_replay", **payload}, indent=2, default=float) + "\n")
    else:
        path = write_result("serving_replay", payload)
    for scenario, s in payload["summary"].items():
        print(f"\n{scenario} ({s['problems']} problems, {s['groups']} groups)")
        for strategy, v in s["strategies"].items():
            if strategy == "grid":
                print(f"  {'grid':18s} evals to target {v['mean_evals_to_target']:.2f}")
                continue
            q = " ".join(f"q@{b}={v[f'mean_quality@{b}']:.3f}" for b in BUDGETS)
            print(f"  {strategy:18s} {q}  evals to target {v['mean_evals_to_target']:.2f}, "
                  f"to 95% {v['mean_evals_to_95pct']:.2f}")
    print(f"wrote {path} in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    from _common import run

    run(main)
