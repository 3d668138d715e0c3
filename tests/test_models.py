"""Estimators (scikit-learn contract), PerformanceModel, metrics, evaluation protocols, learning."""

from __future__ import annotations

import warnings
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks

from perfpred.datasets import leave_one_group_out, make_split
from perfpred.datasets._splits import GEMM_SHAPE_COLUMNS, workload_columns
from perfpred.errors import InvalidInputError
from perfpred.models import (
    AutoRegressor,
    LogTargetXGBRegressor,
    PerformanceModel,
    RooflineRegressor,
    ape,
    evaluate_models,
    mape,
    median_ape,
    p90_ape,
    r2_linear,
    r2_log,
    regression_report,
    spearman,
    training_frame,
)

HW_A = "cpu-synthetic-a-0000000001"
HW_B = "cpu-synthetic-b-0000000002"


def fast_xgb(**kwargs) -> PerformanceModel:
    return PerformanceModel(regressor=LogTargetXGBRegressor(n_estimators=50, n_jobs=1), **kwargs)


def shape_keys(df: pd.DataFrame) -> set[tuple]:
    return set(map(tuple, df[list(GEMM_SHAPE_COLUMNS)].to_numpy().tolist()))


# ---------------------------------------------------------------------------- scikit-learn contract


# learning_rate 0.3 so that 50 trees fit the checks' toy data (check_regressors_train wants R² > 0.5).
@parametrize_with_checks([LogTargetXGBRegressor(n_estimators=50, learning_rate=0.3, n_jobs=1), RooflineRegressor()])
def test_sklearn_estimator_contract(estimator, check):
    check(estimator)


def test_log_target_xgb_refuses_non_positive_targets():
    X = np.arange(20, dtype=float).reshape(10, 2)
    with pytest.raises(InvalidInputError, match="target > 0"):
        LogTargetXGBRegressor(n_estimators=5).fit(X, np.r_[np.ones(9), 0.0])


def test_log_target_xgb_predictions_are_positive_and_accept_nan_features():
    rng = np.random.default_rng(0)
    X = rng.random((50, 3))
    X[::7, 1] = np.nan
    y = np.exp(3 * X[:, 0])
    pred = LogTargetXGBRegressor(n_estimators=50, learning_rate=0.3, n_jobs=1).fit(X, y).predict(X)
    assert (pred > 0).all()
    assert mape(y, pred) < 20


def test_roofline_regressor_returns_two_to_the_column():
    X = np.array([[0.0, 3.0], [1.0, -1.0]])
    pred = RooflineRegressor(column=1).fit(X, [1.0, 1.0]).predict(X)
    np.testing.assert_allclose(pred, [8.0, 0.5])
    with pytest.raises(InvalidInputError, match="column"):
        RooflineRegressor(column=2).fit(X, [1.0, 1.0])


# ---------------------------------------------------------------------------- PerformanceModel


def test_get_params_set_params_and_clone():
    model = PerformanceModel(regressor="rf", random_state=3, residual_of=None)
    params = model.get_params()
    assert params["regressor"] == "rf"
    assert params["random_state"] == 3
    assert params["residual_of"] is None
    model.set_params(regressor="xgb", random_state=4)
    assert model.regressor == "xgb" and model.random_state == 4
    copy = clone(model)
    assert copy is not model
    assert copy.get_params() == model.get_params()


def test_nested_regressor_params_are_reachable():
    model = fast_xgb()
    assert model.get_params()["regressor__n_estimators"] == 50
    model.set_params(regressor__max_depth=2)
    assert model.regressor.max_depth == 2


def test_clone_of_a_fitted_model_is_unfitted(synthetic_gemm_table):
    model = fast_xgb().fit(synthetic_gemm_table)
    with pytest.raises(NotFittedError):
        clone(model).predict(synthetic_gemm_table)


def test_predict_before_fit_raises_not_fitted(synthetic_gemm_table):
    with pytest.raises(NotFittedError):
        PerformanceModel().predict(synthetic_gemm_table)
    with pytest.raises(NotFittedError):
        PerformanceModel().predict_one(m=64, n=64, k=64)


