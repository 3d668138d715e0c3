"""The importer contract: ``Importer.read(path) -> FileImport``, and how a file's result is finished.

Importers turn a recorded file into a :class:`FileImport`: DataFrames already in the flat
Measurement layout (``FIXED_COLUMNS`` + ``workload.*`` / ``config.*`` / ``metric.*``), plus
the count and a few examples of the rows that broke a rule. Only a file that cannot be
read at all (truncated gzip, invalid JSON, wrong format, missing columns, or not one usable
row) raises; one bad row is a counted, reported row.
"""

from __future__ import annotations

import fnmatch
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from perfpred.collect.importers._checks import MAX_EXAMPLES, NoGoodRows, schema_violations
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
    # The options ``read`` takes (CLI: --option KEY=VALUE); any other key is refused.
    options: tuple[str, ...] = ()

    @abstractmethod
    def read(self, path: Path, **options: Any) -> FileImport:
        """Parse ``path``; raise ``InvalidInputError`` only when the whole file is unusable."""

    def check_options(self, options: Mapping[str, Any]) -> None:
        """Refuse, before anything is read, an option key this format does not take."""
        unknown = [key for key in options if key not in self.options]
        if unknown:
            takes = f"its options are {', '.join(self.options)}" if self.options else "it takes no options"
            raise InvalidInputError(f"unknown {self.name} option {unknown[0]!r}; {takes}")

    def sniff(self, path: Path) -> bool:
        """Cheap check used when walking a folder: is this file of my format? (never raises)"""
        return True

    def find_files(self, folder: Path) -> tuple[list[Path], list[Path], list[str]]:
        """(files of this format under ``folder``, files whose name matched but content did not,
        one line per subfolder that could not be read)."""
        candidates: set[Path] = set()
        unreadable: list[str] = []
        # os.walk, not rglob: rglob passes over a folder it may not list without a word.
        for root, _, names in os.walk(folder, onerror=lambda exc: unreadable.append(
                f"folder '{exc.filename}' cannot be read ({exc.strerror or type(exc).__name__}); its files were "
                "not imported")):
            candidates.update(Path(root, n) for n in names if any(fnmatch.fnmatchcase(n, p) for p in self.patterns))
        found, skipped = [], []
        for path in sorted(p for p in candidates if p.is_file()):
            (found if self.sniff(path) else skipped).append(path)
        return found, skipped, unreadable


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
            raise NoGoodRows(str(bad_reasons[0]) if bad_reasons else f"{path.name}: no usable row", rows_read,
                             n_bad, bad_reasons)
        raise InvalidInputError(f"{path.name}: the file must hold at least one measurement, but it holds none")
    return FileImport(path=path, frames=frames, rows_read=rows_read, rows_bad=n_bad,
                      bad_examples=bad_reasons[:MAX_EXAMPLES], notes=[*notes, *_unknown_gpu_notes(frames)])


def _unknown_gpu_notes(frames: Sequence[pd.DataFrame]) -> list[str]:
    """A note per GPU whose spec nothing knows: its rows carry the name only, so the roofline
    features lack its peaks (worth saying, since a misspelt device= option looks just like it)."""
    notes = []
    for text in dict.fromkeys(t for f in frames for t in f["hardware_json"].unique()):
        hardware = json.loads(text)
        if hardware.get("spec_source") == "name-only":
            notes.append(f"no hardware spec is known for GPU {hardware.get('name')!r}: only its name is recorded")
    return notes
