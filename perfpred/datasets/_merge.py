"""Merging Measurement stores: the shards collectors on several hosts wrote, into one store.

Each host collects into its own store (no shared filesystem, no lock across machines); the
shards are copied to one place and merged. A row whose ``measurement_id`` the destination
lacks is added. A row the destination holds with the same measured values is a duplicate,
so merging the same shard twice adds nothing. A row of a stored configuration with other
values (the same config re-measured on another host of the same hardware) is kept as its
own row, ``<measurement_id>-<hash>``, as imports keep re-measurements (``_repeats``).

A source's rows are checked against the rules a Measurement obeys (``_checks``): a bad row
is left out and counted per rule, the good ones are merged. One hardware id keeps one spec,
the one stored (or merged) first, as imports keep it; a replaced spec is noted.

A source whose rows cannot go into the destination (a column of another type), that cannot
be read (a corrupt part) or whose every row is bad is reported and left out whole; the other
sources are merged all the same.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from perfpred.datasets._checks import BadRows, check_rows, rule_lines, unknown_columns
from perfpred.datasets._repeats import assign_repeat_ids
from perfpred.datasets._schema import SCHEMA_VERSION
from perfpred.datasets._store import REQUIRED_COLUMNS, MeasurementStore
from perfpred.errors import InvalidInputError, StoreError


@dataclass
class MergeReport:
    """What a merge did: per source, ``rows_read == rows_added + rows_duplicate + rows_bad`` (a
    source that fails adds nothing and is named in ``sources_failed``; only one whose every row
    is bad counts its rows). ``bad_rules``: per broken rule, the rows that broke it and a value."""

    into: str
    rows_read: int = 0
    rows_added: int = 0
    rows_duplicate: int = 0
    rows_repeat: int = 0
    rows_bad: int = 0
    rows_by_source: dict[str, int] = field(default_factory=dict)
    bad_rules: dict[str, list] = field(default_factory=dict)  # rule -> [rows, value as shown]
    sources_failed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    def summary(self) -> str:
        """A few lines for the CLI."""
        repeats = (f" ({self.rows_repeat} of them new values of configurations already stored, kept as their "
                   "own rows)" if self.rows_repeat else "")
        failed = f", {len(self.sources_failed)} failed" if self.sources_failed else ""
        bad = f", {self.rows_bad} bad" if self.rows_bad else ""
        lines = [f"{len(self.rows_by_source)} store(s) merged{failed}, {self.rows_read} row(s): {self.rows_added} "
                 f"added{repeats}, {self.rows_duplicate} duplicate{bad} ({self.wall_s:.1f} s) into {self.into}"]
        lines += [f"  {source}: {n} added" for source, n in self.rows_by_source.items()]
        lines += [f"  note: {note}" for note in self.notes]
        lines += [f"  bad: {line}" for line in rule_lines(self.bad_rules)]
        lines += [f"  failed: {reason}" for reason in self.sources_failed]
        return "\n".join(lines)

    def _count_bad(self, problems: BadRows) -> None:
        self.rows_bad += problems.count
        for rule, (n, shown) in problems.rules.items():
            self.bad_rules.setdefault(rule, [0, shown])[0] += n


def _open_sources(sources: Iterable[str | os.PathLike[str]], into: Path) -> list[MeasurementStore]:
    paths = [Path(s) for s in ([sources] if isinstance(sources, (str, os.PathLike)) else sources)]
    if not paths:
        raise InvalidInputError("a merge needs at least one source store, but got none")
    twice = next((p for i, p in enumerate(paths) if p.resolve() in {q.resolve() for q in paths[:i]}), None)
    if twice is not None:
        raise InvalidInputError(f"each source store must be given once, but got {twice} twice")
    stores = []
    for path in paths:
        if path.resolve() == into.resolve():
            raise InvalidInputError(f"a source store must not be the destination, but got {path} twice")
        if not (path / "store.json").is_file():
            raise InvalidInputError(f"source {path}: no Measurement store there (missing store.json)")
        stores.append(MeasurementStore(path))
    return stores


def merge_stores(sources: Iterable[str | os.PathLike[str]] | str | os.PathLike[str],
                 into: str | os.PathLike[str] | MeasurementStore) -> MergeReport:
    """Merge the rows of each store of ``sources`` into ``into`` (created if missing).

    Every source is checked (it exists, is a store, is not the destination) before anything
    is written. Each source is written as one part, without its bad rows (counted per rule in
    the report): a source the destination refuses (a column of another type; the error names
    it), that cannot be read or whose every row is bad adds nothing and lands in
    ``sources_failed``. A destination this merge created but wrote nothing to is removed again.
    """
    start = time.perf_counter()
    dest_path = into.path if isinstance(into, MeasurementStore) else Path(into)
    stores = _open_sources(sources, dest_path)
    dest = into if isinstance(into, MeasurementStore) else MeasurementStore(dest_path, create=True)
    report = MergeReport(into=str(dest.path))
    try:
        dest.hardware_specs()  # an unreadable destination stops the merge here, before any write
        for source in stores:
            _merge_source(source, dest, report)
    finally:
        if not isinstance(into, MeasurementStore):
            dest.discard_if_empty()
    report.wall_s = time.perf_counter() - start
    return report


def _merge_source(source: MeasurementStore, dest: MeasurementStore, report: MergeReport) -> None:
    """Merge one source's good rows into ``dest``, or name the source in ``report.sources_failed``."""
    name = str(source.path)
    try:
        frame = source.load()
    except StoreError as exc:  # a corrupt part: this source is left out, the others merge
        report.sources_failed.append(f"{name}: {str(exc).splitlines()[0]}")
        return
    for column in REQUIRED_COLUMNS:  # a store's load drops a column no row fills (serving: runtime_ms)
        if column not in frame:
            frame[column] = np.nan
    problems = check_rows(frame, SCHEMA_VERSION)
    good = frame[~problems.bad].drop(columns=unknown_columns(frame))  # those columns are empty in good rows
    if len(frame) and good.empty:  # nothing of it can go in: a failed source, as an import's all-bad file
        report.rows_read += len(frame)
        report._count_bad(problems)
        report.sources_failed.append(f"{name}: all {len(frame)} row(s) are bad, e.g. {problems.first()}")
        return
    notes: list[str] = []
    try:
        with dest.writing():  # no other writer between the check of what is stored and the write
            # The specs as stored now: another import or merge may have described a device meanwhile.
            good = _keep_one_spec(good, dest.hardware_specs(), notes)
            kept, repeats = assign_repeat_ids(good, dest)
            added = dest._append_rows(kept) if len(kept) else 0
    except StoreError as exc:
        report.sources_failed.append(f"{name}: {str(exc).splitlines()[0]}")
        return
    report.notes += [f"{name}: {note}" for note in notes]
    report._count_bad(problems)
    report.rows_read += len(frame)
    report.rows_by_source[name] = added
    report.rows_added += added
    report.rows_repeat += repeats
    report.rows_duplicate += len(good) - added


