"""The three FAISS vector stores behind one interface: add, remove, search, ids, save/load."""

from __future__ import annotations

import numpy as np
import pytest

from ragapp.errors import InvalidInput
from ragapp.index.vectors import IVFPQStore, load_vector_store, make_vector_store

DIM = 32
# ivfpq: 4-bit codes and a low training threshold, so that 600 vectors train it for real.
PARAMS = {"flat": {}, "hnsw": {}, "ivfpq": {"nbits": 4, "min_train": 400}}


def unit_vectors(n: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivfpq"])
def test_add_search_remove_save_load(kind, tmp_path):
    store = make_vector_store(kind, DIM, **PARAMS[kind])
    vecs = unit_vectors(600)
    ids = np.arange(600, dtype=np.int64) * 7 + 3  # ids are chunk ids: sparse, not positions
    store.add(ids[:300], vecs[:300])
    store.add(ids[300:], vecs[300:])
    assert store.ntotal == 600
    assert sorted(store.ids().tolist()) == sorted(ids.tolist())

    scores, found = store.search(vecs[:20], 5)
    assert scores.shape == found.shape == (20, 5)
    hit_rate = np.mean(found[:, 0] == ids[:20])
    assert hit_rate >= (1.0 if kind != "ivfpq" else 0.6)  # PQ codes are lossy; exact/graph are not
    assert np.all(np.diff(scores, axis=1) <= 1e-5)  # best first

    assert store.remove(ids[:50]) == 50
    assert store.remove(np.array([999_999])) == 0
    assert store.ntotal == 550
    _, found = store.search(vecs[:50], 3)
    assert not set(found.ravel().tolist()) & set(ids[:50].tolist())

    path = tmp_path / f"{kind}.faiss"
    store.save(path)
    assert not list(tmp_path.glob(".*tmp"))  # written through a temporary file, then renamed
    loaded = load_vector_store(kind, path, DIM, **PARAMS[kind])
    assert loaded.ntotal == 550
    assert sorted(loaded.ids().tolist()) == sorted(ids[50:].tolist())
    a = store.search(vecs[100:110], 4)
    b = loaded.search(vecs[100:110], 4)
    np.testing.assert_array_equal(a[1], b[1])
    assert kind in loaded.describe()


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivfpq"])
def test_fewer_vectors_than_k_pads_with_minus_one(kind):
    store = make_vector_store(kind, DIM, **PARAMS[kind])
    scores, found = store.search(unit_vectors(2), 3)
    assert found.tolist() == [[-1, -1, -1], [-1, -1, -1]]
    store.add([10, 11], unit_vectors(2, seed=1))
    _, found = store.search(unit_vectors(1, seed=1), 4)
    assert found[0, :2].tolist() == [10, 11] and found[0, 2:].tolist() == [-1, -1]


def test_ivfpq_stays_exact_until_enough_vectors_to_train():
    store = IVFPQStore(DIM, nbits=4, min_train=400)
    store.add(np.arange(399), unit_vectors(399))
    assert not store.trained
    assert "exact flat search until 400 vectors" in store.describe()
    store.add([399], unit_vectors(1, seed=5))
    assert store.trained and store.ntotal == 400
    assert "lists" in store.describe()


def test_default_ivfpq_threshold_and_code_size():
    store = IVFPQStore(384)
    assert store.min_train == 40 * 256  # 40 training points per PQ centroid
    assert store.m == 48  # 8 dimensions a sub-quantizer: 48 bytes a vector


def test_unknown_kind_and_wrong_dimension():
    with pytest.raises(InvalidInput, match="unknown vector index 'annoy'; choose one of flat, hnsw, ivfpq"):
        make_vector_store("annoy", DIM)
    store = make_vector_store("flat", DIM)
    with pytest.raises(InvalidInput, match="vectors have 8 dimensions, the index holds 32"):
        store.add([1], np.ones((1, 8), np.float32))


def test_exact_rerank_restores_the_true_neighbours_of_a_pq_search():
    from ragapp.index.vectors import rerank_exact

    # clustered, as text embeddings are (on isotropic noise no 100 candidates hold the true neighbours)
    rng = np.random.default_rng(3)
    vecs = unit_vectors(40, seed=3)[rng.integers(0, 40, 2000)] + 0.15 * rng.normal(size=(2000, DIM))
    vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)
    ids = np.arange(2000, dtype=np.int64) * 5 + 1
    store = make_vector_store("ivfpq", DIM, nbits=4, min_train=400)
    store.add(ids, vecs)
    assert store.approximate_scores
    queries = vecs[:40] + 0.05 * rng.normal(size=(40, DIM)).astype(np.float32)
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    truth = ids[np.argsort(-(queries @ vecs.T), axis=1)[:, :10]]
    _, pq = store.search(queries, 10)
    by_id = dict(zip(ids.tolist(), vecs))
    _, candidates = store.search(queries, 100)
    scores, reranked = rerank_exact(queries, candidates, lambda want: {int(i): by_id[int(i)] for i in want}, 10)

    def recall(found):
        return np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found.tolist(), truth.tolist())])

    assert recall(pq) < 0.9  # the codes alone misorder close neighbours
    assert recall(reranked) >= 0.97
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    np.testing.assert_allclose(scores[:, 0], np.max(queries @ vecs.T, axis=1), rtol=1e-5)  # exact scores
    assert not make_vector_store("flat", DIM).__class__.__dict__.get("approximate_scores")
