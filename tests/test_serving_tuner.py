"""Live serving tuning: the predictor-first loop over real launches (a fake server here, llama-server once)."""

from __future__ import annotations

import pytest

pytest.importorskip("aiohttp")
pytest.importorskip("xgboost")

from perfpred.collect.serving import ServingWorkload, Slo, find_llama_server
from perfpred.datasets import MeasurementStore
from perfpred.errors import InvalidInputError
from perfpred.tuner import SearchSpace
from perfpred.tuner._serving_live import goal_value, tune_serving_live

LLAMA_SERVER = find_llama_server()  # before the suite points PERFPRED_HOME elsewhere
HARDWARE = {"hardware_id": "cpu-test-0000000001", "hardware_name": "test cpu"}
FAST = ServingWorkload(n_requests=12, concurrency=6, prompt_tokens=8, output_tokens=6, warmup_requests=0)


@pytest.fixture(autouse=True)
def _fixed_hardware(monkeypatch):
    # The fingerprint probes the machine (seconds); rows only need an id here.
    from perfpred.collect.serving import ServingCollector

    monkeypatch.setattr(ServingCollector, "hardware", property(lambda self: HARDWARE))


def _fake_space(**extra):
    return SearchSpace({"slots": [1, 3, 6], "token_ms": [1.0, 3.0], **extra})


def test_budget_is_spent_on_distinct_configs_and_every_launch_is_a_row(tmp_path):
    seen = []
    store = MeasurementStore(tmp_path / "store", create=True)
    result = tune_serving_live("fake", space=_fake_space(), workload=FAST, budget=4, seed=1, store=store,
                               run_dir=tmp_path, progress=seen.append)
    assert result.n_launches == 4 == len(seen) == len(result.history)
    keys = {(r["slots"], r["token_ms"]) for r in seen}
    assert len(keys) == 4  # no config launched twice
    assert len(store.measurements(kind="serving")) == 4
    assert result.best_value is not None and result.unit == "tok/s"
    assert result.best_value == pytest.approx(max(r["goal_value"] for r in seen if r["slo_met"]))
    assert result.command_line.split()[1].endswith("_fake_server.py")
    assert '"slots": ' + str(result.best_config["slots"]) in result.command_line


def test_failures_are_rows_the_tuner_learns_from(tmp_path):
    store = MeasurementStore(tmp_path / "store", create=True)
    space = SearchSpace({"slots": [2, 6], "oom_at_start": [False, True]})
    result = tune_serving_live("fake", space=space, workload=FAST, budget=4, store=store, run_dir=tmp_path)
    statuses = sorted(m.status for m in store.measurements(kind="serving"))
    assert statuses == ["ok", "ok", "oom", "oom"]
    assert result.best_config["oom_at_start"] is False
    assert (result.history["status"] == "oom").sum() == 2 and not result.history["slo_met"][
        result.history["status"] == "oom"].any()


def test_goodput_counts_the_requests_that_met_the_slo_and_is_maximised(tmp_path):
    # One slot queues six requests, so most of them wait past the 40 ms TTFT bound; six serve all at once.
    slo = Slo(ttft_ms=40.0)
    result = tune_serving_live("fake", space=_fake_space(), workload=FAST, budget=6, slo=slo, goal="goodput",
                               run_dir=tmp_path)
    h = result.history
    assert result.unit == "req/s" and h["goodput_requests_per_s"].notna().all()
    assert (h["goodput_requests_per_s"] <= h["requests_per_s"] + 1e-9).all()  # never more than finished
    assert result.best_value == pytest.approx(h["goodput_requests_per_s"].max())
    one_slot = h.loc[h["slots"] == 1, "goodput_requests_per_s"]
    assert (one_slot < result.best_value).all()


def test_tokens_per_joule_is_maximised_where_the_slo_holds_and_needs_a_sensor(tmp_path):
    from test_serving_collector import SteadyPower

    from perfpred.collect._power import UnavailablePower

    slo = Slo(ttft_ms=40.0)
    result = tune_serving_live("fake", space=_fake_space(), workload=FAST, budget=6, slo=slo,
                               goal="tokens_per_joule", power=SteadyPower(50.0), run_dir=tmp_path)
    h = result.history
    assert result.unit == "tok/J" and (h["power_w"] == 50.0).all()
    met = h[h["slo_met"]]
    assert len(met) and result.best_value == pytest.approx(met["output_tokens_per_j"].max())
    # at a constant draw, tokens per joule ranks configs as throughput does
    assert met["output_tokens_per_j"].idxmax() == met["output_tokens_per_s"].idxmax()
    with pytest.raises(InvalidInputError, match="needs a power sensor"):
        tune_serving_live("fake", space=_fake_space(), workload=FAST, budget=2, goal="tokens_per_joule",
                          power=UnavailablePower(), run_dir=tmp_path / "none")


