"""SearchSpace: specs, Kernel Tuner-style restrictions, enumeration, config checks and Optuna."""

from __future__ import annotations

import itertools

import numpy as np
import optuna
import pandas as pd
import pytest

from perfpred.errors import InvalidInputError
from perfpred.tuner import Continuous, SearchSpace

# A small Kernel Tuner-like space (4 * 4 * 4 * 2 * 3 = 384 points) and its restrictions.
TUNE_PARAMS = {
    "block_size_x": [16, 32, 64, 128],
    "block_size_y": [1, 2, 4, 8],
    "tile_size_x": [1, 2, 3, 4],
    "tile_size_y": [1, 2],
    "vec": [1, 2, 4],
}
STRING_RESTRICTIONS = [
    "block_size_x * block_size_y >= 32 and block_size_x * block_size_y <= 512",
    "tile_size_x % vec == 0 or vec == 1",
    "block_size_x % (vec * 16) == 0 or tile_size_y == 2 and block_size_y > 1",
]


def _python_restriction(expr: str, config: dict) -> bool:
    """Kernel Tuner's own semantics: a restriction is a Python expression over the params."""
    return bool(eval(expr, {"__builtins__": {}}, dict(config)))


def brute_force(tune_params: dict, restrictions: list) -> list[dict]:
    """Every valid config by a plain Python loop, in the cartesian (first param slowest) order."""
    names = list(tune_params)
    out = []
    for values in itertools.product(*tune_params.values()):
        config = dict(zip(names, values, strict=True))
        ok = True
        for r in restrictions:
            if callable(r):
                ok &= bool(np.asarray(r(pd.DataFrame([config])))[0])
            else:
                ok &= _python_restriction(r, config)
        if ok:
            out.append(config)
    return out


def assert_one_line_error(excinfo: pytest.ExceptionInfo, *fragments: str) -> None:
    message = str(excinfo.value)
    assert message and "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message


# ---------------------------------------------------------------------------- constructors


def test_from_dict_builds_lists_and_ranges() -> None:
    space = SearchSpace.from_dict({
        "params": {"bx": [16, 32], "lr": {"low": 1e-4, "high": 1.0, "log": True},
                   "n": {"low": 1, "high": 64, "integer": True}},
        "constraints": ["bx >= 16"],
    })
    assert space.names == ["bx", "lr", "n"]
    assert space.params["bx"] == [16, 32]
    assert space.params["lr"] == Continuous(1e-4, 1.0, log=True)
    assert space.params["n"] == Continuous(1, 64, integer=True)
    assert space.constraints == ["bx >= 16"]
    assert not space.is_finite and space.cartesian_size() == float("inf")


def test_from_kernel_tuner_keeps_order_and_restrictions() -> None:
    space = SearchSpace.from_kernel_tuner({k: tuple(v) for k, v in TUNE_PARAMS.items()}, STRING_RESTRICTIONS)
    assert space.names == list(TUNE_PARAMS)
    assert all(isinstance(space.params[k], list) for k in TUNE_PARAMS)
    assert space.constraints == STRING_RESTRICTIONS
    assert space.is_finite and space.cartesian_size() == 4 * 4 * 4 * 2 * 3
    assert SearchSpace.from_kernel_tuner({"x": [1, 2]}).constraints == []


