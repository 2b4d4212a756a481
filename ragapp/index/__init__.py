"""Stage 2, index: one collection on disk. SQLite is the truth (store: every SQL statement of the
package), FAISS (vectors) and BM25 (bm25) are caches rebuilt from it; sync brings an index in step
with a folder or a list of files. May import ingest and the root modules."""
