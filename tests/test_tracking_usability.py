"""What a logged training run keeps and how it is found again: the rows it was trained on (read back
from the store), provenance, the mode ``--reference-mode auto`` chose, ``NAME@ALIAS`` / ``NAME/VERSION``
references and the run each resolves to, ``perfpred models ls|show``, and the held-out MAPE's
bootstrap interval."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import shutil
import sys

import numpy as np
import pandas as pd
import pytest
from test_cli import assert_one_line_error, run_main
from typer.testing import CliRunner

from perfpred.datasets import MeasurementStore
from perfpred.errors import ModelNotFoundError, StoreError
from perfpred.models import _tracking as tracking
from perfpred.models import data_hash, load_model, train_model
from perfpred.models._training import bootstrap_mape_interval

runner = CliRunner()
NAME = "usability-gemm"


@pytest.fixture(scope="module")
def mlflow_db(tmp_path_factory):
    """A tracking store of this module's own: ``models ls`` sees only the runs made here."""
    folder = tmp_path_factory.mktemp("tracking-usability")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PERFPRED_MLFLOW_URI", f"sqlite:///{folder / 'mlflow.db'}")
        yield folder


@pytest.fixture(scope="module")
def small_run(mlflow_db, tmp_path_factory):
    """50 GEMM rows in a store (10 held out), trained on and registered twice (versions 1 and 2);
    version 1 gets the alias ``champion``."""
    from conftest import make_gemm_table

    store_path = tmp_path_factory.mktemp("store") / "gemm"
    store = MeasurementStore(store_path, create=True)
    store.append_frame(make_gemm_table(50, seed=1))
    first = train_model(store.load(), regressor="xgb", split="shape", registered_name=NAME, source=str(store_path))
    second = train_model(store.load(), regressor="xgb", split="random", registered_name=NAME,
                         source=str(store_path))
    client = tracking._mlflow().MlflowClient()
    client.set_registered_model_alias(NAME, "champion", "1")
    return store_path, first, second


def _run(run_id: str):
    return tracking._mlflow().MlflowClient().get_run(run_id)


# ---------------------------------------------------------------------------- 1. rebuilding a run


def test_a_run_logs_its_training_rows_store_and_provenance(small_run):
    store_path, first, _ = small_run
    run = _run(first.run_id)
    assert run.data.params["store"] == str(store_path.resolve())
    assert run.data.params["perfpred_version"] == tracking.source_provenance()["perfpred_version"]
    artifacts = [a.path for a in tracking._mlflow().MlflowClient().list_artifacts(first.run_id)]
    assert tracking.TRAINING_ROWS_FILE in artifacts
    provenance = tracking.source_provenance()
    if "perfpred_git_commit" in provenance:  # an editable install from a git checkout
        assert run.data.tags["perfpred_git_commit"] == provenance["perfpred_git_commit"]
        assert run.data.tags["perfpred_git_dirty"] in ("true", "false")


@pytest.mark.parametrize("ref", ["run_id", f"{NAME}@champion", f"{NAME}/1"])
def test_training_rows_reads_the_rows_back_from_the_store(small_run, ref):
    store_path, first, _ = small_run
    rows = tracking.training_rows(first.run_id if ref == "run_id" else ref, store_path)
    stored = MeasurementStore(store_path).load()
    assert len(rows) == first.n_rows == 50
    assert set(rows["measurement_id"]) == set(stored["measurement_id"])
    assert data_hash(rows) == first.data_hash == _run(first.run_id).data.tags["data_hash"]
    retrained = train_model(rows, regressor="xgb", split="shape", log_to_mlflow=False)
    assert retrained.data_hash == first.data_hash
    np.testing.assert_allclose(retrained.model.predict(stored), first.model.predict(stored), rtol=1e-6)


def test_training_rows_refuses_a_store_whose_rows_were_remeasured_or_lost(small_run, tmp_path):
    store_path, first, _ = small_run
    copy = tmp_path / "copy"
    shutil.copytree(store_path, copy)
    store = MeasurementStore(copy)
    redone = store.load().head(3).copy()
    redone["runtime_ms"] *= 1.5
    redone["timestamp"] = "2099-01-01T00:00:00+00:00"  # a re-measure: the same ids, newer rows
    store.append_frame(redone, replace=True)
    with pytest.raises(StoreError) as info:
        tracking.training_rows(first.run_id, copy)
    message = str(info.value)
    assert "3 of the 50 training rows" in message and "3 re-measured" in message and "\n" not in message
    table = MeasurementStore(store_path).load().iloc[2:]  # two rows gone
    with pytest.raises(StoreError, match=r"2 of the 50 training rows .* 2 no longer there, 0 re-measured"):
        tracking.training_rows(first.run_id, table)


