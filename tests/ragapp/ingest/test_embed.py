"""The real embedder: bundled all-MiniLM-L6-v2, offline, 384-d normalized vectors."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import FakeEmbedder

from ragapp.config import DEFAULT_EMBEDDER
from ragapp.errors import InvalidInput
from ragapp.ingest.embed import Embedder, canonical_name, load_embedder


@pytest.mark.parametrize("given, expected", [
    ("all-MiniLM-L6-v2", "all-MiniLM-L6-v2"),
    ("sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2"),
    ("ALL-minilm-l6-v2", "all-MiniLM-L6-v2"),
    ("BAAI/bge-small-en-v1.5", "BAAI/bge-small-en-v1.5"),
])
def test_canonical_names(given, expected):
    assert canonical_name(given) == expected


def test_folder_name_is_stored_absolute(tmp_path, monkeypatch):
    (tmp_path / "my-model").mkdir()
    monkeypatch.chdir(tmp_path)
    assert canonical_name("my-model") == str(tmp_path / "my-model")


def test_fake_embedder_satisfies_the_protocol(fake_embedder):
    assert isinstance(fake_embedder, Embedder)
    vecs = fake_embedder.encode(["one text", "another text"])
    assert vecs.shape == (2, 32) and np.allclose(np.linalg.norm(vecs, axis=1), 1)


@pytest.mark.slow
def test_bundled_minilm_loads_offline_and_gives_normalized_384d_vectors():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    embedder = load_embedder()
    assert isinstance(embedder, Embedder)
    assert (embedder.name, embedder.dim, embedder.max_seq_length) == (DEFAULT_EMBEDDER, 384, 256)
    assert embedder.device == "cpu"
    assert type(embedder.tokenizer).__name__.startswith("Bert")
    assert load_embedder("sentence-transformers/all-MiniLM-L6-v2") is embedder  # cached per name and device

    texts = ["The cat sits on the mat.", "A kitten is sitting on a rug.", "Stock markets fell sharply today."]
    vecs = embedder.encode(texts)
    assert vecs.shape == (3, 384) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert vecs[0] @ vecs[1] > 0.5 > vecs[0] @ vecs[2]  # meaning, not just words
    q = embedder.encode_query("a cat on a mat")
    assert q.shape == (384,) and abs(np.linalg.norm(q) - 1) < 1e-5
    assert int(np.argmax(vecs @ q)) == 0
    assert embedder.encode([]).shape == (0, 384)
    # batching does not change the vectors
    np.testing.assert_allclose(embedder.encode(texts, batch_size=1), vecs, atol=1e-5)


def test_unknown_model_names_the_fix(tmp_path):
    with pytest.raises(InvalidInput) as err:
        load_embedder(str(tmp_path / "no-such-model-folder"), device="cpu")
    message = str(err.value)
    assert message.startswith(f"cannot load embedder '{tmp_path / 'no-such-model-folder'}': ")
    assert message.endswith("pass a sentence-transformers model folder, the bundled all-MiniLM-L6-v2 or multilingual-e5-small")
    assert "\n" not in message


def test_fake_embedder_is_deterministic(tokenizer):
    a, b = FakeEmbedder(tokenizer), FakeEmbedder(tokenizer)
    np.testing.assert_array_equal(a.encode(["same words here"]), b.encode(["same words here"]))
