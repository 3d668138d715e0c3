"""A small reader for the Prometheus text format that ``/metrics`` endpoints serve.

Only what a cross-check needs: sample name -> value, with samples of one name summed over
their label sets (``vllm:request_success_total{finished_reason="length"}`` and
``{finished_reason="stop"}`` add up). Lines it cannot read are skipped, never fatal: a
server's metrics are a check on the client's counts, not the measurement itself.
"""

from __future__ import annotations

import math
import re

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)(\s+\S+)?$")


def parse_prometheus(text: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        if math.isfinite(value):
            values[m.group(1)] = values.get(m.group(1), 0.0) + value
    return values


def delta(before: dict[str, float], after: dict[str, float], name: str) -> float | None:
    """How much a counter grew between two scrapes (None when either scrape lacks it)."""
    if name not in before or name not in after:
        return None
    return after[name] - before[name]
