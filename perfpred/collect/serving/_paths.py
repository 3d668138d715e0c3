"""Where serving engines and generated models are cached.

Both live beside perfpred's other caches but outside ``cache/`` so that a build (minutes) or
a model survives cache clean-ups, and each can be pointed elsewhere on its own:

- ``PERFPRED_ENGINES_DIR``: built engines (default ``$PERFPRED_HOME/engines``, i.e.
  ``~/.cache/perfpred/engines``);
- ``PERFPRED_MODELS_DIR``: generated tiny models (default ``$PERFPRED_HOME/models``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from perfpred.settings import home_dir


def _cache_dir(variable: str, name: str, create: bool) -> Path:
    env = os.environ.get(variable)
    path = Path(env).expanduser() if env else home_dir() / name
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def engines_dir(*, create: bool = True) -> Path:
    return _cache_dir("PERFPRED_ENGINES_DIR", "engines", create)


def models_dir(*, create: bool = True) -> Path:
    return _cache_dir("PERFPRED_MODELS_DIR", "models", create)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` for one build or model write at a time (across processes)."""
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
