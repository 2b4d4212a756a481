"""Fusion and MMR on hand-made inputs, with the numbers worked out by hand."""

import numpy as np
import pytest

from ragapp.retrieve.fusion import convex, mmr, normalize, rrf


def as_dict(result):
    keys, scores = result
    assert list(scores) == sorted(scores, reverse=True), "best first"
    return dict(zip(keys.tolist(), scores.tolist()))


def test_rrf_matches_the_formula():
    keys, _ = rrf([["a", "b", "c"], ["c", "a", "d"]], k=60)
    assert keys.tolist() == ["a", "c", "b", "d"]
    fused = as_dict(rrf([["a", "b", "c"], ["c", "a", "d"]], k=60))
    assert fused["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert fused["b"] == pytest.approx(1 / 62)
    assert fused["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert fused["d"] == pytest.approx(1 / 63)


def test_rrf_weights_and_constant():
    # With k=1, rank 1 in the second list (weight 3) beats rank 1 in the first (weight 1).
    fused = as_dict(rrf([["x", "y"], ["y", "x"]], weights=[1, 3], k=1))
    assert fused["y"] == pytest.approx(1 / 3 + 3 / 2)
    assert fused["x"] == pytest.approx(1 / 2 + 3 / 3)
    assert fused["y"] > fused["x"]
    with pytest.raises(ValueError, match="2 weights for 1 rankings"):
        rrf([["x"]], weights=[1, 2])


def test_normalize():
    assert normalize([1.0, 3.0, 5.0], "minmax").tolist() == [0.0, 0.5, 1.0]
    z = normalize([1.0, 3.0, 5.0], "zscore")
    assert z.mean() == pytest.approx(0) and z.std() == pytest.approx(1)
    assert normalize([2.0, 2.0], "minmax").tolist() == [1.0, 1.0]  # no preference
    assert normalize([2.0, 2.0], "zscore").tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="unknown normalization 'l2'"):
        normalize([1.0], "l2")


def test_convex_uses_score_gaps_and_floors_missing_keys():
    dense = (["a", "b", "c"], [0.9, 0.5, 0.1])  # minmax -> 1, 0.5, 0
    bm25 = (["b", "d"], [30.0, 10.0])  # minmax -> 1, 0 ; "a" and "c" missing -> floor 0
    fused = as_dict(convex([dense[0], bm25[0]], [dense[1], bm25[1]], weights=[0.5, 0.5], method="minmax"))
    assert fused == pytest.approx({"a": 0.5, "b": 0.75, "c": 0.0, "d": 0.0})
    # RRF on the same lists puts "b" first too, but cannot tell "a" (a clear dense winner) from
    # "d" by more than rank: convex keeps the gap.
    assert fused["a"] > fused["d"]
    # z-score: a missing key gets the list's lowest z, not 0 (which would be the list's mean).
    z = as_dict(convex([["a", "b", "c"], ["a"]], [[3.0, 2.0, 1.0], [5.0]], weights=[1, 1]))
    assert z == pytest.approx({"a": 1.2247449, "b": 0.0, "c": -1.2247449})


def test_ties_are_broken_by_key():
    keys, _ = rrf([[3, 1], [1, 3]])
    assert keys.tolist() == [1, 3]


def test_mmr_skips_near_duplicates():
    vecs = np.array([[1.0, 0.0], [0.999, 0.045], [0.0, 1.0]], dtype=np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    relevance = np.array([1.0, 0.95, 0.6])
    assert mmr(relevance, vecs, 2, lam=1.0) == [0, 1]  # relevance only: the duplicate comes second
    assert mmr(relevance, vecs, 2, lam=0.5) == [0, 2]  # the duplicate gives way to the other topic
    assert mmr(relevance, vecs, 5, lam=0.5) == [0, 2, 1]  # k larger than the pool: all, once each
    assert mmr(relevance, vecs, 0) == []
