"""Usability of the CLI as a QA user met it: machine-readable listings, one spelling per option,
exit codes that tell bad input (2) from a failed environment (1), and outputs that say what
their numbers are."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pandas as pd
import pytest
from conftest import make_gemm_table
from test_cli import run_main
from typer.testing import CliRunner

from perfpred.cli import app
from perfpred.datasets import Measurement, MeasurementStore
from perfpred.errors import (
    DatasetNotFoundError,
    DeviceNotFoundError,
    InvalidInputError,
    MissingDependencyError,
    ModelNotFoundError,
    NotAStoreError,
    StoreError,
    TrackingError,
)

runner = CliRunner()
WIDE = {"COLUMNS": "200", "TERMINAL_WIDTH": "200"}


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def gemm_store(tmp_path_factory) -> Path:
    """30 GEMM rows on one hardware id, 30 on another (more than the listing's default 20)."""
    store = tmp_path_factory.mktemp("usability") / "gemm"
    table = make_gemm_table(60, seed=5, hardware_ids=("cpu-synthetic-a-0000000001", "cpu-synthetic-b-0000000002"))
    MeasurementStore(store, create=True).append_frame(table)
    return store


def _serving_rows(n: int) -> list[Measurement]:
    return [Measurement(kind="serving", workload={"model": "llm-a", "task": "chat"},
                        config={"max_num_seqs": 8 * (i + 1), "num_gpus": 1}, hardware_id="gpu-test", status="ok",
                        runtime_ms=None, power_w=400.0 + i, power_source="recorded",
                        metrics={"output_tokens_per_s": 500.0 + 100 * i, "itl_p50_ms": 10.0 + i}, source="test")
            for i in range(n)]


@pytest.fixture(scope="module")
def serving_store(tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("usability") / "serving"
    MeasurementStore(store, create=True).append(_serving_rows(4))
    return store


# ---------------------------------------------------------------------------- 1. dataset ls: machine-readable


def test_dataset_ls_json_prints_the_listed_rows_as_records(monkeypatch, capsys, gemm_store):
    code, out, err = run_main(monkeypatch, capsys, "dataset", "ls", str(gemm_store), "--json", "--limit", "5",
                              "--sort", "runtime_ms")
    assert code == 0, err
    rows = json.loads(out)
    assert isinstance(rows, list) and len(rows) == 5
    assert {"workload.m", "runtime_ms", "hardware_id"} <= set(rows[0])
    times = [r["runtime_ms"] for r in rows]
    assert times == sorted(times, reverse=True)


def test_dataset_ls_limit_0_lists_every_row_and_says_so_in_help(monkeypatch, capsys, gemm_store):
    code, out, err = run_main(monkeypatch, capsys, "dataset", "ls", str(gemm_store), "--json", "--limit", "0")
    assert code == 0, err
    assert len(json.loads(out)) == 60
    help_text = " ".join(runner.invoke(app, ["dataset", "ls", "--help"], env=WIDE).output.split())
    assert "0 shows every matching row" in help_text


def test_dataset_ls_columns_picks_columns_by_full_or_shown_name(monkeypatch, capsys, gemm_store):
    code, out, err = run_main(monkeypatch, capsys, "dataset", "ls", str(gemm_store), "--json",
                              "--columns", "m,workload.n,runtime_ms")
    assert code == 0, err
    assert list(json.loads(out)[0]) == ["workload.m", "workload.n", "runtime_ms"]
    code, out, err = run_main(monkeypatch, capsys, "dataset", "ls", str(gemm_store), "--columns", "m,colour")
    assert code == 2 and _lines(err) == [_lines(err)[0]] and "--columns" in err and "'colour'" in err


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".json"])
def test_dataset_ls_output_writes_every_matching_row(monkeypatch, capsys, gemm_store, tmp_path, suffix):
    target = tmp_path / f"rows{suffix}"
    code, out, err = run_main(monkeypatch, capsys, "dataset", "ls", str(gemm_store), "--output", str(target),
                              "--limit", "3")  # a dump is not limited
    assert code == 0, err
    frame = {".csv": pd.read_csv, ".parquet": pd.read_parquet,
             ".json": lambda p: pd.DataFrame(json.loads(Path(p).read_text()))}[suffix](target)
    assert len(frame) == 60 and {"measurement_id", "workload.m", "runtime_ms"} <= set(frame.columns)
    assert "wrote 60 row(s)" in out
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(target).st_mode & 0o777 == 0o666 & ~umask  # as open() makes a file, not mkstemp's 0600


