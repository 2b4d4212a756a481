"""Loaders: each format, each bad input with its exact one-line message, encoding detection."""

from __future__ import annotations

import os
import random
import tempfile
import zipfile
from pathlib import Path

import pytest

from ragapp.errors import InvalidInput, LoaderError
from ragapp.ingest import loaders
from ragapp.ingest.loaders import load_file, scan_folder

# ----------------------------------------------------------------------------------------------
# Builders (each test makes its own files in tmp_path)


def make_pdf(path: Path, pages: list[str | None]) -> Path:
    """A PDF with one page per entry; None makes a page with a drawing and no text layer."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    for text in pages:
        pdf.add_page()
        if text is None:
            pdf.rect(20, 20, 100, 60, style="F")
        else:
            pdf.multi_cell(0, 8, text)
    pdf.output(str(path))
    return path


def encrypt_pdf(src: Path, dst: Path, user_password: str, algorithm: str) -> Path:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(src))
    writer.encrypt(user_password=user_password, owner_password="owner-secret", algorithm=algorithm)
    with open(dst, "wb") as f:
        writer.write(f)
    return dst


def make_docx(path: Path) -> Path:
    import docx

    d = docx.Document()
    d.core_properties.title = "Quarterly notes"
    d.add_heading("Quarterly notes", level=1)
    d.add_paragraph("First paragraph before the table.")
    table = d.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "Region", "Sales"
    table.cell(1, 0).text, table.cell(1, 1).text = "North", "1,204"
    d.add_paragraph("")  # empty paragraphs (spacing) are dropped
    d.add_paragraph("Last paragraph after the table.")
    d.save(str(path))
    return path


def msg(path: Path, reason: str) -> str:
    return f"{path}: {reason}"


# ----------------------------------------------------------------------------------------------
# Each format


def test_pdf_pages_are_one_based_and_empty_pages_skipped(tmp_path):
    path = make_pdf(tmp_path / "guide.pdf", ["Alpha page one.", None, "Gamma page three."])
    docs = load_file(path)
    assert [d.page for d in docs] == [1, 3]
    assert "Alpha page one." in docs[0].text and "Gamma page three." in docs[1].text
    assert all(d.source == str(path) for d in docs)
    assert docs[0].metadata["format"] == "pdf" and docs[0].metadata["pages"] == 3


@pytest.mark.parametrize("algorithm", ["RC4-128", "AES-128", "AES-256"])
def test_pdf_encrypted_with_empty_user_password_opens(tmp_path, algorithm):
    plain = make_pdf(tmp_path / "plain.pdf", ["Restricted but readable."])
    path = encrypt_pdf(plain, tmp_path / "restricted.pdf", user_password="", algorithm=algorithm)
    docs = load_file(path)
    assert [d.page for d in docs] == [1] and "Restricted but readable." in docs[0].text


def test_markdown_and_text(tmp_path):
    md = tmp_path / "notes.md"
    md.write_text("# Setup notes\r\n\r\nRun `make demo`.\r\n", encoding="utf-8")
    (doc,) = load_file(md)
    assert doc.text == "# Setup notes\n\nRun `make demo`.\n"  # CRLF normalised
    assert doc.page is None and doc.metadata == {"format": "markdown", "encoding": "utf-8", "title": "Setup notes"}
    txt = tmp_path / "plain.txt"
    txt.write_bytes("\ufeffBOM-marked UTF-8 text, naïve café.".encode("utf-8"))
    (doc,) = load_file(txt)
    assert doc.text == "BOM-marked UTF-8 text, naïve café." and doc.metadata["encoding"] == "utf-8"


WESTERN = (
    "Release notes for the café edition. The résumé template now costs 5 € — “smart quotes” work, "
    "and naïve users are happy. Déjà vu: the piñata and the façade.\n"
)
FRENCH = "Les réponses citent leurs sources : élève, où, château, « guillemets », cœur, façade.\n"


@pytest.mark.parametrize(
    "text, encoding, detected",
    [
        (WESTERN, "cp1252", "cp1252"),
        (FRENCH, "cp1252", "cp1252"),
        (WESTERN.replace("€", "EUR").replace("“", '"').replace("”", '"').replace("—", "-"), "latin-1", "cp1252"),
        ("Приложение ищет по вашим документам и отвечает со ссылками на источники.\n", "cp1251", "cp1251"),
        (WESTERN, "utf-16", "utf-16"),  # Python writes a BOM
        (WESTERN, "utf-16-le", "utf_16_le"),  # no BOM: detected from the byte pattern
        ("日本語のテキスト。検索して回答します。\n", "utf-8", "utf-8"),
    ],
)
def test_encoding_is_detected(tmp_path, text, encoding, detected):
    path = tmp_path / "legacy.txt"
    path.write_bytes((text * 3).encode(encoding))
    (doc,) = load_file(path)
    assert doc.text == text * 3
    assert doc.metadata["encoding"] == detected


HTML = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>The Chat Page</title>
<style>body { color: red; } .secret-css {}</style>
<script>var secretScript = "do not index";</script></head>
<body>
<nav><a href="/">Home</a></nav>
<h1>Chat page</h1>
<p>Ask a question and <b>read</b> the <a href="#c">cited</a> sources.</p>
<p>Second paragraph.<br>After a line break.</p>
<!-- secret comment -->
<noscript>secret noscript</noscript><template><p>secret template</p></template>
<div hidden>secret hidden</div><span style="display: none">secret display none</span>
<table><tr><th>Flag</th><th>Default</th></tr><tr><td>--k</td><td>5</td></tr></table>
<ul><li>one</li><li>two</li></ul>
<script type="module">import("secret-module")</script>
</body></html>"""


