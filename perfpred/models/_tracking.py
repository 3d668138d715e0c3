"""MLflow logging and loading of trained models (local SQLite store by default).

Imported lazily: MLflow takes about two seconds to import, which a ``perfpred --help``
should not pay.

With a local store (SQLite, or any URI that is not an MLflow server) the models' files go to
``PERFPRED_HOME/mlartifacts``; with an ``http(s)://`` tracking server the server keeps them (its
proxied artifact store), so another machine pointed at the same server loads them. MLflow's
HTTP retries (about four minutes against a server that is down) are bounded for perfpred's
calls, and its errors become one :class:`~perfpred.errors.TrackingError` line naming
``PERFPRED_MLFLOW_URI``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import warnings
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

from perfpred.errors import ModelNotFoundError, PerfPredError, TrackingError
from perfpred.settings import mlflow_artifact_root, mlflow_tracking_uri

EXPERIMENT = "perfpred"

# MLflow's own defaults retry a failed request 7 times with a backoff factor of 2 and wait 120 s
# for an answer: a tracking server that is down holds `perfpred train` for about four minutes
# before its traceback. perfpred's defaults, where the user has not set these variables:
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
REACHABLE_TIMEOUT_S = 5.0  # the one request that checks a tracking server answers at all


def _uri_named(uri: str) -> str:
    return f"PERFPRED_MLFLOW_URI={uri}" if os.environ.get("PERFPRED_MLFLOW_URI") else \
        f"PERFPRED_MLFLOW_URI (unset: the local store {uri})"


def is_server_uri(uri: str) -> bool:
    """Whether ``uri`` is a tracking server that keeps the models' files itself (``http(s)://``,
    Databricks), not a store this machine writes directly (SQLite, another database, a folder)."""
    scheme = urlparse(uri).scheme.lower()
    return scheme in ("http", "https") or scheme.startswith("databricks") or uri == "databricks"


def _is_file_store(uri: str) -> bool:
    scheme = urlparse(uri).scheme.lower()
    return scheme == "file" or scheme == "" or len(scheme) == 1  # a path (or a Windows drive letter)


def _first_line(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _tracking_error(exc: BaseException, uri: str, action: str) -> TrackingError:
    """One line for an MLflow failure: the setting and its value, what failed, the cause's first line."""
    text = str(exc)
    if _is_file_store(uri) and ("maintenance mode" in text or "MLFLOW_ALLOW_FILE_STORE" in text):
        folder = urlparse(uri).path if urlparse(uri).scheme.lower() == "file" else uri
        return TrackingError(
            f"{_uri_named(uri)}: MLflow refuses a file-based tracking store (its filesystem backend is in "
            f"maintenance mode); use a database URI instead, e.g. sqlite:///{os.path.join(folder, 'mlflow.db')} "
            "(or an http:// tracking server, or unset PERFPRED_MLFLOW_URI for the local store)"
        )
    return TrackingError(f"{_uri_named(uri)}: {action} failed: {_first_line(exc)}")


@contextlib.contextmanager
def tracking_errors(action: str) -> Iterator[None]:
    """Turn what MLflow (or the HTTP stack under it) raises into one TrackingError line."""
    try:
        yield
    except PerfPredError:
        raise
    except Exception as exc:
        raise _tracking_error(exc, mlflow_tracking_uri(), action) from exc


def _check_server_answers(uri: str) -> None:
    """One short request: any HTTP answer will do (MLflow's own calls report what it means); no
    answer (refused, unresolvable, silent) fails now instead of after MLflow's retries."""
    import requests

    try:
        requests.get(uri.rstrip("/") + "/health", timeout=REACHABLE_TIMEOUT_S, allow_redirects=False)
    except requests.RequestException as exc:
        text = str(exc)
        if isinstance(exc, requests.Timeout):
            reason = f"no answer within {REACHABLE_TIMEOUT_S:g} s"
        elif "Connection refused" in text or "ECONNREFUSED" in text:
            reason = "connection refused"
        elif "Name or service not known" in text or "nodename nor servname" in text or "getaddrinfo" in text:
            reason = "unknown host name"
        else:
            reason = f"{type(exc).__name__}: {_first_line(exc, 160)}"
        raise TrackingError(
            f"{_uri_named(uri)}: no MLflow tracking server answers there ({reason}); start it "
            "(mlflow server --host HOST --port PORT) or unset PERFPRED_MLFLOW_URI to use the local store "
            "under PERFPRED_HOME"
        ) from None


@contextlib.contextmanager
def bounded_http() -> Iterator[None]:
    """perfpred's HTTP_DEFAULTS for the MLflow variables the user has not set, for the calls
    inside (MLflow reads them at each request); the process's environment is as before after."""
    added = [name for name in HTTP_DEFAULTS if name not in os.environ]
    for name in added:
        os.environ[name] = HTTP_DEFAULTS[name]
    try:
        yield
    finally:
        for name in added:
            if os.environ.get(name) == HTTP_DEFAULTS[name]:
                del os.environ[name]


def _mlflow():
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    import mlflow

    # mlflow sets its loggers up on import; quiet them afterwards (DB migrations, registry chatter).
    for name in ("mlflow", "alembic", "alembic.runtime.migration", "mlflow.store.db.utils"):
        logging.getLogger(name).setLevel(logging.ERROR)
    mlflow.set_tracking_uri(mlflow_tracking_uri())
    return mlflow


