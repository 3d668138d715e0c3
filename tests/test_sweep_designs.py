"""Sweep designs: log-uniform random and Sobol shapes, grids, expansion, and bad ranges."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perfpred.collect import DESIGNS, expand, grid_shapes, loguniform_shapes
from perfpred.errors import InvalidInputError

RANGES = {"m": (16, 4096), "n": (1, 64), "k": (100, 100)}


@pytest.mark.parametrize("sobol", [False, True], ids=["random", "sobol"])
def test_shapes_stay_within_their_ranges(sobol):
    shapes = loguniform_shapes(200, RANGES, seed=3, sobol=sobol)
    assert shapes
    for shape in shapes:
        assert list(shape) == ["m", "n", "k"]
        for name, (lo, hi) in RANGES.items():
            assert isinstance(shape[name], int)
            assert lo <= shape[name] <= hi


@pytest.mark.parametrize("sobol", [False, True], ids=["random", "sobol"])
def test_shapes_are_deterministic_per_seed(sobol):
    a = loguniform_shapes(64, RANGES, seed=7, sobol=sobol)
    b = loguniform_shapes(64, RANGES, seed=7, sobol=sobol)
    c = loguniform_shapes(64, RANGES, seed=8, sobol=sobol)
    assert a == b
    assert a != c


@pytest.mark.parametrize("sobol", [False, True], ids=["random", "sobol"])
def test_shapes_are_deduplicated(sobol):
    # A narrow range forces many collisions after rounding.
    shapes = loguniform_shapes(200, {"m": (1, 4), "n": (1, 2)}, seed=0, sobol=sobol)
    keys = [tuple(s.values()) for s in shapes]
    assert len(keys) == len(set(keys))
    assert len(shapes) <= 4 * 2
    assert len(shapes) >= 4  # the design still covers the space


@pytest.mark.parametrize("sobol", [False, True], ids=["random", "sobol"])
def test_no_more_shapes_than_asked(sobol):
    for n in (1, 3, 17, 64):
        shapes = loguniform_shapes(n, {"m": (16, 4096), "n": (16, 4096), "k": (16, 4096)}, seed=0, sobol=sobol)
        assert len(shapes) == n  # no collisions in a range this wide
    # With a wide range nothing collides: exactly n shapes.
    assert len(loguniform_shapes(37, {"m": (1, 10**6), "n": (1, 10**6)}, seed=1, sobol=sobol)) == 37


def test_sobol_shapes_cover_the_log_range_evenly():
    shapes = loguniform_shapes(64, {"m": (16, 4096)}, seed=0, sobol=True)
    logs = sorted(math.log2(s["m"]) for s in shapes)
    # 64 balanced points over 8 octaves: every octave gets some, none gets most.
    per_octave = [sum(4 + i <= v < 5 + i for v in logs) for i in range(8)]
    assert min(per_octave) >= 4
    assert max(per_octave) <= 12


@settings(max_examples=50, deadline=None)
@given(lo=st.integers(1, 5000), span=st.integers(0, 5000), seed=st.integers(0, 2**16), sobol=st.booleans())
def test_any_valid_range_gives_shapes_inside_it(lo, span, seed, sobol):
    hi = lo + span
    for shape in loguniform_shapes(8, {"m": (lo, hi)}, seed=seed, sobol=sobol):
        assert lo <= shape["m"] <= hi


@pytest.mark.parametrize(
    ("ranges", "n_shapes", "needle"),
    [
        ({"m": (0, 10)}, 4, "m_min"),
        ({"m": (10, 5)}, 4, "m=(10, 5)"),
        ({"k": (-3, 10)}, 4, "k_min"),
        ({"m": (1.5, 10)}, 4, "m_min"),
        ({"m": (1, 10)}, 0, "n_shapes >= 1"),
    ],
)
def test_bad_ranges_are_refused(ranges, n_shapes, needle):
    with pytest.raises(InvalidInputError) as info:
        loguniform_shapes(n_shapes, ranges)
    assert needle in str(info.value)


def test_grid_is_the_full_product():
    shapes = grid_shapes({"m": [16, 32], "n": [8], "k": [1, 2, 3]})
    assert len(shapes) == 6
    assert shapes[0] == {"m": 16, "n": 8, "k": 1}
    assert {(s["m"], s["k"]) for s in shapes} == {(16, 1), (16, 2), (16, 3), (32, 1), (32, 2), (32, 3)}


@pytest.mark.parametrize("values", [{"m": []}, {"m": [0, 4]}, {"m": [4.0]}, {"m": ["8"]}])
def test_bad_grid_values_are_refused(values):
    with pytest.raises(InvalidInputError, match="`m`"):
        grid_shapes(values)


def test_expand_crosses_shapes_with_options():
    shapes = [{"m": 1, "n": 2, "k": 3}, {"m": 4, "n": 5, "k": 6}]
    configs = expand(shapes, dtype=["fp32", "fp64"], threads=[1, 2])
    assert len(configs) == 8
    assert configs[0] == {"m": 1, "n": 2, "k": 3, "dtype": "fp32", "threads": 1}
    assert {(c["m"], c["dtype"], c["threads"]) for c in configs} == {
        (m, d, t) for m in (1, 4) for d in ("fp32", "fp64") for t in (1, 2)}
    assert shapes == [{"m": 1, "n": 2, "k": 3}, {"m": 4, "n": 5, "k": 6}]  # inputs untouched
    assert expand(shapes) == shapes


def test_designs_are_named():
    assert set(DESIGNS) == {"grid", "random", "sobol"}
