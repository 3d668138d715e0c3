"""Power and energy from real sensors only: NVML on NVIDIA GPUs, RAPL on CPUs, else nothing.

An observer wraps a sustained loop of the workload: ``start()``, run, ``stop()``. NVML's
total-energy counter (Volta and newer) gives energy directly; otherwise power samples taken
by a background thread are integrated. RAPL reads the package energy counters under
``/sys/class/powercap``. Without a readable sensor the reading says ``unavailable`` and
carries no number: perfpred never records a guess as a measurement.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

_RAPL_ROOT = Path("/sys/class/powercap")


@dataclass(frozen=True)
class PowerReading:
    power_source: str  # "nvml" | "rapl" | "unavailable"
    power_w: float | None = None
    energy_j: float | None = None
    duration_s: float | None = None
    n_samples: int = 0


class PowerObserver(ABC):
    source: str

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> PowerReading: ...


class UnavailablePower(PowerObserver):
    source = "unavailable"

    def start(self) -> None:
        pass

    def stop(self) -> PowerReading:
        return PowerReading("unavailable")


def _rapl_package_domains(root: Path | None = None) -> list[Path]:
    """Top-level RAPL package domains whose energy counter this process can read."""
    root = _RAPL_ROOT if root is None else root
    domains = []
    for d in sorted(root.glob("intel-rapl:*")):
        if d.name.count(":") != 1:  # sub-domains (core, uncore, dram) are inside the package
            continue
        try:
            int((d / "energy_uj").read_text())
            domains.append(d)
        except (OSError, ValueError):
            continue
    return domains


class RaplPower(PowerObserver):
    source = "rapl"

    def __init__(self, domains: list[Path]) -> None:
        self._domains = domains
        self._start: list[int] = []
        self._t0 = 0.0

    def _read(self) -> list[int]:
        return [int((d / "energy_uj").read_text()) for d in self._domains]

    def start(self) -> None:
        self._start = self._read()
        self._t0 = time.perf_counter()

    def stop(self) -> PowerReading:
        end = self._read()
        duration = time.perf_counter() - self._t0
        total_uj = 0
        for d, a, b in zip(self._domains, self._start, end, strict=True):
            delta = b - a
            if delta < 0:  # the counter wrapped around
                delta += int((d / "max_energy_range_uj").read_text())
            total_uj += delta
        energy_j = total_uj / 1e6
        return PowerReading("rapl", power_w=energy_j / duration, energy_j=energy_j, duration_s=duration)


class NvmlPower(PowerObserver):
    """Samples one GPU's board power; uses the energy counter when the GPU has one."""

    source = "nvml"

    def __init__(self, index: int = 0, interval_s: float = 0.02) -> None:
        import pynvml  # the [gpu] extra

        pynvml.nvmlInit()
        self._nvml = pynvml
        self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        self._interval_s = interval_s
        self._samples: list[tuple[float, float]] = []
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._energy0: int | None = None
        self._t0 = 0.0

    def _energy_mj(self) -> int | None:
        try:
            return int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))
        except self._nvml.NVMLError:
            return None

    def _sample(self) -> None:
        while not self._stop_event.is_set():
            watts = self._nvml.nvmlDeviceGetPowerUsage(self._handle) / 1000.0
            self._samples.append((time.perf_counter(), watts))
            self._stop_event.wait(self._interval_s)

    def start(self) -> None:
        self._samples = []
        self._stop_event.clear()
        self._energy0 = self._energy_mj()
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def stop(self) -> PowerReading:
        self._stop_event.set()
        if self._thread:
            self._thread.join()
        duration = time.perf_counter() - self._t0
        energy1 = self._energy_mj()
        if self._energy0 is not None and energy1 is not None and energy1 > self._energy0:
            energy_j = (energy1 - self._energy0) / 1e3
            return PowerReading("nvml", energy_j / duration, energy_j, duration, len(self._samples))
        if len(self._samples) < 2:
            return PowerReading("unavailable")
        times = [t for t, _ in self._samples]
        watts = [w for _, w in self._samples]
        steps = zip(times, times[1:], watts, watts[1:], strict=False)
        energy_j = sum((t1 - t0) * (w0 + w1) / 2 for t0, t1, w0, w1 in steps)
        span = times[-1] - times[0]
        return PowerReading("nvml", energy_j / span, energy_j / span * duration, duration, len(self._samples))


def power_observer(device: str = "cpu") -> PowerObserver:
    """The best real sensor for ``device``, or ``UnavailablePower``."""
    if device.startswith("cuda"):
        try:
            return NvmlPower(int(device.split(":")[1]) if ":" in device else 0)
        except Exception:  # no nvidia-ml-py, no driver, or no permission
            return UnavailablePower()
    domains = _rapl_package_domains()
    return RaplPower(domains) if domains else UnavailablePower()


def observe_sustained(fn, observer: PowerObserver, *, min_duration_s: float = 1.0, sync=None) -> PowerReading:
    """Run ``fn`` repeatedly for at least ``min_duration_s`` under ``observer``.

    Sensors update every ~10-100 ms, so single calls are far too short to read power from.
    Energy per call is the reading's energy divided by the calls made.
    """
    if isinstance(observer, UnavailablePower):
        return observer.stop()
    calls = 0
    observer.start()
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < min_duration_s:
        fn()
        calls += 1
        if sync:
            sync()
    reading = observer.stop()
    if reading.energy_j is None or calls == 0:
        return reading
    return PowerReading(reading.power_source, reading.power_w, reading.energy_j / calls, reading.duration_s,
                        reading.n_samples)
