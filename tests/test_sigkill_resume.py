"""Acceptance: a GEMM sweep killed with SIGKILL leaves a readable store and resumes without re-measuring."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

from perfpred.datasets import MeasurementStore

SIZES = (8, 16, 24, 32)
LAYOUTS = ("nn",)
N_CONFIGS = len(SIZES) ** 3 * len(LAYOUTS)  # 64 tiny GEMMs: a few seconds of sweeping
KILL_AFTER_PARTS = 8


def sweep_command(store) -> list[str]:
    return [
        sys.executable, "-m", "perfpred.cli", "collect", "gemm",
        "--store", str(store), "--design", "grid", "--sizes", ",".join(map(str, SIZES)),
        "--transposes", ",".join(LAYOUTS), "--dtypes", "fp32", "--threads", "1",
        "--max-time-s", "0.05", "--min-runs", "3", "--max-runs", "5", "--warmup-runs", "1",
        "--no-reference", "--no-power",
    ]


def committed_parts(store) -> int:
    parts = store / "parts"
    return len(list(parts.glob("part-*.parquet"))) if parts.is_dir() else 0


def check_clean(df) -> None:
    assert df["measurement_id"].is_unique
    assert (df["status"] == "ok").all()
    assert df["runtime_ms"].notna().all() and (df["runtime_ms"] > 0).all()
    assert (df["kind"] == "gemm").all()


def test_sigkill_mid_sweep_then_resume(tmp_path):
    store = tmp_path / "gemm-store"
    cmd = sweep_command(store)

    # 1. Start the sweep and SIGKILL it once some, but not all, configs are committed.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        while committed_parts(store) < KILL_AFTER_PARTS:
            assert proc.poll() is None, f"the sweep ended before it could be killed:\n{proc.stdout.read()}"
            assert time.monotonic() < deadline, "the sweep committed too few parts in 90 s"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL

    # 2. What it left reads cleanly: whole rows only, no duplicates, nothing half-measured.
    before = MeasurementStore(store).load()
    check_clean(before)
    assert KILL_AFTER_PARTS <= len(before) < N_CONFIGS
    runtime_before = dict(zip(before["measurement_id"], before["runtime_ms"], strict=True))
    stamp_before = dict(zip(before["measurement_id"], before["timestamp"], strict=True))

    # A temp file from a write in flight (planted if the kill did not leave one) is not a part.
    leftover = store / "parts" / ".tmp-part-00000000000000000000-deadbeef.parquet"
    leftover.write_bytes(b"PAR1 half-written")
    assert len(MeasurementStore(store).load()) == len(before)

    # 3. Re-run the same command: it resumes and completes.
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = " ".join(done.stdout.split())
    assert re.search(rf"skipped \(already in store\) │ {len(before)} │", summary), done.stdout
    assert re.search(rf"measured \(new configs\) │ {N_CONFIGS - len(before)} │", summary), done.stdout
    after = MeasurementStore(store).load()
    check_clean(after)
    assert len(after) == N_CONFIGS
    shapes = after[["workload.m", "workload.n", "workload.k", "workload.trans_a"]].drop_duplicates()
    assert len(shapes) == N_CONFIGS

    # 4. Rows measured before the kill were kept as they were, not measured again.
    kept = after.set_index("measurement_id").loc[list(runtime_before)]
    assert kept["runtime_ms"].to_dict() == runtime_before
    assert kept["timestamp"].to_dict() == stamp_before
