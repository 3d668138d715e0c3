"""ReplayBackend: a recorded complete space answers "measure this config" like hardware would."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from perfpred.collect._replay import ReplayBackend, ReplayConfig
from perfpred.collect._sweep import run_sweep
from perfpred.collect.importers import get_importer, run_import
from perfpred.datasets import MeasurementStore
from perfpred.errors import InvalidInputError


def gz_text(path: Path) -> str:
    """The text of a gzipped file (read whole: the samples are small)."""
    return gzip.decompress(Path(path).read_bytes()).decode()


@pytest.fixture(scope="module")
def conv_path(data: Path) -> Path:
    return data / "kernel-tuner" / "convolution" / "A6000.json.gz"


@pytest.fixture(scope="module")
def conv(conv_path: Path) -> dict:
    return json.loads(gz_text(conv_path))


@pytest.fixture
def backend(conv_path: Path) -> ReplayBackend:
    return ReplayBackend.from_file(conv_path)


def params(entry: dict, keys: list[str]) -> dict:
    return {k: entry[k] for k in keys}


def test_space_and_optimum_match_the_recorded_file(backend: ReplayBackend, conv: dict) -> None:
    keys = conv["tune_params_keys"]
    assert backend.keys == keys and len(backend) == len(conv["cache"]) == 4362
    space = backend.space()
    for key in keys:
        assert set(space[key]) <= set(conv["tune_params"][key])
    ok = {k: e for k, e in conv["cache"].items() if not isinstance(e["time"], str)}
    best_key = min(ok, key=lambda k: np.median(ok[k]["times"]))
    best = backend.optimum()
    assert best.config == params(ok[best_key], keys)
    assert best.runtime_ms == pytest.approx(np.median(ok[best_key]["times"]))
    assert backend.n_evaluations == 0  # looking up the optimum is not an evaluation


def test_the_recorded_gpu_spec_is_available_for_features(backend: ReplayBackend) -> None:
    spec = backend.hardware()
    assert spec["name"] == "NVIDIA RTX A6000" and spec["sm_count"] == 84
    bare = ReplayBackend(backend.table.drop(columns=["hardware_json"]))
    assert bare.hardware() is None


def test_measure_returns_the_record_and_counts_simulated_time(backend: ReplayBackend, conv: dict) -> None:
    keys = conv["tune_params_keys"]
    entries = list(conv["cache"].values())
    ok = next(e for e in entries if not isinstance(e["time"], str))
    failed = next(e for e in entries if e["time"] == "CompilationFailedConfig")
    m = backend.measure(params(ok, keys))
    assert m.status == "ok" and m.runtime_ms == pytest.approx(np.median(ok["times"]))
    assert m.raw_times_ms == pytest.approx(ok["times"]) and m.source == "replay:kernel-tuner:convolution/A6000.json.gz"
    cost_ok = (ok["compile_time"] + ok["verification_time"] + ok["benchmark_time"]) / 1e3
    assert backend.n_evaluations == 1 and backend.simulated_time_s == pytest.approx(cost_ok)
    f = backend.measure(params(failed, keys))
    assert f.status == "compile_error" and f.error == "CompilationFailedConfig" and f.runtime_ms is None
    cost_failed = (failed["compile_time"] + failed["verification_time"] + failed["benchmark_time"]) / 1e3
    assert backend.n_evaluations == 2
    assert backend.simulated_time_s == pytest.approx(cost_ok + cost_failed)
    assert backend.best_so_far().runtime_ms == m.runtime_ms
    backend.reset()
    assert (backend.n_evaluations, backend.simulated_time_s, backend.history) == (0, 0.0, [])


def test_configs_outside_the_space_are_refused(backend: ReplayBackend) -> None:
    cfg = backend.optimum().config
    with pytest.raises(InvalidInputError, match=r"`block_size_x` must be one of \[16, 32.*but got block_size_x=17"):
        backend.measure({**cfg, "block_size_x": 17})
    with pytest.raises(InvalidInputError, match=r"lacks \['use_cmem'\]"):
        backend.measure({k: v for k, v in cfg.items() if k != "use_cmem"})
    with pytest.raises(InvalidInputError, match=r"unknown \['colour'\]"):
        backend.measure({**cfg, "colour": "blue"})
    # Every value is known, but not every combination was feasible: find one that is missing.
    space = backend.space()
    recorded = {tuple(c.as_dict().values()) for c in backend.configs()}
    missing = next(combo for combo in _corners(space) if combo not in recorded)
    with pytest.raises(InvalidInputError, match="never measured"):
        backend.measure(dict(zip(backend.keys, missing, strict=True)))
    assert backend.n_evaluations == 0


def _corners(space: dict) -> list[tuple]:
    """Combinations of the smallest and largest value of every parameter."""
    combos = [()]
    for values in space.values():
        combos = [(*c, v) for c in combos for v in dict.fromkeys((values[0], values[-1]))]
    return combos


def test_resampled_noise_is_seeded_and_stays_within_the_replicates(conv_path: Path) -> None:
    a = ReplayBackend.from_file(conv_path, resample_noise=True, seed=7)
    b = ReplayBackend.from_file(conv_path, resample_noise=True, seed=7)
    cfg = a.optimum().config
    recorded = a.optimum()
    runs_a = [a.measure(cfg).runtime_ms for _ in range(8)]
    runs_b = [b.measure(cfg).runtime_ms for _ in range(8)]
    assert runs_a == runs_b
    assert len(set(runs_a)) > 1
    assert all(min(recorded.raw_times_ms) <= r <= max(recorded.raw_times_ms) for r in runs_a)
    assert a.measure(cfg).measurement_id == recorded.measurement_id


def test_run_sweep_drives_the_replay_and_resumes(tmp_path: Path, backend: ReplayBackend) -> None:
    configs = backend.configs()[:40]
    assert all(isinstance(c, ReplayConfig) for c in configs)
    store = MeasurementStore(tmp_path / "store", create=True)
    report = run_sweep(backend, configs, store, progress=False)
    assert report.measured == 40 and backend.n_evaluations == 40
    assert set(store.load()["measurement_id"]) == {backend.measurement_id(c) for c in configs}
    again = run_sweep(backend, backend.configs()[:50], store, progress=False)
    assert again.skipped == 40 and again.measured == 10


def test_replay_of_uci_sgemm_costs_runtime_times_replicates(tmp_path: Path, data: Path) -> None:
    src = data / "uci-sgemm" / "sgemm_product.csv.gz"
    path = tmp_path / "sgemm_product.csv"
    path.write_text("\n".join(gz_text(src).splitlines()[:101]) + "\n")
    replay = ReplayBackend.from_file(path, format="uci-sgemm")
    assert len(replay) == 100 and "MWG" in replay.space()
    m = replay.measure(replay.configs()[3].as_dict())
    assert replay.simulated_time_s == pytest.approx(m.runtime_ms * 4 / 1e3)


def test_replay_from_a_store_with_several_kinds(tmp_path: Path, data: Path) -> None:
    store = MeasurementStore(tmp_path / "store", create=True)
    lines = gz_text(data / "vidur" / "compute" / "a40" / "microsoft" / "phi-2" / "mlp.csv.gz")
    vidur = tmp_path / "vidur" / "compute" / "a40" / "microsoft" / "phi-2" / "mlp.csv"
    vidur.parent.mkdir(parents=True)
    vidur.write_text("\n".join(lines.splitlines()[:30]) + "\n")
    run_import("vidur", [vidur], store)
    with pytest.raises(InvalidInputError, match="one kind"):
        ReplayBackend.from_store(store)
    replay = ReplayBackend.from_store(store, kind="gemm")
    assert set(replay.keys) >= {"m", "n", "k", "op"}
    stored = set(store.load(kind="gemm")["measurement_id"])
    assert {replay.measurement_id(c) for c in replay.configs()} <= stored
    first = replay.configs()[0]
    assert replay.measure(first).measurement_id in stored
    with pytest.raises(InvalidInputError, match="nothing to replay"):
        ReplayBackend.from_store(store, hardware_id="gpu-none")


def test_importer_frame_and_file_give_the_same_replay(conv_path: Path, backend: ReplayBackend) -> None:
    frame = get_importer("kernel-tuner").read(conv_path).frames[0]
    direct = ReplayBackend(frame)
    assert direct.space() == backend.space()
    assert direct.optimum().measurement_id == backend.optimum().measurement_id
    assert len(direct.table) == len(frame)
    first = direct.configs()[0]
    assert direct.recorded(first).measurement_id == frame["measurement_id"].iloc[0]
    assert direct.n_evaluations == 0  # looking a record up is not an evaluation
