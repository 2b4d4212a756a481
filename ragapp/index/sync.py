"""Keeping an index in step with a folder: incremental, deduplicated, resumable.

For each file of the folder, cheapest test first:
1. size and mtime as stored → unchanged, not even read;
2. content key (sha256 of extension + bytes) as stored → unchanged (only the mtime is updated);
3. content already in the index under another path (a moved, renamed or copied file) → the
   path is pointed at the stored chunks: nothing parsed, nothing embedded;
4. otherwise the file is parsed in a worker process (ragapp.ingest.parse_pool: a file that hangs,
   runs out of memory or crashes its parser is skipped with one line, and the run goes on),
   chunked in a thread of this process, embedded, and committed; the workers parse the next
   files while the main thread embeds. Identical chunks of one file are stored once, and text
   that is not prose (ragapp.ingest.degenerate) is left out but for its beginning, with a note.
Then the files that left the folder are removed, and content no file points at is collected.

Every commit is one SQLite transaction holding whole files, so a run killed at any moment
(Ctrl-C, kill -9, power cut) leaves each file either at its old or its new state; the next run
sees the rest as not done yet and finishes the job. Nothing is lost or stored twice.
The server relies on this to stop quickly (`stop_when`): an interrupted run just ends between two
commits, like a killed one, and the next run finishes it.
"""

from __future__ import annotations

import hashlib
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ragapp.config import DEFAULT_FILE_TIMEOUT_S, DEFAULT_MAX_FILE_BYTES
from ragapp.errors import Interrupted, LoaderError, RagError
from ragapp.index.store import FileRow, NewChunk
from ragapp.ingest.chunking import chunk_documents, make_splitter
from ragapp.ingest.loaders import load_file, read_bytes, scan_folder
from ragapp.ingest.parse_pool import ParseLimits, ParserPool

if TYPE_CHECKING:
    from ragapp.index.index import Index
    from ragapp.ingest.embed import Embedder

EMBED_GROUP = 256  # chunks embedded (and committed) together: long enough for well-filled batches
PARSE_AHEAD = 8  # files parsed ahead of the embedder (at least two a worker)
SAVE_EVERY_S = 60.0  # the FAISS cache is rewritten at most this often during a long run
STOP_SLICE = 32  # chunks embedded between two looks at the stop event (a second or two on CPU)


# The stop event of the runs started in this context (the server's indexing thread): None for the
# CLI. A context variable, so that the server's job functions need not pass it through.
_STOP: ContextVar[threading.Event | None] = ContextVar("ragapp_sync_stop", default=None)


@contextmanager
def stop_when(event: threading.Event) -> Iterator[None]:
    """Runs started inside stop soon after `event` is set, raising Interrupted: before each file
    is planned, between commits, and between slices of STOP_SLICE chunks being embedded. The index
    is left as after a kill (every commit holds whole files); running the same sync or upload
    again finishes the job without embedding anything twice."""
    token = _STOP.set(event)
    try:
        yield
    finally:
        _STOP.reset(token)


def stop_requested() -> bool:
    """Whether the runs of this context were asked to stop (see stop_when)."""
    event = _STOP.get()
    return event is not None and event.is_set()


@dataclass
class SyncReport:
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    renamed: int = 0
    skipped: int = 0  # unsupported file types
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, one-line reason)
    notes: list[tuple[str, str]] = field(default_factory=list)  # (path, one line): indexed, with a remark
    chunks_added: int = 0
    chunks_removed: int = 0
    seconds: float = 0.0
    pages: int = 0  # documents parsed: PDF pages, or 1 per other file
    embedded: int = 0  # chunks that went through the embedder

    def summary(self) -> str:
        return (
            f"added {self.added}, updated {self.updated}, removed {self.removed}, renamed {self.renamed}, "
            f"unchanged {self.unchanged}, skipped {self.skipped} unsupported, failed {len(self.failed)}; "
            f"chunks +{self.chunks_added} -{self.chunks_removed}; {self.seconds:.1f} s"
        )


def content_key(path: Path) -> str:
    """sha256 of the extension and the bytes: the same bytes as .html and as .txt are read
    differently, so they are different contents."""
    digest = hashlib.sha256(path.suffix.lower().encode() + b"\0")
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _load_file(path: Path, max_bytes: int, pool: ParserPool | None = None):
    # Looked up at call time so that tests can count the parses (ragapp.index.sync._load_file).
    if pool is None:
        return load_file(path, max_bytes=max_bytes)
    return pool.load(path, max_bytes)


