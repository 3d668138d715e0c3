"""A serving search's prior: what earlier runs predict for each candidate before any launch.

Earlier serving rows (another model, another engine, another machine: perfpred's own runs or
imported ones) train a model of the goal metric on the serving features (model size and shape,
hardware, the load, and the knobs they read: ``max_num_seqs``, which every engine has, and
llama.cpp's batch sizes and threads). Its log
predictions for the candidates are the search's prior (:mod:`perfpred.tuner._slo_search`): the
search models what it measures relative to them, so a prior that ranks the knobs right but
misses their level (a 20M-parameter model's tokens/s from a 3M one's) still steers the first
launches, and the launches correct the level and the rest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from perfpred.datasets import MeasurementStore
from perfpred.errors import InvalidInputError

# Earlier rows that measured the goal, at least, for a prior to be learned from them.
MIN_PRIOR_ROWS = 5

PriorSource = pd.DataFrame | MeasurementStore | str | Path


def prior_rows(source: PriorSource) -> pd.DataFrame:
    """The serving rows that worked, from a table, a store or a store's path."""
    if isinstance(source, (str, Path)):
        if not Path(source).exists():
            raise InvalidInputError(f"the prior's store must exist, but got prior={str(source)!r} (no such path)")
        source = MeasurementStore(source)
    rows = source.load() if isinstance(source, MeasurementStore) else source
    if not isinstance(rows, pd.DataFrame):
        raise InvalidInputError(f"a prior is a table of serving rows, a store or its path, but got "
                                f"{type(rows).__name__}")
    if "kind" in rows:
        rows = rows[rows["kind"] == "serving"]
    if "status" in rows:
        rows = rows[rows["status"] == "ok"]
    return rows.reset_index(drop=True)


def fit_serving_prior(source: PriorSource, goal_metric: str, *, random_state: int = 0) -> Any:
    """A :class:`~perfpred.models.MultiTargetModel` of ``metric.<goal_metric>`` on the earlier
    rows that measured it (at least ``MIN_PRIOR_ROWS``)."""
    from perfpred.models import MultiTargetModel

    rows = prior_rows(source)
    col = f"metric.{goal_metric}"
    values = pd.to_numeric(rows[col], errors="coerce") if col in rows else pd.Series(dtype=float)
    n = int(((values > 0) & np.isfinite(values)).sum())
    if n < MIN_PRIOR_ROWS:
        raise InvalidInputError(f"a prior needs >= {MIN_PRIOR_ROWS} earlier serving rows that measured {col}, "
                                f"but got {n} (of {len(rows)} rows that worked)")
    # No roofline offset: a CPU's spec has no peak FLOP/s, and one offset must fit every source.
    return MultiTargetModel(kind="serving", targets=[col], residual_of=None, random_state=random_state).fit(rows)


def serving_prior(model: Any, described: pd.DataFrame, goal_metric: str) -> np.ndarray:
    """The log goal each candidate gets from ``model`` (fitted: :func:`fit_serving_prior`, or any
    :class:`~perfpred.models.MultiTargetModel` predicting ``metric.<goal_metric>``), from its row
    before launching (``described``: ``ServingCollector.describe``)."""
    col = f"metric.{goal_metric}"
    if col not in getattr(model, "targets", ()):
        raise InvalidInputError(f"the prior model must predict the goal {col}, but it predicts "
                                f"{list(getattr(model, 'targets', []))}")
    values = model.predict(described)[col].to_numpy(dtype=float)
    bad = ~(np.isfinite(values) & (values > 0))
    if bad.any():
        raise InvalidInputError(f"the prior's {col} must be finite and positive for every candidate, but "
                                f"{int(bad.sum())} of {len(values)} are not")
    return np.log(values)


# The load fields a closed-loop run is measured under (``workload.*`` of its rows); a rate search's
# loads vary in rate, so only its request lengths are compared.
_CLOSED_LOOP_LOAD = ("concurrency", "n_requests", "prompt_tokens_mean", "output_tokens_mean")
_RATE_LOAD = ("prompt_tokens_mean", "output_tokens_mean")


def _load_text(load: dict[str, Any]) -> str:
    parts = []
    if "concurrency" in load:
        parts.append(f"concurrency {load['concurrency']:g}")
    if "n_requests" in load:
        parts.append(f"{load['n_requests']:g} requests")
    if "prompt_tokens_mean" in load and "output_tokens_mean" in load:
        parts.append(f"{load['prompt_tokens_mean']:g} prompt / {load['output_tokens_mean']:g} output tokens")
    return ", ".join(parts)


def prior_load_warning(source: PriorSource, workload: Any, goal: str = "throughput") -> str | None:
    """What to tell a search whose prior's rows were all measured under another load than its own
    ``workload`` (a ``ServingWorkload``; ``goal`` sustainable_rate compares the request lengths only):
    the load is one of the prior model's features, but rows of one load cannot teach it what another
    does, so the prior ranks the knobs as they ranked under its rows' load. None when a row matches
    (or the rows record no load)."""
    rows = prior_rows(source)
    described = workload.describe()
    keys = [k for k in (_RATE_LOAD if goal == "sustainable_rate" else _CLOSED_LOOP_LOAD)
            if described.get(k) is not None and f"workload.{k}" in rows]
    if rows.empty or not keys:
        return None
    wanted = {k: float(described[k]) for k in keys}
    theirs = pd.DataFrame({k: pd.to_numeric(rows[f"workload.{k}"], errors="coerce") for k in keys})
    if (theirs == pd.Series(wanted)).all(axis=1).any():
        return None
    common = theirs.dropna().value_counts().index
    most = dict(zip(keys, common[0], strict=True)) if len(common) else {}
    flags = {"concurrency": "--concurrency", "n_requests": "--requests", "prompt_tokens_mean": "--prompt-tokens",
             "output_tokens_mean": "--output-tokens"}
    again = " ".join(f"{flags[k]} {v:g}" for k, v in wanted.items())
    under = f"; most were measured under {_load_text(most)}" if most else ""
    return (f"none of its {len(rows)} serving rows was measured under this run's load ({_load_text(wanted)}){under}: "
            f"it ranks the knobs as they ranked under that load, which may not hold under this one (`perfpred collect "
            f"serving` and `tune-serving` default to different loads); `perfpred collect serving {again}` measures "
            "rows under this run's load")
