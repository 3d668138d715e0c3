"""Kernel Tuner cache -> ``perfpred import`` -> ``perfpred export`` -> a cache Kernel Tuner 1.5 reads
with the original ``tune_params``: every configuration found under the key Kernel Tuner builds
(``",".join(str(v))`` of the typed values), whatever the values' types and order."""

from __future__ import annotations

import itertools
import json
import warnings
from pathlib import Path

import pytest
from test_cli import run_main

from perfpred.datasets import Measurement, MeasurementStore, measurement_key

# Each is a case a float column cannot tell apart: whole floats (1.0, "1.0" in the key), an int
# among fractions (1, "1"), strings that look like numbers, bools, values and parameters out of
# sorted order.
FLOATS = {"ratio": [1.0, 0.5, 2.0], "scale": [2.0, 1.0]}
INT_AMONG_FRACTIONS = {"f": [0.5, 1, 1.5]}
NUMBER_STRINGS = {"layout": ["row", "1", "2.0", "col"]}
BOOLS = {"flag": [True, False]}
UNSORTED = {"tile": [4, 1, 2], "block_size_x": [256, 32, 64]}
CASES = {
    "floats": {**UNSORTED, **FLOATS},
    "int-among-fractions": {**INT_AMONG_FRACTIONS, "tile": [2, 1]},
    "number-strings": {"tile": [1, 2], **NUMBER_STRINGS},
    "bools": {**BOOLS, "f": [1.5, 0.5]},
    "all": {"tile": [4, 1, 2], **FLOATS, **INT_AMONG_FRACTIONS, **NUMBER_STRINGS, **BOOLS},
}


def kt_cache(tune_params: dict, path: Path, *, scale: float = 1.0) -> dict:
    """A Kernel Tuner 1.5 cache file of every configuration, keyed as Kernel Tuner keys it."""
    cache = {}
    for i, values in enumerate(itertools.product(*tune_params.values())):
        t = scale * (1.0 + 0.01 * i)
        cache[",".join(str(v) for v in values)] = {
            **dict(zip(tune_params, values, strict=True)), "time": t, "times": [t, t * 1.01, t * 0.99],
            "compile_time": 10.0, "verification_time": 0, "benchmark_time": 5.0, "strategy_time": 0,
            "framework_time": 1.0, "timestamp": "2024-01-01 00:00:00+00:00"}
    doc = {"device_name": "NVIDIA RTX A6000", "kernel_name": "k", "problem_size": [1024],
           "tune_params_keys": list(tune_params), "tune_params": tune_params, "objective": "time", "cache": cache}
    path.write_text(json.dumps(doc))
    return doc


def cli_import(monkeypatch, capsys, store: Path, *files: Path) -> None:
    code, _, err = run_main(monkeypatch, capsys, "import", "kernel-tuner", *map(str, files), "--into", str(store))
    assert code == 0, err


def cli_export(monkeypatch, capsys, store: Path, output: Path) -> dict:
    code, _, err = run_main(monkeypatch, capsys, "export", "kernel-tuner", "--store", str(store),
                            "--output", str(output))
    assert code == 0, err
    return json.loads(output.read_text())


def simulate(tune_params: dict, cache: Path) -> list[dict]:
    """Kernel Tuner's brute-force simulation over ``tune_params``: it needs every configuration in the cache."""
    kernel_tuner = pytest.importorskip("kernel_tuner")
    with warnings.catch_warnings():  # "None of the tunable parameters specify thread block dimensions"
        warnings.simplefilter("ignore", UserWarning)
        results, _ = kernel_tuner.tune_kernel("k", "", [1024], [], tune_params, cache=str(cache),
                                              simulation_mode=True, strategy="brute_force", verbose=False,
                                              quiet=True)
    return results