def _keep_one_spec(frame: pd.DataFrame, specs: dict[str, str], notes: list[str]) -> pd.DataFrame:
    """``frame`` with one spec per hardware id, the importers' rule (``keep_stored_specs``): the
    spec ``specs`` holds (stored or merged first) is kept, a replaced one noted. A source merged
    before this rule may hold two specs for one id, so the rule is applied per spec it holds."""
    if "hardware_json" not in frame or "hardware_id" not in frame:
        return frame
    pairs = frame[["hardware_id", "hardware_json"]].dropna().drop_duplicates()
    if not pairs["hardware_id"].duplicated().any():
        return keep_stored_specs(frame, specs, notes)
    groups = [keep_stored_specs(group, specs, notes)
              for _, group in frame.groupby("hardware_json", sort=False, dropna=False)]
    return pd.concat(groups).loc[frame.index]


def keep_stored_specs(frame: pd.DataFrame, specs: dict[str, str], notes: list[str]) -> pd.DataFrame:
    """``frame`` with the spec ``specs`` holds for each of its hardware ids (adding the ids it
    lacks): one hardware id has one spec in a store, whichever source described the device
    first (NeuSight's A100 sheet says 19,492 fp32 GFLOPS, the built-in spec 19,500; a CSV
    outside NeuSight's folders has no sheet at all). A spec replaced is noted once per id."""
    if "hardware_json" not in frame or "hardware_id" not in frame:
        return frame
    given = frame[["hardware_id", "hardware_json"]].dropna().drop_duplicates("hardware_id")
    replaced = []
    for hardware_id, spec in given.itertuples(index=False):
        stored = specs.setdefault(str(hardware_id), str(spec))
        if stored != spec and json.loads(stored) != json.loads(spec):
            replaced.append(str(hardware_id))
            old, new = json.loads(stored), json.loads(spec)
            keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            diff = "; ".join(f"{k}: {new.get(k)!r} here, {old.get(k)!r} stored" for k in keys[:3])
            note = (f"{hardware_id}: the spec stored for this device is kept, so it has one ({diff}"
                    f"{'; ...' if len(keys) > 3 else ''})")
            if note not in notes:
                notes.append(note)
    if not replaced:
        return frame
    mask = frame["hardware_id"].astype(str).isin(replaced)
    return frame.assign(hardware_json=frame["hardware_json"].where(~mask, frame["hardware_id"].astype(str).map(specs)))
