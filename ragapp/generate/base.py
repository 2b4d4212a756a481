"""The Generator interface: chat messages in, a stream of text pieces out (the backends and their
names are in ragapp.generate.registry).

Every backend streams; `generate` joins the stream. Each instance can be shared between threads:
generation holds the instance's lock (one generation at a time per loaded model, which is what a
single CPU or GPU can serve anyway).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence

from ragapp.errors import InvalidInput

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
    # Languages the model writes (ISO 639-1), "*" for any. A question in another language is answered by
    # quoting the passages instead (ragapp.answer.chat). hf/openai read `languages=` or RAGAPP_GENERATOR_LANGUAGES.
    languages: tuple[str, ...] = ("en",)

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


def declared_languages(languages: str | Sequence[str] | None) -> tuple[str, ...]:
    """A backend's languages: as given, else env RAGAPP_GENERATOR_LANGUAGES ("en,zh" or "*"), else English."""
    import os

    if languages is None:
        languages = os.environ.get("RAGAPP_GENERATOR_LANGUAGES") or "en"
    if isinstance(languages, str):
        languages = languages.split(",")
    out = tuple(x.strip().lower() for x in languages if x.strip())
    return out or ("en",)


def check_generation_args(max_new_tokens: int, temperature: float) -> None:
    if max_new_tokens < 1:
        raise InvalidInput(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if not 0.0 <= temperature <= 2.0:
        raise InvalidInput(f"--temperature must be between 0 and 2, got {temperature}")
