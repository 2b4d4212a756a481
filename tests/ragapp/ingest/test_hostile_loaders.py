"""Loaders stay linear on deep, wide and long inputs; zip bombs are refused before anything inflates;
valid PDFs past pypdf's own limits are read by PDFium. Every file is generated here.

Time bounds are generous (a busy 2-core machine); what they catch is quadratic behaviour, which
took minutes (100,000 nested <div>s: 10,000 took 4.6 s, 30,000 took 84 s before).
"""

from __future__ import annotations

import io
import time
import zipfile

import hostile_files
import pytest
from test_loaders import make_docx, make_pdf

from ragapp.errors import LoaderError
from ragapp.ingest import loaders
from ragapp.ingest.loaders import load_file
from ragapp.ingest.unzip_guard import TooLargeUnzipped, check_unzipped_size


def timed_load(path):
    start = time.monotonic()
    docs = load_file(path)
    return docs, time.monotonic() - start


def test_100000_nested_divs_load_in_seconds(tmp_path):
    path = tmp_path / "deep.html"
    path.write_bytes(hostile_files.deep_html(100_000, "the bottom of the well"))
    (doc,), seconds = timed_load(path)
    assert seconds < 15
    assert doc.text.endswith("x the bottom of the well")  # nothing below libxml2's tree depth limit is lost
    assert doc.text.count("x") == 100_000 and doc.metadata["title"] == "Deep"


def test_100000_paragraphs_load_in_seconds(tmp_path):
    path = tmp_path / "wide.html"
    path.write_bytes(hostile_files.wide_html(100_000))
    (doc,), seconds = timed_load(path)
    assert seconds < 15
    assert doc.text.startswith("para 0\n\npara 1\n\n") and doc.text.endswith("para 99999")


def test_a_30_mb_line_of_html_and_of_text(tmp_path):
    html = tmp_path / "line.html"
    html.write_bytes(b"<p>" + hostile_files.one_line(30_000_000, "ha") + b"</p>")
    (doc,), seconds = timed_load(html)
    assert seconds < 60 and len(doc.text) > 29_000_000  # libxml2's 10 MB cap on a text node is lifted
    txt = tmp_path / "line.txt"
    txt.write_bytes(hostile_files.one_line(30_000_000, "a"))
    (doc,), seconds = timed_load(txt)
    assert seconds < 30 and len(doc.text) == 30_000_000


def test_markdown_heading_of_a_million_hashes_is_linear(tmp_path):
    path = tmp_path / "hashes.md"
    path.write_text("# a" + " #" * 1_000_000 + "b\n\nbody text")  # a lazy heading regex backtracked on this
    (doc,), seconds = timed_load(path)
    assert seconds < 10 and doc.metadata["title"].startswith("a # #")


def test_2000_pages(tmp_path):
    path = tmp_path / "long.pdf"
    path.write_bytes(hostile_files.many_pages_pdf(2_000))
    docs, seconds = timed_load(path)
    assert seconds < 60
    assert [d.page for d in docs] == list(range(1, 2_001))
    assert docs[-1].text == "Page number 2000 of the long report"


def test_a_pdf_past_pypdfs_array_limit_is_read_by_pdfium(tmp_path):
    from pypdf import PdfReader
    from pypdf.errors import LimitReachedError

    data = hostile_files.big_array_pdf(150_000, "Hello from a page with a big array")
    with pytest.raises(LimitReachedError, match="maximum array element count"):  # the case this is about
        PdfReader(io.BytesIO(data)).pages[0].extract_text()
    path = tmp_path / "big-array.pdf"
    path.write_bytes(data)
    (doc,) = load_file(path)
    assert doc.text.strip() == "Hello from a page with a big array" and doc.page == 1


def test_pdfium_reads_the_pages_pypdf_cannot(tmp_path, monkeypatch):
    """One page that pypdf fails on is taken from PDFium; the others stay pypdf's."""
    from pypdf import PageObject

    path = make_pdf(tmp_path / "three.pdf", ["First page text.", "Second page text.", "Third page text."])
    real = PageObject.extract_text
    calls = []

    def fail_on_second(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise ValueError("pypdf trips on this page")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(PageObject, "extract_text", fail_on_second)
    docs = load_file(path)
    assert [(d.page, d.text.strip()) for d in docs] == [(1, "First page text."), (2, "Second page text."),
                                                      (3, "Third page text.")]


def test_corrupt_is_said_only_when_no_parser_can_open_the_pdf(tmp_path):
    path = tmp_path / "noise.pdf"
    path.write_bytes(b"%PDF-1.7\n" + bytes(range(256)) * 20)
    with pytest.raises(LoaderError) as exc:
        load_file(path)
    assert str(exc.value) == f"{path}: {loaders.PDF_CORRUPT}"


def test_a_docx_zip_bomb_is_refused_by_its_declared_size(tmp_path):
    bomb = hostile_files.docx_bomb(make_docx(tmp_path / "real.docx").read_bytes(), gigabytes=2)
    assert len(bomb) < 4 * 2**20 and zipfile.ZipFile(io.BytesIO(bomb)).getinfo("word/document.xml").file_size > 2**31
    path = tmp_path / "bomb.docx"
    path.write_bytes(bomb)
    start = time.monotonic()
    with pytest.raises(LoaderError) as exc:
        load_file(path)
    assert time.monotonic() - start < 10
    assert str(exc.value) == (f"{path}: DOCX unzips to over 256 MB, likely a zip bomb; not parsed "
                              "(if it is a real document, save it again from Word or LibreOffice)")


def test_the_inflated_bytes_are_counted_too(tmp_path):
    """The directory's sizes are checked first; the bytes actually inflated are counted as well, a
    megabyte at a time, so that nothing is held whole."""
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("a.xml", b" " * 3_000_000)
        z.writestr("b.xml", b" " * 3_000_000)
    check_unzipped_size(data.getvalue(), 6_000_000)
    with pytest.raises(TooLargeUnzipped):
        check_unzipped_size(data.getvalue(), 5_999_999)


def test_a_zip_whose_directory_lies_is_corrupt_not_inflated(tmp_path):
    """A directory that declares less than the data holds: zipfile stops at the declared size and
    the CRC check fails, so the file is corrupt (and nothing past the declared size is inflated)."""
    bomb = hostile_files.docx_bomb(make_docx(tmp_path / "real.docx").read_bytes(), gigabytes=1)
    size = zipfile.ZipFile(io.BytesIO(bomb)).getinfo("word/document.xml").file_size.to_bytes(4, "little")
    assert bomb.count(size) == 2  # in the local header and in the directory
    bomb = bomb.replace(size, (1000).to_bytes(4, "little"))
    path = tmp_path / "liar.docx"
    path.write_bytes(bomb)
    with pytest.raises(LoaderError) as exc:
        load_file(path)
    assert str(exc.value) == f"{path}: {loaders.DOCX_CORRUPT}"
