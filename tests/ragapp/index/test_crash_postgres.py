"""kill -9 during indexing into PostgreSQL: the collection stays consistent, and the next run ends
with exactly the chunks of a clean build (none lost, none duplicated).

As test_crash.py does for SQLite, with fewer kills (each step costs a database round of commits):
the indexer is forked from a forkserver that imported ragapp once, SIGKILLed at a random moment
while the folder keeps changing. A killed client's transaction is rolled back by the server and its
advisory lock released; after each kill the derived data (term counts, BM25 totals) must still
agree with the chunks, and the lock must be free for the next writer.
"""

from __future__ import annotations

import multiprocessing
import os
import random
from pathlib import Path

from conftest import FakeEmbedder, minilm_tokenizer, sentences, write_files
from test_crash import chunk_set, kill_during_runs

from ragapp.index.index import Index

KILLS = 5
DELAY = 0.01
PRELOAD = ["ragapp.index.index", "ragapp.index.sync", "ragapp.index.postgres", "ragapp.ingest.chunking",
           "ragapp.ingest.loaders", "transformers", "psycopg", "conftest", "test_crash_postgres"]
TOKENIZER = minilm_tokenizer()


def run_indexer(index_dir: str, folder: str, started) -> None:
    import ragapp.index.sync

    ragapp.index.sync.EMBED_GROUP = 6
    embedder = FakeEmbedder(TOKENIZER, delay=DELAY)
    started.set()
    index = Index.open("docs", Path(index_dir))
    index.sync(Path(folder), embedder=embedder, progress=False, workers=0)


def check_consistent(index_dir) -> int:
    index = Index.open("docs", index_dir)
    try:
        store = index.store
        ids = store.chunk_ids().tolist()
        assert len(ids) == len(set(ids))
        assert all(paths for _, paths, *_ in store.chunk_rows()), "a chunk no file cites"
        for f in index.files():
            assert store.has_content(f["hash"])
        assert store._meta("n_chunks") == len(ids)
        assert store._meta("total_len") == store._x("SELECT COALESCE(SUM(n_lex), 0) FROM chunks").fetchone()[0]
        df = dict(store._x("SELECT lexeme, df FROM terms").fetchall())
        assert df == dict(store._x("SELECT u.lexeme, count(*) FROM chunks c, unnest(to_tsvector('english', c.text)) u GROUP BY u.lexeme").fetchall())
        assert store.try_lock_writer(), "the killed writer's advisory lock is still held"
        store.unlock_writer()
        return store.version()
    finally:
        index.close()


def test_sigkill_during_postgres_indexing(tmp_path, tokenizer, pg_url, monkeypatch):
    here = Path(__file__).resolve().parent
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(here), str(here.parents[1]), str(here.parents[2])]))
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    rng = random.Random(20250611)
    folder = write_files(tmp_path / "docs", {f"f{i:02d}.txt": sentences(i, 16) for i in range(30)})
    (folder / "moved").mkdir()
    index_dir = tmp_path / "indexes"
    Index.create("docs", index_dir, embedder=FakeEmbedder(tokenizer), store=pg_url).close()

    killed_mid_run, killed_after_commit = kill_during_runs(
        ctx, run_indexer, index_dir, folder, rng, KILLS, check_consistent,
        pause=lambda step_time: rng.uniform(0.3, 0.9) * step_time, join=180)
    assert killed_mid_run >= 3, f"only {killed_mid_run} of {KILLS} kills landed during a run"
    assert killed_after_commit >= 1, "no kill landed after a commit"

    index = Index.open("docs", index_dir)
    index.sync(folder, embedder=FakeEmbedder(tokenizer), progress=False, workers=0)
    clean = Index.create("clean", index_dir, embedder=FakeEmbedder(tokenizer))  # SQLite: the reference
    clean.sync(folder, embedder=FakeEmbedder(tokenizer), progress=False, workers=0)
    assert chunk_set(index) == chunk_set(clean)
    assert sorted(f["source"] for f in index.files()) == sorted(f["source"] for f in clean.files())
    # the HNSW index: built at the end of the first complete run, kept up to date by the killed ones
    assert index.store._x("SELECT to_regclass('chunks_embedding')").fetchone()[0] is not None
    index.close()
    clean.close()
    check_consistent(index_dir)
