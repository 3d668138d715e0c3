"""CPU GEMM benchmark (foundation issue): collect >= 300 single-thread GEMMs, train, evaluate.

    python benchmarks/cpu_gemm.py                 # collect (resumable) + evaluate
    python benchmarks/cpu_gemm.py --collect-only
    python benchmarks/cpu_gemm.py --unpinned      # collect the ablation store only: no CPU pinning, 3 visits

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
    run_sweep,
)
from perfpred.datasets import MeasurementStore

STORE = RUNS_DIR / "cpu_gemm" / "store"
UNPINNED_STORE = RUNS_DIR / "cpu_gemm" / "store_unpinned"  # ablation: the same sweep, not pinned
N_SHAPES = 640  # x 2 dtypes = 1,280 configs (the learning curve was still falling at 640)
SIZE_RANGE = (16, 4096)
SEED = 2026
# Each config is timed on 5 visits in separate shuffled passes; the median of the visit medians
# is stored. Two single-visit sweeps an hour apart disagreed by a median 9% per config here, and
# a whole pass can run 30% slow. (Timing is also pinned to one CPU, the collector's default.)
VISITS = 5
UNPINNED_VISITS = 3


def collect(*, pinned: bool = True) -> MeasurementStore:
    store = MeasurementStore(STORE if pinned else UNPINNED_STORE, create=True)
    ranges = {"m": SIZE_RANGE, "n": SIZE_RANGE, "k": SIZE_RANGE}
    shapes = loguniform_shapes(N_SHAPES, ranges, seed=SEED, sobol=True)
    configs = [GemmConfig(**c, threads=1) for c in expand(shapes, dtype=["fp32", "fp64"])]
    policy = TimingPolicy(warmup_runs=2, min_runs=5, max_runs=50, max_time_s=1.5, target_rel_ci=0.02)
    if busy_warning():
        print(f"warning: {busy_warning()}", file=sys.stderr)
    collector = GemmCollector(policy=policy, pin_cpus="auto" if pinned else "none")
    report = run_sweep(collector, configs, store, visits=VISITS if pinned else UNPINNED_VISITS, seed=SEED)
    print(f"collected {report.measured} new configs in {report.visits} visits, skipped {report.skipped} "
          f"(all visits stored), failed {report.failed}, {report.wall_s:.0f} s", file=sys.stderr)
    store.compact()
    return store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--collect-only", action="store_true")
    parser.add_argument("--unpinned", action="store_true", help="only collect the unpinned ablation store")
    args = parser.parse_args()
    t0 = time.time()
    store = collect(pinned=not args.unpinned)
    if args.collect_only or args.unpinned:
        return
    from evaluate_gemm import evaluate_store

    unpinned = MeasurementStore(UNPINNED_STORE) if (UNPINNED_STORE / "store.json").exists() else None
    payload = evaluate_store(store, ablation_stores={"unpinned": unpinned} if unpinned else None)
    payload["collection_wall_s"] = round(time.time() - t0, 1)
    path = write_result("cpu_gemm", payload)
    print(f"wrote {path}")


if __name__ == "__main__":
    from _common import run

    run(main)
