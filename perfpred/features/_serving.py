"""Features of serving configurations (``kind="serving"``): model, parallelism, batch, GPU.

Pure functions of the row (no I/O, no fitted state). Inputs are what a user chooses or knows
before launching: the model's size (``workload.total_params_b``, ``activated_params_b``) and
shape where known, its weight precision, the task, the engine config (``config.max_num_seqs``,
``tensor_parallel``, ``expert_parallel``, ``data_parallel``, ``num_gpus``; llama.cpp's
``ubatch_size`` and ``threads``; diffusion: ``batch_size``, ``inference_steps``, image/video
size) and the load (concurrency or rate, requested prompt and output lengths). Measured outcomes
(batch size reached, output lengths produced, throughput) are never features.

``log2_roofline_ms`` is the decode step's analytic bound: each GPU of a replica streams its
share of the weights the batch touches from DRAM once per step, and computes 2 x activated
params x ``max_num_seqs`` FLOPs; the slower of the two bounds the inter-token latency. A dense
model touches all its weights. A mixture of experts with ``E`` routed experts, ``k`` per token
(``workload.num_experts`` / ``experts_per_token``, else its model card's values for the model
families in ML.ENERGY's runs, ``MOE_ROUTING``) touches its shared weights plus each expert with
probability 1 - (1 - k/E)^batch under uniform routing (Llama 4 Maverick, 128 experts and 1 per
token, reads ~40% of its experts at 64 sequences; a bound of activated x batch would say all);
a mixture with unknown routing is bounded by activated x batch, at most all. A precision that
quantises only the experts (``EXPERTS_ONLY_PRECISIONS``: gpt-oss ships MXFP4 experts and bf16
attention, embeddings and router) reads the shared weights at 2 bytes each.
``log2_gpu_seconds_per_token`` (GPUs x step time / sequences) bounds the energy per token up
to the power per GPU, and ``log2_num_gpus`` is the natural offset of total power.

:func:`serving_attention_features` (``kind="serving-attention"``) adds what the weights leave
out: each decode step also reads every sequence's KV cache, which grows with the context and
with the model's attention layout (layers, KV heads, head size, sliding windows), not with its
parameter count. The layout comes from ``workload.num_layers`` / ``num_kv_heads`` / ``head_dim``
(or ``hidden_size`` / ``num_heads``) where a row has them, else from the model's config.json
values for the families in ML.ENERGY's runs (``ATTENTION_CARDS``). It also adds what a step
costs beyond any roofline: a fixed time per decoder layer (``LAYER_OVERHEAD_MS``), which
dominates small batches on many GPUs, and, where a mixture's experts are spread over GPUs
(``config.expert_parallel`` > 1), the dispatch and combine of every layer that routes tokens
(``EXPERT_PARALLEL_LAYER_MS`` per MoE layer; ``MOE_LAYER_CARDS`` for families that interleave
dense and MoE layers).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from perfpred.datasets._schema import python_scalar
from perfpred.features._kernel import hardware_features
from perfpred.features._specs import device_specs

# Bytes per weight by the precision names serving engines use.
PRECISION_BYTES = {"float32": 4.0, "fp32": 4.0, "bfloat16": 2.0, "bf16": 2.0, "float16": 2.0, "fp16": 2.0,
                   "half": 2.0, "fp8": 1.0, "float8": 1.0, "int8": 1.0, "w8a8": 1.0, "int4": 0.5, "w4a16": 0.5,
                   "nvfp4": 0.5, "mxfp4": 0.5}
# The peak_gflops key used for each weight precision (fp8 runs on the fp16 tensor-core path at
# worst, which is the conservative bound).
PRECISION_DTYPE = {"float32": "fp32", "fp32": "fp32", "bfloat16": "bf16", "bf16": "bf16", "float16": "fp16",
                   "fp16": "fp16", "half": "fp16"}

LOG_COLUMNS = ("workload.total_params_b", "workload.activated_params_b", "config.max_num_seqs",
               "config.tensor_parallel", "config.expert_parallel", "config.data_parallel", "config.num_gpus",
               "config.batch_size", "config.ulysses_degree", "config.ring_degree", "workload.inference_steps",
               "workload.image_height", "workload.image_width", "workload.video_height", "workload.video_width",
               "workload.num_frames", "workload.fps",
               # perfpred's own serving rows: the model's shape, llama.cpp's micro-batch and threads,
               # and the load test (closed-loop concurrency or Poisson rate, prompt/output lengths).
               "workload.hidden_size", "workload.num_layers", "config.ubatch_size", "config.threads",
               "workload.concurrency", "workload.rate_rps", "workload.prompt_tokens_mean",
               "workload.output_tokens_mean")
CODE_COLUMNS = ("workload.task", "workload.architecture", "workload.precision")
# Every workload column the serving features read (``perfpred predict --input`` places a bare CSV
# column name under ``workload.`` when it is one of these, else under ``config.``).
SERVING_WORKLOAD_INPUTS = frozenset({
    "workload.activated_params_b", "workload.architecture", "workload.concurrency",
    "workload.experts_per_token", "workload.fps", "workload.head_dim", "workload.hidden_size",
    "workload.image_height", "workload.image_width", "workload.inference_steps", "workload.model",
    "workload.num_experts", "workload.num_frames", "workload.num_heads", "workload.num_kv_heads",
    "workload.num_moe_layers",
    "workload.num_layers", "workload.output_tokens_mean", "workload.precision", "workload.prompt_tokens_mean",
    "workload.rate_rps", "workload.task", "workload.total_params_b", "workload.video_height",
    "workload.video_width",
})
# Every ``config.*`` / ``workload.*`` column the serving features read: a serving model's inputs.
# Whatever else its training rows held describes how they were measured, not what is predicted
# (a load test's request count and arrival seed, the engine's name, a rate search's settings), so
# ``perfpred predict --input`` never asks for it.
SERVING_FEATURE_INPUTS = frozenset({
    *LOG_COLUMNS, *CODE_COLUMNS, *SERVING_WORKLOAD_INPUTS, "config.kv_cache_dtype", "config.cache_type_k",
})
# (routed experts, experts per token) of mixture-of-experts families, from their model cards,
# matched as a lower-case substring of ``workload.model``; ``workload.num_experts`` and
# ``workload.experts_per_token`` take precedence where a row has them.
MOE_ROUTING = {"llama-4-maverick": (128, 1), "llama-4-scout": (16, 1), "235b-a22b": (128, 8), "30b-a3b": (128, 8),
               "gpt-oss-120b": (128, 4), "gpt-oss-20b": (32, 4)}
# Attention layout of model families, from their config.json, matched like ``MOE_ROUTING``:
# (layers attending over the whole context, layers with a sliding or chunked window, KV heads,
# head size, window tokens). Gemma 3 has one global layer in six (window 1024), Llama 4 one in
# four (chunks of 8192), gpt-oss every other (window 128); Nemotron Nano v2 is mostly Mamba-2,
# with 4 (9B) or 6 (12B) attention layers.
ATTENTION_CARDS = {
    "qwen3-8b": (36, 0, 8, 128, 0), "qwen3-vl-8b": (36, 0, 8, 128, 0), "qwen3-14b": (40, 0, 8, 128, 0),
    "qwen3-32b": (64, 0, 8, 128, 0), "qwen3-vl-32b": (64, 0, 8, 128, 0), "30b-a3b": (48, 0, 4, 128, 0),
    "235b-a22b": (94, 0, 4, 128, 0), "gemma-3-12b": (8, 40, 8, 256, 1024), "gemma-3-27b": (10, 52, 16, 128, 1024),
    "llama-3.1-8b": (32, 0, 8, 128, 0), "llama-3.1-70b": (80, 0, 8, 128, 0), "llama-3.3-70b": (80, 0, 8, 128, 0),
    "llama-3.1-405b": (126, 0, 8, 128, 0), "llama-4-scout": (12, 36, 8, 128, 8192),
    "llama-4-maverick": (12, 36, 8, 128, 8192), "nemotron-nano-9b": (4, 0, 8, 128, 0),
    "nemotron-nano-12b": (6, 0, 8, 128, 0), "gpt-oss-120b": (18, 18, 8, 64, 128), "gpt-oss-20b": (12, 12, 8, 64, 128)}
# Decoder layers of hybrid families whose attention layers are a few of many (Nemotron Nano v2
# stacks Mamba-2, attention and MLP layers: 56 in the 9B, 62 in the 12B); elsewhere the layers
# are the attention layout's.
DECODER_LAYERS = {"nemotron-nano-9b": 56, "nemotron-nano-12b": 62}
# What a decode step costs per decoder layer beyond its roofline, read off ML.ENERGY's H100 rows
# at 8 sequences (launches, norms, the small kernels a step runs whatever its batch): 0.08-0.12 ms
# a layer on one GPU or two, 0.13-0.35 ms with expert parallelism over 4-8 (the all-to-alls,
# left to the learned model). The roofline alone put Llama 4 Scout's step on 8 GPUs at 3.8 ms; it
# takes 20.
LAYER_OVERHEAD_MS = 0.1
# Decoder layers that route tokens to experts, for families where not every layer does (Llama 4
# Maverick alternates dense and MoE layers, Scout routes in all 48); ``workload.num_moe_layers``
# wins where a row has it, and elsewhere every decoder layer of a mixture routes.
MOE_LAYER_CARDS = {"llama-4-maverick": 24}
# What a decode step spends per MoE layer when expert parallelism spreads the experts over GPUs:
# the all-to-all that sends each token to its experts' GPUs and the one that brings it back, a few
# tens of microseconds each at decode's small messages, plus the wait for the busiest GPU. Chosen
# on ML.ENERGY's H100 rows, so its leave-one-model-out score there is a little optimistic (p50
# ITL 11.4% without it, 10.9 / 10.4 / 10.6 / 10.8% at 0.1 / 0.15 / 0.2 / 0.25 ms; 11.0% when each
# held-out model's value is picked from 0-0.25 by a grouped 4-fold CV over the other models,
# which picks 0.15 in 14 of 29). Without it Llama 4 Scout (every layer MoE, experts over 4-8 GPUs:
# 20-24 ms a step at 8 sequences) was predicted like Maverick (every other layer: 11 ms).
EXPERT_PARALLEL_LAYER_MS = 0.15
# Precisions that quantise a mixture's experts only, the rest staying bf16 (gpt-oss's MXFP4).
EXPERTS_ONLY_PRECISIONS = frozenset({"mxfp4"})
# Bytes per cached element: vLLM's ``kv_cache_dtype`` and llama.cpp's ``-ctk`` names (its
# quantised blocks carry a scale: q8_0 stores 32 values in 34 bytes). Without one, the cache
# holds the activations' type: fp32 for an fp32 model, else 16 bits (fp8/int4 weights included).
KV_CACHE_BYTES = {"f32": 4.0, "float32": 4.0, "fp32": 4.0, "f16": 2.0, "bf16": 2.0, "float16": 2.0, "bfloat16": 2.0,
                  "fp8": 1.0, "fp8_e4m3": 1.0, "fp8_e5m2": 1.0, "q8_0": 34 / 32, "q5_1": 24 / 32, "q5_0": 22 / 32,
                  "q4_1": 20 / 32, "q4_0": 18 / 32, "iq4_nl": 18 / 32}


def _num(df: pd.DataFrame, col: str, default: float = np.nan) -> np.ndarray:
    if col not in df:
        return np.full(len(df), default)
    return pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)


def _code(values: pd.Series) -> np.ndarray:
    """A stable number for a text value (crc32), NaN where missing."""
    return values.map(lambda v: np.nan if pd.isna(v) else float(zlib.crc32(str(v).encode()) % 1_000_003)).to_numpy(
        dtype=float)


def _log2(x: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x > 0, np.log2(np.where(x > 0, x, 1.0)), np.nan)


def moe_routing(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Each row's (routed experts, experts per token); NaN where unknown or dense."""
    experts, per_token = _num(df, "workload.num_experts").copy(), _num(df, "workload.experts_per_token").copy()
    if "workload.model" in df:
        names = df["workload.model"].astype(str).str.lower()
        for pattern, (e, k) in MOE_ROUTING.items():
            hit = names.str.contains(pattern, regex=False).to_numpy() & ~np.isfinite(experts)
            experts[hit], per_token[hit] = e, k
    return experts, per_token


