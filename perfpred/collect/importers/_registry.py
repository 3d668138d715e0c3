"""Importers by name, and ``run_import``: files or folders of one format into a store.

``perfpred import FORMAT PATH... --into STORE`` calls :func:`run_import`. Each file is
parsed whole and then written as its own part, so a file that cannot be read adds nothing,
and it does not stop the others: it is named with its reason in the :class:`ImportReport`
(``files_failed``), and the CLI exits non-zero. So is a file none of whose rows could be
imported because every one was bad (its rows still count as bad), and a subfolder that
could not be listed. Bad rows inside readable files are counted and a few are quoted. A
row whose workload / config value has another type than the store's column (a string where
the store holds numbers) is a bad row too: Parquet keeps one type per column, so writing it
would retype the stored rows.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from perfpred.collect.importers._base import FileImport, Importer
from perfpred.collect.importers._checks import MAX_EXAMPLES, NoGoodRows, fmt_value
from perfpred.datasets import MeasurementStore
from perfpred.datasets._merge import keep_stored_specs
from perfpred.datasets._repeats import assign_repeat_ids
from perfpred.datasets._schema import CONFIG_PREFIX, WORKLOAD_PREFIX
from perfpred.datasets._store import value_kind
from perfpred.errors import InvalidInputError, PerfPredError

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
    ``measurement_id`` (same kind, workload, config and hardware) and the same measured
    values is already in the store or earlier in the input. A record of a stored
    configuration with other values is imported as its own row and counted in
    ``rows_repeat`` (see ``_repeats``). ``files_failed`` holds one line per file that could
    not be read at all or whose every row was bad (file and rule), and per subfolder that could
    not be listed; the other files are imported all the same.
    """

    format: str
    store: str = ""
    files_read: list[str] = field(default_factory=list)
    files_skipped: list[str] = field(default_factory=list)
    rows_read: int = 0
    rows_bad: int = 0
    rows_imported: int = 0
    rows_duplicate: int = 0
    rows_repeat: int = 0
    rows_by_kind: dict[str, int] = field(default_factory=dict)
    rows_by_file: dict[str, int] = field(default_factory=dict)
    bad_examples: list[str] = field(default_factory=list)
    files_failed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def rows_good(self) -> int:
        return self.rows_read - self.rows_bad

    def summary(self) -> str:
        """A few lines for the CLI."""
        failed = f", {len(self.files_failed)} failed" if self.files_failed else ""
        repeats = (f" ({self.rows_repeat} of them new values of configurations already recorded, kept as "
                   "their own rows)" if self.rows_repeat else "")
        lines = [
            f"{self.format}: {len(self.files_read)} file(s) read{failed}, {self.rows_read} row(s): "
            f"{self.rows_imported} imported{repeats}, {self.rows_duplicate} duplicate, {self.rows_bad} bad "
            f"({self.wall_s:.1f} s)" + (f" into {self.store}" if self.store else ""),
        ]
        lines += [f"  note: {note}" for note in self.notes]
        lines += [f"  failed: {reason}" for reason in self.files_failed]
        if self.rows_by_kind:
            lines.append("  by kind: " + ", ".join(f"{k}={v}" for k, v in sorted(self.rows_by_kind.items())))
        if self.files_skipped:
            lines.append(f"  skipped {len(self.files_skipped)} file(s) not in {self.format} format, e.g. "
                         f"{self.files_skipped[0]}")
        lines += [f"  bad: {reason}" for reason in self.bad_examples]
        if self.rows_bad > len(self.bad_examples):
            lines.append(f"  ... and {self.rows_bad - len(self.bad_examples)} more bad row(s) not shown")
        return "\n".join(lines)

    def failure_message(self) -> str:
        """One line for the files that could not be imported ('' when every file was)."""
        if not self.files_failed:
            return ""
        total = len(self.files_failed) + len(self.files_read)
        more = f" (and {len(self.files_failed) - 1} more, listed above)" if len(self.files_failed) > 1 else ""
        kept = f"; the rows of the other {len(self.files_read)} are in the store" if self.files_read else ""
        return (f"{len(self.files_failed)} of {total} {self.format} file(s) could not be imported: "
                f"{self.files_failed[0]}{more}{kept}")


