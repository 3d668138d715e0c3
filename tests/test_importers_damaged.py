"""Damaged inputs against every importer: a clean one-line PerfPredError, or counts that add up.

Each importer gets a small valid sample cut from the real dataset, then hypothesis breaks
it: truncated bytes (plain and gzipped), random byte corruption, dropped columns / keys,
and NaN, zero, negative or non-numeric values in random cells. Whatever comes out must be
either a ``PerfPredError`` whose message is one line naming the file, or a ``FileImport``
with ``rows_good + rows_bad == rows_read`` whose rows all pass the Measurement rules.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perfpred.collect.importers import get_importer, run_import
from perfpred.datasets import Measurement, MeasurementStore
from perfpred.errors import DatasetNotFoundError, PerfPredError
from perfpred.settings import datasets_dir

BAD_VALUES = ("nan", "NaN", "-1", "0", "-0.0", "inf", "abc", "", "1e400", "3.5")
BAD_JSON_VALUES = (float("nan"), -1, 0, -2.5, "abc", None, [], {}, True, 1e308)
SETTINGS = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def gz_text(path: Path) -> str:
    """The text of a gzipped file (read whole: the samples are small)."""
    return gzip.decompress(Path(path).read_bytes()).decode()


def _data() -> Path:
    try:
        return datasets_dir()
    except DatasetNotFoundError as exc:
        pytest.skip(str(exc))


def _csv_head(src: Path, n_rows: int) -> str:
    return "\n".join(gz_text(src).splitlines()[: n_rows + 1]) + "\n"


@pytest.fixture(scope="module")
def samples() -> dict[str, tuple[str, str]]:
    """format -> (relative path the sample must sit at, text of a small valid file)."""
    data = _data()
    conv = json.loads(gz_text(data / "kernel-tuner" / "convolution" / "A100.json.gz"))
    failed = [k for k, e in conv["cache"].items() if isinstance(e["time"], str)][:2]
    keys = list(conv["cache"])[:6] + failed
    conv["cache"] = {k: conv["cache"][k] for k in keys}
    for entry in conv["cache"].values():
        if "times" in entry:
            entry["times"] = entry["times"][:4]
    t4 = {"schema_version": "1.0.0", "results": [_t4_result(e) for e in conv["cache"].values()]}
    energy = json.loads((data / "ml-energy" / "tasks" / "gpqa.json").read_text())
    energy["configurations"] = energy["configurations"][:6]
    return {
        "kernel-tuner": ("A100.json", json.dumps(conv)),
        "kernel-tuner-t4": ("A100_results.json", json.dumps(t4)),
        "uci-sgemm": ("sgemm_product.csv", _csv_head(data / "uci-sgemm" / "sgemm_product.csv.gz", 8)),
        "neusight": ("neusight/train/bmm/Tesla_T4.csv",
                     _csv_head(data / "neusight" / "train" / "bmm" / "Tesla_T4.csv.gz", 8)),
        "vidur": ("vidur/compute/a40/microsoft/phi-2/mlp.csv",
                  _csv_head(data / "vidur" / "compute" / "a40" / "microsoft" / "phi-2" / "mlp.csv.gz", 4)),
        "vidur-network": ("vidur/network/a100_dgx/send_recv.csv",
                          _csv_head(data / "vidur" / "network" / "a100_dgx" / "send_recv.csv.gz", 8)),
        "ml-energy": ("gpqa.json", json.dumps(energy)),
    }


FORMATS = ("kernel-tuner", "kernel-tuner-t4", "uci-sgemm", "neusight", "vidur", "vidur-network", "ml-energy")
# Sample variants read by another format's importer (and the options they need).
VARIANTS = {"vidur-network": ("vidur", {}),
            "kernel-tuner-t4": ("kernel-tuner", {"device_name": "NVIDIA A100-PCIE-40GB"})}


def _importer(fmt: str):
    return get_importer(VARIANTS.get(fmt, (fmt, {}))[0])


def _t4_result(entry: dict) -> dict:
    """One cache entry as Kernel Tuner's T4 writer (``store_output_file``) lays it out."""
    failed = isinstance(entry["time"], str)
    return {
        "timestamp": entry["timestamp"],
        "configuration": {k: v for k, v in entry.items() if k.startswith(("block", "tile", "read", "use", "filter"))},
        "times": {"compilation": entry["compile_time"], "benchmark": entry["benchmark_time"],
                  "framework": entry["framework_time"], "search_algorithm": entry["strategy_time"],
                  "validation": entry["verification_time"], "runtimes": entry.get("times", [])},
        "invalidity": ("runtime" if entry["time"] == "RuntimeFailedConfig" else "compile") if failed else "correct",
        "correctness": 1,
        "measurements": [{"name": "time", "value": entry["time"], "unit": "ms"}],
        "objectives": ["time"],
    }


def _place(tmp_path: Path, relative: str, payload: bytes, gz: bool) -> Path:
    path = tmp_path / (relative + (".gz" if gz else ""))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    if relative.startswith("neusight/"):
        config = _data() / "neusight" / "device_configs" / "Tesla_T4.json"
        target = tmp_path / "neusight" / "device_configs" / "Tesla_T4.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(config.read_bytes())
    return path


