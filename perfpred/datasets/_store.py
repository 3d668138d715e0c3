"""A folder of Parquet part files holding Measurements.

Crash safety comes from never rewriting a file in place: every append writes a new part
to a temporary name, fsyncs it and renames it into place (atomic on POSIX), so a SIGKILL
loses at most the rows in flight and never leaves a half-written part where readers look.
Resuming a sweep asks ``contains()`` before measuring; reading de-duplicates by
``measurement_id`` (the newest row wins), so even two writers racing on one config
cannot make a table with duplicates. Writers (appends, merges, imports, ``compact``) take
the store's lock (``writing``) for the check of what is stored and the write after it, so a
process never writes over a row another process stored a moment before.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import time
import uuid
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from perfpred._files import write_text_atomically
from perfpred.datasets._checks import check_rows, unknown_columns
from perfpred.datasets._schema import FIXED_COLUMNS, SCHEMA_VERSION, Measurement
from perfpred.errors import InvalidInputError, NotAStoreError, StoreError

_MANIFEST = "store.json"
_PARTS = "parts"
_FORMAT = "perfpred-measurement-store"
# A part's name, as ``_write_part`` makes it: a nanosecond clock (oldest first) and 8 random hex.
_PART_NAME = re.compile(r"part-\d{20}-[0-9a-f]{8}\.parquet")
_SHOWN_FILES = 5  # foreign files a warning names
REQUIRED_COLUMNS = ("measurement_id", "kind", "hardware_id", "status", "runtime_ms")  # what append_frame needs


class StoreWarning(UserWarning):
    """Something in a store that its reads leave out (a file in ``parts/`` that is no part)."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class MeasurementStore:
    """Append-only, resumable, de-duplicated Measurement table on disk.

    >>> store = MeasurementStore("runs/gemm", create=True)   # doctest: +SKIP
    >>> store.append([measurement])                           # doctest: +SKIP
    >>> df = store.load()                                     # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = False) -> None:
        self.path = Path(path)
        manifest = self.path / _MANIFEST
        # What this call created (folders outermost first), so an import that stores nothing
        # can take it away again with ``discard_if_empty``.
        self._created: list[Path] = []
        if self.path.exists() and not self.path.is_dir():
            raise NotAStoreError(f"a Measurement store must be a folder, but '{self.path}' is a file")
        if not manifest.exists():
            if not create:
                raise NotAStoreError(
                    f"no Measurement store at '{self.path}' (missing {_MANIFEST}); "
                    "create one with `perfpred collect ...` or `perfpred import ... --into PATH`"
                )
            self._create(manifest)
        try:
            meta = json.loads(manifest.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise StoreError(f"unreadable store manifest '{manifest}': {exc}") from exc
        if meta.get("format") != _FORMAT:
            raise StoreError(f"'{manifest}' is not a perfpred store manifest (format={meta.get('format')!r})")
        self.schema_version = _manifest_version(meta, manifest)
        self._ids: set[str] | None = None
        self._id_parts: set[str] = set()  # the parts whose ids ``_ids`` holds
        self._lock_depth = 0
        self._part_types: dict[str, dict[str, str]] = {}
        self._warned_foreign = False

    def _create(self, manifest: Path) -> None:
        try:
            if self.path.exists() and any(p.name != _PARTS for p in self.path.iterdir()):
                raise NotAStoreError(f"'{self.path}' exists and is not a Measurement store; choose an empty folder")
            missing = [p for p in (self.path / _PARTS, *(self.path / _PARTS).parents) if not p.exists()]
            (self.path / _PARTS).mkdir(parents=True, exist_ok=True)
            self._created = list(reversed(missing))
            write_text_atomically(manifest, json.dumps({"format": _FORMAT, "schema_version": SCHEMA_VERSION},
                                                       indent=2))
            self._created.append(manifest)
        except OSError as exc:
            raise StoreError(f"cannot create a Measurement store at '{self.path}': "
                             f"{exc.strerror or type(exc).__name__}") from exc

    def discard_if_empty(self) -> bool:
        """Remove what creating this store made, if nothing was ever written to it.

        Only the manifest, the empty parts folder, the lock file and the folders this object
        created go, and only while no part file exists: a store that holds rows, or that was
        there before, is never touched. Returns whether the store was removed.
        """
        if not self._created or self.part_files():
            return False
        (self.path / ".lock").unlink(missing_ok=True)
        for path in reversed(self._created):
            try:
                path.unlink() if path.name == _MANIFEST else path.rmdir()
            except OSError:  # something else appeared in it meanwhile: leave it
                return False
        self._created = []
        return True

    # ------------------------------------------------------------------ writing
    def _parts_dir(self) -> Path:
        return self.path / _PARTS

    def part_files(self) -> list[Path]:
        """Committed part files, oldest first (names start with a nanosecond clock). Only files
        named as ``_write_part`` names them: anything else in ``parts/`` (a Spark or hand-copied
        Parquet file) is never read as rows, and said once (a ``StoreWarning``)."""
        parts, foreign = [], []
        for path in self._parts_dir().iterdir() if self._parts_dir().is_dir() else ():
            if _PART_NAME.fullmatch(path.name):
                if path.is_file():  # not when a compaction removed it since the listing
                    parts.append(path)
            elif not path.name.startswith(".tmp-"):  # a writer's part in flight, or one a crash left
                foreign.append(path.name)
        if foreign and not self._warned_foreign:
            self._warned_foreign = True
            warnings.warn(_foreign_message(self._parts_dir(), sorted(foreign)), StoreWarning, stacklevel=2)
        return sorted(parts)

    def column_types(self) -> dict[str, str]:
        """Each stored column's type ('number', 'string', 'bool', 'list', ...), as its oldest
        typed part holds it; columns that are empty everywhere are left out."""
        out: dict[str, str] = {}
        for part in self.part_files():
            types = self._part_types.get(part.name)
            if types is None:
                types = {f.name: t for f in _footer(part) if (t := _type_class(f.type)) is not None}
                self._part_types[part.name] = types  # parts are never rewritten, so this stays true
            for column, kind in types.items():
                out.setdefault(column, kind)
        return out

    def _check_types(self, table: pa.Table, frame: pd.DataFrame) -> None:
        """Refuse new rows that would give a stored column a second type: Parquet keeps one type
        per column, so merging the parts would rewrite the stored values (16 -> '16')."""
        stored = self.column_types()
        for field in table.schema:
            new, old = _type_class(field.type), stored.get(field.name)
            if new is None or old is None or new == old:
                continue
            value = next((v for v in frame[field.name] if value_kind(v) not in (None, old)), None)
            raise StoreError(f"`{field.name}` must hold {old} values, as it does in the store '{self.path}', "
                             f"but a new row has {value!r}; nothing was written")

    def _check_one_kind(self, frame: pd.DataFrame) -> None:
        """Refuse new rows whose column mixes kinds (16 and 'wide'): one Parquet column holds one
        type, so writing them would silently retype some of the values (16 -> '16')."""
        for column in _mixed_columns(frame):
            values = [v for v in frame[column] if value_kind(v) is not None]
            first = values[0]
            other = next(v for v in values if value_kind(v) != value_kind(first))
            kinds = " and ".join(sorted({value_kind(v) for v in values}))  # type: ignore[misc]
            raise StoreError(f"`{column}` must hold values of one kind in the store '{self.path}', but the new "
                             f"rows mix {kinds} (e.g. {first!r} and {other!r}); nothing was written")

    def _write_part(self, rows: list[dict[str, Any]] | pd.DataFrame, *, check_types: bool = True) -> Path:
        frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame.from_records(rows)
        if check_types:
            self._check_one_kind(frame)
        frame = strings_where_mixed(frame)
        try:
            table = pa.Table.from_pandas(frame, preserve_index=False)
        except (pa.ArrowException, ValueError, OverflowError) as exc:
            raise StoreError(f"rows for '{self.path}' cannot be written: {str(exc).splitlines()[0]}") from exc
        with self.writing():  # the types checked are the store's types when the part lands
            if check_types:
                self._check_types(table, frame)
            name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
            tmp = self._parts_dir() / f".tmp-{name}"
            final = self._parts_dir() / name
            with open(tmp, "wb") as fh:
                pq.write_table(table, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
            _fsync_dir(self._parts_dir())
        return final

    def _note_written(self, part: Path, ids: Iterable[str]) -> None:
        """Add a part this object committed to the id cache (only once the part is in place)."""
        if self._ids is not None:
            self._ids.update(ids)
            self._id_parts.add(part.name)

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the store's write lock (an exclusive ``flock`` of ``.lock``) for the block.

        Appends, merges, imports and compactions of other processes wait meanwhile, so a check
        of what is stored and the write that acts on it see one store: two merges, or a merge
        and a live collect, cannot both write a configuration the other just wrote. On entry
        the id cache takes in the parts other processes committed since it was read.
        Re-entrant within this object.
        """
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        with open(self.path / ".lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            self._lock_depth = 1
            try:
                self._refresh_ids()
                yield
            finally:
                self._lock_depth = 0
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _refresh_ids(self) -> None:
        """Bring the id cache up to date with parts committed since it was read (by anyone)."""
        if self._ids is None:
            return  # read in full, and so fresh, when first asked for
        for part, frame in self._read_listing(columns=["measurement_id"], skip=self._id_parts):
            self._ids.update(frame["measurement_id"])
            self._id_parts.add(part.name)

    def append(self, measurements: Iterable[Measurement], *, replace: bool = False) -> int:
        """Write measurements as one new part; returns how many rows were written.

        Measurements whose id is already stored are skipped unless ``replace`` (then the new
        row supersedes the old one on read). Each record is validated first (``validate()``):
        one that breaks a rule raises, and nothing of the batch is written.
        """
        records = list(measurements)
        for m in records:
            if not isinstance(m, Measurement):
                raise InvalidInputError(f"`measurements` must hold Measurement records, but got {m!r:.80}")
            m.validate()  # a field changed after construction (m.runtime_ms = nan) is caught here
        with self.writing():  # what is stored, as of now: another process may have written meanwhile
            stored = self.ids()
            rows, keys = [], set()
            for m in records:
                key = m.measurement_id
                if (key in stored or key in keys) and not replace:
                    continue
                rows.append(m.to_row())
                keys.add(key)
            if rows:
                # ids noted only once the part is committed: a refused batch leaves no ids behind
                self._note_written(self._write_part(rows), keys)
        return len(rows)

    def append_frame(self, frame: pd.DataFrame, *, replace: bool = False) -> int:
        """Bulk append of rows already in the flat schema (importers of big recorded tables).

        Every row is checked against the rules a Measurement obeys (``check_rows``, column-wise);
        a frame with a bad row is refused whole, naming the rule, a value and how many rows break
        it, and nothing is written.
        """
        missing = [c for c in REQUIRED_COLUMNS if c not in frame]
        if missing:
            raise StoreError(f"append_frame needs columns {missing}, which the frame lacks")
        problems = check_rows(frame, SCHEMA_VERSION)
        if problems.count:
            raise InvalidInputError(f"append_frame: {problems.count} of {len(frame)} row(s) break a rule of the "
                                    f"Measurement schema, e.g. {problems.first()}; nothing was written")
        return self._append_rows(frame.drop(columns=unknown_columns(frame)), replace=replace)

    def _append_rows(self, frame: pd.DataFrame, *, replace: bool = False) -> int:
        """``append_frame`` of rows already checked (a merge checks its sources' rows itself)."""
        with self.writing():
            if not replace:
                frame = frame[~self.stored(frame["measurement_id"])]
            frame = frame.drop_duplicates("measurement_id", keep="last")
            if frame.empty:
                return 0
            self.ids()  # cached before the write, so the note below keeps the cache whole
            self._note_written(self._write_part(frame), frame["measurement_id"])
        return len(frame)

    # ------------------------------------------------------------------ reading
    def ids(self) -> set[str]:
        """Every stored ``measurement_id`` (cached; brought up to date on each write)."""
        if self._ids is None:
            ids: set[str] = set()
            parts: set[str] = set()
            for part, frame in self._read_listing(columns=["measurement_id"]):
                ids.update(frame["measurement_id"])
                parts.add(part.name)
            self._ids, self._id_parts = ids, parts
        return self._ids

    def contains(self, measurement_id: str) -> bool:
        return measurement_id in self.ids()

    def stored(self, measurement_ids: Iterable[str]) -> np.ndarray:
        """A boolean per id: is it already stored? Costs O(len(measurement_ids)), whatever the
        store's size (``Series.isin(set)`` walks the whole set: ~1 s per file against 500k rows)."""
        ids = self.ids()
        return np.fromiter((key in ids for key in measurement_ids), dtype=bool)

    def rows_of(self, measurement_ids: Iterable[str], columns: Iterable[str]) -> pd.DataFrame:
        """The stored rows with these ids (newest wins), indexed by id, with those of ``columns``
        the store has; reads only those columns of each part."""
        wanted = pd.Index(pd.unique(np.asarray(list(measurement_ids), dtype=object)))
        frames = []
        for part in self.part_files():
            names = _column_names(part)
            cols = ["measurement_id", *(c for c in dict.fromkeys(columns) if c in names and c != "measurement_id")]
            frame = self._read_part(part, columns=cols)
            frames.append(frame[frame["measurement_id"].isin(wanted)])
        frames = [f for f in frames if len(f)]
        if not frames:
            return pd.DataFrame(columns=["measurement_id"]).set_index("measurement_id")
        rows = pd.concat(frames, ignore_index=True, sort=False)
        return rows.drop_duplicates("measurement_id", keep="last").set_index("measurement_id")

    @staticmethod
    def _read_part(part: Path, columns: list[str] | None = None) -> pd.DataFrame:
        try:
            return pq.read_table(part, columns=columns).to_pandas()
        except (OSError, pa.ArrowException) as exc:
            raise StoreError(f"unreadable part file '{part}': {exc}") from exc

    def _read_parts(self, columns: list[str] | None = None) -> list[pd.DataFrame]:
        return [frame for _, frame in self._read_listing(columns)]

    def _read_listing(self, columns: list[str] | None = None, *, skip: Iterable[str] = (),
                      attempts: int = 5) -> list[tuple[Path, pd.DataFrame]]:
        """Every part (but those named in ``skip``) with its rows, read from one listing. A part
        that vanished after the listing was merged by a concurrent ``compact`` (which commits the
        merged part first), so the listing is redone."""
        skip = set(skip)
        for attempt in range(attempts):
            parts = [p for p in self.part_files() if p.name not in skip]
            try:
                return [(p, self._read_part(p, columns=columns)) for p in parts]
            except StoreError:
                if attempt == attempts - 1 or all(p.exists() for p in parts):
                    raise
        raise AssertionError("unreachable")

    def load(self, *, kind: str | None = None, status: str | None = None) -> pd.DataFrame:
        """All measurements as one DataFrame, de-duplicated by measurement_id (newest wins)."""
        frames = [f for f in self._read_parts() if not f.empty]
        if not frames:
            return pd.DataFrame(columns=list(FIXED_COLUMNS))
        df = pd.concat(frames, ignore_index=True, sort=False)
        df = df.drop_duplicates("measurement_id", keep="last").reset_index(drop=True)
        if kind is not None:
            df = df[df["kind"] == kind]
        if status is not None:
            df = df[df["status"] == status]
        return df.dropna(axis=1, how="all").reset_index(drop=True)

    def measurements(self, **filters: Any) -> list[Measurement]:
        """The stored rows (``load(**filters)``: de-duplicated, newest wins) as Measurement records."""
        return [Measurement.from_row(r) for r in self.load(**filters).to_dict("records")]

    def __len__(self) -> int:
        return len(self.ids())

    # ------------------------------------------------------------------ upkeep
    def compact(self) -> int:
        """Merge all parts into one (de-duplicated); returns the number of rows kept.

        The merged part is committed before the old ones are removed, so a crash in between
        leaves duplicates (which reads drop), never a loss.
        """
        with self.writing():  # writers wait, so no part lands (and no temporary part is live) meanwhile
            old = self.part_files()
            if len(old) <= 1:
                return len(self.ids())
            df, merged = self._merge_parts(old, clear_temporary=True)
            if merged is not None:
                self._ids, self._id_parts = set(df["measurement_id"]), {merged.name}
            return len(df)

    def _merge_parts(self, parts: list[Path], *, clear_temporary: bool = False) -> tuple[pd.DataFrame, Path | None]:
        """Replace ``parts`` (oldest first) by one part of their rows, de-duplicated (newest wins).

        Returns the merged rows and the merged part, or None for the part when the rows could not
        be merged (then nothing changed). The merged part is committed before the old ones are
        removed, so a crash in between leaves duplicates (which reads drop), never a loss.
        ``clear_temporary`` also removes the temporary parts of writers that crashed. The caller
        holds the write lock (``writing``), so no other writer's temporary part is live meanwhile.
        """
        frames = [f for f in (self._read_part(p) for p in parts) if not f.empty]
        if frames:
            df = pd.concat(frames, ignore_index=True, sort=False).drop_duplicates("measurement_id", keep="last")
            df = df.dropna(axis=1, how="all").reset_index(drop=True)
        else:
            df = pd.DataFrame(columns=list(FIXED_COLUMNS))
        if _mixed_columns(df):
            # Parts written before types were checked disagree on a column's type; one
            # merged part would have to rewrite some of their values, so they stay apart.
            return df, None
        merged = self._write_part(df, check_types=False)
        for part in parts:
            part.unlink(missing_ok=True)
        if clear_temporary:
            for tmp in self._parts_dir().glob(".tmp-*"):  # left by writers that crashed
                tmp.unlink(missing_ok=True)
        _fsync_dir(self._parts_dir())
        return df, merged

    def tidy(self) -> int:
        """Merge the newest small parts into one, leaving the big old ones alone; how many parts
        were merged (0: nothing to do).

        A sweep appends a part per measurement and an import a part per batch; reading thousands
        of parts is slow, but :meth:`compact` after each command rewrote the whole store (5 s to
        import 53 rows into UCI SGEMM's 241,600). The merged run is the newest parts, each older
        one taken while it holds at most twice the rows of those taken so far, so a row is rewritten
        O(log n) times over a store's life, and newest-wins order between parts is kept.
        """
        with self.writing():
            parts = self.part_files()
            run: list[Path] = []
            run_rows = 0
            for part in reversed(parts):
                rows = _footer(part, pq.read_metadata).num_rows  # bytes would count each file's fixed overhead
                if run and rows > 2 * run_rows:
                    break
                run.append(part)
                run_rows += rows
            if len(run) < 2:
                return 0
            if len(run) == len(parts):
                self.compact()
                return len(run)
            run.reverse()  # oldest first, so the newest row of an id wins in the merge
            _, merged = self._merge_parts(run)
            if merged is None:
                return 0  # these parts stay apart (see _merge_parts)
            if self._ids is not None:  # the merged part's ids are cached if each merged part's were
                cached = all(p.name in self._id_parts for p in run)
                self._id_parts -= {p.name for p in run}
                if cached:
                    self._id_parts.add(merged.name)
            return len(run)

    def _columns_of_parts(self, columns: list[str]) -> list[pd.DataFrame]:
        """Each part's rows, read for those of ``columns`` it holds (a part lacks the columns its
        rows leave empty): a summary then reads a few columns, not a whole store."""
        frames = []
        for part in self.part_files():
            names = _column_names(part)
            frames.append(self._read_part(part, columns=[c for c in columns if c in names]))
        return frames

    def hardware_specs(self) -> dict[str, str]:
        """The stored spec (``hardware_json``) of each hardware id, its first stored one."""
        specs: dict[str, str] = {}
        for frame in self._columns_of_parts(["hardware_id", "hardware_json"]):
            if {"hardware_id", "hardware_json"} <= set(frame.columns):
                pairs = frame.dropna().drop_duplicates("hardware_id")
                for hardware_id, spec in pairs.itertuples(index=False):
                    specs.setdefault(str(hardware_id), str(spec))
        return specs

    def info(self) -> dict[str, Any]:
        """A summary dict: path, rows, parts, size_bytes, and for a non-empty store the counts per
        kind / status / hardware id / source and the workload, config and metric columns."""
        # Only the columns counted below: loading every column of a 357,000-row store took 5 s and 1 GB.
        wanted = ["measurement_id", "kind", "status", "hardware_id", "source", "power_source", "timestamp"]
        frames = [f for f in self._columns_of_parts(wanted) if not f.empty]
        df = (pd.concat(frames, ignore_index=True, sort=False).drop_duplicates("measurement_id", keep="last")
              if frames else pd.DataFrame(columns=wanted))
        columns = list(self.column_types())
        size = sum(p.stat().st_size for p in self.part_files())
        out: dict[str, Any] = {
            "path": str(self.path),
            "schema_version": self.schema_version,  # the store's (its manifest's), not this perfpred's
            "rows": len(df),
            "parts": len(self.part_files()),
            "size_bytes": int(size),
        }
        if len(df):
            def counts(column: str) -> dict[str, int]:  # a column no row fills is not stored
                return df[column].value_counts().to_dict() if column in df else {}

            out["kinds"] = counts("kind")
            out["status"] = counts("status")
            out["hardware_ids"] = counts("hardware_id")
            out["sources"] = counts("source")
            out["power_source"] = counts("power_source")
            out["workload_columns"] = sorted(c for c in columns if c.startswith("workload."))
            out["config_columns"] = sorted(c for c in columns if c.startswith("config."))
            out["metric_columns"] = sorted(c for c in columns if c.startswith("metric."))
            first, last = _time_span(df["timestamp"]) if "timestamp" in df else (None, None)
            out["first_timestamp"], out["last_timestamp"] = first, last
        return out


def _manifest_version(meta: dict[str, Any], manifest: Path) -> int | None:
    """The manifest's ``schema_version`` (None where it names none); one line for a version that
    is no whole number or is newer than this perfpred reads."""
    version = meta.get("schema_version")
    if version is None:
        return None
    if not isinstance(version, int) or isinstance(version, bool):
        raise StoreError(f"`schema_version` must be a whole number in '{manifest}', but got {version!r}")
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"store schema_version <= {SCHEMA_VERSION} must hold for this perfpred, "
            f"but got schema_version={version} in '{manifest}': upgrade perfpred"
        )
    return version


