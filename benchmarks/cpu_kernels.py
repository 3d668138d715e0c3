"""Record the landscapes of the shipped CPU kernels, then score a predictor on the recordings.

    python benchmarks/cpu_kernels.py --smoke                 # ~20 configs per kernel, tiny sizes (a minute)
    python benchmarks/cpu_kernels.py                         # stage 1: brute force at the default sizes
    python benchmarks/cpu_kernels.py --sample 2000 --seed 1  # stage 1 on a seeded random sample instead
    python benchmarks/cpu_kernels.py --evaluate              # stage 2: predictor accuracy on the recordings
    python benchmarks/cpu_kernels.py --transfer-size --sample 600   # stage 1 at the other size (prior source)
    python benchmarks/cpu_kernels.py --tune --seeds 20       # stage 3: tuners replayed on the recordings
    python benchmarks/cpu_kernels.py --live --transfer --seeds 5   # stage 4: tuner vs random live on this CPU
    python benchmarks/cpu_kernels.py --kernels jacobi2d --probe 8   # cost estimate from 8 random configs

Stage 1 measures every valid config of each kernel (``sgemm``: 18,912; ``jacobi2d``: 912)
into a resumable Measurement store under ``benchmarks/runs/cpu_kernels/`` (an interrupted
run continues where it stopped), then writes the store as a Kernel Tuner cache file
(``<kernel>_<size>.json``: device_name, kernel_name, problem_size, tune_params_keys,
tune_params, objective, cache{"v1,v2,...": {params, time, times, compile_time,
verification_time, benchmark_time, ...}}), which Kernel Tuner's ``simulation_mode`` and
perfpred's ``ReplayBackend`` replay without the hardware. Failed configs are recorded
with their status. Stage 2 fits a log-runtime XGBoost on the tune parameters of a random
fraction of the recorded configs and scores it on the rest: MAPE, Spearman rho, and how
good the config it would pick is (regret of its predicted best; recall of the true top 10).
Stage 3 replays each recording as hardware and runs every strategy of ``tuning.py`` on it
(perfpred cold start, executed random search, Optuna TPE/GP, Kernel Tuner's strategies in
simulation mode on the exported cache) over seeds, at 8..128 evaluations; perfpred-transfer
learns its prior from the same kernel recorded at another problem size on this CPU
(``TRANSFER_SIZES``, stage 1 with ``--transfer-size``). Stage 4 closes the loop live:
``perfpred demo``'s tuner (cold, or with ``--transfer`` that prior) and random search each get
24 real evaluations on this CPU, then their three fastest configs, the default and the
recording's three fastest are re-timed together (median of >= 7 runs), and perfpred's answer
is compared with the re-timed optimum (target: within 5%, median over seeds).

The full brute force takes hours on a 2-core machine and loads it completely: run it on a
quiet machine. ``--probe N`` measures N random configs at the default size (stored, so
they count towards the full run) and prints the estimated wall time of the whole space.
Every stage merges its section into ``benchmarks/results/cpu_kernels.json`` (smoke:
``cpu_kernels_smoke.json``), so the stages can run on different days.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from _common import RESULTS_DIR, RUNS_DIR, landscape_summary, write_result
from scipy.stats import ConstantInputWarning

from perfpred.collect import TimingPolicy, busy_warning, run_sweep
from perfpred.collect._kernel import KERNEL_POLICY, KernelCollector
from perfpred.collect.importers import export_kernel_tuner_cache
from perfpred.collect.kernels import CPU_KERNELS, get_kernel, problem_label, space_size
from perfpred.datasets import MeasurementStore

OUT_DIR = RUNS_DIR / "cpu_kernels"
SMOKE_CONFIGS = 20
SMOKE_POLICY = TimingPolicy(warmup_runs=1, min_runs=3, max_runs=10, max_time_s=0.1, target_rel_ci=0.05,
                            min_sample_ms=0.5)
TRAIN_FRACTIONS = (0.05, 0.1, 0.25, 0.5)
SMOKE_TRAIN_FRACTIONS = (0.5,)
SEEDS = (0, 1, 2)
TOP_K = 10
LIVE_BUDGET = 24
LIVE_OPTIMUM_FINALISTS = 3  # the recording's fastest few are re-timed; the fastest re-timed is the optimum
LIVE_TARGET = 1.05
# Stage 1 with --transfer-size records each kernel at this other size: perfpred-transfer's source.
TRANSFER_SIZES = {"sgemm": {"m": 256, "n": 256, "k": 256}, "jacobi2d": {"nx": 2048, "ny": 2048, "steps": 2}}
# Optuna's GP sampler is left out here (40+ s per run on the GPU spaces, no better than TPE there).
TUNE_STRATEGIES = ["perfpred-transfer", "perfpred-cold", "random", "optuna-tpe", "autotvm",
                   *[f"kt-{s}" for s in ("random_sample", "genetic_algorithm", "dual_annealing", "bayes_opt",
                                         "hybrid_vndx")]]
# The wall time of one config: compile, check, timing and the framework around them; plus, once per
# worker process (every `recycle_after` configs, or after a crash), its start and the inputs' set-up.
COST_COLUMNS = ("metric.compile_time_ms", "metric.verification_time_ms", "metric.benchmark_time_ms",
                "metric.framework_time_ms")
START_COLUMNS = ("metric.setup_time_ms", "metric.worker_start_ms")


def _paths(kernel: str, problem: dict[str, int], smoke: bool) -> tuple[Path, Path]:
    root = OUT_DIR / "smoke" if smoke else OUT_DIR
    label = problem_label(get_kernel(kernel), problem)
    return root / f"{kernel}-{label}" / "store", root / f"{kernel}_{label}.json"


def _landscape(table: Any) -> dict[str, Any]:
    """The shared landscape summary, with the CPU kernels' throughputs and measuring costs."""
    out = landscape_summary(table)
    ok = table[table["status"] == "ok"]
    if len(ok):
        out.update({"gflops_max": float(ok["metric.gflops"].max()), "gbs_max": float(ok["metric.gbs"].max())})
    for column in COST_COLUMNS:
        if column in table:
            out[f"{column.removeprefix('metric.')}_median"] = float(table[column].astype(float).median())
    out["wall_s_per_config_mean"] = float(sum(table[c].astype(float).fillna(0).mean() for c in COST_COLUMNS
                                              if c in table) / 1e3)
    starts = sum(table[c].astype(float).fillna(0) for c in START_COLUMNS if c in table)
    out["worker_start_and_setup_s_mean"] = float(starts[starts > 0].mean() / 1e3) if (starts > 0).any() else 0.0
    return out


