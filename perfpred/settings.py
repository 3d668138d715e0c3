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

from perfpred.errors import DatasetNotFoundError, InvalidInputError

_REPO_ROOT = Path(__file__).resolve().parent.parent


def _home_setting() -> tuple[Path, str]:
    """PERFPRED_HOME's folder, and how a message names it (the variable and its value)."""
    env = os.environ.get("PERFPRED_HOME")
    if env:
        return Path(env).expanduser(), f"PERFPRED_HOME={env}"
    path = Path.home() / ".cache" / "perfpred"
    return path, f"PERFPRED_HOME={path} (the default)"


def _make_folder(path: Path) -> Path:
    """``mkdir -p`` under PERFPRED_HOME, a one-line error naming PERFPRED_HOME where it fails."""
    home, named = _home_setting()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if path.exists() and not path.is_dir():
            where = "is a file" if path == home else f"holds a file where perfpred keeps a folder: {path}"
        else:
            where = f"cannot hold the folder {path} ({exc.strerror or type(exc).__name__})"
        raise InvalidInputError(f"`PERFPRED_HOME` must be a folder perfpred can write its caches and MLflow store in, "
                                f"but {named} {where}") from None
    return path


def check_home() -> Path:
    """PERFPRED_HOME, checked without creating anything: a one-line error where it names a file
    (or lies under one), before a command creates what it would leave behind half-made."""
    home, named = _home_setting()
    probe = home
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        where = "is a file" if probe == home else f"lies under the file {probe}"
        raise InvalidInputError(f"`PERFPRED_HOME` must be a folder perfpred can write its caches and MLflow store in, "
                                f"but {named} {where}")
    return home


def home_dir() -> Path:
    return _make_folder(_home_setting()[0])


def cache_dir(name: str) -> Path:
    return _make_folder(home_dir() / "cache" / name)


def mlflow_tracking_uri() -> str:
    uri = os.environ.get("PERFPRED_MLFLOW_URI")
    if uri:
        return uri
    return f"sqlite:///{home_dir() / 'mlflow.db'}"


def mlflow_artifact_root() -> str:
    return _make_folder(home_dir() / "mlartifacts").resolve().as_uri()


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


def dataset_path(*parts: str, pattern: str | None = None) -> Path:
    """A file or folder of the recorded datasets (``dataset_path("uci-sgemm", "sgemm_product.csv.gz")``);
    with ``pattern``, a folder holding at least one file that matches it. A one-line
    :class:`DatasetNotFoundError` naming the expected path and PERFPRED_DATASETS where it is missing."""
    root = datasets_dir()
    path = root.joinpath(*parts)
    if pattern is None:
        missing = None if path.exists() else str(path)
    else:
        missing = None if path.is_dir() and any(path.glob(pattern)) else str(path / pattern)
    if missing is not None:
        env = os.environ.get("PERFPRED_DATASETS")
        named = f"PERFPRED_DATASETS={env}" if env else f"the datasets folder found without PERFPRED_DATASETS ({root})"
        raise DatasetNotFoundError(
            f"recorded dataset {missing} not found: {named} must be the folder that holds kernel-tuner/, uci-sgemm/, "
            "neusight/, ..."
        )
    return path
