"""What a multi-objective tuning run optimises and what it must respect.

An :class:`Objective` names a measured quantity and its direction (``runtime_ms``,
``energy_j``, ``power_w`` or any ``metric.X`` a backend records, e.g.
``metric.output_tokens_per_s:maximize``). A :class:`MetricBound` is a constraint on a
measured quantity, an SLO such as ``metric.itl_p99_ms <= 50``; it becomes an Optuna
constraint whose value is the relative violation (``(value - bound) / bound`` for ``<=``),
so ``<= 0`` means satisfied as Optuna expects, and violations of SLOs in different units
add up on one scale (NSGA-II sums them).

Every quantity is modelled in log space by the surrogate, so values must be positive; a
measured value that is missing, non-finite or ``<= 0`` counts as a failed measurement.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from perfpred.datasets import Measurement
from perfpred.errors import InvalidInputError

# Numeric Measurement fields that can be optimised or bounded; anything else is ``metric.X``.
MEASUREMENT_FIELDS = ("runtime_ms", "min_ms", "mean_ms", "std_ms", "iqr_ms", "power_w", "energy_j")
POWER_FIELDS = ("power_w", "energy_j")  # read from a sensor (NVML, RAPL), where a backend has one
DIRECTIONS = {"minimize": "minimize", "min": "minimize", "maximize": "maximize", "max": "maximize"}
_METRIC = re.compile(r"metric\.[A-Za-z_][A-Za-z0-9_]*")
_BOUND = re.compile(r"^\s*(\S+)\s*(<=|>=)\s*(\S+)\s*$")


def check_metric(name: Any, what: str, known: Iterable[str] | None = None) -> str:
    """``name`` if it is a Measurement field or ``metric.X`` (and, when ``known`` is given, one of those)."""
    if not isinstance(name, str) or not (name in MEASUREMENT_FIELDS or _METRIC.fullmatch(name)):
        raise InvalidInputError(f"{what} must be one of {list(MEASUREMENT_FIELDS)} or 'metric.NAME', "
                                f"but got {name!r}")
    if known is not None:
        known = sorted(set(known))
        if name not in known:
            raise InvalidInputError(f"{what} must be a metric the backend records ({', '.join(known)}), "
                                    f"but got {name!r}")
    return name


def metric_value(m: Measurement, name: str) -> float | None:
    """The positive finite value of ``name`` in ``m``, or None (failed run, missing or unusable value)."""
    if m.status != "ok":
        return None
    value = m.metrics.get(name[len("metric."):]) if name.startswith("metric.") else getattr(m, name, None)
    try:
        value = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


def known_metrics(backend: Any) -> set[str] | None:
    """The metrics a replayed backend has recorded (from its table), or a live one reports
    (its ``reported_metrics``); None when it cannot say."""
    reported = getattr(backend, "reported_metrics", None)
    if reported is not None:
        return set(reported)
    table = getattr(backend, "table", None)
    if table is None or not hasattr(table, "columns"):
        return None
    names = {c for c in table.columns if c.startswith("metric.") or c in MEASUREMENT_FIELDS}
    return {c for c in names if table[c].notna().any()}


def check_power(names: Iterable[str], backend: Any, what: str, known: set[str] | None) -> None:
    """A power_w or energy_j the backend never reports (``known``: ``known_metrics(backend)``) is
    refused up front (as tune-serving refuses tokens_per_joule without a sensor), not found after a
    whole budget of missing values."""
    missing = [n for n in names if n in POWER_FIELDS and known is not None and n not in known]
    if missing:
        raise InvalidInputError(f"{what} {missing[0]} needs a power reading, but {_power_note(backend)}; "
                                f"it reports {', '.join(sorted(known or ()))}")


def _power_note(backend: Any) -> str:
    note = getattr(backend, "power_note", None)
    if callable(note):
        return note()
    table = getattr(backend, "table", None)
    sources = sorted(table["power_source"].dropna().astype(str).unique()) if (
        table is not None and "power_source" in table) else []
    return f"the recording holds none (its power_source: {', '.join(map(repr, sources)) or 'not recorded'})"


@dataclass(frozen=True)
class Objective:
    """A measured quantity to minimise or maximise (``"metric.output_tokens_per_s:max"``)."""

    metric: str
    direction: str = "minimize"

    def __post_init__(self) -> None:
        check_metric(self.metric, "an objective")
        if self.direction not in ("minimize", "maximize"):
            raise InvalidInputError(f"an objective's direction must be minimize or maximize, "
                                    f"but got {self.direction!r} for {self.metric}")

    @classmethod
    def parse(cls, spec: str | Objective) -> Objective:
        """``"NAME"`` (minimised), ``"NAME:minimize"`` / ``":maximize"`` (or ``min`` / ``max``)."""
        if isinstance(spec, Objective):
            return spec
        if not isinstance(spec, str):
            raise InvalidInputError(f"an objective must read 'NAME[:minimize|maximize]', but got {spec!r}")
        name, sep, direction = spec.strip().partition(":")
        if sep and direction.strip().lower() not in DIRECTIONS:
            raise InvalidInputError(f"an objective's direction must be minimize or maximize, "
                                    f"but got {direction.strip()!r} in {spec!r}")
        return cls(name.strip(), DIRECTIONS[direction.strip().lower()] if sep else "minimize")

    @property
    def sign(self) -> float:
        """+1 to minimise, -1 to maximise: ``sign * value`` is always minimised."""
        return 1.0 if self.direction == "minimize" else -1.0

    def __str__(self) -> str:
        return f"{self.metric}:{self.direction}"


@dataclass(frozen=True)
class MetricBound:
    """A constraint on a measured quantity (an SLO): ``metric.itl_p99_ms <= 50``."""

    metric: str
    op: str
    bound: float

    def __post_init__(self) -> None:
        check_metric(self.metric, "a constraint's metric")
        if self.op not in ("<=", ">="):
            raise InvalidInputError(f"a constraint's operator must be '<=' or '>=', but got {self.op!r}")
        if not (isinstance(self.bound, (int, float)) and math.isfinite(self.bound) and self.bound > 0):
            raise InvalidInputError(f"a constraint's bound must be a positive finite number, "
                                    f"but got {self.bound!r} for {self.metric}")

    @classmethod
    def parse(cls, spec: str | MetricBound) -> MetricBound:
        """``"METRIC <= BOUND"`` or ``"METRIC >= BOUND"``."""
        if isinstance(spec, MetricBound):
            return spec
        match = _BOUND.match(spec) if isinstance(spec, str) else None
        if match is None:
            raise InvalidInputError(f"a constraint must read 'METRIC <= BOUND' or 'METRIC >= BOUND', but got {spec!r}")
        name, op, bound = match.groups()
        try:
            value = float(bound)
        except ValueError:
            raise InvalidInputError(f"a constraint's bound must be a positive finite number, "
                                    f"but got {bound!r} in {spec!r}") from None
        return cls(name, op, value)

    def violation(self, value: float) -> float:
        """Relative violation: ``<= 0`` when satisfied (Optuna's convention), unit-free."""
        gap = value - self.bound if self.op == "<=" else self.bound - value
        return gap / self.bound

    def satisfied(self, value: float | None) -> bool:
        return value is not None and self.violation(value) <= 0

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.bound:g}"


