"""Documents → Chunks short enough for the embedder, measured in the embedder's own tokens.

The splitting is langchain's RecursiveCharacterTextSplitter (paragraphs, then lines, sentences,
clauses, words, characters; its merge step packs pieces up to the chunk size with overlap), with
a token length function as in `from_huggingface_tokenizer`. Three things it does not do, added:

* character offsets: `doc.text[chunk.start:chunk.end] == chunk.text`, so a citation points at the
  exact span of its page. Every piece carries its offset through the recursion (`_Span`).
* a hard bound: the merge step adds up the token counts of pieces, which is not always the count
  of the joined text. Every chunk is recounted, with the special tokens the embedder adds ([CLS]
  and [SEP] for BERT), and any chunk over the limit is cut further, so the embedder never
  silently truncates one (MiniLM reads at most 256 word pieces).
* speed: counts come from a copy of the Rust tokenizer, one batched call per recursion level,
  cached per piece (the merge step measures each piece up to three times).

A splitter made with `prose_only=True` (the indexer's) first leaves out what is not prose, except
its beginning (ragapp.ingest.degenerate): long runs without a word break, and stretches that
repeat themselves; `left_out` counts the characters it left out.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from langchain_text_splitters import RecursiveCharacterTextSplitter

from ragapp.config import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_TOKENS
from ragapp.errors import InvalidInput
from ragapp.ingest.degenerate import kept_regions
from ragapp.types import Chunk, Document

# Paragraphs, lines, sentences (Latin and CJK punctuation), clauses, words, characters. Each
# separator stays at the end of the piece before it, so a sentence keeps its full stop.
SEPARATORS = ["\n\n", "\n", ". ", "? ", "! ", "。", "？", "！", "; ", "；", ", ", "，", "、", " ", ""]

# English averages about 4.5 characters a word piece; text at over 10 is rare (long [UNK] words).
MAX_CHARS_PER_TOKEN = 10

# Below this many content tokens a chunk carries too little meaning to retrieve.
MIN_CONTENT_TOKENS = 8


class TokenCounter:
    """len(tokens) of a text without special tokens, batched and cached."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.n_special = int(tokenizer.num_special_tokens_to_add(pair=False))
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self._fast = None
        if backend is not None:
            from tokenizers import Tokenizer

            # A copy: tokenizer.json files often switch on truncation and padding (MiniLM's pads and
            # truncates to 128), which would cap every count; the embedder's own object stays as is.
            self._fast = Tokenizer.from_str(backend.to_str())
            self._fast.no_truncation()
            self._fast.no_padding()
        self._cache: dict[str, int] = {}

    def __call__(self, text: str) -> int:
        n = self._cache.get(text)
        if n is None:
            n = self._cache[text] = self._count([text])[0]
        return n

    def prefill(self, texts: Iterable[str]) -> None:
        missing = list({t for t in texts if t not in self._cache})
        if missing:
            self._cache.update(zip(missing, self._count(missing), strict=True))

    def count(self, texts: list[str]) -> list[int]:
        """Uncached batch count (for whole chunks, which are rarely measured twice)."""
        return self._count(texts) if texts else []

    def clear(self) -> None:
        self._cache.clear()

    def _count(self, texts: list[str]) -> list[int]:
        if hasattr(self.tokenizer, "count_tokens"):  # an engine's own counter (ragapp.ingest.e5)
            return self.tokenizer.count_tokens(texts)
        if self._fast is not None:
            # encode_batch_fast (tokenizers >= 0.20) skips the character offsets we do not use.
            encode = getattr(self._fast, "encode_batch_fast", self._fast.encode_batch)
            return [len(e.ids) for e in encode(texts, add_special_tokens=False)]
        return [len(self.tokenizer.tokenize(t)) for t in texts]


