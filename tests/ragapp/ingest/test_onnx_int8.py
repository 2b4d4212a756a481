"""all-MiniLM-L6-v2-int8: the bundled model exported to ONNX, quantized, and run by ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest

from ragapp.ingest import onnx_int8
from ragapp.ingest.embed import Embedder, canonical_name, load_embedder

pytestmark = pytest.mark.slow

TEXTS = ["The cat sits on the mat.", "A kitten is sitting on a rug.", "Stock markets fell sharply today.",
         "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen. " * 12]


@pytest.fixture(scope="module")
def int8(tmp_path_factory):
    path = onnx_int8.cached_model(tmp_path_factory.mktemp("cache"))
    return onnx_int8.OnnxInt8Embedder(path, workers=2)


def test_names():
    assert canonical_name("all-minilm-l6-v2-int8") == canonical_name("minilm-int8") == "all-MiniLM-L6-v2-int8"


def test_exported_once_and_reused(tmp_path):
    path = onnx_int8.cached_model(tmp_path)
    assert path.name == "model.int8.onnx" and path.stat().st_size < 30e6  # int8: a quarter of the fp32 90 MB
    before = path.stat().st_mtime_ns
    assert onnx_int8.cached_model(tmp_path) == path and path.stat().st_mtime_ns == before
    assert [p.name for p in path.parent.iterdir()] == ["model.int8.onnx"]  # no temporary file left


def test_vectors_are_close_to_the_fp32_models(int8):
    assert isinstance(int8, Embedder) and (int8.dim, int8.max_seq_length) == (384, 256)
    vecs = int8.encode(TEXTS)
    assert vecs.shape == (4, 384) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    fp32 = load_embedder().encode(TEXTS)
    cosine = (vecs * fp32).sum(axis=1)
    assert cosine.min() > 0.98, cosine
    assert vecs[0] @ vecs[1] > 0.5 > vecs[0] @ vecs[2]
    q = int8.encode_query("a cat on a mat")
    assert int(np.argmax(vecs @ q)) == 0
    # order, batch size and the parallel sessions do not change the vectors
    np.testing.assert_allclose(int8.encode(TEXTS[::-1], batch_size=64)[::-1], vecs, atol=1e-5)
    np.testing.assert_allclose(int8.encode(TEXTS * 5)[:4], vecs, atol=1e-5)
    assert int8.encode([]).shape == (0, 384)


def test_an_index_records_it_and_searches_with_it(int8, tmp_path):
    from ragapp.index.index import Index
    from ragapp.retrieve.retriever import Retriever

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "bees.txt").write_text("Honey bees dance to tell the hive where the flowers are.")
    (docs / "tides.txt").write_text("The moon's gravity pulls the oceans into high and low tides.")
    with Index.create("mixed", tmp_path / "ix", embedder=int8) as index:
        index.sync(docs, embedder=int8, progress=False)
        assert index.info()["embedder"] == "all-MiniLM-L6-v2-int8"
    retriever = Retriever("mixed", index_dir=tmp_path / "ix", embedder=int8)
    assert retriever.search("why is the sea higher at some hours", k=1)[0].source == "tides.txt"
    retriever.close()


def test_threads_may_share_it(int8):
    from concurrent.futures import ThreadPoolExecutor

    expected = int8.encode(TEXTS)
    with ThreadPoolExecutor(6) as pool:  # more callers than sessions
        outs = list(pool.map(lambda _: int8.encode(TEXTS), range(6)))
        queries = list(pool.map(int8.encode_query, TEXTS))
    for out in outs:
        np.testing.assert_allclose(out, expected, atol=1e-5)
    np.testing.assert_allclose(np.stack(queries), expected, atol=1e-5)
