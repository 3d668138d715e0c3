"""Build tuning sessions from what a user names on the command line, and write their reports.

A backend spec is ``replay:PATH`` (a recorded complete space: Kernel Tuner cache, UCI SGEMM
CSV) or ``kernel:NAME[:SIZE]`` (a shipped CPU kernel compiled and timed on this machine).
A prior is a recorded file of OTHER hardware (its configs' runtimes train one XGBoost model
per file), a Measurement store (one model per hardware id in it) or a runtime model trained with
``perfpred train`` (an MLflow run id or registered name), which predicts every candidate from the
Measurement row it would have (``Session.describe``).
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from perfpred.errors import InvalidInputError
from perfpred.tuner._space import Continuous, SearchSpace, read_yaml
from perfpred.tuner._surrogate import param_features, xgb_prior


@dataclass
class Session:
    space: SearchSpace
    backend: Any
    candidates: pd.DataFrame | None  # None: too many to list (the tuner searches its predictor)
    description: str
    optimum: float | None = None  # known for replayed spaces: the fastest recorded config the space admits
    optimum_label: str = "recorded optimum"  # what ``optimum`` is the optimum of, as the report names it
    # What runtime_ms is, where the recording's own tool reports another statistic (shown with the best).
    runtime_note: str | None = None
    # The problem every candidate solves (problem_size_x, m, ...): the derived kernel features need it.
    workload: dict[str, Any] = field(default_factory=dict)
    # The device's spec, where known (a replayed recording's GPU): occupancy features need it.
    hardware: dict[str, Any] | None = None
    # Candidates -> the Measurement rows they would have before being measured (kind, workload.*,
    # config.*, hardware): what a model trained on stored rows predicts from.
    describe: Callable[[pd.DataFrame], pd.DataFrame] | None = None
    # A replayed recording's GPU and file: a prior store's rows of it, or the file itself as a
    # prior, would hand the tuner the answers.
    recorded_hardware_id: str | None = None
    recorded_path: Path | None = None
    # What a study of this session tunes besides its parameters: the device and the problem (asked
    # for when the study opens), so a second GPU's recording, even one saved under the first one's
    # file name, is refused by the first one's study instead of joining it.
    study_identity: Callable[[], dict[str, Any]] = dict


def _replay_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith((".json", ".json.gz")):
        return "kernel-tuner"
    if "sgemm" in name and name.endswith((".csv", ".csv.gz")):
        return "uci-sgemm"
    raise InvalidInputError(f"replay needs a Kernel Tuner cache (.json/.json.gz) or the UCI SGEMM CSV, but got {path}")


def open_session(backend_spec: str, space_file: str | None = None,
                 on_warning: Callable[[str], None] | None = None) -> Session:
    """The session ``--backend`` and ``--space`` name; ``on_warning`` (default: ``warnings.warn``)
    is told of space-file values a recording never measured."""
    warn = on_warning or (lambda message: warnings.warn(message, stacklevel=3))
    kind, _, rest = backend_spec.partition(":")
    if kind == "replay":
        from perfpred.collect._replay import ReplayBackend

        path = Path(rest)
        if not path.exists():
            raise InvalidInputError(f"--backend replay:PATH: no file at {path}")
        fmt = _replay_format(path)
        backend = ReplayBackend.from_file(path, format=fmt)
        candidates = backend.recorded_configs()
        if space_file:
            space = SearchSpace.from_dict(_load_spec(space_file), source=f"--space {space_file}")
            _check_names(space, list(candidates.columns), space_file, "the recording")
            _check_recorded_values(space, candidates, space_file, warn)
        else:
            space = SearchSpace({k: sorted(candidates[k].unique().tolist()) for k in candidates.columns})
        # The file's domains narrow the recorded configs too, not only its constraints: a config
        # outside them would be measured and then refused by the study.
        candidates = candidates[space.admitted(candidates)]
        if space_file and candidates.empty:
            raise InvalidInputError(f"--space {space_file}: no recorded config lies in its domains and constraints")
        ids = backend.table["hardware_id"].dropna().astype(str).unique() if "hardware_id" in backend.table else []
        workload = backend.problem()
        # Against the configs the space admits: a narrowed space's best is not the whole recording's.
        optimum = _admitted_optimum(backend, space) if space_file else float(backend.optimum().runtime_ms)
        return Session(space, backend, candidates.reset_index(drop=True), replay_description(backend, path),
                       optimum=optimum, workload=workload, hardware=backend.hardware(),
                       optimum_label=(f"optimum of the {len(candidates)} recorded configs in --space" if space_file
                                      else "recorded optimum"),
                       runtime_note=("runtime_ms: the median of each config's recorded times (Kernel Tuner's "
                                     "`time` is their mean: --objective mean_ms tunes that)"
                                     if fmt == "kernel-tuner" else None),
                       describe=replayed_rows(backend.table),
                       recorded_hardware_id=str(ids[0]) if len(ids) == 1 else None, recorded_path=path,
                       study_identity=lambda: {"hardware": backend.hardware_id, "workload": workload})
    if kind in ("kernel", "local"):  # "local": the tuner issue's name for timing on this machine
        from perfpred.collect import KernelCollector, get_kernel

        name, _, size = rest.partition(":")
        spec = get_kernel(name)
        collector = KernelCollector(spec, problem_size=spec.parse_problem_size(size))
        space = SearchSpace.from_kernel_tuner(collector.space(), collector.restrictions)
        rules = space.constraints  # the kernel's restrictions: every candidate must satisfy them
        if space_file:
            kernel_names = space.names
            space = SearchSpace.from_dict(_load_spec(space_file), source=f"--space {space_file}")
            _check_names(space, kernel_names, space_file, f"kernel {name}")
            _check_kernel_values(space, spec, space_file)
        own = list(space.constraints)
        space = _with_kernel_rules(space, rules, spec)
        candidates = space.enumerate() if space.enumerable else None
        if space_file and candidates is not None and candidates.empty:  # before any run directory exists
            raise InvalidInputError(_admits_none(space_file, own, space, spec.name))

        def identity() -> dict[str, Any]:  # timed here: workers on other machines must not join the study
            from perfpred.collect import fingerprint

            return {"hardware": fingerprint(spec.device)["hardware_id"],
                    "workload": {"kernel": spec.name, **collector.problem_size}}

        description = backend_description(spec.name, device_name(spec.device), collector.problem_size, "timed live")
        return Session(space, _KernelBackend(collector), candidates, description,
                       workload=dict(collector.problem_size), describe=_kernel_rows(collector),
                       study_identity=identity)
    raise InvalidInputError(f"--backend must be replay:PATH or kernel:NAME[:SIZE] (also local:NAME[:SIZE]), but got "
                            f"{backend_spec!r}")


def backend_description(kernel: str | None, device: str | None, problem: dict[str, Any] | str | None,
                        source: str) -> str:
    """What a tuning session tunes, as its table, result.json and plots name it:
    "convolution on NVIDIA RTX A4000, problem 4096x4096 (replay of A4000.json.gz)",
    "sgemm on AMD EPYC 7763, problem m=512, n=512, k=512 (timed live)"."""
    text = kernel or "kernel"
    if device:
        text += f" on {device}"
    problem_text = problem_description(problem)
    if problem_text:
        text += f", problem {problem_text}"
    return f"{text} ({source})"


def problem_description(problem: dict[str, Any] | str | None) -> str:
    """A problem size as a title writes it: "m=48, n=64, k=40" (a dict), "4096x4096" (a recorded label)."""
    if isinstance(problem, dict):
        return ", ".join(f"{k}={v}" for k, v in problem.items())
    return str(problem) if problem else ""


def replay_description(backend: Any, path: Path) -> str:
    """A replayed recording's kernel, GPU and problem (its metadata), and its file: convolution/A4000.json.gz
    and dedispersion/A4000.json.gz share a file name."""
    workload = backend.problem()
    kernel = workload.get("kernel_name")
    kernel = str(kernel).removesuffix("_kernel") if kernel else None
    hardware = backend.hardware() or {}
    device = hardware.get("name") or hardware.get("gpu_name") or getattr(backend, "hardware_id", None)
    problem = workload.get("problem_size") or {k: v for k, v in workload.items() if k != "kernel_name"}
    return backend_description(kernel, device, problem, f"replay of {path.name}")


def device_name(device: str) -> str:
    """The name of the device a live kernel runs on ("cpu", "cuda", "cuda:1"): its CPU model or GPU name."""
    from perfpred.collect._hardware import cpu_spec, gpu_specs

    if not device.startswith("cuda"):
        return str(cpu_spec().get("cpu_model") or "this CPU")
    index = int(device.split(":")[1]) if ":" in device else 0
    gpus = gpu_specs()
    return str(gpus[index]["gpu_name"]) if index < len(gpus) else "a CUDA GPU"


def _check_names(space: SearchSpace, names: list[str], space_file: str, what: str) -> None:
    """A space file must name exactly the parameters of what it tunes."""
    unknown = [n for n in space.names if n not in names]
    if unknown:
        raise InvalidInputError(f"--space {space_file} names parameter(s) {unknown} that {what} does not have "
                                f"(it has {names})")
    missing = [n for n in names if n not in space.names]
    if missing:
        raise InvalidInputError(f"--space {space_file} lacks parameter(s) {missing} of {what} (fix one with a "
                                "one-value list)")


_MAX_RANGE_VALUES = 10_000  # an integer range of a kernel parameter is checked value by value up to this


def _check_kernel_values(space: SearchSpace, spec: Any, space_file: str) -> None:
    """A space file lists only values the kernel accepts (an integer range: every integer in it):
    the collector refuses any other config, which would stop the run when the tuner reached it.
    Every bad value is named at once. (Threads beyond this process's CPUs are a constraint added
    by ``_with_kernel_rules``, as in the kernel's own space.)"""
    bad = []
    for name, dom in space.params.items():
        allowed = list(spec.tune_params[name])
        if isinstance(dom, Continuous):
            low, high = dom.int_bounds if dom.integer else (0, -1)
            if not dom.integer or high - low >= _MAX_RANGE_VALUES:
                bad.append(f"{name} as a range of real numbers (it takes {allowed})")
                continue
            dom = range(low, high + 1)
        wrong = [v for v in dom if not spec.accepts(name, v)]
        if wrong:
            bad.append(f"{name} {', '.join(map(repr, wrong[:10]))}{' ...' if len(wrong) > 10 else ''} "
                       f"(it takes {allowed})")
    if bad:
        raise InvalidInputError(f"--space {space_file}: kernel {spec.name} does not accept {'; '.join(bad)}")


def _highest(dom: Any) -> Any:
    """The highest value a domain (a list of values or a range) holds."""
    return dom.high if isinstance(dom, Continuous) else max(dom)


def _with_kernel_rules(space: SearchSpace, rules: list[Any], spec: Any) -> SearchSpace:
    """``space`` under the kernel's own restrictions (a space file's constraints come on top of them)
    and, on a CPU, the threads this process may use: the collector refuses any other config, so a
    candidate outside them would stop the run when the tuner picked it."""
    from perfpred.collect._kernel import usable_cpus

    added = [r for r in rules if r not in space.constraints]
    threads = spec.threads_param
    if spec.device == "cpu" and threads and _highest(space.params[threads]) > usable_cpus():
        added.append(f"{threads} <= {usable_cpus()}")
    return SearchSpace(dict(space.params), [*space.constraints, *added]) if added else space


def _admits_none(space_file: str, own: list[Any], space: SearchSpace, kernel: str) -> str:
    """Why a kernel's space file has no candidate: its constraints and the kernel's, listed."""
    def shown(rules: list[Any]) -> str:
        return ", ".join(f"`{r}`" for r in rules)

    kernels = [r for r in space.constraints if r not in own]
    parts = ([f"{shown(own)} (the file's)"] if own else []) + (
        [f"{shown(kernels)} (kernel {kernel}'s restrictions)"] if kernels else [])
    return (f"--space {space_file}: its constraints admit no configuration of its values: "
            f"{' and '.join(parts)}; loosen a constraint or list more values")


def _check_recorded_values(space: SearchSpace, recorded: pd.DataFrame, space_file: str,
                           warn: Callable[[str], None]) -> None:
    """A space file's listed values must have been recorded: a parameter with none of them is
    refused, values the recording lacks are named in one warning (they cannot be measured)."""
    absent = {}
    for name, dom in space.params.items():
        if isinstance(dom, Continuous):
            continue
        values = recorded[name]
        missing = [v for v in dom if not values.isin([v]).any()]
        has = sorted(values.unique().tolist(), key=lambda v: (type(v).__name__, v))
        if len(missing) == len(dom):
            raise InvalidInputError(f"--space {space_file}: no recorded config lies in its domains and constraints "
                                    f"(no {name} of {missing} is recorded; the recording has {has})")
        if missing:
            absent[name] = f"{name} {missing} (recorded: {has})"
    if absent:
        warn(f"--space {space_file}: value(s) not in the recording, left out: {'; '.join(absent.values())}")


def _admitted_optimum(backend: Any, space: SearchSpace) -> float | None:
    """The fastest recorded working runtime among the configs ``space`` admits (None: none worked)."""
    table = backend.table
    params = pd.DataFrame({n: table[c].to_numpy() for n, c in _param_columns(table, space.names).items()})
    runtime = table["runtime_ms"].to_numpy(dtype=float)
    ok = (table["status"] == "ok").to_numpy() & np.isfinite(runtime) & space.admitted(params)
    return float(runtime[ok].min()) if ok.any() else None


def replayed_rows(table: pd.DataFrame) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """A candidate's row as the recording holds it, minus what measuring gives: the recording's
    kind, hardware and fixed workload columns, and each parameter under its recorded prefix."""
    shared = {c: table[c].dropna().iloc[0] for c in ("kind", "hardware_id", "hardware_json")
              if c in table and table[c].notna().any()}
    shared.update({c: table[c].iloc[0] for c in table.columns
                   if c.startswith("workload.") and table[c].nunique(dropna=False) == 1})

    def describe(frame: pd.DataFrame) -> pd.DataFrame:
        rows = frame.rename(columns=lambda n: f"workload.{n}" if f"workload.{n}" in table else f"config.{n}")
        return rows.assign(**{c: v for c, v in shared.items() if c not in rows})

    return describe


def _kernel_rows(collector: Any) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """A candidate's row as ``KernelCollector.measure`` would store it, before timing it."""
    from perfpred.datasets._schema import canonical_json

    hardware_by_threads: dict[Any, dict[str, Any]] = {}

    def describe(frame: pd.DataFrame) -> pd.DataFrame:
        rows = []
        for params in frame.to_dict("records"):
            cfg = collector.config(params)
            threads = cfg.params.get(collector.kernel.threads_param) if collector.kernel.threads_param else None
            if threads not in hardware_by_threads:  # peaks are measured per thread count, once
                hardware_by_threads[threads] = collector.hardware(cfg)
            hardware = hardware_by_threads[threads]
            rows.append({"kind": "kernel", "hardware_id": hardware["hardware_id"],
                         "hardware_json": canonical_json(hardware),
                         **{f"workload.{k}": v for k, v in cfg.workload().items()},
                         **{f"config.{k}": v for k, v in cfg.config().items()}})
        return pd.DataFrame(rows, index=frame.index)

    return describe


def prior_from_model(ref: str, session: Session,
                     objective: str = "runtime_ms") -> dict[str, Callable[[pd.DataFrame], np.ndarray]]:
    """A model trained with ``perfpred train`` (MLflow run id or name) as a tuning prior: it
    predicts each candidate from the row ``session.describe`` gives it (on the tuned hardware,
    so a model with hardware-spec features predicts for this device). It must predict the tuned
    ``objective`` (a runtime model, the default, for runtime_ms; one trained with ``--target
    energy_j`` for energy_j). Checked on two candidates here, so a model of another kind fails
    before anything is measured."""
    from perfpred.models import PerformanceModel, load_model

    est = load_model(ref)
    if not isinstance(est, PerformanceModel):
        raise InvalidInputError(f"--model {ref}: a model trained with `perfpred train` is needed, but it is a "
                                f"{type(est).__name__}")
    if est.target != objective:
        raise InvalidInputError(f"--model {ref} must predict the tuned objective {objective} (a prior is a prediction "
                                f"of what is tuned), but it predicts {est.target}: tune --objective {est.target}, or "
                                f"train a model with --target {objective}")
    if session.describe is None:
        raise InvalidInputError(f"--model {ref}: this backend cannot describe its configs as stored rows")

    def predict(frame: pd.DataFrame) -> np.ndarray:
        try:
            return np.asarray(est.predict(session.describe(frame)), dtype=float)
        except (InvalidInputError, KeyError, ValueError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InvalidInputError(f"--model {ref} (kind {est.kind!r}) cannot predict this space's configs: "
                                    f"{first[:300]}") from None

    predict(session.space.sample(2) if session.candidates is None else session.candidates.head(2))
    return {f"model {ref}": predict}


# What a kernel row measures (``KernelCollector.measure``): its timing statistics and metrics, less the
# constants of a run (its TimingPolicy, the pinned CPUs). No power: kernel timings read no sensor.
KERNEL_METRICS = ("runtime_ms", "min_ms", "mean_ms", "std_ms", "iqr_ms", *(f"metric.{name}" for name in (
    "gflops", "gbs", "compile_time_ms", "verification_time_ms", "benchmark_time_ms", "setup_time_ms",
    "framework_time_ms", "worker_start_ms", "timing_rel_ci", "calls_per_sample", "timing_converged",
    "compile_cache_hit", "verify_error_ratio")))


class _KernelBackend:
    """Adapts a KernelCollector to the tuner's ``measure(config dict)``."""

    reported_metrics = KERNEL_METRICS  # an objective outside them is refused before anything runs

    def __init__(self, collector: Any) -> None:
        self.collector = collector

    def power_note(self) -> str:
        """Why this backend reports no power_w/energy_j (``check_power``'s refusal)."""
        from perfpred.collect._power import power_observer

        device = self.collector.kernel.device
        sensor = power_observer(device).source
        here = ("this machine's power source is 'unavailable' (no RAPL or NVML sensor)" if sensor == "unavailable"
                else f"they do not read this machine's {sensor} sensor")
        return f"kernel {self.collector.kernel.name}'s timings record no power, and {here}"

    def measure(self, config):
        return self.collector.measure_dict(dict(config))


def _load_spec(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise InvalidInputError(f"--space: no file at {p}" + (" (it is a directory)" if p.is_dir() else ""))
    try:
        text = p.read_text()
        # YAML read as from_yaml reads it (1e3 is a number)
        spec = read_yaml(text) if p.suffix in (".yaml", ".yml") else json.loads(text)
    except Exception as exc:
        raise InvalidInputError(f"--space {p}: unreadable ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    if not isinstance(spec, dict):
        raise InvalidInputError(f"--space {p} must hold a mapping with 'params' (and optionally 'constraints'), "
                                f"but it holds {type(spec).__name__}")
    return spec


def priors_from_files(paths: list[str], names: list[str], exclude_hardware: str | None = None,
                      exclude_file: Path | None = None) -> dict[str, Any]:
    """One XGBoost model of log runtime per recorded file of other hardware, as prior callables.

    A path may also be a Measurement store (``perfpred import ... --into STORE``): one prior per
    hardware id (and problem, where the store holds several) among its rows that have the space's
    parameters; ``exclude_hardware`` (the replayed recording's own GPU) is left out, so a store
    holding every GPU can serve as the prior of each. ``exclude_file`` (the replayed recording)
    may not be a prior at all.
    """
    from perfpred.collect._replay import ReplayBackend

    priors: dict[str, Any] = {}
    for raw in paths:
        path = Path(raw)
        if exclude_file is not None and path.is_file() and path.samefile(exclude_file):
            raise InvalidInputError(f"--prior {path} is the replayed recording itself: a prior must come from OTHER "
                                    "hardware (or another problem size), or it hands the tuner the answers")
        if path.is_dir():
            priors.update(_priors_from_store(path, names, exclude_hardware))
            continue
        table = ReplayBackend.from_file(path, format=_replay_format(path)).table
        missing = [n for n, c in _param_columns(table, names).items() if c not in table]
        if missing:
            raise InvalidInputError(f"prior {path.name} lacks the space's parameter(s) {missing}")
        priors[path.name] = _runtime_prior(table, names)
    return priors


def _param_columns(table: pd.DataFrame, names: list[str]) -> dict[str, str]:
    """Each space parameter's column in Measurement rows: ``config.NAME``, else ``workload.NAME``."""
    return {n: f"config.{n}" if f"config.{n}" in table else f"workload.{n}" for n in names}


def _runtime_prior(table: pd.DataFrame, names: list[str]) -> Callable[[pd.DataFrame], np.ndarray]:
    """XGBoost on the parameters' features, fitted to log runtime of the table's working rows."""
    from xgboost import XGBRegressor

    frame = pd.DataFrame({n: table[c].to_numpy() for n, c in _param_columns(table, names).items()})
    ok = (table["status"] == "ok").to_numpy() & np.isfinite(table["runtime_ms"].to_numpy(dtype=float))
    model = XGBRegressor(n_estimators=300, max_depth=8, learning_rate=0.1, n_jobs=1, random_state=0)
    model.fit(param_features(frame[ok]), np.log(table["runtime_ms"].to_numpy(dtype=float)[ok]))
    return xgb_prior(model)


def _priors_from_store(path: Path, names: list[str], exclude_hardware: str | None) -> dict[str, Any]:
    from perfpred.datasets import MeasurementStore

    rows = MeasurementStore(path).load(status="ok")
    columns = _param_columns(rows, names)
    if rows.empty or any(c not in rows for c in columns.values()):
        raise InvalidInputError(f"prior {path}: no rows with the space's parameters {names}")
    rows = rows[rows[list(columns.values())].notna().all(axis=1) & (rows["runtime_ms"] > 0)]
    if exclude_hardware is not None:
        rows = rows[rows["hardware_id"].astype(str) != exclude_hardware]
    # Rows of one GPU may hold several problems (sizes): one prior each, on the columns that tell them apart.
    problem = [c for c in rows.columns if c.startswith("workload.") and c not in columns.values()
               and rows[c].nunique(dropna=False) > 1]
    priors = {}
    for key, group in rows.groupby(["hardware_id", *problem], dropna=False):
        if len(group) < 10:
            continue  # too few working configs to rank a space
        label = ":".join(str(k) for k in (key if isinstance(key, tuple) else (key,)))
        priors[f"{path.name}:{label}"] = _runtime_prior(group, names)
    if not priors:
        held = " (besides the tuned GPU's own rows)" if exclude_hardware else ""
        raise InvalidInputError(f"prior {path}: no hardware with >= 10 working configs of the space{held}")
    return priors


def write_report(run_dir: Path, *, history: pd.DataFrame, settings: dict, best_config: dict | None,
                 best_value: float | None, comparisons: dict[str, list[float | None]], optimum: float | None,
                 budget: int, description: str, n_this_run: int | None = None,
                 extra: dict[str, Any] | None = None, retimed: dict[str, float | None] | None = None,
                 reference: dict[str, float | None] | None = None, optimum_label: str | None = None,
                 on_warning: Callable[[str], None] | None = None, worker: str | None = None) -> dict[str, str]:
    """history.csv, result.json and best-so-far plot in ``run_dir``; returns the paths written
    (no ``plot`` without matplotlib: ``on_warning``, default a ``warning:`` line on stderr, says so).

    ``history`` is every evaluation of the study (a resumed run's earlier ones too);
    ``n_this_run`` how many of them this run made, where that differs (``worker``, the tuner's
    worker id, tells which where other workers' evaluations interleave); ``extra`` adds keys to
    result.json (after ``best_value``). A comparison an earlier report of the same study in
    ``run_dir`` holds and this run did not make again is kept (``comparisons_from_earlier_run``).
    ``retimed`` and ``reference`` go to the plot (``_report_plot.plot_best_so_far``): each
    curve's re-timed answer, and lines such as the default config's re-timed time.
    ``optimum_label`` says what ``optimum`` is the optimum of (``Session.optimum_label``: "optimum
    of the N recorded configs in --space"), in the plot's legend and result.json."""
    run_dir.mkdir(parents=True, exist_ok=True)
    earlier = _earlier_comparisons(run_dir, history, settings, comparisons)
    comparisons = {**comparisons, **earlier}
    _rounded_history(history).to_csv(run_dir / "history.csv", index=False)
    result = {"description": description, "settings": settings, "best_config": best_config,
              "best_value": best_value, **(extra or {}), "optimum": optimum,
              **({"optimum_label": optimum_label} if optimum_label and optimum is not None else {}),
              "n_evaluations": len(history),
              "n_evaluations_this_run": len(history) if n_this_run is None else n_this_run,
              "comparisons": {k: [None if v is None else float(v) for v in vals] for k, vals in comparisons.items()},
              **({"comparisons_from_earlier_run": sorted(earlier)} if earlier else {}),
              "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (run_dir / "result.json").write_text(json.dumps(result, indent=2, default=str))
    paths = {"history": str(run_dir / "history.csv"), "result": str(run_dir / "result.json")}
    from perfpred.tuner._report_plot import matplotlib_missing, plot_best_so_far

    if matplotlib_missing(on_warning or _warn_on_stderr):
        return paths

    values = history["value"].tolist() if "value" in history else []
    curves = {"perfpred": values, **{k if k not in earlier else f"{k} (earlier run)": v
                                     for k, v in comparisons.items()}}
    this_run = None
    if n_this_run is not None:
        this_run = [i >= len(history) - n_this_run for i in range(len(history))]
    if worker is not None and "worker" in history:
        mine = (history["worker"] == worker).tolist()
        # Trusted where it counts this run's evaluations: an earlier run in a container with the
        # same host name and PID shares the id, and then the last n_this_run are this run's.
        if n_this_run is None or sum(mine) == n_this_run:
            this_run = mine
    paths["plot"] = str(plot_best_so_far(run_dir / "best_so_far.png", curves,
                                         objective=settings.get("objective", "runtime_ms"),
                                         maximize=settings.get("direction") == "maximize", budget=budget,
                                         title=description, optimum=optimum, retimed=retimed, reference=reference,
                                         this_run=this_run,
                                         **({"optimum_label": optimum_label} if optimum_label else {})))
    return paths


def _warn_on_stderr(message: str) -> None:
    from perfpred._console import err_console

    err_console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


def _csv_float(value: float) -> str:
    """A measured float as history.csv writes it: 10 significant digits (12.665568, not 12.665567999999999)."""
    value = float(value)
    return str(value) if value.is_integer() else str(float(f"{value:.10g}"))


# history.csv's measured and predicted columns (a tuning loop's row: the config's parameters, then
# these): their timer noise is rounded off; a config parameter's value is written exactly.
_MEASURED_COLUMNS = frozenset({"value", "predicted", "prediction", "elapsed_s"})
_MEASURED_PREFIXES = ("metric.", "predicted_", "measured_")


def _rounded_history(history: pd.DataFrame) -> pd.DataFrame:
    """``history`` with its measured float columns as :func:`_csv_float` text (NaN left empty)."""
    out = history.copy()
    for column in out.columns:
        name = str(column)
        if (name in _MEASURED_COLUMNS or name.startswith(_MEASURED_PREFIXES)) \
                and pd.api.types.is_float_dtype(out[column]):
            out[column] = [None if pd.isna(v) else _csv_float(v) for v in out[column]]
    return out


def _earlier_comparisons(run_dir: Path, history: pd.DataFrame, settings: dict,
                         comparisons: dict[str, list[float | None]]) -> dict[str, list[float | None]]:
    """The comparisons the report in ``run_dir`` holds that this run did not make again, where that
    report is of the same study: the same backend and objective, and its history.csv the first rows
    of ``history`` (a study only grows). A resumed ``--budget 4`` run without --compare keeps the
    curves the ``--budget 16 --compare random`` run drew."""
    old_result, old_history = run_dir / "result.json", run_dir / "history.csv"
    if settings.get("backend") is None or not old_result.is_file() or not old_history.is_file():
        return {}
    try:
        old = json.loads(old_result.read_text())
        before = pd.read_csv(old_history)
    except (OSError, ValueError, pd.errors.ParserError):
        return {}
    same = {k: old.get("settings", {}).get(k) == settings.get(k) for k in ("backend", "objective", "direction")}
    kept = {k: v for k, v in (old.get("comparisons") or {}).items() if k not in comparisons and isinstance(v, list)}
    if not kept or not all(same.values()) or not _is_prefix(before, history):
        return {}
    return kept


def _is_prefix(before: pd.DataFrame, history: pd.DataFrame) -> bool:
    """Whether ``before`` (read back from history.csv) holds the first rows of ``history``."""
    if list(before.columns) != [str(c) for c in history.columns] or len(before) > len(history) or before.empty:
        return False
    from io import StringIO

    now = pd.read_csv(StringIO(_rounded_history(history.head(len(before))).to_csv(index=False)))
    for column in before.columns:
        a, b = before[column], now[column]
        if pd.api.types.is_numeric_dtype(a) and pd.api.types.is_numeric_dtype(b):
            if not np.allclose(a.to_numpy(float), b.to_numpy(float), rtol=1e-9, atol=0, equal_nan=True):
                return False
        elif not a.astype(str).equals(b.astype(str)):
            return False
    return True
