"""SearchSpace at Kernel Tuner scale and with Kernel Tuner's meaning: progressive enumeration
bounded by the valid configs (not the cartesian product), Python's precedence and short circuit
in restrictions, division by zero as an invalid config, min/max/if-else, the max_threads rule,
ints beside floats, YAML 1.2 scalars and errors raised when the space is built."""

from __future__ import annotations

import itertools
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_tuner_api_checks import assert_one_line

from perfpred.datasets import Measurement
from perfpred.errors import InvalidInputError
from perfpred.tuner import Continuous, SearchSpace, Tuner, TuneSettings

searchspace = pytest.importorskip("kernel_tuner.searchspace")


def kt_configs(params: dict, restrictions: list, max_threads: int = 1 << 40, names=("__none__",)) -> set[tuple]:
    """Kernel Tuner's own search space (the oracle), as a set of value tuples."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        space = searchspace.Searchspace(params, list(restrictions), max_threads, block_size_names=list(names))
    return set(map(tuple, space.list))


def brute(params: dict, restrictions: list) -> list[tuple]:
    """Every valid config by a Python loop, in the cartesian order; a restriction that raises
    ZeroDivisionError makes its config invalid."""
    out = []
    for values in itertools.product(*params.values()):
        config = dict(zip(params, values, strict=True))
        ok = True
        for r in restrictions:
            try:
                ok = bool(eval(r, {"__builtins__": {"min": min, "max": max, "abs": abs}}, dict(config)))
            except ZeroDivisionError:
                ok = False
            if not ok:
                break
        if ok:
            out.append(values)
    return out


def rows(frame: pd.DataFrame) -> list[tuple]:
    return list(frame.itertuples(index=False, name=None))


class Synth:
    def measure(self, config):
        runtime = 1.0 + sum(abs(float(v)) for v in config.values() if not isinstance(v, str)) / 100
        return Measurement(kind="kernel", workload={}, config=dict(config), hardware_id="fake", runtime_ms=runtime)


# ---------------------------------------------------------------------------- 1. progressive enumeration

BIG = {"block_size_x": [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024],
       "block_size_y": [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024],
       "tile_size_x": list(range(1, 11)), "tile_size_y": list(range(1, 11)), "vec": [1, 2, 4, 8],
       "sh_power": [0, 1], "loop_unroll": list(range(10)), "blocks_per_sm": [0, 1, 2, 3, 4],
       "use_padding": [0, 1], "read_only": [0, 1]}
BIG_RESTRICTIONS = ["block_size_x*block_size_y<=1024", "block_size_x*block_size_y>=256", "tile_size_x % vec == 0",
                    "tile_size_x*tile_size_y<=16", "loop_unroll <= tile_size_y"]


def test_a_sparse_space_past_the_cartesian_limit_enumerates_fast_and_small() -> None:
    """19.36M cartesian, 316,800 valid (Kernel Tuner builds it in ~1 s): the limit counts the
    valid configs, and memory follows them (it took 32 s and 4.6 GB through the cartesian product)."""
    space = SearchSpace(dict(BIG), list(BIG_RESTRICTIONS))
    assert space.cartesian_size() == 19_360_000
    tracemalloc.start()
    start = time.perf_counter()
    try:
        assert space.enumerable
        frame = space.enumerate()
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(frame) == 316_800
    assert elapsed < 5.0 and peak < 400e6, (elapsed, peak)
    assert set(rows(frame)) == kt_configs(BIG, BIG_RESTRICTIONS)
    codes = np.stack([pd.Index(BIG[c]).get_indexer(frame[c]) for c in BIG], axis=1)
    assert (np.lexsort(codes.T[::-1]) == np.arange(len(frame))).all()  # the cartesian order
    assert all(pd.api.types.is_integer_dtype(frame[c]) for c in frame.columns)


def test_progressive_enumeration_keeps_the_configs_and_their_cartesian_order() -> None:
    """Linked and free parameters interleaved, restrictions over 1, 2 and 3 names, a callable."""
    params = {"a": [1, 2, 3, 4, 6, 8], "free1": [0, 1], "b": [0, 1, 2, 3], "s": ["x", "y", "z"],
              "c": [1, 2, 4, 8], "free2": [5, 7, 9], "d": [0.5, 1.0, 2.0]}
    restrictions = ["a * c <= 16", "b < a", "s != 'y' or d > 0.5", "a + b + c != 7", "c == 1 or b % 2 == 0"]
    space = SearchSpace(dict(params), list(restrictions))
    expected = brute(params, restrictions)
    assert 0 < len(expected) < space.cartesian_size()
    assert rows(space.enumerate()) == expected
    with_callable = SearchSpace(dict(params), [*restrictions, lambda f: f["free2"] != 7])
    assert rows(with_callable.enumerate()) == [r for r in expected if r[5] != 7]


def test_the_limit_counts_valid_configs_and_names_what_grew_too_large() -> None:
    params = {f"p{i}": list(range(10)) for i in range(7)}  # 1e7 cartesian
    space = SearchSpace(dict(params), ["p0 == 3", "p1 == 3", "p2 == 3", "p3 == 3", "p4 + p5 == 9"])
    frame = space.enumerate(limit=100)
    assert len(frame) == 100 and space.enumerable
    with pytest.raises(InvalidInputError) as excinfo:
        space.enumerate(limit=99)
    assert_one_line(excinfo, "99", "100")
    free = SearchSpace(dict(params), ["p0 + p1 == 9"])  # 1e6 valid: p2..p6 are cut by nothing
    with pytest.raises(InvalidInputError) as excinfo:
        free.enumerate(limit=50_000)
    assert_one_line(excinfo, "50000", "1000000")
    linked = SearchSpace(dict(params), ["p0 + p1 + p2 + p3 + p4 + p5 >= 0"])  # a million partial configs
    with pytest.raises(InvalidInputError) as excinfo:
        linked.enumerate(limit=1000)
    assert_one_line(excinfo, "1000", "p0", "p5")


# ---------------------------------------------------------------------------- 2. a sparse space is tuned

SPARSE = {"block_size_x": [2 ** i for i in range(11)], "block_size_y": [2 ** i for i in range(11)],
          "block_size_z": [2 ** i for i in range(11)], "tile_x": list(range(1, 9)), "tile_y": list(range(1, 9)),
          "vec": [1, 2, 4, 8], "unroll": [0, 1, 2, 4, 8], "use_shmem": [0, 1], "read_only": [0, 1]}
SPARSE_RESTRICTIONS = ["block_size_x*block_size_y*block_size_z == 1024", "block_size_z == 1", "block_size_x >= 64",
                       "tile_x*tile_y == 16", "tile_x % vec == 0", "unroll == tile_y", "vec == 4"]


def test_a_sparse_space_past_the_cartesian_limit_is_tuned_not_refused() -> None:
    space = SearchSpace(dict(SPARSE), list(SPARSE_RESTRICTIONS))
    assert space.cartesian_size() > 5_000_000
    assert set(rows(space.enumerate())) == kt_configs(SPARSE, SPARSE_RESTRICTIONS)  # 40 configs
    assert space.enumerable
    result = Tuner(space, Synth(), TuneSettings(budget=4, seed=0, ensemble=2)).run()
    assert result.n_evaluations == 4


def test_sampling_that_finds_nothing_says_so_honestly() -> None:
    space = SearchSpace({"n": [1, 2, 3], "x": Continuous(0.0, 1.0)}, ["x > 1.5 and n == 2"])
    with pytest.raises(InvalidInputError) as excinfo:
        space.sample(100)
    assert_one_line(excinfo, "sampling found no valid config in", "draws")
    with pytest.raises(InvalidInputError) as excinfo:
        Tuner(space, Synth(), TuneSettings(budget=4, seed=0, ensemble=2))
    assert_one_line(excinfo, "sampling found no valid config in")
    assert space.sample(0).empty


# ---------------------------------------------------------------------------- 3. Python's precedence

P = {"a": [-3, -1, 0, 1, 2, 3, 4, 5, 6, 8], "b": [0, 1, 2, 3, 4], "c": [1, 2, 4, 8]}


@pytest.mark.parametrize("restriction", ["a & c == 0", "a | c == 3", "a ^ b == 1", "a > 1 & b < 2",
                                         "a & c == 0 and b | 1 == 3 or not a > 2", "a ^ c > b | 1",
                                         "a > 1 and b < 2 or c == 8", "1 <= a <= 4 != b"])
def test_bitwise_operators_bind_as_in_python_and_kernel_tuner(restriction: str) -> None:
    got = rows(SearchSpace(dict(P), [restriction]).enumerate())
    assert got == brute(P, [restriction])
    assert set(got) == kt_configs(P, [restriction])


# ---------------------------------------------------------------------------- 4. division by zero

@pytest.mark.parametrize("restriction", ["P / b >= 2", "P // b <= 1", "P % b != 1", "P % b == 0", "b ** -1 < 1",
                                         "(P / b > 1) or True", "1 / (b - b) > 0 or a > 0"])
def test_a_config_whose_restriction_divides_by_zero_is_invalid(restriction: str) -> None:
    restriction = restriction.replace("P", "a")
    space = SearchSpace(dict(P), [restriction])
    got = rows(space.enumerate())
    assert got == brute(P, [restriction])
    assert all(b != 0 for _, b, _ in got)
    assert not space.is_valid({"a": 4, "b": 0, "c": 1})


def test_python_short_circuit_spares_the_rows_it_never_computes() -> None:
    for restriction in ["b == 0 or a % b == 0", "b != 0 and a // b == 2", "a % b == 0 if b else a > 0",
                        "0 < b < a / b", "a << b > 4 and a >> 1 < c", "b > 2 and a << (b - 3) > 0 or c > 4"]:
        space = SearchSpace(dict(P), [restriction])
        assert rows(space.enumerate()) == brute(P, [restriction]), restriction
    assert SearchSpace(dict(P), ["b == 0 or a % b == 0"]).is_valid({"a": 3, "b": 0, "c": 1})


# ---------------------------------------------------------------------------- 5. smaller items

@pytest.mark.parametrize("restriction", ["min(a, c) >= 2", "max(a, b) == 4", "max(a, b, c) <= 4",
                                         "b % 2 == 0 if a > 0 else True", "abs(a) > 2 and c in [1, 4]",
                                         "a not in (0, 1) and (c if a > 2 else b) == 4"])
def test_min_max_and_conditional_expressions_as_kernel_tuner(restriction: str) -> None:
    got = rows(SearchSpace(dict(P), [restriction]).enumerate())
    assert got == brute(P, [restriction])
    assert set(got) == kt_configs(P, [restriction])


def test_comparing_none_by_order_is_a_one_line_error() -> None:
    space = SearchSpace({"a": [None, 1, 2], "b": [1, 2]}, ["a > 1"])
    with pytest.raises(InvalidInputError) as excinfo:
        space.enumerate()
    assert_one_line(excinfo, "a > 1", "a=None", "TypeError")
    guarded = SearchSpace({"a": [None, 1, 2], "b": [1, 2]}, ["a is not None and a > 1 or a is None and b == 2"])
    assert rows(guarded.enumerate()) == [(None, 2), (2, 1), (2, 2)]


def test_from_kernel_tuner_adds_the_max_threads_rule_as_kernel_tuner_does() -> None:
    params = {"block_size_x": [32, 64, 128, 256], "block_size_y": [1, 2, 4, 8], "tile": [1, 2]}
    space = SearchSpace.from_kernel_tuner(params, ["tile * block_size_y <= 8"])
    assert space.constraints[-1] == "block_size_x * block_size_y <= 1024"
    oracle = kt_configs(params, ["tile * block_size_y <= 8"], 1024, searchspace.default_block_size_names)
    assert set(rows(space.enumerate())) == oracle
    assert (256, 8, 1) not in oracle  # Kernel Tuner itself drops the 2048-thread block
    assert len(SearchSpace.from_kernel_tuner(params, max_threads=None).enumerate()) == 32
    small = {"block_size_x": [16, 32], "block_size_y": [1, 2], "x": [1, 2]}
    assert SearchSpace.from_kernel_tuner(small, ["x > 1"]).constraints == ["x > 1"]  # the rule could cut nothing


def test_an_int_beside_floats_is_handed_back_as_an_int() -> None:
    space = SearchSpace({"a": [1, 2, 0.5], "b": [1, 2]}, ["a * b <= 2"])
    frame = space.enumerate()
    assert rows(frame) == brute(space.params, ["a * b <= 2"])
    assert [type(v) for v in frame["a"]] == [int, int, int, float, float]
    assert type(frame["a"].iloc[0]) is int and {type(v) for v in space.sample(8)["a"]} == {int, float}


def test_yaml_scalars_are_read_as_yaml_1_2(tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text("params:\n  mode: [on, off, yes, no]\n  n: [010, 0o10, 0x10, 1e3]\n"
                    "  t: ['1:00', 1:30]\n  flag: [true, False]\n")
    space = SearchSpace.from_yaml(path)
    assert space.params["mode"] == ["on", "off", "yes", "no"]
    assert space.params["n"] == [10, 8, 16, 1000.0]
    assert space.params["t"] == ["1:00", "1:30"]
    assert space.params["flag"] == [True, False]


@pytest.mark.parametrize(("params", "restrictions", "fragments"), [
    ({"a": [[1, 2], [3, 4]], "b": [1]}, [], ["'a'", "[1, 2]", "number, string, boolean or None"]),
    ({"a": [(1, 2), (3, 4)], "b": [1]}, [], ["'a'", "tuple"]),
    ({"a": [1, 2]}, ["a = 1"], ["'a = 1'", "boolean expression", "=="]),
    ({"a": [1, 2]}, ["a * bx <= 4"], ["'bx'"]),
    ({"a": [1, 2]}, ["a * <= 4"], ["'a * <= 4'", "syntax"]),
    ({"a": [1, 2]}, ["sqrt(a) > 1"], ["'sqrt'", "supported"]),
])
def test_bad_values_and_restrictions_are_refused_when_the_space_is_built(params, restrictions, fragments) -> None:
    with pytest.raises(InvalidInputError) as excinfo:
        SearchSpace(params, restrictions)
    assert_one_line(excinfo, *fragments)


def test_a_bad_restriction_in_a_space_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text("params:\n  x: [1, 2]\n  y: [1, 2]\nconstraints: ['x * yy > 2']\n")
    with pytest.raises(InvalidInputError) as excinfo:
        SearchSpace.from_yaml(path)
    assert_one_line(excinfo, str(path), "'yy'")


def test_a_kernel_tuner_callable_that_raises_names_the_config() -> None:
    def boom(config: dict) -> bool:
        if config["b"] == 3:
            raise KeyError("nope")
        return True

    with pytest.raises(InvalidInputError) as excinfo:
        SearchSpace.from_kernel_tuner({"a": [1, 2, 4], "b": [1, 2, 3]}, [boom]).enumerate()
    assert_one_line(excinfo, "KeyError", "{'a': 1, 'b': 3}")


def test_a_bad_restriction_in_a_space_option_names_the_file(tmp_path: Path) -> None:
    from perfpred.errors import DatasetNotFoundError
    from perfpred.settings import datasets_dir
    from perfpred.tuner._session import open_session

    try:
        recording = datasets_dir() / "kernel-tuner" / "convolution" / "A4000.json.gz"
    except DatasetNotFoundError as exc:
        pytest.skip(str(exc))
    path = tmp_path / "space.yaml"
    path.write_text("params:\n  block_size_x: [16, 32]\nconstraints: ['block_size_x > bogus']\n")
    with pytest.raises(InvalidInputError) as excinfo:
        open_session(f"replay:{recording}", space_file=str(path))
    assert_one_line(excinfo, f"--space {path}", "'bogus'")


# ---------------------------------------------------------------------------- review fixes


def _rows(frame: pd.DataFrame) -> list[tuple]:
    return [tuple(r) for r in frame.itertuples(index=False)]


def test_a_guard_constraint_listed_first_protects_the_later_ones() -> None:
    params = {"x": [None, 1, 4], "y": [0, 1]}
    space = SearchSpace(dict(params), ["x is not None and y >= 0", "x > 2"])
    assert _rows(space.enumerate()) == [(4, 0), (4, 1)]
    kt = SearchSpace.from_kernel_tuner(dict(params), [lambda p: p["x"] is not None, "x > 2"])
    assert _rows(kt.enumerate()) == [(4, 0), (4, 1)]
    frame = pd.DataFrame({"x": pd.Series([None, 1, 4], dtype=object), "y": [0, 1, 1]})
    assert space.mask(frame).tolist() == [False, False, True]
    assert kt.mask(frame).tolist() == [False, False, True]
    assert not space.is_valid({"x": None, "y": 0}) and space.is_valid({"x": 4, "y": 1})
    assert len(space.sample(6)) == 2
    # a string guard before a callable: the callable sees only the rows the guard kept
    seen = []
    guarded = SearchSpace({"x": [None, 1, 4]}, ["x is not None", lambda f: seen.append(list(f.x)) or f.x > 2])
    assert guarded.mask(pd.DataFrame({"x": pd.Series([None, 1, 4], dtype=object)})).tolist() == [False, False, True]
    assert seen == [[1, 4]]
    # a restriction that fails on a row every earlier constraint kept is still an error
    with pytest.raises(InvalidInputError) as err:
        SearchSpace(dict(params), ["y >= 0", "x > 2"]).enumerate()
    assert_one_line(err)
    with pytest.raises(InvalidInputError):
        SearchSpace(dict(params), [lambda f: f.y >= 0, "x > 2"]).enumerate()


def test_round_with_digits_is_pythons_round() -> None:
    assert SearchSpace({"f": [0.15, 0.45]}, ["round(f, 1) == 0.2"]).enumerate().empty
    assert _rows(SearchSpace({"f": [0.15, 0.45]}, ["round(f, 1) == 0.1"]).enumerate()) == [(0.15,)]
    space = SearchSpace({"f": [0.15, 2.675], "n": [1, 2]}, ["round(f, n) in [0.1, 2.67]"])
    assert _rows(space.enumerate()) == [(0.15, 1), (2.675, 2)]
    assert _rows(SearchSpace({"a": [15, 25, 35]}, ["round(a, -1) == 20"]).enumerate()) == [(15,), (25,)]


@pytest.mark.parametrize(("params", "restriction"), [
    ({"a": [60, 63, 64, 70]}, "2 ** a > 1000"),
    ({"a": [1, 2, 3]}, "a << 64 > 0"),
    ({"a": [2**62, 2**63 - 1], "b": [2, 3]}, "a * b > 0"),
    ({"a": [3, 40], "b": [2, 20]}, "a ** b > 2 ** 62"),
])
def test_integer_arithmetic_does_not_wrap(params, restriction) -> None:
    assert _rows(SearchSpace(dict(params), [restriction]).enumerate()) == brute(params, [restriction])


def test_explicit_yaml_int_tags_are_read_or_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text('params:\n  x: [!!int "-0x10", !!int "0b11", !!int "1:30", !!int "010"]\n')
    assert SearchSpace.from_yaml(path).params["x"] == [-16, 3, 90, 10]
    path.write_text('params:\n  x: [!!int "0xzz"]\n')
    with pytest.raises(InvalidInputError) as err:
        SearchSpace.from_yaml(path)
    assert_one_line(err)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("restriction", ["float('a') > 1", "int('a') > 1", "x > 0 and int('a') > 1"])
def test_a_constant_call_that_fails_is_an_error(restriction) -> None:
    with pytest.raises(InvalidInputError) as err:
        SearchSpace({"x": [1, 2]}, [restriction]).enumerate()
    assert_one_line(err)
    assert "ValueError" in str(err.value)


def test_an_emptied_domain_enumerates_to_an_empty_frame() -> None:
    space = SearchSpace({"x": [1, 2], "y": [3]})
    space.params["x"] = []
    frame = space.enumerate()
    assert frame.empty and list(frame.columns) == ["x", "y"]


def test_a_restriction_that_fails_is_an_error_even_where_a_later_one_rejects_the_config() -> None:
    with pytest.raises(InvalidInputError) as err:
        SearchSpace({"x": [None, 1], "y": [1, 2]}, ["x > 0", "y > 5"]).enumerate()
    assert_one_line(err)
    with pytest.raises(InvalidInputError):
        SearchSpace({"x": [None, 1], "y": [1, 2]}, ["x > 0", "x + y > 5"]).enumerate()
    assert SearchSpace({"x": [None, 1]}, ["x is not None", "x > 0", "False"]).enumerate().empty
