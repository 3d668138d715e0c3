"""Markdown tables of the benchmark results, for the README.

    python benchmarks/summarize.py            # prints the tables of every results/*.json present
"""

from __future__ import annotations

import argparse
import json

from _common import RESULTS_DIR


def _load(name: str) -> dict | None:
    path = RESULTS_DIR / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def cpu_gemm() -> str:
    d = _load("cpu_gemm")
    if not d:
        return ""
    lines = [f"CPU GEMM, {d['store_rows']} configs (sizes {d['size_range'][0]}..{d['size_range'][1]}, "
             f"{'/'.join(d['dtypes'])}, {d['threads']} thread), mean over seeds {d['seeds']}:", "",
             "| split | model | MAPE % | median APE % | p90 APE % | R² log | Spearman |",
             "|---|---|---|---|---|---|---|"]
    for split, models in d["splits"].items():
        for name, r in models.items():
            m = r["mean"]
            lines.append(f"| {split} | {name} | {m['mape_pct']:.2f} | {m['median_ape_pct']:.2f} "
                         f"| {m['p90_ape_pct']:.1f} | {m['r2_log']:.4f} | {m['spearman_rho']:.4f} |")
    t, n = d["targets"], d["noise"]
    lines += ["", f"Targets: XGBoost MAPE on unseen shapes {t['xgb_shape_mape_pct']:.2f}% (target <= "
              f"{t['xgb_shape_mape_target_pct']}%: {'met' if t['xgb_shape_mape_met'] else 'MISSED'}), RF / XGBoost "
              f"= {t['rf_over_xgb_mape_ratio']:.1f}x (target >= {t['rf_over_xgb_target']}x: "
              f"{'met' if t['rf_over_xgb_met'] else 'MISSED'}). Measurement noise: median cv {n['median_cv']:.3f}, "
              f"p90 cv {n['p90_cv']:.3f}, reference-GEMM drift p90 {n['reference_gemm_drift_p90_pct']:.1f}%."]
    if "xgb_shape_mape_worst_seed_pct" in t:
        lines[-1] += f" Worst seed: {t['xgb_shape_mape_worst_seed_pct']:.2f}%."
    if d.get("zoo_shape_mape_pct"):
        lines[-1] += " Other models of the zoo on unseen shapes: " + ", ".join(
            f"{k} {v:.2f}%" for k, v in d["zoo_shape_mape_pct"].items()) + "."
    ablation = d.get("measurement_ablation")
    if ablation:
        lines += ["", "Measurement design against XGBoost MAPE on unseen shapes (same model, same splits):", "",
                  "| store | pinned | visits | stored label | median of quiet visits (mean kept) "
                  "| median of all visits | one visit (each) |",
                  "|---|---|---|---|---|---|---|"]
        for name, r in ablation.items():
            single = ", ".join(f"{v:.2f}" for v in r.get("single_visit_mape_pct", [])) or "-"
            plain = r.get("median_of_all_visits_mape_pct")
            quiet = r.get("quiet_visits_mape_pct")
            kept = f" ({r['mean_quiet_visits']:.1f})" if r.get("mean_quiet_visits") else ""
            lines.append(f"| {name} | {'yes' if r['pinned'] else 'no'} | {r['visits']} "
                         f"| {r['stored_label_mape_pct']:.2f} | {'-' if quiet is None else f'{quiet:.2f}'}{kept} "
                         f"| {'-' if plain is None else f'{plain:.2f}'} | {single} |")
    return "\n".join(lines)


