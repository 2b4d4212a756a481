"""The Generator interface: chat messages in, a stream of text pieces out.

Three backends (ragapp/backends/):
  llm     our own `llm` checkpoint (the default model; a folder written by llm.checkpoint.save_pretrained)
  hf      any Hugging Face causal LM: a local folder or a hub id
  openai  any OpenAI-compatible chat endpoint (vLLM, llama.cpp server, Ollama, OpenAI)

Every backend streams; `generate` joins the stream. Each instance can be shared between threads:
generation holds the instance's lock (one generation at a time per loaded model, which is what a
single CPU or GPU can serve anyway).
"""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path

from ragapp.errors import GeneratorError, InvalidInput

BACKENDS = ("llm", "hf", "openai")

# The shipped default model (item 6 of the grounding issue puts it here); RAGAPP_MODEL overrides.
DEFAULT_LLM_MODEL = Path(os.environ.get("RAGAPP_MODEL", Path(__file__).resolve().parent.parent / "models" / "ragchat"))

Messages = Sequence[dict[str, str]]


class Generator(ABC):
    """A chat model. Subclasses set `name` and `context_tokens` and implement `stream`."""

    name: str = ""
    context_tokens: int = 2048  # prompt + answer, in the model's tokens
    # the answer length the model was trained for: the prompt may fill the rest of the context. None: reserve the
    # whole max_new_tokens (a small-context model then reads fewer passages than it was trained on: 512 - 256)
    answer_tokens: int | None = None
    special_tokens: tuple[str, ...] = ()  # stripped from passages by the prompt builder
    follows_instructions: bool = False  # general instruction follower: may rewrite follow-up questions

    def __init__(self) -> None:
        self.lock = threading.Lock()

    @abstractmethod
    def stream(
        self, messages: Messages, *, max_new_tokens: int = 256, temperature: float = 0.0, stop: Sequence[str] = ()
    ) -> Iterator[str]:
        """Yield the answer's text pieces as they are produced; stop strings are not yielded."""

    def generate(self, messages: Messages, **kwargs) -> str:
        return "".join(self.stream(messages, **kwargs))

    def render(self, messages: Messages) -> str:
        """The prompt text the model reads (the chat template applied); used to count tokens."""
        return "\n".join(f"{m['role']}: {m['content']}" for m in messages)

    def count_tokens(self, text: str) -> int:
        # backends with a tokenizer count exactly; this is the usual ~4 characters per token
        return max(1, len(text) // 4)

    def prompt_tokens(self, messages: Messages) -> int:
        return self.count_tokens(self.render(messages))


class StopFilter:
    """Holds back just enough streamed text to cut it at the first stop string.

    Pieces arrive split anywhere ("<|en" + "d|>"), so the tail that could begin a stop string is
    kept until the next piece shows whether it does.
    """

    def __init__(self, stop: Sequence[str]):
        self.stop = [s for s in stop if s]
        self.buffer = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        self.buffer += piece
        hits = [i for i in (self.buffer.find(s) for s in self.stop) if i >= 0]
        if hits:
            out, self.buffer, self.stopped = self.buffer[: min(hits)], "", True
            return out
        keep = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(self.buffer)), 0, -1):
                if self.buffer.endswith(s[:n]):
                    keep = max(keep, n)
                    break
        out, self.buffer = self.buffer[: len(self.buffer) - keep], self.buffer[len(self.buffer) - keep :]
        return out

    def flush(self) -> str:
        out, self.buffer = ("" if self.stopped else self.buffer), ""
        return out


_CACHE: dict[tuple, Generator] = {}
_CACHE_LOCK = threading.Lock()


def load_generator(
    backend: str = "llm", model: str | os.PathLike | None = None, device: str | None = None, **options
) -> Generator:
    """A shared, cached generator. `model`: checkpoint folder (llm), folder or hub id (hf), served
    model name (openai). Options: openai `base_url`, `api_key`, `context_tokens`, `timeout`."""
    if backend not in BACKENDS:
        raise InvalidInput(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    key = (backend, str(model) if model is not None else None, device, tuple(sorted(options.items())))
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = _build(backend, model, device, **options)
        return _CACHE[key]


def _build(backend: str, model, device, **options) -> Generator:
    if backend == "llm":
        from ragapp.backends.llm_backend import LLMGenerator

        path = Path(model) if model else DEFAULT_LLM_MODEL
        return LLMGenerator(path, device=device, **options)
    if backend == "hf":
        from ragapp.backends.hf_backend import HFGenerator

        if not model:
            raise InvalidInput("--backend hf needs --model: a local model folder or a Hugging Face hub id")
        return HFGenerator(str(model), device=device, **options)
    from ragapp.backends.openai_backend import OpenAIGenerator

    return OpenAIGenerator(model=str(model) if model else None, **options)


def check_generation_args(max_new_tokens: int, temperature: float) -> None:
    if max_new_tokens < 1:
        raise InvalidInput(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if not 0.0 <= temperature <= 2.0:
        raise InvalidInput(f"--temperature must be between 0 and 2, got {temperature}")


__all__ = ["Generator", "GeneratorError", "StopFilter", "load_generator", "BACKENDS", "DEFAULT_LLM_MODEL"]
