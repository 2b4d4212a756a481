"""Word-level text helpers shared by the gate, the citation check and the extractive answer.

Hand-written because they are a few regular expressions: sentence splitting that keeps character
offsets (for highlights) and keeps "[n]" markers with the sentence they close, which no library
sentence splitter does, and a content-term list (stopwords removed, Snowball-stemmed by PyStemmer,
which bm25s already brings in). Chinese, Japanese and Korean have no spaces: their runs are cut
into words by ragapp.ingest.language (jieba, or bigrams), and their full stops (。！？；) end
sentences with or without a space after them.
"""

from __future__ import annotations

import re
from functools import lru_cache

from ragapp.ingest.language import CJK_RUN, cjk_words, has_cjk, language, split_runs

STOPWORDS = frozenset(
    """a about above after again against all also am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further had has
    have having he her here hers herself him himself his how i if in into is it its itself just me more
    most my myself no nor not of off on once only or other our ours ourselves out over own same she
    should so some such than that the their theirs them themselves then there these they this those
    through to too under until up very was we were what when where which while who whom why will with
    would you your yours yourself yourselves s t don ll ve re d m o y one many much whose whom
    did does doing according name named called used use""".split()
)

_WORD = re.compile(r"\w+", re.UNICODE)
CITATION = re.compile(r"\[(\d+(?:\s*[,;]\s*\d+)*)\]")
# A sentence ends at . ! ? (optionally followed by quotes/brackets) before whitespace and an
# upper-case letter, digit, quote or bracket. Single capitals ("J. Smith") and a few common
# abbreviations are not sentence ends.
_END = re.compile(r"[.!?][\"'”’)\]]*(\s+)(?=[\"“'‘(\[]?[A-Z0-9])")
# CJK full stops end a sentence wherever they are (no space follows them in CJK text); closing
# quotes and brackets stay with the sentence.
_CJK_END = re.compile(r"[。！？；][」』”’）)\]]*(\s*)(?=\S)")
_ABBREV = re.compile(r"(?:\b[A-Z]|\b(?:Mr|Mrs|Ms|Dr|Prof|St|Jr|Sr|vs|etc|e\.g|i\.e|cf|No|Fig|approx|U\.S|Inc|Ltd|Co))\.$")


@lru_cache(maxsize=1)
def _stemmer():
    import Stemmer  # PyStemmer: tiny C extension, imported lazily only to keep import time flat

    return Stemmer.Stemmer("english")


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def terms(text: str) -> list[str]:
    """Content words, in order: Latin-script words stemmed (stopwords and citation numbers
    removed), CJK runs cut into words."""
    text = CITATION.sub(" ", text)
    if not has_cjk(text):
        return _latin_terms(text)
    lang = language(text)
    out: list[str] = []
    for is_cjk, piece in split_runs(text):
        out.extend(cjk_words(piece, lang) if is_cjk else _latin_terms(piece))
    return out


def _latin_terms(text: str) -> list[str]:
    kept = [w for w in words(text) if w not in STOPWORDS]
    return _stemmer().stemWords(kept) if kept else []


def term_set(text: str) -> frozenset[str]:
    return frozenset(terms(text))


def coverage(needles: frozenset[str] | set[str], haystack: frozenset[str] | set[str]) -> float:
    """Share of `needles` found in `haystack` (1.0 when there are no needles)."""
    if not needles:
        return 1.0
    return len(needles & haystack) / len(needles)


_RULE = re.compile(r"[ \t]*[=\-_*~#]{3,}[ \t]*")  # ===== or ----- under a heading, *** between sections
_ITEM = re.compile(r"[ \t]*(?:[-*•+]|\d{1,3}[.)])[ \t]")  # a list item
_HEADING = re.compile(r"[ \t]*#{1,6}[ \t]")


def _blocks(text: str) -> list[tuple[int, int]]:
    """Spans that no sentence crosses: paragraphs (blank lines), list items and headings; rule
    lines are dropped. Wrapped lines of one paragraph stay together."""
    blocks: list[tuple[int, int]] = []
    start = None
    pos = 0
    for line in text.splitlines(keepends=True):
        s, e = pos, pos + len(line.rstrip("\r\n"))
        pos += len(line)
        body = text[s:e]
        if not body.strip() or _RULE.fullmatch(body):
            if start is not None:
                blocks.append((start, s))
            start = None
            continue
        if start is not None and (_ITEM.match(body) or _HEADING.match(body)):
            blocks.append((start, s))
            start = None
        if start is None:
            start = s
        if _HEADING.match(body):
            blocks.append((start, e))
            start = None
    if start is not None:
        blocks.append((start, len(text)))
    return blocks


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Character spans of the sentences of `text`, whitespace-trimmed, in order.

    Citation markers written after the full stop ("... in 1066. [2] Later ...") stay with the
    sentence they follow, because that is the sentence they cite. No sentence crosses a blank
    line, a list item or a heading.
    """
    spans: list[tuple[int, int]] = []
    for b_start, b_end in _blocks(text):
        start = b_start
        ends = list(_END.finditer(text, b_start, b_end))
        if CJK_RUN.search(text, b_start, b_end):
            ends = sorted(ends + list(_CJK_END.finditer(text, b_start, b_end)), key=lambda m: m.start())
        for m in ends:
            end = m.start(1)  # the sentence keeps its full stop and closing quote
            if end <= start or (m.re is _END and _ABBREV.search(text[start:end].rstrip("\"'”’)]"))):
                continue
            spans.append((start, end))
            start = m.end()
        spans.append((start, b_end))
    # move leading "[n]" markers of a sentence to the end of the previous one
    fixed: list[tuple[int, int]] = []
    for s, e in spans:
        lead = re.match(r"(?:\s*\[\d+(?:\s*[,;]\s*\d+)*\])+", text[s:e])
        if lead and fixed:
            ps, _ = fixed[-1]
            fixed[-1] = (ps, s + lead.end())
            s += lead.end()
        fixed.append((s, e))
    out = []
    for s, e in fixed:
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if e > s:
            out.append((s, e))
    return out


def sentences(text: str) -> list[str]:
    return [text[s:e] for s, e in split_sentences(text)]