def _foreign_message(parts_dir: Path, names: list[str]) -> str:
    more = f" and {len(names) - _SHOWN_FILES} more" if len(names) > _SHOWN_FILES else ""
    return (f"'{parts_dir}' holds {len(names)} file(s) not named as this store's parts "
            f"(part-<20 digits>-<8 hex>.parquet), left unread: {', '.join(names[:_SHOWN_FILES])}{more}")


def _footer(part: Path, read: Any = pq.read_schema) -> Any:
    """``read(part)`` of a part's footer (its schema, or with ``pq.read_metadata`` its row count);
    a part that cannot be read is one line."""
    try:
        return read(part)
    except (OSError, pa.ArrowException) as exc:
        raise StoreError(f"unreadable part file '{part}': {str(exc).splitlines()[0]}") from exc


def _column_names(part: Path) -> set[str]:
    """The columns a part holds (read from its footer only)."""
    return set(_footer(part).names)


TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # how a store summary shows a time: ISO 8601 in UTC, 2026-12-07T14:03:05Z


def _time_span(timestamps: pd.Series) -> tuple[str | None, str | None]:
    """The earliest and latest of ``timestamps``, each as :data:`TIME_FORMAT`; (None, None) when none parses.

    Stored timestamps come in the formats their sources wrote (collected rows ISO with a
    timezone, Kernel Tuner's with microseconds, ...), so they are compared as times, not as
    strings, and shown in one format. A time without a timezone is taken as UTC.
    """
    times = pd.to_datetime(timestamps, utc=True, errors="coerce", format="mixed").dropna()
    if times.empty:
        return None, None
    return times.min().strftime(TIME_FORMAT), times.max().strftime(TIME_FORMAT)


