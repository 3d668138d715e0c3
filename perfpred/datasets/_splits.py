"""Train/test splits that do not leak: random rows, unseen groups (shapes, models), unseen hardware."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold, GroupShuffleSplit, KFold, LeaveOneGroupOut, ShuffleSplit

from perfpred.datasets._schema import configuration_ids
from perfpred.errors import InvalidInputError

SPLITS = ("random", "shape", "hardware")

GEMM_SHAPE_COLUMNS = ("workload.b", "workload.m", "workload.n", "workload.k")
# What a missing value of a column means, so a group does not split on it: a GEMM recorded
# without a batch is a batch of 1 (UCI, NeuSight rows next to collected ones with b=1).
GROUP_DEFAULTS = {"workload.b": 1}


def _check_rows(df: pd.DataFrame) -> None:
    """A split needs a table with rows."""
    if not isinstance(df, pd.DataFrame):
        raise InvalidInputError(f"a split takes a pandas DataFrame of Measurements, but got {type(df).__name__}")
    if df.empty:
        raise InvalidInputError("a split needs rows, but the table is empty (0 rows)")


def _check_fraction(test_size: float) -> None:
    if isinstance(test_size, (bool, np.bool_)) or not isinstance(test_size, (int, float, np.number)):
        raise InvalidInputError(f"`0 < test_size < 1` must hold (a number), but got test_size={test_size!r}")
    if not 0.0 < test_size < 1.0:
        raise InvalidInputError(f"`0 < test_size < 1` must hold, but got test_size={test_size}")


def group_labels(df: pd.DataFrame, columns: str | Sequence[str]) -> np.ndarray:
    """One integer label per distinct combination of ``columns`` (missing columns ignored; a missing
    value of a column of ``GROUP_DEFAULTS`` counts as its default)."""
    columns = [columns] if isinstance(columns, str) else list(columns)
    present = [c for c in columns if c in df.columns]
    if not present:
        raise InvalidInputError(f"grouping needs at least one of the columns {list(columns)}, but the table has none")
    values = df[present].fillna({c: v for c, v in GROUP_DEFAULTS.items() if c in present})
    # pandas 3 keeps a missing value missing through astype(str): "nan", as pandas 2 wrote it
    return values.astype(str).fillna("nan").agg("|".join, axis=1).factorize()[0]


def configuration_labels(df: pd.DataFrame) -> np.ndarray | None:
    """One label per measured configuration where the table repeats one, else None.

    An importer keeps a second record of a stored configuration with other values as its own
    row, ``<measurement_id>-<hash>`` (``perfpred.datasets._repeats``); a random split
    must keep such rows together, or the test rows' own configurations are in training.
    """
    if "measurement_id" not in df.columns:
        return None
    base = configuration_ids(df["measurement_id"])
    return base.factorize()[0] if base.duplicated().any() else None



def kfold_splits(n_rows: int, n_splits: int, seed: int,
                 groups: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Shuffled k-fold (train, test) positions for an inner cross-validation; with ``groups``
    (``configuration_labels``), a configuration's repeats stay in one fold. Without groups the
    folds are sklearn's shuffled ``KFold`` with this seed."""
    rows = np.arange(n_rows)
    if groups is None:
        return list(KFold(n_splits, shuffle=True, random_state=seed).split(rows))
    if len(np.unique(groups)) < n_splits:
        raise InvalidInputError(f"`configurations >= folds` must hold to cross-validate, but got "
                                f"{len(np.unique(groups))} configurations < {n_splits} folds")
    return list(GroupKFold(n_splits, shuffle=True, random_state=seed).split(rows, groups=groups))

