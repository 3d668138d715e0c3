"""Paths and defaults that users may override with environment variables.

- ``PERFPRED_HOME``: where perfpred keeps its caches and its local MLflow store
  (default ``~/.cache/perfpred``).
- ``PERFPRED_DATASETS``: the recorded datasets folder (default ``../shared/datasets``
  next to the current directory or the repo checkout).
- ``PERFPRED_MLFLOW_URI``: MLflow tracking URI (default: a SQLite file under PERFPRED_HOME).
"""

from __future__ import annotations

import os
from pathlib import Path

from perfpred.errors import DatasetNotFoundError

_REPO_ROOT = Path(__file__).resolve().parent.parent


def home_dir() -> Path:
    path = Path(os.environ.get("PERFPRED_HOME", Path.home() / ".cache" / "perfpred")).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir(name: str) -> Path:
    path = home_dir() / "cache" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def mlflow_tracking_uri() -> str:
    uri = os.environ.get("PERFPRED_MLFLOW_URI")
    if uri:
        return uri
    return f"sqlite:///{home_dir() / 'mlflow.db'}"


def mlflow_artifact_root() -> str:
    path = home_dir() / "mlartifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path.as_uri()


def datasets_dir() -> Path:
    """The recorded-datasets folder; a clear error when it is missing."""
    env = os.environ.get("PERFPRED_DATASETS")
    candidates = [Path(env).expanduser()] if env else [
        Path.cwd() / ".." / "shared" / "datasets",
        _REPO_ROOT / ".." / "shared" / "datasets",
    ]
    for path in candidates:
        if path.is_dir():
            return path.resolve()
    raise DatasetNotFoundError(
        f"recorded datasets folder not found (looked in {', '.join(str(p) for p in candidates)}); "
        "set PERFPRED_DATASETS to the folder that holds kernel-tuner/, uci-sgemm/, neusight/, ..."
    )
