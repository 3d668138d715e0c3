"""CPU GEMM benchmark (foundation issue): collect >= 300 single-thread GEMMs, train, evaluate.

    python benchmarks/cpu_gemm.py                 # collect (resumable) + evaluate
    python benchmarks/cpu_gemm.py --collect-only

Writes benchmarks/results/cpu_gemm.json: MAPE etc. of the XGBoost predictor, the GPPerf-style
RandomForest baseline and plain roofline, on a random split and on unseen shapes.
"""

from __future__ import annotations

import argparse
import sys
import time

from _common import RUNS_DIR, write_result

from perfpred.collect import (
    GemmCollector,
    GemmConfig,
    TimingPolicy,
    busy_warning,
    expand,
    loguniform_shapes,
    noisy_row,
    run_sweep,
)
from perfpred.datasets import MeasurementStore

STORE = RUNS_DIR / "cpu_gemm" / "store"
N_SHAPES = 640  # x 2 dtypes = 1,280 configs (the learning curve was still falling at 640)
SIZE_RANGE = (16, 4096)
SEED = 2026
MAX_CV = 0.15


def collect() -> MeasurementStore:
    store = MeasurementStore(STORE, create=True)
    ranges = {"m": SIZE_RANGE, "n": SIZE_RANGE, "k": SIZE_RANGE}
    shapes = loguniform_shapes(N_SHAPES, ranges, seed=SEED, sobol=True)
    configs = [GemmConfig(**c, threads=1) for c in expand(shapes, dtype=["fp32", "fp64"])]
    policy = TimingPolicy(warmup_runs=2, min_runs=5, max_runs=50, max_time_s=1.5, target_rel_ci=0.02)
    if busy_warning():
        print(f"warning: {busy_warning()}", file=sys.stderr)
    # Rows timed while the machine was busy (replicate cv above MAX_CV) are timed again.
    report = run_sweep(GemmCollector(policy=policy), configs, store, remeasure=noisy_row(MAX_CV))
    print(f"collected {report.measured} ({report.remeasured} re-measured as noisy), skipped {report.skipped} "
          f"(already stored), failed {report.failed}, "
          f"{report.wall_s:.0f} s", file=sys.stderr)
    store.compact()
    return store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--collect-only", action="store_true")
    args = parser.parse_args()
    t0 = time.time()
    store = collect()
    if args.collect_only:
        return
    from evaluate_gemm import evaluate_store

    payload = evaluate_store(store)
    payload["collection_wall_s"] = round(time.time() - t0, 1)
    path = write_result("cpu_gemm", payload)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
