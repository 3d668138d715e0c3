"""Importers by name, and ``run_import``: files or folders of one format into a store.

``perfpred import FORMAT PATH... --into STORE`` calls :func:`run_import`. Every file is
parsed before anything is written, so a file that cannot be read stops the import with a
one-line error and leaves the store as it was; bad rows inside readable files are counted
and a few are quoted in the :class:`ImportReport`.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perfpred.collect.importers._base import FileImport, Importer
from perfpred.collect.importers._checks import MAX_EXAMPLES
from perfpred.datasets import MeasurementStore
from perfpred.errors import InvalidInputError

# name -> "module:Class", imported on first use.
IMPORTERS: dict[str, str] = {
    "kernel-tuner": "perfpred.collect.importers._kernel_tuner:KernelTunerImporter",
    "uci-sgemm": "perfpred.collect.importers._uci_sgemm:UciSgemmImporter",
    "neusight": "perfpred.collect.importers._neusight:NeuSightImporter",
    "vidur": "perfpred.collect.importers._vidur:VidurImporter",
    "ml-energy": "perfpred.collect.importers._ml_energy:MlEnergyImporter",
}


def get_importer(name: str) -> Importer:
    """A fresh importer for format ``name``; an unknown name lists the known ones."""
    target = IMPORTERS.get(name)
    if target is None:
        raise InvalidInputError(f"unknown import format {name!r}; known formats: {', '.join(IMPORTERS)}")
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)()


@dataclass
class ImportReport:
    """What an import did. ``rows_read == rows_imported + rows_duplicate + rows_bad``.

    ``rows_duplicate`` are good rows not written because a row with the same
    ``measurement_id`` (same kind, workload, config and hardware) is already in the store or
    comes later in the input: the last one wins, as in the store. The recorded datasets
    repeat a few configurations (Vidur profiles some token counts twice, ML.ENERGY lists
    three setups twice).
    """

    format: str
    store: str = ""
    files_read: list[str] = field(default_factory=list)
    files_skipped: list[str] = field(default_factory=list)
    rows_read: int = 0
    rows_bad: int = 0
    rows_imported: int = 0
    rows_duplicate: int = 0
    rows_by_kind: dict[str, int] = field(default_factory=dict)
    rows_by_file: dict[str, int] = field(default_factory=dict)
    bad_examples: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def rows_good(self) -> int:
        return self.rows_read - self.rows_bad

    def summary(self) -> str:
        """A few lines for the CLI."""
        lines = [
            f"{self.format}: {len(self.files_read)} file(s) read, {self.rows_read} row(s): "
            f"{self.rows_imported} imported, {self.rows_duplicate} duplicate, {self.rows_bad} bad "
            f"({self.wall_s:.1f} s)" + (f" into {self.store}" if self.store else ""),
        ]
        if self.rows_by_kind:
            lines.append("  by kind: " + ", ".join(f"{k}={v}" for k, v in sorted(self.rows_by_kind.items())))
        if self.files_skipped:
            lines.append(f"  skipped {len(self.files_skipped)} file(s) not in {self.format} format, e.g. "
                         f"{self.files_skipped[0]}")
        lines += [f"  bad: {reason}" for reason in self.bad_examples]
        return "\n".join(lines)


def _expand(importer: Importer, paths: Sequence[str | os.PathLike[str]]) -> tuple[list[Path], list[Path]]:
    """Explicit files as given; folders walked for the importer's files."""
    if not paths:
        raise InvalidInputError(f"`paths` must name at least one {importer.name} file or folder, but got none")
    files: list[Path] = []
    skipped: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            found, passed = importer.find_files(path)
            if not found:
                raise InvalidInputError(
                    f"no {importer.name} files ({', '.join(importer.patterns)}) under '{path}'")
            files += found
            skipped += passed
        elif path.is_file():
            files.append(path)
        else:
            raise InvalidInputError(f"'{path}' must be an existing file or folder, but it does not exist")
    return list(dict.fromkeys(files)), skipped


def read_files(format: str, paths: Sequence[str | os.PathLike[str]],
               **options: Any) -> tuple[list[FileImport], list[Path]]:
    """Parse every file of ``paths`` (folders walked) with the ``format`` importer; nothing is written."""
    importer = get_importer(format)
    files, skipped = _expand(importer, paths)
    return [importer.read(path, **options) for path in files], skipped


def run_import(format: str, paths: Sequence[str | os.PathLike[str]], store: MeasurementStore,
               **options: Any) -> ImportReport:
    """Import recorded files of one format into ``store`` and report what happened.

    ``options`` go to the importer (``device_name=`` for a T4 file without metadata,
    ``device=`` / ``model=`` for a Vidur file outside its folder layout, ...).
    """
    start = time.perf_counter()
    results, skipped = read_files(format, paths, **options)
    report = ImportReport(format=format, store=str(store.path), files_skipped=[str(p) for p in skipped])
    for result in results:
        report.files_read.append(str(result.path))
        report.rows_read += result.rows_read
        report.rows_bad += result.rows_bad
        report.bad_examples += result.bad_examples[: MAX_EXAMPLES - len(report.bad_examples)]
        written = 0
        for frame in result.frames:
            new = ~store.stored(frame["measurement_id"]) & ~frame["measurement_id"].duplicated(keep="last")
            for kind, count in frame.loc[new, "kind"].value_counts().items():
                report.rows_by_kind[str(kind)] = report.rows_by_kind.get(str(kind), 0) + int(count)
            written += store.append_frame(frame)
        report.rows_by_file[str(result.path)] = written
        report.rows_imported += written
        report.rows_duplicate += result.rows_good - written
    report.wall_s = time.perf_counter() - start
    return report
