"""Query latency of the Retriever at 10k and 100k chunks, and recall@10 of the approximate vector
stores (HNSW, IVF-PQ) against exact search at 1M vectors, in one run.

Latency goes through the real path: an Index (SQLite store + FAISS file, written with the
store's own `add_content`/`put_file`, then `save_vectors`) and `Retriever.search`, with synthetic
chunks: Zipf-distributed pseudo-words for BM25 and 384-d vectors. The query embedding is
excluded (the benchmark embedder returns precomputed query vectors); everything after it is
timed: dense search, BM25 scoring, fusion, and reading the k passages from SQLite.

Vectors: the real MiniLM chunk embeddings of SciFact (from the index bench_retrieval.py builds)
serve as cluster centres, and each synthetic vector is a centre plus Gaussian noise with the
covariance of those embeddings, L2-normalized: real embeddings are clustered and anisotropic,
which matters to ANN recall. ANN queries are the real SciFact test questions embedded by MiniLM.
Without the SciFact index both fall back to isotropic data (the report says which was used).

    nice -n 10 .venv/bin/python benchmarks/bench_latency.py            # writes its two BENCHMARKS.md sections
    nice -n 10 .venv/bin/python benchmarks/bench_latency.py --sizes 10000 --kinds flat --ann-size 100000 --no-write   # quick look
    nice -n 10 .venv/bin/python benchmarks/bench_latency.py --sizes --ann-size 1000000   # only the ANN table

The synthetic indexes are kept under indexes/_bench/ so a rerun skips building them.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
WORK = ROOT / "indexes" / "_bench"
DIM = 384
CHUNKS_PER_FILE = 10


# -- synthetic data ----------------------------------------------------------------------------------
class VectorModel:
    """Synthetic embeddings shaped like real ones: each draw is a real MiniLM chunk embedding of
    SciFact (a topic) plus Gaussian noise with the covariance of those embeddings, normalized, so
    a million draws form ~17k clusters with realistic anisotropy. Without the SciFact index
    (bench_retrieval.py builds it) the centres and noise are isotropic. Queries are the real
    SciFact test questions embedded by MiniLM when available."""

    def __init__(self, dim: int = DIM, seed: int = 0, noise: float = 1.0):
        self.rng = np.random.default_rng(seed)
        self.noise = noise
        real, found_in = self._real_embeddings()
        if real is not None and len(real) > 4 * dim:
            self.centers = real
            self.mean = real.mean(0)
            w, v = np.linalg.eigh(np.cov(real - self.mean, rowvar=False))
            self.root = (v * np.sqrt(np.clip(w, 0, None))).T.astype(np.float32)  # z @ root ~ N(0, cov)
            self.source = (f"{len(real):,} real MiniLM chunk embeddings of SciFact (index {found_in}) as cluster "
                           "centres, plus Gaussian noise with their covariance")
        else:
            self.centers = self._normalized(self.rng.standard_normal((20_000, dim), dtype=np.float32))
            self.root = np.eye(dim, dtype=np.float32) / np.sqrt(dim)
            self.source = "20,000 random centres plus isotropic noise (no SciFact index found)"

    @staticmethod
    def _normalized(x: np.ndarray) -> np.ndarray:
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    @staticmethod
    def _real_embeddings():
        """(vectors, index name) of bench_retrieval.py's SciFact index: the default embedder's, else
        its int8 copy's (cosine ~0.994 to it); (None, None) without either."""
        from ragapp.index.index import Index, list_indexes

        names = [n for n in ("scifact", "scifact-all-minilm-l6-v2-int8") if n in list_indexes(WORK)]
        if not names:
            return None, None
        index = Index.open(names[0], WORK)
        parts = [vecs for _, vecs in index.store.embeddings()]
        index.close()
        return (np.concatenate(parts), names[0]) if parts else (None, None)

    def draw(self, n: int) -> np.ndarray:
        out = np.empty((n, self.root.shape[0]), np.float32)
        for i in range(0, n, 100_000):
            m = min(100_000, n - i)
            centre = self.centers[self.rng.integers(0, len(self.centers), m)]
            z = self.rng.standard_normal((m, self.root.shape[0]), dtype=np.float32) @ self.root
            out[i : i + m] = self._normalized(centre + self.noise * z)
        return out

    def queries(self, n: int) -> tuple[np.ndarray, str]:
        """Real SciFact test questions embedded by MiniLM, or fresh draws."""
        try:
            from benchmarks.beir import load_beir
            from ragapp.ingest.embed import load_embedder

            if self.source.startswith("20,000"):
                raise LookupError
            texts = list(load_beir(split="test").queries.values())[:n]
            return load_embedder("all-MiniLM-L6-v2").encode(texts), f"{len(texts)} SciFact test questions (MiniLM)"
        except Exception:
            return self.draw(n), f"{n} fresh draws"


