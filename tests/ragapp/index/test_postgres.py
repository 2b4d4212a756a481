"""Collections in PostgreSQL (ragapp.index.postgres), against a real server started by pgserver.

The same folder, synced through the same changes into a SQLite index and a PostgreSQL collection,
must end with the same chunks (text, citing paths, page, offsets); searches and filters must find
what the SQLite path finds; two Index objects on one database see each other's commits; writers
take turns through the advisory lock, which a killed writer loses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import FakeEmbedder, sentences, write_files

from ragapp.errors import IndexNotFound, RagError
from ragapp.index.index import Index, list_indexes, rebuild_index, remove_index
from ragapp.index.postgres import glob_regex
from ragapp.retrieve.retriever import Retriever

ROOT = Path(__file__).resolve().parents[3]


def chunk_set(index):
    return sorted((paths, text, page, start, end) for _, paths, text, page, start, end in index.store.chunk_rows())


def test_server_starts(pg_server):
    # pgserver prints nothing; the start time is worth knowing (about 1-2 s on the reference machine)
    print(f"pgserver started PostgreSQL in {pg_server.start_seconds:.2f} s")
    assert pg_server.start_seconds < 60


def test_sync_matches_sqlite_through_every_kind_of_change(tmp_path, index_dir, fake_embedder, pg_url):
    folder = write_files(tmp_path / "docs", {"a.txt": sentences(1), "sub/b.md": sentences(2, 40),
                                             "c.html": "<html><body><p>" + sentences(3) + "</p></body></html>",
                                             "dup1.txt": sentences(4), "dup2.txt": sentences(4)})
    lite = Index.create("lite", index_dir, embedder=fake_embedder)
    pg = Index.create("pg", index_dir, embedder=fake_embedder, store=pg_url)
    assert pg.store.kind == "postgresql" and json.loads((index_dir / "pg" / "manifest.json").read_text())["store"] == {
        "kind": "postgresql", "url": pg_url.replace("postgres:@", "postgres@")}

    def both(expect=None):
        reports = [ix.sync(folder, embedder=fake_embedder, progress=False) for ix in (lite, pg)]
        keys = ("added", "updated", "removed", "renamed", "unchanged", "chunks_added", "chunks_removed")
        assert [getattr(reports[0], k) for k in keys] == [getattr(reports[1], k) for k in keys]
        assert chunk_set(lite) == chunk_set(pg)
        assert lite.files() == [{**f, "mtime": f["mtime"]} for f in pg.files()]
        if expect:
            assert {k: getattr(reports[1], k) for k in expect} == expect
        return reports[1]

    assert pg.store._x("SELECT to_regclass('chunks_embedding')").fetchone()[0] is None  # built after the first fill
    both({"added": 5})
    assert pg.store._x("SELECT to_regclass('chunks_embedding')").fetchone()[0] is not None
    encoded = fake_embedder.encoded
    both({"unchanged": 5})
    assert fake_embedder.encoded == encoded, "nothing re-embedded"
    (folder / "a.txt").write_text(sentences(11))  # change
    (folder / "sub/b.md").rename(folder / "moved.md")  # rename
    (folder / "c.html").unlink()  # delete
    (folder / "dup2.txt").unlink()  # one copy of a duplicate
    both({"updated": 1, "renamed": 1, "removed": 2})
    assert pg.store.count("contents") == lite.store.count("contents") == 3
    assert pg.info()["store"] == "postgresql" and pg.info()["bytes"] > 0
    assert "pgvector HNSW" in pg.info(vectors=True)["vectors"]
    # removing files: the content no file cites goes, with its chunks and term counts
    assert pg.remove_files(["moved.md"]) == lite.remove_files(["moved.md"]) > 0
    assert chunk_set(lite) == chunk_set(pg)
    n, total = pg.store._meta("n_chunks"), pg.store._meta("total_len")
    assert n == pg.store.count("chunks") and total == pg.store._x("SELECT SUM(n_lex) FROM chunks").fetchone()[0]
    df = dict(pg.store._x("SELECT lexeme, df FROM terms").fetchall())
    real = dict(pg.store._x("SELECT u.lexeme, count(*) FROM chunks c, unnest(to_tsvector('english', c.text)) u GROUP BY u.lexeme").fetchall())
    assert df == real
    postings = pg.store._x("SELECT count(*), count(DISTINCT chunk_id) FROM postings").fetchone()
    assert postings == (sum(real.values()), n)
    lite.close()
    pg.close()


@pytest.fixture
def pair(tmp_path, index_dir, fake_embedder, pg_url):
    """The same small corpus in SQLite ("lite") and PostgreSQL ("pg"); yields their Retrievers."""
    folder = write_files(tmp_path / "docs", {
        "guide.md": "Rebuilding an index re-embeds every chunk with the new embedder.\n\n" + sentences(5),
        "notes/cats.txt": "Cats sleep sixteen hours a day. Kittens sleep even longer.",
        "notes/dogs.txt": "Dogs bark at the mailman. A beagle howls at sirens.",
        "reports/q1.html": "<p>Quarterly revenue grew eleven percent in the first quarter.</p>",
        **{f"filler/f{i}.txt": sentences(100 + i) for i in range(8)},
    })
    for name, store in (("lite", None), ("pg", pg_url)):
        with Index.create(name, index_dir, embedder=fake_embedder, store=store) as ix:
            ix.sync(folder, embedder=fake_embedder, progress=False)
    lite = Retriever("lite", index_dir=index_dir, embedder=fake_embedder)
    pg = Retriever("pg", index_dir=index_dir, embedder=fake_embedder)
    yield lite, pg
    lite.close()
    pg.close()


def texts(passages):
    return [(p.source, p.text) for p in passages]


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_search_finds_what_sqlite_finds(pair, mode):
    lite, pg = pair
    for query in ("how long do cats sleep", "beagle sirens", "quarterly revenue", "rebuild the index embedder"):
        got, want = pg.search(query, k=3, mode=mode), lite.search(query, k=3, mode=mode)
        assert got[0].source == want[0].source, (query, mode, texts(got), texts(want))
        if mode == "dense":  # cosines, as FAISS's inner products of normalized vectors
            assert got[0].score == pytest.approx(want[0].score, abs=1e-5)
    assert pg.search("how long do cats sleep", k=2, mmr=True)[0].source == "notes/cats.txt"


def test_a_held_out_copy_of_a_postgres_collection_is_embedded_and_leaves_the_database_alone(pair, tmp_path,
                                                                                            index_dir, fake_embedder):
    """ragapp eval's unanswerable questions: the collection without some files, as a local copy."""
    from ragapp.eval.holdout import held_out_index

    _, pg = pair
    with Index.open("pg", index_dir) as original:
        before = chunk_set(original)
    name, folder = held_out_index("pg", index_dir, ["notes/cats.txt"], tmp_path / "work")
    assert folder == tmp_path / "work" and name.startswith("pg-without-")
    with Index.open(name, folder) as copy, Index.open("pg", index_dir) as original:
        assert copy.info()["store"] == "sqlite" and copy.info()["embedder"] == original.info()["embedder"]
        assert chunk_set(copy) == [c for c in before if "notes/cats.txt" not in c[0]] != before
        assert chunk_set(original) == before  # the database is untouched
    held = Retriever(name, index_dir=folder, embedder=fake_embedder)
    assert "notes/cats.txt" not in [p.source for p in held.search("how long do cats sleep", k=5)]
    assert held.search("beagle sirens", k=1)[0].source == pg.search("beagle sirens", k=1)[0].source
    held.close()
    assert held_out_index("pg", index_dir, ["notes/cats.txt"], tmp_path / "work") == (name, folder)  # made once


