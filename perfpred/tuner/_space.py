"""Search spaces: named parameters, finite or continuous, with constraints.

A finite space enumerates into a DataFrame without a Python loop per config (a cartesian
product through numpy, then constraints evaluated column-wise), so spaces of 1e5-1e6
configs are cheap to build and to score with a predictor. Constraints are strings in the
syntax of Kernel Tuner's ``restrictions`` (``"MWG % (MDIMC * VWM) == 0"``; ``and``/``or``/
``not`` read with Python's precedence), evaluated vectorised with ``DataFrame.eval``, or callables taking the
DataFrame of candidates and returning a boolean mask (``SearchSpace.from_kernel_tuner`` takes Kernel Tuner's
callables instead, which get one config as a dict, and calls them config by config).
"""

from __future__ import annotations

import functools
import math
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

MAX_ENUMERATE = 5_000_000

# Columns the tuners' histories add beside the parameters (``TuneResult.history``, ``StudyRecorder.history``,
# ``ParetoResult.history`` and the history.csv files written from them): a parameter of one of these names
# would be overwritten there.
RESERVED_NAMES = ("value", "status", "predicted", "iteration", "elapsed_s", "worker", "trial", "feasible")


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


@functools.cache
def _yaml_loader() -> Any:
    """PyYAML's safe loader with YAML 1.2's floats: ``1e3`` is 1000.0, not the string ``'1e3'``."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+
                       |[-+]?\.[0-9_]+[eE][-+]?[0-9]+)$""", re.X),
        list("-+0123456789."))
    return Loader


def read_yaml(stream: Any) -> Any:
    """YAML text (or an open file) as Python, numbers read as YAML 1.2 reads them (``1e3`` is a float)."""
    import yaml

    return yaml.load(stream, Loader=_yaml_loader())


class _PerConfig:
    """A Kernel Tuner restriction callable (one config as a dict -> bool), applied config by config."""

    def __init__(self, fn: Callable[[dict[str, Any]], Any]) -> None:
        self.fn = fn

    def __call__(self, frame: pd.DataFrame) -> np.ndarray:
        return np.array([bool(self.fn(config)) for config in frame.to_dict("records")], dtype=bool)

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
class SearchSpace:
    """Parameters (name -> list of values, or ``Continuous``) and constraints."""

    params: dict[str, list[Any] | Continuous]
    constraints: list[Constraint] = field(default_factory=list)

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

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> SearchSpace:
        """``{"params": {"x": [1, 2], "lr": {"low": 1e-4, "high": 1, "log": true}}, "constraints": [...]}``."""
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

        Numbers are read as YAML 1.2 reads them, so ``[1e3, 2e3]`` are floats (PyYAML's YAML 1.1
        rule would keep them as the strings ``'1e3'``, ``'2e3'``). A missing, unreadable or empty
        file is a one-line error naming it.
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
        return cls.from_dict(spec)

    @classmethod
    def from_kernel_tuner(cls, tune_params: Mapping[str, Sequence[Any]],
                          restrictions: Sequence[Constraint] | Constraint | None = None) -> SearchSpace:
        """A space from Kernel Tuner's ``tune_params`` (name -> list of values) and ``restrictions``.

        A restriction is an expression string over the parameter names (evaluated vectorised,
        with Python's semantics) or, as in Kernel Tuner, a callable that takes one config as a
        dict and returns whether it is valid (called config by config). A single string or
        callable is one restriction.
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
        return cls(params, [r if isinstance(r, str) or not callable(r) else _PerConfig(r) for r in restrictions])

    # ------------------------------------------------------------------ properties
    @property
    def names(self) -> list[str]:
        return list(self.params)

    @property
    def is_finite(self) -> bool:
        return not any(isinstance(d, Continuous) for d in self.params.values())

    @property
    def enumerable(self) -> bool:
        """Finite and small enough to score whole (``enumerate``); otherwise the tuner searches it
        with an Optuna study on the predictor."""
        return self.is_finite and self.cartesian_size() <= MAX_ENUMERATE

    def cartesian_size(self) -> int:
        if not self.is_finite:
            return math.inf  # type: ignore[return-value]
        return math.prod(len(d) for d in self.params.values())  # type: ignore[arg-type]

    # ------------------------------------------------------------------ constraints
    def mask(self, frame: pd.DataFrame) -> np.ndarray:
        """Boolean mask of the rows of ``frame`` that satisfy every constraint."""
        ok = np.ones(len(frame), dtype=bool)
        for c in self.constraints:
            try:
                # DataFrame.eval reads Kernel Tuner's Python syntax (and/or/not, %, //) as Python does.
                res = c(frame) if callable(c) else frame.eval(c)
            except Exception as exc:
                raise InvalidInputError(f"constraint {c!r} cannot be evaluated: {type(exc).__name__}: {exc}") from None
            res = np.asarray(res)
            if res.shape == ():  # a constraint that does not depend on the params
                res = np.full(len(frame), bool(res))
            if res.shape != (len(frame),):
                raise InvalidInputError(f"constraint {c!r} must give one boolean per config, but got shape {res.shape}")
            ok &= res.astype(bool)
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
        """Every valid config as a DataFrame (columns = parameter names), in a stable order."""
        if not self.is_finite:
            raise InvalidInputError("a space with continuous parameters cannot be enumerated; search it with Optuna")
        size = self.cartesian_size()
        if size > limit:
            raise InvalidInputError(f"`cartesian size <= {limit}` must hold to enumerate, but got {size}")
        domains = [np.asarray(d, dtype=object if any(isinstance(x, str) for x in d) else None)
                   for d in self.params.values()]
        grids = np.meshgrid(*[np.arange(len(d)) for d in domains], indexing="ij")
        frame = pd.DataFrame({name: dom[g.ravel()] for name, dom, g in zip(self.names, domains, grids, strict=True)})
        return frame[self.mask(frame)].reset_index(drop=True)

    def sample(self, n: int, seed: int = 0, max_draws: int = 20) -> pd.DataFrame:
        """Up to ``n`` distinct valid configs from a scrambled Sobol sequence, in its order (a log
        range on a log scale, an integer range as integers, a list by equal shares), so any first
        rows spread over the space without crowding its corners as a maximin design does; in
        ``max_draws`` vectorised draws at most, fewer configs when the constraints leave fewer."""
        from scipy.stats import qmc

        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
            raise InvalidInputError(f"`n >= 0` (an integer) must hold, but got n={n!r}")
        sobol = qmc.Sobol(d=len(self.params), scramble=True, seed=np.random.default_rng(seed))
        found = pd.DataFrame(columns=self.names)
        for _ in range(max_draws):
            m = 2 ** math.ceil(math.log2(max(2 * (n - len(found)), 64)))  # powers of two keep Sobol balanced
            frame = self.from_unit(sobol.random(m))
            frame = frame[self.mask(frame)]
            found = frame if found.empty else pd.concat([found, frame])
            found = found.drop_duplicates()
            if len(found) >= n:
                break
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
                domain = np.asarray(dom, dtype=object if any(isinstance(x, str) for x in dom) else None)
                draw[name] = domain[np.minimum((u[:, j] * len(domain)).astype(int), len(domain) - 1)]
        return pd.DataFrame(draw)

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
