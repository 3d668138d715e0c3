"""Imports never lose or retype stored data: bad files, unfinished caches, type clashes, repeats.

Small slices of the recorded Kernel Tuner convolution cache (A100) and ML.ENERGY's gpqa task
file, written to tmp_path; every store lives under tmp_path.
"""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path

import pandas as pd
import pytest
from test_cli import assert_one_line_error, run_main

from perfpred.collect.importers import export_kernel_tuner_cache, get_importer, run_import
from perfpred.datasets import MeasurementStore
from perfpred.datasets._checks import content_ids
from perfpred.errors import DatasetNotFoundError, InvalidInputError, StoreError
from perfpred.settings import datasets_dir

A100 = Path("kernel-tuner") / "convolution" / "A100.json.gz"


@pytest.fixture(scope="module")
def conv() -> dict:
    try:
        path = datasets_dir() / A100
    except DatasetNotFoundError as exc:
        pytest.skip(str(exc))
    return json.loads(gzip.decompress(path.read_bytes()))


def write_cache(conv: dict, path: Path, start: int = 0, n: int = 20, edit=None) -> Path:
    """Entries [start, start + n) of the recorded cache as a closed cache file; ``edit(cache)`` may change them."""
    doc = copy.deepcopy({k: v for k, v in conv.items() if k != "cache"})
    doc["cache"] = copy.deepcopy(dict(list(conv["cache"].items())[start:start + n]))
    if edit is not None:
        edit(doc["cache"])
    path.write_text(json.dumps(doc))
    return path


def write_live_cache(conv: dict, path: Path, n: int) -> Path:
    """A cache as Kernel Tuner writes it while tuning: header, then one ``"key": {...},`` line per entry."""
    header = {k: v for k, v in conv.items() if k != "cache"} | {"cache": {}}
    text = json.dumps(header, indent="")[:-3]  # Kernel Tuner's process_cache: all but the closing "}\n}"
    for key, entry in list(conv["cache"].items())[:n]:
        text += "\n" + json.dumps({key: entry})[1:-1] + ","
    path.write_text(text)
    return path


def _numbers_only(values: pd.Series) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


# ---------------------------------------------------------------------------- 1. one bad file


def test_a_bad_file_does_not_stop_the_good_ones(tmp_path, conv, monkeypatch, capsys):
    folder = tmp_path / "mix"
    folder.mkdir()
    write_cache(conv, folder / "good1.json", 0, 20)
    write_cache(conv, folder / "good2.json", 20, 15)
    (folder / "truncated.json").write_text((folder / "good1.json").read_text()[:3000])
    store = tmp_path / "s12"
    code, out, err = run_main(monkeypatch, capsys, "import", "kernel-tuner", str(folder), "--into", str(store))
    assert_one_line_error(code, out, err, "truncated.json", "invalid JSON", "1 of 3")
    assert "failed: truncated.json" in out
    assert len(MeasurementStore(store).load()) == 35  # both good files are in
    # the same with the files named one by one
    store2 = tmp_path / "s12b"
    files = [str(folder / n) for n in ("good1.json", "truncated.json", "good2.json")]
    code, out, err = run_main(monkeypatch, capsys, "import", "kernel-tuner", *files, "--into", str(store2))
    assert_one_line_error(code, out, err, "truncated.json")
    assert len(MeasurementStore(store2).load()) == 35


def test_when_every_file_is_bad_no_empty_store_is_left_behind(tmp_path, conv, monkeypatch, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"device_name": "x"})[:-1])
    store = tmp_path / "nested" / "s13"
    code, out, err = run_main(monkeypatch, capsys, "import", "kernel-tuner", str(bad), "--into", str(store))
    assert_one_line_error(code, out, err, "bad.json")
    assert not store.exists() and not store.parent.exists()
    code, out, err = run_main(monkeypatch, capsys, "import", "no-such-format", str(bad), "--into", str(store))
    assert_one_line_error(code, out, err, "no-such-format")
    assert not store.exists()
    # a store that was there before keeps its rows and its folder
    good = write_cache(conv, tmp_path / "good.json", 0, 5)
    run_main(monkeypatch, capsys, "import", "kernel-tuner", str(good), "--into", str(store))
    code, out, err = run_main(monkeypatch, capsys, "import", "kernel-tuner", str(bad), "--into", str(store))
    assert code == 2 and len(MeasurementStore(store)) == 5