def _routed(total: np.ndarray, active: np.ndarray, experts: np.ndarray, per_token: np.ndarray) -> np.ndarray:
    """Rows whose routing is known well enough to split the weights into shared and experts."""
    return np.isfinite(experts) & np.isfinite(per_token) & (experts > per_token) & (per_token > 0) & (total > active)


def shared_params(total: np.ndarray, active: np.ndarray, experts: np.ndarray, per_token: np.ndarray) -> np.ndarray:
    """Parameters every token reads (attention, embeddings, router, shared experts): the active
    ones less the ``per_token`` routed experts; NaN where the routing is unknown."""
    with np.errstate(divide="ignore", invalid="ignore"):
        expert_size = (total - active) / (experts - per_token)
        shared = np.maximum(active - per_token * expert_size, 0.0)
    return np.where(_routed(total, active, experts, per_token), shared, np.nan)


def touched_params(total: np.ndarray, active: np.ndarray, batch: np.ndarray, experts: np.ndarray,
                   per_token: np.ndarray) -> np.ndarray:
    """Parameters one decode step of ``batch`` sequences reads (see the module docstring)."""
    batch = np.where(np.isfinite(batch), batch, 1.0)
    bound = np.minimum(total, active * batch)
    with np.errstate(divide="ignore", invalid="ignore"):
        expert_size = (total - active) / (experts - per_token)
        hit = 1.0 - (1.0 - per_token / experts) ** batch
        expected = shared_params(total, active, experts, per_token) + experts * expert_size * hit
    return np.where(_routed(total, active, experts, per_token), np.minimum(expected, total), bound)


