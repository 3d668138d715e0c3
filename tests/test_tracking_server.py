"""PERFPRED_MLFLOW_URI pointing at a tracking server: models trained on one machine load on another
(a real ``mlflow server`` on 127.0.0.1), and a server that is down, a refused ``file:`` store or a
failed log cost one error line within seconds, never the held-out error of a fit."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from perfpred.datasets import MeasurementStore
from perfpred.errors import TrackingError
from perfpred.models import _tracking
from tests.test_cli import run_main


def environment_error_line(code: int, err: str) -> str:
    """The one ``error:`` line of a command the tracking store failed: exit 1, the environment's
    failure (2 is bad input)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1, f"exit {code}, stderr:\n{err}"
    assert lines[0].startswith("error:") and "Traceback" not in err
    return lines[0]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _mlflow_cli() -> str:
    candidate = Path(sys.executable).with_name("mlflow")
    if not candidate.exists():
        pytest.skip("the `mlflow` command is not installed next to this Python")
    return str(candidate)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """``mlflow server`` on 127.0.0.1 with a SQLite backend and its own artifact folder (proxied
    artifacts: clients upload and download through the server); stopped with its whole process
    group at the end."""
    import requests

    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("PERFPRED_MLFLOW_URI", None)
    log = (root / "server.log").open("w")
    proc = subprocess.Popen(
        [_mlflow_cli(), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts")],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                log_tail = (root / "server.log").read_text()[-3000:]
                pytest.fail(f"mlflow server exited with {proc.returncode}:\n{log_tail}")
            try:
                if requests.get(f"{url}/health", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not answer in 90 s:\n{(root / 'server.log').read_text()[-3000:]}")
            time.sleep(0.25)
        yield url
    finally:
        for sig, wait_s in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            try:
                os.killpg(proc.pid, sig)  # the server, its uvicorn worker and any helper it started
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                continue
        log.close()


def _perfpred(*args: str, home: Path, uri: str, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "PERFPRED_HOME": str(home), "PERFPRED_MLFLOW_URI": uri}
    script = Path(sys.executable).with_name("perfpred")
    command = [str(script)] if script.exists() else [sys.executable, "-c", "from perfpred.cli import main; main()"]
    return subprocess.run([*command, *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def gemm_store(tmp_path_factory) -> Path:
    from conftest import make_gemm_table

    store = tmp_path_factory.mktemp("srv-store") / "store"
    MeasurementStore(store, create=True).append_frame(make_gemm_table(120, seed=3))
    return store


def test_a_model_trained_against_a_server_loads_on_another_machine(mlflow_server, gemm_store, tmp_path):
    name = f"srv-gemm-{uuid.uuid4().hex[:8]}"
    trained = _perfpred("train", "--store", str(gemm_store), "--name", name, home=tmp_path / "machine-a",
                        uri=mlflow_server)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert f"registered as {name}" in " ".join(trained.stdout.split())
    # The training machine kept no model files: the server's artifact store holds them.
    assert not list((tmp_path / "machine-a").rglob("MLmodel"))

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    location = client.get_experiment_by_name(_tracking.EXPERIMENT).artifact_location
    assert not location.startswith("file:"), location

    predicted = _perfpred("predict", "--model", name, "--m", "256", "--n", "256", "--k", "256",
                          home=tmp_path / "machine-b", uri=mlflow_server)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert "predicted runtime_ms:" in predicted.stdout


# ---------------------------------------------------------------------------- failing fast, in one line


@pytest.mark.parametrize("command", ["train", "predict"])
def test_a_server_that_is_down_fails_in_seconds_before_any_fit(monkeypatch, capsys, gemm_store, command):
    uri = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    monkeypatch.setenv("PERFPRED_MLFLOW_URI", uri)
    args = (["train", "--store", str(gemm_store), "--name", "down"] if command == "train" else
            ["predict", "--model", "down", "--m", "8", "--n", "8", "--k", "8"])
    t0 = time.monotonic()
    code, out, err = run_main(monkeypatch, capsys, *args)
    assert time.monotonic() - t0 < 30  # MLflow's own retries took about four minutes
    line = environment_error_line(code, err)
    assert f"PERFPRED_MLFLOW_URI={uri}" in line and "connection refused" in line
    assert "mape_pct" not in out  # nothing was fitted


def test_a_file_store_mlflow_refuses_says_what_to_use_instead(monkeypatch, capsys, gemm_store, tmp_path):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("PERFPRED_MLFLOW_URI", uri)
    code, out, err = run_main(monkeypatch, capsys, "train", "--store", str(gemm_store), "--name", "filestore")
    line = environment_error_line(code, err)
    assert f"PERFPRED_MLFLOW_URI={uri}" in line and "file-based" in line
    assert f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}" in line
    assert "mape_pct" not in out


def test_a_log_that_fails_after_the_fit_keeps_the_held_out_error_on_screen(monkeypatch, capsys, gemm_store):
    from mlflow.exceptions import MlflowException

    def refuse(mlflow, name):
        raise MlflowException("API request to http://x/api/2.0/mlflow/runs/create failed: 503\nsecond line")

    monkeypatch.setattr(_tracking, "_experiment_id", refuse)
    code, out, err = run_main(monkeypatch, capsys, "train", "--store", str(gemm_store), "--model", "roofline",
                              "--name", "lost-log")
    line = environment_error_line(code, err)
    assert "PERFPRED_MLFLOW_URI" in line and "logging the training run failed: API request" in line
    assert "second line" not in line
    assert "mape_pct" in out and "MLflow run id" not in out


def test_mlflow_http_defaults_apply_only_where_the_user_set_none(monkeypatch):
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "77")
    from mlflow.environment_variables import (
        MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR,
        MLFLOW_HTTP_REQUEST_MAX_RETRIES,
        MLFLOW_HTTP_REQUEST_TIMEOUT,
    )

    with _tracking.bounded_http():
        assert MLFLOW_HTTP_REQUEST_MAX_RETRIES.get() == int(_tracking.HTTP_DEFAULTS["MLFLOW_HTTP_REQUEST_MAX_RETRIES"])
        assert MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.get() <= 1
        assert MLFLOW_HTTP_REQUEST_TIMEOUT.get() == 77  # the user's
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ  # the process's environment as it was
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "77"


def test_which_uris_leave_the_model_files_to_the_server():
    assert _tracking.is_server_uri("http://127.0.0.1:5000") and _tracking.is_server_uri("https://mlflow.example.org")
    assert _tracking.is_server_uri("databricks")
    for local in ("sqlite:////tmp/mlflow.db", "file:///tmp/mlruns", "/tmp/mlruns", "postgresql://u@h/db"):
        assert not _tracking.is_server_uri(local), local


def test_tracking_errors_are_one_line_tracking_errors(monkeypatch):
    monkeypatch.setenv("PERFPRED_MLFLOW_URI", "sqlite:////nowhere/mlflow.db")
    with pytest.raises(TrackingError) as info, _tracking.tracking_errors("doing it"):
        raise RuntimeError("first\nsecond")
    assert str(info.value) == "PERFPRED_MLFLOW_URI=sqlite:////nowhere/mlflow.db: doing it failed: first"
