"""The benchmark scripts' bookkeeping: stages merge into one results file; the README tables render."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture()
def cpu_kernels(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import _common
    import cpu_kernels as module

    monkeypatch.setattr(_common, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(module, "RESULTS_DIR", tmp_path)
    return module


def test_each_stage_merges_its_section_and_keeps_the_others(cpu_kernels, tmp_path):
    cpu_kernels._merge_result("cpu_kernels", {"sgemm": {"recording": {"n": 1}}}, {"stage_wall_s": {"recording": 5}})
    cpu_kernels._merge_result("cpu_kernels", {"sgemm": {"tuning": {"p": 0.5}}, "jacobi2d": {"live": {"r": 1.0}}},
                              {"stage_wall_s": {"tuning": 7}})
    cpu_kernels._merge_result("cpu_kernels", {"sgemm": {"tuning": {"p": 0.6}}}, {"stage_wall_s": {"tuning": 8}})
    result = json.loads((tmp_path / "cpu_kernels.json").read_text())
    assert result["kernels"] == {"sgemm": {"recording": {"n": 1}, "tuning": {"p": 0.6}},
                                 "jacobi2d": {"live": {"r": 1.0}}}
    assert result["stage_wall_s"] == {"recording": 5, "tuning": 8}
    assert result["benchmark"] == "cpu_kernels"


def test_summarize_renders_every_committed_result():
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "summarize.py")], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = {p.stem for p in (REPO / "benchmarks" / "results").glob("*.json")}
    for name in ("cpu_gemm", "accuracy", "tuning", "open_space", "serving", "serving_vllm", "serving_first_picks",
                 "serving_search", "serving_rate", "serving_replay", "cpu_kernels", "new_hardware"):
        if name in results:
            assert f"### {name}\n" in proc.stdout



def test_every_benchmark_script_answers_help_without_running():
    """`--help` must print usage, not start the benchmark (and overwrite its committed result)."""
    scripts = [p for p in (REPO / "benchmarks").glob("*.py") if 'if __name__ == "__main__":' in p.read_text()]
    assert len(scripts) >= 10
    for script in scripts:  # every script with a command line parses it
        assert "ArgumentParser(" in script.read_text(), f"{script.name} has no argument parser"
    result = REPO / "benchmarks" / "results" / "timer_agreement.json"
    before = result.read_bytes() if result.exists() else None
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "timer_agreement.py"), "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("usage:"), proc.stderr[-2000:]
    assert (result.read_bytes() if result.exists() else None) == before

def test_the_load_aware_serving_predictor_learns_latency_at_a_rate_from_other_configs(monkeypatch, tmp_path):
    """serving_rate's predictor of a held-out config under a given load, on synthetic rate searches
    whose TPOT follows a saturating law in the rate: it must beat a load-blind constant."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import serving_rate

    from perfpred.datasets import Measurement, MeasurementStore

    store = MeasurementStore(tmp_path / "loads", create=True)
    rows = []
    for parallel in (1, 2, 4, 8, 16):
        for ubatch in (64, 128, 256, 512):
            capacity = 4.0 * parallel ** 0.5
            for i, frac in enumerate((0.5, 0.7, 0.85, 0.95, 1.1)):
                rate = frac * capacity
                tpot = 2.0 * (1 + 0.2 * np.log2(parallel)) / (1.0 - min(frac, 0.97) * 0.9)
                if (parallel, ubatch, frac) == (16, 512, 0.95):
                    tpot = 0.01  # the sustainable rate's load of one config timed a burst, not decoding
                rows.append(Measurement(
                    kind="serving", workload={"model": "tiny", "rate_rps": rate, "seed": i, "output_tokens_mean": 24.0,
                                              "search": "sustainable_rate_load"},
                    config={"engine": "llama-server", "parallel": parallel, "ubatch_size": ubatch,
                            "max_num_seqs": parallel},
                    hardware_id="cpu-test", status="ok",
                    metrics={"tpot_p50_ms": tpot, "output_tokens_per_s": 24.0 * rate, "slo_met": float(frac < 1)}))
    store.append(rows)
    result = serving_rate.load_predictor(tmp_path, folds=5)
    assert result["n_configs"] == 20 and result["n_loads"] == 99  # the burst load is left out
    at_rate = result["at_sustainable_rate"]
    # one per config, its fastest load that met the SLO; the burst config's slower load does not stand in
    assert at_rate["n_rows"] == 19
    tpot = np.array([m.metrics["tpot_p50_ms"] for m in rows if m.metrics["tpot_p50_ms"] > 0.1])
    constant_mape = float(np.mean(np.abs(np.median(tpot) / tpot - 1)))
    assert result["every_load"]["mape_tpot_p50_ms"] < 0.5 * constant_mape
    assert at_rate["mape_output_tokens_per_s"] < 0.1
    assert serving_rate.load_predictor(tmp_path / "elsewhere") is None