def test_provenance_is_silent_without_git(monkeypatch):
    tracking.source_provenance.cache_clear()
    monkeypatch.setattr(shutil, "which", lambda name: None)
    try:
        assert set(tracking.source_provenance()) == {"perfpred_version"}
        tracking.source_provenance.cache_clear()
        monkeypatch.setattr(shutil, "which", lambda name: "/bin/false")  # a git that fails
        assert set(tracking.source_provenance()) == {"perfpred_version"}
    finally:
        tracking.source_provenance.cache_clear()


# ---------------------------------------------------------------------------- 2. reference mode auto


def _kernel_space(gpu: str, speed: float, seed: int) -> pd.DataFrame:
    """A 4x4x4x2 tuning space whose times share a rugged shape across GPUs, as store rows."""
    rugged, noise = np.random.RandomState(42), np.random.RandomState(seed)
    spec = json.dumps({"hardware_id": gpu, "peak_gflops": {"fp32": 1e4 * speed}, "mem_bw_gbs": 500.0})
    rows = []
    for bx, by, tx, shmem in itertools.product([16, 32, 64, 128], [1, 2, 4, 8], [1, 2, 3, 4], [0, 1]):
        shape = (1 + 8 / bx) * (1 + 1 / by) * (1.3 if tx == 3 else 1.0) * (0.8 if shmem else 1.0)
        runtime = shape * np.exp(rugged.normal(0, 0.3)) / speed * np.exp(noise.normal(0, 0.01))
        key = hashlib.sha256(f"{gpu}|{bx}|{by}|{tx}|{shmem}".encode()).hexdigest()[:16]
        rows.append({"measurement_id": key, "kind": "kernel", "status": "ok", "timestamp": "2026-01-01T00:00:00",
                     "config.block_size_x": bx, "config.block_size_y": by, "config.tile_size_x": tx,
                     "config.use_shmem": shmem, "workload.problem_size_x": 4096, "hardware_id": gpu,
                     "hardware_json": spec, "runtime_ms": runtime})
    return pd.DataFrame(rows)


def test_reference_mode_auto_logs_the_mode_chosen_and_each_modes_cv_mape(mlflow_db, tmp_path):
    reference = pd.concat([_kernel_space("gpu-a", 1.0, 0), _kernel_space("gpu-b", 2.0, 1)], ignore_index=True)
    rows = _kernel_space("gpu-c", 3.0, 2).sample(40, random_state=0)
    result = train_model(rows, kind="kernel", regressor="xgb", split="random", reference=reference,
                         reference_mode="auto", reference_source=str(tmp_path / "ref-store"))
    run = _run(result.run_id)
    chosen = result.model.reference_mode_
    assert run.data.params["reference_mode"] == "auto"
    assert run.data.params["reference_mode_chosen"] == chosen
    scores = {k.rsplit("_", 1)[1]: v for k, v in run.data.metrics.items() if k.startswith("reference_cv_mape_pct_")}
    assert scores == pytest.approx(result.model.reference_cv_mape_pct_)
    assert set(scores) == {"features", "offset", "linear"}
    assert run.data.params["reference_store"] == str(tmp_path / "ref-store")
    assert run.data.tags["reference_hash"] == tracking.reference_hash(result.model.reference)
    if chosen == "linear":  # the fitted "regressor" is then a constant: not shown as the one named
        assert "regressor.strategy" not in run.data.params and "regressor_used" in run.data.params


def test_reference_hash_follows_the_lookups_content():
    from perfpred.features import ReferenceTimes

    reference = pd.concat([_kernel_space("gpu-a", 1.0, 0), _kernel_space("gpu-b", 2.0, 1)], ignore_index=True)
    rows = _kernel_space("gpu-c", 3.0, 2)
    one = ReferenceTimes.for_rows(reference, rows)
    assert tracking.reference_hash(one) == tracking.reference_hash(ReferenceTimes.for_rows(reference.iloc[::-1], rows))
    changed = reference.copy()
    changed.loc[0, "runtime_ms"] *= 2
    assert tracking.reference_hash(ReferenceTimes.for_rows(changed, rows)) != tracking.reference_hash(one)
    assert tracking.reference_hash(None) is None


# ---------------------------------------------------------------------------- 3. references and listing


@pytest.mark.parametrize("ref, version", [(f"{NAME}@champion", "1"), (f"{NAME}/1", "1"), (f"{NAME}/2", "2"),
                                          (NAME, "2"), (f"models:/{NAME}@champion", "1"), (f"{NAME}/latest", "2")])