class TokenSplitter(RecursiveCharacterTextSplitter):
    """RecursiveCharacterTextSplitter measured in tokens, with a hard bound and offsets.

    `budget` is the number of content tokens a chunk may hold: the limit minus the special tokens.
    `split_text` keeps langchain's interface (list of strings); `split_spans` gives offsets too.
    """

    def __init__(self, counter: TokenCounter, limit: int, overlap: int, prose_only: bool = False):
        self.counter = counter
        self.limit = limit
        self.budget = limit - counter.n_special
        self.prose_only = prose_only
        self.left_out = 0  # characters left out as not prose, over every text split so far
        super().__init__(
            separators=SEPARATORS,
            keep_separator="end",
            chunk_size=self.budget,
            chunk_overlap=overlap,
            length_function=counter,
            strip_whitespace=True,
        )

    def split_text(self, text: str) -> list[str]:
        return [text[s:e] for s, e, _ in self.split_spans(text)]

    def split_spans(self, text: str) -> list[tuple[int, int, int]]:
        """[(start, end, n_tokens with special tokens)] in document order; text[start:end] is a chunk."""
        try:
            out: list[tuple[int, int, int]] = []
            if not text.strip():
                return out
            regions, left_out = kept_regions(text) if self.prose_only else ([(0, len(text))], 0)
            self.left_out += left_out
            pieces = []
            for start, end in regions:
                pieces.extend(self._split_recursive(_Span(text[start:end], start), self._separators))
            pieces = [p for p in pieces if p.strip()]
            counts = self.counter.count(pieces)
            for piece, n in zip(pieces, counts, strict=True):
                s = piece.start
                if n <= self.budget:
                    out.append((s, s + len(piece), n + self.counter.n_special))
                else:
                    out.extend((s + a, s + b, m + self.counter.n_special) for a, b, m in self._hard_split(piece))
            return out
        finally:
            self.counter.clear()  # the cache is per text: keeps memory flat over a long run

    def _split_recursive(self, text: _Span, separators: list[str]) -> list[_Span]:
        """RecursiveCharacterTextSplitter._split_text, keeping each piece's offset.

        langchain's version returns bare strings, and finding them in the text afterwards is
        ambiguous wherever text repeats; here every piece is a str that knows where it starts, and
        langchain's own _merge_splits (with _join_docs below) does the merging and the overlap.
        """
        separator, deeper = "", []
        for i, sep in enumerate(separators):
            if sep == "" or sep in text:
                separator, deeper = sep, separators[i + 1 :]
                break
        splits = _split_keep_end(text, separator)
        # A piece this long is split further without being counted: it is almost surely over the
        # budget, and counting whole articles at every level would tokenize the text many times.
        # (Were it not, its sub-pieces merge back up to the chunk size: only the cut points move.)
        cap = self._chunk_size * MAX_CHARS_PER_TOKEN
        self.counter.prefill(p for p in splits if len(p) <= cap)  # one batched call, not one per piece
        out: list[_Span] = []
        good: list[_Span] = []
        for piece in splits:
            if len(piece) <= cap and self.counter(piece) < self._chunk_size:
                good.append(piece)
                continue
            if good:
                out.extend(self._merge_splits(good, ""))
                good = []
            out.extend(self._split_recursive(piece, deeper) if deeper else [piece])
        if good:
            out.extend(self._merge_splits(good, ""))
        return out

    def _join_docs(self, docs: list[str], separator: str) -> _Span | None:
        # Called by langchain's _merge_splits with consecutive, contiguous pieces.
        text = separator.join(docs)
        stripped = text.strip()
        if not stripped:
            return None
        return _Span(stripped, docs[0].start + len(text) - len(text.lstrip()))

    def _hard_split(self, text: str) -> list[tuple[int, int, int]]:
        """Cut a piece the splitter left too long into consecutive spans within the budget.

        Binary search on the prefix length, counting real tokens; only prefixes that were counted
        within the budget are accepted, so the bound holds even where counts are not monotone
        (WordPiece turns any word over 100 characters into a single [UNK]). A cut prefers the
        last whitespace in the second half of the span, so words stay whole.
        """
        out: list[tuple[int, int, int]] = []
        pos, n = 0, len(text.rstrip())
        while pos < n:
            while pos < n and text[pos].isspace():
                pos += 1
            if pos == n:
                break
            rest = text[pos:n]
            total = self.counter(rest)
            if total <= self.budget:
                out.append((pos, n, total))
                break
            lo, hi = 1, len(rest) - 1
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if self.counter(rest[:mid]) <= self.budget:
                    lo = mid
                else:
                    hi = mid - 1
            cut = lo
            space = max(rest.rfind(" ", 0, cut + 1), rest.rfind("\n", 0, cut + 1))
            if space > cut // 2 and self.counter(rest[:space].rstrip()) <= self.budget:
                cut = space
            piece = rest[:cut].rstrip()
            out.append((pos, pos + len(piece), self.counter(piece)))
            pos += cut
        return out


