"""Helpers shared by the benchmark scripts: where runs and results go, JSON writing, the entry wrapper."""

from __future__ import annotations

import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
RUNS_DIR = BENCH_DIR / "runs"  # git-ignored: stores and models produced by benchmarks


def run(main: Callable[[], Any]) -> NoReturn:
    """Every benchmark script's entry (its main block calls ``run(main)``): perfpred's own
    errors (a missing PERFPRED_DATASETS folder or file, bad input: ``PerfPredError``) print one
    line, ``error: ...``, on stderr and exit with status 2, as the ``perfpred`` command does; an
    int that ``main`` returns is the exit status."""
    from perfpred.errors import PerfPredError

    try:
        code = main()
    except PerfPredError as exc:
        text = str(exc).strip()
        print(f"error: {text.splitlines()[0] if text else type(exc).__name__}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)


def write_result(name: str, payload: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "python": platform.python_version(), **payload}
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    return path


def landscape_summary(table: Any) -> dict[str, Any]:
    """How a recorded kernel space looks: statuses, the spread of the working configs' runtimes,
    the fastest config and the median replicate spread (a store's table, one row per config)."""
    ok = table[table["status"] == "ok"]
    runtimes = ok["runtime_ms"].astype(float)
    out: dict[str, Any] = {
        "configs": len(table),
        "statuses": {str(k): int(v) for k, v in table["status"].value_counts().items()},
    }
    if len(ok):
        best = ok.loc[runtimes.idxmin()]
        out.update({
            "runtime_ms_min": float(runtimes.min()),
            "runtime_ms_median": float(runtimes.median()),
            "runtime_ms_max": float(runtimes.max()),
            "max_over_min": float(runtimes.max() / runtimes.min()),
            "best_config": {c.removeprefix("config."): best[c].item() if hasattr(best[c], "item") else best[c]
                            for c in ok.columns if c.startswith("config.")},
            "median_cv": float(ok["cv"].astype(float).median()),
        })
    return out