def test_dataset_ls_output_refuses_another_suffix_in_one_line(monkeypatch, capsys, gemm_store, tmp_path):
    code, _out, err = run_main(monkeypatch, capsys, "dataset", "ls", str(gemm_store), "--output",
                              str(tmp_path / "rows.txt"))
    lines = _lines(err)
    assert code == 2 and len(lines) == 1 and ".csv, .parquet or .json" in lines[0]
    assert not (tmp_path / "rows.txt").exists()


def test_dataset_ls_shows_a_serving_rows_key_metrics(serving_store):
    result = runner.invoke(app, ["dataset", "ls", str(serving_store)], env=WIDE)
    assert result.exit_code == 0, result.output
    header = next(line for line in result.output.splitlines() if "max_num_seqs" in line)
    assert "output_tokens_per_s" in header and "itl_p50_ms" in header


def test_dataset_ls_of_a_kind_the_store_lacks_is_an_empty_answer(monkeypatch, capsys, serving_store):
    code, out, err = run_main(monkeypatch, capsys, "dataset", "ls", str(serving_store), "--kind", "gemm")
    assert code == 0 and out == ""
    assert len(_lines(err)) == 1 and "no rows match" in err and "serving (4 rows)" in err
    code, out, err = run_main(monkeypatch, capsys, "dataset", "ls", str(serving_store), "--kind", "gemm", "--json")
    assert code == 0 and json.loads(out) == []


# ---------------------------------------------------------------------------- 2, 4, 6, 7. train / evaluate


def test_evaluate_takes_hardware_id_as_predict_spells_it(monkeypatch, capsys, gemm_store):
    code, out, err = run_main(monkeypatch, capsys, "evaluate", "--store", str(gemm_store), "--models", "roofline",
                              "--seeds", "0", "--split", "random", "--hardware-id", "cpu-synthetic-b-0000000002")
    assert code == 0, err
    assert "30 rows" in out


def test_train_names_its_target_and_rows_prints_integers_and_no_mlflow_chatter(monkeypatch, capsys, tmp_path):
    import perfpred.models as models

    store = tmp_path / "store"
    st = MeasurementStore(store, create=True)
    st.append_frame(make_gemm_table(40, seed=6, hardware_ids=("cpu-synthetic-a-0000000001",
                                                               "cpu-synthetic-b-0000000002")))
    st.append([Measurement(kind="gemm", workload={"b": 1, "m": 8 + i, "n": 8, "k": 8, "dtype": "fp32",
                                                  "trans_a": False, "trans_b": False},
                           config={"backend": "torch", "device": "cpu", "threads": 1, "cold_cache": False},
                           hardware_id="cpu-synthetic-a-0000000001", status="timeout", source="synthetic")
               for i in range(3)])
    real = models.train_model

    def train_model(*args, **kwargs):  # the counts of a 21,925-row store, as the fits average them
        result = real(*args, **kwargs)
        result.holdout.update(n=4385.0, n_train=17540.0)
        return result

    monkeypatch.setattr(models, "train_model", train_model)
    code, out, err = run_main(monkeypatch, capsys, "train", "--store", str(store), "--model", "roofline",
                              "--hardware-id", "cpu-synthetic-a-0000000001", "--name", "usability-model")
    assert code == 0, err
    text = " ".join(out.split())
    assert "roofline predicting runtime_ms from 20 of 23 'gemm' rows (left out: 3 status not ok (timeout 3))" in text
    assert "17540" in text and "1.754e+04" not in text and "4385" in text
    assert "Successfully registered" not in err and "Created version" not in err
    assert "registered as usability-model" in text