def _paths(paths: Any) -> list[str | os.PathLike[str]]:
    """``paths`` as a list: one str / PathLike is one path (not its characters)."""
    if isinstance(paths, (str, os.PathLike)):
        return [paths]
    if isinstance(paths, (bytes, Mapping)) or not isinstance(paths, Iterable):
        raise InvalidInputError(f"`paths` must be a file or folder path or a list of them, but got "
                                f"{type(paths).__name__}")
    paths = list(paths)
    wrong = next((p for p in paths if not isinstance(p, (str, os.PathLike))), None)
    if wrong is not None:
        raise InvalidInputError(f"`paths` must hold file or folder paths (str or Path), but got {wrong!r}")
    return paths


def _other_format(importer: Importer, path: Path) -> str:
    """' (they look like neusight files)' when another importer claims ``path``, else ''."""
    for name in IMPORTERS:
        if name != importer.name and get_importer(name).sniff(path):
            return f" (they look like {name} files)"
    return ""


def _expand(importer: Importer,
            paths: Sequence[str | os.PathLike[str]]) -> tuple[list[Path], list[Path], list[str]]:
    """Explicit files as given; folders walked for the importer's files. Also returns the
    files passed over as another format and one line per subfolder that could not be read."""
    paths = _paths(paths)
    if not paths:
        raise InvalidInputError(f"`paths` must name at least one {importer.name} file or folder, but got none")
    files: list[Path] = []
    skipped: list[Path] = []
    unreadable: list[str] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            found, passed, blocked = importer.find_files(path)
            if not found:
                why = (f"; {len(passed)} file(s) named like one were skipped because their content is not in "
                       f"{importer.name} format{_other_format(importer, passed[0])}, e.g. '{passed[0]}'"
                       if passed else "")
                why += f"; {blocked[0]}" if blocked else ""
                raise InvalidInputError(
                    f"no {importer.name} files ({', '.join(importer.patterns)}) under '{path}'{why}")
            files += found
            skipped += passed
            unreadable += blocked
        elif path.is_file():
            files.append(path)
        else:
            raise InvalidInputError(f"'{path}' must be an existing file or folder, but it does not exist")
    return list(dict.fromkeys(files)), skipped, unreadable


def read_files(format: str, paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
               **options: Any) -> tuple[list[FileImport], list[Path]]:
    """Parse every file of ``paths`` (files or folders, which are walked, or a single one) with the
    ``format`` importer; nothing is written."""
    importer = get_importer(format)
    importer.check_options(options)
    files, skipped, _ = _expand(importer, paths)
    return [importer.read(path, **options) for path in files], skipped


def run_import(format: str, paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
               store: MeasurementStore | str | os.PathLike[str], **options: Any) -> ImportReport:
    """Import recorded files of one format into ``store`` and report what happened.

    ``paths``: files or folders (folders are walked), or a single one. ``store``: a
    :class:`~perfpred.datasets.MeasurementStore`, or a store folder's path, which is opened or
    created as ``perfpred import ... --into PATH`` does (and removed again if this import
    created it and wrote nothing to it). ``options`` go to the importer (``device_name=`` for
    a T4 file without metadata, ``device=`` / ``model=`` for a Vidur file outside its folder
    layout, ...). A file that cannot be read lands in ``report.files_failed`` and the others
    are imported; a path that does not exist (or a folder without files of the format) raises
    before anything is read.
    """
    start = time.perf_counter()
    importer = get_importer(format)
    importer.check_options(options)
    files, skipped, unreadable = _expand(importer, paths)
    if isinstance(store, (str, os.PathLike)):
        opened = MeasurementStore(store, create=True)
        try:
            return _import_files(importer, format, files, skipped, unreadable, opened, options, start)
        finally:
            opened.discard_if_empty()  # a store this import made but wrote nothing to is not left behind
    if not isinstance(store, MeasurementStore):
        raise InvalidInputError(f"`store` must be a MeasurementStore or a store folder's path, but got "
                                f"{type(store).__name__}")
    return _import_files(importer, format, files, skipped, unreadable, store, options, start)


def _all_bad(path: Path, n_bad: int, reason: str) -> str:
    """The failure line of a file none of whose rows could be imported."""
    return f"{path.name}: all {n_bad} row(s) are bad, e.g. {reason.removeprefix(f'{path.name}: ')}"


