"""Several tuner processes share one study: a real PostgreSQL server, and a SQLite file.

Each worker is a separate Python process running ``Tuner(..., storage=URL, study_name="shared")``
on the same replayed space with one global budget; the claims table must make a double
measurement, or a measurement past the budget, impossible whichever worker gets there first.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from perfpred.errors import DatasetNotFoundError
from perfpred.settings import datasets_dir
from perfpred.tuner import ClaimTable, config_key

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "postgres.sh"

# A worker: open the shared study, wait at a barrier so all start tuning together, then tune the replayed space.
WORKER = r"""
import json, sys, time
from pathlib import Path

import pandas as pd

from perfpred.collect._replay import ReplayBackend
from perfpred.tuner import SearchSpace, Tuner, TuneSettings

url, study_name, cache, barrier, index, n_workers, budget = sys.argv[1:]
replay = ReplayBackend.from_file(cache)
candidates = pd.DataFrame([c.as_dict() for c in replay.configs()])
space = SearchSpace(replay.space())


class Hardware:  # the replay, as slow as a quick kernel launch, so the workers interleave
    def measure(self, config):
        time.sleep(0.02)
        return replay.measure(config)


tuner = Tuner(space, Hardware(), TuneSettings(budget=int(budget), batch_size=2, ensemble=2, seed=int(index)),
              candidates=candidates, storage=url, study_name=study_name)
Path(barrier, f"ready-{index}").touch()
deadline = time.time() + 120
while len(list(Path(barrier).glob("ready-*"))) < int(n_workers):
    if time.time() > deadline:
        sys.exit("the other workers never started")
    time.sleep(0.01)
result = tuner.run()
print(json.dumps({"worker": tuner.worker, "n_evaluations": result.n_evaluations, "best_value": result.best_value,
                  "stopped_by": result.stopped_by,
                  "configs": result.history[space.names].to_dict("records") if len(result.history) else []}))
"""


@pytest.fixture(scope="module")
def conv_cache() -> Path:
    try:
        return datasets_dir() / "kernel-tuner" / "convolution" / "A4000.json.gz"
    except DatasetNotFoundError as exc:
        pytest.skip(str(exc))


def create_storage(url: str) -> None:
    """Create the study and the claims table once, before the workers start (as ``optuna create-study``)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.create_study(storage=url, study_name="shared", direction="minimize", load_if_exists=True)
    ClaimTable(url, "shared").engine.dispose()


def run_shared_study(url: str, cache: Path, workdir: Path, *, budget: int = 24, n_workers: int = 3) -> list[dict]:
    """Start ``n_workers`` worker processes on one study; their JSON reports once all have finished."""
    barrier = workdir / "barrier"
    barrier.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, url, "shared", str(cache), str(barrier), str(i),
                               str(n_workers), str(budget)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
             for i in range(n_workers)]
    reports = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"worker failed (rc={proc.returncode}):\n{err[-3000:]}"
        reports.append(json.loads(out.strip().splitlines()[-1]))
    return reports


def check_shared_study(url: str, reports: list[dict], budget: int, cache: Path) -> None:
    import optuna
    import sqlalchemy as sa

    from perfpred.collect._replay import ReplayBackend

    study = optuna.load_study(study_name="shared", storage=url)
    trials = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("source") == "measured"]
    # exactly the budget, all workers together
    assert len(trials) == budget
    assert sum(r["n_evaluations"] for r in reports) == budget
    # no config measured twice, across workers
    trial_keys = [config_key(t.params) for t in trials]
    assert len(set(trial_keys)) == budget
    reported = [config_key(c) for r in reports for c in r["configs"]]
    assert sorted(reported) == sorted(trial_keys)
    # the claims table agrees: slots 0..budget-1, one per measured config
    claims = ClaimTable(url, "shared")
    with claims.engine.connect() as conn:
        rows = conn.execute(sa.select(claims.table.c.slot, claims.table.c.config_key, claims.table.c.worker)
                            .where(claims.table.c.study == "shared")).all()
    claims.engine.dispose()
    assert sorted(r.slot for r in rows) == list(range(budget))
    assert sorted(r.config_key for r in rows) == sorted(trial_keys)
    # every worker measured at least one config, and the trial says which worker did
    workers = {r["worker"] for r in reports}
    assert len(workers) == len(reports)
    assert all(r["n_evaluations"] >= 1 for r in reports), [r["n_evaluations"] for r in reports]
    assert {t.user_attrs["worker"] for t in trials} == workers
    assert {r.worker for r in rows} == workers
    # the values are the replayed ones, and the study's best is the min of all trials
    replay = ReplayBackend.from_file(cache)
    for t in trials:
        recorded = replay.recorded(t.params)
        assert t.user_attrs["status"] == recorded.status
        assert t.value == (recorded.runtime_ms if recorded.status == "ok" else None)
    ok_values = [t.value for t in trials if t.value is not None]
    assert study.best_value == min(ok_values)
    assert min(r["best_value"] for r in reports if r["best_value"] is not None) == min(ok_values)


# A worker that only opens the shared study (what every Tuner does first), all at once.
OPEN_STUDY = r"""
import sys, time
from pathlib import Path

from perfpred.tuner import SearchSpace, StudyRecorder

url, barrier, index, n_workers = sys.argv[1:]
Path(barrier, f"ready-{index}").touch()
while len(list(Path(barrier).glob("ready-*"))) < int(n_workers):
    time.sleep(0.005)
recorder = StudyRecorder(SearchSpace({"x": [1, 2, 3]}), storage=url, study_name="shared")
recorder.record({"x": int(index) + 1}, 1.0 + int(index), "ok", worker=index)
"""


