"""Index lifecycle: create/open, manifest, embedder mismatch, vector cache repair, rebuild, remove."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import FakeEmbedder, sentences, write_files

from ragapp.errors import EmbedderMismatch, IndexNotFound, InvalidInput, RagError
from ragapp.index.index import Index, list_indexes, rebuild_index, remove_index


@pytest.fixture
def synced(tmp_path, make_index, fake_embedder):
    folder = write_files(tmp_path / "docs", {f"f{i}.txt": sentences(i, 20) for i in range(5)})
    index = make_index()
    index.sync(folder, embedder=fake_embedder, progress=False)
    return index, folder


def test_manifest_records_embedder_chunking_vectors_format(synced):
    index, _ = synced
    manifest = json.loads((index.root / "manifest.json").read_text())
    assert manifest["format_version"] == 1
    assert manifest["embedder"] == {"name": "fake-hash-32", "dim": 32, "max_seq_length": 256}
    assert manifest["chunking"] == {"chunk_tokens": 200, "overlap": 30}
    assert manifest["vectors"] == {"kind": "flat"}
    assert sorted(p.name for p in index.root.glob("vectors-*.faiss")) == [f"vectors-{index.store.version()}.faiss"]


def test_open_missing_index_names_the_fix(index_dir, make_index):
    make_index("notes")
    with pytest.raises(IndexNotFound) as err:
        Index.open("docs", index_dir)
    assert str(err.value) == (
        f"no index 'docs' in {index_dir}; indexes here: notes; create it with: ragapp index FOLDER --name docs"
    )


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden", "-flag", "sp ace", "x" * 65])
def test_bad_index_names(index_dir, name):
    with pytest.raises(InvalidInput, match="invalid index name"):
        Index.create(name, index_dir)


@pytest.mark.parametrize("params, message", [
    ({"vector_kind": "annoy"}, "unknown --vector 'annoy'; choose one of flat, hnsw, ivfpq"),
    ({"chunk_tokens": 8}, "--chunk-tokens 8 is too small; use at least 16"),
    ({"overlap": 200}, "--overlap 200 must be at least 0 and below --chunk-tokens 200"),
])
def test_bad_creation_settings(make_index, params, message):
    with pytest.raises(InvalidInput) as err:
        make_index(**params)
    assert str(err.value) == message


def test_create_twice_is_refused(make_index, index_dir):
    make_index("docs")
    with pytest.raises(InvalidInput, match="index 'docs' already exists"):
        make_index("docs")


def test_embedder_mismatch_is_refused_with_the_fix(synced, tokenizer, index_dir):
    index, folder = synced
    other = FakeEmbedder(tokenizer, dim=16)
    expected = "index 'docs' was built with fake-hash-32 (32-d); rebuild it with --rebuild or pass --embedder fake-hash-32"
    with pytest.raises(EmbedderMismatch) as err:
        index.sync(folder, embedder=other, progress=False)
    assert str(err.value) == expected
    with pytest.raises(EmbedderMismatch, match="rebuild it with --rebuild"):
        Index.open("docs", index_dir, embedder="all-MiniLM-L6-v2")
    with pytest.raises(EmbedderMismatch, match="pass --embedder fake-hash-32"):
        index.add_files([folder / "f0.txt"], embedder=other, progress=False)


def test_search_and_get_chunks(synced, fake_embedder):
    index, _ = synced
    target = index.get_chunks([int(index.store.chunk_ids()[3])])[0]
    scores, ids = index.vector_search(fake_embedder.encode_query(target["text"]), 3)
    assert ids.shape == (1, 3) and ids[0, 0] == target["id"]
    assert scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    got = index.get_chunks([ids[0, 1], -1, ids[0, 0], 10**9])  # order kept; -1 and unknown ids dropped
    assert [c["id"] for c in got] == [ids[0, 1], ids[0, 0]]
    assert set(got[0]) == {"id", "text", "source", "sources", "page", "start", "end"}
    assert dict(index.all_chunks())[target["id"]] == target["text"]


def test_vector_cache_is_repaired_from_stored_embeddings_not_re_embedded(synced, fake_embedder, index_dir):
    index, folder = synced
    q = fake_embedder.encode_query(sentences(2, 20)[:200])
    expected = index.vector_search(q, 5)[1]
    index.close()
    encoded = fake_embedder.encoded
    for f in (index_dir / "docs").glob("vectors-*.faiss"):
        f.unlink()
    reopened = Index.open("docs", index_dir)
    np.testing.assert_array_equal(reopened.vector_search(q, 5)[1], expected)
    # a damaged file is treated the same way
    (index_dir / "docs" / f"vectors-{reopened.store.version()}.faiss").write_bytes(b"garbage")
    np.testing.assert_array_equal(Index.open("docs", index_dir).vector_search(q, 5)[1], expected)
    assert fake_embedder.encoded == encoded


def test_stale_vector_file_is_reconciled_by_chunk_id(synced, fake_embedder, index_dir):
    index, folder = synced
    old_file = next(index.root.glob("vectors-*.faiss"))
    kept = old_file.read_bytes()
    (folder / "f0.txt").unlink()
    (folder / "new.txt").write_text(sentences(42, 20))
    index.sync(folder, embedder=fake_embedder, progress=False)
    for f in index.root.glob("vectors-*.faiss"):
        f.unlink()
    old_file.write_bytes(kept)  # as if the process died before saving the new vectors
    reopened = Index.open("docs", index_dir)
    assert sorted(reopened.vectors().ids().tolist()) == sorted(reopened.store.chunk_ids().tolist())


def test_version_changes_only_when_chunks_change(synced, fake_embedder):
    index, folder = synced
    v1 = index.version()
    index.sync(folder, embedder=fake_embedder, progress=False)
    assert index.version() == v1
    (folder / "f1.txt").rename(folder / "g1.txt")  # a rename keeps the chunk set
    index.sync(folder, embedder=fake_embedder, progress=False)
    (folder / "f2.txt").write_text("changed")
    index.sync(folder, embedder=fake_embedder, progress=False)
    assert index.version() != v1


def test_info_list_and_remove(synced, index_dir):
    index, folder = synced
    info = index.info(vectors=True)
    assert (info["name"], info["files"], info["embedder"], info["dim"], info["vector_kind"]) == (
        "docs", 5, "fake-hash-32", 32, "flat")
    assert info["chunks"] == index.store.count("chunks") and info["bytes"] > 0
    assert info["folders"] == [str(folder.resolve())]
    assert info["vectors"] == f"flat, {info['chunks']} vectors of 32 dimensions"
    assert list_indexes(index_dir) == ["docs"]
    index.close()
    remove_index("docs", index_dir)
    assert list_indexes(index_dir) == [] and not any(index_dir.iterdir())
    with pytest.raises(IndexNotFound):
        remove_index("docs", index_dir)


def test_second_writer_is_refused_while_one_is_updating(synced):
    index, folder = synced
    with index.writing():
        with pytest.raises(RagError, match="is being updated by another ragapp process"):
            index.sync(folder, progress=False)


def test_rebuild_with_new_embedder_keeps_old_until_complete(synced, tokenizer, index_dir, tmp_path, monkeypatch,
                                                            fake_embedder):
    index, folder = synced
    upload = write_files(tmp_path / "up", {"upload.md": sentences(77)})
    index.add_files([upload / "upload.md"], embedder=fake_embedder, progress=False)
    upload.joinpath("upload.md").unlink()  # the original of an upload is gone: its stored text is used
    before = sorted(c[2] for c in index.store.chunk_rows())
    index.close()
    new_embedder = FakeEmbedder(tokenizer, dim=16)

    import ragapp.index.index as ix

    def crash(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(ix, "rebuild_swap", crash)
    with pytest.raises(KeyboardInterrupt):
        rebuild_index("docs", folder, index_dir, embedder_obj=new_embedder, progress=False)
    old = Index.open("docs", index_dir)  # still the old, complete index
    assert old.manifest["embedder"]["dim"] == 32 and len(old.files()) == 6
    old.close()
    monkeypatch.undo()

    encoded = new_embedder.encoded
    report = rebuild_index("docs", folder, index_dir, embedder_obj=new_embedder, progress=False)
    assert new_embedder.encoded == encoded, "the finished part of the rebuild is not embedded again"
    assert report.unchanged == 5
    new = Index.open("docs", index_dir)
    assert new.manifest["embedder"] == {"name": "fake-hash-16", "dim": 16, "max_seq_length": 256}
    assert sorted(c[2] for c in new.store.chunk_rows()) == before
    assert sorted(f["source"] for f in new.files()) == ["f0.txt", "f1.txt", "f2.txt", "f3.txt", "f4.txt", "upload.md"]
    assert new.vectors().dim == 16 and new.vectors().ntotal == len(before)
    assert [p.name for p in index_dir.iterdir()] == ["docs"]
