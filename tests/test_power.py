"""Power observers: no numbers without a sensor, RAPL arithmetic on a fake powercap tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from perfpred.collect import (
    PowerObserver,
    PowerReading,
    RaplPower,
    UnavailablePower,
    _power,
    observe_sustained,
    power_observer,
)


def make_domain(root: Path, name: str, energy_uj: int, max_uj: int = 262_143_328_850) -> Path:
    domain = root / name
    domain.mkdir(parents=True)
    (domain / "energy_uj").write_text(f"{energy_uj}\n")
    (domain / "max_energy_range_uj").write_text(f"{max_uj}\n")
    (domain / "name").write_text("package-0\n")
    return domain


def set_energy(domain: Path, energy_uj: int) -> None:
    (domain / "energy_uj").write_text(f"{energy_uj}\n")


def test_unavailable_power_gives_no_numbers():
    observer = UnavailablePower()
    observer.start()
    reading = observer.stop()
    assert reading.power_source == "unavailable"
    assert reading.power_w is None
    assert reading.energy_j is None
    assert reading.n_samples == 0


def test_rapl_computes_energy_and_power(tmp_path):
    d0 = make_domain(tmp_path, "intel-rapl:0", 1_000_000)
    d1 = make_domain(tmp_path, "intel-rapl:1", 5_000_000)
    observer = RaplPower([d0, d1])
    observer.start()
    set_energy(d0, 3_000_000)  # +2 J
    set_energy(d1, 5_500_000)  # +0.5 J
    reading = observer.stop()
    assert reading.power_source == "rapl"
    assert reading.energy_j == pytest.approx(2.5)
    assert reading.duration_s > 0
    assert reading.power_w == pytest.approx(reading.energy_j / reading.duration_s)


def test_rapl_handles_counter_wrap_around(tmp_path):
    domain = make_domain(tmp_path, "intel-rapl:0", 999_000, max_uj=1_000_000)
    observer = RaplPower([domain])
    observer.start()
    set_energy(domain, 500)  # wrapped: 1_000 uJ to the top, then 500 more
    reading = observer.stop()
    assert reading.energy_j == pytest.approx(1_500 / 1e6)
    assert reading.energy_j > 0 and reading.power_w > 0


def test_rapl_domain_discovery_keeps_readable_packages_only(tmp_path):
    make_domain(tmp_path, "intel-rapl:0", 10)
    make_domain(tmp_path, "intel-rapl:0:0", 10)  # a sub-domain (core): inside the package already
    unreadable = make_domain(tmp_path, "intel-rapl:1", 10)
    (unreadable / "energy_uj").write_text("permission denied\n")
    (tmp_path / "intel-rapl:2").mkdir()  # no counter at all
    domains = _power._rapl_package_domains(tmp_path)
    assert [d.name for d in domains] == ["intel-rapl:0"]


def test_power_observer_is_unavailable_without_readable_rapl(tmp_path, monkeypatch):
    monkeypatch.setattr(_power, "_RAPL_ROOT", tmp_path)  # an empty powercap tree
    observer = power_observer("cpu")
    assert isinstance(observer, UnavailablePower)


def test_power_observer_reads_rapl_under_the_configured_root(tmp_path, monkeypatch):
    """``_RAPL_ROOT`` is where discovery looks (it must be read at call time, not bound once at import)."""
    make_domain(tmp_path, "intel-rapl:0", 10)
    monkeypatch.setattr(_power, "_RAPL_ROOT", tmp_path)
    observer = power_observer("cpu")
    assert isinstance(observer, RaplPower)


def test_power_observer_for_cuda_without_nvml_or_gpu_is_unavailable():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: NVML may really be readable here")
    assert isinstance(power_observer("cuda"), UnavailablePower)


class FixedEnergy(PowerObserver):
    source = "rapl"

    def __init__(self, energy_j: float) -> None:
        self.energy_j = energy_j
        self.started = 0

    def start(self) -> None:
        self.started += 1

    def stop(self) -> PowerReading:
        return PowerReading("rapl", power_w=42.0, energy_j=self.energy_j, duration_s=0.05, n_samples=3)


def test_observe_sustained_divides_energy_per_call():
    calls = []
    observer = FixedEnergy(10.0)
    reading = observe_sustained(lambda: calls.append(1), observer, min_duration_s=0.02)
    assert observer.started == 1
    assert len(calls) >= 1
    assert reading.energy_j == pytest.approx(10.0 / len(calls))
    assert reading.power_w == 42.0  # power is a rate: not divided
    assert reading.power_source == "rapl"
    assert reading.n_samples == 3


def test_observe_sustained_runs_for_the_minimum_duration():
    import time

    t0 = time.perf_counter()
    syncs = []
    observe_sustained(lambda: None, FixedEnergy(1.0), min_duration_s=0.05, sync=lambda: syncs.append(1))
    assert time.perf_counter() - t0 >= 0.05
    assert syncs


def test_observe_sustained_skips_the_loop_without_a_sensor():
    calls = []
    reading = observe_sustained(lambda: calls.append(1), UnavailablePower(), min_duration_s=5.0)
    assert calls == []
    assert reading.power_source == "unavailable" and reading.energy_j is None


def test_observe_sustained_keeps_a_reading_without_energy():
    class PowerOnly(FixedEnergy):
        def stop(self) -> PowerReading:
            return PowerReading("nvml", power_w=100.0, energy_j=None, duration_s=0.01)

    reading = observe_sustained(lambda: None, PowerOnly(0.0), min_duration_s=0.01)
    assert reading.power_w == 100.0 and reading.energy_j is None