@pytest.mark.parametrize("X", [np.ones((20, 4)), [{"workload.m": 1}] * 20], ids=["ndarray", "records"])
def test_fit_on_a_non_dataframe_is_refused(X):
    with pytest.raises(InvalidInputError, match="DataFrame"):
        fast_xgb().fit(X, np.ones(20))


@pytest.mark.parametrize("bad", [-1.0, 0.0], ids=["negative", "zero"])
def test_non_positive_targets_are_refused(synthetic_gemm_table, bad):
    df = synthetic_gemm_table.copy()
    df.loc[5, "runtime_ms"] = bad
    with pytest.raises(InvalidInputError, match="target > 0"):
        fast_xgb().fit(df)


@pytest.mark.parametrize("regressor", ["xgb", "rf"])
def test_nan_targets_are_refused_with_invalid_input_error(synthetic_gemm_table, regressor):
    df = synthetic_gemm_table.copy()
    df.loc[5, "runtime_ms"] = np.nan
    model = fast_xgb() if regressor == "xgb" else PerformanceModel(regressor="rf")
    with pytest.raises(InvalidInputError):
        model.fit(df)


def test_fit_refuses_missing_target_mismatched_y_and_tiny_tables(synthetic_gemm_table):
    with pytest.raises(InvalidInputError, match="runtime_ms"):
        fast_xgb().fit(synthetic_gemm_table.drop(columns=["runtime_ms"]))
    with pytest.raises(InvalidInputError, match="equal length"):
        fast_xgb().fit(synthetic_gemm_table, np.ones(3))
    with pytest.raises(InvalidInputError, match="at least 2 rows"):
        fast_xgb().fit(synthetic_gemm_table.iloc[:1])


def test_unknown_regressor_name_is_refused(synthetic_gemm_table):
    with pytest.raises(InvalidInputError, match="no-such-regressor"):
        PerformanceModel(regressor="no-such-regressor").fit(synthetic_gemm_table)


def test_an_estimator_instance_is_cloned_not_fitted_in_place(synthetic_gemm_table):
    base = LogTargetXGBRegressor(n_estimators=20, n_jobs=1)
    model = PerformanceModel(regressor=base).fit(synthetic_gemm_table)
    assert not hasattr(base, "booster_")
    assert model.regressor_ is not base
    assert model.n_train_ == len(synthetic_gemm_table)
    assert model.hardware_specs_.keys() == {HW_A}


@pytest.mark.parametrize("residual_of", ["log2_roofline_ms", None])
def test_residual_mode_on_and_off_both_predict(synthetic_gemm_table, residual_of):
    train, test = synthetic_gemm_table.iloc[:240], synthetic_gemm_table.iloc[240:]
    model = fast_xgb(residual_of=residual_of).fit(train)
    assert model.uses_residual_ is (residual_of is not None)
    pred = model.predict(test)
    assert pred.shape == (len(test),)
    assert np.isfinite(pred).all() and (pred > 0).all()
    assert mape(test["runtime_ms"], pred) < 60  # learned something in both modes


def test_reuse_measured_answers_a_seen_row_with_its_measured_median(synthetic_gemm_table):
    train, test = synthetic_gemm_table.iloc[:240], synthetic_gemm_table.iloc[240:]
    seen = test.iloc[:1]
    # The same shape measured twice in training at a time no smooth model would predict.
    twice = pd.concat([seen, seen]).assign(runtime_ms=[7.0, 9.0])
    train = pd.concat([train, twice], ignore_index=True)
    reusing = fast_xgb(reuse_measured=True).fit(train)
    plain = fast_xgb().fit(train)
    pred, ref = reusing.predict(test), plain.predict(test)
    assert pred[0] == 8.0 and abs(ref[0] - 8.0) > 0.1
    np.testing.assert_allclose(pred[1:], ref[1:])  # shapes never measured: the regressor's
    # The same shape on other hardware is not a match, even with an identical spec sheet.
    elsewhere = seen.assign(hardware_id=HW_B)
    np.testing.assert_allclose(reusing.predict(elsewhere), plain.predict(elsewhere))