def start_recorders_together(url: str, workdir: Path, n_workers: int = 3) -> None:
    import optuna

    barrier = workdir / "barrier-open"
    barrier.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", OPEN_STUDY, url, str(barrier), str(i), str(n_workers)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(n_workers)]
    errors = []
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        if proc.returncode != 0:
            raised = [line for line in err.splitlines() if re.match(r"^[\w.]+(Error|Exception): ", line)]
            errors.append(raised[-1][:200] if raised else f"rc={proc.returncode}")
    assert not errors, f"{len(errors)} of {n_workers} workers failed to open the new shared study: {errors}"
    trials = optuna.load_study(study_name="shared", storage=url).get_trials(deepcopy=False)
    assert sorted(t.params["x"] for t in trials) == [1, 2, 3]


# ---------------------------------------------------------------------------- SQLite file


@pytest.mark.slow
def test_workers_started_together_on_a_fresh_sqlite_file(tmp_path: Path) -> None:
    """Several workers started at once on a new SQLite file: the first start must not race."""
    start_recorders_together(f"sqlite:///{tmp_path / 'fresh.db'}", tmp_path)



@pytest.mark.slow
def test_workers_share_a_sqlite_study(conv_cache: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    create_storage(url)
    reports = run_shared_study(url, conv_cache, tmp_path, budget=24)
    check_shared_study(url, reports, 24, conv_cache)


def test_claim_table_semantics(tmp_path: Path) -> None:
    claims = ClaimTable(f"sqlite:///{tmp_path / 'claims.db'}", "s")
    assert claims.claim("a", budget=2, worker="w1") == 0
    assert claims.claim("a", budget=2, worker="w2") is None  # already claimed
    assert claims.is_claimed("a") and not claims.is_claimed("b")
    assert claims.claim("b", budget=2, worker="w2") == 1
    assert claims.claim("c", budget=2, worker="w1") is None  # the budget is spent
    assert claims.n_claimed() == 2
    other = ClaimTable(f"sqlite:///{tmp_path / 'claims.db'}", "other-study")
    assert other.n_claimed() == 0 and other.claim("a", budget=1) == 0  # studies do not mix


# ---------------------------------------------------------------------------- PostgreSQL


def postgres_bindir() -> str | None:
    """Where initdb is, looked up as scripts/postgres.sh does; None if PostgreSQL is not installed."""
    candidates = [os.environ.get("PG_BIN", "")]
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=False)
        candidates.append(out.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    if shutil.which("initdb"):
        candidates.append(str(Path(shutil.which("initdb")).resolve().parent))
    return next((d for d in candidates if d and os.access(os.path.join(d, "initdb"), os.X_OK)), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def running_postgres(database: str):
    """Yield the URL of a real PostgreSQL server started by scripts/postgres.sh with ``database``,
    and stop it after (a generator: a module's fixture yields from it)."""
    if postgres_bindir() is None:
        pytest.skip("PostgreSQL is not installed (no initdb in $PG_BIN, pg_config --bindir, "
                    "/usr/lib/postgresql/*/bin or PATH): apt-get install postgresql")
    pytest.importorskip("psycopg2")
    # Not tmp_path: under root that folder is private (0700) and the server runs as another user.
    data_dir = tempfile.mkdtemp(prefix="perfpred-pg-")
    port = free_port()
    try:
        start = subprocess.run(["bash", str(SCRIPT), "start", data_dir, str(port), database],
                               capture_output=True, text=True, timeout=120, check=False)
        assert start.returncode == 0, f"postgres.sh start failed: {start.stderr.strip()}"
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/{database}"
    finally:
        stop = subprocess.run(["bash", str(SCRIPT), "stop", data_dir, str(port)], capture_output=True, text=True,
                              timeout=120, check=False)
        shutil.rmtree(data_dir, ignore_errors=True)
        assert stop.returncode == 0, f"postgres.sh stop failed: {stop.stderr.strip()}"


@pytest.fixture(scope="module")
def postgres_url():
    """A real PostgreSQL server for this module, stopped after it."""
    yield from running_postgres("perfpred_test")


def test_the_server_is_real_and_listens_on_loopback_only(postgres_url: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(postgres_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SHOW listen_addresses")).scalar_one() == "127.0.0.1"
        assert conn.execute(sa.text("SELECT current_database()")).scalar_one() == "perfpred_test"
        assert "PostgreSQL" in conn.execute(sa.text("SELECT version()")).scalar_one()
    engine.dispose()


@pytest.mark.slow
def test_workers_share_a_postgres_study(postgres_url: str, conv_cache: Path, tmp_path: Path) -> None:
    create_storage(postgres_url)
    reports = run_shared_study(postgres_url, conv_cache, tmp_path, budget=24)
    check_shared_study(postgres_url, reports, 24, conv_cache)


@pytest.fixture
def fresh_postgres_db(postgres_url: str):
    """An empty database on the module's server (no Optuna schema, no claims table yet)."""
    import sqlalchemy as sa

    name = f"fresh_{os.getpid()}"
    server = postgres_url.rsplit("/", 1)[0]
    admin = sa.create_engine(server + "/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    yield f"{server}/{name}"
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()


@pytest.mark.slow
def test_workers_started_together_on_a_fresh_postgres_database(fresh_postgres_db: str, tmp_path: Path) -> None:
    """``perfpred tune --storage URL`` started on several hosts at once: the first start must not race."""
    start_recorders_together(fresh_postgres_db, tmp_path)


def test_postgres_script_usage_errors_are_one_line() -> None:
    for args in (["start"], ["start", "/tmp/x"], ["restart", "/tmp/x", "5432"], ["start", "/tmp/x", "port"]):
        out = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=30, check=False)
        assert out.returncode == 2, (args, out.stderr)
        assert out.stderr.startswith("postgres.sh: ") and out.stderr.count("\n") == 1, out.stderr