class Words:
    """Pseudo-words with Zipf frequencies, so BM25 posting lists have realistic lengths."""

    def __init__(self, vocab: int = 30_000, seed: int = 0):
        rng = np.random.default_rng(seed)
        letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
        lengths = rng.integers(3, 10, vocab)
        self.words = ["".join(rng.choice(letters, n)) for n in lengths]
        p = 1.0 / np.arange(1, vocab + 1) ** 1.07
        self.p = p / p.sum()
        self.rng = rng

    def texts(self, n: int, words: tuple[int, int] = (100, 180)) -> list[str]:
        lens = self.rng.integers(words[0], words[1], n)
        idx = self.rng.choice(len(self.words), size=int(lens.sum()), p=self.p)
        out, pos = [], 0
        for m in lens:
            out.append(" ".join(self.words[j] for j in idx[pos : pos + m]))
            pos += m
        return out


class QueryTable:
    """The benchmark's Embedder: queries come with precomputed vectors, so the query embedding
    (which a real model would add, ~5-15 ms for MiniLM on this CPU) is left out of the timing."""

    name = "synthetic-384"
    dim = DIM
    max_seq_length = 256
    tokenizer = None

    def __init__(self):
        self.table: dict[str, np.ndarray] = {}

    def encode(self, texts, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        return np.stack([self.table[t] for t in texts])

    def encode_query(self, text: str) -> np.ndarray:
        return self.table[text]


def write_synthetic(index, start: int, m: int, model: VectorModel, words: Words) -> None:
    """m synthetic chunks (10 a file, numbered from `start`) through the store's API, in one transaction."""
    from ragapp.index.backend import FileRow, NewChunk

    vecs, texts = model.draw(m), words.texts(m)
    with index.store.transaction():
        for f in range(0, m, CHUNKS_PER_FILE):
            key = f"synthetic-{start + f}"
            chunks = [NewChunk(t, None, 0, len(t), len(t.split())) for t in texts[f : f + CHUNKS_PER_FILE]]
            index.store.add_content(key, chunks, vecs[f : f + CHUNKS_PER_FILE], pages=1)
            index.store.put_file(FileRow(f"docs/{(start + f) // 1000:04d}/file{start + f}.txt", key,
                                         1000, 0, "synthetic"))


def build_index(n: int, model: VectorModel, words: Words, embedder: QueryTable, kind: str = "flat"):
    """indexes/_bench/latency-<kind>-<n>: n synthetic chunks, 10 a file. Reused when complete."""
    from tqdm import tqdm

    from ragapp.index.index import Index

    name = f"latency-{kind}-{n}"
    try:
        index = Index.open(name, WORK)
        if index.store.count("chunks") == n:
            return index
        index.close()
        from ragapp.index.index import remove_index

        remove_index(name, WORK)  # an interrupted build: start over (it takes seconds)
    except Exception:
        pass
    index = Index.create(name, WORK, embedder=embedder, vector_kind=kind)
    with index.writing():
        for start in tqdm(range(0, n, 10_000), desc=f"building {name}", unit="10k chunks"):
            write_synthetic(index, start, min(10_000, n - start), model, words)
        index.save_vectors()
    return index


def percentile(xs: list[float], q: float) -> float:
    return float(np.percentile(np.array(xs) * 1000, q))


# -- latency ---------------------------------------------------------------------------------------
def latency(sizes: list[int], n_queries: int, model: VectorModel, kinds: list[str]) -> list[dict]:
    from ragapp.retrieve.retriever import Retriever

    rows = []
    words = Words()
    for kind in kinds:
        for n in sizes:
            embedder = QueryTable()
            index = build_index(n, model, words, embedder, kind)
            name = index.name
            index.close()
            # Queries: 3-6 words of a random stored chunk (so BM25 has matches) with a vector near it.
            qrng = np.random.default_rng(1)
            probe = chunks_at(name, qrng.integers(0, n, n_queries))
            queries = []
            for text, vec in probe:
                toks = text.split()
                start = int(qrng.integers(0, max(1, len(toks) - 6)))
                q = " ".join(toks[start : start + int(qrng.integers(3, 7))])
                noisy = vec + 0.9 * model.draw(1)[0]
                embedder.table[q] = (noisy / np.linalg.norm(noisy)).astype(np.float32)
                queries.append(q)
            # BM25: build time (what the first search after an index change pays) and load time
            # of the disk cache (what a restart pays).
            shutil.rmtree(WORK / name / "bm25", ignore_errors=True)
            r = Retriever(name, index_dir=WORK, embedder=embedder)
            t = time.perf_counter()
            r.prepare()
            bm25_build = time.perf_counter() - t
            r.close()
            r = Retriever(name, index_dir=WORK, embedder=embedder)
            t = time.perf_counter()
            r.prepare()
            bm25_load = time.perf_counter() - t
            for q in queries[:10]:  # warm-up: vector file, caches
                r.search(q, k=5)
            for mode in ("hybrid", "dense", "bm25"):
                times = []
                for q in queries:
                    t = time.perf_counter()
                    r.search(q, k=5, mode=mode)
                    times.append(time.perf_counter() - t)
                rows.append({"kind": kind, "n": n, "mode": mode, "p50": percentile(times, 50),
                             "p99": percentile(times, 99), "bm25_build": bm25_build, "bm25_load": bm25_load})
                print(rows[-1], flush=True)
            r.close()
            gc.collect()
    return rows


def chunks_at(name: str, rows: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(text, vector) of chunks at these positions (by id order)."""
    from ragapp.index.index import Index

    index = Index.open(name, WORK)
    ids = np.sort(index.store.chunk_ids())[rows]
    texts = {c["id"]: c["text"] for c in index.get_chunks(ids.tolist())}
    vecs = index.embeddings_by_id(ids)
    index.close()
    return [(texts[int(i)], vecs[int(i)]) for i in ids]


# -- ANN recall ------------------------------------------------------------------------------------
def ann_recall(n: int, n_queries: int, model: VectorModel, stores=("hnsw", "ivfpq")) -> list[dict]:
    """Recall@10 of HNSW and IVF-PQ stores against the flat store on the same n vectors."""
    from ragapp.index.vectors import RERANK_DEPTH, make_vector_store, rerank_exact

    print(f"drawing {n:,} vectors ...", flush=True)
    vecs = model.draw(n)
    ids = np.arange(n, dtype=np.int64)
    queries, query_source = model.queries(n_queries)
    print("queries:", query_source, flush=True)
    rows = []

    def add_all(store):
        # Batches of 50k, as Index._reconcile feeds a store from SQLite: IVF-PQ trains on the
        # first batch (50k vectors), exactly as it would when a large collection is indexed.
        from tqdm import tqdm

        for i in tqdm(range(0, n, 50_000), desc=f"adding to {store.kind}", unit="50k"):
            store.add(ids[i : i + 50_000], vecs[i : i + 50_000])

    def timed_search(store, k=10):
        from ragapp.retrieve.retriever import _one_omp_thread

        lat = []
        found = []
        for q in queries:
            with _one_omp_thread():  # as the Retriever searches: one query, one thread
                t = time.perf_counter()
                _, got = store.search(q[None], k)
                lat.append(time.perf_counter() - t)
            found.append(got[0])
        return np.array(found), lat

    flat = make_vector_store("flat", DIM)
    t = time.perf_counter()
    add_all(flat)
    build = time.perf_counter() - t
    truth, lat = timed_search(flat)
    rows.append({"store": "flat (exact)", "setting": "", "recall": 1.0, "p50": percentile(lat, 50),
                 "build_s": build, "bytes": n * DIM * 4, "describe": flat.describe(), "queries": query_source})
    print(rows[-1], flush=True)
    del flat
    gc.collect()

    def recall(found):
        return float(np.mean([len(set(f[:10]) & set(t[:10])) / 10 for f, t in zip(found, truth)]))

    import faiss

    if "hnsw" in stores:
        rows += hnsw_rows(n, add_all, timed_search, recall)
    if "ivfpq" not in stores:
        return rows
    ivf = make_vector_store("ivfpq", DIM)
    t = time.perf_counter()
    add_all(ivf)
    build = time.perf_counter() - t
    inner = faiss.extract_index_ivf(ivf.index)
    for nprobe in (8, 32, 128):
        inner.nprobe = nprobe
        found, lat = timed_search(ivf)
        rows.append({"store": "ivfpq", "setting": f"nprobe={nprobe}" + (" (default)" if nprobe == 32 else ""),
                     "recall": recall(found), "p50": percentile(lat, 50), "build_s": build,
                     "bytes": n * (ivf.m * ivf.nbits // 8 + 8), "describe": ivf.describe()})
        print(rows[-1], flush=True)
        # What Index.vector_search does with an IVF-PQ store: RERANK_DEPTH candidates, re-scored with
        # the exact vectors (read here from memory; the index reads them from SQLite, timed separately)
        lat, found = [], []
        from ragapp.retrieve.retriever import _one_omp_thread

        for q in queries:
            with _one_omp_thread():
                t = time.perf_counter()
                _, cand = ivf.search(q[None], RERANK_DEPTH)
                _, got = rerank_exact(q[None], cand, lambda want: {int(i): vecs[int(i)] for i in want}, 10)
                lat.append(time.perf_counter() - t)
            found.append(got[0])
        rows.append({"store": "ivfpq + exact re-rank", "setting": f"nprobe={nprobe}, top {RERANK_DEPTH} re-scored"
                     + (" (default)" if nprobe == 32 else ""), "recall": recall(np.array(found)),
                     "p50": percentile(lat, 50), "build_s": build, "bytes": n * (ivf.m * ivf.nbits // 8 + 8),
                     "describe": ivf.describe()})
        print(rows[-1], flush=True)
    return rows


def hnsw_rows(n, add_all, timed_search, recall) -> list[dict]:
    import faiss

    from ragapp.index.vectors import make_vector_store

    rows = []
    hnsw = make_vector_store("hnsw", DIM)
    t = time.perf_counter()
    add_all(hnsw)
    build = time.perf_counter() - t
    graph = faiss.downcast_index(hnsw.index.index)
    for ef in (32, 64, 128, 256):
        graph.hnsw.efSearch = ef
        found, lat = timed_search(hnsw)
        rows.append({"store": "hnsw", "setting": f"M=32, efSearch={ef}" + (" (default)" if ef == 64 else ""),
                     "recall": recall(found), "p50": percentile(lat, 50), "build_s": build,
                     "bytes": n * DIM * 4 + n * 32 * 2 * 4, "describe": hnsw.describe()})
        print(rows[-1], flush=True)
    del hnsw, graph
    gc.collect()
    return rows


def latency_report(rows: list[dict], n_queries: int, model: VectorModel) -> str:
    from benchmarks._report import machine

    out = ["## Retrieval latency (`benchmarks/bench_latency.py`)\n",
           f"Machine: {machine()}, load average {os.getloadavg()[0]:.1f} during the run (the CPU is shared). "
           f"Vectors: {model.source}; L2-normalized, 384-d. Texts: Zipf-distributed pseudo-words, 100-180 a chunk.\n",
           f"`Retriever.search(k=5)` through a real Index (SQLite store + FAISS file), {n_queries} queries after "
           "10 warm-up ones, query embedding excluded: dense top-1000 + BM25 top-1000 (with section "
           "context), convex fusion, 5 passages read from SQLite. Target: hybrid p50 < 10 ms.\n",
           "| vector store | chunks | mode | p50 ms | p99 ms | BM25 index: build s / load from cache s |",
           "|---|---:|---|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['kind']} | {r['n']:,} | {r['mode']} | {r['p50']:.2f} | {r['p99']:.2f} | {r['bm25_build']:.1f} / {r['bm25_load']:.2f} |")
    out += ["", "A flat (exact) search reads every vector: 100k x 384 floats is 150 MB a query, bound by this "
            "machine's memory bandwidth (12-25 ms single-threaded, depending on the load), so the 10 ms target at 100k "
            "chunks needs `--vector hnsw` (recall@10 0.95 at 1M, see below)."]
    return "\n".join(out)


def ann_report(rows: list[dict], n: int, model: VectorModel) -> str:
    from benchmarks._report import machine

    out = ["## Approximate vector search: recall@10 at 1M vectors (`benchmarks/bench_latency.py`)\n",
           f"Machine: {machine()}, load average {os.getloadavg()[0]:.1f}. {n:,} vectors: {model.source}; "
           f"queries: {rows[0]['queries']}, searched one at a time. Stores from "
           "`ragapp.index.vectors.make_vector_store` with their defaults, filled in batches of 50k as an index "
           "fills them from its SQLite store; recall@10 = overlap of the top 10 with the exact (flat) top 10.\n",
           "| store | setting | recall@10 | p50 ms/query | build s | memory (approx.) |",
           "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['store']} | {r['setting']} | {r['recall']:.3f} | {r['p50']:.2f} | {r['build_s']:.0f} "
                   f"| {r['bytes'] / 2**20:,.0f} MiB |")
    if any(r["setting"].endswith("†") for r in rows):
        out += ["", "† kept from an earlier run on the same vectors and queries (`--ann-stores` left that store out)."]
    out += ["", "IVF-PQ: " + next(r["describe"] for r in rows if r["store"] == "ivfpq") + ". Its 48-byte codes "
            "misorder close neighbours, so `Index.vector_search` re-scores the top "
            "100 candidates with the exact vectors it keeps in SQLite (the \"+ exact re-rank\" rows; vectors read "
            "from memory in this table)." + sqlite_fetch_note()]
    return "\n".join(out)


def sqlite_fetch_note(n: int = 100, repeats: int = 50) -> str:
    """What reading the re-rank's exact vectors from an index's SQLite store costs (the 100k latency index)."""
    name = "latency-flat-100000"
    if not (WORK / name).exists():
        return ""
    from ragapp.index.index import Index

    index = Index.open(name, WORK)
    all_ids = index.store.chunk_ids()
    rng = np.random.default_rng(0)
    lat = []
    for _ in range(repeats):
        want = rng.choice(all_ids, n, replace=False)
        t = time.perf_counter()
        index.embeddings_by_id(want)
        lat.append(time.perf_counter() - t)
    index.close()
    return (f" Reading {n} random chunks' vectors from a 100k-chunk index's SQLite store takes "
            f"{percentile(lat, 50):.2f} ms (p50 of {repeats}), to add to those rows.")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000],
                        help="chunk counts for the latency table (none: skip it)")
    parser.add_argument("--kinds", nargs="*", default=["flat", "hnsw"], help="vector stores for the latency table")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--ann-size", type=int, default=1_000_000, help="0 skips the ANN recall table")
    parser.add_argument("--ann-stores", nargs="*", default=["hnsw", "ivfpq"],
                        help="approximate stores to measure against flat; rows of stores left out are kept "
                             "from the last run's saved measurements")
    parser.add_argument("--no-write", action="store_true", help="print the tables, leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    WORK.mkdir(parents=True, exist_ok=True)
    from benchmarks._report import publish

    model = VectorModel()
    print(model.source, flush=True)
    # Each table is its own BENCHMARKS.md section, written as soon as it is measured.
    if args.sizes:
        text = latency_report(latency(args.sizes, args.queries, model, args.kinds), args.queries, model)
        publish("latency", text, write=not args.no_write)
    if args.ann_size:
        rows = ann_recall(args.ann_size, args.queries, model, args.ann_stores)
        saved = WORK / f"ann-{args.ann_size}.json"
        if saved.exists():  # keep the last run's rows of the stores not measured this time
            kept = [{**r, "setting": r["setting"].rstrip(" †") + " †"} for r in json.loads(saved.read_text())
                    if r["store"] != "flat (exact)" and r["store"].split()[0] not in args.ann_stores]
            rows = rows[:1] + kept + rows[1:]
        # An hour of measurements: keep them, in case formatting the table fails.
        (WORK / f"ann-{args.ann_size}.json").write_text(json.dumps(rows, indent=1))
        text = ann_report(rows, args.ann_size, model)
        publish("ann-recall", text, write=not args.no_write)


if __name__ == "__main__":
    main()
