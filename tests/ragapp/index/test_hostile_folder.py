"""A folder of hostile files beside good ones: every bad file costs one line and counts as failed,
the good files are indexed and found, and the whole run takes seconds.

The folder is generated here: 100,000 nested <div>s, a parser that hangs, one that segfaults, one
that eats memory (test-only parsers for made-up extensions, ragapp.ingest.loaders.LOADERS), a
30 MB single-line file, a .docx zip bomb and a PDF past pypdf's array limit.
"""

from __future__ import annotations

import time

import hostile_files
import pytest
from conftest import sentences, write_files

from ragapp.ingest import loaders
from ragapp.retrieve.retriever import Retriever

TIMEOUT_S = 3
MEMORY_MB = 512


@pytest.fixture
def test_parsers(monkeypatch):
    for ext, fn in {".hang": hostile_files.hang, ".crash": hostile_files.crash,
                    ".eat": hostile_files.eat_memory, ".fine": hostile_files.fine}.items():
        monkeypatch.setitem(loaders.LOADERS, ext, fn)


def hostile_folder(tmp_path):
    return write_files(tmp_path / "docs", {
        "good/zebra.txt": "Zebra migration across the plains follows the rains.\n\n" + sentences(1),
        "good/notes.md": "# Kettle notes\n\nDescaling the kettle with citric acid every month.\n\n" + sentences(2),
        "good/page.html": "<html><body><p>The lighthouse keeper logs every passing ship.</p></body></html>",
        "deep.html": hostile_files.deep_html(100_000, "the bottom of the well"),
        "slow.hang": "never parsed",
        "boom.crash": "never parsed",
        "greedy.eat": "never parsed",
        "line.txt": b"Opening words before the noise. " + hostile_files.one_line(30_000_000, "ha"),
        "bomb.docx": hostile_files.docx_bomb(hostile_files.small_docx(), gigabytes=2),
        "big-array.pdf": hostile_files.big_array_pdf(150_000, "Quarterly figures for the big array report"),
    })  # fmt: skip


def top_source(retriever, query: str) -> str:
    return retriever.search(query, k=1)[0].source


def test_hostile_files_cost_one_line_each(tmp_path, make_index, fake_embedder, index_dir, test_parsers):
    folder = hostile_folder(tmp_path)
    index = make_index()
    lines: list[str] = []
    start = time.monotonic()
    report = index.sync(folder, embedder=fake_embedder, progress=False, log=lines.append, workers=2,
                        file_timeout=TIMEOUT_S, file_memory_mb=MEMORY_MB)
    seconds = time.monotonic() - start

    assert dict(report.failed) == {
        "slow.hang": f"{folder / 'slow.hang'}: took over {TIMEOUT_S} s to parse; skipped (raise --file-timeout)",
        "boom.crash": f"{folder / 'boom.crash'}: the parser crashed (signal 11, SIGSEGV); skipped",
        "greedy.eat": f"{folder / 'greedy.eat'}: ran out of memory while parsing (over {MEMORY_MB} MB); "
                      "skipped (raise --file-memory-mb)",
        "bomb.docx": f"{folder / 'bomb.docx'}: DOCX unzips to over 256 MB, likely a zip bomb; not parsed "
                     "(if it is a real document, save it again from Word or LibreOffice)",
    }
    assert report.added == 6 and report.summary().startswith("added 6, updated 0, removed 0, renamed 0, "
                                                              "unchanged 0, skipped 0 unsupported, failed 4;")
    assert [line for line in lines if "left out" not in line] == [reason for _, reason in report.failed]
    notes = dict(report.notes)  # (deep.html's text is "x" 100,000 times: repetitive too)
    assert sorted(notes) == ["deep.html", "line.txt"]
    assert notes["line.txt"].startswith(f"{folder / 'line.txt'}: left out 29,99")
    assert notes["line.txt"].endswith(" characters of repeated text or text without word breaks "
                                      "(their beginning is indexed)")
    assert seconds < 150, f"{seconds:.0f} s"

    chunks = {f["source"]: f["chunks"] for f in index.files()}
    assert chunks["line.txt"] <= 5  # 30 MB: ~180,000 chunks without the check; repeats stored once
    assert chunks["deep.html"] <= 20
    index.close()

    retriever = Retriever("docs", index_dir=index_dir, embedder=fake_embedder)
    assert top_source(retriever, "zebra migration plains rains") == "good/zebra.txt"
    assert top_source(retriever, "descaling kettle citric acid") == "good/notes.md"
    assert top_source(retriever, "lighthouse keeper passing ship") == "good/page.html"
    assert top_source(retriever, "quarterly figures big array report") == "big-array.pdf"
    assert top_source(retriever, "opening words before the noise") == "line.txt"
    assert top_source(retriever, "bottom of the well") == "deep.html"


def test_a_file_that_hangs_now_keeps_its_old_version(tmp_path, make_index, fake_embedder, index_dir, monkeypatch):
    folder = write_files(tmp_path / "docs", {"report.flaky": "Walrus colonies on the northern shore.",
                                             "other.txt": sentences(3)})
    monkeypatch.setitem(loaders.LOADERS, ".flaky", hostile_files.fine)
    index = make_index()
    assert index.sync(folder, embedder=fake_embedder, progress=False).added == 2

    (folder / "report.flaky").write_text("Walrus colonies, edited: this version hangs the parser.")
    monkeypatch.setitem(loaders.LOADERS, ".flaky", hostile_files.hang)
    report = index.sync(folder, embedder=fake_embedder, progress=False, file_timeout=TIMEOUT_S)
    assert report.failed == [("report.flaky", f"{folder / 'report.flaky'}: took over {TIMEOUT_S} s to parse; "
                                              "skipped (raise --file-timeout) (the version indexed before is kept)")]
    assert report.unchanged == 1
    index.close()
    retriever = Retriever("docs", index_dir=index_dir, embedder=fake_embedder)
    (hit,) = retriever.search("walrus colonies northern shore", k=1)
    assert hit.source == "report.flaky" and hit.text == "Walrus colonies on the northern shore."


def test_in_process_parsing_still_works(tmp_path, make_index, fake_embedder):
    """workers=0: no processes (nor limits), as before; the same results."""
    folder = write_files(tmp_path / "docs", {"a.txt": sentences(1), "b.html": "<p>" + sentences(2) + "</p>"})
    a, b = make_index("a"), make_index("b")
    a.sync(folder, embedder=fake_embedder, progress=False, workers=0)
    b.sync(folder, embedder=fake_embedder, progress=False, workers=2)
    rows = [sorted((paths, text, page, s, e) for _, paths, text, page, s, e in i.store.chunk_rows()) for i in (a, b)]
    assert rows[0] == rows[1] and rows[0]