def test_residual_mode_is_off_for_raw_target_regressors(synthetic_gemm_table):
    model = PerformanceModel(regressor="rf").fit(synthetic_gemm_table)
    assert model.uses_residual_ is False


def test_residual_of_an_unknown_feature_is_refused(synthetic_gemm_table):
    with pytest.raises(InvalidInputError, match="residual_of"):
        fast_xgb(residual_of="no_such_feature").fit(synthetic_gemm_table)


def test_without_peaks_the_model_falls_back_to_the_direct_target(synthetic_gemm_table):
    no_spec = synthetic_gemm_table.drop(columns=["hardware_json"])
    model = fast_xgb().fit(no_spec)
    assert model.uses_residual_ is False
    assert np.isfinite(model.predict(no_spec)).all()
    # A model trained relative to the roofline cannot predict rows whose peaks are unknown; rows
    # naming hardware it was trained on get that hardware's spec.
    residual = fast_xgb().fit(synthetic_gemm_table)
    assert np.allclose(residual.predict(no_spec), residual.predict(synthetic_gemm_table))
    with pytest.raises(InvalidInputError, match="log2_roofline_ms"):
        residual.predict(no_spec.assign(hardware_id="cpu-unknown"))


def test_predict_one_with_and_without_hardware_id(synthetic_gemm_table):
    model = fast_xgb().fit(synthetic_gemm_table)
    implicit = model.predict_one(m=256, n=256, k=256, dtype="fp32", threads=1)
    explicit = model.predict_one(hardware_id=HW_A, m=256, n=256, k=256, dtype="fp32", threads=1)
    assert implicit == explicit
    assert implicit > 0
    bigger = model.predict_one(m=1024, n=1024, k=1024, dtype="fp32", threads=1)
    assert bigger > implicit  # 64x the work
    with pytest.raises(InvalidInputError, match="cpu-unknown"):
        model.predict_one(hardware_id="cpu-unknown", m=256, n=256, k=256)


def test_predict_one_needs_a_hardware_id_when_trained_on_two(gemm_table_factory):
    df = gemm_table_factory(120, seed=2, hardware_ids=(HW_A, HW_B))
    model = fast_xgb().fit(df)
    assert model.hardware_specs_.keys() == {HW_A, HW_B}
    with pytest.raises(InvalidInputError, match="pass hardware_id"):
        model.predict_one(m=64, n=64, k=64)
    a = model.predict_one(hardware_id=HW_A, m=512, n=512, k=512)
    b = model.predict_one(hardware_id=HW_B, m=512, n=512, k=512)
    assert a > b  # B has 4x the peak


# ---------------------------------------------------------------------------- metrics


