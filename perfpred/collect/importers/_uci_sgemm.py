"""UCI "SGEMM GPU kernel performance" (``sgemm_product.csv``, optionally gzipped).

The complete feasible space of CLTune's ``gemm_fast`` OpenCL SGEMM kernel (the ancestor of
CLBlast's Xgemm) on a GTX 680, multiplying 2048 x 2048 fp32 matrices: 14 tuning parameters
and four timed runs (ms) per configuration, 241,600 rows. Facts from the dataset's
``Readme.txt``: the GPU ("NVidia Geforce GTX 680 4GB"), the size, the kernel.

Everything is built column-wise (one pass of numpy over the table, no Python object per
row), so the whole file imports in seconds. A row with a NaN, zero, negative or non-numeric
timing or parameter, or with more fields than the header, is counted as bad and reported with
its line number; the rest import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from perfpred.collect.importers._base import FileImport, Importer, finish
from perfpred.collect.importers._checks import RowChecks
from perfpred.collect.importers._frame import build_frame, replicate_stats
from perfpred.collect.importers._gpus import gpu_hardware
from perfpred.collect.importers._read import check_columns, head_text, read_csv

PARAMS = ("MWG", "NWG", "KWG", "MDIMC", "NDIMC", "MDIMA", "NDIMB", "KWI", "VWM", "VWN", "STRM", "STRN", "SA", "SB")
RUNS = ("Run1 (ms)", "Run2 (ms)", "Run3 (ms)", "Run4 (ms)")
GPU_NAME = "NVIDIA GeForce GTX 680"
MATRIX_SIZE = 2048
KERNEL_NAME = "gemm_fast"
README_FACTS = {"memory_gib": 4.0}  # the Readme's card is the 4 GB variant


class UciSgemmImporter(Importer):
    """The UCI SGEMM CSV -> ``kind="kernel"`` Measurements on a GTX 680 (4 replicates each)."""

    name = "uci-sgemm"
    description = "UCI SGEMM GPU kernel performance CSV (sgemm_product.csv[.gz])"
    patterns = ("*.csv", "*.csv.gz")

    def sniff(self, path: Path) -> bool:
        head = head_text(path, 512)
        return head.startswith("MWG,") and "Run1 (ms)" in head

    def read(self, path: Path, **options: Any) -> FileImport:
        path = Path(path)
        csv = read_csv(path, self.name)
        table = csv.frame
        check_columns(path, self.name, table, PARAMS + RUNS)
        checks = RowChecks(path, csv.labels)
        params = {p: checks.require_int(table[p], p, minimum=0) for p in PARAMS}
        runs = np.column_stack([checks.require_positive(table[r], f"runtime {r}") for r in RUNS])
        good = ~checks.bad
        raw = runs[good]
        stats = replicate_stats(raw)
        n = int(good.sum())
        flop = 2.0 * MATRIX_SIZE**3
        workload = {"kernel_name": KERNEL_NAME, "problem_size": f"{MATRIX_SIZE}x{MATRIX_SIZE}",
                    "problem_size_x": MATRIX_SIZE, "problem_size_y": MATRIX_SIZE,
                    "m": MATRIX_SIZE, "n": MATRIX_SIZE, "k": MATRIX_SIZE, "dtype": "fp32"}
        frame = build_frame(
            kind="kernel", hardware=gpu_hardware(GPU_NAME, overrides=README_FACTS),
            source=f"{self.name}:{path.name}", n=n, workload=workload,
            config={p: values[good] for p, values in params.items()},
            metrics={"gflops": flop / (stats["runtime_ms"] * 1e6)},
            raw_times_ms=raw.tolist(), n_runs=np.full(n, float(len(RUNS))), **stats,
        )
        return finish(path, frame, csv.n_lines, csv.bad + checks.examples(), csv.n_bad + int(checks.bad.sum()))
