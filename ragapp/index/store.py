"""The SQLite store of an index: the single source of truth.

Tables (see `SCHEMA`):
- contents: one row per distinct file content (key = sha256 of the file's extension and bytes).
- chunks:   the chunks of a content, with text, page, character offsets and the embedding
            (float32 blob). Chunks belong to content, not to paths, so a renamed file or a second
            copy of a file re-uses them, and a chunk id never changes while its content is stored.
- files:    path → content key, plus size and mtime (the no-read "unchanged" shortcut) and the
            folder it was indexed from.
- meta:     `version`, bumped by every transaction that changes the set of chunks.

Every change is one transaction (`with store.transaction():`), so a process killed at any moment
leaves either the old or the new state (SQLite's WAL journal guarantees it). The FAISS file next
to this store is only a cache derived from the embeddings stored here.

Why not an ORM: six small tables and a dozen queries; plain sqlite3 is clearer.
This is one of the two implementations of ragapp.index.backend.ChunkStore (the other, for
collections shared by several servers: ragapp.index.postgres).
"""

from __future__ import annotations

import fcntl
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ragapp.index.backend import FileRow, NewChunk

__all__ = ["SCHEMA", "FileRow", "NewChunk", "Store"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS contents (
    hash TEXT PRIMARY KEY,
    n_chunks INTEGER NOT NULL,
    pages INTEGER NOT NULL,          -- documents the loader returned (PDF pages; 1 otherwise)
    added REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,   -- AUTOINCREMENT: an id is never reused
    hash TEXT NOT NULL REFERENCES contents(hash),
    ord INTEGER NOT NULL,
    text TEXT NOT NULL,
    page INTEGER,
    start INTEGER NOT NULL,
    end INTEGER NOT NULL,
    n_tokens INTEGER NOT NULL,
    embedding BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_hash ON chunks(hash);
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,           -- as cited: relative to the folder it was indexed from
    hash TEXT NOT NULL REFERENCES contents(hash),
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    root TEXT NOT NULL,              -- absolute folder it came from ('' for uploaded files)
    indexed_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS files_hash ON files(hash);
CREATE INDEX IF NOT EXISTS files_root ON files(root);
"""


class Store:
    kind = "sqlite"
    searches = False  # dense and lexical search run on the FAISS and BM25 caches beside the file
    lock_wait_s = 0.0  # a second writer is refused at once (the CLI says so; the server's jobs take turns)

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock_fh = None
        # isolation_level=None: we open transactions ourselves with BEGIN IMMEDIATE, so the write
        # lock is taken before any read of the transaction.
        self.db = sqlite3.connect(str(self.path), isolation_level=None, timeout=30, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a killed process never loses a committed transaction (only a power
        # cut can lose the last ones, and even then the database stays consistent).
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self._in_tx = False
        # Every statement is idempotent, so a process killed half-way through creating the schema
        # leaves nothing the next open cannot finish.
        self.db.executescript(SCHEMA)
        self.db.execute("INSERT OR IGNORE INTO meta VALUES ('version', '0')")

    def close(self) -> None:
        self.db.close()

    # -- one writer at a time: an flock on .lock beside the store, freed by the kernel if we die --
    def try_lock_writer(self) -> bool:
        fh = open(self.path.parent / ".lock", "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            return False
        self._lock_fh = fh
        return True

    def unlock_writer(self) -> None:
        fh, self._lock_fh = self._lock_fh, None
        if fh is not None:
            fcntl.flock(fh, fcntl.LOCK_UN)
            fh.close()

    @contextmanager
    def transaction(self):
        """One atomic change. Nested uses join the outer transaction."""
        if self._in_tx:
            yield
            return
        self.db.execute("BEGIN IMMEDIATE")
        self._in_tx = True
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        else:
            self.db.execute("COMMIT")
        finally:
            self._in_tx = False

    @contextmanager
    def snapshot(self):
        """A consistent read of several queries (WAL readers see one committed state)."""
        if self._in_tx:
            yield
            return
        self.db.execute("BEGIN")
        self._in_tx = True
        try:
            yield
        finally:
            self._in_tx = False
            self.db.execute("COMMIT")

    # -- versions -------------------------------------------------------------------------------
    def version(self) -> int:
        return int(self.db.execute("SELECT value FROM meta WHERE key='version'").fetchone()[0])

    def _bump(self) -> None:
        self.db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key='version'")

    # -- files ----------------------------------------------------------------------------------
    def file(self, path: str) -> FileRow | None:
        row = self.db.execute("SELECT path, hash, size, mtime_ns, root FROM files WHERE path=?", (path,)).fetchone()
        return FileRow(*row) if row else None

    def files_under(self, root: str) -> list[FileRow]:
        rows = self.db.execute("SELECT path, hash, size, mtime_ns, root FROM files WHERE root=? ORDER BY path", (root,))
        return [FileRow(*r) for r in rows]

    def files(self) -> list[dict]:
        rows = self.db.execute(
            "SELECT f.path, f.size, f.mtime_ns, c.n_chunks, f.hash, f.root FROM files f "
            "JOIN contents c ON c.hash = f.hash ORDER BY f.path"
        )
        return [
            {"source": p, "size": s, "mtime": m / 1e9, "chunks": n, "hash": h, "root": r} for p, s, m, n, h, r in rows
        ]

    def roots(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT root FROM files ORDER BY root")]

    def has_content(self, key: str) -> bool:
        return self.db.execute("SELECT 1 FROM contents WHERE hash=?", (key,)).fetchone() is not None

    def paths_of(self, key: str) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT path FROM files WHERE hash=? ORDER BY path", (key,))]

    def put_file(self, row: FileRow) -> list[int]:
        """Point `row.path` at content `row.hash` (which must exist). Returns the chunk ids of the
        content it pointed at before, if that content is now garbage-collected."""
        with self.transaction():
            old = self.file(row.path)
            self.db.execute(
                "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?)",
                (row.path, row.hash, row.size, row.mtime_ns, row.root, time.time()),
            )
            return self._collect(old.hash) if old and old.hash != row.hash else []

    def touch_file(self, path: str, size: int, mtime_ns: int, root: str | None = None) -> None:
        """Same content, new mtime (e.g. `touch`) or folder: remember it so the next run skips the read."""
        if root is None:
            self.db.execute("UPDATE files SET size=?, mtime_ns=? WHERE path=?", (size, mtime_ns, path))
        else:
            self.db.execute("UPDATE files SET size=?, mtime_ns=?, root=? WHERE path=?", (size, mtime_ns, root, path))

    def delete_files(self, paths: Iterable[str]) -> list[int]:
        """Remove file rows; returns the ids of the chunks garbage-collected with them."""
        removed: list[int] = []
        with self.transaction():
            for path in paths:
                old = self.file(path)
                if old is None:
                    continue
                self.db.execute("DELETE FROM files WHERE path=?", (path,))
                removed += self._collect(old.hash)
        return removed

    def _collect(self, key: str) -> list[int]:
        """Delete content `key` and its chunks if no file points at it any more."""
        if self.db.execute("SELECT 1 FROM files WHERE hash=? LIMIT 1", (key,)).fetchone():
            return []
        ids = [r[0] for r in self.db.execute("SELECT id FROM chunks WHERE hash=?", (key,))]
        self.db.execute("DELETE FROM chunks WHERE hash=?", (key,))
        self.db.execute("DELETE FROM contents WHERE hash=?", (key,))
        if ids:
            self._bump()
        return ids

    # -- contents and chunks --------------------------------------------------------------------
    def add_content(self, key: str, chunks: list[NewChunk], embeddings: np.ndarray, pages: int) -> list[int]:
        """Store a content's chunks and their embeddings; returns the new chunk ids in order."""
        assert len(chunks) == len(embeddings)
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        ids = []
        with self.transaction():
            self.db.execute(
                "INSERT INTO contents VALUES (?, ?, ?, ?)", (key, len(chunks), pages, time.time())
            )
            for ord_, (chunk, vec) in enumerate(zip(chunks, embeddings)):
                cur = self.db.execute(
                    "INSERT INTO chunks (hash, ord, text, page, start, end, n_tokens, embedding) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (key, ord_, chunk.text, chunk.page, chunk.start, chunk.end, chunk.n_tokens, vec.tobytes()),
                )
                ids.append(cur.lastrowid)
            if ids:
                self._bump()
        return ids

    def count(self, table: str) -> int:
        assert table in ("files", "chunks", "contents")
        return int(self.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

    def files_stamp(self) -> tuple[int, float]:
        """(files, latest indexing time): changes when any file is added, removed or renamed."""
        return tuple(self.db.execute("SELECT COUNT(*), COALESCE(MAX(indexed_at), 0) FROM files").fetchone())

    def stored_chunks(self, key: str) -> tuple[list[NewChunk], int]:
        """The chunks of one content, in order, and its page count (to copy it into another index)."""
        rows = self.db.execute("SELECT text, page, start, end, n_tokens FROM chunks WHERE hash=? ORDER BY ord",
                               (key,)).fetchall()
        pages = self.db.execute("SELECT pages FROM contents WHERE hash=?", (key,)).fetchone()[0]
        return [NewChunk(*r) for r in rows], pages

    def content_chunk_ids(self, key: str) -> list[int]:
        return [r[0] for r in self.db.execute("SELECT id FROM chunks WHERE hash=? ORDER BY ord", (key,))]

    def pages(self) -> int:
        return int(self.db.execute("SELECT COALESCE(SUM(pages), 0) FROM contents").fetchone()[0])

    def chunk_ids(self) -> np.ndarray:
        return np.fromiter((r[0] for r in self.db.execute("SELECT id FROM chunks")), dtype=np.int64)

    def embeddings(self, ids: Iterable[int] | None = None, batch: int = 50_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, vectors) in batches: all chunks, or only `ids`."""
        def flush(rows):
            ids_ = np.array([r[0] for r in rows], dtype=np.int64)
            vecs = np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows])
            return ids_, vecs

        if ids is None:
            rows = []
            for row in self.db.execute("SELECT id, embedding FROM chunks ORDER BY id"):
                rows.append(row)
                if len(rows) == batch:
                    yield flush(rows)
                    rows = []
            if rows:
                yield flush(rows)
            return
        ids = [int(i) for i in ids]
        for i in range(0, len(ids), 900):  # SQLite limits the number of ? in one statement
            part = ids[i : i + 900]
            rows = self.db.execute(
                f"SELECT id, embedding FROM chunks WHERE id IN ({','.join('?' * len(part))})", part
            ).fetchall()
            if rows:
                yield flush(rows)

    def chunks_by_id(self, ids: list[int]) -> dict[int, dict]:
        out: dict[int, dict] = {}
        sources: dict[str, list[str]] = {}
        for i in range(0, len(ids), 900):
            part = [int(x) for x in ids[i : i + 900]]
            rows = self.db.execute(
                "SELECT id, hash, text, page, start, end FROM chunks "
                f"WHERE id IN ({','.join('?' * len(part))})",
                part,
            )
            for cid, key, text, page, start, end in rows:
                if key not in sources:
                    sources[key] = self.paths_of(key)
                paths = sources[key]
                out[cid] = {
                    "id": cid, "text": text, "source": paths[0] if paths else "", "sources": list(paths),
                    "page": page, "start": start, "end": end,
                }
        return out

    def iter_chunks(self) -> Iterator[tuple[int, str]]:
        yield from self.db.execute("SELECT id, text FROM chunks ORDER BY id")

    def chunk_rows(self) -> list[tuple]:
        """Every chunk with the paths citing it: for tests and consistency checks."""
        rows = self.db.execute("SELECT id, hash, text, page, start, end FROM chunks ORDER BY id").fetchall()
        return [(cid, tuple(self.paths_of(key)), text, page, start, end) for cid, key, text, page, start, end in rows]