def test_metrics_on_hand_cases():
    t = np.array([1.0, 2.0, 4.0, 8.0])
    assert mape(t, t) == 0.0
    assert median_ape(t, t) == 0.0
    assert r2_log(t, t) == 1.0
    assert spearman(t, t) == pytest.approx(1.0)
    np.testing.assert_allclose(ape([1.0, 2.0], [2.0, 1.0]), [100.0, 50.0])
    assert mape([1.0, 2.0], [2.0, 1.0]) == 75.0
    assert median_ape([1.0, 1.0, 1.0], [1.1, 1.2, 2.0]) == pytest.approx(20.0)
    assert p90_ape(np.ones(10), np.r_[np.ones(9), 3.0]) == pytest.approx(20.0)
    assert spearman(t, t[::-1]) == pytest.approx(-1.0)
    assert r2_linear(t, np.full(4, t.mean())) == pytest.approx(0.0)
    assert np.isnan(spearman([1.0], [1.0]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a constant prediction ranks nothing: NaN, not a SciPy warning
        assert np.isnan(spearman([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]))


def test_regression_report_has_the_standard_set():
    report = regression_report([1.0, 2.0, 3.0], [1.0, 2.0, 3.3])
    assert set(report) == {"mape_pct", "median_ape_pct", "p90_ape_pct", "r2_log", "r2_linear", "spearman_rho", "n"}
    assert report["n"] == 3
    assert report["mape_pct"] == pytest.approx(10.0 / 3)


@pytest.mark.parametrize(
    ("y_true", "y_pred", "needle"),
    [
        ([1.0, 2.0], [1.0], "equal length"),
        ([[1.0], [2.0]], [[1.0], [2.0]], "1-D"),
        ([], [], "at least one row"),
        ([1.0, 0.0], [1.0, 1.0], "y_true > 0"),
        ([1.0, -2.0], [1.0, 1.0], "y_true > 0"),
        ([1.0, np.nan], [1.0, 1.0], "y_true > 0"),
    ],
)
def test_metrics_refuse_bad_input(y_true, y_pred, needle):
    for fn in (mape, r2_log, spearman):
        with pytest.raises(InvalidInputError, match=needle):
            fn(y_true, y_pred)


# ---------------------------------------------------------------------------- evaluation protocols


class RecordingModel(PerformanceModel):
    """Remembers the rows each clone was fit on and predicted for (class-level, reset per test)."""

    log: ClassVar[list[tuple[str, pd.DataFrame]]] = []

    def fit(self, X, y=None):
        RecordingModel.log.append(("fit", X))
        return super().fit(X, y)

    def predict(self, X):
        RecordingModel.log.append(("predict", X))
        return super().predict(X)


@pytest.fixture
def recording():
    RecordingModel.log = []
    yield RecordingModel
    RecordingModel.log = []


def fit_predict_pairs(log):
    fits = [x for op, x in log if op == "fit"]
    preds = [x for op, x in log if op == "predict"]
    assert len(fits) == len(preds) > 0
    return list(zip(fits, preds, strict=True))


def test_shape_split_never_shares_a_shape_between_train_and_test(synthetic_gemm_table, recording):
    df = pd.concat([synthetic_gemm_table, synthetic_gemm_table.assign(
        runtime_ms=synthetic_gemm_table["runtime_ms"] * 1.01,
        measurement_id=synthetic_gemm_table["measurement_id"] + "-rep")], ignore_index=True)  # every shape twice
    results = evaluate_models(df, {"rec": recording(regressor="roofline")}, split="shape", seeds=(0, 1, 2))
    pairs = fit_predict_pairs(recording.log)
    assert len(pairs) == 3
    for train, test in pairs:
        assert shape_keys(train).isdisjoint(shape_keys(test))
        assert len(train) + len(test) == len(df)
    assert [f["fold"] for f in results["rec"]["folds"]] == ["seed=0", "seed=1", "seed=2"]
    assert results["rec"]["mean"]["n"] == pytest.approx(np.mean([len(t) for _, t in pairs]))


def test_random_split_never_shares_a_row_between_train_and_test(synthetic_gemm_table, recording):
    results = evaluate_models(synthetic_gemm_table, {"rec": recording(regressor="roofline")}, split="random",
                              seeds=(0, 1), test_size=0.25)
    pairs = fit_predict_pairs(recording.log)
    for train, test in pairs:
        assert set(train["measurement_id"]).isdisjoint(test["measurement_id"])
        assert len(test) == 75
    assert results["rec"]["folds"][0]["n_train"] == 225
    assert {"mape_pct", "r2_log", "spearman_rho", "fit_s", "predict_s"} <= set(results["rec"]["mean"])


@pytest.mark.parametrize("train_size", [None, 100])
def test_random_split_keeps_repeated_records_of_a_configuration_together(synthetic_gemm_table, train_size):
    # Repeats as the importers keep them: "<measurement_id>-<hash of the values>".
    repeats = synthetic_gemm_table.iloc[:60].assign(
        measurement_id=lambda t: t["measurement_id"] + "-0badc0de", runtime_ms=lambda t: t["runtime_ms"] * 1.1)
    table = pd.concat([synthetic_gemm_table, repeats], ignore_index=True)
    configuration = table["measurement_id"].str.partition("-")[0]
    for seed in range(3):
        tr, te = make_split(table, "random", seed=seed, train_size=train_size)
        assert set(configuration.iloc[tr]).isdisjoint(configuration.iloc[te])
        assert len(tr) + len(te) == len(table)
        if train_size is not None:
            assert train_size <= len(tr) <= train_size + 1  # whole configurations: one more row at most
    # Without repeats the split is the plain row shuffle it always was.
    from sklearn.model_selection import ShuffleSplit

    _, plain = next(ShuffleSplit(n_splits=1, test_size=0.2, random_state=0).split(synthetic_gemm_table))
    assert np.array_equal(make_split(synthetic_gemm_table, "random", seed=0)[1], plain)



def test_inner_cross_validation_keeps_repeated_records_of_a_configuration_in_one_fold(synthetic_gemm_table,
                                                                                         monkeypatch):
    """The CV inside a fit (regressor "auto", reference_mode "auto") is a split too: a fold must
    not score a configuration whose repeat it trained on."""
    import perfpred.models._auto as auto
    from perfpred.datasets._splits import kfold_splits

    repeats = synthetic_gemm_table.iloc[:60].assign(
        measurement_id=lambda t: t["measurement_id"] + "-0badc0de", runtime_ms=lambda t: t["runtime_ms"] * 1.1)
    table = pd.concat([synthetic_gemm_table, repeats], ignore_index=True)
    configuration = table["measurement_id"].str.partition("-")[0].to_numpy()
    seen = []

    def spy(n_rows, n_splits, seed, groups=None):
        folds = kfold_splits(n_rows, n_splits, seed, groups)
        seen.append(folds)
        return folds

    monkeypatch.setattr(auto, "kfold_splits", spy)
    # Two cheap candidates: the folds are drawn before any candidate is fitted, from the rows' groups
    # alone (deep-trees here cost a minute and tested nothing more).
    model = PerformanceModel(kind="gemm", regressor=AutoRegressor(candidates=("xgb", "hgb"), cv_folds=3))
    model.fit(table, table["runtime_ms"].to_numpy())
    assert len(seen) == 1 and len(seen[0]) == 3
    for train, test in seen[0]:
        assert set(configuration[train]).isdisjoint(configuration[test])
    # Without repeats the folds are the shuffled KFold they always were.
    from sklearn.model_selection import KFold

    plain = list(KFold(4, shuffle=True, random_state=0).split(np.arange(50)))
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(kfold_splits(50, 4, 0), plain, strict=True))
    with pytest.raises(InvalidInputError, match="configurations >= folds"):
        kfold_splits(4, 3, 0, np.array([0, 0, 1, 1]))

def test_serving_rows_from_a_store_that_also_holds_gemms_are_split_by_model():
    # A store's table gives serving rows the GEMM shape columns too, all empty.
    rows = pd.DataFrame({"workload.m": np.nan, "workload.n": np.nan, "workload.k": np.nan,
                         "workload.model": ["a", "a", "b", "b", "c", "c"]})
    assert workload_columns(rows) == ["workload.model"]


def test_make_split_shape_groups_are_disjoint_and_deterministic(synthetic_gemm_table):
    tr, te = make_split(synthetic_gemm_table, "shape", seed=5)
    _, te2 = make_split(synthetic_gemm_table, "shape", seed=5)
    np.testing.assert_array_equal(te, te2)
    assert shape_keys(synthetic_gemm_table.iloc[tr]).isdisjoint(shape_keys(synthetic_gemm_table.iloc[te]))
    assert len(tr) + len(te) == len(synthetic_gemm_table)


def test_a_shape_split_holds_out_whole_workloads_of_every_kind(synthetic_gemm_table):
    assert workload_columns(synthetic_gemm_table) == list(GEMM_SHAPE_COLUMNS)
    rng = np.random.default_rng(0)
    serving = pd.DataFrame({"workload.model": rng.choice(["a", "b", "c", "d", "e"], 60),
                            "workload.task": rng.choice(["chat", "code"], 60), "config.max_num_seqs": 8})
    assert workload_columns(serving) == ["workload.model"]  # a new LLM, whatever its task
    tr, te = make_split(serving, "shape", seed=1)
    assert set(serving.iloc[tr]["workload.model"]).isdisjoint(serving.iloc[te]["workload.model"])
    kernel = pd.DataFrame({"workload.kernel_name": "conv", "workload.problem_size_x": rng.choice([512, 1024, 4096], 60),
                           "config.block_size_x": rng.choice([16, 32], 60)})
    assert workload_columns(kernel) == ["workload.problem_size_x"]  # the kernel's name does not vary
    one_problem = kernel.assign(**{"workload.problem_size_x": 4096})
    with pytest.raises(InvalidInputError, match=r"every row has the same workload.*split='random'"):
        make_split(one_problem, "shape")


def test_training_without_a_split_named_holds_out_workloads_where_there_are_several(synthetic_gemm_table):
    from perfpred.models import train_model

    gemm = train_model(synthetic_gemm_table, regressor="roofline", split=None, log_to_mlflow=False)
    assert gemm.split == "shape"
    # a kernel's tuning space recorded for one problem size: nothing to hold out but rows
    rng = np.random.default_rng(0)
    block, tile = rng.choice([16, 32, 64, 128], 80), rng.choice([1, 2, 4], 80)
    kernel = pd.DataFrame({"kind": "kernel", "status": "ok", "hardware_id": "gpu-x", "workload.kernel_name": "k",
                           "workload.problem_size_x": 4096, "config.block_size_x": block, "config.tile_size_x": tile,
                           "runtime_ms": (1 + 8 / block) * (1 + 1 / tile) * np.exp(rng.normal(0, 0.01, 80))})
    result = train_model(kernel, kind="kernel", regressor="xgb", split=None, log_to_mlflow=False)
    assert result.split == "random" and result.holdout["mape_pct"] < 10


def test_kernel_rows_train_deep_trees_by_default_which_follow_a_spaces_steps():
    from perfpred.models import default_regressor, train_model

    assert (default_regressor("kernel"), default_regressor("kernel-occupancy")) == ("deep-trees", "deep-trees")
    assert (default_regressor("gemm"), default_regressor("serving-attention")) == ("xgb", "xgb")
    # A tuning space with a cliff: past 24 values a thread (tile x vector x unroll) it spills registers, 8x slower.
    grid = pd.MultiIndex.from_product([[8, 16, 32, 64, 128, 256], [1, 2, 3, 4, 6, 8], [1, 2, 4, 8], [1, 2, 4]],
                                      names=["block", "tile", "unroll", "vec"]).to_frame(index=False)
    spill = grid["tile"] * grid["vec"] * grid["unroll"] > 24
    runtime = (1 + 16 / grid["block"]) * (1 + 1 / grid["tile"]) * np.where(spill, 8.0, 1.0)
    rng = np.random.default_rng(0)
    kernel = pd.DataFrame({"kind": "kernel", "status": "ok", "hardware_id": "gpu-x", "workload.kernel_name": "k",
                           "workload.problem_size_x": 4096,
                           **{f"config.{c}": grid[c] for c in grid.columns},
                           "runtime_ms": runtime * np.exp(rng.normal(0, 0.01, len(grid)))})
    default = train_model(kernel, kind="kernel", split=None, log_to_mlflow=False)
    shallow = train_model(kernel, kind="kernel", regressor="xgb", split=None, log_to_mlflow=False)
    assert default.model.regressor == "deep-trees"
    assert default.holdout["mape_pct"] < 0.7 * shallow.holdout["mape_pct"], (default.holdout, shallow.holdout)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [({"split": "hardware"}, "leave_one_group_out"), ({"split": "bogus"}, "bogus"),
     ({"split": "random", "test_size": 1.5}, "test_size"), ({"split": "shape", "test_size": 0.0}, "test_size")],
)
def test_make_split_refuses_bad_arguments(synthetic_gemm_table, kwargs, needle):
    with pytest.raises(InvalidInputError, match=needle):
        make_split(synthetic_gemm_table, **kwargs)