def weight_bytes_read(touched: np.ndarray, shared: np.ndarray, weight_bytes: np.ndarray,
                      precision: pd.Series) -> np.ndarray:
    """Bytes of the ``touched`` weights: each at ``weight_bytes``, except that a precision of
    ``EXPERTS_ONLY_PRECISIONS`` reads its ``shared`` weights at 2 bytes (where they are known)."""
    experts_only = precision.isin(EXPERTS_ONLY_PRECISIONS).to_numpy() & np.isfinite(shared)
    split = np.nan_to_num(shared) * 2.0 + (touched - np.nan_to_num(shared)) * weight_bytes
    return np.where(experts_only, split, touched * weight_bytes)


def moe_layers(df: pd.DataFrame, layers: np.ndarray, is_moe: np.ndarray) -> np.ndarray:
    """Each row's decoder layers that route tokens to experts: ``workload.num_moe_layers`` where
    set, else ``MOE_LAYER_CARDS``, else every decoder layer of a mixture and none of a dense model."""
    routing = np.where(is_moe, layers, 0.0)
    if "workload.model" in df:
        names = df["workload.model"].astype(str).str.lower()
        for pattern, n in MOE_LAYER_CARDS.items():
            routing = np.where(names.str.contains(pattern, regex=False).to_numpy(), n, routing)
    own = _num(df, "workload.num_moe_layers")
    return np.where(np.isfinite(own), own, routing)


