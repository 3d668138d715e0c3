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
import functools
import logging
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlparse

from perfpred.errors import InvalidInputError, ModelNotFoundError, PerfPredError, TrackingError
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


@contextlib.contextmanager
def _mlflow_quiet() -> Iterator[None]:
    """MLflow's own event output (``eprint`` and its loggers' handler both write to one stream:
    "Successfully registered model 'x'.", "Created version '1' of model 'x'.") silenced inside.
    Its ``enabled`` flag is not enough: ``log_model`` turns it back on midway (after inferring
    the pip requirements), so the stream's ``write`` is what is replaced, and restored after."""
    try:
        from mlflow.utils.logging_utils import MLFLOW_LOGGING_STREAM
    except ImportError:  # another MLflow layout: its loggers are quieted in _mlflow() anyway
        yield
        return
    MLFLOW_LOGGING_STREAM.write = lambda text: len(text)
    try:
        yield
    finally:
        del MLFLOW_LOGGING_STREAM.write  # the class's method again


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
                     registered_name: str | None = None, experiment: str = EXPERIMENT,
                     tables: dict[str, Any] | None = None) -> str:
    """Log one training run (params, metrics, tags, the model); returns the run id. ``tables``:
    file name (``training_rows.parquet``) -> DataFrame, logged as artifacts at the run's root."""
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
                if tables:
                    import tempfile

                    with tempfile.TemporaryDirectory(prefix="perfpred-run-") as folder:
                        for file_name, frame in tables.items():
                            path = os.path.join(folder, file_name)
                            frame.to_parquet(path, index=False)
                            mlflow.log_artifact(path)
                import mlflow.sklearn

                with _mlflow_quiet():  # its "Successfully registered model ..." lines: perfpred says it itself
                    mlflow.sklearn.log_model(model, name="model", registered_model_name=registered_name,
                                             serialization_format="cloudpickle")
    return run.info.run_id


TRAINING_ROWS_FILE = "training_rows.parquet"  # the run's training rows: measurement_id, timestamp, ...


@functools.lru_cache(maxsize=1)
def source_provenance() -> dict[str, str]:
    """perfpred's version, and where its source is a git checkout (an editable install) the
    commit and whether tracked files differ from it. Silent and empty where git is missing or
    slow (2 s per call at most), the source is no checkout, or git fails."""
    import shutil
    import subprocess
    from pathlib import Path

    import perfpred

    out = {"perfpred_version": str(getattr(perfpred, "__version__", "unknown"))}
    root = Path(perfpred.__file__).resolve().parent.parent
    git = shutil.which("git")
    if git is None or not (root / ".git").exists():  # a wheel in site-packages: the version says it
        return out

    def run(*args: str) -> str | None:
        try:
            done = subprocess.run([git, "-C", str(root), *args], capture_output=True, text=True, timeout=2,
                                  stdin=subprocess.DEVNULL)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout if done.returncode == 0 else None

    commit = run("rev-parse", "HEAD")
    if commit and re.fullmatch(r"[0-9a-f]{40}", commit.strip()):
        out["perfpred_git_commit"] = commit.strip()
        # --no-optional-locks: a status refreshing the index would take .git/index.lock, which a
        # timed-out (killed) git leaves behind in the user's checkout.
        status = run("--no-optional-locks", "status", "--porcelain", "--untracked-files=no")
        if status is not None:
            out["perfpred_git_dirty"] = "true" if status.strip() else "false"
    return out


def reference_hash(reference: Any) -> str | None:
    """Content hash of a model's reference lookup (``ReferenceTimes``: its log2 times per config
    and hardware, key columns, target) or of a reference table; None without one."""
    if reference is None:
        return None
    import hashlib

    import pandas as pd

    table = getattr(reference, "log2_times", reference)
    if not isinstance(table, pd.DataFrame):
        return None
    digest = hashlib.sha256()
    digest.update(repr((list(map(str, table.columns)), getattr(reference, "key_columns", None),
                        getattr(reference, "target", None))).encode())
    digest.update(pd.util.hash_pandas_object(table.sort_index(axis=0).sort_index(axis=1), index=True)
                  .to_numpy().tobytes())
    return digest.hexdigest()[:16]


