"""Generator backends by name, and the shared, cached instances.

    llm     our own `llm` checkpoint (a folder written by llm.checkpoint.save_pretrained), or shipped adapters over an
            installed base (ragapp.generate.assemble): the default model
    hf      any Hugging Face causal LM: a local folder or a hub id
    openai  any OpenAI-compatible chat endpoint (vLLM, llama.cpp server, Ollama, OpenAI)

A new backend is one file in this package with a Generator subclass, and one line in REGISTRY.
Each backend module is imported only when it is used (they import torch, transformers or httpx).
"""

from __future__ import annotations

import importlib
import os
import threading
from pathlib import Path

from ragapp.config import DEFAULT_LLM_MODEL
from ragapp.errors import InvalidInput
from ragapp.generate.base import Generator

REGISTRY = {  # name -> "module:class"
    "llm": "ragapp.generate.llm_backend:LLMGenerator",
    "hf": "ragapp.generate.hf_backend:HFGenerator",
    "openai": "ragapp.generate.openai_backend:OpenAIGenerator",
}
BACKENDS = tuple(REGISTRY)
# What may answer in `ragapp serve`: a generator, or "extractive" (no model: the passages' best
# sentences quoted).
ANSWER_MODES = (*BACKENDS, "extractive")

_CACHE: dict[tuple, Generator] = {}
_CACHE_LOCK = threading.Lock()


def check_backend(backend: str, choices=BACKENDS) -> str:
    if backend not in choices:
        raise InvalidInput(f"unknown backend {backend!r}; choose one of: {', '.join(choices)}")
    return backend


def load_generator(
    backend: str = "llm", model: str | os.PathLike | None = None, device: str | None = None, **options
) -> Generator:
    """A shared, cached generator. `model`: checkpoint folder (llm), folder or hub id (hf), served
    model name (openai). Options: openai `base_url`, `api_key`, `context_tokens`, `timeout`."""
    check_backend(backend)
    key = (backend, str(model) if model is not None else None, device, tuple(sorted(options.items())))
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = _build(backend, model, device, **options)
        return _CACHE[key]


def _build(backend: str, model, device, **options) -> Generator:
    module, _, name = REGISTRY[backend].partition(":")
    cls = getattr(importlib.import_module(module), name)
    if backend == "llm":
        return cls(Path(model) if model else DEFAULT_LLM_MODEL, device=device, **options)
    if backend == "hf":
        if not model:
            raise InvalidInput("--backend hf needs --model: a local model folder or a Hugging Face hub id")
        return cls(str(model), device=device, **options)
    return cls(model=str(model) if model else None, **options)