def attention_layout(df: pd.DataFrame) -> tuple[np.ndarray, ...]:
    """Each row's (full-context layers, windowed layers, KV heads, head size, window); NaN where unknown.

    Row columns win; a row with ``num_kv_heads`` but no window info has none (every layer
    attends over the whole context, as in the models perfpred makes).
    """
    heads = _num(df, "workload.num_heads")
    head_dim = _num(df, "workload.head_dim").copy()
    head_dim = np.where(np.isfinite(head_dim), head_dim, _num(df, "workload.hidden_size") / heads)
    kv_heads = _num(df, "workload.num_kv_heads").copy()
    full = np.where(np.isfinite(kv_heads), _num(df, "workload.num_layers"), np.nan)
    windowed = np.where(np.isfinite(full), 0.0, np.nan)
    window = np.where(np.isfinite(full), 0.0, np.nan)
    if "workload.model" in df:
        names = df["workload.model"].astype(str).str.lower()
        for pattern, card in ATTENTION_CARDS.items():
            hit = names.str.contains(pattern, regex=False).to_numpy() & ~np.isfinite(full)
            full[hit], windowed[hit], kv_heads[hit], head_dim[hit], window[hit] = card
    return full, windowed, kv_heads, head_dim, window


def decoder_layers(df: pd.DataFrame, attention_layers: np.ndarray) -> np.ndarray:
    """Each row's decoder layers: ``workload.num_layers`` where set, else ``DECODER_LAYERS`` for
    the hybrid families, else its attention layers."""
    layers = np.where(np.isfinite(_num(df, "workload.num_layers")), _num(df, "workload.num_layers"),
                      attention_layers)
    if "workload.model" in df:
        names = df["workload.model"].astype(str).str.lower()
        unset = ~np.isfinite(_num(df, "workload.num_layers"))
        for pattern, n in DECODER_LAYERS.items():
            layers = np.where(names.str.contains(pattern, regex=False).to_numpy() & unset, n, layers)
    return layers


