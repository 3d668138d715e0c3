"""Importer fixes: T4 time units, CSV lines with extra fields, option checks, all-bad files,
T4 / cache twins, Kernel Tuner source labels, and what folder walks report.

Small slices of the recorded datasets (``PERFPRED_DATASETS``) or synthetic files, in tmp_path.
"""

from __future__ import annotations

import copy
import gzip
import json
import os
import shutil
from pathlib import Path

import pytest
from test_cli import assert_one_line_error, run_main

from perfpred.collect.importers import get_importer, gpu_hardware, read_files, run_import
from perfpred.datasets import MeasurementStore
from perfpred.errors import DatasetNotFoundError, InvalidInputError
from perfpred.settings import datasets_dir

A100_CONV = Path("kernel-tuner") / "convolution" / "A100.json.gz"
A100_GPU = "NVIDIA A100-PCIE-40GB"


@pytest.fixture(scope="module")
def conv(data: Path) -> dict:
    """The A100 convolution cache, cut to 8 entries of which 2 failed."""
    doc = json.loads(gzip.decompress((data / A100_CONV).read_bytes()))
    failed = [k for k, e in doc["cache"].items() if isinstance(e["time"], str)][:2]
    keys = list(doc["cache"])[:6] + failed
    doc["cache"] = {k: doc["cache"][k] for k in keys}
    return doc


def t4_twin(cache: dict, scale: float = 1.0, timeunit: str | None = "milliseconds", time_unit: str = "ms") -> dict:
    """A cache's entries as Kernel Tuner 1.5's T4 writer (``get_t4_results``) lays them out, with
    every time multiplied by ``scale`` (a file in another ``timeunit``)."""
    keys = cache["tune_params_keys"]
    skip = {*keys, "timestamp", "times"}
    timing = {"compile_time": "compilation", "benchmark_time": "benchmark", "framework_time": "framework",
              "strategy_time": "search_algorithm", "verification_time": "validation"}
    results = []
    for entry in cache["cache"].values():
        failed = isinstance(entry["time"], str)
        times = {t4: entry[kt] * scale for kt, t4 in timing.items()}
        times["runtimes"] = [t * scale for t in entry.get("times", [])]
        measurements = [{"name": k, "value": v * scale if k == "time" and not failed else v,
                         "unit": time_unit if k.startswith("time") else ""}
                        for k, v in entry.items() if k not in skip and k not in timing]
        results.append({"timestamp": entry["timestamp"], "configuration": {k: entry[k] for k in keys},
                        "times": times, "invalidity": "runtime" if failed else "correct", "correctness": 1,
                        "measurements": measurements, "objectives": ["time"]})
    doc = {"results": results, "schema_version": "1.0.0"}
    if timeunit is not None:
        doc["metadata"] = {"timeunit": timeunit}
    return doc


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def csv_head(src: Path, n_rows: int) -> list[str]:
    return gzip.decompress(src.read_bytes()).decode().splitlines()[: n_rows + 1]


# ---------------------------------------------------------------------------- 1. T4 time units


@pytest.mark.parametrize(("timeunit", "time_unit", "scale"), [
    ("microseconds", "us", 1e3), ("seconds", "s", 1e-3), ("nanoseconds", "", 1e6)])
def test_t4_times_are_converted_from_the_files_timeunit(tmp_path: Path, conv: dict, timeunit: str,
                                                        time_unit: str, scale: float) -> None:
    importer = get_importer("kernel-tuner")
    in_ms = importer.read(write(tmp_path / "ms" / "r.json", json.dumps(t4_twin(conv))), device_name=A100_GPU)
    other = write(tmp_path / timeunit / "r.json", json.dumps(t4_twin(conv, scale, timeunit, time_unit)))
    converted = importer.read(other, device_name=A100_GPU)
    a, b = in_ms.frame, converted.frame
    assert list(a["measurement_id"]) == list(b["measurement_id"])
    for column in ("runtime_ms", "mean_ms", "min_ms", "metric.compile_time_ms", "metric.benchmark_time_ms"):
        assert b[column].to_numpy() == pytest.approx(a[column].to_numpy(), rel=1e-9, nan_ok=True), column
    assert a["runtime_ms"].dropna().between(1, 100).all()  # the recorded A100 times are a few ms