def record(kernel: str, *, smoke: bool, sample: int | None, seed: int, timeout_s: float,
           problem: dict[str, int] | None = None) -> dict[str, Any]:
    """Stage 1 for one kernel: measure (resumable), export the Kernel Tuner cache, check it replays."""
    from perfpred.collect._replay import ReplayBackend

    spec = get_kernel(kernel)
    problem = problem or dict(spec.test_problem_size if smoke else spec.default_problem_size)
    store_path, cache_path = _paths(kernel, problem, smoke)
    policy = SMOKE_POLICY if smoke else KERNEL_POLICY
    collector = KernelCollector(spec, problem_size=problem, policy=policy, timeout_s=timeout_s)
    n = SMOKE_CONFIGS if smoke else sample
    configs = collector.configs(sample=n, seed=seed)
    store = MeasurementStore(store_path, create=True)
    t0 = time.perf_counter()
    try:
        report = run_sweep(collector, configs, store)
    finally:
        collector.close()
    wall_s = time.perf_counter() - t0
    store.compact()
    table = store.load()
    table = table[table["measurement_id"].isin({collector.measurement_id(c) for c in configs})]
    export_kernel_tuner_cache(table, cache_path, kind="kernel")
    replayed = len(ReplayBackend.from_file(cache_path))
    cartesian, valid = space_size(spec)
    landscape = _landscape(table)
    full_estimate_h = None
    if not smoke:
        per_config_s = landscape["wall_s_per_config_mean"]
        per_config_s += landscape["worker_start_and_setup_s_mean"] / collector.recycle_after
        full_estimate_h = per_config_s * valid / 3600
    print(f"{kernel} {problem_label(spec, problem)}: {report.measured} measured, {report.skipped} already stored, "
          f"statuses {landscape['statuses']}, runtime {landscape.get('runtime_ms_min', math.nan):.4g} .. "
          f"{landscape.get('runtime_ms_max', math.nan):.4g} ms ({landscape.get('max_over_min', math.nan):.1f}x), "
          f"{wall_s:.0f} s -> {cache_path}", file=sys.stderr)
    return {"kernel": kernel, "problem_size": problem, "space_cartesian": cartesian, "space_valid": valid,
            "requested_configs": len(configs), "measured_now": report.measured, "skipped": report.skipped,
            "sweep_wall_s": round(wall_s, 1), "cache_file": str(cache_path.relative_to(RUNS_DIR.parent)),
            "replayed_configs": replayed, "landscape": landscape, "full_space_estimate_h": full_estimate_h}


