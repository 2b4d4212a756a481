"""The PostgreSQL store of a collection (pgvector): one database shared by several ragapp processes.

Layout in the database:
    ragapp.collections(name, uid, manifest jsonb)   the catalog: the manifest lives here, so a server
                                                    on any machine opens a collection by its name
    rag_<uid>.meta(key, value)                      version (bumped whenever the chunk set changes),
                                                    n_chunks and total_len (BM25's N and average length)
    rag_<uid>.contents(hash, n_chunks, pages, added)
    rag_<uid>.chunks(id, hash, ord, text, page, start, end, n_tokens,
                     embedding vector(dim), n_lex)  HNSW index, cosine; n_lex: the length in lexemes
    rag_<uid>.files(path, hash, size, mtime_ns, root, indexed_at, ext)
    rag_<uid>.postings(lexeme, chunk_id, tf, n_lex, weight)   the inverted index, each lexeme's list
                                                    ordered by weight (BM25's tf part) in a B-tree
    rag_<uid>.terms(lexeme, df)                     document frequencies, kept in the same transactions

The same tables and the same rules as the SQLite store (ragapp.index.store): chunks belong to
content, files point at content, every change is one transaction holding whole files, so a process
killed at any moment (its connection drops, the server rolls its transaction back) leaves every
file at its old or its new state. Differences:
- the database searches: `dense_search` (pgvector HNSW; exact over the filtered rows when a filter is
  given, since HNSW filters after the graph walk and would return too few) and `lexical_search`
  (PostgreSQL's English full-text lexemes, scored by BM25 from the postings, the terms table and
  the meta counts: the formula bm25s uses, without the section context of ragapp.index.bm25).
  Unfiltered, each query lexeme contributes its `depth` best postings (by BM25 weight, read in order
  from the B-tree), so a query costs O(lexemes x depth) rows however common its words are; a chunk
  outside a common word's top `depth` misses that word's (small: low idf, low tf) share of the score.
  Filters become SQL (and lexical search is then exact over the postings of the filtered chunks).
  Nothing is cached in the process, so every query sees the last committed state of every writer;
- counters that every file would update (meta's version and BM25 totals, each lexeme's df) are
  summed in the process during a transaction and written once, just before its COMMIT: updating
  one row thousands of times in one transaction is quadratic in PostgreSQL (each update walks the
  row's chain of earlier versions);
- one writer a collection: a session-level advisory lock (pg_try_advisory_lock), freed by the server
  when the connection goes, also when the process is killed;
- NUL characters, which PostgreSQL text cannot hold, are stored as U+FFFD (same length: offsets hold).

psycopg and pgvector are imported when a PostgreSQL collection is used (`pip install -e '.[postgres]'`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from ragapp.errors import IndexNotFound, InvalidInput, MissingDependency, RagError
from ragapp.index.backend import FileRow, NewChunk

TS_CONFIG = "english"  # PostgreSQL's Snowball English stemmer and stop words (bm25s uses the same stemmer)
BM25_K1, BM25_B = 1.5, 0.75  # only order the postings lists; queries score with the Retriever's k1 and b
DEFAULT_EF_SEARCH = 200  # dense candidates a hybrid search takes from HNSW (see dense_search)
ENV_EF_SEARCH = "RAGAPP_EF_SEARCH"  # sets it for every command and server (RetrieverConfig.ef_search: per Retriever)
BUILD_MEMORY = "1GB"  # maintenance_work_mem while building the HNSW index (see build_vector_index)
LIST_DEPTH = 1000  # postings read from each query lexeme's list, at least (see lexical_search)
HNSW_M, HNSW_EF_CONSTRUCTION = 16, 64  # pgvector's defaults
MAX_EF_SEARCH = 1000  # pgvector's upper limit for hnsw.ef_search
_UID_RE = re.compile(r"^[0-9a-f]{32}$")

CATALOG = """
CREATE EXTENSION IF NOT EXISTS vector;
CREATE SCHEMA IF NOT EXISTS ragapp;
CREATE TABLE IF NOT EXISTS ragapp.collections (
    name TEXT PRIMARY KEY,
    uid TEXT UNIQUE NOT NULL,
    manifest JSONB NOT NULL
);
"""

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
INSERT INTO meta VALUES ('version', 0), ('n_chunks', 0), ('total_len', 0);
CREATE TABLE contents (
    hash TEXT PRIMARY KEY,
    n_chunks INTEGER NOT NULL,
    pages INTEGER NOT NULL,
    added DOUBLE PRECISION NOT NULL
);
CREATE TABLE chunks (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,   -- never reused
    hash TEXT NOT NULL REFERENCES contents(hash),
    ord INTEGER NOT NULL,
    text TEXT NOT NULL,
    page INTEGER,
    start INTEGER NOT NULL,
    "end" INTEGER NOT NULL,
    n_tokens INTEGER NOT NULL,
    embedding {vector_type} NOT NULL,
    n_lex INTEGER NOT NULL
);
CREATE INDEX chunks_hash ON chunks(hash);
CREATE TABLE postings (
    lexeme TEXT NOT NULL,
    chunk_id BIGINT NOT NULL REFERENCES chunks(id) ON DELETE CASCADE,
    tf INTEGER NOT NULL,
    n_lex INTEGER NOT NULL,         -- the chunk's, copied: scoring reads the index alone
    weight REAL NOT NULL            -- tf / (tf + k1 (1 - b + b n_lex / avg)) at the average when written: the list order
);
CREATE INDEX postings_list ON postings (lexeme, weight DESC) INCLUDE (chunk_id, tf, n_lex);
CREATE INDEX postings_chunk ON postings (chunk_id);
CREATE TABLE files (
    path TEXT PRIMARY KEY,
    hash TEXT NOT NULL REFERENCES contents(hash),
    size BIGINT NOT NULL,
    mtime_ns BIGINT NOT NULL,
    root TEXT NOT NULL,
    indexed_at DOUBLE PRECISION NOT NULL,
    ext TEXT NOT NULL               -- lower-case suffix of the path, for the "ext" filter
);
CREATE INDEX files_hash ON files(hash);
CREATE INDEX files_root ON files(root);
CREATE TABLE terms (lexeme TEXT PRIMARY KEY, df BIGINT NOT NULL);
"""