def test_html_visible_text_only(tmp_path):
    path = tmp_path / "page.html"
    path.write_text(HTML, encoding="utf-8")
    (doc,) = load_file(path)
    assert "secret" not in doc.text.lower()
    assert doc.metadata == {"format": "html", "encoding": "utf-8", "title": "The Chat Page"}
    assert "The Chat Page" not in doc.text  # <head> is not body text; the title is metadata
    # inline elements stay inside their sentence, block elements make paragraphs
    assert "\n\nAsk a question and read the cited sources.\n\n" in doc.text
    assert "Second paragraph.\nAfter a line break." in doc.text
    assert "Flag Default\n--k 5" in doc.text
    assert doc.text.endswith("one\ntwo")
    assert doc.text.startswith("Home\n\nChat page\n\nAsk")


def test_html_declared_legacy_charset(tmp_path):
    path = tmp_path / "old.htm"
    page = '<html><head><meta http-equiv="Content-Type" content="text/html; charset=windows-1252"></head>'
    path.write_bytes((page + "<body><p>Café — “quoted”</p></body></html>").encode("cp1252"))
    (doc,) = load_file(path)
    assert doc.text == "Café — “quoted”" and doc.metadata["encoding"] == "windows-1252"


def test_docx_paragraphs_and_tables_in_order(tmp_path):
    (doc,) = load_file(make_docx(tmp_path / "report.docx"))
    assert doc.text == (
        "Quarterly notes\nFirst paragraph before the table.\nRegion | Sales\nNorth | 1,204\n"
        "Last paragraph after the table."
    )
    assert doc.metadata == {"format": "docx", "title": "Quarterly notes"}


# ----------------------------------------------------------------------------------------------
# Bad inputs: one line naming the file and the reason, exactly.


def _corrupt_pdf(tmp_path: Path) -> Path:
    p = tmp_path / "corrupt.pdf"
    p.write_bytes(b"%PDF-1.7\n" + random.Random(1).randbytes(3000))
    return p