def test_an_unknown_t4_timeunit_is_a_one_line_error_naming_file_key_and_value(tmp_path: Path, conv: dict) -> None:
    path = write(tmp_path / "r.json", json.dumps(t4_twin(conv, timeunit="fortnights")))
    with pytest.raises(InvalidInputError) as info:
        get_importer("kernel-tuner").read(path, device_name=A100_GPU)
    message = str(info.value)
    assert message.startswith("r.json: `metadata.timeunit` must be one of seconds, milliseconds")
    assert message.endswith("but got 'fortnights'") and "\n" not in message


# ---------------------------------------------------------------------------- 2. CSV lines with extra fields


def test_a_csv_line_with_an_extra_field_is_one_bad_row(tmp_path: Path, data: Path) -> None:
    lines = csv_head(data / "uci-sgemm" / "sgemm_product.csv.gz", 40)
    original = get_importer("uci-sgemm").read(write(tmp_path / "orig" / "sgemm_product.csv", "\n".join(lines)))
    lines[6] += ",99"  # line 7 of the file
    fields = lines[16].split(",")
    fields[-1] = "nan"  # line 17: a bad row of another kind, still located right
    lines[16] = ",".join(fields)
    path = write(tmp_path / "sgemm_product.csv", "\n".join(lines) + "\n")
    result = get_importer("uci-sgemm").read(path)
    assert (result.rows_read, result.rows_good, result.rows_bad) == (40, 38, 2)
    assert result.bad_examples[0].startswith("sgemm_product.csv: line 7: a row must have the header's 18 fields, "
                                             "but this one has 19: '")
    assert result.bad_examples[1] == ("sgemm_product.csv: line 17: `runtime Run4 (ms)` must be a finite number, "
                                      "but got nan (an empty or NaN field)")
    kept = original.frame.drop(index=[5, 15]).reset_index(drop=True)
    assert list(result.frame["measurement_id"]) == list(kept["measurement_id"])


def test_an_extra_field_on_the_first_data_line_shifts_no_column(tmp_path: Path, data: Path) -> None:
    lines = csv_head(data / "uci-sgemm" / "sgemm_product.csv.gz", 10)
    original = get_importer("uci-sgemm").read(write(tmp_path / "orig" / "sgemm_product.csv", "\n".join(lines)))
    lines[1] += ",1"  # pandas would take the first field for an index column
    result = get_importer("uci-sgemm").read(write(tmp_path / "sgemm_product.csv", "\n".join(lines)))
    assert (result.rows_read, result.rows_good, result.rows_bad) == (10, 9, 1)
    assert "line 2: a row must have the header's 18 fields, but this one has 19" in result.bad_examples[0]
    assert list(result.frame["measurement_id"]) == list(original.frame["measurement_id"][1:])


def test_extra_fields_in_vidur_and_neusight_files_are_bad_rows(tmp_path: Path, data: Path) -> None:
    mlp = csv_head(data / "vidur" / "compute" / "a40" / "microsoft" / "phi-2" / "mlp.csv.gz", 4)
    n_ops = sum(1 for c in mlp[0].split(",") if c.startswith("time_stats.") and c.endswith(".median"))
    mlp[3] += ",7"
    result = get_importer("vidur").read(write(tmp_path / "vidur/compute/a40/microsoft/phi-2/mlp.csv", "\n".join(mlp)))
    assert (result.rows_read, result.rows_bad) == (4 * n_ops, n_ops)  # one bad row per operator of the line
    assert "line 4: a row must have the header's" in result.bad_examples[0]
    bmm = csv_head(data / "neusight" / "train" / "bmm" / "Tesla_T4.csv.gz", 6)
    bmm[5] += ",x,y"
    result = get_importer("neusight").read(write(tmp_path / "neusight/train/bmm/Tesla_T4.csv", "\n".join(bmm)))
    assert (result.rows_read, result.rows_good, result.rows_bad) == (6, 5, 1)
    assert "line 6: a row must have the header's" in result.bad_examples[0]