def _choice_logs(model: Any) -> tuple[dict[str, Any], dict[str, float]]:
    """What a fit chose by cross-validation: ``reference_mode="auto"``'s mode and each mode's CV
    MAPE, ``regressor="auto"``'s learner and each candidate's CV MAPE."""
    params: dict[str, Any] = {}
    metrics: dict[str, float] = {}
    if getattr(model, "reference", None) is not None and getattr(model, "reference_mode_", None) is not None:
        params["reference_mode_chosen"] = model.reference_mode_
    for mode, score in (getattr(model, "reference_cv_mape_pct_", None) or {}).items():
        metrics[f"reference_cv_mape_pct_{mode}"] = score
    regressor = getattr(model, "regressor_", None)
    chosen = getattr(regressor, "chosen_", None)
    if chosen is not None:
        params["regressor_chosen"] = chosen
        for name, score in (getattr(regressor, "cv_mape_pct_", None) or {}).items():
            metrics[f"regressor_cv_mape_pct_{name}"] = score
    return params, metrics


def log_train_result(result: Any, *, registered_name: str | None = None, max_ref_drift: float | None = None,
                     source: str = "", reference_source: str | None = None) -> str:
    """Log a ``train_model`` result: its params, held-out metrics and tags, the model, and what
    rebuilds it: the training rows' ids and timestamps (``training_rows.parquet``, read back by
    :func:`training_rows`), the store (``source``) and reference store (``reference_source``)
    paths, the reference lookup's hash, perfpred's version and git commit.
    ``train_model`` logs through this; a caller that shows the held-out error first (so a
    tracking failure does not lose it) passes ``log_to_mlflow=False`` and calls it after.
    Returns the run id."""
    model = result.model
    reference = model.reference
    reference_source = reference_source or getattr(result, "reference_source", None)
    linear = reference is not None and getattr(model, "reference_mode_", None) == "linear"
    params: dict[str, Any] = {"kind": model.kind, "regressor": model.regressor, "target": model.target,
                              "split": result.split, "seed": model.random_state, "n_rows": result.n_rows,
                              "max_ref_drift": max_ref_drift, "reuse_measured": model.reuse_measured,
                              "reference_hardware": None if reference is None else ",".join(reference.hardware_ids),
                              "reference_mode": None if reference is None else model.reference_mode}
    if linear:  # the references' ridge fit alone: the fitted "regressor" is a constant 1, not the one named
        params["regressor_used"] = "none (reference_mode linear: a ridge fit of the reference times alone)"
    else:
        params.update({f"regressor.{k}": v for k, v in model.regressor_.get_params().items()
                       if isinstance(v, (int, float, str, bool, type(None)))})
    choice_params, choice_metrics = _choice_logs(model)
    params.update(choice_params)
    if source:
        params["store"] = os.path.abspath(source) if os.path.exists(source) else source
    if reference is not None:
        params["reference_store"] = (os.path.abspath(reference_source)
                                     if reference_source and os.path.exists(reference_source) else reference_source)
    provenance = source_provenance()
    params["perfpred_version"] = provenance["perfpred_version"]
    metrics = {f"holdout_{result.split}_{k}": v for k, v in result.holdout.items() if isinstance(v, (int, float))}
    metrics.update(choice_metrics)
    tags = {"data_hash": result.data_hash, "hardware_ids": ",".join(result.hardware_ids), "source": source,
            **{k: v for k, v in provenance.items() if k != "perfpred_version"}}
    ref_digest = reference_hash(reference)
    if ref_digest is not None:
        tags["reference_hash"] = ref_digest
    tables = {}
    rows = getattr(result, "training_rows", None)
    if rows is not None and len(rows) and "measurement_id" in rows:
        tables[TRAINING_ROWS_FILE] = rows
    else:
        tags["training_rows"] = "not logged: the table has no measurement_id column"
    return log_training_run(model, params=params, metrics=metrics, tags=tags, registered_name=registered_name,
                            tables=tables)