# ---------------------------------------------------------------------------- 2. unfinished caches


def test_an_unfinished_cache_reads_its_complete_entries_as_kernel_tuner_does(tmp_path, conv):
    path = write_live_cache(conv, tmp_path / "kt_live.json", n=12)
    result = get_importer("kernel-tuner").read(path)
    assert result.rows_read == result.rows_good == 12
    assert len(result.notes) == 1 and "unfinished" in result.notes[0] and "12 complete entries" in result.notes[0]
    kernel_tuner_util = pytest.importorskip("kernel_tuner.util")
    assert len(kernel_tuner_util.read_cache(str(path), open_cache=False)["cache"]) == 12
    store = MeasurementStore(tmp_path / "s4", create=True)
    report = run_import("kernel-tuner", [path], store)
    assert report.rows_imported == 12 and "note: kt_live.json: unfinished" in report.summary()


def test_a_cache_cut_inside_an_entry_is_a_one_line_error_as_in_kernel_tuner(tmp_path, conv):
    live = write_live_cache(conv, tmp_path / "live.json", n=12).read_text()
    cut = tmp_path / "cut.json"
    cut.write_text(live[: live.rindex('"times"') + 20])  # in the middle of the last entry's line
    with pytest.raises(InvalidInputError, match=r"^cut\.json: line \d+: invalid JSON .*ends inside an entry") as info:
        get_importer("kernel-tuner").read(cut)
    assert "\n" not in str(info.value)
    kernel_tuner_util = pytest.importorskip("kernel_tuner.util")
    with pytest.raises(json.JSONDecodeError):
        kernel_tuner_util.read_cache(str(cut), open_cache=False)
    empty = tmp_path / "empty.json"
    empty.write_text(live[: live.index('"cache": {') + len('"cache": {')])  # interrupted before any entry
    with pytest.raises(InvalidInputError, match="at least one complete entry"):
        get_importer("kernel-tuner").read(empty)


# ---------------------------------------------------------------------------- 3. types of stored columns


def test_a_badly_typed_parameter_is_a_bad_row_and_never_retypes_the_store(tmp_path, conv):
    store = MeasurementStore(tmp_path / "s3", create=True)
    run_import("kernel-tuner", [write_cache(conv, tmp_path / "orig.json", 0, 20)], store)

    def abc(cache):
        next(iter(cache.values()))["block_size_y"] = "abc"

    report = run_import("kernel-tuner", [write_cache(conv, tmp_path / "abc.json", 20, 10, abc)], store)
    assert (report.rows_imported, report.rows_bad) == (9, 1)
    assert "tune parameter 'block_size_y' must be a number" in report.bad_examples[0]
    assert "'abc'" in report.bad_examples[0]

    def all_text(cache):  # a file consistent in itself, but strings where the store holds numbers
        for entry in cache.values():
            entry["block_size_y"] = f"y{entry['block_size_y']}"

    report = run_import("kernel-tuner", [write_cache(conv, tmp_path / "text.json", 30, 6, all_text)], store)
    assert (report.rows_imported, report.rows_bad) == (0, 6)
    assert "`config.block_size_y` must be a number as in the store" in report.bad_examples[0]
    store.compact()
    stored = MeasurementStore(store.path).load()
    assert len(stored) == 29 and _numbers_only(stored["config.block_size_y"])
    doc = json.loads(export_kernel_tuner_cache(store, tmp_path / "out.json").path.read_text())
    assert all(isinstance(e["block_size_y"], int) for e in doc["cache"].values())
    # the store itself refuses a second type for a column, whoever writes it
    row = stored.iloc[[0]].assign(**{"config.block_size_y": "abc"})
    row = row.assign(measurement_id=content_ids(row))  # a new configuration, with its own id
    with pytest.raises(StoreError, match=r"`config.block_size_y` must hold number values.*'abc'"):
        store.append_frame(row)
    assert len(MeasurementStore(store.path)) == 29