def timer_agreement() -> str:
    d = _load("timer_agreement")
    if not d:
        return ""
    lines = ["| M x N x K | perfpred median (ms) | torch blocked_autorange (ms) | ratio |", "|---|---|---|---|"]
    for r in d["shapes"]:
        ours = sorted(r["perfpred_median_ms"])[len(r["perfpred_median_ms"]) // 2]
        theirs = sorted(r["torch_blocked_autorange_median_ms"])[len(r["torch_blocked_autorange_median_ms"]) // 2]
        lines.append(f"| {r['m']}x{r['n']}x{r['k']} | {ours:.4g} | {theirs:.4g} | {r['ratio_median']:.3f} |")
    lines.append(f"\nMedian |ratio - 1| = {d['median_abs_deviation_pct']:.1f}%, max {d['max_abs_deviation_pct']:.1f}%.")
    return "\n".join(lines)


def open_space() -> str:
    d = _load("open_space")
    if not d:
        return ""
    budgets = d["budgets"]
    lines = ["| landscape | strategy | " + " | ".join(f"best/opt @{b}" for b in budgets) + " | s/run |",
             "|---|---|" + "---|" * (len(budgets) + 1)]
    for name, landscape in d["landscapes"].items():
        for strategy, row in landscape["strategies"].items():
            cells = " | ".join(f"{row[f'best_over_optimum_at_{b}']:.3f}" for b in budgets)
            lines.append(f"| {name} | {strategy} | {cells} | {row['s_per_run']:.2f} |")
    lines.append(f"\n{d['seeds']} seeds each; best found / optimum after each number of evaluations.")
    return "\n".join(lines)


def _strategy_row(name: str, agg: dict, budgets: tuple[int, ...]) -> str:
    """One strategy's mean P, best/optimum at each budget and seconds per run, as a table row."""
    cells = [f"{agg[f'mean_best_over_opt@{b}']:.3f}" if f"mean_best_over_opt@{b}" in agg else "-" for b in budgets]
    return (f"| {name} | {agg.get('mean_P', float('nan')):.3f} | " + " | ".join(cells)
            + f" | {agg['mean_wall_s_per_run']:.1f} |")


def _seeded_tables(d: dict, output: str, title: str, names: list[str], at: int, head: str,
                   budgets: tuple[int, ...]) -> list[str]:
    """A many-seed tuning run: its strategy table, then P and best/opt at ``at`` per space."""
    # A file written by --rerun holds other runs too: name the command that ran this time.
    if "rerun" in d:
        command = f"--rerun {','.join(d['rerun'])} --seeds {d['seeds']} --output {output}"
    elif "extended" in d:  # extended in several sittings: one --extend of every strategy gives the same runs
        every = d.get("seeds_per_strategy") or d["extended"]
        command = f"--extend --seeds {d['seeds']} --strategies {','.join(every)} --output {output}"
    else:
        command = f"--seeds {d['seeds']} --strategies {','.join(d['strategies'])} --output {output}"
    lines = ["", f"{title}, {d['seeds']} seeds (`{command}`):", "", head, "|" + "---|" * (len(budgets) + 3)]
    lines += [_strategy_row(name, agg, budgets) for name, agg in
              sorted(d["strategies"].items(), key=lambda kv: -kv[1].get("mean_P", -9))]
    lines += ["", "| space | " + " | ".join(f"{n} P | {n} @{at}" for n in names) + " |",
              "|---|" + "---|" * (2 * len(names))]
    for space, v in d["spaces"].items():
        cells = [f"{v['strategies'][n]['P']:.3f} | {v['strategies'][n][f'best_over_opt@{at}']:.3f}"
                 if n in v["strategies"] else "- | -" for n in names]
        lines.append(f"| {space} | " + " | ".join(cells) + " |")
    return lines


def tuning() -> str:
    d = _load("tuning")
    if not d:
        return ""
    budgets = (8, 16, 32, 64, 128)
    head = "| strategy | mean P | " + " | ".join(f"best/opt @{b}" for b in budgets) + " | s/run |"
    lines = [f"{d['spaces_done']} of {d['spaces_total']} spaces, {d['seeds']} seeds each, budget {d['budget']}:", "",
             head, "|" + "---|" * (len(budgets) + 3)]
    for name, agg in sorted(d["strategies"].items(), key=lambda kv: -kv[1].get("mean_P", -9)):
        lines.append(_strategy_row(name, agg, budgets))
    lines += ["", "| space | configs | transfer @16 | cold @32 | random @32 | TPE @32 | best KT @32 |",
              "|---|---|---|---|---|---|---|"]
    for space, v in d["spaces"].items():
        s = v["strategies"]

        def at(name, b, s=s):
            return f"{s[name][f'best_over_opt@{b}']:.3f}" if name in s and f"best_over_opt@{b}" in s[name] else "-"

        kt = [s[k]["best_over_opt@32"] for k in s if k.startswith("kt-") and "best_over_opt@32" in s[k]]
        lines.append(f"| {space} | {v['n_configs']} | {at('perfpred-transfer', 16)} | {at('perfpred-cold', 32)} | "
                     f"{at('random', 32)} | {at('optuna-tpe', 32)} | {min(kt):.3f} |" if kt else
                     f"| {space} | {v['n_configs']} | {at('perfpred-transfer', 16)} | {at('perfpred-cold', 32)} | "
                     f"{at('random', 32)} | {at('optuna-tpe', 32)} | - |")
    extra = _load("tuning_autotvm")
    if extra:
        lines += ["", f"Added later on the same spaces and seeds ({extra['seeds']}), P against the same executed "
                  "random search (`--strategies random,autotvm --output tuning_autotvm`):", "", head,
                  "|" + "---|" * (len(budgets) + 3)]
        lines += [_strategy_row(name, agg, budgets) for name, agg in extra["strategies"].items() if name != "random"]
    cal = _load("tuning_calibration")
    if cal:
        lines += ["", "Calibration picks (default since 2026-12-02; the tables above were recorded without "
                  f"them), same spaces, {cal['seeds']} seeds (`--strategies "
                  "perfpred-transfer,perfpred-transfer-nocal,random --output tuning_calibration`):", "", head,
                  "|" + "---|" * (len(budgets) + 3)]
        lines += [_strategy_row(name, agg, budgets) for name, agg in cal["strategies"].items()]
        names = ("perfpred-transfer", "perfpred-transfer-nocal")
        lines += ["", "| space | " + " | ".join(f"{n} @8 | {n} @16" for n in names) + " |",
                  "|---|" + "---|" * (2 * len(names))]
        for space, v in cal["spaces"].items():
            cells = [f"{v['strategies'][n][f'best_over_opt@{b}']:.3f}" for n in names for b in (8, 16)]
            lines.append(f"| {space} | " + " | ".join(cells) + " |")
    local = _load("tuning_local")
    if local:
        names = [n for n in ("perfpred-transfer", "perfpred-transfer-nolocal", "perfpred-cold")
                 if n in local["strategies"]]
        lines += _seeded_tables(local, "tuning_local", "Local picks from the incumbents that beat the prior most "
                                "(default since 2026-12-02)", names, 16, head, budgets)
    for output, title in (("tuning_20seeds", "Current defaults, {spaces_done} of {spaces_total} spaces"),
                          ("tuning_50seeds", "tuning_20seeds' runs extended to more seeds (seeds 0-19 are the same "
                                             "runs, every run is seeded)")):
        many = _load(output)
        if many:  # every strategy but the baseline, best mean P first
            ranked = [n for n, _ in sorted(many["strategies"].items(), key=lambda kv: -kv[1].get("mean_P", -9))
                      if n != "random"]
            lines += _seeded_tables(many, output, title.format(**many), ranked, 32, head, budgets)
    features = _load("tuning_features")
    if features:
        lines += _seeded_tables(features, "tuning_features", "The surrogate also on the derived kernel quantities "
                                "(`-derived`, `perfpred tune --features derived`) against the default (raw "
                                "parameters); the other rows are tuning_20seeds' runs",
                                ["perfpred-transfer-derived", "perfpred-transfer", "perfpred-cold-derived",
                                 "perfpred-cold"], 32, head, budgets)
    ceiling = _load("tuning_ceiling")
    if ceiling:
        tuned = (local or cal or d)["spaces"]
        lines += ["", "Transfer ceiling: each space ranked by the source GPUs' own measured runtimes "
                  "(`--ceiling` -> `tuning_ceiling.json`) vs perfpred-transfer as tuned:", "",
                  "| space | configs within 2% | first within 2% at rank | Spearman rho | ceiling @8 | ceiling @16 "
                  "| perfpred-transfer @16 |", "|---|---|---|---|---|---|---|"]
        for space, c in ceiling["spaces"].items():
            ours = tuned.get(space, {}).get("strategies", {}).get("perfpred-transfer", {}).get("best_over_opt@16")
            lines.append(f"| {space} | {c['configs_within_2pct']} | {c['first_within_2pct_rank']} | "
                         f"{c['spearman_rho']:.2f} | {c['best_over_opt@8']:.3f} | {c['best_over_opt@16']:.3f} | "
                         + (f"{ours:.3f} |" if ours is not None else "- |"))
    return "\n".join(lines)


def _ours(res: dict) -> str:
    """perfpred's MAPE for one accuracy protocol, as the protocol reports it (per unit where it has units)."""
    if "per_gpu" in res:
        return ", ".join(f"{gpu.removeprefix('gpu-')}: {r['mape_pct']:.2f}" for gpu, r in res["per_gpu"].items())
    if "per_held_out_gpu" in res:
        ops = "/".join(next(iter(res["per_held_out_gpu"].values()))["per_op"])
        per_gpu = res["per_held_out_gpu"].items()
        return "; ".join(f"{gpu.removeprefix('gpu-')}: "
                         + "/".join(f"{v['mape_pct']:.1f}" for v in r["per_op"].values())
                         for gpu, r in per_gpu) + f" ({ops})"
    if "targets" in res:
        return ", ".join(f"{t.removeprefix('metric.')}: {v['pooled']['mape_pct']:.2f}"
                         for t, v in res["targets"].items())
    if "per_held_out_model" in res:
        lo, hi = res["mape_pct_range"]
        return f"pooled {res['pooled']['mape_pct']:.2f} (per model {lo:.2f}..{hi:.2f})"
    return f"{res['mape_pct']:.2f}"


def accuracy() -> str:
    d = _load("accuracy")
    if not d:
        return ""
    protocols = {k: v for k, v in d["protocols"].items() if "anchor" in v}
    lines = ["| dataset / protocol | anchor | target MAPE % | perfpred MAPE % | met | model | wall s |",
             "|---|---|---|---|---|---|---|"]
    for name, res in protocols.items():
        lines.append(f"| {name} | {res['anchor']} | <= {res['target_mape_pct']} | {_ours(res)} | "
                     f"{'yes' if res['met'] else '**no**'} | {res['model']} | {res['wall_s']:.0f} |")
    lines += ["", "GPPerf's own protocol (random 80/20 rows; mean / median |pred - true| / true):", "",
              "| dataset | perfpred mean | perfpred median | GPPerf RF mean | GPPerf RF median |",
              "|---|---|---|---|---|"]
    for name, res in protocols.items():
        units = res["per_gpu"].items() if "per_gpu" in res else [("", res)]
        for unit, r in units:
            g = r.get("gpperf") or {}
            if "ours" not in g:
                continue
            label = f"{name} {unit.removeprefix('gpu-')}".strip()
            lines.append(f"| {label} | {g['ours']['mean_rel_err']:.2%} | {g['ours']['median_rel_err']:.2%} | "
                         f"{g['gpperf_rf']['mean_rel_err']:.2%} | {g['gpperf_rf']['median_rel_err']:.2%} |")
    cov = d["protocols"].get("intervals")
    if cov:
        levels = list(next(iter(cov["coverage"].values())))
        lines += ["", f"Predictive intervals ({cov['model']}): share of held-out rows inside the band:", "",
                  "| held-out rows | " + " | ".join(f"{lv} band" for lv in levels) + " | median upper/lower (90%) |",
                  "|---|" + "---|" * (len(levels) + 1)]
        for case, v in cov["coverage"].items():
            lines.append(f"| {case} | " + " | ".join(f"{v[lv]['coverage']:.1%}" for lv in levels)
                         + f" | {v['90%']['median_width_ratio']:.2f} |")
    lines.append(f"\nWall time {d.get('wall_s_all_protocols', d['wall_s']):.0f} s on {d['cpu_count']} cores "
                 f"(import {d['import_s']:.0f} s).")
    return "\n".join(lines)


def serving(name: str = "serving") -> str:
    d = _load(name)
    if not d:
        return ""
    prior = f" Every perfpred search starts from a prior learned from {', '.join(d['prior_stores'])}." \
        if d.get("prior_stores") else ""
    lines = [f"{d['engine']} on this CPU, goal: {d['goal']}; SLO {d['slo']}; {d['live_vs_replayed']}.{prior}", "",
             "| model | grid configs x launches | grid best (tok/s) | perfpred launches | perfpred best / grid best "
             "(seeds) | random, same launches | tight SLO: perfpred (live seed 0) / random | "
             "launch-to-launch cv tok/s; TPOT p50 | "
             "predictor MAPE TPOT p50 / throughput (first pass alone) |", "|---|---|---|---|---|---|---|---|---|"]
    for m in d["models"]:
        p, r, t, pr = m["perfpred"], m["random"], m["tight_slo_replayed"], m["predictor"]
        seeds = ", ".join(f"{x:.2f}" for x in p["ratio_to_grid_best_per_seed"])
        launches = m.get("grid_launches_per_config", 1)
        if m.get("launch_noise"):  # every config's cv over its launches: median (p90)
            cv = m["launch_noise"]
            noise = "; ".join(f"{cv[k]['median']:.1%} ({cv[k]['p90']:.1%})" for k in
                              ("cv_output_tokens_per_s", "cv_tpot_p50_ms"))
        elif not m.get("noise"):  # --no-noise
            noise = "-"
        else:  # three configs re-launched: range of their cvs
            noise = "; ".join(f"{min(n[k] for n in m['noise']):.1%}..{max(n[k] for n in m['noise']):.1%}"
                              for k in ("cv_output_tokens_per_s", "cv_tpot_p50_ms"))
        live = t.get("perfpred_live_seed0")
        live = f" ({live['ratio_to_grid_best']:.2f})" if live and live.get("ratio_to_grid_best") is not None else ""
        first = m.get("predictor_first_pass_only")
        first = (f" ({first['mape_tpot_p50_ms']:.1%} / {first['mape_output_tokens_per_s']:.1%})"
                 if first and launches > 1 else "")
        lines.append(f"| {m['model']} | {m['n_grid_configs']} x {launches} | {m['grid_best_tok_s']:.0f} | "
                     f"{m['budget_launches']} ({m['budget_fraction_of_grid']:.0%} of configs) | "
                     f"{p['ratio_mean']:.3f} ({seeds}) | {r['ratio_mean']:.3f} | "
                     f"{t['perfpred_ratio_mean']:.2f}{live} / {t.get('random_ratio_mean', float('nan')):.2f} | "
                     f"{noise} | {pr['mape_tpot_p50_ms']:.1%} / {pr['mape_output_tokens_per_s']:.1%}{first} |")
    lines.append("")
    lines.append("cv: median over the grid's configs (p90) with several launches per config; with one launch, "
                 "the range over three re-launched configs.")
    split = [(m["model"], m["perfpred"].get("live"), m["perfpred"].get("replayed"),
              m["perfpred"].get("live_paired_with_grid_best")) for m in d["models"]]
    if any(live and live["n_seeds"] > 1 for _, live, _, _ in split):  # several live seeds: their own share
        lines += ["", "perfpred seeds by how they ran (mean best / grid best, seeds >= 0.98):", ""]
        for model, live, replayed, paired in split:
            parts = [f"{name} {part['ratio_mean']:.3f} ({part['seeds_reaching_98pct']} of {part['n_seeds']})"
                     for name, part in (("live", live), ("replayed", replayed)) if part]
            if paired:  # the live answers launched beside the grid's best config, right after each search
                parts.append(f"live, side by side with the grid's best config {paired['ratio_mean']:.3f} "
                             f"({paired['seeds_reaching_98pct']} of {paired['n_seeds']}; "
                             f"{paired['n_same_config']} answered with that config)")
            lines.append(f"- {model}: " + "; ".join(parts))
    joint = d.get("joint_predictor")
    if joint:
        lines += ["", f"One serving model over both sources ({joint['model']}; {joint['own_rows']} own grid rows on "
                  f"this CPU, {joint['mlenergy_rows']} ML.ENERGY rows on H100), MAPE of each source's held-out rows:",
                  "", "| held-out rows | trained on | p50 inter-token latency | output tokens/s |", "|---|---|---|---|"]
        for label, key in (("own grid configs (10-fold)", "own_kfold_mape"),
                           ("ML.ENERGY models (leave one out)", "mlenergy_leave_one_model_out_mape")):
            for source, values in joint[key].items():
                trained = "that source alone" if source == "alone" else "both sources"
                lines.append(f"| {label} | {trained} | {values['metric.itl_p50_ms']:.1%} | "
                             f"{values['metric.output_tokens_per_s']:.1%} |")
    return "\n".join(lines)


def serving_first_picks() -> str:
    d = _load("serving_first_picks")
    if not d:
        return ""
    lines = [f"Replayed from the grids in the results files, {d['seeds']} seeds, mean best / grid best "
             "(seeds >= 0.98):", "",
             "| engine | model | SLO | launches / configs | trees only | GP first (Dec 2 default) | random |",
             "|---|---|---|---|---|---|---|"]
    for e in d["scenarios"]:
        cells = [f"{e[k]['ratio_mean']:.3f} ({e[k]['seeds_reaching_98pct']})" for k in ("trees_only", "gp_first",
                                                                                         "random")]
        lines.append(f"| {e['engine']} | {e['model']} | {e['slo']} | {e['budget']} / {e['n_configs']} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ratio_cell(stats: dict) -> str:
    return f"{stats['ratio_mean']:.3f} ({stats['seeds_reaching_98pct']})"


def serving_search(name: str = "serving_search") -> str:
    d = _load(name)
    if not d:
        return ""
    first = d["scenarios"][0]
    variants = [k for k, v in first.items() if isinstance(v, dict) and "chose" in v]
    (a0, a1), (b0, b1) = d["halves"]["chose"], d["halves"]["check"]
    noise = d.get("launch_noise_sd") or 0.0
    replay = (f"each launch's goal and latencies times exp(N(0, {noise:g})) draws" if noise
              else "each launch answered with the grid's row")
    lines = [f"Replayed from the grids in the results files ({replay}); mean best / grid best (seeds >= 0.98), "
             f"seeds {a0}-{a1} | {b0}-{b1}; default: {d['default']}:", "",
             "| grid | goal | SLO | launches / configs | " + " | ".join(variants) + " | random |",
             "|---|---|---|---|" + "---|" * (len(variants) + 1)]
    for e in d["scenarios"]:
        cells = [" / ".join(_ratio_cell(e[v][h]) for h in ("chose", "check")) for v in variants]
        lines.append(f"| {e['engine']} {e['model']} | {e['goal']} | {e['slo']} | {e['budget']} / {e['n_configs']} | "
                     + " | ".join(cells) + f" | {_ratio_cell(e['random'])} |")
    lines += ["", "| variant | mean ratio | seeds >= 0.98 / runs |", "|---|---|---|"]
    for name, agg in d["summary"].items():
        lines.append(f"| {name} | {agg['ratio_mean']:.3f} | {agg['seeds_reaching_98pct']} / {agg['runs']} |")
    return "\n".join(lines)


def _mape_cell(entry: dict | None) -> str:
    """A predictor MAPE, with the rows left out because their TPOT timed a burst, when any were."""
    if not entry:
        return "-"
    burst = entry.get("n_burst_excluded")
    return f"{entry['mape']:.1%}" + (f" ({burst} burst row{'s' if burst > 1 else ''} left out)" if burst else "")


def _noise_floor_cell(floor: dict | None) -> str:
    if not floor:
        return "-"
    return " / ".join(f"{floor[t]['mape']:.1%}" if floor.get(t) else "-"
                      for t in ("rate_rps", "tpot_p50_ms", "output_tokens_per_s"))


def serving_rate() -> str:
    d = _load("serving_rate")
    if not d:
        return ""
    lines = [f"Goal: {d['goal']}; SLO {d['slo']}; {d['live_vs_replayed']}.", "",
             "| engine | model | grid configs | grid best (req/s) | configs within 2% of it | perfpred launches | "
             "perfpred best / grid best (live seed 0; seeds >= 0.98) | live seed 0's best in its own launch / grid "
             "best | random, same launches | re-launched rate "
             "searches: max/min | surrogate MAPE (knobs only): rate / capacity / TPOT p50 / tok/s at that rate | "
             "serving model given the load, at the sustainable rate: TPOT p50 / tok/s (every load) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in d["models"]:
        p, r, pr = m["perfpred"], m["random"], m["predictor"]
        own = p["runs"][0].get("best_live_rps")  # the live seed's pick as its own launch measured it
        spread = ", ".join(f"{n['max_over_min']:.2f}" for n in m["noise"] if n.get("max_over_min")) or "-"
        loads = m.get("predictor_given_the_load")
        if loads:
            at, every = loads["at_sustainable_rate"], loads["every_load"]
            given_load = (f"{at['mape_tpot_p50_ms']:.1%} / {at['mape_output_tokens_per_s']:.1%} "
                          f"({every['mape_tpot_p50_ms']:.1%} / {every['mape_output_tokens_per_s']:.1%}; "
                          f"{loads['n_loads']} loads)")
        else:
            given_load = "- (loads not recorded)"
        lines.append(f"| {m.get('engine', d.get('engine', 'llama-server'))} | {m['model']} | {m['n_grid_configs']} | "
                     f"{m['grid_best_rps']:.2f} | "
                     f"{m['grid_configs_within_2pct_of_best']} | {m['budget_launches']} | {p['ratio_mean']:.3f} "
                     f"({p['ratio_to_grid_best_per_seed'][0]:.2f}; {p['seeds_reaching_98pct']}/{p['n_seeds']}) | "
                     f"{own / m['grid_best_rps'] if own else float('nan'):.2f} | "
                     f"{r['ratio_mean']:.3f} ({r['seeds_reaching_98pct']}/{r['n_seeds']}) | {spread} | "
                     + " / ".join(_mape_cell(pr.get(t)) for t in (
                         "rate_rps", "capacity_rps", "tpot_p50_ms", "output_tokens_per_s")) + f" | {given_load} |")
    confirmed = [m for m in d["models"] if m.get("confirmation")]
    if confirmed:
        lines += ["", "Head to head (`--confirm R` / `--confirm-only`): each config perfpred's and random search's "
                  "seeds answered with, and the grid's best, re-launched R times in interleaved rounds; a seed "
                  "scores its answer's median re-launched rate over the grid best's:", "",
                  "| engine | model | rounds | grid best config: grid rate -> re-launched median (req/s) | "
                  "re-launched median / grid best's (seeds answering with it: perfpred, random) | "
                  "perfpred mean (min; seeds >= 0.98) | random mean (min; seeds >= 0.98) | "
                  "noise floor: a launch vs its config's other launches, MAPE rate / TPOT p50 / tok/s |",
                  "|---|---|---|---|---|---|---|---|"]
        for m in confirmed:
            c = m["confirmation"]
            best = c["grid_best_config"]
            best_median = next(x["median_rps"] for x in c["configs"] if all(x[k] == v for k, v in best.items()))
            per_config = ", ".join(
                f"{'/'.join(str(x[k]) for k in best)}: {x['median_rps'] / best_median:.3f} "
                f"({x.get('answered_by_perfpred_seeds', 0)}, {x.get('answered_by_random_seeds', 0)})"
                for x in sorted(c["configs"], key=lambda x: -x["median_rps"]))
            scores = [f"{c[s]['ratio_mean']:.3f} ({c[s]['ratio_min']:.3f}; {c[s]['seeds_reaching_98pct']}/"
                      f"{c[s]['n_seeds']})" if s in c else "-" for s in ("perfpred", "random")]
            lines.append(f"| {m.get('engine', 'llama-server')} | {m['model']} | {c['repeats']} | "
                         f"{'/'.join(str(v) for v in best.values())}: {m['grid_best_rps']:.2f} -> {best_median:.2f} | "
                         f"{per_config} | {scores[0]} | {scores[1]} | {_noise_floor_cell(c.get('noise_floor'))} |")
    return "\n".join(lines)


def serving_replay() -> str:
    d = _load("serving_replay")
    if not d:
        return ""
    budgets = d["budgets"]
    lines = [f"{d['groups']} (model, task) groups of ML.ENERGY v3 (H100), the grid of each as replayed hardware; "
             "quality = best found / grid best (hypervolume ratio for fronts); evals = launches to the target:", "",
             "| scenario | strategy | " + " | ".join(f"q@{b}" for b in budgets) + " | mean evals to target | "
             "grid launches |", "|---|---|" + "---|" * (len(budgets) + 2)]
    for name, sc in d["summary"].items():
        grid = sc["strategies"].get("grid", {}).get("mean_evals_to_target")
        for strategy, v in sc["strategies"].items():
            if strategy == "grid":
                continue
            cells = " | ".join(f"{v[f'mean_quality@{b}']:.2f}" for b in budgets)
            lines.append(f"| {name} ({sc['problems']}) | {strategy} | {cells} | {v['mean_evals_to_target']:.2f} | "
                         f"{grid:.1f} |" if grid is not None else f"| {name} | {strategy} | {cells} | "
                         f"{v['mean_evals_to_target']:.2f} | - |")
    return "\n".join(lines)


def cpu_kernels() -> str:
    d = _load("cpu_kernels")
    if not d:
        return ""
    lines = ["| kernel | recorded configs (space) | runtime min..max ms | median cv | predictor MAPE / rho "
             "(train 10%) | regret of predicted best |", "|---|---|---|---|---|---|"]
    for kernel, k in d["kernels"].items():
        rec = k.get("recording", {})
        land = rec.get("landscape", {})
        ev = k.get("evaluation", {}).get("fractions", {}).get("0.1", {}).get("mean", {})
        rho, regret = ev.get("spearman_rho") or float("nan"), ev.get("regret_of_predicted_best", float("nan"))
        lines.append(f"| {kernel} | {land.get('configs', '-')} ({rec.get('space_valid', '-')}) | "
                     f"{land.get('runtime_ms_min', float('nan')):.3g}..{land.get('runtime_ms_max', float('nan')):.3g} "
                     f"| {land.get('median_cv', float('nan')):.3f} | {ev.get('mape_pct', float('nan')):.1f}% / "
                     f"{rho:.2f} | {regret:.3f}x |")
    budgets = (8, 16, 32, 64)
    tuned = {kernel: k["tuning"] for kernel, k in d["kernels"].items() if "tuning" in k}
    if tuned:
        lines += ["", "Tuners on the recordings replayed as hardware (best found / recorded optimum, mean over "
                  "seeds; P = Willemsen et al.'s score against the executed random search):", "",
                  "| kernel | strategy | P | " + " | ".join(f"@{b}" for b in budgets) + " |",
                  "|---|---|---|" + "---|" * len(budgets)]
        for kernel, t in tuned.items():
            for strategy, v in t["strategies"].items():
                cells = " | ".join(f"{v[f'best_over_opt@{b}']:.3f}" if f"best_over_opt@{b}" in v else "-"
                                   for b in budgets)
                lines.append(f"| {kernel} ({t['seeds']} seeds) | {strategy} | {v.get('P', float('nan')):.2f} | "
                             f"{cells} |")
    live = {(kernel, stage): k[stage] for kernel, k in d["kernels"].items() for stage in ("live", "live_transfer")
            if stage in k}
    if live:
        lines += ["", "Live on this CPU: each strategy's answer re-timed beside the recording's fastest configs "
                  "(median of >= 7 runs), as a multiple of the re-timed optimum:", "",
                  "| kernel | perfpred's prior | evaluations each | perfpred (median; per seed) | random search "
                  "(median) | default | perfpred within 5% | perfpred <= random |", "|---|---|---|---|---|---|---|---|"]
        for (kernel, _), v in live.items():
            med = v["median_over_optimum"]
            per_seed = ", ".join(f"{r['over_optimum']['perfpred']:.3f}" for r in v["runs"])
            lines.append(f"| {kernel} | {v.get('perfpred_prior', 'none (cold start)')} | {v['budget']} | "
                         f"{med['perfpred']:.3f} ({per_seed}) | "
                         f"{med['random search']:.3f} | {med['default']:.2f} | {v['perfpred_within_5pct_runs']}/"
                         f"{v['seeds']} | {v['perfpred_beats_random_runs']}/{v['seeds']} |")
    return "\n".join(lines)


def gpu_kernels() -> str:
    d = _load("gpu_kernels")
    if not d:
        return ""
    lines = []
    if "recording" in d:
        r = d["recording"]
        lines += [f"{r['kernel']} on {r['gpu']} at {'x'.join(str(v) for v in r['problem_size'].values())}: "
                  f"{r['configs']} sampled configs ({r['statuses']}), "
                  f"{r['runtime_ms_min']:.4g}..{r['runtime_ms_max']:.4g} ms ({r['max_over_min']:.1f}x), "
                  + (f"best {r['tflops_max']:.0f} TFLOP/s, " if r.get("tflops_max") else "")
                  + f"median cv {r['median_cv']:.3f}",
                  ""]
    if "live" in d:
        v = d["live"]
        med = v["median_over_recorded_best"]
        per_seed = ", ".join(f"{r['over_recorded_best']['perfpred']:.3f}" for r in v["runs"])
        lines += ["| evaluations each | perfpred x recorded best (median; per seed) | random search (median) | "
                  "default | perfpred <= random |", "|---|---|---|---|---|",
                  f"| {v['budget']} | {med['perfpred']:.3f} ({per_seed}) | {med['random search']:.3f} | "
                  f"{med['default']:.2f} | {v['perfpred_beats_random_runs']}/{v['seeds']} |", ""]
    if "evaluation" in d:
        lines += ["| recording | rows | train | predictor MAPE | Spearman rho | regret of predicted best |",
                  "|---|---|---|---|---|---|"]
        for name, e in d["evaluation"].items():
            for label, ev in (("", e), (" + derived", e.get("derived_features"))):
                for fraction, f in (ev or {}).get("fractions", {}).items():
                    m = f["mean"]
                    lines.append(f"| {name}{label} | {ev['rows_ok']} | {f['n_train']} ({float(fraction):.0%}) | "
                                 f"{m['mape_pct']:.1f}% | {m['spearman_rho']:.2f} | "
                                 f"{m['regret_of_predicted_best']:.3f}x |")
    return "\n".join(lines)


def new_hardware(name: str = "new_hardware") -> str:
    d = _load(name)
    if not d:
        return ""
    lines = [f"A new GPU from N of its own measured configs (mean over its GPUs and seeds {d['seeds']}; "
             "MAPE and Spearman on all its other configs; pick/opt: the runtime of the config predicted "
             "fastest over the optimum):", "",
             "| kernel | N | own rows: MAPE | + recordings as features: MAPE | + recordings, auto: MAPE "
             "| scaled best other GPU: MAPE | own: Spearman | + recordings, auto: Spearman | own: pick/opt "
             "| + recordings, auto: pick/opt |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for family, sizes in d["per_family"].items():
        for n, r in sizes.items():
            own, ref, scaled = r["own"], r["reference"], r["scaled_reference"]
            auto = r.get("reference_auto")  # absent in runs from before the auto mode
            a_mape, a_rho, a_pick = ((f"{auto['mape_pct']:.1f}%", f"{auto['spearman_rho']:.3f}",
                                      f"{auto['pick_over_opt']:.3f}") if auto else ("-", "-", "-"))
            lines.append(f"| {family} | {n} | {own['mape_pct']:.1f}% | {ref['mape_pct']:.1f}% | {a_mape} "
                         f"| {scaled['mape_pct']:.1f}% | {own['spearman_rho']:.3f} | {a_rho} "
                         f"| {own['pick_over_opt']:.3f} | {a_pick} |")
    return "\n".join(lines)


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    for title, text in (("cpu_gemm", cpu_gemm()), ("timer_agreement", timer_agreement()), ("accuracy", accuracy()),
                        ("tuning", tuning()), ("open_space", open_space()), ("serving", serving()),
                        ("serving_vllm", serving("serving_vllm")),
                        ("serving_vllm_prior", serving("serving_vllm_prior")),
                        ("serving_first_picks", serving_first_picks()),
                        ("serving_search", serving_search()),
                        ("serving_search_dec4", serving_search("serving_search_dec4")),
                        ("serving_search_noise", serving_search("serving_search_noise")),
                        ("serving_search_prior", serving_search("serving_search_prior")),
                        ("serving_search_prior_noise", serving_search("serving_search_prior_noise")),
                        ("serving_search_trend", serving_search("serving_search_trend")),
                        ("serving_search_trend_noise", serving_search("serving_search_trend_noise")),
                        ("serving_rate", serving_rate()), ("serving_replay", serving_replay()),
                        ("cpu_kernels", cpu_kernels()), ("gpu_kernels", gpu_kernels()),
                        ("new_hardware", new_hardware()),
                        ("new_hardware_linear", new_hardware("new_hardware_linear")),
                        ("new_hardware_linear_large", new_hardware("new_hardware_linear_large"))):
        if text:
            print(f"### {title}\n\n{text}\n")


if __name__ == "__main__":
    from _common import run

    run(main)