def _param_frame(table: Any) -> Any:
    from perfpred.tuner import param_features

    params = table[[c for c in table.columns if c.startswith("config.")]]
    return param_features(params.rename(columns=lambda c: c.removeprefix("config.")))


def _finite_or_none(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _mean(values: Any) -> float | None:
    finite = [v for v in values if v is not None]
    return float(np.mean(finite)) if finite else None


def evaluate(kernel: str, *, smoke: bool) -> dict[str, Any]:
    """Stage 2 for one kernel: fit on a random fraction of the recording, score on the rest."""
    spec = get_kernel(kernel)
    problem = dict(spec.test_problem_size if smoke else spec.default_problem_size)
    store_path, _ = _paths(kernel, problem, smoke)
    if not store_path.exists():  # benchmarks/runs/ is not committed: stage 1 makes it
        raise SystemExit(f"no recording of {kernel} at {store_path}: run stage 1 first "
                         f"(python benchmarks/cpu_kernels.py --kernels {kernel}{' --smoke' if smoke else ''})")
    table = MeasurementStore(store_path).load()
    return {"kernel": kernel, "problem_size": problem,
            **evaluate_table(table, kernel, SMOKE_TRAIN_FRACTIONS if smoke else TRAIN_FRACTIONS)}


def evaluate_table(table: Any, label: str, fractions: tuple[float, ...] = TRAIN_FRACTIONS,
                   featurize: Any = None) -> dict[str, Any]:
    """Fit on a random fraction of a recording's ok rows, score on the rest.

    ``featurize(ok_rows) -> feature frame`` (default: the tune parameters, ``config.*``) is a
    pure per-row function, so computing it on all rows at once leaks nothing across the split.
    """
    from perfpred.models import LogTargetXGBRegressor, regression_report

    ok = table[table["status"] == "ok"].reset_index(drop=True)
    X = (featurize or _param_frame)(ok)
    y = ok["runtime_ms"].to_numpy(float)
    out: dict[str, Any] = {"rows_ok": len(ok), "fractions": {}}
    for fraction in fractions:
        n_train = max(8, round(fraction * len(ok)))
        if n_train >= len(ok) - 2 or any(f["n_train"] == n_train for f in out["fractions"].values()):
            continue  # too few rows left to score, or the same split as a smaller fraction
        folds = []
        for seed in SEEDS:
            order = np.random.default_rng(seed).permutation(len(ok))
            train, test = order[:n_train], order[n_train:]
            model = LogTargetXGBRegressor(random_state=seed, n_jobs=1).fit(X.iloc[train], y[train])
            pred = model.predict(X.iloc[test])
            truth = y[test]
            k = min(TOP_K, max(1, len(test) // 5))  # a top-k of the whole test set would be trivial
            # The baseline (and a model of few rows) predicts one constant, where rho is undefined.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConstantInputWarning)
                fold = regression_report(truth, pred)
                baseline = regression_report(truth, np.full(len(truth), np.median(y[train])))
            fold["regret_of_predicted_best"] = float(truth[np.argmin(pred)] / truth.min())
            fold[f"top{k}_recall"] = float(len(set(np.argsort(pred)[:k]) & set(np.argsort(truth)[:k])) / k)
            fold["median_baseline_mape_pct"] = baseline["mape_pct"]
            folds.append(fold)
        folds = [{key: _finite_or_none(value) for key, value in fold.items()} for fold in folds]
        out["fractions"][str(fraction)] = {
            "n_train": n_train,
            "mean": {key: _mean(f[key] for f in folds) for key in folds[0]},
            "per_seed": folds,
        }
        mean = out["fractions"][str(fraction)]["mean"]
        rho = "n/a" if mean["spearman_rho"] is None else f"{mean['spearman_rho']:.2f}"
        print(f"{label}: train {n_train} ({fraction:.0%}): MAPE {mean['mape_pct']:.1f}% "
              f"(median baseline {mean['median_baseline_mape_pct']:.0f}%), rho {rho}, "
              f"regret {mean['regret_of_predicted_best']:.2f}x", file=sys.stderr)
    return out


def _transfer_source(kernel: str) -> tuple[str, Path] | None:
    """The recording at the kernel's other problem size (stage 1 with --transfer-size), if made."""
    spec = get_kernel(kernel)
    _, path = _paths(kernel, TRANSFER_SIZES[kernel], smoke=False)
    return (f"cpu/{kernel}@{problem_label(spec, TRANSFER_SIZES[kernel])}", path) if path.exists() else None


def tune_replayed(kernel: str, seeds: int, strategies: list[str]) -> dict[str, Any]:
    """Stage 3 for one kernel: every tuning strategy on the recording replayed as hardware.

    perfpred-transfer (when asked and the other-size recording exists) takes its prior from the
    same kernel recorded at another problem size on this CPU: tuning a new size with what was
    learned on an old one.
    """
    import tuning

    spec = get_kernel(kernel)
    _, cache_path = _paths(kernel, dict(spec.default_problem_size), smoke=False)
    if not cache_path.exists():
        raise SystemExit(f"no recording of {kernel} at {cache_path}: run stage 1 first")
    source = _transfer_source(kernel)
    if source is None:
        strategies = [s for s in strategies if s != "perfpred-transfer"]
    result = tuning.run_space(f"cpu/{kernel}", list(range(seeds)), strategies, path=cache_path,
                              sources=dict([source]) if source else None)
    summary = tuning.summarise([result], list(range(seeds)))["spaces"][f"cpu/{kernel}"]
    prior = f", prior: {source[0]}" if source else ""  # the title tuning.py --replot cpu_kernels.json draws too
    tuning.plot([result], RESULTS_DIR / f"cpu_kernels_tuning_{kernel}.png", seeds=seeds,
                title=f"cpu/{kernel} replayed ({result['n_configs']} configs{prior})")
    return {"seeds": seeds, "budget": tuning.BUDGET, "transfer_source": source[0] if source else None, **summary}


def _recorded_top(kernel: str, k: int) -> tuple[list[dict[str, Any]], float]:
    spec = get_kernel(kernel)
    store_path, _ = _paths(kernel, dict(spec.default_problem_size), smoke=False)
    if not store_path.exists():
        raise SystemExit(f"no recording of {kernel} at {store_path}: run stage 1 first")
    table = MeasurementStore(store_path).load()
    ok = table[table["status"] == "ok"].sort_values("runtime_ms")
    names = list(spec.tune_params)
    top = [spec.canonical_params({n: row[f"config.{n}"] for n in names}) for _, row in ok.head(k).iterrows()]
    return top, float(ok["runtime_ms"].iloc[0])


def tune_live(kernel: str, seeds: int, budget: int, transfer: bool) -> dict[str, Any]:
    """Stage 4 for one kernel: the demo's tuner and random search live, re-timed beside the optimum.

    With ``transfer`` the tuner starts from priors learned on the kernel's other-size recording.
    """
    from perfpred.tuner._demo import run_demo

    top, recorded_best_ms = _recorded_top(kernel, LIVE_OPTIMUM_FINALISTS)
    source = _transfer_source(kernel) if transfer else None
    if transfer and source is None:
        raise SystemExit(f"--live --transfer needs the {kernel} recording at {TRANSFER_SIZES[kernel]}: "
                         "run stage 1 with --transfer-size first")
    runs = []
    for seed in range(seeds):
        t0 = time.perf_counter()
        result = run_demo(run_dir=RUNS_DIR / "cpu_kernels" / "live" / f"{kernel}-seed{seed}", budget=budget,
                          seed=seed, kernel=kernel, extra_finalists={"recorded optimum": top},
                          prior_files=[source[1]] if source else None)
        confirmed = dict(zip(result.table["strategy"], result.table["confirmed_ms"], strict=True))
        optimum_ms = confirmed["recorded optimum"]
        run = {"seed": seed, "confirmed_ms": confirmed,
               "over_optimum": {s: (v / optimum_ms if v and optimum_ms else None) for s, v in confirmed.items()},
               "configs": dict(zip(result.table["strategy"], result.table["config"], strict=True)),
               "predicted_vs_measured_mape_pct": result.predicted_vs_measured_mape_pct,
               "hardware_evaluations": result.n_hardware_evaluations, "wall_s": time.perf_counter() - t0}
        runs.append(run)
        ratios = run["over_optimum"]
        print(f"{kernel} live seed {seed}: x re-timed optimum: "
              + ", ".join(f"{s} {r:.3f}" if r is not None else f"{s} -" for s, r in ratios.items())
              + f" ({run['wall_s']:.0f} s)", file=sys.stderr)

    def median_ratio(strategy: str) -> float | None:
        ratios = [r["over_optimum"][strategy] for r in runs if r["over_optimum"][strategy] is not None]
        return float(np.median(ratios)) if ratios else None  # None: no ok config re-timed

    perfpred_median = median_ratio("perfpred")
    return {"budget": budget, "seeds": seeds, "perfpred_prior": source[0] if source else "none (cold start)",
            "recorded_best_ms": recorded_best_ms,
            "optimum_finalists": top, "runs": runs,
            "median_over_optimum": {s: median_ratio(s) for s in ("perfpred", "random search", "default")},
            "perfpred_within_5pct_runs": int(sum((r["over_optimum"]["perfpred"] or np.inf) <= LIVE_TARGET
                                                 for r in runs)),
            "target_median_within_5pct": LIVE_TARGET,
            "target_met": bool(perfpred_median is not None and perfpred_median <= LIVE_TARGET),
            "perfpred_beats_random_runs": int(sum((r["confirmed_ms"]["perfpred"] or np.inf)
                                                  <= (r["confirmed_ms"]["random search"] or np.inf) for r in runs))}


def probe(kernel: str, n: int, seed: int, timeout_s: float) -> dict[str, Any]:
    """Measure ``n`` random configs at the default size; estimate the full brute force from them."""
    result = record(kernel, smoke=False, sample=n, seed=seed, timeout_s=timeout_s)
    print(f"{kernel}: ~{result['landscape']['wall_s_per_config_mean']:.2f} s per config -> the full space "
          f"({result['space_valid']} configs) takes ~{result['full_space_estimate_h']:.1f} h", file=sys.stderr)
    return result


def _merge_result(name: str, kernels: dict[str, dict[str, Any]], extra: dict[str, Any]) -> Path:
    """Merge each kernel's new sections into the results file, keeping the other stages' sections."""
    path = RESULTS_DIR / f"{name}.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    merged = old.get("kernels", {})
    for kernel, sections in kernels.items():
        merged.setdefault(kernel, {}).update(sections)
    stages = {**old.get("stage_wall_s", {}), **extra.pop("stage_wall_s", {})}
    return write_result(name, {**{k: v for k, v in old.items() if k not in ("benchmark", "generated_at", "python")},
                               **extra, "kernels": merged, "stage_wall_s": stages})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kernels", nargs="+", default=list(CPU_KERNELS), choices=list(CPU_KERNELS))
    parser.add_argument("--smoke", action="store_true", help=f"{SMOKE_CONFIGS} configs per kernel at the test size")
    parser.add_argument("--sample", type=int, default=None, help="a seeded random sample instead of every config")
    parser.add_argument("--probe", type=int, default=None, help="measure N configs and estimate the full run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout-s", type=float, default=60.0, help="wall-time limit of one config")
    parser.add_argument("--transfer-size", action="store_true",
                        help="stage 1 at the kernel's transfer size (the source of stage 3's perfpred-transfer)")
    parser.add_argument("--evaluate", action="store_true", help="stage 2 only: score a predictor on the recordings")
    parser.add_argument("--tune", action="store_true", help="stage 3 only: tuners replayed on the recordings")
    parser.add_argument("--strategies", default=",".join(TUNE_STRATEGIES), help="stage 3's strategies")
    parser.add_argument("--live", action="store_true", help="stage 4 only: tuner vs random live on this CPU")
    parser.add_argument("--seeds", type=int, default=None, help="repeats of stage 3 (default 20) / 4 (default 5)")
    parser.add_argument("--budget", type=int, default=LIVE_BUDGET, help="stage 4's evaluations per strategy")
    parser.add_argument("--transfer", action="store_true",
                        help="stage 4's tuner starts from priors learned on the --transfer-size recording")
    args = parser.parse_args()
    warning = busy_warning()
    if warning and not (args.evaluate or args.tune):
        print(f"warning: {warning}", file=sys.stderr)
    if args.probe is not None:
        payload = {"mode": "full", "kernels": {k: {"probe": probe(k, args.probe, args.seed, args.timeout_s)}
                                                for k in args.kernels}}
        print(f"wrote {write_result('cpu_kernels_probe', payload)}", file=sys.stderr)
        return
    t0 = time.time()
    kernels: dict[str, dict[str, Any]] = {}
    for kernel in args.kernels:
        if args.evaluate:
            stage, kernels[kernel] = "evaluation", {"evaluation": evaluate(kernel, smoke=args.smoke)}
        elif args.tune:
            stage, kernels[kernel] = "tuning", {"tuning": tune_replayed(kernel, args.seeds or 20,
                                                                        args.strategies.split(","))}
        elif args.live:
            stage = "live_transfer" if args.transfer else "live"
            kernels[kernel] = {stage: tune_live(kernel, args.seeds or 5, args.budget, args.transfer)}
        else:
            stage = "transfer_recording" if args.transfer_size else "recording"
            problem = TRANSFER_SIZES[kernel] if args.transfer_size else None
            kernels[kernel] = {stage: record(kernel, smoke=args.smoke, sample=args.sample, seed=args.seed,
                                             timeout_s=args.timeout_s, problem=problem)}
            if args.smoke:  # the smoke run also proves stage 2 runs end to end
                kernels[kernel]["evaluation"] = evaluate(kernel, smoke=True)
        # Merged after each kernel: a later kernel's failure loses nothing already measured.
        name = "cpu_kernels_smoke" if args.smoke else "cpu_kernels"
        path = _merge_result(name, {kernel: kernels[kernel]}, {"mode": "smoke" if args.smoke else "full",
                                                                "stage_wall_s": {f"{stage}:{kernel}":
                                                                                 round(time.time() - t0, 1)}})
        t0 = time.time()
        print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    from _common import run

    run(main)