def test_the_reported_best_meets_the_slo(tmp_path):
    # One slot queues six requests: TTFT p99 ~ 5 requests x 6 tokens x 3 ms, well over 40 ms.
    slo = Slo(ttft_ms=40.0)
    result = tune_serving_live("fake", space=_fake_space(), workload=FAST, budget=6, slo=slo, run_dir=tmp_path)
    h = result.history
    assert result.stopped_by == "space_exhausted" or result.n_launches == 6
    assert not h["slo_met"].all() and h["slo_met"].any()
    best = h[(h["slots"] == result.best_config["slots"]) & (h["token_ms"] == result.best_config["token_ms"])]
    assert bool(best["slo_met"].iloc[0]) and best["ttft_p99_ms"].iloc[0] <= 40.0
    assert result.best_value == pytest.approx(h.loc[h["slo_met"], "goal_value"].max())


def test_every_launch_is_a_trial_of_an_optuna_study_with_the_slo_as_a_constraint(tmp_path):
    import optuna

    slo = Slo(ttft_ms=40.0)
    result = tune_serving_live("fake", space=_fake_space(), workload=FAST, budget=6, slo=slo, run_dir=tmp_path)
    assert result.storage == f"sqlite:///{(tmp_path / 'study.db').resolve()}"
    study = optuna.load_study(study_name=result.summary()["study_name"], storage=result.storage)
    trials = study.get_trials()
    assert len(trials) == result.n_launches
    assert {t.user_attrs["source"] for t in trials} == {"measured"}
    h = result.history
    for t in trials:  # the constraint is the relative excess over the bound: <= 0 exactly when the SLO holds
        row = h[(h["slots"] == t.params["slots"]) & (h["token_ms"] == t.params["token_ms"])].iloc[0]
        violation = t.constraints["metric.ttft_p99_ms <= 40"]
        assert violation == pytest.approx(row["ttft_p99_ms"] / 40.0 - 1)
        assert (violation <= 0) == bool(row["slo_met"])
    # Optuna's feasible best is the tuner's answer.
    assert [t.values[0] for t in study.best_trials] == [pytest.approx(result.best_value)]


def _scripted_launches(launches: dict[tuple, list[float]]):
    """A ``measure`` answering each launch of a (slots, token_ms) config with its next scripted tok/s (0: OOM)."""
    from perfpred.datasets import Measurement

    calls: dict[tuple, int] = {}

    def measure(cfg):
        key = (cfg.knobs["slots"], cfg.knobs["token_ms"])
        n = calls[key] = calls.get(key, 0) + 1
        value = launches[key][min(n, len(launches[key])) - 1]
        return Measurement(kind="serving", workload={}, config=dict(cfg.knobs), hardware_id=HARDWARE["hardware_id"],
                           status="ok" if value else "oom",
                           metrics={"output_tokens_per_s": value, "error_rate": 0.0} if value else {})
    return measure, calls


def test_confirmation_relaunches_the_finalists_and_answers_with_the_best_median(tmp_path):
    # (6, 1.0)'s first launch was lucky (140, then 90 and 95); (3, 1.0) repeats at ~120; (1, 1.0)
    # dies on its second launch: a failed re-launch counts as 0 in its median.
    launches = {(1, 1.0): [130.0, 0.0, 125.0], (3, 1.0): [120.0, 121.0, 119.0], (6, 1.0): [140.0, 90.0, 95.0],
                (1, 3.0): [40.0], (3, 3.0): [50.0], (6, 3.0): [60.0]}
    measure, calls = _scripted_launches(launches)
    store = MeasurementStore(tmp_path / "store", create=True)
    result = tune_serving_live("fake", space=_fake_space(), workload=FAST, budget=6, seed=0, store=store,
                               run_dir=tmp_path, measure=measure, confirm_repeats=2, confirm_top=3)
    assert result.n_launches == 6 and result.n_confirm_launches == 6
    assert calls == {(1, 1.0): 3, (3, 1.0): 3, (6, 1.0): 3, (1, 3.0): 1, (3, 3.0): 1, (6, 3.0): 1}
    c = result.confirmation.set_index(["slots", "token_ms"])
    assert c.loc[(6, 1.0), "goal_values"] == [140.0, 90.0, 95.0] and c.loc[(1, 1.0), "median_goal"] == 125.0
    assert (result.best_config["slots"], result.best_config["token_ms"]) == (1, 1.0)  # median 125 over 120 and 95
    assert result.best_value == 125.0 and c["chosen"].sum() == 1 and bool(c.loc[(1, 1.0), "chosen"])
    h = result.history
    assert list(h["phase"]) == ["search"] * 6 + ["confirm"] * 6
    assert len(store.measurements(kind="serving")) == 12  # every re-launch is a row too
    assert result.summary()["n_confirm_launches"] == 6 and len(result.summary()["confirmation"]) == 3
    trials = result.study.get_trials()
    assert [t.user_attrs["phase"] for t in trials] == ["search"] * 6 + ["confirm"] * 6
    # Without confirmation the lucky first launch would have been the answer.
    measure, _ = _scripted_launches(launches)
    plain = tune_serving_live("fake", space=_fake_space(), workload=FAST, budget=6, seed=0, measure=measure)
    assert (plain.best_config["slots"], plain.best_value) == (6, 140.0) and plain.confirmation is None
    with pytest.raises(InvalidInputError, match="`confirm_repeats >= 0` must hold"):
        tune_serving_live("fake", confirm_repeats=-1)
    with pytest.raises(InvalidInputError, match="`confirm_top >= 1` must hold"):
        tune_serving_live("fake", confirm_repeats=1, confirm_top=0)