class _Span(str):
    """A piece of a document's text that remembers its offset in it."""

    start: int

    def __new__(cls, value: str, start: int) -> _Span:
        obj = super().__new__(cls, value)
        obj.start = start
        return obj


def _split_keep_end(text: _Span, separator: str) -> list[_Span]:
    """Pieces of text, each ending with its separator (keep_separator="end"); "" splits characters."""
    base = text.start
    if not separator:
        return [_Span(ch, base + i) for i, ch in enumerate(text)]
    pieces, pos = [], 0
    while (found := text.find(separator, pos)) >= 0:
        end = found + len(separator)
        pieces.append(_Span(text[pos:end], base + pos))
        pos = end
    if pos < len(text):
        pieces.append(_Span(text[pos:], base + pos))
    return pieces


def chunk_limit(tokenizer: Any, chunk_tokens: int, max_tokens: int | None) -> int:
    """The most tokens a chunk may have, special tokens included."""
    limits = [chunk_tokens]
    if max_tokens is not None:
        limits.append(max_tokens)
    model_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(model_max, int) and 0 < model_max < 1_000_000:  # transformers uses 1e30 for "none"
        limits.append(model_max)
    return min(limits)


def make_splitter(
    tokenizer: Any,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    overlap: int = DEFAULT_CHUNK_OVERLAP,
    max_tokens: int | None = None,
    prose_only: bool = False,
) -> TokenSplitter:
    """A splitter whose chunks hold at most min(chunk_tokens, max_tokens) tokens, specials included;
    `prose_only`: leave out all but the beginning of what is not prose (see the module docstring)."""
    counter = TokenCounter(tokenizer)
    limit = chunk_limit(tokenizer, chunk_tokens, max_tokens)
    budget = limit - counter.n_special
    if budget < MIN_CONTENT_TOKENS:
        raise InvalidInput(
            f"chunk size {limit} tokens leaves {budget} for text after {counter.n_special} special "
            f"tokens; use --chunk-tokens {MIN_CONTENT_TOKENS + counter.n_special} or more"
        )
    if overlap < 0 or overlap >= budget:
        raise InvalidInput(
            f"chunk overlap {overlap} must be at least 0 and less than the {budget} text tokens of a "
            f"{limit}-token chunk; lower --overlap or raise --chunk-tokens"
        )
    return TokenSplitter(counter, limit, overlap, prose_only=prose_only)


def chunk_documents(
    docs: list[Document],
    tokenizer: Any,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    overlap: int = DEFAULT_CHUNK_OVERLAP,
    max_tokens: int | None = None,
    splitter: TokenSplitter | None = None,
) -> list[Chunk]:
    """Chunks of every document in order; each keeps its source, page and offsets into doc.text."""
    splitter = splitter or make_splitter(tokenizer, chunk_tokens, overlap, max_tokens)
    chunks: list[Chunk] = []
    for doc in docs:
        for start, end, n in splitter.split_spans(doc.text):
            chunks.append(Chunk(doc.text[start:end], doc.source, doc.page, start, end, n))
    return chunks
