"""Small wording and display fixes: export errors name the caller's own arguments, ``dataset info``
shows its times in one format, and a sweep's progress does not pass a discarded re-measure off as
the config's result."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest
import rich
from test_cli import assert_one_line_error, run_main
from test_sweep_fixes import Cfg, Scripted

from perfpred.collect import SweepReport, noisy_row, run_sweep
from perfpred.collect import _sweep as sweep_module
from perfpred.collect.importers import export_kernel_tuner_cache
from perfpred.datasets import Measurement, MeasurementStore
from perfpred.errors import InvalidInputError

# ---------------------------------------------------------------------------- 1. export errors

PYTHON_NAMES = re.compile(r"\b(kind|hardware_id|workload)=")


@pytest.fixture
def mixed_store(tmp_path):
    """Two kernels and a GEMM over three shapes, on one device."""
    rows = [Measurement(kind="kernel", workload={"kernel_name": name, "problem_size": "64"},
                        config={"block": block}, hardware_id="hw", runtime_ms=1.0 + block)
            for name in ("conv", "dedisp") for block in (1, 2)]
    rows += [Measurement(kind="gemm", workload={"m": m, "n": 8, "k": 8}, config={"dtype": "fp32"},
                         hardware_id="hw", runtime_ms=0.1 * m) for m in (8, 16, 32)]
    store = MeasurementStore(tmp_path / "store", create=True)
    store.append(rows)
    return store


CASES = [  # (CLI flags, what the CLI error names, the Python arguments, what the library error names)
    ([], "pass --kind (e.g. --kind gemm)", {}, "pass kind='gemm'"),
    (["--kind", "kernel"], "pass --workload kernel_name=conv", {"kind": "kernel"},
     "pass workload={'kernel_name': 'conv'}"),
    (["--kind", "gemm"], "pick one with --workload KEY=VALUE, e.g. --workload m=8", {"kind": "gemm"},
     "e.g. workload={'m': 8}"),
    (["--kind", "gemm", "--workload", "m=64"], "match the selection (--workload m=64)",
     {"kind": "gemm", "workload": {"m": 64}}, "(hardware_id=None, workload={'m': 64})"),
    (["--hardware-id", "other"], "match the selection (--hardware-id other)", {"hardware_id": "other"},
     "hardware_id='other'"),
    (["--kind", "serving"], "--kind must be kernel or gemm, but got 'serving'", {"kind": "serving"},
     "got kind='serving'"),
]


@pytest.mark.parametrize(("flags", "cli_words", "arguments", "library_words"), CASES)
def test_export_errors_name_the_cli_flags_on_the_cli_and_the_arguments_in_python(
        mixed_store, tmp_path, monkeypatch, capsys, flags, cli_words, arguments, library_words):
    code, out, err = run_main(monkeypatch, capsys, "export", "kernel-tuner", "--store", str(mixed_store.path),
                              "--output", str(tmp_path / "x.json"), *flags)
    assert_one_line_error(code, out, err, cli_words)
    assert not PYTHON_NAMES.search(err), err  # no `workload={...}` / `kind=...` for a CLI user
    with pytest.raises(InvalidInputError) as caught:
        export_kernel_tuner_cache(mixed_store, tmp_path / "x.json", **arguments)
    message = str(caught.value)
    assert library_words in message and "\n" not in message
    assert not (tmp_path / "x.json").exists()


# ---------------------------------------------------------------------------- 2. dataset info times


def test_dataset_info_shows_its_times_in_one_format_and_in_time_order(tmp_path, monkeypatch, capsys):
    stamps = {  # as the sources write them; string order would put the Kernel Tuner one first
        8: "2023-12-22T08:00:00+00:00",  # a collected row: the earliest
        16: "2023-12-22 09:54:05.502007+00:00",  # Kernel Tuner's, with microseconds
        32: "2024-01-01 00:00:00",  # no timezone: UTC
        64: "2026-12-07T16:03:12+02:00",  # another timezone: 14:03 UTC, the latest
    }
    store = MeasurementStore(tmp_path / "store", create=True)
    store.append([Measurement(kind="gemm", workload={"m": m}, config={}, hardware_id="hw", runtime_ms=1.0,
                              timestamp=stamp) for m, stamp in stamps.items()])
    info = store.info()
    assert (info["first_timestamp"], info["last_timestamp"]) == ("2023-12-22T08:00:00Z", "2026-12-07T14:03:12Z")
    code, out, _ = run_main(monkeypatch, capsys, "dataset", "info", str(store.path))
    assert code == 0
    shown = re.findall(r"(?:first|last)_timestamp\W+([^│\n]*?)\s*│", out)
    assert shown == ["2023-12-22T08:00:00Z", "2026-12-07T14:03:12Z"], out
    code, out, _ = run_main(monkeypatch, capsys, "dataset", "info", str(store.path), "--json")
    data = json.loads(out)
    assert (data["first_timestamp"], data["last_timestamp"]) == ("2023-12-22T08:00:00Z", "2026-12-07T14:03:12Z")


# ---------------------------------------------------------------------------- 3. sweep progress


def test_a_sweep_shows_what_it_kept_and_counts_discarded_remeasure_time_apart(tmp_path, monkeypatch, capsys):
    clock = [0.0]
    monkeypatch.setattr(sweep_module, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    monkeypatch.setenv("COLUMNS", "160")
    monkeypatch.setattr(rich, "_console", None)  # the progress display's console, made anew at that width
    store = MeasurementStore(tmp_path / "s", create=True)

    def sweep(script, **kwargs) -> SweepReport:
        return run_sweep(Scripted(script, clock), [Cfg(k) for k in script], store, **kwargs)

    sweep({1: [(0.5, 0.3)], 2: [(0.123, 0.27)], 3: [(2.0, 0.01)]}, progress=False)
    # 1: a steadier re-run replaces the row; 2: a noisier one is discarded; 3: steady, not re-measured
    report = sweep({1: [(0.9, 0.05)], 2: [(0.673, 1.57)], 3: []}, remeasure=noisy_row(0.2))
    out = " ".join(capsys.readouterr().out.split())
    # The sweep's line shows the row the store kept for the last config, not the noisier re-measure;
    # the re-measures have a line of their own, with their time (not the sweep's) and what was dropped.
    assert re.search(r"scripted sweep ━+ 2/2 0:00:0\d ETA 0:00:00 0\.123 ms kept \(attempt 2: 0\.673 ms, noisier\)",
                     out), out
    assert re.search(r"re-measured ━+ 2/2 0:00:02 ETA .* 1 noisier \(1\.0 s\) discarded", out), out
    assert (report.new, report.remeasured, report.kept, report.skipped) == (0, 2, 1, 1)
    assert (report.remeasure_s, report.discarded_s) == (2.0, 1.0)  # one second of the two dropped


def test_collect_summary_counts_new_configs_and_remeasure_time_apart(tmp_path, monkeypatch, capsys):
    from test_collect_quality import collect_gemm_reporting

    done = SweepReport(measured=5, remeasured=3, kept=2, visits=5, wall_s=10.0, remeasure_s=6.0, discarded_s=4.0)
    code, out, err = collect_gemm_reporting(done, tmp_path, monkeypatch, capsys, "--remeasure-above-cv", "0.1")
    assert code == 0, err
    text = " ".join(out.split())
    assert re.search(r"measured \(new configs\) │ 2 ", text), out
    assert "of it re-measuring │ 6.0 s (4.0 s on the 2 noisier re-measure(s), discarded)" in text, out


def test_export_workload_values_match_their_column_type_from_the_cli(tmp_path, monkeypatch, capsys):
    """--workload alpha=0.5 picks the 0.5 rows (it used to be compared as the text '0.5'), m=8 the
    8 rows, and a text column is matched by its text, even one that reads as a number."""
    rows = [Measurement(kind="kernel", workload={"kernel_name": "k", "alpha": alpha, "tag": "1e3", "m": 8},
                        config={"block": block}, hardware_id="hw", runtime_ms=1.0 + block + alpha)
            for alpha in (0.5, 1.5) for block in (1, 2)]
    store = MeasurementStore(tmp_path / "store", create=True)
    store.append(rows)
    out_file = tmp_path / "cache.json"
    code, _, err = run_main(monkeypatch, capsys, "export", "kernel-tuner", "--store", str(store.path),
                            "--output", str(out_file), "--workload", "alpha=0.5", "--workload", "tag=1e3",
                            "--workload", "m=8")
    assert code == 0, err
    cache = json.loads(out_file.read_text())
    assert sorted(round(c["time"], 6) for c in cache["cache"].values()) == [2.5, 3.5]
