"""Does perfpred's timer agree with torch.utils.benchmark.Timer.blocked_autorange?

    python benchmarks/timer_agreement.py     -> benchmarks/results/timer_agreement.json

Both time the same preallocated single-thread fp32 torch.mm on the same operands, in
alternating rounds (ours, torch's, ours, ...) so drift of this shared machine hits both alike.
Agreement = perfpred median / torch median, per round, and its median over rounds.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from _common import write_result
from torch.utils.benchmark import Timer

from perfpred.collect import GemmConfig, TimingPolicy, cpu_threads, time_function
from perfpred.collect._gemm import _make_operation

SHAPES = [(16, 16, 16), (64, 64, 64), (256, 256, 256), (1024, 1024, 1024), (2048, 64, 2048), (33, 1000, 77),
          (4096, 16, 512)]
ROUNDS = 3
POLICY = TimingPolicy()  # the collector's defaults


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    rows = []
    with cpu_threads(1):
        for m, n, k in SHAPES:
            call, _ = _make_operation(GemmConfig(m, n, k, dtype="fp32"))
            ours, theirs = [], []
            for _ in range(ROUNDS):
                ours.append(time_function(call, POLICY).median_ms)
                timer = Timer(stmt="call()", globals={"call": call}, num_threads=1)
                theirs.append(timer.blocked_autorange(min_run_time=0.5).median * 1e3)
            ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
            rows.append({"m": m, "n": n, "k": k, "perfpred_median_ms": ours,
                         "torch_blocked_autorange_median_ms": theirs, "ratio_per_round": ratios,
                         "ratio_median": statistics.median(ratios)})
            print(f"{m}x{n}x{k}: perfpred {statistics.median(ours):.4g} ms, torch {statistics.median(theirs):.4g} ms, "
                  f"ratio {statistics.median(ratios):.3f}")
    deviations = [abs(r["ratio_median"] - 1) * 100 for r in rows]
    write_result("timer_agreement", {
        "torch": torch.__version__,
        "threads": 1,
        "dtype": "fp32",
        "rounds": ROUNDS,
        "shapes": rows,
        "median_abs_deviation_pct": statistics.median(deviations),
        "max_abs_deviation_pct": max(deviations),
    })


if __name__ == "__main__":
    from _common import run

    run(main)