HNSW_INDEX = (f"CREATE INDEX IF NOT EXISTS chunks_embedding ON chunks USING hnsw (embedding vector_cosine_ops) "
              f"WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION})")


def _psycopg():
    try:
        import pgvector.psycopg  # noqa: F401
        import psycopg
    except ImportError as err:
        raise MissingDependency(
            f"PostgreSQL collections need psycopg and pgvector ({err.name} is missing): "
            "pip install -e '.[postgres]' (or pip install 'psycopg[binary]' pgvector)"
        ) from err
    return psycopg


def redact(url: str) -> str:
    """The URL without its password (what the manifest records)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc[1]}"))


def connect(url: str):
    """A connection (autocommit; transactions are opened explicitly) with the catalog in place and
    pgvector's types registered."""
    psycopg = _psycopg()
    from pgvector.psycopg import register_vector

    try:
        conn = psycopg.connect(url, autocommit=True)
    except psycopg.OperationalError as err:
        raise RagError(f"cannot connect to the database {redact(url)}: {str(err).strip()}; check the URL "
                       "(--store / RAGAPP_DATABASE_URL) and that the server runs (manifests keep no password: "
                       "give it in RAGAPP_DATABASE_URL, PGPASSWORD or ~/.pgpass)") from None
    exists = conn.execute("SELECT to_regclass('ragapp.collections') IS NOT NULL "
                          "AND EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'vector')").fetchone()[0]
    if not exists:
        try:
            with conn.transaction():
                # Two processes creating the catalog at once would collide on the system catalogs.
                conn.execute("SELECT pg_advisory_xact_lock(hashtext('ragapp catalog'))")
                conn.execute(CATALOG)
        except psycopg.errors.FeatureNotSupported as err:  # pragma: no cover - server without pgvector
            raise RagError(f"the database {redact(url)} has no pgvector extension: {err}; install pgvector "
                           "on the server (or use a managed PostgreSQL that offers it)") from None
    register_vector(conn)
    return conn


def list_collections(url: str) -> list[str]:
    conn = connect(url)
    try:
        return [r[0] for r in conn.execute("SELECT name FROM ragapp.collections ORDER BY name")]
    finally:
        conn.close()


def find_manifest(url: str, key: str) -> dict | None:
    conn = connect(url)
    try:
        row = conn.execute("SELECT manifest FROM ragapp.collections WHERE name = %s", (key,)).fetchone()
        return row[0] if row else None
    finally:
        conn.close()


