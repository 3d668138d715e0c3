"""Tuner benchmark on every complete recorded space (replayed hardware).

    python benchmarks/tuning.py                      # all spaces, default seeds
    python benchmarks/tuning.py --seeds 5 --spaces gemm/RTX_2080_Ti --strategies perfpred-transfer,random
    python benchmarks/tuning.py --seeds 5 --strategies perfpred-transfer,perfpred-transfer-nocal,random \
        --output tuning_calibration
    python benchmarks/tuning.py --extend --seeds 50 --strategies perfpred-transfer,random --output tuning_50seeds
        # adds seeds to an existing runs file; resumable, one space x strategy at a time
    python benchmarks/tuning.py --replot benchmarks/results/tuning_50seeds.json
        # only redraws tuning_50seeds.png from the summary points the JSON holds (runs nothing)

Strategies, all on the same replayed spaces and seeds:
- perfpred-transfer: the tuner with per-source priors trained on the OTHER GPUs' recordings of
  the same kernel (UCI SGEMM, a GTX 680 CLTune space, takes the three Kernel Tuner GEMM GPUs),
  its surrogate on the raw parameters plus the derived kernel quantities, half the ensemble on
  the raw ones alone (``perfpred tune --features auto``);
- perfpred-transfer-raw: the surrogate on the raw parameters only (the default until 2026-12-06);
- perfpred-cold-mixed: cold start on perfpred-transfer's mixed features (tried, not adopted);
- perfpred-transfer-nocal: the same without calibration picks (the first batch all from the prior);
- perfpred-transfer-nolocal: the same without local picks (the default until 2026-12-02);
- perfpred-cold: the tuner with no prior (space-filling start);
- perfpred-transfer-derived / perfpred-cold-derived: the surrogate also on the kernel quantities
  derived from the parameters and the problem (``kernel_tuning_features``; ``perfpred tune
  --features derived``), every ensemble member on every column;
- perfpred-transfer-gp / perfpred-cold-gp: a GP surrogate instead of the XGBoost ensemble;
- perfpred-transfer-batch2: 2 configs measured a round instead of 4;
- perfpred-transfer-blend-picks: every pick ranked on the sources' blended prediction, none on
  a source's own (``TuneSettings.prior_picks="blend"``; the default until 2026-12-06);
- perfpred-transfer-flips / -noflips / -flips1: the one-binary-parameter flips of the prior's
  favourites in the first 2 model-guided rounds (the default since 2026-12-06), in none, or in
  the first only (tried, not adopted: tuning_20seeds_flips1.json);
- random (executed), optuna-tpe, optuna-gp (directly on the replay, no predictor);
- autotvm: AutoTVM's XGBTuner recipe (rank model + simulated annealing, 64-config plans);
- kt-<strategy>: Kernel Tuner 1.5 in simulation_mode on the same cache file.
Writes benchmarks/results/tuning.json and tuning.png (best-so-far vs evaluations).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

# Worker processes run side by side on few cores: OpenMP threads must sleep, not spin, while idle.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pandas as pd
from _common import RESULTS_DIR, RUNS_DIR, write_result

from perfpred._files import write_text_atomically
from perfpred.collect._replay import ReplayBackend
from perfpred.settings import dataset_path, datasets_dir
from perfpred.tuner import (
    KERNEL_TUNER_STRATEGIES,
    SearchSpace,
    Tuner,
    TuneSettings,
    autotvm_search,
    evaluations_to_within,
    kernel_tuner_search,
    kernel_tuning_features,
    mean_curve,
    mixed_tuning_features,
    optuna_search,
    param_features,
    performance_score,
    random_search,
)
from perfpred.tuner._surrogate import xgb_prior

BUDGET = 128
BUDGETS = (8, 16, 32, 64, 128)
FAMILIES = {"gemm": ["RTX_3090", "RTX_2080_Ti", "RTX_Titan"],
            "convolution": ["A100", "A4000", "A6000", "W6600"],
            "dedispersion": ["A100", "A4000", "A6000", "W6600"]}
STRATEGIES = ["perfpred-transfer", "perfpred-cold", "random", "optuna-tpe", "optuna-gp", "autotvm",
              *[f"kt-{s}" for s in KERNEL_TUNER_STRATEGIES]]
# Ablations of the tuner's defaults, named by what they switch off.
SETTING_VARIANTS = {"perfpred-transfer-nocal": {"calibration_picks": 0},
                    "perfpred-transfer-nolocal": {"local_fraction": 0.0},
                    "perfpred-transfer-gp": {"surrogate": "gp"}, "perfpred-cold-gp": {"surrogate": "gp"},
                    "perfpred-transfer-blend": {"surrogate": "blend"}, "perfpred-cold-blend": {"surrogate": "blend"},
                    "perfpred-transfer-batch2": {"batch_size": 2},
                    "perfpred-transfer-blend-picks": {"prior_picks": "blend"},
                    # The flag flips are the default since Dec 6 (tuning_20seeds_flips.json ran them as
                    # this variant); -noflips is the tuner before them.
                    "perfpred-transfer-flips": {"flag_flip_rounds": 2},
                    "perfpred-transfer-noflips": {"flag_flip_rounds": 0},
                    "perfpred-transfer-flips1": {"flag_flip_rounds": 1},
                    # Every member on every column, as the derived-feature runs before Dec 6 had it.
                    "perfpred-transfer-derived": {"member_views": "all"},
                    "perfpred-cold-derived": {"member_views": "all"}}
DERIVED_FEATURE_VARIANTS = ("perfpred-transfer-derived", "perfpred-cold-derived")
RAW_FEATURE_VARIANTS = ("perfpred-transfer-raw",)
MIXED_FEATURE_VARIANTS = ("perfpred-cold-mixed",)
# Optuna samples the cartesian product, 50-82% of which are invalid configs in these spaces; they
# cost no evaluation. TPE hears of them as failed trials; the GP sampler, which
# ignores failed trials, as completed ones with a violated constraint (see ``optuna_search``). A run
# gives up after 10 suggestions per evaluation (its curve then stays at its last best).
OPTUNA_MAX_INVALID_PER_EVAL = 10


def space_files() -> dict[str, Path]:
    root = datasets_dir()
    files = {f"{fam}/{gpu}": root / "kernel-tuner" / fam / f"{gpu}.json.gz" for fam, gpus in FAMILIES.items()
             for gpu in gpus}
    files["uci-sgemm/GTX_680"] = root / "uci-sgemm" / "sgemm_product.csv.gz"
    return files


def kt_cache_for(name: str, path: Path, backend: ReplayBackend) -> Path:
    """Kernel Tuner needs a cache file; UCI SGEMM is exported to one (once) from the replay table."""
    if path.name.endswith((".json", ".json.gz")):
        return path
    out = RUNS_DIR / "tuning" / "uci_sgemm_cache.json"
    if not out.exists():
        from perfpred.collect.importers import export_kernel_tuner_cache

        # Written atomically (each process renames its own temporary file): with --chunk two
        # workers may both find it missing.
        export_kernel_tuner_cache(backend.table, out)
    return out


def load_backend(path: Path) -> ReplayBackend:
    root = datasets_dir()
    if not path.exists() and path.is_relative_to(root):  # a wrong PERFPRED_DATASETS: one line naming the file
        dataset_path(*path.relative_to(root).parts)
    fmt = "kernel-tuner" if path.name.endswith((".json", ".json.gz")) else "uci-sgemm"
    return ReplayBackend.from_file(path, format=fmt)


def replay_value(backend: ReplayBackend, params: dict) -> float | None:
    """The replay's objective (median runtime) of a config Kernel Tuner visited, uncounted."""
    m = backend.recorded(params)
    return float(m.runtime_ms) if m.status == "ok" and m.runtime_ms else None


