"""Runtimes of the same configs recorded on other hardware, as features of a new one.

A tuning space's runtimes on a new GPU track those on GPUs already measured (Kernel Tuner's
convolution space: Spearman 0.84-0.92 between its three NVIDIA GPUs), so a model of the new
GPU can learn a correction of theirs instead of the whole space from its own rows.
:class:`ReferenceTimes` holds one log2 time per (config, reference hardware) and turns rows
into ``ref_log2_<target>__<hardware_id>`` columns, plus their mean and the share of references
that never ran the config. Its state comes from the reference recordings only, never from the
rows a model is trained or scored on.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from perfpred.errors import InvalidInputError

KEY_PREFIXES = ("config.", "workload.")


def reference_key_columns(rows: pd.DataFrame, reference: pd.DataFrame) -> list[str]:
    """The ``config.*`` / ``workload.*`` columns both tables have: what names a config."""
    keys = sorted(c for c in rows.columns if c.startswith(KEY_PREFIXES) and c in reference.columns)
    if not any(c.startswith("config.") for c in keys):
        raise InvalidInputError("reference times need 'config.*' columns in both the rows and the reference, "
                                f"but the shared key columns are {keys}")
    return keys


def config_keys(rows: pd.DataFrame, key_columns: list[str]) -> pd.Index:
    """One text key per row, equal for equal configs whatever the columns' dtypes (1 == 1.0)."""
    parts = [_key_text(rows[column]) if column in rows else np.full(len(rows), "<na>")
             for column in key_columns]
    return pd.Index(["|".join(p) for p in zip(*parts, strict=True)] if parts else [""] * len(rows))


def _key_text(values: pd.Series) -> np.ndarray:
    """``config_keys``' text of one column: numbers as ``repr(float)``, other values as ``str``,
    missing as ``<na>``; worked out once per distinct value (a 36k-row recording has a few
    dozen), not once per cell."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    distinct = pd.Series(uniques, dtype=values.dtype if len(uniques) else object)
    numbers = pd.to_numeric(distinct, errors="coerce").astype(float)
    text = [repr(float(n)) if not np.isnan(n) else str(v) for v, n in zip(distinct, numbers, strict=True)]
    return np.array([*text, "<na>"], dtype=object)[codes]  # code -1 (missing) takes the last


@dataclass(frozen=True)
class ReferenceTimes:
    """log2 of ``target`` per config (rows) and reference hardware id (columns)."""

    log2_times: pd.DataFrame
    key_columns: list[str]
    target: str = "runtime_ms"

    @classmethod
    def from_measurements(cls, reference: pd.DataFrame, key_columns: list[str], target: str = "runtime_ms",
                          exclude_hardware: Iterable[str] = ()) -> ReferenceTimes:
        """From Measurement rows of other hardware; rows without a finite positive target (failed
        configs) are skipped, replicates of a config are reduced to their median.

        ``exclude_hardware``: the hardware the model is trained on; a reference naming it would
        hand the model its own targets as a feature, so that is an error.
        """
        for column in ("hardware_id", target):
            if column not in reference:
                raise InvalidInputError(f"the reference table needs a '{column}' column, but has none")
        _refuse_shared_hardware(reference["hardware_id"].astype(str), exclude_hardware)
        values = pd.to_numeric(reference[target], errors="coerce").to_numpy(dtype=float)
        ok = np.isfinite(values) & (values > 0)
        if not ok.any():
            raise InvalidInputError(f"the reference table has no row with a finite positive '{target}'")
        rows = reference[ok]
        frame = pd.DataFrame({"key": config_keys(rows, key_columns), "hardware_id": rows["hardware_id"].astype(str),
                              "log2": np.log2(values[ok])})
        table = frame.groupby(["key", "hardware_id"])["log2"].median().unstack("hardware_id").sort_index(axis=1)
        return cls(table, list(key_columns), target)

    @classmethod
    def for_rows(cls, reference: pd.DataFrame, rows: pd.DataFrame, target: str = "runtime_ms") -> ReferenceTimes:
        """The lookup a model trained on ``rows`` uses: configs matched on the key columns both
        tables have, the rows' own hardware refused as a reference."""
        return cls.from_measurements(reference, reference_key_columns(rows, reference), target=target,
                                     exclude_hardware=_hardware_of(rows))

    def check_usable_for(self, rows: pd.DataFrame, target: str) -> None:
        """What ``for_rows`` checks, for a lookup built once and used for many models: it must not
        hold the rows' own hardware, and must hold times of their target."""
        _refuse_shared_hardware(self.hardware_ids, _hardware_of(rows))
        if self.target != target:
            raise InvalidInputError(f"`reference` must hold times of the model's target {target!r}, but holds "
                                    f"{self.target!r}")

    @property
    def hardware_ids(self) -> list[str]:
        return list(self.log2_times.columns)

    def features(self, rows: pd.DataFrame) -> pd.DataFrame:
        """``ref_log2_<target>__<hw>`` per reference, their mean, and ``ref_missing_fraction``.

        A reference that never ran a config (a failure there, or a config outside its space) is
        filled from the others: its own mean over all configs shifted by how far the references
        that did run it sit from theirs; with none, its mean (and a missing fraction of 1).
        """
        found = self.log2_times.reindex(config_keys(rows, self.key_columns)).to_numpy(dtype=float)
        missing = np.isnan(found)
        means = self.log2_times.mean(axis=0).to_numpy(dtype=float)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # rows with no reference: the mean of nothing
            shift = np.nanmean(found - means, axis=1)
        shift = np.where(np.isfinite(shift), shift, 0.0)
        filled = np.where(missing, means + shift[:, None], found)
        name = f"ref_log2_{self.target}"
        out = pd.DataFrame(filled, columns=[f"{name}__{hw}" for hw in self.hardware_ids], index=rows.index)
        out[f"{name}_mean"] = filled.mean(axis=1)
        out["ref_missing_fraction"] = missing.mean(axis=1)
        return out


def _hardware_of(rows: pd.DataFrame) -> list[str]:
    return list(rows["hardware_id"].dropna().astype(str).unique()) if "hardware_id" in rows else []


def _refuse_shared_hardware(reference_hardware: Iterable[str], trained_on: Iterable[str]) -> None:
    """A reference on the trained hardware would hand the model its own targets as a feature."""
    overlap = sorted(set(reference_hardware) & {str(h) for h in trained_on})
    if overlap:
        raise InvalidInputError(f"reference hardware must differ from the training rows' hardware, but both "
                                f"have hardware_id={overlap[0]!r}")