def test_leave_one_hardware_out_over_two_hardware_ids(gemm_table_factory, recording):
    df = gemm_table_factory(160, seed=4, hardware_ids=(HW_A, HW_B))
    folds = list(leave_one_group_out(df, "hardware_id"))
    assert sorted(label for label, _, _ in folds) == [HW_A, HW_B]
    for label, tr, te in folds:
        assert set(df["hardware_id"].iloc[te]) == {label}
        assert label not in set(df["hardware_id"].iloc[tr])
    results = evaluate_models(df, {"rec": recording(regressor=LogTargetXGBRegressor(n_estimators=50, n_jobs=1)),
                                   "roofline": PerformanceModel(regressor="roofline")}, split="hardware")
    assert sorted(f["fold"] for f in results["rec"]["folds"]) == [HW_A, HW_B]
    for train, test in fit_predict_pairs(recording.log):
        assert set(train["hardware_id"]).isdisjoint(test["hardware_id"])
    # Relative to the roofline, the efficiency curve transfers to unseen hardware.
    assert results["rec"]["mean"]["mape_pct"] < results["roofline"]["mean"]["mape_pct"]


def test_leave_one_group_out_needs_two_groups(synthetic_gemm_table):
    with pytest.raises(InvalidInputError, match=">= 2 distinct"):
        list(leave_one_group_out(synthetic_gemm_table, "hardware_id"))
    with pytest.raises(InvalidInputError, match="no_such_column"):
        list(leave_one_group_out(synthetic_gemm_table, "no_such_column"))


