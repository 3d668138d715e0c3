"""Ablation, replayed from the stored serving grids (no launch): how the serving tuner's first
model-guided launches are chosen after its 3-launch space-filling start.

    python benchmarks/serving_first_picks.py --seeds 20   # after serving.py (both engines) -> serving_first_picks.json

"trees only": the bootstrap XGBoost ensemble from the start; with 3 rows it cannot split and
predicts one constant for every config, so the first model-guided picks are blind.
"GP first" (the default until Dec 4, when a GP throughout became it: serving_search.py): a
Gaussian process ranks configs until the trees have 4 working rows.
Each seed replays ``tune_serving_live`` against the grid's measurements (25% of the grid's
configs as budget) and is scored by the grid's best goal, under the benchmark's stated SLO and
its tight SLO (bounds at the grid's medians); random search with the same budget alongside.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import serving
from _common import RUNS_DIR, write_result

import perfpred.tuner._slo_search as slo_search
from perfpred.collect.serving import ServingCollector

GRIDS = [("llama-server", "small-20m", "small-20m", 3), ("llama-server", "tiny", "tiny", 3),
         ("vllm", "tiny", "vllm-tiny", 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    args = parser.parse_args()
    default_rows = slo_search.MIN_TREE_ROWS
    out = []
    for engine, model, folder, launches in GRIDS:
        bench = serving.BENCHES[engine]
        run_dir = RUNS_DIR / "serving" / folder
        if not (run_dir / "grid" / "pass1").exists():
            raise SystemExit(f"no stored grid at {run_dir}: run `python benchmarks/serving.py --engine {engine} "
                             f"--models {model}` first")
        table, rows, _, _, n_new = serving.run_grid(bench, model, run_dir, ServingCollector(), launches)
        if n_new:
            raise SystemExit(f"the stored grid at {run_dir} was incomplete ({n_new} configs launched now)")
        budget = max(1, int(0.25 * len(table)))
        for slo_name, slo in (("stated", serving.SLO), ("tight", serving.tight_slo(rows))):
            entry = {"engine": engine, "model": model, "slo": slo_name, "budget": budget, "n_configs": len(table)}
            for label, min_rows in (("trees_only", 0), ("gp_first", default_rows)):
                slo_search.MIN_TREE_ROWS = min_rows  # 0: trees from the first model-guided launch
                # The ensemble's settings of Dec 2 (the default is now a GP throughout: serving_search.py).
                sc = serving.replay_scenario(bench, model, rows, slo, budget, args.seeds, surrogate="xgb", kappa=1.0)
                entry[label] = {"ratio_mean": round(sc["perfpred_ratio_mean"], 4),
                                "seeds_reaching_98pct": sc["perfpred_seeds_reaching_98pct"]}
            slo_search.MIN_TREE_ROWS = default_rows
            entry["random"] = {"ratio_mean": round(sc["random_ratio_mean"], 4),
                               "seeds_reaching_98pct": sc["random_seeds_reaching_98pct"],
                               "n_seeds": sc["random_n_seeds"]}
            print(entry, flush=True)
            out.append(entry)
    print(write_result("serving_first_picks", {"seeds": args.seeds, "scenarios": out}))


if __name__ == "__main__":
    main()