def check_tracking() -> None:
    """Fail fast, in one line, where PERFPRED_MLFLOW_URI cannot take or give a model: a server
    that does not answer, a store MLflow refuses (a ``file:`` folder). ``perfpred train`` calls
    it before fitting, so a wrong setting costs seconds, not the fit."""
    uri = mlflow_tracking_uri()
    if is_server_uri(uri) and urlparse(uri).scheme.lower() in ("http", "https"):
        _check_server_answers(uri)
    mlflow = _mlflow()
    with bounded_http(), tracking_errors("reading its experiments"):
        mlflow.get_experiment_by_name(EXPERIMENT)


def _experiment_id(mlflow, name: str) -> str:
    exp = mlflow.get_experiment_by_name(name)
    uri = mlflow_tracking_uri()
    if exp is not None:
        if is_server_uri(uri) and str(exp.artifact_location).startswith("file:"):
            # Made by a perfpred that gave every experiment a local folder: the model files of its
            # runs stay on the machine that trained them. MLflow cannot move an experiment's folder.
            from perfpred._console import err_console

            err_console.print(
                f"warning: experiment {name!r} on {_uri_named(uri)} keeps its models in {exp.artifact_location} "
                "on the machine that trained them (made by an older perfpred), so other machines cannot load them; "
                f"rename it (MLFLOW_TRACKING_URI={uri} mlflow experiments rename --experiment-id {exp.experiment_id} "
                f"--new-name {name}-local) and perfpred makes a new {name!r} whose models the server keeps",
                highlight=False, soft_wrap=True, markup=False)
        return exp.experiment_id
    if is_server_uri(uri):  # the server keeps the files (its proxied artifact store): any machine loads them
        return mlflow.create_experiment(name)
    return mlflow.create_experiment(name, artifact_location=mlflow_artifact_root())


def log_training_run(model: Any, *, params: dict[str, Any], metrics: dict[str, float], tags: dict[str, str],
                     registered_name: str | None = None, experiment: str = EXPERIMENT) -> str:
    """Log one training run (params, metrics, tags, the model); returns the run id."""
    uri = mlflow_tracking_uri()
    if urlparse(uri).scheme.lower() in ("http", "https"):
        _check_server_answers(uri)
    mlflow = _mlflow()
    with bounded_http(), tracking_errors("logging the training run"):
        exp_id = _experiment_id(mlflow, experiment)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mlflow.start_run(experiment_id=exp_id) as run:
                mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
                mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
                mlflow.set_tags(tags)
                import mlflow.sklearn

                mlflow.sklearn.log_model(model, name="model", registered_model_name=registered_name,
                                         serialization_format="cloudpickle")
    return run.info.run_id


def log_train_result(result: Any, *, registered_name: str | None = None, max_ref_drift: float | None = None,
                     source: str = "") -> str:
    """Log a ``train_model`` result: its params, held-out metrics and tags, and the model.
    ``train_model`` logs through this; a caller that shows the held-out error first (so a
    tracking failure does not lose it) passes ``log_to_mlflow=False`` and calls it after.
    Returns the run id."""
    model = result.model
    reference = model.reference
    params: dict[str, Any] = {"kind": model.kind, "regressor": model.regressor, "target": model.target,
                              "split": result.split, "seed": model.random_state, "n_rows": result.n_rows,
                              "max_ref_drift": max_ref_drift, "reuse_measured": model.reuse_measured,
                              "reference_hardware": None if reference is None else ",".join(reference.hardware_ids),
                              "reference_mode": None if reference is None else model.reference_mode,
                              **{f"regressor.{k}": v for k, v in model.regressor_.get_params().items()
                                 if isinstance(v, (int, float, str, bool, type(None)))}}
    metrics = {f"holdout_{result.split}_{k}": v for k, v in result.holdout.items()}
    tags = {"data_hash": result.data_hash, "hardware_ids": ",".join(result.hardware_ids), "source": source}
    return log_training_run(model, params=params, metrics=metrics, tags=tags, registered_name=registered_name)


def load_model(ref: str) -> Any:
    """Load a model by run id, ``runs:/ID/model``, ``models:/NAME/VERSION`` or registered name."""
    uri_setting = mlflow_tracking_uri()
    if urlparse(uri_setting).scheme.lower() in ("http", "https"):
        _check_server_answers(uri_setting)  # a server that is down is not "no such model"
    mlflow = _mlflow()
    if ref.startswith(("runs:/", "models:/")):
        uri = ref
    elif re.fullmatch(r"[0-9a-f]{32}", ref):
        uri = f"runs:/{ref}/model"
    else:
        uri = f"models:/{ref}/latest"
    try:
        import mlflow.sklearn

        with bounded_http(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return mlflow.sklearn.load_model(uri)
    except Exception as exc:  # MLflow raises several types for "not there"
        text = str(exc)
        if _is_file_store(uri_setting) and ("maintenance mode" in text or "MLFLOW_ALLOW_FILE_STORE" in text):
            raise _tracking_error(exc, uri_setting, "loading the model") from exc
        raise ModelNotFoundError(
            f"no model at {uri!r} in {uri_setting}: {_first_line(exc, 200)}"
        ) from exc


def list_runs(experiment: str = EXPERIMENT, max_results: int = 20):
    """Recent training runs as a DataFrame (empty when none)."""
    import pandas as pd

    mlflow = _mlflow()
    with bounded_http(), tracking_errors("listing the training runs"):
        exp = mlflow.get_experiment_by_name(experiment)
        if exp is None:
            return pd.DataFrame()
        return mlflow.search_runs([exp.experiment_id], max_results=max_results, order_by=["start_time DESC"])
