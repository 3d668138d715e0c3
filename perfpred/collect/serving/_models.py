"""Tiny Llama models made on this machine: random weights, a locally trained tokenizer, no hub.

A serving benchmark needs a model the engines can load, not a good one: a randomly
initialised Llama (``LlamaConfig`` + ``save_pretrained``) with a byte-level BPE tokenizer
trained by ``tokenizers`` on a built-in text, written both as a Hugging Face folder (for
vLLM) and as GGUF (for llama-server, with PyPI's ``gguf`` writer). Everything is seeded,
so one spec always gives the same files; they are cached in
``models_dir()/<name>-<spec hash>/`` and built at most once (a lock keeps concurrent
builders apart, and the folder appears atomically).

Presets: ``tiny`` (hidden 128, 2 layers, ~0.4 M parameters: start-up in a second, for tests)
and ``small-20m`` (hidden 512, 5 layers, ~20 M parameters: enough compute per token that
knob effects stand above the noise of a shared CPU).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perfpred.collect.serving._paths import file_lock, models_dir
from perfpred.errors import InvalidInputError, MissingDependencyError

# Bumped when the files written for a spec change, so old caches are not reused.
_FORMAT_VERSION = 2
SPECIAL_TOKENS = ("<s>", "</s>", "<unk>")


@dataclass(frozen=True)
class TinyModelSpec:
    """A Llama architecture with random weights; every field goes into the cache key."""

    name: str = "tiny"
    hidden_size: int = 128
    intermediate_size: int = 352
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 4
    vocab_size: int = 1024
    max_position_embeddings: int = 4096
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    seed: int = 0

    def validate(self) -> None:
        for name in ("hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads",
                     "max_position_embeddings"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"`{name} >= 1` must hold for a model spec, but got {name}={value!r}")
        if self.hidden_size % self.num_heads or (self.hidden_size // self.num_heads) % 2:
            raise InvalidInputError("`hidden_size / num_heads` must be an even integer, but got "
                                    f"hidden_size={self.hidden_size}, num_heads={self.num_heads}")
        if self.num_heads % self.num_kv_heads:
            raise InvalidInputError("`num_heads % num_kv_heads == 0` must hold, but got "
                                    f"num_heads={self.num_heads}, num_kv_heads={self.num_kv_heads}")
        if not isinstance(self.vocab_size, int) or self.vocab_size < 300:
            # byte-level BPE needs 256 byte tokens + the special tokens + some merges
            raise InvalidInputError(f"`vocab_size >= 300` must hold, but got vocab_size={self.vocab_size!r}")

    def key(self) -> str:
        payload = json.dumps({**dataclasses.asdict(self), "format": _FORMAT_VERSION}, sort_keys=True)
        return hashlib.sha1(payload.encode()).hexdigest()[:10]

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


MODEL_PRESETS: dict[str, TinyModelSpec] = {
    "tiny": TinyModelSpec(),
    "small-20m": TinyModelSpec(name="small-20m", hidden_size=512, intermediate_size=1408, num_layers=5,
                               num_heads=8, num_kv_heads=8, vocab_size=4096),
}


@dataclass(frozen=True)
class LocalModel:
    """A generated model on disk: the HF folder, the GGUF file and what it is."""

    spec: TinyModelSpec
    path: Path
    n_params: int

    @property
    def hf_dir(self) -> Path:
        return self.path / "hf"

    @property
    def gguf_path(self) -> Path:
        return self.path / "model.gguf"

    def workload(self) -> dict[str, Any]:
        """The model's part of a serving row's workload (names as the ML.ENERGY importer uses)."""
        s = self.spec
        return {"model": f"{s.name}-{s.key()}", "architecture": "llama", "precision": "float32",
                "total_params_b": self.n_params / 1e9, "activated_params_b": self.n_params / 1e9,
                "n_params": self.n_params, "hidden_size": s.hidden_size, "num_layers": s.num_layers,
                "num_heads": s.num_heads, "num_kv_heads": s.num_kv_heads, "vocab_size": s.vocab_size}


def llama_param_count(spec: TinyModelSpec) -> int:
    """Parameters of the architecture (untied embeddings), without building it."""
    h, kv = spec.hidden_size, spec.num_kv_heads * spec.head_dim
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * spec.intermediate_size + 2 * h
    return 2 * spec.vocab_size * h + spec.num_layers * per_layer + h


def describe_model(spec: TinyModelSpec | str) -> LocalModel:
    """The model's description without generating its files (for engines that never load it: the fake one)."""
    spec = _spec(spec)
    return LocalModel(spec=spec, path=model_path(spec), n_params=llama_param_count(spec))