def recorded_frame(backend: ReplayBackend) -> pd.DataFrame:
    """Every recorded config with its runtime (NaN for failures), read from the replay's table."""
    table = backend.table
    columns = {k: (f"config.{k}" if f"config.{k}" in table else f"workload.{k}") for k in backend.keys}
    frame = pd.DataFrame({k: table[c].to_numpy() for k, c in columns.items()})
    frame["runtime_ms"] = np.where(table["status"] == "ok", table["runtime_ms"], np.nan)
    return frame


def default_sources(name: str) -> list[str]:
    """The recordings a space's transfer priors learn from: every OTHER GPU of the same kernel
    (UCI SGEMM, a GTX 680 CLTune space, takes the three Kernel Tuner GEMM GPUs)."""
    family = name.split("/")[0]
    if family == "uci-sgemm":
        return [f"gemm/{g}" for g in FAMILIES["gemm"]]
    return [f"{family}/{g}" for g in FAMILIES[family] if f"{family}/{g}" != name]


def source_models(name: str, files: dict[str, Path], names: list[str], sources: list[str] | None = None) -> dict:
    """One XGBoost model of log runtime per source recording: by default every OTHER GPU of the
    same kernel (transfer priors); ``sources`` names other recordings in ``files`` instead."""
    from xgboost import XGBRegressor

    priors = {}
    for src in sources or default_sources(name):
        frame = recorded_frame(load_backend(files[src])).dropna(subset=["runtime_ms"])
        X = param_features(frame[names])
        model = XGBRegressor(n_estimators=300, max_depth=8, learning_rate=0.1, n_jobs=1, random_state=0)
        model.fit(X, np.log(frame["runtime_ms"]))
        priors[src] = model
    return priors


