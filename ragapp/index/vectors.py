"""Vector stores: the nearest-neighbour part of an index, behind one small interface.

An index talks to its vectors only through `VectorStore` (add, remove, search, ids, save/load,
ntotal) and builds one with `make_vector_store(kind, dim)`. Three FAISS stores live here:

- "flat":  exact inner-product search (IndexFlatIP). The default; exact and fast to ~1M vectors.
- "hnsw":  graph search (IndexHNSWFlat), sub-linear queries for large collections. HNSW cannot
           delete, so `remove` rebuilds the graph from the vectors it holds.
- "ivfpq": inverted lists of product-quantized codes (IndexIVFPQ), ~48 bytes a vector instead of
           1,536, for collections that do not fit in memory as floats. It must be trained, so
           it stays an exact flat store until it holds `min_train` vectors, then trains once.

A collection that outgrows one machine can be served by an existing distributed vector database
(Qdrant, Milvus, Weaviate...) by writing one more class with these seven methods and one more
branch in `make_vector_store`/`load_vector_store`: the SQLite store keeps every chunk's embedding,
so such a backend is filled from it without re-embedding anything.

When faiss was built with GPU support and sees a GPU, searches run on a GPU copy of the index
(`_gpu_copy`). That code path is written to faiss's documented API but is untested here: the
reference machine has no GPU and installs faiss-cpu.

Vectors are L2-normalized, so inner product = cosine similarity. faiss is imported inside the
functions, so that importing this module stays instant.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ragapp.errors import InvalidInput


class VectorStore(Protocol):
    kind: str
    dim: int

    @property
    def ntotal(self) -> int: ...

    def add(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        """ids (n,) int64 chunk ids; vecs (n, dim) float32."""

    def remove(self, ids: np.ndarray) -> int:
        """Remove these ids (absent ones are ignored); returns how many were removed."""

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """queries (nq, dim) → (scores (nq, k) float32, ids (nq, k) int64), ids -1 past the end."""

    def ids(self) -> np.ndarray:
        """Every id held, (ntotal,) int64."""

    def save(self, path: Path) -> None:
        """Write atomically: a reader sees the old file or the new one, never half of one."""

    def describe(self) -> str:
        """One line for `ragapp info`."""


def _faiss():
    import faiss

    return faiss


def _as_ids(ids) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))


def _as_vecs(vecs, dim: int) -> np.ndarray:
    vecs = np.ascontiguousarray(np.asarray(vecs, dtype=np.float32))
    if vecs.ndim == 1:
        vecs = vecs.reshape(1, -1)
    if vecs.shape[1] != dim:
        raise InvalidInput(f"vectors have {vecs.shape[1]} dimensions, the index holds {dim}")
    return vecs


def _write_atomically(index, path: Path) -> None:
    faiss = _faiss()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    faiss.write_index(index, str(tmp))
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _gpu_available() -> bool:
    faiss = _faiss()
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


class _FaissStore:
    """Shared by the three stores: search (on a GPU copy when possible) and saving."""

    kind = ""
    index: Any

    def __init__(self, dim: int):
        self.dim = dim
        self._gpu = None  # GPU copy of self.index, rebuilt lazily after every change
        self._gpu_res = None

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def _changed(self) -> None:
        self._gpu = None

    def _gpu_copy(self):
        """Untested here (no GPU): faiss-gpu's index_cpu_to_gpu, falling back to the CPU index
        for index types the GPU build does not support (HNSW)."""
        if self._gpu is None:
            faiss = _faiss()
            try:
                self._gpu_res = self._gpu_res or faiss.StandardGpuResources()
                self._gpu = faiss.index_cpu_to_gpu(self._gpu_res, 0, self.index)
            except Exception:  # unsupported index type on GPU: search on the CPU
                self._gpu = self.index
        return self._gpu

    def _search_index(self):
        return self._gpu_copy() if _gpu_available() else self.index

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = _as_vecs(queries, self.dim)
        nq = queries.shape[0]
        if self.ntotal == 0 or k <= 0:
            return np.zeros((nq, max(k, 0)), np.float32), np.full((nq, max(k, 0)), -1, np.int64)
        scores, ids = self._search_index().search(queries, k)
        return scores.astype(np.float32), ids.astype(np.int64)

    def save(self, path: Path) -> None:
        _write_atomically(self.index, path)

    def describe(self) -> str:
        return f"{self.kind}, {self.ntotal:,} vectors of {self.dim} dimensions"


class FlatStore(_FaissStore):
    """Exact search: IndexIDMap2 over IndexFlatIP (IDMap2 so ids can be listed and removed)."""

    kind = "flat"

    def __init__(self, dim: int, index=None):
        super().__init__(dim)
        faiss = _faiss()
        self.index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))

    def add(self, ids, vecs) -> None:
        ids, vecs = _as_ids(ids), _as_vecs(vecs, self.dim)
        if len(ids):
            self.index.add_with_ids(vecs, ids)
            self._changed()

    def remove(self, ids) -> int:
        ids = _as_ids(ids)
        if not len(ids):
            return 0
        removed = int(self.index.remove_ids(_faiss().IDSelectorBatch(ids)))
        self._changed()
        return removed

    def ids(self) -> np.ndarray:
        return _faiss().vector_to_array(self.index.id_map).astype(np.int64)

    def vectors(self) -> np.ndarray:
        n = self.ntotal
        return self.index.index.reconstruct_n(0, n) if n else np.zeros((0, self.dim), np.float32)


class HNSWStore(FlatStore):
    """Approximate search on an HNSW graph (M links a node, efSearch candidates a query).

    faiss's HNSW has no remove_ids, so `remove` rebuilds the graph from the vectors the
    graph itself stores (IndexHNSWFlat keeps them uncompressed): no re-embedding."""

    kind = "hnsw"

    def __init__(self, dim: int, index=None, m: int = 32, ef_construction: int = 80, ef_search: int = 64):
        self.m, self.ef_construction, self.ef_search = m, ef_construction, ef_search
        super().__init__(dim, index if index is not None else self._empty(dim))
        self._tune()

    def _empty(self, dim: int):
        faiss = _faiss()
        graph = faiss.IndexHNSWFlat(dim, self.m, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = self.ef_construction
        return faiss.IndexIDMap2(graph)

    def _tune(self) -> None:
        _faiss().downcast_index(self.index.index).hnsw.efSearch = self.ef_search

    def remove(self, ids) -> int:
        ids = _as_ids(ids)
        held = self.ids()
        keep = ~np.isin(held, ids)
        removed = int((~keep).sum())
        if removed:
            vectors = self.vectors()
            self.index = self._empty(self.dim)
            self._tune()
            self.add(held[keep], vectors[keep])
            self._changed()
        return removed


class IVFPQStore(_FaissStore):
    """IndexIVFPQ once trained; an exact FlatStore until it holds `min_train` vectors.

    Training needs enough vectors: k-means wants ~40 points a centroid, and each of the
    `m` sub-quantizers has 2**nbits centroids. Below that, quantizing would only lose accuracy
    and save little memory, so the store stays exact and says so in `describe()`."""

    kind = "ivfpq"

    def __init__(self, dim: int, index=None, nbits: int = 8, nprobe: int = 32, min_train: int | None = None):
        super().__init__(dim)
        self.nbits, self.nprobe = nbits, nprobe
        # Sub-quantizers of 8 dimensions each (384 → 48 bytes a vector), dividing dim exactly.
        self.m = next(m for m in range(max(1, dim // 8), 0, -1) if dim % m == 0)
        self.min_train = min_train if min_train is not None else 40 * 2**nbits
        self.flat: FlatStore | None = None
        if index is None:
            self.flat = FlatStore(dim)
        elif isinstance(index, _faiss().IndexIDMap2):
            self.flat = FlatStore(dim, index)
        else:
            self.index = index
            _faiss().extract_index_ivf(index).nprobe = nprobe

    @property
    def trained(self) -> bool:
        return self.flat is None

    @property
    def ntotal(self) -> int:
        return self.flat.ntotal if self.flat is not None else int(self.index.ntotal)

    def _train(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        faiss = _faiss()
        n = len(ids)
        nlist = max(1, min(int(4 * math.sqrt(n)), n // 40))
        quantizer = faiss.IndexFlatIP(self.dim)
        index = faiss.IndexIVFPQ(quantizer, self.dim, nlist, self.m, self.nbits, faiss.METRIC_INNER_PRODUCT)
        index.train(vecs)
        index.add_with_ids(vecs, ids)
        index.nprobe = self.nprobe
        self.index, self.flat = index, None

    def add(self, ids, vecs) -> None:
        ids, vecs = _as_ids(ids), _as_vecs(vecs, self.dim)
        if not len(ids):
            return
        if self.flat is not None:
            if self.flat.ntotal + len(ids) < self.min_train:
                self.flat.add(ids, vecs)
                return
            # Enough vectors: train on everything held plus the new ones, then drop the flat store.
            all_ids = np.concatenate([self.flat.ids(), ids])
            all_vecs = np.concatenate([self.flat.vectors(), vecs])
            self._train(all_ids, all_vecs)
        else:
            self.index.add_with_ids(vecs, ids)
        self._changed()

    def remove(self, ids) -> int:
        ids = _as_ids(ids)
        if not len(ids):
            return 0
        if self.flat is not None:
            return self.flat.remove(ids)
        removed = int(self.index.remove_ids(_faiss().IDSelectorBatch(ids)))
        self._changed()
        return removed

    def ids(self) -> np.ndarray:
        if self.flat is not None:
            return self.flat.ids()
        faiss = _faiss()
        invlists = faiss.extract_index_ivf(self.index).invlists
        parts = []
        for list_no in range(invlists.nlist):
            size = invlists.list_size(list_no)
            if size:
                parts.append(faiss.rev_swig_ptr(invlists.get_ids(list_no), size).copy())
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)

    @property
    def approximate_scores(self) -> bool:
        """True once the vectors are PQ codes: scores and order are then approximate, and callers
        that hold the full vectors re-rank (`rerank_exact`)."""
        return self.flat is None

    def search(self, queries, k):
        if self.flat is not None:
            return self.flat.search(queries, k)
        return super().search(queries, k)

    def save(self, path: Path) -> None:
        _write_atomically(self.flat.index if self.flat is not None else self.index, path)

    def describe(self) -> str:
        if self.flat is not None:
            return (
                f"ivfpq, {self.ntotal:,} vectors of {self.dim} dimensions; exact flat search until "
                f"{self.min_train:,} vectors (IVF-PQ needs that many to train)"
            )
        ivf = _faiss().extract_index_ivf(self.index)
        return (
            f"ivfpq, {self.ntotal:,} vectors of {self.dim} dimensions; {ivf.nlist} lists, "
            f"{self.m}x{self.nbits}-bit codes, nprobe {self.nprobe}"
        )


# Candidates an IVF-PQ search hands to the exact re-rank: its 48-byte codes misorder close neighbours
# (recall@10 0.44 at 1M), but the true top 10 are nearly always among its top 100.
RERANK_DEPTH = 100


def rerank_exact(queries: np.ndarray, ids: np.ndarray, fetch, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Re-score candidate ids (nq, depth; -1 = none) by exact inner product and keep the top k.
    `fetch(ids) -> {id: vector}` reads the full vectors (the index reads them from SQLite, so the
    compressed store never needs the floats in memory, which is what it is for)."""
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    vecs = fetch(np.unique(ids[ids >= 0]))
    out_s = np.full((len(queries), k), -np.inf, np.float32)
    out_i = np.full((len(queries), k), -1, np.int64)
    for row, (q, cand) in enumerate(zip(queries, ids)):
        cand = np.array([int(c) for c in cand if c >= 0 and int(c) in vecs], dtype=np.int64)
        if not len(cand):
            continue
        scores = np.stack([vecs[int(c)] for c in cand]) @ q
        top = np.argsort(-scores, kind="stable")[:k]
        out_s[row, : len(top)], out_i[row, : len(top)] = scores[top], cand[top]
    return out_s, out_i


def _store_class(kind: str) -> type:
    if kind not in STORES:
        raise InvalidInput(f"unknown vector index '{kind}'; choose one of {', '.join(STORES)}")
    return STORES[kind]


def make_vector_store(kind: str, dim: int, **params) -> VectorStore:
    cls = _store_class(kind)
    return cls(dim, **params) if cls is not FlatStore else cls(dim)


def load_vector_store(kind: str, path: Path, dim: int, **params) -> VectorStore:
    """Read a store written by `save`. Raises whatever faiss raises on a damaged file; the index
    then rebuilds the store from its SQLite embeddings."""
    cls = _store_class(kind)
    index = _faiss().read_index(str(path))
    if index.d != dim:
        raise ValueError(f"{path} holds {index.d}-d vectors, expected {dim}")
    return cls(dim, index, **params) if cls is not FlatStore else cls(dim, index)


# A new vector store: a class above with the VectorStore methods, and its line here.
STORES: dict[str, type] = {"flat": FlatStore, "hnsw": HNSWStore, "ivfpq": IVFPQStore}
VECTOR_KINDS = tuple(STORES)
