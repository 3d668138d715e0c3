"""Vidur profiles: per-operator LLM timings and collective-communication timings.

``compute/<gpu>/<org>/<model>/mlp.csv[.gz]`` (Vidur's ``profiling/mlp``): one line per
(num_tokens, tensor-parallel degree) with ``time_stats.<op>.{min,max,mean,median,std}``
(ms) for each operator of one transformer block, and the model's dimensions
(``n_head, n_kv_head, n_embd, n_expanded_embd, vocab_size, use_gated_mlp``). Vidur runs
the block in fp16 with sarathi's tensor-parallel layers, so the four projections are GEMMs
with m = num_tokens and (head_dim = n_embd / n_head, tp = tensor-parallel degree):

==================  ========================================  ==========================
op                  n (output columns)                        k (reduction)
==================  ========================================  ==========================
attn_pre_proj       (n_head + 2 n_kv_head) head_dim / tp      n_embd
attn_post_proj      n_embd                                    n_head head_dim / tp
mlp_up_proj         n_expanded_embd (x2 if gated) / tp        n_embd
mlp_down_proj       n_embd                                    n_expanded_embd / tp
==================  ========================================  ==========================

They become ``kind="gemm"`` rows; the other operators (embedding, norms, rope, activation,
residual add) become ``kind="operator"`` rows with the model dimensions as workload.

``network/<gpu>_<topology>/{all_reduce,send_recv}.csv[.gz]`` (Vidur's
``profiling/collectives``): ``time_stats.<collective>.*`` by ``size`` (fp16 elements),
``num_workers`` and ``devices_per_node`` -> ``kind="collective"`` rows.

The GPU and model come from the path (``compute/a100/meta-llama/Llama-2-7b-hf/mlp.csv``);
pass ``device=`` / ``model=`` / ``topology=`` for files kept elsewhere. ``runtime_ms`` is
the median; min / mean / std are kept, max as ``metric.max_ms``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from perfpred.collect.importers._base import FileImport, Importer, finish
from perfpred.collect.importers._checks import RowChecks
from perfpred.collect.importers._frame import build_frame
from perfpred.collect.importers._gpus import gpu_hardware
from perfpred.collect.importers._read import CsvTable, check_columns, head_text, read_csv
from perfpred.errors import InvalidInputError

# Vidur's device SKUs (vidur/config/device_sku_config.py) as the names torch reports.
VIDUR_GPUS = {"a100": "NVIDIA A100-SXM4-80GB", "a40": "NVIDIA A40", "h100": "NVIDIA H100 80GB HBM3"}
STATS = ("min", "max", "mean", "median", "std")
MODEL_COLUMNS = ("n_head", "n_kv_head", "n_embd", "n_expanded_embd", "vocab_size", "use_gated_mlp")
COMPUTE_COLUMNS = (*MODEL_COLUMNS, "num_tokens", "num_tensor_parallel_workers")
NETWORK_COLUMNS = ("rank", "num_workers", "size", "collective", "devices_per_node", "max_devices_per_node")
GEMM_OPS = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj")
DTYPE = "fp16"
DTYPE_BYTES = 2


def gpu_name(token: str) -> str:
    """Vidur's lower-case device token ('a100') -> the GPU name perfpred keys specs by."""
    return VIDUR_GPUS.get(token.lower(), token)


def _ops(path: Path, columns: list[str]) -> list[str]:
    """Operators with a ``time_stats.<op>.<stat>`` column; each needs all five statistics."""
    ops = list(dict.fromkeys(c.split(".")[1] for c in columns if c.startswith("time_stats.") and c.count(".") == 2))
    if not ops:
        raise InvalidInputError(f"{path.name}: a vidur file needs time_stats.<op>.<stat> columns, but has none")
    for op in ops:
        if not re.fullmatch(r"\w+", op):
            raise InvalidInputError(f"{path.name}: operator names must be identifiers, but got {op!r}")
        missing = [s for s in STATS if f"time_stats.{op}.{s}" not in columns]
        if missing:
            raise InvalidInputError(f"{path.name}: time_stats.{op} needs the statistics {list(STATS)}, "
                                    f"but lacks {missing}")
    return ops


def _stats(checks: RowChecks, table: pd.DataFrame, op: str) -> dict[str, np.ndarray]:
    out = {}
    for stat in STATS:
        col = f"time_stats.{op}.{stat}"
        out[stat] = checks.require_positive(table[col], col, allow_zero=stat == "std")
    return out