@dataclass
class _Job:
    path: Path
    rel: str
    key: str
    size: int
    mtime_ns: int
    had_row: bool
    aliases: list[tuple[str, int, int, bool]] = field(default_factory=list)  # (rel, size, mtime_ns, had_row)
    chunks: list[NewChunk] = field(default_factory=list)
    pages: int = 0
    left_out: int = 0  # characters of text left out as not prose


class _Syncer:
    def __init__(self, index: Index, root: str, embedder: Embedder | None, progress: bool, max_bytes: int,
                 log: Callable[[str], None] | None, parsing: ParseLimits | None = None):
        self.index, self.store, self.root = index, index.store, root
        self.embedder_arg, self.max_bytes = embedder, max_bytes
        self.parsing = parsing or ParseLimits()
        self.progress, self.log = progress, log
        self.report = SyncReport()
        self.repoints: list[tuple[str, list[str]]] = []  # new paths pointed at stored content
        self.last_save = time.monotonic()
        self.stop = _STOP.get()

    def check_stop(self) -> None:
        if self.stop is not None and self.stop.is_set():
            raise Interrupted(f"indexing {self.index.name!r} was interrupted by the server's shutdown after "
                              f"{self.report.added + self.report.updated} file(s); the rest is indexed when it "
                              "runs again (uploads resume by themselves when the server starts)")

    def fail(self, rel: str, reason: str, had_row: bool = False) -> None:
        if had_row:
            reason += " (the version indexed before is kept)"
        self.report.failed.append((rel, reason))
        if self.log:
            self.log(reason)

    def note(self, rel: str, line: str) -> None:
        self.report.notes.append((rel, line))
        if self.log:
            self.log(line)

    def _loader_reason(self, path: Path, exc: BaseException | None = None) -> str:
        """The loader's own one-line message for a file we could not stat or read (nothing is parsed)."""
        try:
            read_bytes(path, self.max_bytes)
        except LoaderError as err:
            return str(err)
        return f"{path}: {exc}" if exc else f"{path}: cannot be read"

    # -- stage 1: decide what each file needs, without parsing ------------------------------------
    def plan(self, items: list[tuple[Path, str]], bar) -> list[_Job]:
        jobs: dict[str, _Job] = {}
        for path, rel in items:
            self.check_stop()
            try:
                st = path.stat()
            except OSError as exc:
                self.fail(rel, self._loader_reason(path, exc))
                bar.update(1)
                continue
            row = self.store.file(rel)
            if row and row.root == self.root and row.size == st.st_size and row.mtime_ns == st.st_mtime_ns:
                self.report.unchanged += 1
                bar.update(1)
                continue
            if st.st_size > self.max_bytes or st.st_size == 0:
                self.fail(rel, self._loader_reason(path), had_row=row is not None)
                bar.update(1)
                continue
            try:
                key = content_key(path)
            except OSError as exc:
                self.fail(rel, self._loader_reason(path, exc), had_row=row is not None)
                bar.update(1)
                continue
            if row and row.hash == key:
                with self.store.transaction():
                    self.store.touch_file(rel, st.st_size, st.st_mtime_ns, root=self.root)
                self.report.unchanged += 1
                bar.update(1)
            elif self.store.has_content(key):
                self._point(rel, key, st.st_size, st.st_mtime_ns, row is not None)
                bar.update(1)
            elif key in jobs:  # a second copy of content parsed in this very run
                jobs[key].aliases.append((rel, st.st_size, st.st_mtime_ns, row is not None))
            else:
                jobs[key] = _Job(path, rel, key, st.st_size, st.st_mtime_ns, row is not None)
        return list(jobs.values())

    def _point(self, rel: str, key: str, size: int, mtime_ns: int, had_row: bool) -> None:
        """Point a path at content already stored: a rename, a copy, or a revert to old content."""
        with self.store.transaction():
            prior = [p for p in self.store.paths_of(key) if p != rel]
            gone = self.store.put_file(FileRow(rel, key, size, mtime_ns, self.root))
        self.report.chunks_removed += len(gone)
        if had_row:
            self.report.updated += 1
        else:
            self.repoints.append((rel, prior))

    # -- stage 2: parse ahead in worker processes, embed and commit in groups ----------------------
    def ingest(self, jobs: list[_Job], bar) -> None:
        if not jobs:
            return
        embedder = self.index.embedder(self.embedder_arg)
        workers = self.parsing.n_workers
        threads = max(1, min(workers, len(jobs)))
        chunking = self.index.manifest["chunking"]
        # One splitter a parse thread, made here before any embedding starts: each holds its own
        # copy of the Rust tokenizer (the embedder's is never used from two threads at once) and
        # its own cache of counts.
        splitters: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(threads):
            splitters.put(make_splitter(embedder.tokenizer, chunking["chunk_tokens"], chunking["overlap"],
                                        max_tokens=embedder.max_seq_length, prose_only=True))
        pool = ParserPool(self.parsing) if workers else None

        def parse(job: _Job) -> _Job:
            # A thread waits here for a worker process to parse the file, then chunks it (the
            # chunker is Python; the embedder, running meanwhile, releases the GIL).
            docs = _load_file(job.path, self.max_bytes, pool)
            splitter = splitters.get()
            try:
                before = splitter.left_out
                chunks = chunk_documents(docs, None, splitter=splitter)
                job.left_out = splitter.left_out - before
            finally:
                splitters.put(splitter)
            seen: set[str] = set()
            for c in chunks:
                if c.text not in seen:  # a text repeated in one file is stored, and embedded, once
                    seen.add(c.text)
                    job.chunks.append(NewChunk(c.text, c.page, c.start, c.end, c.n_tokens))
            job.pages = len(docs)
            return job

        executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ragapp-parse")
        pending: list[_Job] = []
        try:
            todo = iter(jobs)
            ahead = max(PARSE_AHEAD, 2 * threads)
            queue_: deque[tuple[_Job, Future]] = deque(
                (job, executor.submit(parse, job)) for job in [next(todo) for _ in range(min(ahead, len(jobs)))]
            )
            while queue_:
                self.check_stop()
                job, future = queue_.popleft()
                nxt = next(todo, None)
                if nxt is not None:
                    queue_.append((nxt, executor.submit(parse, nxt)))
                try:
                    pending.append(future.result())
                except LoaderError as err:
                    self._fail_job(job, str(err))
                    bar.update(1 + len(job.aliases))
                except RagError:  # not the file's fault (a worker could not start): stop the run
                    raise
                except Exception as err:  # noqa: BLE001 - a parser crash is one file's problem
                    self._fail_job(job, f"{job.path}: {type(err).__name__}: {err}")
                    bar.update(1 + len(job.aliases))
                if sum(len(j.chunks) for j in pending) >= EMBED_GROUP or not queue_:
                    self._commit(pending, embedder, bar)
                    pending = []
        finally:
            if pool is not None:
                pool.close()  # kills busy workers too, so that no thread waits out a slow file
            executor.shutdown(wait=False, cancel_futures=True)

    def _fail_job(self, job: _Job, reason: str) -> None:
        self.fail(job.rel, reason, job.had_row)
        for rel, _, _, had_row in job.aliases:
            self.fail(rel, reason, had_row)

    def _commit(self, group: list[_Job], embedder: Embedder, bar) -> None:
        if not group:
            return
        texts = [c.text for job in group for c in job.chunks]
        # Batches of 32: on CPU each runs whole on one thread; 64 would add ~250 MB of peak memory
        # (attention scores of 64 x 12 heads x 256 x 256 floats) and was not faster (measured).
        if self.stop is None:
            vecs = embedder.encode(texts, batch_size=32)
        else:  # in slices, so that a shutdown waits for one slice, not for the whole group
            import numpy as np

            parts = []
            for i in range(0, len(texts), STOP_SLICE):
                self.check_stop()
                parts.append(embedder.encode(texts[i : i + STOP_SLICE], batch_size=32))
            vecs = np.concatenate(parts)
        self.report.embedded += len(texts)
        offset = 0
        with self.store.transaction():
            for job in group:
                n = len(job.chunks)
                self.store.add_content(job.key, job.chunks, vecs[offset : offset + n], job.pages)
                offset += n
                for rel, size, mtime_ns, had_row in [(job.rel, job.size, job.mtime_ns, job.had_row), *job.aliases]:
                    gone = self.store.put_file(FileRow(rel, job.key, size, mtime_ns, self.root))
                    self.report.chunks_removed += len(gone)
                    if had_row:
                        self.report.updated += 1
                    elif rel == job.rel:
                        self.report.added += 1
                    else:
                        self.repoints.append((rel, [job.rel]))
        for job in group:
            self.report.chunks_added += len(job.chunks)
            self.report.pages += job.pages
            bar.update(1 + len(job.aliases))
            if job.left_out:
                self.note(job.rel, f"{job.path}: left out {job.left_out:,} characters of repeated text or text "
                                   "without word breaks (their beginning is indexed)")
        bar.set_postfix(chunks=self.report.chunks_added, refresh=False)
        if not self.store.searches and time.monotonic() - self.last_save > SAVE_EVERY_S:  # a FAISS checkpoint
            self.index.save_vectors()
            self.last_save = time.monotonic()

    # -- stage 3: files that left the folder ------------------------------------------------------
    def delete_missing(self, seen: set[str]) -> set[str]:
        gone = [f.path for f in self.store.files_under(self.root) if f.path not in seen]
        if gone:
            self.report.chunks_removed += len(self.store.delete_files(gone))
        return set(gone)

    def account(self, gone: set[str]) -> None:
        """A new path whose content was stored under a path that left the folder is a rename;
        any other new path to stored content is a copy (counted as added, nothing embedded)."""
        claimed: set[str] = set()
        for _rel, prior in self.repoints:
            source = next((p for p in prior if p in gone and p not in claimed), None)
            if source is None:
                self.report.added += 1
            else:
                claimed.add(source)
                self.report.renamed += 1
        self.report.removed = len(gone) - len(claimed)

    def run(self, items: list[tuple[Path, str]], delete_missing: bool) -> SyncReport:
        from tqdm.auto import tqdm

        start = time.monotonic()
        with self.index.writing():
            with tqdm(total=len(items), unit="file", desc=f"indexing {self.index.name}", disable=not self.progress,
                      file=sys.stderr, dynamic_ncols=True) as bar:
                jobs = self.plan(items, bar)
                self.ingest(jobs, bar)
            gone = self.delete_missing({rel for _, rel in items}) if delete_missing else set()
            self.account(gone)
            self.index.save_vectors()
        self.report.seconds = time.monotonic() - start
        return self.report