@dataclass(frozen=True)
class ModelRef:
    """What a model reference resolved to: the MLflow URI loaded, its run, and where it came
    from the registry its name, version and aliases. ``load_model`` puts one on the model it
    returns (``mlflow_ref_``); :meth:`describe` is the one line ``perfpred predict`` can print."""

    ref: str
    uri: str
    run_id: str | None
    name: str | None = None
    version: str | None = None
    aliases: tuple[str, ...] = ()
    alias: str | None = None  # the alias the reference named (NAME@ALIAS)

    def describe(self) -> str:
        run = f"run {self.run_id}" if self.run_id else "run unknown"
        if self.name is None:
            return f"using model of {run} (not registered under a name)"
        via = f" (alias {self.alias})" if self.alias else ""
        return f"using model {self.name} version {self.version}{via} ({run})"


_SHORTHAND = re.compile(r"(?P<name>[^@/]+?)(?:@(?P<alias>[^@/]+)|/(?P<version>\d+|latest))?")


def _split_ref(ref: str) -> tuple[str, str | None, str | None, str | None]:
    """(kind, run id or name, version, alias) of a reference: ``run`` for a run id or
    ``runs:/ID/...``; ``model`` for ``models:/NAME/VERSION``, ``models:/NAME@ALIAS``, their
    shorthands ``NAME/VERSION``, ``NAME@ALIAS``, and a bare NAME (its newest version)."""
    text = ref.strip()
    if text.startswith("runs:/"):
        run_id = text[len("runs:/"):].split("/", 1)[0]
        return "run", run_id, None, None
    if re.fullmatch(r"[0-9a-f]{32}", text):
        return "run", text, None, None
    body = text[len("models:/"):] if text.startswith("models:/") else text
    match = _SHORTHAND.fullmatch(body)
    if match is None or not match["name"].strip():
        return "other", text, None, None
    version = match["version"]
    return "model", match["name"], None if version == "latest" else version, match["alias"]


def _not_found(ref: str, uri_setting: str, why: str) -> ModelNotFoundError:
    return ModelNotFoundError(f"no model at {ref!r} in {uri_setting}: {why}")


def _newest_version(client: Any, name: str) -> Any:
    quoted = name.replace("'", "\\'")
    versions = client.search_model_versions(f"name='{quoted}'")
    versions = [v for v in versions if v.name == name]
    return max(versions, key=lambda v: int(v.version)) if versions else None


