"""Shared test set-up: the one CUDA gate, an isolated PERFPRED_HOME, the recorded datasets and a
synthetic GEMM table."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence

# This 2-core machine is shared and loaded: OpenMP pools of 2+ threads (xgboost, torch) spin and
# crawl under contention. One OpenMP thread per process keeps the suite fast and steady; tests that
# need more threads ask for them explicitly (GemmConfig.threads). Set before numpy/torch/xgboost
# load, and inherited by the CLI subprocesses.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pandas as pd
import pytest

# ---------------------------------------------------------------------------- the hardware gate


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``@pytest.mark.requires_cuda`` tests are skipped when torch sees no CUDA GPU (the one gate)."""
    gated = [item for item in items if item.get_closest_marker("requires_cuda")]
    if not gated:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU: torch.cuda.is_available() is false")
    for item in gated:
        item.add_marker(skip)


# ---------------------------------------------------------------------------- isolation

# Made-up but plausible single-machine peaks, written into the peaks cache so that no test pays
# the ~5 s peak microbenchmark (tests of that benchmark use their own empty PERFPRED_HOME).
FAKE_CPU_PEAKS = {"peak_gflops": {"fp64": 25.0, "fp32": 50.0, "bf16": 20.0, "fp16": 5.0}, "mem_bw_gbs": 20.0}


def _seed_peaks_cache(home) -> None:
    from perfpred.collect import fingerprint

    hardware_id = fingerprint("cpu")["hardware_id"]
    peaks_dir = home / "cache" / "peaks"
    peaks_dir.mkdir(parents=True, exist_ok=True)
    for threads in range(1, (os.cpu_count() or 1) + 1):
        payload = {**FAKE_CPU_PEAKS, "peaks_source": "microbenchmark", "peaks_threads": threads}
        (peaks_dir / f"{hardware_id}-t{threads}.json").write_text(json.dumps(payload))


@pytest.fixture(scope="session", autouse=True)
def perfpred_home(tmp_path_factory: pytest.TempPathFactory):
    """Caches and the MLflow SQLite store live in a per-session tmp dir, never in the user's home.

    Set in ``os.environ`` so child processes (CLI subprocesses, the SIGKILL sweep) inherit it.
    """
    home = tmp_path_factory.mktemp("perfpred-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PERFPRED_HOME", str(home))
        mp.delenv("PERFPRED_MLFLOW_URI", raising=False)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.setenv("GIT_PYTHON_REFRESH", "quiet")
        _seed_peaks_cache(home)
        yield home


# ---------------------------------------------------------------------------- synthetic GEMM data

SYNTH_HARDWARE = {
    "cpu-synthetic-a-0000000001": {"peak_gflops": {"fp32": 100.0, "fp64": 50.0}, "mem_bw_gbs": 20.0,
                                   "caches_kib": {"l1d": 32, "l2": 1024, "l3": 16384}},
    "cpu-synthetic-b-0000000002": {"peak_gflops": {"fp32": 400.0, "fp64": 200.0}, "mem_bw_gbs": 60.0,
                                   "caches_kib": {"l1d": 48, "l2": 2048, "l3": 32768}},
}


def synthetic_runtime_ms(b, m, n, k, dtype_bytes, peak_gflops, mem_bw_gbs):
    """A roofline bound divided by a smooth achieved-efficiency curve, plus a fixed call overhead."""
    b, m, n, k = (np.asarray(v, float) for v in (b, m, n, k))
    flop = 2.0 * b * m * n * k
    nbytes = np.asarray(dtype_bytes, float) * b * (m * k + k * n + m * n)
    roofline = np.maximum(flop / (np.asarray(peak_gflops) * 1e6), nbytes / (np.asarray(mem_bw_gbs) * 1e6))
    min_dim = np.minimum(np.minimum(m, n), k)
    efficiency = 0.85 * (1.0 - np.exp(-min_dim / 48.0)) * (0.7 + 0.3 * m / (np.ceil(m / 16.0) * 16.0))
    return roofline / efficiency + 0.002


