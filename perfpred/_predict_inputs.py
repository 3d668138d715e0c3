"""``perfpred predict``'s inputs: an --input CSV read cell by cell and checked against what the
model was trained on (one-line errors naming row, column and value), and the predictions printed
or written. The command itself is in ``perfpred.cli``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rich.table import Table

from perfpred._console import console, err_console
from perfpred.errors import InvalidInputError

GEMM_INPUTS = ("m", "n", "k", "b", "dtype", "threads", "trans_a", "trans_b")


def parse_scalar(text: str) -> Any:
    """The value a CSV cell or a ``--knob`` value spells, read on its own (a column's other rows
    never change it): None where empty, bool, int, float, else the text."""
    text = text.strip()
    if not text:
        return None
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _shown(value: Any) -> str:
    return "an empty cell" if value is None else repr(value) if isinstance(value, str) else str(value)


def read_input_csv(path: Path) -> tuple[list[dict[str, Any]], list[int]]:
    """``--input``: one dict per data row (values as :func:`parse_scalar` reads them) and each row's line
    number; an unreadable file, a repeated column, a row of the wrong length or no rows at all
    is a one-line error."""
    import csv

    def refuse(why: str) -> InvalidInputError:
        return InvalidInputError(f"--input {path}: unreadable CSV: {why}")

    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise refuse("the file is empty (no header row)")
            header = [name.strip() for name in header]
            repeated = sorted({name for name in header if header.count(name) > 1})
            if repeated:
                raise InvalidInputError(f"--input {path}: column {repeated[0]!r} appears more than once in the header")
            if "" in header:
                raise InvalidInputError(f"--input {path}: column {header.index('') + 1} of the header has no name")
            configs, lines = [], []
            for fields in reader:
                if not any(field.strip() for field in fields):
                    continue  # a blank line
                if len(fields) != len(header):
                    raise refuse(f"row {len(configs) + 1} (line {reader.line_num}) has {len(fields)} field(s), "
                                 f"but the header has {len(header)}")
                configs.append({name: parse_scalar(field) for name, field in zip(header, fields, strict=True)})
                lines.append(reader.line_num)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise refuse(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    if not configs:
        raise InvalidInputError(f"--input {path} has no rows (only its header: {', '.join(header)})")
    return configs, lines


def read_input(path: Path) -> tuple[list[dict[str, Any]], list[int]]:
    """``--input`` by its suffix: YAML (``.yaml`` / ``.yml``) or else CSV."""
    if path.suffix.lower() in (".yaml", ".yml"):
        return read_input_yaml(path)
    return read_input_csv(path)


def read_input_yaml(path: Path) -> tuple[list[dict[str, Any]], list[int]]:
    """``--input`` as YAML: a list of mappings, one per config, each value a number, true/false or
    text (as a tuning space's YAML spells them); returns one dict per config (a key some configs
    leave out is an empty cell there, as in a CSV) and the line each config starts on. Anything
    else is a one-line error."""
    import yaml

    from perfpred.tuner._space import _yaml_loader

    try:
        loader = _yaml_loader()(path.read_text(encoding="utf-8-sig"))
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InvalidInputError(f"--input {path}: unreadable YAML: {first}") from None
    if not isinstance(data, list) or not data:
        got = "no configs" if data in (None, []) else f"a {type(data).__name__}"
        raise InvalidInputError(f"--input {path}: a YAML input must be a list of mappings, one per config "
                                f"(`- block_size_x: 32`), but got {got}")
    lines = [item.start_mark.line + 1 for item in node.value]
    header: dict[str, None] = {}
    for i, item in enumerate(data):
        if not isinstance(item, dict) or not item:
            raise InvalidInputError(f"--input {path} row {i + 1} (line {lines[i]}): each config must be a mapping "
                                    f"of parameter to value, but got {item!r}"[:300])
        for key, value in item.items():
            if not isinstance(key, str) or not key.strip():
                raise InvalidInputError(f"--input {path} row {i + 1} (line {lines[i]}): a parameter name must be "
                                        f"text, but got {key!r}")
            if isinstance(value, (list, dict, set)) or not (value is None or isinstance(value, (str, int, float))):
                raise InvalidInputError(f"--input {path} row {i + 1} (line {lines[i]}), column {key!r}: must be one "
                                        f"value (a number, true/false or text), but got {value!r}"[:300])
            header[key] = None
    # YAML's own types stand (a quoted '32' is text); blank text is missing, as an empty CSV cell.
    configs = [{name: (value.strip() or None) if isinstance(value := item.get(name), str) else value
                for name in header} for item in data]
    return configs, lines


# What a Measurement records as results, never a model's input: a CSV of configs that holds them
# (the measured times next to each config) passes them through to the output.
RESULT_COLUMNS = frozenset({"measurement_id", "runtime_ms", "raw_times_ms", "n_runs", "min_ms", "mean_ms", "std_ms",
                            "iqr_ms", "cv", "power_w", "energy_j", "power_source", "load_avg_1m", "ref_runtime_ms",
                            "error", "source", "timestamp", "status"})


def carried_columns(est: Any, kind: str, header: list[str], keep: list[str], input_path: Path) -> list[str]:
    """Columns of ``--input`` copied to the output unchanged and never read by the model: those
    ``--keep`` names (an id, a label) and results a Measurement records (its target, measured
    times, ``metric.*``) unless the model reads one of that name.
    Any other column stays an input, so a parameter the model never saw (a misspelt name, a
    parameter it was not trained on) is still refused rather than silently ignored."""
    missing = [c for c in keep if c not in header]
    if missing:
        raise InvalidInputError(f"--keep names column(s) {', '.join(map(repr, missing))} that --input {input_path} "
                                f"lacks (its columns: {', '.join(header)})")
    inputs = set(GEMM_INPUTS) if kind == "gemm" else {shown_column(c, kind) for c in _model_inputs(est)}
    name = str(getattr(est, "target", "runtime_ms")).removeprefix("metric.")
    results = {*RESULT_COLUMNS, name, f"metric.{name}"}
    # A kept column the model reads (``--keep id,m``) stays an input: the output shows inputs anyway.
    return [c for c in header if c not in inputs and (c in keep or c in results or c.startswith("metric."))]


def split_carried(configs: list[dict[str, Any]], carried: list[str],
                  keep: list[str] | tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """``configs`` without the ``carried`` columns, with a note naming those the user did not ask
    to keep (``--keep`` names its own); the rows as given stay for the output."""
    unasked = [c for c in carried if c not in keep]
    if unasked:
        err_console.print(f"note: --input column(s) {', '.join(unasked)} pass through to the output unchanged (the "
                          "model does not read them)", highlight=False, soft_wrap=True)
    return [{c: v for c, v in cfg.items() if c not in carried} for cfg in configs]


def _where(input_csv: Path | None, lines: list[int], i: int, column: str) -> str:
    """Where a value came from, as the user gave it: a CSV cell or a command-line option."""
    if input_csv is None:
        return f"--{column.replace('_', '-')}"
    return f"--input {input_csv} row {i + 1} (line {lines[i]}), column {column!r}"


def check_gemm_configs(configs: list[dict[str, Any]], input_csv: Path | None, lines: list[int]) -> None:
    """A GEMM model's configs: known columns, m/n/k given, whole positive sizes, a known dtype.
    Nothing about this machine: predicting a GEMM allocates nothing (its memory is no limit)."""
    from perfpred.features import DTYPE_BYTES

    if input_csv is not None:
        unknown = [c for c in configs[0] if c not in GEMM_INPUTS]
        if unknown:
            raise InvalidInputError(f"--input {input_csv}: unknown column(s) {unknown}; a GEMM model's CSV takes "
                                    f"{list(GEMM_INPUTS)} (to carry a column through to the output: --keep NAME)")
        missing = [c for c in ("m", "n", "k") if c not in configs[0]]
        if missing:
            raise InvalidInputError(f"--input {input_csv} lacks column(s) {missing}: a GEMM model's CSV needs m, n "
                                    "and k (and may give b, dtype, threads, trans_a, trans_b)")
    for i, cfg in enumerate(configs):
        for key, value in cfg.items():
            if key in ("m", "n", "k", "b", "threads"):
                whole = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                         and value == int(value))
                if not whole or value <= 0:
                    raise InvalidInputError(f"{_where(input_csv, lines, i, key)}: `{key} > 0` must hold for a GEMM "
                                            f"(a whole number), but got {_shown(value)}")
                cfg[key] = int(value)
            elif key == "dtype" and value not in DTYPE_BYTES:
                raise InvalidInputError(f"{_where(input_csv, lines, i, key)}: `dtype` must be one of "
                                        f"{tuple(DTYPE_BYTES)}, but got {_shown(value)}")
            elif key in ("trans_a", "trans_b"):
                if value not in (True, False, 0, 1):
                    raise InvalidInputError(f"{_where(input_csv, lines, i, key)}: `{key}` must be true or false, "
                                            f"but got {_shown(value)}")
                cfg[key] = bool(value)


def check_gemm_peaks(est: Any, model: str, hardware_id: str, configs: list[dict[str, Any]],
                      input_csv: Path | None, lines: list[int], spec: dict[str, Any] | None = None) -> None:
    """A model that predicts relative to the roofline needs the hardware's peak for each dtype
    (``spec``: the hardware's, where the model was not trained on it)."""
    if not getattr(est, "uses_residual_", False) or getattr(est, "residual_of", None) != "log2_roofline_ms":
        return
    peaks = (spec if spec is not None else json.loads(est.hardware_specs_[hardware_id])).get("peak_gflops")
    if not isinstance(peaks, dict):
        return
    for i, cfg in enumerate(configs):
        dtype = cfg.get("dtype", "fp32")
        if dtype not in peaks:
            raise InvalidInputError(f"{_where(input_csv, lines, i, 'dtype')}: the spec of hardware {hardware_id} has "
                                    f"no peak GFLOP/s for {dtype!r} (only for {', '.join(peaks)}), and --model "
                                    f"{model} predicts relative to that roofline, but got dtype {dtype!r}")


def model_hardware(est: Any, model: str, hardware_id: str | None) -> str:
    """``--hardware-id``, or the one hardware the model was trained on."""
    ids = sorted(getattr(est, "hardware_specs_", {}))
    if hardware_id is None:
        if len(ids) != 1:
            raise InvalidInputError(f"--model {model} was trained on {len(ids)} hardware ids ({', '.join(ids)}): "
                                    "pick one with --hardware-id")
        return ids[0]
    if hardware_id not in ids:
        raise InvalidInputError(f"`--hardware-id` must name a hardware_id --model {model} was trained on "
                                f"({', '.join(ids)}), but got {hardware_id!r}")
    return hardware_id


# Spec facts the hardware features read (``hardware_features``, ``gemm_features``).
SPEC_FACTS = ("peak_gflops", "mem_bw_gbs", "sm_count", "l2_cache_kib", "clock_mhz", "caches_kib")


def resolve_hardware(est: Any, model: str, kind: str, hardware_id: str | None,
                     spec_file: Path | None) -> tuple[str, dict[str, Any] | None, str]:
    """The hardware to predict for: ``(hardware_id, None, "")`` for one the model was trained on;
    for a GEMM model (its features are computed from the hardware spec, so they carry to a GPU it
    never saw) also another GPU, as ``(hardware_id, spec, where the spec came from)``: from
    ``--hardware-spec`` or perfpred's spec table. A kernel or serving model learnt its hardware
    from its rows only, so it keeps to the trained hardware."""
    trained = sorted(getattr(est, "hardware_specs_", {}))
    if spec_file is None and (hardware_id is None or hardware_id in trained):
        return model_hardware(est, model, hardware_id), None, ""
    if kind != "gemm":
        why = (f"a {kind} model learnt its hardware from its training rows, so it predicts only that (GEMM models "
               "predict other GPUs from their spec)")
        if spec_file is not None:
            raise InvalidInputError(f"--hardware-spec {spec_file}: --model {model} was trained on "
                                    f"{', '.join(trained)} and {why}")
        raise InvalidInputError(f"`--hardware-id` must name a hardware_id --model {model} was trained on "
                                f"({', '.join(trained)}): {why}, but got {hardware_id!r}")
    if spec_file is not None:
        hardware_id, spec = read_hardware_spec(spec_file, hardware_id)
        if hardware_id in trained:
            raise InvalidInputError(f"--hardware-spec {spec_file} describes {hardware_id}, which --model {model} was "
                                    "trained on: leave --hardware-spec out (the model keeps that hardware's spec)")
        return hardware_id, spec, f"--hardware-spec {spec_file}"
    spec, known = builtin_gpu_spec(hardware_id)
    if spec is None:
        raise InvalidInputError(f"`--hardware-id` must name a hardware_id --model {model} was trained on "
                                f"({', '.join(trained)}) or a GPU of perfpred's spec table (e.g. "
                                f"{', '.join(known[:3])}), but got {hardware_id!r}: give its spec with "
                                "--hardware-spec FILE.json (peak_gflops, mem_bw_gbs, sm_count, ..., or a NeuSight "
                                "device config)")
    return hardware_id, spec, "perfpred's spec table"


def builtin_gpu_spec(hardware_id: str) -> tuple[dict[str, Any] | None, list[str]]:
    """The spec of the GPU of perfpred's tables (``GPU_SPECS``, ``GPU_FACTS``) whose hardware id is
    ``hardware_id``, as the importers build it (or None), and the ids the tables know."""
    from perfpred.collect.importers._gpus import GPU_FACTS, gpu_hardware, hardware_id_for
    from perfpred.features import GPU_SPECS

    names = {hardware_id_for(name): name for name in [*GPU_SPECS, *GPU_FACTS]}
    name = names.get(hardware_id)
    return (gpu_hardware(name) if name else None), sorted(names)


def read_hardware_spec(path: Path, hardware_id: str | None) -> tuple[str, dict[str, Any]]:
    """``--hardware-spec``: a JSON hardware spec (perfpred's keys: peak_gflops per dtype,
    mem_bw_gbs, sm_count, l2_cache_kib, ...) or a NeuSight device config, read as the NeuSight
    importer reads it (on top of the spec table's facts of that GPU); its hardware id and spec."""
    from perfpred.collect.importers._gpus import gpu_hardware

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InvalidInputError(f"--hardware-spec {path}: unreadable JSON: {first}") from None
    if not isinstance(data, dict):
        raise InvalidInputError(f"--hardware-spec {path} must hold a JSON object (a hardware spec or a NeuSight "
                                f"device config), but got a {type(data).__name__}")
    spec = gpu_hardware(data["Device"], sheet=data) if isinstance(data.get("Device"), str) else dict(data)
    named = spec.get("hardware_id")
    if hardware_id is not None and named is not None and named != hardware_id:
        raise InvalidInputError(f"--hardware-spec {path} describes hardware_id {named!r}, but got --hardware-id "
                                f"{hardware_id!r}")
    hardware_id = hardware_id or named
    if not isinstance(hardware_id, str) or not hardware_id:
        raise InvalidInputError(f"--hardware-spec {path} has no hardware_id: name the hardware with --hardware-id")
    peaks = spec.get("peak_gflops")
    bad = [(f"peak_gflops.{k}", v) for k, v in peaks.items() if not _positive(v)] if isinstance(peaks, dict) else (
        [("peak_gflops", peaks)] if peaks is not None and not _positive(peaks) else [])
    bad += [(k, spec[k]) for k in ("mem_bw_gbs", "sm_count", "l2_cache_kib", "clock_mhz")
            if k in spec and not _positive(spec[k])]
    if bad:
        raise InvalidInputError(f"--hardware-spec {path}: `{bad[0][0]} > 0` must hold (a number), but got "
                                f"{bad[0][1]!r}")
    return hardware_id, {**spec, "hardware_id": hardware_id}


def _positive(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and value > 0)


def new_hardware_rows(est: Any, model: str, configs: list[dict[str, Any]], hardware_id: str,
                      spec: dict[str, Any], source: str) -> Any:
    """Rows of ``configs`` on a GPU the model never saw, after checking its spec gives every fact
    the model's features read (a fact every training GPU had and this one lacks would be a
    missing feature: a guess, silently), with a warning that this GPU was not in training."""
    from perfpred.features import config_frame

    rows = config_frame(configs, spec)
    trained = getattr(est, "hardware_specs_", {})
    if hasattr(est, "_features") and trained:
        reference = next(iter(trained))
        old = est._features(est.config_rows(configs, reference))

        def lost(facts: dict[str, Any]) -> list[str]:
            new = est._features(config_frame(configs, facts))
            return [c for c in new.columns if c in old and new[c].isna().any() and old[c].notna().all()]

        missing = lost(spec)
        if missing:
            # The facts whose absence loses features: each one lent from a training GPU's spec.
            lent = json.loads(trained[reference])
            lacking = [k for k in SPEC_FACTS if k not in spec and k in lent
                       and len(lost({**spec, k: lent[k]})) < len(missing)]
            what = f"lacks {', '.join(lacking)}" if lacking else "leaves out facts"
            raise InvalidInputError(f"the spec of {hardware_id} ({source}) {what}, which the training GPUs' specs "
                                    f"give and --model {model}'s features read ({', '.join(missing[:3])}): give the "
                                    "GPU's spec with --hardware-spec FILE.json (e.g. a NeuSight device config)")
    err_console.print(f"[yellow]warning:[/] --model {model} was not trained on {hardware_id} (it was on "
                      f"{', '.join(sorted(trained))}): predicted from its spec ({source}), so expect the model's "
                      "error on unseen GPUs, not its held-out error", highlight=False, soft_wrap=True)
    return rows


def device_type(spec: Any, hardware_id: str | None = None) -> str | None:
    """"cpu" or "gpu": the kind of device a hardware spec (a dict or its JSON text) describes, or
    None where it does not say. perfpred's own rows state ``device`` ("cpu", "cuda", "cuda:N"; a
    CPU row's host may list GPUs it did not run on); recorded GPUs state GPU facts (``gpu_name``,
    ``sm_count``, ...), CPUs CPU facts (``cpu_model``, ``caches_kib``, ...); else the hardware id's
    prefix (``gpu-...``, ``cpu-...``) decides."""
    if isinstance(spec, str):
        try:
            spec = json.loads(spec)
        except json.JSONDecodeError:
            spec = None
    spec = spec if isinstance(spec, dict) else {}
    device = str(spec.get("device") or "").lower()
    if device == "cpu":
        return "cpu"
    if device.startswith(("cuda", "gpu", "rocm", "hip")):
        return "gpu"
    if any(spec.get(k) is not None for k in ("gpu_name", "sm_count", "compute_capability", "l2_cache_kib")):
        return "gpu"
    if any(spec.get(k) is not None for k in ("cpu_model", "caches_kib", "logical_cpus", "isa")):
        return "cpu"
    name = str(hardware_id or spec.get("hardware_id") or "").lower()
    return "gpu" if name.startswith("gpu-") else "cpu" if name.startswith("cpu-") else None


def trained_device_types(est: Any) -> dict[str, list[str]]:
    """The device types the model's training rows ran on ("cpu", "gpu"), each with its hardware ids
    (a hardware whose spec does not tell is left out)."""
    types: dict[str, list[str]] = {}
    for hardware_id, text in sorted(getattr(est, "hardware_specs_", {}).items()):
        kind = device_type(text, hardware_id)
        if kind is not None:
            types.setdefault(kind, []).append(hardware_id)
    return types


def check_device_type(est: Any, model: str, hardware_id: str, spec: dict[str, Any] | None, source: str,
                      allow_other: bool) -> str | None:
    """The device type of the hardware to predict for (None where its spec does not tell). A GEMM
    model carries across GPUs by their specs, never across device types: a CPU-trained model asked
    for a GPU (or the reverse) is a one-line error unless ``allow_other`` (``--allow-other-device``),
    which gets a loud warning instead."""
    trained = trained_device_types(est)
    target = device_type(spec if spec is not None else getattr(est, "hardware_specs_", {}).get(hardware_id),
                         hardware_id)
    if target is None or not trained or target in trained:
        return target
    kinds = " and ".join(t.upper() for t in sorted(trained))
    ids = ", ".join(h for t in sorted(trained) for h in trained[t])
    asked = f"--hardware-id {hardware_id}" if not source.startswith("--hardware-spec") else f"{source} ({hardware_id})"
    if not allow_other:
        raise InvalidInputError(f"--model {model} was trained on {kinds} rows only ({ids}), but got {asked}, a "
                                f"{target.upper()}: a model does not carry across device types (its features mean "
                                f"other things there); predict with a model trained on {target.upper()} rows, or "
                                "pass --allow-other-device to get a number anyway")
    err_console.print(f"[bold red]WARNING:[/] --allow-other-device: --model {model} was trained on {kinds} rows only "
                      f"({ids}) and predicts for {hardware_id}, a {target.upper()}: no training row ran on such a "
                      "device, so the number is a guess that may be off by orders of magnitude",
                      highlight=False, soft_wrap=True)
    return target


def gemm_threads(est: Any, model: str, configs: list[dict[str, Any]], hardware_id: str, target: str | None,
                 input_csv: Path | None, lines: list[int]) -> None:
    """CPU threads of a GEMM's configs, for the device predicted: on a GPU they mean nothing, so a
    threads value is refused where the model was trained on GPU rows only, else dropped with a
    warning; on a CPU (or a device its spec does not tell) --threads defaults to 1."""
    if target != "gpu":
        if input_csv is None:
            configs[0].setdefault("threads", 1)
        return
    i = next((i for i, cfg in enumerate(configs) if cfg.get("threads") is not None), None)
    if i is not None:
        where = _where(input_csv, lines, i, "threads")
        why = f"CPU threads mean nothing on {hardware_id}, a GPU"
        if set(trained_device_types(est)) == {"gpu"}:
            raise InvalidInputError(f"{where}: {why} (--model {model} was trained on GPU rows only), but got "
                                    f"threads {configs[i]['threads']}: leave threads out")
        err_console.print(f"[yellow]warning:[/] {where}: {why}: ignored", highlight=False, soft_wrap=True)
    for cfg in configs:
        cfg.pop("threads", None)


def regressor_name(est: Any) -> str:
    """The model's learner as ``perfpred train --model`` names it (xgb, xgb-quantile, auto, ...)."""
    name = getattr(est, "regressor", None)
    if isinstance(name, str):
        chosen = getattr(getattr(est, "regressor_", None), "chosen_", None)
        return f"{name} (which chose {chosen})" if chosen else name
    return type(name if name is not None else est).__name__


def check_coverage(est: Any, model: str, coverage: float | None) -> None:
    """``--coverage`` needs a model that gives predictive intervals: a one-line error naming the
    model's learner as ``perfpred train --model`` names it, and the learners that give them."""
    if coverage is None:
        return
    linear = getattr(est, "reference_mode_", None) == "linear"
    try:
        has = bool(est.has_intervals) and not linear
    except AttributeError:
        has = hasattr(est, "predict_interval") and not linear
    if has:
        return
    learner = ("--reference-mode linear (the references' fit alone, no learner)" if linear
               else f"--model {regressor_name(est)}")
    raise InvalidInputError(f"`--coverage` asks for a predictive interval, which only models trained with --model "
                            f"xgb-quantile or xgb-ensemble give (predict_interval), but --model {model} was trained "
                            f"with {learner}: leave --coverage out, or train one with --model xgb-quantile")


def _model_inputs(est: Any) -> dict[str, dict[str, Any]]:
    """The input columns of a fitted model (``input_columns_``); for a kernel model fitted before
    it kept them, the ``config.*`` columns its ``p_NAME`` features name (types unknown)."""
    summary = getattr(est, "input_columns_", None)
    if summary is not None:
        return summary
    legacy = {f"config.{f[2:]}": {"missing": False, "constant": False, "numeric": None}
              for f in getattr(est, "feature_names_", []) if f.startswith("p_")}
    return {**legacy, **{c: {"missing": False, "constant": True, "numeric": None}
                         for c in getattr(est, "constant_workload_", {})}}


def required_inputs(est: Any, kind: str) -> list[str]:
    """Columns a CSV must give: a kernel's tuning parameters and the problem where it varied in
    training (a constant one is taken from the model); a serving model's numbers that its features
    read (``SERVING_FEATURE_INPUTS``: model size, knobs, the load's concurrency or rate and lengths)
    and that every training row had and that varied; text columns may be left out. A serving row's
    other columns (the load test's request count and seed, ...) are no input."""
    inputs = _model_inputs(est)
    if kind == "kernel":
        return [c for c, info in inputs.items()
                if not info["missing"] and (c.startswith("config.") or not info["constant"])]
    from perfpred.features._serving import SERVING_FEATURE_INPUTS

    return [c for c, info in inputs.items() if c in SERVING_FEATURE_INPUTS and not info["missing"]
            and not info["constant"] and info["numeric"]]


def shown_column(column: str, kind: str) -> str:
    """A column as a CSV names it: a kernel's parameters and a serving model's inputs without prefix."""
    if kind == "serving" or column.startswith("config."):
        return column.split(".", 1)[1]
    return column


def _check_input_rows(est: Any, model: str, configs: list[dict[str, Any]], placed: dict[str, str], kind: str,
                      input_csv: Path, lines: list[int], readable: frozenset[str] = frozenset()) -> None:
    """A kernel or serving CSV against the columns the model was trained on: none missing, none it
    never saw (``readable``: columns the features read though training lacked them), and every
    cell a value of the column's type and sign (a missing, text or negative number is refused)."""
    import difflib

    inputs = _model_inputs(est)
    if not inputs:
        return  # a model fitted before it kept its input columns, with no parameter features
    legacy = getattr(est, "input_columns_", None) is None
    given = set(placed.values())
    missing = [c for c in required_inputs(est, kind) if c not in given]
    unknown = [name for name, c in placed.items()
               if c not in inputs and c not in readable and not (legacy and c.startswith("workload."))]
    needed = required_inputs(est, kind)
    # The model's input columns as a CSV names them, the ones it needs first.
    known = list(dict.fromkeys(shown_column(c, kind) for c in [*needed, *inputs]))
    if missing or unknown:
        problems = []
        if missing:
            problems.append(f"lacks column(s) {', '.join(repr(shown_column(c, kind)) for c in missing)} that every "
                            "training row had")
        for name in unknown[:3]:
            close = [c for c in difflib.get_close_matches(name.split(".", 1)[-1], known, n=2) if c != name]
            problems.append(f"has column {name!r} that no training row had"
                            + (f" (did you mean {close[0]!r}?)" if close else ""))
        carry = " (to carry a column through to the output: --keep NAME)" if unknown else ""
        raise InvalidInputError(f"--model {model} (kind {est.kind!r}) cannot predict these configs: --input "
                                f"{input_csv} {' and '.join(problems)} (its columns: {', '.join(placed)}); the "
                                f"model's input columns: {', '.join(known[:16])}{carry}")
    by_column = {c: name for name, c in placed.items()}
    for column, info in inputs.items():
        if column not in by_column:
            continue
        name = by_column[column]
        for i, cfg in enumerate(configs):
            value = cfg[name]
            where = _where(input_csv, lines, i, name)
            if value is None:
                if not info["missing"]:
                    raise InvalidInputError(f"{where}: a value is needed (every training row has one), but got an "
                                            "empty cell")
                continue
            if info["numeric"] is None and isinstance(value, float) and not math.isfinite(value):
                raise InvalidInputError(f"{where}: must be a value (no training row lacked one), but got {value}")
            if not info["numeric"]:
                continue  # text (any value; one never seen is warned about) or of unknown type
            if not isinstance(value, (int, float)) or not math.isfinite(value):  # true/false count as 1/0
                raise InvalidInputError(f"{where}: must be a finite number (the training rows hold "
                                        f"{info['min']:g}..{info['max']:g}), but got {_shown(value)}")
            if value < 0 <= info["min"] or value <= 0 < info["min"]:
                rule = "> 0" if info["min"] > 0 else ">= 0"
                raise InvalidInputError(f"{where}: `{name} {rule}` must hold (as in every training row: "
                                        f"{info['min']:g}..{info['max']:g}), but got {_shown(value)}")


def warn_outside_training(est: Any, rows: Any) -> None:
    """A warning line per input outside what the model was trained on (an unseen dtype, a size
    far beyond the trained range): the prediction there is a guess, however precise it looks."""
    warnings = est.input_warnings(rows) if hasattr(est, "input_warnings") else []
    for line in warnings[:3]:
        err_console.print(f"[yellow]warning:[/] {line}", highlight=False, soft_wrap=True)
    if len(warnings) > 3:  # each line starts with its column and values ("workload.k=1, 16384 lie far ...")
        more = "; ".join(_column_and_values(line) for line in warnings[3:])
        err_console.print(f"[yellow]warning:[/] also outside the training rows: {more}", highlight=False,
                          soft_wrap=True)


def _column_and_values(warning: str) -> str:
    """``workload.k=1, 16384`` of a warning ``workload.k=1, 16384 lie far outside ...``."""
    import re

    found = re.match(r"(.+?) (?:lies|lie|differs|differ|is not among|never occurs) ", warning)
    return found.group(1) if found else warning.split(" ", 1)[0]


# What ``--output`` writes, by its suffix.
OUTPUT_FORMATS = {".csv": "CSV", ".json": "JSON (a list of records, one per config)", ".parquet": "Parquet"}


def check_output_format(output: Path | None) -> None:
    """``--output``'s suffix names its format (.csv, .json, .parquet); any other is a one-line error,
    before any prediction is spent on it."""
    if output is not None and output.suffix.lower() not in OUTPUT_FORMATS:
        raise InvalidInputError(f"`--output` must end in {', '.join(OUTPUT_FORMATS)} (the format written), but got "
                                f"--output {output}")


def write_predictions(out: Any, output: Path) -> None:
    """``out`` to ``output`` in the format its suffix names (:data:`OUTPUT_FORMATS`)."""
    suffix = output.suffix.lower()
    try:
        if suffix == ".json":
            output.write_text(out.to_json(orient="records", indent=2, double_precision=15) + "\n", encoding="utf-8")
        elif suffix == ".parquet":
            out.to_parquet(output, index=False)
        else:
            out.to_csv(output, index=False)
    except OSError as exc:  # checked before predicting; the folder may have gone since
        raise InvalidInputError(f"--output {output}: cannot write it: {exc.strerror or exc}") from None
    except (ImportError, ValueError, TypeError) as exc:  # Parquet: no engine, or a column of mixed types
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InvalidInputError(f"--output {output}: cannot write it as {OUTPUT_FORMATS[suffix]}: {first[:200]} "
                                "(write .csv or .json instead)") from None


def print_predictions(configs: list[dict[str, Any]], pred: Any, band: Any, output: Path | None,
                       target: str = "runtime_ms", given: list[dict[str, Any]] | None = None,
                       as_json: bool = False) -> None:
    """The configs with their predicted ``target`` (and band), to ``output`` (CSV, JSON or Parquet
    by its suffix), as JSON records on stdout (``as_json``) or printed as a table; a table wider
    than the console is printed as CSV instead, so no prediction is ever cut or wrapped.
    ``given``: the rows as read, whose columns the model did not read are passed through in place."""
    import pandas as pd

    name = target.removeprefix("metric.")
    out = pd.DataFrame(configs)
    if given is not None and len(given[0]) > len(configs[0]):
        full = pd.DataFrame(given)
        for column in out.columns:  # the inputs as checked, in the columns' places as given
            full[column] = out[column].to_numpy()
        out = full
    out = out.assign(**{f"predicted_{name}": pred})
    if band is not None:
        out = out.assign(**{f"lower_{name}": band["lower"].to_numpy(), f"upper_{name}": band["upper"].to_numpy()})
    if output:
        write_predictions(out, output)
        console.print(f"wrote {len(out)} predictions to {output}", highlight=False, soft_wrap=True)
        return
    if as_json:
        print(out.to_json(orient="records", double_precision=15), flush=True)
        return
    table = predictions_table(out, console.width)
    if table is None:  # wider than the console: plain CSV, every column whole (said on a terminal only)
        if console.is_terminal:
            err_console.print(f"note: the predictions table is wider than the {console.width} columns here, so it is "
                              "printed as CSV (--output FILE.csv|.json|.parquet writes a file)", highlight=False,
                              soft_wrap=True)
        print(out.to_csv(index=False), end="", flush=True)
        return
    console.print(table)


def predictions_table(out: Any, width: int) -> Table | None:
    """``out`` as a table of at most ``width`` columns, or None where it cannot fit: every value
    whole, the prediction columns' names whole too (other names may fold), nothing ever cut."""
    cells = [[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row] for row in out.itertuples(index=False)]
    names = [str(c).split(".", 1)[-1] for c in out.columns]
    predicted = [str(c).startswith(("predicted_", "lower_", "upper_")) for c in out.columns]
    values = [max((len(r[j]) for r in cells), default=1) for j in range(len(names))]
    # An input column's name folds down to its values' width (not below 5 characters, or its length).
    least = [max(values[j], len(names[j]) if predicted[j] else min(len(names[j]), 5)) for j in range(len(names))]
    spare = width - (sum(least) + 3 * len(names) + 1)  # a cell's padding and border: 3 characters
    if spare < 0:
        return None
    widths = list(least)
    for j in sorted(range(len(names)), key=lambda j: len(names[j]) - widths[j]):  # whole names first, shortest first
        grow = min(max(len(names[j]) - widths[j], 0), spare)
        widths[j] += grow
        spare -= grow
    table = Table()
    for j, column in enumerate(names):
        table.add_column(column, width=widths[j], no_wrap=predicted[j], overflow="fold")
    for row in cells:
        table.add_row(*row)
    return table


def predict_kernel_configs(est: Any, model: str, configs: list[dict[str, Any]], hardware_id: str | None,
                            coverage: float | None, output: Path | None, input_csv: Path,
                            lines: list[int], given: list[dict[str, Any]] | None = None,
                            as_json: bool = False) -> None:
    """``perfpred predict --input`` for a kernel model: each CSV column is a tuning parameter
    (``config.NAME``) unless it names a ``workload.`` column; the hardware is the model's, and
    the problem the one its training rows shared where the CSV does not give it."""
    import pandas as pd

    placed = {c: c if c.startswith(("workload.", "config.")) else f"config.{c}" for c in configs[0]}
    _check_input_rows(est, model, configs, placed, "kernel", input_csv, lines)
    rows = est.config_rows([{} for _ in configs], hardware_id)
    named = pd.DataFrame(configs).rename(columns=placed)
    rows = pd.concat([rows.reset_index(drop=True), named.reset_index(drop=True)], axis=1).assign(kind="kernel")
    shared = {c: v for c, v in getattr(est, "constant_workload_", {}).items() if c not in rows}
    rows = rows.assign(**shared)  # the problem the model was trained on, unless the CSV names another
    warn_outside_training(est, rows)
    pred, band = predict_rows(est, model, rows, coverage, lines)
    print_predictions(configs, pred, band, output, target=est.target, given=given, as_json=as_json)


def predict_rows(est: Any, model: str, rows: Any, coverage: float | None,
                  lines: list[int] | None = None) -> tuple[Any, Any]:
    """``est``'s predictions (and band) for ``rows``; what it cannot predict is a one-line error."""
    import numpy as np

    try:
        pred = est.predict(rows)
        band = est.predict_interval(rows, coverage) if coverage is not None else None
    except (InvalidInputError, KeyError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "infinity" in first and hasattr(est, "_features"):  # scikit-learn's words: name the row and feature
            feats = est._features(rows).select_dtypes("number")
            bad = np.isinf(feats.to_numpy(dtype=float))
            if bad.any():
                i, j = (int(v[0]) for v in np.nonzero(bad))
                row = f"row {i + 1} (line {lines[i]})" if lines else f"row {i + 1}"
                first = (f"{row} gives an infinite feature {feats.columns[j]!r} (a size of zero, or one out of "
                         "the range the features take?)")
        raise InvalidInputError(f"--model {model} (kind {est.kind!r}) cannot predict these configs: {first[:300]}") \
            from None
    return pred, band


def predict_serving_configs(est: Any, model: str, configs: list[dict[str, Any]], hardware_id: str | None,
                             coverage: float | None, output: Path | None, input_csv: Path,
                             lines: list[int], given: list[dict[str, Any]] | None = None,
                             as_json: bool = False) -> None:
    """``perfpred predict --input`` for a serving model: each CSV row a deployment never launched
    (the LLM, its size and task as ``workload.`` columns, the engine's knobs as ``config.``
    columns; bare names go where the serving features read them), on the model's hardware."""
    import numpy as np
    import pandas as pd

    from perfpred.features._serving import (
        CODE_COLUMNS,
        LOG_COLUMNS,
        SERVING_FEATURE_INPUTS,
        SERVING_WORKLOAD_INPUTS,
    )

    inputs = _model_inputs(est)

    def placed(column: str) -> str:
        """A bare CSV name as the column the model knows it by (one its features read first, then
        any its training rows had), else where the serving features read it."""
        if column.startswith(("workload.", "config.")):
            return column
        candidates = [f"workload.{column}", f"config.{column}"]
        for wanted in ([c for c in candidates if c in inputs and c in SERVING_FEATURE_INPUTS],
                       [c for c in candidates if c in inputs]):
            if wanted:
                return wanted[0]
        return f"workload.{column}" if f"workload.{column}" in SERVING_WORKLOAD_INPUTS else f"config.{column}"

    # Columns the serving features read even where the training rows lacked them (a model's layout).
    readable = frozenset({*SERVING_WORKLOAD_INPUTS, *LOG_COLUMNS, *CODE_COLUMNS, "config.kv_cache_dtype",
                          "config.cache_type_k"})
    placement = {c: placed(c) for c in configs[0]}
    _check_input_rows(est, model, configs, placement, "serving", input_csv, lines, readable)
    hardware = est.config_rows([{} for _ in configs], hardware_id)  # the model's hardware
    named = pd.DataFrame(configs).rename(columns=placement)
    rows = pd.concat([hardware.reset_index(drop=True), named.reset_index(drop=True)], axis=1).assign(kind="serving")
    warn_outside_training(est, rows)
    pred, band = predict_rows(est, model, rows, coverage, lines)
    if not np.all(np.isfinite(pred)):
        raise InvalidInputError(f"--model {model}: rows {(np.flatnonzero(~np.isfinite(pred)) + 1).tolist()[:10]} "
                                "have no finite prediction (give each the model's size, e.g. total_params_b)")
    print_predictions(configs, pred, band, output, target=est.target, given=given, as_json=as_json)
