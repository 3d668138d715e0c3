"""The library API's argument checks: empty predictions, inputs a model cannot mean, rows that name
their hardware only by id, and wrong argument types refused in one line (no deep traceback)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest

from perfpred.collect.importers import run_import
from perfpred.datasets import MeasurementStore, grouped_split, make_split, random_split
from perfpred.errors import InvalidInputError
from perfpred.features import device_spec, gemm_features
from perfpred.models import (
    LogTargetXGBRegressor,
    PerformanceModel,
    evaluate_models,
    featurize,
    register_regressor,
    training_frame,
)

GPU = {"hardware_id": "gpu-synthetic-0001", "peak_gflops": {"fp32": 19500.0}, "mem_bw_gbs": 1555.0,
       "sm_count": 108}


def kernel_table() -> pd.DataFrame:
    """A small convolution tuning space on one GPU (Kernel Tuner's parameter names)."""
    rows = []
    for i, (bx, by, tx, ty) in enumerate(itertools.product((16, 32, 48, 64, 128), (1, 2, 4, 8), (1, 2, 4), (1, 2))):
        runtime = 2.0 * (1 + 0.3 * (bx % 32 != 0)) / (1 + 0.1 * tx) * (1 + 0.05 * by) * (1 + 0.02 * ty)
        rows.append({"measurement_id": f"m{i}", "kind": "kernel", "status": "ok", "hardware_id": GPU["hardware_id"],
                     "hardware_json": json.dumps(GPU, sort_keys=True), "runtime_ms": runtime,
                     "workload.kernel_name": "convolution_kernel", "workload.problem_size_x": 4096,
                     "workload.problem_size_y": 4096, "config.block_size_x": bx, "config.block_size_y": by,
                     "config.tile_size_x": tx, "config.tile_size_y": ty, "config.filter_width": 15,
                     "config.filter_height": 15})
    return pd.DataFrame(rows)


def fast_model(**kwargs) -> PerformanceModel:
    return PerformanceModel(regressor=LogTargetXGBRegressor(n_estimators=30, n_jobs=1), **kwargs)


@pytest.fixture(scope="module")
def kernel_rows() -> pd.DataFrame:
    return kernel_table()


@pytest.fixture(scope="module")
def kernel_model(kernel_rows) -> PerformanceModel:
    return fast_model(kind="kernel").fit(kernel_rows)


# ---------------------------------------------------------------- 1: no rows to predict


def test_predict_on_no_rows_gives_an_empty_array(kernel_model, kernel_rows):
    pred = kernel_model.predict(kernel_rows.iloc[0:0])
    assert isinstance(pred, np.ndarray) and pred.shape == (0,) and pred.dtype == float
    assert kernel_model.predict(pd.DataFrame()).shape == (0,)


def test_predict_interval_on_no_rows_gives_an_empty_band(kernel_rows):
    model = PerformanceModel(kind="kernel", regressor="xgb-ensemble").fit(kernel_rows)
    band = model.predict_interval(kernel_rows.iloc[0:0])
    assert list(band.columns) == ["lower", "median", "upper"] and len(band) == 0


# ---------------------------------------------------------------- 2: inputs the model cannot mean


@pytest.mark.parametrize("value, said, shown", [(np.nan, "a value is needed", "nan"),
                                                (None, "a value is needed", "None"),
                                                ("big", "must be a finite number", "'big'"),
                                                (np.inf, "must be a finite number", "inf")],
                         ids=["nan", "none", "text", "inf"])
def test_an_unknown_or_text_tuning_parameter_is_refused(kernel_model, kernel_rows, value, said, shown):
    rows = kernel_rows.head(5).copy()
    rows["config.block_size_x"] = rows["config.block_size_x"].astype(object)
    rows.loc[3, "config.block_size_x"] = value
    match = rf"^row 3, column 'config.block_size_x': {said}.*but got {shown}$"
    with pytest.raises(InvalidInputError, match=match):
        kernel_model.predict(rows)
    with pytest.raises(InvalidInputError, match=match.replace("row 3", "row 0")):
        kernel_model.predict_one(block_size_x=value, block_size_y=1, tile_size_x=1, tile_size_y=1,
                                 filter_width=15, filter_height=15)


def test_only_values_training_never_lacked_are_refused(kernel_model, kernel_rows):
    rows = kernel_rows.head(8)
    expected = kernel_model.predict(rows)
    with pytest.raises(InvalidInputError, match=r"^row 1, column 'workload.problem_size_x': a value is needed"):
        kernel_model.predict(rows.assign(**{"workload.problem_size_x": [4096, None, *[4096] * 6]}))
    as_text = rows.assign(**{"config.block_size_x": rows["config.block_size_x"].astype(str)})
    assert np.allclose(kernel_model.predict(as_text), expected)
    # A column no training row had (another kernel's parameter, empty here) is not checked.
    assert np.allclose(kernel_model.predict(rows.assign(**{"config.other": np.nan})), expected)
    # A column some training rows left empty may be empty when predicting.
    partly = kernel_rows.assign(**{"workload.note": [np.nan if i % 2 else 1.0 for i in range(len(kernel_rows))]})
    model = fast_model(kind="kernel").fit(partly)
    assert np.isfinite(model.predict(partly.assign(**{"workload.note": np.nan}).head(4))).all()


def test_text_that_reads_as_a_number_stays_text(kernel_rows):
    """A kernel source hash like '15609950e788' parses as 1.56e795 (inf); it is still a text column
    (``perfpred collect kernel --kernel sgemm`` rows, whose hash it is, must train and predict)."""
    rows = kernel_rows.assign(**{"workload.kernel_source_sha": "15609950e788"})
    model = fast_model(kind="kernel").fit(rows)
    assert np.isfinite(model.predict(rows.head(4))).all()
    picked = rows.iloc[[2, 7]].copy()  # an index of numpy integers, shown as plain numbers
    picked["config.block_size_x"] = picked["config.block_size_x"].astype(object)
    picked.loc[7, "config.block_size_x"] = "big"
    with pytest.raises(InvalidInputError, match=r"^row 7, column 'config.block_size_x'"):
        model.predict(picked)

def test_gemm_rows_missing_a_trained_value_are_refused_by_row(synthetic_gemm_table):
    model = fast_model().fit(synthetic_gemm_table)
    rows = synthetic_gemm_table.head(3).assign(**{"workload.dtype": ["fp32", None, "fp64"]})
    with pytest.raises(InvalidInputError, match=r"^row 1, column 'workload.dtype': a value is needed"):
        model.predict(rows)


# ---------------------------------------------------------------- 3: hardware by id only


def test_rows_naming_a_trained_hardware_id_get_its_spec(kernel_model, kernel_rows):
    rows = kernel_rows.head(6)
    expected = kernel_model.predict(rows)
    assert np.allclose(kernel_model.predict(rows.drop(columns=["hardware_json"])), expected)
    some = rows.assign(hardware_json=[None, *rows["hardware_json"].iloc[1:]])
    assert np.allclose(kernel_model.predict(some), expected)


def test_rows_with_an_unknown_hardware_id_and_no_spec_are_refused(kernel_model, kernel_rows):
    rows = kernel_rows.head(4).drop(columns=["hardware_json"]).assign(hardware_id="gpu-never-seen")
    with pytest.raises(InvalidInputError, match=r"no hardware spec .*'gpu-never-seen' is unknown to the model"):
        kernel_model.predict(rows)


# ---------------------------------------------------------------- 4: wrong argument types


def test_run_import_takes_one_path_and_a_store_path(tmp_path):
    cache = {"device_name": "Synthetic GPU", "kernel_name": "vector_add", "problem_size": [1024],
             "tune_params_keys": ["block_size_x"], "objective": "time",
             "cache": {str(b): {"block_size_x": b, "time": 0.1 + b / 1e4, "times": [0.1 + b / 1e4] * 3}
                       for b in (32, 64, 128)}}
    path = tmp_path / "cache.json"
    path.write_text(json.dumps(cache))
    report = run_import("kernel-tuner", str(path), str(tmp_path / "store"))
    assert report.rows_imported == 3, report.summary()
    assert len(MeasurementStore(tmp_path / "store").load()) == 3
    with pytest.raises(InvalidInputError, match="`store` must be a MeasurementStore or a store folder's path"):
        run_import("kernel-tuner", path, 5)


def test_splits_take_one_column_name_and_refuse_bad_sizes(synthetic_gemm_table):
    train, test = grouped_split(synthetic_gemm_table, "workload.m")
    m = synthetic_gemm_table["workload.m"]
    assert set(m.iloc[train]).isdisjoint(m.iloc[test])
    with pytest.raises(InvalidInputError, match=r"`train_size` must be a whole number of rows, but got "
                                                r"train_size=10\.5"):
        random_split(synthetic_gemm_table, train_size=10.5)
    with pytest.raises(InvalidInputError, match="the table is empty"):
        make_split(synthetic_gemm_table.iloc[0:0], "random")


def test_evaluation_arguments_are_checked(synthetic_gemm_table):
    with pytest.raises(InvalidInputError, match="`seeds` must hold at least one seed"):
        evaluate_models(synthetic_gemm_table, {"x": fast_model()}, seeds=())
    with pytest.raises(InvalidInputError, match=r"needs the column\(s\) \['kind'\]"):
        training_frame(synthetic_gemm_table.drop(columns=["kind"]))
    with pytest.raises(InvalidInputError, match="`random_state` must be an integer seed"):
        fast_model(random_state="a").fit(synthetic_gemm_table)


def test_gemm_features_name_a_non_finite_size(synthetic_gemm_table):
    with pytest.raises(InvalidInputError, match=r"`m > 0` must hold .* but got m=inf \(column workload.m"):
        gemm_features(synthetic_gemm_table.head(2).assign(**{"workload.m": np.inf}))
    with pytest.raises(InvalidInputError, match=r"but got m='abc'"):
        gemm_features(synthetic_gemm_table.head(2).assign(**{"workload.m": "abc"}))


def test_device_spec_says_what_to_pass():
    with pytest.raises(InvalidInputError, match=r"takes a hardware spec dict .* GPU_SPECS\['NVIDIA H200'\]"):
        device_spec("NVIDIA H200")


def test_public_helpers_have_docstrings():
    from perfpred.collect._hardware import cpu_spec, software_versions

    for fn in (featurize, register_regressor, cpu_spec, software_versions):
        assert fn.__doc__ and fn.__doc__.strip(), fn.__name__


def test_training_rows_of_one_kernel_drop_the_columns_only_other_kernels_fill(kernel_rows):
    """A store holding two kernels on two GPUs, trained on one GPU's rows (``train --hardware``):
    the other kernel's parameters are all missing there, so they are no features and predictions
    need not give them."""
    other = kernel_rows.rename(columns={"config.block_size_x": "config.bs_x", "config.tile_size_x": "config.work_x"})
    other = other.assign(measurement_id="o" + other["measurement_id"], hardware_id="gpu-synthetic-0002")
    store = pd.concat([kernel_rows, other], ignore_index=True)
    rows = training_frame(store[store["hardware_id"] == GPU["hardware_id"]], kind="kernel")
    assert not [c for c in rows if c in ("config.bs_x", "config.work_x")]
    model = fast_model(kind="kernel").fit(rows)
    config = kernel_rows.drop(columns=["runtime_ms", "measurement_id", "status"]).head(3)
    assert np.isfinite(model.predict(config)).all()
