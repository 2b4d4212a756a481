"""Text that is not prose (no word breaks for thousands of characters, or one short run repeated)
is recognised before chunking: a 30 MB single line becomes a handful of chunks in about a second,
instead of ~180,000 chunks after minutes and gigabytes of memory."""

from __future__ import annotations

import base64
import random
import time
from pathlib import Path

import hostile_files
import pytest
from conftest import sentences
from test_chunking import random_text

from ragapp.ingest import degenerate
from ragapp.ingest.chunking import chunk_documents, make_splitter
from ragapp.ingest.loaders import load_file, scan_folder
from ragapp.types import Document

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def splitter(tokenizer):
    return make_splitter(tokenizer, 200, 30, max_tokens=256, prose_only=True)


@pytest.mark.parametrize("kind", ["a", "ha", "base64"])
def test_a_30_mb_single_line_gives_a_handful_of_chunks_fast(splitter, kind):
    text = hostile_files.one_line(30_000_000, kind).decode()
    doc = Document(text, "line.txt")
    before = splitter.left_out
    start = time.monotonic()
    chunks = chunk_documents([doc], None, splitter=splitter)
    seconds = time.monotonic() - start
    assert seconds < 30, f"{seconds:.1f} s"
    assert 1 <= len(chunks) <= 20
    assert all(text[c.start : c.end] == c.text for c in chunks)
    assert chunks[0].start == 0  # the beginning is kept: the index shows what was there
    assert splitter.left_out - before > 29_990_000


def test_prose_is_left_whole():
    for path in scan_folder(ROOT / "corpora" / "sample")[0]:
        for doc in load_file(path):
            assert degenerate.degenerate_spans(doc.text) == [], path.name
    rng = random.Random(7)
    texts = {
        "prose": "\n".join(sentences(seed, 40) for seed in range(100)),
        "table of numbers": "\n".join(" | ".join(f"{rng.uniform(-1e6, 1e6):.4f}" for _ in range(6)) for _ in range(3_000)),
        "CJK": "".join(rng.choice("日本語の検索と回答。中文文本，测试！한국어") for _ in range(100_000)),
        "source code": "\n".join(p.read_text() for p in sorted((ROOT / "ragapp").rglob("*.py"))),
    }
    for name, text in texts.items():
        assert degenerate.degenerate_spans(text) == [], name


def test_repetition_between_prose_is_cut_to_its_beginning():
    prose = "\n".join(sentences(seed, 40) for seed in range(10))
    noise = "na " * 200_000
    text = prose + "\n\n" + noise + "The end of the story."
    ((start, end),) = degenerate.degenerate_spans(text)
    noise_at = len(prose) + 2
    assert noise_at + degenerate.KEEP <= start <= noise_at + degenerate.BLOCK + degenerate.KEEP + degenerate.SNAP
    assert text[start].isspace()  # the kept part ends with whole words
    # the prose after it is kept whole, with at most a few repeats before it
    assert text[end:].endswith(" The end of the story.") and len(text) - end < degenerate.SUB + degenerate.SNAP + 22


def test_an_unbroken_run_keeps_its_first_characters():
    run = base64.b64encode(random.Random(1).randbytes(15_000)).decode()  # 20,000 characters, no repeats
    text = "Some words before. " + run + " and some words after."
    assert degenerate.degenerate_spans(text) == [(19 + degenerate.KEEP, 19 + len(run))]


def test_the_plain_splitter_keeps_everything(tokenizer):
    """Only the indexer's splitter (prose_only=True) leaves text out; chunk_documents by default does not."""
    text = random_text(random.Random(5)) + " " + "z" * 5_000
    plain = make_splitter(tokenizer, 200, 30, max_tokens=256)
    assert plain.split_spans(text)[-1][1] == len(text) and plain.left_out == 0