def test_left_out_rows_say_why_serving_rows_were_not_trained_on():
    from perfpred.models._training import left_out_rows

    table = pd.DataFrame([m.to_row() for m in _serving_rows(4)])
    with_time = pd.DataFrame([{**row, "runtime_ms": 100.0 + i} for i, row in enumerate(table.to_dict("records"))])
    df = pd.concat([table, with_time.assign(measurement_id=[f"x{i}" for i in range(4)])], ignore_index=True)
    assert left_out_rows(df, kind="serving", target="runtime_ms", max_ref_drift=None, n_used=4) == (
        8, {"no runtime_ms value": 4})


def test_help_texts_list_every_split_and_no_machine_specific_flush():
    train_help = " ".join(runner.invoke(app, ["train", "--help"], env=WIDE).output.split())
    assert "hardware (leave one hardware id out)" in train_help and "--hardware-id" in train_help
    gemm_help = " ".join(runner.invoke(app, ["collect", "gemm", "--help"], env=WIDE).output.split())
    assert "480 MiB" not in gemm_help and "on this VM" not in gemm_help
    assert "twice the largest last-level cache instance the timed CPUs reach" in gemm_help


# ---------------------------------------------------------------------------- 3. exit codes


def test_error_classes_carry_their_exit_code():
    assert InvalidInputError("x").exit_code == 2
    assert ModelNotFoundError("x").exit_code == 2
    assert NotAStoreError("x").exit_code == 2 and isinstance(NotAStoreError("x"), StoreError)
    for cls in (TrackingError, MissingDependencyError, StoreError, DatasetNotFoundError, DeviceNotFoundError):
        assert cls("x").exit_code == 1, cls


def test_top_level_help_lists_the_exit_codes():
    text = " ".join(runner.invoke(app, ["--help"], env=WIDE).output.split())
    assert "Exit codes: 0 success" in text and "1 the environment or a run failed" in text
    assert "2 bad input or usage" in text


def test_an_unreachable_tracking_server_exits_1(monkeypatch, capsys, gemm_store):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("PERFPRED_MLFLOW_URI", f"http://127.0.0.1:{port}")
    code, _out, err = run_main(monkeypatch, capsys, "train", "--store", str(gemm_store), "--model", "roofline")
    assert code == 1 and len(_lines(err)) == 1 and "connection refused" in err, err


def test_a_missing_device_exits_1(monkeypatch, capsys):
    code, _out, err = run_main(monkeypatch, capsys, "env", "--device", "cuda:97")
    assert code == 1 and len(_lines(err)) == 1 and "'cuda:97' is not present" in err, err


def test_an_unreadable_store_exits_1_and_a_missing_one_2(monkeypatch, capsys, tmp_path):
    store = tmp_path / "broken"
    MeasurementStore(store, create=True).append_frame(make_gemm_table(3))
    (store / "store.json").write_text("{not json")
    code, _out, err = run_main(monkeypatch, capsys, "dataset", "info", str(store))
    assert code == 1 and "unreadable store manifest" in err, err
    code, _out, err = run_main(monkeypatch, capsys, "dataset", "info", str(tmp_path / "nothing"))
    assert code == 2 and "no Measurement store" in err, err


def test_a_missing_dependency_exits_1(monkeypatch, capsys, gemm_store):
    def info(self):
        raise MissingDependencyError("this needs pyarrow: pip install pyarrow")

    monkeypatch.setattr(MeasurementStore, "info", info)
    code, _out, err = run_main(monkeypatch, capsys, "dataset", "info", str(gemm_store))
    assert code == 1 and "pip install pyarrow" in err