def _kv_cache_bytes(df: pd.DataFrame, precision: pd.Series) -> np.ndarray:
    """Bytes per cached K or V element of each row (see the comment on ``KV_CACHE_BYTES``)."""
    activation = np.where(precision.isin(["float32", "fp32"]).to_numpy(), 4.0, 2.0)
    for col in ("config.kv_cache_dtype", "config.cache_type_k"):
        if col in df:
            named = df[col].astype(str).str.lower().map(KV_CACHE_BYTES).astype(float).to_numpy()
            activation = np.where(np.isfinite(named), named, activation)
    return activation


def _precision(df: pd.DataFrame) -> pd.Series:
    """Each row's weight precision, lower case (bfloat16 where not recorded)."""
    if "workload.precision" not in df:
        return pd.Series("bfloat16", index=df.index)
    return df["workload.precision"].astype(str).str.lower()


def _batch(df: pd.DataFrame) -> np.ndarray:
    """Sequences a decode step carries: ``max_num_seqs`` (LLM engines), else ``batch_size``."""
    seqs = _num(df, "config.max_num_seqs")
    return np.where(np.isfinite(seqs), seqs, _num(df, "config.batch_size"))


def _memory_gib(df: pd.DataFrame) -> np.ndarray:
    out = np.full(len(df), np.nan)
    if "hardware_json" not in df:
        return out
    for spec_json, spec in device_specs(df["hardware_json"]).items():
        out[(df["hardware_json"] == spec_json).to_numpy()] = float(spec.get("memory_gib", np.nan))
    return out


@dataclass(frozen=True)
class _Deployment:
    """What each row deploys, in raw units, read once for both featurizers."""

    precision: pd.Series  # weight precision, lower case
    weight_bytes: np.ndarray  # per weight
    total_params: np.ndarray
    active_params: np.ndarray  # per token (MoE: the activated experts); total for dense models
    gpus: np.ndarray
    gpus_per_replica: np.ndarray  # at least 1
    seqs: np.ndarray  # max_num_seqs (NaN outside LLM engines)
    batch: np.ndarray  # sequences a decode step carries


def _deployment(df: pd.DataFrame) -> _Deployment:
    precision = _precision(df)
    total = _num(df, "workload.total_params_b") * 1e9
    active = _num(df, "workload.activated_params_b") * 1e9
    gpus = _num(df, "config.num_gpus", 1.0)
    replicas = np.nan_to_num(_num(df, "config.data_parallel", 1.0), nan=1.0)
    return _Deployment(precision=precision,
                       weight_bytes=precision.map(PRECISION_BYTES).astype(float).fillna(2.0).to_numpy(),
                       total_params=total, active_params=np.where(np.isfinite(active), active, total), gpus=gpus,
                       gpus_per_replica=np.maximum(np.nan_to_num(gpus, nan=1.0) / np.maximum(replicas, 1.0), 1.0),
                       seqs=_num(df, "config.max_num_seqs"), batch=_batch(df))


def deployment_warnings(df: pd.DataFrame) -> list[str]:
    """A line per kind of deployment in ``df`` no engine could run as written: weights that do not
    fit the GPUs of one replica (``total_params_b`` x precision bytes over its GPUs, against the
    spec's ``memory_gib``), or ``num_gpus`` other than tensor x expert x data parallel (every
    ML.ENERGY deployment has exactly that many). A model predicts such rows all the same; the
    number means nothing."""
    out: list[str] = []
    if df.empty:
        return out
    d = _deployment(df)
    label = df.index.to_numpy()
    need_gib = d.total_params * d.weight_bytes / d.gpus_per_replica / 2**30
    memory = _memory_gib(df)
    too_big = np.flatnonzero(np.isfinite(need_gib) & np.isfinite(memory) & (need_gib > memory))
    if len(too_big):
        i = too_big[0]
        out.append(f"row {python_scalar(label[i])!r}: the weights need {need_gib[i]:.0f} GiB per GPU "
                   f"({d.total_params[i] / 1e9:g}B parameters x {d.weight_bytes[i]:g} bytes over "
                   f"{d.gpus_per_replica[i]:g} GPU(s) a replica) but a GPU holds {memory[i]:g} GiB "
                   f"({len(too_big)} row(s)): no engine starts this deployment")
    parallel = [c for c in ("config.tensor_parallel", "config.expert_parallel", "config.data_parallel") if c in df]
    if parallel and "config.num_gpus" in df:
        product = np.prod([np.nan_to_num(_num(df, c, 1.0), nan=1.0) for c in parallel], axis=0)
        off = np.flatnonzero(np.isfinite(d.gpus) & (d.gpus != product))
        if len(off):
            i = off[0]
            out.append(f"row {python_scalar(label[i])!r}: num_gpus={d.gpus[i]:g} but "
                       f"{' x '.join(c.split('.', 1)[1] for c in parallel)} = {product[i]:g} "
                       f"({len(off)} row(s)): every recorded deployment uses exactly that many GPUs")
    return out


