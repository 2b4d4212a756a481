"""Files → `Document`s: PDF (one per page), plain text and Markdown, HTML (visible text), DOCX.

Every problem with one file becomes a `LoaderError` whose message is one line, `PATH: reason; fix`,
so that indexing reports it and goes on with the next file. The reasons are the module-level
message constants below; the README's table of error messages is made from them.
"""

from __future__ import annotations

import codecs
import io
import logging
import os
import re
import stat
from pathlib import Path

from ragapp.config import DEFAULT_MAX_FILE_BYTES, SUPPORTED_EXTENSIONS
from ragapp.errors import InvalidInput, LoaderError
from ragapp.types import Document

log = logging.getLogger(__name__)

TEXT_EXTENSIONS = (".txt", ".md", ".markdown")
HTML_EXTENSIONS = (".html", ".htm")

# The reasons, one place, so that the messages stay consistent and the tests check them exactly.
UNSUPPORTED = "unsupported file type {ext!r}; supported: " + " ".join(SUPPORTED_EXTENSIONS)
NOT_FOUND = "file not found"
NOT_A_FILE = "not a regular file"
CANNOT_READ = "cannot be read ({reason})"
PERMISSION = "permission denied; make the file readable (chmod a+r) or move it out of the folder"
TOO_LARGE = "file is {size} MB, over the {limit} MB limit; raise it with --max-file-mb"
EMPTY = "empty file"
NO_TEXT = "no text to index (only whitespace or markup)"
BINARY = "binary data, not text; check the file extension"
PDF_CORRUPT = "corrupt PDF, cannot be parsed; repair it (qpdf in.pdf fixed.pdf) or export it again"
PDF_ENCRYPTED = "encrypted PDF; decrypt it first (qpdf --decrypt --password=PASSWORD in.pdf out.pdf)"
PDF_AES = "encrypted PDF (AES) needs the cryptography package; pip install cryptography"
PDF_NO_TEXT = "no extractable text; scanned pages need OCR (e.g. ocrmypdf in.pdf out.pdf)"
DOCX_CORRUPT = "corrupt DOCX, not a valid Word document; save it again from Word or LibreOffice"
DOCX_UNZIPS_TOO_LARGE = ("DOCX unzips to over {limit} MB, likely a zip bomb; not parsed "
                         "(if it is a real document, save it again from Word or LibreOffice)")

# A .docx is a zip archive; the text of a thousand-page book unzips to some 10 MB of XML, and
# images are stored nearly uncompressed, so a real document never comes near this.
DOCX_MAX_UNZIPPED_BYTES = 256 * 1024 * 1024


def file_error(path: Path, reason: str) -> LoaderError:
    """The one-line error of a file, `PATH: reason`."""
    # repr() only for names with control characters, so the message stays one line.
    name = str(path)
    if any(ch in name for ch in "\n\r\t"):
        name = repr(name)
    return LoaderError(f"{name}: {reason}")


# ---------------------------------------------------------------------------------------------
# Folder scan


def _is_hidden(name: str) -> bool:
    # "~$name.docx" are Office's lock files: they sit next to an open document and are not documents.
    return name.startswith(".") or name.startswith("~$")


def scan_folder(folder: Path, within: list[Path] | None = None) -> tuple[list[Path], list[Path]]:
    """(supported files, unsupported files), both sorted; recursive; hidden files and folders ignored.

    Symlinked files are followed, symlinked folders are not (they can form loops). `within`: only
    files that resolve (symlinks followed) inside one of these folders are listed; the server
    passes its --folder-root folders, so a link cannot lead a user to a file outside them.
    """
    folder = Path(folder)
    roots = None if within is None else [Path(r).resolve() for r in within]
    if not folder.exists():
        raise InvalidInput(f"{folder}: folder not found")
    if not folder.is_dir():
        raise InvalidInput(f"{folder}: not a folder; pass the folder that holds your documents")
    supported: list[Path] = []
    skipped: list[Path] = []

    def on_error(err: OSError) -> None:
        log.warning("%s: cannot list folder (%s); its files are not indexed", err.filename, err.strerror)

    for root, dirs, files in os.walk(folder, onerror=on_error):
        dirs[:] = [d for d in dirs if not _is_hidden(d)]
        for name in files:
            if _is_hidden(name):
                continue
            path = Path(root, name)
            if not path.is_file():  # broken symlink, socket, fifo
                continue
            if roots is not None and not any(path.resolve().is_relative_to(r) for r in roots):
                log.warning("%s: links outside the allowed folders; not indexed", path)
                continue
            (supported if path.suffix.lower() in LOADERS else skipped).append(path)
    return sorted(supported), sorted(skipped)