def test_shorthand_references_load_and_say_what_they_resolved_to(small_run, ref, version):
    store_path, first, second = small_run
    model = load_model(ref)
    run_id = {"1": first.run_id, "2": second.run_id}[version]
    assert model.mlflow_ref_.version == version and model.mlflow_ref_.run_id == run_id
    line = model.mlflow_ref_.describe()
    assert line.startswith(f"using model {NAME} version {version}") and run_id in line and "\n" not in line
    stored = MeasurementStore(store_path).load()
    expected = (first if version == "1" else second).model.predict(stored)
    np.testing.assert_allclose(model.predict(stored), expected, rtol=1e-6)


def test_a_run_id_resolves_to_its_registered_name(small_run):
    _, first, _ = small_run
    resolved = tracking.resolve_model(first.run_id)
    assert (resolved.name, resolved.version, resolved.aliases) == (NAME, "1", ("champion",))


@pytest.mark.parametrize("ref", [f"{NAME}@no-such-alias", f"{NAME}/99", "no-such-model@champion", "no-such-model"])
def test_an_unknown_shorthand_is_model_not_found_in_one_line(small_run, ref):
    with pytest.raises(ModelNotFoundError) as info:
        load_model(ref)
    assert str(info.value).startswith("no model at") and "\n" not in str(info.value)
    assert "latest" not in str(info.value)


def test_models_ls_lists_runs_newest_first_with_names_and_holdout(small_run):
    from perfpred.cli import app

    _, first, second = small_run
    done = runner.invoke(app, ["models", "ls", "--json"])
    assert done.exit_code == 0, done.output
    records = json.loads(done.output)
    ids = [r["run_id"] for r in records]
    assert ids.index(second.run_id) < ids.index(first.run_id)
    record = records[ids.index(first.run_id)]
    assert record["models"] == [{"name": NAME, "version": "1", "aliases": ["champion"]}]
    assert (record["target"], record["kind"], record["n_rows"], record["n_test"]) == ("runtime_ms", "gemm", 50, 10)
    assert record["hardware"] == first.hardware_ids
    assert record["holdout_mape_pct"] == pytest.approx(first.holdout["mape_pct"])
    assert record["holdout_mape_ci90"] == pytest.approx([first.holdout["mape_pct_ci90_low"],
                                                         first.holdout["mape_pct_ci90_high"]])
    limited = runner.invoke(app, ["models", "ls", "--json", "--limit", "1"])
    assert len(json.loads(limited.output)) == 1
    table = runner.invoke(app, ["models", "ls"], env={"COLUMNS": "250"})
    assert table.exit_code == 0 and f"{NAME} v1 @champion" in table.output and first.run_id in table.output


def test_models_show_prints_params_metrics_artifacts_and_how_to_predict(small_run):
    from perfpred.cli import app

    _, first, _ = small_run
    done = runner.invoke(app, ["models", "show", f"{NAME}@champion"], env={"COLUMNS": "250"})
    assert done.exit_code == 0, done.output
    out = done.output
    assert f"using model {NAME} version 1 (alias champion) (run {first.run_id})" in out
    assert "holdout_shape_mape_pct_ci90_low" in out and "perfpred_version" in out
    assert tracking.TRAINING_ROWS_FILE in out
    assert f"predict with: perfpred predict --model {NAME}@champion --m 1024" in out
    details = json.loads(runner.invoke(app, ["models", "show", first.run_id, "--json"]).output)
    assert details["run_id"] == first.run_id and details["params"]["regressor"] == "xgb"


def test_models_alias_points_a_name_at_a_version_and_deletes_it(small_run, monkeypatch, capsys):
    from perfpred.cli import app

    _, _, second = small_run
    done = runner.invoke(app, ["models", "alias", f"{NAME}/2", "staging"], env={"COLUMNS": "250"})
    assert done.exit_code == 0, done.output
    assert f"{NAME}@staging -> version 2 (run {second.run_id})" in done.output
    assert tracking.resolve_model(f"{NAME}@staging").version == "2"
    done = runner.invoke(app, ["models", "alias", f"{NAME}@staging", "staging", "--delete"])
    assert done.exit_code == 0 and "removed alias staging" in done.output
    with pytest.raises(ModelNotFoundError):
        tracking.resolve_model(f"{NAME}@staging")
    assert tracking.resolve_model(f"{NAME}@champion").version == "1"  # the other alias is untouched
    for args, needle in ((["v3"], "not 'latest' or v<number>"), (["two words"], "an alias must be"),
                         (["staging", "--delete"], "has no alias 'staging' (it has: champion)")):
        assert_one_line_error(*run_main(monkeypatch, capsys, "models", "alias", f"{NAME}/1", *args), needle)


