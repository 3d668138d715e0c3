"""How well a CLBlast / CLTune ``Xgemm`` configuration's warps use local and global memory.

The kernel (UCI SGEMM on the GTX 680, the Kernel Tuner GEMM spaces) reads its operands in one
of two ways per operand: straight from global memory into registers (``SA=0``), or through a
tile in local (shared) memory (``SA=1``), filled by the ``MDIMA x KDIMA`` thread layout and read
back by the ``MDIMC x NDIMC`` one. ``STRM`` picks whether a thread's ``MWI`` elements are
contiguous or ``MDIMC`` vectors apart, ``VWM`` the vector width of each access. Whether a warp's
addresses then fall into distinct banks and whole 32-byte sectors is a function of those
parameters that no single one of them, nor their products, says: 16 threads reading 4
contiguous floats each hit every bank twice; with ``STRM=1`` the same threads read one
contiguous run.

:func:`gemm_access_features` replays each instruction's addresses for every warp of one
work-group (the index arithmetic of the kernel's ``GlobalToLocal``, ``LocalToPrivate`` and
``GlobalToPrivate`` steps) and reports, per operand (``a`` along m, ``b`` along n), averaged over
warps and instructions:

- ``local_read_conflict``: wavefronts a warp's read of the local tile takes over the fewest
  possible (1 = conflict-free; 32 banks of 4 bytes; identical addresses are broadcast);
- ``local_store_conflict``: the same for the stores that fill the tile;
- ``fill_sector_efficiency``: bytes used over bytes moved in 32-byte sectors when filling it;
- ``direct_sector_efficiency``: the same for reads straight into registers (``SA=0``).

A step the configuration does not run reports its ideal value (1), so the columns say what the
chosen path costs. Emitted as ``log2_d_<operand>_<name>`` (0 = ideal). On 2,000 UCI SGEMM
rows they took the four-kernel GP's 4-fold CV MAPE from 8.03% to 7.46%, and the held-out MAPE of
the chosen GP + XGBoost blend from 7.18% to 6.53% (kernel + occupancy features;
``benchmarks/accuracy.py``, uci_2000). Not a GTX 680 artefact: the same GP on 2,000 random rows
of each Kernel Tuner GEMM space went from 1.76 / 3.41 / 2.05% to 1.60 / 3.49 / 1.92% held-out
MAPE (RTX 2080 Ti / 3090 / TITAN RTX; a one-off check).
Rows whose parameters do not tile evenly (a configuration the kernel rejects) get NaN.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import numpy as np
import pandas as pd

WARP = 32  # threads scheduled together (NVIDIA warps; AMD wave64 issues local accesses per 32)
BANKS = 32  # local-memory banks of 4 bytes (NVIDIA since Fermi, AMD GCN and later)
SECTOR_WORDS = 8  # 32-byte global-memory sectors, in 4-byte words
MAX_WORK_GROUP = 4096  # past any GPU's work-group limit: such a row is not a real config (and not replayed)

# Parameters per operand: (tile, threads along it, threads across, vector width, strided flag,
# fill layout, local-memory flag). A runs along local id 0, B along local id 1.
OPERANDS = {
    "a": ("MWG", "MDIMC", "NDIMC", "VWM", "STRM", "MDIMA", "SA"),
    "b": ("NWG", "NDIMC", "MDIMC", "VWN", "STRN", "NDIMB", "SB"),
}
NEEDS = frozenset({"KWG", *OPERANDS["a"], *OPERANDS["b"]})
NAMES = ("local_read_conflict", "local_store_conflict", "fill_sector_efficiency", "direct_sector_efficiency")


def _bank_conflict(words: np.ndarray) -> float:
    """Wavefronts one warp access needs over the fewest possible (distinct words; broadcast is free)."""
    distinct = np.unique(words)
    busiest = np.bincount(distinct % BANKS, minlength=BANKS).max()
    return float(busiest / np.ceil(len(distinct) / BANKS))


def _sector_efficiency(rows: np.ndarray, words: np.ndarray) -> float:
    """Distinct words used over the words of the 32-byte sectors they lie in (rows never share one)."""
    pairs = np.unique(np.stack([rows, words]), axis=1)
    sectors = np.unique(np.stack([pairs[0], pairs[1] // SECTOR_WORDS]), axis=1).shape[1]
    return float(pairs.shape[1] / (sectors * SECTOR_WORDS))


def _vector_words(first_vector: np.ndarray, width: int) -> np.ndarray:
    """The 4-byte words of vectors of ``width`` elements starting at vector index ``first_vector``."""
    return (first_vector[:, None] * width + np.arange(width)).ravel()


@functools.lru_cache(maxsize=4096)
def operand_access(tile: int, along: int, across: int, width: int, strided: int, fill_along: int, kwg: int,
                   first: bool) -> tuple[float, float, float, float]:
    """The four measures of :data:`NAMES` for one operand, or NaNs when the tiling is uneven (or
    the work-group larger than any GPU runs).

    ``tile`` (MWG), ``along`` / ``across`` (MDIMC / NDIMC for A, the reverse for B), ``width``
    (VWM), ``strided`` (STRM), ``fill_along`` (MDIMA), ``kwg`` (KWG); ``first``: the operand runs
    along local id 0 (A) rather than 1 (B).
    """
    threads = along * across
    # Checked before any division: a zero or negative parameter is as uneven as a wrong multiple.
    if (min(tile, along, across, width, fill_along, kwg) <= 0 or threads > MAX_WORK_GROUP or tile > MAX_WORK_GROUP
            or tile % (along * width) or threads % fill_along or tile % (fill_along * width)
            or kwg % (threads // fill_along)):
        return (np.nan,) * 4
    per_thread = tile // along  # MWI
    fill_across = threads // fill_along  # KDIMA
    tid = np.arange(threads)
    local_id = tid % along if first else tid // across  # linear id = id0 + MDIMC * id1
    warps = [tid[s:s + WARP] for s in range(0, threads, WARP)]

    # Reads of the thread's own elements: from the local tile (SA=1) or global memory (SA=0),
    # one instruction per vector; within a k row both use the same offsets.
    reads, direct = [], []
    for warp in warps:
        for i in range(per_thread // width):
            vector = (i + local_id[warp] * (per_thread // width)) if not strided else (local_id[warp] + i * along)
            words = _vector_words(vector, width)
            reads.append(_bank_conflict(words))
            direct.append(_sector_efficiency(np.zeros_like(words), words))

    # Filling the tile: thread (la0, la1) of the MDIMA x KDIMA layout copies MWA/VWM vectors of
    # k row la1 * KWA (+ the same pattern for the KWA rows after it).
    fill_tile = tile // fill_along  # MWA
    fill_rows = kwg // fill_across  # KWA
    stores, fills = [], []
    for warp in warps:
        la0, la1 = warp % fill_along, warp // fill_along
        for i in range(fill_tile // width):
            vector = (i + la0 * (fill_tile // width)) if not strided else (la0 + i * fill_along)
            rows = np.repeat(la1 * fill_rows, width)
            offsets = _vector_words(vector, width)
            stores.append(_bank_conflict(rows * tile + offsets))
            fills.append(_sector_efficiency(rows, offsets))
    return float(np.mean(reads)), float(np.mean(stores)), float(np.mean(fills)), float(np.mean(direct))


def gemm_access_features(params: Mapping[str, np.ndarray], index: pd.Index | None = None) -> pd.DataFrame:
    """``log2_d_{a,b}_<measure>`` for rows with every CLBlast Xgemm parameter; empty otherwise.

    ``params`` maps parameter names to float arrays (one value a row), as the kernel features
    read them; ``index`` labels the rows of the result.
    """
    if not set(params) >= NEEDS:
        return pd.DataFrame(index=index)
    out: dict[str, np.ndarray] = {}
    for name, (tile, along, across, width, strided, fill_along, cached) in OPERANDS.items():
        keys = np.stack([params[p] for p in (tile, along, across, width, strided, fill_along, "KWG")], axis=1)
        known = np.isfinite(keys).all(axis=1)
        values = np.full((len(keys), len(NAMES)), np.nan)
        if known.any():
            unique, inverse = np.unique(keys[known].astype(np.int64), axis=0, return_inverse=True)
            table = np.array([operand_access(*map(int, row), first=name == "a") for row in unique], dtype=float)
            values[known] = table[inverse.ravel()]
        local = params[cached] == 1
        ideal = np.where(np.isnan(values).any(axis=1), np.nan, 1.0)  # uneven rows stay NaN throughout
        # A step the configuration does not run costs nothing: report it as ideal.
        out[f"log2_d_{name}_local_read_conflict"] = np.log2(np.where(local, values[:, 0], ideal))
        out[f"log2_d_{name}_local_store_conflict"] = np.log2(np.where(local, values[:, 1], ideal))
        out[f"log2_d_{name}_fill_sector_efficiency"] = np.log2(np.where(local, values[:, 2], ideal))
        out[f"log2_d_{name}_direct_sector_efficiency"] = np.log2(np.where(local, ideal, values[:, 3]))
    return pd.DataFrame(out, index=index)
