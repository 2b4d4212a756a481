"""The grounding gate: evidence features, the calibrated decision, and the model's own abstentions."""

from __future__ import annotations

import json

import pytest

from ragapp.answer.gate import (
    FEATURES,
    Evidence,
    GateModel,
    check,
    is_abstention,
    load_gate,
    measure,
)
from ragapp.retrieve.similarity import VectorCache
from ragapp.types import Passage

NORMANS = [
    Passage("The Normans gave their name to Normandy, a region in France. Rollo was their first ruler.", "normans.txt", None, 1.0, 1),
    Passage("Photosynthesis turns light into chemical energy in plants.", "plants.txt", None, 0.5, 2),
]


@pytest.fixture
def cache(tokenizer):
    from conftest import FakeEmbedder

    return VectorCache(FakeEmbedder(tokenizer, dim=512))


@pytest.mark.parametrize(
    "text",
    [
        "The documents do not contain the answer.",
        "The provided documents don't mention his birthday.",
        "The passages do not say when the treaty was signed.",
        "This is not mentioned in the documents.",
        "I cannot answer this question from the documents provided.",
        "There is no information about Rollo's death in the passages.",
        "I don't know.",
    ],
)
def test_model_abstentions_are_recognised(text):
    assert is_abstention(text)


@pytest.mark.parametrize(
    "text",
    [
        "Normandy is in France [1].",
        "The document says Normandy is in France [1].",
        "Normandy is in France [1]. The documents do not say when it was founded.",  # an answer first
        "No, the treaty was never signed [2].",
        "It does not contain gluten [1].",
        "",
    ],
)
def test_answers_are_not_abstentions(text):
    assert not is_abstention(text)


def test_features_are_higher_for_matching_passages(cache):
    related = measure("Who was the first ruler of the Normans in Normandy?", NORMANS, cache, score=False)
    unrelated = measure("What is the boiling point of mercury at sea level?", NORMANS, cache, score=False)
    assert related.best == 0
    assert related.lexical == 1.0 and unrelated.lexical == 0.0
    assert related.dense > unrelated.dense and related.sentence > unrelated.sentence
    assert 0.0 <= unrelated.sentence <= 1.0


def test_no_passages_is_no_evidence(cache):
    ev = measure("anything?", [], cache)
    assert ev.score == 0.0 and not check(ev)[0]


def test_check_passes_above_threshold_and_explains_below():
    model = GateModel(weights=[0.0, 0.0, 4.0], bias=-2.0, mean=[0, 0, 0], scale=[1, 1, 1], threshold=0.5)
    strong = Evidence(dense=0.7, sentence=0.8, lexical=1.0)
    weak = Evidence(dense=0.1, sentence=0.2, lexical=0.25)
    strong.score, weak.score = model.probability(strong.features()), model.probability(weak.features())
    assert check(strong, model) == (True, "")
    ok, why = check(weak, model)
    assert not ok
    assert why == ("the retrieved passages do not match the question well enough (evidence 0.27 < 0.50: best passage "
                   "similarity 0.10, best sentence 0.20, question terms found 25%)")


def test_shipped_calibration_is_complete_and_documented():
    model = load_gate()
    info = model.info
    assert info["features"] == list(FEATURES) and len(model.weights) == len(FEATURES)
    assert 0.0 < model.threshold < 1.0
    dev = info["dev"]
    assert dev["answerable"] >= 100 and dev["unanswerable"] >= 100
    assert 0.9 <= dev["answerable_passed"] <= 1.0  # the threshold keeps ~95% of answerable questions
    assert dev["unanswerable_abstained"] > 0.5  # and stops most questions about absent articles
    assert "SQuAD 1.1 train" in info["data"]
    # more evidence never lowers the score (all weights point the same way)
    assert model.probability([0.8, 0.8, 1.0]) > model.probability([0.2, 0.2, 0.1])


def test_calibration_for_other_features_is_refused(tmp_path):
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps({"gate": {"features": ["dense"], "weights": [1], "bias": 0, "mean": [0], "scale": [1], "threshold": 0.5}}))
    with pytest.raises(ValueError, match=r"calibrated for features \['dense'\].*python -m recipes.ragchat.calibrate"):
        load_gate(path=path)


def test_an_embedder_with_a_gate_of_its_own_gets_it_others_the_default(tmp_path):
    from recipes.ragchat.calibrate import shift_to

    default = {"features": list(FEATURES), "weights": [1.0, 1.0, 1.0], "bias": 0.0, "mean": [0, 0, 0],
               "scale": [1, 1, 1], "threshold": 0.4}
    own = {**default, "weights": [2.0, 0.5, 1.0], "mean": [0.8, 0.8, 0.5], "threshold": 0.7}
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps({"gate": default, "gates": {"multilingual-e5-small": shift_to(own, 0.4)}}))
    e5, other = load_gate("multilingual-e5-small", path), load_gate("all-MiniLM-L6-v2", path)
    assert other.weights == default["weights"] and e5.weights == own["weights"]
    assert e5.threshold == 0.4 and e5.info["fitted_threshold"] == 0.7
    # the shifted bias takes the same decisions at the shared threshold as the fitted one at its own
    fitted = GateModel(own["weights"], own["bias"], own["mean"], own["scale"], own["threshold"])
    points = ([0.8, 0.8, 0.5], [1.1, 0.8, 0.6], [1.2, 0.9, 0.6], [1.3, 0.8, 0.5])
    decisions = [fitted.probability(x) >= fitted.threshold for x in points]
    assert decisions == [False, False, True, True]
    assert [e5.probability(x) >= e5.threshold for x in points] == decisions


def test_shipped_e5_gate_is_its_own_and_shares_the_threshold():
    default, e5 = load_gate(), load_gate("multilingual-e5-small")
    assert e5.weights != default.weights and e5.threshold == default.threshold
    dev = e5.info["dev"]
    assert 0.9 <= dev["answerable_passed"] <= 1.0 and dev["unanswerable_abstained"] > 0.8
    assert "multilingual-e5-small" in e5.info["data"] and "--embedder multilingual-e5-small" in e5.info["made_by"]
    # e5 scores unrelated text ~0.8: features at the default gate's own mean pass it, not e5's
    unrelated = [0.80, 0.82, 0.2]
    assert default.probability(unrelated) >= default.threshold > e5.probability(unrelated)
    assert load_gate("all-MiniLM-L6-v2-int8") is default or load_gate("all-MiniLM-L6-v2-int8").info == default.info
