"""Leftovers of ``perfpred dataset ls`` and the held-out MAPE interval: one rule for writing
mixed-kind columns as text (store and dump), an empty listing's note on stderr, and no
bootstrap interval from too few held-out workloads."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import make_gemm_table
from test_cli import run_main

from perfpred.datasets import MeasurementStore, _listing, _store
from perfpred.models import train_model
from perfpred.models._training import MIN_BOOTSTRAP_UNITS, bootstrap_mape_interval

# ---------------------------------------------------------------------------- 1. one rule for mixed columns


def _mixed_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "int_str": pd.Series([1, "wide", None, 2], dtype=object),
        "bool_int": pd.Series([True, 1, None, 0], dtype=object),
        "int_float": pd.Series([1, 2.5, None, 3], dtype=object),
        "lists": pd.Series([[1.0, 2.0], np.array([3.0]), None, [4.0]], dtype=object),
        "str_missing": pd.Series(["a", 1.5, np.nan, pd.NA], dtype=object),
    })


def test_the_store_and_the_dump_share_one_helper_for_mixed_columns():
    assert _listing.strings_where_mixed is _store.strings_where_mixed


def test_mixed_kinds_become_text_and_one_kind_columns_keep_their_type(tmp_path):
    out = _store.strings_where_mixed(_mixed_frame())

    def text(col: str) -> list:
        return [None if pd.isna(v) else v for v in out[col]]

    assert text("int_str") == ["1", "wide", None, "2"]
    assert text("bool_int") == ["True", "1", None, "0"]  # Arrow takes neither as one type
    assert text("str_missing") == ["a", "1.5", None, None]  # missing stays missing, never "nan"/"<NA>"
    assert list(out["int_float"])[:2] == [1, 2.5]  # one kind (numbers): left as it is

    path = tmp_path / "rows.parquet"
    _listing.dump_rows(_mixed_frame(), path)
    table = pq.read_table(path)
    back = table.to_pydict()
    assert back["bool_int"] == ["True", "1", None, "0"]
    assert back["int_float"] == [1.0, 2.5, None, 3.0]  # numbers stay numbers, not '2.5'
    assert back["lists"] == [[1.0, 2.0], [3.0], None, [4.0]]  # lists stay lists, not '[3.]'
    assert back["str_missing"] == ["a", "1.5", None, None]


def test_a_store_round_trip_is_unchanged_by_the_shared_helper(tmp_path):
    store = MeasurementStore(tmp_path / "store", create=True)
    table = make_gemm_table(12, seed=3)
    store.append_frame(table)
    loaded = store.load()
    assert len(loaded) == 12
    assert loaded["workload.dtype"].tolist() == table["workload.dtype"].tolist()
    assert loaded["config.cold_cache"].tolist() == table["config.cold_cache"].tolist()


# ---------------------------------------------------------------------------- 2. an empty listing's note


@pytest.fixture
def ok_store(tmp_path):
    store = MeasurementStore(tmp_path / "store", create=True)
    store.append_frame(make_gemm_table(6, seed=2))
    return tmp_path / "store"


@pytest.mark.parametrize("extra", [[], ["--kind", "gemm"]], ids=["status", "kind+status"])
def test_an_empty_listing_says_so_on_stderr_only(ok_store, monkeypatch, capsys, extra):
    code, out, err = run_main(monkeypatch, capsys, "dataset", "ls", str(ok_store), "--status", "oom", *extra)
    assert code == 0 and out == "", out
    assert "no measurements match" in err
    code, out, err = run_main(monkeypatch, capsys, "dataset", "ls", str(ok_store), "--status", "oom", "--json", *extra)
    assert code == 0 and json.loads(out) == []
    assert "no measurements match" in err
    code, out, err = run_main(monkeypatch, capsys, "dataset", "ls", str(ok_store), "--status", "oom",
                              "--columns", "runtime_ms", *extra)
    assert code == 0 and out == ""


# ---------------------------------------------------------------------------- 3. the bootstrap interval


def test_few_held_out_workloads_give_no_interval_not_a_narrow_one():
    rng = np.random.default_rng(0)
    # 4 workloads of 50 rows each, which err together.
    clustered = np.repeat(rng.exponential(10, size=4), 50)
    workloads = np.repeat(np.arange(4), 50)
    low, high = bootstrap_mape_interval([(clustered, workloads)], whole_units=True)
    assert np.isnan(low) and np.isnan(high)
    # Units that are not workloads (single rows, a configuration's repeats) still fall back to rows.
    low, high = bootstrap_mape_interval([(clustered, workloads)])
    assert low < clustered.mean() < high
    # Enough workloads: resampled by workload.
    many = np.repeat(rng.exponential(10, size=MIN_BOOTSTRAP_UNITS), 50)
    low, high = bootstrap_mape_interval([(many, np.repeat(np.arange(MIN_BOOTSTRAP_UNITS), 50))], whole_units=True)
    assert low < many.mean() < high


def test_a_small_shape_split_reports_no_interval_and_prints_none(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PERFPRED_MLFLOW_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    table = make_gemm_table(20, seed=4)  # 20 workloads: 4 held out
    result = train_model(table, regressor="xgb", split="shape", source="small")
    holdout = result.holdout
    assert holdout["n_test"] == 4 and np.isfinite(holdout["mape_pct"])
    assert "mape_pct_ci90_low" not in holdout and "mape_pct_ci90_high" not in holdout

    code, out, err = run_main(monkeypatch, capsys, "models", "ls", "--json")
    assert code == 0, err
    record = next(r for r in json.loads(out) if r["run_id"] == result.run_id)
    assert record["holdout_mape_ci90"] is None and record["n_test"] == 4
    code, out, err = run_main(monkeypatch, capsys, "models", "ls")
    assert code == 0, err
    assert "nan" not in out.lower()

    # A random split of the same rows resamples single rows, as before: an interval.
    assert "mape_pct_ci90_low" in train_model(table, regressor="xgb", split="random", log_to_mlflow=False).holdout
