"""Ablation, replayed from the serving grids kept in the results files (no launch, no stored run):
how the serving tuner's first model-guided launches are chosen after its 3-launch space-filling
start.

    python benchmarks/serving_first_picks.py --seeds 20   # -> serving_first_picks.json
    python benchmarks/serving_first_picks.py --grids DIR  # the grids in another folder's results files

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
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import serving
from _common import RESULTS_DIR, write_result
from serving_search import GRIDS, grid_rows

import perfpred.tuner._slo_search as slo_search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--grids", type=Path, default=RESULTS_DIR,
                        help="folder holding serving.json and serving_vllm.json (default: benchmarks/results)")
    args = parser.parse_args()
    default_rows = slo_search.MIN_TREE_ROWS
    out = []
    for file, model in GRIDS:
        bench, rows = grid_rows(json.loads((args.grids / file).read_text()), model)
        engine, table = bench.engine, serving.grid_table(rows, serving.SLO, bench)
        budget = max(1, int(0.25 * len(table)))
        for slo_name, slo in (("stated", serving.SLO), ("tight", serving.tight_slo(rows))):
            entry = {"engine": engine, "model": model, "slo": slo_name, "budget": budget, "n_configs": len(table)}
            for label, min_rows in (("trees_only", 0), ("gp_first", default_rows)):
                slo_search.MIN_TREE_ROWS = min_rows  # 0: trees from the first model-guided launch
                # The ensemble's settings of Dec 2 (the default is now a GP throughout: serving_search.py).
                sc = serving.replay_scenario(bench, model, rows, slo, budget, args.seeds, surrogate="xgb", kappa=1.0,
                                             batch_size=2)
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
    from _common import run

    run(main)
