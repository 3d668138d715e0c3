"""The tuner's shared record: an Optuna study plus a claims table for many workers.

Every hardware evaluation becomes an Optuna trial (``source`` = ``measured``, with the
prediction that led to it as ``predicted_*``), so ``optuna-dashboard`` shows the whole
history. Several ``perfpred tune`` processes pointed at one RDB storage (SQLite file, or
PostgreSQL for many hosts) share the study; before measuring, a worker claims the config
in a small table whose unique keys make a double measurement, or a measurement past the
budget, impossible, whichever worker gets there first.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from perfpred.errors import InvalidInputError


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


def open_study(storage_url: str | None, study_name: str, directions: list[str],
               identity: Mapping[str, Any] | None = None) -> Any:
    """The Optuna study ``study_name`` in ``storage_url`` (None: in memory), created or resumed.

    A resumed study must tune the same thing: its directions and ``identity`` (the parameter
    names, the backend) are checked against what it was created with, so a second space or
    GPU tuned under one ``--study`` is refused instead of learning from the first one's trials.
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
        raise InvalidInputError(f"--storage {storage_url}: cannot open it as an Optuna RDB storage "
                                f"(sqlite:///PATH or postgresql+psycopg2://USER@HOST/DB): {first[:200]}") from None
    had = [d.name.lower() for d in study.directions]
    if had != list(directions):
        raise InvalidInputError(f"study {study_name!r} in {storage_url} was created to {', '.join(had)} "
                                f"({len(had)} objective(s)), but this run would {', '.join(directions)}: "
                                "use another --study or --storage")
    if identity is not None:
        wanted = json.loads(json.dumps(dict(identity), default=str))
        recorded = study.user_attrs.get("perfpred_identity")
        if recorded is None:
            study.set_user_attr("perfpred_identity", wanted)
        elif recorded != wanted:
            keys = [*wanted, *(k for k in recorded if k not in wanted)]  # the caller's order: parameters first
            diff = {k: (recorded.get(k), wanted.get(k)) for k in keys if recorded.get(k) != wanted.get(k)}
            name, (old, new) = next(iter(diff.items()))
            raise InvalidInputError(f"study {study_name!r} in {storage_url} tunes {name}={old}, but this run has "
                                    f"{name}={new}: its trials would be learned from as this one's; use another "
                                    "--study or --output")
    return study


def config_key(config: Mapping[str, Any]) -> str:
    payload = json.dumps({k: _native(v) for k, v in sorted(config.items())}, sort_keys=True)
    return hashlib.sha1(payload.encode()).hexdigest()[:24]


def _native(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def row_config(frame: Any, i: int) -> dict[str, Any]:
    """Row ``i`` of a candidates DataFrame as a config of Python scalars.

    Column by column: ``frame.iloc[i]`` upcasts ints to floats beside a float column, and the
    config would then miss its candidate's key (and could be measured again).
    """
    return {c: _native(frame[c].iat[i]) for c in frame.columns}


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


class ClaimTable:
    """``perfpred_claims(study, slot)`` and ``(study, config_key)`` are both unique.

    A worker claims the lowest free slot for a config; if another worker took the slot it
    looks again; if another worker already claimed the config it skips it.
    Slots run from 0 to budget-1, so the budget can never be overrun.
    """

    def __init__(self, url: str, study_name: str) -> None:
        import sqlalchemy as sa

        self._sa = sa
        self.study_name = study_name
        self.engine = sa.create_engine(url)
        meta = sa.MetaData()
        self.table = sa.Table(
            "perfpred_claims", meta,
            sa.Column("study", sa.String(200), nullable=False),
            sa.Column("slot", sa.Integer, nullable=False),
            sa.Column("config_key", sa.String(64), nullable=False),
            sa.Column("worker", sa.String(100)),
            sa.UniqueConstraint("study", "slot", name="uq_perfpred_claims_slot"),
            sa.UniqueConstraint("study", "config_key", name="uq_perfpred_claims_config"),
        )
        _retry_create(lambda: meta.create_all(self.engine, checkfirst=True))

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

    def claim(self, key: str, budget: int, worker: str = "") -> int | None:
        """The slot this worker now owns for ``key``; None if taken or the budget is spent."""
        sa = self._sa
        while True:
            slot = self._first_free_slot(budget)
            if slot is None or self.is_claimed(key):
                return None
            try:
                with self.engine.begin() as conn:
                    conn.execute(self.table.insert().values(study=self.study_name, slot=slot, config_key=key,
                                                            worker=worker))
                return slot
            except sa.exc.IntegrityError:
                continue  # another worker took this slot or this config: look again


    def release(self, key: str) -> None:
        """Give back this study's claim on ``key``: its measurement was interrupted or crashed, so
        nothing was recorded and a later run (or another worker) may measure it."""
        with self.engine.begin() as conn:
            conn.execute(self.table.delete().where((self.table.c.study == self.study_name)
                                                   & (self.table.c.config_key == key)))


class StudyRecorder:
    """Adds measured configs to an Optuna study and reads back what all workers measured."""

    def __init__(self, space, *, storage: str | None = None, study_name: str = "perfpred-tune",
                 direction: str = "minimize", objective: str = "runtime_ms",
                 identity: Mapping[str, Any] | None = None) -> None:
        if direction not in ("minimize", "maximize"):
            raise InvalidInputError(f"`direction` must be minimize or maximize, but got {direction!r}")
        self.space = space
        self.objective = objective
        self.distributions = space.optuna_distributions()
        self.study = open_study(storage, study_name, [direction],
                                {"parameters": sorted(space.names), "objective": objective, **(identity or {})})
        self.study.set_user_attr("objective", objective)
        self.claims = ClaimTable(storage, study_name) if storage else None

    def record(self, config: Mapping[str, Any], value: float | None, status: str, *,
               predicted: float | None = None, iteration: int = 0, worker: str = "",
               extra: Mapping[str, Any] | None = None) -> None:
        from optuna.trial import TrialState, create_trial

        attrs = {"source": "measured", "status": status, "iteration": iteration, "worker": worker,
                 f"predicted_{self.objective}": predicted, **(extra or {})}
        ok = status == "ok" and value is not None and np.isfinite(value)
        trial = create_trial(
            params={k: _native(v) for k, v in config.items()},
            distributions=self.distributions,
            value=float(value) if ok else None,
            state=TrialState.COMPLETE if ok else TrialState.FAIL,
            user_attrs={k: _native(v) for k, v in attrs.items() if v is not None},
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
