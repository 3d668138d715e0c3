"""Reading recorded files safely: every way a damaged file fails becomes one line naming it.

Gzip is detected by its magic bytes, not the file name, so a renamed file still reads;
truncated gzip, undecodable bytes, invalid JSON and malformed CSV all surface as
``InvalidInputError("<file>: <what is wrong>")``.
"""

from __future__ import annotations

import gzip
import io
import json
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

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


def read_json(path: Path) -> Any:
    text = decode_text(path, read_bytes(path))
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{path.name}: line {exc.lineno}: invalid JSON ({exc.msg})") from exc
    except RecursionError as exc:
        raise InvalidInputError(f"{path.name}: JSON nested too deeply to read") from exc


def read_csv(path: Path, fmt: str) -> pd.DataFrame:
    """A CSV as strings-or-numbers, with the errors of a damaged file turned into one line."""
    text = decode_text(path, read_bytes(path))
    stripped = text.lstrip()
    if stripped[:1] in ("{", "["):
        raise InvalidInputError(f"{path.name}: a {fmt} file must be CSV, but this one holds JSON")
    if not stripped:
        raise InvalidInputError(f"{path.name}: a {fmt} file must hold a header and rows, but it is empty")
    try:
        frame = pd.read_csv(io.StringIO(text), low_memory=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError, OverflowError) as exc:
        raise InvalidInputError(f"{path.name}: malformed CSV ({_first_line(exc)})") from exc
    if len(frame) == 0:
        raise InvalidInputError(f"{path.name}: a {fmt} file must hold at least one row, but it has none")
    return frame


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
