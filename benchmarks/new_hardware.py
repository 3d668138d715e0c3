"""A new GPU's tuning space predicted from a few of its own measurements, with and without the
recordings of the GPUs already tuned.

    python benchmarks/new_hardware.py                                   # -> results/new_hardware.json
    python benchmarks/new_hardware.py --kernels convolution --sizes 100 --seeds 0 --output new_hardware_smoke

The use case behind ``perfpred train --reference STORE`` (and ``perfpred evaluate --train-size N
--reference STORE``): a new GPU arrives, N configs of a kernel are measured on it, and the kernel's
complete spaces recorded on other GPUs are at hand. Each Kernel Tuner space in
``../shared/datasets`` (GEMM on 3 GPUs, convolution and dedispersion on 4) plays the new GPU in
turn; N of its working configs (random, seeded) are the training rows and all its other working
configs are scored. Strategies:
- ``own``: the default kernel model (``deep-trees``) on the N rows alone;
- ``reference``: the same, with each other GPU's recorded time of the config as a feature
  (``PerformanceModel(reference=...)``, what ``perfpred train --reference`` fits);
- ``reference_auto``: ``reference_mode="auto"``: 4-fold cross-validation on the N rows picks
  between those features, the ratio to a ridge fit of the references (``offset``) and that fit
  alone (``linear``);
- ``scaled_reference``: what one would do by hand: the other GPU whose times order the N
  configs best (Spearman), its recording scaled by the median ratio over the N configs (a config
  it never ran gets the N configs' median time).
Metrics over the scored configs: MAPE, Spearman's rho, and ``pick_over_opt``, the runtime of the
config each predicts fastest among them over the space's optimum (how good its one best guess is).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from typing import Any

import numpy as np
import pandas as pd
from _common import write_result
from scipy.stats import spearmanr

from perfpred.collect._replay import ReplayBackend
from perfpred.features import ReferenceTimes
from perfpred.features._reference import config_keys
from perfpred.models import PerformanceModel
from perfpred.models._zoo import deep_tree_blend
from perfpred.settings import dataset_path

FAMILIES = ("gemm", "convolution", "dedispersion")
SIZES = (50, 100, 200, 500, 1000, 2000)
SEEDS = (0, 1, 2)
STRATEGIES = ("own", "reference", "reference_auto", "scaled_reference")
# family -> every GPU's working configs; filled by main() before the workers fork, which read it.
TABLES: dict[str, pd.DataFrame] = {}


def load_family(family: str) -> pd.DataFrame:
    """Every GPU's recorded space of one Kernel Tuner kernel, through the importer, working configs only."""
    files = sorted(dataset_path("kernel-tuner", family, pattern="*.json.gz").glob("*.json.gz"))
    table = pd.concat([ReplayBackend.from_file(path).table for path in files], ignore_index=True)
    table = table[table["status"] == "ok"].dropna(axis=1, how="all")
    return table.reset_index(drop=True)


def scaled_reference(train: pd.DataFrame, test: pd.DataFrame, others: pd.DataFrame) -> np.ndarray:
    """The other GPU that orders the training configs best, scaled by the median ratio on them
    (configs matched as ``PerformanceModel(reference=...)`` matches them: ``ReferenceTimes``)."""
    lookup = ReferenceTimes.for_rows(others, train)
    times, keys = lookup.log2_times, lookup.key_columns
    train_log2, test_log2 = times.reindex(config_keys(train, keys)), times.reindex(config_keys(test, keys))
    measured = np.log2(train["runtime_ms"].to_numpy(dtype=float))
    best = None
    for hw in times.columns:
        ref = train_log2[hw].to_numpy()
        ok = np.isfinite(ref)
        if ok.sum() < 3:
            continue
        rho = spearmanr(measured[ok], ref[ok])[0]
        if best is None or rho > best[0]:
            best = (rho, hw, float(np.median(measured[ok] - ref[ok])))
    fallback = float(train["runtime_ms"].median())
    if best is None:
        return np.full(len(test), fallback)
    _, hw, shift = best
    pred = np.exp2(test_log2[hw].to_numpy() + shift)
    return np.where(np.isfinite(pred), pred, fallback)


def scores(pred: np.ndarray, measured: np.ndarray, optimum: float) -> dict[str, float]:
    return {"mape_pct": float(np.mean(np.abs(pred / measured - 1)) * 100),
            "spearman_rho": float(spearmanr(pred, measured)[0]),
            "pick_over_opt": float(measured[int(np.argmin(pred))] / optimum)}


