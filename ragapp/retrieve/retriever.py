"""Search one or several indexes: dense (FAISS) + lexical (BM25) candidates, fused, optionally
diversified with MMR, filtered by source, extension and page.

    from ragapp import Retriever
    r = Retriever(["docs", "papers"])
    for p in r.search("how do I rebuild an index?", k=5, filters={"ext": ".pdf", "page": [1, 10]}):
        print(f"{p.score:.3f} {p.label()} {p.text[:80]}")

How a query runs:
1. Each collection is an Index, possibly built with its own embedder: the query is embedded
   once per distinct embedder.
2. Dense: the `depth` nearest chunks over all collections (cosines are comparable across
   collections of one embedder). Lexical: the `depth` best BM25 chunks over all collections.
   Filters are applied before the cut, so a filtered search still returns up to k passages.
3. Fusion (RetrieverConfig.fusion) of the two candidate lists — see `RetrieverConfig` for the
   default (BENCHMARKS.md has the SciFact numbers that chose it).
4. MMR (optional) re-picks k of the best `mmr_pool` fused candidates for diversity, using the
   stored chunk embeddings (no re-embedding).
A collection in PostgreSQL (ragapp.index.postgres) answers step 2 itself, in SQL: pgvector HNSW
for dense, full-text matching scored by BM25 for lexical, the filters in the WHERE clause; nothing
is cached here, so each search sees what other processes committed. Fusion and MMR are the same.

Thread safety: one Retriever may serve concurrent searches (the web server shares one). Calls
into an Index are serialized per collection (its SQLite connection and vector cache are not
made for concurrent use), and so are calls into an embedder (a Hugging Face fast tokenizer
raises "Already borrowed" when two threads use it at once); BM25 scoring runs unlocked on
immutable arrays.
"""

from __future__ import annotations

import fnmatch
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import numpy as np

from ragapp.config import DEFAULT_INDEX_DIR, DEFAULT_K, RETRIEVAL_MODES, RRF_K
from ragapp.errors import InvalidInput
from ragapp.index.bm25 import BM25Index, BM25Params, load_or_build
from ragapp.index.index import Index
from ragapp.retrieve.fusion import NORMALIZATIONS, convex, rrf
from ragapp.retrieve.fusion import mmr as mmr_select
from ragapp.types import Passage

if TYPE_CHECKING:
    from ragapp.index.index import Index
    from ragapp.ingest.embed import Embedder

MODES = RETRIEVAL_MODES
FUSIONS = ("convex", "rrf")
FILTER_KEYS = ("source", "ext", "page")


@dataclass
class RetrieverConfig:
    """How hybrid search fuses its two candidate lists.

    Default: convex combination of z-score-normalized dense and BM25 scores, weights 0.5/0.5,
    over the top 1,000 of each (BM25 with section context, see ragapp.index.bm25), chosen on the
    SciFact train queries (`benchmarks/bench_retrieval.py --tune`; the table is in BENCHMARKS.md).
    """

    fusion: str = "convex"  # "convex" (normalized score sum) or "rrf" (reciprocal rank)
    dense_weight: float = 0.5
    bm25_weight: float = 0.5
    normalization: str = "zscore"  # for convex: "zscore" or "minmax"
    rrf_k: float = RRF_K
    depth: int = 1000  # candidates taken from each retriever before fusion
    mmr_pool: int = 20  # MMR chooses among at least this many (and 4 x k) fused candidates
    bm25: BM25Params = field(default_factory=BM25Params)
    # PostgreSQL collections: pgvector's hnsw.ef_search, the HNSW candidate list, which is also the most dense
    # candidates a search gets there. None: 200 (ragapp.index.postgres.DEFAULT_EF_SEARCH); pgvector's cost
    # grows with it (ef_search 1000, as many as `depth`, is several times slower; BENCHMARKS.md).
    ef_search: int | None = None

    def __post_init__(self):
        if self.fusion not in FUSIONS:
            raise InvalidInput(f"unknown fusion {self.fusion!r}; choose one of {', '.join(FUSIONS)}")
        if self.normalization not in NORMALIZATIONS:
            raise InvalidInput(f"unknown normalization {self.normalization!r}; choose one of {', '.join(NORMALIZATIONS)}")
        if self.dense_weight < 0 or self.bm25_weight < 0 or self.dense_weight + self.bm25_weight == 0:
            raise InvalidInput("dense_weight and bm25_weight must be >= 0 and not both 0")
        if self.rrf_k <= 0:
            raise InvalidInput(f"rrf_k={self.rrf_k} must be > 0 (60 is usual)")
        if self.depth < 1:
            raise InvalidInput(f"depth={self.depth} must be at least 1")
        if self.ef_search is not None and not 1 <= self.ef_search <= 1000:
            raise InvalidInput(f"ef_search={self.ef_search} must be between 1 and 1000 (pgvector's limits)")


