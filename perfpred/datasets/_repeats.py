"""A recorded row whose configuration is already stored: a duplicate, or a repeat kept as its own row.

``measurement_id`` names *what* was measured (kind, workload, config, hardware): it is the
store's de-duplication and resume key. A recorded dataset may hold one configuration twice
with different values (ML.ENERGY's ``gpqa.json`` runs gpt-oss-20b at max_num_seqs=96 twice;
a cache re-measured on another day). That is a second measurement, not a duplicate, so it
is kept as its own row under ``"<measurement_id>-<8 hex of its values>"``. The first record
of a configuration keeps the plain id, so resume and the ids of existing stores do not
change, and importing the same file again gives the same ids (0 new rows).

Values compared: status, raw replicates, power, energy and every ``metric.*``; where a row has
no replicates (Vidur, NeuSight: only their statistics were published), ``runtime_ms`` and the
statistics ``min_ms``, ``mean_ms``, ``std_ms`` and ``iqr_ms``, which are then the record (two
Vidur rows with one median but another mean are two measurements). Not compared: timestamp,
source, and the statistics of a row with replicates, which are derived from them and which a
re-import or an export round trip may write differently.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from perfpred.datasets._schema import METRIC_PREFIX, configuration_ids, python_scalar, repeat_key
from perfpred.datasets._store import MeasurementStore

VALUE_COLUMNS = ("status", "raw_times_ms", "runtime_ms", "min_ms", "mean_ms", "std_ms", "iqr_ms", "power_w",
                 "energy_j")
# Compared only where a row has no raw replicates (they are derived from them otherwise).
WITHOUT_RAW_COLUMNS = frozenset({"runtime_ms", "min_ms", "mean_ms", "std_ms", "iqr_ms"})


def value_columns(columns: Iterable[str]) -> list[str]:
    columns = list(columns)
    return [c for c in VALUE_COLUMNS if c in columns] + sorted(c for c in columns if c.startswith(METRIC_PREFIX))


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _times(value: Any) -> list[float]:
    if value is None or isinstance(value, float):  # a column with gaps holds NaN for "no list"
        return []
    return [float(t) for t in value]


def _values(row: Mapping[str, Any], columns: Iterable[str], *, as_floats: bool) -> dict[str, Any]:
    """A row's measured values (the rule of this module's docstring); ``as_floats`` writes every
    number as a float, so 3 and 3.0 (an int column read back with gaps) compare equal."""
    values: dict[str, Any] = {}
    raw = _times(row.get("raw_times_ms"))
    for column in columns:
        if column == "raw_times_ms":
            if raw:
                values[column] = raw
        elif column in WITHOUT_RAW_COLUMNS and raw:
            continue
        elif not _missing(value := python_scalar(row.get(column))):
            if as_floats and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            values[column] = value
    return values


def _digest(values: dict[str, Any]) -> str:
    text = json.dumps(values, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(text.encode()).hexdigest()


def fingerprint(row: Mapping[str, Any], columns: Iterable[str]) -> str:
    """Hash of a row's measured values, as a repeat's id carries it (``repeat_key``)."""
    return _digest(_values(row, columns, as_floats=False))


def _match_key(row: Mapping[str, Any], columns: Iterable[str]) -> str:
    """Hash of a row's measured values for telling a duplicate: numbers as floats."""
    return _digest(_values(row, columns, as_floats=True))


def _same_values(new: pd.DataFrame, old: pd.DataFrame) -> np.ndarray:
    """Row i of ``new`` against row i of ``old`` (aligned): equal measured values? Missing == missing."""
    n = len(new)
    columns = value_columns(dict.fromkeys([*new.columns, *old.columns]))

    def column(frame: pd.DataFrame, name: str) -> np.ndarray:
        return frame[name].to_numpy(dtype=object) if name in frame else np.full(n, None, dtype=object)

    raw_new = [_times(v) for v in column(new, "raw_times_ms")]
    raw_old = [_times(v) for v in column(old, "raw_times_ms")]
    same = np.fromiter((a == b for a, b in zip(raw_new, raw_old, strict=True)), dtype=bool, count=n)
    no_raw = np.fromiter((not a and not b for a, b in zip(raw_new, raw_old, strict=True)), dtype=bool, count=n)
    for name in columns:
        if name == "raw_times_ms":
            continue
        a, b = column(new, name), column(old, name)
        a_missing, b_missing = pd.isna(a), pd.isna(b)
        with np.errstate(invalid="ignore"):
            equal = (a_missing & b_missing) | (~a_missing & ~b_missing & (a == b).astype(bool))
        same &= np.where(no_raw, equal, True) if name in WITHOUT_RAW_COLUMNS else equal
    return same