def serving_features(df: pd.DataFrame) -> pd.DataFrame:
    """Numeric features of each serving row (LLM or diffusion; missing inputs give NaN)."""
    return _serving_features(df, _deployment(df))


def _serving_features(df: pd.DataFrame, d: _Deployment) -> pd.DataFrame:
    feats = pd.DataFrame(index=df.index)
    for col in LOG_COLUMNS:
        feats["log2_" + col.split(".", 1)[1]] = _log2(_num(df, col))
    for col in CODE_COLUMNS:
        feats["code_" + col.split(".", 1)[1]] = _code(df[col]) if col in df else np.nan
    total, active, per_replica, batch, weight_bytes = (d.total_params, d.active_params, d.gpus_per_replica,
                                                       d.batch, d.weight_bytes)
    feats["weight_bytes"] = weight_bytes
    feats["is_moe"] = (active < total).astype(float)
    feats["log2_active_fraction"] = _log2(active / total)
    feats["log2_weight_gib_per_gpu"] = _log2(total * weight_bytes / per_replica / 2**30)
    feats["log2_active_gib_per_gpu"] = _log2(active * weight_bytes / per_replica / 2**30)
    feats["log2_gpus_per_replica"] = _log2(per_replica)
    feats["log2_seqs_per_gpu"] = _log2(batch / per_replica)
    memory = _memory_gib(df)
    headroom = memory - total * weight_bytes / per_replica / 2**30
    feats["kv_headroom_gib"] = headroom
    feats["log2_kv_headroom_per_seq_gib"] = _log2(headroom / batch)
    hw = hardware_features(df, d.precision.map(PRECISION_DTYPE).fillna("bf16"))
    feats = pd.concat([feats, hw], axis=1)
    peak = np.exp2(hw["hw_log2_peak_gflops"].to_numpy())
    bw = np.exp2(hw["hw_log2_mem_bw_gbs"].to_numpy())
    # A decode step of a batch reads the weights its tokens touch (the module docstring).
    experts, per_token = moe_routing(df)
    touched = touched_params(total, active, batch, experts, per_token)
    read = weight_bytes_read(touched, shared_params(total, active, experts, per_token), weight_bytes, d.precision)
    memory_ms = read / per_replica / (bw * 1e6)
    compute_ms = 2.0 * active * batch / per_replica / (peak * 1e6)
    step_ms = np.maximum(memory_ms, compute_ms)
    feats["log2_memory_ms"] = _log2(memory_ms)
    feats["log2_compute_ms"] = _log2(compute_ms)
    llm = np.isfinite(d.seqs)
    feats["log2_roofline_ms"] = np.where(llm, _log2(step_ms), np.nan)
    # Energy per token = power x step time / tokens per step; GPU-seconds per token is its bound
    # up to the power per GPU (what a model relative to it learns).
    feats["log2_gpu_seconds_per_token"] = np.where(llm, _log2(d.gpus * step_ms / 1e3 / d.seqs), np.nan)
    return feats