def sync_folder(index: Index, folder: Path, embedder: Embedder | None = None, progress: bool = True,
                max_bytes: int = DEFAULT_MAX_FILE_BYTES, log: Callable[[str], None] | None = None,
                within: list[Path] | None = None, workers: int | None = None,
                file_timeout: float | None = DEFAULT_FILE_TIMEOUT_S, file_memory_mb: int | None = None) -> SyncReport:
    """Bring the index in step with `folder`. `log` gets one line per bad file (and per note);
    files are parsed by `workers` processes (None: one a core; 0: in this process, unlimited), each
    within `file_timeout` seconds and `file_memory_mb` of memory (None: a share of the RAM)."""
    parsing = ParseLimits(workers, file_timeout, file_memory_mb)
    if embedder is not None:
        index.check_embedder(embedder)
    supported, unsupported = scan_folder(folder, within=within)
    items = [(path, path.relative_to(folder).as_posix()) for path in supported]
    syncer = _Syncer(index, str(folder.resolve()), embedder, progress, max_bytes, log, parsing)
    syncer.report.skipped = len(unsupported)
    return syncer.run(items, delete_missing=True)


def add_files(index: Index, paths: list[Path], base: Path | None = None, embedder: Embedder | None = None,
              progress: bool = True, max_bytes: int = DEFAULT_MAX_FILE_BYTES,
              log: Callable[[str], None] | None = None, workers: int | None = None,
              file_timeout: float | None = DEFAULT_FILE_TIMEOUT_S, file_memory_mb: int | None = None) -> SyncReport:
    """Add or replace these files only; the parsing limits as in sync_folder."""
    parsing = ParseLimits(workers, file_timeout, file_memory_mb)
    if embedder is not None:
        index.check_embedder(embedder)
    items = []
    for path in paths:
        try:
            rel = path.resolve().relative_to(base.resolve()).as_posix() if base else path.name
        except ValueError:
            rel = path.name
        items.append((path, rel))
    root = str(base.resolve()) if base else ""
    return _Syncer(index, root, embedder, progress, max_bytes, log, parsing).run(items, delete_missing=False)
