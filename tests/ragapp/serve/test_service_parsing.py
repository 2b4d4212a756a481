"""The server's indexing jobs parse through the same worker processes as `ragapp index`: a file
whose parser crashes, or a zip bomb, is one line of the job's report, and the job finishes."""

from __future__ import annotations

import hostile_files
from conftest import FakeEmbedder, sentences, write_files

from ragapp.ingest import loaders
from ragapp.serve.service import RagService, ServeConfig


def test_a_folder_job_reports_each_bad_file(tmp_path, tokenizer, monkeypatch):
    monkeypatch.setitem(loaders.LOADERS, ".crash", hostile_files.crash)
    folder = write_files(tmp_path / "docs", {
        "good.txt": "Otters hold hands while they sleep.\n\n" + sentences(4),
        "boom.crash": "never parsed",
        "bomb.docx": hostile_files.docx_bomb(hostile_files.small_docx(), gigabytes=1),
    })  # fmt: skip
    service = RagService(ServeConfig(index_dir=tmp_path / "indexes", backend="extractive"),
                         embedder=FakeEmbedder(tokenizer))
    try:
        job = service.wait(service.index_folder(None, "docs", folder, trusted=True), timeout=120)
    finally:
        service.close()
    assert job.status == "done", job.message
    crash = f"{folder / 'boom.crash'}: the parser crashed (signal 11, SIGSEGV); skipped"
    bomb = (f"{folder / 'bomb.docx'}: DOCX unzips to over 256 MB, likely a zip bomb; not parsed "
            "(if it is a real document, save it again from Word or LibreOffice)")
    assert sorted(job.report["failed"]) == [["bomb.docx", bomb], ["boom.crash", crash]]
    assert job.report["added"] == 1 and job.report["notes"] == []
    assert crash in job.message and "2 failed" in job.message
