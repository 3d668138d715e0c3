"""One exception hierarchy for every user-facing failure.

Messages state the rule and the value (optuna style), in one line, so the CLI can print
them without a traceback.
"""

from __future__ import annotations


class PerfPredError(Exception):
    """Base of every error perfpred raises on purpose."""


class InvalidInputError(PerfPredError, ValueError):
    """A parameter, config or file violates a rule; nothing was run."""


class StoreError(PerfPredError):
    """A Measurement store is missing, unreadable or has an incompatible schema."""


class MissingDependencyError(PerfPredError, ImportError):
    """An optional dependency is needed for this feature."""


class DatasetNotFoundError(PerfPredError, FileNotFoundError):
    """The recorded datasets folder (``PERFPRED_DATASETS``) is missing."""


class ModelNotFoundError(PerfPredError, LookupError):
    """No trained model matches the run id / registered name."""


class TrackingError(PerfPredError):
    """The MLflow tracking store (``PERFPRED_MLFLOW_URI``) cannot be reached or refused a request."""


class Interrupted(PerfPredError):
    """The user stopped a run (Ctrl-C); what it had measured is kept, and the message says where."""
