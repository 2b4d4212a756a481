"""A temporary copy of an index with some files removed: the evidence held out of unanswerable questions.

A question written from a file is unanswerable once that file is gone, so the right answer is an
abstention. The user's own index is never changed: its SQLite store is copied with SQLite's backup
API (consistent even while another process writes), its FAISS file alongside (a cache, reconciled by
chunk id), under a new name and uid, and the files are removed from the copy. A collection in
PostgreSQL is copied into an embedded (SQLite + FAISS) index instead, its stored chunks and vectors
without the held-out files: nothing is re-embedded and the database is not touched (dense search
is then exact where the collection's is pgvector's HNSW). The copy is named by what it was made
from (the index's version and the files held out), so a second run reuses it.
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import uuid
from pathlib import Path

from ragapp.errors import InvalidInput
from ragapp.index.index import MANIFEST, STORE, Index, write_json_atomically


def held_out_name(name: str, version: str, sources: list[str]) -> str:
    digest = hashlib.sha256("\n".join([version, *sorted(sources)]).encode()).hexdigest()[:10]
    return f"{name[:40]}-without-{digest}"


def held_out_index(name: str, index_dir: Path, sources: list[str], work_dir: Path) -> tuple[str, Path]:
    """(index name, folder) of `name` without the files `sources` (stored paths): `name` itself when there
    is nothing to hold out, else a copy in work_dir, made once."""
    if not sources:
        return name, Path(index_dir)
    with Index.open(name, index_dir) as index:
        stored = {f["source"] for f in index.files()}
        missing = sorted(set(sources) - stored)
        if missing:
            raise InvalidInput(f"the question set holds out {missing[0]!r}, which is not in index '{name}' any more; "
                               "make the question set again (ragapp eval --index NAME --make N)")
        copy = held_out_name(name, index.version(), sources)
        work_dir = Path(work_dir)
        if (work_dir / copy / MANIFEST).exists():
            return copy, work_dir
        tmp = work_dir / f".tmp-{copy}-{uuid.uuid4().hex[:6]}"
        make = _sqlite_copy if index.store.kind == "sqlite" else _embedded_copy
        try:
            make(index, copy, work_dir, tmp, set(sources))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    shutil.rmtree(work_dir / copy, ignore_errors=True)  # an unfinished copy from an interrupted run
    tmp.rename(work_dir / copy)
    return copy, work_dir


def _sqlite_copy(index: Index, copy: str, work_dir: Path, tmp: Path, held: set[str]) -> None:
    """A copy of the SQLite index at `tmp` (SQLite's backup API, the FAISS file alongside) without `held`."""
    tmp.mkdir(parents=True)
    src = sqlite3.connect(f"file:{index.root / STORE}?mode=ro", uri=True)
    dst = sqlite3.connect(tmp / STORE)
    with dst:
        src.backup(dst)
    src.close()
    dst.close()
    for f in index.root.glob("vectors-*.faiss"):
        shutil.copy2(f, tmp / f.name)
    manifest = dict(index.manifest, name=copy, uid=uuid.uuid4().hex)
    write_json_atomically(tmp / MANIFEST, manifest)
    with Index.open(copy, work_dir, _root=tmp) as out:  # removed before the copy gets its name
        out.remove_files(sorted(held))


def _embedded_copy(index: Index, copy: str, work_dir: Path, tmp: Path, held: set[str]) -> None:
    """An embedded index at `tmp` holding `index`'s files but `held`: their chunks and stored vectors."""
    import numpy as np

    from ragapp.index.backend import FileRow

    chunking = index.manifest["chunking"]
    new = Index.create(copy, work_dir, embedder=index.manifest["embedder"]["name"], store="sqlite", _root=tmp,
                       chunk_tokens=chunking["chunk_tokens"], overlap=chunking["overlap"], vector_kind="flat")
    new.close()
    manifest = dict(new.manifest, embedder=dict(index.manifest["embedder"]))  # the dimension too
    write_json_atomically(tmp / MANIFEST, manifest)
    by_content: dict[str, list[dict]] = {}
    for f in index.store.files():
        if f["source"] not in held:
            by_content.setdefault(f["hash"], []).append(f)
    with Index.open(copy, work_dir, _root=tmp) as out, out.writing():
        for key, rows in by_content.items():
            chunks, pages = index.store.stored_chunks(key)
            ids = index.store.content_chunk_ids(key)
            vecs = index.embeddings_by_id(ids)
            with out.store.transaction():
                out.store.add_content(key, chunks, np.stack([vecs[i] for i in ids]), pages)
                for f in rows:
                    out.store.put_file(FileRow(f["source"], key, f["size"], int(f["mtime"] * 1e9), f["root"]))
