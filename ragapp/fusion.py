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

from collections.abc import Hashable, Mapping, Sequence

import numpy as np

NORMALIZATIONS = ("minmax", "zscore")


def rrf(rankings: Sequence[Sequence[Hashable]], weights: Sequence[float] | None = None, k: float = 60) -> dict:
    """{key: sum over lists of weight / (k + rank)}, rank 1-based; a key missing from a list
    gets nothing from it."""
    weights = [1.0] * len(rankings) if weights is None else list(weights)
    if len(weights) != len(rankings):
        raise ValueError(f"{len(weights)} weights for {len(rankings)} rankings")
    fused: dict = {}
    for ranking, w in zip(rankings, weights):
        for rank, key in enumerate(ranking, start=1):
            fused[key] = fused.get(key, 0.0) + w / (k + rank)
    return fused


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


def convex(score_lists: Sequence[Mapping[Hashable, float]], weights: Sequence[float] | None = None,
           method: str = "zscore") -> dict:
    """{key: sum over lists of weight * normalized score}. Each list holds one retriever's
    candidates (its top-N); a key missing from a list ranked below that list's cut-off, so it
    gets the list's lowest normalized score rather than nothing."""
    weights = [1.0 / len(score_lists)] * len(score_lists) if weights is None else list(weights)
    if len(weights) != len(score_lists):
        raise ValueError(f"{len(weights)} weights for {len(score_lists)} score lists")
    normed = []
    for scores in score_lists:
        keys = list(scores)
        values = normalize(np.fromiter(scores.values(), dtype=np.float64, count=len(keys)), method)
        normed.append((dict(zip(keys, values.tolist())), float(values.min()) if len(values) else 0.0))
    every = {key for scores in score_lists for key in scores}
    return {key: sum(w * n.get(key, floor) for w, (n, floor) in zip(weights, normed)) for key in every}


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
