"""Reading recorded files safely: every way a damaged file fails becomes one line naming it.

Gzip is detected by its magic bytes, not the file name, so a renamed file still reads;
truncated gzip, undecodable bytes, invalid JSON and malformed CSV all surface as
``InvalidInputError("<file>: <what is wrong>")``.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from perfpred.collect.importers._checks import MAX_EXAMPLES, NoGoodRows, fmt_value
from perfpred.errors import InvalidInputError


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def read_bytes(path: Path) -> bytes:
    """File content, gunzipped when it starts with the gzip magic (whatever its name says)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInputError(f"{path.name}: cannot be read ({_first_line(exc)})") from exc
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise InvalidInputError(f"{path.name}: truncated or corrupt gzip data ({_first_line(exc)})") from exc
    return data


def head_text(path: Path, n_bytes: int = 4096) -> str:
    """The first ``n_bytes`` of the (decompressed) file, for sniffing; '' when unreadable."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(2)
        opener = gzip.open if magic == b"\x1f\x8b" else open
        with opener(path, "rb") as fh:  # type: ignore[operator]
            return fh.read(n_bytes).decode("utf-8", errors="replace")
    except (OSError, EOFError, zlib.error):
        return ""


def decode_text(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{path.name}: byte {exc.start}: the file must be UTF-8 text, but it is not") from exc


def json_text(path: Path, fmt: str) -> str:
    """The file's text, refused in one line when there is nothing in it to parse."""
    text = decode_text(path, read_bytes(path))
    if not text.strip():
        raise InvalidInputError(f"{path.name}: a {fmt} file must hold a JSON document, but it is empty")
    return text


def read_json(path: Path, fmt: str = "JSON") -> Any:
    text = json_text(path, fmt)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{path.name}: line {exc.lineno}: invalid JSON ({exc.msg})") from exc
    except RecursionError as exc:
        raise InvalidInputError(f"{path.name}: JSON nested too deeply to read") from exc


@dataclass
class CsvTable:
    """A CSV's rows that split into the header's fields, and the lines that did not.

    ``labels`` locate each row of ``frame`` ("line 17"); a line with more fields than the
    header is one bad row (``n_bad``, first few quoted in ``bad``), not a broken file.
    """

    frame: pd.DataFrame
    labels: list[str]
    n_bad: int
    bad: list[str]

    @property
    def n_lines(self) -> int:
        return len(self.frame) + self.n_bad


_SKIPPED = re.compile(r"Skipping line (\d+): expected (\d+) fields?, saw (\d+)")


def read_csv(path: Path, fmt: str) -> CsvTable:
    """A CSV as strings-or-numbers, with the errors of a damaged file turned into one line."""
    text = decode_text(path, read_bytes(path))
    stripped = text.lstrip()
    if stripped[:1] in ("{", "["):
        raise InvalidInputError(f"{path.name}: a {fmt} file must be CSV, but this one holds JSON")
    if not stripped:
        raise InvalidInputError(f"{path.name}: a {fmt} file must hold a header and rows, but it is empty")
    # pandas takes extra fields on the first data line for an index column (shifting every
    # value), so leading lines longer than the header are left out here and counted as bad.
    reader = csv.reader(io.StringIO(text))
    long_lines: list[tuple[int, int, int]] = []  # (line, expected fields, fields)
    try:
        header = next(reader)
        for fields in reader:
            if fields and len(fields) <= len(header):
                break
            if fields:
                long_lines.append((reader.line_num, len(header), len(fields)))
    except (csv.Error, StopIteration):
        pass  # pandas reports what csv cannot read
    try:
        # The C engine skips a line with extra fields and names it in a ParserWarning.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", pd.errors.ParserWarning)
            frame = pd.read_csv(io.StringIO(text), low_memory=False, on_bad_lines="warn",
                                skiprows=[line - 1 for line, _, _ in long_lines])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError, OverflowError) as exc:
        raise InvalidInputError(f"{path.name}: malformed CSV ({_first_line(exc)})") from exc
    for w in caught:
        skipped = _SKIPPED.findall(str(w.message))
        if not skipped:  # not ours to handle
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        long_lines += [(int(line), int(expected), int(saw)) for line, expected, saw in skipped]
    long_lines.sort()
    bad_at = [line for line, _, _ in long_lines]
    text_lines = text.splitlines() if long_lines else []
    bad = [f"{path.name}: line {line}: a row must have the header's {expected} fields, but this one has {saw}: "
           f"{fmt_value(text_lines[line - 1] if line <= len(text_lines) else '')}"
           for line, expected, saw in long_lines[:MAX_EXAMPLES]]
    if len(frame) == 0:
        if bad:
            raise NoGoodRows(bad[0], len(bad_at), len(bad_at), bad)
        raise InvalidInputError(f"{path.name}: a {fmt} file must hold at least one row, but it has none")
    # One line per row, as in the files these formats are published as.
    lines = np.setdiff1d(np.arange(2, 2 + len(frame) + len(bad_at)), bad_at)
    return CsvTable(frame, [f"line {n}" for n in lines], len(bad_at), bad)


def check_columns(path: Path, fmt: str, frame: pd.DataFrame, required: Sequence[str],
                  known: Sequence[str] = (), known_prefixes: Sequence[str] = ()) -> None:
    """Missing required columns or columns the format never writes -> one-line error."""
    missing = [c for c in required if c not in frame.columns]
    if missing:
        shown = ", ".join(repr(c) for c in list(frame.columns)[:6])
        raise InvalidInputError(
            f"{path.name}: a {fmt} file needs column(s) {missing}, which it lacks (it has {shown}, ...)")
    allowed = set(required) | set(known)
    unknown = [c for c in frame.columns if c not in allowed and not str(c).startswith(tuple(known_prefixes))]
    if unknown:
        raise InvalidInputError(f"{path.name}: column(s) {unknown[:5]} are not part of the {fmt} format")