def test_a_sustainable_rate_tuning_run_keeps_every_load_its_searches_ran(tmp_path):
    # The capacity run and each probe are training rows of latency under a load: a live tune
    # that threw them away would keep one row per 5-10 loads it paid for.
    rate_search = {"start_rps": None, "max_probes": 2, "probe_duration_s": 0.3, "min_requests": 3,
                   "max_requests": 20, "capacity_concurrency": 2}
    result = tune_serving_live("fake", space=_fake_space(), workload=FAST, budget=2, slo=Slo(e2e_ms=60_000.0),
                               goal="sustainable_rate", rate_search=rate_search, run_dir=tmp_path)
    searches = MeasurementStore(tmp_path / "store").load(kind="serving")
    loads = MeasurementStore(tmp_path / "loads").load(kind="serving")
    assert result.n_launches == 2 == len(searches) and result.summary()["loads"] == str(tmp_path / "loads")
    assert len(loads) == int((1 + searches["metric.n_probes"]).sum())
    assert set(loads["workload.search"]) == {"sustainable_rate_load"}
    probes = loads[loads["workload.rate_rps"].notna()]
    assert len(probes) == int(searches["metric.n_probes"].sum()) and probes["metric.slo_met"].eq(1.0).all()
    assert set(zip(loads["config.slots"], loads["config.token_ms"], strict=True)) == set(
        zip(searches["config.slots"], searches["config.token_ms"], strict=True))


def test_slo_checks_and_bad_input():
    slo = Slo(ttft_ms=100.0, tpot_ms=10.0)
    assert slo.metric_violations({"ttft_p99_ms": 50.0, "tpot_p99_ms": 5.0}) == []
    assert slo.metric_violations({"ttft_p99_ms": 150.0, "tpot_p99_ms": 5.0, "error_rate": 0.5}) == [
        "error_rate 0.50 > 0", "ttft_p99_ms 150.0 > 100"]
    assert slo.metric_violations({"ttft_p99_ms": 50.0}) == ["tpot_p99_ms None > 10"]
    # every response in one burst: no decode pace was timed, and the client waited for no token after the first
    assert slo.metric_violations({"ttft_p99_ms": 50.0, "burst_frac": 1.0}) == []
    assert slo.metric_violations({"ttft_p99_ms": 50.0, "burst_frac": 0.5}) == ["tpot_p99_ms None > 10"]
    with pytest.raises(InvalidInputError, match=r"`slo\.quantile` must be one of 50, 90, 99"):
        Slo(ttft_ms=100.0, quantile=95).metric_violations({"ttft_p99_ms": 50.0})  # no run reports a p95
    with pytest.raises(InvalidInputError, match="`goal` must be one of"):
        tune_serving_live("fake", goal="latency")
    for goal in ("sustainable_rate", "goodput"):
        with pytest.raises(InvalidInputError, match="`slo` must be given"):
            tune_serving_live("fake", goal=goal)
    with pytest.raises(InvalidInputError, match="`budget >= 1`"):
        tune_serving_live("fake", budget=0)
    with pytest.raises(InvalidInputError, match="`loads` keeps a rate search's loads"):
        tune_serving_live("fake", loads="somewhere")
    assert goal_value.__name__ == "goal_value"