# ---------------------------------------------------------------------------- training_frame


def test_training_frame_keeps_only_usable_rows(synthetic_gemm_table):
    df = synthetic_gemm_table.copy()
    df.loc[0, "status"] = "oom"
    df.loc[0, "runtime_ms"] = np.nan
    df.loc[1, "status"] = "runtime_error"
    df.loc[2, "kind"] = "kernel"
    df.loc[3, "runtime_ms"] = np.nan
    rows = training_frame(df)
    assert len(rows) == len(df) - 4
    assert set(rows["measurement_id"]).isdisjoint(df["measurement_id"].iloc[:4])
    assert (rows["status"] == "ok").all() and (rows["runtime_ms"] > 0).all()
    assert rows.index.tolist() == list(range(len(rows)))


def test_a_serving_tpot_that_timed_a_burst_is_no_training_row():
    # Rows summarized before bursts were left out of the TPOT percentiles read ~0.01 ms there.
    tpot = [2.0 + 0.1 * i for i in range(12)] + [0.01]
    df = pd.DataFrame({"kind": "serving", "status": "ok", "metric.tpot_p50_ms": tpot,
                       "metric.output_tokens_per_s": [100.0] * 13})
    assert len(training_frame(df, kind="serving", target="metric.tpot_p50_ms")) == 12
    assert len(training_frame(df, kind="serving", target="metric.output_tokens_per_s")) == 13  # TPOT only


