"""Serving predictions for deployments no engine could start are warned about: weights larger
than the GPUs of a replica hold, or a GPU count that is not tensor x expert x data parallel."""

from __future__ import annotations

import pytest

from perfpred.features._serving import deployment_warnings
from perfpred.models import PerformanceModel, training_frame


@pytest.fixture(scope="module")
def deployments(data):
    from perfpred.tuner import load_serving_table

    return load_serving_table()  # from the recorded datasets (``data`` skips without them)


def test_no_recorded_ml_energy_deployment_is_warned_about(deployments):
    assert deployment_warnings(deployments) == []


def test_weights_too_big_and_gpu_counts_off_are_named(deployments):
    one = deployments[(deployments["config.num_gpus"] == 1)
                      & (deployments["workload.total_params_b"] == 8)].head(1).reset_index(drop=True)
    big = one.assign(**{"workload.total_params_b": 70.0, "workload.activated_params_b": 70.0})
    off = one.assign(**{"config.num_gpus": 16})
    lines = deployment_warnings(big)
    assert len(lines) == 1 and "weights need 130 GiB per GPU" in lines[0] and "80 GiB" in lines[0]
    lines = deployment_warnings(off)
    assert len(lines) == 1 and "num_gpus=16" in lines[0] and "= 1" in lines[0]


def test_a_serving_model_warns_on_them(deployments):
    rows = training_frame(deployments, kind="serving", target="power_w")
    model = PerformanceModel(kind="serving", target="power_w", regressor="rf").fit(rows)
    good = rows.head(2)
    assert not [w for w in model.input_warnings(good) if "GPU" in w]
    bad = good.assign(**{"config.num_gpus": 16}).drop(columns=["hardware_json"])  # the spec comes from the id
    assert [w for w in model.input_warnings(bad) if "num_gpus=16" in w]
