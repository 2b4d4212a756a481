"""Upload names and limits: nothing is written outside the collection's upload folder."""

from __future__ import annotations

import io
import os

import pytest

from ragapp.errors import InvalidInput
from ragapp.serve.uploads import (
    UploadLimits,
    UploadTooLarge,
    check_batch,
    clear_partial,
    remove_upload,
    safe_filename,
    save_upload,
    save_uploads,
)


@pytest.mark.parametrize(
    "name, safe",
    [
        ("notes.md", "notes.md"),
        ("../../etc/passwd.txt", "passwd.txt"),
        ("/etc/cron.d/job.md", "job.md"),
        ("C:\\Users\\me\\report.pdf", "report.pdf"),
        ("..\\..\\win.ini.txt", "win.ini.txt"),
        (".bashrc.md", "bashrc.md"),
        ("  spaced name .txt", "spaced name.txt"),
        ("new\nline\x00.md", "newline.md"),
        ("semi;colon|pipe$.md", "semi_colon_pipe_.md"),
        ("Ｆｕｌｌｗｉｄｔｈ.md", "Fullwidth.md"),
        ("résumé été.pdf", "résumé été.pdf"),
        ("CON.txt", "_CON.txt"),
        ("a" * 300 + ".md", "a" * 117 + ".md"),
        ("README", "README"),
    ],
)
def test_safe_filename(name, safe):
    assert safe_filename(name) == safe


@pytest.mark.parametrize("name", ["", "..", "../..", "/", "...", "\x00\x01"])
def test_safe_filename_refuses_names_with_nothing_left(name):
    with pytest.raises(InvalidInput, match="has no usable characters; rename the file"):
        safe_filename(name)


LIMITS = UploadLimits(max_file_bytes=100, max_files=2, max_total_bytes=150)


@pytest.mark.parametrize(
    "names, error, message",
    [
        ([], InvalidInput, "no file to upload; choose one or more documents"),
        (["a.md", "b.md", "c.md"], UploadTooLarge,
         "3 files in one upload; at most 2 are accepted, upload them in several batches (or raise --max-upload-files)"),
        (["virus.exe"], InvalidInput, "virus.exe: unsupported file type '.exe'; upload one of: .pdf .txt .md"),
        (["noext"], InvalidInput, "noext: unsupported file type '(none)'"),
        (["x/a.md", "y/A.md"], InvalidInput, "'x/a.md' and 'y/A.md' would both be saved as 'A.md'; rename one"),
    ],
)
def test_check_batch_rejects(names, error, message):
    with pytest.raises(error) as info:
        check_batch(names, LIMITS)
    assert str(info.value).startswith(message)


def test_check_batch_returns_safe_names():
    assert check_batch(["../a.md", "dir/B.PDF"], LIMITS) == ["a.md", "B.PDF"]


def test_save_upload_writes_inside_the_folder_and_replaces(tmp_path):
    folder = tmp_path / "uploads"
    path = save_upload(io.BytesIO(b"first"), folder, "a.md", LIMITS)
    assert path == (folder / "a.md").resolve() and path.read_bytes() == b"first"
    save_upload(io.BytesIO(b"second"), folder, "a.md", LIMITS)
    assert path.read_bytes() == b"second"
    assert sorted(p.name for p in folder.iterdir()) == ["a.md"]  # no temporary file left


def test_oversized_and_empty_uploads_leave_nothing(tmp_path):
    folder = tmp_path / "uploads"
    with pytest.raises(UploadTooLarge, match=r"^big.md is over the 9.53674e-05 MB upload limit; split it or raise --max-upload-mb$"):
        save_upload(io.BytesIO(b"x" * 101), folder, "big.md", LIMITS)
    with pytest.raises(InvalidInput, match="^empty.md is empty; choose a file with some text$"):
        save_upload(io.BytesIO(b""), folder, "empty.md", LIMITS)
    save_upload(io.BytesIO(b"old"), folder, "one.md", LIMITS)
    # all or nothing: the second file is over the request's total, so the first replaces nothing either
    with pytest.raises(UploadTooLarge, match=r"^the upload is over 0.000143051 MB in all; upload fewer files at a time$"):
        save_uploads([("one.md", io.BytesIO(b"x" * 100)), ("two.md", io.BytesIO(b"y" * 60))], folder, LIMITS)
    assert sorted(p.name for p in folder.iterdir()) == ["one.md"]
    assert (folder / "one.md").read_bytes() == b"old"
    assert [p.name for p in save_uploads([("one.md", io.BytesIO(b"new")), ("two.md", io.BytesIO(b"2"))], folder, LIMITS)] \
        == ["one.md", "two.md"]
    assert (folder / "one.md").read_bytes() == b"new"


def test_never_writes_through_a_symlink_or_outside(tmp_path):
    folder = tmp_path / "uploads"
    folder.mkdir()
    outside = tmp_path / "secret.md"
    outside.write_text("keep me")
    os.symlink(outside, folder / "link.md")
    with pytest.raises(InvalidInput, match="refusing to write 'link.md' outside the upload folder"):
        save_upload(io.BytesIO(b"evil"), folder, "link.md", LIMITS)
    for bad in ("../secret.md", "/abs.md", "sub/x.md"):
        with pytest.raises(InvalidInput, match="outside the upload folder"):
            save_upload(io.BytesIO(b"evil"), folder, bad, LIMITS)
    assert outside.read_text() == "keep me"
    assert not remove_upload(folder, "../secret.md") and not remove_upload(folder, "link.md")
    assert outside.exists()


def test_remove_upload_and_clear_partial(tmp_path):
    folder = tmp_path / "uploads"
    save_upload(io.BytesIO(b"text"), folder, "a.md", LIMITS)
    (folder / ".upload-123.part").write_bytes(b"half")
    clear_partial(folder)
    assert [p.name for p in folder.iterdir()] == ["a.md"]
    assert remove_upload(folder, "a.md") and not (folder / "a.md").exists()
    assert not remove_upload(folder, "a.md")


def test_limits_validation():
    with pytest.raises(InvalidInput, match="--max-upload-files must be at least 1, got 0"):
        UploadLimits(max_files=0)
    assert "up to 2 files of at most" in LIMITS.describe()
