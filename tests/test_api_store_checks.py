"""Library-API checks of the Measurement record, the MeasurementStore and the model metrics:
a batch that mixes kinds in a column, numpy numbers and wrong types in a Measurement, records
changed after construction, non-finite predictions, and a negative target named as given."""

from __future__ import annotations

import numpy as np
import pytest

from perfpred.datasets import Measurement, MeasurementStore
from perfpred.errors import InvalidInputError, StoreError
from perfpred.models import PerformanceModel, mape, median_ape, p90_ape, r2_log, spearman


def kernel(**overrides) -> Measurement:
    fields = dict(kind="kernel", workload={"n": 1}, config={"bs": 16}, hardware_id="hw", runtime_ms=1.0,
                  timestamp="2025-01-01T00:00:00+00:00")
    fields.update(overrides)
    return Measurement(**fields)


@pytest.fixture
def store(tmp_path) -> MeasurementStore:
    return MeasurementStore(tmp_path / "store", create=True)


# ---------------------------------------------------------------------------- 1. one batch, one kind per column


@pytest.mark.parametrize(("values", "kinds"), [((16, "wide"), "number and string"), ((True, 2), "bool and number")])
def test_a_batch_mixing_kinds_in_a_column_is_refused_and_writes_nothing(store, values, kinds):
    kept = kernel(config={"other": 1})
    assert store.append([kept]) == 1
    a, b = kernel(config={"bs": values[0]}), kernel(config={"bs": values[1]}, runtime_ms=2.0)
    with pytest.raises(StoreError, match=rf"`config\.bs`.*{kinds}.*{values[1]!r}.*nothing was written") as info:
        store.append([a, b])
    assert "\n" not in str(info.value)
    assert not store.contains(a.measurement_id) and not store.contains(b.measurement_id)
    fresh = MeasurementStore(store.path)
    assert [m.measurement_id for m in fresh.measurements()] == [kept.measurement_id]
    assert store.append([a]) == 1  # the refused rows were not remembered as stored
    assert {m.measurement_id for m in MeasurementStore(store.path).measurements()} == {kept.measurement_id,
                                                                                         a.measurement_id}


# ---------------------------------------------------------------------------- 2. Measurement field rules


def test_measurement_takes_numpy_numbers_as_python_ones(store):
    m = kernel(runtime_ms=np.float32(1.5), n_runs=np.int64(3), raw_times_ms=[np.float64(1.5)],
               config={"bs": np.int64(16)}, metrics={"x": np.float32(1)})
    assert type(m.runtime_ms) is float and m.runtime_ms == 1.5
    assert type(m.n_runs) is int and type(m.config["bs"]) is int and type(m.metrics["x"]) is float
    assert m.measurement_id == kernel().measurement_id
    assert kernel(runtime_ms=np.int64(2)).runtime_ms == 2
    store.append([m])
    assert [back.measurement_id for back in store.measurements()] == [m.measurement_id]


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"runtime_ms": True}, "`runtime_ms` must be a finite number, but got runtime_ms=True"),
        ({"hardware_id": 5}, "`hardware_id` must be a non-empty string, but got hardware_id=5"),
        ({"n_runs": -3}, "`n_runs` must be an integer >= 1 or None, but got n_runs=-3"),
        ({"n_runs": 2.5}, "`n_runs` must be an integer >= 1 or None, but got n_runs=2.5"),
        ({"config": {"x": [1, 2]}}, "`config.x` must be a scalar (number, string or bool), but got [1, 2]"),
        ({"config": {"x": {"a": 1}}}, "`config.x` must be a scalar"),
        ({"workload": None}, "`workload` must be a dict of scalar values, but got workload=None"),
        ({"raw_times_ms": None}, "`raw_times_ms` must be a list of numbers, but got raw_times_ms=None"),
    ],
)
def test_measurement_refuses_wrong_types_in_one_line(overrides, needle):
    with pytest.raises(InvalidInputError) as info:
        kernel(**overrides)
    assert needle in str(info.value) and "\n" not in str(info.value)


# ---------------------------------------------------------------------------- 3. append validates again


def test_append_validates_records_changed_after_construction(store):
    good, changed = kernel(config={"bs": 8}), kernel()
    changed.runtime_ms = float("nan")
    with pytest.raises(InvalidInputError, match="`runtime_ms` must be a finite number, but got runtime_ms=nan"):
        store.append([good, changed])
    assert store.part_files() == [] and not store.contains(good.measurement_id)
    with pytest.raises(InvalidInputError, match="must hold Measurement records"):
        store.append([{"kind": "kernel"}])


# ---------------------------------------------------------------------------- 4. metrics


@pytest.mark.parametrize("fn", [mape, median_ape, p90_ape, r2_log, spearman])
@pytest.mark.parametrize(("y_pred", "first"), [([np.nan, 2.0], "nan"), ([1.0, np.inf], "inf")])
def test_metrics_refuse_non_finite_predictions(fn, y_pred, first):
    with pytest.raises(InvalidInputError, match=rf"`y_pred` must be finite.*got {first} \(1 non-finite"):
        fn([1.0, 2.0], y_pred)


def test_metrics_and_store_reading_are_documented():
    for fn in (mape, median_ape, p90_ape, r2_log, spearman, Measurement.validate, MeasurementStore.measurements,
               MeasurementStore.info):
        assert fn.__doc__ and fn.__doc__.strip(), fn.__qualname__


# ---------------------------------------------------------------------------- 5. the user's target value


def test_a_negative_target_is_named_as_the_user_gave_it(synthetic_gemm_table):
    table = synthetic_gemm_table.copy().assign(runtime_ms=-1.0)
    with pytest.raises(InvalidInputError, match=r"`target > 0` must hold.*but got runtime_ms=-1\.0 \(300 bad"):
        PerformanceModel(regressor="xgb").fit(table)