def default_ef_search() -> int:
    """RAGAPP_EF_SEARCH, else DEFAULT_EF_SEARCH."""
    value = os.environ.get(ENV_EF_SEARCH, "").strip()
    if not value:
        return DEFAULT_EF_SEARCH
    if not value.isdigit() or not 1 <= int(value) <= MAX_EF_SEARCH:
        raise InvalidInput(f"{ENV_EF_SEARCH}={value!r}: give a number of candidates from 1 to {MAX_EF_SEARCH} "
                           f"(default {DEFAULT_EF_SEARCH}; more is more exact and slower)")
    return int(value)


def _schema(uid: str) -> str:
    if not _UID_RE.match(uid):
        raise RagError(f"collection uid {uid!r} is not 32 hex digits; the catalog was changed by hand")
    return f"rag_{uid}"


def _lock_key(uid: str) -> int:
    return int.from_bytes(hashlib.sha256(f"ragapp writer {uid}".encode()).digest()[:8], "big", signed=True)


def glob_regex(pattern: str) -> str:
    """A PostgreSQL regular expression matching what fnmatch.fnmatchcase(path, pattern) matches."""
    out, i, n = ["^"], 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            j = i
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:
                out.append("\\[")
                continue
            stuff, i = pattern[i:j], j + 1
            neg = stuff.startswith("!")
            stuff = stuff[1:] if neg else stuff
            stuff = stuff.replace("\\", "\\\\")
            if not neg and stuff.startswith("^"):
                stuff = "\\" + stuff
            out.append("[" + ("^" if neg else "") + stuff + "]")
        elif c.isalnum() or c == "_":
            out.append(c)
        else:
            out.append("\\" + c)
    return "".join(out) + "$"


def filter_sql(flt: Any) -> tuple[str, list]:
    """SQL conditions on chunks `c` (and their files) for a ragapp.retrieve.retriever.Filter:
    the page range, and a path citing the chunk that matches the extensions and one of the globs
    (a glob without "/" also matches the file name alone)."""
    if flt is None:
        return "TRUE", []
    conds, params = [], []
    if flt.pages is not None:
        lo, hi = flt.pages
        conds.append("c.page IS NOT NULL")
        if lo is not None:
            conds.append("c.page >= %s")
            params.append(int(lo))
        if hi is not None:
            conds.append("c.page <= %s")
            params.append(int(hi))
    path = []
    if flt.exts:
        path.append("f.ext = ANY(%s::text[])")
        params.append(list(flt.exts))
    if flt.sources:
        alts = []
        for glob in flt.sources:
            rx = glob_regex(glob)
            if "/" in glob:
                alts.append("f.path ~ %s")
                params.append(rx)
            else:
                alts.append("(f.path ~ %s OR regexp_replace(f.path, '^.*/', '') ~ %s)")
                params += [rx, rx]
        path.append("(" + " OR ".join(alts) + ")")
    if path:
        conds.append("EXISTS (SELECT 1 FROM files f WHERE f.hash = c.hash AND " + " AND ".join(path) + ")")
    return (" AND ".join(conds) or "TRUE"), params


def _vec(value) -> np.ndarray:
    """A vector column's value as float32 (pgvector's adapter gives a numpy array or a Vector)."""
    return np.asarray(value.to_numpy() if hasattr(value, "to_numpy") else value, dtype=np.float32)