@pytest.mark.serving_engine
@pytest.mark.skipif(LLAMA_SERVER is None, reason="llama-server is not built: run "
                    "`python -m perfpred.collect.serving.build llama-server` (~10 min, once)")
def test_a_real_three_launch_llama_server_tuning_run(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    from perfpred.collect.serving import LlamaServerEngine

    monkeypatch.setenv("PERFPRED_MODELS_DIR", str(tmp_path / "models"))
    workload = ServingWorkload(n_requests=8, concurrency=4, prompt_tokens=32, output_tokens=8, warmup_requests=1)
    space = SearchSpace({"parallel": [1, 4], "batch_size": [64, 256], "ubatch_size": [64]})
    store = MeasurementStore(tmp_path / "store", create=True)
    result = tune_serving_live("llama-server", "tiny", space=space, workload=workload, budget=3, seed=0,
                               slo=Slo(ttft_ms=30_000.0), store=store, run_dir=tmp_path,
                               engines={"llama-server": LlamaServerEngine(binary=LLAMA_SERVER)},
                               startup_timeout_s=60.0)
    assert result.n_launches == 3 and len(store.measurements(kind="serving")) == 3
    assert (result.history["status"] == "ok").all(), result.history.to_dict("records")
    assert result.best_value > 0 and result.best_config["threads"] == 1
    assert "llama-server --model" in result.command_line or "/llama-server --model" in result.command_line
    assert f"--parallel {result.best_config['parallel']}" in result.command_line


def test_the_first_model_guided_launches_after_a_three_launch_start_are_not_blind():
    """Trees cannot split 3 rows (the default start): the first model-guided picks come from a GP
    fitted on them, so they rank configs instead of seeing one constant prediction."""
    from perfpred.datasets import Measurement
    from perfpred.tuner._slo_search import SloSearchSettings, slo_search

    space = SearchSpace({"seqs": [1, 2, 4, 8, 16], "tokens": [128, 256, 512, 1024]})
    candidates = space.enumerate()

    def measure(config):  # throughput grows with seqs; tokens barely matter
        tok_s = 100.0 * config["seqs"] ** 0.8 * (1 + 0.01 * config["tokens"] / 1024)
        return Measurement(kind="serving", workload={}, config=dict(config), hardware_id="synthetic-0",
                           metrics={"output_tokens_per_s": tok_s})

    done = slo_search(candidates, measure, goal_metric="output_tokens_per_s", bounds={},
                      feasible=lambda m: True, settings=SloSearchSettings(budget=5, batch_size=2, seed=0))
    start, guided = done[:3], done[3:]
    assert all(e.predicted_goal is None for e in start)
    assert len({round(e.predicted_goal, 6) for e in guided}) == 2  # not one constant for every config
    best_seen = max(e.config["seqs"] for e in start)
    assert max(e.config["seqs"] for e in guided) >= best_seen  # it goes where throughput grows


def test_the_gp_trend_carries_a_slope_to_the_grids_edge():
    """Measured at max_num_seqs 1 and 8 only, a goal that grows with it should send the next
    launch to 16: a GP alone falls back to the mean away from its data, the linear trend does not."""
    import numpy as np
    import pandas as pd

    from perfpred.tuner._slo_search import _gp

    grid = pd.DataFrame([(s, b) for s in (1, 2, 4, 8, 16) for b in (128, 256, 512, 1024)],
                        columns=["max_num_seqs", "max_num_batched_tokens"])
    features = np.log2(grid).add_prefix("log2_")
    log_goal = (0.4 * features["log2_max_num_seqs"] + 0.05 * features["log2_max_num_batched_tokens"]).to_numpy()
    measured = np.array([int(np.flatnonzero((grid["max_num_seqs"] == s) & (grid["max_num_batched_tokens"] == b))[0])
                         for s, b in ((8, 256), (1, 128), (1, 1024), (8, 1024))])

    def next_launch(trend: bool) -> tuple[int, float]:
        mean, std = _gp(features, measured, log_goal[measured], trend)
        ucb = mean + 0.5 * std
        ucb[measured] = -np.inf
        at_16 = float(mean[grid["max_num_seqs"].to_numpy() == 16].max())
        return int(grid["max_num_seqs"].iloc[int(np.argmax(ucb))]), at_16

    seqs, at_16 = next_launch(True)
    assert seqs == 16 and at_16 == pytest.approx(log_goal.max(), abs=0.1)
    seqs, at_16 = next_launch(False)
    assert seqs < 16 and at_16 < log_goal[measured].max()  # what the trend is for