def one_case(args: tuple[str, str, int, int]) -> dict[str, Any]:
    """One (kernel, new GPU, N, seed): N of its configs trained on, the rest scored, every strategy."""
    family, gpu, n, seed = args
    table = TABLES[family]
    target = table[table["hardware_id"] == gpu].reset_index(drop=True)
    others = table[table["hardware_id"] != gpu]
    order = np.random.default_rng(seed).permutation(len(target))
    train, test = target.iloc[order[:n]], target.iloc[order[n:]]
    measured = test["runtime_ms"].to_numpy(dtype=float)
    optimum = float(target["runtime_ms"].min())
    out: dict[str, Any] = {"family": family, "gpu": gpu, "n": n, "seed": seed}
    for name in ("own", "reference", "reference_auto"):
        t0 = time.perf_counter()
        model = PerformanceModel(kind="kernel", regressor=deep_tree_blend(random_state=seed, n_jobs=1),
                                 reference=None if name == "own" else others,
                                 reference_mode="auto" if name == "reference_auto" else "features").fit(train)
        out[name] = {**scores(model.predict(test), measured, optimum), "wall_s": time.perf_counter() - t0}
        if name == "reference_auto":  # the share of cases where cross-validation chose each way
            out[name]["offset_chosen"] = float(model.reference_mode_ == "offset")
            out[name]["linear_chosen"] = float(model.reference_mode_ == "linear")
    out["scaled_reference"] = scores(scaled_reference(train, test, others), measured, optimum)
    return out


def summarise(cases: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over seeds per (family, GPU, N), and over GPUs per (family, N)."""
    frame = pd.json_normalize(cases)
    metric_columns = [c for c in frame.columns if c.split(".")[0] in STRATEGIES]
    per_gpu = frame.groupby(["family", "gpu", "n"])[metric_columns].mean()
    per_family = per_gpu.groupby(["family", "n"]).mean()

    def nest(table: pd.DataFrame) -> dict:
        out: dict = {}
        for index, row in table.iterrows():
            node = out
            for part in index[:-1]:
                node = node.setdefault(str(part), {})
            leaf = node.setdefault(str(index[-1]), {})
            for column, value in row.items():
                strategy, metric = column.split(".", 1)
                leaf.setdefault(strategy, {})[metric] = round(float(value), 4)
        return out

    return {"per_family": nest(per_family), "per_gpu": nest(per_gpu)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kernels", default=",".join(FAMILIES), help="Kernel Tuner kernels (comma-separated)")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="measured configs of the new GPU")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--output", default="new_hardware")
    args = parser.parse_args()
    families = [f for f in args.kernels.split(",") if f]
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        parser.error(f"--kernels must be among {FAMILIES}, but got {unknown}")
    sizes = [int(s) for s in args.sizes.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    t0 = time.perf_counter()
    for family in families:
        TABLES[family] = load_family(family)
    cases = [(family, gpu, n, seed) for family in families for gpu in sorted(TABLES[family]["hardware_id"].unique())
             for n in sizes for seed in seeds]
    # Forked workers share the loaded tables; each fit is one thread.
    with mp.get_context("fork").Pool(args.workers) as pool:
        results = []
        for res in pool.imap(one_case, cases):
            results.append(res)
            print(f"{res['family']:13s} {res['gpu']:32s} N={res['n']:<5d} seed={res['seed']} "
                  + "  ".join(f"{s} {res[s]['mape_pct']:.1f}%" for s in STRATEGIES), flush=True)
    summary = summarise(results)
    path = write_result(args.output, {
        "families": families, "sizes": sizes, "seeds": seeds, "strategies": list(STRATEGIES),
        "model": "deep-trees (XGBoost depth 12 + ExtraTrees) on kernel features; 'reference' adds the other "
                 "GPUs' recorded log times of the config",
        "gpus": {f: sorted(TABLES[f]["hardware_id"].unique()) for f in families},
        "configs": {f: {g: int(c) for g, c in TABLES[f]["hardware_id"].value_counts().sort_index().items()}
                    for f in families},
        **summary, "cases": results, "wall_s": round(time.perf_counter() - t0, 1)})
    print(f"wrote {path} in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    from _common import run

    run(main)
