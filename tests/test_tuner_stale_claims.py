"""A worker that dies (SIGKILL, a machine gone) must not keep its claim: stale claims are taken over.

Each claim carries a heartbeat that its worker refreshes while it measures; another worker
takes a claim over once the heartbeat is older than ``claim_grace_s`` (sooner for a dead
process of this host), measures the config, and the study reaches its whole budget with no
config measured twice. A live worker's claim is never taken, and a claims table made before
heartbeats keeps working.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa

from perfpred.datasets import Measurement
from perfpred.errors import InvalidInputError
from perfpred.tuner import (
    ClaimTable,
    ParetoSettings,
    ParetoTuner,
    SearchSpace,
    StudyRecorder,
    Tuner,
    TuneSettings,
    config_key,
)

SPACE = {"x": list(range(16))}


class Hardware:
    """Runtime rises with x; records every config it measures."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def measure(self, config) -> Measurement:
        self.calls.append(dict(config))
        return Measurement(kind="kernel", workload={}, config=dict(config), hardware_id="synthetic",
                           runtime_ms=1.0 + config["x"] / 10, energy_j=2.0 + (15 - config["x"]) / 10,
                           power_w=100.0, power_source="recorded")


def settings(budget: int, **extra) -> TuneSettings:
    return TuneSettings(budget=budget, batch_size=4, ensemble=2, **extra)


def claim_rows(url: str, study: str = "s") -> list:
    claims = ClaimTable(url, study)
    with claims.engine.connect() as conn:
        rows = conn.execute(sa.select(claims.table).where(claims.table.c.study == study)).all()
    claims.engine.dispose()
    return rows


def measured_trials(url: str, study: str = "s") -> list:
    trials = optuna.load_study(study_name=study, storage=url).get_trials(deepcopy=False)
    return [t for t in trials if t.user_attrs.get("source") == "measured"]


def check_full_budget(url: str, budget: int, study: str = "s") -> None:
    """The study holds exactly ``budget`` trials, no config twice, one finished claim per trial."""
    trials = measured_trials(url, study)
    keys = [config_key(t.params) for t in trials]
    assert len(trials) == budget and len(set(keys)) == budget
    rows = claim_rows(url, study)
    assert sorted(r.slot for r in rows) == list(range(budget))
    assert sorted(r.config_key for r in rows) == sorted(keys)
    assert all(r.heartbeat is None for r in rows)  # all finished


def insert_claim(url: str, key: str, slot: int, worker: str, heartbeat: float | None, study: str = "s") -> None:
    claims = ClaimTable(url, study)
    with claims.engine.begin() as conn:
        conn.execute(claims.table.insert().values(study=study, slot=slot, config_key=key, worker=worker,
                                                  heartbeat=heartbeat))
    claims.engine.dispose()


# ---------------------------------------------------------------------------- a dead worker's claim