# ---------------------------------------------------------------------------------------------
# Entry point


def load_file(path: Path, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> list[Document]:
    """Read one file into Documents (one per PDF page with text; one for other formats).

    Raises LoaderError with a one-line `PATH: reason; fix` message for any file that cannot be read.
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in LOADERS:
        raise file_error(path, UNSUPPORTED.format(ext=ext or "(none)"))
    data = read_bytes(path, max_bytes)
    return LOADERS[ext](path, data, str(path))


def read_bytes(path: Path, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most `max_bytes`; LoaderError (not found, unreadable,
    empty, too large...) otherwise. Nothing is parsed."""
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):  # a folder, or a fifo that open() would block on
            raise file_error(path, NOT_A_FILE)
        if st.st_size > max_bytes:
            raise file_error(path, TOO_LARGE.format(size=_mb(st.st_size), limit=_mb(max_bytes)))
        if st.st_size == 0:
            raise file_error(path, EMPTY)
        with open(path, "rb") as f:
            # Read at most one byte past the limit: the file may have grown since stat().
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise file_error(path, NOT_FOUND) from None
    except PermissionError:
        raise file_error(path, PERMISSION) from None
    except IsADirectoryError:
        raise file_error(path, NOT_A_FILE) from None
    except OSError as e:  # I/O error, too many symlink levels, name too long...
        raise file_error(path, CANNOT_READ.format(reason=e.strerror or type(e).__name__)) from None
    if len(data) > max_bytes:
        raise file_error(path, TOO_LARGE.format(size=_mb(len(data)), limit=_mb(max_bytes)))
    if not data:
        raise file_error(path, EMPTY)
    return data


def _mb(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:.3g}"


# ---------------------------------------------------------------------------------------------
# Text and Markdown

_BOMS = (  # UTF-32 LE starts with the UTF-16 LE BOM, so it is tried first.
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# Control characters that never occur in text (tab, newlines, form feed and ESC do), C1 controls,
# and the replacement character: many of them mean the bytes were not text in this encoding.
_NOT_TEXT = re.compile("[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f-\x9f\ufffd]")
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.I)


def _looks_like_text(text: str) -> bool:
    sample = text[:65536]
    return len(_NOT_TEXT.findall(sample)) <= 0.02 * max(len(sample), 1)


def _detect_legacy(data: bytes) -> str | None:
    """The encoding of bytes that are not UTF-8, or None when they are not text at all."""
    from charset_normalizer import from_bytes

    matches = from_bytes(data)
    best = matches.best()
    if best is None:
        return None
    # charset-normalizer often ranks a Baltic or Central-European code page first for short Western
    # text (English cp1252 came out as cp1257, garbling "é"). Windows-1252 is by far the most common
    # legacy encoding, so prefer it whenever it fits the bytes about as well and reads as coherently.
    for m in matches:
        if (
            "cp1252" in m.could_be_from_charset
            and m.chaos <= best.chaos + 0.05
            and m.coherence >= best.coherence
        ):
            return "cp1252"
    return best.encoding


def decode_text(data: bytes, path: Path, declared: str | None = None) -> tuple[str, str]:
    """Bytes → (text, encoding): BOM, then a declared charset, then UTF-8, then detection.

    Strict UTF-8 comes before statistical detection because legacy-encoded text with any byte
    above 127 essentially never decodes as valid UTF-8, while detection on short files guesses.
    """
    for bom, enc in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(enc), enc.replace("-sig", "")
            except UnicodeDecodeError:
                raise file_error(path, BINARY) from None
    if b"\x00" in data:
        # NUL bytes: UTF-16/32 without a BOM, or not text at all.
        enc = _detect_legacy(data)
        if enc is None or not enc.startswith(("utf_16", "utf_32")):
            raise file_error(path, BINARY)
        text = data.decode(enc, errors="replace")
        if not _looks_like_text(text):
            raise file_error(path, BINARY)
        return text, enc
    candidates = [declared] if declared else []
    for enc in [*candidates, "utf-8"]:
        try:
            text = data.decode(enc)
        except (UnicodeDecodeError, LookupError):
            continue
        if _looks_like_text(text):
            return text, enc.lower()
    enc = _detect_legacy(data)
    if enc is None:
        raise file_error(path, BINARY)
    text = data.decode(enc, errors="replace")
    if not _looks_like_text(text):
        raise file_error(path, BINARY)
    return text, enc


