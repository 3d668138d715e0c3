"""Kernel Tuner cache export: value types Kernel Tuner keys on, repeats, one problem per cache,
one kernel per cache; and ``dataset ls`` refusing an unknown status."""

from __future__ import annotations

import copy
import gzip
import itertools
import json
import warnings
from pathlib import Path

import pandas as pd
import pytest
from test_cli import assert_one_line_error, run_main

from perfpred.collect.importers import export_kernel_tuner_cache, get_importer, run_import
from perfpred.datasets import STATUSES, MeasurementStore
from perfpred.errors import InvalidInputError
from perfpred.settings import datasets_dir

# A tune parameter written as Kernel Tuner users write it: ints among fractions.
TUNE_PARAMS = {"block_size_x": [32, 64], "f": [0.5, 1, 1.5], "s": ["a", "b"], "flag": [True, False]}


def recorded(name: str) -> dict:
    return json.loads(gzip.decompress((datasets_dir() / "kernel-tuner" / name).read_bytes()))


def write_cache(doc: dict, path: Path, n: int, edit=None) -> Path:
    """The first ``n`` entries of a recorded cache; ``edit(entry)`` may change each."""
    out = copy.deepcopy({k: v for k, v in doc.items() if k != "cache"})
    out["cache"] = copy.deepcopy(dict(list(doc["cache"].items())[:n]))
    for entry in out["cache"].values():
        if edit is not None:
            edit(entry)
    path.write_text(json.dumps(out))
    return path


def test_ints_among_fractions_keep_the_keys_kernel_tuner_looks_up(tmp_path):
    kernel_tuner = pytest.importorskip("kernel_tuner")
    cache = {}
    for i, values in enumerate(itertools.product(*TUNE_PARAMS.values())):
        t = 1.0 + i
        cache[",".join(map(str, values))] = {**dict(zip(TUNE_PARAMS, values, strict=True)), "time": t,
                                             "times": [t, t], "timestamp": "2024-01-01 00:00:00"}
    original = tmp_path / "mixed.json"
    original.write_text(json.dumps({"device_name": "NVIDIA RTX A6000", "kernel_name": "k", "problem_size": [1024],
                                    "tune_params_keys": list(TUNE_PARAMS), "tune_params": TUNE_PARAMS,
                                    "objective": "time", "cache": cache}))
    store = MeasurementStore(tmp_path / "store", create=True)
    run_import("kernel-tuner", [original], store)
    assert store.load()["config.f"].dtype.kind == "f"  # the store holds 1 as 1.0
    exported = export_kernel_tuner_cache(store, tmp_path / "out.json").path
    doc = json.loads(exported.read_text())
    assert set(doc["cache"]) == set(cache) and doc["tune_params"]["f"] == [0.5, 1, 1.5]
    with warnings.catch_warnings():  # "None of the tunable parameters specify thread block dimensions"
        warnings.simplefilter("ignore", UserWarning)
        results, _ = kernel_tuner.tune_kernel("k", "", [1024], [], TUNE_PARAMS, cache=str(exported),
                                              simulation_mode=True, strategy="brute_force", verbose=False,
                                              quiet=True)
    assert len(results) == len(cache)
    for result in results:
        assert result["time"] == pytest.approx(cache[",".join(str(result[k]) for k in TUNE_PARAMS)]["time"])


def test_repeats_are_counted_and_each_config_exported_as_its_latest_record(tmp_path, data, monkeypatch, capsys):
    conv = recorded("convolution/A100.json.gz")
    store = tmp_path / "store"
    run_import("kernel-tuner", [write_cache(conv, tmp_path / "a.json", 20)], MeasurementStore(store, create=True))

    def slower(entry):
        if not isinstance(entry["time"], str):
            entry["time"] *= 2
            entry["times"] = [t * 2 for t in entry["times"]]

    run_import("kernel-tuner", [write_cache(conv, tmp_path / "b.json", 5, slower)], MeasurementStore(store))
    export = export_kernel_tuner_cache(MeasurementStore(store), tmp_path / "out.json")
    assert (export.entries, export.repeated_configs, export.rows_left_out) == (20, 5, 5)
    doc = json.loads(export.path.read_text())
    first = list(conv["cache"])[:5]
    assert [doc["cache"][k]["time"] for k in first] == [
        conv["cache"][k]["time"] * 2 if not isinstance(conv["cache"][k]["time"], str) else conv["cache"][k]["time"]
        for k in first]
    code, _, err = run_main(monkeypatch, capsys, "export", "kernel-tuner", "--store", str(store),
                            "--output", str(tmp_path / "cli.json"))
    assert code == 0 and "5 configurations had repeats; each is exported as its latest record, 5 rows left out" \
        in err.splitlines()