# -- filters ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Filter:
    sources: tuple[str, ...] = ()  # globs; a chunk passes if one of its paths matches one
    exts: tuple[str, ...] = ()  # lower-case, with the dot
    pages: tuple[int | None, int | None] | None = None  # inclusive; None = open end

    def match_source(self, path: str) -> bool:
        if self.exts and PurePosixPath(path).suffix.lower() not in self.exts:
            return False
        if self.sources:
            name = PurePosixPath(path).name
            # A pattern without "/" also matches the file name alone, as in .gitignore:
            # {"source": "guide.pdf"} finds docs/guide.pdf.
            return any(fnmatch.fnmatchcase(path, g) or ("/" not in g and fnmatch.fnmatchcase(name, g))
                       for g in self.sources)
        return True

    def match_page(self, page: int | None) -> bool:
        if self.pages is None:
            return True
        if page is None:  # an unpaged file has no page in any range
            return False
        lo, hi = self.pages
        return (lo is None or page >= lo) and (hi is None or page <= hi)


def parse_filters(filters: dict | None) -> Filter | None:
    """{"source": glob or [globs], "ext": ".pdf" or [exts], "page": n or [first, last]} → Filter."""
    if not filters:
        return None
    if not isinstance(filters, dict):
        raise InvalidInput(f"filters must be a dict like {{'source': '*.pdf'}}, got {type(filters).__name__}")
    unknown = [key for key in filters if key not in FILTER_KEYS]
    if unknown:
        raise InvalidInput(
            f"unknown filter {unknown[0]!r}; use source (glob such as '*.pdf' or 'notes/*'), "
            "ext (file extension such as '.md') or page (a number or [first, last])"
        )

    def strings(key):
        value = filters.get(key)
        if value is None:
            return ()
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, (list, tuple)) or not all(isinstance(v, str) and v for v in values):
            raise InvalidInput(f"filter {key!r} must be a non-empty string or a list of them, got {value!r}")
        return tuple(values)

    exts = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in strings("ext"))
    pages = None
    page = filters.get("page")
    if page is not None:
        if isinstance(page, int) and not isinstance(page, bool):
            pages = (page, page)
        elif (isinstance(page, (list, tuple)) and len(page) == 2
              and all(p is None or (isinstance(p, int) and not isinstance(p, bool)) for p in page)):
            pages = (page[0], page[1])
            if None not in pages and pages[0] > pages[1]:
                raise InvalidInput(f"filter 'page' range {list(page)} is empty: the first page is after the last")
        else:
            raise InvalidInput(f"filter 'page' must be a page number or [first, last] (None for open), got {page!r}")
    return Filter(sources=strings("source"), exts=exts, pages=pages)