def _clean(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\ufeff", "").replace("\x00", "")


# Greedy to the end of the line, the closing #s stripped after: a lazy group followed by `[ \t#]*$`
# backtracks quadratically on a long line of " #" pairs.
_MD_HEADING = re.compile(r"^#{1,6}[ \t]+(.+)$", re.M)


def _load_text(path: Path, data: bytes, source: str, ext: str) -> Document:
    text, enc = decode_text(data, path)
    text = _clean(text)
    if not text.strip():
        raise file_error(path, NO_TEXT)
    fmt = "text" if ext == ".txt" else "markdown"
    meta: dict = {"format": fmt, "encoding": enc}
    if fmt == "markdown" and (m := _MD_HEADING.search(text)):
        meta["title"] = m.group(1).rstrip(" \t#").strip() or m.group(1).strip()
    return Document(text=text, source=source, page=None, metadata=meta)


# ---------------------------------------------------------------------------------------------
# HTML

def _load_html(path: Path, data: bytes, source: str) -> Document:
    from ragapp.ingest.html_text import visible_text

    head = data[:4096]
    declared = m.group(1).decode("ascii", "replace") if (m := _META_CHARSET.search(head)) else None
    markup, enc = decode_text(data, path, declared=declared)
    text, title = visible_text(_clean(markup))
    if not text:
        raise file_error(path, NO_TEXT)
    meta: dict = {"format": "html", "encoding": enc}
    if title:
        meta["title"] = title
    return Document(text=text, source=source, page=None, metadata=meta)


# ---------------------------------------------------------------------------------------------
# DOCX


def _load_docx(path: Path, data: bytes, source: str) -> Document:
    import docx
    from docx.table import Table

    from ragapp.ingest.unzip_guard import TooLargeUnzipped, check_unzipped_size

    try:
        check_unzipped_size(data, DOCX_MAX_UNZIPPED_BYTES)
    except TooLargeUnzipped:
        raise file_error(path, DOCX_UNZIPS_TOO_LARGE.format(limit=_mb(DOCX_MAX_UNZIPPED_BYTES))) from None
    except Exception:  # not a zip archive, or a damaged one
        raise file_error(path, DOCX_CORRUPT) from None
    try:
        document = docx.Document(io.BytesIO(data))
        parts: list[str] = []
        # Paragraphs and tables in the order they appear in the body.
        for block in document.iter_inner_content():
            if isinstance(block, Table):
                parts.extend(_docx_table_rows(block))
            elif block.text.strip():
                parts.append(block.text.strip())
        title = (document.core_properties.title or "").strip()
    except Exception:  # python-docx raises zipfile, KeyError, lxml and its own errors on bad files
        raise file_error(path, DOCX_CORRUPT) from None
    text = _clean("\n".join(parts))
    if not text.strip():
        raise file_error(path, NO_TEXT)
    meta: dict = {"format": "docx"}
    if title:
        meta["title"] = title
    return Document(text=text, source=source, page=None, metadata=meta)


def _docx_table_rows(table) -> list[str]:
    rows = []
    for row in table.rows:
        cells, seen = [], set()
        for cell in row.cells:
            if id(cell._tc) in seen:  # a merged cell is returned once per grid column it spans
                continue
            seen.add(id(cell._tc))
            if t := " ".join(cell.text.split()):
                cells.append(t)
        if cells:
            rows.append(" | ".join(cells))
    return rows


# ---------------------------------------------------------------------------------------------
# PDF


def _quiet_pypdf() -> None:
    # pypdf logs a WARNING for every recoverable flaw in a file; with no logging configured Python
    # prints them to stderr, burying the one-line report. Real failures still raise.
    logging.getLogger("pypdf").setLevel(logging.ERROR)


def _load_pdf(path: Path, data: bytes, source: str) -> list[Document]:
    """pypdf first; PDFium (pypdfium2) for a file or the pages pypdf cannot read: pypdf refuses
    valid files past its own safety limits (an array of over 100,000 elements, e.g.) and gives up
    on flaws that PDFium repairs. "corrupt" is said only when neither can read the file."""
    texts, n_pages, title = _pypdf_texts(path, data)
    failed = [n for n in range(1, n_pages + 1) if texts.get(n) is None] if texts is not None else None
    if failed is None or failed:
        try:
            more, n_more, more_title = _pdfium_texts(path, data, failed)
        except LoaderError:
            if texts is None:  # neither parser can open it
                raise
            more, n_more, more_title = {}, n_pages, ""
        if texts is None:
            texts, n_pages, title = more, n_more, more_title
        else:
            texts.update((n, t) for n, t in more.items() if t is not None)
        for number in range(1, n_pages + 1):
            if texts.get(number) is None:
                log.warning("%s: page %d skipped, its text cannot be extracted", source, number)

    docs: list[Document] = []
    for number in range(1, n_pages + 1):
        text = _clean(texts.get(number) or "")
        if text.strip():
            meta: dict = {"format": "pdf", "pages": n_pages}
            if title:
                meta["title"] = title
            docs.append(Document(text=text, source=source, page=number, metadata=meta))
    if not docs:
        unreadable = n_pages and all(texts.get(n) is None for n in range(1, n_pages + 1))
        raise file_error(path, PDF_CORRUPT if unreadable else PDF_NO_TEXT)
    return docs


def _pypdf_texts(path: Path, data: bytes) -> tuple[dict[int, str | None] | None, int, str]:
    """({page number: text, or None where it failed}, pages, title); None for the texts when pypdf
    cannot open the file at all. Encryption problems raise the one-line messages."""
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError

    _quiet_pypdf()
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            # Many PDFs are encrypted only to restrict printing or copying and open with the empty
            # user password; only a real password stops us.
            try:
                opened = reader.decrypt("")
            except DependencyError:
                raise file_error(path, PDF_AES) from None
            except Exception:  # an encryption scheme pypdf cannot open: still a decryption problem
                raise file_error(path, PDF_ENCRYPTED) from None
            if not opened:
                raise file_error(path, PDF_ENCRYPTED)
        pages = reader.pages
        n_pages = len(pages)
        title = _pdf_title(reader)
    except LoaderError:
        raise
    except FileNotDecryptedError:
        raise file_error(path, PDF_ENCRYPTED) from None
    except DependencyError:
        raise file_error(path, PDF_AES) from None
    except Exception:  # pypdf raises many types (PdfReadError, LimitReachedError, KeyError...)
        return None, 0, ""
    texts: dict[int, str | None] = {}
    for number in range(1, n_pages + 1):
        try:
            texts[number] = pages[number - 1].extract_text() or ""
        except Exception as e:  # one damaged page must not cost the others
            log.info("%s: pypdf cannot extract page %d (%s); trying PDFium", path, number, e)
            texts[number] = None
    return texts, n_pages, title


def _pdfium_texts(path: Path, data: bytes, numbers: list[int] | None) -> tuple[dict[int, str | None], int, str]:
    """Like _pypdf_texts, with PDFium, for the pages `numbers` (None: all of them)."""
    try:
        import pypdfium2 as pdfium
        import pypdfium2.raw as pdfium_c
    except ImportError:  # a dependency; without it pypdf's verdict stands
        raise file_error(path, PDF_CORRUPT) from None
    try:
        document = pdfium.PdfDocument(data, password="")
    except pdfium.PdfiumError as e:
        reason = PDF_ENCRYPTED if e.err_code == pdfium_c.FPDF_ERR_PASSWORD else PDF_CORRUPT
        raise file_error(path, reason) from None
    try:
        n_pages = len(document)
        texts: dict[int, str | None] = {}
        for number in numbers if numbers is not None else range(1, n_pages + 1):
            try:
                page = document[number - 1]
                textpage = page.get_textpage()
                texts[number] = textpage.get_text_bounded()
                textpage.close()
                page.close()
            except Exception:  # noqa: BLE001 - one damaged page must not cost the others
                texts[number] = None
        try:
            title = (document.get_metadata_value("Title") or "").strip()
        except Exception:  # noqa: BLE001 - a broken info dictionary is not worth failing the file for
            title = ""
        return texts, n_pages, title
    finally:
        document.close()


def _pdf_title(reader) -> str:
    try:
        meta = reader.metadata
        return str(meta.title).strip() if meta and meta.title else ""
    except Exception:  # a broken info dictionary is not worth failing the file for
        return ""


# A new file type: a function (path, bytes, source) -> [Document] above, its line here, and its
# extension in ragapp.config.SUPPORTED_EXTENSIONS.
LOADERS = {
    ".pdf": _load_pdf,
    ".docx": lambda path, data, source: [_load_docx(path, data, source)],
    **{ext: lambda path, data, source: [_load_html(path, data, source)] for ext in HTML_EXTENSIONS},
    **{ext: (lambda path, data, source, ext=ext: [_load_text(path, data, source, ext)]) for ext in TEXT_EXTENSIONS},
}
assert set(LOADERS) == set(SUPPORTED_EXTENSIONS), "every supported extension has a loader"
BUILTIN_LOADERS = dict(LOADERS)


def registered_loaders() -> dict:
    """Loaders added to LOADERS at run time (tests add parsers that hang or crash, for made-up
    extensions): ragapp.ingest.parse_pool installs them in its worker processes too, so they must
    be module-level functions (pickled by name)."""
    return {ext: fn for ext, fn in LOADERS.items() if BUILTIN_LOADERS.get(ext) is not fn}