def resolve_model(ref: str) -> ModelRef:
    """Which logged model ``ref`` names, without loading it: a run id, ``runs:/ID/model``,
    ``models:/NAME/VERSION``, ``models:/NAME@ALIAS``, the shorthands ``NAME/VERSION`` and
    ``NAME@ALIAS``, or a registered NAME (its newest version). Raises ModelNotFoundError (one
    line) where nothing matches."""
    uri_setting = mlflow_tracking_uri()
    if urlparse(uri_setting).scheme.lower() in ("http", "https"):
        _check_server_answers(uri_setting)  # a server that is down is not "no such model"
    mlflow = _mlflow()
    kind, what, version, alias = _split_ref(ref)
    if kind == "other" and ref.strip().startswith("models:/"):  # a stage (models:/NAME/Production): MLflow's to read
        return ModelRef(ref=ref, uri=ref.strip(), run_id=None)
    if kind == "other":
        raise _not_found(ref, uri_setting, "a model reference is a run id, runs:/RUN_ID/model, NAME, NAME/VERSION, "
                         "NAME@ALIAS or models:/NAME/VERSION")
    client = mlflow.MlflowClient()
    with bounded_http(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if kind == "run":
                uri = ref if ref.startswith("runs:/") else f"runs:/{what}/model"
                client.get_run(what)
                found = [v for v in client.search_model_versions(f"run_id='{what}'") if v.run_id == what]
                if found:  # a registered run: say under which name (its newest registration)
                    mv = max(found, key=lambda v: int(v.version))
                    mv = client.get_model_version(mv.name, mv.version)  # with its aliases, which a search leaves out
                    return ModelRef(ref, uri, what, mv.name, str(mv.version), tuple(mv.aliases or ()))
                return ModelRef(ref, uri, what)
            if alias is not None:
                mv = client.get_model_version_by_alias(what, alias)
            elif version is not None:
                mv = client.get_model_version(what, version)
            else:
                mv = _newest_version(client, what)
                if mv is None:
                    client.get_registered_model(what)  # raises "not found" where the name is unknown
                    raise _not_found(ref, uri_setting, f"registered model {what!r} has no versions")
                mv = client.get_model_version(mv.name, mv.version)  # with its aliases
        except PerfPredError:
            raise
        except Exception as exc:  # MLflow raises several types for "not there"
            text = str(exc)
            if _is_file_store(uri_setting) and ("maintenance mode" in text or "MLFLOW_ALLOW_FILE_STORE" in text):
                raise _tracking_error(exc, uri_setting, "finding the model") from exc
            raise _not_found(ref, uri_setting, _first_line(exc, 200)) from exc
    return ModelRef(ref, f"models:/{mv.name}/{mv.version}", mv.run_id or None, mv.name, str(mv.version),
                    tuple(mv.aliases or ()), alias)


_ALIAS = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def set_alias(ref: str, alias: str, *, delete: bool = False) -> ModelRef:
    """Point ``alias`` at the registered model version ``ref`` names (``NAME/VERSION``, ``NAME``: its
    newest version, ``NAME@OTHER``, a registered run id), so ``NAME@ALIAS`` loads it; ``delete``
    removes the alias from ``ref``'s model instead. Returns what ``ref`` resolved to (with its
    aliases as they are now). One-line errors: an unregistered run, a malformed alias."""
    if not _ALIAS.fullmatch(alias or "") or re.fullmatch(r"v\d+", alias, flags=re.IGNORECASE) or (
            alias.lower() == "latest"):
        raise InvalidInputError(f"an alias must be a name of letters, digits, '_' and '-' starting with a letter "
                                f"or '_', and not 'latest' or v<number> (MLflow keeps those), but got {alias!r}")
    resolved = resolve_model(ref)
    if resolved.name is None:
        what = "a stage, which names no one version" if resolved.run_id is None else "a run no name was registered for"
        raise InvalidInputError(f"an alias names a registered model's version, but {ref!r} is {what} (perfpred "
                                "train --name NAME registers one; give NAME/VERSION)")
    client = _mlflow().MlflowClient()
    with bounded_http(), tracking_errors("setting the alias"):
        if delete:
            held = (getattr(client.get_registered_model(resolved.name), "aliases", None) or {})
            if alias not in held:
                raise InvalidInputError(f"--delete: model {resolved.name!r} has no alias {alias!r} "
                                        f"(it has: {', '.join(sorted(held)) or 'none'})")
            client.delete_registered_model_alias(resolved.name, alias)
        else:
            client.set_registered_model_alias(resolved.name, alias, resolved.version)
        mv = client.get_model_version(resolved.name, resolved.version)
    return replace(resolved, aliases=tuple(mv.aliases or ()))


def load_model(ref: str) -> Any:
    """Load a model by run id, ``runs:/ID/model``, ``models:/NAME/VERSION``, ``models:/NAME@ALIAS``,
    ``NAME/VERSION``, ``NAME@ALIAS`` or registered name (its newest version). The model comes back
    with ``mlflow_ref_``: the :class:`ModelRef` it resolved to (``.describe()``: "using model NAME
    version V (run ID)")."""
    uri_setting = mlflow_tracking_uri()
    resolved = resolve_model(ref)
    try:
        import mlflow.sklearn

        with bounded_http(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = mlflow.sklearn.load_model(resolved.uri)
    except Exception as exc:  # MLflow raises several types for "not there"
        text = str(exc)
        if _is_file_store(uri_setting) and ("maintenance mode" in text or "MLFLOW_ALLOW_FILE_STORE" in text):
            raise _tracking_error(exc, uri_setting, "loading the model") from exc
        raise ModelNotFoundError(
            f"no model at {resolved.uri!r} in {uri_setting}: {_first_line(exc, 200)}"
        ) from exc
    with contextlib.suppress(AttributeError, TypeError):  # an estimator that takes no attributes
        model.mlflow_ref_ = resolved
    return model


def list_runs(experiment: str = EXPERIMENT, max_results: int = 20):
    """Recent training runs as a DataFrame (empty when none)."""
    import pandas as pd

    mlflow = _mlflow()
    with bounded_http(), tracking_errors("listing the training runs"):
        exp = mlflow.get_experiment_by_name(experiment)
        if exp is None:
            return pd.DataFrame()
        return mlflow.search_runs([exp.experiment_id], max_results=max_results, order_by=["start_time DESC"])


def _registrations(client: Any) -> dict[str, list[dict[str, Any]]]:
    """run id -> the registered versions of its model: name, version, aliases (newest first)."""
    out: dict[str, list[dict[str, Any]]] = {}
    versions = [mv for mv in client.search_model_versions() if mv.run_id]
    aliases: dict[tuple[str, str], list[str]] = {}
    for name in {mv.name for mv in versions}:  # a search's versions carry no aliases: their models do
        for alias, version in (getattr(client.get_registered_model(name), "aliases", None) or {}).items():
            aliases.setdefault((name, str(version)), []).append(alias)
    for mv in versions:
        out.setdefault(mv.run_id, []).append({"name": mv.name, "version": str(mv.version),
                                              "aliases": sorted(aliases.get((mv.name, str(mv.version)), []))})
    for versions in out.values():
        versions.sort(key=lambda v: int(v["version"]), reverse=True)
    return out


def _holdout_metric(metrics: dict[str, Any], split: str | None, name: str) -> float | None:
    value = metrics.get(f"holdout_{split}_{name}") if split else None
    if value is None:  # a run of an older perfpred, or one whose split param is missing
        value = next((v for k, v in metrics.items() if k.startswith("holdout_") and k.endswith(f"_{name}")), None)
    return None if value is None else float(value)


def _run_record(run: Any, registrations: list[dict[str, Any]]) -> dict[str, Any]:
    from datetime import UTC, datetime

    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    split = params.get("split")
    low, high = (_holdout_metric(metrics, split, f"mape_pct_ci90_{end}") for end in ("low", "high"))
    n_test = _holdout_metric(metrics, split, "n_test")
    if n_test is None:
        n_test = _holdout_metric(metrics, split, "n")
    n_rows = params.get("n_rows")
    return {
        "run_id": run.info.run_id,
        "run_name": run.info.run_name or tags.get("mlflow.runName"),
        "models": registrations,
        "target": params.get("target"),
        "kind": params.get("kind"),
        "regressor": params.get("regressor_chosen") or params.get("regressor"),
        "hardware": [h for h in tags.get("hardware_ids", "").split(",") if h],
        "n_rows": int(n_rows) if n_rows and n_rows.isdigit() else None,
        "split": split,
        "holdout_mape_pct": _holdout_metric(metrics, split, "mape_pct"),
        "holdout_mape_ci90": None if low is None or high is None else [low, high],
        "n_test": None if n_test is None else int(n_test),
        "created": datetime.fromtimestamp(run.info.start_time / 1000, UTC).isoformat(timespec="seconds"),
        "store": params.get("store") or tags.get("source") or None,
    }


def list_models(limit: int = 20, experiment: str = EXPERIMENT) -> list[dict[str, Any]]:
    """The newest ``limit`` training runs (0: all), one record each: run id and name, the
    registered versions of its model (name, version, aliases), target, kind, regressor, hardware,
    rows, held-out MAPE (with its bootstrap 90% interval and held-out row count where logged),
    creation time (UTC, ISO 8601) and store."""
    mlflow = _mlflow()
    client = mlflow.MlflowClient()
    with bounded_http(), warnings.catch_warnings(), tracking_errors("listing the trained models"):
        warnings.simplefilter("ignore")
        exp = mlflow.get_experiment_by_name(experiment)
        if exp is None:
            return []
        runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"],
                                  max_results=limit if limit > 0 else 50_000)
        registrations = _registrations(client)
    return [_run_record(run, registrations.get(run.info.run_id, [])) for run in runs]


def model_details(ref: str) -> dict[str, Any]:
    """Everything logged about the model ``ref`` names (as :func:`load_model` takes it): its
    :func:`list_models` record, what the reference resolved to, params, metrics, tags and
    artifact paths."""
    resolved = resolve_model(ref)
    if resolved.run_id is None:
        raise ModelNotFoundError(f"no model at {ref!r} in {mlflow_tracking_uri()}: its version names no run")
    mlflow = _mlflow()
    client = mlflow.MlflowClient()
    with bounded_http(), warnings.catch_warnings(), tracking_errors("reading the run"):
        warnings.simplefilter("ignore")
        run = client.get_run(resolved.run_id)
        registrations = _registrations(client).get(resolved.run_id, [])

        def walk(path: str | None) -> list[str]:
            found = []
            for item in client.list_artifacts(resolved.run_id, path):
                found.extend(walk(item.path) if item.is_dir and item.path != "model" else [item.path])
            return found

        try:
            artifacts = walk(None)
        except Exception:
            artifacts = []
    if "model" not in artifacts:
        artifacts.append(f"model (MLflow model: {resolved.uri})")
    tags = {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")}
    return {**_run_record(run, registrations), "resolved": {
        "ref": ref, "uri": resolved.uri, "run_id": resolved.run_id, "name": resolved.name,
        "version": resolved.version, "aliases": list(resolved.aliases), "alias": resolved.alias,
        "describe": resolved.describe()},
        "params": dict(sorted(run.data.params.items())), "metrics": dict(sorted(run.data.metrics.items())),
        "tags": dict(sorted(tags.items())), "artifacts": artifacts}


def training_rows(run_ref: str, store: Any) -> Any:
    """The rows of ``store`` that the run ``run_ref`` (any reference :func:`load_model` takes)
    was trained on, in the logged order, read back through its ``training_rows.parquet``
    (measurement ids and timestamps). ``store``: a store folder, a ``MeasurementStore`` or its
    loaded table. Raises StoreError, with the counts, where some are gone: no longer in the store,
    or re-measured since (a newer row of the same id replaced the one trained on); and where
    the rows found do not give the run's ``data_hash``."""
    import tempfile

    import pandas as pd

    from perfpred.datasets import MeasurementStore
    from perfpred.errors import StoreError
    from perfpred.models._evaluation import data_hash

    resolved = resolve_model(run_ref)
    mlflow = _mlflow()
    client = mlflow.MlflowClient()
    with bounded_http(), warnings.catch_warnings(), tracking_errors("reading the run"):
        warnings.simplefilter("ignore")
        run = client.get_run(resolved.run_id)
    with tempfile.TemporaryDirectory(prefix="perfpred-rows-") as folder:
        try:
            with bounded_http(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                path = mlflow.artifacts.download_artifacts(run_id=resolved.run_id, artifact_path=TRAINING_ROWS_FILE,
                                                           dst_path=folder)
            logged = pd.read_parquet(path)
        except Exception as exc:
            raise ModelNotFoundError(
                f"run {resolved.run_id} has no {TRAINING_ROWS_FILE} (trained by a perfpred that logged only its "
                f"data_hash {run.data.tags.get('data_hash')!r} and store {run.data.tags.get('source')!r}): "
                f"{_first_line(exc, 160)}") from exc
    if isinstance(store, pd.DataFrame):
        table, where = store, "the table given"
    else:
        opened = store if isinstance(store, MeasurementStore) else MeasurementStore(store)
        table, where = opened.load(), f"store {getattr(opened, 'path', store)}"
    table = table.drop_duplicates("measurement_id", keep="last").set_index("measurement_id", drop=False)
    ids = logged["measurement_id"].astype(str)
    present = ids.isin(table.index)
    missing = int((~present).sum())
    replaced = 0
    if "timestamp" in logged and "timestamp" in table:
        now = table.loc[ids[present], "timestamp"].astype(str).to_numpy()
        replaced = int((now != logged.loc[present, "timestamp"].astype(str).to_numpy()).sum())
    if missing or replaced:
        raise StoreError(
            f"{missing + replaced} of the {len(logged)} training rows of run {resolved.run_id} are gone from {where}: "
            f"{missing} no longer there, {replaced} re-measured since (a newer row replaced the one trained on); "
            f"the rows as trained cannot be rebuilt from it")
    rows = table.loc[ids].reset_index(drop=True).dropna(axis=1, how="all")
    target = run.data.params.get("target", "runtime_ms")
    expected = run.data.tags.get("data_hash")
    if expected and target in rows and data_hash(rows, target) != expected:
        raise StoreError(f"the {len(rows)} training rows of run {resolved.run_id} are in {where}, but their "
                         f"{target} values differ from those trained on (data_hash {data_hash(rows, target)} != "
                         f"{expected})")
    return rows
