"""llama.cpp's ``llama-server`` as an engine: knobs named as llama.cpp names them.

=================  ===========  ==========================================================
knob               flag         meaning
=================  ===========  ==========================================================
parallel           -np          server slots: sequences decoded together
batch_size         -b           logical batch: most tokens one decode call accepts
ubatch_size        -ub          physical batch: tokens per graph run (<= batch; default min(512, b))
threads            -t           threads for token generation
threads_batch      -tb          threads for prompt processing (default: = threads)
ctx_size           -c           KV cache size in tokens, split over the slots
flash_attn         -fa          on / off / auto
cache_type_k/v     -ctk / -ctv  KV cache precision (quantised V needs flash attention)
cont_batching      -cb / -nocb  continuous batching
kv_unified         -kvu         one KV buffer shared by all slots (else ctx / parallel each)
=================  ===========  ==========================================================

``--fit off`` keeps llama.cpp from silently changing parameters to fit memory (every knob is
set here, and a config that does not fit is an ``oom`` row). ``--metrics`` is always on: the
cross-check reads ``llamacpp:tokens_predicted_total`` and friends. The server has no request
counter, so requests are checked through tokens; ``avg_batch_size`` comes from
``llamacpp:n_busy_slots_per_decode`` and ``llamacpp:n_decode_total``, ``server_tpot_mean_ms`` (the
slots' generating seconds per generated token) from ``llamacpp:tokens_predicted_seconds_total``.
"""

from __future__ import annotations

import os
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

from perfpred.collect.serving._build_llama import LLAMA_CPP_PYTHON_VERSION, find_llama_server
from perfpred.collect.serving._engine import Engine, Knob
from perfpred.collect.serving._models import LocalModel
from perfpred.errors import InvalidInputError