def test_gemm_shapes_are_picked_not_tuned_and_rows_without_config_are_refused(tmp_path, data):
    lines = gzip.decompress((data / "neusight" / "train" / "bmm" / "Tesla_V100-PCIE-32GB.csv.gz").read_bytes())
    csv = tmp_path / "Tesla_V100-PCIE-32GB.csv"
    csv.write_text("\n".join(lines.decode().splitlines()[:51]) + "\n")
    rows = get_importer("neusight").read(csv).frames[0]
    with pytest.raises(InvalidInputError, match=r"workload columns b, m, n, k vary across the 50 "
                                                r"selected rows; pick one with .*--workload b=\d+ --workload m="):
        export_kernel_tuner_cache(rows, tmp_path / "all.json")
    problem = {key: rows[f"workload.{key}"].iloc[0] for key in ("b", "m", "n", "k")}
    doc = json.loads(export_kernel_tuner_cache(rows, tmp_path / "one.json", workload=problem).path.read_text())
    assert doc["tune_params_keys"] == ["backend", "device"] and len(doc["cache"]) == 1
    assert {k: doc["perfpred"]["workload"][k] for k in problem} == problem
    no_config = rows.drop(columns=[c for c in rows if c.startswith("config.")])
    with pytest.raises(InvalidInputError, match=r"no config\.\* column: there are no tunable parameters to export"):
        export_kernel_tuner_cache(no_config, tmp_path / "none.json", workload=problem)


def test_a_kernel_store_exports_one_problem(tmp_path, data):
    # perfpred's own kernel rows: the problem size is workload, the kernel's parameters config
    rows = get_importer("kernel-tuner").read(write_cache(recorded("convolution/A100.json.gz"),
                                                         tmp_path / "c.json", 10)).frames[0]
    bigger = rows.assign(**{"workload.problem_size": "8192x4096", "workload.problem_size_x": 8192,
                            "measurement_id": rows["measurement_id"] + "b"})
    both = pd.concat([rows, bigger], ignore_index=True)
    with pytest.raises(InvalidInputError, match="problem_size, problem_size_x vary"):
        export_kernel_tuner_cache(both, tmp_path / "x.json")
    doc = json.loads(export_kernel_tuner_cache(both, tmp_path / "x.json", workload={"problem_size_x": 8192})
                     .path.read_text())
    assert doc["problem_size"] == [8192, 4096] and len(doc["cache"]) == 10


def test_several_kernels_on_one_device_are_named(tmp_path, data, monkeypatch, capsys):
    store = tmp_path / "store"
    run_import("kernel-tuner", [write_cache(recorded("convolution/A100.json.gz"), tmp_path / "c.json", 10),
                                write_cache(recorded("dedispersion/A100.json.gz"), tmp_path / "d.json", 10)],
               MeasurementStore(store, create=True))
    code, out, err = run_main(monkeypatch, capsys, "export", "kernel-tuner", "--store", str(store),
                              "--output", str(tmp_path / "x.json"))
    assert_one_line_error(code, out, err, "2 kernels (convolution_kernel, dedispersion_kernel)",
                          "--workload kernel_name=")
    code, out, err = run_main(monkeypatch, capsys, "export", "kernel-tuner", "--store", str(store),
                              "--output", str(tmp_path / "d.json"), "--workload", "kernel_name=dedispersion_kernel")
    assert code == 0 and json.loads((tmp_path / "d.json").read_text())["kernel_name"] == "dedispersion_kernel"


def test_dataset_ls_refuses_an_unknown_status(tmp_path, data, monkeypatch, capsys):
    store = tmp_path / "store"
    run_import("kernel-tuner", [write_cache(recorded("convolution/A100.json.gz"), tmp_path / "c.json", 5)],
               MeasurementStore(store, create=True))
    code, out, err = run_main(monkeypatch, capsys, "dataset", "ls", str(store), "--status", "bogus")
    assert_one_line_error(code, out, err, "--status must be one of", ", ".join(STATUSES), "'bogus'")
    code, out, err = run_main(monkeypatch, capsys, "dataset", "ls", str(store), "--status", "oom")
    assert code == 0 and out == "" and "no measurements match" in err
