"""Embedding similarity with a per-text cache, for the gate, the citation check and the extractive answer.

The same passages and their sentences come back question after question (a conversation, an
evaluation over one corpus), so their vectors are kept (LRU by text) instead of re-encoded.
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

from ragapp.retrieve.lexical import sentences

if TYPE_CHECKING:
    import numpy as np

    from ragapp.ingest.embed import Embedder


class VectorCache:
    def __init__(self, embedder: "Embedder", max_items: int = 50_000):
        self.embedder = embedder
        self.max_items = max_items
        self._vecs: OrderedDict[str, "np.ndarray"] = OrderedDict()
        self._lock = threading.Lock()

    def encode(self, texts: list[str], progress: bool = False) -> "np.ndarray":
        """(n, dim) normalized vectors of `texts`, encoding only those not seen before."""
        import numpy as np

        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._vecs))
        if missing:
            new = self.embedder.encode(missing, show_progress=progress)
            with self._lock:
                for t, v in zip(missing, new):
                    self._vecs[t] = v
                while len(self._vecs) > self.max_items:
                    self._vecs.popitem(last=False)
        with self._lock:
            out = []
            for t in texts:
                v = self._vecs.get(t)
                if v is None:  # evicted between the two steps by another thread
                    v = self.embedder.encode([t])[0]
                else:
                    self._vecs.move_to_end(t)
                out.append(v)
        if not out:
            return np.zeros((0, self.embedder.dim), dtype=np.float32)
        return np.stack(out).astype(np.float32, copy=False)

    def warm(self, texts: list[str], store: Path | None = None, sentences_too: bool = True, progress: bool = True) -> None:
        """Encode texts (passages and, with `sentences_too`, their sentences) in big batches ahead of
        a long run: one batched call is many times faster than the same texts a few at a time.
        With `store` (a .npy path; a .json beside it lists the texts) vectors already computed are
        loaded, and new ones are saved every 1024 texts, so an interrupted warm-up resumes."""
        import numpy as np
        from tqdm.auto import tqdm


        wanted = list(dict.fromkeys(t for p in texts for t in ([p, *sentences(p)] if sentences_too else [p])))
        self.max_items = max(self.max_items, len(self._vecs) + len(wanted) + 10_000)
        names = Path(store).with_suffix(".json") if store else None
        saved_texts: list[str] = []
        if store and Path(store).exists() and names.exists():
            saved_texts = json.loads(names.read_text())
            saved = np.load(store)
            if len(saved_texts) != len(saved):
                saved_texts = []
            with self._lock:
                for t, v in zip(saved_texts, saved):
                    self._vecs.setdefault(t, v)
                    self._vecs.move_to_end(t)
        with self._lock:
            missing = [t for t in wanted if t not in self._vecs]
        step = 1024
        for i in tqdm(range(0, len(missing), step), desc="embedding passages", unit=" x1024", disable=not progress or not missing):
            self.encode(missing[i : i + step])
            if store:
                with self._lock:
                    keep = list(dict.fromkeys(t for t in [*saved_texts, *wanted] if t in self._vecs))
                    mat = np.stack([self._vecs[t] for t in keep]) if keep else np.zeros((0, self.embedder.dim), np.float32)
                tmp = Path(store).with_suffix(".tmp.npy")
                np.save(tmp, mat)
                names.with_suffix(".tmp").write_text(json.dumps(keep))
                os.replace(tmp, store)  # vectors first: a crash between the two leaves a length mismatch, ignored on load
                os.replace(names.with_suffix(".tmp"), names)

    def similarities(self, query: str, texts: list[str]) -> "np.ndarray":
        """Cosine similarity of `query` with each of `texts`, shape (len(texts),)."""
        import numpy as np

        if not texts:
            return np.zeros(0, dtype=np.float32)
        vecs = self.encode([query, *texts])
        return vecs[1:] @ vecs[0]


_caches: dict[int, VectorCache] = {}
_caches_lock = threading.Lock()


def vector_cache(embedder: "Embedder") -> VectorCache:
    """One shared cache per embedder object."""
    with _caches_lock:
        cache = _caches.get(id(embedder))
        if cache is None or cache.embedder is not embedder:
            cache = _caches[id(embedder)] = VectorCache(embedder)
        return cache


class CachedEmbedder:
    """An Embedder whose vectors come from a VectorCache: hand it to the Retriever in a long run,
    after `cache.encode(all_questions)`, and each query is embedded once, in a batch."""

    def __init__(self, cache: VectorCache):
        inner = cache.embedder
        self.cache = cache
        self.name, self.dim = inner.name, inner.dim
        self.max_seq_length, self.tokenizer = inner.max_seq_length, inner.tokenizer

    def encode(self, texts: list[str], batch_size: int = 64, show_progress: bool = False) -> "np.ndarray":
        return self.cache.encode(list(texts), progress=show_progress)

    def encode_query(self, text: str) -> "np.ndarray":
        if getattr(self.cache.embedder, "asymmetric", False):  # e5 embeds a query unlike the same text as a passage
            return self.cache.embedder.encode_query(text)
        return self.cache.encode([text])[0]