def test_a_list_among_numbers_is_a_bad_row_naming_the_value(tmp_path, conv):
    store = MeasurementStore(tmp_path / "s3l", create=True)

    def listed(cache):
        next(iter(cache.values()))["block_size_y"] = [1, 2]

    report = run_import("kernel-tuner", [write_cache(conv, tmp_path / "list.json", 0, 10, listed)], store)
    assert (report.rows_imported, report.rows_bad) == (9, 1)
    assert "tune parameter 'block_size_y' must be a finite number or a string, but got [1, 2]" in report.bad_examples[0]

# ---------------------------------------------------------------------------- 4. repeats vs duplicates


def test_new_values_of_a_stored_configuration_are_kept_and_reimports_stay_idempotent(tmp_path, conv):
    store = MeasurementStore(tmp_path / "s", create=True)
    original = write_cache(conv, tmp_path / "orig.json", 0, 20)
    run_import("kernel-tuner", [original], store)

    def doubled(cache):
        for entry in cache.values():
            if not isinstance(entry["time"], str):
                entry["time"] *= 2
                entry["times"] = [t * 2 for t in entry["times"]]

    slower = write_cache(conv, tmp_path / "doubled.json", 0, 20, doubled)
    report = run_import("kernel-tuner", [slower], store)
    assert (report.rows_imported, report.rows_repeat, report.rows_duplicate) == (20, 20, 0)
    assert "kept as their own rows" in report.summary()
    for path in (slower, original):  # the same files again: nothing new
        again = run_import("kernel-tuner", [path], store)
        assert (again.rows_imported, again.rows_duplicate) == (0, 20)
    rows = store.load()
    plain = rows[~rows["measurement_id"].str.contains("-")]
    repeats = rows[rows["measurement_id"].str.contains("-")]
    assert len(plain) == len(repeats) == 20
    assert set(repeats["measurement_id"].str.split("-").str[0]) == set(plain["measurement_id"])
    by_id = plain.set_index("measurement_id")["runtime_ms"]
    ok = repeats[repeats["status"] == "ok"]
    assert (ok["runtime_ms"].to_numpy() == pytest.approx(2 * by_id[ok["measurement_id"].str[:20]].to_numpy()))


def test_two_runs_of_one_setup_in_a_file_are_both_kept(tmp_path):
    try:
        path = datasets_dir() / "ml-energy" / "tasks" / "gpqa.json"
    except DatasetNotFoundError as exc:
        pytest.skip(str(exc))
    doc = json.loads(path.read_text())
    runs = [c for c in doc["configurations"] if c.get("model_id", "").endswith("gpt-oss-20b")
            and c.get("max_num_seqs") == 96]
    assert len(runs) == 2 and runs[0] != runs[1]
    doc["configurations"] = [*runs, runs[0]]  # the first run twice: a true duplicate
    small = tmp_path / "gpqa.json"
    small.write_text(json.dumps(doc))
    store = MeasurementStore(tmp_path / "s", create=True)
    report = run_import("ml-energy", [small], store)
    assert (report.rows_imported, report.rows_repeat, report.rows_duplicate) == (2, 1, 1)
    assert sorted(store.load()["metric.itl_p50_ms"]) == sorted(r["median_itl_ms"] for r in runs)
    assert run_import("ml-energy", [small], store).rows_imported == 0


# ---------------------------------------------------------------------------- 5. small ones


