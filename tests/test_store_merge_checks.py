"""What a store reads and a merge lets in: only perfpred's own part files, rows that obey the
Measurement rules (checked column-wise), one spec per hardware id, an unreadable part or source
as one line, the store's own schema version, and a shape split that takes a missing batch as 1."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from perfpred.datasets import Measurement, MeasurementStore, StoreWarning, make_split, measurement_key, merge_stores
from perfpred.datasets._checks import check_rows, content_ids
from perfpred.errors import InvalidInputError, StoreError
from tests.test_cli import assert_one_line_error, run_main
from tests.test_store import gemm


def store_of(path, measurements) -> MeasurementStore:
    store = MeasurementStore(path, create=True)
    store.append(measurements)
    return store


def foreign(path) -> None:
    pq.write_table(pa.table({"a": [1, 2], "b": ["x", "y"]}), path)


# ---------------------------------------------------------------------------- 1. only perfpred's parts are read


def test_files_in_parts_that_are_not_parts_are_never_read_and_said_once(tmp_path):
    store = store_of(tmp_path / "s", [gemm(m=1), gemm(m=2)])
    foreign(store.path / "parts" / "part-foreign.parquet")
    foreign(store.path / "parts" / "part-0000-x.snappy.parquet")  # as Spark names its files
    fresh = MeasurementStore(store.path)
    with pytest.warns(StoreWarning, match=r"2 file\(s\).*part-0000-x\.snappy\.parquet, part-foreign\.parquet"):
        df = fresh.load()
    assert sorted(df["workload.m"]) == [1, 2] and "a" not in df
    with warnings.catch_warnings():
        warnings.simplefilter("error", StoreWarning)  # said once per store, not on each read
        assert fresh.info()["rows"] == 2 and fresh.info()["parts"] == 1
    with pytest.warns(StoreWarning):
        report = merge_stores([store.path], tmp_path / "all")
    assert (report.rows_added, report.rows_bad) == (2, 0)
    assert "a" not in MeasurementStore(tmp_path / "all").load()


def test_parts_written_by_append_compact_and_tidy_are_all_read(tmp_path):
    store = store_of(tmp_path / "s", [gemm(m=1)])
    store.append([gemm(m=2)])
    store.tidy()
    store.append([gemm(m=3)])
    store.compact()
    store.append([gemm(m=4)])
    on_disk = sorted(p.name for p in (store.path / "parts").iterdir())
    with warnings.catch_warnings():
        warnings.simplefilter("error", StoreWarning)
        assert [p.name for p in MeasurementStore(store.path).part_files()] == on_disk
        assert len(MeasurementStore(store.path).load()) == 4


def test_dataset_info_warns_once_naming_a_foreign_file(tmp_path, monkeypatch, capsys):
    store = store_of(tmp_path / "s", [gemm(m=1)])
    foreign(store.path / "parts" / "part-foreign.parquet")
    code, out, err = run_main(monkeypatch, capsys, "dataset", "info", str(store.path), "--json")
    assert code == 0 and json.loads(out)["rows"] == 1
    assert err.count("warning:") == 1 and "part-foreign.parquet" in err and "Traceback" not in err
    code, out, err = run_main(monkeypatch, capsys, "dataset", "ls", str(store.path))  # any command that reads it
    assert code == 0 and err.count("warning:") == 1 and "part-foreign.parquet" in err and ".py:" not in err


def test_the_cli_warning_hook_shows_other_warnings_while_the_store_module_is_not_loaded(monkeypatch, capsys):
    """A warning raised while perfpred.datasets is half imported (pandas warns about an old
    bottleneck, say) must be shown, not crash the command on a circular import."""
    import sys
    import warnings

    from perfpred import cli

    shown = []
    monkeypatch.setattr(warnings, "showwarning", lambda message, *args, **kwargs: shown.append(str(message)))
    cli._store_warnings_as_cli_lines()  # wraps the showwarning above (restored after the test)
    monkeypatch.delitem(sys.modules, "perfpred.datasets._store")
    warnings.showwarning("pandas wants a newer bottleneck", UserWarning, "pandas/__init__.py", 1)
    assert shown == ["pandas wants a newer bottleneck"] and capsys.readouterr().err == ""


# ---------------------------------------------------------------------------- 2. rows checked as Measurements


def bypass(store: MeasurementStore, rows: pd.DataFrame) -> None:
    """Write rows as they are (a store written by hand or by an older perfpred)."""
    store._write_part(rows, check_types=False)


def row(m: int, **changes) -> pd.DataFrame:
    return pd.DataFrame([gemm(m=m).to_row()]).assign(**changes)


BAD_ROWS = [
    ({"runtime_ms": -5.0}, "`runtime_ms > 0` must hold", "-5.0"),
    ({"kind": "bogus"}, "`kind` must be one of", "'bogus'"),
    ({"status": "weird"}, "`status` must be one of", "'weird'"),
    ({"hardware_id": None}, "`hardware_id` must be a non-empty string", "None"),
    ({"hardware_id": "  "}, "`hardware_id` must be a non-empty string", "'  '"),
    ({"schema_version": 7}, "`schema_version` must be one this perfpred reads (1..1)", "7"),
    ({"measurement_id": "0123456789abcdef0123"}, "`measurement_id` must be the measurement_key",
     "'0123456789abcdef0123'"),
    ({"hostname": "node7"}, "every column must be one of the Measurement schema", "hostname='node7'"),
    ({"raw_times_ms": [[1.0, float("nan")]]}, "`raw_times_ms` must hold finite numbers > 0", "nan"),
    ({"n_runs": 0}, "`n_runs` must be an integer >= 1", "0"),
    ({"power_w": 50.0}, "power_source='unavailable' must carry no power_w/energy_j", "50.0"),
    ({"hardware_json": "[1, 2]"}, "`hardware_json` must be a JSON object", "'[1, 2]'"),
]
# Only in memory: Parquet holds neither a list inside raw_times_ms nor pd.NA as such.
BAD_FRAMES = [*BAD_ROWS,
              ({"raw_times_ms": [[1.0, [2.0]]]}, "`raw_times_ms` must hold finite numbers > 0", "[2.0]"),
              ({"status": pd.NA}, "`status` must be one of", "<NA>"),
              ({"raw_times_ms": np.array(1.0)}, "`raw_times_ms` must be a list of numbers", "1.0")]


@pytest.mark.parametrize(("changes", "rule", "shown"), BAD_ROWS)
def test_a_merge_leaves_out_a_bad_row_and_counts_it_by_rule(tmp_path, changes, rule, shown):
    source = store_of(tmp_path / "src", [gemm(m=1), gemm(m=2)])
    bypass(source, row(3, **changes))
    report = merge_stores([source.path], tmp_path / "all")
    assert (report.rows_read, report.rows_added, report.rows_bad) == (3, 2, 1)
    assert [n for n, _ in report.bad_rules.values()] == [1]
    assert f"{rule}" in report.summary() and f"but got {shown} (1 row(s))" in report.summary()
    assert sorted(MeasurementStore(tmp_path / "all").load()["workload.m"]) == [1, 2]


@pytest.mark.parametrize(("changes", "rule", "shown"), BAD_FRAMES)
def test_append_frame_refuses_a_frame_with_a_bad_row_in_one_line_writing_nothing(store, changes, rule, shown):
    store.append([gemm(m=1)])
    frame = pd.concat([row(2), row(3, **changes)], ignore_index=True)
    with pytest.raises(InvalidInputError) as info:
        store.append_frame(frame)
    message = str(info.value)
    assert "\n" not in message and "1 of 2 row(s)" in message and rule in message and shown in message
    assert "nothing was written" in message
    assert len(MeasurementStore(store.path)) == 1 and len(store.part_files()) == 1


def test_missing_optional_text_in_a_nullable_string_column_passes(store):
    """pd.NA has no truth value: a check that compared it crashed instead of letting the row pass."""
    frame = pd.concat([row(2), row(3)], ignore_index=True)
    frame["power_source"] = pd.array(["unavailable", None], dtype="string")
    assert check_rows(frame, 1).count == 0


def test_a_repeat_id_and_rows_with_gaps_pass_the_id_rule(store):
    frame = pd.DataFrame([gemm(m=1).to_row(), gemm(m=2, workload={"m": 2, "dtype": "fp32"}).to_row()])
    frame.loc[0, "measurement_id"] = frame.loc[0, "measurement_id"] + "-0badc0de"  # a repeat's id
    assert check_rows(frame, 1).count == 0
    assert store.append_frame(frame) == 2


def test_content_ids_are_the_measurement_keys_of_the_rows():
    records = [gemm(m=1), gemm(m=2, workload={"m": 2, "flag": True}), gemm(m=3, config={"x": 1.5, "y": "s"}),
               gemm(m=4, workload={"m": 4.0}, hardware_id="other"),
               Measurement(kind="serving", workload={"model": "tiny"}, config={}, hardware_id="h", metrics={"x": 1.0})]
    frame = pd.DataFrame([m.to_row() for m in records])  # gaps: columns other rows lack hold NaN
    assert list(content_ids(frame)) == [m.measurement_id for m in records]
    assert records[3].measurement_id == measurement_key("gemm", {"m": 4}, records[3].config, "other")


def test_a_source_whose_every_row_is_bad_is_named_and_the_others_merge(tmp_path, monkeypatch, capsys):
    good = store_of(tmp_path / "good", [gemm(m=1)])
    odd = MeasurementStore(tmp_path / "odd", create=True)
    bypass(odd, row(2, kind="bogus"))
    code, out, err = run_main(monkeypatch, capsys, "dataset", "merge", str(good.path), str(odd.path), "--into",
                              str(tmp_path / "all"))
    assert_one_line_error(code, out, err, "1 of 2 store(s)", "all 1 row(s) are bad", "'bogus'")
    assert "1 added" in out and "1 bad" in out
    assert len(MeasurementStore(tmp_path / "all")) == 1


def test_a_merge_of_good_stores_finds_no_bad_rows(tmp_path, gemm_table_factory):
    source = MeasurementStore(tmp_path / "src", create=True)
    source.append_frame(gemm_table_factory(200, seed=4))
    source.append([Measurement(kind="serving", workload={"model": "tiny"}, config={"parallel": 2}, hardware_id="h",
                               metrics={"tokens_per_s": 10.0}, power_w=100.0, power_source="nvml")])
    report = merge_stores([source.path], tmp_path / "all")
    assert (report.rows_added, report.rows_bad) == (201, 0)


# ---------------------------------------------------------------------------- 3. one spec per hardware id


def host(m: int, runtime_ms: float, spec: dict) -> Measurement:
    return gemm(m=m, runtime_ms=runtime_ms, raw_times_ms=[runtime_ms] * 3, min_ms=runtime_ms, hardware_id="gpu-x",
                hardware={"hardware_id": "gpu-x", **spec})


def test_a_hardware_id_keeps_the_spec_merged_first_and_the_merge_says_so(tmp_path):
    a = store_of(tmp_path / "a", [host(m, 1.0 + m, {"sm_count": 108}) for m in range(3)])
    b = store_of(tmp_path / "b", [host(m, 5.0 + m, {"sm_count": 80}) for m in range(2, 5)])
    report = merge_stores([a.path, b.path], tmp_path / "all")
    merged = MeasurementStore(tmp_path / "all")
    assert set(merged.load()["hardware_json"]) == {json.dumps({"hardware_id": "gpu-x", "sm_count": 108},
                                                              separators=(",", ":"), sort_keys=True)}
    assert report.rows_added == 6
    assert "note:" in report.summary() and "gpu-x" in report.notes[0] and "80 here, 108 stored" in report.notes[0]
    later = merge_stores([b.path], tmp_path / "b_then")  # the destination's stored spec wins over a source's
    merge_stores([a.path], tmp_path / "b_then")
    assert len(set(MeasurementStore(tmp_path / "b_then").load()["hardware_json"])) == 1 and not later.notes


def test_a_source_holding_two_specs_for_one_id_merges_with_one(tmp_path):
    source = store_of(tmp_path / "src", [host(1, 1.0, {"sm_count": 108})])
    bypass(source, pd.DataFrame([host(2, 2.0, {"sm_count": 80}).to_row()]))  # merged before the rule
    report = merge_stores([source.path], tmp_path / "all")
    merged = MeasurementStore(tmp_path / "all").load()
    assert report.rows_added == 2 and merged["hardware_json"].nunique() == 1 and len(report.notes) == 1


# ---------------------------------------------------------------------------- 4./5. a corrupt part


def corrupt(store: MeasurementStore):
    bad = store.path / "parts" / "part-09999999999999999999-deadbeef.parquet"
    bad.write_bytes(b"PAR1 truncated")
    return bad


def test_a_corrupt_part_is_one_line_in_dataset_info_and_import(tmp_path, monkeypatch, capsys):
    store = store_of(tmp_path / "s", [gemm(m=1)])
    bad = corrupt(store)
    with pytest.raises(StoreError, match=bad.name):
        MeasurementStore(store.path).hardware_specs()
    code, out, err = run_main(monkeypatch, capsys, "dataset", "info", str(store.path))
    assert_one_line_error(code, out, err, "unreadable part file", bad.name, exit_code=1)
    csv = tmp_path / "sgemm_product.csv"
    csv.write_text("MWG,NWG,KWG,MDIMC,NDIMC,MDIMA,NDIMB,KWI,VWM,VWN,STRM,STRN,SA,SB,Run1 (ms),Run2 (ms),Run3 (ms),"
                   "Run4 (ms)\n16,16,16,8,8,8,8,2,1,1,0,0,0,0,115.26,115.87,118.55,115.8\n")
    code, out, err = run_main(monkeypatch, capsys, "import", "uci-sgemm", str(csv), "--into", str(store.path))
    assert_one_line_error(code, out, err, "unreadable part file", bad.name, exit_code=1)


def test_an_unreadable_source_is_named_and_the_others_merge(tmp_path, monkeypatch, capsys):
    a = store_of(tmp_path / "a", [gemm(m=1)])
    broken = store_of(tmp_path / "broken", [gemm(m=2)])
    bad = corrupt(broken)
    b = store_of(tmp_path / "b", [gemm(m=3)])
    code, out, err = run_main(monkeypatch, capsys, "dataset", "merge", str(a.path), str(broken.path), str(b.path),
                              "--into", str(tmp_path / "all"))
    assert_one_line_error(code, out, err, "1 of 3 store(s)", bad.name)
    assert "2 store(s) merged, 1 failed" in out and "failed:" in out
    assert sorted(MeasurementStore(tmp_path / "all").load()["workload.m"]) == [1, 3]


# ---------------------------------------------------------------------------- 6. the store's schema version


def set_manifest_version(store: MeasurementStore, version) -> None:
    manifest = store.path / "store.json"
    meta = json.loads(manifest.read_text())
    meta["schema_version"] = version
    manifest.write_text(json.dumps(meta))


def test_dataset_info_shows_the_stores_schema_version(tmp_path, monkeypatch, capsys):
    store = store_of(tmp_path / "s", [gemm(m=1)])
    set_manifest_version(store, 0)
    assert MeasurementStore(store.path).info()["schema_version"] == 0
    code, out, _ = run_main(monkeypatch, capsys, "dataset", "info", str(store.path), "--json")
    assert code == 0 and json.loads(out)["schema_version"] == 0


@pytest.mark.parametrize("version", ["one", 1.5, True])
def test_a_schema_version_that_is_no_whole_number_is_one_line(tmp_path, monkeypatch, capsys, version):
    store = store_of(tmp_path / "s", [gemm(m=1)])
    set_manifest_version(store, version)
    with pytest.raises(StoreError, match=r"`schema_version` must be a whole number"):
        MeasurementStore(store.path)
    code, out, err = run_main(monkeypatch, capsys, "dataset", "info", str(store.path))
    assert_one_line_error(code, out, err, "schema_version", repr(version), exit_code=1)


# ---------------------------------------------------------------------------- 7. a missing batch is a batch of 1


def test_the_shape_split_keeps_a_shape_with_and_without_b_on_one_side():
    rows = []
    for i in range(40):
        shape = {"m": 8 * (i % 10 + 1), "n": 16, "k": 32}
        workload = shape if i // 10 % 2 else {**shape, "b": 1}  # each shape recorded with and without b
        rows.append(gemm(m=shape["m"], workload={**workload, "dtype": "fp32", "row": i}).to_row())
    df = pd.DataFrame(rows)
    assert df["workload.b"].isna().sum() == 20
    shapes = df["workload.m"].to_numpy()
    for seed in range(5):
        train, test = make_split(df, "shape", test_size=0.3, seed=seed)
        assert not set(shapes[train]) & set(shapes[test]), seed
        assert len(np.unique(shapes[test])) >= 2


@pytest.fixture
def store(tmp_path) -> MeasurementStore:
    return MeasurementStore(tmp_path / "store", create=True)
