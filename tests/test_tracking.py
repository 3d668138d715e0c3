"""train_model logs to MLflow in the test's PERFPRED_HOME; load_model finds it by id, name and URI."""

from __future__ import annotations

import re
import uuid

import numpy as np
import pytest

from perfpred.errors import ModelNotFoundError
from perfpred.models import data_hash, list_runs, load_model, train_model
from perfpred.settings import mlflow_tracking_uri


@pytest.fixture(scope="module")
def trained(synthetic_gemm_table):
    name = f"test-gemm-{uuid.uuid4().hex[:8]}"
    result = train_model(synthetic_gemm_table, regressor="xgb", split="shape", seed=0, registered_name=name,
                         source="synthetic")
    return name, result


def test_mlflow_store_lives_in_the_test_home(perfpred_home, trained):
    assert mlflow_tracking_uri() == f"sqlite:///{perfpred_home / 'mlflow.db'}"
    assert (perfpred_home / "mlflow.db").is_file()
    assert any((perfpred_home / "mlartifacts").rglob("*"))


def test_train_model_reports_a_holdout_and_logs_a_run(trained, synthetic_gemm_table):
    _, result = trained
    assert re.fullmatch(r"[0-9a-f]{32}", result.run_id)
    assert result.n_rows == len(synthetic_gemm_table)
    assert result.hardware_ids == ["cpu-synthetic-a-0000000001"]
    assert result.data_hash == data_hash(synthetic_gemm_table)
    assert 0 < result.holdout["mape_pct"] < 50
    runs = list_runs()
    row = runs[runs["run_id"] == result.run_id].iloc[0]
    assert row["tags.data_hash"] == result.data_hash
    assert row["params.regressor"] == "xgb"
    assert row["params.split"] == "shape"
    assert row["metrics.holdout_shape_mape_pct"] == pytest.approx(result.holdout["mape_pct"])


@pytest.mark.parametrize("how", ["run_id", "registered_name", "runs_uri", "models_uri"])
def test_load_model_returns_a_model_predicting_the_same_numbers(trained, synthetic_gemm_table, how):
    name, result = trained
    ref = {"run_id": result.run_id, "registered_name": name, "runs_uri": f"runs:/{result.run_id}/model",
           "models_uri": f"models:/{name}/1"}[how]
    loaded = load_model(ref)
    expected = result.model.predict(synthetic_gemm_table)
    np.testing.assert_allclose(loaded.predict(synthetic_gemm_table), expected, rtol=1e-6)
    assert loaded.predict_one(m=128, n=128, k=128) == pytest.approx(result.model.predict_one(m=128, n=128, k=128))


def test_data_hash_is_order_free_and_content_sensitive(synthetic_gemm_table):
    df = synthetic_gemm_table
    assert data_hash(df) == data_hash(df.iloc[::-1])
    changed = df.copy()
    changed.loc[0, "runtime_ms"] *= 2
    assert data_hash(changed) != data_hash(df)


def test_train_model_without_mlflow_returns_no_run(synthetic_gemm_table):
    result = train_model(synthetic_gemm_table.iloc[:80], regressor="roofline", split="random", log_to_mlflow=False)
    assert result.run_id is None
    assert result.model.predict(synthetic_gemm_table.iloc[:3]).shape == (3,)


@pytest.mark.parametrize("ref", ["no-such-model", "0" * 32, "runs:/" + "f" * 32 + "/model"])
def test_unknown_model_raises_model_not_found_in_one_line(ref):
    with pytest.raises(ModelNotFoundError) as info:
        load_model(ref)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("no model at")
    assert ("no-such-model" in message) or ("0" * 32 in message) or ("f" * 32 in message)
