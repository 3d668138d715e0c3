"""Merging stores (``perfpred dataset merge``): shards from several hosts into one, idempotent,
re-measurements kept as repeats, a source that cannot go in named and left out."""

from __future__ import annotations

import pandas as pd
import pytest

from perfpred.datasets import Measurement, MeasurementStore, merge_stores
from perfpred.errors import InvalidInputError
from tests.test_cli import assert_one_line_error, invoke, run_main
from tests.test_store import gemm


def shard(path, hardware_id: str, sizes=(64, 128, 256), scale: float = 1.0) -> MeasurementStore:
    store = MeasurementStore(path, create=True)
    runtimes = {m: 0.01 * m * scale for m in sizes}
    store.append([gemm(m=m, runtime_ms=t, raw_times_ms=[0.98 * t, t, 1.05 * t], min_ms=0.98 * t,
                       hardware_id=hardware_id, hardware={"hardware_id": hardware_id, "peak_gflops": {"fp32": 50.0}})
                  for m, t in runtimes.items()])
    return store


def serving_row(hardware_id: str, seqs: int) -> Measurement:
    return Measurement(kind="serving", workload={"model": "tiny", "concurrency": 8},
                       config={"engine": "llama-server", "parallel": seqs}, hardware_id=hardware_id, status="ok",
                       metrics={"output_tokens_per_s": 100.0 * seqs})


def test_shards_of_two_hosts_merge_into_one_store_and_a_second_merge_adds_nothing(tmp_path):
    a, b = shard(tmp_path / "a", "cpu-host-a"), shard(tmp_path / "b", "cpu-host-b", sizes=(64, 512))
    report = merge_stores([a.path, b.path], tmp_path / "all")
    assert (report.rows_read, report.rows_added, report.rows_duplicate, report.rows_repeat) == (5, 5, 0, 0)
    merged = MeasurementStore(tmp_path / "all").load()
    expected = pd.concat([a.load(), b.load()]).set_index("measurement_id").sort_index()
    got = merged.set_index("measurement_id").sort_index()
    assert list(got.index) == list(expected.index)
    for column in ("runtime_ms", "workload.m", "hardware_id", "metric.gflops"):
        assert got[column].tolist() == expected[column].tolist(), column
    assert merged["workload.m"].map(type).eq(int).all()  # integers stay integers
    again = merge_stores([a.path, b.path], tmp_path / "all")
    assert (again.rows_added, again.rows_duplicate) == (0, 5)
    assert len(MeasurementStore(tmp_path / "all")) == 5


def test_a_configuration_re_measured_elsewhere_is_kept_as_a_repeat(tmp_path):
    a = shard(tmp_path / "a", "cpu-host-a")
    rerun = shard(tmp_path / "rerun", "cpu-host-a", sizes=(64,), scale=1.5)  # same id, other values
    merge_stores([a.path], tmp_path / "all")
    report = merge_stores([rerun.path], tmp_path / "all")
    assert (report.rows_added, report.rows_repeat) == (1, 1)
    ids = MeasurementStore(tmp_path / "all").load()["measurement_id"]
    plain = rerun.load()["measurement_id"].iloc[0]
    assert plain in set(ids) and any(i.startswith(plain + "-") for i in ids)
    assert merge_stores([rerun.path], tmp_path / "all").rows_added == 0  # that very repeat is known now


def test_serving_rows_without_runtimes_merge(tmp_path):
    src = MeasurementStore(tmp_path / "s", create=True)
    src.append([serving_row("cpu-host-a", 1), serving_row("cpu-host-a", 8)])
    assert merge_stores(tmp_path / "s", tmp_path / "all").rows_added == 2
    assert sorted(MeasurementStore(tmp_path / "all").load()["metric.output_tokens_per_s"]) == [100.0, 800.0]


def test_a_source_with_a_clashing_column_type_is_named_and_the_others_merge(tmp_path, monkeypatch, capsys):
    shard(tmp_path / "a", "cpu-host-a")
    odd = MeasurementStore(tmp_path / "odd", create=True)
    odd.append([gemm(m=64, hardware_id="cpu-host-c", config={"backend": "torch", "device": "cpu", "threads": "all",
                                                              "cold_cache": False})])
    shard(tmp_path / "b", "cpu-host-b", sizes=(1024,))
    code, out, err = run_main(monkeypatch, capsys, "dataset", "merge", str(tmp_path / "a"), str(tmp_path / "odd"),
                              str(tmp_path / "b"), "--into", str(tmp_path / "all"))
    assert_one_line_error(code, out, err, "1 of 3 store(s)", "config.threads")
    assert "4 added" in out
    assert set(MeasurementStore(tmp_path / "all").load()["hardware_id"]) == {"cpu-host-a", "cpu-host-b"}


