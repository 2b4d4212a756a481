"""An index: indexes/NAME/ holding a manifest, a SQLite store and a FAISS vector cache, or a
collection in a PostgreSQL database (ragapp.index.postgres; the manifest's "store" says which).

Layout of indexes/NAME/:
    manifest.json            embedder (name, dim, max_seq_length), chunking, vector kind, format
                             version; written atomically (temporary file + os.replace)
    store.sqlite (+ -wal)    the single source of truth: files, contents, chunks and their
                             embeddings (see ragapp.index.store)
    vectors-V.faiss          the vector store, a cache derived from the embeddings in the store;
                             V is the store version it reflects. Written atomically.
    .lock                    held (flock) by the one process updating the index

Crash safety: every change of the store is one SQLite transaction, so a process killed at any
moment leaves the old state or the new one. The FAISS file is never trusted blindly: on use,
an index whose store version has no `vectors-V.faiss` loads the newest file there is and
reconciles it with the store by chunk id (adding the missing vectors from the stored
embeddings, dropping the extra ones). Nothing is ever re-embedded to repair a crash.

A PostgreSQL collection keeps its manifest in the database's catalog; indexes/NAME/manifest.json is
then a pointer naming the database (and may be absent: with RAGAPP_DATABASE_URL set, a collection
is found by name in that database). The database searches itself: no FAISS or BM25 cache.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ragapp.config import (
    DEFAULT_CHUNK_OVERLAP,
    DEFAULT_CHUNK_TOKENS,
    DEFAULT_EMBEDDER,
    DEFAULT_FILE_TIMEOUT_S,
    DEFAULT_INDEX_DIR,
    DEFAULT_MAX_FILE_BYTES,
)
from ragapp.errors import EmbedderMismatch, IndexNotFound, Interrupted, InvalidInput, RagError
from ragapp.index.stores import database_url, open_store, parse_store, store_url
from ragapp.index.sync import add_files, stop_requested, sync_folder
from ragapp.index.vectors import RERANK_DEPTH, VECTOR_KINDS, load_vector_store, make_vector_store, rerank_exact
from ragapp.ingest import embed
from ragapp.ingest.embed import canonical_name

if TYPE_CHECKING:
    from ragapp.index.backend import ChunkStore
    from ragapp.index.sync import SyncReport
    from ragapp.index.vectors import VectorStore
    from ragapp.ingest.embed import Embedder

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
STORE = "store.sqlite"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_VECTORS_RE = re.compile(r"^vectors-(\d+)\.faiss$")
PG_VECTORS = "pgvector-hnsw"  # the vector kind of a PostgreSQL collection


def check_name(name: str) -> str:
    if not _NAME_RE.match(name or ""):
        raise InvalidInput(
            f"invalid index name {name!r}: use letters, digits, '.', '_' or '-' (up to 64, not starting with '.' or '-')"
        )
    return name


def write_json_atomically(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _recover_swap(index_dir: Path, name: str) -> None:
    """Finish or undo a `--rebuild` swap that a crash interrupted (see `rebuild_swap`)."""
    root, new, old = index_dir / name, index_dir / f".{name}.rebuild", index_dir / f".{name}.old"
    if not root.exists():
        if (new / "COMPLETE").exists():
            os.replace(new, root)
        elif old.exists():
            os.replace(old, root)
    if root.exists() and old.exists():
        shutil.rmtree(old, ignore_errors=True)


class Index:
    """One named collection. Open with `Index.open(name)`, make with `Index.create(name, ...)`."""

    def __init__(self, root: Path, manifest: dict, store: ChunkStore | None = None):
        self.root = Path(root)
        self.name = manifest["name"]
        self.manifest = manifest
        self.store = store if store is not None else open_store(manifest.get("store", {"kind": "sqlite"}), self.root)
        self._vs: VectorStore | None = None
        self._vs_version = -1

    # -- opening --------------------------------------------------------------------------------
    @classmethod
    def open(cls, name: str, index_dir: Path = DEFAULT_INDEX_DIR, embedder: Any = None, _root: Path | None = None,
             store: str | None = None) -> Index:
        """`store`: a database to look the collection up in when indexes/NAME/ has no manifest
        (default: RAGAPP_DATABASE_URL)."""
        index_dir = Path(index_dir)
        check_name(name)
        _recover_swap(index_dir, name)
        root = _root or index_dir / name
        found = None
        if (root / MANIFEST).exists():
            found = _open_local(root, name)
        elif _root is None and (url := store_url(store)) is not None:
            found = _open_database(url, root, name)
        if found is None:
            have = list_indexes(index_dir)
            hint = f"; indexes here: {', '.join(have)}" if have else ""
            raise IndexNotFound(
                f"no index '{name}' in {index_dir}{hint}; create it with: ragapp index FOLDER --name {name}"
            )
        manifest, opened = found
        index = cls(root, manifest, opened)
        if embedder is not None:
            index.check_embedder(embedder)
        return index

    @classmethod
    def create(
        cls,
        name: str,
        index_dir: Path = DEFAULT_INDEX_DIR,
        embedder: str | Embedder = DEFAULT_EMBEDDER,
        chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
        overlap: int = DEFAULT_CHUNK_OVERLAP,
        vector_kind: str = "flat",
        _root: Path | None = None,
        store: str | None = None,
    ) -> Index:
        """`store`: "sqlite" or a PostgreSQL URL (default: RAGAPP_DATABASE_URL, else sqlite)."""
        index_dir = Path(index_dir)
        check_name(name)
        spec = parse_store(store)
        if spec["kind"] == "postgresql":
            if vector_kind not in ("flat", "hnsw", PG_VECTORS):
                raise InvalidInput(f"--vector {vector_kind} is for the embedded store; a PostgreSQL collection "
                                   "searches with pgvector's HNSW index")
            vector_kind = PG_VECTORS
        elif vector_kind not in VECTOR_KINDS:
            raise InvalidInput(f"unknown --vector '{vector_kind}'; choose one of {', '.join(VECTOR_KINDS)}")
        if chunk_tokens < 16:
            raise InvalidInput(f"--chunk-tokens {chunk_tokens} is too small; use at least 16")
        if not 0 <= overlap < chunk_tokens:
            raise InvalidInput(f"--overlap {overlap} must be at least 0 and below --chunk-tokens {chunk_tokens}")
        root = _root or index_dir / name
        if (root / MANIFEST).exists():
            raise InvalidInput(f"index '{name}' already exists in {index_dir}; remove it first (ragapp remove {name})")
        # An Embedder object fixes the dimension now; a name leaves it to the first sync.
        emb_name = canonical_name(embedder) if isinstance(embedder, str) else embedder.name
        manifest = {
            "format_version": FORMAT_VERSION,
            "name": name,
            "uid": uuid.uuid4().hex,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "embedder": {
                "name": emb_name,
                "dim": None if isinstance(embedder, str) else int(embedder.dim),
                "max_seq_length": None if isinstance(embedder, str) else int(embedder.max_seq_length),
            },
            "chunking": {"chunk_tokens": int(chunk_tokens), "overlap": int(overlap)},
            "vectors": {"kind": vector_kind},
        }
        opened = None
        if spec["kind"] == "postgresql":
            from ragapp.index.postgres import PostgresStore

            manifest["store"] = spec
            opened = PostgresStore.create(store_url(store), root.name, manifest)
        root.mkdir(parents=True, exist_ok=True)
        # The manifest is written last: a directory without one is an unfinished create.
        write_json_atomically(root / MANIFEST, manifest)
        return cls(root, manifest, opened)

    @classmethod
    def open_or_create(cls, name: str, index_dir: Path = DEFAULT_INDEX_DIR, **params) -> Index:
        try:
            return cls.open(name, index_dir, store=params.get("store"))
        except IndexNotFound:
            return cls.create(name, index_dir, **params)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Index({self.name!r}, {str(self.root)!r})"

    # -- embedder -------------------------------------------------------------------------------
    @property
    def embedder_name(self) -> str:
        return self.manifest["embedder"]["name"]

    @property
    def dim(self) -> int | None:
        if self.manifest["embedder"]["dim"] is None and self.store.searches:
            # another process may have recorded it since this one opened the collection
            self.manifest["embedder"] = self.store.manifest["embedder"]
        return self.manifest["embedder"]["dim"]

    def _save_manifest(self) -> None:
        if self.store.kind == "postgresql":
            self.store.save_manifest(self.manifest)
            if not (self.root / MANIFEST).exists():
                return  # found through RAGAPP_DATABASE_URL: no pointer on this machine
        write_json_atomically(self.root / MANIFEST, self.manifest)

    def _mismatch(self) -> EmbedderMismatch:
        built = self.embedder_name
        dim = f" ({self.dim}-d)" if self.dim else ""
        return EmbedderMismatch(
            f"index '{self.name}' was built with {built}{dim}; rebuild it with --rebuild or pass --embedder {built}"
        )

    def check_embedder(self, embedder: str | Embedder) -> None:
        """Refuse an embedder other than the one the index was built with (EmbedderMismatch)."""
        if isinstance(embedder, str):
            if canonical_name(embedder) != self.embedder_name:
                raise self._mismatch()
            return
        if embedder.name != self.embedder_name or (self.dim is not None and int(embedder.dim) != self.dim):
            raise self._mismatch()

    def embedder(self, embedder: Embedder | None = None) -> Embedder:
        """The given embedder after checking it, or the index's own, loaded."""
        if embedder is None:
            embedder = embed.load_embedder(self.embedder_name)
        self.check_embedder(embedder)
        if self.dim is None:  # first use of an index created from a name: record the dimension
            self.manifest["embedder"].update(dim=int(embedder.dim), max_seq_length=int(embedder.max_seq_length))
            self._save_manifest()
        return embedder

    # -- writing ----------------------------------------------------------------------------------
    @contextmanager
    def writing(self):
        """Exclusive right to change the index, released if the process dies (an flock; in PostgreSQL
        an advisory lock). A SQLite index refuses a second writer at once; a PostgreSQL collection,
        shared by servers, lets it wait its turn (store.lock_wait_s)."""
        deadline = time.monotonic() + self.store.lock_wait_s
        told = False
        while not self.store.try_lock_writer():
            if time.monotonic() >= deadline:
                raise RagError(
                    f"index '{self.name}' is being updated by another ragapp process; wait for it to finish"
                )
            if stop_requested():
                raise Interrupted(f"indexing {self.name!r} was stopped while waiting for another writer")
            if not told:
                print(f"index '{self.name}' is being updated by another ragapp process; waiting for it",
                      file=sys.stderr)
                told = True
            time.sleep(0.2)
        try:
            yield
        finally:
            self.store.unlock_writer()

    def sync(self, folder: Path, embedder: Embedder | None = None, progress: bool = True,
             max_bytes: int = DEFAULT_MAX_FILE_BYTES, log=None, within: list[Path] | None = None,
             workers: int | None = None, file_timeout: float | None = DEFAULT_FILE_TIMEOUT_S,
             file_memory_mb: int | None = None) -> SyncReport:
        """Bring the index in step with `folder`: see ragapp.index.sync. `log` gets one line per bad file;
        `within`: folders that files must resolve into (ragapp.ingest.loaders.scan_folder); `workers`,
        `file_timeout`, `file_memory_mb`: how files are parsed (ragapp.index.sync.sync_folder)."""
        return sync_folder(self, Path(folder), embedder=embedder, progress=progress, max_bytes=max_bytes, log=log,
                           within=within, workers=workers, file_timeout=file_timeout, file_memory_mb=file_memory_mb)

    def add_files(self, paths: list[Path], base: Path | None = None, embedder: Embedder | None = None,
                  progress: bool = True, max_bytes: int = DEFAULT_MAX_FILE_BYTES, log=None,
                  workers: int | None = None, file_timeout: float | None = DEFAULT_FILE_TIMEOUT_S,
                  file_memory_mb: int | None = None) -> SyncReport:
        """Add or replace these files only (the upload path); other files stay as they are."""
        return add_files(self, [Path(p) for p in paths], base=base, embedder=embedder, progress=progress,
                         max_bytes=max_bytes, log=log, workers=workers, file_timeout=file_timeout,
                         file_memory_mb=file_memory_mb)

    def remove_files(self, sources: list[str]) -> int:
        """Remove files by their stored source path; returns the number of chunks removed."""
        unknown = [s for s in sources if self.store.file(s) is None]
        if unknown:
            raise InvalidInput(
                f"no file {unknown[0]!r} in index '{self.name}'; `ragapp info {self.name} --files` lists them"
            )
        with self.writing():
            removed = self.store.delete_files(sources)
            self.save_vectors()
        return len(removed)

    # -- vectors ----------------------------------------------------------------------------------
    def _vector_files(self) -> list[tuple[int, Path]]:
        found = []
        for entry in self.root.iterdir():
            m = _VECTORS_RE.match(entry.name)
            if m:
                found.append((int(m.group(1)), entry))
        return sorted(found, reverse=True)

    def vectors(self) -> VectorStore:
        """The vector store, in step with the SQLite store (reconciled by chunk id when not)."""
        if self.store.searches:
            raise RagError(f"index '{self.name}' is searched by its database; it has no FAISS vector store")
        with self.store.snapshot():
            version = self.store.version()
            if self._vs is not None and self._vs_version == version:
                return self._vs
            kind, dim = self.manifest["vectors"]["kind"], self.dim
            if dim is None:  # never synced: nothing to hold yet
                dim = 1
            if self._vs is None:
                for file_version, path in self._vector_files():
                    try:
                        self._vs = load_vector_store(kind, path, dim)
                        self._vs_version = file_version
                        break
                    except Exception:  # missing (deleted meanwhile) or damaged: try older, or rebuild
                        continue
                if self._vs is None:
                    self._vs = make_vector_store(kind, dim)
            if self._vs_version != version:
                self._reconcile(self._vs)
                self._vs_version = version
            return self._vs

    def _reconcile(self, vs: VectorStore) -> None:
        wanted = self.store.chunk_ids()
        held = vs.ids()
        extra = np.setdiff1d(held, wanted, assume_unique=True)
        missing = np.setdiff1d(wanted, held, assume_unique=True)
        if len(extra):
            vs.remove(extra)
        if len(missing):
            source = self.store.embeddings(None if len(missing) == len(wanted) else missing)
            for ids, vecs in source:
                vs.add(ids, vecs)

    def save_vectors(self) -> None:
        """Write vectors-V.faiss for the current store version, then drop older files.
        Only a writer (holding `writing()`) calls this."""
        if self.store.searches:
            self.store.build_vector_index()  # the database holds the vectors; its HNSW index, if missing
            return
        vs = self.vectors()
        target = self.root / f"vectors-{self._vs_version}.faiss"
        if not target.exists():
            vs.save(target)
        for _, path in self._vector_files():
            if path != target:
                path.unlink(missing_ok=True)

    def vector_search(self, qvecs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, chunk_ids), each (nq, k); ids are -1 past the last hit."""
        if self.dim is None:
            q = np.atleast_2d(qvecs)
            return np.zeros((len(q), k), np.float32), np.full((len(q), k), -1, np.int64)

        q = np.atleast_2d(np.asarray(qvecs, dtype=np.float32))
        if self.store.searches:
            scores, ids = np.zeros((len(q), k), np.float32), np.full((len(q), k), -1, np.int64)
            for row, qvec in enumerate(q):
                found, cosines = self.store.dense_search(qvec, k)
                ids[row, : len(found)], scores[row, : len(found)] = found, cosines
            return scores, ids
        vs = self.vectors()
        if not getattr(vs, "approximate_scores", False):
            return vs.search(q, k)
        _, candidates = vs.search(q, max(k, RERANK_DEPTH))
        return rerank_exact(q, candidates, self.embeddings_by_id, k)

    def embeddings_by_id(self, ids) -> dict[int, np.ndarray]:
        """{chunk id: stored embedding}; ids no longer stored are left out."""
        return {int(i): v for part_ids, part in self.store.embeddings([int(i) for i in ids])
                for i, v in zip(part_ids, part)}

    # -- reading ----------------------------------------------------------------------------------
    def get_chunks(self, chunk_ids: list[int]) -> list[dict]:
        """{"id","text","source","sources","page","start","end"} in the given order; unknown ids
        (-1, or removed since the search) are left out."""
        ids = [int(i) for i in chunk_ids if int(i) >= 0]
        found = self.store.chunks_by_id(ids)
        return [found[i] for i in ids if i in found]

    def all_chunks(self) -> Iterator[tuple[int, str]]:
        return self.store.iter_chunks()

    def files(self) -> list[dict]:
        return [{k: f[k] for k in ("source", "size", "mtime", "chunks", "hash")} for f in self.store.files()]

    def version(self) -> str:
        """Changes whenever the set of chunks changes (and differs between two indexes that
        happen to share a name over time)."""
        return f"{self.manifest['uid']}:{self.store.version()}"

    def size_on_disk(self) -> int:
        """Bytes of the collection: its files, or its tables and their indexes in the database."""
        if self.store.searches:
            return self.store.size_bytes()
        return sum(p.stat().st_size for p in self.root.iterdir() if p.is_file())

    def info(self, vectors: bool = False) -> dict:
        spec = self.manifest.get("store", {"kind": "sqlite"})
        out = {
            "name": self.name,
            "path": f"{spec['url']} (schema {self.store.schema})" if spec["kind"] == "postgresql" else str(self.root),
            "store": spec["kind"],
            "files": self.store.count("files"),
            "contents": self.store.count("contents"),
            "chunks": self.store.count("chunks"),
            "pages": self.store.pages(),
            "embedder": self.embedder_name,
            "dim": self.dim,
            "vector_kind": self.manifest["vectors"]["kind"],
            "chunk_tokens": self.manifest["chunking"]["chunk_tokens"],
            "overlap": self.manifest["chunking"]["overlap"],
            "folders": self.store.roots(),
            "created": self.manifest.get("created"),
            "format_version": self.manifest.get("format_version"),
            "bytes": self.size_on_disk(),
        }
        if vectors:
            if self.store.searches:
                out["vectors"] = self.store.describe()
            else:
                out["vectors"] = self.vectors().describe() if self.dim else "empty"
        return out


def _open_local(root: Path, name: str) -> tuple[dict, Any]:
    """(manifest, store or None) of indexes/NAME/manifest.json; a PostgreSQL pointer is followed."""
    manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise RagError(
            f"index '{name}' was written by a newer ragapp (format {manifest['format_version']}); upgrade ragapp"
        )
    spec = manifest.get("store", {"kind": "sqlite"})
    if spec.get("kind") != "postgresql":
        return manifest, None
    opened = open_store(spec, root)
    return dict(opened.manifest, store=spec), opened


def _open_database(url: str, root: Path, name: str) -> tuple[dict, Any] | None:
    from ragapp.index.postgres import PostgresStore, find_manifest

    if find_manifest(url, name) is None:
        return None
    opened = PostgresStore(url, name)
    return dict(opened.manifest, store=parse_store(url)), opened


def list_indexes(index_dir: Path = DEFAULT_INDEX_DIR) -> list[str]:
    """The indexes in `index_dir`, and the collections of the RAGAPP_DATABASE_URL database."""
    index_dir = Path(index_dir)
    shared: list[str] = []
    if (url := database_url()) is not None:
        from ragapp.index.postgres import list_collections

        shared = [n for n in list_collections(url) if not n.startswith(".")]
    if not index_dir.is_dir():
        return sorted(shared)
    names = []
    for entry in sorted(index_dir.iterdir()):
        if entry.name.startswith(".") and entry.name.endswith(".old"):
            _recover_swap(index_dir, entry.name[1:-4])
    for entry in sorted(index_dir.iterdir()):
        if not entry.name.startswith(".") and (entry / MANIFEST).exists():
            names.append(entry.name)
    return sorted(set(names) | set(shared))


def remove_index(name: str, index_dir: Path = DEFAULT_INDEX_DIR) -> None:
    index = Index.open(name, index_dir)  # IndexNotFound for a wrong name
    root = index.root
    with index.writing():
        if index.store.kind == "postgresql":
            index.store.drop()  # the catalog row and the schema, in one transaction
            try:  # an unfinished --rebuild of it
                with Index.open(name, index_dir, _root=index_dir / f".{name}.rebuild") as rebuild:
                    rebuild.store.drop()
            except (IndexNotFound, OSError):
                pass
        index.close()
        if not root.exists():
            return
        # Rename first, so that a crash half-way through deleting leaves no half index behind.
        trash = root.with_name(f".{name}.removed-{os.getpid()}")
        os.replace(root, trash)
    shutil.rmtree(trash, ignore_errors=True)
    shutil.rmtree(root.with_name(f".{name}.rebuild"), ignore_errors=True)


def rebuild_index(name: str, folder: Path, index_dir: Path = DEFAULT_INDEX_DIR, embedder: str | None = None,
                  chunk_tokens: int | None = None, overlap: int | None = None, vector_kind: str | None = None,
                  progress: bool = True, max_bytes: int = DEFAULT_MAX_FILE_BYTES, log=None,
                  embedder_obj: Embedder | None = None, workers: int | None = None,
                  file_timeout: float | None = DEFAULT_FILE_TIMEOUT_S, file_memory_mb: int | None = None,
                  store: str | None = None) -> SyncReport:
    """Re-embed everything into `.NAME.rebuild/`, then swap it in place of NAME.

    A PostgreSQL collection is rebuilt into the collection `.NAME.rebuild` of its database, which
    takes its name in one transaction at the end. `store` applies to a new index only.

    The old index stays whole and usable until the new one is complete. An interrupted rebuild
    resumes where it stopped (the rebuild directory is an index synced like any other). Files
    of the old index that are not in `folder` (uploads, other folders) are carried over from
    their stored chunk texts, re-embedded: nothing stored is lost."""
    index_dir = Path(index_dir)
    check_name(name)
    _recover_swap(index_dir, name)
    try:
        old = Index.open(name, index_dir, store=store)
    except IndexNotFound:
        old = None
    if old is not None:
        store = old.store.url if old.store.kind == "postgresql" else "sqlite"
    params = {
        "store": store,
        "embedder": embedder_obj or canonical_name(embedder or (old.embedder_name if old else DEFAULT_EMBEDDER)),
        "chunk_tokens": chunk_tokens or (old.manifest["chunking"]["chunk_tokens"] if old else DEFAULT_CHUNK_TOKENS),
        "overlap": overlap if overlap is not None else (old.manifest["chunking"]["overlap"] if old else DEFAULT_CHUNK_OVERLAP),
        "vector_kind": vector_kind or (old.manifest["vectors"]["kind"] if old else "flat"),
    }
    work = index_dir / f".{name}.rebuild"
    new = None
    if (work / MANIFEST).exists():
        try:
            new = Index.open(name, index_dir, _root=work)
        except IndexNotFound:  # its database collection is gone: start over
            shutil.rmtree(work)
    if new is not None:
        wanted_emb = params["embedder"] if isinstance(params["embedder"], str) else params["embedder"].name
        same = (new.embedder_name == wanted_emb
                and new.manifest["chunking"] == {"chunk_tokens": params["chunk_tokens"], "overlap": params["overlap"]}
                and new.manifest["vectors"]["kind"] == params["vector_kind"])
        if not same:  # an unfinished rebuild with other settings: start over
            if new.store.kind == "postgresql":
                new.store.drop()
            new.close()
            new = None
            shutil.rmtree(work)
    if new is None:
        new = Index.create(name, index_dir, _root=work, **params)
    report = new.sync(folder, embedder=embedder_obj, progress=progress, max_bytes=max_bytes, log=log,
                      workers=workers, file_timeout=file_timeout, file_memory_mb=file_memory_mb)
    if old is not None:
        _carry_over(old, new, str(Path(folder).resolve()), embedder_obj, report)
        old.close()
    new.save_vectors()
    if new.store.kind == "postgresql":
        (work / "COMPLETE").touch()
        new.store.rename(name)  # the database's swap: one transaction, the old collection dropped
    new.close()
    rebuild_swap(index_dir, name)
    return report


def _carry_over(old: Index, new: Index, folder_root: str, embedder: Embedder | None, report: SyncReport) -> None:
    """Copy files of `old` that the folder sync did not cover into `new`, re-embedding their
    stored chunk texts with the new embedder (their originals may be gone, e.g. uploads)."""

    rows = [r for root in old.store.roots() if root != folder_root for r in old.store.files_under(root)]
    rows = [r for r in rows if new.store.file(r.path) is None]
    if not rows:
        return
    emb = new.embedder(embedder)
    with new.writing():
        for row in rows:
            if not new.store.has_content(row.hash):
                chunks, pages = old.store.stored_chunks(row.hash)
                vecs = emb.encode([c.text for c in chunks])
                with new.store.transaction():
                    new.store.add_content(row.hash, chunks, vecs, pages)
                    new.store.put_file(row)
                report.chunks_added += len(chunks)
            else:
                new.store.put_file(row)
            report.added += 1


def rebuild_swap(index_dir: Path, name: str) -> None:
    """Put the finished `.NAME.rebuild` in place of NAME. Crash-safe with `_recover_swap`:
    COMPLETE marks the new index finished; until NAME is back, open() completes the swap."""
    index_dir = Path(index_dir)
    root, new, old = index_dir / name, index_dir / f".{name}.rebuild", index_dir / f".{name}.old"
    (new / "COMPLETE").touch()
    if root.exists():
        os.replace(root, old)
    os.replace(new, root)
    (root / "COMPLETE").unlink(missing_ok=True)
    shutil.rmtree(old, ignore_errors=True)
