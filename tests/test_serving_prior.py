"""The serving search's prior: a model of earlier runs picks the first launch and steers the rest
as far as it ranks the launches right."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("xgboost")

from perfpred.collect.serving import ServingCollector, ServingConfig, ServingWorkload
from perfpred.datasets import Measurement, MeasurementStore
from perfpred.errors import InvalidInputError
from perfpred.tuner import SearchSpace, fit_serving_prior
from perfpred.tuner._serving_live import tune_serving_live
from perfpred.tuner._serving_prior import serving_prior
from perfpred.tuner._slo_search import SloSearchSettings, prior_agreement, slo_search

HARDWARE = {"hardware_id": "cpu-test-0000000001", "hardware_name": "test cpu"}
FAST = ServingWorkload(n_requests=12, concurrency=6, prompt_tokens=8, output_tokens=6, warmup_requests=0)
SPACE = SearchSpace({"seqs": [1, 2, 4, 8, 16], "tokens": [128, 256, 512, 1024]})


@pytest.fixture(autouse=True)
def _fixed_hardware(monkeypatch):
    monkeypatch.setattr(ServingCollector, "hardware", property(lambda self: HARDWARE))


def _tok_s(config) -> float:  # throughput grows with seqs; 512 tokens a little ahead of the rest
    return 100.0 * config["seqs"] ** 0.8 * (1.1 if config["tokens"] == 512 else 1.0)


def _measure(config) -> Measurement:
    return Measurement(kind="serving", workload={}, config=dict(config), hardware_id="synthetic-0",
                       metrics={"output_tokens_per_s": _tok_s(config)})


def _search(prior, budget=5, **settings):
    candidates = SPACE.enumerate()
    return candidates, slo_search(candidates, _measure, goal_metric="output_tokens_per_s", bounds={},
                                  feasible=lambda m: True, settings=SloSearchSettings(budget=budget, **settings),
                                  prior=prior)


def test_prior_agreement_is_kendalls_tau_over_the_pairs_the_prior_tells_apart():
    assert prior_agreement(np.array([1.0, 2.0, 3.0]), np.array([5.0, 6.0, 9.0])) == 1.0
    assert prior_agreement(np.array([1.0, 2.0, 3.0]), np.array([9.0, 6.0, 5.0])) == 0.0  # backwards: floored
    assert prior_agreement(np.array([1.0, 2.0, 3.0]), np.array([5.0, 9.0, 6.0])) == pytest.approx(1 / 3)
    assert prior_agreement(np.array([2.0, 2.0]), np.array([1.0, 9.0])) == 1.0  # no pair told apart: no evidence
    assert prior_agreement(np.array([]), np.array([])) == 1.0


def test_a_right_prior_launches_its_best_first_then_the_farthest_config_and_finds_the_best():
    _, done = _search(np.log([_tok_s(c) / 7.0 for c in candidates_records()]))  # right order, wrong level
    first, second = done[0].config, done[1].config
    assert first["seqs"] == 16 and first["tokens"] == 512  # the prior's best: no space-filling start
    assert done[0].predicted_goal == pytest.approx(_tok_s(first) / 7.0)
    assert second["seqs"] == 1 and second["tokens"] in (128, 1024)  # as far from the first as the space goes
    assert done[1].predicted_goal is None  # the calibration pick is not the model's choice
    assert max(e.goal for e in done) == pytest.approx(max(_tok_s(c) for c in candidates_records()))


def test_a_backwards_prior_fades_after_the_launches_contradict_it():
    backwards = -np.log([_tok_s(c) for c in candidates_records()])
    _, done = _search(backwards, budget=6)
    assert done[0].config["seqs"] == 1  # the prior's (wrong) best goes first
    # The calibration launches contradict its ranking, so the prior's weight drops to 0 and the
    # rest climb where throughput grows; trusted throughout, it sent the fourth launch back to
    # 2 sequences, and 6 launches ended at 0.91 of the best.
    assert done[2].config["seqs"] > 2 and all(e.config["seqs"] >= 8 for e in done[2:])
    assert max(e.goal for e in done) == pytest.approx(max(_tok_s(c) for c in candidates_records()))


def test_a_prior_must_be_one_finite_log_goal_per_candidate():
    with pytest.raises(InvalidInputError, match="a prior must be 20 finite log goals, one per candidate"):
        _search(np.zeros(3))
    with pytest.raises(InvalidInputError, match="1 non-finite"):
        _search(np.r_[np.zeros(19), np.nan])
    with pytest.raises(InvalidInputError, match="`calibration_picks >= 0` must hold"):
        SloSearchSettings(budget=3, calibration_picks=-1)


def candidates_records():
    return SPACE.enumerate().to_dict("records")


def _earlier_runs(model: str) -> list[Measurement]:
    """An earlier run on another model, as its store holds it: what ``describe`` knows before each
    launch plus the measured tokens/s (more slots, more throughput; ``token_ms`` slows every step)."""
    collector = ServingCollector()
    runs = []
    for slots in (1, 2, 3, 6):
        for token_ms in (1.0, 3.0):
            row = collector.describe(ServingConfig("fake", {"slots": slots, "token_ms": token_ms}, FAST, model))
            runs.append(Measurement(
                kind="serving", hardware_id=row["hardware_id"], hardware=HARDWARE,
                workload={k[9:]: v for k, v in row.items() if k.startswith("workload.")},
                config={k[7:]: v for k, v in row.items() if k.startswith("config.")},
                metrics={"output_tokens_per_s": 50.0 * slots / token_ms}))
    return runs


def _earlier_rows(model: str) -> pd.DataFrame:
    return pd.DataFrame([m.to_row() for m in _earlier_runs(model)])


def test_describe_gives_the_columns_a_launch_row_has_before_launching():
    collector = ServingCollector()
    cfg = ServingConfig("fake", {"slots": 3, "token_ms": 1.0}, FAST, "small-20m")
    row = collector.describe(cfg)
    assert row["kind"] == "serving" and row["hardware_id"] == HARDWARE["hardware_id"]
    assert row["config.max_num_seqs"] == 3 and row["config.slots"] == 3
    assert row["workload.model"].startswith("small-20m") and row["workload.concurrency"] == 6
    assert row["workload.total_params_b"] > 0 and not any(k.startswith("metric.") for k in row)
    measured = Measurement(kind="serving", workload={k[9:]: v for k, v in row.items() if k.startswith("workload.")},
                           config={k[7:]: v for k, v in row.items() if k.startswith("config.")},
                           hardware_id=row["hardware_id"], metrics={"output_tokens_per_s": 1.0})
    assert measured.measurement_id == collector.measurement_id(cfg)  # the very row a launch would write


def test_a_prior_from_another_models_store_picks_the_first_launch(tmp_path):
    store = MeasurementStore(tmp_path / "earlier", create=True)
    store.append(_earlier_runs("small-20m"))
    launches = []

    def measure(cfg):  # this model: the same trend, 10x the level
        launches.append(dict(cfg.knobs))
        value = 500.0 * cfg.knobs["slots"] / cfg.knobs["token_ms"]
        return Measurement(kind="serving", workload={}, config=dict(cfg.knobs), hardware_id=HARDWARE["hardware_id"],
                           metrics={"output_tokens_per_s": value, "error_rate": 0.0})

    space = SearchSpace({"slots": [1, 3, 6], "token_ms": [1.0, 3.0]})
    result = tune_serving_live("fake", "tiny", space=space, workload=FAST, budget=3, measure=measure,
                               prior=tmp_path / "earlier")
    assert launches[0]["slots"] == 6  # the prior's best, before any launch here
    assert not math.isnan(result.history["predicted_goal"].iloc[0])
    assert result.best_config["slots"] == 6 and result.best_config["token_ms"] == 1.0
    # The same from a model fitted beforehand, or the rows themselves.
    model = fit_serving_prior(_earlier_rows("small-20m"), "output_tokens_per_s")
    again = tune_serving_live("fake", "tiny", space=space, workload=FAST, budget=3, measure=measure, prior=model)
    assert again.history.iloc[0]["slots"] == 6


def test_bad_priors_fail_before_any_launch(tmp_path):
    def measure(cfg):
        raise AssertionError("no launch may happen")

    space = SearchSpace({"slots": [1, 3], "token_ms": [1.0]})
    with pytest.raises(InvalidInputError, match="the prior's store must exist"):
        tune_serving_live("fake", space=space, workload=FAST, budget=2, measure=measure, prior=tmp_path / "nowhere")
    rows = _earlier_rows("small-20m").drop(columns="metric.output_tokens_per_s")
    with pytest.raises(InvalidInputError, match=r"needs >= 5 earlier serving rows that measured "
                                                r"metric.output_tokens_per_s, but got 0"):
        tune_serving_live("fake", space=space, workload=FAST, budget=2, measure=measure, prior=rows)
    rate_model = fit_serving_prior(_earlier_rows("small-20m").rename(
        columns={"metric.output_tokens_per_s": "metric.sustainable_rate_rps"}), "sustainable_rate_rps")
    with pytest.raises(InvalidInputError, match=r"must predict the goal metric\.output_tokens_per_s"):
        tune_serving_live("fake", space=space, workload=FAST, budget=2, measure=measure, prior=rate_model)
    with pytest.raises(InvalidInputError, match="a prior is a table of serving rows, a store or its path, but got int"):
        tune_serving_live("fake", space=space, workload=FAST, budget=2, measure=measure, prior=42)
    with pytest.raises(InvalidInputError, match=r"metric\.output_tokens_per_s, but it predicts \[\]"):
        serving_prior(object(), pd.DataFrame(), "output_tokens_per_s")
