"""Search spaces: named parameters, finite or continuous, with constraints.

A finite space enumerates into a DataFrame without a Python loop per config (a cartesian
product through numpy, then constraints evaluated column-wise), so spaces of 1e5-1e6
configs are cheap to build and to score with a predictor. Constraints are strings in the
syntax of Kernel Tuner's ``restrictions`` (``"MWG % (MDIMC * VWM) == 0"``; ``and``/``or``/
``not`` read with Python's precedence), evaluated vectorised with ``DataFrame.eval``, or callables taking the
DataFrame of candidates and returning a boolean mask.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from perfpred.errors import InvalidInputError

Constraint = str | Callable[[pd.DataFrame], Any]

MAX_ENUMERATE = 5_000_000


@dataclass(frozen=True)
class Continuous:
    """A real (or integer) range; ``log`` samples on a log scale."""

    low: float
    high: float
    log: bool = False
    integer: bool = False

    def __post_init__(self) -> None:
        if not self.low <= self.high:
            raise InvalidInputError(f"`low <= high` must hold, but got (low={self.low}, high={self.high})")
        if self.log and self.low <= 0:
            raise InvalidInputError(f"`low > 0` must hold for a log range, but got low={self.low}")


@dataclass
class SearchSpace:
    """Parameters (name -> list of values, or ``Continuous``) and constraints."""

    params: dict[str, list[Any] | Continuous]
    constraints: list[Constraint] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.params:
            raise InvalidInputError("a search space needs at least one parameter, but got none")
        for name, dom in self.params.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise InvalidInputError(f"parameter names must be identifiers, but got {name!r}")
            if isinstance(dom, Continuous):
                continue
            if not isinstance(dom, (list, tuple)) or len(dom) == 0:
                raise InvalidInputError(f"parameter {name!r} needs a non-empty list of values, but got {dom!r}")
            if len(set(map(repr, dom))) != len(dom):
                raise InvalidInputError(f"parameter {name!r} lists a value twice: {list(dom)}")
            self.params[name] = list(dom)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> SearchSpace:
        """``{"params": {"x": [1, 2], "lr": {"low": 1e-4, "high": 1, "log": true}}, "constraints": [...]}``."""
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
                params[name] = Continuous(low, high, bool(dom.get("log", False)), bool(dom.get("integer", False)))
            else:
                params[name] = list(dom)
        return cls(params, list(constraints))

    @classmethod
    def from_yaml(cls, path: str) -> SearchSpace:
        import yaml

        with open(path) as fh:
            return cls.from_dict(yaml.safe_load(fh))

    @classmethod
    def from_kernel_tuner(cls, tune_params: Mapping[str, Sequence[Any]],
                          restrictions: Sequence[Constraint] | None = None) -> SearchSpace:
        return cls({k: list(v) for k, v in tune_params.items()}, list(restrictions or []))

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
                inside &= ((values >= dom.low) & (values <= dom.high)).to_numpy()
            else:
                inside &= frame[name].isin(dom).to_numpy()
        return inside

    def is_valid(self, config: Mapping[str, Any]) -> bool:
        self.check_config(config, constraints=False)
        return bool(self.mask(pd.DataFrame([dict(config)]))[0])

    def check_config(self, config: Mapping[str, Any], constraints: bool = True) -> None:
        """One-line error for a config with unknown/missing params or out-of-domain values."""
        unknown = sorted(set(config) - set(self.params))
        missing = sorted(set(self.params) - set(config))
        if unknown or missing:
            raise InvalidInputError(
                f"config must name exactly the space's parameters: unknown {unknown}, missing {missing}"
            )
        for name, dom in self.params.items():
            v = config[name]
            if isinstance(dom, Continuous):
                if not dom.low <= v <= dom.high:
                    raise InvalidInputError(f"`{dom.low} <= {name} <= {dom.high}` must hold, but got {name}={v!r}")
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
                draw[name] = (np.clip(np.round(values), math.ceil(dom.low), math.floor(dom.high)).astype(int)
                              if dom.integer else values)
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
                    dists[name] = optuna.distributions.IntDistribution(int(dom.low), int(dom.high), log=dom.log)
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
                config[name] = trial.suggest_int(name, int(dom.low), int(dom.high), log=dom.log)
            elif isinstance(dom, Continuous):
                config[name] = trial.suggest_float(name, dom.low, dom.high, log=dom.log)
            else:
                config[name] = trial.suggest_categorical(name, dom)
        return config