def transfer_ceiling(name: str, files: dict[str, Path]) -> dict:
    """What a perfect transfer could do: rank the target's configs by the geometric mean of the
    runtimes the source GPUs MEASURED for them (no model error at all) and time them in that order.

    A blended prior can only be as good as this ranking (the tuner's priors are models of these
    very recordings), so best/optimum here bounds what a blend alone reaches at each budget.
    Also each source's own ranking (``per_source``) and the sources' rankings taken in turn, one
    config from each (``round_robin``): what priors shared out among the sources can reach
    (``TuneSettings.prior_picks="per-source"``). Configs no source recorded (most of UCI SGEMM's
    241,600) go last, in recorded order.
    """
    target = recorded_frame(load_backend(files[name]))
    runtime = target["runtime_ms"].to_numpy()
    optimum = np.nanmin(runtime)
    logs = []
    for src in default_sources(name):
        source = recorded_frame(load_backend(files[src]))
        keys = [c for c in target.columns if c in source.columns and c != "runtime_ms"]
        merged = target[keys].merge(source[[*keys, "runtime_ms"]], on=keys, how="left")
        logs.append(np.log(merged["runtime_ms"].to_numpy()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "mean of empty slice" where none has it
        score = np.nanmean(np.stack(logs), axis=0)  # NaN where no source has the config working
    def ranking(score: np.ndarray) -> np.ndarray:
        return np.argsort(np.where(np.isfinite(score), score, np.inf), kind="stable")

    def reach(order: np.ndarray) -> dict:
        ranked = runtime[order]
        within = np.flatnonzero(ranked <= 1.02 * optimum)
        return {"first_within_2pct_rank": int(within[0]) + 1 if len(within) else None,
                **{f"best_over_opt@{b}": float(np.nanmin(ranked[:b]) / optimum) for b in BUDGETS}}

    ok = np.isfinite(score) & np.isfinite(runtime)
    rho = pd.Series(score[ok]).corr(pd.Series(np.log(runtime[ok])), method="spearman")
    orders = [ranking(log) for log in logs]
    turns, seen = [], set()
    for depth in range(max(map(len, orders))):
        for order in orders:
            if depth < len(order) and int(order[depth]) not in seen:
                seen.add(int(order[depth]))
                turns.append(int(order[depth]))
        if len(turns) >= max(BUDGETS):
            break
    return {"sources": default_sources(name), "configs_ranked": int(np.isfinite(score).sum()),
            "configs_within_2pct": int((runtime <= 1.02 * optimum).sum()), "spearman_rho": float(rho),
            **reach(ranking(score)),
            "per_source": {src: reach(order) for src, order in zip(default_sources(name), orders, strict=True)},
            "round_robin": reach(np.asarray(turns))}


def featurizer_for(strategy: str, backend: ReplayBackend, with_prior: bool):
    """What a perfpred strategy's surrogate learns from, as ``perfpred tune --features auto``
    chooses on these spaces: with a prior the raw parameters plus the derived kernel quantities
    (``mixed_tuning_features``), from a cold start the raw ones (None: the Tuner's default);
    the ``-derived`` variants the derived ones, ``-raw`` / ``-mixed`` the other choice."""
    if strategy in DERIVED_FEATURE_VARIANTS:
        return kernel_tuning_features(backend.problem(), backend.hardware())
    mixed = strategy in MIXED_FEATURE_VARIANTS or (with_prior and strategy not in RAW_FEATURE_VARIANTS)
    return mixed_tuning_features(backend.problem(), backend.hardware(), powers_of_two=not with_prior) if mixed else None


def run_space(name: str, seeds: list[int], strategies: list[str], path: Path | None = None,
              sources: dict[str, Path] | None = None) -> dict:
    """Every strategy x seed on one replayed space: ``name`` from ``space_files()``, or any
    Kernel Tuner cache file given as ``path`` (e.g. a CPU kernel recorded by cpu_kernels.py).
    ``sources`` (name -> cache file) are the recordings perfpred-transfer learns its priors from
    (default: the other GPUs of the same kernel)."""
    files = {**space_files(), **(sources or {})}
    if path is not None:
        files[name] = path
    backend = load_backend(files[name])
    candidates = pd.DataFrame([c.as_dict() for c in backend.configs()])
    space = SearchSpace({k: sorted(candidates[k].unique().tolist()) for k in candidates.columns})
    optimum = float(backend.optimum().runtime_ms)
    out: dict = {"space": name, "n_configs": len(candidates), "optimum_ms": optimum, "runs": {}, "wall_s": {}}
    priors = None
    if any(s.startswith("perfpred-transfer") for s in strategies):
        t0 = time.perf_counter()
        models = source_models(name, files, list(candidates.columns), list(sources) if sources else None)
        priors = {src: xgb_prior(model) for src, model in models.items()}
        out["prior_fit_s"] = time.perf_counter() - t0
    kt_cache = None
    for strategy in strategies:
        runs, walls = [], []
        for seed in seeds:
            backend.reset()
            t0 = time.perf_counter()
            if strategy.startswith("perfpred"):
                variant = {"batch_size": 4, **SETTING_VARIANTS.get(strategy, {})}
                settings = TuneSettings(budget=BUDGET, seed=seed, **variant)
                prior = priors if strategy.startswith("perfpred-transfer") else None
                featurize = featurizer_for(strategy, backend, prior is not None)
                result = Tuner(space, backend, settings, candidates=candidates, prior=prior,
                               study_name=f"{name}-{strategy}-{seed}", featurize=featurize).run()
                values = result.history["value"].tolist()
            elif strategy == "random":
                values = random_search(backend, candidates, BUDGET, seed=seed)
            elif strategy == "autotvm":
                values = autotvm_search(backend, candidates, BUDGET, seed=seed)
            elif strategy.startswith("optuna-"):
                sampler = strategy.split("-", 1)[1]
                values = optuna_search(backend, space, candidates, BUDGET, sampler=sampler, seed=seed,
                                       max_invalid_per_eval=OPTUNA_MAX_INVALID_PER_EVAL)
            else:
                kt_cache = kt_cache or kt_cache_for(name, files[name], backend)
                values = kernel_tuner_search(kt_cache, strategy[3:], BUDGET, seed=seed, workdir=RUNS_DIR / "tuning",
                                             value_of=lambda p: replay_value(backend, p))
            walls.append(time.perf_counter() - t0)
            runs.append([None if v is None or not np.isfinite(v) else float(v) for v in values])
        out["runs"][strategy] = runs
        out["wall_s"][strategy] = float(np.mean(walls))
        print(f"{name:28s} {strategy:22s} best@16/opt={mean_curve(runs, BUDGET)[15] / optimum:.3f} "
              f"({np.mean(walls):.1f} s/run)", flush=True)
    return out


def summarise(space_results: list[dict], seeds: list[int]) -> dict:
    summary: dict = {"spaces": {}, "strategies": {}}
    for res in space_results:
        opt = res["optimum_ms"]
        base = res["runs"].get("random")
        per = {}
        for strategy, runs in res["runs"].items():
            # A run that ended before the budget (Optuna's samplers out of new configs) keeps its best
            # to the end of the window: that is what it returns given the budget. Scoring it over its
            # own shorter window instead put strategies on different bases.
            curve = mean_curve(runs, BUDGET) / opt
            entry = {f"best_over_opt@{b}": float(curve[b - 1]) for b in BUDGETS}
            lengths = [len(r) for r in runs]
            entry["evaluations_min"], entry["evaluations_max"] = min(lengths, default=0), max(lengths, default=0)
            within = [evaluations_to_within(r, opt, 0.02) for r in runs]
            entry["evals_to_2pct_median"] = (float(np.median([w for w in within if w is not None]))
                                             if any(w is not None for w in within) else None)
            entry["runs_reaching_2pct"] = int(sum(w is not None for w in within))
            entry["wall_s_per_run"] = res["wall_s"][strategy]
            if base is not None:
                entry["P"] = performance_score(runs, base, opt, BUDGET)
            per[strategy] = entry
        if base is not None and len(base) >= 4:
            half = len(base) // 2
            per["random"]["P_random_half_vs_half"] = performance_score(base[:half], base[half:], opt, BUDGET)
        summary["spaces"][res["space"]] = {"n_configs": res["n_configs"], "optimum_ms": opt, "strategies": per}
        if "prior_fit_s" in res:  # training the transferred priors, once per space: not in any s/run
            summary["spaces"][res["space"]]["prior_fit_s"] = round(res["prior_fit_s"], 2)
    strategies = sorted({s for r in space_results for s in r["runs"]})
    for strategy in strategies:
        entries = [v["strategies"][strategy] for v in summary["spaces"].values() if strategy in v["strategies"]]
        agg = {}
        for key in ("P", *[f"best_over_opt@{b}" for b in BUDGETS]):
            vals = [e[key] for e in entries if key in e]
            if vals and len(vals) == len(entries):  # a mean over some spaces only would mislead
                agg[f"mean_{key}"] = float(np.mean(vals))
        agg["mean_wall_s_per_run"] = float(np.mean([e["wall_s_per_run"] for e in entries]))
        summary["strategies"][strategy] = agg
    return summary


# One colour per strategy in every figure (tuning.png, tuning_50seeds.png, cpu_kernels_tuning_*.png ...),
# so a colour means the same strategy wherever it appears; names not listed get a colour from their hash.
STRATEGY_COLOURS = {
    "perfpred-transfer": "#1f77b4", "perfpred-cold": "#ff7f0e", "random": "#2ca02c", "optuna-tpe": "#d62728",
    "optuna-gp": "#e377c2", "autotvm": "#bcbd22", "kt-random_sample": "#8c564b", "kt-genetic_algorithm": "#9467bd",
    "kt-dual_annealing": "#7f7f7f", "kt-bayes_opt": "#17becf", "kt-hybrid_vndx": "#393b79",
    "perfpred-transfer-flips": "#7b4173", "perfpred-transfer-noflips": "#5254a3", "perfpred-transfer-flips1": "#a55194",
    "perfpred-transfer-raw": "#637939", "perfpred-transfer-derived": "#8c6d31", "perfpred-transfer-nocal": "#843c39",
    "perfpred-transfer-nolocal": "#ad494a", "perfpred-transfer-gp": "#bd9e39", "perfpred-transfer-blend": "#8ca252",
    "perfpred-transfer-batch2": "#6b6ecf", "perfpred-transfer-blend-picks": "#9c9ede",
    "perfpred-cold-derived": "#fd8d3c", "perfpred-cold-gp": "#fdae6b", "perfpred-cold-blend": "#e6550d",
    "perfpred-cold-mixed": "#a63603",
}
TARGET_RATIO = 1.02  # "within 2% of the optimum": evals_to_2pct_median counts evaluations to reach it
_LOG_TICKS = (1, 1.02, 1.05, 1.1, 1.2, 1.5, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000)


def strategy_colour(strategy: str) -> str:
    import zlib

    from matplotlib import colormaps

    if strategy in STRATEGY_COLOURS:
        return STRATEGY_COLOURS[strategy]
    palette = colormaps["tab20"].colors
    r, g, b = palette[zlib.crc32(strategy.encode()) % len(palette)]
    return f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"


def _strategy_order(strategy: str) -> tuple[int, str]:
    known = list(STRATEGY_COLOURS)
    return (known.index(strategy) if strategy in known else len(known), strategy)


def space_curves(res: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{strategy: (evaluations, mean best / optimum)} of one space: every evaluation from a
    ``run_space`` result's runs, or the budgets a committed summary (``"strategies"``) holds."""
    curves = {}
    if "runs" in res:
        for strategy, runs in res["runs"].items():
            budget = max(len(r) for r in runs)
            curve = mean_curve(runs, BUDGET)[:budget] / res["optimum_ms"]
            curves[strategy] = (np.arange(1, budget + 1), curve)
    else:
        for strategy, entry in res.get("strategies", {}).items():
            points = [(b, entry[f"best_over_opt@{b}"]) for b in BUDGETS if entry.get(f"best_over_opt@{b}") is not None]
            if points:
                curves[strategy] = (np.array([b for b, _ in points]), np.array([v for _, v in points], dtype=float))
    return curves


def _seed_text(space_results: list[dict], seeds: int | dict | None) -> str:
    if isinstance(seeds, dict):
        counts = set(seeds.values())
    elif seeds is not None:
        counts = {int(seeds)}
    else:
        counts = {len(runs) for r in space_results for runs in r.get("runs", {}).values()}
    if not counts:
        return "mean over seeds"
    lo, hi = min(counts), max(counts)
    return f"mean over {lo} seeds" if lo == hi else f"mean over {lo}-{hi} seeds"


def plot(space_results: list[dict], path: Path, *, seeds: int | dict | None = None, title: str | None = None) -> None:
    """Best config so far / recorded optimum against hardware evaluations, one panel per space.

    ``space_results``: ``run_space`` results (a curve over every evaluation) or the summaries of a
    results JSON (``{"space", "strategies"}``: points at the budgets in ``BUDGETS``). ``seeds``: how
    many seeds each curve averages (a number or {strategy: n}; default: counted from the runs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    from perfpred._plot_ticks import PlainNumberFormatter

    n = len(space_results)
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    summary_points = any("runs" not in r for r in space_results)
    strategies = sorted({s for r in space_results for s in space_curves(r)}, key=_strategy_order)
    side = cols <= 2  # one or two panels: the legend in a column to their right, else in rows below them
    ncol = 1 if side else min(6, len(strategies) + 1)
    legend_rows = 0 if side else -(-(len(strategies) + 1) // ncol)
    size = (4.6 * cols + (3.4 if side else 0), 3.6 * rows + 1.0 + 0.3 * legend_rows)  # inches, at 120 dpi
    fig, axes = plt.subplots(rows, cols, figsize=size, squeeze=False, layout="constrained")
    for ax, res in zip(axes.ravel(), space_results, strict=False):
        curves = space_curves(res)
        for strategy in sorted(curves, key=_strategy_order):
            x, y = curves[strategy]
            ax.plot(x, y, color=strategy_colour(strategy), lw=2.0 if strategy.startswith("perfpred") else 1.1,
                    ls="-." if strategy.startswith("kt-") else "-", marker="o" if summary_points else None, ms=3.5,
                    zorder=3 if strategy.startswith("perfpred") else 2)
        values = np.concatenate([y[np.isfinite(y)] for _, y in curves.values()] or [np.empty(0)])
        if values.size:
            lo, hi = min(float(values.min()), 1.0), max(float(values.max()), TARGET_RATIO)
        else:  # every run of the space failed (its mean curve is NaN): an empty panel that says so
            lo, hi = 1.0, 2.0
            ax.text(0.5, 0.5, "no successful run", transform=ax.transAxes, ha="center", va="center")
        if hi / lo > 2:  # a wide range (first evaluations many times the optimum): log scale, ticks as ratios
            ax.set_yscale("log")
            ax.set_ylim(lo / 1.03, hi * 1.08)
            ticks: list[float] = []
            for t in _LOG_TICKS:  # no two labels closer than 8% of the axis (1, 1.05 and 1.1 would overlap)
                if lo / 1.03 <= t <= hi * 1.08 and (not ticks or np.log(t / ticks[-1]) >= 0.08 * np.log(hi / lo)):
                    ticks.append(t)
            ax.yaxis.set_major_locator(FixedLocator(ticks))
            ax.yaxis.set_major_formatter(PlainNumberFormatter())
            ax.yaxis.set_minor_locator(NullLocator())
            ax.yaxis.set_minor_formatter(NullFormatter())
        else:
            pad = 0.05 * (hi - lo)
            ax.set_ylim(lo - pad, hi + pad)
        ax.axhline(TARGET_RATIO, color="k", lw=0.8, ls="--", zorder=1)
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(PlainNumberFormatter())
        ax.set_xlim(0.9 if not summary_points else 7, BUDGET * 1.1)
        ax.set_title(res["space"], fontsize=11)
        ax.set_xlabel("hardware evaluations")
        ax.set_ylabel("best so far / optimum")
        ax.grid(True, which="major", lw=0.4, alpha=0.4)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    handles = [Line2D([], [], color=strategy_colour(s), lw=2.0 if s.startswith("perfpred") else 1.4,
                      ls="-." if s.startswith("kt-") else "-", marker="o" if summary_points else None, ms=3.5,
                      label=s) for s in strategies]
    handles.append(Line2D([], [], color="k", lw=0.8, ls="--", label=f"{TARGET_RATIO:g} (within 2% of the optimum)"))
    fig.legend(handles=handles, loc="outside right center" if side else "outside lower center", ncol=ncol, fontsize=9,
               frameon=False)
    what = (f"points: the {_seed_text(space_results, seeds)} at {', '.join(map(str, BUDGETS))} evaluations"
            if summary_points else f"curves: {_seed_text(space_results, seeds)} (each run's best so far, averaged)")
    target = f"dashed: {TARGET_RATIO:g} x the optimum (within 2%); lower is better"
    fig.suptitle(f"{title or 'Best config found / recorded optimum vs hardware evaluations'}\n{what}"
                 + ("\n" if side else "; ") + target, fontsize=11)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def replot(result_json: Path) -> list[Path]:
    """Redraw a committed results JSON's figure from the summary it holds (no benchmark re-run):
    tuning*.json -> the PNG of the same name; cpu_kernels.json -> cpu_kernels_tuning_<kernel>.png.
    A space without per-strategy curves (tuning_ceiling.json's rankings) is skipped with a note on
    stderr; where nothing is left to draw, SystemExit with a one-line error."""
    data = json.loads(Path(result_json).read_text())
    folder = Path(result_json).parent
    written = []
    if "spaces" in data:  # tuning.py's summary
        spaces = [{"space": name, **entry} for name, entry in data["spaces"].items()]
        skipped = [s["space"] for s in spaces if not space_curves(s)]
        if skipped:  # e.g. tuning_ceiling.json: a ranking per space, no strategy's curve
            print(f"note: {result_json}: skipped {len(skipped)} space(s) without strategy curves "
                  f"({', '.join(skipped[:3])}{', ...' if len(skipped) > 3 else ''})", file=sys.stderr)
        spaces = [s for s in spaces if s["space"] not in skipped]
        if spaces:
            path = folder / f"{Path(result_json).stem}.png"
            plot(spaces, path, seeds=data.get("seeds_per_strategy") or data.get("seeds"))
            written.append(path)
    for kernel, stages in data.get("kernels", {}).items():  # cpu_kernels.py's stage 3
        tuning = stages.get("tuning")
        if tuning and "strategies" in tuning:
            path = folder / f"cpu_kernels_tuning_{kernel}.png"
            source = f", prior: {tuning['transfer_source']}" if tuning.get("transfer_source") else ""
            plot([{"space": f"cpu/{kernel}", **tuning}], path, seeds=tuning.get("seeds"),
                 title=f"cpu/{kernel} replayed ({tuning.get('n_configs', '?')} configs{source})")
            written.append(path)
    if not written:
        raise SystemExit(f"error: {result_json} holds no tuning summary to draw ('spaces' with per-strategy "
                         f"'best_over_opt@N' points, or 'kernels' with a 'tuning' stage)")
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=10, help="repeats per strategy and space")
    parser.add_argument("--spaces", default="all", help="comma-separated names like gemm/RTX_2080_Ti, or all")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--output", default="tuning")
    parser.add_argument("--resume", action="store_true", help="keep the spaces already in the runs file")
    parser.add_argument("--ceiling", action="store_true", help="only rank each space by the other GPUs' "
                        "measured runtimes (the best any transferred prior can do) -> tuning_ceiling.json")
    parser.add_argument("--rerun", default="", help="re-run only these strategies (comma-separated) on the spaces "
                        "in the runs file, keeping every other strategy's runs (after a change to one strategy)")
    parser.add_argument("--extend", action="store_true", help="add only the seeds each space x strategy of "
                        "--strategies lacks up to --seeds to the runs file of --output (resumable: saved after "
                        "every space x strategy)")
    parser.add_argument("--chunk", type=int, default=None, help="with --extend: split each space x strategy's "
                        "missing seeds into blocks of at most this many, so the workers share a slow space")
    parser.add_argument("--replot", type=Path, metavar="RESULT.json", default=None, help="only redraw the figure "
                        "of a committed results JSON (tuning*.json, or cpu_kernels.json's tuning stage) from the "
                        "summary points it holds; runs nothing and leaves the JSON as it is")
    args = parser.parse_args()
    if args.replot is not None:
        for path in replot(args.replot):
            print(f"wrote {path}")
        return
    if args.chunk is not None and args.chunk < 1:
        parser.error(f"`--chunk >= 1` must hold, but got --chunk {args.chunk}")
    if args.rerun:
        rerun(args)
        return
    if args.extend:
        extend(args)
        return
    if args.ceiling:
        names = list(space_files()) if args.spaces == "all" else args.spaces.split(",")
        ceilings = {name: transfer_ceiling(name, space_files()) for name in names}
        for name, c in ceilings.items():
            print(f"{name:28s} first within 2% at rank {c['first_within_2pct_rank']}, "
                  f"best@16/opt={c['best_over_opt@16']:.3f} (round robin {c['round_robin']['best_over_opt@16']:.3f}), "
                  f"rho={c['spearman_rho']:.2f}")
        print(f"wrote {write_result('tuning_ceiling', {'spaces': ceilings})}")
        return
    names = list(space_files()) if args.spaces == "all" else args.spaces.split(",")
    strategies = args.strategies.split(",")
    seeds = list(range(args.seeds))
    (RUNS_DIR / "tuning").mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    results: list[dict] = []
    runs_file = RUNS_DIR / "tuning" / f"{args.output}_runs.json.gz"
    if args.resume and runs_file.exists():
        with gzip.open(runs_file, "rt") as fh:
            results = [r for r in json.load(fh) if r["space"] in names]
    done = {r["space"] for r in results}
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        futures = [pool.submit(run_space, name, seeds, strategies) for name in names if name not in done]
        for future in as_completed(futures):
            results.append(future.result())
            results.sort(key=lambda r: names.index(r["space"]))
            # Written after every space, so an interrupted run still reports what it finished.
            summary = summarise(results, seeds)
            plot(results, RESULTS_DIR / f"{args.output}.png")
            save_runs(RUNS_DIR / "tuning" / f"{args.output}_runs.json.gz", results)
            path = write_result(args.output, {"budget": BUDGET, "seeds": len(seeds), "strategies": strategies,
                                              "spaces_done": len(results), "spaces_total": len(names),
                                              "wall_s": round(time.time() - t0, 1), **summary})
    print(f"wrote {path} in {time.time() - t0:.0f} s")


def save_runs(path: Path, results: list[dict]) -> None:
    """Write a runs file whole or not at all: it holds hours of runs, and a run stopped while
    writing it in place would leave a truncated gzip that no later ``--extend`` can read."""
    write_text_atomically(path, json.dumps(results), compress=True)


def missing_seeds(results: list[dict], names: list[str], strategies: list[str], n_seeds: int,
                  chunk: int | None = None) -> list[tuple]:
    """(space, strategy, seeds) still to run for ``n_seeds`` seeds of every strategy on every space.

    A runs file holds seeds 0..len-1 of each strategy in order (``main`` runs ``range(--seeds)``
    and every run is seeded), so the missing ones are len..n_seeds-1. The slowest space (UCI SGEMM's
    241,600 configs) goes first so that two workers finish together. With ``chunk`` a space x
    strategy's missing seeds are split into consecutive blocks of at most that many, so several
    workers can share one slow space (``merge_in_order`` puts the blocks back in seed order).
    """
    have = {r["space"]: {s: len(runs) for s, runs in r["runs"].items()} for r in results}
    units = []
    for name in names:
        for strategy in strategies:
            seeds = list(range(have.get(name, {}).get(strategy, 0), n_seeds))
            step = chunk or len(seeds) or 1
            units += [(name, strategy, seeds[i:i + step]) for i in range(0, len(seeds), step)]
    return sorted(units, key=lambda u: not u[0].startswith("uci-sgemm"))


def merge_runs(results: list[dict], new: dict) -> None:
    """Append a ``run_space`` result's seeds to its space in ``results`` (added when new);
    the mean wall time per run is weighted by the runs each part holds."""
    old = next((r for r in results if r["space"] == new["space"]), None)
    if old is None:
        results.append(new)
        return
    for strategy, runs in new["runs"].items():
        before = old["runs"].get(strategy, [])
        if before:
            old["wall_s"][strategy] = ((old["wall_s"][strategy] * len(before) + new["wall_s"][strategy] * len(runs))
                                       / (len(before) + len(runs)))
        else:
            old["wall_s"][strategy] = new["wall_s"][strategy]
        old["runs"][strategy] = before + runs
    if "prior_fit_s" in new and "prior_fit_s" not in old:
        old["prior_fit_s"] = new["prior_fit_s"]


def merge_in_order(results: list[dict], pending: dict[tuple[str, str], dict[int, dict]], unit: tuple,
                   new: dict) -> bool:
    """Merge ``new`` (``run_space`` of ``unit`` = (space, strategy, seeds)) once every earlier seed
    of its space x strategy is in ``results``; blocks that finish early wait in ``pending``.

    Keeps the runs file's rule (seeds 0..len-1 in order) when chunks of one space x strategy
    finish out of order; a block still waiting when the run is interrupted is run again.
    Returns whether anything was merged (so the runs file needs writing)."""
    name, strategy, seeds = unit
    waiting = pending.setdefault((name, strategy), {})
    waiting[seeds[0]] = new
    merged = False
    while True:
        space = next((r for r in results if r["space"] == name), None)
        next_seed = len(space["runs"].get(strategy, [])) if space else 0
        if next_seed not in waiting:
            return merged
        merge_runs(results, waiting.pop(next_seed))
        merged = True


def extend(args: argparse.Namespace) -> None:
    """Run the seeds the runs file of ``--output`` lacks, one space x strategy at a time."""
    names = list(space_files()) if args.spaces == "all" else args.spaces.split(",")
    strategies = args.strategies.split(",")
    runs_file = RUNS_DIR / "tuning" / f"{args.output}_runs.json.gz"
    result_file = RESULTS_DIR / f"{args.output}.json"
    if not runs_file.exists() and result_file.exists():
        # Runs files are not committed: on a fresh checkout the summary is there but its runs are
        # not, and extending would rewrite the summary with only --strategies.
        raise SystemExit(f"error: {result_file.name} has no runs file at {runs_file} to extend; extending would "
                         f"overwrite it with only {args.strategies}: choose a new --output")
    runs_file.parent.mkdir(parents=True, exist_ok=True)  # a fresh checkout has no runs folder
    results: list[dict] = []
    if runs_file.exists():
        with gzip.open(runs_file, "rt") as fh:
            results = json.load(fh)
    units = missing_seeds(results, names, strategies, args.seeds, chunk=args.chunk)
    print(f"{len(units)} space x strategy units to run ({sum(len(u[2]) for u in units)} runs)", flush=True)
    order = {name: i for i, name in enumerate(space_files())}
    t0 = time.time()
    pending: dict[tuple[str, str], dict[int, dict]] = {}
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        futures = {pool.submit(run_space, name, seeds, [strategy]): (name, strategy, seeds)
                   for name, strategy, seeds in units}
        for future in as_completed(futures):
            if not merge_in_order(results, pending, futures[future], future.result()):
                continue  # an early block waits for an earlier one: nothing new to save
            results.sort(key=lambda r: order.get(r["space"], len(order)))
            save_runs(runs_file, results)  # after every unit: an interruption loses only those in flight
    seeds_per_strategy = {s: min(len(r["runs"][s]) for r in results if s in r["runs"])
                          for s in sorted({s for r in results for s in r["runs"]})}
    summary = summarise(results, list(range(args.seeds)))
    plot(results, RESULTS_DIR / f"{args.output}.png")
    wall_s = round(time.time() - t0, 1)
    if not units and result_file.exists():  # only re-summarised: keep the time the runs took
        wall_s = json.loads(result_file.read_text()).get("wall_s_extend", wall_s)
    path = write_result(args.output, {"budget": BUDGET, "seeds": min(seeds_per_strategy.values()),
                                      "seeds_per_strategy": seeds_per_strategy,
                                      "spaces_done": len(results), "spaces_total": len(space_files()),
                                      "extended": strategies, "wall_s_extend": wall_s,
                                      **summary})
    print(f"wrote {path} in {time.time() - t0:.0f} s")


def rerun(args: argparse.Namespace) -> None:
    """Replace the runs of some strategies in an existing runs file, space by space."""
    runs_file = RUNS_DIR / "tuning" / f"{args.output}_runs.json.gz"
    with gzip.open(runs_file, "rt") as fh:
        results = json.load(fh)
    strategies = args.rerun.split(",")
    seeds = list(range(args.seeds))
    t0 = time.time()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        futures = {pool.submit(run_space, r["space"], seeds, strategies): r for r in results}
        for future in as_completed(futures):
            old, new = futures[future], future.result()
            old["runs"].update(new["runs"])
            old["wall_s"].update(new["wall_s"])
            if "prior_fit_s" in new:
                old["prior_fit_s"] = new["prior_fit_s"]
            save_runs(runs_file, results)
    summary = summarise(results, seeds)
    plot(results, RESULTS_DIR / f"{args.output}.png")
    path = write_result(args.output, {"budget": BUDGET, "seeds": len(seeds),
                                      "strategies": sorted({s for r in results for s in r["runs"]}),
                                      "spaces_done": len(results), "spaces_total": len(space_files()),
                                      "rerun": strategies, "wall_s_rerun": round(time.time() - t0, 1), **summary})
    print(f"wrote {path} in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    from _common import run

    run(main)