def test_bad_sources_are_refused_before_anything_is_written(tmp_path, monkeypatch, capsys):
    shard(tmp_path / "a", "cpu-host-a")
    with pytest.raises(InvalidInputError, match="no Measurement store there"):
        merge_stores([tmp_path / "a", tmp_path / "missing"], tmp_path / "all")
    assert not (tmp_path / "all").exists()
    code, out, err = run_main(monkeypatch, capsys, "dataset", "merge", str(tmp_path / "a"), "--into",
                              str(tmp_path / "a"))
    assert_one_line_error(code, out, err, "must not be the destination")
    with pytest.raises(InvalidInputError, match="at least one source"):
        merge_stores([], tmp_path / "all")


def test_the_cli_merges_and_summarises(tmp_path):
    shard(tmp_path / "a", "cpu-host-a")
    shard(tmp_path / "b", "cpu-host-b")
    result = invoke("dataset", "merge", str(tmp_path / "a"), str(tmp_path / "b"), "--into", str(tmp_path / "all"))
    assert "6 added" in result.output and "0 duplicate" in result.output
    assert len(MeasurementStore(tmp_path / "all")) == 6


def test_a_store_merged_from_the_same_shards_adds_nothing(tmp_path):
    """Shards of one hardware share ids with other values: merged in either order, and the two
    merged stores merged into each other, every distinct measurement is there exactly once."""
    a = shard(tmp_path / "a", "cpu-host-a")
    b = shard(tmp_path / "b", "cpu-host-a", scale=1.3)  # the same configs, measured again
    assert merge_stores([a.path, b.path], tmp_path / "ab").rows_repeat == 3
    merge_stores([b.path, a.path], tmp_path / "ba")
    report = merge_stores([tmp_path / "ba"], tmp_path / "ab")
    assert (report.rows_added, report.rows_duplicate) == (0, 6)
    merged = MeasurementStore(tmp_path / "ab").load()
    assert len(merged) == 6 and merged["runtime_ms"].nunique() == 6
    with pytest.raises(InvalidInputError, match="given once"):
        merge_stores([a.path, tmp_path / "a" / "."], tmp_path / "x")


def _merge_into(source: str, dest: str, barrier) -> None:
    barrier.wait()
    merge_stores([source], dest)


def test_two_merges_at_once_lose_nothing(tmp_path):
    import multiprocessing as mp

    a = shard(tmp_path / "a", "cpu-host-a", sizes=tuple(range(16, 16 * 21, 16)))
    b = shard(tmp_path / "b", "cpu-host-a", sizes=tuple(range(16, 16 * 21, 16)), scale=1.3)
    MeasurementStore(tmp_path / "all", create=True)
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    workers = [ctx.Process(target=_merge_into, args=(str(s.path), str(tmp_path / "all"), barrier)) for s in (a, b)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
        assert w.exitcode == 0
    merged = MeasurementStore(tmp_path / "all").load()
    pairs = set(zip(merged["workload.m"], merged["runtime_ms"], strict=True))
    assert len(merged) == len(pairs) == 40  # both hosts' measurements, once each


def _append_many(path: str, start: int, barrier) -> None:
    store = MeasurementStore(path)
    barrier.wait()
    for m in range(start, start + 30):
        store.append([gemm(m=m, runtime_ms=0.01 * m)])


def _compact_many(path: str, barrier) -> None:
    store = MeasurementStore(path)
    barrier.wait()
    for _ in range(30):
        store.compact()


def test_compacting_while_another_process_appends_loses_nothing(tmp_path):
    """compact used to delete another writer's temporary part mid-write (a traceback, a lost row)."""
    import multiprocessing as mp

    MeasurementStore(tmp_path / "s", create=True).append([gemm(m=1)])
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(3)
    workers = [ctx.Process(target=_append_many, args=(str(tmp_path / "s"), 100, barrier)),
               ctx.Process(target=_append_many, args=(str(tmp_path / "s"), 200, barrier)),
               ctx.Process(target=_compact_many, args=(str(tmp_path / "s"), barrier))]
    for w in workers:
        w.start()
    for w in workers:
        w.join(180)
        assert w.exitcode == 0
    assert len(MeasurementStore(tmp_path / "s").load()) == 61
    assert not list((tmp_path / "s" / "parts").glob(".tmp-*"))


def test_a_writer_does_not_overwrite_a_row_another_process_stored_after_it_last_looked(tmp_path):
    mine, theirs = MeasurementStore(tmp_path / "s", create=True), None
    assert not mine.contains(gemm(m=7).measurement_id)  # the id cache is read now
    theirs = MeasurementStore(tmp_path / "s")
    theirs.append([gemm(m=7, runtime_ms=0.5, raw_times_ms=[0.5], min_ms=0.5)])
    assert mine.append([gemm(m=7, runtime_ms=0.9, raw_times_ms=[0.9], min_ms=0.9)]) == 0  # stored meanwhile
    assert MeasurementStore(tmp_path / "s").load()["runtime_ms"].tolist() == [0.5]