# ---------------------------------------------------------------------------- 5. demo, 6. import


def test_demo_says_what_its_predictor_error_is(monkeypatch, capsys, tmp_path):
    import perfpred.tuner._demo as demo_module
    from perfpred.tuner._demo import DemoResult

    table = pd.DataFrame([{"strategy": "default", "confirmed_ms": 1.0, "status": "ok", "speedup_vs_default": 1.0,
                           "config": json.dumps({"block_m": 32})}])
    result = DemoResult(table, 319.8, 16, 59.0, tmp_path, {}, n_predicted=4, fit_rows=(4, 4), median_ape_pct=65.0)
    monkeypatch.setattr(demo_module, "run_demo", lambda **kwargs: result)
    code, out, err = run_main(monkeypatch, capsys, "demo", "--quick", "--output", str(tmp_path / "demo"))
    assert code == 0, err
    text = " ".join(out.split())
    assert "predictor error on the 4 configs it chose" in text and "fitted on the 4 configs measured before it" in text
    assert "MAPE 319.8%, median 65.0%" in text and "rough guide" in text
    full = DemoResult(table, 26.8, 40, 63.0, tmp_path, {}, n_predicted=14, fit_rows=(6, 18), median_ape_pct=20.0)
    assert "rough guide" not in full.predictor_error_text()


def test_import_says_which_stored_kinds_no_train_reads(monkeypatch, capsys, tmp_path, data):
    files = [data / "vidur" / "compute" / "a40" / "microsoft" / "phi-2" / "mlp.csv.gz",
             data / "vidur" / "network" / "a40_pairwise_nvlink" / "send_recv.csv.gz"]
    if not all(f.is_file() for f in files):
        pytest.skip("the Vidur phi-2 / send_recv files are not in PERFPRED_DATASETS")
    code, out, err = run_main(monkeypatch, capsys, "import", "vidur", *map(str, files), "--into", str(tmp_path / "v"))
    assert code == 0, err
    text = " ".join(out.split())
    assert "by kind: collective=1988, gemm=1044, operator=1305" in text
    assert ("train, evaluate and predict take gemm, kernel, serving rows; the 1988 collective and 1305 operator "
            "rows stored here are for `perfpred dataset ls/info` only") in text


def test_registering_a_model_leaves_mlflow_silent(capsys):
    import numpy as np
    from sklearn.linear_model import LinearRegression

    from perfpred.models._tracking import log_training_run

    model = LinearRegression().fit(np.arange(6.0).reshape(-1, 1), np.arange(6.0))
    run_id = log_training_run(model, params={}, metrics={}, tags={}, registered_name="usability-quiet")
    err = capsys.readouterr().err
    assert len(run_id) == 32 and "Successfully registered" not in err and "Created version" not in err, err
    from mlflow.utils.logging_utils import eprint

    eprint("mlflow speaks again")  # silenced only while registering
    assert "mlflow speaks again" in capsys.readouterr().err


def test_dataset_ls_of_more_rows_than_a_table_shows_prints_csv(monkeypatch, capsys, gemm_store):
    """--limit 0 on a big store drew one rich table of every row (minutes at 1e6 rows): past
    MAX_TABLE_ROWS the rows print as CSV, every one, with a note on stderr."""
    import io

    import perfpred.cli

    monkeypatch.setattr(perfpred.cli, "MAX_TABLE_ROWS", 50)
    code, out, err = run_main(monkeypatch, capsys, "dataset", "ls", str(gemm_store), "--limit", "0")
    assert code == 0, err
    frame = pd.read_csv(io.StringIO(out))
    assert len(frame) == 60 and "runtime_ms" in frame.columns
    assert "60 rows are more than a table shows well (50)" in " ".join(err.split())
    code, out, err = run_main(monkeypatch, capsys, "dataset", "ls", str(gemm_store), "--limit", "40")
    assert code == 0 and ("┃" in out or "│" in out), out  # 40 rows: still a table
