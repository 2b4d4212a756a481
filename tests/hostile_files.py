"""Hostile files, generated (no binaries in git), and parsers that misbehave on purpose.

The parsers are for made-up extensions, registered by a test in ragapp.ingest.loaders.LOADERS
(monkeypatch.setitem); the parser processes of ragapp.ingest.parse_pool get the same table and
import this module by name (the tests' folder is on the sys.path they inherit).
"""

from __future__ import annotations

import io
import os
import random
import signal
import struct
import time
import zipfile
import zlib
from pathlib import Path

from ragapp.types import Document

# ---------------------------------------------------------------------------------------------
# Parsers that misbehave: (path, bytes, source) -> [Document], like the real ones


def hang(path: Path, data: bytes, source: str) -> list[Document]:
    """Never returns (sleeps, so a loaded test machine loses no CPU to it)."""
    time.sleep(3600)
    return []


def crash(path: Path, data: bytes, source: str) -> list[Document]:
    """A segfault, as a C parser would have."""
    os.kill(os.getpid(), signal.SIGSEGV)
    time.sleep(60)
    return []


def eat_memory(path: Path, data: bytes, source: str) -> list[Document]:
    """Allocates 64 MB at a time, touching every page, until allocation fails."""
    hoard = []
    while True:
        hoard.append(bytearray(64 * 2**20))


def fine(path: Path, data: bytes, source: str) -> list[Document]:
    """A well-behaved parser for the same kind of made-up file."""
    return [Document(data.decode(), source, None, {"format": "test"})]


# ---------------------------------------------------------------------------------------------
# Files


def deep_html(levels: int = 100_000, text: str = "deep text") -> bytes:
    return ("<html><head><title>Deep</title></head><body>" + "<div>x " * levels + text + "</div>" * levels
            + "</body></html>").encode()


def wide_html(paragraphs: int = 100_000) -> bytes:
    return ("<html><body>" + "".join(f"<p>para {i}</p>" for i in range(paragraphs)) + "</body></html>").encode()


def one_line(size: int = 30_000_000, kind: str = "a") -> bytes:
    """A single line of `size` bytes: "a" (one letter), "ha" ("ha ha ha"), "base64" (random, no spaces)."""
    if kind == "a":
        return b"a" * size
    if kind == "ha":
        return (b"ha " * (size // 3 + 1))[:size]
    if kind == "base64":
        import base64

        return base64.b64encode(random.Random(0).randbytes(size * 3 // 4 + 3))[:size]
    raise ValueError(kind)


def big_array_pdf(elements: int = 150_000, text: str = "Hello from a page with a big array") -> bytes:
    """A valid one-page PDF whose page dictionary holds an array of `elements` numbers: over pypdf's
    limit of 100,000 (pypdf raises LimitReachedError), fine for PDFium. Written as raw PDF syntax."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> /Numbers [" + b" ".join([b"0"] * elements) + b"] >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    return _pdf(objects)


def many_pages_pdf(pages: int = 2_000) -> bytes:
    """A valid PDF of `pages` pages, each with one line of text naming its number."""
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(pages)).encode()
    font = 3 + 2 * pages
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [" + kids + b"] /Count %d >>" % pages]
    for i in range(pages):
        stream = f"BT /F1 12 Tf 72 720 Td (Page number {i + 1} of the long report) Tj ET".encode()
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
                       b"/Resources << /Font << /F1 %d 0 R >> >> >>" % (4 + 2 * i, font))
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    return _pdf(objects)


def _pdf(objects: list[bytes]) -> bytes:
    out = io.BytesIO()
    out.write(b"%PDF-1.7\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    out.writelines(b"%010d 00000 n \n" % offset for offset in offsets)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref))
    return out.getvalue()


def small_docx(text: str = "A short real document.") -> bytes:
    import docx

    document = docx.Document()
    document.add_paragraph(text)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def docx_bomb(template: bytes, gigabytes: int = 2) -> bytes:
    """`template` (a real .docx) with word/document.xml replaced by one that inflates to
    `gigabytes` GB of spaces after a valid start: a couple of megabytes on disk.

    Deflate with a full flush after each block starts the next block afresh, so the compressed
    bytes of one 16 MB block of spaces can be repeated: the bomb is built in a fraction of a second
    (plus its CRC) instead of compressing gigabytes."""
    head = (b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<w:document xmlns:w='
            b'"http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>')
    block = b" " * (16 * 2**20)
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = packer.compress(head) + packer.flush(zlib.Z_FULL_FLUSH)
    repeat = packer.compress(block) + packer.flush(zlib.Z_FULL_FLUSH)
    repeats = gigabytes * 64
    raw = first + repeat * repeats + packer.flush()
    size = len(head) + len(block) * repeats
    crc = zlib.crc32(head)
    for _ in range(repeats):
        crc = zlib.crc32(block, crc)
    members = {}
    with zipfile.ZipFile(io.BytesIO(template)) as z:
        for name in z.namelist():
            if name != "word/document.xml":
                members[name] = z.read(name)
    return _zip(members, "word/document.xml", raw, size, crc)


def _zip(members: dict[str, bytes], raw_name: str, raw: bytes, raw_size: int, raw_crc: int) -> bytes:
    """A zip of `members` (stored) plus one member given as raw deflate data (sizes under 4 GB)."""
    out = io.BytesIO()
    central = []
    entries = [(n, d, 0, len(d), len(d), zlib.crc32(d)) for n, d in members.items()]
    entries.append((raw_name, raw, 8, len(raw), raw_size, raw_crc))
    for name, data, method, csize, usize, crc in entries:
        offset = out.tell()
        encoded = name.encode()
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, csize, usize, len(encoded), 0))
        out.write(encoded)
        out.write(data)
        central.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21, crc, csize, usize,
                                   len(encoded), 0, 0, 0, 0, 0, offset) + encoded)
    start = out.tell()
    for record in central:
        out.write(record)
    size = out.tell() - start
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(central), len(central), size, start, 0))
    return out.getvalue()