FILTERS = [
    {"source": "notes/*"},
    {"source": "cats.txt"},  # no "/": the file name alone
    {"source": ["reports/*.html", "guide.md"]},
    {"ext": ".txt"},
    {"ext": ["md", ".HTML"]},
    {"source": "filler/f[0-3].txt"},
    {"source": "filler/f[!0-3].txt", "ext": ".txt"},
    {"source": "*/?ats.txt"},
    {"page": [1, 3]},  # no paged file: nothing passes
]


@pytest.mark.parametrize("filters", FILTERS)
def test_filters_in_sql_match_the_python_filters(pair, filters):
    lite, pg = pair
    for mode in ("dense", "bm25"):
        got = sorted(texts(pg.search("cats dogs revenue index chunk sleep", k=50, mode=mode, filters=filters)))
        want = sorted(texts(lite.search("cats dogs revenue index chunk sleep", k=50, mode=mode, filters=filters)))
        assert got == want, (filters, mode)


@pytest.mark.parametrize("glob, path", [("a*b", "a/x/b"), ("[]x]", "]"), ("[^a]", "^"), ("a.b", "a.b"),
                                        ("a+(b)", "a+(b)"), ("x\\y", "x\\y"), ("[!a]", "b"), ("*.pdf", "a.pdf")])
