"""What ``perfpred dataset ls`` shows and writes: the columns of a kind worth a glance, the
columns a user names, and a store's rows dumped as CSV, Parquet or JSON."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from perfpred.datasets._store import strings_where_mixed
from perfpred.errors import InvalidInputError

# The columns every listing shows where the rows fill them, before and after the workload,
# config and key metric columns.
MEASURED_COLUMNS = ("runtime_ms", "cv", "n_runs", "power_w")
ROW_COLUMNS = ("status", "hardware_id")

# The metrics that say how a kind of row went, listed by default where the rows hold them: a
# serving row's runtime_ms is empty for LLM serving runs (throughput and latencies are its result).
KEY_METRICS: dict[str, tuple[str, ...]] = {
    "serving": ("metric.output_tokens_per_s", "metric.ttft_p50_ms", "metric.tpot_p50_ms", "metric.itl_p50_ms",
                "metric.e2e_p99_ms", "metric.sustainable_rate_rps", "metric.energy_per_token_j",
                "metric.images_per_s", "metric.videos_per_s", "metric.batch_latency_ms"),
    "collective": ("metric.algbw_gbs",),
}

DUMP_SUFFIXES = (".csv", ".parquet", ".json")


def default_columns(df: pd.DataFrame) -> list[str]:
    """The columns a listing of ``df``'s rows shows: workload and config columns, runtime and
    spread, the key metrics of the kinds present, status and hardware id (those the rows fill)."""
    def filled(c: str) -> bool:
        return c in df and bool(df[c].notna().any())

    kinds = [str(k) for k in df["kind"].dropna().unique()] if "kind" in df else []
    metrics = dict.fromkeys(m for kind in kinds for m in KEY_METRICS.get(kind, ()) if filled(m))
    return ([c for c in df.columns if c.startswith(("workload.", "config.")) and filled(c)]
            + [c for c in MEASURED_COLUMNS if filled(c)] + list(metrics) + [c for c in ROW_COLUMNS if filled(c)])


def resolve_columns(names: list[str], known: list[str]) -> list[str]:
    """``--columns`` names as store columns: a full name (``metric.itl_p50_ms``) or the short name a
    listing shows (``itl_p50_ms``, when one column ends so); anything else is one error line."""
    out = []
    for name in names:
        if name in known:
            out.append(name)
            continue
        matches = [c for c in known if "." in c and c.split(".", 1)[1] == name]
        if len(matches) == 1:
            out.append(matches[0])
        elif matches:
            raise InvalidInputError(f"--columns: {name!r} is ambiguous, name one of {', '.join(matches)}")
        else:
            shown = ", ".join(known[:12]) + (", ..." if len(known) > 12 else "")
            raise InvalidInputError(f"--columns must name columns of the store (`perfpred dataset info` lists "
                                    f"them), but got {name!r} (it has {shown})")
    return list(dict.fromkeys(out))


def json_records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """``df``'s rows as JSON-ready dicts: missing values as null, numpy values as Python ones."""
    return json.loads(df.to_json(orient="records", date_format="iso", double_precision=15, default_handler=str))


def check_dump_path(path: Path) -> None:
    """``--output``'s suffix says the format: .csv, .parquet or .json (one line for any other)."""
    if path.suffix.lower() not in DUMP_SUFFIXES:
        raise InvalidInputError(f"--output must end in .csv, .parquet or .json (the format), but got {path}")


def dump_rows(df: pd.DataFrame, path: Path) -> None:
    """Write ``df`` to ``path`` in the format its suffix names, replacing the file only once written."""
    check_dump_path(path)
    suffix = path.suffix.lower()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        if suffix == ".csv":
            df.to_csv(tmp, index=False)
        elif suffix == ".json":
            Path(tmp).write_text(json.dumps(json_records(df), indent=1) + "\n")
        else:
            # A column whose rows hold values of several kinds (kernel parameters across kernels)
            # is written as text, as Arrow takes one type per column (the store's rule).
            strings_where_mixed(df).to_parquet(tmp, index=False)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp made it 0600: the file gets what open() would give it
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
