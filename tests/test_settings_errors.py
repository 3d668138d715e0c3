"""Settings that cannot work (PERFPRED_HOME naming a file, a missing dataset file) and a Ctrl-C give
one line naming the setting and its value, or what the interrupted command left behind."""

from __future__ import annotations

import pytest

from perfpred import settings
from perfpred.errors import DatasetNotFoundError, InvalidInputError
from tests.test_cli import one_error_line, run_main


@pytest.fixture
def home_file(monkeypatch, tmp_path):
    path = tmp_path / "some-file"
    path.write_text("not a folder")
    monkeypatch.setenv("PERFPRED_HOME", str(path))
    return path


def test_a_home_that_is_a_file_is_refused_in_one_line(home_file):
    for call in (settings.home_dir, lambda: settings.cache_dir("peaks"), settings.mlflow_tracking_uri,
                 settings.mlflow_artifact_root, settings.check_home):
        with pytest.raises(InvalidInputError) as info:
            call()
        message = str(info.value)
        assert "\n" not in message and f"PERFPRED_HOME={home_file} is a file" in message


def test_a_home_under_a_file_is_refused_in_one_line(monkeypatch, home_file):
    monkeypatch.setenv("PERFPRED_HOME", str(home_file / "perfpred"))
    with pytest.raises(InvalidInputError, match=f"PERFPRED_HOME={home_file / 'perfpred'} lies under the file"):
        settings.check_home()
    with pytest.raises(InvalidInputError, match=f"PERFPRED_HOME={home_file / 'perfpred'} cannot hold the folder"):
        settings.home_dir()


def test_a_cache_folder_that_is_a_file_names_perfpred_home(monkeypatch, tmp_path):
    monkeypatch.setenv("PERFPRED_HOME", str(tmp_path))
    (tmp_path / "cache").write_text("")
    with pytest.raises(InvalidInputError, match=f"PERFPRED_HOME={tmp_path} cannot hold the folder"):
        settings.cache_dir("kernels")


def test_predict_with_a_home_that_is_a_file(monkeypatch, capsys, home_file):
    code, _, err = run_main(monkeypatch, capsys, "predict", "--model", "x", "--m", "8", "--n", "8", "--k", "8")
    assert f"PERFPRED_HOME={home_file} is a file" in one_error_line(code, err)


def test_collect_with_a_home_that_is_a_file_leaves_no_store(monkeypatch, capsys, home_file, tmp_path):
    store = tmp_path / "store"
    code, _, err = run_main(monkeypatch, capsys, "collect", "kernel", "--kernel", "sgemm", "--size", "test",
                            "--configs", "1", "--store", str(store))
    assert f"PERFPRED_HOME={home_file} is a file" in one_error_line(code, err)
    assert not store.exists()


def test_a_missing_dataset_file_names_the_path_and_perfpred_datasets(monkeypatch, tmp_path):
    monkeypatch.setenv("PERFPRED_DATASETS", str(tmp_path))
    with pytest.raises(DatasetNotFoundError) as info:
        settings.dataset_path("uci-sgemm", "sgemm_product.csv.gz")
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / "uci-sgemm" / "sgemm_product.csv.gz") in message
    assert f"PERFPRED_DATASETS={tmp_path}" in message
    (tmp_path / "uci-sgemm").mkdir()
    assert settings.dataset_path("uci-sgemm") == tmp_path / "uci-sgemm"


# ---------------------------------------------------------------------------- Ctrl-C


@pytest.mark.parametrize("command, says", [
    (["train", "--store", "S"], "nothing was saved"),
    (["evaluate", "--store", "S"], "nothing was saved"),
    (["predict", "--model", "m", "--m", "8", "--n", "8", "--k", "8"], "nothing was saved"),
    (["collect", "gemm", "--store", "S"], "run again resumes"),
])
def test_ctrl_c_says_what_the_interrupted_command_left(monkeypatch, capsys, command, says):
    def interrupted(*args, **kwargs):
        # what typer does with a KeyboardInterrupt inside a command
        raise SystemExit(130)

    monkeypatch.setattr("perfpred.cli.app", interrupted)
    code, _, err = run_main(monkeypatch, capsys, *command)
    assert code == 130
    assert err.strip().startswith("interrupted") and says in err
    if command[0] != "collect":
        assert "resumes" not in err and "collect" not in err


def test_ctrl_c_inside_train_is_reported_by_typer_as_130(monkeypatch, capsys, tmp_path):
    """The real path: a KeyboardInterrupt in the fit, turned into exit 130 by typer."""
    from conftest import make_gemm_table

    from perfpred.datasets import MeasurementStore

    store = tmp_path / "store"
    MeasurementStore(store, create=True).append_frame(make_gemm_table(40, seed=1))

    def fit(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("perfpred.models.train_model", fit)
    code, _, err = run_main(monkeypatch, capsys, "train", "--store", str(store), "--model", "roofline")
    assert code == 130
    assert "nothing was saved" in err and "resumes" not in err
