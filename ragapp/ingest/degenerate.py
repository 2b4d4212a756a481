"""Stretches of a text that are not prose, found before chunking so that the indexer can leave them out.

Two kinds, each found in one linear pass:

* a run of more than MAX_UNBROKEN characters with no word break (whitespace, or the CJK
  punctuation the splitter cuts at): base64, hex, a binary file read as text. The splitter falls
  back to one piece per character for such a run, so a 30 MB one-line file took minutes and
  gigabytes to chunk, into 180,000 chunks of noise;
* a stretch that repeats itself: blocks of BLOCK characters that zlib shrinks at least MIN_RATIO
  times. Prose compresses 2-4 times, source code, logs, JSON and tables under 15 (measured on
  this repository, its virtualenv and /var/log: the most was 29, a word list); "ha ha ha ...",
  one sentence or paragraph repeated, or a column of zeros compress 60-170 times.

Each such stretch keeps its first KEEP characters, so the index still shows (and a search still
finds) what was there, and the rest is left out: the stretch is indexed once, however long it is.
What is left out is reported, by the indexer, as a note on the file (not a failure).
"""

from __future__ import annotations

import re
import zlib

MAX_UNBROKEN = 2_000  # English words are under 30 characters, URLs almost always under 2,000
BLOCK = 16_384  # characters compressed together; long enough to see a repeated paragraph
MIN_RATIO = 40.0
KEEP = 2_000  # characters of a stretch that are kept (about 10 chunks of noise at most)
SNAP = 200  # a cut moves this far at most to fall between two words
SUB, WINDOW, SUB_RATIO = 64, 4_096, 8.0  # where a stretch ends: see _stretch_end

# Word breaks: whitespace, and the splitter's separators that need no space after them
# (ragapp.ingest.chunking.SEPARATORS).
_BREAK = r"\s。？！；，、"
# The look-behind starts a match only at the beginning of a run, so each run is scanned once.
_UNBROKEN = re.compile(rf"(?<![^{_BREAK}])[^{_BREAK}]{{{MAX_UNBROKEN + 1},}}")
_SPACE = re.compile(r"\s")


def degenerate_spans(text: str) -> list[tuple[int, int]]:
    """[(start, end)] of the text to leave out, sorted and apart; empty for ordinary text."""
    spans = [(m.start() + KEEP, m.end()) for m in _UNBROKEN.finditer(text)]
    run = last = None  # first and last repetitive block of the current stretch
    for i in range(0, len(text) + BLOCK, BLOCK):
        block = text[i : i + BLOCK]
        if len(block) >= BLOCK // 4 and _ratio(block) >= MIN_RATIO:
            run = i if run is None else run
            last = i
        elif run is not None:  # the stretch ends in its last block or in this one: where, piece by piece
            end = _stretch_end(text, last, i + BLOCK)
            spans.append((_snap_forward(text, run + KEEP), _snap_back(text, end) if end < len(text) else end))
            run = None
    return _merge([(a, b) for a, b in spans if b > a])


def kept_regions(text: str) -> tuple[list[tuple[int, int]], int]:
    """([(start, end)] of the text to chunk, characters left out)."""
    regions, pos, left_out = [], 0, 0
    for start, end in degenerate_spans(text):
        if start > pos:
            regions.append((pos, start))
        left_out += end - start
        pos = end
    if pos < len(text):
        regions.append((pos, len(text)))
    return regions, left_out


def _ratio(block: str) -> float:
    raw = block.encode("utf-8", "surrogatepass")
    return len(raw) / len(zlib.compress(raw, 1))  # level 1: fast, and repetition still shows


def _stretch_end(text: str, pos: int, limit: int) -> int:
    """Where the repetition going on at `pos` stops: the first SUB-character piece before `limit`
    that does not repeat the WINDOW characters before it (zlib, with those as its dictionary,
    shrinks a repeat some 20-50 times and prose 1.5-3 times)."""
    limit = min(limit, len(text))
    while pos < limit:
        end = min(pos + SUB, limit)
        before = text[max(0, pos - WINDOW) : pos].encode("utf-8", "surrogatepass")
        piece = text[pos:end].encode("utf-8", "surrogatepass")
        packer = zlib.compressobj(1, zlib.DEFLATED, -15, **({"zdict": before} if before else {}))
        if len(piece) < SUB_RATIO * len(packer.compress(piece) + packer.flush()):
            return pos
        pos = end
    return limit


def _snap_forward(text: str, pos: int) -> int:
    """pos, moved forward to the next word break if one is near: the kept text before ends with a whole word."""
    if pos >= len(text):
        return len(text)
    m = _SPACE.search(text, pos, pos + SNAP)
    return m.start() if m else pos


def _snap_back(text: str, pos: int) -> int:
    """pos, moved back to the last word break if one is near: the kept text after starts with a whole word."""
    breaks = list(_SPACE.finditer(text, max(0, pos - SNAP), pos))
    return breaks[-1].start() if breaks else pos


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out
