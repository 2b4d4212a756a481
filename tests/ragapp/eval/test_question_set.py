"""Scoring a hand-written question set: facts as whole words, the expected source cited, supported citations,
abstention on the unanswerable ones; a malformed set is refused with its file and question named."""

import json

import pytest

from ragapp.errors import InvalidInput
from ragapp.eval.question_set import load_questions, score, summary
from ragapp.types import Answer, Citation, Passage

P = Passage(text="ragapp serve listens on 127.0.0.1, port 7860.", source="docs/chat-page.html", page=None, score=1.0,
            chunk_id=3)
ITEM = {"q": "Where does it listen?", "facts": [["127.0.0.1", "localhost"], ["7860"]], "source": "chat-page.html"}


def answer(text, supported=True, source=P, abstained=False):
    cites = [] if abstained else [Citation(number=1, passage=source, supported=supported)]
    return Answer(text=text, passages=[P], citations=cites, abstained=abstained,
                  mode="abstained" if abstained else "generated")


def test_right_needs_every_fact_the_source_cited_and_supported():
    assert score(ITEM, answer("On 127.0.0.1, port 7860 [1].")).right
    assert score(ITEM, answer("On localhost:7860 [1].")).right
    assert score(ITEM, answer("On 127.0.0.1 [1].")).why == "does not state 7860"
    assert score(ITEM, answer("On 127.0.0.1:78600 [1].")).why == "does not state 7860"  # whole words only
    other = Passage(text="x", source="privacy.md", page=None, score=0.5, chunk_id=4)
    assert score(ITEM, answer("On 127.0.0.1, port 7860 [1].", source=other)).why == "does not cite chat-page.html"
    assert score(ITEM, answer("On 127.0.0.1, port 7860 [1].", supported=False)).why == "a citation is not supported"
    assert score(ITEM, answer("The documents do not contain the answer.", abstained=True)).why == "abstained"


def test_unanswerable_questions_are_right_only_when_abstaining():
    item = {"q": "Who founded it?", "unanswerable": True}
    assert score(item, answer("The documents do not contain the answer.", abstained=True)).right
    wrong = score(item, answer("Alice founded it [1]."))
    assert not wrong.right and wrong.why == "answered a question the documents do not answer"
    assert summary([wrong, score(ITEM, answer("127.0.0.1:7860 [1]"))])["right"] == 1


def test_a_malformed_set_names_the_file_and_question(tmp_path):
    path = tmp_path / "qs.json"
    path.write_text("[1, 2]")
    with pytest.raises(InvalidInput, match="qs.json: not a question set"):
        load_questions(path)
    path.write_text(json.dumps({"questions": [{"q": "What?", "facts": [["x"]]}]}))
    with pytest.raises(InvalidInput, match=r"question 1 \('What\?'\) needs \"facts\" and \"source\""):
        load_questions(path)
