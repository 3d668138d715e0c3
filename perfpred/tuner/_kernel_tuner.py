"""Kernel Tuner's own strategies, run in its ``simulation_mode`` on a recorded cache file.

The replayed space is given to Kernel Tuner exactly: a restriction admits only the configs
recorded in the cache, so it searches the same space perfpred's tuner does. Its results
are de-duplicated in evaluation order (Kernel Tuner re-lists configs it revisits) and cut
at the budget, so curves line up with every other strategy's.
"""

from __future__ import annotations

import gzip
import inspect
import json
import random
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from functools import partial
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np

from perfpred._files import write_text_atomically
from perfpred.errors import InvalidInputError, MissingDependencyError

KERNEL_TUNER_STRATEGIES = ("random_sample", "genetic_algorithm", "dual_annealing", "bayes_opt", "hybrid_vndx")
# Kernel Tuner hands max_fevals to scipy's dual_annealing as maxfun too, which counts every call:
# repeats (served from the cache, free) and points snapped to invalid configs as well. With maxfun =
# budget a run ended after 26-63 distinct configs of 128; scipy gets this many calls per evaluation,
# and Kernel Tuner's own count of distinct configs still ends the run at the budget.
DUAL_ANNEALING_CALLS_PER_EVAL = 10


def _plain_cache(cache_file: Path, workdir: Path) -> tuple[Path, dict]:
    opener = gzip.open if cache_file.suffix == ".gz" else open
    with opener(cache_file, "rt") as fh:
        data = json.load(fh)
    # Kernel Tuner reads only plain .json; name the copy by folder too (convolution/A100 vs dedispersion/A100).
    stem = cache_file.name.removesuffix(".gz").removesuffix(".json")
    plain = workdir / f"{cache_file.parent.name}_{stem}.json"
    if not plain.exists():
        # Atomically: workers sharing one space may check for the copy while another writes it.
        write_text_atomically(plain, json.dumps(data))
    return plain, data


@contextmanager
def _seeded_bayes_opt(seed: int) -> Iterator[None]:
    """Kernel Tuner's bayes_opt draws its starting design from an unseeded LatinHypercube (fresh
    entropy, not numpy's global seed), so one seed gave another run each time; seed it."""
    from kernel_tuner.strategies import bayes_opt

    # scipy 1.15 renamed the keyword `seed` to `rng`.
    keyword = "rng" if "rng" in inspect.signature(bayes_opt.LatinHypercube).parameters else "seed"
    with mock.patch.object(bayes_opt, "LatinHypercube", partial(bayes_opt.LatinHypercube, **{keyword: seed})):
        yield


@contextmanager
def _dual_annealing_calls() -> Iterator[None]:
    """scipy's dual_annealing with DUAL_ANNEALING_CALLS_PER_EVAL calls per evaluation Kernel Tuner allows."""
    import scipy.optimize

    real = scipy.optimize.dual_annealing

    def more_calls(*args: Any, maxfun: int, **kwargs: Any) -> Any:
        return real(*args, maxfun=maxfun * DUAL_ANNEALING_CALLS_PER_EVAL, **kwargs)

    with mock.patch.object(scipy.optimize, "dual_annealing", more_calls):
        yield


def kernel_tuner_search(cache_file: str | Path, strategy: str, budget: int, *, seed: int = 0,
                        workdir: str | Path | None = None,
                        value_of: Callable[[dict], float | None] | None = None) -> list[float | None]:
    """Objective values (ms; None = failed config) of Kernel Tuner's ``strategy`` in evaluation order.

    ``value_of(params)`` gives each visited config's objective as the other strategies see it
    (e.g. the replay's median); without it, Kernel Tuner's own ``time`` (a mean) is used.
    """
    try:
        from kernel_tuner import tune_kernel
    except ImportError as exc:
        raise MissingDependencyError("Kernel Tuner baselines need kernel_tuner: pip install kernel-tuner") from exc
    if strategy not in KERNEL_TUNER_STRATEGIES:
        raise InvalidInputError(f"`strategy` must be one of {KERNEL_TUNER_STRATEGIES}, but got strategy={strategy!r}")
    work = Path(workdir or tempfile.mkdtemp(prefix="perfpred-kt-"))
    plain, data = _plain_cache(Path(cache_file), work)
    keys = data["tune_params_keys"]
    valid = set(data["cache"])

    def recorded(params: dict) -> bool:
        return ",".join(str(params[k]) for k in keys) in valid

    np.random.seed(seed)
    random.seed(seed)
    patched = {"bayes_opt": _seeded_bayes_opt(seed), "dual_annealing": _dual_annealing_calls()}
    with warnings.catch_warnings(), patched.get(strategy, nullcontext()):
        # A CPU kernel's space (perfpred's C kernels) has no thread-block parameters; in simulation
        # mode Kernel Tuner warns about it once per run, which says nothing here.
        warnings.filterwarnings("ignore", message="None of the tunable parameters specify thread block")
        results, _ = tune_kernel(data["kernel_name"], "", data["problem_size"], [], data["tune_params"],
                                 restrictions=[recorded], cache=str(plain), simulation_mode=True, strategy=strategy,
                                 strategy_options={"max_fevals": budget}, verbose=False, quiet=True)
    seen: set[str] = set()
    values: list[float | None] = []
    for r in results:
        key = ",".join(str(r[k]) for k in keys)
        if key in seen:
            continue
        seen.add(key)
        if value_of is not None:
            values.append(value_of({k: r[k] for k in keys}))
        else:
            t = r.get("time")
            values.append(float(t) if isinstance(t, (int, float)) and np.isfinite(t) and t > 0 else None)
        if len(values) == budget:
            break
    return values