# -- one collection -----------------------------------------------------------------------------------
class _ChunkMeta:
    """Paths and page of every chunk, aligned with the BM25 rows, for pre-filtering."""

    def __init__(self, ids: np.ndarray, rows: list[dict]):
        self.ids = ids  # sorted ascending (BM25 rows follow chunk id order)
        self.pages = [r["page"] for r in rows]
        self.path_ids: list[list[int]] = []
        self.paths: list[str] = []
        seen: dict[str, int] = {}
        for r in rows:
            self.path_ids.append([seen.setdefault(p, len(seen)) for p in (r["sources"] or [r["source"]])])
        self.paths = list(seen)
        self._masks: dict[Filter, np.ndarray] = {}
        self._lock = threading.Lock()  # searches in several threads share the mask cache

    def mask(self, flt: Filter) -> np.ndarray:
        """(n_chunks,) bool: which rows pass the filter. The last 16 are kept."""
        with self._lock:
            found = self._masks.get(flt)
        if found is None:
            ok_path = np.array([flt.match_source(p) for p in self.paths], dtype=bool)
            found = np.array(
                [flt.match_page(page) and bool(ok_path[pids].any()) for page, pids in zip(self.pages, self.path_ids)],
                dtype=bool,
            )
            with self._lock:
                if len(self._masks) >= 16:
                    self._masks.pop(next(iter(self._masks)))
                self._masks[flt] = found
        return found

    def allowed(self, chunk_ids: np.ndarray, flt: Filter) -> np.ndarray:
        if not len(self.ids):
            return np.zeros(len(chunk_ids), dtype=bool)
        rows = np.minimum(np.searchsorted(self.ids, chunk_ids), len(self.ids) - 1)
        return (self.ids[rows] == chunk_ids) & self.mask(flt)[rows]


@contextmanager
def _one_omp_thread():
    """Run FAISS single-threaded for this (one-query) search. A single query gains nothing from
    OpenMP, but its threads meet at barriers, and on a busy CPU a barrier waits for a thread the
    OS has parked: measured on the 2-core reference machine under load, a flat search of 10k
    vectors for the top 1,000 took 36 ms with 2 threads and 0.8 ms with 1. omp_set_num_threads
    only affects the calling thread's parallel regions, so other threads (an indexing job in a
    server) keep theirs, and the previous value is restored."""
    try:
        import faiss
    except ImportError:  # another vector backend: nothing to do
        yield
        return
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def _files_stamp(index: Index) -> tuple:
    """Changes when any path changes. A renamed file keeps its chunks, so the index version (which
    follows the chunk set) stays the same while the paths a source filter sees do not."""
    store = getattr(index, "store", None)
    try:
        return store.files_stamp()
    except Exception:  # another store: the file listing itself is the stamp
        return tuple((f["source"], f["hash"]) for f in index.files())


class _Collection:
    def __init__(self, index: Index, params: BM25Params, progress: bool = False, ef_search: int | None = None):
        self.index = index
        self.name = index.name
        self.params = params
        self.progress = progress
        self.ef_search = ef_search
        self.in_store = bool(getattr(index.store, "searches", False))  # the database searches (PostgreSQL)
        self.lock = threading.RLock()
        self.bm25: BM25Index | None = None
        self.version: str | None = None
        self.meta: _ChunkMeta | None = None
        self.meta_stamp: tuple | None = None

    def lexical(self, progress: bool | None = None) -> BM25Index:
        """The BM25 index at the collection's current version (reloaded when it changed)."""
        with self.lock:
            version = self.index.version()
            if self.bm25 is None or version != self.version:
                show = self.progress if progress is None else progress
                self.bm25, self.version = load_or_build(self.index, self.params, progress=show)
                self.meta = None
            return self.bm25

    def chunk_meta(self) -> _ChunkMeta:
        bm25 = self.lexical()
        with self.lock:
            stamp = (self.version, _files_stamp(self.index))
            if self.meta is None or self.meta_stamp != stamp:
                rows: list[dict] = []
                for i in range(0, len(bm25.ids), 5000):
                    rows += self.index.get_chunks(bm25.ids[i : i + 5000].tolist())
                # A chunk removed between the two reads is simply absent: it fails every filter.
                ids = np.array([r["id"] for r in rows], dtype=np.int64)
                self.meta, self.meta_stamp = _ChunkMeta(ids, rows), stamp
            return self.meta

    def dense(self, qvec: np.ndarray, depth: int, flt: Filter | None) -> tuple[np.ndarray, np.ndarray]:
        """(chunk ids, cosines) of the `depth` nearest chunks passing the filter, best first."""
        if self.in_store:
            ef = self.ef_search or self.index.store.default_ef_search
            with self.lock:
                return self.index.store.dense_search(qvec, min(depth, ef), flt, ef_search=ef)
        meta = self.chunk_meta() if flt else None
        k = depth
        while True:
            with self.lock, _one_omp_thread():
                scores, ids = self.index.vector_search(qvec[None, :], k)
            scores, ids = scores[0], ids[0]
            exhausted = bool((ids < 0).any())
            scores, ids = scores[ids >= 0], ids[ids >= 0]
            if meta is None:
                return ids[:depth], scores[:depth]
            keep = meta.allowed(ids, flt)
            if keep.sum() >= depth or exhausted or k >= 4 * max(len(meta.ids), 1):
                return ids[keep][:depth], scores[keep][:depth]
            k *= 4  # a selective filter: widen the search until enough chunks pass it

    def sparse(self, query: str, depth: int, flt: Filter | None) -> tuple[np.ndarray, np.ndarray]:
        """(chunk ids, BM25 scores) of the `depth` best chunks sharing a term with the query."""
        if self.in_store:
            with self.lock:
                return self.index.store.lexical_search(query, depth, flt, k1=self.params.k1, b=self.params.b)
        bm25 = self.lexical()
        scores = bm25.scores(query)
        if flt is not None:
            meta = self.chunk_meta()
            if len(meta.ids) != len(bm25.ids):  # a chunk vanished while the metadata was read
                ok = meta.allowed(bm25.ids, flt)
            else:
                ok = meta.mask(flt)
            scores = np.where(ok, scores, 0.0)
        rows = np.flatnonzero(scores > 0)
        if len(rows) > depth:
            rows = rows[np.argpartition(-scores[rows], depth - 1)[:depth]]
        rows = rows[np.argsort(-scores[rows], kind="stable")]
        return bm25.ids[rows], scores[rows]

    def embeddings(self, chunk_ids: list[int]) -> dict[int, np.ndarray]:
        with self.lock:
            return self.index.embeddings_by_id(chunk_ids)


