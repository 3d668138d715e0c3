"""MLflow logging and loading of trained models (local SQLite store by default).

Imported lazily: MLflow takes about two seconds to import, which a ``perfpred --help``
should not pay.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from typing import Any

from perfpred.errors import ModelNotFoundError
from perfpred.settings import mlflow_artifact_root, mlflow_tracking_uri

EXPERIMENT = "perfpred"


def _mlflow():
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    import mlflow

    # mlflow sets its loggers up on import; quiet them afterwards (DB migrations, registry chatter).
    for name in ("mlflow", "alembic", "alembic.runtime.migration", "mlflow.store.db.utils"):
        logging.getLogger(name).setLevel(logging.ERROR)
    mlflow.set_tracking_uri(mlflow_tracking_uri())
    return mlflow


def _experiment_id(mlflow, name: str) -> str:
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    return mlflow.create_experiment(name, artifact_location=mlflow_artifact_root())


def log_training_run(model: Any, *, params: dict[str, Any], metrics: dict[str, float], tags: dict[str, str],
                     registered_name: str | None = None, experiment: str = EXPERIMENT) -> str:
    """Log one training run (params, metrics, tags, the model); returns the run id."""
    mlflow = _mlflow()
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


def load_model(ref: str) -> Any:
    """Load a model by run id, ``runs:/ID/model``, ``models:/NAME/VERSION`` or registered name."""
    mlflow = _mlflow()
    if ref.startswith(("runs:/", "models:/")):
        uri = ref
    elif re.fullmatch(r"[0-9a-f]{32}", ref):
        uri = f"runs:/{ref}/model"
    else:
        uri = f"models:/{ref}/latest"
    try:
        import mlflow.sklearn

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return mlflow.sklearn.load_model(uri)
    except Exception as exc:  # MLflow raises several types for "not there"
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelNotFoundError(
            f"no model at {uri!r} in {mlflow_tracking_uri()}: {first_line[:200]}"
        ) from exc


def list_runs(experiment: str = EXPERIMENT, max_results: int = 20):
    """Recent training runs as a DataFrame (empty when none)."""
    import pandas as pd

    mlflow = _mlflow()
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        return pd.DataFrame()
    return mlflow.search_runs([exp.experiment_id], max_results=max_results, order_by=["start_time DESC"])
