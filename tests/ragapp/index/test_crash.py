"""kill -9 at random moments, many times: the index always opens, and the next run finishes the
job with exactly the chunks a clean build has (none lost, none duplicated).

The indexer runs in a child process started by a multiprocessing *forkserver*: a clean process
that imports ragapp once and forks each indexer from there, so each of the 25 runs starts in a
fraction of a second (a fresh interpreter would spend seconds importing) and, unlike fork() from
the test process, inherits no threads or locks from other tests. The test SIGKILLs it at a random
time.
Between kills the folder changes (files added, edited, deleted, renamed, copied), so kills land
in every phase of a sync: parsing, embedding, committing, collecting, saving vectors.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from pathlib import Path

from conftest import FakeEmbedder, minilm_tokenizer, sentences, write_files

from ragapp.index.index import Index

KILLS = 25
DELAY = 0.01  # seconds a chunk in the fake embedder: a run takes a few tenths of a second
# Imported once by the forkserver; every indexer child is forked from it with these in memory.
PRELOAD = ["ragapp.index.index", "ragapp.index.sync", "ragapp.ingest.chunking", "ragapp.ingest.loaders", "transformers", "faiss", "conftest",
           "test_crash"]


# Loaded at import, so that the forkserver (which imports this module) holds it for every child.
TOKENIZER = minilm_tokenizer()


def run_indexer(index_dir: str, folder: str, started) -> None:
    """The child: one sync of the folder, committing every few files (the default groups 256
    chunks), so that a run has many commit points to be killed between."""
    import ragapp.index.sync

    ragapp.index.sync.EMBED_GROUP = 6
    embedder = FakeEmbedder(TOKENIZER, delay=DELAY)
    started.set()  # kill times count from here, not from the (variable) process start
    index = Index.open("docs", Path(index_dir))
    index.sync(Path(folder), embedder=embedder, progress=False)


def chunk_set(index):
    return sorted((paths, text, page, start, end) for _, paths, text, page, start, end in index.store.chunk_rows())


def check_opens_and_is_consistent(index_dir) -> int:
    """Returns the store version."""
    index = Index.open("docs", index_dir)
    try:
        ids = sorted(index.store.chunk_ids().tolist())
        assert len(ids) == len(set(ids))
        assert sorted(index.vectors().ids().tolist()) == ids
        assert all(paths for _, paths, *_ in index.store.chunk_rows()), "a chunk no file cites"
        for f in index.files():  # every file points at stored content
            assert index.store.has_content(f["hash"])
        return index.store.version()
    finally:
        index.close()


def mutate(folder, rng: random.Random, step: int) -> None:
    files = sorted(p for p in folder.rglob("*.txt"))
    for p in rng.sample(files, min(3, len(files))):
        p.write_text(sentences(rng.randrange(10**6), 16))
    for j in range(3):
        (folder / f"new-{step}-{j}.txt").write_text(sentences(rng.randrange(10**6), 16))
    files = sorted(p for p in folder.rglob("*.txt"))
    victim = rng.choice(files)
    victim.unlink()
    files.remove(victim)
    moved = rng.choice(files)
    moved.rename(folder / "moved" / f"m-{step}.txt") if (folder / "moved").is_dir() else None
    src = rng.choice(sorted(p for p in folder.rglob("*.txt")))
    (folder / f"copy-{step}.txt").write_bytes(src.read_bytes())


def kill_during_runs(ctx, target, index_dir, folder, rng, kills, check, pause, join: float = 120) -> tuple[int, int]:
    """Index the folder to the end, time one step's changes, then `kills` times: change the folder, start
    `target` in a child, SIGKILL it after pause(step_time) seconds and `check` the index (which returns the
    store version). Returns (kills that landed mid-run, of those the ones after a commit)."""

    def run_child():
        started = ctx.Event()
        child = ctx.Process(target=target, args=(str(index_dir), str(folder), started), daemon=True)
        child.start()
        assert started.wait(120), "the indexer did not start"
        return child

    def run_to_end() -> float:
        child = run_child()
        start = time.monotonic()
        child.join(join)
        assert child.exitcode == 0, f"indexer exit code {child.exitcode}"
        return time.monotonic() - start

    run_to_end()
    # How long an uninterrupted run of one step's changes takes, to spread the kills over it.
    mutate(folder, rng, -1)
    step_time = run_to_end()

    killed_mid_run = killed_after_commit = 0
    version = check(index_dir)
    for step in range(kills):
        mutate(folder, rng, step)
        child = run_child()
        time.sleep(pause(step_time))
        child.kill()  # SIGKILL
        child.join(60)
        assert child.exitcode in (0, -signal.SIGKILL)
        new_version = check(index_dir)
        if child.exitcode == -signal.SIGKILL:
            killed_mid_run += 1
            killed_after_commit += new_version != version
        version = new_version
    return killed_mid_run, killed_after_commit


def test_sigkill_at_random_points_many_times(tmp_path, tokenizer, monkeypatch):
    # The forkserver imports PRELOAD with the environment's path (Python 3.11 does not pass it
    # sys.path), so it must find the tests' modules through PYTHONPATH.
    here = Path(__file__).resolve().parent
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(here), str(here.parents[1]), str(here.parents[2])]))
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    rng = random.Random(20241123)
    folder = write_files(tmp_path / "docs", {f"f{i:02d}.txt": sentences(i, 16) for i in range(30)})
    (folder / "moved").mkdir()
    index_dir = tmp_path / "indexes"
    Index.create("docs", index_dir, embedder=FakeEmbedder(tokenizer)).close()

    killed_mid_run, killed_after_commit = kill_during_runs(
        ctx, run_indexer, index_dir, folder, rng, KILLS, check_opens_and_is_consistent,
        pause=lambda step_time: rng.uniform(0.0, 1.5 * step_time))
    # The kills must have hit runs in the middle, also after some of their commits.
    assert killed_mid_run >= KILLS // 2, f"only {killed_mid_run} kills landed during a run"
    assert killed_after_commit >= 3, f"only {killed_after_commit} kills landed after a commit"

    # The next run finishes the job: exactly what a clean build of the final folder holds.
    index = Index.open("docs", index_dir)
    index.sync(folder, embedder=FakeEmbedder(tokenizer), progress=False)
    clean = Index.create("clean", index_dir, embedder=FakeEmbedder(tokenizer))
    clean.sync(folder, embedder=FakeEmbedder(tokenizer), progress=False)
    assert chunk_set(index) == chunk_set(clean)
    assert index.store.count("chunks") == clean.store.count("chunks")
    assert sorted(f["source"] for f in index.files()) == sorted(f["source"] for f in clean.files())
    index.close()
    check_opens_and_is_consistent(index_dir)
