"""Every metric of `ragapp eval` on hand-made cases whose values are known, and the bootstrap interval."""

import math

import pytest

from ragapp.eval.metrics import Outcome, answer_terms, bootstrap, exact_and_f1, retrieval_scores, summarise


def test_retrieval_scores_by_hand():
    # passages' documents, best first: a, a, b, c, d ... ; relevant: b and x (never retrieved)
    ranked = ["a", "a", "b", "c", "d"]
    s = retrieval_scores(ranked, {"b": 1, "x": 1}, k=2)
    assert s["hit"] == 0.0 and s["recall"] == 0.0  # the first 2 passages are both from a
    s = retrieval_scores(ranked, {"b": 1, "x": 1}, k=3)
    assert s["hit"] == 1.0 and s["recall"] == 0.5
    assert s["rr"] == 0.5  # b is the 2nd document
    ideal = 1 + 1 / math.log2(3)
    assert s["ndcg10"] == pytest.approx((1 / math.log2(3)) / ideal)
    assert retrieval_scores(["q", "z"], {"z": 2}, k=1) == {"hit": 0.0, "recall": 0.0, "rr": 0.5,
                                                            "ndcg10": pytest.approx((2 / math.log2(3)) / 2)}
    assert retrieval_scores(["n"], {"z": 1}, 5)["rr"] == 0.0
    with pytest.raises(ValueError):
        retrieval_scores(["a"], {"a": 0}, 1)


@pytest.mark.parametrize("pred, refs, em, f1", [
    ("the Eiffel Tower!", ["Eiffel Tower"], 1.0, 1.0),
    ("in the 10th and 11th centuries", ["10th and 11th centuries"], 0.0, 2 * 0.8 / 1.8),
    ("", [], 1.0, 1.0),  # unanswerable, abstained
    ("Paris", [], 0.0, 0.0),  # unanswerable, answered
    ("Rome", ["Paris", "Rome"], 1.0, 1.0),  # the best reference counts
])
def test_exact_and_f1_follow_squad(pred, refs, em, f1):
    assert exact_and_f1(pred, refs) == (em, pytest.approx(f1))


def outcomes():
    return [
        # answerable, answered right and supported: 2 claims, 2 citations both supported
        Outcome(True, False, "Paris", ["Paris"], unsupported=0, claims=2, citations=2, citations_supported=2, seconds=1.0),
        # answerable, answered with one unsupported sentence of 2: hallucinated
        Outcome(True, False, "Lyon", ["Paris"], unsupported=1, claims=2, citations=2, citations_supported=1, seconds=2.0),
        # answerable, abstained
        Outcome(True, True, "", ["Paris"], seconds=0.5),
        # unanswerable, abstained: right
        Outcome(False, True, "", [], seconds=0.5),
        # unanswerable, answered (supported by its citation, still made up for this question)
        Outcome(False, False, "Nice", [], claims=1, citations=1, citations_supported=1, seconds=1.0),
    ]


def test_answer_metrics_by_hand():
    s = summarise([answer_terms(o) for o in outcomes()], ["em", "f1", "answerable_em", "hallucination",
                                                          "abstention_precision", "abstention_recall",
                                                          "citation_precision", "citation_recall", "seconds", "answered"],
                  resamples=200)
    assert s["em"].value == pytest.approx(2 / 5)  # Paris, and the abstention on an unanswerable
    assert s["answerable_em"].value == pytest.approx(1 / 3)
    assert s["hallucination"].value == pytest.approx(2 / 5)  # Lyon (unsupported) and Nice (unanswerable)
    assert s["abstention_precision"].value == pytest.approx(1 / 2) and s["abstention_precision"].n == 2
    assert s["abstention_recall"].value == pytest.approx(1 / 2) and s["abstention_recall"].n == 2
    assert s["citation_precision"].value == pytest.approx(4 / 5)  # supported citations / citations in answers
    assert s["citation_recall"].value == pytest.approx(4 / 5)  # claims with support / claims
    assert s["seconds"].value == pytest.approx(1.0)
    assert s["answered"].value == pytest.approx(3 / 5)


def test_without_passages_an_answer_sharing_no_word_with_a_reference_is_made_up():
    assert Outcome(True, False, "Lyon", ["Paris"], passages=False).hallucinated
    assert not Outcome(True, False, "Paris, France", ["Paris"], passages=False).hallucinated


def test_bootstrap_interval():
    r = bootstrap([1.0] * 30 + [0.0] * 70, [1.0] * 100, resamples=2000, seed=1)
    assert r.value == pytest.approx(0.3) and r.n == 100
    assert 0.20 < r.low < 0.3 < r.high < 0.40  # about ±9 points at n = 100
    assert bootstrap([1, 1], [1, 1]).low == 1.0  # no spread, no interval
    empty = bootstrap([0, 0], [0, 0])
    assert math.isnan(empty.value) and empty.to_dict()["value"] is None
    assert bootstrap([1.0] * 30 + [0.0] * 70, [1.0] * 100, seed=1) == bootstrap([1.0] * 30 + [0.0] * 70, [1.0] * 100, seed=1)