# ---------------------------------------------------------------------------- 3. options


@pytest.mark.parametrize(("fmt", "takes"), [
    ("kernel-tuner", "its options are device_name, kernel_name, problem_size"),
    ("uci-sgemm", "it takes no options"), ("neusight", "its options are device_configs"),
    ("vidur", "its options are device, model, topology"), ("ml-energy", "it takes no options")])
def test_an_unknown_option_is_refused_naming_the_keys_the_format_takes(tmp_path: Path, fmt: str, takes: str) -> None:
    store = tmp_path / "store"
    with pytest.raises(InvalidInputError, match=f"^unknown {fmt} option 'bogus'; {takes}$"):
        run_import(fmt, [tmp_path], store, bogus="1")
    with pytest.raises(InvalidInputError, match="unknown"):
        read_files(fmt, [tmp_path], bogus="1")
    assert not store.exists()


def test_cli_refuses_an_unknown_option_and_a_device_configs_that_is_no_folder(tmp_path, data, monkeypatch,
                                                                              capsys) -> None:
    store = tmp_path / "store"
    conv_file = str(data / A100_CONV)
    code, out, err = run_main(monkeypatch, capsys, "import", "kernel-tuner", conv_file, "--into", str(store),
                              "--option", "bogus=1")
    assert_one_line_error(code, out, err, "unknown kernel-tuner option 'bogus'", "device_name, kernel_name")
    folder = str(data / "neusight" / "train" / "bmm")
    sheet = data / "neusight" / "device_configs" / "Tesla_T4.json"
    for value, what in (("/nonexistent", "does not exist"), (str(sheet), "is a file"), ("", "does not exist")):
        code, out, err = run_main(monkeypatch, capsys, "import", "neusight", folder, "--into", str(store),
                                  "--option", f"device_configs={value}")
        assert_one_line_error(code, out, err, "device_configs must be an existing folder", what)
    assert not store.exists()
    code, out, err = run_main(monkeypatch, capsys, "import", "--help")
    assert code == 0 and "problem_size" in out and "device_configs" in out


def test_an_unknown_vidur_device_is_noted_once(tmp_path: Path, data: Path) -> None:
    src = data / "vidur" / "compute" / "a40" / "microsoft" / "phi-2" / "mlp.csv.gz"
    files = [shutil.copy(src, tmp_path / name) for name in ("a.csv.gz", "b.csv.gz")]
    store = MeasurementStore(tmp_path / "store", create=True)
    report = run_import("vidur", files, store, device="rtx9999", model="microsoft/phi-2")
    notes = [n for n in report.notes if "rtx9999" in n]
    assert notes == ["no hardware spec is known for GPU 'rtx9999': only its name is recorded"]
    assert report.summary().count("rtx9999") == 1
    known = run_import("vidur", files[:1], MeasurementStore(tmp_path / "s2", create=True), device="a100",
                       model="microsoft/phi-2")
    assert not any("no hardware spec" in n for n in known.notes)


def test_a_device_configs_folder_without_the_sheet_is_noted(tmp_path: Path, data: Path) -> None:
    lines = csv_head(data / "neusight" / "train" / "bmm" / "Tesla_T4.csv.gz", 4)
    path = write(tmp_path / "t4.csv", "\n".join(lines))
    (tmp_path / "sheets").mkdir()
    result = get_importer("neusight").read(path, device_configs=str(tmp_path / "sheets"))
    assert any("holds no spec sheet for" in n for n in result.notes)


