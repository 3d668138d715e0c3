"""Prediction accuracy on the recorded GPU datasets, next to the published anchors and our targets.

    python benchmarks/accuracy.py              # every protocol, writes benchmarks/results/accuracy.json
    python benchmarks/accuracy.py --smoke      # small slices, well under a minute (tests call this)
    python benchmarks/accuracy.py --only uci_random,kt_gemm

Every dataset is read in its original format through ``perfpred.collect.importers.run_import``
into a temporary Measurement store, so the numbers are those a user gets from
``perfpred import``. Protocols never leak: features are pure functions of a row; every fitted
statistic (scalers, neighbour tables, model choice) comes from the training rows of the fold
only; scores are on held-out rows only. Model choices that were made during development were
made on validation slices of the training rows (never on the test rows), and the choices that
are cheap to make again are re-made here by cross-validation on each fold's training rows.

Each protocol reports MAPE, median and p90 APE, R² (log and linear), Spearman rho, fit and
predict seconds, the anchor and our target; ``gpperf`` adds the GPPerf protocol (a random
80/20 row split; mean and median |pred - true| / true) for our model and GPPerf's own
RandomForest baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Two-thread OpenMP pools that spin-wait crawl on a shared 2-core machine; passive waiting keeps
# xgboost/torch fast when other processes compete. Must be set before those libraries load.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.base import clone

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, write_result

from perfpred.collect.importers import run_import
from perfpred.datasets import MeasurementStore, random_split
from perfpred.models import (
    BlendRegressor,
    GridNeighbourRegressor,
    LogTargetForestRegressor,
    LogTargetHGBRegressor,
    LogTargetXGBRegressor,
    MultiTargetModel,
    PerformanceModel,
    QuantileXGBRegressor,
    TorchGPRegressor,
    TorchMLPRegressor,
    deep_tree_blend,
    gpperf_random_forest,
    interval_coverage,
    regression_report,
)
from perfpred.settings import dataset_path, datasets_dir
from perfpred.tuner import ServingPredictor

SEED = 0
THREADS = 2  # the machine's cores; never more
TEST_SIZE = 0.2

# (anchor text, target MAPE %) per protocol, from the issue "Recorded GPU datasets".
ANCHORS: dict[str, tuple[str, float]] = {
    "uci_random": ("XGBoost default 5.03%; tuned with derived features 1.87% (noise floor 0.61%)", 1.5),
    "uci_2000": ("XGBoost default 18.3%; tuned 9.4%", 7.0),
    "kt_gemm": ("XGBoost 1.9-3.7% per GPU", 1.5),
    "kt_convolution": ("XGBoost 7.6-10.6% per GPU", 5.0),
    "kt_convolution_reference": ("kt_convolution's own model, without the other GPUs' recordings", 5.0),
    "neusight_logo": ("NeuSight paper 13.9% (linear), 13.8% (bmm)", 10.0),
    "vidur_lomo": ("XGBoost 4.4-8.8%", 3.0),
    "mlenergy_lomo": ("none", 10.0),
}


# --------------------------------------------------------------------------- loading


def import_tables(root: Path, smoke: bool, scratch: Path) -> tuple[dict[str, pd.DataFrame], dict[str, dict]]:
    """Every dataset through the importers into one temporary store, split into tables by source;
    and each format's import report (rows imported, bad, duplicate, seconds)."""
    sources: list[tuple[str, list[Path]]] = [
        ("uci-sgemm", [root / "uci-sgemm"]),
        ("kernel-tuner", [root / "kernel-tuner" / "gemm", root / "kernel-tuner" / "convolution"]),
        ("neusight", [root / "neusight" / "train" / "linear", root / "neusight" / "train" / "bmm"]),
        ("vidur", [root / "vidur" / "compute"]),
        ("ml-energy", [root / "ml-energy" / "tasks"]),
    ]
    if smoke:  # a few files of each, small ones; UCI as a slice of its CSV in the scratch folder
        uci = scratch / "uci-slice" / "sgemm_product.csv"
        uci.parent.mkdir(parents=True, exist_ok=True)
        pd.read_csv(dataset_path("uci-sgemm", "sgemm_product.csv.gz"), nrows=60_000).sample(
            6_000, random_state=SEED).to_csv(uci, index=False)
        neusight = [root / "neusight" / "train" / "linear" / f"{gpu}.csv.gz"
                    for gpu in ("Tesla_T4", "Tesla_P4", "Tesla_V100-PCIE-32GB")]
        vidur = [root / "vidur" / "compute" / "a100" / "microsoft" / "phi-2" / "mlp.csv.gz",
                 root / "vidur" / "compute" / "a100" / "meta-llama" / "Llama-2-7b-hf" / "mlp.csv.gz",
                 root / "vidur" / "compute" / "a100" / "internlm" / "internlm-20b" / "mlp.csv.gz"]
        sources = [
            ("uci-sgemm", [uci]),
            # Two convolution GPUs: kt_convolution_reference needs another GPU's recording.
            ("kernel-tuner", [root / "kernel-tuner" / "gemm" / "RTX_3090.json.gz",
                              root / "kernel-tuner" / "convolution" / "A4000.json.gz",
                              root / "kernel-tuner" / "convolution" / "A6000.json.gz"]),
            ("neusight", neusight),
            ("vidur", vidur),
            ("ml-energy", [root / "ml-energy" / "tasks"]),
        ]
    for _, paths in sources:  # a wrong PERFPRED_DATASETS: one line naming a missing path, before any import
        for path in paths:
            if path.is_relative_to(root):
                dataset_path(*path.relative_to(root).parts)
    store = MeasurementStore(scratch / "store", create=True)
    reports = {}
    for fmt, paths in sources:
        report = run_import(fmt, [str(p) for p in paths], store)
        reports[fmt] = {"rows_imported": report.rows_imported, "rows_bad": report.rows_bad,
                        "rows_duplicate": report.rows_duplicate, "wall_s": round(report.wall_s, 2)}
    df = store.load(status="ok")
    src = df["source"].astype(str)
    kernel = df["workload.kernel_name"].astype(str) if "workload.kernel_name" in df else pd.Series("", index=df.index)
    tables = {
        "uci": df[src.str.startswith("uci-sgemm")],
        "kt_gemm": df[src.str.startswith("kernel-tuner") & (kernel == "Xgemm")],
        "kt_convolution": df[src.str.startswith("kernel-tuner") & (kernel == "convolution_kernel")],
        "neusight": df[src.str.startswith("neusight")],
        "vidur": df[src.str.startswith("vidur") & (df["kind"] == "gemm")],
        "mlenergy": df[src.str.startswith("ml-energy") & df.get("config.max_num_seqs", pd.Series(
            np.nan, index=df.index)).notna()],
    }
    tables = {name: t.dropna(axis=1, how="all").reset_index(drop=True) for name, t in tables.items()}
    return tables, reports


