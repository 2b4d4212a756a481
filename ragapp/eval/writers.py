"""Question writers: a passage in, a question and its answer (a span of the passage) out.

Two writers, behind one small interface (`QuestionWriter.write(passage, rng) -> Written | None`):

  template   (the default; offline, deterministic for a seed) picks an answer span in one sentence of
             the passage and turns the sentence into a question about it:
               a year ("in 1066")           -> "... in what year?"
               a number and its unit        -> "... how many hours ...?"
               a percentage                 -> "... what percentage ...?"
               a capitalised name           -> "What ...?" as the subject, else "... what?" in place
             e.g. "Rollo was the first ruler of Normandy." -> "What was the first ruler of Normandy?" (Rollo).
             Known weaknesses: the questions are stilted and copy the sentence's words, so lexical retrieval
             finds their evidence more easily than a person's paraphrase (retrieval numbers on such sets are
             optimistic); only names, numbers, years and percentages become answers (no "why"/"how"
             questions, nothing that needs two sentences); a name that is not the subject is asked about
             with a bare "what".
  generator  the configured generator, when it follows instructions (hf and openai backends:
             `follows_instructions`): asked for one question and a short answer copied from the passage;
             an answer that is not a span of the passage is dropped. Better questions, less predictable ones.

Where a question-writing model trained by `llm` plugs in: the issue plans one trained on SQuAD 1.1 train
(passage and answer span in, question out). It would be a third class here, choosing the span as
`TemplateWriter._candidates` does and asking the model for the question, with one line in WRITERS
("llm"). It is not trained yet: training needs long CPU runs (see recipes/).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Protocol

from ragapp.errors import InvalidInput
from ragapp.retrieve.lexical import sentences


@dataclass
class Written:
    question: str
    answer: str  # a span of `sentence`
    sentence: str  # the sentence of the passage that holds the answer


class QuestionWriter(Protocol):
    name: str

    def write(self, passage: str, rng: random.Random) -> Written | None:
        """One question answered by `passage`, or None when this writer finds nothing to ask."""


# ----------------------------------------------------------------------------- template writer

_YEAR = re.compile(r"\b(1[5-9]\d\d|20\d\d)\b")
_PERCENT = re.compile(r"\b\d+(?:[.,]\d+)?\s*(?:%|per\s?cent\b)")
_COUNT = re.compile(r"\b(\d+(?:[.,]\d+)*)\s+([a-z][a-z-]{2,})\b")
_NAME = re.compile(r"\b[A-Z][a-zA-Z'’-]+(?:\s+(?:of\s+|de\s+|the\s+)?[A-Z][a-zA-Z'’-]+)*")
_NOT_NAMES = {"The", "A", "An", "In", "On", "At", "It", "This", "That", "These", "Those", "He", "She", "They", "We",
              "I", "If", "When", "While", "After", "Before", "For", "But", "And", "Or", "As", "By", "With", "From"}
_UNIT_STOP = {"and", "or", "the", "of", "to", "in", "on", "at", "is", "was", "are", "were", "for", "with", "by"}


def _clean(sentence: str) -> str:
    return re.sub(r"\s*\[\d+\]", "", " ".join(sentence.split())).strip()


class TemplateWriter:
    name = "template"

    def _candidates(self, s: str) -> list[tuple[str, int, int, str, int]]:
        """(kind, start, end, wh phrase, end of the words the wh phrase replaces), preferred kinds first."""
        out = []
        for m in _YEAR.finditer(s):
            before = s[: m.start()].rstrip()
            if before.lower().endswith((" in", " since", " until", " by")) or before.lower() in ("in", "since"):
                out.append(("year", m.start(), m.end(), "what year", m.end()))
        for m in _PERCENT.finditer(s):
            out.append(("percent", m.start(), m.end(), "what percentage", m.end()))
        for m in _COUNT.finditer(s):
            if _YEAR.fullmatch(m.group(1)) or m.group(2) in _UNIT_STOP:
                continue
            out.append(("count", m.start(1), m.end(1), f"how many {m.group(2)}", m.end()))
        for m in _NAME.finditer(s):
            words = m.group(0).split()
            if m.start() == 0 and words[0] in _NOT_NAMES:
                continue
            if m.start() == 0 and len(words) == 1:
                continue  # a capitalised first word is usually not a name
            out.append(("name", m.start(), m.end(), "what", m.end()))
        return out

    def question_for(self, sentence: str, rng: random.Random) -> Written | None:
        s = _clean(sentence)
        if not s.endswith(".") or not 6 <= len(s.split()) <= 40:
            return None
        candidates = self._candidates(s)
        if not candidates:
            return None
        kinds = [k for k in ("year", "percent", "count", "name") if any(c[0] == k for c in candidates)]
        kind = kinds[0] if rng.random() < 0.6 else rng.choice(kinds)
        _, start, end, wh, replaced_end = rng.choice([c for c in candidates if c[0] == kind])
        answer = s[start:end].strip()
        if s.count(answer) > 1 or len(answer) < 2:
            return None
        prefix, suffix = s[:start].strip(), s[replaced_end:].strip().rstrip(".").strip()
        if not prefix:
            question = f"{wh[0].upper()}{wh[1:]} {suffix}?"
        else:
            if kind == "name" and prefix.endswith(" by"):
                wh = "whom"
            if kind == "year":
                prefix = re.sub(r"\s+(in|since|until|by)$", lambda m: " " + m.group(1), prefix)
            question = f"{prefix} {wh} {suffix}".strip().rstrip(",;:") + "?"
            question = question[0].upper() + question[1:]
        question = re.sub(r"\s+([,?])", r"\1", question)
        if len(question.split()) < 4:
            return None
        return Written(question, answer, s)

    def write(self, passage: str, rng: random.Random) -> Written | None:
        pool = sentences(passage)
        rng.shuffle(pool)
        for sentence in pool:
            written = self.question_for(sentence, rng)
            if written is not None:
                return written
        return None


# ----------------------------------------------------------------------------- generator writer

PROMPT = ("Write one question that the passage below answers, and its answer: a few words copied exactly from "
          "the passage. Reply in exactly two lines:\nQuestion: ...\nAnswer: ...\n\nPassage:\n\"\"\"\n{passage}\n\"\"\"")


class GeneratorWriter:
    """The configured generator writes the question (it must follow instructions)."""

    def __init__(self, generator, max_new_tokens: int = 96):
        if not getattr(generator, "follows_instructions", False):
            raise InvalidInput(f"the generator {getattr(generator, 'name', generator)!r} does not follow instructions, "
                               "so it cannot write questions; use --writer template, or an hf/openai model")
        self.generator = generator
        self.max_new_tokens = max_new_tokens
        self.name = f"generator:{getattr(generator, 'name', 'model')}"

    def write(self, passage: str, rng: random.Random) -> Written | None:
        text = self.generator.generate([{"role": "user", "content": PROMPT.format(passage=passage.strip())}],
                                       max_new_tokens=self.max_new_tokens, temperature=0.0)
        q = re.search(r"question\s*:\s*(.+)", text, re.I)
        a = re.search(r"answer\s*:\s*(.+)", text, re.I)
        if not q or not a:
            return None
        question, answer = q.group(1).strip(), a.group(1).strip().strip("\"'“”").rstrip(".").strip()
        at = passage.lower().find(answer.lower()) if answer else -1
        if at < 0 or not question.endswith("?"):
            return None  # the answer must be a span of the passage: it is what the filter looks for
        answer = passage[at : at + len(answer)]
        sentence = next((s for s in sentences(passage) if answer in s), answer)
        return Written(question, answer, _clean(sentence))


WRITERS = ("template", "generator")  # "llm": the trained question writer, when there is one (module docstring)


def make_writer(name: str, generator=None) -> QuestionWriter:
    if name == "template":
        return TemplateWriter()
    if name == "generator":
        if generator is None:
            raise InvalidInput("--writer generator needs a generator; pass --generator hf:MODEL or openai:MODEL")
        return GeneratorWriter(generator)
    raise InvalidInput(f"unknown question writer {name!r}; choose one of: {', '.join(WRITERS)}")