@pytest.mark.parametrize("name", ["MI300X", "AMD Instinct MI250", "mi210", "AMD Radeon PRO W6600"])
def test_amd_gpus_are_amd(name: str) -> None:
    assert gpu_hardware(name)["vendor"] == "amd"
    assert gpu_hardware("NVIDIA H100 80GB HBM3")["vendor"] == "nvidia"


def test_ml_energy_mi300x_rows_are_amd(tmp_path: Path, data: Path) -> None:
    doc = json.loads((data / "ml-energy" / "tasks" / "gpqa.json").read_text())
    doc["configurations"] = [dict(c, gpu_model="MI300X") for c in doc["configurations"][:2]]
    result = get_importer("ml-energy").read(write(tmp_path / "gpqa.json", json.dumps(doc)))
    assert {json.loads(h)["vendor"] for h in result.frame["hardware_json"]} == {"amd"}


# ---------------------------------------------------------------------------- 4. every row bad -> exit 2


def test_a_file_whose_every_row_is_refused_by_the_store_exits_2_with_its_counts(tmp_path, conv, monkeypatch,
                                                                                 capsys) -> None:
    store = tmp_path / "store"
    numbers = write(tmp_path / "numbers.json", json.dumps(conv))
    code, out, err = run_main(monkeypatch, capsys, "import", "kernel-tuner", str(numbers), "--into", str(store))
    assert code == 0
    text = copy.deepcopy(conv)
    for entry in text["cache"].values():
        entry["block_size_x"] = f"x{entry['block_size_x']}"
    strings = write(tmp_path / "strings.json", json.dumps(text))
    code, out, err = run_main(monkeypatch, capsys, "import", "kernel-tuner", str(strings), "--into", str(store))
    assert_one_line_error(code, out, err, "strings.json: all 8 row(s) are bad", "must be a number as in the store")
    assert "0 imported, 0 duplicate, 8 bad" in out
    assert len(MeasurementStore(store).load()) == 8


def test_a_file_whose_every_row_is_bad_still_reports_its_counts(tmp_path: Path, data: Path) -> None:
    lines = csv_head(data / "uci-sgemm" / "sgemm_product.csv.gz", 5)
    lines[1:] = [line.rsplit(",", 1)[0] + ",-1" for line in lines[1:]]
    good = write(tmp_path / "good" / "sgemm_product.csv", "\n".join(csv_head(data / "uci-sgemm" /
                                                                              "sgemm_product.csv.gz", 3)))
    bad = write(tmp_path / "sgemm_product.csv", "\n".join(lines))
    report = run_import("uci-sgemm", [bad, good], MeasurementStore(tmp_path / "store", create=True))
    assert (report.rows_read, report.rows_imported, report.rows_bad) == (8, 3, 5)
    assert report.files_failed == ["sgemm_product.csv: all 5 row(s) are bad, e.g. line 2: runtime Run4 (ms) > 0 "
                                   "must hold, but got -1.0"]
    assert "8 row(s): 3 imported, 0 duplicate, 5 bad" in report.summary()


# ---------------------------------------------------------------------------- 5. T4 twin of a cache


def test_a_cache_and_its_t4_twin_with_problem_size_give_each_config_once(tmp_path: Path, conv: dict) -> None:
    cache = write(tmp_path / "A100.json", json.dumps(conv))
    twin = write(tmp_path / "t4" / "A100_results.json", json.dumps(t4_twin(conv)))
    store = MeasurementStore(tmp_path / "store", create=True)
    assert run_import("kernel-tuner", [cache], store).rows_imported == 8
    options = {"device_name": A100_GPU, "kernel_name": "convolution_kernel", "problem_size": "4096x4096"}
    report = run_import("kernel-tuner", [twin], store, **options)
    assert (report.rows_read, report.rows_imported, report.rows_duplicate, report.rows_repeat) == (8, 0, 8, 0)
    assert len(store) == 8
    workload = get_importer("kernel-tuner").read(twin, **options).frame
    assert (workload["workload.problem_size"] == "4096x4096").all()
    assert (workload["workload.problem_size_x"] == 4096).all() and (workload["workload.problem_size_y"] == 4096).all()