def test_extending_a_tuning_runs_file_adds_only_the_missing_seeds(monkeypatch):
    """tuning.py --extend: the seeds each space x strategy lacks, UCI first; appended runs keep the
    old ones and weight the mean wall time by run count; a new space is added whole."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import tuning

    results = [{"space": "gemm/RTX_3090", "optimum_ms": 1.0, "n_configs": 9,
                "runs": {"random": [[2.0]] * 3, "perfpred-cold": [[1.5]] * 5},
                "wall_s": {"random": 1.0, "perfpred-cold": 4.0}}]
    units = tuning.missing_seeds(results, ["gemm/RTX_3090", "uci-sgemm/GTX_680"], ["random", "perfpred-cold"], 5)
    assert units == [("uci-sgemm/GTX_680", "random", [0, 1, 2, 3, 4]),
                     ("uci-sgemm/GTX_680", "perfpred-cold", [0, 1, 2, 3, 4]),
                     ("gemm/RTX_3090", "random", [3, 4])]
    tuning.merge_runs(results, {"space": "gemm/RTX_3090", "runs": {"random": [[1.0], [3.0]]},
                                "wall_s": {"random": 2.0}})
    assert results[0]["runs"]["random"] == [[2.0]] * 3 + [[1.0], [3.0]]
    assert results[0]["wall_s"]["random"] == (3 * 1.0 + 2 * 2.0) / 5
    assert results[0]["runs"]["perfpred-cold"] == [[1.5]] * 5
    tuning.merge_runs(results, {"space": "uci-sgemm/GTX_680", "runs": {"random": [[1.0]]}, "wall_s": {"random": 1.0}})
    assert [r["space"] for r in results] == ["gemm/RTX_3090", "uci-sgemm/GTX_680"]
    assert tuning.missing_seeds(results, ["gemm/RTX_3090"], ["random", "perfpred-cold"], 5) == []


def test_each_tuning_strategy_gets_the_features_perfpred_tune_would_give_it(monkeypatch):
    """tuning.py: transfer strategies on mixed features (``--features auto`` with a prior), cold
    start on the raw ones (None: the Tuner's default), the -raw / -mixed / -derived variants
    on theirs."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import pandas as pd
    import tuning

    class Problem:  # what featurizer_for reads of a replayed recording
        def problem(self):
            return {"m": 1024, "n": 1024, "k": 1024}

        def hardware(self):
            return None

    cands = pd.DataFrame({"MWG": [16, 32, 64], "NWG": [32, 32, 64], "MDIMC": [8, 8, 16], "NDIMC": [8, 16, 16]})

    def columns(strategy, with_prior):
        featurize = tuning.featurizer_for(strategy, Problem(), with_prior)
        return None if featurize is None else list(featurize(cands).columns)

    mixed = columns("perfpred-transfer", True)
    assert "MWG" in mixed and "d_wg_threads" in mixed
    assert columns("perfpred-transfer-raw", True) is None and columns("perfpred-cold", False) is None
    assert columns("perfpred-cold-mixed", False)[: len(mixed)] == mixed  # (power-of-two columns may follow)
    assert "p_MWG" in columns("perfpred-transfer-derived", True)


def test_extending_a_summary_whose_runs_file_is_missing_is_refused(monkeypatch, tmp_path):
    """tuning.py --extend on a fresh checkout (summary committed, runs file not): a one-line error,
    and the summary is left as it was."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import tuning

    monkeypatch.setattr(tuning, "RESULTS_DIR", tmp_path / "results")
    monkeypatch.setattr(tuning, "RUNS_DIR", tmp_path / "runs")
    (tmp_path / "results").mkdir()
    summary = tmp_path / "results" / "tuning_50seeds.json"
    summary.write_text('{"strategies": {"random": {}}}')
    args = argparse.Namespace(output="tuning_50seeds", strategies="kt-hybrid_vndx", spaces="all", seeds=50,
                              chunk=None, workers=1)
    with pytest.raises(SystemExit, match=r"no runs file .* choose a new --output"):
        tuning.extend(args)
    assert summary.read_text() == '{"strategies": {"random": {}}}'


def test_a_runs_file_survives_a_save_that_fails(monkeypatch, tmp_path):
    """tuning.py saves its runs file after every unit of an hours-long --extend: a save that fails
    (or is killed) must leave the previous file whole, not a truncated gzip."""
    import gzip

    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import tuning

    runs_file = tmp_path / "t_runs.json.gz"
    saved = [{"space": "gemm/RTX_3090", "runs": {"random": [[2.0]]}}]
    tuning.save_runs(runs_file, saved)
    with pytest.raises(TypeError):
        tuning.save_runs(runs_file, [*saved, {"space": object()}])
    with gzip.open(runs_file, "rt") as fh:
        assert json.load(fh) == saved
    assert [f.name for f in tmp_path.iterdir()] == ["t_runs.json.gz"]

    # A save that dies after serialising, while the file is being replaced (killed, disk full),
    # must not touch the old file either: only a write-then-rename gives that.
    import perfpred._files

    def replace_dies(src, dst):
        raise OSError("killed during the save")

    monkeypatch.setattr(perfpred._files.os, "replace", replace_dies)
    with pytest.raises(OSError, match="killed during the save"):
        tuning.save_runs(runs_file, [*saved, {"space": "gemm/RTX_Titan", "runs": {}}])
    monkeypatch.undo()
    with gzip.open(runs_file, "rt") as fh:
        assert json.load(fh) == saved
    assert [f.name for f in tmp_path.iterdir()] == ["t_runs.json.gz"]


def test_extending_in_chunks_keeps_each_strategys_seeds_in_order(monkeypatch):
    """tuning.py --extend --chunk: a slow space's missing seeds split into blocks for several workers;
    a block that finishes before an earlier one waits, so the runs file still holds seeds 0..len-1."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import tuning

    results = [{"space": "gemm/RTX_3090", "optimum_ms": 1.0, "n_configs": 9, "runs": {"random": [[0.0]]},
                "wall_s": {"random": 1.0}}]
    units = tuning.missing_seeds(results, ["gemm/RTX_3090", "uci-sgemm/GTX_680"], ["random"], 6, chunk=2)
    assert units == [("uci-sgemm/GTX_680", "random", [0, 1]), ("uci-sgemm/GTX_680", "random", [2, 3]),
                     ("uci-sgemm/GTX_680", "random", [4, 5]), ("gemm/RTX_3090", "random", [1, 2]),
                     ("gemm/RTX_3090", "random", [3, 4]), ("gemm/RTX_3090", "random", [5])]

    def block(space, seeds):
        return {"space": space, "optimum_ms": 1.0, "n_configs": 9, "runs": {"random": [[float(s)] for s in seeds]},
                "wall_s": {"random": 1.0}}

    pending: dict = {}
    for unit in (units[4], units[1], units[5]):  # out of order: nothing can be merged yet
        tuning.merge_in_order(results, pending, unit, block(unit[0], unit[2]))
    assert results[0]["runs"]["random"] == [[0.0]] and len(results) == 1
    tuning.merge_in_order(results, pending, units[3], block("gemm/RTX_3090", [1, 2]))
    assert results[0]["runs"]["random"] == [[float(s)] for s in range(6)]
    tuning.merge_in_order(results, pending, units[0], block("uci-sgemm/GTX_680", [0, 1]))
    assert results[1]["runs"]["random"] == [[0.0], [1.0], [2.0], [3.0]]
    assert not pending[("gemm/RTX_3090", "random")] and not pending[("uci-sgemm/GTX_680", "random")]


def test_confirmation_scores_each_answer_against_the_grid_best_relaunched_alike(monkeypatch, tmp_path):
    """serving_rate --confirm: the distinct answers and the grid's best run the same number of
    interleaved launches; a seed's score is its answer's median over the grid best's median, and
    an interrupted run's launches count when it is resumed."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import serving_rate

    from perfpred.datasets import Measurement

    true_rate = {(16, 128): 10.0, (8, 512): 9.0, (16, 512): 10.2}
    launched = []

    class FakeCollector:
        def __init__(self, fail_after=None):
            self.fail_after = fail_after

        def sustainable_rate(self, cfg, slo, **kwargs):
            if self.fail_after is not None and len(launched) >= self.fail_after:
                raise RuntimeError("server died")
            key = (cfg.knobs["parallel"], cfg.knobs["ubatch_size"])
            launched.append(key)
            # -1%, 0, +1% (medians see through it); never twice the same row, which the store would merge
            jitter = 1.0 + 0.01 * (len(launched) % 3 - 1) + 1e-6 * len(launched)
            return Measurement(kind="serving", workload={"model": "small-20m"}, config=dict(cfg.knobs),
                               hardware_id="cpu-test", status="ok",
                               metrics={"sustainable_rate_rps": true_rate[key] * jitter})

    serving_rate.use_engine("llama-server")
    answers = {"perfpred": [{"parallel": 8, "ubatch_size": 512}, {"parallel": 16, "ubatch_size": 512}, None,
                            {"parallel": 8, "ubatch_size": 512, "threads": 2}],
               "random": [{"parallel": 16, "ubatch_size": 128}, {"parallel": 8, "ubatch_size": 512}]}
    best = {"parallel": 16, "ubatch_size": 128}
    with pytest.raises(RuntimeError):
        serving_rate.confirm("small-20m", answers, best, FakeCollector(fail_after=4), 3, tmp_path / "confirm")
    assert len(launched) == 4
    result = serving_rate.confirm("small-20m", answers, best, FakeCollector(), 3, tmp_path / "confirm")
    assert len(launched) == 9  # 3 configs x 3 rounds in all: the 4 stored launches were not repeated
    assert sorted(launched[:3]) == sorted(true_rate)  # round 1 launches every config before round 2
    per_config = {(c["parallel"], c["ubatch_size"]): c for c in result["configs"]}
    assert all(len(c["relaunch_rates_rps"]) == 3 for c in per_config.values())
    assert per_config[(8, 512)]["answered_by_perfpred_seeds"] == 2
    assert per_config[(8, 512)]["answered_by_random_seeds"] == 1
    ratios = result["perfpred"]["ratio_to_grid_best_per_seed"]
    assert ratios[0] == pytest.approx(0.9, abs=0.02) and ratios[1] == pytest.approx(1.02, abs=0.02)
    assert ratios[2] == 0.0 and ratios[3] == ratios[0]
    assert result["perfpred"]["seeds_reaching_98pct"] == 1 and result["perfpred"]["n_seeds"] == 4
    assert result["random"]["ratio_to_grid_best_per_seed"] == [1.0, ratios[0]]


def test_the_relaunch_noise_floor_predicts_each_launch_by_its_configs_other_launches(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import serving_rate

    from perfpred.datasets import Measurement, MeasurementStore

    serving_rate.use_engine("llama-server")
    assert serving_rate.relaunch_noise_floor(tmp_path / "confirm") is None
    launches = {(16, 128): [(10.0, 5.0), (12.0, 5.0), (14.0, 0.02)],  # the third TPOT timed a burst
                (1, 64): [(4.0, 2.0), (4.0, 3.0)]}
    store = MeasurementStore(tmp_path / "confirm", create=True)
    store.append([Measurement(kind="serving", workload={"model": "tiny", "relaunch": i},
                              config={"engine": "llama-server", "parallel": p, "ubatch_size": u},
                              hardware_id="cpu-test", status="ok",
                              metrics={"sustainable_rate_rps": rate, "tpot_p50_ms": tpot,
                                       "output_tokens_per_s": 24.0 * rate})
                  for (p, u), runs in launches.items() for i, (rate, tpot) in enumerate(runs)])
    floor = serving_rate.relaunch_noise_floor(tmp_path / "confirm")
    rate_apes = [13 / 10 - 1, 0.0, 1 - 11 / 14, 0.0, 0.0]
    assert floor["rate_rps"] == {"mape": pytest.approx(np.mean(rate_apes)), "n_launches": 5}
    assert floor["output_tokens_per_s"]["mape"] == pytest.approx(np.mean(rate_apes))
    # TPOT: the burst launch is neither predicted nor part of the others' mean
    assert floor["tpot_p50_ms"] == {"mape": pytest.approx(np.mean([0.0, 0.0, 3 / 2 - 1, 1 - 2 / 3])),
                                    "n_launches": 4}


def test_random_search_answers_with_its_fastest_replayed_pick(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import serving_rate

    serving_rate.use_engine("llama-server")
    table = serving_rate.SPACE.enumerate().assign(rate_rps=lambda t: t["parallel"] * 1000.0 + t["ubatch_size"])
    for seed in range(5):
        answer = serving_rate.random_answer(table, 5, seed)
        picks = np.random.default_rng(seed).choice(len(table), size=5, replace=False)
        assert serving_rate.grid_rate(table, answer) == table["rate_rps"].iloc[picks].max()
        assert serving_rate.random_best(table, 5, seed) == table["rate_rps"].iloc[picks].max()
    assert serving_rate.random_answer(table.assign(rate_rps=np.nan), 5, 0) is None


def test_a_tpot_that_times_a_burst_is_left_out_of_the_predictor_score_and_counted(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import serving_rate

    serving_rate.use_engine("llama-server")
    table = serving_rate.SPACE.enumerate()
    table = table.assign(tpot_p50_ms=table["parallel"] * 0.5 + table["ubatch_size"] / 256.0,
                         rate_rps=10.0 / table["parallel"])
    table.loc[3, "tpot_p50_ms"] = 0.014  # the median request arrived in one burst: no decode pace
    table.loc[5, "tpot_p50_ms"] = np.nan  # not measured at all
    burst = serving_rate.predictor_mape(table, "tpot_p50_ms")
    assert burst["n_rows"] == len(table) - 2 and burst["n_burst_excluded"] == 1
    clean = serving_rate.predictor_mape(table.drop(index=[3, 5]), "tpot_p50_ms")
    assert burst["mape"] == clean["mape"] and clean["n_burst_excluded"] == 0
    rate = serving_rate.predictor_mape(table.assign(rate_rps=lambda t: t["rate_rps"].where(t.index != 3, 0.05)),
                                       "rate_rps")
    assert rate["n_rows"] == len(table) and rate["n_burst_excluded"] == 0  # the bound is for TPOT only


def test_stages_on_a_stored_grid_refuse_a_model_without_one(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import serving_rate

    for flag in ("--confirm-only", "--predictor-only"):
        assert serving_rate.main(["--model", "no-such-model", flag]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"{flag} needs a result and a stored grid for llama-server / no-such-model")
        assert len(err.splitlines()) == 1


def test_a_run_that_stops_early_keeps_its_best_to_the_end_of_the_window(monkeypatch):
    """A strategy that stops early on one space (Optuna's samplers out of new configs) is scored
    over the same 1..budget window as every other, its best kept after its last evaluation: scored
    over its own shorter window, it was on another basis (and had no mean at the budgets it missed)."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import tuning

    monkeypatch.setattr(tuning, "BUDGET", 32)
    monkeypatch.setattr(tuning, "BUDGETS", (8, 16, 32))
    random_run = [8.0, 4.0, 2.0, 2.0] + [1.5] * 12 + [1.0] * 16  # the optimum is 0.5
    early = [4.0, 1.5] + [1.5] * 14  # 16 evaluations, then stops at 1.5
    results = [{"space": "a", "optimum_ms": 0.5, "n_configs": 99,
                "runs": {"random": [random_run], "gp": [random_run]}, "wall_s": {"random": 1.0, "gp": 1.0}},
               {"space": "b", "optimum_ms": 0.5, "n_configs": 99,
                "runs": {"random": [random_run], "gp": [early]}, "wall_s": {"random": 1.0, "gp": 1.0}}]
    results[0]["prior_fit_s"] = 2.5  # the transferred priors' training, which no s/run holds
    summary = tuning.summarise(results, [0])
    assert summary["spaces"]["a"]["prior_fit_s"] == 2.5 and "prior_fit_s" not in summary["spaces"]["b"]
    b = summary["spaces"]["b"]["strategies"]["gp"]
    assert b["best_over_opt@32"] == 3.0 and (b["evaluations_min"], b["evaluations_max"]) == (16, 16)
    # P over all 32 budgets: ahead at budgets 1-4, level to 16, a whole gap behind from 17 on.
    base = [8.0, 4.0, 2.0, 2.0] + [1.5] * 12 + [1.0] * 16
    ours = [4.0] + [1.5] * 31
    assert b["P"] == pytest.approx(sum((x - y) / (x - 0.5) for x, y in zip(base, ours, strict=True)) / 32)
    assert b["P"] < -0.4  # over its own 16 evaluations it was ahead of random (P 0.12)
    assert summary["strategies"]["gp"]["mean_best_over_opt@32"] == pytest.approx((2.0 + 3.0) / 2)


def test_launch_noise_scales_each_replayed_launch_and_leaves_failures_alone(monkeypatch):
    """serving_search's noisy replay: a ready launch's goal and latencies move by independent
    draws, its error rate and a failed launch stay as recorded, the same seed repeats the draws."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import serving_search

    from perfpred.datasets import Measurement

    ok = Measurement(kind="serving", workload={}, config={"parallel": 4}, hardware_id="replayed-grid", status="ok",
                     metrics={"output_tokens_per_s": 100.0, "ttft_p99_ms": 50.0, "error_rate": 0.0})
    failed = Measurement(kind="serving", workload={}, config={"parallel": 16}, hardware_id="replayed-grid",
                         status="runtime_error", metrics={}, error="did not start")
    grid = {4: ok, 16: failed}

    def replay(cfg):
        return grid[cfg]

    assert serving_search.with_launch_noise(replay, 0.0, seed=1) is replay
    noisy = serving_search.with_launch_noise(replay, 0.1, seed=1)
    first, second = noisy(4), noisy(4)
    assert first.metrics["error_rate"] == 0.0 and noisy(16) is failed
    assert first.metrics["output_tokens_per_s"] != second.metrics["output_tokens_per_s"]  # one draw per launch
    ratios = [first.metrics["output_tokens_per_s"] / 100.0, first.metrics["ttft_p99_ms"] / 50.0]
    assert ratios[0] != ratios[1] and all(0.5 < r < 2.0 for r in ratios)
    again = serving_search.with_launch_noise(replay, 0.1, seed=1)(4)
    assert again.metrics == first.metrics
    assert ok.metrics["output_tokens_per_s"] == 100.0  # the grid's row is not modified


def test_a_live_answer_is_scored_side_by_side_with_the_grids_best_config(monkeypatch):
    """serving.py's paired check: the two configs alternate, the ratio is of their median goals,
    a launch over the SLO counts 0, and answering with the grid's best launches nothing."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import serving

    from perfpred.datasets import Measurement

    class Collector:
        def __init__(self, tok_s):
            self.tok_s, self.order = tok_s, []

        def measure(self, config):
            key = config.knobs["parallel"]
            self.order.append(key)
            value = self.tok_s[key].pop(0)
            ttft = 9000.0 if value < 0 else 100.0  # a negative entry: this launch missed the TTFT bound
            return Measurement(kind="serving", workload={}, config=dict(config.knobs), hardware_id="stub", status="ok",
                               metrics={"output_tokens_per_s": abs(value), "ttft_p99_ms": ttft, "tpot_p99_ms": 5.0,
                                        "error_rate": 0.0})

    bench = serving.BENCHES["llama-server"]
    best = {"parallel": 16, "batch_size": 512, "ubatch_size": 512}
    collector = Collector({4: [250.0, -300.0, 240.0], 16: [300.0, 310.0, 200.0]})
    paired = serving.paired_with_grid_best(bench, "tiny", serving.SLO, collector,
                                           {"parallel": 4, "batch_size": 512, "ubatch_size": 512, "threads": 1},
                                           best, repeats=3)
    assert collector.order == [4, 16, 16, 4, 4, 16]  # the order flips each round
    assert paired["answer_tok_s"] == [250.0, 0.0, 240.0]  # over the SLO: 0
    assert paired["ratio"] == pytest.approx(240.0 / 300.0) and not paired["same_config"]
    same = serving.paired_with_grid_best(bench, "tiny", serving.SLO, Collector({}), {**best, "threads": 1}, best, 3)
    assert same["same_config"] and same["ratio"] == 1.0
    summary = serving._paired_summary([{"paired_with_grid_best": paired}, {"paired_with_grid_best": same}, {}])
    assert summary["n_seeds"] == 2 and summary["n_same_config"] == 1 and summary["seeds_reaching_98pct"] == 1


def test_random_search_under_launch_noise_answers_with_its_best_launch(monkeypatch):
    """The noisy replay's random baseline chooses by what its own launches read, not by the grid,
    and a launch without a goal (failed, or over the SLO) is never its answer."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import serving_search

    from perfpred.datasets import Measurement

    configs = [{"parallel": p} for p in (1, 2, 4)]
    read = {1: 50.0, 2: None, 4: 80.0}  # what each config's launch reads (2: failed)

    def measure(cfg):
        value = read[cfg["parallel"]]
        return Measurement(kind="serving", workload={}, config=cfg, hardware_id="stub",
                           status="ok" if value else "runtime_error",
                           metrics={"output_tokens_per_s": value} if value else {}, error=None if value else "x")

    answer = serving_search.random_by_launches(configs, measure, lambda m: m.metrics.get("output_tokens_per_s"),
                                               budget=3, seed=0)
    assert answer == {"parallel": 4}
    read[4] = 20.0  # a slow launch of the better config: random search believes it
    assert serving_search.random_by_launches(configs, measure, lambda m: m.metrics.get("output_tokens_per_s"),
                                             budget=3, seed=0) == {"parallel": 1}
    read.update({1: None, 4: None})
    assert serving_search.random_by_launches(configs, measure, lambda m: m.metrics.get("output_tokens_per_s"),
                                             budget=3, seed=0) is None


def test_weighted_blend_scored_from_fold_predictions_is_the_blend_regressor(monkeypatch):
    """uci_2000 scores each blend share from its members' fold predictions, without refitting:
    that must be what ``BlendRegressor(weights=...)`` predicts."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import accuracy

    from perfpred.models import BlendRegressor, LogTargetForestRegressor, LogTargetHGBRegressor

    r = np.random.default_rng(0)
    X = r.uniform(-1, 1, size=(120, 3))
    y = np.exp(X[:, 0] + 0.5 * X[:, 1] ** 2)
    a, b = LogTargetHGBRegressor(max_iter=30, n_threads=1), LogTargetForestRegressor(n_estimators=20, n_jobs=1)
    runs = [[{"_true": y[80:], "_pred": m.fit(X[:80], y[:80]).predict(X[80:])}] for m in (a, b)]
    blend = BlendRegressor([("a", a), ("b", b)], weights=[0.8, 0.2], reseed_members=False).fit(X[:80], y[:80])
    scored = accuracy.blended_runs(runs, [0.8, 0.2])
    np.testing.assert_allclose(scored[0]["_pred"], blend.predict(X[80:]), rtol=1e-9)
    even = accuracy.blended_runs(runs)
    np.testing.assert_allclose(even[0]["_pred"], np.sqrt(runs[0][0]["_pred"] * runs[1][0]["_pred"]), rtol=1e-12)


def test_new_hardware_scales_the_other_gpu_that_orders_the_measured_configs_best(monkeypatch):
    """benchmarks/new_hardware.py's by-hand baseline picks the sibling GPU (same order, half the time)
    over one that orders the space backwards, and the summary averages seeds, then GPUs."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import new_hardware
    import pandas as pd

    x = np.arange(1, 61)
    base = 1.0 + (x % 7) * 0.3 + x / 60

    def gpu(name, times):
        return pd.DataFrame({"config.x": x, "runtime_ms": times, "hardware_id": name})

    new = gpu("new", 2.0 * base)
    others = pd.concat([gpu("sibling", base), gpu("backwards", base[::-1].copy())])
    pred = new_hardware.scaled_reference(new.iloc[:20], new.iloc[20:], others)
    assert pred == pytest.approx(new["runtime_ms"].iloc[20:].to_numpy())
    score = new_hardware.scores(pred, new["runtime_ms"].iloc[20:].to_numpy(), float(new["runtime_ms"].min()))
    assert score["mape_pct"] == pytest.approx(0.0, abs=1e-9) and score["spearman_rho"] == pytest.approx(1.0)

    cases = [{"family": "gemm", "gpu": g, "n": 50, "seed": s,
              **{k: {"mape_pct": m + s, "spearman_rho": 0.9, "pick_over_opt": 1.1} for k in new_hardware.STRATEGIES}}
             for g, m in (("a", 10.0), ("b", 20.0)) for s in (0, 2)]
    summary = new_hardware.summarise(cases)
    assert summary["per_gpu"]["gemm"]["a"]["50"]["own"]["mape_pct"] == 11.0
    assert summary["per_family"]["gemm"]["50"]["reference"]["mape_pct"] == 16.0


@pytest.mark.parametrize("script, args, missing", [
    ("new_hardware.py", ["--kernels", "gemm", "--workers", "1"], "kernel-tuner/gemm/*.json.gz"),
    ("accuracy.py", ["--only", "uci_random", "--output", "OUT"], "uci-sgemm"),
])
def test_a_benchmark_without_its_datasets_says_so_in_one_line(tmp_path, script, args, missing):
    """PERFPRED_DATASETS pointing to an empty folder (or nowhere): `error: ...` naming the missing
    path and the setting, exit status 2, no traceback and no result written."""
    for datasets in (tmp_path / "empty", tmp_path / "nowhere"):
        (tmp_path / "empty").mkdir(exist_ok=True)
        argv = [str(tmp_path / "out.json") if a == "OUT" else a for a in args]
        env = {**os.environ, "PERFPRED_DATASETS": str(datasets)}
        proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *argv], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=120)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1, f"exit {proc.returncode}\n{proc.stderr[-3000:]}"
        assert lines[0].startswith("error:") and str(datasets) in lines[0]
        if datasets.name == "empty":
            assert f"PERFPRED_DATASETS={datasets}" in lines[0] and str(datasets / missing) in lines[0]
        else:
            assert "recorded datasets folder not found" in lines[0]
        assert not (tmp_path / "out.json").exists()


def test_every_benchmark_script_enters_through_the_shared_error_wrapper():
    scripts = [p for p in (REPO / "benchmarks").glob("*.py") if 'if __name__ == "__main__":' in p.read_text()]
    for script in scripts:
        block = script.read_text().split('if __name__ == "__main__":', 1)[1]
        assert "run(main)" in block, f"{script.name} does not enter through _common.run"