def test_glob_regex_agrees_with_fnmatch(pg_url, glob, path):
    import fnmatch

    import psycopg

    with psycopg.connect(pg_url) as conn:
        for candidate in (path, path + "z", "z" + path, "a"):
            got = conn.execute("SELECT %s ~ %s", (candidate, glob_regex(glob))).fetchone()[0]
            assert got == fnmatch.fnmatchcase(candidate, glob), (glob, candidate)


def test_a_second_process_sees_commits_without_restart(tmp_path, index_dir, fake_embedder, pg_url, monkeypatch):
    """Two servers on one database: B was started (opened its Retriever) before A indexed; B's next
    search sees A's commits, found through RAGAPP_DATABASE_URL with no local manifest at all."""
    monkeypatch.setenv("RAGAPP_DATABASE_URL", pg_url)
    dir_a, dir_b = index_dir / "a", index_dir / "b"  # two machines' index folders
    a = Index.create("shared", dir_a, embedder=fake_embedder)  # the default store is the env's database
    assert a.store.kind == "postgresql"
    assert list_indexes(dir_b) == ["shared"]
    b = Retriever("shared", index_dir=dir_b, embedder=fake_embedder)
    assert b.search("owls hunt at night", k=3) == []
    a.sync(write_files(tmp_path / "one", {"owls.txt": "Owls hunt at night in silence."}),
           embedder=fake_embedder, progress=False)
    assert b.search("owls hunt at night", k=3)[0].text == "Owls hunt at night in silence."
    a.remove_files(["owls.txt"])
    assert b.search("owls hunt at night", k=3) == []
    # a writer waits for the other (lock_wait_s), and refuses once that is over
    other = Index.open("shared", dir_b)
    other.store.lock_wait_s = 0.3
    with a.writing():
        with pytest.raises(RagError, match="being updated by another ragapp process"):
            with other.writing():
                pass
    with other.writing():  # free again
        pass
    # a killed writer's lock is freed by the server
    code = ("import os, sys; from ragapp.index.index import Index; ix = Index.open('shared', sys.argv[1]); "
            "ix.writing().__enter__(); print('locked', flush=True); os.kill(os.getpid(), 9)")
    proc = subprocess.run([sys.executable, "-c", code, str(dir_a)], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert "locked" in proc.stdout and proc.returncode == -9, proc.stderr
    with other.writing():
        pass
    b.close()
    a.close()
    other.close()


def test_cli_index_search_info_remove(tmp_path, pg_url, monkeypatch, capsys):
    from ragapp import cli

    monkeypatch.delenv("RAGAPP_DATABASE_URL", raising=False)
    monkeypatch.setattr("ragapp.ingest.embed.load_embedder", lambda name: FakeEmbedder(_tokenizer(), name=name))
    folder = write_files(tmp_path / "docs", {"cats.txt": "Cats sleep sixteen hours a day.", "dogs.txt": "Dogs bark."})
    ix = ["--index-dir", str(tmp_path / "indexes")]
    assert cli.main(["index", str(folder), "--name", "pets", "--store", pg_url, "--no-progress", "--workers", "0", *ix]) == 0
    assert "added 2" in capsys.readouterr().out
    assert cli.main(["search", "how long do cats sleep", "--index", "pets", "--json", *ix]) == 0
    assert json.loads(capsys.readouterr().out)[0]["source"] == "cats.txt"
    assert cli.main(["info", "pets", *ix]) == 0
    out = capsys.readouterr().out
    assert "pgvector HNSW" in out and "in the database" in out
    assert cli.main(["index", str(folder), "--name", "pets", "--store", "sqlite", *ix]) != 0
    assert "a collection cannot move to --store sqlite" in capsys.readouterr().err
    assert cli.main(["index", str(folder), "--name", "other", "--store", pg_url, "--vector", "ivfpq", *ix]) != 0
    assert "--vector ivfpq is for the embedded store" in capsys.readouterr().err
    assert cli.main(["remove", "pets", "--yes", *ix]) == 0
    with pytest.raises(IndexNotFound):
        Index.open("pets", tmp_path / "indexes", store=pg_url)
    import psycopg

    with psycopg.connect(pg_url) as conn:  # the schema went with the catalog row
        assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'rag\\_%'").fetchone()[0] == 0


def _tokenizer():
    from conftest import minilm_tokenizer

    global _TOK
    try:
        return _TOK
    except NameError:
        _TOK = minilm_tokenizer()
        return _TOK


def test_rebuild_swaps_in_the_database(tmp_path, index_dir, tokenizer, pg_url):
    folder = write_files(tmp_path / "docs", {"a.txt": sentences(1), "b.txt": sentences(2)})
    small = FakeEmbedder(tokenizer, dim=16)
    with Index.create("docs", index_dir, embedder=small, store=pg_url) as ix:
        ix.sync(folder, embedder=small, progress=False)
        before = chunk_set(ix)
        old_schema = ix.store.schema
    big = FakeEmbedder(tokenizer, dim=48)
    rebuild_index("docs", folder, index_dir, embedder_obj=big, progress=False, workers=0)
    with Index.open("docs", index_dir) as ix:
        assert ix.dim == 48 and ix.store.schema != old_schema and chunk_set(ix) == before
        assert ix.vector_search(big.encode(["x"]), 2)[1].shape == (1, 2)
    import psycopg

    with psycopg.connect(pg_url) as conn:
        assert [r[0] for r in conn.execute("SELECT name FROM ragapp.collections")] == ["docs"]
        assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", (old_schema,)).fetchone()[0] == 0
    remove_index("docs", index_dir)


def test_nul_characters_and_empty_queries(index_dir, fake_embedder, pg_url):
    from ragapp.index.backend import FileRow, NewChunk

    text = "Zebras graze.\x00 Then they rest in the shade."
    with Index.create("odd", index_dir, embedder=fake_embedder, store=pg_url) as ix:
        with ix.store.transaction():  # the loaders refuse NULs as binary; the store must hold them anyway
            ix.store.add_content("k", [NewChunk(text, None, 0, len(text), 12)], fake_embedder.encode([text]), 1)
            ix.store.put_file(FileRow("odd.txt", "k", 1, 1, ""))
        (stored,) = [t for _, _, t, *_ in ix.store.chunk_rows()]
        assert stored == text.replace("\x00", "\ufffd")  # same length: offsets still hold
        assert ix.store.lexical_search("the and of", 5)[0].size == 0  # stop words only
        ids, scores = ix.store.lexical_search("zebras", 5)
        assert len(ids) == 1 and scores[0] > 0
        assert np.all(ix.store.dense_search(fake_embedder.encode_query("zebras"), 5)[0] == ids)


def test_ef_search_bounds_the_dense_candidates(tmp_path, index_dir, fake_embedder, pg_url, monkeypatch):
    from ragapp.errors import InvalidInput
    from ragapp.retrieve.retriever import RetrieverConfig

    folder = write_files(tmp_path / "docs", {f"f{i}.txt": sentences(i) for i in range(6)})
    with Index.create("ef", index_dir, embedder=fake_embedder, store=pg_url) as ix:
        ix.sync(folder, embedder=fake_embedder, progress=False)
        n = ix.store.count("chunks")
    assert n > 5
    for ef, want in ((None, n), (3, 3)):
        r = Retriever("ef", index_dir=index_dir, embedder=fake_embedder, config=RetrieverConfig(ef_search=ef))
        assert len(r.search("index vector chunk", k=n, mode="dense")) == want, ef
        r.close()
    monkeypatch.setenv("RAGAPP_EF_SEARCH", "4")
    with Index.open("ef", index_dir) as ix:
        assert ix.store.default_ef_search == 4
    monkeypatch.setenv("RAGAPP_EF_SEARCH", "5000")
    with pytest.raises(InvalidInput, match="RAGAPP_EF_SEARCH='5000': give a number of candidates from 1 to 1000"):
        Index.open("ef", index_dir)
