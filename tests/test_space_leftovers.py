"""SearchSpace leftovers, each against Python's own meaning: integer ``+``/``-`` (and negation,
``abs``, ``//``, ``int``/``round`` of a float) past int64, the types of configs the Optuna path
suggests (an int of a list beside floats stays an int, None stays None), and restrictions that
raise as Python's list order makes them (per config, in order, a config dropped at the first
False: Kernel Tuner's reading), wherever enumerating applied a later one first."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pandas as pd
import pytest
from test_tuner_api_checks import assert_one_line
from test_tuner_loop import SyntheticHardware

import perfpred.tuner._space as space_module
from perfpred.errors import InvalidInputError
from perfpred.tuner import Continuous, SearchSpace, Tuner, TuneSettings
from perfpred.tuner._predictor_search import search_predictor

ERROR = "error"


def python_order(params: dict, restrictions: list) -> list[tuple] | str:
    """Every valid config by Python, config by config in the cartesian order, each restriction in
    list order with ``all``'s short circuit (a ZeroDivisionError makes a config invalid); ``ERROR``
    where a restriction raises TypeError on a config the ones before it kept."""
    out = []
    for values in itertools.product(*params.values()):
        config = dict(zip(params, values, strict=True))
        try:
            ok = all(eval(r, {"__builtins__": {"abs": abs, "int": int, "round": round, "max": max}}, dict(config))
                     for r in restrictions)
        except ZeroDivisionError:
            ok = False
        except TypeError:
            return ERROR
        if ok:
            out.append(values)
    return out


def enumerated(params: dict, restrictions: list) -> list[tuple] | str:
    try:
        frame = SearchSpace(dict(params), list(restrictions)).enumerate()
    except InvalidInputError:
        return ERROR
    return list(frame.itertuples(index=False, name=None))


# ---------------------------------------------------------------------------- 1. + and - past int64

BIG = 2**62
INT64_MIN = -(2**63)


@pytest.mark.parametrize(("params", "restriction"), [
    ({"x": [BIG, BIG + 1]}, "x + x > 0"),
    ({"x": [-BIG, -BIG - 1]}, "x + x < 0"),
    ({"x": [-BIG, -BIG - 1], "y": [BIG, BIG + 1]}, "x - y < 0"),
    ({"x": [2**63 - 1, 3]}, "x + 1 > 0"),
    ({"x": [2**63 - 1, 3], "y": [1, 2]}, "max(x + y, 0) > 0 if y > 1 else x - -y > 0"),
    ({"x": [INT64_MIN, 0]}, "-x > 0"),
    ({"x": [INT64_MIN, 0]}, "abs(x) > 0"),
    ({"x": [INT64_MIN, 5]}, "x // -1 > 0"),
    ({"x": [1, 2]}, "x + 2**70 > 0"),
    ({"x": [1, 2]}, "x - 2**70 < 0 and x % 2**70 == x and x & 2**70 == 0"),
    ({"x": [1e19, 2.5]}, "int(x) > 0"),
    ({"x": [1e19, 2.5]}, "round(x) == 10**19 or x < 3"),
])
def test_integer_plus_and_minus_do_not_wrap(params, restriction) -> None:
    expected = python_order(params, [restriction])
    assert expected != ERROR and expected
    assert enumerated(params, [restriction]) == expected


def test_the_example_keeps_both_configs_as_python_does() -> None:
    space = SearchSpace({"x": [BIG, BIG + 1]}, ["x + x > 0"])
    assert space.enumerate()["x"].tolist() == [BIG, BIG + 1]
    assert space.is_valid({"x": BIG + 1})
    assert space.mask(pd.DataFrame({"x": [BIG, BIG + 1]})).tolist() == [True, True]


# ---------------------------------------------------------------------------- 2. Optuna's suggestions keep their types

MIXED = {"x": [1, 2.5, 4], "y": Continuous(0.0, 1.0), "s": [None, "a"], "b": [True, 3]}


def kinds(values) -> set[tuple[str, object]]:
    return {(type(v).__name__, v) for v in values}


def test_the_predictor_search_hands_back_the_domains_own_values() -> None:
    space = SearchSpace(dict(MIXED))
    found = search_predictor(space, lambda f: f["y"].to_numpy(dtype=float), n_trials=40, keep=40, seed=0)
    assert kinds(found["x"]) == {("int", 1), ("float", 2.5), ("int", 4)}  # not 1.0 and 4.0
    assert kinds(found["s"]) == {("NoneType", None), ("str", "a")}  # not NaN
    assert kinds(found["b"]) <= {("bool", True), ("int", 3)}
    assert space.in_domains(found).all()


def test_configs_frame_holds_values_as_enumerate_does() -> None:
    space = SearchSpace({"x": [1, 2.5, 4], "s": [None, "a"], "n": [1, 2]})
    frame = space.enumerate()
    again = space.configs_frame(frame.to_dict("records"))
    assert again.dtypes.tolist() == frame.dtypes.tolist()
    assert [kinds(again[c]) for c in again] == [kinds(frame[c]) for c in frame]
    # a value read back as 1.0 is its domain's 1; one outside the domain stays as given
    assert kinds(space.configs_frame([{"x": 1.0, "s": None, "n": 2.0}, {"x": 7, "s": "a", "n": 1}])["x"]) == \
        {("int", 1), ("int", 7)}


def test_an_open_space_is_tuned_with_the_domains_own_values() -> None:
    space = SearchSpace({"x": [1, 2.5, 4], "y": Continuous(0.0, 1.0), "s": [None, "a"]}, ["s is None or x > 1"])
    hw = SyntheticHardware(runtime=lambda c: 1.0 + float(c["y"]) + float(c["x"]) + (0.5 if c["s"] is None else 0))
    settings = TuneSettings(budget=6, seed=0, pool_size=6, ensemble=2, inner_trials=16, inner_keep=8, n_initial=3,
                            batch_size=3)
    result = Tuner(space, hw, settings).run()  # it failed: None measured beside "a" came back as NaN
    assert result.n_evaluations == 6
    assert kinds(c["x"] for c in hw.calls) <= {("int", 1), ("float", 2.5), ("int", 4)}
    assert kinds(c["s"] for c in hw.calls) <= {("NoneType", None), ("str", "a")}
    assert all(space.is_valid(c) for c in hw.calls)


# ---------------------------------------------------------------------------- 3. raising in Python's list order

@pytest.mark.parametrize(("params", "restrictions"), [
    # a later restriction on x alone filtered the Nones before the two-parameter one saw them
    ({"x": [None, 1, 2], "y": [1, 2]}, ["x > y", "x is not None"]),
    # a later restriction emptied its own (smaller) part of the space first
    ({"x": [None, 1, 3], "y": [1, 2]}, ["x > 0", "y > 5"]),
    ({"x": [1, 2, 3], "y": [1, 2]}, ["x > 'a'", "y > 5"]),
    # a later constant False ended it before the restriction was evaluated
    ({"x": [None, 1, 3]}, ["x > 0", "False"]),
    ({"x": [None, 1], "y": [1, 2], "z": [0, 1]}, ["z == 0", "x + y > 1", "y > 1 and z > 5"]),
])
def test_a_restriction_raising_where_a_later_one_filters_first_is_an_error_as_in_python(params, restrictions) -> None:
    assert python_order(params, restrictions) == ERROR
    with pytest.raises(InvalidInputError) as err:
        SearchSpace(dict(params), list(restrictions)).enumerate()
    assert_one_line(err, repr(next(r for r in restrictions if r != "z == 0")), "cannot be evaluated", "TypeError")


def test_the_error_names_the_restriction_and_a_config_it_raises_on() -> None:
    with pytest.raises(InvalidInputError) as err:
        SearchSpace({"x": [None, 1, 2], "y": [1, 2]}, ["x > y", "x is not None"]).enumerate()
    assert_one_line(err, "constraint 'x > y' cannot be evaluated where x=None, y=1: TypeError")
    frame = pd.DataFrame({"x": pd.Series([None, 2], dtype=object), "y": [1, 1]})
    with pytest.raises(InvalidInputError):  # mask, in list order, said so already
        SearchSpace({"x": [None, 1, 2], "y": [1, 2]}, ["x > y", "x is not None"]).mask(frame)


@pytest.mark.parametrize(("params", "restrictions"), [
    ({"x": [None, 1, 3], "y": [1, 2]}, ["y > 5", "x > 0"]),  # an earlier one drops every config: no error
    ({"x": [None, 1, 3], "y": [1, 2]}, ["x is not None", "x > 0", "y > 1"]),  # the guard comes first
    ({"x": [None, 1, 2], "y": [1, 2]}, ["x is not None and y > 0", "x > y", "y < 2"]),
    ({"x": [None, "a", 1], "y": [1, 2]}, ["x is None or x == 'a' or x > 0", "y > 1"]),  # a guard within
])
def test_where_python_does_not_raise_neither_does_enumerate(params, restrictions) -> None:
    expected = python_order(params, restrictions)
    assert expected != ERROR
    assert enumerated(params, restrictions) == expected


@pytest.mark.parametrize(("chunk", "scan", "cases"), [(None, None, 400), (4, 1 << 22, 150), (4, 4, 150)])
def test_random_restriction_lists_match_python_config_by_config(monkeypatch, chunk, scan, cases) -> None:
    """Also with ``_raising_values`` past its grid cap: tried in chunks, or taken to raise on every value."""
    if chunk is not None:
        monkeypatch.setattr(space_module, "_RAISING_CHECK", chunk)
        monkeypatch.setattr(space_module, "_RAISING_SCAN", scan)
    atoms = ["x > 1", "x is not None", "x is None", "y > 1", "y == 'a'", "y != 'b'", "z > 0", "z % 2 == 0",
             "x > y", "x + z > 2", "y is not None", "y > 'a'", "x < z", "w > 3", "w == 1", "z == 3", "False",
             "x is not None and x > 2", "y is None or y > 'a'", "z > 5", "w + z > 6"]
    rng = random.Random(7)
    errors = 0
    for _ in range(cases):
        params = {"x": rng.sample([None, 0, 1, 2, 3, 4], rng.randint(1, 4)),
                  "y": rng.sample([None, "a", "b", 1, 2], rng.randint(1, 3)),
                  "z": rng.sample([0, 1, 2, 3, 5, 7], rng.randint(1, 4)), "w": rng.sample([1, 2, 3, 4, 5], 3)}
        restrictions = rng.sample(atoms, rng.randint(1, 4))
        expected = python_order(params, restrictions)
        errors += expected == ERROR
        assert enumerated(params, restrictions) == expected, (params, restrictions)
    assert cases / 8 < errors < cases * 7 / 8  # both outcomes are exercised


def test_numeric_spaces_pay_nothing_for_the_order_check(monkeypatch) -> None:
    """A restriction that raises on none of its own values is not checked again (no second enumeration)."""
    params = {f"p{i}": list(range(12)) for i in range(6)}
    restrictions = ["p0 + p1 + p2 < 20", "p3 * p4 > 30", "p5 % 3 == 0", "p0 < 3", "p4 > 9"]
    space = SearchSpace(dict(params), restrictions)
    calls = []
    build = SearchSpace._build
    monkeypatch.setattr(SearchSpace, "_build", lambda self, *a: calls.append(1) or build(self, *a))
    expected = [v for v in itertools.product(*params.values())
                if v[0] + v[1] + v[2] < 20 and v[3] * v[4] > 30 and v[5] % 3 == 0 and v[0] < 3 and v[4] > 9]
    frame = space.enumerate()
    assert list(frame.itertuples(index=False, name=None)) == expected and len(calls) == 1
    assert np.all(space.mask(frame))


def spy_builds(monkeypatch) -> list[int]:
    """One entry per enumeration ``SearchSpace`` builds (the check's prefix spaces included)."""
    calls: list[int] = []
    build = SearchSpace._build
    monkeypatch.setattr(SearchSpace, "_build", lambda self, *a: calls.append(1) or build(self, *a))
    return calls


WIDE = {"bx": [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024], "by": [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024],
        "tx": list(range(1, 11)), "ty": list(range(1, 11)), "vec": [1, 2, 4, 8], "unroll": list(range(10)),
        "bpsm": [0, 1, 2, 3, 4]}
WIDE_RESTRICTIONS = ["bx*by*tx*ty*vec*unroll*bpsm <= 10**7", "bx*by<=1024", "bx*by>=256", "tx % vec == 0",
                     "tx*ty<=16", "unroll <= ty"]


def test_a_numeric_restriction_past_the_grid_cap_enumerates_no_prefix_space(monkeypatch) -> None:
    """Arithmetic and comparisons over numeric domains cannot raise: no prefix space is enumerated
    for it (it was taken to raise past 2**20 combinations of its own values, without trying)."""
    assert np.prod([len(v) for v in WIDE.values()]) > space_module._RAISING_CHECK
    space = SearchSpace(dict(WIDE), list(WIDE_RESTRICTIONS))
    calls = spy_builds(monkeypatch)
    frame = space.enumerate()
    assert len(calls) == 1 and len(frame) == 39_600 and np.all(space.mask(frame))


def test_a_restriction_the_kinds_leave_open_is_tried_in_chunks_past_the_cap(monkeypatch) -> None:
    """A string ordering (it could raise, by its kinds) over a grid past the cap, tried in chunks:
    it raises on none of its values, so no prefix space; where it raises, Python's order holds."""
    monkeypatch.setattr(space_module, "_RAISING_CHECK", 64)
    params = {"s": ["a", "b", "c"], "x": list(range(12)), "y": list(range(12)), "z": [None, 1, 2]}
    calls = spy_builds(monkeypatch)
    ok = ["s > 'a' or x + y > 20", "y > 9", "z is not None"]
    assert enumerated(params, ok) == python_order(params, ok) and len(calls) == 1
    raising = ["s > 'a' or x + y > z", "y > 9", "z is not None"]  # z=None reaches x + y > z
    assert python_order(params, raising) == ERROR and enumerated(params, raising) == ERROR


def test_callables_before_a_raising_restriction_are_not_called_again(monkeypatch) -> None:
    """A Kernel Tuner callable listed first guards a restriction that raises where it rejects: the
    check does not call it on the space of the constraints before that restriction, only enumerating
    does, on the configs the string constraints keep."""
    params = {"pad": [None, 1, 2, 4], "t": list(range(1, 9)), "u": [1, 2, 3, 4]}
    seen = []

    def guard(config: dict) -> bool:
        seen.append(config)
        return config["pad"] is not None

    space = SearchSpace.from_kernel_tuner(dict(params), [guard, "pad * t <= 16", "t * u <= 8"])
    calls = spy_builds(monkeypatch)
    frame = space.enumerate()
    expected = [(p, t, u) for p, t, u in itertools.product(*params.values())
                if p is not None and p * t <= 16 and t * u <= 8]
    assert list(frame.itertuples(index=False, name=None)) == expected
    assert len(calls) == 1
    assert len(seen) == sum(1 for _, t, u in itertools.product(*params.values()) if t * u <= 8)