def test_store_and_output_paths_that_cannot_work_are_one_line_errors(tmp_path, conv, monkeypatch, capsys):
    cache = write_cache(conv, tmp_path / "x.json", 0, 5)
    afile = tmp_path / "afile"
    afile.write_text("mine")
    # a path that is no store is bad input (exit 2); a store the file system refuses, its failure (exit 1)
    for into, needle, exit_code in ((afile, "is a file", 2), (afile / "sub", "cannot create a Measurement store", 1)):
        code, out, err = run_main(monkeypatch, capsys, "import", "kernel-tuner", str(cache), "--into", str(into))
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == exit_code and len(lines) == 1 and lines[0].startswith("error:"), f"exit {code}: {err}"
        assert needle in lines[0] and str(into) in lines[0]
    assert afile.read_text() == "mine"
    store = tmp_path / "s2"
    run_main(monkeypatch, capsys, "import", "kernel-tuner", str(cache), "--into", str(store))
    folder = tmp_path / "emptydir"
    folder.mkdir()
    for output, needle in ((folder, "is a folder"), (tmp_path / "e.csv", "must end in .json or .json.gz")):
        code, out, err = run_main(monkeypatch, capsys, "export", "kernel-tuner", "--store", str(store),
                                  "--output", str(output))
        assert_one_line_error(code, out, err, needle)
    assert not (tmp_path / "e.csv").exists() and not any(folder.iterdir())


def test_the_list_of_bad_rows_says_how_many_it_leaves_out(tmp_path, conv):
    def break_times(cache):
        for i, entry in enumerate(list(cache.values())[:8]):
            entry["time"] = f"bad{i}"

    store = MeasurementStore(tmp_path / "s", create=True)
    report = run_import("kernel-tuner", [write_cache(conv, tmp_path / "bad.json", 0, 20, break_times)], store)
    assert report.rows_bad == 8 and len(report.bad_examples) == 5
    assert "... and 3 more bad row(s) not shown" in report.summary()


def test_kernel_tuner_failure_strings_are_status_rows(tmp_path, conv):
    def failures(cache):
        entries = list(cache.values())
        entries[0]["time"] = "ErrorConfig"  # the base class, as old caches may hold it
        for entry, error in zip(entries[1:4], ("RuntimeFailedConfig", "CompilationFailedConfig", "InvalidConfig"),
                                strict=True):
            entry.pop("time")  # Kernel Tuner 1.5 writes "__error__" and no time
            entry.pop("times", None)
            entry["__error__"] = error

    result = get_importer("kernel-tuner").read(write_cache(conv, tmp_path / "fail.json", 0, 10, failures))
    assert result.rows_bad == 0 and result.rows_good == 10
    frame = result.frame.set_index("error")
    assert frame.loc["ErrorConfig", "status"] == "runtime_error"
    assert frame.loc["RuntimeFailedConfig", "status"] == "runtime_error"
    assert frame.loc["CompilationFailedConfig", "status"] == "compile_error"
    assert frame.loc["InvalidConfig", "status"] == "invalid"
    assert frame.loc[["ErrorConfig", "InvalidConfig"], "runtime_ms"].isna().all()


def test_compact_leaves_apart_parts_that_disagree_on_a_type(tmp_path, conv):
    # A store written before types were checked: one part with numbers, one with a string.
    store = MeasurementStore(tmp_path / "legacy", create=True)
    rows = get_importer("kernel-tuner").read(write_cache(conv, tmp_path / "a.json", 0, 4)).frames[0]
    store.append_frame(rows.iloc[:3])
    store._write_part(rows.iloc[[3]].assign(**{"config.block_size_y": "abc"}), check_types=False)
    assert store.compact() == 4 and len(store.part_files()) == 2  # merging would rewrite 1 -> '1'
    values = MeasurementStore(store.path).load()["config.block_size_y"].tolist()
    assert sorted(map(str, values)) == sorted([*map(str, rows["config.block_size_y"].iloc[:3]), "abc"])
    assert _numbers_only(pd.Series(values[:3]))