def _check(fmt: str, path: Path) -> None:
    """The property: a clean one-line error naming the file, or a result whose counts add up."""
    try:
        result = _importer(fmt).read(path, **VARIANTS.get(fmt, (fmt, {}))[1])
    except PerfPredError as exc:
        message = str(exc)
        assert "\n" not in message and message.startswith(path.name), message
        return
    assert result.rows_good + result.rows_bad == result.rows_read
    assert result.rows_good > 0 and len(result.bad_examples) <= 5
    assert all("\n" not in reason and reason.startswith(path.name) for reason in result.bad_examples)
    for frame in result.frames:
        for row in frame.to_dict("records"):
            Measurement.from_row(row).validate()


def _encode(text: str, gz: bool) -> bytes:
    raw = text.encode()
    return gzip.compress(raw, mtime=0) if gz else raw


@pytest.mark.parametrize("fmt", FORMATS)
@SETTINGS
@given(cut=st.floats(0.0, 1.0), gz=st.booleans())
def test_truncated_files(tmp_path: Path, samples, fmt: str, cut: float, gz: bool) -> None:
    relative, text = samples[fmt]
    payload = _encode(text, gz)
    path = _place(tmp_path, relative, payload[: int(len(payload) * cut)], gz)
    _check(fmt, path)


@pytest.mark.parametrize("fmt", FORMATS)
@SETTINGS
@given(data=st.data())
def test_random_byte_corruption(tmp_path: Path, samples, fmt: str, data: st.DataObject) -> None:
    relative, text = samples[fmt]
    payload = bytearray(text.encode())
    for _ in range(data.draw(st.integers(1, 6), label="n_flips")):
        position = data.draw(st.integers(0, len(payload) - 1), label="position")
        payload[position] = data.draw(st.integers(0, 255), label="byte")
    _check(fmt, _place(tmp_path, relative, bytes(payload), gz=False))


def _damage_csv(text: str, data: st.DataObject) -> str:
    rows = list(csv.reader(io.StringIO(text)))
    header, body = rows[0], rows[1:]
    if data.draw(st.booleans(), label="drop_column"):
        drop = data.draw(st.integers(0, len(header) - 1), label="column")
        header = header[:drop] + header[drop + 1:]
        body = [r[:drop] + r[drop + 1:] for r in body]
    for _ in range(data.draw(st.integers(1, 8), label="n_cells")):
        i = data.draw(st.integers(0, len(body) - 1), label="row")
        j = data.draw(st.integers(0, len(header) - 1), label="col")
        body[i][j] = data.draw(st.sampled_from(BAD_VALUES), label="value")
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([header, *body])
    return out.getvalue()


def _damage_json(text: str, fmt: str, data: st.DataObject) -> str:
    doc = json.loads(text)
    entries = {"kernel-tuner": lambda: list(doc["cache"].values()), "kernel-tuner-t4": lambda: doc["results"],
               "ml-energy": lambda: doc["configurations"]}[fmt]()
    for _ in range(data.draw(st.integers(1, 6), label="n_fields")):
        entry = entries[data.draw(st.integers(0, len(entries) - 1), label="entry")]
        key = data.draw(st.sampled_from(sorted(entry)), label="key")
        if data.draw(st.booleans(), label="delete"):
            del entry[key]
        elif key == "times" and isinstance(entry[key], list) and entry[key]:
            entry[key][data.draw(st.integers(0, len(entry[key]) - 1))] = data.draw(st.sampled_from(BAD_JSON_VALUES))
        else:
            entry[key] = data.draw(st.sampled_from(BAD_JSON_VALUES), label="value")
    if data.draw(st.booleans(), label="drop_top_key"):
        del doc[data.draw(st.sampled_from(sorted(doc)), label="top_key")]
    return json.dumps(doc)


@pytest.mark.parametrize("fmt", FORMATS)
@SETTINGS
@given(data=st.data(), gz=st.booleans())
def test_damaged_values_and_missing_columns(tmp_path: Path, samples, fmt: str, data: st.DataObject,
                                            gz: bool) -> None:
    relative, text = samples[fmt]
    damaged = _damage_json(text, fmt, data) if relative.endswith(".json") else _damage_csv(text, data)
    _check(fmt, _place(tmp_path, relative, _encode(damaged, gz), gz))


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_run_import_report_adds_up(tmp_path_factory: pytest.TempPathFactory, samples, data: st.DataObject) -> None:
    tmp_path = tmp_path_factory.mktemp("damaged-import")
    relative, text = samples["uci-sgemm"]
    path = _place(tmp_path, relative, _damage_csv(text, data).encode(), gz=False)
    store = MeasurementStore(tmp_path / "store", create=True)
    try:
        report = run_import("uci-sgemm", [path], store)
    except PerfPredError as exc:
        assert "\n" not in str(exc)
        assert len(store) == 0
        return
    assert report.rows_imported + report.rows_duplicate + report.rows_bad == report.rows_read
    assert len(store) == report.rows_imported


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("other", FORMATS)
def test_every_other_format_is_refused(tmp_path: Path, samples, fmt: str, other: str) -> None:
    if _importer(fmt).name == _importer(other).name:
        return
    relative, text = samples[other]
    path = _place(tmp_path, relative, text.encode(), gz=False)
    with pytest.raises(PerfPredError) as err:
        _importer(fmt).read(path)
    assert "\n" not in str(err.value) and str(err.value).startswith(path.name)