def test_a_dead_workers_claim_is_taken_over_and_the_budget_is_reached(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    dead = config_key({"x": 0})
    insert_claim(url, dead, 0, "gone-host:4242", time.time() - 3600)  # an hour without a heartbeat
    hardware = Hardware()
    tuner = Tuner(SearchSpace(SPACE), hardware, settings(8), storage=url, study_name="s")
    result = tuner.run()
    assert tuner.claims.reclaimed == [(dead, "gone-host:4242")]
    assert result.n_evaluations == 8 and result.stopped_by == "budget"
    assert len({config_key(c) for c in hardware.calls}) == 8
    check_full_budget(url, 8)  # x=0 is measured, or free again: never claimed without its trial


def test_a_worker_that_dies_mid_run_is_waited_for_then_replaced(tmp_path: Path) -> None:
    """The claim is fresh when this worker starts (its owner just died, on another host): the
    worker measures the rest, finds the budget spent by that claim, waits out the grace period,
    then takes the slot over instead of stopping one short."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    dead = config_key({"x": 9})
    insert_claim(url, dead, 0, "gone-host:4242", time.time())
    hardware = Hardware()
    t0 = time.perf_counter()
    tuner = Tuner(SearchSpace(SPACE), hardware, settings(6, claim_grace_s=1.5), storage=url, study_name="s")
    result = tuner.run()
    assert tuner.claims.reclaimed == [(dead, "gone-host:4242")]
    assert result.n_evaluations == 6 and time.perf_counter() - t0 >= 1.5
    check_full_budget(url, 6)


WORKER = r"""
import sys, time
from pathlib import Path
from perfpred.datasets import Measurement
from perfpred.tuner import SearchSpace, Tuner, TuneSettings

url, flag = sys.argv[1:]

class Hangs:  # measures two configs, then hangs in the third until killed
    calls = 0
    def measure(self, config):
        Hangs.calls += 1
        if Hangs.calls == 3:
            Path(flag).write_text(str(config["x"]))
            time.sleep(600)
        return Measurement(kind="kernel", workload={}, config=dict(config), hardware_id="synthetic",
                           runtime_ms=1.0 + config["x"] / 10)

Tuner(SearchSpace({"x": list(range(16))}), Hangs(), TuneSettings(budget=8, batch_size=4, ensemble=2, claim_grace_s=3),
      storage=url, study_name="s").run()
"""


@pytest.mark.slow
def test_a_sigkilled_worker_of_this_host_is_replaced_by_the_next_run(tmp_path: Path) -> None:
    """The QA case: ``perfpred tune`` killed with SIGKILL mid-measurement, then run again."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    flag = tmp_path / "hanging"
    proc = subprocess.Popen([sys.executable, "-c", WORKER, url, str(flag)], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not flag.exists():
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        assert time.time() < deadline, "the worker never reached its third measurement"
        time.sleep(0.05)
    time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stderr.close()
    hung = {"x": int(flag.read_text())}
    [row] = [r for r in claim_rows(url) if r.heartbeat is not None]
    assert row.config_key == config_key(hung) and row.worker == f"{socket.gethostname()}:{proc.pid}"
    assert len(measured_trials(url)) == 2
    # The same run again, as the same command would (default grace 180 s: a dead process of this
    # host is known dead after two missed heartbeats instead; its interval is 0.5 s here).
    hardware = Hardware()
    tuner = Tuner(SearchSpace(SPACE), hardware, settings(8, claim_grace_s=3), storage=url, study_name="s")
    result = tuner.run()
    assert tuner.claims.reclaimed == [(config_key(hung), row.worker)]
    assert result.n_evaluations == 6
    check_full_budget(url, 8)


def test_a_dead_claim_whose_trial_was_recorded_is_kept(tmp_path: Path) -> None:
    """A worker killed between recording its trial and marking its claim finished: the config is
    measured, so the claim is marked finished, not freed (freeing it would measure past the budget)."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    recorder = StudyRecorder(SearchSpace(SPACE), storage=url, study_name="s")
    recorder.record({"x": 3}, 1.3, "ok", worker="gone-host:1")
    insert_claim(url, config_key({"x": 3}), 0, "gone-host:1", time.time() - 3600)
    hardware = Hardware()
    tuner = Tuner(SearchSpace(SPACE), hardware, settings(5), storage=url, study_name="s")
    tuner.run()
    assert tuner.claims.reclaimed == [] and {"x": 3} not in hardware.calls
    assert len(hardware.calls) == 4
    check_full_budget(url, 5)


def test_pareto_tuner_takes_over_a_dead_claim(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    insert_claim(url, config_key({"x": 15}), 0, "gone-host:7", time.time() - 3600)
    hardware = Hardware()
    tuner = ParetoTuner(SearchSpace(SPACE), hardware,
                        ParetoSettings(objectives=("runtime_ms", "energy_j"), budget=6, batch_size=2, ensemble=2,
                                       n_estimators=20), storage=url, study_name="s")
    tuner.run()
    assert tuner.claims.reclaimed == [(config_key({"x": 15}), "gone-host:7")]
    assert len(hardware.calls) == 6
    check_full_budget(url, 6)


# ---------------------------------------------------------------------------- a live worker's claim


def test_a_live_workers_claim_is_never_taken(tmp_path: Path) -> None:
    """Another worker measures x=5 for longer than the grace period, beating all along: this
    worker skips it, waits for it at the budget's end, and stops when it finishes."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    StudyRecorder(SearchSpace(SPACE), storage=url, study_name="s")  # the study, as the other worker made it
    live = ClaimTable(url, "s", grace_s=1.0)  # beats every 1/6 s
    key = config_key({"x": 5})
    assert live.claim(key, 6, "other-host:99") == 0
    finished: list[bool] = []

    def other_worker_finishes() -> None:  # after 3 grace periods, records its trial and finishes
        time.sleep(3.0)
        StudyRecorder(SearchSpace(SPACE), storage=url, study_name="s").record({"x": 5}, 1.5, "ok",
                                                                            worker="other-host:99")
        finished.append(live.finish(key, "other-host:99"))

    other = threading.Thread(target=other_worker_finishes)
    other.start()
    hardware = Hardware()
    tuner = Tuner(SearchSpace(SPACE), hardware, settings(6, claim_grace_s=1.0), storage=url, study_name="s")
    result = tuner.run()
    other.join()
    assert finished == [True] and tuner.claims.reclaimed == []
    assert {"x": 5} not in hardware.calls and result.n_evaluations == 5 and result.stopped_by == "budget"
    check_full_budget(url, 6)


def test_a_claim_beaten_after_it_was_seen_stale_is_kept(tmp_path: Path) -> None:
    """Reclaiming is conditional on the heartbeat seen: a worker that beat meanwhile keeps its
    claim, and of two workers reclaiming one claim only one frees it."""
    url = f"sqlite:///{tmp_path / 'claims.db'}"
    owner = ClaimTable(url, "s")
    assert owner.claim("a", 4, "slow-host:1") == 0
    owner._unhold("a")  # no heartbeat thread: the test beats by hand
    with owner.engine.begin() as conn:
        conn.execute(owner.table.update().values(heartbeat=time.time() - 3600))
    first, second = ClaimTable(url, "s"), ClaimTable(url, "s")
    seen = first.stale()
    assert [r.config_key for r in seen] == ["a"]
    owner._held["a"] = "slow-host:1"
    assert owner.beat() == 1  # the owner was only slow
    first.stale = lambda: seen  # type: ignore[method-assign]  # decides on what it saw before the beat
    assert first.reclaim_stale() == 0 and owner.is_claimed("a")
    owner._unhold("a")
    with owner.engine.begin() as conn:
        conn.execute(owner.table.update().values(heartbeat=time.time() - 3600))
    seen = second.stale()
    first.stale = second.stale = lambda: seen  # type: ignore[method-assign]  # both saw it stale
    assert first.reclaim_stale() + second.reclaim_stale() == 1
    assert not owner.is_claimed("a") and owner.n_claimed() == 0
    assert owner.finish("a", "slow-host:1") is False  # the owner learns that it lost the claim


def test_a_worker_whose_claim_was_taken_over_is_warned(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    tuner = Tuner(SearchSpace(SPACE), Hardware(), settings(4), storage=url, study_name="s")
    original = tuner._evaluate

    def evaluate_then_lose_the_claim(i, *args):
        row = original(i, *args)
        if row["x"] == 0:  # another worker took it over meanwhile
            tuner.claims.release(config_key({"x": 0}))
            insert_claim(url, config_key({"x": 0}), 7, "other-host:1", time.time())
        return row

    tuner._evaluate = evaluate_then_lose_the_claim  # type: ignore[method-assign]
    with pytest.warns(RuntimeWarning, match=r"claim_grace_s=180: the claim on config \w+ was taken over"):
        tuner.run()


# ---------------------------------------------------------------------------- settings and the upgrade path


@pytest.mark.parametrize("value", [0, -1.0, float("nan"), float("inf"), "60", True])
def test_a_bad_grace_period_is_one_line(tmp_path: Path, value) -> None:
    with pytest.raises(InvalidInputError, match=r"^`claim_grace_s.*but got claim_grace_s=") as err:
        settings(4, claim_grace_s=value)
    assert "\n" not in str(err.value)
    with pytest.raises(InvalidInputError, match=r"^`claim_grace_s.*but got claim_grace_s="):
        ParetoSettings(objectives=("runtime_ms",), budget=4, claim_grace_s=value)
    with pytest.raises(InvalidInputError, match=r"^`claim_grace_s.*but got claim_grace_s="):
        ClaimTable(f"sqlite:///{tmp_path / 'claims.db'}", "s", grace_s=value)


OLD_TABLE = """CREATE TABLE perfpred_claims (
    study VARCHAR(200) NOT NULL, slot INTEGER NOT NULL, config_key VARCHAR(64) NOT NULL, worker VARCHAR(100),
    CONSTRAINT uq_perfpred_claims_slot UNIQUE (study, slot),
    CONSTRAINT uq_perfpred_claims_config UNIQUE (study, config_key))"""


def test_a_claims_table_from_before_heartbeats_is_upgraded(tmp_path: Path) -> None:
    """An older version's table (no heartbeat column), with a finished claim whose trial is in
    the study and a claim left by a worker that died back then: the column is added, the
    finished claim is kept, the dead one taken over after the grace period."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    space = SearchSpace(SPACE)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(OLD_TABLE))
        conn.execute(sa.text("INSERT INTO perfpred_claims VALUES ('s', 0, :a, 'old-host:1'), "
                             "('s', 1, :b, 'old-host:2'), ('other', 0, :a, 'old-host:3')"),
                     {"a": config_key({"x": 3}), "b": config_key({"x": 7})})
    # What the older version recorded for its finished claim (its recorder made no claims table).
    from perfpred.tuner._study import open_study

    study = open_study(url, "s", ["minimize"])
    study.add_trial(optuna.trial.create_trial(params={"x": 3}, distributions=space.optuna_distributions(),
                                              value=1.3, user_attrs={"source": "measured", "status": "ok"}))
    hardware = Hardware()
    tuner = Tuner(space, hardware, settings(6, claim_grace_s=1.0), storage=url, study_name="s")
    columns = {c["name"] for c in sa.inspect(engine).get_columns("perfpred_claims")}
    assert "heartbeat" in columns
    result = tuner.run()
    assert tuner.claims.reclaimed == [(config_key({"x": 7}), "old-host:2")]
    assert {"x": 3} not in hardware.calls and result.n_evaluations == 5
    check_full_budget(url, 6)
    assert [(r.slot, r.worker) for r in claim_rows(url, "other")] == [(0, "old-host:3")]  # other studies untouched
    # A table already upgraded is left as it is; the old API still works on it.
    claims = ClaimTable(url, "s")
    assert claims.n_claimed() == 6 and claims.claim("z", 6) is None and claims.claim("z", 7, "w") == 6
    claims.release("z")
    engine.dispose()


def test_workers_upgrading_one_old_table_at_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'claims.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(OLD_TABLE))
    errors: list[BaseException] = []

    def open_table() -> None:
        try:
            ClaimTable(url, "s").engine.dispose()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_table) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert [c["name"] for c in sa.inspect(engine).get_columns("perfpred_claims")].count("heartbeat") == 1
    engine.dispose()


# ---------------------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="module")
def postgres_url():
    """A real PostgreSQL server started by scripts/postgres.sh (as ``test_tuner_postgres`` does)."""
    from test_tuner_postgres import running_postgres

    yield from running_postgres("perfpred_claims_test")


def test_the_upgrade_and_a_takeover_on_postgres(postgres_url: str) -> None:
    """The same on PostgreSQL: its ALTER TABLE, its clock, its float heartbeats."""
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS perfpred_claims"))
        conn.execute(sa.text(OLD_TABLE))
        conn.execute(sa.text("INSERT INTO perfpred_claims VALUES ('pg', 0, :a, 'old-host:1'), "
                             "('pg', 1, :b, 'old-host:2')"), {"a": config_key({"x": 3}), "b": config_key({"x": 7})})
    from perfpred.tuner._study import open_study

    study = open_study(postgres_url, "pg", ["minimize"])
    study.add_trial(optuna.trial.create_trial(params={"x": 3}, distributions=SearchSpace(SPACE).optuna_distributions(),
                                              value=1.3, user_attrs={"source": "measured", "status": "ok"}))
    clock = ClaimTable(postgres_url, "pg")
    with clock.engine.connect() as conn:
        assert abs(conn.execute(sa.select(clock._now())).scalar_one() - time.time()) < 5  # epoch seconds
    hardware = Hardware()
    tuner = Tuner(SearchSpace(SPACE), hardware, settings(6, claim_grace_s=1.0), storage=postgres_url,
                  study_name="pg")
    result = tuner.run()
    assert tuner.claims.reclaimed == [(config_key({"x": 7}), "old-host:2")]
    assert {"x": 3} not in hardware.calls and result.n_evaluations == 5
    check_full_budget(postgres_url, 6, "pg")
    clock.engine.dispose()
    engine.dispose()
