"""The numbers of `ragapp eval`, per question, and their 95% bootstrap intervals.

Every rate is a ratio of two sums over questions, sum(numerator) / sum(denominator): a plain mean
has denominator 1 per question (EM, hallucination rate), a ratio of counts has the counts
(abstention precision: abstentions on unanswerable questions / abstentions). The interval
resamples the QUESTIONS with replacement (B times, seeded) and takes the 2.5th and 97.5th
percentiles of the ratio, so the questions' own correlation (a question with many citations) is
kept. README ("Measuring hallucination") defines each metric in words.

Retrieval (answerable questions with a known source; documents ranked at their best passage):
  hit@k      1 if a relevant document is among the documents of the first k passages
  recall@k   relevant documents among those documents / relevant documents
  RR         1 / rank of the first relevant document in the ranking of the first 10 documents, else 0 (MRR@10)
  nDCG@10    as BEIR (ragapp.eval.beir.ndcg_at_k): gain = grade, discount log2(rank + 1)
Answers:
  EM, F1     SQuAD 2.0 (ragapp.eval.squad): best over the references; an abstention is the empty
             answer, right exactly on unanswerable questions
  hallucinated   answered, and the question is unanswerable or a sentence of the answer is not
             supported by the passage it cites (without passages: the answer shares no word with a reference)
  citation precision   supported citations / citations, over answers
  citation recall      claim sentences with a supporting citation / claim sentences, over answers
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ragapp.eval.beir import dedupe
from ragapp.eval.squad import compute_exact, compute_f1

BOOTSTRAP = 1000  # resamples; the interval's ends move by well under a point between seeds at this size


# ----------------------------------------------------------------------------- retrieval


def retrieval_scores(ranked_sources: Sequence[str], relevant: dict[str, int], k: int) -> dict[str, float]:
    """hit@k, recall@k, RR (MRR@10) and nDCG@10 of one question. `ranked_sources`: the document of each
    retrieved passage, best first (a document appears once per passage); `relevant`: document -> grade > 0."""
    rel = {d: g for d, g in relevant.items() if g > 0}
    if not rel:
        raise ValueError("retrieval scores need at least one relevant document")
    at_k = set(dedupe(list(ranked_sources[:k])))
    docs = dedupe(list(ranked_sources))[:10]
    first = next((i for i, d in enumerate(docs) if d in rel), None)
    dcg = sum(rel.get(d, 0) / math.log2(i + 2) for i, d in enumerate(docs))
    ideal = sum(g / math.log2(i + 2) for i, g in enumerate(sorted(rel.values(), reverse=True)[:10]))
    return {
        "hit": float(bool(at_k & rel.keys())),
        "recall": len(at_k & rel.keys()) / len(rel),
        "rr": 0.0 if first is None else 1.0 / (first + 1),
        "ndcg10": dcg / ideal,
    }


# ----------------------------------------------------------------------------- answers


def exact_and_f1(prediction: str, references: Sequence[str]) -> tuple[float, float]:
    """SQuAD 2.0 EM and F1 of one prediction ("" = abstained); no references = unanswerable."""
    refs = [r for r in references if r.strip()] or [""]
    return (float(max(compute_exact(r, prediction) for r in refs)),
            max(compute_f1(r, prediction) for r in refs))


@dataclass
class Outcome:
    """What one configuration did with one question, reduced to what the metrics count."""

    answerable: bool
    abstained: bool
    prediction: str  # the answer without citation markers ("" when abstained)
    references: list[str]
    unsupported: int = 0  # answer sentences the citation check did not find support for
    claims: int = 0  # answer sentences that make a claim (have content words)
    citations: int = 0
    citations_supported: int = 0
    seconds: float = 0.0
    passages: bool = True  # False: answered without retrieval, so support = sharing a word with a reference

    @property
    def hallucinated(self) -> bool:
        if self.abstained:
            return False
        if not self.answerable:
            return True
        if not self.passages:
            return exact_and_f1(self.prediction, self.references)[1] == 0.0
        return self.unsupported > 0


# (numerator, denominator) of each metric for one question; None: the question does not count
def answer_terms(o: Outcome) -> dict[str, tuple[float, float]]:
    em, f1 = exact_and_f1("" if o.abstained else o.prediction, o.references if o.answerable else [])
    answered = not o.abstained
    terms = {
        "em": (em, 1.0),
        "f1": (f1, 1.0),
        "answerable_em": (em, 1.0) if o.answerable else (0.0, 0.0),
        "answerable_f1": (f1, 1.0) if o.answerable else (0.0, 0.0),
        "answered": (float(answered), 1.0),
        "abstention_precision": (float(o.abstained and not o.answerable), float(o.abstained)),
        "abstention_recall": (float(o.abstained), 1.0) if not o.answerable else (0.0, 0.0),
        "hallucination": (float(o.hallucinated), 1.0),
        "citation_precision": (float(o.citations_supported), float(o.citations)) if answered else (0.0, 0.0),
        "citation_recall": (float(max(0, o.claims - o.unsupported)), float(o.claims)) if answered else (0.0, 0.0),
        "seconds": (o.seconds, 1.0),
    }
    return terms


ANSWER_METRICS = ("em", "f1", "answerable_em", "answerable_f1", "answered", "abstention_precision",
                  "abstention_recall", "hallucination", "citation_precision", "citation_recall", "seconds")
RETRIEVAL_METRICS = ("hit", "recall", "rr", "ndcg10")


# ----------------------------------------------------------------------------- intervals


@dataclass
class Rate:
    value: float  # nan when nothing counts (no denominator)
    low: float
    high: float
    n: int  # questions that count (denominator > 0)

    def to_dict(self) -> dict:
        r = lambda x: None if math.isnan(x) else round(x, 6)  # noqa: E731 - JSON has no NaN
        return {"value": r(self.value), "low": r(self.low), "high": r(self.high), "n": self.n}


def bootstrap(num: Sequence[float], den: Sequence[float], resamples: int = BOOTSTRAP, seed: int = 0) -> Rate:
    """sum(num) / sum(den), with the 95% percentile interval over `resamples` resamples of the questions."""
    import numpy as np

    num_a, den_a = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    n = len(num_a)
    counted = int((den_a > 0).sum())
    if n == 0 or den_a.sum() == 0:
        return Rate(float("nan"), float("nan"), float("nan"), counted)
    value = float(num_a.sum() / den_a.sum())
    rng = np.random.default_rng(seed)
    ratios = []
    for start in range(0, resamples, 250):  # blocks, so memory stays (250, n)
        idx = rng.integers(0, n, size=(min(250, resamples - start), n))
        d = den_a[idx].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratios.append(num_a[idx].sum(axis=1) / d)
    all_ratios = np.concatenate(ratios)
    all_ratios = all_ratios[np.isfinite(all_ratios)]  # a resample with nothing counting has no ratio
    if not len(all_ratios):
        return Rate(value, value, value, counted)
    low, high = np.percentile(all_ratios, [2.5, 97.5])
    return Rate(value, float(low), float(high), counted)


def summarise(terms: list[dict[str, tuple[float, float]]], names: Sequence[str], resamples: int = BOOTSTRAP,
              seed: int = 0) -> dict[str, Rate]:
    """Each named metric over the questions' (numerator, denominator) terms, with its interval."""
    return {name: bootstrap([t[name][0] for t in terms], [t[name][1] for t in terms], resamples, seed)
            for name in names}