def assign_repeat_ids(frame: pd.DataFrame, store: MeasurementStore) -> tuple[pd.DataFrame, int]:
    """The rows of ``frame`` to write, repeats under their own ids, and how many of them are repeats.

    A row whose values the store (or an earlier row of ``frame``) already holds for its
    configuration, under whichever id (the plain one or a repeat's), is left out: a duplicate.
    So re-importing a file, or merging a store that was itself merged from the same shards,
    adds nothing. Call it under ``store.writing()`` with the write that follows, so no other
    process stores a row in between.
    """
    if frame.empty:
        return frame, 0
    ids = frame["measurement_id"].to_numpy(dtype=object)
    configs = configuration_ids(pd.Series(ids, dtype=object)).to_numpy(dtype=object)
    known = store.ids()
    stored = store.stored(ids)
    # Configuration -> its stored repeats' ids (a plain id is its configuration's, no "-"): a
    # loop over the few repeats, not over every stored id (260,000 in a UCI + Kernel Tuner store).
    repeats: dict[str, list[str]] = {}
    for key in (k for k in known if "-" in k):
        repeats.setdefault(key.partition("-")[0], []).append(key)

    def stored_ids_of(config: str) -> list[str]:
        return ([config] if config in known else []) + repeats.get(config, [])

    config_stored = np.fromiter((c in known or c in repeats for c in configs), dtype=bool, count=len(ids))
    twice = pd.Series(configs).duplicated(keep=False).to_numpy()
    if not (stored | config_stored | twice).any():
        return frame, 0
    keep = ~stored
    new_ids = ids.copy()
    columns = value_columns(frame.columns)
    # Rows equal to the stored row of their own id are duplicates; compared column-wise, as a
    # re-imported file collides with the store on every row.
    differs = np.zeros(len(frame), dtype=bool)
    hit = np.flatnonzero(stored)
    if len(hit):
        old = store.rows_of(ids[hit], columns).reindex(ids[hit])
        differs[hit] = ~_same_values(frame.iloc[hit].reset_index(drop=True), old.reset_index(drop=True))
    todo = np.flatnonzero(differs | (~stored & (config_stored | twice)))
    if not len(todo):
        return frame[keep], 0
    # Every stored value set of the configurations left, whichever id holds it.
    involved = {configs[i] for i in todo}
    seen: dict[str, set[str]] = {c: set() for c in involved}
    stored_ids = [key for c in involved for key in stored_ids_of(c)]
    if stored_ids:
        old = store.rows_of(stored_ids, value_columns(store.column_types()))
        old_columns = value_columns(old.columns)
        for key, row in zip(old.index, old.to_dict("records"), strict=True):
            seen[key.partition("-")[0]].add(_match_key(row, old_columns))
    plain_taken = {c for c in involved if c in known}
    assigned: set[str] = set()
    for i in todo:
        config, row = configs[i], frame.iloc[i]
        match = _match_key(row, columns)
        if match in seen[config]:
            keep[i] = False  # these values are stored, or earlier in the input
            continue
        seen[config].add(match)
        keep[i] = True
        if config not in plain_taken:  # the first record of a new configuration keeps the plain id
            new_ids[i] = config
            plain_taken.add(config)
            continue
        # A repeat keeps the id it came with (a merged store's); a new one gets its values' hash.
        came_as_repeat = ids[i] != config and ids[i] not in known
        repeat_id = ids[i] if came_as_repeat else repeat_key(config, fingerprint(row, columns))
        if repeat_id in known or repeat_id in assigned:
            keep[i] = False  # this very record was stored before
            continue
        assigned.add(repeat_id)
        new_ids[i] = repeat_id
    out = frame.assign(measurement_id=new_ids)[keep]
    return out, len(assigned)
