"""The importer contract: ``Importer.read(path) -> FileImport``, and how a file's result is finished.

Importers turn a recorded file into a :class:`FileImport`: DataFrames already in the flat
Measurement layout (``FIXED_COLUMNS`` + ``workload.*`` / ``config.*`` / ``metric.*``), plus
the count and a few examples of the rows that broke a rule. Only a file that cannot be
read at all (truncated gzip, invalid JSON, wrong format, missing columns, or not one usable
row) raises; one bad row is a counted, reported row.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from perfpred.collect.importers._checks import MAX_EXAMPLES, schema_violations
from perfpred.collect.importers._frame import concat_frames
from perfpred.errors import InvalidInputError


@dataclass
class FileImport:
    """One file's result: good rows in the flat layout, and the bad rows counted with reasons.

    ``frames`` holds one DataFrame per group of rows sharing the same columns (a Vidur file
    gives a GEMM and an operator frame). They are kept apart because concatenating them
    would turn the integer columns one group lacks into floats, which changes the canonical
    JSON, hence the ``measurement_id``, of rows read back. ``rows_read == rows_good +
    rows_bad`` always holds; a "row" is one candidate Measurement (a Vidur CSV line yields
    one per operator).
    """

    path: Path
    frames: list[pd.DataFrame]
    rows_read: int
    rows_bad: int = 0
    bad_examples: list[str] = field(default_factory=list)
    # One-line remarks on how the file was read (an unfinished Kernel Tuner cache, ...).
    notes: list[str] = field(default_factory=list)

    @property
    def rows_good(self) -> int:
        return sum(len(f) for f in self.frames)

    @property
    def frame(self) -> pd.DataFrame:
        """All good rows in one table (for analysis; append ``frames`` to keep integer types)."""
        return concat_frames(self.frames)


class Importer(ABC):
    """Reads one recorded format. Subclasses set ``name``, ``patterns`` and implement ``read``."""

    name: str = ""
    description: str = ""
    patterns: tuple[str, ...] = ()

    @abstractmethod
    def read(self, path: Path, **options: Any) -> FileImport:
        """Parse ``path``; raise ``InvalidInputError`` only when the whole file is unusable."""

    def sniff(self, path: Path) -> bool:
        """Cheap check used when walking a folder: is this file of my format? (never raises)"""
        return True

    def find_files(self, folder: Path) -> tuple[list[Path], list[Path]]:
        """(files of this format under ``folder``, files whose name matched but content did not)."""
        candidates = sorted({p for pattern in self.patterns for p in folder.rglob(pattern) if p.is_file()})
        found, skipped = [], []
        for path in candidates:
            (found if self.sniff(path) else skipped).append(path)
        return found, skipped


def finish(path: Path, frames: pd.DataFrame | Sequence[pd.DataFrame], rows_read: int, bad_reasons: Sequence[str],
           n_bad: int, notes: Sequence[str] = ()) -> FileImport:
    """A FileImport of the rows that pass every Measurement rule; raises when none does.

    Importers check the values they read; this last pass catches what only their
    combination breaks (a replicate of 1e308 ms gives an infinite standard deviation), so
    no row that ``Measurement.validate`` would refuse ever reaches a store.
    """
    frames = [frames] if isinstance(frames, pd.DataFrame) else list(frames)
    bad_reasons = list(bad_reasons)
    by_columns: dict[tuple[str, ...], list[pd.DataFrame]] = {}
    for f in frames:
        if not len(f):
            continue
        reasons = schema_violations(f)
        broken = reasons.notna().to_numpy()
        if broken.any():
            n_bad += int(broken.sum())
            bad_reasons += [f"{path.name}: {r}" for r in reasons[broken].head(MAX_EXAMPLES)]
            f = f[~broken]
        if len(f):
            by_columns.setdefault(tuple(f.columns), []).append(f)
    frames = [concat_frames(group).reset_index(drop=True) for group in by_columns.values()]
    if not frames:
        if n_bad:
            raise InvalidInputError(str(bad_reasons[0]) if bad_reasons else f"{path.name}: no usable row")
        raise InvalidInputError(f"{path.name}: the file must hold at least one measurement, but it holds none")
    return FileImport(path=path, frames=frames, rows_read=rows_read, rows_bad=n_bad,
                      bad_examples=bad_reasons[:MAX_EXAMPLES], notes=list(notes))
