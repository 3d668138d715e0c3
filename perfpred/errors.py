"""One exception hierarchy for every user-facing failure.

Messages state the rule and the value (optuna style), in one line, so the CLI can print
them without a traceback. Each class says how ``perfpred`` exits on it (``exit_code``): 2 for
bad input or usage (what the user typed must change), 1 for a failure of the environment or of
a run (a tracking server down, a missing package or device, an unreadable store).
"""

from __future__ import annotations

# The exit codes of the command line, as `perfpred --help` and the README list them.
EXIT_CODES = {
    0: "success (an empty listing included)",
    1: "the environment or a run failed: MLflow tracking store or --storage database unreachable, a missing "
       "package, device or PERFPRED_DATASETS folder, an unreadable store",
    2: "bad input or usage: an option value, a file or store path, a model name; nothing was run",
    130: "interrupted (Ctrl-C)",
}


class PerfPredError(Exception):
    """Base of every error perfpred raises on purpose."""

    exit_code = 2  # bad input unless the class says otherwise


class InvalidInputError(PerfPredError, ValueError):
    """A parameter, config or file violates a rule; nothing was run."""


class StoreError(PerfPredError):
    """A Measurement store is missing, unreadable or has an incompatible schema."""

    exit_code = 1


class NotAStoreError(StoreError):
    """The path given holds no Measurement store (nothing there, a file, a folder of other things)."""

    exit_code = 2


class MissingDependencyError(PerfPredError, ImportError):
    """An optional dependency is needed for this feature."""

    exit_code = 1


class DatasetNotFoundError(PerfPredError, FileNotFoundError):
    """The recorded datasets folder (``PERFPRED_DATASETS``) is missing."""

    exit_code = 1


class ModelNotFoundError(PerfPredError, LookupError):
    """No trained model matches the run id / registered name."""


class TrackingError(PerfPredError):
    """The MLflow tracking store (``PERFPRED_MLFLOW_URI``) cannot be reached or refused a request."""

    exit_code = 1


class StorageUnavailableError(InvalidInputError):
    """A well-formed storage URL (``--storage``) whose database cannot be reached or opened: the
    environment, not the input (a PostgreSQL server that refuses, an SQLite file in a missing folder)."""

    exit_code = 1


class DeviceNotFoundError(InvalidInputError):
    """A device was asked for (``cuda:1``) that this machine does not have."""

    exit_code = 1


class Interrupted(PerfPredError):
    """The user stopped a run (Ctrl-C); what it had measured is kept, and the message says where."""

    exit_code = 130
