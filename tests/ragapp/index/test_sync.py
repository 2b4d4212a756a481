"""Incremental sync: add, modify, delete, rename, duplicates, unchanged files not even parsed."""

from __future__ import annotations

import os

import pytest
from conftest import sentences, write_files

import ragapp.index.sync


@pytest.fixture
def parse_spy(monkeypatch):
    """Counts the files the sync parses (ragapp.index.sync._load_file is its only way to read one)."""
    calls: list[str] = []
    real = ragapp.index.sync._load_file

    def spy(path, max_bytes, pool=None):
        calls.append(path.name)
        return real(path, max_bytes, pool)

    monkeypatch.setattr(ragapp.index.sync, "_load_file", spy)
    return calls


def chunk_set(index):
    """Everything a user can see of the chunks: text, citing paths, page, offsets."""
    return sorted((paths, text, page, start, end) for _, paths, text, page, start, end in index.store.chunk_rows())


def consistent(index):
    """The FAISS store holds exactly the stored chunk ids, and every content has a file."""
    ids = sorted(index.store.chunk_ids().tolist())
    assert sorted(index.vectors().ids().tolist()) == ids
    assert all(paths for _, paths, *_ in index.store.chunk_rows())
    return True


def test_first_sync_then_nothing_to_do(tmp_path, make_index, fake_embedder, parse_spy):
    folder = write_files(tmp_path / "docs", {"a.txt": sentences(1), "sub/b.md": sentences(2, 40), "c.html":
                                             "<html><body><p>" + sentences(3) + "</p></body></html>"})
    index = make_index()
    report = index.sync(folder, embedder=fake_embedder, progress=False)
    assert (report.added, report.updated, report.removed, report.unchanged) == (3, 0, 0, 0)
    assert report.chunks_added == index.store.count("chunks") > 3
    assert sorted(f["source"] for f in index.files()) == ["a.txt", "c.html", "sub/b.md"]
    assert sorted(parse_spy) == ["a.txt", "b.md", "c.html"]
    encoded = fake_embedder.encoded

    again = index.sync(folder, embedder=fake_embedder, progress=False)
    assert (again.added, again.updated, again.removed, again.unchanged) == (0, 0, 0, 3)
    assert again.chunks_added == again.chunks_removed == 0
    assert len(parse_spy) == 3, "unchanged files must not be parsed"
    assert fake_embedder.encoded == encoded
    assert consistent(index)


