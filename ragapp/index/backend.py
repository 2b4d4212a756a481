"""What an index needs from its store: the interface both stores implement.

Two implementations, one file each:
- ragapp.index.store.Store (SQLite, embedded, the default): one file per collection; dense and
  lexical search run on caches next to it (FAISS in ragapp.index.vectors, bm25s in ragapp.index.bm25).
- ragapp.index.postgres.PostgresStore: one schema per collection in a PostgreSQL database with
  pgvector; the database answers dense (HNSW) and lexical (full-text, BM25-scored) queries itself,
  so several `ragapp serve` processes, on several machines, share one collection.
ragapp.index.stores opens the one a manifest names.

The sync (ragapp.index.sync) and the index (ragapp.index.index) use only what is written here.
Every write happens inside `transaction()`, which joins an enclosing one: a file's content, chunks,
embeddings and file rows commit together or not at all. `version()` changes whenever the set of
chunks changes. One writer at a time: `try_lock_writer()` (an flock for SQLite, a session-level
advisory lock for PostgreSQL; both are freed if the process dies).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


@dataclass
class FileRow:
    path: str
    hash: str
    size: int
    mtime_ns: int
    root: str


@dataclass
class NewChunk:
    text: str
    page: int | None
    start: int
    end: int
    n_tokens: int


class ChunkStore(Protocol):
    kind: str  # "sqlite" | "postgresql"
    searches: bool  # True: the store answers dense_search/lexical_search itself (no FAISS or BM25 cache)
    lock_wait_s: float  # how long a writer waits for another one before giving up (0: not at all)

    def close(self) -> None: ...
    def transaction(self) -> AbstractContextManager: ...
    def snapshot(self) -> AbstractContextManager: ...
    def version(self) -> int: ...
    def try_lock_writer(self) -> bool: ...
    def unlock_writer(self) -> None: ...

    # files
    def file(self, path: str) -> FileRow | None: ...
    def files_under(self, root: str) -> list[FileRow]: ...
    def files(self) -> list[dict]: ...
    def roots(self) -> list[str]: ...
    def has_content(self, key: str) -> bool: ...
    def paths_of(self, key: str) -> list[str]: ...
    def put_file(self, row: FileRow) -> list[int]: ...
    def touch_file(self, path: str, size: int, mtime_ns: int, root: str | None = None) -> None: ...
    def delete_files(self, paths: Iterable[str]) -> list[int]: ...
    def files_stamp(self) -> tuple: ...

    # contents and chunks
    def add_content(self, key: str, chunks: list[NewChunk], embeddings: np.ndarray, pages: int) -> list[int]: ...
    def stored_chunks(self, key: str) -> tuple[list[NewChunk], int]: ...
    def content_chunk_ids(self, key: str) -> list[int]: ...  # in the order of stored_chunks
    def count(self, table: str) -> int: ...
    def pages(self) -> int: ...
    def chunk_ids(self) -> np.ndarray: ...
    def embeddings(self, ids: Iterable[int] | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]: ...
    def chunks_by_id(self, ids: list[int]) -> dict[int, dict]: ...
    def iter_chunks(self) -> Iterator[tuple[int, str]]: ...
    def chunk_rows(self) -> list[tuple]: ...


class SearchingStore(ChunkStore, Protocol):
    """A store with `searches = True` (PostgreSQL). `flt` is a ragapp.retrieve.retriever.Filter (read
    through its attributes sources, exts and pages) or None."""

    def dense_search(self, qvec: np.ndarray, k: int, flt: Any = None,
                     ef_search: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(chunk ids, cosines) of the k nearest chunks passing the filter, best first."""

    def lexical_search(self, query: str, k: int, flt: Any = None, k1: float = 1.5,
                       b: float = 0.75) -> tuple[np.ndarray, np.ndarray]:
        """(chunk ids, BM25 scores) of the k best chunks sharing a term with the query, best first."""

    def build_vector_index(self) -> None:
        """Build the vector index if it is missing (the writer's last step; see ragapp.index.postgres)."""

    def size_bytes(self) -> int: ...
    def describe(self) -> str: ...