def test_from_yaml(tmp_path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text("params:\n  x: [1, 2, 4]\n  y: {low: 0.5, high: 2.0}\nconstraints:\n  - x > 1\n")
    space = SearchSpace.from_yaml(str(path))
    assert space.params == {"x": [1, 2, 4], "y": Continuous(0.5, 2.0)}
    assert space.constraints == ["x > 1"]


@pytest.mark.parametrize(
    ("spec", "fragments"),
    [
        ({"params": {"x": []}}, ["'x'", "non-empty"]),
        ({"params": {"x": [1, 2, 1]}}, ["'x'", "twice"]),
        ({"params": {}}, ["at least one parameter"]),
        ({"params": {"x": [1]}, "constrains": ["x > 0"]}, ["unknown", "constrains"]),
        ({"parameters": {"x": [1]}}, ["'params'"]),
        ({"params": {"x": {"low": 3, "high": 1}}}, ["low <= high", "low=3", "high=1"]),
        ({"params": {"x": {"low": 0, "high": 1, "log": True}}}, ["low > 0", "low=0"]),
        ({"params": {"x": {"low": 1}}}, ["'x'", "low, high"]),
        ({"params": {"x": {"low": 1, "high": 2, "step": 1}}}, ["'x'", "step"]),
        ({"params": {"1x": [1]}}, ["identifiers", "'1x'"]),
        ({"params": {"block-size": [1]}}, ["identifiers", "'block-size'"]),
        ({"params": {"x": 5}}, ["'x'", "non-empty list"]),
        ({"params": {"x": "abc"}}, ["'x'", "list"]),  # a YAML typo, not the values a, b, c
        ({"params": [["x", [1, 2]]]}, ["params"]),
        ({"params": {"x": [1, 2]}, "constraints": "x > 1"}, ["constraints", "list"]),
        ({"params": {"x": {"low": "small", "high": 1}}}, ["'x'", "small"]),
    ],
    ids=["empty", "duplicate", "no-params", "unknown-key", "missing-params-key", "low>high", "log-low<=0",
         "range-no-high", "range-unknown-key", "name-digit", "name-dash", "scalar-domain", "string-domain",
         "params-not-mapping", "constraints-string", "low-not-number"],
)
def test_bad_specs_give_one_line_errors(spec: dict, fragments: list[str]) -> None:
    with pytest.raises(InvalidInputError) as excinfo:
        SearchSpace.from_dict(spec)
    assert_one_line_error(excinfo, *fragments)


def test_bad_kernel_tuner_params_give_one_line_errors() -> None:
    with pytest.raises(InvalidInputError) as excinfo:
        SearchSpace.from_kernel_tuner({"block_size_x": [16, 16, 32]})
    assert_one_line_error(excinfo, "block_size_x", "twice")
    with pytest.raises(InvalidInputError) as excinfo:
        SearchSpace.from_kernel_tuner({"block size": [16]})
    assert_one_line_error(excinfo, "identifiers")


# ---------------------------------------------------------------------------- enumeration


def test_enumerate_matches_a_brute_force_loop_with_string_restrictions() -> None:
    space = SearchSpace.from_kernel_tuner(TUNE_PARAMS, STRING_RESTRICTIONS)
    got = space.enumerate()
    expected = brute_force(TUNE_PARAMS, STRING_RESTRICTIONS)
    assert 0 < len(expected) < space.cartesian_size()  # the restrictions do cut the space
    assert list(got.columns) == list(TUNE_PARAMS)
    assert got.to_dict("records") == expected  # same configs, same (cartesian) order
    assert all(pd.api.types.is_integer_dtype(got[c]) for c in got.columns)


def test_enumerate_with_callable_and_string_restrictions_together() -> None:
    def enough_threads(frame: pd.DataFrame) -> pd.Series:
        return frame["block_size_x"] * frame["block_size_y"] // frame["vec"] >= 16

    restrictions = [*STRING_RESTRICTIONS[:2], enough_threads]
    space = SearchSpace.from_kernel_tuner(TUNE_PARAMS, restrictions)
    expected = brute_force(TUNE_PARAMS, restrictions)
    assert 0 < len(expected) < len(brute_force(TUNE_PARAMS, STRING_RESTRICTIONS[:2]))
    assert space.enumerate().to_dict("records") == expected


@pytest.mark.parametrize(
    "restriction",
    [
        "x % y == 0 and x * y >= 2 or x == 0",
        "x == 1 or y == 2 and x == 3",
        "not (x == 1) and y == 1",
        "not x == 1",
        "not x > 1 or y == 2",
    ],
)
def test_restrictions_follow_python_precedence(restriction: str) -> None:
    """A restriction means what it means in Python (Kernel Tuner evaluates it with Python)."""
    params = {"x": [0, 1, 2, 3], "y": [1, 2]}
    space = SearchSpace(dict(params), [restriction])
    assert space.enumerate().to_dict("records") == brute_force(params, [restriction])


def test_enumerate_keeps_strings_bools_and_floats() -> None:
    space = SearchSpace({"mode": ["fast", "safe"], "flag": [True, False], "alpha": [0.5, 1.5]},
                        ["mode == 'fast' or alpha > 1"])
    rows = space.enumerate().to_dict("records")
    assert rows == [c for c in brute_force(space.params, []) if c["mode"] == "fast" or c["alpha"] > 1]
    assert {type(r["flag"]) for r in rows} <= {bool, np.bool_}
    assert {r["mode"] for r in rows} == {"fast", "safe"}


def test_a_constant_restriction_applies_to_every_config() -> None:
    assert len(SearchSpace({"x": [1, 2, 3]}, ["1 > 0"]).enumerate()) == 3
    assert SearchSpace({"x": [1, 2, 3]}, [lambda f: False]).enumerate().empty


def test_enumerate_refuses_continuous_spaces_and_spaces_over_the_limit() -> None:
    with pytest.raises(InvalidInputError) as excinfo:
        SearchSpace({"x": [1, 2], "lr": Continuous(0.1, 1.0)}).enumerate()
    assert_one_line_error(excinfo, "continuous")
    space = SearchSpace.from_kernel_tuner(TUNE_PARAMS)
    with pytest.raises(InvalidInputError) as excinfo:
        space.enumerate(limit=100)
    assert_one_line_error(excinfo, "100", "384")
    assert len(space.enumerate(limit=384)) == 384


def test_bad_restrictions_give_one_line_errors() -> None:
    with pytest.raises(InvalidInputError) as excinfo:  # refused when the space is built
        SearchSpace({"x": [1, 2]}, ["x * unknown_param > 2"])
    assert_one_line_error(excinfo, "unknown_param")
    space = SearchSpace({"x": [1, 2]}, [lambda f: np.ones(7, dtype=bool)])
    with pytest.raises(InvalidInputError) as excinfo:
        space.enumerate()
    assert_one_line_error(excinfo, "one boolean per config", "(7,)")


# ---------------------------------------------------------------------------- single configs


def test_check_config_and_is_valid() -> None:
    space = SearchSpace({"bx": [16, 32, 64], "lr": Continuous(0.01, 1.0, log=True)}, ["bx * lr >= 1"])
    space.check_config({"bx": 32, "lr": 0.5})
    assert space.is_valid({"bx": 32, "lr": 0.5})
    assert not space.is_valid({"bx": 16, "lr": 0.01})  # in the domains, but violates the constraint
    with pytest.raises(InvalidInputError) as excinfo:
        space.check_config({"bx": 16, "lr": 0.01})
    assert_one_line_error(excinfo, "violates")
    space.check_config({"bx": 16, "lr": 0.01}, constraints=False)
    for config, fragments in [
        ({"bx": 32}, ["missing ['lr']"]),
        ({"bx": 32, "lr": 0.5, "by": 1}, ["unknown ['by']"]),
        ({"bx": 48, "lr": 0.5}, ["bx=48", "domain"]),
        ({"bx": 32, "lr": 2.0}, ["lr <= 1.0", "lr=2.0"]),
    ]:
        with pytest.raises(InvalidInputError) as excinfo:
            space.check_config(config)
        assert_one_line_error(excinfo, *fragments)
        with pytest.raises(InvalidInputError):
            space.is_valid(config)


def test_every_enumerated_config_is_valid_and_the_rest_are_not() -> None:
    space = SearchSpace.from_kernel_tuner(TUNE_PARAMS, STRING_RESTRICTIONS)
    valid = {tuple(r.values()) for r in space.enumerate().to_dict("records")}
    names = list(TUNE_PARAMS)
    for values in itertools.islice(itertools.product(*TUNE_PARAMS.values()), 0, None, 7):
        assert space.is_valid(dict(zip(names, values, strict=True))) == (values in valid)


# ---------------------------------------------------------------------------- Optuna


def test_optuna_distributions() -> None:
    space = SearchSpace({"bx": [16, 32], "mode": ["a", "b"], "lr": Continuous(1e-4, 1.0, log=True),
                         "n": Continuous(1, 64, integer=True), "alpha": Continuous(0.0, 1.0)})
    d = space.optuna_distributions()
    assert d["bx"] == optuna.distributions.CategoricalDistribution([16, 32])
    assert d["mode"] == optuna.distributions.CategoricalDistribution(["a", "b"])
    assert d["lr"] == optuna.distributions.FloatDistribution(1e-4, 1.0, log=True)
    assert d["n"] == optuna.distributions.IntDistribution(1, 64)
    assert d["alpha"] == optuna.distributions.FloatDistribution(0.0, 1.0)


def test_suggest_with_an_optuna_trial() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = SearchSpace({"bx": [16, 32, 64], "mode": ["a", "b"], "lr": Continuous(1e-4, 1.0, log=True),
                         "n": Continuous(1, 64, integer=True)})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(20):
        trial = study.ask()
        config = space.suggest(trial)
        assert list(config) == space.names
        space.check_config(config)
        assert isinstance(config["n"], int)
        assert trial.params == config
        study.tell(trial, float(config["bx"]))
    # the distributions a trial records are the space's own
    assert study.trials[0].distributions == space.optuna_distributions()
    fixed = {"bx": 32, "mode": "b", "lr": 0.01, "n": 7}
    assert space.suggest(optuna.trial.FixedTrial(fixed)) == fixed
