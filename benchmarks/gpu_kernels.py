"""The GPU half of cpu_kernels.py: record the Triton matmul on a CUDA GPU, then tune it live.

    python benchmarks/gpu_kernels.py --sample 120 --seeds 5   # on a machine with a CUDA GPU (6 min on an H200)
    python benchmarks/gpu_kernels.py --live-only --first-seed 5 --seeds 3   # more live seeds, same recording
    python benchmarks/gpu_kernels.py --evaluate               # anywhere: predictor scored on the recordings

Stage 1 measures a seeded random sample of the Triton matmul's space (1,368 valid configs:
BLOCK_M/N/K, GROUP_M, num_warps, num_stages) at 4096^3 fp16 and writes it as a Kernel Tuner
cache file under ``benchmarks/results/gpu_recordings/`` (kept in git: it cannot be re-made
without the GPU). Stage 2 closes the loop live: ``perfpred demo --gpu``'s tuner (cold start)
and random search each get ``--budget`` real evaluations, then their three fastest configs,
the default and the recording's three fastest are re-timed together (median of >= 7 runs),
over ``--seeds`` seeds. Stage 1 stops starting new configs after ``--record-s`` and stage 2
new seeds after ``--deadline-s`` (a lent GPU is often lent for minutes); the results are
written after stage 1 and after every seed.

Stage 3 (``--evaluate``) needs no GPU: it scores a log-runtime XGBoost, fitted on the tune
parameters of a random fraction of each recording (Triton sample, and the CUDA matmul's whole
space recorded by ``gpu_check.sh``), on the rest: MAPE, Spearman rho, regret of its pick.
Results: ``benchmarks/results/gpu_kernels.json`` (sections merged, so the stages can run on
different machines).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import RESULTS_DIR, RUNS_DIR, landscape_summary, write_result

RECORDINGS_DIR = RESULTS_DIR / "gpu_recordings"
KERNEL = "matmul_triton"
LIVE_BUDGET = 20
OPTIMUM_FINALISTS = 3
EVALUATION_FRACTIONS = (0.1, 0.25, 0.5)  # of a recording of 33 or 120 configs: 8-60 training rows


def _cache_name(kernel: str, gpu: str, problem: dict[str, int]) -> str:
    from perfpred.collect.kernels import get_kernel, problem_label

    slug = gpu.lower().replace("nvidia ", "").replace(" ", "-")
    return f"{kernel}_{slug}_{problem_label(get_kernel(kernel), problem)}.json"


def _device_name(device: str) -> str:
    if device == "cuda":
        import torch

        return torch.cuda.get_device_name(0)
    return "cpu"


def record(kernel: str, sample: int, seed: int, deadline: float, out_dir: Path) -> dict[str, Any]:
    """Stage 1: a seeded random sample of the kernel's space, one config at a time until the deadline."""
    from perfpred.collect import KernelCollector, get_kernel
    from perfpred.collect.importers import export_kernel_tuner_cache
    from perfpred.datasets import MeasurementStore

    spec = get_kernel(kernel)
    problem = dict(spec.default_problem_size)
    store = MeasurementStore(RUNS_DIR / "gpu_kernels" / f"{kernel}-sample{seed}", create=True)
    done = set(store.load()["measurement_id"]) if len(store) else set()
    t0 = time.perf_counter()
    with KernelCollector(spec, problem_size=problem) as collector:
        for cfg in collector.configs(sample=sample, seed=seed):
            if collector.measurement_id(cfg) in done:
                continue
            if time.time() > deadline:
                print("stage 1: deadline reached, stopping the sample early", file=sys.stderr)
                break
            store.append([collector.measure(cfg)])
    table = store.load()
    gpu = _device_name(spec.device)
    path = out_dir / _cache_name(kernel, gpu, problem)
    export_kernel_tuner_cache(table, path, kind="kernel")
    landscape = landscape_summary(table)
    fastest_ms = landscape.get("runtime_ms_min")
    summary = {"kernel": kernel, "problem_size": problem, "gpu": gpu, "requested_configs": sample, **landscape,
               # A GEMM's 2mnk FLOPs at its fastest config (other kernels: None).
               "tflops_max": (float(2 * problem["m"] * problem["n"] * problem["k"] / fastest_ms / 1e9)
                              if set(problem) == {"m", "n", "k"} and fastest_ms else None),
               "wall_s": round(time.perf_counter() - t0, 1), "cache_file": path.name}
    print(f"stage 1: {len(table)} configs, {summary['statuses']}, {summary['runtime_ms_min']:.4g} .. "
          f"{summary['runtime_ms_max']:.4g} ms -> {path}", file=sys.stderr)
    return summary