def test_a_feature_variant_trains_on_the_rows_of_the_kind_it_extends(synthetic_gemm_table):
    from perfpred.models import FEATURIZERS, row_kind

    df = synthetic_gemm_table.copy()
    df.loc[:4, "kind"] = "kernel"
    assert row_kind("gemm-gpu") == "gemm" and row_kind("gemm") == "gemm"
    assert row_kind("kernel-occupancy") == "kernel" and row_kind("serving-attention") == "serving"
    assert all(row_kind(k) in ("gemm", "kernel", "serving") for k in FEATURIZERS)
    assert len(training_frame(df, kind="gemm-gpu")) == len(training_frame(df, kind="gemm")) == len(df) - 5
    # Trained through the same path the CLI's `train --kind gemm-gpu` takes.
    model = PerformanceModel(kind="gemm-gpu").fit(training_frame(df, kind="gemm-gpu"))
    assert model.n_train_ == len(df) - 5 and "log2_wave_roofline_ms" in model.feature_names_


def test_training_frame_drops_rows_measured_while_the_reference_drifted(synthetic_gemm_table):
    df = synthetic_gemm_table.copy()
    df.loc[[10, 11], "ref_runtime_ms"] = 0.5 * 2.0  # twice the usual reference time: a noisy period
    df.loc[12, "ref_runtime_ms"] = 0.5 * 1.1  # 10% off: within tolerance
    assert len(training_frame(df)) == len(df)  # no filter unless asked
    rows = training_frame(df, max_ref_drift=0.25)
    assert len(rows) == len(df) - 2
    assert set(rows["measurement_id"]).isdisjoint(df["measurement_id"].iloc[[10, 11]])
    assert df["measurement_id"].iloc[12] in set(rows["measurement_id"])