# ---------------------------------------------------------------------------- 6. source labels


def test_kernel_tuner_sources_name_the_kernel_folder(tmp_path: Path, data: Path) -> None:
    store = MeasurementStore(tmp_path / "store", create=True)
    for kernel in ("convolution", "dedispersion"):
        doc = json.loads(gzip.decompress((data / "kernel-tuner" / kernel / "A100.json.gz").read_bytes()))
        doc["cache"] = dict(list(doc["cache"].items())[:5])
        write(tmp_path / "kt" / kernel / "A100.json", json.dumps(doc))
    run_import("kernel-tuner", [tmp_path / "kt"], store)
    assert set(store.load()["source"]) == {"kernel-tuner:convolution/A100.json", "kernel-tuner:dedispersion/A100.json"}


# ---------------------------------------------------------------------------- 7. folder walks


def test_a_folder_of_another_format_says_what_was_skipped(tmp_path: Path, data: Path) -> None:
    folder = tmp_path / "neusight" / "train" / "bmm"
    write(folder / "Tesla_T4.csv", "\n".join(csv_head(data / "neusight" / "train" / "bmm" / "Tesla_T4.csv.gz", 3)))
    with pytest.raises(InvalidInputError) as info:
        run_import("uci-sgemm", [tmp_path / "neusight"], tmp_path / "store")
    assert "1 file(s) named like one were skipped because their content is not in uci-sgemm format " \
           "(they look like neusight files)" in str(info.value)


def test_an_unreadable_subfolder_is_reported(tmp_path: Path, conv: dict, monkeypatch, capsys) -> None:
    write(tmp_path / "kt" / "A100.json", json.dumps(conv))
    locked = tmp_path / "kt" / "locked"
    write(locked / "A4000.json", json.dumps(conv))
    real_scandir = os.scandir

    def scandir(path=".", *args):  # root reads every folder, so the refusal is simulated
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path, *args)

    monkeypatch.setattr(os, "scandir", scandir)
    store = tmp_path / "store"
    code, out, err = run_main(monkeypatch, capsys, "import", "kernel-tuner", str(tmp_path / "kt"), "--into", str(store))
    assert_one_line_error(code, out, err, f"folder '{locked}' cannot be read (Permission denied)")
    assert "8 imported" in out and len(MeasurementStore(store).load()) == 8


def test_an_empty_json_file_is_called_empty(tmp_path: Path) -> None:
    empty = write(tmp_path / "empty.json", "\n")
    for fmt in ("kernel-tuner", "ml-energy"):
        with pytest.raises(InvalidInputError, match=rf"^empty\.json: a {fmt} file must hold a JSON document, "
                                                    "but it is empty$"):
            get_importer(fmt).read(empty)


def test_one_hardware_id_keeps_one_spec_across_imports(tmp_path):
    """A NeuSight CSV outside its folders gets the built-in T4 spec; the real file, NeuSight's
    sheet. Imported into one store, the device keeps the spec stored first, with a note."""
    try:
        src = datasets_dir() / "neusight" / "train" / "bmm" / "Tesla_T4.csv.gz"
    except DatasetNotFoundError as exc:
        pytest.skip(str(exc))
    with gzip.open(src, "rt") as f:
        head = [next(f) for _ in range(31)]
    lone = tmp_path / "elsewhere" / "Tesla_T4.csv"
    lone.parent.mkdir()
    lone.write_text("".join(head))
    store = MeasurementStore(tmp_path / "store", create=True)
    first = run_import("neusight", lone, store)
    assert not first.notes or not any("spec stored" in n for n in first.notes)
    second = run_import("neusight", src, store)
    assert [n for n in second.notes if n.startswith("gpu-tesla-t4: the spec stored for this device is kept")]
    table = store.load()
    assert table["hardware_json"].nunique() == 1 and len(table) > 1000
    assert table["hardware_json"].iloc[0] == MeasurementStore(store.path).hardware_specs()["gpu-tesla-t4"]