def serving_attention_features(df: pd.DataFrame) -> pd.DataFrame:
    """:func:`serving_features` plus the decode step's KV-cache traffic (module docstring).

    Per GPU of a replica (KV heads split over its GPUs, at least one each, as vLLM replicates
    them when there are more GPUs than heads):

    - ``log2_kv_bytes_per_token``: cache one token of context adds, over the full-context layers;
    - ``log2_kv_read_ms_per_1k_tokens``: what a decode step of the batch spends reading that
      cache per 1,024 tokens of mean context (the context itself is not known before running);
    - ``log2_windowed_kv_read_ms``: the windowed layers' reads, capped by their window (NaN
      for a model without such layers: ``windowed_layer_fraction`` is then 0);
    - ``windowed_layer_fraction`` and ``log2_kv_tokens_per_seq`` (context each sequence can
      hold in the memory the weights leave);
    - ``log2_decoder_layers``, and ``log2_decode_step_ms``: the weights' read time plus the
      batch's matmul time at peak (their sum: they overlap little), plus ``LAYER_OVERHEAD_MS``
      a decoder layer and, under expert parallelism, ``EXPERT_PARALLEL_LAYER_MS`` a layer that
      routes tokens: the offset ITL is learned relative to (leave one model out on ML.ENERGY,
      p50 ITL: 12.7% over the roofline, 11.6% over the roofline and layers, 11.4% with gpt-oss's
      bf16 shared weights, 10.4% with the expert-parallel cost; 10.1% -> 9.8% with the sum in
      place of the roofline's max, which a grouped 4-fold CV over the training models chose in
      all 29 folds), and ``log2_decode_gpu_seconds_per_token`` (GPUs x that step / sequences);
    - ``log2_compute_over_decode_step``: the batch's matmul time at peak over that step (how
      near the step is to compute-bound; a prefill chunk's cost per prompt token scales with
      it). Leave one model out on ML.ENERGY: p50 ITL 10.44 -> 10.11%, energy per token 12.77 ->
      12.54%, power 9.24 -> 9.09%; a grouped 4-fold CV over the training models chose it in all
      29 folds.
    """
    d = _deployment(df)
    feats = _serving_features(df, d)
    full, windowed, kv_heads, head_dim, window = attention_layout(df)
    element = _kv_cache_bytes(df, d.precision)
    kv_per_gpu = np.maximum(kv_heads / d.gpus_per_replica, 1.0)
    per_layer_token = kv_per_gpu * head_dim * 2 * element  # K and V
    batch = d.batch
    bw_bytes_per_ms = np.exp2(feats["hw_log2_mem_bw_gbs"].to_numpy()) * 1e6
    per_token = full * per_layer_token
    feats["log2_kv_bytes_per_token"] = _log2(per_token)
    feats["log2_kv_read_ms_per_1k_tokens"] = _log2(batch * per_token * 1024 / bw_bytes_per_ms)
    feats["log2_windowed_kv_read_ms"] = _log2(batch * windowed * per_layer_token * window / bw_bytes_per_ms)
    layers = decoder_layers(df, full + windowed)
    routing_layers = moe_layers(df, layers, d.active_params < d.total_params)
    expert_parallel = np.nan_to_num(_num(df, "config.expert_parallel", 1.0), nan=1.0) > 1
    # Streaming the weights and multiplying them overlap little at decode's batch sizes, so the
    # step takes the sum of the two, not the roofline's larger one (which put compute-heavy steps,
    # e.g. Llama-3.1-405B at 256 sequences, too low).
    matmul_ms = np.where(np.isfinite(feats["log2_roofline_ms"].to_numpy()),
                         np.exp2(feats["log2_memory_ms"].to_numpy()) + np.exp2(feats["log2_compute_ms"].to_numpy()),
                         np.nan)
    step_ms = (matmul_ms + layers * LAYER_OVERHEAD_MS
               + np.where(expert_parallel, routing_layers * EXPERT_PARALLEL_LAYER_MS, 0.0))
    feats["log2_decoder_layers"] = _log2(layers)
    feats["log2_decode_step_ms"] = _log2(step_ms)
    # The batch's matmuls at peak over that step: how near the step is to compute-bound, and what
    # a prompt's prefill chunk adds to it per token; as a ratio the trees carry it to unseen sizes.
    feats["log2_compute_over_decode_step"] = feats["log2_compute_ms"] - feats["log2_decode_step_ms"]
    feats["log2_decode_gpu_seconds_per_token"] = _log2(d.gpus * step_ms / 1e3 / d.seqs)
    with np.errstate(divide="ignore", invalid="ignore"):
        feats["windowed_layer_fraction"] = windowed / (full + windowed)
        feats["log2_kv_tokens_per_seq"] = _log2(feats["kv_headroom_gib"].to_numpy() * 2**30 / per_token / batch)
    return feats