# A candidate is one int64: the collection's position in the query (high bits) and the chunk id,
# so that fusion and sorting stay in numpy (a few thousand candidates a query).
_ID_BITS = 40


def _keys(ci: int, ids: np.ndarray) -> np.ndarray:
    return (np.int64(ci) << _ID_BITS) | ids.astype(np.int64)


def _split(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return keys >> _ID_BITS, keys & ((1 << _ID_BITS) - 1)


def _top(keys: list[np.ndarray], scores: list[np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
    """The n best of several collections' candidates, best first."""
    if not keys:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    keys_, scores_ = np.concatenate(keys), np.concatenate(scores).astype(np.float64)
    if len(scores_) > n:
        part = np.argpartition(-scores_, n - 1)[:n]
        keys_, scores_ = keys_[part], scores_[part]
    order = np.lexsort((keys_, -scores_))
    return keys_[order], scores_[order]


class Retriever:
    """Hybrid search over one or more indexes. See the module docstring.

    collections: index names under `index_dir` (IndexNotFound lists the existing ones).
    embedder: an Embedder, or a list of them; each collection uses the one with the name its
        index was built with, and loads that model itself when none is given.
    config: fusion and BM25 settings (RetrieverConfig); the defaults are the measured best.
    progress: show a progress bar when a collection's BM25 index has to be built."""

    def __init__(self, collections: list[str] | str, index_dir: Path = DEFAULT_INDEX_DIR,
                 embedder: Embedder | list[Embedder] | None = None, config: RetrieverConfig | None = None,
                 progress: bool = False):
        names = [collections] if isinstance(collections, str) else list(collections or [])
        if not names:
            raise InvalidInput("no collection given; pass the name of an index (ragapp info lists them)")
        self.index_dir = Path(index_dir)
        self.config = config or RetrieverConfig()
        self.progress = progress  # show a progress bar while a collection's BM25 index is built
        self._embedders: list[Embedder] = [] if embedder is None else (
            list(embedder) if isinstance(embedder, (list, tuple)) else [embedder])
        self._lock = threading.Lock()
        self._collections: dict[str, _Collection] = {}
        self._embed_locks: dict[int, threading.Lock] = {}
        self.names = list(dict.fromkeys(names))
        for name in self.names:
            self._collection(name)  # IndexNotFound now rather than at the first search

    # -- collections and embedders -------------------------------------------------------------
    def _collection(self, name: str) -> _Collection:
        with self._lock:
            col = self._collections.get(name)
            if col is None:
                if not isinstance(name, str):
                    raise InvalidInput(f"collection names are strings, got {name!r}")
                index = Index.open(name, self.index_dir)  # IndexNotFound names it and lists the others
                col = self._collections[name] = _Collection(index, self.config.bm25, self.progress,
                                                            self.config.ef_search)
            return col

    def embedder_for(self, col: _Collection) -> Embedder:
        """The given embedder of the model this collection was built with, else that model loaded
        by name (collections built with different models each get their own)."""
        given = next((e for e in self._embedders if e.name == col.index.embedder_name), None)
        with col.lock:
            return col.index.embedder(given)

    @property
    def embedder(self) -> Embedder:
        """The embedder of the first collection (what its index was built with)."""
        return self.embedder_for(self._collection(self.names[0]))

    def _embed(self, embedder: Embedder, query: str) -> np.ndarray:
        with self._lock:
            lock = self._embed_locks.setdefault(id(embedder), threading.Lock())
        with lock:
            return np.asarray(embedder.encode_query(query), dtype=np.float32)

    def prepare(self, progress: bool | None = None) -> None:
        """Load or build every collection's BM25 index now (a server calls this at start-up)."""
        for name in self.names:
            col = self._collection(name)
            if not col.in_store:  # a database collection has no BM25 cache to build
                col.lexical(progress=progress)

    def close(self) -> None:
        with self._lock:
            for col in self._collections.values():
                col.index.close()
            self._collections.clear()

    # -- search --------------------------------------------------------------------------------
    def search(self, query: str, k: int = DEFAULT_K, collections: list[str] | None = None,
               filters: dict | None = None, mode: str = "hybrid", mmr: bool = False,
               mmr_lambda: float = 0.5) -> list[Passage]:
        """The k best passages for `query`, best first. Passage.score is the fused score (cosine in
        dense mode, BM25 in bm25 mode)."""
        if not isinstance(query, str) or not query.strip():
            raise InvalidInput("the query is empty; type a question or some keywords")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InvalidInput(f"k must be a whole number of passages, at least 1, got {k!r}")
        check_mode(mode)
        if not 0.0 <= mmr_lambda <= 1.0:
            raise InvalidInput(f"mmr_lambda={mmr_lambda} must be between 0 (diversity only) and 1 (relevance only)")
        if isinstance(collections, str):
            collections = [collections]
        names = list(dict.fromkeys(collections)) if collections else self.names
        cols = [self._collection(n) for n in names]
        flt = parse_filters(filters)
        cfg = self.config
        need = max(4 * k, cfg.mmr_pool) if mmr else k
        depth = max(cfg.depth, need)

        dense_keys: list[np.ndarray] = []
        dense_scores: list[np.ndarray] = []
        sparse_keys: list[np.ndarray] = []
        sparse_scores: list[np.ndarray] = []
        by_model: dict[int, np.ndarray] = {}
        qvecs: list[np.ndarray | None] = []  # per collection; MMR needs them too
        for ci, col in enumerate(cols):
            qvecs.append(None)
            if mode != "bm25" or mmr:
                emb = self.embedder_for(col)
                if id(emb) not in by_model:
                    by_model[id(emb)] = self._embed(emb, query)
                qvecs[ci] = by_model[id(emb)]
            if mode != "bm25":
                ids, scores = col.dense(qvecs[ci], depth, flt)
                dense_keys.append(_keys(ci, ids))
                dense_scores.append(scores)
            if mode != "dense":
                ids, scores = col.sparse(query, depth, flt)
                sparse_keys.append(_keys(ci, ids))
                sparse_scores.append(scores)
        dense = _top(dense_keys, dense_scores, depth)
        sparse = _top(sparse_keys, sparse_scores, depth)

        if mode == "dense":
            keys, fused = dense
        elif mode == "bm25":
            keys, fused = sparse
        elif cfg.fusion == "rrf":
            keys, fused = rrf([dense[0], sparse[0]], [cfg.dense_weight, cfg.bm25_weight], cfg.rrf_k)
        else:
            keys, fused = convex([dense[0], sparse[0]], [dense[1], sparse[1]],
                                 [cfg.dense_weight, cfg.bm25_weight], cfg.normalization)
        keys, fused = keys[:need], fused[:need]
        if mmr and len(keys) > 1:
            keys, fused = self._mmr(cols, qvecs, keys, fused, k, mmr_lambda)
        return self._passages(cols, keys[: k * 2], fused[: k * 2], flt)[:k]

    def _mmr(self, cols: list[_Collection], qvecs: list[np.ndarray], keys: np.ndarray, fused: np.ndarray,
             k: int, lam: float) -> tuple[np.ndarray, np.ndarray]:
        col_of, ids = _split(keys)
        vecs: dict[int, np.ndarray] = {}
        for ci in np.unique(col_of).tolist():
            found = cols[ci].embeddings(ids[col_of == ci].tolist())
            vecs.update({int(_keys(ci, np.array([cid]))[0]): v for cid, v in found.items()})
        present = np.array([int(key) in vecs for key in keys], dtype=bool)  # a chunk removed meanwhile drops out
        keys, fused, col_of = keys[present], fused[present], col_of[present]
        if not len(keys):
            return keys, fused
        # Collections of different embedders live in different spaces: give each its own block
        # of dimensions, so cross-collection similarity is 0 and never penalizes.
        offsets, width = {}, 0
        space = [(cols[ci].index.embedder_name, len(vecs[int(key)])) for ci, key in zip(col_of.tolist(), keys)]
        for sp in space:
            if sp not in offsets:
                offsets[sp] = width
                width += sp[1]
        matrix = np.zeros((len(keys), max(width, 1)), np.float32)
        for row, (key, sp) in enumerate(zip(keys.tolist(), space)):
            matrix[row, offsets[sp] : offsets[sp] + sp[1]] = vecs[key]
        # MMR weighs relevance against passage-to-passage cosine, so relevance must be on the cosine
        # scale too: the fused scores (any scale) keep their order and spacing but are mapped onto
        # the span of the candidates' query cosines. Plain min-max to [0, 1] would make every
        # pool look maximally spread, and near-duplicates (cosine ~1) would still win at lam=0.5.
        cosines = np.array([float(vecs[key] @ qvecs[ci]) for key, ci in zip(keys.tolist(), col_of.tolist())])
        span = fused.max() - fused.min()
        relevance = cosines.min() + (fused - fused.min()) / span * (cosines.max() - cosines.min()) if span > 0 else cosines
        picked = mmr_select(relevance, matrix, k, lam, rescale=False)
        return keys[picked], fused[picked]

    def _passages(self, cols: list[_Collection], keys: np.ndarray, scores: np.ndarray,
                  flt: Filter | None) -> list[Passage]:
        col_of, ids = _split(keys)
        rows: dict[tuple, dict] = {}
        for ci in np.unique(col_of).tolist():
            with cols[ci].lock:
                for row in cols[ci].index.get_chunks(ids[col_of == ci].tolist()):
                    rows[(ci, row["id"])] = row
        out = []
        for key, score in zip(zip(col_of.tolist(), ids.tolist()), scores):
            row = rows.get(key)
            if row is None:  # removed since the search
                continue
            sources = row.get("sources") or [row["source"]]
            source = row["source"]
            if flt is not None:
                # Checked again on the live paths; cite the path that matched the filter.
                if not flt.match_page(row["page"]):
                    continue
                matching = [s for s in sources if flt.match_source(s)]
                if not matching:
                    continue
                source = matching[0]
            out.append(Passage(text=row["text"], source=source, page=row["page"], score=float(score),
                               chunk_id=int(row["id"]), collection=cols[key[0]].name,
                               start=int(row["start"]), end=int(row["end"]), sources=list(sources)))
        return out


def check_mode(mode: str) -> str:
    if mode not in RETRIEVAL_MODES:
        raise InvalidInput(f"unknown search mode {mode!r}; choose one of {', '.join(RETRIEVAL_MODES)}")
    return mode
