"""Search spaces: named parameters, finite or continuous, with constraints.

A finite space enumerates into a DataFrame without a Python loop per config: parameters join
a table of partial configs one at a time (numpy repeat/tile, in blocks), and each constraint
filters that table as soon as every parameter it names is in it, so memory and time follow the
largest table of partial configs that meet the constraints so far, not the cartesian product
(Kernel Tuner's GEMM-like spaces of 1e7-1e8 cartesian configs and 1e5-1e6 valid ones build in
about a second). Parameters that no constraint links are enumerated apart and joined at the
end; the rows come out in the cartesian order (first parameter slowest), as ``itertools.product``
lists them (Kernel Tuner 1.5's ``Searchspace.list`` holds the same set in another order).

Constraints are strings in the syntax of Kernel Tuner's ``restrictions``
(``"MWG % (MDIMC * VWM) == 0"``), read as the Python expressions they are (``ast``) and evaluated
on numpy arrays with Python's meaning: its operator precedence (``a & c == 0`` is
``(a & c) == 0``), ``and``/``or``/``not`` and ``x if c else y`` per config, with Python's short
circuit (``b == 0 or a % b == 0`` is fine where ``b`` is 0), chained comparisons, ``in [...]``,
``is None`` and the functions ``min``, ``max``, ``abs``, ``int``, ``float``, ``round``. A config
whose restriction divides by zero (``/``, ``//``, ``%``, ``0 ** -1``) or shifts by a negative
count, which Python would raise on, is invalid: it is dropped, for every operator alike. A
comparison Python refuses (``None > 1``, a string with a number by order) is a one-line error
naming the values. A constraint may also be a callable taking the DataFrame of candidates and
returning a boolean mask (``SearchSpace.from_kernel_tuner`` takes Kernel Tuner's callables
instead, which get one config as a dict, and calls them config by config); a callable says
nothing of the parameters it reads, so it filters the whole table at the end. Constraints
mean what they do in Python's list order: one is evaluated only on the configs every constraint
listed before it kept (a guard such as ``x is not None`` first protects ``x > 2`` after it), so
a restriction that raises while enumerating is set aside and applied at the end, in that order,
with the callables; it is an error exactly where Python's order makes it one, on a config the
constraints before it kept, even where one listed after it rejects that config (enumerating
applies restrictions as their parameters join, not in list order, so a restriction a later one
kept from raising is checked again on the values it raises on; a callable is checked only on
the configs that reach it at the end, and a restriction listed after a callable only on the
configs enumerating evaluated it on, which a string constraint listed after it may have
filtered first: checking it again on the space of the constraints before it would call the
callable again). Integer ``+``, ``-``, ``*``, ``//``, ``**``, ``<<``, negation, ``abs``, and
``int``/``round`` of a float, that would leave int64's range compute with Python's ints, and
``round(x, n)`` is Python's. String constraints are checked (syntax, names, functions) when
the space is built.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import math
import operator
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from perfpred.datasets._schema import is_number, python_scalar
from perfpred.errors import InvalidInputError

Constraint = str | Callable[[pd.DataFrame], Any]

# The most configs ``enumerate`` builds (and that ``enumerable`` allows): it bounds the valid
# configs, and every table of partial configs that meet the constraints on their parameters.
MAX_ENUMERATE = 5_000_000
# Partial configs checked against the constraints while enumerating, per ``limit`` config: past
# ``CHECK_FACTOR * limit`` (or 10 million, whichever is more) the space is too large to enumerate.
CHECK_FACTOR = 20
_BLOCK = 1 << 20  # partial configs built and checked at a time

# Kernel Tuner's thread-block parameters (``kernel_tuner.util.default_block_size_names``): its
# Searchspace caps their product at the device's max_threads.
KT_BLOCK_SIZE_NAMES = ("block_size_x", "block_size_y", "block_size_z")

# Columns the tuners' histories add beside the parameters (``TuneResult.history``, ``StudyRecorder.history``,
# ``ParetoResult.history`` and the history.csv files written from them): a parameter of one of these names
# would be overwritten there.
RESERVED_NAMES = ("value", "status", "predicted", "iteration", "elapsed_s", "worker", "trial", "feasible")


class _TooLarge(InvalidInputError):
    """The space holds more configs (or partial configs) than ``enumerate``'s limit."""


def _repeated_value(values: Sequence[Any]) -> tuple[Any, Any] | None:
    """The first two values of ``values`` that compare equal (``1`` and ``1.0``, or one value twice), or None."""
    seen: dict[Any, Any] = {}
    unhashable: list[Any] = []
    for v in values:
        try:
            if v in seen:
                return seen[v], v
            seen[v] = v
        except TypeError:  # unhashable (a list): compare with everything before it
            for w in [*seen.values(), *unhashable]:
                try:
                    if bool(w == v):
                        return w, v
                except Exception:
                    continue
            unhashable.append(v)
    return None


# ---------------------------------------------------------------------------- YAML 1.2


def _yaml12_int(loader: Any, node: Any) -> int:
    """An int scalar: YAML 1.2's core forms (``010`` is 10); an explicit ``!!int`` in another
    form (``-0x10``, ``0b11``, ``1:30``) as PyYAML's safe loader reads it, else a YAML error."""
    import yaml

    text = loader.construct_scalar(node)
    try:
        if text.startswith(("0o", "0x")):
            return int(text[2:], 8 if text[1] == "o" else 16)
        return int(text)  # "010" is 10, as in YAML 1.2 (1.1 read it as octal 8)
    except ValueError:
        pass
    try:
        return yaml.SafeLoader.construct_yaml_int(loader, node)
    except (ValueError, IndexError):
        raise yaml.constructor.ConstructorError(None, None, f"cannot read {text!r} as an integer",
                                                node.start_mark) from None