def _spec(spec: TinyModelSpec | str) -> TinyModelSpec:
    if isinstance(spec, str):
        if spec not in MODEL_PRESETS:
            raise InvalidInputError(f"`model` must be one of {sorted(MODEL_PRESETS)} or a TinyModelSpec, "
                                    f"but got model={spec!r}")
        spec = MODEL_PRESETS[spec]
    spec.validate()
    return spec


def model_path(spec: TinyModelSpec | str) -> Path:
    spec = _spec(spec)
    return models_dir() / f"{spec.name}-{spec.key()}"


def ensure_model(spec: TinyModelSpec | str = "tiny") -> LocalModel:
    """The cached model for ``spec``, generating it first if needed (a few seconds)."""
    spec = _spec(spec)
    path = model_path(spec)
    with file_lock(path.with_name(path.name + ".lock")):
        if not (path / "model.json").is_file():
            staging = path.with_name(path.name + ".tmp")
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            _generate(spec, staging)
            shutil.rmtree(path, ignore_errors=True)
            os.replace(staging, path)
    info = json.loads((path / "model.json").read_text())
    return LocalModel(spec=spec, path=path, n_params=int(info["n_params"]))


# ---------------------------------------------------------------------------- generation


_TEXT = (
    "The engine schedules requests in batches. Each request brings a prompt and asks for new tokens. "
    "Prefill reads the whole prompt at once; decode adds one token per step for every running sequence. "
    "Larger batches raise throughput until memory bandwidth or the key-value cache runs out. "
    "A server that answers quickly at low load may queue requests at high load, and latency grows. "
    "Time to first token measures the wait before output starts; time per output token measures the pace. "
)


def _corpus(seed: int, n_sentences: int = 4000) -> list[str]:
    """A built-in text plus seeded pseudo-words, so BPE finds enough merges for any preset vocabulary."""
    rng = random.Random(seed)
    syllables = [c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou"] + ["th", "ch", "sh", "qu", "st", "er"]
    words = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(3000)]
    lines = [_TEXT] * 20
    for _ in range(n_sentences):
        sentence = " ".join(rng.choice(words) for _ in range(rng.randint(4, 14)))
        lines.append(sentence.capitalize() + rng.choice([".", ".", "?", "!", ","]) + f" {rng.randint(0, 9999)}")
    return lines


def _train_tokenizer(spec: TinyModelSpec):  # -> tokenizers.Tokenizer
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=spec.vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(_corpus(spec.seed), trainer=trainer)
    return tokenizer