def _recorded_top(cache_path: Path, k: int) -> list[dict[str, Any]]:
    cache = json.loads(cache_path.read_text())
    keys = cache["tune_params_keys"]
    rows = [v for v in cache["cache"].values() if isinstance(v.get("time"), (int, float))]
    rows.sort(key=lambda v: v["time"])
    return [{name: row[name] for name in keys} for row in rows[:k]]


def tune_live(kernel: str, cache_path: Path, seeds: range, budget: int, deadline: float, save,
              earlier_runs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Stage 2: the demo's tuner vs random search live, re-timed beside the recording's fastest.

    ``earlier_runs`` (other seeds of the same stage, from the results file) are kept and summarised
    with the new ones.
    """
    from perfpred.collect import get_kernel
    from perfpred.tuner._demo import run_demo

    top = _recorded_top(cache_path, OPTIMUM_FINALISTS)
    runs: list[dict[str, Any]] = [r for r in earlier_runs or [] if r["seed"] not in seeds]
    for seed in seeds:
        if time.time() > deadline:
            print(f"stage 2: deadline reached before seed {seed}", file=sys.stderr)
            break
        t0 = time.perf_counter()
        result = run_demo(run_dir=RUNS_DIR / "gpu_kernels" / "live" / f"{kernel}-seed{seed}", budget=budget,
                          seed=seed, gpu=get_kernel(kernel).device == "cuda", kernel=kernel,
                          extra_finalists={"recorded best": top})
        confirmed = dict(zip(result.table["strategy"], result.table["confirmed_ms"], strict=True))
        best = confirmed["recorded best"]
        runs.append({"seed": seed, "confirmed_ms": confirmed,
                     "over_recorded_best": {s: (v / best if v and best else None) for s, v in confirmed.items()},
                     "configs": dict(zip(result.table["strategy"], result.table["config"], strict=True)),
                     "predicted_vs_measured_mape_pct": result.predicted_vs_measured_mape_pct,
                     "hardware_evaluations": result.n_hardware_evaluations,
                     "wall_s": round(time.perf_counter() - t0, 1)})
        print(f"stage 2 seed {seed}: " + ", ".join(f"{s} {r:.3f}" for s, r in runs[-1]["over_recorded_best"].items()
                                                   if r is not None), file=sys.stderr)
        save(_live_summary(runs, budget, top))
    return _live_summary(runs, budget, top)


def _live_summary(runs: list[dict[str, Any]], budget: int, top: list[dict[str, Any]]) -> dict[str, Any]:
    def median(strategy: str) -> float | None:
        ratios = [r["over_recorded_best"][strategy] for r in runs if r["over_recorded_best"].get(strategy)]
        return float(np.median(ratios)) if ratios else None

    runs = sorted(runs, key=lambda r: r["seed"])
    return {"budget": budget, "seeds": len(runs), "recorded_best_finalists": top, "runs": runs,
            "median_over_recorded_best": {s: median(s) for s in ("perfpred", "random search", "default")},
            "perfpred_beats_random_runs": int(sum((r["confirmed_ms"]["perfpred"] or np.inf)
                                                  <= (r["confirmed_ms"]["random search"] or np.inf) for r in runs))}


def evaluate() -> dict[str, Any]:
    """Stage 3: predictor accuracy on each recording in RECORDINGS_DIR (no GPU needed)."""
    import cpu_kernels
    import pandas as pd

    from perfpred.collect.importers import read_files

    out = {}
    for path in sorted(RECORDINGS_DIR.glob("*.json")):
        (result,), _ = read_files("kernel-tuner", [path])
        table = pd.concat(result.frames, ignore_index=True)
        out[path.name] = cpu_kernels.evaluate_table(table, path.stem, fractions=EVALUATION_FRACTIONS)
        out[path.name]["derived_features"] = cpu_kernels.evaluate_table(
            table, f"{path.stem} (derived)", fractions=EVALUATION_FRACTIONS, featurize=_derived_features)
    return out


def _derived_features(ok: Any) -> Any:
    """What ``perfpred tune --features derived`` gives the surrogate: the parameters plus the
    quantities the kernel feature rules derive from them, the problem and the recorded GPU."""
    from perfpred.tuner._surrogate import kernel_tuning_features

    names = [c.removeprefix("config.") for c in ok.columns if c.startswith("config.")]
    problem = {c.removeprefix("workload."): ok[c].iloc[0] for c in ok.columns
               if c in ("workload.m", "workload.n", "workload.k", "workload.dtype")}
    featurize = kernel_tuning_features(problem, json.loads(ok["hardware_json"].iloc[0]))
    return featurize(ok[[f"config.{n}" for n in names]].rename(columns=lambda c: c.removeprefix("config.")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kernel", default=KERNEL, help="the kernel (a GPU kernel; a CPU one to try the script)")
    parser.add_argument("--sample", type=int, default=120, help="stage 1: configs sampled from the kernel's space")
    parser.add_argument("--seed", type=int, default=0, help="stage 1: seed of the sample")
    parser.add_argument("--seeds", type=int, default=5, help="stage 2: live tuning repeats")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="stage 2: seeds run are first-seed .. first-seed + seeds - 1; others already in "
                             "the results file are kept")
    parser.add_argument("--live-only", action="store_true",
                        help="skip stage 1 and tune against the recording already in gpu_recordings/")
    parser.add_argument("--budget", type=int, default=LIVE_BUDGET, help="stage 2: evaluations per strategy")
    parser.add_argument("--record-s", type=float, default=float("inf"),
                        help="stage 1 stops starting new configs after this many seconds")
    parser.add_argument("--deadline-s", type=float, default=float("inf"),
                        help="stage 2 stops starting new seeds this many seconds after the start")
    parser.add_argument("--evaluate", action="store_true", help="stage 3 only (no GPU needed)")
    parser.add_argument("--copy-to", type=Path, default=None,
                        help="also copy the results file and the recording here after every step")
    args = parser.parse_args()
    path = RESULTS_DIR / "gpu_kernels.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    sections = {k: v for k, v in old.items() if k not in ("benchmark", "generated_at", "python")}

    def save(**new: Any) -> None:
        sections.update(new)
        written = write_result("gpu_kernels", sections)
        if args.copy_to:
            args.copy_to.mkdir(parents=True, exist_ok=True)
            shutil.copy(written, args.copy_to)
            for recording in RECORDINGS_DIR.glob("*.json"):
                shutil.copy(recording, args.copy_to)

    if args.evaluate:
        save(evaluation=evaluate())
        return
    start = time.time()
    RECORDINGS_DIR.mkdir(parents=True, exist_ok=True)
    if args.live_only:
        recording = sections.get("recording")
        if not recording or recording["kernel"] != args.kernel:
            raise SystemExit(f"--live-only needs a recording of {args.kernel} in {path}: run stage 1 first")
    else:
        recording = record(args.kernel, args.sample, args.seed, start + args.record_s, RECORDINGS_DIR)
        save(recording=recording)
    cache_path = RECORDINGS_DIR / recording["cache_file"]
    earlier = sections.get("live", {}).get("runs", []) if args.first_seed > 0 else []
    tune_live(args.kernel, cache_path, range(args.first_seed, args.first_seed + args.seeds), args.budget,
              start + args.deadline_s, lambda live: save(live=live), earlier_runs=earlier)
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    from _common import run

    run(main)