def parse_objectives(specs: Iterable[str | Objective], known: Iterable[str] | None = None) -> tuple[Objective, ...]:
    objectives = tuple(Objective.parse(s) for s in ([specs] if isinstance(specs, (str, Objective)) else specs))
    if not objectives:
        raise InvalidInputError("at least one objective must be given, but got none")
    names = [o.metric for o in objectives]
    if len(set(names)) != len(names):
        raise InvalidInputError(f"each objective must name a different metric, but got {names}")
    known = None if known is None else set(known)
    for o in objectives:
        check_metric(o.metric, "an objective", known)
    return objectives


def parse_constraints(specs: Iterable[str | MetricBound] | None,
                      known: Iterable[str] | None = None) -> tuple[MetricBound, ...]:
    if specs is None:
        return ()
    bounds = tuple(MetricBound.parse(s) for s in ([specs] if isinstance(specs, (str, MetricBound)) else specs))
    known = None if known is None else set(known)
    for b in bounds:
        check_metric(b.metric, "a constraint's metric", known)
    return bounds


def tracked_metrics(objectives: Iterable[Objective], constraints: Iterable[MetricBound]) -> list[str]:
    """Every metric a run measures and models: objectives first, then constrained ones, no repeats."""
    out: list[str] = []
    for name in [o.metric for o in objectives] + [c.metric for c in constraints]:
        if name not in out:
            out.append(name)
    return out


def is_feasible(values: Mapping[str, float | None], objectives: Iterable[Objective],
                constraints: Iterable[MetricBound]) -> bool:
    """Measured successfully (every objective has a value) and every constraint holds."""
    return all(values.get(o.metric) is not None for o in objectives) and all(
        c.satisfied(values.get(c.metric)) for c in constraints)


def feasible_mask(columns: Mapping[str, Any], objectives: Iterable[Objective],
                  constraints: Iterable[MetricBound]) -> np.ndarray:
    """:func:`is_feasible` over whole columns of values, one bool per row; a missing value is NaN
    here (None there), and a non-finite one counts as missing (``metric_value`` makes those None
    before a row reaches ``is_feasible``)."""
    objectives, constraints = list(objectives), list(constraints)
    arrays = {m: np.asarray(columns[m], dtype=float) for m in tracked_metrics(objectives, constraints)}
    ok = np.ones(len(next(iter(arrays.values()))) if arrays else 0, dtype=bool)
    for o in objectives:
        ok &= np.isfinite(arrays[o.metric])
    for c in constraints:
        value = arrays[c.metric]
        with np.errstate(invalid="ignore"):
            ok &= np.isfinite(value) & (c.violation(value) <= 0)  # MetricBound's own test, element-wise
    return ok
