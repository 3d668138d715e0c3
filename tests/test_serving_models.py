"""Tiny serving models: generated locally (no hub), deterministic, readable as HF folder and as GGUF."""

from __future__ import annotations

import hashlib

import pytest

from perfpred.collect.serving import MODEL_PRESETS, TinyModelSpec, describe_model, ensure_model, llama_param_count
from perfpred.errors import InvalidInputError


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    pytest.importorskip("gguf")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PERFPRED_MODELS_DIR", str(tmp_path_factory.mktemp("models")))
        yield ensure_model("tiny")


def test_the_tiny_model_is_cached_by_spec_and_counts_its_parameters(tiny, monkeypatch):
    monkeypatch.setenv("PERFPRED_MODELS_DIR", str(tiny.path.parent))
    assert tiny.path.name == f"tiny-{MODEL_PRESETS['tiny'].key()}"
    assert tiny.n_params == llama_param_count(tiny.spec) == 664_192
    assert tiny.gguf_path.is_file() and (tiny.hf_dir / "model.safetensors").is_file()
    stamp = tiny.gguf_path.stat().st_mtime_ns
    assert ensure_model("tiny").gguf_path.stat().st_mtime_ns == stamp  # found, not rebuilt
    assert llama_param_count(MODEL_PRESETS["small-20m"]) == pytest.approx(20e6, rel=0.05)


def test_generation_is_deterministic(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("PERFPRED_MODELS_DIR", str(tmp_path))
    again = ensure_model("tiny")
    assert again.path != tiny.path
    for name in ("model.gguf", "hf/model.safetensors", "hf/tokenizer.json"):
        assert _sha(again.path / name) == _sha(tiny.path / name), name


def test_the_hf_folder_loads_offline(tiny, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(tiny.hf_dir)
    assert (config.hidden_size, config.num_hidden_layers, config.vocab_size) == (128, 2, 1024)
    tokenizer = AutoTokenizer.from_pretrained(tiny.hf_dir)
    ids = tokenizer("Time to first token measures the wait.")["input_ids"]
    assert ids and max(ids) < 1024
    assert tokenizer.decode(ids).strip() == "Time to first token measures the wait."


def test_the_gguf_file_has_llama_metadata_vocab_and_tensors(tiny):
    import gguf

    reader = gguf.GGUFReader(tiny.gguf_path)
    fields = reader.fields
    arch = fields["general.architecture"]
    assert bytes(arch.parts[arch.data[0]]).decode() == "llama"
    assert int(fields["llama.embedding_length"].parts[-1][0]) == 128
    assert int(fields["llama.block_count"].parts[-1][0]) == 2
    assert len(fields["tokenizer.ggml.tokens"].data) == 1024
    names = {t.name for t in reader.tensors}
    assert {"token_embd.weight", "output.weight", "blk.1.ffn_down.weight", "blk.0.attn_q.weight"} <= names
    assert sum(int(t.n_elements) for t in reader.tensors) == tiny.n_params


def test_bad_specs_are_one_line_errors():
    with pytest.raises(InvalidInputError, match=r"`model` must be one of \['small-20m', 'tiny'\]"):
        describe_model("huge")
    with pytest.raises(InvalidInputError, match="hidden_size / num_heads"):
        TinyModelSpec(hidden_size=100, num_heads=3).validate()
    with pytest.raises(InvalidInputError, match="num_heads % num_kv_heads"):
        TinyModelSpec(num_heads=4, num_kv_heads=3).validate()