@functools.cache
def _yaml_loader() -> Any:
    """PyYAML's safe loader reading plain scalars by YAML 1.2's core schema: only
    true/false (any case as the schema spells them) are booleans (``on``, ``off``, ``yes``, ``no``
    are text), ``010`` is 10, ``0o10`` 8, ``0x10`` 16, ``1e3`` is 1000.0, ``1:30`` and dates are
    text, and ``null``/``~``/nothing is None."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.yaml_implicit_resolvers = {}  # no YAML 1.1 rule is inherited
    core = [
        ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
        ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
        ("tag:yaml.org,2002:float",
         r"""^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?
             |[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""", "-+0123456789."),
        ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
        ("tag:yaml.org,2002:merge", r"^(?:<<)$", "<"),
    ]
    for tag, pattern, first in core:
        Loader.add_implicit_resolver(tag, re.compile(pattern, re.X), list(first))
    Loader.add_constructor("tag:yaml.org,2002:int", _yaml12_int)
    return Loader


def read_yaml(stream: Any) -> Any:
    """YAML text (or an open file) as Python, plain scalars read as YAML 1.2 reads them
    (``_yaml_loader``: ``1e3`` is a float, ``yes``/``on`` are text, ``010`` is 10)."""
    import yaml

    return yaml.load(stream, Loader=_yaml_loader())


# ---------------------------------------------------------------------------- value arrays


def _value_kind(values: Sequence[Any]) -> str:
    """'bool', 'int', 'float', 'number' (ints and floats mixed) or 'object' for a domain."""
    kinds = set()
    for v in values:
        if isinstance(v, (bool, np.bool_)):
            kinds.add("bool")
        elif isinstance(v, (int, np.integer)):
            kinds.add("int" if -(2**63) <= int(v) < 2**63 else "object")
        elif isinstance(v, (float, np.floating)):
            kinds.add("float")
        else:
            kinds.add("object")
    if len(kinds) == 1:
        return kinds.pop()
    return "number" if kinds == {"int", "float"} else "object"


def _domain_arrays(values: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """A domain as (the array configs are read from, the array constraints compute on).

    Integers stay integers beside floats, as Kernel Tuner hands them back (``[1, 2, 0.5]``
    gives the int 1, in an object column); constraints see such a mix as float64.
    """
    kind = _value_kind(values)
    if kind in ("bool", "int", "float"):
        arr = np.asarray([python_scalar(v) for v in values], dtype={"bool": bool, "int": np.int64,
                                                                    "float": np.float64}[kind])
        return arr, arr
    out = np.empty(len(values), dtype=object)
    out[:] = [python_scalar(v) for v in values]
    if kind == "number" and all(abs(v) < 2**53 for v in out if isinstance(v, int)):
        return out, out.astype(np.float64)
    return out, out


def _column(values: np.ndarray, domain: np.ndarray) -> Any:
    """``values`` (drawn from ``domain``) as a DataFrame column: where the domain holds None,
    an object column (pandas would read strings beside None as its string dtype, None as NaN)."""
    if domain.dtype == object and any(v is None for v in domain):
        return pd.Series(values, dtype=object, copy=False)
    return values


def _eval_column(values: np.ndarray) -> np.ndarray:
    """A column of candidates as constraints compute on it (an object column of numbers as numbers)."""
    if values.dtype != object:
        return values
    inferred = pd.api.types.infer_dtype(values, skipna=False)
    if inferred == "integer":
        try:
            return values.astype(np.int64)
        except OverflowError:
            return values
    if inferred in ("floating", "mixed-integer-float"):
        return values.astype(np.float64)
    if inferred == "boolean":
        return values.astype(bool)
    return values


# ---------------------------------------------------------------------------- string restrictions

_FUNCTIONS = ("abs", "float", "int", "max", "min", "round")
_ARITH: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
    ast.BitAnd: operator.and_, ast.BitOr: operator.or_, ast.BitXor: operator.xor,
    ast.LShift: operator.lshift, ast.RShift: operator.rshift,
}
_COMPARE: dict[type, Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge,
}


def _syntax_error(text: str, why: str) -> InvalidInputError:
    return InvalidInputError(f"constraint {text!r} is not a valid restriction: {why}")


class _Restriction:
    """A restriction string parsed once: its tree and the names it reads."""

    def __init__(self, text: str) -> None:
        self.text = text
        source = text.strip()
        try:
            self.tree = ast.parse(source, mode="eval").body
        except SyntaxError as exc:
            try:
                statement = ast.parse(source, mode="exec").body
            except SyntaxError:
                statement = []
            if len(statement) == 1 and isinstance(statement[0], (ast.Assign, ast.AugAssign, ast.AnnAssign)):
                raise InvalidInputError(f"constraint {text!r} is an assignment; a restriction must be a boolean "
                                        "expression (compare with `==`, not `=`)") from None
            where = f" at column {exc.offset}" if exc.offset else ""
            raise _syntax_error(text, f"{exc.msg}{where}") from None
        names: list[str] = []
        self._check(self.tree, names)
        self.names = tuple(dict.fromkeys(names))

    def _check(self, node: ast.AST, names: list[str]) -> None:
        """Refuse what the evaluator does not compute (one-line errors), and collect the names."""
        text = self.text
        if isinstance(node, ast.Name):
            names.append(node.id)
        elif isinstance(node, ast.Constant):
            if not (node.value is None or isinstance(node.value, (bool, int, float, str))):
                raise _syntax_error(text, f"the constant {node.value!r} is not a number, string, boolean or None")
        elif isinstance(node, ast.BoolOp):
            for value in node.values:
                self._check(value, names)
        elif isinstance(node, ast.BinOp):
            if type(node.op) not in _ARITH:
                raise _syntax_error(text, f"the operator {type(node.op).__name__} is not supported")
            self._check(node.left, names)
            self._check(node.right, names)
        elif isinstance(node, ast.UnaryOp):
            self._check(node.operand, names)
        elif isinstance(node, ast.IfExp):
            for part in (node.test, node.body, node.orelse):
                self._check(part, names)
        elif isinstance(node, ast.Compare):
            self._check(node.left, names)
            operands = [node.left, *node.comparators]
            for i, (op, right) in enumerate(zip(node.ops, node.comparators, strict=True)):
                if isinstance(op, (ast.In, ast.NotIn)):
                    if len(node.ops) > 1:
                        raise _syntax_error(text, "write an `in` test on its own, not in a chain of comparisons")
                    if not isinstance(right, (ast.List, ast.Tuple, ast.Set)):
                        raise _syntax_error(text, "`in` needs a literal list of values on its right, "
                                                  "e.g. `x in [1, 2, 4]`")
                    for element in right.elts:
                        self._check(element, names)
                    continue
                if isinstance(op, (ast.Is, ast.IsNot)) and not any(
                        isinstance(o, ast.Constant) and o.value is None for o in operands[i:i + 2]):
                    raise _syntax_error(text, "`is` compares with None only; compare values with `==`")
                self._check(right, names)
        elif isinstance(node, ast.Call):
            func = node.func.id if isinstance(node.func, ast.Name) else None
            if func not in _FUNCTIONS:
                shown = func or ast.unparse(node.func)
                raise _syntax_error(text, f"the function {shown!r} is not supported (supported: "
                                          f"{', '.join(_FUNCTIONS)})")
            if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
                raise _syntax_error(text, f"{func}() takes plain positional arguments here")
            args = node.args
            if func in ("min", "max") and len(args) == 1 and isinstance(args[0], (ast.List, ast.Tuple)):
                args = args[0].elts
            wanted = {"min": (2, None), "max": (2, None), "round": (1, 2)}.get(func, (1, 1))
            if len(args) < wanted[0] or (wanted[1] is not None and len(args) > wanted[1]):
                raise _syntax_error(text, f"{func}() got {len(args)} argument(s)")
            for arg in args:
                self._check(arg, names)
        elif isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            raise _syntax_error(text, "a list is only supported after `in` or inside min()/max()")
        else:
            raise _syntax_error(text, f"{type(node).__name__} ({ast.unparse(node)!r}) is not supported")

    # -------------------------------------------------------------- evaluation
    def mask(self, env: Mapping[str, np.ndarray], n: int, explain: bool = True) -> np.ndarray:
        """Per row of ``env`` (arrays of length ``n``): whether the restriction holds; a row on
        which Python would divide by zero is False; anything else Python refuses is an error
        (naming the first config it fails on, unless ``explain`` is False)."""
        try:
            value, err = _evaluate(self.tree, env, n)
            ok = _truth(value, n)
        except InvalidInputError:
            raise
        except Exception as exc:
            if not explain:
                raise InvalidInputError(f"constraint {self.text!r} cannot be evaluated") from None
            raise self._failure(env, n, exc) from None
        return ok & ~err if err is not None else ok

    def _failure(self, env: Mapping[str, np.ndarray], n: int, exc: Exception) -> InvalidInputError:
        """A one-line error naming the first config the restriction cannot be evaluated on."""
        for i in range(min(n, 10_000)):
            row = {k: v[i:i + 1] for k, v in env.items()}
            try:
                _truth(_evaluate(self.tree, row, 1)[0], 1)
            except Exception as first:
                values = ", ".join(f"{k}={python_scalar(v[i])!r}" for k, v in env.items())
                where = f" where {values}" if values else ""
                return InvalidInputError(f"constraint {self.text!r} cannot be evaluated{where}: "
                                         f"{type(first).__name__}: {first}")
        return InvalidInputError(f"constraint {self.text!r} cannot be evaluated: {type(exc).__name__}: {exc}")


@functools.lru_cache(maxsize=1024)
def _parsed(text: str) -> _Restriction:
    return _Restriction(text)


def _truth(value: Any, n: int) -> np.ndarray:
    """Python's truth of each value, as a bool array of length ``n``."""
    if isinstance(value, np.ndarray) and value.ndim == 1:
        if value.dtype == bool:
            return value
        if value.dtype.kind in "US":
            value = value.astype(object)
        return value.astype(bool)  # numbers: != 0; objects: bool() of each
    return np.full(n, bool(value))


def _arith(value: Any) -> Any:
    """Booleans as Python computes with them (``True + True == 2``), not numpy's logic."""
    if isinstance(value, np.ndarray) and value.dtype == bool:
        return value.astype(np.int64)
    return value


def _or(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    if a is None:
        return b
    return a if b is None else a | b


def _mask_of(flag: Any, n: int) -> np.ndarray | None:
    """A condition (scalar or array) as a bool array of length n, or None where it holds nowhere."""
    arr = np.asarray(flag, dtype=bool)
    if arr.ndim == 0:
        return np.ones(n, dtype=bool) if arr else None
    return arr if arr.any() else None


def _subset(env: Mapping[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[rows] for k, v in env.items()}


def _common_dtype(*values: Any) -> np.dtype:
    dtypes = [np.asarray(v).dtype for v in values]
    if any(d.kind in "OUS" for d in dtypes):
        return np.dtype(object)
    try:
        return np.result_type(*dtypes)
    except TypeError:
        return np.dtype(object)


def _select(n: int, picks: list[tuple[np.ndarray, Any]]) -> Any:
    """One array of length ``n`` made of parts: (rows, values for those rows) each."""
    picks = [(rows, value) for rows, value in picks if rows.any()]
    if len(picks) == 1 and picks[0][0].all():
        return picks[0][1]
    out = np.empty(n, dtype=_common_dtype(*[v for _, v in picks]) if picks else bool)
    for rows, value in picks:
        out[rows] = value
    return out


def _evaluate(node: ast.AST, env: Mapping[str, np.ndarray], n: int) -> tuple[Any, np.ndarray | None]:
    """(value, rows where Python would have raised ZeroDivisionError or a negative shift) of a
    parsed restriction over ``env``'s rows; a value is a Python scalar or an array of length n.
    Parts Python's short circuit skips are computed only on the rows that reach them."""
    if isinstance(node, ast.Constant):
        return node.value, None
    if isinstance(node, ast.Name):
        return env[node.id], None
    if isinstance(node, ast.UnaryOp):
        value, err = _evaluate(node.operand, env, n)
        if isinstance(node.op, ast.Not):
            return (not value) if not isinstance(value, np.ndarray) else ~_truth(value, n), err
        value = _arith(value)
        if isinstance(node.op, ast.USub) and _holds_int64_min(value):
            value = _objects(value)  # -(-2**63) leaves int64 (numpy wraps it back): Python's ints
        return {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Invert: operator.invert}[type(node.op)](value), err
    if isinstance(node, ast.BinOp):
        left, err_l = _evaluate(node.left, env, n)
        right, err_r = _evaluate(node.right, env, n)
        value, err = _binop(type(node.op), _arith(left), _arith(right), n)
        return value, _or(_or(err_l, err_r), err)
    if isinstance(node, ast.BoolOp):
        return _boolop(node, env, n)
    if isinstance(node, ast.IfExp):
        test, err = _evaluate(node.test, env, n)
        cond = _truth(test, n)
        parts, errors = [], np.zeros(n, dtype=bool) if err is None else err.copy()
        for rows, branch in ((cond, node.body), (~cond, node.orelse)):
            if not rows.any():
                continue
            value, branch_err = _evaluate(branch, _subset(env, rows), int(rows.sum()))
            parts.append((rows, value))
            if branch_err is not None:
                errors[rows] |= branch_err
        return _select(n, parts), errors
    if isinstance(node, ast.Compare):
        return _compare(node, env, n)
    if isinstance(node, ast.Call):
        return _call(node, env, n)
    raise AssertionError(f"unchecked node {type(node).__name__}")  # _Restriction._check refuses it


def _binop(op: type, left: Any, right: Any, n: int) -> tuple[Any, np.ndarray | None]:
    fn = _ARITH[op]
    if not isinstance(left, np.ndarray) and not isinstance(right, np.ndarray):
        try:
            return fn(left, right), None
        except (ZeroDivisionError, ValueError):  # 1 / 0, 1 << -1: every row divides by zero
            return 0, np.ones(n, dtype=bool)
    bad: Any = False
    if op in (ast.Div, ast.FloorDiv, ast.Mod):
        bad = right == 0
    elif op in (ast.LShift, ast.RShift):
        bad = right < 0
    elif op is ast.Pow:
        left_arr, right_arr = np.asarray(left), np.asarray(right)
        if left_arr.dtype != object and right_arr.dtype != object:
            bad = (left == 0) & (right < 0)
            if left_arr.dtype.kind in "iu" and right_arr.dtype.kind in "iu" and np.any(right_arr < 0):
                left = np.asarray(left, dtype=np.float64)  # Python: 2 ** -1 == 0.5
    err = _mask_of(bad, n)
    if err is not None:
        # compute on a harmless operand where Python would have raised; those rows are dropped
        if op is ast.Pow:
            left = np.where(err, 1, left)
        else:
            right = np.where(err, 1, right)
    if _is_int(left) and _is_int(right) and (_past_int64(left) or _past_int64(right)
                                             or (op in _MAY_WRAP and _leaves_int64(op, left, right))):
        return fn(_objects(left), _objects(right)), err  # Python's ints, which do not wrap
    return fn(left, right), err


# Integer operators whose result can leave int64's range (numpy wraps it around, or refuses a
# Python int operand past int64): computed with Python's ints where it would.
_MAY_WRAP = (ast.Add, ast.Sub, ast.Mult, ast.Pow, ast.LShift, ast.FloorDiv)
_INT64_MIN = -(2**63)


def _is_int(value: Any) -> bool:
    if isinstance(value, np.ndarray):
        return value.dtype.kind in "iu"
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _magnitude(value: Any) -> int:
    """The largest absolute value of an integer array (or scalar), exactly."""
    if isinstance(value, np.ndarray):
        return max(abs(int(value.min())), abs(int(value.max()))) if len(value) else 0
    return abs(int(value))


def _past_int64(value: Any) -> bool:
    """Whether a scalar is an int numpy cannot hold as int64 (a constant ``2**70``)."""
    return not isinstance(value, np.ndarray) and not _INT64_MIN <= int(value) < 2**63


def _holds_int64_min(value: Any) -> bool:
    """Whether an int64 array holds -2**63, whose negation (and abs) numpy wraps back to itself."""
    return (isinstance(value, np.ndarray) and value.dtype == np.int64 and len(value) > 0
            and int(value.min()) == _INT64_MIN)


def _leaves_int64(op: type, left: Any, right: Any) -> bool:
    """Whether an integer ``+``, ``-``, ``*``, ``**``, ``<<`` or ``//`` would leave int64's range
    somewhere (where numpy wraps around): ``+``/``-`` by the operands' largest magnitudes (exact),
    ``//`` only at ``-2**63 // -1``, the others judged in float64 with a margin for its rounding."""
    if op in (ast.Add, ast.Sub):
        return _magnitude(left) + _magnitude(right) > 2**63 - 1
    if op is ast.FloorDiv:
        return bool(np.any((np.asarray(left) == _INT64_MIN) & (np.asarray(right) == -1)))
    with np.errstate(all="ignore"):
        lf, rf = np.asarray(left, dtype=np.float64), np.asarray(right, dtype=np.float64)
        if op is ast.Mult:
            size = np.abs(lf) * np.abs(rf)
        elif op is ast.Pow:
            size = np.abs(lf) ** rf
        else:
            size = np.abs(lf) * np.exp2(rf)
        return not bool(np.all(size < 2.0**62))


def _boolop(node: ast.BoolOp, env: Mapping[str, np.ndarray], n: int) -> tuple[Any, np.ndarray | None]:
    """``and``/``or`` per row with Python's value and short circuit: a later operand is computed
    only on the rows still undecided."""
    is_and = isinstance(node.op, ast.And)
    pending = np.ones(n, dtype=bool)
    parts: list[tuple[np.ndarray, Any]] = []
    errors = np.zeros(n, dtype=bool)
    for k, operand in enumerate(node.values):
        rows = np.flatnonzero(pending)
        if len(rows) == 0:
            break
        sub = env if len(rows) == n else _subset(env, rows)
        value, err = _evaluate(operand, sub, len(rows))
        if err is not None:
            errors[rows[err]] = True
        if k == len(node.values) - 1:
            decided = np.ones(len(rows), dtype=bool)
        else:
            truth = _truth(value, len(rows))
            decided = ~truth if is_and else truth
        taken = np.zeros(n, dtype=bool)
        taken[rows[decided]] = True
        if isinstance(value, np.ndarray) and not decided.all():
            value = value[decided]
        parts.append((taken, value))
        pending[rows[decided]] = False
    return _select(n, parts), errors if errors.any() else None


def _compare(node: ast.Compare, env: Mapping[str, np.ndarray], n: int) -> tuple[Any, np.ndarray | None]:
    """A comparison chain ``a < b < c``: each link computed on the rows the links before hold on."""
    left, errors = _evaluate(node.left, env, n)
    result = np.ones(n, dtype=bool)
    rows = np.arange(n)
    sub = env
    for op, right_node in zip(node.ops, node.comparators, strict=True):
        m = len(rows)
        if isinstance(op, (ast.In, ast.NotIn)):
            hit: Any = False
            for element in right_node.elts:  # type: ignore[attr-defined]
                value, err = _evaluate(element, sub, m)
                errors = _scatter_err(errors, err, rows, n)
                hit = hit | _truth(left == value, m)
            link = _truth(hit, m)
            link = ~link if isinstance(op, ast.NotIn) else link
            right = None
        else:
            right, err = _evaluate(right_node, sub, m)
            errors = _scatter_err(errors, err, rows, n)
            if isinstance(op, (ast.Is, ast.IsNot)):
                against_none = isinstance(right_node, ast.Constant) and right_node.value is None
                link = _is_none(left if against_none else right, m)
                link = ~link if isinstance(op, ast.IsNot) else link
            else:
                link = _truth(_COMPARE[type(op)](left, right), m)
        fail = ~link
        result[rows[fail]] = False
        keep = ~fail
        if keep.all():
            left = right
            continue
        rows = rows[keep]
        if len(rows) == 0:
            break
        sub = _subset(env, rows)
        left = right[keep] if isinstance(right, np.ndarray) else right
    return result, errors


def _scatter_err(errors: np.ndarray | None, err: np.ndarray | None, rows: np.ndarray, n: int) -> np.ndarray | None:
    if err is None:
        return errors
    full = np.zeros(n, dtype=bool) if errors is None else errors
    full[rows[err]] = True
    return full


def _is_none(value: Any, m: int) -> np.ndarray:
    if isinstance(value, np.ndarray):
        if value.dtype != object:
            return np.zeros(m, dtype=bool)
        return np.fromiter((v is None for v in value), dtype=bool, count=len(value))
    return np.full(m, value is None)


def _call(node: ast.Call, env: Mapping[str, np.ndarray], n: int) -> tuple[Any, np.ndarray | None]:
    func = node.func.id  # type: ignore[attr-defined]
    arg_nodes = node.args
    if func in ("min", "max") and len(arg_nodes) == 1:
        arg_nodes = arg_nodes[0].elts  # type: ignore[attr-defined]
    args, errors = [], None
    for arg in arg_nodes:
        value, err = _evaluate(arg, env, n)
        args.append(_arith(value) if func != "int" else value)
        errors = _or(errors, err)
    if not any(isinstance(a, np.ndarray) for a in args):
        if func in ("int", "round") and len(args) == 1 and isinstance(args[0], float) and not math.isfinite(args[0]):
            return 0, np.ones(n, dtype=bool)  # int(inf), round(nan): invalid, as over a column
        # anything else Python refuses (float('a')) raises: the same error as over a column
        return {"abs": abs, "float": float, "int": int, "max": max, "min": min, "round": round}[func](*args), errors
    if func in ("min", "max"):
        return functools.reduce(np.minimum if func == "min" else np.maximum, args), errors
    x = args[0]
    if func == "abs":
        return np.abs(_objects(x) if _holds_int64_min(x) else x), errors  # abs(-2**63) is 2**63
    if func == "float":
        return x.astype(np.float64) if x.dtype != object else np.array([float(v) for v in x], dtype=np.float64), errors
    if func == "int":
        if x.dtype == object:
            return np.array([int(v) for v in x], dtype=object), errors
        if x.dtype.kind == "f":
            finite = np.isfinite(x)
            bad = None if finite.all() else ~finite
            return _float_ints(np.trunc(np.where(finite, x, 0))), _or(errors, bad)
        return x.astype(np.int64), errors
    # round
    if len(args) == 2:
        return _round_digits(x, args[1]), errors
    if x.dtype.kind == "f":
        finite = np.isfinite(x)
        bad = None if finite.all() else ~finite
        return _float_ints(np.round(np.where(finite, x, 0))), _or(errors, bad)
    return x, errors


def _float_ints(x: np.ndarray) -> np.ndarray:
    """Integral floats as ints: int64, or Python's ints where one is past int64 (``int(1e19)``)."""
    if len(x) and not np.all(np.abs(x) < 2.0**63):
        out = np.empty(len(x), dtype=object)
        out[:] = [int(v) for v in x.tolist()]
        return out
    return x.astype(np.int64)


def _objects(value: Any) -> Any:
    """An array as an object array of Python scalars (a scalar as a Python scalar)."""
    if not isinstance(value, np.ndarray):
        return python_scalar(value)
    if value.dtype == object:
        return value
    out = np.empty(len(value), dtype=object)
    out[:] = value.tolist()
    return out


def _round_digits(x: Any, digits: Any) -> Any:
    """Python's ``round(x, digits)`` per row (numpy's rounding differs: 0.15 -> 0.2), computed
    once per distinct value where ``digits`` is one number."""
    if not isinstance(digits, np.ndarray) and isinstance(x, np.ndarray) and x.dtype.kind in "iuf":
        values, inverse = np.unique(x, return_inverse=True)
        rounded = _objects(values)
        rounded[:] = [round(v, python_scalar(digits)) for v in values.tolist()]
        return _eval_column(rounded)[inverse.reshape(-1)]
    out = np.frompyfunc(round, 2, 1)(_objects(x), _objects(digits))
    return _eval_column(out) if isinstance(out, np.ndarray) else out


# ---------------------------------------------------------------------------- callables


class _PerConfig:
    """A Kernel Tuner restriction callable (one config as a dict -> bool), applied config by config."""

    def __init__(self, fn: Callable[[dict[str, Any]], Any]) -> None:
        self.fn = fn

    def __call__(self, frame: pd.DataFrame) -> np.ndarray:
        out = np.empty(len(frame), dtype=bool)
        for i, config in enumerate(frame.to_dict("records")):
            try:
                out[i] = bool(self.fn(config))
            except Exception as exc:
                first = (str(exc).splitlines() or [""])[0]
                raise InvalidInputError(f"restriction {self.fn!r} raised {type(exc).__name__}: {first} "
                                        f"for config {config}") from None
        return out

    def __repr__(self) -> str:
        return repr(self.fn)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _PerConfig) and other.fn == self.fn

    def __hash__(self) -> int:
        return hash(self.fn)


@dataclass(frozen=True)
class Continuous:
    """A real (or integer) range; ``log`` samples on a log scale."""

    low: float
    high: float
    log: bool = False
    integer: bool = False

    def __post_init__(self) -> None:
        for name in ("low", "high"):
            value = getattr(self, name)
            if not (is_number(value) and math.isfinite(value)):
                raise InvalidInputError(f"a range's {name} must be a finite number, but got {name}={value!r}")
        for name in ("log", "integer"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise InvalidInputError(f"a range's {name} must be true or false, "
                                        f"but got {name}={getattr(self, name)!r}")
        if not self.low <= self.high:
            raise InvalidInputError(f"`low <= high` must hold, but got (low={self.low}, high={self.high})")
        if self.log and self.low <= 0:
            raise InvalidInputError(f"`low > 0` must hold for a log range, but got low={self.low}")
        if self.integer and math.ceil(self.low) > math.floor(self.high):
            raise InvalidInputError(f"an integer range must hold an integer, but got (low={self.low}, "
                                    f"high={self.high})")

    @property
    def int_bounds(self) -> tuple[int, int]:
        """The lowest and highest integer of an integer range."""
        return math.ceil(self.low), math.floor(self.high)


@dataclass
class _Trace:
    """What enumerating did with the string restrictions, against Python's list order."""

    position: dict[_Restriction, int]  # each restriction's first place in the constraints
    deferred: list[_Restriction] = field(default_factory=list)  # raised on a partial table: applied at the end
    applied: list[_Restriction] = field(default_factory=list)  # filtered a partial table
    # evaluated on every config the constraints listed before it keep (no later one filtered first)
    covered: set[_Restriction] = field(default_factory=set)


_RAISING_CHECK = 1 << 20  # combinations of a restriction's own values ``_raising_values`` evaluates at a time
_RAISING_SCAN = 1 << 22  # the most it evaluates in all (past it, every value is taken to raise)
_FLOAT_SAFE = 2**1023  # an int below this converts to a float without OverflowError
_NUMPY_SAFE = 2**61  # ints below this stay in int64 arrays (the evaluator turns to Python's ints past it)


def _static_kind(node: ast.AST, kinds: Mapping[str, tuple[str, int]], nonneg: frozenset[str] = frozenset()
                 ) -> tuple[str, int] | None:
    """What a parsed restriction's node computes, where the evaluator cannot raise on it: ('int',
    bound), ('float', bound), ('num', bound) (ints and floats) or ('obj', 0) (strings, None,
    anything else: only tested for truth or compared with ``==``, ``!=``, ``is``, ``in``), the
    bound above the magnitude of every int computed on the way to it (below ``_NUMPY_SAFE``, no
    Python ints: numpy arrays); None where it may raise (ordering an 'obj', ``~`` or ``&`` of a
    float, ``**`` but of ints to powers in ``nonneg`` (names) or constants not negative, an int
    too large to convert to a float ...)."""
    def numeric(sub: ast.AST) -> tuple[str, int] | None:
        kind = _static_kind(sub, kinds, nonneg)
        return None if kind is None or kind[0] == "obj" else kind

    def join(parts: list[tuple[str, int] | None]) -> tuple[str, int] | None:
        if any(p is None for p in parts):
            return None
        found = {p[0] for p in parts}  # type: ignore[index]
        kind = found.pop() if len(found) == 1 else ("obj" if "obj" in found else "num")
        return kind, max(p[1] for p in parts)  # type: ignore[index]

    if isinstance(node, ast.Name):
        return kinds[node.id]
    if isinstance(node, ast.Constant):
        v = node.value
        if isinstance(v, (bool, int)):
            return "int", abs(int(v))
        return ("float", 0) if isinstance(v, float) else ("obj", 0)
    if isinstance(node, ast.BoolOp):
        return join([_static_kind(v, kinds, nonneg) for v in node.values])
    if isinstance(node, ast.IfExp):
        if _static_kind(node.test, kinds, nonneg) is None:
            return None
        return join([_static_kind(node.body, kinds, nonneg), _static_kind(node.orelse, kinds, nonneg)])
    if isinstance(node, ast.UnaryOp):
        if isinstance(node.op, ast.Not):
            return None if _static_kind(node.operand, kinds, nonneg) is None else ("int", 1)
        kind = numeric(node.operand)
        if kind is None or (isinstance(node.op, ast.Invert) and kind[0] != "int"):
            return None
        return kind[0], kind[1] + 1
    if isinstance(node, ast.Compare):
        operands = [node.left, *node.comparators]
        if len(node.ops) == 1 and isinstance(node.ops[0], (ast.Eq, ast.NotEq, ast.Is, ast.IsNot, ast.In, ast.NotIn)):
            if isinstance(node.ops[0], (ast.In, ast.NotIn)):
                operands = [node.left, *node.comparators[0].elts]  # type: ignore[attr-defined]
            found = [_static_kind(o, kinds, nonneg) for o in operands]
        else:  # an ordering (or a chain): numbers on every side
            found = [numeric(o) for o in operands]
        # (numpy refuses to compare a bool array with a Python int past int64)
        return ("int", 1) if all(k is not None and k[1] < _NUMPY_SAFE for k in found) else None
    if isinstance(node, ast.BinOp):
        left, right = numeric(node.left), numeric(node.right)
        if left is None or right is None:
            return None
        (lk, lb), (rk, rb) = left, right
        ints = lk == rk == "int"
        op = type(node.op)
        if op in (ast.BitAnd, ast.BitOr, ast.BitXor, ast.LShift, ast.RShift):
            if not ints or (op in (ast.LShift, ast.RShift) and rb > 4096):
                return None
            return "int", (lb << rb) + rb if op is ast.LShift else 2 * max(lb, rb) + 1
        if op is ast.Pow:  # ints in int64, to a power known not negative (a constant, or a name of such values)
            right_nonneg = (isinstance(node.right, ast.Constant) and node.right.value >= 0) or (
                isinstance(node.right, ast.Name) and node.right.id in nonneg)
            if not ints or not right_nonneg or rb > 1024 or lb >= _NUMPY_SAFE:
                return None
            return "int", max(lb, 2) ** rb + rb
        if (not ints or op is ast.Div) and max(lb, rb) >= _FLOAT_SAFE:
            return None  # an int converted to a float
        bound = {ast.Add: lb + rb, ast.Sub: lb + rb, ast.Mult: lb * rb}.get(op, 0)
        bound = max(bound, lb, rb)
        if op is ast.Div:
            return "float", bound
        return ("int" if ints else "float" if lk == rk == "float" else "num"), bound
    if isinstance(node, ast.Call):
        func = node.func.id  # type: ignore[attr-defined]
        args = node.args
        if func in ("min", "max") and len(args) == 1:
            args = args[0].elts  # type: ignore[attr-defined]
        parts = [numeric(a) for a in args]
        if any(p is None for p in parts):
            return None
        kind, bound = parts[0]  # type: ignore[misc]
        if func in ("min", "max"):  # (numpy's, which refuse a Python int past int64 beside an int64 array)
            return join(parts) if all(p[1] < _NUMPY_SAFE for p in parts) else None  # type: ignore[index]
        if func == "abs":
            return kind, bound
        if func == "float":
            return ("float", bound) if bound < _FLOAT_SAFE else None
        if func in ("int", "round") and len(parts) == 1:
            if kind == "int":
                return "int", bound
            # floats in a numpy array (inf and nan make the config invalid), not Python's floats
            return ("int", 2**1024) if bound < _NUMPY_SAFE else None
        digits = parts[1]  # round(x, n)
        if digits[0] != "int" or digits[1] >= _NUMPY_SAFE:  # type: ignore[index]
            return None
        return kind, 2 * bound + digits[1] + 1  # type: ignore[index]
    return None


def _cannot_raise(r: _Restriction, domains: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> bool:
    """Whether ``r`` evaluates without raising on any values of its parameters' domains, read
    from its tree and the domains' kinds alone (``_static_kind``): arithmetic, comparisons and
    ``and``/``or``/``not`` over numeric domains, strings and None only compared for equality."""
    kinds: dict[str, tuple[str, int]] = {}
    for name in r.names:
        values = domains[name][1]
        if values.dtype == bool:
            kinds[name] = ("int", 1)
        elif values.dtype.kind == "i":
            kinds[name] = ("int", _magnitude(values))
        elif values.dtype.kind == "f":
            kinds[name] = ("float", 0)
        elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            kinds[name] = ("int", max((abs(v) for v in values), default=0))
        else:
            kinds[name] = ("obj", 0)
    nonneg = frozenset(name for name in r.names if kinds[name][0] == "int" and (domains[name][1] >= 0).all())
    return _static_kind(r.tree, kinds, nonneg) is not None


def _raising_values(r: _Restriction, domains: Mapping[str, tuple[np.ndarray, np.ndarray]]
                    ) -> dict[str, np.ndarray] | None:
    """None where ``r`` evaluates on every combination of its parameters' values without raising
    (then it raises on no config): where ``_cannot_raise`` says so, else tried on them all, in
    chunks of ``_RAISING_CHECK``; else, per parameter, the positions of the values it raises on
    with some values of the others (a superset past ``_RAISING_CHECK`` combinations: the values
    of the chunks it raises on; every position past ``_RAISING_SCAN``)."""
    if _cannot_raise(r, domains):
        return None
    names = r.names
    sizes = [len(domains[name][1]) for name in names]
    total = math.prod(sizes)
    if total > _RAISING_SCAN:
        return {name: np.arange(size) for name, size in zip(names, sizes, strict=True)}

    def raises(codes: Mapping[str, np.ndarray], n: int) -> bool:
        try:
            r.mask({name: domains[name][1][codes[name]] for name in names}, n, explain=False)
        except InvalidInputError:
            return True
        return False

    if total > _RAISING_CHECK:
        hit = [np.zeros(size, dtype=bool) for size in sizes]
        for start in range(0, total, _RAISING_CHECK):
            rest = np.arange(start, min(total, start + _RAISING_CHECK), dtype=np.int64)
            codes = {}
            for name, size in zip(reversed(names), reversed(sizes), strict=True):  # the last fastest
                codes[name] = rest % size
                rest = rest // size
            if raises(codes, len(codes[names[0]])):
                for j, name in enumerate(names):
                    hit[j][codes[name]] = True
        if not any(h.any() for h in hit):
            return None
        return {name: np.flatnonzero(h) for name, h in zip(names, hit, strict=True)}
    if not raises(dict(zip(names, _grid(sizes), strict=True)), total):
        return None
    out = {}
    for j, name in enumerate(names):  # each value of one parameter with every combination of the others
        others = [k for k in range(len(names)) if k != j]
        rest = _grid([sizes[k] for k in others])
        m = rest.shape[1]
        codes = {names[k]: rest[i] for i, k in enumerate(others)}
        out[name] = np.array([v for v in range(sizes[j]) if raises({**codes, name: np.full(m, v)}, m)],
                             dtype=np.int64)
    return out


def _grid(sizes: Sequence[int]) -> np.ndarray:
    """Every combination of positions in domains of these sizes: one row per domain (the last fastest)."""
    if not sizes:
        return np.zeros((0, 1), dtype=np.int64)
    return np.indices(sizes, dtype=np.int64).reshape(len(sizes), -1)


def _shown(names: Sequence[str]) -> str:
    return "[" + ", ".join(names) + "]"


def _callable_mask(constraint: Callable[[pd.DataFrame], Any], frame: pd.DataFrame) -> np.ndarray:
    """A table-wide callable constraint's boolean per row of ``frame`` (a scalar answer holds for
    every row); a one-line error when it raises or answers in another shape."""
    try:
        res = np.asarray(constraint(frame))
    except InvalidInputError:
        raise
    except Exception as exc:
        raise InvalidInputError(f"constraint {constraint!r} cannot be evaluated: {type(exc).__name__}: {exc}") from None
    if res.shape == ():  # a constraint that does not depend on the params
        res = np.full(len(frame), bool(res))
    if res.shape != (len(frame),):
        raise InvalidInputError(f"constraint {constraint!r} must give one boolean per config, but got shape "
                                f"{res.shape}")
    return res.astype(bool)


@dataclass
class SearchSpace:
    """Parameters (name -> list of values, or ``Continuous``) and constraints.

    A value is a scalar: a number, string, boolean or None (a list or tuple value is an
    error). String constraints are parsed and their names checked here, when the space is
    built; see the module docstring for what they may say (Python's meaning, a division by
    zero makes a config invalid).
    """

    params: dict[str, list[Any] | Continuous]
    constraints: list[Constraint] = field(default_factory=list)
    _enumerated: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.params, Mapping) or not self.params:
            raise InvalidInputError(f"a search space needs at least one parameter, but got {self.params!r}")
        for name, dom in self.params.items():
            if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise InvalidInputError(f"parameter names must be identifiers, but got {name!r}")
            if name in RESERVED_NAMES:
                raise InvalidInputError(f"parameter names must not be one of the tuning history's own columns "
                                        f"{list(RESERVED_NAMES)}, but got {name!r}")
            if isinstance(dom, Continuous):
                continue
            if not isinstance(dom, (list, tuple)) or len(dom) == 0:
                raise InvalidInputError(f"parameter {name!r} needs a non-empty list of values, but got {dom!r}")
            for v in dom:
                if isinstance(v, (list, tuple, dict, set, frozenset, np.ndarray)):
                    raise InvalidInputError(f"parameter {name!r}: each value must be a number, string, boolean or "
                                            f"None, but got the {type(v).__name__} {v!r}")
            repeated = _repeated_value(dom)
            if repeated is not None:
                first, again = repeated
                shown = (f"{first!r} twice" if repr(first) == repr(again)
                         else f"{first!r} and {again!r}, which compare equal")
                raise InvalidInputError(f"parameter {name!r} lists a value twice ({shown}): {list(dom)}")
            self.params[name] = list(dom)
        if isinstance(self.constraints, str) or callable(self.constraints):
            self.constraints = [self.constraints]  # one constraint, not its characters
        if not isinstance(self.constraints, (list, tuple)):
            raise InvalidInputError(f"constraints must be a list of expressions or callables, "
                                    f"but got {self.constraints!r}")
        for c in self.constraints:
            if not (isinstance(c, str) or callable(c)):
                raise InvalidInputError(f"each constraint must be an expression (str) or a callable, but got {c!r}")
        self.constraints = list(self.constraints)
        self._restrictions()  # syntax and names are checked now, not first when enumerating

    def _restrictions(self) -> list[_Restriction]:
        """The string constraints, parsed, each naming only parameters of the space."""
        out = []
        for c in self.constraints:
            if not isinstance(c, str):
                continue
            parsed = _parsed(c)
            unknown = [name for name in parsed.names if name not in self.params]
            if unknown:
                raise InvalidInputError(f"constraint {c!r} names unknown parameter(s) {unknown}; the space's "
                                        f"parameters are {self.names}")
            out.append(parsed)
        return out

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_dict(cls, spec: Mapping[str, Any], source: str | None = None) -> SearchSpace:
        """``{"params": {"x": [1, 2], "lr": {"low": 1e-4, "high": 1, "log": true}}, "constraints": [...]}``.

        ``source`` (e.g. ``"--space FILE"``) begins every error message, so it names the file.
        """
        if source is None:
            return cls._from_dict(spec)
        try:
            return cls._from_dict(spec)
        except InvalidInputError as exc:
            raise InvalidInputError(f"{source}: {exc}") from None

    @classmethod
    def _from_dict(cls, spec: Mapping[str, Any]) -> SearchSpace:
        if not isinstance(spec, Mapping):
            raise InvalidInputError(f"a space spec must be a mapping with 'params' (and optionally 'constraints'), "
                                    f"but got {type(spec).__name__}")
        if "params" not in spec:
            raise InvalidInputError(f"a space spec needs a 'params' key, but got keys {sorted(spec)}")
        unknown = sorted(set(spec) - {"params", "constraints"})
        if unknown:
            raise InvalidInputError(f"unknown space key(s) {unknown}; known: ['constraints', 'params']")
        if not isinstance(spec["params"], Mapping):
            raise InvalidInputError(f"'params' must map names to domains, but got {type(spec['params']).__name__}")
        constraints = spec.get("constraints", [])
        if not isinstance(constraints, (list, tuple)):
            raise InvalidInputError(f"'constraints' must be a list of expressions, but got {constraints!r}")
        params: dict[str, list[Any] | Continuous] = {}
        for name, dom in spec["params"].items():
            if not isinstance(dom, (Mapping, list, tuple)):
                raise InvalidInputError(
                    f"parameter {name!r} needs a non-empty list of values or a {{low, high}} range, but got {dom!r}"
                )
            if isinstance(dom, Mapping):
                bad = sorted(set(dom) - {"low", "high", "log", "integer"})
                if bad or "low" not in dom or "high" not in dom:
                    raise InvalidInputError(
                        f"parameter {name!r}: a range needs keys low, high (and optional log, integer), "
                        f"but got {dict(dom)}"
                    )
                try:
                    low, high = float(dom["low"]), float(dom["high"])
                except (TypeError, ValueError):
                    raise InvalidInputError(
                        f"parameter {name!r}: low and high must be numbers, but got {dom['low']!r}, {dom['high']!r}"
                    ) from None
                flags = {key: dom.get(key, False) for key in ("log", "integer")}
                for key, flag in flags.items():
                    if not isinstance(flag, bool):  # "false" read as a string would be truthy
                        raise InvalidInputError(f"parameter {name!r}: {key} must be true or false, but got {flag!r}")
                params[name] = Continuous(low, high, flags["log"], flags["integer"])
            else:
                params[name] = list(dom)
        return cls(params, list(constraints))

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> SearchSpace:
        """A space from a YAML file holding ``from_dict``'s mapping (``params``, optional ``constraints``).

        Plain scalars are read as YAML 1.2 reads them: ``[1e3, 2e3]`` are floats (PyYAML's YAML
        1.1 rule would keep them as the strings ``'1e3'``, ``'2e3'``), only ``true``/``false``
        are booleans (``on``, ``off``, ``yes``, ``no`` stay text), ``010`` is 10 (not octal 8)
        and ``1:30`` is text (not 90). A missing, unreadable or empty file, or a bad space in
        it, is a one-line error naming it.
        """
        import yaml

        try:
            with open(path) as fh:
                spec = read_yaml(fh)
        except OSError as exc:
            raise InvalidInputError(f"space file {os.fspath(path)}: cannot be read ({exc.strerror or exc})") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            first = getattr(exc, "problem", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
            if mark is not None:
                first += f" at line {mark.line + 1}, column {mark.column + 1}"
            raise InvalidInputError(f"space file {os.fspath(path)}: not valid YAML ({first})") from None
        if not isinstance(spec, Mapping):
            what = "nothing" if spec is None else type(spec).__name__
            raise InvalidInputError(f"space file {os.fspath(path)} must hold a mapping with 'params' (and optionally "
                                    f"'constraints'), but it holds {what}")
        return cls.from_dict(spec, source=f"space file {os.fspath(path)}")

    @classmethod
    def from_kernel_tuner(cls, tune_params: Mapping[str, Sequence[Any]],
                          restrictions: Sequence[Constraint] | Constraint | None = None, *,
                          max_threads: int | None = 1024,
                          block_size_names: Sequence[str] = KT_BLOCK_SIZE_NAMES) -> SearchSpace:
        """A space from Kernel Tuner's ``tune_params`` (name -> list of values) and ``restrictions``.

        A restriction is an expression string over the parameter names (evaluated vectorised,
        with Python's semantics) or, as in Kernel Tuner, a callable that takes one config as a
        dict and returns whether it is valid (called config by config; one that raises is an
        error naming the config). A single string or callable is one restriction.

        As Kernel Tuner's ``Searchspace`` does (1.5, and ``tune_kernel`` with the device's
        max threads per block: 1024 on CUDA GPUs and the C backend), the product of the
        thread-block parameters present (``block_size_x``, ``block_size_y``, ``block_size_z``)
        is capped at ``max_threads``: the restriction ``"block_size_x * block_size_y <= 1024"``
        (Kernel Tuner's own spelling) is added, where the domains reach past it (elsewhere it
        could cut nothing). ``max_threads=None`` leaves it out.
        """
        if not isinstance(tune_params, Mapping):
            raise InvalidInputError(f"tune_params must map each parameter to a list of values, "
                                    f"but got {type(tune_params).__name__}")
        params: dict[str, list[Any] | Continuous] = {}
        for name, values in tune_params.items():
            if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Iterable):
                raise InvalidInputError(f"each tune parameter needs a list of values, but got {name}={values!r}")
            params[name] = list(values)
        if restrictions is None:
            restrictions = []
        elif isinstance(restrictions, str) or callable(restrictions):
            restrictions = [restrictions]
        elif not isinstance(restrictions, Iterable):
            raise InvalidInputError(f"restrictions must be a list of expressions or callables, "
                                    f"but got {restrictions!r}")
        restrictions = [r if isinstance(r, str) or not callable(r) else _PerConfig(r) for r in restrictions]
        blocks = [name for name in block_size_names if name in params]
        if max_threads is not None and blocks:
            values = [params[name] for name in blocks]
            numeric = all(is_number(v) and not isinstance(v, bool) for dom in values for v in dom)
            rule = f"{' * '.join(blocks)} <= {max_threads}"
            if (not numeric or math.prod(max(dom) for dom in values) > max_threads) and rule not in restrictions:
                restrictions.append(rule)
        return cls(params, restrictions)

    # ------------------------------------------------------------------ properties
    @property
    def names(self) -> list[str]:
        return list(self.params)

    @property
    def is_finite(self) -> bool:
        return not any(isinstance(d, Continuous) for d in self.params.values())

    @property
    def enumerable(self) -> bool:
        """Finite, and at most ``MAX_ENUMERATE`` valid configs (counted by enumerating, which
        is kept for the next ``enumerate()``); otherwise the tuner searches it with an Optuna
        study on the predictor."""
        if not self.is_finite:
            return False
        key = self._fingerprint()
        if self._enumerated is not None and self._enumerated[0] == key:
            return self._enumerated[1] is not None
        try:
            frame = self._enumerate(MAX_ENUMERATE)
        except _TooLarge:
            frame = None
        self._enumerated = (key, frame)
        return frame is not None

    def cartesian_size(self) -> int:
        if not self.is_finite:
            return math.inf  # type: ignore[return-value]
        return math.prod(len(d) for d in self.params.values())  # type: ignore[arg-type]

    def _fingerprint(self) -> tuple:
        """What the enumeration depends on (a space's params and constraints may be edited)."""
        params = tuple((name, repr(dom), tuple(type(v).__name__ for v in dom) if isinstance(dom, list) else ())
                       for name, dom in self.params.items())
        return params, tuple(c if isinstance(c, str) else (id(c), repr(c)) for c in self.constraints)

    # ------------------------------------------------------------------ constraints
    def mask(self, frame: pd.DataFrame) -> np.ndarray:
        """Boolean mask of the rows of ``frame`` that satisfy every constraint (a row on which
        a restriction divides by zero does not); each constraint, in list order, sees only the
        rows the ones before it kept."""
        n = len(frame)
        ok = np.ones(n, dtype=bool)
        parsed = iter(self._restrictions())
        columns: dict[str, np.ndarray] = {}
        for c in self.constraints:
            if isinstance(c, str):
                restriction = next(parsed)
                rows = np.flatnonzero(ok)
                if len(rows) == 0:
                    break
                env = {}
                for name in restriction.names:
                    if name not in columns:
                        if name not in frame.columns:
                            raise InvalidInputError(f"constraint {c!r} cannot be evaluated: the configs lack "
                                                    f"the parameter {name!r}")
                        columns[name] = _eval_column(frame[name].to_numpy())
                    env[name] = columns[name] if len(rows) == n else columns[name][rows]
                ok[rows] = restriction.mask(env, len(rows))
                continue
            rows = np.flatnonzero(ok)  # in list order: a callable sees the rows kept so far
            if len(rows) == 0:
                break
            ok[rows] = _callable_mask(c, frame if len(rows) == n else frame.iloc[rows])
        return ok

    def in_domains(self, frame: pd.DataFrame) -> np.ndarray:
        """Boolean mask of the rows of ``frame`` whose every parameter lies in its domain
        (``check_config``'s rule for a whole table; the constraints are ``mask``'s)."""
        inside = np.ones(len(frame), dtype=bool)
        for name, dom in self.params.items():
            if isinstance(dom, Continuous):
                values = pd.to_numeric(frame[name], errors="coerce")
                ok = (values >= dom.low) & (values <= dom.high)
                if dom.integer:
                    ok &= values % 1 == 0
                inside &= ok.to_numpy(dtype=bool)
            else:
                inside &= frame[name].isin(dom).to_numpy()
        return inside

    def admitted(self, frame: pd.DataFrame) -> np.ndarray:
        """Per row of ``frame``: within every parameter's domain and meeting the constraints
        (checked only where the values lie in the domains, so they make sense)."""
        inside = self.in_domains(frame)
        inside[inside] = self.mask(frame.loc[inside, self.names])
        return inside

    def check_candidates(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``frame``'s parameter columns, each config once (the first of repeated rows, in order);
        a one-line error naming the first row outside the domains or constraints, and how many are."""
        if not isinstance(frame, pd.DataFrame):
            raise InvalidInputError(f"`candidates` must be a DataFrame with a column per parameter {self.names}, "
                                    f"but got {type(frame).__name__}")
        missing = [n for n in self.names if n not in frame.columns]
        if missing:
            raise InvalidInputError(f"`candidates` must have a column per parameter, but it lacks {missing}")
        if frame.empty:
            raise InvalidInputError("`candidates` must hold at least one config, but it has no rows")
        frame = frame[self.names]
        inside = self.admitted(frame)
        if not inside.all():
            bad = np.flatnonzero(~inside)
            config = {c: python_scalar(frame[c].iat[int(bad[0])]) for c in frame.columns}
            try:
                self.check_config(config)
                why = "outside the space"
            except InvalidInputError as exc:
                why = str(exc)
            raise InvalidInputError(f"`candidates` must lie in the space (its domains and constraints), but row "
                                    f"{int(bad[0])} {config} does not ({why}); {len(bad)} of {len(frame)} rows are "
                                    "outside")
        return frame.drop_duplicates(keep="first")

    def is_valid(self, config: Mapping[str, Any]) -> bool:
        """Whether ``config`` satisfies the constraints; a config with unknown or missing
        parameters, or a value outside its domain, is an error (``check_config``), not False."""
        self.check_config(config, constraints=False)
        return bool(self.mask(pd.DataFrame([dict(config)]))[0])

    def check_config(self, config: Mapping[str, Any], constraints: bool = True) -> None:
        """One-line error for a config with unknown/missing params or out-of-domain values."""
        if not isinstance(config, Mapping):
            raise InvalidInputError(f"a config must be a dict of {self.names}, but got {type(config).__name__}")
        unknown = sorted(set(config) - set(self.params))
        missing = sorted(set(self.params) - set(config))
        if unknown or missing:
            raise InvalidInputError(
                f"config must name exactly the space's parameters: unknown {unknown}, missing {missing}"
            )
        for name, dom in self.params.items():
            v = config[name]
            if isinstance(dom, Continuous):
                if not is_number(v):
                    raise InvalidInputError(f"{name} must be a number in [{dom.low}, {dom.high}], but got {name}={v!r}")
                if not dom.low <= v <= dom.high:
                    raise InvalidInputError(f"`{dom.low} <= {name} <= {dom.high}` must hold, but got {name}={v!r}")
                if dom.integer and not float(v).is_integer():
                    raise InvalidInputError(f"{name} must be an integer (an integer range), but got {name}={v!r}")
            elif v not in dom:
                raise InvalidInputError(f"{name}={v!r} is not in its domain {dom}")
        if constraints and not self.mask(pd.DataFrame([dict(config)]))[0]:
            raise InvalidInputError(f"config {dict(config)} violates the space's constraints")

    # ------------------------------------------------------------------ enumeration
    def enumerate(self, limit: int = MAX_ENUMERATE) -> pd.DataFrame:
        """Every valid config as a DataFrame (columns = parameter names), in the cartesian order
        (first parameter slowest, as ``itertools.product`` lists them; Kernel Tuner 1.5's
        ``Searchspace.list`` is the same set in another order).

        Parameters join one at a time and each restriction filters as soon as its parameters
        are all in (see the module docstring), so ``limit`` bounds the valid configs and every
        table of partial configs built on the way, not the cartesian product; a space past it
        is a one-line error saying what grew too large.
        """
        if not self.is_finite:
            raise InvalidInputError("a space with continuous parameters cannot be enumerated; search it with Optuna")
        if self._enumerated is not None:
            key, frame = self._enumerated
            self._enumerated = None  # handed over once: the space does not keep a copy alive
            if frame is not None and key == self._fingerprint() and len(frame) <= limit:
                return frame
        return self._enumerate(limit)

    def _enumerate(self, limit: int, check: bool = True,
                   subset: Mapping[str, np.ndarray] | None = None) -> pd.DataFrame:
        """``enumerate`` without its cache; ``subset`` (name -> positions in its domain) narrows
        domains, and ``check=False`` leaves out ``_check_order`` (for the spaces it builds)."""
        domains = {name: _domain_arrays(self.params[name]) for name in self.names}  # type: ignore[arg-type]
        for name, keep in (subset or {}).items():
            domains[name] = (domains[name][0][keep], domains[name][1][keep])
        trace = _Trace({})
        for i, c in enumerate(self.constraints):
            if isinstance(c, str):
                trace.position.setdefault(_parsed(c), i)
        frame = self._build(limit, domains, trace)
        if check:
            self._check_order(trace, domains, limit)
        return frame

    def _build(self, limit: int, domains: Mapping[str, tuple[np.ndarray, np.ndarray]], trace: _Trace) -> pd.DataFrame:
        names = self.names
        restrictions = self._restrictions()
        callables = [c for c in self.constraints if not isinstance(c, str)]
        budget = [max(CHECK_FACTOR * limit, 10_000_000)]  # partial configs still to check
        empty = {name: np.zeros(0, dtype=np.int64) for name in names}
        if any(len(domains[name][0]) == 0 for name in names):  # a domain emptied after the space was built
            return self._frame(empty, domains)
        # Restrictions that raise while enumerating (an earlier constraint, a guard, may reject the
        # configs they fail on): applied at the end, in list order, on the rows kept by then.
        deferred = trace.deferred

        for r in restrictions:
            if r.names:
                continue
            try:
                holds = r.mask({}, 1, explain=False)[0]
            except InvalidInputError:
                deferred.append(r)
                continue
            trace.covered.add(r)  # the same on every config
            if not holds:
                return self._frame(empty, domains)
        restrictions = [r for r in restrictions if r.names]

        # Parameters linked by restrictions (directly or through others) enumerate together.
        group = {name: name for name in names}

        def root(name: str) -> str:
            while group[name] != name:
                group[name] = group[group[name]]
                name = group[name]
            return name

        for r in restrictions:
            for other in r.names[1:]:
                group[root(other)] = root(r.names[0])
        components: dict[str, list[str]] = {}
        for name in names:
            components.setdefault(root(name), []).append(name)

        tables = []
        cartesian = {key: math.prod(len(domains[name][0]) for name in members) for key, members in components.items()}
        for key in sorted(components, key=cartesian.__getitem__):  # the small first: an empty one ends it early
            members = components[key]
            linked = [r for r in restrictions if root(r.names[0]) == root(members[0])]
            table = self._enumerate_linked(members, linked, domains, limit, budget, trace)
            size = len(next(iter(table.values())))
            if size == 0:
                return self._frame(empty, domains)
            tables.append((members, table, size))

        total = math.prod(size for _, _, size in tables)
        if total > limit:
            what = ("valid configs" if not callables else
                    "configs meeting the string constraints (callable constraints filter only the whole table)")
            raise _TooLarge(f"`valid configs <= {limit}` must hold to enumerate, but the space has {total} {what} "
                            f"(cartesian {self.cartesian_size()})")
        codes: dict[str, np.ndarray] = {}
        inner = total
        for members, table, size in tables:  # the product of the tables, by repeat and tile
            inner //= size
            rows = np.tile(np.repeat(np.arange(size, dtype=np.int64), inner), total // (size * inner))
            for name in members:
                codes[name] = table[name][rows]
        order = self._cartesian_order(codes, total)
        if order is not None:
            codes = {name: c[order] for name, c in codes.items()}
        frame = self._frame(codes, domains)
        if not callables and not deferred:
            return frame
        # callables and deferred restrictions in list order, each on the rows kept so far: a deferred
        # one sees every config the constraints before it keep where none after it filtered before
        last = max((trace.position[a] for a in trace.applied), default=-1)
        trace.covered.update(r for r in deferred if trace.position[r] >= last)
        ok = np.ones(total, dtype=bool)
        for c in self.constraints:
            rows = np.flatnonzero(ok)
            if len(rows) == 0:
                break
            if isinstance(c, str):
                restriction = _parsed(c)
                if restriction not in deferred:
                    continue
                env = {name: domains[name][1][codes[name][rows]] for name in restriction.names}
                ok[rows] = restriction.mask(env, len(rows))
            else:
                ok[rows] = _callable_mask(c, frame if len(rows) == total else frame.iloc[rows])
        return frame if ok.all() else frame[ok].reset_index(drop=True)

    def _check_order(self, trace: _Trace, domains: Mapping[str, tuple[np.ndarray, np.ndarray]], limit: int) -> None:
        """Python's list order, where enumerating did not keep it: a restriction is an error on a
        config every constraint listed before it keeps, even where one listed after it rejects that
        config (it filtered first, or emptied the space). A restriction enumerating did not evaluate
        on all such configs (``_Trace.covered``), and that raises on some values of its parameters
        (``_raising_values``), is checked on the space of the constraints up to it, those
        parameters narrowed to the values it raises on (small, mostly), where that space is small
        enough to enumerate. Not one listed after a callable: that space would call the callable
        again (config by config, for Kernel Tuner's); it was checked where enumerating evaluated it."""
        for i, c in enumerate(self.constraints):
            if not isinstance(c, str):
                break  # every restriction from here on follows a callable
            r = _parsed(c)
            if r in trace.covered or trace.position[r] != i:
                continue
            subset = _raising_values(r, domains)
            if subset is None:
                continue
            with contextlib.suppress(_TooLarge):
                SearchSpace(dict(self.params), self.constraints[:i + 1])._enumerate(limit, False, subset)

    def _frame(self, codes: Mapping[str, np.ndarray], domains: Mapping[str, tuple[np.ndarray, np.ndarray]]
               ) -> pd.DataFrame:
        dtypes = {domains[name][0].dtype for name in self.names}
        if len(dtypes) == 1 and (dtype := dtypes.pop()).kind != "O":
            # one numeric block, filled in place: pandas keeps it as is (no stacking copy)
            n = len(codes[self.names[0]])
            block = np.empty((len(self.names), n), dtype=dtype)
            for j, name in enumerate(self.names):
                np.take(domains[name][0], codes[name], out=block[j], mode="clip")  # (no buffering)
            return pd.DataFrame(block.T, columns=self.names, copy=False)
        return pd.DataFrame({name: _column(domains[name][0][codes[name]], domains[name][0]) for name in self.names})

    def _cartesian_order(self, codes: Mapping[str, np.ndarray], total: int) -> np.ndarray | None:
        """The permutation putting rows of level codes in the cartesian order, or None if they are."""
        if total < 2:
            return None
        sizes = [len(self.params[name]) for name in self.names]  # type: ignore[arg-type]
        if math.prod(sizes) < 2**63:
            key = np.zeros(total, dtype=np.int64)
            for name, size in zip(self.names, sizes, strict=True):
                key *= size
                key += codes[name]
            if (key[1:] > key[:-1]).all():
                return None
            return np.argsort(key, kind="stable")
        return np.lexsort([codes[name] for name in reversed(self.names)])

    def _enumerate_linked(self, members: list[str], restrictions: list[_Restriction],
                          domains: Mapping[str, tuple[np.ndarray, np.ndarray]], limit: int,
                          budget: list[int], trace: _Trace) -> dict[str, np.ndarray]:
        """The level codes of every combination of ``members`` meeting ``restrictions`` (which
        name only members), built by adding one parameter at a time. A restriction is covered
        (``trace``) where every one that filtered the table before it comes before it in the list."""
        sizes = {name: len(domains[name][0]) for name in members}
        code_type = {name: np.min_scalar_type(max(sizes[name] - 1, 0)) for name in members}
        table: dict[str, np.ndarray] = {}
        rows = 1
        pending: list[str] = []  # joined, but no restriction needed them yet: crossed in lazily
        applied: list[_Restriction] = []  # the restrictions that filtered the table so far
        left = list(members)
        todo = list(restrictions)
        while left:
            present = set(table) | set(pending)

            def score(name: str, present: set[str] = present, todo: list[_Restriction] = todo) -> tuple:
                ready = sum(1 for r in todo if name in r.names and set(r.names) <= present | {name})
                touching = sum(1 for r in todo if name in r.names)
                return (-ready, -touching, sizes[name])

            name = min(left, key=score)  # the first of equals, in the space's order
            left.remove(name)
            ready = [r for r in todo if set(r.names) <= present | {name}]
            pending.append(name)
            if not ready and left:
                continue
            todo = [r for r in todo if r not in ready]
            last = max((trace.position[a] for a in applied), default=-1)
            table, rows = self._cross(table, rows, pending, ready, domains, sizes, code_type, limit, budget,
                                      trace.deferred)
            applied.extend(ready)
            trace.applied.extend(ready)
            trace.covered.update(r for r in ready if trace.position[r] > last and r not in trace.deferred)
            pending = []
            if rows == 0:
                break
        if rows == 0:
            return {name: np.zeros(0, dtype=code_type[name]) for name in members}
        return table

    def _cross(self, table: dict[str, np.ndarray], rows: int, new: list[str], ready: list[_Restriction],
               domains: Mapping[str, tuple[np.ndarray, np.ndarray]], sizes: Mapping[str, int],
               code_type: Mapping[str, np.dtype], limit: int, budget: list[int],
               deferred: list[_Restriction]) -> tuple[dict[str, np.ndarray], int]:
        """``table`` (``rows`` partial configs) times the domains of ``new``, keeping the rows that
        meet ``ready``; built and checked in blocks, so only the kept rows are held whole. A
        restriction that raises is put in ``deferred`` (the caller applies it at the end, after
        the constraints listed before it) and not checked here any more."""
        inner = math.prod(sizes[name] for name in new)
        total = rows * inner
        names = [*table, *new]
        if ready:
            budget[0] -= total
            if budget[0] < 0:
                raise _TooLarge(f"the space is too large to enumerate: joining {_shown(new)} to the partial configs "
                                f"of {_shown(list(table))} means checking {total} partial configs against "
                                f"{[r.text for r in ready]} (at most {max(CHECK_FACTOR * limit, 10_000_000)} in all "
                                f"for a limit of {limit})")
        elif total > limit:
            raise _TooLarge(f"`valid configs <= {limit}` must hold to enumerate, but the parameters {_shown(names)} "
                            f"alone have {total} combinations that no constraint cuts")
        kept: dict[str, list[np.ndarray]] = {name: [] for name in names}
        count = 0
        step = _BLOCK
        for start in range(0, total, step):
            flat = np.arange(start, min(total, start + step), dtype=np.int64)
            block: dict[str, np.ndarray] = {}
            if table:
                parent = flat // inner
                for name in table:
                    block[name] = table[name][parent]
            rest = flat % inner if inner > 1 else np.zeros(len(flat), dtype=np.int64)
            for name in reversed(new):  # the last parameter varies fastest
                block[name] = (rest % sizes[name]).astype(code_type[name])
                rest //= sizes[name]
            keep = np.ones(len(flat), dtype=bool)
            for r in ready:
                if r in deferred:
                    continue
                live = np.flatnonzero(keep)
                if len(live) == 0:
                    break
                env = {n: domains[n][1][block[n][live] if len(live) < len(flat) else block[n]] for n in r.names}
                try:
                    keep[live] = r.mask(env, len(live), explain=False)
                except InvalidInputError:
                    deferred.append(r)
            if not keep.all():
                block = {name: codes[keep] for name, codes in block.items()}
            count += int(keep.sum())
            if count > limit:
                shown = _shown(names)
                raise _TooLarge(f"`valid configs <= {limit}` must hold to enumerate, but more than {limit} "
                                f"combinations of {shown} meet the constraints on them (cartesian "
                                f"{self.cartesian_size()})")
            for name in names:
                kept[name].append(block[name])
        out = {name: (np.concatenate(parts) if len(parts) > 1 else parts[0]) for name, parts in kept.items()}
        return out, count

    def sample(self, n: int, seed: int = 0, max_draws: int = 20) -> pd.DataFrame:
        """Up to ``n`` distinct valid configs from a scrambled Sobol sequence, in its order (a log
        range on a log scale, an integer range as integers, a list by equal shares), so any first
        rows spread over the space without crowding its corners as a maximin design does; in
        ``max_draws`` vectorised draws at most, fewer configs when the constraints leave fewer.

        Finding none at all (for ``n >= 1``) is a one-line error saying so: random draws of a
        space whose constraints admit a tiny share of it can miss every valid config.
        """
        from scipy.stats import qmc

        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
            raise InvalidInputError(f"`n >= 0` (an integer) must hold, but got n={n!r}")
        sobol = qmc.Sobol(d=len(self.params), scramble=True, seed=np.random.default_rng(seed))
        found = pd.DataFrame(columns=self.names)
        drawn = draws = 0
        for _ in range(max_draws):
            draws += 1
            m = 2 ** math.ceil(math.log2(max(2 * (n - len(found)), 64)))  # powers of two keep Sobol balanced
            frame = self.from_unit(sobol.random(m))
            drawn += m
            frame = frame[self.mask(frame)]
            found = frame if found.empty else pd.concat([found, frame])
            found = found.drop_duplicates()
            if len(found) >= n:
                break
        if n > 0 and found.empty:
            what = (f"of {self.cartesian_size()} cartesian configs" if self.is_finite
                    else "with continuous parameters")
            raise InvalidInputError(
                f"sampling found no valid config in {drawn} random draws ({draws} rounds) of a space {what}: its "
                "constraints admit none, or too few to be hit at random (a finite space is enumerated whole when it "
                f"has at most {MAX_ENUMERATE} valid configs); check or loosen the constraints, or narrow the domains")
        return found.head(n).reset_index(drop=True)

    def from_unit(self, u: np.ndarray) -> pd.DataFrame:
        """Configs from points of the unit cube, one column per parameter: a range maps linearly
        (on a log scale for a log range; integers rounded), a list by equal shares."""
        draw: dict[str, Any] = {}
        for j, (name, dom) in enumerate(self.params.items()):
            if isinstance(dom, Continuous):
                lo, hi = (math.log(dom.low), math.log(dom.high)) if dom.log else (dom.low, dom.high)
                values = lo + u[:, j] * (hi - lo)
                values = np.exp(values) if dom.log else values
                draw[name] = (np.clip(np.round(values), *dom.int_bounds).astype(int) if dom.integer else values)
            else:
                domain = _domain_arrays(dom)[0]
                draw[name] = _column(domain[np.minimum((u[:, j] * len(domain)).astype(int), len(domain) - 1)], domain)
        return pd.DataFrame(draw)

    def configs_frame(self, configs: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
        """Configs (dicts, e.g. an Optuna study's suggestions) as a DataFrame that holds each value
        as ``enumerate`` and ``sample`` do: a list's value is its domain's own value (an int beside
        floats stays an int, in an object column; None stays None), where ``pd.DataFrame(configs)``
        would read ``[1, 2.5]`` as floats and None beside strings as NaN. A value that is no
        domain value is kept as given."""
        records = list(configs)
        columns: dict[str, Any] = {}
        for name, dom in self.params.items():
            values = [python_scalar(c[name]) for c in records]
            if isinstance(dom, Continuous):
                array = np.asarray(values, dtype=np.float64)
                columns[name] = array.astype(np.int64) if dom.integer and np.all(array % 1 == 0) else array
                continue
            domain = _domain_arrays(dom)[0]
            index: dict[Any, int] = {}
            for i, v in enumerate(dom):
                index.setdefault(v, i)
            codes = np.fromiter((index.get(v, -1) for v in values), dtype=np.int64, count=len(values))
            if (codes >= 0).all():
                columns[name] = _column(domain[codes], domain)
            else:
                column = np.empty(len(values), dtype=object)
                column[:] = [v if k < 0 else python_scalar(domain[k]) for v, k in zip(values, codes.tolist(),
                                                                                     strict=True)]
                columns[name] = pd.Series(column, dtype=object)
        return pd.DataFrame(columns, columns=self.names)

    def to_unit(self, frame: pd.DataFrame) -> np.ndarray:
        """Configs as points of the unit cube (``from_unit``'s inverse; a list value at the middle
        of its share)."""
        u = np.empty((len(frame), len(self.params)))
        for j, (name, dom) in enumerate(self.params.items()):
            values = frame[name].to_numpy()
            if isinstance(dom, Continuous):
                lo, hi = (math.log(dom.low), math.log(dom.high)) if dom.log else (dom.low, dom.high)
                x = np.log(values.astype(float)) if dom.log else values.astype(float)
                u[:, j] = np.clip((x - lo) / (hi - lo), 0.0, 1.0) if hi > lo else 0.5
            else:
                index = {v: i for i, v in enumerate(dom)}
                unknown = [v for v in values.tolist() if v not in index]
                if unknown:
                    raise InvalidInputError(f"`{name} in {dom}` must hold, but got {name}={unknown[0]!r}")
                u[:, j] = (np.array([index[v] for v in values.tolist()]) + 0.5) / len(dom)
        return u

    def unit_features(self, frame: pd.DataFrame) -> pd.DataFrame:
        """What a surrogate of an open space sees: each range as its position in the unit cube
        (``to_unit``: a log range on its log scale), a list of numbers as its rank position, and a
        list of more than two strings as one 0/1 column per value (its order means nothing)."""
        u = self.to_unit(frame)
        out = {}
        for j, (name, dom) in enumerate(self.params.items()):
            if isinstance(dom, Continuous) or len(dom) <= 2 or not any(isinstance(v, str) for v in dom):
                out[f"u_{name}"] = u[:, j]
            else:
                values = frame[name].astype(str).to_numpy()
                for value in dom:
                    out[f"is_{name}_{value}"] = (values == str(value)).astype(float)
        return pd.DataFrame(out, index=frame.index)

    # ------------------------------------------------------------------ Optuna
    def optuna_distributions(self) -> dict[str, Any]:
        import optuna

        dists: dict[str, Any] = {}
        for name, dom in self.params.items():
            if isinstance(dom, Continuous):
                if dom.integer:
                    dists[name] = optuna.distributions.IntDistribution(*dom.int_bounds, log=dom.log)
                else:
                    dists[name] = optuna.distributions.FloatDistribution(dom.low, dom.high, log=dom.log)
            else:
                dists[name] = optuna.distributions.CategoricalDistribution(dom)
        return dists

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Ask an Optuna trial for one config of this space (constraints are not applied here)."""
        config: dict[str, Any] = {}
        for name, dom in self.params.items():
            if isinstance(dom, Continuous) and dom.integer:
                config[name] = trial.suggest_int(name, *dom.int_bounds, log=dom.log)
            elif isinstance(dom, Continuous):
                config[name] = trial.suggest_float(name, dom.low, dom.high, log=dom.log)
            else:
                config[name] = trial.suggest_categorical(name, dom)
        return config