def make_gemm_table(n_rows: int = 300, *, seed: int = 0, hardware_ids: Sequence[str] = ("cpu-synthetic-a-0000000001",),
                    noise: float = 0.03, lo: int = 8, hi: int = 1024) -> pd.DataFrame:
    """Rows in the Measurement store layout (built through ``Measurement.to_row``)."""
    from perfpred.datasets import Measurement

    rng = np.random.default_rng(seed)
    rows = []
    dtypes = ("fp32", "fp64")
    for i in range(n_rows):
        hardware_id = hardware_ids[i % len(hardware_ids)]
        spec = {"hardware_id": hardware_id, **SYNTH_HARDWARE[hardware_id]}
        m, n, k = (round(float(np.exp(rng.uniform(np.log(lo), np.log(hi))))) for _ in range(3))
        b = 1 if rng.random() < 0.8 else 4
        dtype = dtypes[int(rng.integers(2))]
        dbytes = {"fp32": 4, "fp64": 8}[dtype]
        runtime = float(synthetic_runtime_ms(b, m, n, k, dbytes, spec["peak_gflops"][dtype], spec["mem_bw_gbs"]))
        runtime *= float(np.exp(rng.normal(0.0, noise)))
        raw = [runtime * float(np.exp(rng.normal(0.0, noise / 2))) for _ in range(3)]
        rows.append(Measurement(
            kind="gemm",
            workload={"b": b, "m": m, "n": n, "k": k, "dtype": dtype, "trans_a": False, "trans_b": False},
            config={"backend": "torch", "device": "cpu", "threads": 1, "cold_cache": False, "row": i},
            hardware_id=hardware_id, status="ok", runtime_ms=runtime, raw_times_ms=raw, n_runs=3,
            ref_runtime_ms=0.5, hardware=spec, source="synthetic",
        ).to_row())
    return pd.DataFrame(rows)


@pytest.fixture
def gemm_table_factory() -> Callable[..., pd.DataFrame]:
    """``make_gemm_table(n_rows, seed=, hardware_ids=, noise=)`` for tests that need their own variant."""
    return make_gemm_table


@pytest.fixture(scope="session")
def synthetic_gemm_table() -> pd.DataFrame:
    """300 synthetic GEMM rows on one hardware id: roofline x smooth efficiency x 3% noise.

    Session-scoped: treat it as read-only (``.copy()`` before changing it).
    """
    return make_gemm_table(300, seed=0)


@pytest.fixture(scope="session")
def data():
    """The recorded datasets folder (``PERFPRED_DATASETS``); tests that read it skip without it."""
    from perfpred.errors import DatasetNotFoundError
    from perfpred.settings import datasets_dir

    try:
        return datasets_dir()
    except DatasetNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def lm_arena_table(data):
    """ML.ENERGY's lm-arena-chat task as the serving replay reads it (read once per session)."""
    from perfpred.tuner import load_serving_table

    tasks = data / "ml-energy" / "tasks"
    if not (tasks / "lm-arena-chat.json").is_file():
        pytest.skip(f"no lm-arena-chat.json under {tasks}")
    return load_serving_table([tasks / "lm-arena-chat.json"])


@pytest.fixture(scope="session")
def ml_energy_table(data):
    """Every ML.ENERGY task as the serving replay reads it (read once per session)."""
    from perfpred.tuner import load_serving_table

    if not (data / "ml-energy" / "tasks").is_dir():
        pytest.skip(f"no ml-energy/tasks under {data}")
    return load_serving_table()


@pytest.fixture
def figures(monkeypatch) -> list:
    """Every matplotlib figure saved while the test runs, kept open so a test inspects the plot
    (its axes, labels, artists), not its pixels."""
    from matplotlib.figure import Figure

    saved: list = []
    original = Figure.savefig

    def keep(self, *args, **kwargs):
        saved.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    return saved
