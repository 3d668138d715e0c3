"""Hardware fingerprint and device peaks (cached per hardware id)."""

from __future__ import annotations

import json
import os
import re

import pytest

from perfpred.collect import (
    TimingPolicy,
    _hardware,
    _peaks,
    cpu_spec,
    device_peaks,
    fingerprint,
    gpu_specs,
    hardware_with_peaks,
    software_versions,
)
from perfpred.errors import InvalidInputError

KEYS = {"device", "hardware_id", "hardware_name", "cpu_model", "arch", "logical_cpus", "usable_cpus", "isa",
        "caches_kib", "memory_gib", "gpus"}


def test_fingerprint_has_the_expected_keys():
    spec = fingerprint("cpu")
    assert set(spec) >= KEYS
    assert spec["device"] == "cpu"
    assert spec["logical_cpus"] >= 1
    assert spec["usable_cpus"] == len(os.sched_getaffinity(0))  # the CPUs this process may run on
    assert spec["usable_cpus"] <= spec["logical_cpus"]
    assert isinstance(spec["isa"], list)
    assert all(isinstance(v, int) and v > 0 for v in spec["caches_kib"].values())
    json.dumps(spec)  # stored as hardware_json


def test_cpu_hardware_id_format():
    hardware_id = fingerprint("cpu")["hardware_id"]
    assert re.fullmatch(r"cpu-[a-z0-9-]{1,32}-[0-9a-f]{10}", hardware_id), hardware_id


def test_fingerprint_is_stable_across_calls_and_cache_clears():
    first = fingerprint("cpu")
    _hardware._fingerprint_cached.cache_clear()
    second = fingerprint("cpu")
    assert first == second
    assert first["hardware_id"] == second["hardware_id"]


def test_fingerprint_returns_a_fresh_copy():
    spec = fingerprint("cpu")
    spec["hardware_id"] = "mutated"
    spec["caches_kib"]["l2"] = -1
    assert fingerprint("cpu")["hardware_id"] != "mutated"
    assert fingerprint("cpu")["caches_kib"].get("l2") != -1


def test_hardware_id_ignores_load_and_thread_settings():
    import torch

    before = fingerprint("cpu")["hardware_id"]
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        _hardware._fingerprint_cached.cache_clear()
        assert fingerprint("cpu")["hardware_id"] == before
    finally:
        torch.set_num_threads(previous)


def test_cpu_spec_and_gpu_specs_on_this_machine():
    import torch

    assert cpu_spec()["arch"]
    gpus = gpu_specs()
    assert isinstance(gpus, list)
    if not torch.cuda.is_available():
        assert gpus == []


def test_software_versions_name_the_stack():
    versions = software_versions()
    for key in ("python", "numpy", "torch", "perfpred"):
        assert versions[key]


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:7"])
def test_cuda_device_without_a_gpu_is_refused(device):
    import torch

    if torch.cuda.is_available() and device != "cuda:7":
        pytest.skip("a GPU is present")
    if torch.cuda.is_available() and torch.cuda.device_count() > 7:
        pytest.skip("8 GPUs are present")
    with pytest.raises(InvalidInputError, match="not present") as info:
        fingerprint(device)
    assert "\n" not in str(info.value)


@pytest.mark.requires_cuda
def test_cuda_fingerprint():
    spec = fingerprint("cuda")
    assert spec["hardware_id"].startswith("cuda-")
    assert spec["gpus"]


# ---------------------------------------------------------------------------- peaks


@pytest.fixture
def fresh_home(tmp_path, monkeypatch):
    monkeypatch.setenv("PERFPRED_HOME", str(tmp_path))
    return tmp_path


def test_device_peaks_measures_once_then_reads_the_cache(fresh_home, monkeypatch):
    # A real (but small and short) microbenchmark, so the numbers are real and positive.
    monkeypatch.setattr(_peaks, "_PEAK_SIZES", {"fp64": 64, "fp32": 64, "bf16": 32, "fp16": 32})
    monkeypatch.setattr(_peaks, "_PEAK_POLICY", TimingPolicy(warmup_runs=1, min_runs=3, max_runs=5, max_time_s=0.1))
    peaks = device_peaks("cpu", ("fp32",), threads=1)
    assert peaks["peaks_source"] == "microbenchmark"
    assert peaks["peak_gflops"]["fp32"] > 0
    assert peaks["mem_bw_gbs"] > 0
    cached = list((fresh_home / "cache" / "peaks").glob("*.json"))
    assert [p.name for p in cached] == [f"{fingerprint('cpu')['hardware_id']}-t1.json"]

    def no_more_benchmarks(*args, **kwargs):
        raise AssertionError("peaks must come from the cache")

    monkeypatch.setattr(_peaks, "_measure_peak_gflops", no_more_benchmarks)
    monkeypatch.setattr(_peaks, "_measure_bandwidth_gbs", no_more_benchmarks)
    again = device_peaks("cpu", ("fp32",), threads=1)
    assert again["peak_gflops"] == peaks["peak_gflops"]
    assert again["mem_bw_gbs"] == peaks["mem_bw_gbs"]


def test_device_peaks_measures_only_missing_dtypes_and_keys_by_threads(fresh_home, monkeypatch):
    measured = []

    def fake_peak(device, dtype, threads):
        measured.append((dtype, threads))
        return 10.0 * threads

    monkeypatch.setattr(_peaks, "_measure_peak_gflops", fake_peak)
    monkeypatch.setattr(_peaks, "_measure_bandwidth_gbs", lambda device: 5.0)
    device_peaks("cpu", ("fp32",), threads=1)
    out = device_peaks("cpu", ("fp32", "fp64"), threads=1)
    assert measured == [("fp32", 1), ("fp64", 1)]
    assert out["peak_gflops"] == {"fp32": 10.0, "fp64": 10.0}
    assert out["peaks_threads"] == 1
    two = device_peaks("cpu", ("fp32",), threads=2)
    assert two["peak_gflops"]["fp32"] == 20.0
    assert measured[-1] == ("fp32", 2)


def test_hardware_with_peaks_joins_fingerprint_and_peaks():
    hw = hardware_with_peaks("cpu", ("fp32", "fp64"), threads=1)
    assert hw["hardware_id"] == fingerprint("cpu")["hardware_id"]
    assert hw["peak_gflops"]["fp32"] > 0 and hw["mem_bw_gbs"] > 0