def test_training_frame_refuses_empty_and_tiny_tables(synthetic_gemm_table):
    with pytest.raises(InvalidInputError, match="empty"):
        training_frame(synthetic_gemm_table.iloc[:0])
    with pytest.raises(InvalidInputError, match=">= 10 usable"):
        training_frame(synthetic_gemm_table.iloc[:5])
    with pytest.raises(InvalidInputError, match="power_w"):
        training_frame(synthetic_gemm_table, target="power_w")


# ---------------------------------------------------------------------------- it learns


def test_xgb_beats_roofline_and_random_forest_on_unseen_shapes(synthetic_gemm_table):
    models = {"xgb": fast_xgb(), "rf": PerformanceModel(regressor="rf"),
              "roofline": PerformanceModel(regressor="roofline")}
    results = evaluate_models(synthetic_gemm_table, models, split="shape", seeds=(0, 1))
    score = {name: r["mean"]["mape_pct"] for name, r in results.items()}
    assert score["xgb"] < 20.0, score
    assert score["xgb"] < 0.6 * score["rf"], score
    assert score["xgb"] < 0.5 * score["roofline"], score
    assert results["xgb"]["mean"]["spearman_rho"] > 0.95


def test_random_split_with_a_train_size_trains_on_that_many_rows_and_tests_on_the_rest(synthetic_gemm_table):
    tr, te = make_split(synthetic_gemm_table, "random", seed=3, train_size=40)
    assert len(tr) == 40 and len(te) == len(synthetic_gemm_table) - 40
    assert not set(tr) & set(te)
    assert (make_split(synthetic_gemm_table, "random", seed=3, train_size=40)[0] == tr).all()
    for bad in (1, len(synthetic_gemm_table)):
        with pytest.raises(InvalidInputError, match="train_size"):
            make_split(synthetic_gemm_table, "random", train_size=bad)
    with pytest.raises(InvalidInputError, match="needs split='random'"):
        make_split(synthetic_gemm_table, "shape", train_size=40)


class _NoPrediction(RooflineRegressor):
    """A regressor with nothing to say for any row (as the roofline for rows without a FLOP count)."""

    def predict(self, X):
        return np.full(len(X), np.nan)


def test_a_regressor_without_finite_predictions_is_named_not_a_metric_traceback(synthetic_gemm_table):
    from perfpred.models._performance_model import REGRESSORS, register_regressor

    register_regressor("no-prediction-test", lambda seed: _NoPrediction())
    try:
        with pytest.raises(InvalidInputError, match="'no-prediction-test' gives no finite prediction"):
            evaluate_models(synthetic_gemm_table, {"x": PerformanceModel(regressor="no-prediction-test")},
                            split="random", seeds=(0,))
    finally:
        REGRESSORS.pop("no-prediction-test", None)