def _permute_qk(weights, n_head: int):  # numpy array -> numpy array
    """HF's rotate-half Q/K rows -> llama.cpp's interleaved RoPE layout (as convert_hf_to_gguf.py does)."""
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _generate(spec: TinyModelSpec, out: Path) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub: everything is made here
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import gguf
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    except ImportError as exc:
        raise MissingDependencyError(
            f"generating a serving model needs the [serving] extra ({exc.name} is missing): "
            "pip install 'perfpred[serving]'") from exc

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a progress bar per shard is noise in a collector's log
    tokenizer = _train_tokenizer(spec)
    vocab = tokenizer.get_vocab()
    n_tokens = len(vocab)
    if n_tokens > spec.vocab_size:
        raise InvalidInputError(f"the tokenizer has {n_tokens} tokens, more than vocab_size={spec.vocab_size}")
    ids = {name: vocab[name] for name in SPECIAL_TOKENS}
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    hf_dir = out / "hf"
    fast.save_pretrained(hf_dir)

    config = LlamaConfig(
        vocab_size=spec.vocab_size, hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers, num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads, max_position_embeddings=spec.max_position_embeddings,
        rms_norm_eps=spec.rms_norm_eps, rope_theta=spec.rope_theta, tie_word_embeddings=False,
        bos_token_id=ids["<s>"], eos_token_id=ids["</s>"], pad_token_id=None, torch_dtype="float32",
    )
    torch.manual_seed(spec.seed)
    with torch.no_grad():
        model = LlamaForCausalLM(config).float().eval()
    model.save_pretrained(hf_dir, safe_serialization=True)
    state = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    n_params = sum(p.numel() for p in model.parameters())

    _write_gguf(gguf, spec, out / "model.gguf", state, tokenizer, n_tokens, ids)
    (out / "model.json").write_text(json.dumps(
        {"spec": dataclasses.asdict(spec), "key": spec.key(), "n_params": int(n_params), "tokenizer_tokens": n_tokens,
         "format": _FORMAT_VERSION, "transformers": __import__("transformers").__version__,
         "gguf": getattr(gguf, "__version__", None) or _dist_version("gguf")}, indent=2))


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _write_gguf(gguf: Any, spec: TinyModelSpec, path: Path, state: dict[str, Any], tokenizer: Any,
                n_tokens: int, ids: dict[str, int]) -> None:
    """The same model for llama.cpp: metadata, byte-level BPE vocabulary and f32 tensors."""
    import numpy as np

    writer = gguf.GGUFWriter(str(path), arch="llama")
    writer.add_name(f"perfpred-{spec.name}")
    writer.add_context_length(spec.max_position_embeddings)
    writer.add_embedding_length(spec.hidden_size)
    writer.add_block_count(spec.num_layers)
    writer.add_feed_forward_length(spec.intermediate_size)
    writer.add_rope_dimension_count(spec.head_dim)
    writer.add_head_count(spec.num_heads)
    writer.add_head_count_kv(spec.num_kv_heads)
    writer.add_layer_norm_rms_eps(spec.rms_norm_eps)
    writer.add_rope_freq_base(spec.rope_theta)
    writer.add_vocab_size(spec.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)

    by_id = {i: tok for tok, i in tokenizer.get_vocab().items()}
    tokens, types = [], []
    for i in range(spec.vocab_size):
        if i < n_tokens:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.CONTROL if by_id[i] in SPECIAL_TOKENS else gguf.TokenType.NORMAL)
        else:  # embedding rows beyond the trained vocabulary: padding tokens, as convert_hf_to_gguf writes them
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
    merges = [" ".join(m) if isinstance(m, (list, tuple)) else m
              for m in json.loads(tokenizer.to_str())["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")  # GPT-2 regex, as the ByteLevel pre-tokenizer splits
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(ids["<s>"])
    writer.add_eos_token_id(ids["</s>"])
    writer.add_unk_token_id(ids["<unk>"])
    writer.add_add_bos_token(False)

    f32 = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()}
    writer.add_tensor("token_embd.weight", f32["model.embed_tokens.weight"])
    writer.add_tensor("output_norm.weight", f32["model.norm.weight"])
    writer.add_tensor("output.weight", f32["lm_head.weight"])
    for i in range(spec.num_layers):
        hf = f"model.layers.{i}."
        blk = f"blk.{i}."
        writer.add_tensor(blk + "attn_norm.weight", f32[hf + "input_layernorm.weight"])
        writer.add_tensor(blk + "attn_q.weight", _permute_qk(f32[hf + "self_attn.q_proj.weight"], spec.num_heads))
        writer.add_tensor(blk + "attn_k.weight", _permute_qk(f32[hf + "self_attn.k_proj.weight"], spec.num_kv_heads))
        writer.add_tensor(blk + "attn_v.weight", f32[hf + "self_attn.v_proj.weight"])
        writer.add_tensor(blk + "attn_output.weight", f32[hf + "self_attn.o_proj.weight"])
        writer.add_tensor(blk + "ffn_norm.weight", f32[hf + "post_attention_layernorm.weight"])
        writer.add_tensor(blk + "ffn_gate.weight", f32[hf + "mlp.gate_proj.weight"])
        writer.add_tensor(blk + "ffn_up.weight", f32[hf + "mlp.up_proj.weight"])
        writer.add_tensor(blk + "ffn_down.weight", f32[hf + "mlp.down_proj.weight"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