def _import_files(importer: Importer, format: str, files: list[Path], skipped: list[Path], unreadable: list[str],
                  store: MeasurementStore, options: dict[str, Any], start: float) -> ImportReport:
    """``run_import``'s work once its arguments are checked."""
    report = ImportReport(format=format, store=str(store.path), files_skipped=[str(p) for p in skipped],
                          files_failed=list(unreadable))
    specs = store.hardware_specs()
    for path in files:
        try:
            result = importer.read(path, **options)
        except NoGoodRows as exc:  # a failed file, whose refused rows still count in the report
            report.files_failed.append(_all_bad(path, exc.rows_bad, str(exc)))
            report.rows_read += exc.rows_read
            report.rows_bad += exc.rows_bad
            report.bad_examples += exc.bad_examples[: max(0, MAX_EXAMPLES - len(report.bad_examples))]
            continue
        except PerfPredError as exc:
            report.files_failed.append(str(exc).splitlines()[0] if str(exc) else f"{path.name}: cannot be read")
            continue
        report.rows_read += result.rows_read
        report.notes += [note for note in result.notes if note not in report.notes]  # once per import
        n_bad, reasons = result.rows_bad, list(result.bad_examples)
        written = 0
        for frame in result.frames:
            with store.writing():  # no other writer between the checks against the store and the write
                frame, n_conflicts, conflicts = _fit_store_types(frame, store.column_types(), result.path)
                n_bad += n_conflicts
                reasons += conflicts
                frame = keep_stored_specs(frame, specs, report.notes)
                frame, repeats = assign_repeat_ids(frame, store)
                for kind, count in frame["kind"].value_counts().items():
                    report.rows_by_kind[str(kind)] = report.rows_by_kind.get(str(kind), 0) + int(count)
                written += store.append_frame(frame)
            report.rows_repeat += repeats
        report.rows_bad += n_bad
        report.bad_examples += reasons[: max(0, MAX_EXAMPLES - len(report.bad_examples))]
        report.rows_imported += written
        report.rows_duplicate += result.rows_read - n_bad - written
        if n_bad == result.rows_read:  # every row refused by the store's column types: a failed file too
            report.files_failed.append(_all_bad(path, n_bad, reasons[0] if reasons else ""))
        else:
            report.files_read.append(str(result.path))
            report.rows_by_file[str(result.path)] = written
    report.wall_s = time.perf_counter() - start
    return report


_SINGLE_KIND = {"string": "string", "integer": "number", "floating": "number", "mixed-integer-float": "number",
                "decimal": "number", "boolean": "bool", "empty": None}


def _kinds(values: pd.Series) -> np.ndarray:
    """The kind of each value ('number', 'string', 'bool', ...; None when missing)."""
    missing = values.isna().to_numpy()
    if values.dtype.kind == "b":
        kind: str | None = "bool"
    elif values.dtype.kind in "iuf":
        kind = "number"
    elif values.dtype == object and (inferred := pd.api.types.infer_dtype(values, skipna=True)) in _SINGLE_KIND:
        kind = _SINGLE_KIND[inferred]
    else:  # several kinds in one column: look at each value
        return np.array([value_kind(v) for v in values], dtype=object)
    return np.where(missing, None, kind).astype(object)


def _fit_store_types(frame: pd.DataFrame, types: dict[str, str],
                     path: Path) -> tuple[pd.DataFrame, int, list[str]]:
    """``frame`` without the rows whose workload / config value has another kind than the store's
    column (a string where the store holds numbers, ...), how many rows were left out, and
    the reasons of the first few."""
    bad = np.zeros(len(frame), dtype=bool)
    reasons: list[str] = []
    for column in frame.columns:
        expected = types.get(column)
        if expected is None or not column.startswith((WORKLOAD_PREFIX, CONFIG_PREFIX)):
            continue
        kinds = _kinds(frame[column])
        wrong = np.array([k is not None and k != expected for k in kinds], dtype=bool) & ~bad
        for i in np.flatnonzero(wrong)[: max(0, MAX_EXAMPLES - len(reasons))]:
            reasons.append(f"{path.name}: measurement {frame['measurement_id'].iloc[i]}: `{column}` must be a "
                           f"{expected} as in the store, but got {fmt_value(frame[column].iloc[i])}")
        bad |= wrong
    return (frame[~bad].reset_index(drop=True) if bad.any() else frame), int(bad.sum()), reasons