@pytest.mark.parametrize("case", list(CASES))
def test_an_imported_cache_exports_to_the_keys_and_tune_params_kernel_tuner_wrote(tmp_path, monkeypatch, capsys,
                                                                                  case):
    tune_params = CASES[case]
    original = kt_cache(tune_params, tmp_path / "original.json")
    store = tmp_path / "store"
    cli_import(monkeypatch, capsys, store, tmp_path / "original.json")
    doc = cli_export(monkeypatch, capsys, store, tmp_path / "exported.json")
    assert set(doc["cache"]) == set(original["cache"])
    assert doc["tune_params_keys"] == list(tune_params)
    assert list(doc["tune_params"].items()) == list(tune_params.items())  # order of names and of values
    assert all(repr(doc["tune_params"][k]) == repr(v) for k, v in tune_params.items())  # 1.0 stays 1.0, 1 stays 1
    for key, entry in original["cache"].items():
        assert [repr(doc["cache"][key][k]) for k in tune_params] == [repr(entry[k]) for k in tune_params]
        assert "perfpred_software" not in doc["cache"][key]  # the record is the file's tune_params
    results = simulate(tune_params, tmp_path / "exported.json")
    assert len(results) == len(original["cache"])
    for result in results:
        key = ",".join(str(result[k]) for k in tune_params)
        assert result["time"] == pytest.approx(original["cache"][key]["time"])


def test_the_record_changes_no_id_and_a_round_trip_is_a_fixed_point(tmp_path, monkeypatch, capsys):
    tune_params = CASES["all"]
    original = kt_cache(tune_params, tmp_path / "original.json")
    store = tmp_path / "store"
    cli_import(monkeypatch, capsys, store, tmp_path / "original.json")
    rows = MeasurementStore(store).load()
    # ids are what measurement_key makes of the values, as before the record was kept
    expected = {measurement_key("kernel", {"kernel_name": "k", "problem_size": "1024", "problem_size_x": 1024},
                                {k: e[k] for k in tune_params}, rows["hardware_id"].iloc[0])
                for e in original["cache"].values()}
    assert set(rows["measurement_id"]) == expected
    # a store imported without the record (a file with no tune_params) holds the same ids
    bare = {k: v for k, v in original.items() if k != "tune_params"}
    (tmp_path / "bare.json").write_text(json.dumps(bare))
    cli_import(monkeypatch, capsys, tmp_path / "bare", tmp_path / "bare.json")
    assert set(MeasurementStore(tmp_path / "bare").load()["measurement_id"]) == expected
    # the exported file imported again: duplicates, and exported again: the same file
    doc = cli_export(monkeypatch, capsys, store, tmp_path / "exported.json")
    assert doc["perfpred"]["original_tune_params"] is True
    code, out, err = run_main(monkeypatch, capsys, "import", "kernel-tuner", str(tmp_path / "exported.json"),
                              "--into", str(store))
    assert code == 0 and f"0 imported, {len(original['cache'])} duplicate" in " ".join((out + err).split())
    cli_import(monkeypatch, capsys, tmp_path / "again", tmp_path / "exported.json")
    assert cli_export(monkeypatch, capsys, tmp_path / "again", tmp_path / "again.json") == doc


def test_rows_of_several_caches_or_measured_rows_keep_the_stored_values_rule(tmp_path, monkeypatch, capsys):
    # two runs of one kernel whose tune_params differ: no one record, so today's rule (sorted, an
    # int among fractions as an int, whole floats as stored)
    first = {"f": [1.5, 0.5, 1.0], "flag": [True, False]}
    second = {"f": [1.5, 0.5, 1.0, 2.0], "flag": [True, False]}
    kt_cache(first, tmp_path / "a.json")
    kt_cache(second, tmp_path / "b.json", scale=2.0)
    store = tmp_path / "store"
    cli_import(monkeypatch, capsys, store, tmp_path / "a.json", tmp_path / "b.json")
    doc = cli_export(monkeypatch, capsys, store, tmp_path / "mixed.json")
    assert doc["tune_params"] == {"f": [0.5, 1, 1.5, 2], "flag": [False, True]}
    assert "original_tune_params" not in doc["perfpred"]
    # rows perfpred measured: no record, an int among fractions written as an int
    measured = MeasurementStore(tmp_path / "measured", create=True)
    measured.append([Measurement(kind="kernel", workload={"kernel_name": "k", "problem_size": "1024"},
                                 config={"f": f}, hardware_id="hw", runtime_ms=1.0 + f) for f in (0.5, 1, 1.5)])
    doc = cli_export(monkeypatch, capsys, measured.path, tmp_path / "measured.json")
    assert set(doc["cache"]) == {"0.5", "1", "1.5"} and doc["tune_params"] == {"f": [0.5, 1, 1.5]}
    results = simulate({"f": [0.5, 1, 1.5]}, tmp_path / "measured.json")
    assert len(results) == 3
