"""The answer pipeline, shared by `ragapp ask`, the web page and the HTTP API.

    follow-up made standalone → retrieve → grounding gate → prompt (fitted to the context)
    → generate (streamed) → abstention? → citation check → extractive fallback if it fails

`ChatSession.answer_stream` yields the answer text so far (str, growing) while the model writes,
then one final `Answer` with checked citations. A session can serve many threads: the generator
serialises generation with its own lock, retrievers are cached per collection set.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ragapp.answer import gate
from ragapp.answer.citations import check_answer
from ragapp.answer.extractive import extractive_answer
from ragapp.answer.prompt import ABSTENTION, build_messages, fit_passages
from ragapp.config import DEFAULT_INDEX_DIR, DEFAULT_K
from ragapp.errors import InvalidInput
from ragapp.generate.base import check_generation_args
from ragapp.generate.registry import load_generator
from ragapp.ingest import embed  # embed.load_embedder: one name to replace in tests
from ragapp.ingest.language import LANGUAGE_NAMES, language
from ragapp.retrieve.retriever import Retriever, check_mode
from ragapp.retrieve.similarity import vector_cache
from ragapp.types import Answer, Passage

History = Sequence[tuple[str, str]]  # (user question, assistant answer) pairs, oldest first


@dataclass
class ChatSettings:
    k: int = DEFAULT_K  # passages retrieved (fewer reach the model if they do not fit its context)
    mode: str = "hybrid"  # retrieval: hybrid | dense | bm25
    temperature: float = 0.0
    max_new_tokens: int = 256
    gate: bool = True  # abstain without generating when the evidence is weak
    gate_threshold: float | None = None  # None: the calibrated threshold (ragapp/answer/calibration.json)
    fallback: bool = True  # replace an answer that fails the citation check by quoted sentences
    condense: bool = True  # make follow-up questions standalone before retrieval
    extractive_only: bool = False  # skip the generator: answer with the best passage sentences

    def __post_init__(self) -> None:
        if self.k < 1:
            raise InvalidInput(f"--k must be at least 1, got {self.k}")
        check_mode(self.mode)
        check_generation_args(self.max_new_tokens, self.temperature)
        if self.gate_threshold is not None and not 0.0 <= self.gate_threshold <= 1.0:
            raise InvalidInput(f"the gate threshold must be between 0 and 1, got {self.gate_threshold}")


class ChatSession:
    """Holds the shared retriever(s), embedder and generator; answers questions."""

    def __init__(
        self,
        collections: Sequence[str] | str = (),
        *,
        index_dir: Path = DEFAULT_INDEX_DIR,
        generator=None,
        backend: str = "llm",
        model: str | None = None,
        retriever=None,
        embedder=None,
        settings: ChatSettings | None = None,
    ):
        self.collections = [collections] if isinstance(collections, str) else list(collections)
        self.index_dir = Path(index_dir)
        self.settings = settings or ChatSettings()
        self._generator = generator
        self._backend, self._model = backend, model
        self._retrievers: dict[tuple[str, ...], object] = {}
        if retriever is not None:
            self._retrievers[tuple(self.collections)] = retriever
        self._embedder = embedder
        self._lock = threading.Lock()

    # -- shared parts, loaded on first use -----------------------------------------------------

    @property
    def generator(self):
        with self._lock:
            if self._generator is None:
                self._generator = load_generator(self._backend, self._model)
            return self._generator

    def retriever(self, collections: Sequence[str] | None = None):
        key = tuple(collections or self.collections)
        if not key:
            raise InvalidInput("no index chosen; pass --index NAME (ragapp list shows the indexes)")
        with self._lock:
            if key not in self._retrievers:
                self._retrievers[key] = Retriever(list(key), index_dir=self.index_dir, embedder=self._embedder)
            return self._retrievers[key]

    def vectors(self, retriever):
        """The vector cache of the embedder the index was built with."""
        embedder = self._embedder or getattr(retriever, "embedder", None)
        if embedder is None:
            embedder = embed.load_embedder()
        return vector_cache(embedder)

    # -- the pipeline ----------------------------------------------------------------------------

    def standalone_question(self, question: str, history: History = (), settings: ChatSettings | None = None) -> str:
        from ragapp.answer.prompt import (
            clean_condensed,
            condense_fallback,
            condense_messages,
            needs_condensing,
        )

        settings = settings or self.settings
        if not settings.condense or not needs_condensing(question, history):
            return question
        gen = None if settings.extractive_only else self.generator
        if gen is not None and getattr(gen, "follows_instructions", False):
            try:
                text = gen.generate(condense_messages(question, history), max_new_tokens=64, temperature=0.0)
                rewritten = clean_condensed(text, question)
                if rewritten:
                    return rewritten
            except Exception:  # noqa: BLE001 - a rewrite that fails must not fail the answer
                pass
        return condense_fallback(question, history)

    def answer_stream(
        self,
        question: str,
        history: History = (),
        collections: Sequence[str] | None = None,
        settings: ChatSettings | None = None,
    ) -> Iterator[str | Answer]:
        settings = settings or self.settings
        question = (question or "").strip()
        if not question:
            raise InvalidInput("the question is empty; type a question")
        standalone = self.standalone_question(question, history, settings)
        retriever = self.retriever(collections)
        passages = retriever.search(standalone, k=settings.k, mode=settings.mode)
        base = Answer(text="", passages=passages, question=standalone)
        if not passages:
            yield _abstain(base, "the index holds no passages to answer from")
            return
        cache = self.vectors(retriever)
        evidence = gate.measure(standalone, passages, cache)
        if settings.gate:
            ok, why = gate.check(evidence, threshold=settings.gate_threshold)
            if not ok:
                yield _abstain(base, why)
                return
        if settings.extractive_only:
            yield self._extractive(base, passages, cache, "extractive answer (no generator)")
            return

        gen = self.generator
        lang = language(standalone)
        if not writes(gen, lang):
            yield self._extractive(base, passages, cache, language_note(gen, lang))
            return
        special = gen.special_tokens
        budget = gen.context_tokens - min(settings.max_new_tokens, gen.answer_tokens or settings.max_new_tokens)
        shown = fit_passages(standalone, passages, gen.prompt_tokens, budget, special)
        if not shown:
            raise InvalidInput(
                f"the question alone fills the model's context ({gen.context_tokens} tokens); ask a shorter question"
            )
        base.passages = shown
        text = ""
        for piece in gen.stream(
            build_messages(standalone, shown, special),
            max_new_tokens=settings.max_new_tokens,
            temperature=settings.temperature,
        ):
            text += piece
            yield text
        text = text.strip()
        if text and gate.is_abstention(text):
            yield _abstain(replace(base, text=text), "the model found no answer in the passages")
            return
        checked = check_answer(text, shown, cache, question=standalone)
        answer = replace(
            base, text=checked.text, citations=checked.citations, unsupported_sentences=checked.unsupported, mode="generated"
        )
        if not checked.passed:
            answer.reason = _failure(checked, text)
            if settings.fallback:
                answer = self.fallback(answer, cache)
        yield answer

    def fallback(self, answer: Answer, cache=None, collections: Sequence[str] | None = None) -> Answer:
        """The extractive answer that replaces a generated `answer` which failed the citation check."""
        if not failed_check(answer):
            return answer
        cache = cache or self.vectors(self.retriever(collections))
        base = replace(answer, text="", citations=[], unsupported_sentences=[])
        return self._extractive(base, answer.passages, cache, answer.reason + "; showing the best-supported passage sentences instead")

    def answer(self, question: str, history: History = (), collections=None, settings=None) -> Answer:
        final = None
        for item in self.answer_stream(question, history, collections, settings):
            final = item
        assert isinstance(final, Answer)
        return final

    def _extractive(self, base: Answer, passages: list[Passage], cache, reason: str) -> Answer:
        text, citations = extractive_answer(base.question, passages, cache)
        if not text:
            return _abstain(base, "no passage sentence to quote")
        return replace(base, text=text, citations=citations, mode="extractive", reason=reason)


def writes(gen, lang: str) -> bool:
    """Does the generator declare `lang` (ragapp.generate.base.Generator.languages)?"""
    langs = getattr(gen, "languages", ("en",))
    return "*" in langs or lang in langs


def language_note(gen, lang: str) -> str:
    """The one line an answer quoted for want of a generator in the question's language carries."""
    name = LANGUAGE_NAMES.get(lang, lang)
    known = ", ".join(LANGUAGE_NAMES.get(x, x) for x in getattr(gen, "languages", ("en",)))
    return (f"quoted from the passages: the question is in {name} and the generator writes {known} only "
            f"(an hf or openai model that writes {name}: set RAGAPP_GENERATOR_LANGUAGES={lang})")