def _truncated_pdf(tmp_path: Path) -> Path:
    full = make_pdf(tmp_path / "full.pdf", ["Some text " * 50] * 3).read_bytes()
    p = tmp_path / "truncated.pdf"
    p.write_bytes(full[: len(full) // 3])
    return p


def _encrypted_pdf(tmp_path: Path) -> Path:
    plain = make_pdf(tmp_path / "p.pdf", ["Confidential."])
    return encrypt_pdf(plain, tmp_path / "locked.pdf", user_password="hunter2", algorithm="AES-256")


def _scanned_pdf(tmp_path: Path) -> Path:
    return make_pdf(tmp_path / "scan.pdf", [None, None])


def _empty(name: str):
    def build(tmp_path: Path) -> Path:
        p = tmp_path / name
        p.write_bytes(b"")
        return p

    return build


def _write(name: str, data: bytes):
    def build(tmp_path: Path) -> Path:
        p = tmp_path / name
        p.write_bytes(data)
        return p

    return build


def _docx_as(name: str):
    def build(tmp_path: Path) -> Path:
        p = tmp_path / name
        p.write_bytes(make_docx(tmp_path / "real.docx").read_bytes())
        return p

    return build


def _zip_without_word_parts(tmp_path: Path) -> Path:
    p = tmp_path / "notword.docx"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("hello.txt", "not a word document")
    return p


PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + random.Random(2).randbytes(2000)

BAD_INPUTS = [
    ("corrupt pdf", _corrupt_pdf, loaders.PDF_CORRUPT),
    ("truncated pdf", _truncated_pdf, loaders.PDF_CORRUPT),
    ("encrypted pdf", _encrypted_pdf, loaders.PDF_ENCRYPTED),
    ("scanned pdf", _scanned_pdf, loaders.PDF_NO_TEXT),
    ("empty pdf", _empty("e.pdf"), loaders.EMPTY),
    ("empty txt", _empty("e.txt"), loaders.EMPTY),
    ("empty md", _empty("e.md"), loaders.EMPTY),
    ("empty html", _empty("e.html"), loaders.EMPTY),
    ("empty docx", _empty("e.docx"), loaders.EMPTY),
    ("whitespace txt", _write("blank.txt", b" \n\t\r\n  "), loaders.NO_TEXT),
    ("html without visible text", _write("s.html", b"<html><script>x=1</script></html>"), loaders.NO_TEXT),
    ("png as txt", _write("image.txt", PNG), loaders.BINARY),
    ("random bytes as md", _write("blob.md", random.Random(3).randbytes(5000)), loaders.BINARY),
    ("docx as md", _docx_as("report.md"), loaders.BINARY),
    ("png as html", _write("image.html", PNG), loaders.BINARY),
    ("text as docx", _write("fake.docx", b"just some text, not a zip"), loaders.DOCX_CORRUPT),
    ("zip as docx", _zip_without_word_parts, loaders.DOCX_CORRUPT),
    ("truncated docx", lambda t: _write("half.docx", make_docx(t / "r.docx").read_bytes()[:1500])(t),
     loaders.DOCX_CORRUPT),
    ("unsupported", _write("photo.jpeg", b"\xff\xd8\xff"),
     "unsupported file type '.jpeg'; supported: .pdf .txt .md .markdown .html .htm .docx"),
    ("no extension", _write("Makefile", b"all:\n"),
     "unsupported file type '(none)'; supported: .pdf .txt .md .markdown .html .htm .docx"),
    ("missing", lambda t: t / "gone.txt", loaders.NOT_FOUND),
    ("directory", lambda t: (t / "folder.md").mkdir() or t / "folder.md", loaders.NOT_A_FILE),
    ("fifo", lambda t: os.mkfifo(t / "pipe.txt") or t / "pipe.txt", loaders.NOT_A_FILE),
    ("symlink loop", lambda t: (t / "loop.txt").symlink_to(t / "loop.txt") or t / "loop.txt",
     "cannot be read (Too many levels of symbolic links)"),
]  # fmt: skip


@pytest.mark.parametrize("build, reason", [b[1:] for b in BAD_INPUTS], ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_exact_message(tmp_path, build, reason):
    path = build(tmp_path)
    with pytest.raises(LoaderError) as exc:
        load_file(path)
    assert str(exc.value) == msg(path, reason)
    assert "\n" not in str(exc.value)


def test_aes_pdf_without_cryptography_says_what_to_install(tmp_path, monkeypatch):
    # pypdf raises DependencyError for AES when `cryptography` is missing; simulated here because
    # the project depends on cryptography (see the real AES tests above).
    from pypdf import PdfReader
    from pypdf.errors import DependencyError

    def no_aes(self, password):
        raise DependencyError("cryptography>=3.1 is required for AES algorithm")

    plain = make_pdf(tmp_path / "p.pdf", ["Readable with the empty password."])
    path = encrypt_pdf(plain, tmp_path / "aes.pdf", user_password="", algorithm="AES-128")
    monkeypatch.setattr(PdfReader, "decrypt", no_aes)
    with pytest.raises(LoaderError) as exc:
        load_file(path)
    assert str(exc.value) == msg(path, loaders.PDF_AES)


def test_the_messages_read_as_documented():
    # The README table quotes these; changing one is a user-visible change.
    assert loaders.PDF_NO_TEXT == "no extractable text; scanned pages need OCR (e.g. ocrmypdf in.pdf out.pdf)"
    assert loaders.PDF_ENCRYPTED == (
        "encrypted PDF; decrypt it first (qpdf --decrypt --password=PASSWORD in.pdf out.pdf)"
    )
    assert loaders.EMPTY == "empty file"


def test_size_limit_message_names_the_limit_and_the_flag(tmp_path):
    path = tmp_path / "big.txt"
    path.write_bytes(b"word " * (3 * 2**20 // 10))  # 1.5 MiB
    with pytest.raises(LoaderError) as exc:
        load_file(path, max_bytes=2**20)
    assert str(exc.value) == msg(path, "file is 1.5 MB, over the 1 MB limit; raise it with --max-file-mb")
    assert load_file(path, max_bytes=2 * 2**20)[0].text.startswith("word word")


def _load_as_nobody(path: Path) -> str:
    """Run load_file in a forked child that has dropped root (uid/gid 65534); return its outcome.

    Root reads any file whatever its mode, so a chmod test run as root proves nothing; a real
    unprivileged process hits the real PermissionError path.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            try:
                load_file(path)
                out = "loaded"
            except LoaderError as e:
                out = str(e)
            os.write(w, out.encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read().decode()
    os.waitpid(pid, 0)
    return out


@pytest.fixture
def world_dir():
    # pytest's tmp_path lives under a root-only (0700) folder; this one every user can traverse.
    with tempfile.TemporaryDirectory(prefix="ragapp-perm-") as d:
        os.chmod(d, 0o755)
        yield Path(d)


@pytest.mark.parametrize("where", ["unreadable file", "file in untraversable folder"])
def test_unreadable_permissions(world_dir, where):
    if where == "unreadable file":
        path = world_dir / "private.txt"
        path.write_text("secret plans")
        path.chmod(0o000)
    else:
        locked = world_dir / "locked"
        locked.mkdir()
        path = locked / "notes.md"
        path.write_text("# notes")
        locked.chmod(0o700 if os.geteuid() == 0 else 0o000)
    try:
        if os.geteuid() == 0:
            out = _load_as_nobody(path)
        else:
            with pytest.raises(LoaderError) as exc:
                load_file(path)
            out = str(exc.value)
    finally:
        path.parent.chmod(0o755)
    assert out == msg(path, loaders.PERMISSION)


def test_a_bad_file_does_not_stop_the_others(tmp_path):
    make_pdf(tmp_path / "a.pdf", ["Good page."])
    _corrupt_pdf(tmp_path)
    (tmp_path / "c.txt").write_text("good text")
    files, skipped = scan_folder(tmp_path)
    loaded, failed = [], []
    for f in files:
        try:
            loaded += load_file(f)
        except LoaderError as e:
            failed.append(str(e))
    assert [Path(d.source).name for d in loaded] == ["a.pdf", "c.txt"]
    assert failed == [msg(tmp_path / "corrupt.pdf", loaders.PDF_CORRUPT)]


# ----------------------------------------------------------------------------------------------
# Folder scan


def test_scan_folder_recurses_ignores_hidden_and_separates_unsupported(tmp_path):
    for rel in ["b.md", "a.PDF", "sub/deep/c.html", "sub/d.docx", "sub/e.htm", "x.markdown", "n.txt",
                "img.png", "sub/data.csv", ".hidden.txt", ".git/config.txt", "sub/.cache/f.md",
                "~$lock.docx"]:  # fmt: skip
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x")
    (tmp_path / "link.txt").symlink_to(tmp_path / "n.txt")
    (tmp_path / "broken.txt").symlink_to(tmp_path / "nowhere.txt")
    (tmp_path / "loop").symlink_to(tmp_path)  # folder symlinks are not followed
    files, skipped = scan_folder(tmp_path)
    rel = lambda ps: [p.relative_to(tmp_path).as_posix() for p in ps]  # noqa: E731
    assert rel(files) == ["a.PDF", "b.md", "link.txt", "n.txt", "sub/d.docx", "sub/deep/c.html", "sub/e.htm",
                          "x.markdown"]  # fmt: skip
    assert rel(skipped) == ["img.png", "sub/data.csv"]


def test_scan_folder_bad_folder(tmp_path):
    with pytest.raises(InvalidInput, match="folder not found"):
        scan_folder(tmp_path / "nope")
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(InvalidInput, match="not a folder"):
        scan_folder(tmp_path / "f.txt")



# ----------------------------------------------------------------------------------------------
# The sample corpus

REPO = Path(__file__).resolve().parents[3]
SAMPLE = REPO / "corpora" / "sample"


def test_sample_corpus_loads_every_file_with_text():
    files, skipped = scan_folder(SAMPLE)
    assert skipped == []
    exts = {f.suffix for f in files}
    assert {".pdf", ".md", ".txt", ".html", ".docx"} <= exts and len(files) >= 10
    words = 0
    for f in files:
        docs = load_file(f)
        assert docs and all(d.text.strip() for d in docs), f
        words += sum(len(d.text.split()) for d in docs)
    assert words > 5000
    guide = load_file(SAMPLE / "user-guide.pdf")
    assert [d.page for d in guide] == [1, 2, 3, 4, 5, 6, 7]
    assert "Keeping an index in sync" in guide[3].text and "page 4 of 7" in guide[3].text
    assert "Settings reference" in guide[6].text


def _load_make_sample():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_sample", REPO / "corpora" / "make_sample.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_make_sample_is_deterministic_and_matches_the_checked_in_files(tmp_path):
    make_sample = _load_make_sample()
    for out in ("a", "b"):
        assert make_sample.main(["--out", str(tmp_path / out)]) == 0
    for name in ("user-guide.pdf", "llm-toolkit.docx"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
        # Text, not bytes, against the checked-in copy: another fpdf2/python-docx release may
        # lay out the same text differently.
        fresh = [(d.page, d.text) for d in load_file(tmp_path / "a" / name)]
        assert fresh == [(d.page, d.text) for d in load_file(SAMPLE / name)], f"rerun corpora/make_sample.py ({name})"
