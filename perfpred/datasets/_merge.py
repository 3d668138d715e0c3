"""Merging Measurement stores: the shards collectors on several hosts wrote, into one store.

Each host collects into its own store (no shared filesystem, no lock across machines); the
shards are copied to one place and merged. A row whose ``measurement_id`` the destination
lacks is added. A row the destination holds with the same measured values is a duplicate,
so merging the same shard twice adds nothing. A row of a stored configuration with other
values (the same config re-measured on another host of the same hardware) is kept as its
own row, ``<measurement_id>-<hash>``, as imports keep re-measurements (``_repeats``).

A source whose rows cannot go into the destination (a column of another type) is reported
and left out whole; the other sources are merged all the same.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from perfpred.datasets._repeats import assign_repeat_ids
from perfpred.datasets._store import MeasurementStore
from perfpred.errors import InvalidInputError, StoreError

# Columns ``append_frame`` needs; a store's ``load`` drops a column no row fills (a serving
# store has no runtime_ms), so they are put back empty.
_REQUIRED = ("measurement_id", "kind", "hardware_id", "status", "runtime_ms")


@dataclass
class MergeReport:
    """What a merge did: per source, ``rows_read == rows_added + rows_duplicate`` (a failed
    source adds nothing and is named in ``sources_failed``)."""

    into: str
    rows_read: int = 0
    rows_added: int = 0
    rows_duplicate: int = 0
    rows_repeat: int = 0
    rows_by_source: dict[str, int] = field(default_factory=dict)
    sources_failed: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    def summary(self) -> str:
        """A few lines for the CLI."""
        repeats = (f" ({self.rows_repeat} of them new values of configurations already stored, kept as their "
                   "own rows)" if self.rows_repeat else "")
        failed = f", {len(self.sources_failed)} failed" if self.sources_failed else ""
        lines = [f"{len(self.rows_by_source)} store(s) merged{failed}, {self.rows_read} row(s): {self.rows_added} "
                 f"added{repeats}, {self.rows_duplicate} duplicate ({self.wall_s:.1f} s) into {self.into}"]
        lines += [f"  {source}: {n} added" for source, n in self.rows_by_source.items()]
        lines += [f"  failed: {reason}" for reason in self.sources_failed]
        return "\n".join(lines)


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
    is written. Each source is written as one part: a source the destination refuses (a column
    of another type; the error names it) adds nothing and lands in ``sources_failed``. A
    destination this merge created but wrote nothing to is removed again.
    """
    start = time.perf_counter()
    dest_path = into.path if isinstance(into, MeasurementStore) else Path(into)
    stores = _open_sources(sources, dest_path)
    dest = into if isinstance(into, MeasurementStore) else MeasurementStore(dest_path, create=True)
    report = MergeReport(into=str(dest.path))
    try:
        for source in stores:
            frame = source.load()
            for column in _REQUIRED:
                if column not in frame:
                    frame[column] = np.nan
            report.rows_read += len(frame)
            if frame.empty:
                report.rows_by_source[str(source.path)] = 0
                continue
            try:
                with dest.writing():  # no other writer between the check of what is stored and the write
                    kept, repeats = assign_repeat_ids(frame, dest)
                    added = dest.append_frame(kept)
            except StoreError as exc:
                report.rows_read -= len(frame)
                report.sources_failed.append(f"{source.path}: {str(exc).splitlines()[0]}")
                continue
            report.rows_by_source[str(source.path)] = added
            report.rows_added += added
            report.rows_repeat += repeats
            report.rows_duplicate += len(frame) - added
    finally:
        if not isinstance(into, MeasurementStore):
            dest.discard_if_empty()
    report.wall_s = time.perf_counter() - start
    return report