KV_CACHE_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")
_UNQUANTISED = ("f32", "f16", "bf16")


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@cache
def _binary_version(binary: str) -> str:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    for line in (out.stdout + out.stderr).splitlines():
        if line.startswith("version:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


class LlamaServerEngine(Engine):
    name = "llama-server"
    default_startup_timeout_s = 60.0
    output_tokens_counter = "llamacpp:tokens_predicted_total"
    prompt_tokens_counters = ("llamacpp:prompt_tokens_total", "llamacpp:prompt_tokens_cached_total")
    busy_gauges = ("llamacpp:requests_processing", "llamacpp:requests_deferred")
    # Seconds the slots spent generating over the tokens they generated: a token-weighted TPOT.
    server_latency_means = (("server_tpot_mean_ms", "llamacpp:tokens_predicted_seconds_total",
                             "llamacpp:tokens_predicted_total", 1e3),)
    knobs = (
        Knob("parallel", int, 1, "server slots (sequences decoded together)", "--parallel", minimum=1,
             aliases=("np", "n_parallel", "slots")),
        Knob("batch_size", int, 2048, "logical max batch size (tokens)", "--batch-size", minimum=1,
             aliases=("b",)),
        Knob("ubatch_size", int, 512, "physical max batch size (tokens)", "--ubatch-size", minimum=1,
             aliases=("ub",)),
        Knob("threads", int, None, "generation threads (default: usable CPUs)", "--threads", minimum=1,
             aliases=("t",)),
        Knob("threads_batch", int, None, "prompt threads (default: = threads)", "--threads-batch", minimum=1,
             aliases=("tb",)),
        Knob("ctx_size", int, 4096, "KV cache tokens, split over slots unless kv_unified", "--ctx-size", minimum=1,
             aliases=("c",)),
        Knob("flash_attn", str, "auto", "flash attention", "--flash-attn", choices=("on", "off", "auto"),
             aliases=("fa",)),
        Knob("cache_type_k", str, "f16", "K cache type", "--cache-type-k", choices=KV_CACHE_TYPES, aliases=("ctk",)),
        Knob("cache_type_v", str, "f16", "V cache type", "--cache-type-v", choices=KV_CACHE_TYPES, aliases=("ctv",)),
        Knob("cont_batching", bool, True, "continuous batching", "--cont-batching", aliases=("cb",)),
        Knob("kv_unified", bool, False, "one KV buffer shared by all slots", "--kv-unified", aliases=("kvu",)),
    )

    def __init__(self, binary: str | os.PathLike[str] | None = None,
                 llama_cpp_python_version: str = LLAMA_CPP_PYTHON_VERSION) -> None:
        self._binary = Path(binary) if binary else None
        self._version = llama_cpp_python_version

    @property
    def binary(self) -> Path | None:
        return self._binary or find_llama_server(self._version)

    def available(self) -> str | None:
        binary = self.binary
        if binary is None or not os.access(binary, os.X_OK):
            return ("llama-server is not built: run `python -m perfpred.collect.serving.build llama-server` "
                    "(about 10 min), or point PERFPRED_LLAMA_SERVER at a binary")
        return None

    def version(self) -> str:
        binary = self.binary
        return _binary_version(str(binary)) if binary else "unknown"

    def default(self, name: str, given: dict[str, Any]) -> Any:  # type: ignore[override]
        if name == "threads":
            return usable_cpus()
        if name == "threads_batch":
            return given.get("threads") or usable_cpus()
        if name == "ubatch_size" and given.get("batch_size") is not None:
            # llama.cpp clamps the physical batch to the logical one (`-b 256` alone runs -ub 256)
            return min(self.knob("ubatch_size").default, given["batch_size"])
        return super().default(name, given)

    def check(self, knobs: dict[str, Any]) -> None:
        if knobs["ubatch_size"] > knobs["batch_size"]:
            raise InvalidInputError("`ubatch_size <= batch_size` must hold, but got "
                                    f"ubatch_size={knobs['ubatch_size']}, batch_size={knobs['batch_size']}")
        if knobs["ctx_size"] < knobs["parallel"]:
            raise InvalidInputError("`ctx_size >= parallel` must hold (each slot needs context), but got "
                                    f"ctx_size={knobs['ctx_size']}, parallel={knobs['parallel']}")
        if knobs["cache_type_v"] not in _UNQUANTISED and knobs["flash_attn"] == "off":
            raise InvalidInputError("a quantised V cache needs flash attention, but got "
                                    f"cache_type_v={knobs['cache_type_v']!r}, flash_attn='off'")

    def slot_context(self, knobs: dict[str, Any]) -> int:
        return knobs["ctx_size"] if knobs["kv_unified"] else knobs["ctx_size"] // knobs["parallel"]

    def check_fit(self, knobs: dict[str, Any], max_sequence_tokens: int) -> None:
        per_slot = self.slot_context(knobs)
        if per_slot < max_sequence_tokens:
            raise InvalidInputError(
                "`context per slot >= longest prompt + output` must hold, but got "
                f"ctx_size={knobs['ctx_size']} / parallel={knobs['parallel']} = {per_slot} < {max_sequence_tokens}")

    def config_row(self, knobs: dict[str, Any]) -> dict[str, Any]:
        return {"engine": self.name, **knobs, "max_num_seqs": knobs["parallel"]}

    def argv(self, knobs: dict[str, Any], model: LocalModel, port: int) -> list[str]:
        binary = self.binary
        args = [str(binary) if binary else "llama-server", "--model", str(model.gguf_path),
                "--alias", self.served_name(model), "--host", "127.0.0.1", "--port", str(port), "--metrics",
                "--no-webui", "--fit", "off"]  # run the knobs as given: no silent shrinking to fit memory
        for knob in self.knobs:
            value = knobs[knob.name]
            if knob.kind is bool:
                args.append(knob.flag if value else knob.flag.replace("--", "--no-", 1))  # type: ignore[union-attr]
            else:
                args += [knob.flag, str(value)]  # type: ignore[list-item]
        return args
