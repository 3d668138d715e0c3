"""MeasurementStore: append/load round trip, de-duplication, resume, compaction, and refusals."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from perfpred.datasets import SCHEMA_VERSION, Measurement, MeasurementStore
from perfpred.errors import InvalidInputError, StoreError

HW = "cpu-test-0123456789"


def gemm(m: int = 64, runtime_ms: float | None = 1.25, **overrides) -> Measurement:
    fields = dict(
        kind="gemm",
        workload={"b": 1, "m": m, "n": 32, "k": 16, "dtype": "fp32", "trans_a": False, "trans_b": True},
        config={"backend": "torch", "device": "cpu", "threads": 1, "cold_cache": False},
        hardware_id=HW,
        status="ok",
        runtime_ms=runtime_ms,
        raw_times_ms=[1.2, 1.25, 1.4] if runtime_ms is not None else [],
        n_runs=3 if runtime_ms is not None else None,
        min_ms=1.2 if runtime_ms is not None else None,
        load_avg_1m=0.5,
        ref_runtime_ms=0.31,
        metrics={"gflops": 12.5, "timing_rel_ci": 0.01},
        hardware={"hardware_id": HW, "peak_gflops": {"fp32": 50.0}},
        software={"torch": "2.x"},
        timestamp="2025-01-01T00:00:00+00:00",
    )
    fields.update(overrides)
    return Measurement(**fields)


@pytest.fixture
def store(tmp_path) -> MeasurementStore:
    return MeasurementStore(tmp_path / "store", create=True)


# ---------------------------------------------------------------------------- round trip


def test_append_load_round_trip_preserves_every_field(store):
    original = [gemm(m=64), gemm(m=128, runtime_ms=2.5)]
    assert store.append(original) == 2
    loaded = MeasurementStore(store.path).measurements()  # a fresh reader, not the writer's cache
    by_id = {m.measurement_id: m for m in loaded}
    assert set(by_id) == {m.measurement_id for m in original}
    for m in original:
        back = by_id[m.measurement_id]
        assert back.workload == m.workload
        assert back.config == m.config
        assert back.metrics == m.metrics
        assert back.raw_times_ms == m.raw_times_ms
        assert back.runtime_ms == m.runtime_ms
        assert back.n_runs == m.n_runs
        assert back.hardware == m.hardware
        assert back.software == m.software
        assert back.timestamp == m.timestamp
        assert back.ref_runtime_ms == m.ref_runtime_ms
        assert back == m  # dataclass equality over every field


def test_from_row_of_to_row_is_identity_without_a_store():
    m = gemm()
    assert Measurement.from_row(m.to_row()) == m


def test_failed_rows_round_trip_with_status_and_no_runtime(store):
    failed = gemm(m=4096, runtime_ms=None, status="oom", error="RuntimeError: CUDA out of memory", metrics={})
    store.append([failed, gemm(m=8)])
    back = {m.measurement_id: m for m in store.measurements()}[failed.measurement_id]
    assert back.status == "oom"
    assert back.runtime_ms is None
    assert back.raw_times_ms == []
    assert back.error == failed.error


CUDA_CONFIG = {"backend": "torch", "device": "cuda", "threads": None, "cold_cache": False}


def test_a_none_valued_key_keeps_its_measurement_id_after_reload(store):
    """A CUDA GEMM stores ``config.threads=None``; read back, it must rebuild to the same id (the resume key)."""
    gpu = gemm(m=96, config=CUDA_CONFIG)
    store.append([gpu])
    row = MeasurementStore(store.path).load().to_dict("records")[0]
    assert Measurement.from_row(row).measurement_id == row["measurement_id"] == gpu.measurement_id


def test_integer_values_keep_their_type_in_a_column_with_gaps(store):
    """CPU (threads=1) and CUDA (threads=None) rows in one table: threads must come back as int 1, not 1.0."""
    cpu = gemm(m=64)
    store.append([cpu, gemm(m=96, config=CUDA_CONFIG)])
    rows = {r["measurement_id"]: r for r in MeasurementStore(store.path).load().to_dict("records")}
    back = Measurement.from_row(rows[cpu.measurement_id])
    assert back.config == cpu.config
    assert back.measurement_id == cpu.measurement_id


def test_empty_store_loads_an_empty_frame(store):
    df = store.load()
    assert isinstance(df, pd.DataFrame)
    assert df.empty
    assert "measurement_id" in df.columns
    assert len(store) == 0
    assert store.measurements() == []
    assert store.info()["rows"] == 0


def test_load_filters_by_kind_and_status(store):
    store.append([gemm(m=1), gemm(m=2, runtime_ms=None, status="runtime_error", metrics={}, error="boom")])
    assert len(store.load(status="ok")) == 1
    assert len(store.load(status="runtime_error")) == 1
    assert len(store.load(kind="gemm")) == 2
    assert store.load(kind="serving").empty


# ---------------------------------------------------------------------------- de-dup and resume


def test_appending_the_same_id_twice_keeps_one_row(store):
    assert store.append([gemm(runtime_ms=1.0)]) == 1
    assert store.append([gemm(runtime_ms=9.0)]) == 0  # skipped: already stored
    df = MeasurementStore(store.path).load()
    assert len(df) == 1
    assert df["runtime_ms"].iloc[0] == 1.0


def test_duplicates_inside_one_append_keep_one_row(store):
    assert store.append([gemm(runtime_ms=1.0), gemm(runtime_ms=2.0)]) == 1
    assert len(store.load()) == 1


def test_replace_true_makes_the_newest_row_win(store):
    store.append([gemm(runtime_ms=1.0)])
    assert store.append([gemm(runtime_ms=9.0)], replace=True) == 1
    df = MeasurementStore(store.path).load()
    assert len(df) == 1
    assert df["runtime_ms"].iloc[0] == 9.0


def test_two_writers_racing_on_one_config_read_back_without_duplicates(tmp_path):
    path = tmp_path / "store"
    a = MeasurementStore(path, create=True)
    b = MeasurementStore(path)
    b.ids()  # b's view predates a's append
    a.append([gemm(runtime_ms=1.0)])
    b.append([gemm(runtime_ms=2.0)])
    df = MeasurementStore(path).load()
    assert len(df) == 1
    assert df["measurement_id"].is_unique


def test_contains_supports_resume(store):
    m1, m2 = gemm(m=1), gemm(m=2)
    store.append([m1])
    reopened = MeasurementStore(store.path)
    assert reopened.contains(m1.measurement_id)
    assert not reopened.contains(m2.measurement_id)
    reopened.append([m2])
    assert reopened.contains(m2.measurement_id)
    assert len(reopened) == 2


def test_stored_answers_per_id_in_order_after_reopening(store):
    m1, m2, m3 = gemm(m=1), gemm(m=2), gemm(m=3)
    store.append([m1, m3])
    reopened = MeasurementStore(store.path)
    ids = pd.Series([m2.measurement_id, m1.measurement_id, m3.measurement_id, m2.measurement_id])
    assert reopened.stored(ids).tolist() == [False, True, True, False]
    assert reopened.stored([]).tolist() == []


def test_append_frame_deduplicates_and_refuses_missing_columns(store):
    frame = pd.DataFrame([gemm(m=1).to_row(), gemm(m=1).to_row(), gemm(m=2).to_row()])
    assert store.append_frame(frame) == 2
    assert store.append_frame(frame) == 0
    with pytest.raises(StoreError, match="runtime_ms"):
        store.append_frame(frame.drop(columns=["runtime_ms"]))


# ---------------------------------------------------------------------------- upkeep


def test_compact_merges_parts_and_keeps_rows(store):
    for m in range(1, 6):
        store.append([gemm(m=m, runtime_ms=float(m))])
    store.append([gemm(m=3, runtime_ms=33.0)], replace=True)
    before = store.load().sort_values("measurement_id").reset_index(drop=True)
    assert len(store.part_files()) == 6
    assert store.compact() == 5
    assert len(store.part_files()) == 1
    after = MeasurementStore(store.path).load().sort_values("measurement_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(before, after, check_like=True)
    assert 33.0 in set(after["runtime_ms"])


def test_tidy_merges_the_newest_small_parts_and_leaves_a_big_old_part_alone(store):
    store.append([gemm(m=m, runtime_ms=float(m)) for m in range(1, 401)])
    big = store.part_files()[0]
    store.append([gemm(m=3, runtime_ms=33.0)], replace=True)  # newer than the big part: must win
    for m in range(401, 404):
        store.append([gemm(m=m, runtime_ms=float(m))])
    store.append([gemm(m=401, runtime_ms=41.0)], replace=True)  # newer than its own small part
    before = store.load().sort_values("measurement_id").reset_index(drop=True)
    assert store.tidy() == 5
    assert store.part_files()[0] == big and len(store.part_files()) == 2  # the big part is not rewritten
    assert store.tidy() == 0  # nothing small left to merge
    after = MeasurementStore(store.path).load().sort_values("measurement_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(before, after, check_like=True)
    assert {33.0, 41.0} <= set(after["runtime_ms"]) and not {3.0, 401.0} & set(after["runtime_ms"])
    assert len(store.ids()) == 403


def test_tidy_merges_parts_of_similar_size_into_one(store):
    for m in range(1, 6):
        store.append([gemm(m=m, runtime_ms=float(m))])
    assert store.tidy() == 5 and len(store.part_files()) == 1 and len(store.load()) == 5


def test_a_reader_that_listed_parts_just_before_a_compaction_still_reads_every_row(store, monkeypatch):
    for m in range(1, 6):
        store.append([gemm(m=m, runtime_ms=float(m))])
    reader = MeasurementStore(store.path)
    stale = reader.part_files()
    store.compact()  # another process merges the parts between the reader's listing and its reads
    listings = iter([stale])
    real = MeasurementStore.part_files
    monkeypatch.setattr(reader, "part_files", lambda: next(listings, None) or real(reader))
    assert sorted(reader.load()["runtime_ms"]) == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_leftover_tmp_files_are_ignored_by_readers(store):
    store.append([gemm(m=1)])
    leftover = store.path / "parts" / ".tmp-part-00000000000000000001-deadbeef.parquet"
    leftover.write_bytes(b"half a parquet file")
    assert len(MeasurementStore(store.path).load()) == 1


def test_info_counts_rows_and_columns(store):
    store.append([gemm(m=1), gemm(m=2, runtime_ms=None, status="oom", metrics={}, error="oom")])
    info = store.info()
    assert info["rows"] == 2
    assert info["status"] == {"ok": 1, "oom": 1}
    assert info["hardware_ids"] == {HW: 2}
    assert "workload.m" in info["workload_columns"]
    assert info["schema_version"] == SCHEMA_VERSION
    json.dumps(info, default=str)  # the CLI prints it as JSON


# ---------------------------------------------------------------------------- refusals


def test_schema_version_too_new_is_refused(store):
    manifest = store.path / "store.json"
    meta = json.loads(manifest.read_text())
    meta["schema_version"] = SCHEMA_VERSION + 1
    manifest.write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="schema_version") as info:
        MeasurementStore(store.path)
    assert str(SCHEMA_VERSION + 1) in str(info.value)
    assert "\n" not in str(info.value)


def test_a_folder_without_manifest_is_not_a_store(tmp_path):
    with pytest.raises(StoreError, match="no Measurement store"):
        MeasurementStore(tmp_path)


def test_create_refuses_a_non_empty_foreign_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="not a Measurement store"):
        MeasurementStore(tmp_path, create=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_foreign_manifest_is_refused(tmp_path):
    (tmp_path / "store.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(StoreError, match="not a perfpred store manifest"):
        MeasurementStore(tmp_path)


def test_an_unreadable_manifest_is_refused(tmp_path):
    (tmp_path / "store.json").write_text("{not json")
    with pytest.raises(StoreError, match="unreadable store manifest"):
        MeasurementStore(tmp_path)


def test_a_corrupt_part_file_raises_store_error_naming_it(store):
    store.append([gemm(m=1)])
    bad = store.path / "parts" / "part-99999999999999999999-c0de0bad.parquet"  # named as a part: read
    bad.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(StoreError) as info:
        MeasurementStore(store.path).load()
    assert bad.name in str(info.value)


def test_measurement_validation_refuses_bad_rows():
    with pytest.raises(InvalidInputError, match="status"):
        gemm(status="great")
    with pytest.raises(InvalidInputError, match="runtime_ms"):
        gemm(runtime_ms=-1.0)
    with pytest.raises(InvalidInputError, match="unavailable"):
        gemm(power_w=100.0)
