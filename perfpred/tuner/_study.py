"""The tuner's shared record: an Optuna study plus a claims table for many workers.

Every hardware evaluation becomes an Optuna trial (``source`` = ``measured``, with the
prediction that led to it as ``predicted_*``), so ``optuna-dashboard`` shows the whole
history. Several ``perfpred tune`` processes pointed at one RDB storage (SQLite file, or
PostgreSQL for many hosts) share the study; before measuring, a worker claims the config
in a small table whose unique keys make a double measurement, or a measurement past the
budget, impossible, whichever worker gets there first. A claim carries its worker's heartbeat,
so the claim of a worker that died (SIGKILL, a machine gone) is taken over by another one
after a grace period instead of barring its config and its slot for good.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from perfpred.datasets._schema import is_number, python_scalar
from perfpred.errors import InvalidInputError, StorageUnavailableError


def _retry_create(create, attempts: int = 8):
    """Run a schema/study creation, retrying when another worker is creating the same thing.

    Workers started together on a fresh database race to create tables and the study
    (optuna/optuna#1092); the loser sees an integrity or operational error and, a moment
    later, finds everything in place.
    """
    import random
    import time

    import optuna
    import sqlalchemy.exc as sa_exc

    for attempt in range(attempts):
        try:
            return create()
        except (sa_exc.IntegrityError, sa_exc.OperationalError, sa_exc.ProgrammingError,
                optuna.exceptions.DuplicatedStudyError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 + random.random() * 0.3 * (attempt + 1))
    return None


# What a refusal of a study that tunes something else tells to do (``open_study``'s ``remedy``).
STUDY_REMEDY = "use another --study or --output"


def open_study(storage_url: str | None, study_name: str, directions: list[str],
               identity: Mapping[str, Any] | None = None, *, remedy: str = STUDY_REMEDY,
               mixes: str = "its trials would be learned from as this one's") -> Any:
    """The Optuna study ``study_name`` in ``storage_url`` (None: in memory), created or resumed.

    A resumed study must tune the same thing: its directions and ``identity`` (the parameter
    names, the hardware, the problem; ``LABEL_KEYS`` are only shown) are checked against what it
    was created with, so a second space or GPU tuned under one ``--study`` is refused instead of
    learning from the first one's trials. A refusal names the first identity key that differs (of
    a mapping, such as the workload, only its entries that differ), what that would do (``mixes``)
    and what to do instead (``remedy``).
    A storage URL that cannot be opened is a one-line error naming it.
    """
    import optuna
    import sqlalchemy.exc as sa_exc

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = None
    try:
        if storage_url is not None:
            # An RDBStorage built once here is reused; building it creates the schema (racy on first use).
            storage = _retry_create(lambda: optuna.storages.RDBStorage(storage_url))
        study = _retry_create(lambda: optuna.create_study(storage=storage, study_name=study_name,
                                                          directions=directions, load_if_exists=True))
    except sa_exc.SQLAlchemyError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        # A URL SQLAlchemy cannot parse or load is bad input (exit 2); a database it cannot reach, the environment (1).
        error = InvalidInputError if isinstance(exc, sa_exc.ArgumentError) else StorageUnavailableError
        raise error(f"--storage {storage_url}: cannot open it as an Optuna RDB storage "
                    f"(sqlite:///PATH or postgresql+psycopg2://USER@HOST/DB): {first[:200]}") from None
    had = [d.name.lower() for d in study.directions]
    if had != list(directions):
        def tuned(objectives: Any) -> str:  # what a study or run tunes, where it says so
            if isinstance(objectives, str):
                objectives = [objectives]
            return f": {', '.join(map(str, objectives))}" if isinstance(objectives, list) and objectives else ""

        recorded_objectives = study.user_attrs.get("objectives", study.user_attrs.get("objective"))
        wanted_objectives = (identity or {}).get("objectives", (identity or {}).get("objective"))
        raise InvalidInputError(f"study {study_name!r} in {storage_url} was created to {', '.join(had)} "
                                f"({len(had)} objective(s){tuned(recorded_objectives)}), but this run would "
                                f"{', '.join(directions)} ({tuned(wanted_objectives)[2:] or len(directions)}): "
                                "use another --study or --storage")
    if identity is not None:
        wanted = json.loads(json.dumps(dict(identity), default=str))
        recorded = study.user_attrs.get("perfpred_identity")
        clash = None if recorded is None else _identity_clash(recorded, wanted)
        if clash is not None:
            name, old, new = clash

            def labels(ident: Mapping[str, Any]) -> str:
                shown = [f"{k}={ident[k]}" for k in LABEL_KEYS if k in ident and k != name]
                return f" ({', '.join(shown)})" if shown else ""

            if name.startswith(SPACE_KEY):  # another --space: the study's trials lie outside this one's domains
                raise InvalidInputError(f"study {study_name!r} in {storage_url} tunes {name[len(SPACE_KEY):]} in "
                                        f"{old}, but this run's space has {name[len(SPACE_KEY):]} in {new}: resuming "
                                        f"it in another space cannot be done; {remedy}")
            if isinstance(old, Mapping) and isinstance(new, Mapping):  # name the entries that differ
                differ = [k for k in [*old, *(k for k in new if k not in old)] if old.get(k) != new.get(k)]
                old, new = {k: old.get(k) for k in differ}, {k: new.get(k) for k in differ}
            raise InvalidInputError(f"study {study_name!r} in {storage_url} tunes {name}={old}{labels(recorded)}, "
                                    f"but this run has {name}={new}{labels(wanted)}: {mixes}; {remedy}")
        if recorded != wanted:  # new, renamed, or made by a perfpred that recorded less
            study.set_user_attr("perfpred_identity", wanted)
    return study


# Identity keys shown in a refusal but not compared: the backend as spelled on the command line.
# A recording keeps its GPU when renamed or moved, and two GPUs' recordings may share a file name.
LABEL_KEYS = ("backend",)
# Identity keys of a parameter's domain (``space.NAME``): a study made before they were recorded
# resumes without them (and records them), as it did then.
SPACE_KEY = "space."


def space_identity(space: Any) -> dict[str, Any]:
    """``{"space.NAME": domain}`` of a search space: its values in order, or a continuous range's bounds.
    A study resumed in another space would add trials its distributions refuse."""
    out: dict[str, Any] = {}
    for name, dists in space.optuna_distributions().items():
        choices = getattr(dists, "choices", None)
        out[SPACE_KEY + name] = ([python_scalar(c) for c in choices] if choices is not None
                                 else {"low": dists.low, "high": dists.high, "log": dists.log,
                                       "step": getattr(dists, "step", None), "type": type(dists).__name__})
    return out


def objective_identity(objective: str, direction: str = "minimize") -> str:
    """How a single-objective study records what it tunes: the metric (``runtime_ms``), with
    ``:maximize`` when maximised, so a study of one objective or direction never takes another's trials
    (and a study made before directions were recorded, all minimised, keeps its identity)."""
    return objective if direction == "minimize" else f"{objective}:maximize"


def identity_digest(identity: Mapping[str, Any]) -> str:
    """8 hex of the sha1 of ``identity`` (its ``LABEL_KEYS`` left out): a default study name's
    suffix, so two recordings with one file name (convolution/A100.json.gz and
    dedispersion/A100.json.gz) get two studies in one storage."""
    kept = {k: v for k, v in identity.items() if k not in LABEL_KEYS}
    return hashlib.sha1(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:8]


def resume_name(storage_url: str, default: str, prefix: str, identity: Mapping[str, Any],
                legacy: Sequence[str] = ()) -> str:
    """The study a run without ``--study`` resumes: ``default`` when the storage holds it; else a study
    named ``prefix...`` whose recorded identity is this run's (the same recording, renamed); else one of
    the ``legacy`` names (what the default was before, e.g. without ``identity_digest``'s suffix) whose
    study would take this run (its recorded identity, as far as it recorded one, is this run's);
    else ``default``."""
    import optuna

    try:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        studies = [s for s in optuna.study.get_all_study_summaries(storage=storage_url)
                   if s.study_name.startswith(prefix)]
    except Exception:  # a storage that cannot be opened: open_study names it
        return default
    if any(s.study_name == default for s in studies):
        return default
    wanted = json.loads(json.dumps(dict(identity), default=str))
    keys = [k for k in wanted if k not in LABEL_KEYS]
    same = [s.study_name for s in studies
            if all(s.user_attrs.get("perfpred_identity", {}).get(k) == wanted[k] for k in keys)]
    if same:
        return same[0]
    for name in legacy:
        found = next((s for s in studies if s.study_name == name), None)
        recorded = None if found is None else found.user_attrs.get("perfpred_identity")
        # Compared on this run's keys only (the parameter names, which open_study adds, are not among them).
        if found is not None and (recorded is None or _identity_clash({k: v for k, v in recorded.items()
                                                                       if k in wanted}, wanted) is None):
            return name
    return default


def measured_seeds(study: Any) -> list[int]:
    """The ``--seed``s the study's measured trials were picked with, in order of first use (a trial
    recorded by an earlier perfpred tells none)."""
    seeds = [t.user_attrs.get("seed") for t in study.get_trials(deepcopy=False)
             if t.user_attrs.get("source") == "measured"]
    return list(dict.fromkeys(s for s in seeds if s is not None))


def seed_warning(study: Any, seed: int, n_measured: int, remedy: str) -> str | None:
    """What to tell a run resuming ``study`` with ``seed`` when its trials were picked with other
    seeds: the seed steers only the configs this run adds (none once the budget is spent); the trials
    measured stay. None when the seeds agree or the study tells none."""
    other = [s for s in measured_seeds(study) if s != seed]
    if not other or not n_measured:
        return None
    seeds = ", ".join(str(s) for s in measured_seeds(study))
    return (f"study {study.study_name!r} holds {n_measured} evaluation(s) picked with --seed {seeds}: resuming it, "
            f"--seed {seed} only picks the configs this run adds (none when --budget is spent); {remedy} to start "
            f"afresh with it")


def _identity_clash(recorded: Mapping[str, Any], wanted: Mapping[str, Any]) -> tuple[str, Any, Any] | None:
    """The first key (the caller's order: parameters first) whose recorded value differs from this run's."""
    # A study made before its hardware and workload were recorded knew its GPU only by the backend's
    # name: it is told apart by that name, as then, and records the rest when resumed.
    legacy = any(k not in recorded for k in wanted if k not in LABEL_KEYS and not k.startswith(SPACE_KEY))
    for key in [*wanted, *(k for k in recorded if k not in wanted)]:
        if (key in LABEL_KEYS and not legacy) or (legacy and key not in recorded):
            continue
        if key.startswith(SPACE_KEY) and (key not in recorded or key not in wanted):
            continue  # recorded before domains were, or a parameter the "parameters" key already tells apart
        if recorded.get(key) != wanted.get(key):
            return key, recorded.get(key), wanted.get(key)
    return None


def config_key(config: Mapping[str, Any]) -> str:
    """A config's short stable key (24 hex of the sha1 of its sorted JSON): the claims table's key."""
    payload = json.dumps({k: python_scalar(v) for k, v in sorted(config.items())}, sort_keys=True)
    return hashlib.sha1(payload.encode()).hexdigest()[:24]


def row_config(frame: Any, i: int) -> dict[str, Any]:
    """Row ``i`` of a candidates DataFrame as a config of Python scalars.

    Column by column: ``frame.iloc[i]`` upcasts ints to floats beside a float column, and the
    config would then miss its candidate's key (and could be measured again).
    """
    return {c: python_scalar(frame[c].iat[i]) for c in frame.columns}


class CandidateIndex:
    """Which candidate row a measured config is, found when first asked and remembered.

    Keying all candidates up front hashed every row (9 of the tuner's 11 s of set-up on the
    241,600-config UCI SGEMM space); a study only ever asks about the configs it measured.
    Values match by equality, so a config read back from storage as 1.0 still finds row ``x=1``.
    """

    def __init__(self, candidates: Any) -> None:
        self.columns = {c: candidates[c].to_numpy() for c in candidates.columns}
        self.n_rows = len(candidates)
        self._rows: dict[str, int | None] = {}

    def get(self, config: Mapping[str, Any]) -> int | None:
        key = config_key(config)
        if key not in self._rows:
            self._rows[key] = self._find(config)
        return self._rows[key]

    def _find(self, config: Mapping[str, Any]) -> int | None:
        if set(config) != set(self.columns):
            return None
        match = np.ones(self.n_rows, dtype=bool)
        for name, values in self.columns.items():
            match &= values == config[name]
        hits = np.flatnonzero(match)
        return int(hits[0]) if len(hits) else None


# Seconds a claim may go without a heartbeat before another worker takes it over (its worker is
# taken for dead: killed, or its machine down). The claiming worker refreshes it every sixth of
# that, at most CLAIM_HEARTBEAT_S apart.
CLAIM_GRACE_S = 180.0
CLAIM_HEARTBEAT_S = 15.0


def check_claim_grace(value: Any) -> float:
    """``claim_grace_s`` as a float, or a one-line error naming the rule and the value."""
    if not is_number(value) or not 0 < float(value) < float("inf"):
        raise InvalidInputError(f"`claim_grace_s > 0` (finite seconds without a heartbeat before a claim is taken "
                                f"over) must hold, but got claim_grace_s={value!r}")
    return float(value)


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host may be running (True when it cannot be told)."""
    if os.name != "posix":  # os.kill(pid, 0) would terminate the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, under another user
        return True
    return True


class ClaimTable:
    """``perfpred_claims(study, slot)`` and ``(study, config_key)`` are both unique.

    A worker claims the lowest free slot for a config; if another worker took the slot it
    looks again; if another worker already claimed the config it skips it.
    Slots run from 0 to budget-1, so the budget can never be overrun.

    A claim whose worker died (SIGKILL, a machine gone) must not bar its config and its slot for
    good, so each claim carries a ``heartbeat``: the database clock's epoch seconds (one clock
    for workers on many hosts), set when the config is claimed and refreshed by a background
    thread of the claiming process every ``min(grace_s / 6, 15 s)`` while it measures.
    :meth:`finish` sets it to NULL once the trial is recorded (NULL also marks what a version
    before heartbeats inserts into an upgraded table: never reclaimed, as before).

    A claim in flight is *stale* when its heartbeat is older than ``grace_s`` (default
    :data:`CLAIM_GRACE_S`, 180 s), or older than two refresh intervals when its worker
    (``host:pid``) is a process of this host that no longer runs. :meth:`reclaim_stale` deletes
    a stale claim (or marks it finished when the study already holds its trial) only if the row
    still has the heartbeat it saw, so a worker that beat meanwhile keeps its claim and two
    workers never both free the same one; :meth:`claim` reclaims when it finds no free slot or
    the config held. A table made before heartbeats gets the column on first use (ALTER TABLE,
    once, whichever worker gets there first); its rows are dated then, so a claim left by a
    worker killed back then is freed one grace period later unless its trial exists.
    """

    def __init__(self, url: str, study_name: str, *, grace_s: float = CLAIM_GRACE_S) -> None:
        import sqlalchemy as sa

        self._sa = sa
        self.study_name = study_name
        self.grace_s = check_claim_grace(grace_s)
        # The refresh interval: a late beat or two never looks dead.
        self.heartbeat_s = min(self.grace_s / 6, CLAIM_HEARTBEAT_S)
        self.host = socket.gethostname()
        self.reclaimed: list[tuple[str, str | None]] = []  # (config key, worker) of each claim taken over
        self.engine = sa.create_engine(url)
        meta = sa.MetaData()
        self.table = sa.Table(
            "perfpred_claims", meta,
            sa.Column("study", sa.String(200), nullable=False),
            sa.Column("slot", sa.Integer, nullable=False),
            sa.Column("config_key", sa.String(64), nullable=False),
            sa.Column("worker", sa.String(100)),
            sa.Column("heartbeat", sa.Float(precision=53)),  # epoch seconds (database clock); NULL: finished
            sa.UniqueConstraint("study", "slot", name="uq_perfpred_claims_slot"),
            sa.UniqueConstraint("study", "config_key", name="uq_perfpred_claims_config"),
        )
        _retry_create(lambda: meta.create_all(self.engine, checkfirst=True))
        _retry_create(self._add_heartbeat_column)
        self._held: dict[str, str] = {}  # config key -> worker: this process's claims in flight
        self._lock = threading.Lock()
        self._beater: threading.Thread | None = None

    def _add_heartbeat_column(self) -> None:
        """Upgrade a claims table made before heartbeats (two workers racing here: the loser
        retries and finds the column). Its rows are dated now: :meth:`reclaim_stale` tells the
        finished ones (their trial exists) from those of dead workers a grace period later."""
        sa = self._sa
        columns = {c["name"] for c in sa.inspect(self.engine).get_columns("perfpred_claims")}
        if "heartbeat" in columns:
            return
        kind = self.table.c.heartbeat.type.compile(dialect=self.engine.dialect)
        with self.engine.begin() as conn:
            conn.execute(sa.text(f"ALTER TABLE perfpred_claims ADD COLUMN heartbeat {kind}"))
            conn.execute(self.table.update().values(heartbeat=self._now()))

    def _now(self) -> Any:
        """The database's clock in epoch seconds, as SQL: one clock for workers on many hosts."""
        sa = self._sa
        dialect = self.engine.dialect.name
        if dialect == "sqlite":
            return sa.literal_column("((julianday('now') - 2440587.5) * 86400.0)", sa.Float(precision=53))
        if dialect == "postgresql":
            return sa.cast(sa.extract("epoch", sa.func.clock_timestamp()), sa.Float(precision=53))
        return sa.literal(time.time(), sa.Float(precision=53))  # another database: this host's clock

    def n_claimed(self) -> int:
        sa = self._sa
        with self.engine.connect() as conn:
            q = sa.select(sa.func.count()).select_from(self.table).where(self.table.c.study == self.study_name)
            return int(conn.execute(q).scalar_one())

    def _first_free_slot(self, budget: int) -> int | None:
        """The lowest slot below ``budget`` that no claim holds (a released claim leaves a gap)."""
        sa = self._sa
        with self.engine.connect() as conn:
            q = sa.select(self.table.c.slot).where(self.table.c.study == self.study_name)
            taken = {int(r[0]) for r in conn.execute(q)}
        return next((slot for slot in range(budget) if slot not in taken), None)

    def is_claimed(self, key: str) -> bool:
        sa = self._sa
        with self.engine.connect() as conn:
            q = sa.select(self.table.c.slot).where((self.table.c.study == self.study_name)
                                                   & (self.table.c.config_key == key))
            return conn.execute(q).first() is not None

    def claim(self, key: str, budget: int, worker: str = "",
              finished_keys: Callable[[], set[str]] | None = None) -> int | None:
        """The slot this worker now owns for ``key``; None if taken or the budget is spent.

        When no slot is free or ``key`` is held, stale claims are reclaimed first (see
        :meth:`reclaim_stale`; ``finished_keys`` names the configs the study has a trial of).
        The claim's heartbeat is kept fresh until :meth:`finish` or :meth:`release`.
        """
        sa = self._sa
        while True:
            slot = self._first_free_slot(budget)
            if slot is None or self.is_claimed(key):
                if self.reclaim_stale(finished_keys):
                    continue
                return None
            try:
                with self.engine.begin() as conn:
                    conn.execute(self.table.insert().values(study=self.study_name, slot=slot, config_key=key,
                                                            worker=worker, heartbeat=self._now()))
            except sa.exc.IntegrityError:
                continue  # another worker took this slot or this config: look again
            self._hold(key, worker)
            return slot

    def finish(self, key: str, worker: str = "") -> bool:
        """Mark this worker's claim on ``key`` finished (its trial is recorded): it stays, counts
        against the budget, and is never reclaimed. False if the claim was no longer this worker's
        (taken over as stale while it measured: a heartbeat missed for ``grace_s``)."""
        self._unhold(key)
        t = self.table
        with self.engine.begin() as conn:
            done = conn.execute(t.update().where((t.c.study == self.study_name) & (t.c.config_key == key)
                                                 & (t.c.worker == worker)).values(heartbeat=None))
        return done.rowcount == 1

    def release(self, key: str, worker: str | None = None) -> None:
        """Give back this study's claim on ``key`` (``worker``'s only, when given): its measurement
        was interrupted or crashed, so nothing was recorded and a later run (or another worker)
        may measure it."""
        self._unhold(key)
        t = self.table
        where = (t.c.study == self.study_name) & (t.c.config_key == key)
        if worker is not None:
            where = where & (t.c.worker == worker)
        with self.engine.begin() as conn:
            conn.execute(t.delete().where(where))

    def in_flight(self, finished_keys: Callable[[], set[str]] | None = None) -> int:
        """Claims of this study that other workers are measuring (or whose heartbeat is not stale
        yet). One whose config the study has a trial of (``finished_keys()``) is marked finished."""
        sa = self._sa
        t = self.table
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t.c.config_key, t.c.worker, t.c.heartbeat).where(
                (t.c.study == self.study_name) & t.c.heartbeat.isnot(None))).all()
        with self._lock:
            rows = [r for r in rows if self._held.get(r.config_key) != r.worker]
        if rows and finished_keys is not None:
            done = finished_keys()
            for r in [r for r in rows if r.config_key in done]:
                with self.engine.begin() as conn:
                    conn.execute(t.update().where(self._seen(r)).values(heartbeat=None))
            rows = [r for r in rows if r.config_key not in done]
        return len(rows)

    def _seen(self, r: Any) -> Any:
        """SQL: claim row ``r`` as read, its heartbeat not refreshed since."""
        t = self.table
        worker = t.c.worker.is_(None) if r.worker is None else t.c.worker == r.worker
        return ((t.c.study == self.study_name) & (t.c.config_key == r.config_key) & worker
                & t.c.heartbeat.isnot(None) & (t.c.heartbeat <= r.heartbeat))

    def _dead_here(self, worker: str | None) -> bool:
        """Whether ``worker`` names a process of this host (``host:pid``) that no longer runs."""
        host, _, pid = (worker or "").rpartition(":")
        if host != self.host or not pid.isdigit():
            return False
        # This very pid: an earlier process that had it died (this one holds no such claim).
        return int(pid) == os.getpid() or not _pid_alive(int(pid))

    def stale(self) -> list[Any]:
        """This study's claims whose worker is taken for dead (rows: key, worker, heartbeat)."""
        sa = self._sa
        t = self.table
        with self.engine.connect() as conn:
            now = conn.execute(sa.select(self._now())).scalar_one()
            rows = conn.execute(sa.select(t.c.config_key, t.c.worker, t.c.heartbeat).where(
                (t.c.study == self.study_name) & t.c.heartbeat.isnot(None))).all()
        with self._lock:
            held = dict(self._held)
        out = []
        for r in rows:
            if held.get(r.config_key) == r.worker:
                continue  # this process is measuring it
            age = float(now) - float(r.heartbeat)
            if age > self.grace_s or (age > 2 * self.heartbeat_s and self._dead_here(r.worker)):
                out.append(r)
        return out

    def reclaim_stale(self, finished_keys: Callable[[], set[str]] | None = None) -> int:
        """Free the claims of dead workers (see :meth:`stale`); how many were freed.

        A claim whose config the study already has a trial of (``finished_keys()``: its worker
        died between recording and :meth:`finish`) is marked finished instead. Each change holds
        only if the row still has the heartbeat seen, so a worker that beat meanwhile keeps its
        claim, and of two workers reclaiming at once one frees it and the other finds it gone.
        """
        stale = self.stale()
        if not stale:
            return 0
        done = finished_keys() if finished_keys is not None else set()
        t = self.table
        freed = 0
        for r in stale:
            with self.engine.begin() as conn:
                if r.config_key in done:
                    conn.execute(t.update().where(self._seen(r)).values(heartbeat=None))
                elif conn.execute(t.delete().where(self._seen(r))).rowcount == 1:
                    freed += 1
                    self.reclaimed.append((r.config_key, r.worker))
        return freed

    # ------------------------------------------------------------------ heartbeats

    def beat(self) -> int:
        """Refresh the heartbeat of this process's claims in flight now; how many it still holds."""
        t = self.table
        with self._lock:
            held = dict(self._held)
        kept = 0
        for worker in set(held.values()):
            keys = [k for k, w in held.items() if w == worker]
            with self.engine.begin() as conn:
                kept += conn.execute(t.update().where((t.c.study == self.study_name) & t.c.config_key.in_(keys)
                                                      & (t.c.worker == worker) & t.c.heartbeat.isnot(None))
                                     .values(heartbeat=self._now())).rowcount
        return kept

    def _hold(self, key: str, worker: str) -> None:
        with self._lock:
            self._held[key] = worker
            if self._beater is None:
                self._beater = threading.Thread(target=self._beat_while_held, name="perfpred-claims-heartbeat",
                                                daemon=True)
                self._beater.start()

    def _unhold(self, key: str) -> None:
        with self._lock:
            self._held.pop(key, None)

    def _beat_while_held(self) -> None:
        """The heartbeat thread: beats every ``heartbeat_s`` while this process holds a claim in flight."""
        while True:
            time.sleep(self.heartbeat_s)
            with self._lock:
                if not self._held:
                    self._beater = None
                    return
            try:
                self.beat()
            except Exception:  # a locked or unreachable database: try again next beat
                continue