def test_touched_but_identical_file_is_hashed_not_parsed(tmp_path, make_index, fake_embedder, parse_spy):
    folder = write_files(tmp_path / "docs", {"a.txt": sentences(1)})
    index = make_index()
    index.sync(folder, embedder=fake_embedder, progress=False)
    st = (folder / "a.txt").stat()
    os.utime(folder / "a.txt", ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    report = index.sync(folder, embedder=fake_embedder, progress=False)
    assert report.unchanged == 1 and parse_spy == ["a.txt"]
    # the new mtime is remembered: the third run does not even read the file
    assert index.store.file("a.txt").mtime_ns == st.st_mtime_ns + 5_000_000_000


def test_modify_and_delete(tmp_path, make_index, fake_embedder):
    folder = write_files(tmp_path / "docs", {"a.txt": sentences(1), "b.txt": sentences(2), "c.txt": sentences(3)})
    index = make_index()
    index.sync(folder, embedder=fake_embedder, progress=False)
    version = index.version()
    (folder / "a.txt").write_text("A completely new text about vector search and nothing else.")
    (folder / "c.txt").unlink()
    report = index.sync(folder, embedder=fake_embedder, progress=False)
    assert (report.added, report.updated, report.removed, report.unchanged) == (0, 1, 1, 1)
    assert index.version() != version
    texts = [text for _, text, *_ in chunk_set(index)]
    assert "A completely new text about vector search and nothing else." in texts
    assert not any(t.startswith("Document 3.") or t.startswith("Document 1.") for t in texts)

    clean = make_index("clean")
    clean.sync(folder, embedder=fake_embedder, progress=False)
    assert chunk_set(index) == chunk_set(clean)
    assert consistent(index)


def test_rename_and_move_are_not_re_embedded(tmp_path, make_index, fake_embedder, parse_spy):
    folder = write_files(tmp_path / "docs", {"a.txt": sentences(1, 40), "b.md": sentences(2)})
    index = make_index()
    index.sync(folder, embedder=fake_embedder, progress=False)
    ids_before = sorted(index.store.chunk_ids().tolist())
    encoded, parsed = fake_embedder.encoded, len(parse_spy)
    (folder / "sub").mkdir()
    (folder / "a.txt").rename(folder / "sub" / "renamed.txt")
    report = index.sync(folder, embedder=fake_embedder, progress=False)
    assert (report.renamed, report.added, report.removed, report.unchanged) == (1, 0, 0, 1)
    assert fake_embedder.encoded == encoded and len(parse_spy) == parsed
    assert sorted(index.store.chunk_ids().tolist()) == ids_before  # same chunks, same ids
    assert sorted(f["source"] for f in index.files()) == ["b.md", "sub/renamed.txt"]
    hits = index.get_chunks(ids_before)
    assert {h["source"] for h in hits} == {"b.md", "sub/renamed.txt"}


def test_duplicate_content_is_stored_once_and_cites_both(tmp_path, make_index, fake_embedder, parse_spy):
    text = sentences(7, 30)
    folder = write_files(tmp_path / "docs", {"x/guide.txt": text, "y/copy-of-guide.txt": text, "other.txt": sentences(8)})
    index = make_index()
    report = index.sync(folder, embedder=fake_embedder, progress=False)
    assert report.added == 3
    assert index.store.count("contents") == 2
    assert sorted(parse_spy) == ["guide.txt", "other.txt"]  # the copy is never parsed
    dup_ids = [cid for cid, paths, *_ in index.store.chunk_rows() if len(paths) == 2]
    assert dup_ids
    chunk = index.get_chunks(dup_ids[:1])[0]
    assert chunk["sources"] == ["x/guide.txt", "y/copy-of-guide.txt"] and chunk["source"] == "x/guide.txt"

    # removing one copy keeps the content for the other; removing both collects it
    (folder / "x" / "guide.txt").unlink()
    report = index.sync(folder, embedder=fake_embedder, progress=False)
    assert report.removed == 1 and report.chunks_removed == 0
    assert index.get_chunks(dup_ids[:1])[0]["sources"] == ["y/copy-of-guide.txt"]
    (folder / "y" / "copy-of-guide.txt").unlink()
    report = index.sync(folder, embedder=fake_embedder, progress=False)
    assert report.chunks_removed == len(dup_ids)
    assert index.get_chunks(dup_ids) == []
    assert index.store.count("contents") == 1
    assert consistent(index)


def test_copy_of_already_indexed_file_is_not_parsed(tmp_path, make_index, fake_embedder, parse_spy):
    folder = write_files(tmp_path / "docs", {"a.txt": sentences(1)})
    index = make_index()
    index.sync(folder, embedder=fake_embedder, progress=False)
    (folder / "b.txt").write_bytes((folder / "a.txt").read_bytes())
    report = index.sync(folder, embedder=fake_embedder, progress=False)
    assert (report.added, report.renamed, report.unchanged) == (1, 0, 1)
    assert parse_spy == ["a.txt"]


def test_bad_files_are_reported_and_the_run_goes_on(tmp_path, make_index, fake_embedder):
    folder = write_files(tmp_path / "docs", {
        "good.txt": sentences(1), "broken.pdf": b"%PDF-1.4 this is not really a pdf", "empty.md": "",
        "picture.png": b"\x89PNG\r\n", "more.txt": sentences(2),
    })
    lines: list[str] = []
    index = make_index()
    report = index.sync(folder, embedder=fake_embedder, progress=False, log=lines.append)
    assert report.added == 2 and report.skipped == 1
    failed = dict(report.failed)
    assert set(failed) == {"broken.pdf", "empty.md"}
    assert failed["broken.pdf"].endswith("broken.pdf: corrupt PDF, cannot be parsed; repair it (qpdf in.pdf fixed.pdf) or export it again")
    assert failed["empty.md"].endswith("empty.md: empty file")
    assert lines == [failed["broken.pdf"], failed["empty.md"]] or sorted(lines) == sorted(failed.values())
    assert all("\n" not in line for line in lines)
    assert "failed 2" in report.summary() and "skipped 1 unsupported" in report.summary()


def test_file_that_turns_bad_keeps_its_indexed_version(tmp_path, make_index, fake_embedder):
    folder = write_files(tmp_path / "docs", {"notes.md": sentences(4)})
    index = make_index()
    index.sync(folder, embedder=fake_embedder, progress=False)
    before = chunk_set(index)
    (folder / "notes.md").write_text("")
    report = index.sync(folder, embedder=fake_embedder, progress=False)
    assert report.failed[0][1].endswith("notes.md: empty file (the version indexed before is kept)")
    assert chunk_set(index) == before


def test_max_bytes_limit(tmp_path, make_index, fake_embedder):
    folder = write_files(tmp_path / "docs", {"big.txt": "word " * 400, "small.txt": "tiny text here"})
    index = make_index()
    report = index.sync(folder, embedder=fake_embedder, progress=False, max_bytes=1000)
    assert [name for name, _ in report.failed] == ["big.txt"]
    assert "over the" in report.failed[0][1] and "--max-file-mb" in report.failed[0][1]


def test_add_files_and_remove_files(tmp_path, make_index, fake_embedder):
    folder = write_files(tmp_path / "docs", {"a.txt": sentences(1)})
    uploads = write_files(tmp_path / "uploads", {"u1.txt": sentences(11), "u2.md": sentences(12)})
    index = make_index()
    index.sync(folder, embedder=fake_embedder, progress=False)
    report = index.add_files([uploads / "u1.txt", uploads / "u2.md"], embedder=fake_embedder, progress=False)
    assert report.added == 2 and report.removed == 0
    assert sorted(f["source"] for f in index.files()) == ["a.txt", "u1.txt", "u2.md"]
    # a folder sync never deletes files that came from elsewhere
    report = index.sync(folder, embedder=fake_embedder, progress=False)
    assert report.removed == 0 and len(index.files()) == 3
    n_u1 = next(f["chunks"] for f in index.files() if f["source"] == "u1.txt")
    assert index.remove_files(["u1.txt"]) == n_u1
    assert sorted(f["source"] for f in index.files()) == ["a.txt", "u2.md"]
    assert consistent(index)


@pytest.mark.parametrize("kind", ["hnsw", "ivfpq"])
def test_other_vector_kinds_follow_the_folder(tmp_path, make_index, fake_embedder, kind):
    folder = write_files(tmp_path / "docs", {f"f{i}.txt": sentences(i) for i in range(6)})
    index = make_index(vector_kind=kind)
    index.sync(folder, embedder=fake_embedder, progress=False)
    (folder / "f0.txt").unlink()
    (folder / "f1.txt").write_text("Replaced by a short note about rename detection.")
    index.sync(folder, embedder=fake_embedder, progress=False)
    assert consistent(index)
    q = fake_embedder.encode_query("Replaced by a short note about rename detection.")
    _, ids = index.vector_search(q, 1)
    assert index.get_chunks(ids[0])[0]["source"] == "f1.txt"
    if kind == "ivfpq":
        assert "exact flat search until 10,240 vectors" in index.info(vectors=True)["vectors"]


def test_a_trained_ivfpq_index_returns_exact_scores(tmp_path, make_index, fake_embedder, monkeypatch):
    """Once IVF-PQ holds codes, Index.vector_search re-scores its candidates with the SQLite vectors."""
    import numpy as np

    from ragapp.index.vectors import IVFPQStore

    monkeypatch.setattr(IVFPQStore.__init__, "__defaults__", (None, 4, 32, 60))  # train at 60 vectors
    folder = write_files(tmp_path / "docs", {f"f{i}.txt": sentences(i, n=30) for i in range(6)})
    index = make_index(vector_kind="ivfpq", chunk_tokens=24, overlap=0)
    index.sync(folder, embedder=fake_embedder, progress=False)
    assert index.vectors().approximate_scores
    chunks = list(index.all_chunks())
    assert len(chunks) >= 60
    exact = {int(i): v for ids, vecs in index.store.embeddings() for i, v in zip(ids, vecs)}
    for _cid, text in chunks[:10]:
        q = fake_embedder.encode_query(text)
        scores, ids = index.vector_search(q, 3)
        best = max(exact, key=lambda i: float(exact[i] @ np.ravel(q)))
        assert ids[0][0] == best
        assert scores[0][0] == pytest.approx(float(exact[best] @ np.ravel(q)), abs=1e-5)
