"""The citation check: is each answer sentence supported by the passages it cites?

For a sentence s and a passage p:
  lexical  = share of s's NEW content terms (stemmed, not already in the question) found in p.
             A claim that brings in a name, number or word that p never uses is not taken from p.
  semantic = cosine similarity (the index's embedder) of s and p's closest sentence.
  support  = w * lexical + (1 - w) * semantic;  s is supported by p when support >= threshold.
w and threshold come from calibration.json ("citations"), made by `python -m recipes.ragchat.calibrate` on
HaluEval QA (training data): right answers against their knowledge = supported, hallucinated
answers = unsupported.

The check also repairs what it can: citations of passages that were not given ([7] of 5) are
removed; an uncited sentence that one passage supports gets that passage's [n]. Sentences with no
content terms ("Here is what I found:") and the model's remarks that the documents are silent on
something are neither supported nor unsupported.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from ragapp.answer.gate import CALIBRATION_FILE, is_abstention
from ragapp.retrieve.lexical import CITATION, coverage, split_sentences, term_set
from ragapp.types import Citation, Passage

if TYPE_CHECKING:
    from ragapp.retrieve.similarity import VectorCache


@dataclass(frozen=True)
class SupportParams:
    lexical_weight: float
    threshold: float


@lru_cache(maxsize=4)
def load_params(path: Path = CALIBRATION_FILE) -> SupportParams:
    d = json.loads(Path(path).read_text())["citations"]
    return SupportParams(float(d["lexical_weight"]), float(d["threshold"]))


@dataclass
class SentenceCheck:
    text: str  # the sentence as it appears in the checked answer (citations repaired)
    cited: list[int]  # passage numbers it cites (1-based), after repair
    support: float = 0.0  # best support among its cited passages
    supported: bool = False
    neutral: bool = False  # no claim to check
    auto_cited: bool = False  # the [n] was added by the check


@dataclass
class CheckResult:
    text: str  # the answer with citations repaired
    sentences: list[SentenceCheck]
    citations: list[Citation]
    removed: list[int] = field(default_factory=list)  # citation numbers that named no given passage

    @property
    def unsupported(self) -> list[str]:
        return [s.text for s in self.sentences if not s.neutral and not s.supported]

    @property
    def passed(self) -> bool:
        """Every claim is supported, and there is at least one claim."""
        claims = [s for s in self.sentences if not s.neutral]
        return bool(claims) and all(s.supported for s in claims)


# Words about the documents rather than about the world ("according to the passage", "I found"):
# a claim is not unsupported for using them.
META_TERMS = term_set("according document documents passage passages source sources text found find states stated "
                      "mentions mentioned says said provided information answer question based context")


def strip_citations(text: str) -> str:
    text = re.sub(r"\s*" + CITATION.pattern, "", text)
    return re.sub(r"\s+([.,;:!?])", r"\1", text).strip()


def cited_numbers(text: str) -> list[int]:
    return [int(n) for m in CITATION.finditer(text) for n in re.split(r"\s*[,;]\s*", m.group(1))]


def support_features(
    sentence: str, passage: Passage, cache: "VectorCache", question: str = ""
) -> tuple[float, float, tuple[int, int]]:
    """(lexical, semantic, span of the passage sentence that supports `sentence` best)."""
    claim = strip_citations(sentence)
    terms = term_set(claim) - META_TERMS or term_set(claim)
    new = terms - term_set(question) or terms
    spans = split_sentences(passage.text) or [(0, len(passage.text))]
    parts = [passage.text[s:e] for s, e in spans]
    sims = cache.similarities(claim, parts)
    lexical = coverage(new, term_set(passage.text))
    # the highlight: the passage sentence that holds most of the claim's new terms, then the closest
    local = [coverage(new, term_set(p)) + float(sim) for p, sim in zip(parts, sims)]
    best = max(range(len(parts)), key=local.__getitem__)
    return lexical, float(max(sims.max(), 0.0)), spans[best]


def support_scores(
    sentence: str, passage: Passage, cache: "VectorCache", question: str = "", params: SupportParams | None = None
) -> tuple[float, tuple[int, int]]:
    """(support of `sentence` by `passage` in 0..1, the highlight span in the passage)."""
    params = params or load_params()
    lexical, semantic, span = support_features(sentence, passage, cache, question)
    return params.lexical_weight * lexical + (1 - params.lexical_weight) * semantic, span


def check_answer(
    text: str, passages: list[Passage], cache: "VectorCache", question: str = "", params: SupportParams | None = None
) -> CheckResult:
    params = params or load_params()
    removed: list[int] = []

    def keep_valid(m: re.Match) -> str:
        nums = [int(n) for n in re.split(r"\s*[,;]\s*", m.group(1))]
        good = [n for n in dict.fromkeys(nums) if 1 <= n <= len(passages)]
        removed.extend(n for n in nums if not 1 <= n <= len(passages))
        return "".join(f"[{n}]" for n in good)

    text = CITATION.sub(keep_valid, text)
    text = re.sub(r"[ \t]+([.,;:!?])", r"\1", re.sub(r"[ \t]{2,}", " ", text)).strip()

    best: dict[int, tuple[float, tuple[int, int] | None]] = {}  # passage number -> best support, highlight
    checks: list[SentenceCheck] = []
    pieces: list[str] = []
    last = 0
    for start, end in split_sentences(text):
        pieces.append(text[last:start])
        last = end
        sent = text[start:end]
        check = SentenceCheck(sent, list(dict.fromkeys(cited_numbers(sent))))
        if not (term_set(strip_citations(sent)) - META_TERMS) or is_abstention(sent):
            check.neutral = True
        elif passages:
            candidates = check.cited or list(range(1, len(passages) + 1))
            scored = {n: support_scores(sent, passages[n - 1], cache, question, params) for n in candidates}
            top = max(scored, key=lambda n: scored[n][0])
            check.support = scored[top][0]
            check.supported = check.support >= params.threshold
            if not check.cited and check.supported:
                check.cited, check.auto_cited = [top], True
                check.text = _add_marker(sent, top)
                scored = {top: scored[top]}
            for n, (s, span) in scored.items():
                if n in check.cited and (n not in best or s > best[n][0]):
                    best[n] = (s, span)
        checks.append(check)
        pieces.append(check.text)
    pieces.append(text[last:])
    citations = [
        Citation(number=n, passage=passages[n - 1], supported=s >= params.threshold, support=round(s, 4), highlight=span)
        for n, (s, span) in sorted(best.items())
    ]
    return CheckResult("".join(pieces), checks, citations, removed)


def _add_marker(sentence: str, n: int) -> str:
    m = re.search(r"[.!?。！？；]+[\"'”’)」』）]*$", sentence)
    return f"{sentence[: m.start()]} [{n}]{sentence[m.start():]}" if m else f"{sentence} [{n}]"
