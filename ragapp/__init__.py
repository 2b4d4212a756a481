"""Retrieval-augmented chat over private documents.

    from ragapp import Index, Retriever, ChatSession, Answer, Passage

The public names are imported on first use, so that `import ragapp` and `ragapp --help` stay
instant (the stages import torch, faiss, transformers and gradio).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_PUBLIC = {
    "Index": "ragapp.index.index",
    "Retriever": "ragapp.retrieve.retriever",
    "RetrieverConfig": "ragapp.retrieve.retriever",
    "ChatSession": "ragapp.answer.chat",
    "ChatSettings": "ragapp.answer.chat",
    "Answer": "ragapp.types",
    "Passage": "ragapp.types",
    "Citation": "ragapp.types",
    "Document": "ragapp.types",
}
__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'ragapp' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