# --------------------------------------------------------------------------- scoring


def fit_score(model: Any, train: pd.DataFrame, test: pd.DataFrame, target: str = "runtime_ms") -> dict[str, Any]:
    """Fit on train, score on test: the standard report plus timings; predictions kept for pooling."""
    fitted = clone(model)
    t0 = time.perf_counter()
    fitted.fit(train, train[target].to_numpy(float))
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred = np.asarray(fitted.predict(test), dtype=float)
    predict_s = time.perf_counter() - t0
    y = test[target].to_numpy(float)
    return {**regression_report(y, pred), "fit_s": round(fit_s, 2), "predict_s": round(predict_s, 3),
            "n_train": len(train), "_pred": pred, "_true": y}


def public(result: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in result.items() if not k.startswith("_")}


def in_parallel(calls: list[tuple[Callable[..., Any], tuple[Any, ...]]]) -> list[Any]:
    """``fn(*args)`` for each call, in THREADS worker processes, results in order.

    For fits that run on one thread (small tables, where thread hand-over costs more than it
    saves): one process per core keeps both cores busy where a one-thread fit leaves one idle.
    """
    return Parallel(n_jobs=THREADS, backend="loky")(delayed(fn)(*args) for fn, args in calls)


def pooled(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One report over the held-out rows of every fold (each row predicted by the fold that held it out)."""
    y = np.concatenate([r["_true"] for r in results])
    p = np.concatenate([r["_pred"] for r in results])
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in regression_report(y, p).items()}


def cv_runs(candidates: dict[str, Any], train: pd.DataFrame, folds: list[tuple[np.ndarray, np.ndarray]],
            target: str = "runtime_ms") -> dict[str, list[dict[str, Any]]]:
    """Each candidate fitted and scored on ``folds`` of the TRAINING rows: its per-fold results."""
    runs = in_parallel([(fit_score, (model, train.iloc[tr], train.iloc[va], target))
                        for model in candidates.values() for tr, va in folds])
    return {name: runs[i * len(folds):(i + 1) * len(folds)] for i, name in enumerate(candidates)}


def cv_select(candidates: dict[str, Any], train: pd.DataFrame, folds: list[tuple[np.ndarray, np.ndarray]],
              target: str = "runtime_ms") -> tuple[str, dict[str, float]]:
    """The candidate with the lowest pooled MAPE over ``folds`` of the TRAINING rows."""
    scores = {name: pooled(runs)["mape_pct"] for name, runs in cv_runs(candidates, train, folds, target).items()}
    return min(scores, key=scores.get), scores


def blended_runs(member_runs: list[list[dict[str, Any]]], weights: list[float] | None = None) -> list[dict[str, Any]]:
    """Per-fold results of the (weighted) geometric mean of members' fold predictions.

    Exactly the cross-validation of ``BlendRegressor(members, weights, reseed_members=False)``:
    each member is fitted on the same fold rows with its own seed, so no refit is needed.
    """
    w = np.ones(len(member_runs)) if weights is None else np.asarray(weights, dtype=float)
    w = w / w.sum()
    return [{"_true": folds[0]["_true"],
             "_pred": np.exp(sum(wi * np.log(f["_pred"]) for wi, f in zip(w, folds, strict=True)))}
            for folds in zip(*member_runs, strict=True)]


def kfold(n: int, k: int, seed: int = SEED) -> list[tuple[np.ndarray, np.ndarray]]:
    order = np.random.RandomState(seed).permutation(n)
    parts = np.array_split(order, k)
    return [(np.concatenate([p for j, p in enumerate(parts) if j != i]), parts[i]) for i in range(k)]


def group_folds(groups: pd.Series, max_folds: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    values = groups.astype(str).to_numpy()
    names = sorted(set(values))
    if max_folds is not None and len(names) > max_folds:
        names = list(np.random.RandomState(SEED).choice(names, max_folds, replace=False))
    return [(np.flatnonzero(values != g), np.flatnonzero(values == g)) for g in names]


def with_target(name: str, result: dict[str, Any], per_unit: list[float] | None = None) -> dict[str, Any]:
    anchor, target = ANCHORS[name]
    worst = max(per_unit) if per_unit else result["mape_pct"]
    return {"anchor": anchor, "target_mape_pct": target, "met": bool(worst <= target), **result}


def gpperf(ours: Any, table: pd.DataFrame, target: str = "runtime_ms", reuse: dict[str, Any] | None = None,
           kind: str = "gemm", smoke: bool = False) -> dict[str, Any]:
    """GPPerf's protocol: random 80/20 rows; mean and median |pred - true| / true, ours and GPPerf's RF
    (``smoke``: the RF with 20 of its 100 trees)."""
    tr, te = random_split(table, test_size=TEST_SIZE, seed=SEED)
    train, test = table.iloc[tr], table.iloc[te]
    mine = reuse if reuse is not None else fit_score(ours, train, test, target)
    forest = gpperf_random_forest(SEED).set_params(n_jobs=THREADS)
    if smoke:
        forest.set_params(n_estimators=20)
    rf = fit_score(PerformanceModel(kind=kind, regressor=forest, target=target, residual_of=None), train, test, target)
    return {"ours": {"mean_rel_err": round(mine["mape_pct"] / 100, 5), "median_rel_err": round(
                mine["median_ape_pct"] / 100, 5)},
            "gpperf_rf": {"mean_rel_err": round(rf["mape_pct"] / 100, 5),
                          "median_rel_err": round(rf["median_ape_pct"] / 100, 5)}}


# --------------------------------------------------------------------------- recipes


class Budget:
    """Sizes of the recipes: the full run, or a smoke run that only proves the pipeline."""

    def __init__(self, smoke: bool):
        self.smoke = smoke
        self.mlp_epochs_large = 4 if smoke else 40  # UCI: ~190k training rows, ~3 s an epoch
        self.mlp_seeds_large = 1 if smoke else 2
        self.mlp_epochs = 6 if smoke else 60  # x3 for the UCI 2,000-row candidate MLP
        self.cv_folds = 2 if smoke else 4
        self.xgb_rounds = 100 if smoke else 1000


def mlp(epochs: int, batch: int = 256, width: int = 256, seed: int = SEED, threads: int = THREADS) -> TorchMLPRegressor:
    return TorchMLPRegressor(hidden_layer_sizes=(width, width, width), batch_size=batch, max_epochs=epochs,
                             patience=max(epochs, 1), learning_rate=3e-3, random_state=seed, n_threads=threads)


def grid_blend(budget: Budget, epochs: int, batch: int, seeds: int, xgb_weight: float = 0.2,
               threads: int = THREADS, n_jobs: int | None = None) -> BlendRegressor:
    """Hamming-neighbour stacks: a few seeds of a one-hot MLP and one XGBoost, geometric mean.

    Chosen on validation slices of the Kernel Tuner GEMM and UCI training rows (one-hot inputs,
    more seeds and epochs, and a 0.2 XGBoost share each lowered validation MAPE; seeds and
    epochs are capped by the run-time budget). Since Dec 5 only the UCI random split uses it:
    on the Kernel Tuner spaces deep trees did better (``deep_trees``). ``n_jobs``: members fitted
    at once in that many processes, the MLPs on ``threads`` each.
    """
    members: list[tuple[str, Any]] = [
        (f"grid-mlp-{i}", GridNeighbourRegressor(base=mlp(epochs, batch, threads=threads), one_hot=True,
                                                 random_state=SEED + i))
        for i in range(seeds)]
    weights = [(1 - xgb_weight) / len(members)] * len(members)
    if xgb_weight > 0:
        # Last and on every core: it starts when the first MLP is done (beside the other, briefly).
        members.append(("grid-xgb", GridNeighbourRegressor(base=LogTargetXGBRegressor(
            n_estimators=budget.xgb_rounds, max_depth=6, learning_rate=0.05, n_jobs=THREADS), random_state=SEED)))
        weights.append(xgb_weight)
    return BlendRegressor(estimators=members, weights=weights, random_state=SEED, n_jobs=n_jobs)


def all_threads(regressor: Any) -> Any:
    """A copy of ``regressor`` (and of a blend's members) set to use THREADS threads."""
    regressor = clone(regressor)
    if isinstance(regressor, BlendRegressor):
        return regressor.set_params(estimators=[(n, all_threads(e)) for n, e in regressor.estimators])
    params = regressor.get_params(deep=False)
    return regressor.set_params(**{k: THREADS for k in ("n_threads", "n_jobs") if k in params})


def small_data_candidates(budget: Budget) -> dict[str, Any]:
    """Regressors for a few thousand rows of a tuning space (no dense neighbours to lean on).

    One thread each: on tables this small, thread start-up and hand-over cost more than they save
    (the folds run in parallel processes instead).
    """
    rounds = 300 if budget.smoke else 1500
    if budget.smoke:  # the pipeline only: one tree ensemble, one MLP (the GP is added by uci_2000)
        return {"xgb-default": LogTargetXGBRegressor(n_jobs=1), "mlp": mlp(budget.mlp_epochs * 3, batch=64, threads=1)}
    return {
        "xgb-default": LogTargetXGBRegressor(n_jobs=1),
        "xgb-deep": LogTargetXGBRegressor(n_estimators=rounds, max_depth=6, learning_rate=0.02, subsample=0.7,
                                          colsample_bytree=0.6, min_child_weight=1.0, n_jobs=1),
        "hgb": LogTargetHGBRegressor(max_iter=rounds // 5, learning_rate=0.1, max_leaf_nodes=31,
                                     min_samples_leaf=5, n_threads=1),
        "mlp": mlp(budget.mlp_epochs * 3, batch=64, threads=1),
        "forest": LogTargetForestRegressor(n_estimators=100 if budget.smoke else 400, n_jobs=1),
    }


# --------------------------------------------------------------------------- protocols


def uci_random(tables, budget: Budget) -> dict[str, Any]:
    table = tables["uci"]
    tr, te = random_split(table, test_size=TEST_SIZE, seed=SEED)
    # The XGBoost share (0.2, against none) by a validation split of the training rows (80/20,
    # seed 1; benchmarks/README.md): 1.778 against 1.789% MAPE there.
    # The members side by side, one thread each (the MLPs: ~2.9 s an epoch for two at once against
    # 2 x 2.2 s one after the other on two threads; benchmarks/README.md).
    model = PerformanceModel(kind="kernel", regressor=grid_blend(budget, budget.mlp_epochs_large, 1024,
                                                                 budget.mlp_seeds_large, xgb_weight=0.2,
                                                                 threads=1, n_jobs=THREADS))
    result = fit_score(model, table.iloc[tr], table.iloc[te])
    runs = np.stack(table["raw_times_ms"].to_numpy())
    floor = np.mean([np.mean(np.abs(runs[:, i] - np.delete(runs, i, axis=1).mean(axis=1))
                             / np.delete(runs, i, axis=1).mean(axis=1)) for i in range(runs.shape[1])]) * 100
    out = with_target("uci_random", public(result))
    out.update({"model": "grid-neighbour stack of one-hot MLPs (2 seeds, 0.8) and XGBoost (0.2), kernel features",
                "noise_floor_mape_pct": round(float(floor), 3), "rows": len(table),
                "gpperf": gpperf(model, table, reuse=result, kind="kernel", smoke=budget.smoke)})
    return out


def uci_2000(tables, budget: Budget) -> dict[str, Any]:
    table = tables["uci"]
    tr, te = random_split(table, test_size=TEST_SIZE, seed=SEED)
    n_train = 500 if budget.smoke else 2000
    train = table.iloc[np.random.RandomState(SEED).choice(tr, n_train, replace=False)]
    test = table.iloc[te]
    # Each regressor on the kernel features, and on them plus the occupancy on the GTX 680 and
    # the warps' memory access (``kind="kernel-occupancy"``; the access columns took the GP's CV
    # MAPE from 8.03% to 7.46%), and the exact GP on the latter only, with four summed ARD
    # kernels (one kernel: 9.16% 4-fold CV MAPE on these rows at 50 steps, four: 8.03% at 100;
    # fitted in float32, ~22 s a fit at 1,500 rows on one thread, 41 s in float64, the same CV
    # MAPE to 0.01 points); cross-validation on the training rows picks.
    candidates = {f"{name}{suffix}": PerformanceModel(kind=kind, regressor=clone(reg))
                  for name, reg in small_data_candidates(budget).items()
                  for kind, suffix in (("kernel", ""), ("kernel-occupancy", "+occupancy"))}
    candidates["gp4+occupancy"] = PerformanceModel(kind="kernel-occupancy", regressor=TorchGPRegressor(
        n_kernels=4, n_iter=30 if budget.smoke else 100, learning_rate=0.15, n_threads=1, fit_precision="float32"))
    runs = cv_runs(candidates, train, kfold(len(train), budget.cv_folds))
    cv_scores = {name: pooled(r)["mape_pct"] for name, r in runs.items()}
    best = min(cv_scores, key=cv_scores.get)
    # More candidates: the best blended with the next best on the same features (a blend shares
    # one feature matrix), the best's share from 0.5 to 0.9, each scored from the members' own
    # fold predictions (exact: the blend keeps their seeds).
    partner = min((n for n in cv_scores if n != best and candidates[n].kind == candidates[best].kind),
                  key=cv_scores.get)
    blends = {}
    for share in (0.5, 0.6, 0.7, 0.8, 0.9):
        name = f"blend({share:g} {best}, {1 - share:.1g} {partner}) on {candidates[best].kind} features"
        blends[name] = PerformanceModel(kind=candidates[best].kind, regressor=BlendRegressor(
            [(n, clone(candidates[n].regressor)) for n in (best, partner)], weights=[share, 1 - share],
            reseed_members=False))
        cv_scores[name] = pooled(blended_runs([runs[best], runs[partner]], [share, 1 - share]))["mape_pct"]
    chosen_name = min(cv_scores, key=cv_scores.get)
    chosen = blends.get(chosen_name, candidates.get(chosen_name))
    # The final fit runs alone: every core for it (the same fits; the folds ran one thread each).
    result = fit_score(chosen.set_params(regressor=all_threads(chosen.regressor)), train, test)
    out = with_target("uci_2000", public(result))
    out.update({"model": chosen_name, "cv_mape_pct_on_training_rows": {k: round(v, 3) for k, v in cv_scores.items()},
                "test_rows": len(test)})
    return out


def deep_trees(budget: Budget, threads: int = 1) -> BlendRegressor:
    """``deep_tree_blend`` (XGBoost depth 12 + ExtraTrees; the registered "deep-trees") at this budget.

    Chosen for the convolution spaces by 5-fold CV on each GPU's training rows only (mean over
    the four GPUs): this blend 4.39%, ExtraTrees alone 4.49%, XGBoost depth 12 alone 4.81%
    (depth 6: 5.9%; 8: 5.4%), the grid-neighbour blend of one-hot MLPs and XGBoost used before
    11.8% on the W6600.
    """
    return deep_tree_blend(random_state=SEED, n_jobs=threads, xgb_rounds=60 if budget.smoke else 2000,
                           forest_trees=30 if budget.smoke else 300)


def kt_gemm(tables, budget: Budget) -> dict[str, Any]:
    # Deep trees, as for convolution: 3-fold CV on the training rows, RTX 3090 2.11% against the
    # grid-neighbour blend's 2.63%, RTX 2080 Ti 1.64 against 1.86%, in half the fit time.
    return _per_gpu(tables["kt_gemm"], "kt_gemm", budget,
                    lambda: PerformanceModel(kind="kernel", regressor=deep_trees(budget)),
                    "deep trees: XGBoost depth 12 and ExtraTrees, even blend, kernel features", parallel=True)


def kt_convolution(tables, budget: Budget) -> dict[str, Any]:
    return _per_gpu(tables["kt_convolution"], "kt_convolution", budget,
                    lambda: PerformanceModel(kind="kernel", regressor=deep_trees(budget)),
                    "deep trees: XGBoost depth 12 and ExtraTrees, even blend, kernel features", parallel=True)


def kt_convolution_reference(tables, budget: Budget) -> dict[str, Any]:
    """kt_convolution's split and model, plus the OTHER GPUs' recorded times of each config as
    features (``PerformanceModel(reference=...)``): the new-GPU-from-old-recordings use case.

    Not the anchor's protocol (the anchor saw one GPU's rows only), so it is its own row; the
    reference never holds the GPU being scored, so none of its held-out times leak in.
    """
    table = tables["kt_convolution"]
    out = _per_gpu(table, "kt_convolution_reference", budget,
                   lambda gpu: PerformanceModel(kind="kernel", reference=table[table["hardware_id"] != gpu],
                                                regressor=deep_trees(budget)),
                   "kt_convolution's blend + the other 3 GPUs' recorded log times of the same config as features",
                   parallel=True, gpperf_too=False, make_takes_gpu=True)
    out["note"] = ("information the anchor did not have: the full recordings of the other GPUs (one AMD, "
                   "two or three NVIDIA); the held-out GPU's own rows are split 80/20 as in kt_convolution")
    return out


def _per_gpu(table: pd.DataFrame, name: str, budget: Budget, make: Callable[..., Any], label: str,
             parallel: bool, gpperf_too: bool = True, make_takes_gpu: bool = False) -> dict[str, Any]:
    """One fit per GPU on its random 80/20 split; ``parallel``: the GPUs' one-thread fits in parallel processes.

    ``make_takes_gpu``: ``make(gpu)`` builds the model for that GPU (e.g. with the others as reference).
    """
    subs = {}
    for gpu in sorted(table["hardware_id"].unique()):
        sub = table[table["hardware_id"] == gpu].reset_index(drop=True)
        if budget.smoke:
            sub = sub.sample(min(len(sub), 1200), random_state=SEED).reset_index(drop=True)
        subs[gpu] = sub
    calls = []
    for gpu, sub in subs.items():
        tr, te = random_split(sub, test_size=TEST_SIZE, seed=SEED)
        calls.append((fit_score, (make(gpu) if make_takes_gpu else make(), sub.iloc[tr], sub.iloc[te])))
    results = in_parallel(calls) if parallel else [fn(*args) for fn, args in calls]
    per_gpu = {gpu: public(result) for gpu, result in zip(subs, results, strict=True)}
    if gpperf_too:
        for gpu, result in zip(subs, results, strict=True):
            per_gpu[gpu]["gpperf"] = gpperf(make(), subs[gpu], reuse=result, kind="kernel", smoke=budget.smoke)
    mapes = [r["mape_pct"] for r in per_gpu.values()]
    out = with_target(name, {"per_gpu": per_gpu, "mape_pct_range": [round(min(mapes), 3), round(max(mapes), 3)]},
                      mapes)
    out["model"] = label
    return out


def neusight_logo(tables, budget: Budget) -> dict[str, Any]:
    table = tables["neusight"]
    if budget.smoke:
        table = table.groupby("hardware_id", group_keys=False).sample(400, random_state=SEED).reset_index(drop=True)

    def make(kind: str = "gemm-gpu-transfer", threads: int = THREADS) -> PerformanceModel:
        return PerformanceModel(kind=kind, residual_of="log2_wave_roofline_ms", regressor=LogTargetXGBRegressor(
            n_estimators=100 if budget.smoke else 300, max_depth=6, learning_rate=0.1, n_jobs=threads))

    per_gpu, worst = {}, []
    ops = sorted(table["workload.op"].unique())
    gpus = sorted(table["hardware_id"].unique())
    # One held-out GPU per process, one thread each (featurising ~100k rows is single-threaded).
    results = in_parallel([(fit_score, (make(threads=1), table[table["hardware_id"] != gpu],
                                        table[table["hardware_id"] == gpu])) for gpu in gpus])
    for gpu, result in zip(gpus, results, strict=True):
        test = table[table["hardware_id"] == gpu]
        per_op = {}
        for op in ops:
            rows = (test["workload.op"] == op).to_numpy()
            per_op[op] = {k: round(v, 4) if isinstance(v, float) else v
                          for k, v in regression_report(result["_true"][rows], result["_pred"][rows]).items()}
            worst.append(per_op[op]["mape_pct"])
        per_gpu[gpu] = {"per_op": per_op, "fit_s": result["fit_s"], "predict_s": result["predict_s"],
                        "n_train": result["n_train"]}
    out = with_target("neusight_logo", {"per_held_out_gpu": per_gpu}, worst)
    out.update({"model": "XGBoost on GPU-GEMM transfer features (waves, tiles, times from the spec sheet; no "
                         "feature that names the GPU), residual over the wave roofline",
                "note": "inputs are shapes and spec sheets only; the cuBLAS kernel and launch shape the held-out "
                        "GPU picked are never features",
                # A random row split sees every GPU, so there the features that name the GPU help.
                "gpperf": gpperf(make("gemm-gpu"), table, kind="gemm-gpu", smoke=budget.smoke)})
    return out


# How the depth was chosen (scratch run, Dec 5): in every leave-one-model-out fold, grouped 3-fold
# CV over the 7 training models (MAPE %, depth 6 -> depth 10); never the held-out model's rows.
VIDUR_DEPTH_CV = {"protocol": "per outer fold: 3 groups of the training models, each held out once",
                  "cv_mape_pct_depth6_vs_depth10": {
                      "Qwen/Qwen-72B": [4.497, 4.428], "codellama/CodeLlama-34b-Instruct-hf": [4.827, 4.684],
                      "internlm/internlm-20b": [3.722, 3.693], "meta-llama/Llama-2-70b-hf": [4.944, 4.883],
                      "meta-llama/Llama-2-7b-hf": [4.543, 4.497], "meta-llama/Meta-Llama-3-70B": [4.736, 4.634],
                      "meta-llama/Meta-Llama-3-8B": [4.622, 4.578], "microsoft/phi-2": [4.225, 4.173]}}


def vidur_lomo(tables, budget: Budget) -> dict[str, Any]:
    table = tables["vidur"]
    if budget.smoke:
        table = table.sample(min(len(table), 1000), random_state=SEED).reset_index(drop=True)

    def make(threads: int = THREADS) -> PerformanceModel:
        # reuse_measured: a shape another model's profile holds is its measured time (same GEMM).
        # Depth 10 over 6: grouped 3-fold CV over the training models preferred it in all 8 folds.
        return PerformanceModel(kind="gemm-gpu", residual_of="log2_wave_roofline_ms", reuse_measured=True,
                                regressor=LogTargetXGBRegressor(n_estimators=100 if budget.smoke else 800, max_depth=10,
                                                                learning_rate=0.05, subsample=0.8, colsample_bytree=0.8,
                                                                n_jobs=threads))

    names = sorted(table["workload.model"].unique())
    held_out = [(table["workload.model"] == name).to_numpy() for name in names]
    # One-thread fits, one held-out model per process: the feature building between the trees is
    # single-threaded, so two processes keep both cores busier than one two-thread fit.
    results = in_parallel([(fit_score, (make(threads=1), table[~held], table[held])) for held in held_out])
    per_model = {name: public(result) for name, result in zip(names, results, strict=True)}
    mapes = [r["mape_pct"] for r in per_model.values()]
    out = with_target("vidur_lomo", {"pooled": pooled(results), "per_held_out_model": per_model,
                                     "mape_pct_range": [round(min(mapes), 3), round(max(mapes), 3)]}, mapes)
    out.update({"model": "XGBoost (depth 10) on GPU-GEMM features, residual over the wave roofline (A100 + A40 "
                         "rows); a shape the training rows hold (same GPU and features) takes its measured median",
                "model_choice": VIDUR_DEPTH_CV,
                "gpperf": gpperf(make(), table, kind="gemm-gpu", smoke=budget.smoke)})
    return out


# Each target's analytic offset, as a model learning it directly uses it.
MLENERGY_TARGETS = {"power_w": "log2_num_gpus", "metric.energy_per_token_j": "log2_decode_gpu_seconds_per_token",
                    "metric.itl_p50_ms": "log2_decode_step_ms"}
# Predicted as ServingPredictor predicts it: power / (max_num_seqs x tokens per sequence per step
# / ITL p50), from the power, ITL and tokens-per-step models (the direct model is reported beside).
MLENERGY_COMPOSED = ("metric.energy_per_token_j",)


def composed_fit_score(regressor: Any, train: pd.DataFrame, test: pd.DataFrame, metric: str) -> dict[str, Any]:
    """``fit_score`` for a metric ServingPredictor composes from the models of its parts."""
    t0 = time.perf_counter()
    predictor = ServingPredictor([metric], regressor, cv_folds=0).fit(train)
    fit_s = time.perf_counter() - t0
    pred = predictor.predict(test)[metric].to_numpy(dtype=float)
    y = test[metric].to_numpy(float)
    return {**regression_report(y, pred), "fit_s": round(fit_s, 2), "n_train": len(train), "_pred": pred, "_true": y}


def architecture_of(table: pd.DataFrame) -> pd.Series:
    """A model's architecture as the data can tell it: organisation, total and active parameters
    (Qwen3-235B-A22B Instruct, Thinking, VL and their FP8 copies are one; so are Llama 3.1 and
    3.3 70B)."""
    return (table["workload.model"].str.split("/").str[0] + ":" + table["workload.total_params_b"].astype(str)
            + "/" + table["workload.activated_params_b"].astype(str))


def architecture_out(table: pd.DataFrame, names: list[str], reg: Any) -> dict[str, Any]:
    """Not a target: leave one model out with its siblings of the same architecture (other
    checkpoints, FP8 copies, VL variants) out of training too. Leave-one-model-out keeps them in,
    and the features see a model only through its sizes and layout, so a sibling is nearly the
    same rows: this is the error for a model of an architecture never measured."""
    arch = architecture_of(table)
    models = table["workload.model"]
    held = [(models == m).to_numpy() for m in names]
    out_of_training = [arch.isin(arch[h].unique()).to_numpy() | h for h in held]
    targets = {}
    for target, offset in MLENERGY_TARGETS.items():
        model = PerformanceModel(kind="serving-attention", regressor=reg, target=target, residual_of=offset)
        fit, first = (composed_fit_score, reg) if target in MLENERGY_COMPOSED else (fit_score, model)
        results = in_parallel([(fit, (first, table[~out], table[h], target))
                               for h, out in zip(held, out_of_training, strict=True)])
        targets[target] = pooled(results)["mape_pct"]
    with_siblings = sorted(m for m, h, out in zip(names, held, out_of_training, strict=True) if (out & ~h).any())
    return {"grouping": "organisation + total + active parameters (workload.model's prefix, "
                        "workload.total_params_b, workload.activated_params_b)",
            "mape_pct": targets, "models_with_siblings": len(with_siblings),
            "architectures": int(arch[np.isin(models, names)].nunique())}


def mlenergy_lomo(tables, budget: Budget) -> dict[str, Any]:
    table = tables["mlenergy"]
    models = table["workload.model"]
    # Blended rather than chosen per fold: a nested leave-one-model-out selection costs
    # (29 models)^2 fits per target; the blend of two unlike learners is as good as the better.
    reg = BlendRegressor([
        ("xgb", LogTargetXGBRegressor(n_estimators=100 if budget.smoke else 300, max_depth=3, learning_rate=0.05,
                                      n_jobs=1)),
        ("forest", LogTargetForestRegressor(n_estimators=30 if budget.smoke else 300, min_samples_leaf=2,
                                            n_jobs=1))])
    names = sorted(models.unique())[:2] if budget.smoke else sorted(models.unique())
    held = [(models == model_name).to_numpy() for model_name in names]

    def lomo(target: str, offset: str | None) -> list[dict[str, Any]]:
        model = PerformanceModel(kind="serving-attention", regressor=reg, target=target, residual_of=offset)
        return in_parallel([(fit_score, (model, table[~h], table[h], target)) for h in held])

    out_targets: dict[str, Any] = {}
    p50_results: list[dict[str, Any]] = []
    for target, offset in MLENERGY_TARGETS.items():
        held_results = lomo(target, offset)
        p50_results = held_results if target == "metric.itl_p50_ms" else p50_results
        how: dict[str, Any] = {"offset": offset}
        if target in MLENERGY_COMPOSED:
            how = {"composed_as": "power_w / (max_num_seqs x tokens per sequence per step / ITL p50)",
                   "direct_over_offset_not_used": {"offset": offset, "pooled": pooled(held_results)}}
            held_results = in_parallel([(composed_fit_score, (reg, table[~h], table[h], target)) for h in held])
        out_targets[target] = {"pooled": pooled(held_results), **how,
                               "mape_pct_per_held_out_model": {m: round(r["mape_pct"], 3)
                                                               for m, r in zip(names, held_results, strict=True)},
                               "fit_s": round(sum(r["fit_s"] for r in held_results), 2)}
    worst = [v["pooled"]["mape_pct"] for v in out_targets.values()]
    out = with_target("mlenergy_lomo", {"targets": out_targets}, worst)
    out["leave_one_architecture_out"] = architecture_out(table, names, reg)
    # Not a target: the ITL p99 the serving tuner constrains, learned directly and as the p50
    # model's prediction times a learned p99 / p50 (what ServingPredictor does).
    table = table.assign(tail_ratio_p99=table["metric.itl_p99_ms"] / table["metric.itl_p50_ms"])
    direct = lomo("metric.itl_p99_ms", "log2_decode_step_ms")
    ratio = lomo("tail_ratio_p99", None)
    via_ratio = [{"_pred": p50["_pred"] * r["_pred"], "_true": d["_true"]}
                 for p50, r, d in zip(p50_results, ratio, direct, strict=True)]
    out["itl_p99_ms_not_a_target"] = {"direct_over_roofline": pooled(direct), "p50_times_tail_ratio": pooled(via_ratio)}
    # GPPerf's random row split, all three targets from one MultiTargetModel.
    tr, te = random_split(table, test_size=TEST_SIZE, seed=SEED)
    multi = MultiTargetModel(kind="serving-attention", targets=tuple(MLENERGY_TARGETS), regressor=reg,
                             residual_of=MLENERGY_TARGETS).fit(table.iloc[tr])
    pred = multi.predict(table.iloc[te])
    random_rows = {}
    for target in MLENERGY_TARGETS:
        rel = np.abs(pred[target].to_numpy() - table.iloc[te][target].to_numpy(float)) / table.iloc[te][
            target].to_numpy(float)
        random_rows[target] = {"mean_rel_err": round(float(rel.mean()), 5), "median_rel_err": round(float(
            np.median(rel)), 5)}
    out.update({"model": "per target: blend of XGBoost and ExtraTrees on log target over serving features with "
                         "the decode step (weight reads plus matmuls, per-layer time and, under expert "
                         "parallelism, per-MoE-layer time), its KV-cache reads and the batch's matmul time at peak "
                         "over it, residual over the target's analytic offset; energy per token as power / "
                         "throughput (ServingPredictor)",
                "rows": len(table),
                "models": int(models.nunique()), "gpperf": {"ours_multi_target": random_rows}})
    return out


INTERVAL_COVERAGES = (0.5, 0.8, 0.9)


def _band_scores(model: PerformanceModel, train: pd.DataFrame, test: pd.DataFrame) -> dict[str, Any]:
    """Fit on train; each nominal coverage's band on the test rows (kept for pooling)."""
    fitted = clone(model).fit(train)
    bands = {c: fitted.predict_interval(test, coverage=c) for c in INTERVAL_COVERAGES}
    return {"_true": test["runtime_ms"].to_numpy(float), "_bands": bands}


def _coverage_report(parts: list[dict[str, Any]]) -> dict[str, Any]:
    y = np.concatenate([p["_true"] for p in parts])
    out = {}
    for c in INTERVAL_COVERAGES:
        lo = np.concatenate([p["_bands"][c]["lower"].to_numpy() for p in parts])
        hi = np.concatenate([p["_bands"][c]["upper"].to_numpy() for p in parts])
        out[f"{c:.0%}"] = {k: round(v, 4) if isinstance(v, float) else v for k, v in
                           interval_coverage(y, lo, hi).items()}
    return out


def intervals(tables, budget: Budget) -> dict[str, Any]:
    """Measured coverage of the predictive intervals ("xgb-quantile": quantile XGBoost with a
    conformal correction) on held-out rows. Calibrated on a random slice of the training rows,
    and, where the held-out rows are a new model or GPU, also across the training models/GPUs
    (``calibration_groups``: each scored by a fit that never saw it)."""
    def model(kind: str, residual_of: str, groups: str | None = None, trees: int = 200,
              threads: int = THREADS) -> PerformanceModel:
        return PerformanceModel(kind=kind, residual_of=residual_of, calibration_groups=groups,
                                regressor=QuantileXGBRegressor(n_estimators=25 if budget.smoke else trees,
                                                               learning_rate=0.1, n_jobs=threads,
                                                               max_calibration_groups=3))

    out: dict[str, Any] = {}
    calls = []  # one GPU per process, one thread each
    for gpu in sorted(tables["kt_gemm"]["hardware_id"].unique()):
        sub = tables["kt_gemm"][tables["kt_gemm"]["hardware_id"] == gpu].reset_index(drop=True)
        if budget.smoke:
            sub = sub.sample(min(len(sub), 2000), random_state=SEED).reset_index(drop=True)
        tr, te = random_split(sub, test_size=TEST_SIZE, seed=SEED)
        calls.append((_band_scores, (model("kernel", "log2_roofline_ms", threads=1), sub.iloc[tr], sub.iloc[te])))
    out["kt_gemm_random_80_20"] = _coverage_report(in_parallel(calls))
    # 5k training rows and 100 trees per fold keep this short: coverage, not accuracy, is
    # measured here, and group calibration costs one extra fit per calibration group.
    for name, table, column, kind in (
            ("vidur_leave_one_model_out", tables["vidur"], "workload.model", "gemm-gpu"),
            ("neusight_leave_one_gpu_out", tables["neusight"], "hardware_id", "gemm-gpu-transfer")):
        if budget.smoke:
            table = table.groupby(column, group_keys=False).sample(300, random_state=SEED).reset_index(drop=True)
        calls = []  # one-thread fits of 5k rows, in parallel processes
        for held_out in sorted(table[column].unique()):
            held = (table[column] == held_out).to_numpy()
            train = table[~held].sample(min(int((~held).sum()), 5_000), random_state=SEED)
            for groups in (None, column):
                calls.append((_band_scores, (model(kind, "log2_wave_roofline_ms", groups, trees=100, threads=1),
                                             train, table[held])))
        bands = in_parallel(calls)
        out[name] = _coverage_report(bands[0::2])
        out[f"{name}, calibrated across {column}"] = _coverage_report(bands[1::2])
    return {"model": "xgb-quantile (levels 0.05..0.95; CQR on 20% of the training rows, or cross-conformal "
                     "over up to 3 training groups)",
            "coverage": out,
            "note": "coverage is the share of held-out rows inside the band; a random split is exchangeable, so "
                    "conformal bands hold their nominal coverage there; a held-out model/GPU is a shift that "
                    "row-level calibration does not see, and group calibration measures it on the training "
                    "groups"}


PROTOCOLS: dict[str, Callable[[dict[str, pd.DataFrame], Budget], dict[str, Any]]] = {
    "uci_random": uci_random,
    "uci_2000": uci_2000,
    "kt_gemm": kt_gemm,
    "kt_convolution": kt_convolution,
    "kt_convolution_reference": kt_convolution_reference,
    "neusight_logo": neusight_logo,
    "vidur_lomo": vidur_lomo,
    "mlenergy_lomo": mlenergy_lomo,
    "intervals": intervals,
}


def summary_table(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, res in results.items():
        if "error" in res:
            rows.append({"protocol": name, "error": res["error"]})
            continue
        if "coverage" in res:  # intervals: no MAPE target, the measured coverage per nominal level
            rows.append({"protocol": name, "coverage": {case: {level: v["coverage"] for level, v in levels.items()}
                                                        for case, levels in res["coverage"].items()}})
            continue
        if "per_gpu" in res:
            ours = res["mape_pct_range"]
        elif "per_held_out_gpu" in res:
            ours = {gpu: {op: v["mape_pct"] for op, v in r["per_op"].items()} for gpu, r in res[
                "per_held_out_gpu"].items()}
        elif "targets" in res:
            ours = {t: v["pooled"]["mape_pct"] for t, v in res["targets"].items()}
        elif "pooled" in res:
            ours = {"pooled": res["pooled"]["mape_pct"], "per_model_range": res["mape_pct_range"]}
        else:
            ours = res["mape_pct"]
        rows.append({"protocol": name, "ours_mape_pct": ours, "anchor": res["anchor"],
                     "target_mape_pct": res["target_mape_pct"], "met": res["met"]})
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="small slices of every dataset (under a minute)")
    parser.add_argument("--only", default="", help="comma-separated protocols (default: all)")
    parser.add_argument("--output", default="", help="write the JSON here instead of benchmarks/results/")
    args = parser.parse_args(argv)
    chosen = [p for p in args.only.split(",") if p] or list(PROTOCOLS)
    unknown = sorted(set(chosen) - set(PROTOCOLS))
    if unknown:
        parser.error(f"unknown protocol(s) {unknown}; known: {', '.join(PROTOCOLS)}")
    budget = Budget(args.smoke)
    start = time.perf_counter()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="perfpred-accuracy-") as scratch:
        t0 = time.perf_counter()
        tables, imports = import_tables(datasets_dir(), args.smoke, Path(scratch))
        import_s = time.perf_counter() - t0
        for name in chosen:
            t0 = time.perf_counter()
            results[name] = PROTOCOLS[name](tables, budget)
            results[name]["wall_s"] = round(time.perf_counter() - t0, 1)
            print(f"{name}: {json.dumps(summary_table({name: results[name]})[0])} ({results[name]['wall_s']} s)",
                  flush=True)
    wall_s = round(time.perf_counter() - start, 1)
    name = "accuracy_smoke" if args.smoke else "accuracy"
    previous = RESULTS_DIR / f"{name}.json"
    if args.only and not args.output and previous.exists():
        # A partial re-run updates its protocols in the full result and keeps the others.
        old = json.loads(previous.read_text())
        results = {**{k: v for k, v in old["protocols"].items() if k in PROTOCOLS}, **results}
        results = {k: results[k] for k in PROTOCOLS if k in results}
    payload = {"smoke": args.smoke, "seed": SEED, "threads": THREADS, "machine": platform.machine(),
               "cpu_count": os.cpu_count(), "import_s": round(import_s, 1), "imports": imports,
               "summary": summary_table(results), "protocols": results,
               "wall_s": wall_s,
               "wall_s_all_protocols": round(import_s + sum(r.get("wall_s", 0.0) for r in results.values()), 1),
               "rerun": chosen if args.only else "all"}
    if args.output:
        path = Path(args.output)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"benchmark": "accuracy", "python": platform.python_version(), **payload},
                                   indent=2, default=float) + "\n")
    else:
        path = write_result(name, payload)
    print(f"wrote {path} in {payload['wall_s']} s", flush=True)
    return payload


if __name__ == "__main__":
    from _common import run

    run(main)
