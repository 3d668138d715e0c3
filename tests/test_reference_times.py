"""Other hardware's recorded times of the same config as features (ReferenceTimes, PerformanceModel(reference=))."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from perfpred.errors import InvalidInputError
from perfpred.features import ReferenceTimes, reference_key_columns
from perfpred.models import LogTargetXGBRegressor, PerformanceModel


def _space(gpu: str, speed: float, seed: int) -> pd.DataFrame:
    """A 4x4x4x2 tuning space whose times share a rugged shape across GPUs (hard from params alone)."""
    rugged = np.random.RandomState(42)  # the same per-config ruggedness on every GPU
    rows = []
    spec = json.dumps({"hardware_id": gpu, "peak_gflops": {"fp32": 1e4 * speed}, "mem_bw_gbs": 500.0})
    noise = np.random.RandomState(seed)
    for bx, by, tx, shmem in itertools.product([16, 32, 64, 128], [1, 2, 4, 8], [1, 2, 3, 4], [0, 1]):
        shape = (1 + 8 / bx) * (1 + 1 / by) * (1.3 if tx == 3 else 1.0) * (0.8 if shmem else 1.0)
        runtime = shape * np.exp(rugged.normal(0, 0.3)) / speed * np.exp(noise.normal(0, 0.01))
        rows.append({"config.block_size_x": bx, "config.block_size_y": by, "config.tile_size_x": tx,
                     "config.use_shmem": shmem, "workload.problem_size_x": 4096, "hardware_id": gpu,
                     "hardware_json": spec, "runtime_ms": runtime})
    return pd.DataFrame(rows)


def _mape(true: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean(np.abs(pred - true) / true) * 100)


def test_reference_features_match_configs_across_dtypes_and_fill_gaps():
    ref = pd.concat([_space("gpu-a", 1.0, 0), _space("gpu-b", 2.0, 1)], ignore_index=True)
    ref["config.block_size_x"] = ref["config.block_size_x"].astype(float)  # 16.0 must match 16
    gap = (ref["hardware_id"] == "gpu-b") & (ref["config.block_size_x"] == 16.0)
    ref.loc[gap, "runtime_ms"] = np.nan  # failed there: no time
    rows = _space("gpu-c", 3.0, 2)
    times = ReferenceTimes.from_measurements(ref, reference_key_columns(rows, ref), exclude_hardware=["gpu-c"])
    feats = times.features(rows)
    assert times.hardware_ids == ["gpu-a", "gpu-b"]
    a = ref[ref["hardware_id"] == "gpu-a"]["runtime_ms"].to_numpy()
    np.testing.assert_allclose(feats["ref_log2_runtime_ms__gpu-a"].to_numpy(), np.log2(a))
    # gpu-b never ran block_size_x 16: filled as its mean shifted by gpu-a's offset from gpu-a's mean
    missing = (rows["config.block_size_x"] == 16).to_numpy()
    assert feats["ref_missing_fraction"][missing].eq(0.5).all() and feats["ref_missing_fraction"][~missing].eq(0).all()
    b_mean = np.log2(ref.loc[(ref["hardware_id"] == "gpu-b") & ~gap, "runtime_ms"]).mean()
    expected = b_mean + np.log2(a[missing]) - np.log2(a).mean()
    np.testing.assert_allclose(feats["ref_log2_runtime_ms__gpu-b"].to_numpy()[missing], expected)
    unknown = rows.head(2).assign(**{"config.block_size_y": 99})  # outside every reference's space
    assert times.features(unknown)["ref_missing_fraction"].eq(1.0).all()
    assert np.isfinite(times.features(unknown).to_numpy()).all()


def test_reference_on_the_training_hardware_is_an_error():
    rows = _space("gpu-c", 3.0, 2)
    model = PerformanceModel(kind="kernel", regressor=LogTargetXGBRegressor(n_estimators=20, n_jobs=1),
                             reference=pd.concat([_space("gpu-a", 1.0, 0), rows]))
    with pytest.raises(InvalidInputError, match=r"reference hardware must differ.*'gpu-c'"):
        model.fit(rows)
    with pytest.raises(InvalidInputError, match="`reference` must be a DataFrame"):
        PerformanceModel(kind="kernel", reference=[1, 2]).fit(rows)
    other_problem = _space("gpu-a", 1.0, 0).assign(**{"workload.problem_size_x": 512})
    with pytest.raises(InvalidInputError, match=r"none of them matched.*workload\.problem_size_x"):
        PerformanceModel(kind="kernel", reference=other_problem).fit(rows)


def test_a_prebuilt_reference_lookup_predicts_as_the_table_does_and_keeps_its_checks():
    """One ReferenceTimes shared by many models (auto's cross-validation folds do this) must act
    exactly like the recordings it was built from."""
    reference = pd.concat([_space("gpu-a", 1.0, 0), _space("gpu-b", 2.0, 1)], ignore_index=True)
    new = _space("gpu-c", 3.0, 2)
    train, test = new.iloc[::3], new.iloc[1::3]
    reg = LogTargetXGBRegressor(n_estimators=50, max_depth=3, n_jobs=1)
    lookup = ReferenceTimes.from_measurements(reference, reference_key_columns(new, reference))
    for mode in ("features", "offset"):
        from_table = PerformanceModel(kind="kernel", regressor=reg, reference=reference, reference_mode=mode)
        from_lookup = PerformanceModel(kind="kernel", regressor=reg, reference=lookup, reference_mode=mode)
        np.testing.assert_allclose(from_lookup.fit(train).predict(test), from_table.fit(train).predict(test))
    with pytest.raises(InvalidInputError, match=r"reference hardware must differ.*'gpu-a'"):
        PerformanceModel(kind="kernel", regressor=reg, reference=lookup).fit(_space("gpu-a", 1.0, 5))
    power = ReferenceTimes.from_measurements(reference.assign(power_w=100.0), lookup.key_columns, target="power_w")
    with pytest.raises(InvalidInputError, match=r"target 'runtime_ms', but holds 'power_w'"):
        PerformanceModel(kind="kernel", regressor=reg, reference=power).fit(train)


def test_a_new_gpu_is_learnt_from_few_rows_with_the_old_gpus_as_reference():
    """64 measured configs of a new GPU: with two old GPUs' recordings the model has the space's
    ruggedness for free; from its own rows alone it cannot."""
    reference = pd.concat([_space("gpu-a", 1.0, 0), _space("gpu-b", 2.0, 1)], ignore_index=True)
    new = _space("gpu-c", 3.0, 2)
    order = np.random.RandomState(0).permutation(len(new))
    train, test = new.iloc[order[:64]], new.iloc[order[64:]]
    reg = LogTargetXGBRegressor(n_estimators=300, max_depth=3, learning_rate=0.05, n_jobs=1)
    plain = PerformanceModel(kind="kernel", regressor=reg).fit(train)
    with_ref = clone(PerformanceModel(kind="kernel", regressor=reg, reference=reference)).fit(train)
    plain_mape = _mape(test["runtime_ms"].to_numpy(), plain.predict(test))
    ref_mape = _mape(test["runtime_ms"].to_numpy(), with_ref.predict(test))
    assert "ref_log2_runtime_ms_mean" in with_ref.feature_names_
    assert ref_mape < 5.0 < plain_mape


def test_reference_offset_follows_a_sibling_from_few_rows_and_auto_knows_when_not_to():
    """From 24 rows, trees split on a sibling's times in steps; the ratio to a fitted mix of them
    follows it. Where the reference orders the space at random, cross-validation keeps the features."""
    reference = pd.concat([_space("gpu-a", 1.0, 0), _space("gpu-b", 2.0, 1)], ignore_index=True)
    new = _space("gpu-c", 3.0, 2)
    order = np.random.RandomState(0).permutation(len(new))
    train, test = new.iloc[order[:24]], new.iloc[order[24:]]
    reg = LogTargetXGBRegressor(n_estimators=200, max_depth=3, learning_rate=0.1, n_jobs=1)
    scores = {}
    for mode in ("features", "offset", "linear", "auto"):
        model = PerformanceModel(kind="kernel", regressor=reg, reference=reference, reference_mode=mode).fit(train)
        scores[mode] = _mape(test["runtime_ms"].to_numpy(), model.predict(test))
        if mode == "auto":
            chosen = model.reference_mode_
            assert chosen in ("offset", "linear"), model.reference_cv_mape_pct_
    assert scores["offset"] < 0.5 * scores["features"], scores
    assert scores["linear"] < 0.5 * scores["features"], scores  # the sibling scaled, no trees
    assert scores["auto"] == pytest.approx(scores[chosen])
    linear = PerformanceModel(kind="kernel", regressor="xgb-quantile", reference=reference,
                              reference_mode="linear").fit(train)
    with pytest.raises(InvalidInputError, match="reference_mode='linear'"):
        linear.predict_interval(test)

    scrambled = reference.copy()
    scrambled["runtime_ms"] = np.random.RandomState(3).permutation(scrambled["runtime_ms"].to_numpy())
    auto = PerformanceModel(kind="kernel", regressor=reg, reference=scrambled, reference_mode="auto").fit(train)
    assert auto.reference_mode_ == "features", auto.reference_cv_mape_pct_
    few = PerformanceModel(kind="kernel", regressor=reg, reference=reference, reference_mode="auto").fit(train.head(5))
    assert few.reference_mode_ == "features"  # five rows are too few to cross-validate the choice
    with pytest.raises(InvalidInputError, match="`reference_mode` must be one of"):
        PerformanceModel(kind="kernel", regressor=reg, reference=reference, reference_mode="both").fit(train)