class PostgresStore:
    """One collection in a PostgreSQL database: the ChunkStore of ragapp.index.backend."""

    kind = "postgresql"
    searches = True
    lock_wait_s = 600.0  # a second writer (another indexer, another server's upload) waits its turn

    def __init__(self, url: str, key: str):
        self.url, self.key = url, key
        self._tx_lock = threading.RLock()
        self._in_tx = False
        self._locked = False
        self._meta_delta: Counter[str] = Counter()  # written at COMMIT (see the module's docstring)
        self._df_delta: Counter[str] = Counter()
        self.default_ef_search = default_ef_search()
        self.db = connect(url)
        row = self.db.execute("SELECT uid, manifest FROM ragapp.collections WHERE name = %s", (key,)).fetchone()
        if row is None:
            self.db.close()
            raise IndexNotFound(f"no collection {key!r} in the database {redact(url)} (removed from another "
                                f"machine?); delete its pointer folder, or index it again with --store {redact(url)}")
        self.uid, self._manifest = row
        self.schema = _schema(self.uid)
        self._set_path()

    def _set_path(self) -> None:
        self.db.execute(f"SET search_path TO {self.schema}, public")
        self._ef = None  # hnsw.ef_search of this session (set by dense_search when it changes)

    def _conn(self):
        """The connection; a dropped one (database restarted) is replaced between transactions, unless
        it held the writer lock (then the writer must stop: its lock is gone)."""
        if self.db.broken or self.db.closed:
            if self._in_tx or self._locked:
                raise RagError(f"the connection to {redact(self.url)} was lost; run the command again")
            self.db = connect(self.url)
            self._set_path()
        return self.db

    def _x(self, sql: str, params=None):
        return self._conn().execute(sql, params)

    # -- lifecycle -------------------------------------------------------------------------------
    @classmethod
    def create(cls, url: str, key: str, manifest: dict) -> PostgresStore:
        conn = connect(url)
        try:
            schema = _schema(manifest["uid"])
            dim = manifest["embedder"]["dim"]
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtext('ragapp catalog'))")
                if conn.execute("SELECT 1 FROM ragapp.collections WHERE name = %s", (key,)).fetchone():
                    raise InvalidInput(f"collection {key!r} already exists in {redact(url)}; remove it first "
                                       f"(ragapp remove {key})")
                conn.execute("INSERT INTO ragapp.collections VALUES (%s, %s, %s)",
                             (key, manifest["uid"], json.dumps(manifest)))
                conn.execute(f"CREATE SCHEMA {schema}")
                conn.execute(f"SET LOCAL search_path TO {schema}, public")
                conn.execute(SCHEMA.format(vector_type=f"vector({int(dim)})" if dim else "vector"))
        finally:
            conn.close()
        return cls(url, key)

    def close(self) -> None:
        self.db.close()

    @property
    def manifest(self) -> dict:
        """The manifest as the catalog holds it now (another process may have recorded the dimension)."""
        row = self._x("SELECT manifest FROM ragapp.collections WHERE name = %s", (self.key,)).fetchone()
        if row is None:
            raise RagError(f"collection {self.key!r} was removed from {redact(self.url)}")
        return row[0]

    def save_manifest(self, manifest: dict) -> None:
        """Record a changed manifest; once the embedder's dimension is known, fix the vector column's
        dimension (HNSW needs it; the index itself comes with build_vector_index)."""
        dim = manifest["embedder"]["dim"]
        with self.transaction():
            self._x("UPDATE ragapp.collections SET manifest = %s WHERE name = %s", (json.dumps(manifest), self.key))
            if dim:
                typ = self._x("SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                              "WHERE attrelid = 'chunks'::regclass AND attname = 'embedding'").fetchone()[0]
                if typ == "vector":
                    self._x(f"ALTER TABLE chunks ALTER COLUMN embedding TYPE vector({int(dim)})")

    def build_vector_index(self) -> None:
        """The HNSW index, built in bulk if it is missing (a writer calls this at the end of each run).
        A new collection is filled without it: pgvector builds a graph from the rows several times
        faster than it inserts them one by one (BENCHMARKS.md), so the first run of a large folder
        pays the bulk price and later runs keep the graph up to date row by row. Until the first run
        ends (or if it was killed), searches are exact scans: right, only slower."""
        if self._x("SELECT to_regclass('chunks_embedding') IS NOT NULL").fetchone()[0]:
            return
        if self._x("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'chunks'::regclass "
                   "AND attname = 'embedding'").fetchone()[0] == "vector":
            return  # no dimension yet (nothing embedded)
        with self.transaction():
            # the graph is built fast only while it fits in maintenance_work_mem (64 MB by default,
            # ~25k 384-d vectors); 1 GB holds ~400k, and is taken for the build only
            self._x(f"SET LOCAL maintenance_work_mem = '{BUILD_MEMORY}'")
            self._x(HNSW_INDEX)

    def drop(self) -> None:
        """Remove the collection: its catalog row and its schema, in one transaction."""
        with self.transaction():
            self._x("DELETE FROM ragapp.collections WHERE name = %s", (self.key,))
            self._x(f"DROP SCHEMA {self.schema} CASCADE")

    def rename(self, new_key: str) -> None:
        """Put this collection under `new_key`, dropping the one there (the end of a --rebuild), atomically."""
        with self.transaction():
            self._x("SELECT pg_advisory_xact_lock(hashtext('ragapp catalog'))")
            old = self._x("SELECT uid FROM ragapp.collections WHERE name = %s", (new_key,)).fetchone()
            if old is not None:
                self._x("DELETE FROM ragapp.collections WHERE name = %s", (new_key,))
                self._x(f"DROP SCHEMA IF EXISTS {_schema(old[0])} CASCADE")
            self._x("UPDATE ragapp.collections SET name = %s WHERE name = %s", (new_key, self.key))
        self.key = new_key

    # -- transactions and the writer lock --------------------------------------------------------
    @contextmanager
    def transaction(self):
        """One atomic change. Nested uses join the outer transaction."""
        with self._tx_lock:
            if self._in_tx:
                yield
                return
            self._x("BEGIN")
            self._in_tx = True
            try:
                yield
                self._flush_counters()
            except BaseException:
                if not self.db.broken:
                    self.db.execute("ROLLBACK")
                raise
            else:
                self.db.execute("COMMIT")
            finally:
                self._in_tx = False
                self._meta_delta.clear()
                self._df_delta.clear()

    def _flush_counters(self) -> None:
        df = {k: v for k, v in self._df_delta.items() if v}
        if df:
            self._x("INSERT INTO terms SELECT * FROM unnest(%s::text[], %s::bigint[]) ON CONFLICT (lexeme) "
                    "DO UPDATE SET df = terms.df + EXCLUDED.df", (list(df), list(df.values())))
            self._x("DELETE FROM terms WHERE lexeme = ANY(%s::text[]) AND df <= 0", (list(df),))
        for key, delta in self._meta_delta.items():
            if delta:
                self._x("UPDATE meta SET value = value + %s WHERE key = %s", (int(delta), key))

    @contextmanager
    def snapshot(self):
        """Several queries reading one committed state."""
        with self._tx_lock:
            if self._in_tx:
                yield
                return
            self._x("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            self._in_tx = True
            try:
                yield
            finally:
                self._in_tx = False
                if not self.db.broken:
                    self.db.execute("COMMIT")

    def try_lock_writer(self) -> bool:
        got = bool(self._x("SELECT pg_try_advisory_lock(%s)", (_lock_key(self.uid),)).fetchone()[0])
        self._locked = got
        return got

    def unlock_writer(self) -> None:
        if self._locked and not self.db.broken and not self.db.closed:
            self.db.execute("SELECT pg_advisory_unlock(%s)", (_lock_key(self.uid),))
        self._locked = False

    # -- versions ---------------------------------------------------------------------------------
    def _meta(self, key: str) -> int:
        """A counter as this connection sees it (its transaction's unwritten changes included)."""
        return int(self._x("SELECT value FROM meta WHERE key = %s", (key,)).fetchone()[0]) + self._meta_delta[key]

    def version(self) -> int:
        return self._meta("version")

    def _add_meta(self, key: str, delta: int) -> None:
        assert self._in_tx, "counters change inside transaction()"
        self._meta_delta[key] += int(delta)

    def _count_lexemes(self, ids: list[int], sign: int) -> None:
        """Add (sign 1) or take (-1) the lexemes of chunks `ids` to the pending document frequencies."""
        for lexeme, n in self._x("SELECT lexeme, count(*) FROM postings WHERE chunk_id = ANY(%s::bigint[]) "
                                 "GROUP BY lexeme", (ids,)):
            self._df_delta[lexeme] += sign * n

    # -- files ------------------------------------------------------------------------------------
    def file(self, path: str) -> FileRow | None:
        row = self._x("SELECT path, hash, size, mtime_ns, root FROM files WHERE path = %s", (path,)).fetchone()
        return FileRow(*row) if row else None

    def files_under(self, root: str) -> list[FileRow]:
        rows = self._x("SELECT path, hash, size, mtime_ns, root FROM files WHERE root = %s ORDER BY path", (root,))
        return [FileRow(*r) for r in rows]

    def files(self) -> list[dict]:
        rows = self._x("SELECT f.path, f.size, f.mtime_ns, c.n_chunks, f.hash, f.root FROM files f "
                       "JOIN contents c ON c.hash = f.hash ORDER BY f.path")
        return [{"source": p, "size": s, "mtime": m / 1e9, "chunks": n, "hash": h, "root": r}
                for p, s, m, n, h, r in rows]

    def roots(self) -> list[str]:
        return [r[0] for r in self._x("SELECT DISTINCT root FROM files ORDER BY root")]

    def has_content(self, key: str) -> bool:
        return self._x("SELECT 1 FROM contents WHERE hash = %s", (key,)).fetchone() is not None

    def paths_of(self, key: str) -> list[str]:
        return [r[0] for r in self._x("SELECT path FROM files WHERE hash = %s ORDER BY path", (key,))]

    def put_file(self, row: FileRow) -> list[int]:
        with self.transaction():
            old = self.file(row.path)
            self._x("INSERT INTO files VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (path) DO UPDATE SET "
                    "hash = EXCLUDED.hash, size = EXCLUDED.size, mtime_ns = EXCLUDED.mtime_ns, root = EXCLUDED.root, "
                    "indexed_at = EXCLUDED.indexed_at",
                    (row.path, row.hash, row.size, row.mtime_ns, row.root, time.time(),
                     PurePosixPath(row.path).suffix.lower()))
            return self._collect(old.hash) if old and old.hash != row.hash else []

    def touch_file(self, path: str, size: int, mtime_ns: int, root: str | None = None) -> None:
        if root is None:
            self._x("UPDATE files SET size = %s, mtime_ns = %s WHERE path = %s", (size, mtime_ns, path))
        else:
            self._x("UPDATE files SET size = %s, mtime_ns = %s, root = %s WHERE path = %s", (size, mtime_ns, root, path))

    def delete_files(self, paths: Iterable[str]) -> list[int]:
        removed: list[int] = []
        with self.transaction():
            for path in paths:
                old = self.file(path)
                if old is None:
                    continue
                self._x("DELETE FROM files WHERE path = %s", (path,))
                removed += self._collect(old.hash)
        return removed

    def _collect(self, key: str) -> list[int]:
        """Delete content `key`, its chunks and their term counts if no file points at it any more."""
        if self._x("SELECT 1 FROM files WHERE hash = %s LIMIT 1", (key,)).fetchone():
            return []
        rows = self._x("SELECT id, n_lex FROM chunks WHERE hash = %s", (key,)).fetchall()
        ids = [r[0] for r in rows]
        if ids:
            self._count_lexemes(ids, -1)
            self._add_meta("n_chunks", -len(ids))
            self._add_meta("total_len", -sum(r[1] for r in rows))
        self._x("DELETE FROM chunks WHERE hash = %s", (key,))  # their postings go with them (ON DELETE CASCADE)
        self._x("DELETE FROM contents WHERE hash = %s", (key,))
        if ids:
            self._add_meta("version", 1)
        return ids

    def files_stamp(self) -> tuple:
        return tuple(self._x("SELECT COUNT(*), COALESCE(MAX(indexed_at), 0) FROM files").fetchone())

    # -- contents and chunks ------------------------------------------------------------------------
    def add_content(self, key: str, chunks: list[NewChunk], embeddings: np.ndarray, pages: int) -> list[int]:
        assert len(chunks) == len(embeddings)
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        with self.transaction():
            self._x("INSERT INTO contents VALUES (%s, %s, %s, %s)", (key, len(chunks), pages, time.time()))
            if not chunks:
                return []
            rows = [(key, ord_, c.text.replace("\0", "\ufffd"), c.page, c.start, c.end, c.n_tokens, vec)
                    for ord_, (c, vec) in enumerate(zip(chunks, embeddings))]
            cur = self._conn().cursor()
            # n_lex: the chunk's lexeme count, summed over the positions of its tsvector
            cur.executemany(
                "INSERT INTO chunks (hash, ord, text, page, start, \"end\", n_tokens, embedding, n_lex) "
                "SELECT %s, %s, t, %s, %s, %s, %s, %s, (SELECT COALESCE(SUM(cardinality(positions)), 0) "
                f"FROM unnest(to_tsvector('{TS_CONFIG}', t))) FROM (SELECT %s::text AS t) s RETURNING id, n_lex",
                [(k, o, p, s, e, n, v, t) for k, o, t, p, s, e, n, v in rows], returning=True)
            ids, total = [], 0
            while True:
                cid, n_lex = cur.fetchone()
                ids.append(int(cid))
                total += int(n_lex)
                if not cur.nextset():
                    break
            n, before = self._meta("n_chunks"), self._meta("total_len")
            avg = (before + total) / (n + len(ids)) if n + len(ids) else 1.0
            self._x("INSERT INTO postings SELECT u.lexeme, c.id, cardinality(u.positions), c.n_lex, "
                    "cardinality(u.positions)::real / (cardinality(u.positions) + %s * (1 - %s + %s * c.n_lex / %s)) "
                    f"FROM chunks c, unnest(to_tsvector('{TS_CONFIG}', c.text)) u WHERE c.hash = %s",
                    (BM25_K1, BM25_B, BM25_B, max(avg, 1.0), key))
            self._count_lexemes(ids, 1)
            self._add_meta("n_chunks", len(ids))
            self._add_meta("total_len", total)
            self._add_meta("version", 1)
        return ids

    def count(self, table: str) -> int:
        assert table in ("files", "chunks", "contents")
        return int(self._x(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

    def stored_chunks(self, key: str) -> tuple[list[NewChunk], int]:
        rows = self._x('SELECT text, page, start, "end", n_tokens FROM chunks WHERE hash = %s ORDER BY ord',
                       (key,)).fetchall()
        pages = self._x("SELECT pages FROM contents WHERE hash = %s", (key,)).fetchone()[0]
        return [NewChunk(*r) for r in rows], pages

    def content_chunk_ids(self, key: str) -> list[int]:
        return [r[0] for r in self._x("SELECT id FROM chunks WHERE hash = %s ORDER BY ord", (key,)).fetchall()]

    def pages(self) -> int:
        return int(self._x("SELECT COALESCE(SUM(pages), 0) FROM contents").fetchone()[0])

    def chunk_ids(self) -> np.ndarray:
        return np.array([r[0] for r in self._x("SELECT id FROM chunks ORDER BY id")], dtype=np.int64)

    def embeddings(self, ids: Iterable[int] | None = None, batch: int = 50_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if ids is None:
            cur = self._conn().cursor()
            cur.execute("SELECT id, embedding FROM chunks ORDER BY id")
            while rows := cur.fetchmany(batch):
                yield (np.array([r[0] for r in rows], np.int64),
                       np.stack([_vec(r[1]) for r in rows]))
            return
        ids = [int(i) for i in ids]
        for i in range(0, len(ids), batch):
            rows = self._x("SELECT id, embedding FROM chunks WHERE id = ANY(%s::bigint[])", (ids[i:i + batch],)).fetchall()
            if rows:
                yield (np.array([r[0] for r in rows], np.int64),
                       np.stack([_vec(r[1]) for r in rows]))

    def chunks_by_id(self, ids: list[int]) -> dict[int, dict]:
        if not ids:
            return {}
        # a subquery a chunk (files_hash index lookups), not a join the planner may turn into a scan of files
        rows = self._x(
            'SELECT c.id, c.text, c.page, c.start, c."end", '
            "ARRAY(SELECT f.path FROM files f WHERE f.hash = c.hash ORDER BY f.path) "
            "FROM chunks c WHERE c.id = ANY(%s::bigint[])",
            ([int(i) for i in ids],))
        return {cid: {"id": cid, "text": text, "source": paths[0] if paths else "", "sources": list(paths),
                      "page": page, "start": start, "end": end}
                for cid, text, page, start, end, paths in rows}

    def iter_chunks(self) -> Iterator[tuple[int, str]]:
        yield from self._x("SELECT id, text FROM chunks ORDER BY id").fetchall()

    def chunk_rows(self) -> list[tuple]:
        rows = self._x(
            'SELECT c.id, c.text, c.page, c.start, c."end", '
            "COALESCE(array_agg(f.path ORDER BY f.path) FILTER (WHERE f.path IS NOT NULL), '{}') "
            "FROM chunks c LEFT JOIN files f ON f.hash = c.hash GROUP BY c.id ORDER BY c.id").fetchall()
        return [(cid, tuple(paths), text, page, start, end) for cid, text, page, start, end, paths in rows]

    # -- search -------------------------------------------------------------------------------------
    def dense_search(self, qvec: np.ndarray, k: int, flt: Any = None,
                     ef_search: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(chunk ids, cosines), best first. Unfiltered: the HNSW index, with hnsw.ef_search = `ef_search`
        (default: k, at least DEFAULT_EF_SEARCH, at most 1,000; HNSW returns at most ef_search chunks).
        Filtered: exact, over the chunks passing the filter (HNSW would filter after its walk and come
        back short). One statement (its own snapshot): a search costs one round trip."""
        q = np.asarray(qvec, dtype=np.float32).reshape(-1)
        where, params = filter_sql(flt)
        with self._tx_lock:
            if flt is None:
                ef = max(1, min(MAX_EF_SEARCH, int(ef_search or max(k, DEFAULT_EF_SEARCH))))
                self._conn()  # first: a new connection resets _ef
                if self._ef != ef or self._in_tx:  # a session setting, unless a rollback could undo it
                    self._x("SELECT set_config('hnsw.ef_search', %s, false)", (str(ef),))
                    self._ef = None if self._in_tx else ef
                rows = self._x("SELECT id, 1 - (embedding <=> %s::vector) FROM chunks "
                               "ORDER BY embedding <=> %s::vector LIMIT %s", (q, q, int(k))).fetchall()
            else:
                rows = self._x(f"WITH c AS MATERIALIZED (SELECT c.id, c.embedding FROM chunks c WHERE {where}) "
                               "SELECT id, 1 - (embedding <=> %s::vector) FROM c "
                               "ORDER BY embedding <=> %s::vector LIMIT %s", (*params, q, q, int(k))).fetchall()
        return (np.array([r[0] for r in rows], np.int64), np.array([r[1] for r in rows], np.float32))

    def lexical_search(self, query: str, k: int, flt: Any = None, k1: float = 1.5,
                       b: float = 0.75) -> tuple[np.ndarray, np.ndarray]:
        """(chunk ids, BM25 scores), best first: chunks holding any of the query's lexemes, scored
        idf * tf / (tf + k1 (1 - b + b len/avglen)) summed over the lexemes. Unfiltered, each lexeme's
        list is read to its max(k, LIST_DEPTH) best postings (see the module's docstring); filtered,
        every posting of the filtered chunks counts. One statement, so one snapshot and one round trip."""
        where, params = filter_sql(flt)
        head = (f"WITH q AS (SELECT tsvector_to_array(to_tsvector('{TS_CONFIG}', %s)) AS lexemes), "
                "m AS (SELECT max(value) FILTER (WHERE key = 'n_chunks')::float8 AS n, "
                "             greatest(max(value) FILTER (WHERE key = 'total_len')::float8 "
                "                      / greatest(max(value) FILTER (WHERE key = 'n_chunks'), 1), 1e-9) AS avgdl "
                "      FROM meta), "
                "w AS (SELECT t.lexeme, ln(1 + (m.n - t.df + 0.5) / (t.df + 0.5)) AS idf FROM terms t, q, m "
                "      WHERE t.lexeme = ANY(q.lexemes) AND t.df > 0) "
                "SELECT p.chunk_id, SUM(w.idf * p.tf / (p.tf + %s * (1 - %s + %s * p.n_lex / m.avgdl))) AS score ")
        bm25 = (query.replace("\0", " "), float(k1), float(b), float(b))
        if flt is None:
            sql = (head + "FROM m, w CROSS JOIN LATERAL (SELECT x.chunk_id, x.tf, x.n_lex FROM postings x "
                   "WHERE x.lexeme = w.lexeme ORDER BY x.weight DESC LIMIT %s) p "
                   "GROUP BY p.chunk_id ORDER BY score DESC, p.chunk_id LIMIT %s")
            args = (*bm25, max(int(k), LIST_DEPTH), int(k))
        else:
            sql = (head + f"FROM m, w JOIN postings p ON p.lexeme = w.lexeme JOIN chunks c ON c.id = p.chunk_id "
                   f"WHERE {where} GROUP BY p.chunk_id ORDER BY score DESC, p.chunk_id LIMIT %s")
            args = (*bm25, *params, int(k))
        with self._tx_lock:
            rows = self._x(sql, args).fetchall()
        return (np.array([r[0] for r in rows], np.int64), np.array([r[1] for r in rows], np.float32))

    # -- sizes ----------------------------------------------------------------------------------------
    def size_bytes(self) -> int:
        return int(self._x("SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                           "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = 'r'",
                           (self.schema,)).fetchone()[0])

    def describe(self) -> str:
        dim = self._x("SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                      "WHERE attrelid = 'chunks'::regclass AND attname = 'embedding'").fetchone()[0]
        return (f"pgvector HNSW (cosine, m {HNSW_M}, ef_construction {HNSW_EF_CONSTRUCTION}), "
                f"{self.count('chunks'):,} vectors, {dim}, schema {self.schema} in {redact(self.url)}")


def new_uid() -> str:
    return uuid.uuid4().hex