def random_split(df: pd.DataFrame, *, test_size: float = 0.2, seed: int = 0,
                 train_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Random rows held out: ``test_size`` of them, or, given ``train_size``, that many rows for
    training and every other row for the test (how well N measurements of a new GPU predict the rest).
    Repeated records of one configuration go to the same side (``configuration_labels``)."""
    _check_rows(df)
    groups = configuration_labels(df)
    if train_size is None:
        _check_fraction(test_size)
        if groups is not None:
            return next(GroupShuffleSplit(n_splits=1, test_size=test_size, random_state=seed).split(df, groups=groups))
        return next(ShuffleSplit(n_splits=1, test_size=test_size, random_state=seed).split(df))
    if isinstance(train_size, (bool, np.bool_)) or not isinstance(train_size, (int, np.integer)):
        raise InvalidInputError(f"`train_size` must be a whole number of rows, but got train_size={train_size!r}")
    if not 2 <= train_size < len(df):
        raise InvalidInputError(f"`2 <= train_size < rows ({len(df)})` must hold, but got train_size={train_size}")
    if groups is not None:  # whole configurations, in a seeded order, until train_size rows
        order = np.random.default_rng(seed).permutation(groups.max() + 1)
        sizes = np.bincount(groups)[order]
        chosen = order[: int(np.searchsorted(np.cumsum(sizes), train_size)) + 1]
        in_train = np.isin(groups, chosen)
        return np.flatnonzero(in_train), np.flatnonzero(~in_train)
    return next(ShuffleSplit(n_splits=1, train_size=train_size, test_size=len(df) - train_size,
                             random_state=seed).split(df))


def grouped_split(
    df: pd.DataFrame, columns: str | Sequence[str], *, test_size: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Hold out whole groups: every row of a test group is unseen in training. ``columns``: the
    column(s) whose distinct values (combinations) are the groups; one name may be given alone."""
    _check_rows(df)
    _check_fraction(test_size)
    columns = [columns] if isinstance(columns, str) else list(columns)
    groups = group_labels(df, columns)
    if len(np.unique(groups)) < 2:
        raise InvalidInputError(f"a grouped split needs >= 2 groups of {list(columns)}, but got 1")
    return next(GroupShuffleSplit(n_splits=1, test_size=test_size, random_state=seed).split(df, groups=groups))


def leave_one_group_out(df: pd.DataFrame, column: str = "hardware_id") -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Yield (held-out value, train index, test index) for each value of ``column``."""
    if column not in df.columns:
        raise InvalidInputError(f"leave-one-out needs column '{column}', which the table lacks")
    values = df[column].astype(str).to_numpy()
    if len(np.unique(values)) < 2:
        distinct = np.unique(values).tolist()
        raise InvalidInputError(f"leave-one-{column}-out needs >= 2 distinct values, but got {distinct}")
    for train_idx, test_idx in LeaveOneGroupOut().split(df, groups=values):
        yield values[test_idx[0]], train_idx, test_idx


def workload_columns(df: pd.DataFrame) -> list[str]:
    """What an unseen workload is for these rows: a GEMM's shape (b, m, n, k); a serving row's
    model (``workload.model``: a new LLM); else every ``workload.`` column that varies (a
    kernel's problem size)."""
    # A column counts only where these rows give it values: serving rows loaded from a store that
    # also holds GEMMs carry the (empty) shape columns too.
    def held(column: str) -> bool:
        return column in df.columns and bool(df[column].notna().any())

    if any(held(c) for c in GEMM_SHAPE_COLUMNS):
        return list(GEMM_SHAPE_COLUMNS)
    if held("workload.model"):
        return ["workload.model"]
    varying = [c for c in df.columns if c.startswith("workload.") and df[c].nunique(dropna=False) > 1]
    if not varying:
        raise InvalidInputError("split='shape' holds out whole workloads, but every row has the same workload "
                                "(no GEMM shape, model or varying workload column): use split='random'")
    return varying


def make_split(
    df: pd.DataFrame, split: str, *, test_size: float = 0.2, seed: int = 0, group_columns: Sequence[str] | None = None,
    train_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One (train, test) index pair by name: ``random`` | ``shape`` (unseen workloads: GEMM
    shapes, serving models or kernel problem sizes; ``workload_columns``). ``train_size`` (random
    split only): train on that many rows, test on the rest."""
    _check_rows(df)
    if split == "random":
        return random_split(df, test_size=test_size, seed=seed, train_size=train_size)
    if train_size is not None and split in SPLITS:
        raise InvalidInputError(f"`train_size` needs split='random', but got split={split!r}")
    if split == "shape":
        return grouped_split(df, group_columns or workload_columns(df), test_size=test_size, seed=seed)
    if split == "hardware":
        raise InvalidInputError("split='hardware' yields one fold per hardware id: use leave_one_group_out()")
    raise InvalidInputError(f"`split` must be one of {SPLITS}, but got split={split!r}")
