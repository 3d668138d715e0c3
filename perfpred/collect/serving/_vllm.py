"""vLLM's OpenAI server as an engine (vllm-cpu here; the same knobs on a GPU).

=========================  ==========================================  =====================================
knob                       flag / variable                             meaning
=========================  ==========================================  =====================================
max_num_seqs               --max-num-seqs                              sequences scheduled together
max_num_batched_tokens     --max-num-batched-tokens                    tokens per scheduler step
enable_chunked_prefill     --[no-]enable-chunked-prefill               split long prompts over steps
enable_prefix_caching      --[no-]enable-prefix-caching                reuse KV blocks of shared prefixes
block_size                 --block-size                                tokens per KV block (CPU: 128)
kv_cache_space_gib         VLLM_CPU_KVCACHE_SPACE                      KV cache memory on CPU (GiB)
gpu_memory_utilization     --gpu-memory-utilization                    KV cache share of GPU memory (GPU)
dtype                      --dtype                                     weights / activations precision
enforce_eager              --enforce-eager                             no torch.compile / CUDA graphs
tensor_parallel_size       --tensor-parallel-size                      shards of the model
max_model_len              --max-model-len                             longest sequence (prompt + output)
cpu_threads_bind           VLLM_CPU_OMP_THREADS_BIND                   OpenMP core binding (CPU)
=========================  ==========================================  =====================================

The server is ``<venv>/bin/python -m vllm.entrypoints.openai.api_server`` from the vllm-cpu
venv (``python -m perfpred.collect.serving.build vllm``), with the HF folder of the
generated model, offline (``HF_HUB_OFFLINE=1``) and without usage statistics.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from perfpred.collect.serving._build_vllm import VLLM_CPU_VERSION, find_vllm_python
from perfpred.collect.serving._engine import Engine, Knob
from perfpred.collect.serving._models import LocalModel
from perfpred.errors import InvalidInputError

# GPU-only parallelism the CPU engine has no knob for (vLLM's spellings, as `vllm serve --help` lists them).
DATA_PARALLEL_FLAG = "--data-parallel-size"
EXPERT_PARALLEL_FLAG = "--enable-expert-parallel"


class VllmEngine(Engine):
    name = "vllm"
    default_startup_timeout_s = 300.0  # importing vllm + torch and starting the engine core: ~45 s on 2 cores
    requests_counter = "vllm:request_success_total"
    requests_counter_counts_failures = False
    output_tokens_counter = "vllm:generation_tokens_total"
    prompt_tokens_counters = ("vllm:prompt_tokens_total",)
    busy_gauges = ("vllm:num_requests_running", "vllm:num_requests_waiting")
    server_latency_means = tuple(
        (key, f"vllm:{name}_sum", f"vllm:{name}_count", 1e3)
        for key, name in (("server_ttft_mean_ms", "time_to_first_token_seconds"),
                          ("server_tpot_mean_ms", "request_time_per_output_token_seconds"),
                          ("server_itl_mean_ms", "inter_token_latency_seconds")))
    knobs = (
        Knob("max_num_seqs", int, 16, "sequences per scheduler step", "--max-num-seqs", minimum=1),
        Knob("max_num_batched_tokens", int, 2048, "tokens per scheduler step", "--max-num-batched-tokens",
             minimum=1),
        Knob("enable_chunked_prefill", bool, True, "chunked prefill", "--enable-chunked-prefill"),
        Knob("enable_prefix_caching", bool, False, "prefix caching", "--enable-prefix-caching"),
        Knob("block_size", int, 128, "tokens per KV block", "--block-size", choices=(16, 32, 64, 128, 256)),
        Knob("kv_cache_space_gib", int, 1, "CPU KV cache (GiB)", env="VLLM_CPU_KVCACHE_SPACE", minimum=1),
        Knob("gpu_memory_utilization", float, 0.9, "GPU memory share (GPU only)", "--gpu-memory-utilization",
             minimum=0.01, maximum=1.0),
        Knob("dtype", str, "float32", "precision", "--dtype", choices=("float32", "bfloat16", "float16", "auto")),
        Knob("enforce_eager", bool, True, "eager mode", "--enforce-eager"),
        Knob("tensor_parallel_size", int, 1, "tensor-parallel shards", "--tensor-parallel-size", minimum=1,
             aliases=("tensor_parallel", "tp")),
        Knob("max_model_len", int, 2048, "longest sequence", "--max-model-len", minimum=16),
        Knob("cpu_threads_bind", str, "auto", "OpenMP binding", env="VLLM_CPU_OMP_THREADS_BIND"),
    )

    def __init__(self, python: str | os.PathLike[str] | None = None, version: str = VLLM_CPU_VERSION) -> None:
        self._python = Path(python) if python else None
        self._version = version

    @property
    def python(self) -> Path | None:
        return self._python or find_vllm_python(self._version)

    def available(self) -> str | None:
        python = self.python
        if python is None or not os.access(python, os.X_OK):
            return ("vllm-cpu is not installed: run `python -m perfpred.collect.serving.build vllm` "
                    "(a venv of its own, a few minutes), or point PERFPRED_VLLM_PYTHON at a python with vllm")
        return None

    def version(self) -> str:
        python = self.python
        marker = python.parent.parent / "perfpred-ready.json" if python else None
        if marker is not None and marker.is_file():
            return str(json.loads(marker.read_text()).get("vllm", "unknown"))
        return "unknown"

    def check(self, knobs: dict[str, Any]) -> None:
        # vLLM's own scheduler-config rules, checked before a ~45 s start-up.
        if knobs["max_num_batched_tokens"] < knobs["max_num_seqs"]:
            raise InvalidInputError(
                "`max_num_batched_tokens >= max_num_seqs` must hold, but got "
                f"max_num_batched_tokens={knobs['max_num_batched_tokens']}, max_num_seqs={knobs['max_num_seqs']}")
        if not knobs["enable_chunked_prefill"] and knobs["max_num_batched_tokens"] < knobs["max_model_len"]:
            raise InvalidInputError(
                "`max_num_batched_tokens >= max_model_len` must hold without chunked prefill, but got "
                f"max_num_batched_tokens={knobs['max_num_batched_tokens']}, max_model_len={knobs['max_model_len']}")

    def check_fit(self, knobs: dict[str, Any], max_sequence_tokens: int) -> None:
        if knobs["max_model_len"] < max_sequence_tokens:
            raise InvalidInputError("`max_model_len >= longest prompt + output` must hold, but got "
                                    f"max_model_len={knobs['max_model_len']} < {max_sequence_tokens}")

    def check_model(self, knobs: dict[str, Any], model: LocalModel) -> None:
        # vLLM refuses a max_model_len beyond the model's positions (a pydantic "Value error" after
        # a ~45 s start); perfpred made the model, so it knows the limit before launching.
        positions = model.spec.max_position_embeddings
        if knobs["max_model_len"] > positions:
            raise InvalidInputError(f"`max_model_len <= max_position_embeddings` of model {model.spec.name!r} "
                                    f"({positions}) must hold, but got max_model_len={knobs['max_model_len']}")

    def config_row(self, knobs: dict[str, Any]) -> dict[str, Any]:
        return {"engine": self.name, **knobs, "tensor_parallel": knobs["tensor_parallel_size"]}

    def argv(self, knobs: dict[str, Any], model: LocalModel, port: int) -> list[str]:
        python = self.python
        args = [str(python) if python else "python", "-m", "vllm.entrypoints.openai.api_server",
                "--model", str(model.hf_dir), "--served-model-name", self.served_name(model),
                "--host", "127.0.0.1", "--port", str(port)]
        for knob in self.knobs:
            if knob.flag is None:
                continue
            value = knobs[knob.name]
            if knob.name == "enforce_eager":
                args += [knob.flag] if value else []
            elif knob.kind is bool:
                args.append(knob.flag if value else knob.flag.replace("--", "--no-", 1))
            else:
                args += [knob.flag, str(value)]
        return args

    def env(self, knobs: dict[str, Any]) -> dict[str, str]:
        return {"VLLM_CPU_KVCACHE_SPACE": str(knobs["kv_cache_space_gib"]),
                "VLLM_CPU_OMP_THREADS_BIND": knobs["cpu_threads_bind"],
                "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}


def serve_command(model: str, config: Mapping[str, Any]) -> str:
    """``vllm serve MODEL`` for a GPU deployment of ``config``: ``max_num_seqs`` and the
    parallelism of an ML.ENERGY row (``tensor_parallel``, ``expert_parallel``, ``data_parallel``);
    what it leaves out keeps vLLM's default. Flags are spelled by the live engine's knobs.

    vLLM's expert-parallel group is TP x DP (``--enable-expert-parallel`` puts the MoE layers on
    it instead of sharding them), so a row with expert_parallel N (and data_parallel 1) runs as
    ``--tensor-parallel-size N --enable-expert-parallel``, as ML.ENERGY launched it (TP over all
    of a run's GPUs, expert parallelism from the model's config).
    """
    engine = VllmEngine()
    tp, ep, dp = (int(config.get(k, 1)) for k in ("tensor_parallel", "expert_parallel", "data_parallel"))
    if ep > 1:
        tp = max(tp, ep // dp)
    args = ["vllm", "serve", model, engine.knob("max_num_seqs").flag, str(int(config["max_num_seqs"])),
            engine.knob("tensor_parallel").flag, str(tp)]
    if dp > 1:
        args += [DATA_PARALLEL_FLAG, str(dp)]
    if ep > 1:
        args.append(EXPERT_PARALLEL_FLAG)
    return shlex.join(args)
