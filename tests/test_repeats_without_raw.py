"""Rows without raw replicates (Vidur, NeuSight publish only statistics): a repeat is told from a
duplicate by all its statistics, not by its median alone."""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest

from perfpred.collect.importers import run_import
from perfpred.datasets import MeasurementStore
from perfpred.errors import DatasetNotFoundError
from perfpred.settings import datasets_dir

PHI2_MLP = Path("vidur") / "compute" / "a100" / "microsoft" / "phi-2" / "mlp.csv.gz"


@pytest.fixture(scope="module")
def phi2_slice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        src = datasets_dir() / PHI2_MLP
    except DatasetNotFoundError as exc:
        pytest.skip(str(exc))
    with gzip.open(src, "rt") as f:
        lines = [next(f) for _ in range(21)]
    path = tmp_path_factory.mktemp("vidur") / "mlp.csv"
    path.write_text("".join(lines))
    return path


def test_a_vidur_row_with_the_same_median_but_another_mean_is_kept_as_a_repeat(phi2_slice: Path,
                                                                                 tmp_path: Path) -> None:
    raw = pd.read_csv(phi2_slice)
    # Lines 2 and 3 of this file: one num_tokens, one input_layernorm min/median/max, another mean.
    norm = [c for c in raw.columns if c.startswith("time_stats.input_layernorm.")]
    first, second = raw.iloc[0], raw.iloc[1]
    assert first["num_tokens"] == second["num_tokens"]
    assert first["time_stats.input_layernorm.median"] == second["time_stats.input_layernorm.median"]
    assert first["time_stats.input_layernorm.mean"] != second["time_stats.input_layernorm.mean"]

    store = MeasurementStore(tmp_path / "store", create=True)
    report = run_import("vidur", [str(phi2_slice)], store, device="a100", model="phi-2")
    table = store.load()
    norms = table[(table["kind"] == "operator") & (table["workload.num_tokens"] == first["num_tokens"])
                  & (table["workload.op"] == "input_layernorm")]
    means = sorted(norms["mean_ms"].round(6))
    assert {round(first["time_stats.input_layernorm.mean"], 6), round(second["time_stats.input_layernorm.mean"], 6)} \
        <= set(means), (norm, means)
    # Importing the same file again adds nothing: each record is recognised, repeats too.
    again = run_import("vidur", [str(phi2_slice)], store, device="a100", model="phi-2")
    assert again.rows_imported == 0 and len(store.load()) == len(table)
    assert report.rows_imported == len(table) and report.rows_repeat >= 1