def _type_class(arrow_type: pa.DataType) -> str | None:
    """The kind of values an Arrow column holds; None for a column of nothing but nulls."""
    if pa.types.is_null(arrow_type):
        return None
    if pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type):
        return "number"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "string"
    if pa.types.is_boolean(arrow_type):
        return "bool"
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return "list"
    return str(arrow_type)


def value_kind(value: Any) -> str | None:
    """The kind of one Python value, named as :func:`_type_class` names columns."""
    if value is None or value is pd.NA or value is pd.NaT or (isinstance(value, (float, np.floating))
                                                               and np.isnan(value)):
        return None
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    if isinstance(value, (int, float, np.integer, np.floating)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple, np.ndarray)):
        return "list"
    return type(value).__name__


def _mixed_columns(df: pd.DataFrame) -> list[str]:
    """Object columns holding values of more than one kind (say numbers and strings)."""
    single = {"string", "empty", "boolean", "integer", "floating", "mixed-integer-float", "decimal"}
    return [col for col in df.columns
            if df[col].dtype == object and pd.api.types.infer_dtype(df[col], skipna=True) not in single
            and len({value_kind(v) for v in df[col]} - {None}) > 1]


def strings_where_mixed(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with each column that mixes kinds of values (:func:`_mixed_columns`: numbers and
    strings, bools and numbers, ...) as text, missing values kept missing: Arrow takes one type
    per column. Columns of one kind (ints and floats, lists and arrays) are left as they are.
    Shared by the store's writes and ``perfpred dataset ls --output x.parquet``."""
    mixed = _mixed_columns(df)
    if not mixed:
        return df
    df = df.copy(deep=False)
    for col in mixed:
        df[col] = df[col].map(lambda v: None if value_kind(v) is None else str(v))
    return df
