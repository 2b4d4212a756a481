"""The extractive answer: the passage sentences that best match the question, quoted and cited.

It is the fallback when a generated answer fails the citation check (a quote cannot be made up),
and, with `best_span`, the baseline reader of the quality report.

A sentence's score is 0.6 * cosine(question, sentence) + 0.4 * share of the question's content
terms in the sentence, minus 0.02 per rank of its passage (ties go to the better-retrieved one).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ragapp.ingest.language import CJK_GAP, has_cjk
from ragapp.retrieve.lexical import (
    STOPWORDS,
    coverage,
    split_sentences,
    term_set,
    terms,
)
from ragapp.types import Citation, Passage

if TYPE_CHECKING:
    from ragapp.retrieve.similarity import VectorCache

SEMANTIC_WEIGHT = 0.6
RANK_PENALTY = 0.02


@dataclass
class ScoredSentence:
    passage: int  # 0-based index into the passages
    start: int
    end: int
    text: str
    score: float


def rank_sentences(question: str, passages: list[Passage], cache: "VectorCache") -> list[ScoredSentence]:
    """Every sentence of `passages`, best first."""
    found: list[ScoredSentence] = []
    for i, p in enumerate(passages):
        for s, e in split_sentences(p.text):
            if not _is_heading(p.text[s:e]):
                found.append(ScoredSentence(i, s, e, p.text[s:e], 0.0))
    if not found:
        return []
    sims = cache.similarities(question, [f.text for f in found])
    q = term_set(question)
    for f, sim in zip(found, sims):
        f.score = SEMANTIC_WEIGHT * float(sim) + (1 - SEMANTIC_WEIGHT) * coverage(q, term_set(f.text)) - RANK_PENALTY * f.passage
    return sorted(found, key=lambda f: -f.score)


def _is_heading(text: str) -> bool:
    """Titles match questions well but answer nothing: '# Setup', 'HOW SYNC WORKS', 'Overview',
    '安装' (CJK has neither spaces nor case: a title is a short line without a full stop)."""
    t = text.strip()
    if t.startswith("#"):
        return True
    if has_cjk(t):
        return len(t) < 8 and not re.search(r"[。！？；.!?]$", t)
    return len(t.split()) < 3 or not re.search(r"[a-z]", t)


def quote(text: str) -> str:
    """A sentence as quoted in an answer: list marker dropped, line breaks and runs of spaces collapsed
    (and dropped between two CJK characters, where a line break is no space)."""
    text = " ".join(re.sub(r"^\s*(?:[-*•+]|\d{1,3}[.)])\s+", "", text).split())
    return CJK_GAP.sub("", text) if has_cjk(text) else text


def extractive_answer(
    question: str, passages: list[Passage], cache: "VectorCache", max_sentences: int = 2, min_ratio: float = 0.8
) -> tuple[str, list[Citation]]:
    """Up to `max_sentences` quoted sentences with [n], each within `min_ratio` of the best score."""
    ranked = rank_sentences(question, passages, cache)
    if not ranked:
        return "", []
    chosen = [r for r in ranked[:max_sentences] if r.score >= min_ratio * ranked[0].score]
    parts, citations = [], {}
    for r in chosen:
        n = r.passage + 1
        parts.append(f"“{quote(r.text)}” [{n}]")
        if n not in citations:
            citations[n] = Citation(n, passages[r.passage], supported=True, support=1.0, highlight=(r.start, r.end))
    return " ".join(parts), [citations[n] for n in sorted(citations)]


# ----------------------------------------------------------------------------- short spans

# No extractive reader model is available offline (the only pretrained network is a sentence
# embedder), so the short answer inside the best sentence is picked by answer-type rules: the
# question word says what kind of span to look for (a year, a number, a name), and the span must
# not repeat the question's own words. It is a baseline, not a reader.
_MONTHS = "january february march april may june july august september october november december".split()
_TOKEN = re.compile(r"[\w$£€%][\w'’.,%$£€-]*[\w%]|[\w$£€%]")


def _question_type(question: str) -> str:
    q = question.lower()
    if re.search(r"\b(when|what year|which year|what century|what date|what decade|how long ago)\b", q):
        return "date"
    if re.search(r"\b(how (many|much|long|far|old|large|big|tall|high|often)|what (percentage|percent|number|amount))\b", q):
        return "number"
    if re.search(r"\b(who|whom|whose)\b", q):
        return "person"
    if re.search(r"\bwhere\b|\bwhat (country|city|state|region|place|continent)\b", q):
        return "place"
    return "other"


def _is_number(tok: str) -> bool:
    return bool(re.search(r"\d", tok)) or tok.lower() in {"one", "two", "three", "four", "five", "six", "seven",
                                                             "eight", "nine", "ten", "hundred", "thousand", "million", "billion"}


_CONNECT = frozenset("of the and de von van der du la le y for on 's".split())
_UNIT = re.compile(r"(?i)(centur|year|decade|percent|%|million|billion|thousand|hundred|km|mile|meter|metre|feet|foot|kg|ton|dollar|\$|people|times)")


def best_span(question: str, sentence: str, max_len: int = 6) -> str:
    """The likeliest short answer to `question` inside `sentence` (the sentence itself if none)."""
    toks = [(m.start(), m.end(), m.group()) for m in _TOKEN.finditer(sentence)]
    if not toks:
        return sentence.strip()
    q_terms = term_set(question)
    in_q = [bool(set(terms(t)) & q_terms) for _, _, t in toks]
    stop = [t.lower() in STOPWORDS for _, _, t in toks]
    # runs of tokens not taken from the question, cut at punctuation and at stopwords other than
    # the few that join a name or a quantity ("Duke of Normandy", "10th and 11th centuries")
    runs, cur = [], []
    for k, (s, _end, t) in enumerate(toks):
        gap = sentence[toks[k - 1][1] : s] if k else ""
        breaks = in_q[k] or (stop[k] and t.lower() not in _CONNECT) or re.search(r"[,;:()\[\]\"“”]", gap)
        if breaks and cur:
            runs.append(cur)
            cur = []
        if not (in_q[k] or (stop[k] and t.lower() not in _CONNECT)):
            cur.append(k)
    if cur:
        runs.append(cur)
    spans = [(run[a], run[b]) for run in runs for a in range(len(run)) for b in range(a, min(len(run), a + max_len))
             if not stop[run[a]] and not stop[run[b]]]
    if not spans:
        return sentence.strip()
    kind = _question_type(question)
    anchors = [k for k, f in enumerate(in_q) if f]

    def is_date(w: str) -> bool:
        return bool(re.fullmatch(r"\d{3,4}s?|\d{1,2}(st|nd|rd|th)|\d{1,2}", w)) or w.lower() in _MONTHS

    def score(span: tuple[int, int]) -> float:
        a, b = span
        words = [toks[k][2] for k in range(a, b + 1) if not stop[k]]
        n = len(words)
        if kind == "date":
            hits = sum(is_date(w) or bool(_UNIT.match(w)) for w in words)
            s = 2.0 * any(is_date(w) for w in words) + 0.25 * hits - 0.4 * (n - hits)
        elif kind == "number":
            hits = sum(_is_number(w) or bool(_UNIT.match(w)) for w in words)
            s = 2.0 * any(_is_number(w) for w in words) + 0.25 * hits - 0.4 * (n - hits)
        elif kind in ("person", "place"):
            caps = sum(w[:1].isupper() for w in words)
            s = 1.5 * (caps > 0) + 0.25 * caps - 0.4 * (n - caps) - 0.5 * any(_is_number(w) for w in words)
        else:
            caps = sum(w[:1].isupper() for w in words)
            s = 0.3 * (caps > 0) + 0.1 * caps - 0.15 * max(0, n - 2)
        dist = min((min(abs(k - a), abs(k - b)) for k in anchors), default=5)
        return s - 0.1 * min(dist, 10) - 0.05 * n
    a, b = max(spans, key=score)
    return sentence[toks[a][0] : toks[b][1]].strip(" ,;:.")
