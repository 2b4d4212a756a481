"""Data-parallel encoding on CPU: length-sorted batches, each run whole by one worker thread.

Why not one call that splits every matmul across the cores: MiniLM's matrices are small (384
wide), so intra-op threads spend much of the time synchronizing; whole batches side by side do
not, and torch and onnxruntime release the GIL while they compute. Preparing a batch (tokenizing)
stays in the calling thread: a fast tokenizer must not be used from two threads at once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np


def encode_in_parallel(texts: list[str], dim: int, batch_size: int, workers: int,
                       prepare: Callable[[list[str]], Any], run: Callable[[Any], np.ndarray],
                       done: Callable[[int], None] | None = None, name: str = "ragapp-embed") -> np.ndarray:
    """(len(texts), dim) float32: `run(prepare(batch))` for length-sorted batches of `batch_size`,
    `workers` at a time; `done(n)` after each batch of n texts (a progress bar)."""
    import numpy as np

    order = np.argsort([-len(t) for t in texts], kind="stable")  # similar lengths, little padding
    out = np.empty((len(texts), dim), dtype=np.float32)
    with ThreadPoolExecutor(workers, thread_name_prefix=name) as pool:
        running: deque = deque()

        def finish() -> None:
            idx, future = running.popleft()
            out[idx] = future.result()
            if done is not None:
                done(len(idx))

        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            running.append((idx, pool.submit(run, prepare([texts[i] for i in idx]))))
            while len(running) > 2 * workers:  # bound the prepared batches in memory
                finish()
        while running:
            finish()
    return out
