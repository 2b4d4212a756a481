"""Stage 3, retrieve: passages for a question. Dense and BM25 search fused (retriever, fusion),
with the word-level helpers (lexical) and embedding similarities (similarity) the later stages
share. May import index, ingest and the root modules."""
