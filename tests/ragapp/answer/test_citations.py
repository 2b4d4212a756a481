"""The citation check: per-sentence support, repair of bad citations, flags, and the extractive answer."""

from __future__ import annotations

import pytest

from ragapp.answer.citations import check_answer, load_params, strip_citations
from ragapp.answer.extractive import best_span, extractive_answer, rank_sentences
from ragapp.retrieve.lexical import sentences
from ragapp.retrieve.similarity import VectorCache
from ragapp.types import Passage

PASSAGES = [
    Passage("The Normans were descended from Norse raiders. They gave their name to Normandy, a region in France.",
            "normans.txt", None, 0.9, 1),
    Passage("Rollo signed a treaty with King Charles III in 911. Rollo became the first ruler of Normandy.",
            "rollo.txt", None, 0.8, 2),
]
QUESTION = "Where is Normandy?"


@pytest.fixture
def cache(tokenizer):
    from conftest import FakeEmbedder

    # 512 hashed dimensions instead of the default 32: fewer collisions between unrelated words
    return VectorCache(FakeEmbedder(tokenizer, dim=512))


def test_thresholds_are_the_calibrated_ones():
    p = load_params()
    assert 0.0 <= p.lexical_weight <= 1.0 and 0.0 < p.threshold < 1.0


def test_supported_answer_passes_with_highlight(cache):
    res = check_answer("Normandy is a region in France [1].", PASSAGES, cache, QUESTION)
    assert res.passed and res.unsupported == [] and res.removed == []
    [c] = res.citations
    assert c.number == 1 and c.supported and c.support >= load_params().threshold
    s, e = c.highlight
    assert PASSAGES[0].text[s:e] == "They gave their name to Normandy, a region in France."


def test_made_up_sentence_is_flagged(cache):
    text = "Normandy is a region in France [1]. Its capital is Marseille, home of 9 million sailors [1]."
    res = check_answer(text, PASSAGES, cache, QUESTION)
    assert not res.passed
    assert res.unsupported == ["Its capital is Marseille, home of 9 million sailors [1]."]
    assert [s.supported for s in res.sentences] == [True, False]
    assert res.citations[0].supported  # the best citing sentence of [1] is supported


def test_citing_the_wrong_passage_is_unsupported(cache):
    res = check_answer("Rollo signed a treaty with King Charles III in 911 [1].", PASSAGES, cache, "Who signed a treaty?")
    assert not res.passed and len(res.unsupported) == 1


def test_citations_of_passages_not_given_are_removed(cache):
    res = check_answer("Rollo became the first ruler of Normandy [2, 7]. [9]", PASSAGES, cache, "Who ruled Normandy?")
    assert res.text == "Rollo became the first ruler of Normandy [2]."
    assert sorted(res.removed) == [7, 9]
    assert [c.number for c in res.citations] == [2] and res.passed


def test_uncited_supported_sentence_gets_its_citation(cache):
    res = check_answer("Rollo signed a treaty with King Charles III in 911.", PASSAGES, cache, "Who signed a treaty?")
    assert res.text == "Rollo signed a treaty with King Charles III in 911 [2]."
    assert res.passed and res.sentences[0].auto_cited


def test_neutral_sentences_are_not_claims(cache):
    text = "Here is what I found: Normandy is in France [1]. The documents do not say when it was founded."
    res = check_answer(text, PASSAGES, cache, QUESTION)
    assert res.passed, res.unsupported
    assert [s.neutral for s in res.sentences] == [False, True]


def test_empty_answer_fails(cache):
    assert not check_answer("", PASSAGES, cache, QUESTION).passed


def test_strip_citations():
    assert strip_citations("Paris [1]. Lyon [2, 3] and Nice [4] .") == "Paris. Lyon and Nice."


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Dr. Smith went to Washington. He left in 1990.", ["Dr. Smith went to Washington.", "He left in 1990."]),
        ("It is in France [1]. [2] Then more.", ["It is in France [1]. [2]", "Then more."]),
        ('He said "stop." Then he left!', ['He said "stop."', "Then he left!"]),
        ("U.S. troops landed. They won.", ["U.S. troops landed.", "They won."]),
        ("TITLE\n=====\n\nFirst line\nwrapped. Next.\n- item one\n- item two\n# Head\nBody",
         ["TITLE", "First line\nwrapped.", "Next.", "- item one", "- item two", "# Head", "Body"]),
    ],
)
def test_sentence_splitting(text, expected):
    assert sentences(text) == expected


# ----------------------------------------------------------------------------- extractive


def test_extractive_answer_quotes_the_best_sentence_with_its_citation(cache):
    text, cits = extractive_answer("Who was the first ruler of Normandy?", PASSAGES, cache, max_sentences=1)
    assert text == "“Rollo became the first ruler of Normandy.” [2]"
    [c] = cits
    assert c.number == 2 and c.supported and PASSAGES[1].text[c.highlight[0]:c.highlight[1]] == "Rollo became the first ruler of Normandy."
    # and a quote always passes the citation check
    assert check_answer(text, PASSAGES, cache, "Who was the first ruler of Normandy?").passed


def test_rank_sentences_orders_by_match(cache):
    ranked = rank_sentences("When did Rollo sign the treaty?", PASSAGES, cache)
    assert ranked[0].text == "Rollo signed a treaty with King Charles III in 911."
    assert len(ranked) == 4 and ranked[0].score >= ranked[-1].score


@pytest.mark.parametrize(
    "question, sentence, span",
    [
        ("In what country is Normandy located?", "They gave their name to Normandy, a region in France.", "France"),
        ("When did Rollo sign the treaty?", "Rollo signed a treaty with King Charles III in 911.", "911"),
        ("When were the Normans in Normandy?", "The Normans were in Normandy in the 10th and 11th centuries.", "10th and 11th centuries"),
        ("Who led the Norman conquest of England?", "The Norman conquest of England was led by William the Conqueror in 1066.", "William the Conqueror"),
        ("How many people live in Warsaw?", "Warsaw has a population of 1.7 million people.", "1.7 million"),
    ],
)
def test_best_span(question, sentence, span):
    assert best_span(question, sentence) == span