def failed_check(answer: Answer) -> bool:
    """A generated answer that the citation check did not pass (its reason says why)."""
    return answer.mode == "generated" and bool(answer.reason)


def _abstain(base: Answer, reason: str) -> Answer:
    text = base.text if base.text else ABSTENTION
    return replace(base, text=text, abstained=True, mode="abstained", reason=reason, citations=[])


def _failure(checked, text: str) -> str:
    if not text:
        return "the model wrote nothing"
    bad = len(checked.unsupported)
    claims = len([s for s in checked.sentences if not s.neutral])
    if claims == 0:
        return "the answer makes no checkable claim"
    return f"{bad} of {claims} answer sentences are not supported by the passages they cite"


# ----------------------------------------------------------------------------- for the web UI

_sessions: dict[tuple, ChatSession] = {}
_sessions_lock = threading.Lock()


def shared_session(
    collections: Sequence[str], backend: str = "llm", model: str | None = None, index_dir: Path = DEFAULT_INDEX_DIR
) -> ChatSession:
    """One session per (backend, model, index folder), shared by every request and thread."""
    key = (backend, model, str(index_dir))
    with _sessions_lock:
        if key not in _sessions:
            _sessions[key] = ChatSession(list(collections), index_dir=index_dir, backend=backend, model=model)
        return _sessions[key]


def answer_stream(
    question: str,
    history: History = (),
    collections: Sequence[str] | str = (),
    settings: ChatSettings | None = None,
    backend: str = "llm",
    model: str | None = None,
    index_dir: Path = DEFAULT_INDEX_DIR,
) -> Iterator[str | Answer]:
    """Partial answer texts, then the final Answer (see ChatSession.answer_stream)."""
    cols = [collections] if isinstance(collections, str) else list(collections)
    session = shared_session(cols, backend, model, index_dir)
    yield from session.answer_stream(question, history, cols, settings)