def _bools(checks: RowChecks, values: pd.Series, name: str) -> np.ndarray:
    text = values.astype(str).str.strip().str.lower().to_numpy()
    checks.require(np.isin(text, ("true", "false", "1", "0")), f"{name} is true or false", values.to_numpy())
    return np.isin(text, ("true", "1"))


def _divisor(values: np.ndarray) -> np.ndarray:
    """Divisor safe to use column-wise: rows with a zero are already marked bad."""
    return np.where(values > 0, values, 1)


def _path_after(path: Path, anchor: str, depth: int) -> list[str] | None:
    parts = path.parts
    if anchor in parts:
        i = len(parts) - 1 - parts[::-1].index(anchor)
        rest = list(parts[i + 1:-1])
        if len(rest) == depth:
            return rest
    return None


class VidurImporter(Importer):
    """Vidur compute (mlp.csv) and network (all_reduce / send_recv) profiles."""

    name = "vidur"
    description = "Vidur profiles: compute/<gpu>/<org>/<model>/mlp.csv[.gz], network/<gpu>_<topology>/*.csv[.gz]"
    patterns = ("*.csv", "*.csv.gz")
    options = ("device", "model", "topology")

    def sniff(self, path: Path) -> bool:
        head = head_text(path, 8192).split("\n", 1)[0]
        return "time_stats." in head and ("num_tokens" in head or "collective" in head)

    def read(self, path: Path, **options: Any) -> FileImport:
        path = Path(path)
        csv = read_csv(path, self.name)
        columns = [str(c) for c in csv.frame.columns]
        if "num_tokens" in columns or "n_embd" in columns:
            return self._compute(path, csv, options)
        if "collective" in columns:
            return self._network(path, csv, options)
        raise InvalidInputError(f"{path.name}: a vidur file needs the columns of an mlp profile (num_tokens, n_embd, "
                                f"...) or of a collective profile (collective, size, ...), but it has {columns[:5]}")

    # ------------------------------------------------------------------ compute

    def _compute(self, path: Path, csv: CsvTable, options: dict[str, Any]) -> FileImport:
        table = csv.frame
        check_columns(path, self.name, table, COMPUTE_COLUMNS, known_prefixes=("time_stats.",))
        ops = _ops(path, list(table.columns))
        where = _path_after(path, "compute", 3)
        device = options.get("device") or (where[0] if where else None)
        model = options.get("model") or ("/".join(where[1:]) if where else None)
        if not device or not model:
            raise InvalidInputError(f"{path.name}: a vidur compute file must sit at compute/<gpu>/<org>/<model>/"
                                    f"{path.name} (or be given device= and model=), but got {path}")
        line_checks = RowChecks(path, csv.labels)
        dims = {c: line_checks.require_int(table[c], c) for c in MODEL_COLUMNS if c != "use_gated_mlp"}
        gated = _bools(line_checks, table["use_gated_mlp"], "use_gated_mlp")
        tokens = line_checks.require_int(table["num_tokens"], "num_tokens")
        tp = line_checks.require_int(table["num_tensor_parallel_workers"], "num_tensor_parallel_workers")
        heads, kv_heads, embd, expanded = dims["n_head"], dims["n_kv_head"], dims["n_embd"], dims["n_expanded_embd"]
        for name, values, divisor in (("n_embd % n_head", embd, heads), ("n_head % tp", heads, tp),
                                      ("n_kv_head % tp", kv_heads, tp), ("n_embd % tp", embd, tp),
                                      ("n_expanded_embd % tp", expanded, tp)):
            line_checks.require(values % _divisor(divisor) == 0, f"{name} == 0", values % _divisor(divisor))
        head_dim = embd // _divisor(heads)
        shapes = {
            "attn_pre_proj": ((heads + 2 * kv_heads) * head_dim // _divisor(tp), embd),
            "attn_post_proj": (embd, heads * head_dim // _divisor(tp)),
            "mlp_up_proj": (np.where(gated, 2, 1) * expanded // _divisor(tp), embd),
            "mlp_down_proj": (embd, expanded // _divisor(tp)),
        }
        hardware = gpu_hardware(gpu_name(device))
        source = f"{self.name}:compute/{device}/{model}/{path.name}"
        # A line that does not split into the header's fields is a bad row for each operator.
        frames, bad_reasons, n_bad = [], list(csv.bad), csv.n_bad * len(ops)
        for op in ops:
            checks = RowChecks(path, [f"{label} ({op})" for label in csv.labels])
            checks.inherit(line_checks)
            stats = _stats(checks, table, op)
            good = ~checks.bad
            n_bad += int(checks.bad.sum())
            bad_reasons += checks.examples()
            if not good.any():
                continue
            common: dict[str, Any] = {
                "hardware": hardware, "source": source, "n": int(good.sum()), "runtime_ms": stats["median"][good],
                "min_ms": stats["min"][good], "mean_ms": stats["mean"][good], "std_ms": stats["std"][good],
                "cv": stats["std"][good] / stats["mean"][good], "config": {"tensor_parallel": tp[good]}}
            if op in GEMM_OPS:
                n_cols, k_red = shapes[op]
                flop = 2.0 * tokens[good] * n_cols[good] * k_red[good]
                frames.append(build_frame(
                    kind="gemm", **common,
                    workload={"op": op, "model": model, "b": 1, "m": tokens[good], "n": n_cols[good],
                              "k": k_red[good], "dtype": DTYPE, "trans_a": False, "trans_b": True},
                    metrics={"max_ms": stats["max"][good], "gflops": flop / (stats["median"][good] * 1e6)}))
            else:
                frames.append(build_frame(
                    kind="operator", **common,
                    workload={"op": op, "model": model, "num_tokens": tokens[good], "dtype": DTYPE,
                              **{c: dims[c][good] for c in dims}, "use_gated_mlp": gated[good]},
                    metrics={"max_ms": stats["max"][good]}))
        return finish(path, frames, csv.n_lines * len(ops), bad_reasons, n_bad)

    # ------------------------------------------------------------------ network

    def _network(self, path: Path, csv: CsvTable, options: dict[str, Any]) -> FileImport:
        table = csv.frame
        check_columns(path, self.name, table, NETWORK_COLUMNS, known=("Unnamed: 0",),
                      known_prefixes=("time_stats.",))
        ops = _ops(path, list(table.columns))
        if len(ops) != 1:
            raise InvalidInputError(f"{path.name}: a vidur collective file must time one collective, but times {ops}")
        where = _path_after(path, "network", 1)
        folder = where[0] if where else ""
        token, _, topology = folder.partition("_")
        device = options.get("device") or token
        topology = options.get("topology") or topology
        if not device or not topology:
            raise InvalidInputError(f"{path.name}: a vidur network file must sit at network/<gpu>_<topology>/"
                                    f"{path.name} (or be given device= and topology=), but got {path}")
        checks = RowChecks(path, csv.labels)
        collective = table["collective"].astype(str).to_numpy()
        checks.require(collective == ops[0], f"collective == {ops[0]!r} (the timed one)", collective)
        size = checks.require_int(table["size"], "size")
        workers = checks.require_int(table["num_workers"], "num_workers")
        per_node = checks.require_int(table["devices_per_node"], "devices_per_node")
        node_size = checks.require_int(table["max_devices_per_node"], "max_devices_per_node")
        rank = checks.require_int(table["rank"], "rank", minimum=0)
        stats = _stats(checks, table, ops[0])
        good = ~checks.bad
        frame = build_frame(
            kind="collective", hardware=gpu_hardware(gpu_name(device)),
            source=f"{self.name}:network/{folder or device + '_' + topology}/{path.name}", n=int(good.sum()),
            workload={"op": ops[0], "size_elements": size[good], "size_bytes": size[good] * DTYPE_BYTES,
                      "dtype": DTYPE, "num_workers": workers[good], "devices_per_node": per_node[good]},
            config={"topology": topology, "gpus_per_node": node_size[good], "rank": rank[good]},
            runtime_ms=stats["median"][good], min_ms=stats["min"][good], mean_ms=stats["mean"][good],
            std_ms=stats["std"][good], cv=stats["std"][good] / stats["mean"][good],
            metrics={"max_ms": stats["max"][good],
                     "algbw_gbs": size[good] * DTYPE_BYTES / (stats["median"][good] * 1e6)},
        )
        return finish(path, frame, csv.n_lines, csv.bad + checks.examples(), csv.n_bad + int(checks.bad.sum()))
