"""pgvector HNSW against FAISS HNSW at a million vectors, on this machine: build time, recall@10
against exact search, p50/p99 latency of one query at a time, size.

The engines alone, as a PostgreSQL collection and an embedded one search: the same N synthetic
384-d vectors (bench_latency.VectorModel: real MiniLM chunk embeddings of SciFact as cluster
centres plus noise with their covariance) go into a bare pgvector table (binary COPY, then
`CREATE INDEX … USING hnsw` with the collections' m=16, ef_construction=64, built in parallel) and
into ragapp's FAISS HNSW store (M=32). Queries: real SciFact test questions embedded by MiniLM.
Exact top 10 by numpy. The table and rows of a real collection (texts, postings) are left out:
bench_postgres.py measures those at 100k chunks.

    nice -n 5 .venv/bin/python benchmarks/bench_pgvector_ann.py            # 1M vectors, section postgres-ann
    nice -n 5 .venv/bin/python benchmarks/bench_pgvector_ann.py --n 100000 --no-write   # a quick look

The PostgreSQL data stays in indexes/_bench_pg/pgdata (bench_postgres.py's server); a rerun with
the same N reuses the table and its index.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_latency import DIM, VectorModel, percentile  # noqa: E402
from benchmarks.bench_postgres import start_server  # noqa: E402

PG_EF = (40, 64, 128, 256)
FAISS_EF = (32, 64, 128, 256)


def exact_top10(queries: np.ndarray, vecs: np.ndarray) -> np.ndarray:
    best = np.empty((len(queries), 10), dtype=np.int64)
    scores = queries @ vecs.T
    for i, row in enumerate(scores):
        top = np.argpartition(-row, 10)[:10]
        best[i] = top[np.argsort(-row[top])]
    return best


def recall(found: list, truth: np.ndarray) -> float:
    return float(np.mean([len(set(list(f)[:10]) & set(t.tolist())) / 10 for f, t in zip(found, truth)]))


def pgvector_rows(url: str, vecs: np.ndarray, queries: np.ndarray, truth: np.ndarray) -> list[dict]:
    import psycopg
    from pgvector.psycopg import register_vector

    table = f"ann_{len(vecs)}"
    rows = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        register_vector(conn)
        have = conn.execute("SELECT to_regclass(%s)", (f"{table}_hnsw",)).fetchone()[0]
        if have is None:
            conn.execute(f"DROP TABLE IF EXISTS {table}")
            conn.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, embedding vector({DIM}))")
            t = time.perf_counter()
            with conn.cursor() as cur, cur.copy(f"COPY {table} (id, embedding) FROM STDIN WITH (FORMAT BINARY)") as copy:
                copy.set_types(["int8", "vector"])
                for i, v in enumerate(vecs):
                    copy.write_row((i, v))
            load_s = time.perf_counter() - t
            print(f"pgvector: {len(vecs):,} rows copied in {load_s:.0f} s", flush=True)
            conn.execute("SET maintenance_work_mem = '6GB'")  # the whole graph in memory: the fast build
            conn.execute(f"SET max_parallel_maintenance_workers = {max(0, (os.cpu_count() or 1) - 1)}")
            t = time.perf_counter()
            conn.execute(f"CREATE INDEX {table}_hnsw ON {table} USING hnsw (embedding vector_cosine_ops) "
                         "WITH (m = 16, ef_construction = 64)")
            build_s = time.perf_counter() - t
            conn.execute(f"COMMENT ON INDEX {table}_hnsw IS '{load_s:.1f} {build_s:.1f}'")
        load_s, build_s = map(float, conn.execute("SELECT obj_description(%s::regclass, 'pg_class')",
                                                  (f"{table}_hnsw",)).fetchone()[0].split())
        print(f"pgvector: HNSW built in {build_s:.0f} s", flush=True)
        index_bytes = conn.execute("SELECT pg_relation_size(%s)", (f"{table}_hnsw",)).fetchone()[0]
        table_bytes = conn.execute("SELECT pg_table_size(%s)", (table,)).fetchone()[0]
        for ef in PG_EF:
            conn.execute(f"SET hnsw.ef_search = {ef}")
            found, lat = [], []
            for q in queries:
                t = time.perf_counter()
                ids = [r[0] for r in conn.execute(f"SELECT id FROM {table} ORDER BY embedding <=> %s LIMIT 10", (q,))]
                lat.append(time.perf_counter() - t)
                found.append(ids)
            rows.append({"engine": "pgvector HNSW", "setting": f"m=16, ef_construction=64, ef_search={ef}"
                         + (" (pgvector's default)" if ef == 40 else ""), "recall": recall(found, truth),
                         "p50": percentile(lat, 50), "p99": percentile(lat, 99), "build_s": build_s,
                         "load_s": load_s, "index_bytes": index_bytes, "data_bytes": table_bytes})
            print(rows[-1], flush=True)
    return rows


def faiss_rows(vecs: np.ndarray, queries: np.ndarray, truth: np.ndarray) -> list[dict]:
    import faiss

    from ragapp.index.vectors import make_vector_store
    from ragapp.retrieve.retriever import _one_omp_thread

    store = make_vector_store("hnsw", DIM)
    ids = np.arange(len(vecs), dtype=np.int64)
    t = time.perf_counter()
    for i in range(0, len(vecs), 50_000):
        store.add(ids[i : i + 50_000], vecs[i : i + 50_000])
    build_s = time.perf_counter() - t
    print(f"FAISS: HNSW built in {build_s:.0f} s", flush=True)
    size = len(faiss.serialize_index(store.index))
    graph = faiss.downcast_index(store.index.index)
    rows = []
    for ef in FAISS_EF:
        graph.hnsw.efSearch = ef
        found, lat = [], []
        for q in queries:
            with _one_omp_thread():  # as the Retriever searches: one query, one thread
                t = time.perf_counter()
                _, got = store.search(q[None], 10)
                lat.append(time.perf_counter() - t)
            found.append(got[0])
        rows.append({"engine": "FAISS HNSW", "setting": f"M=32, efSearch={ef}" + (" (ragapp's default)" if ef == 64 else ""),
                     "recall": recall(found, truth), "p50": percentile(lat, 50), "p99": percentile(lat, 99),
                     "build_s": build_s, "load_s": 0.0, "index_bytes": size, "data_bytes": 0})
        print(rows[-1], flush=True)
    return rows


def report(n: int, rows: list[dict], source: str, qsource: str) -> str:
    from benchmarks._report import machine

    mib = 1024 * 1024
    lines = [f"## pgvector HNSW vs FAISS HNSW at {n:,} vectors (`benchmarks/bench_pgvector_ann.py`)", "",
             f"Machine: {machine()}, load average {os.getloadavg()[0]:.1f} at the end. PostgreSQL 16.2 + pgvector 0.6.2 (pgserver), Unix socket, "
             f"the index built with maintenance_work_mem 6 GB and {max(0, (os.cpu_count() or 1) - 1)} parallel "
             f"worker(s); FAISS in process, one thread a query. Vectors: {n:,} draws, 384-d ({source}). Queries: "
             f"{qsource}, one at a time; recall@10 against exact search (numpy). pgvector latency includes the SQL "
             "statement and the socket round trip.", "",
             "| engine | setting | recall@10 | p50 ms | p99 ms | build s | index size | data size |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        build = f"{r['build_s']:.0f}" + (f" (+ {r['load_s']:.0f} COPY)" if r["load_s"] else "")
        data = f"{r['data_bytes'] / mib:,.0f} MiB" if r["data_bytes"] else "in the SQLite store"
        lines.append(f"| {r['engine']} | {r['setting']} | {r['recall']:.3f} | {r['p50']:.2f} | {r['p99']:.2f} | "
                     f"{build} | {r['index_bytes'] / mib:,.0f} MiB | {data} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="vectors (default 1,000,000)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--url", help="an existing PostgreSQL database with pgvector (default: pgserver)")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = VectorModel()
    print(model.source, flush=True)
    vecs = model.draw(args.n)
    queries, qsource = model.queries(args.queries)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    truth = exact_top10(queries, vecs)
    url, stop = (args.url, lambda: None) if args.url else start_server()
    try:
        rows = pgvector_rows(url, vecs, queries, truth)
    finally:
        stop()
    gc.collect()
    rows += faiss_rows(vecs, queries, truth)
    text = report(args.n, rows, model.source, qsource)
    from benchmarks._report import publish

    publish("postgres-ann", text, write=not args.no_write)


if __name__ == "__main__":
    main()