class StudyRecorder:
    """Adds measured configs to an Optuna study and reads back what all workers measured."""

    def __init__(self, space, *, storage: str | None = None, study_name: str = "perfpred-tune",
                 direction: str = "minimize", objective: str = "runtime_ms",
                 identity: Mapping[str, Any] | None = None, claim_grace_s: float = CLAIM_GRACE_S,
                 refusal: Mapping[str, str] | None = None) -> None:
        """``refusal``: ``open_study``'s ``remedy`` / ``mixes`` wording for a study that tunes something else."""
        if direction not in ("minimize", "maximize"):
            raise InvalidInputError(f"`direction` must be minimize or maximize, but got {direction!r}")
        self.space = space
        self.objective = objective
        self.distributions = space.optuna_distributions()
        self.study = open_study(storage, study_name, [direction],
                                {"parameters": sorted(space.names),
                                 "objective": objective_identity(objective, direction), **(identity or {})},
                                **dict(refusal or {}))
        self.study.set_user_attr("objective", objective)
        self.study.set_user_attr("direction", direction)
        self.claims = ClaimTable(storage, study_name, grace_s=claim_grace_s) if storage else None

    def record(self, config: Mapping[str, Any], value: float | None, status: str, *,
               predicted: float | None = None, iteration: int = 0, worker: str = "",
               extra: Mapping[str, Any] | None = None) -> None:
        from optuna.trial import TrialState, create_trial

        attrs = {"source": "measured", "status": status, "iteration": iteration, "worker": worker,
                 f"predicted_{self.objective}": predicted, **(extra or {})}
        ok = status == "ok" and value is not None and np.isfinite(value)
        trial = create_trial(
            params={k: python_scalar(v) for k, v in config.items()},
            distributions=self.distributions,
            value=float(value) if ok else None,
            state=TrialState.COMPLETE if ok else TrialState.FAIL,
            user_attrs={k: python_scalar(v) for k, v in attrs.items() if v is not None},
        )
        self.study.add_trial(trial)

    def history(self) -> Any:
        """Every measured trial of the study (all workers, all runs that resumed it), in trial
        order: the parameters, ``value``, ``status``, ``predicted``, ``iteration``, ``worker``."""
        import pandas as pd

        rows = [{**t.params, "value": t.value, "status": t.user_attrs.get("status", "ok"),
                 "predicted": t.user_attrs.get(f"predicted_{self.objective}"),
                 "iteration": t.user_attrs.get("iteration"), "worker": t.user_attrs.get("worker"), "trial": t.number}
                for t in self.study.get_trials(deepcopy=False) if t.user_attrs.get("source") == "measured"]
        return pd.DataFrame(rows, columns=[*self.space.names, "value", "status", "predicted", "iteration", "worker",
                                           "trial"])

    def measured(self) -> list[tuple[dict[str, Any], float | None, str]]:
        """(config, value or None, status) of every measured trial, from every worker."""
        out = []
        for t in self.study.get_trials(deepcopy=False):
            if t.user_attrs.get("source") != "measured":
                continue
            out.append((dict(t.params), t.value, t.user_attrs.get("status", "ok")))
        return out