def test_models_ls_on_an_empty_store_says_so(monkeypatch, tmp_path, capsys):
    from perfpred.cli import main

    monkeypatch.setenv("PERFPRED_MLFLOW_URI", f"sqlite:///{tmp_path / 'empty.db'}")
    monkeypatch.setattr(sys, "argv", ["perfpred", "models", "ls"])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code in (0, None)
    assert "no trained models" in capsys.readouterr().out
    monkeypatch.setattr(sys, "argv", ["perfpred", "models", "show", "nothing-here"])
    with pytest.raises(SystemExit) as info:
        main()
    err = capsys.readouterr().err
    assert info.value.code == 2 and re.match(r"error: no model at 'nothing-here'", err.strip())


# ---------------------------------------------------------------------------- 4. held-out uncertainty


def test_a_small_train_reports_n_test_and_a_bootstrap_interval_of_its_mape(small_run):
    _, first, _ = small_run
    holdout = first.holdout
    assert holdout["n_test"] == 10
    assert holdout["mape_pct_ci90_low"] < holdout["mape_pct"] < holdout["mape_pct_ci90_high"]
    metrics = _run(first.run_id).data.metrics
    for key in ("n_test", "mape_pct_ci90_low", "mape_pct_ci90_high"):
        assert metrics[f"holdout_shape_{key}"] == pytest.approx(holdout[key])


def test_the_bootstrap_interval_is_seeded_and_narrows_with_more_rows():
    rng = np.random.default_rng(0)
    few = rng.exponential(10, size=10)
    many = rng.exponential(10, size=1000)
    one = bootstrap_mape_interval([(few, np.arange(10))], seed=3)
    assert one == bootstrap_mape_interval([(few, np.arange(10))], seed=3)
    assert one[0] < few.mean() < one[1]
    wide, narrow = one[1] - one[0], np.subtract(*bootstrap_mape_interval([(many, np.arange(1000))])[::-1])
    assert narrow < wide / 3
    # Rows that err together (one held-out shape's) are resampled together: a wider interval.
    clustered = np.repeat(rng.exponential(10, size=20), 50)
    by_row = bootstrap_mape_interval([(clustered, np.arange(1000))])
    by_shape = bootstrap_mape_interval([(clustered, np.repeat(np.arange(20), 50))])
    assert by_shape[1] - by_shape[0] > 3 * (by_row[1] - by_row[0])


def test_predict_by_a_bare_name_with_several_versions_says_which_one_it_used(small_run, monkeypatch, capsys):
    """A retrain moves a bare name to its newest version: predict says which, after the answer
    (``NAME/1`` or a name with one version says nothing: the reference already pins it)."""
    from test_cli import run_main

    code, out, err = run_main(monkeypatch, capsys, "predict", "--model", NAME, "--m", "64", "--n", "64", "--k", "64")
    assert code == 0, err
    assert f"using model {NAME} version 2" in err and "predicted runtime_ms" in out
    code, out, err = run_main(monkeypatch, capsys, "predict", "--model", f"{NAME}/1", "--m", "64", "--n", "64",
                              "--k", "64")
    assert code == 0 and "using model" not in err, err


@pytest.mark.parametrize("mode", ["features", "linear"])
def test_a_config_no_reference_recorded_is_warned_about(mode):
    """A block size no reference GPU ran gets the references' mean time as its feature: the
    prediction there is a guess, and input_warnings says so (it used to return one constant silently)."""
    from perfpred.models import PerformanceModel

    reference = pd.concat([_kernel_space("gpu-a", 1.0, 0), _kernel_space("gpu-b", 2.0, 1)], ignore_index=True)
    rows = _kernel_space("gpu-c", 3.0, 2).sample(40, random_state=0)
    model = PerformanceModel(kind="kernel", regressor="xgb", reference=reference, reference_mode=mode).fit(rows)
    unseen = rows.head(3).assign(**{"config.block_size_x": 256})
    assert not [w for w in model.input_warnings(rows.head(3)) if w.startswith("reference times")]
    found = [w for w in model.input_warnings(unseen) if w.startswith("reference times")]
    assert len(found) == 1 and "3 of 3 row(s)" in found[0] and "gpu-a, gpu-b" in found[0], found


def test_a_stage_uri_is_left_to_mlflow(mlflow_db):
    """models:/NAME/Production (a stage, not a version) was refused by the shorthand parser; MLflow reads it."""
    resolved = tracking.resolve_model("models:/some-model/Production")
    assert (resolved.uri, resolved.run_id) == ("models:/some-model/Production", None)
