"""The unit of a metric, read from its name, and the axis/table label that names it.

One home for what the CLI tables, the best-so-far plot, the Pareto plot and the
predicted-vs-measured plot call a metric: ``runtime_ms`` is in ms, ``metric.gflops`` in GFLOP/s,
``metric.images_per_s`` in images/s (any ``X_per_s`` in X/s), ``energy_per_token_j`` in J/token.
"""

from __future__ import annotations

# Units of a metric named by its whole name (after any ``metric.``); the name stays in its label.
_NAMED_UNITS = {"gflops": "GFLOP/s", "tflops": "TFLOP/s", "gbs": "GB/s", "gb_s": "GB/s", "tbs": "TB/s"}
# Units of a name's suffix, dropped from its label (runtime_ms -> "runtime (ms)").
_SUFFIX_UNITS = (("_ms", "ms"), ("_us", "µs"), ("_ns", "ns"), ("_s", "s"), ("_w", "W"), ("_j", "J"))
# Rates whose name ends in the unit's name (peak_gflops, mem_bw_gbs); the name stays in the label.
_RATE_SUFFIXES = (("_gflops", "GFLOP/s"), ("_tflops", "TFLOP/s"), ("_gbs", "GB/s"))


def _parts(metric: str) -> tuple[str, str]:
    """(the label's stem, the unit): the stem "" where the unit says it all (images_per_s), the unit
    "" where the name tells none."""
    name = metric.removeprefix("metric.")
    low = name.lower()
    if low in _NAMED_UNITS:
        return name, _NAMED_UNITS[low]
    for suffix, unit in _RATE_SUFFIXES:
        if low.endswith(suffix):
            return name, unit
    # X_per_s -> X/s; X_per_j, X_per_joule -> X/J (a bare X_per_s is labelled by its unit alone).
    for per, den in (("_per_s", "s"), ("_per_sec", "s"), ("_per_j", "J"), ("_per_joule", "J")):
        if low.endswith(per) and len(name) > len(per):
            what = name[:-len(per)].rsplit("_", 1)[-1]
            unit = f"{what}/{den}"
            return ("" if what == name[:-len(per)] else name), unit
    # Y_per_X_j -> J/X, the label's stem Y (energy_per_token_j -> "energy (J/token)").
    if low.endswith("_j") and "_per_" in low:
        stem, _, what = name[:-2].rpartition("_per_")
        if stem and what:
            return stem, f"J/{what}"
    for suffix, unit in _SUFFIX_UNITS:
        if low.endswith(suffix) and len(name) > len(suffix):
            return name[:-len(suffix)], unit
    return name, ""


def metric_unit(metric: str) -> str:
    """The unit of a metric named ``metric`` (with or without ``metric.``): runtime_ms -> "ms",
    metric.gflops -> "GFLOP/s", metric.images_per_s -> "images/s", output_tokens_per_s ->
    "tokens/s", energy_per_token_j -> "J/token", power_w -> "W"; "" where the name tells none."""
    return _parts(metric)[1]


def metric_label(metric: str) -> str:
    """A metric's name with its unit, for an axis or a table: runtime_ms -> "runtime (ms)",
    metric.gbs -> "gbs (GB/s)", metric.images_per_s -> "images/s" (the unit says it all),
    metric.output_tokens_per_s -> "output_tokens_per_s (tokens/s)", energy_per_token_j ->
    "energy (J/token)"; a name of no known unit as is (metric.occupancy -> "occupancy")."""
    stem, unit = _parts(metric)
    if not unit:
        return stem
    return f"{stem} ({unit})" if stem else unit
