"""Combining ranked lists, and diversifying the result.

* `rrf`: reciprocal-rank fusion (Cormack, Clarke & Buettcher, SIGIR 2009): sum of w / (k + rank).
  Uses ranks only, so it needs no calibration between retrievers.
* `convex`: a weighted sum of per-query normalized scores (Bruch, Gai & Ingber, "An Analysis of
  Fusion Functions for Hybrid Retrieval", TOIS 2023, found it beats RRF when tuned). It keeps
  how *far* apart the candidates are, which RRF throws away: a BM25 hit far above the rest
  counts for more than one barely ahead.
* `mmr`: maximal marginal relevance (Carbonell & Goldstein, SIGIR 1998), which trades a
  little relevance for passages that are not near-copies of one already chosen.

Hand-written because each is a few lines of numpy, and none of the libraries we use exposes them
over arbitrary keyed lists (langchain's EnsembleRetriever does RRF on its own Document objects).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

NORMALIZATIONS = ("minmax", "zscore")


def _ranked(keys: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best first; ties broken by the smaller key, so results never depend on hash order."""
    order = np.lexsort((keys, -scores))
    return keys[order], scores[order]


def rrf(rankings: Sequence[Sequence[Hashable]], weights: Sequence[float] | None = None,
        k: float = 60) -> tuple[np.ndarray, np.ndarray]:
    """(keys, fused scores), best first: sum over lists of weight / (k + rank), rank 1-based; a
    key missing from a list gets nothing from it. Each list holds distinct keys."""
    weights = [1.0] * len(rankings) if weights is None else list(weights)
    if len(weights) != len(rankings):
        raise ValueError(f"{len(weights)} weights for {len(rankings)} rankings")
    lists = [np.asarray(r) for r in rankings]
    keys, where = np.unique(np.concatenate(lists) if lists else np.zeros(0, np.int64), return_inverse=True)
    fused = np.zeros(len(keys))
    pos = 0
    for ranking, w in zip(lists, weights):
        fused[where[pos : pos + len(ranking)]] += w / (k + np.arange(1, len(ranking) + 1))
        pos += len(ranking)
    return _ranked(keys, fused)


def normalize(scores: np.ndarray, method: str = "zscore") -> np.ndarray:
    """Per-query rescaling of one retriever's candidate scores, so that cosines (~0.1-0.8) and
    BM25 (0-40+) can be added. A list of identical scores maps to all zeros (zscore) or ones
    (minmax): it carries no preference."""
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) == 0:
        return scores
    if method == "minmax":
        span = scores.max() - scores.min()
        return (scores - scores.min()) / span if span > 0 else np.ones_like(scores)
    if method == "zscore":
        std = scores.std()
        return (scores - scores.mean()) / std if std > 0 else np.zeros_like(scores)
    raise ValueError(f"unknown normalization {method!r}; choose one of {', '.join(NORMALIZATIONS)}")


def convex(keys: Sequence[Sequence[Hashable]], scores: Sequence[Sequence[float]],
           weights: Sequence[float] | None = None, method: str = "zscore") -> tuple[np.ndarray, np.ndarray]:
    """(keys, fused scores), best first: sum over lists of weight * normalized score. Each list
    holds one retriever's candidates (its top-N, distinct keys) and their scores; a key missing
    from a list ranked below that list's cut-off, so it gets the list's lowest normalized score
    rather than nothing."""
    weights = [1.0 / len(keys)] * len(keys) if weights is None else list(weights)
    if not len(weights) == len(keys) == len(scores):
        raise ValueError(f"{len(weights)} weights for {len(keys)} key lists and {len(scores)} score lists")
    lists = [np.asarray(k) for k in keys]
    every, where = np.unique(np.concatenate(lists) if lists else np.zeros(0, np.int64), return_inverse=True)
    fused = np.zeros(len(every))
    pos = 0
    for ks, ss, w in zip(lists, scores, weights):
        normed = normalize(ss, method)
        if len(normed):
            floor = normed.min()
            fused += w * floor
            fused[where[pos : pos + len(ks)]] += w * (normed - floor)
        pos += len(ks)
    return _ranked(every, fused)


def mmr(relevance: np.ndarray, vectors: np.ndarray, k: int, lam: float = 0.5, rescale: bool = True) -> list[int]:
    """Greedy MMR: indices of `k` candidates, each maximizing
    lam * relevance - (1 - lam) * (highest cosine to one already chosen).

    relevance (n,) should be on the scale of a cosine (as query-passage cosines are); with
    rescale=True, any scale is min-max mapped to [0, 1]. vectors (n, d) L2-normalized.
    lam=1 returns the relevance order; lam=0 only avoids repeats."""
    n = len(relevance)
    k = min(k, n)
    if k <= 0:
        return []
    rel = normalize(relevance, "minmax") if rescale else np.asarray(relevance, dtype=np.float64)
    sims = np.asarray(vectors, dtype=np.float32) @ np.asarray(vectors, dtype=np.float32).T  # (n, n)
    chosen = [int(np.argmax(rel))]
    closest = sims[chosen[0]].copy()  # (n,) highest similarity of each candidate to the chosen set
    available = np.ones(n, dtype=bool)
    available[chosen[0]] = False
    while len(chosen) < k:
        gain = lam * rel - (1.0 - lam) * closest
        gain[~available] = -np.inf
        best = int(np.argmax(gain))
        chosen.append(best)
        available[best] = False
        np.maximum(closest, sims[best], out=closest)
    return chosen
