"""A question set made from an index with no judge model: template questions, the retrievability filter, and
unanswerable questions whose source file is held out of a temporary copy (the user's index untouched)."""

import random

import pytest
from facts_corpus import facts  # noqa: F401 - the fixture

from ragapp.errors import InvalidInput
from ragapp.eval.holdout import held_out_index
from ragapp.eval.make_set import contains, make_question_set
from ragapp.eval.questions import load_jsonl, save_jsonl
from ragapp.eval.writers import GeneratorWriter, TemplateWriter, make_writer
from ragapp.index.index import Index


@pytest.mark.parametrize("sentence, question, answer", [
    ("The company was founded in 1998 by Alice Smith in Berlin.", "The company was founded in what year by Alice Smith in Berlin?", "1998"),
    ("Cats sleep about 16 hours a day, kittens even longer.", "Cats sleep about how many hours a day, kittens even longer?", "16"),
    ("About 45% of the voters stayed home that day in the north.", "About what percentage of the voters stayed home that day in the north?", "45%"),
    ("The Normans gave their name to Normandy, a region in France.", "The Normans gave their name to what, a region in France?", "Normandy"),
])
def test_template_questions(sentence, question, answer):
    w = TemplateWriter().question_for(sentence, random.Random(2))
    assert (w.question, w.answer) == (question, answer) and answer in w.sentence


def test_template_writer_skips_what_it_cannot_ask():
    rng = random.Random(0)
    assert TemplateWriter().question_for("it works well for small files and large ones too.", rng) is None  # nothing to ask
    assert TemplateWriter().question_for("Install it.", rng) is None  # too short
    assert TemplateWriter().write("# Heading\n\nno names or numbers here at all, only words.", rng) is None


def test_generator_writer_needs_an_instruction_follower_and_a_span_of_the_passage():
    class Gen:
        name, follows_instructions = "fake", True

        def __init__(self, reply):
            self.reply = reply

        def generate(self, messages, **kw):
            return self.reply

    passage = "Rollo was the first ruler of Normandy. He died in 930."
    w = GeneratorWriter(Gen("Question: Who was the first ruler of Normandy?\nAnswer: Rollo")).write(passage, random.Random(0))
    assert (w.question, w.answer, w.sentence) == ("Who was the first ruler of Normandy?", "Rollo",
                                                   "Rollo was the first ruler of Normandy.")
    assert GeneratorWriter(Gen("Question: Who ruled?\nAnswer: Charlemagne")).write(passage, random.Random(0)) is None
    plain = Gen("")
    plain.follows_instructions = False
    with pytest.raises(InvalidInput, match="does not follow instructions"):
        GeneratorWriter(plain)
    with pytest.raises(InvalidInput, match="unknown question writer 'llm'"):
        make_writer("llm")


def test_made_set_answerable_point_at_their_chunk_and_unanswerable_have_their_source_held_out(facts, tmp_path):
    name, index_dir, emb = facts
    made = make_question_set(name, index_dir, n=10, unanswerable=0.3, embedder=emb, seed=0)
    answerable = [q for q in made.questions if q.answerable]
    unanswerable = [q for q in made.questions if not q.answerable]
    assert len(answerable) >= 3 and len(unanswerable) >= 2 and made.held_out
    with Index.open(name, index_dir) as idx:
        chunks = {c["id"]: c for c in idx.get_chunks(idx.store.chunk_ids().tolist())}
        assert len(idx.files()) == 5  # the user's index is untouched
    for q in answerable:
        chunk = chunks[q.chunk_id]
        assert chunk["source"] == q.source and q.source not in made.held_out
        assert contains(chunk["text"], q.answers[0]) and q.answers[0] in q.context and q.answers[0] not in q.question
    for q in unanswerable:
        assert q.held_out and q.source in made.held_out and q.answers == []
        # the answer is in the file held out, and nowhere in the index the question is asked of
        assert q.context in " ".join(chunks[q.chunk_id]["text"].split())
    copy, folder = held_out_index(name, index_dir, made.held_out, tmp_path / "work")
    with Index.open(copy, folder) as held:
        texts = [c["text"] for c in held.get_chunks(held.store.chunk_ids().tolist())]
        assert {f["source"] for f in held.files()}.isdisjoint(made.held_out)
    hidden = {q.id: chunks[q.chunk_id]["text"] for q in unanswerable}
    assert all(not any(q.context in t for t in texts) for q in unanswerable) and hidden
    # the same seed, the same set; saved as JSONL a person can read, edit and load back
    again = make_question_set(name, index_dir, n=10, unanswerable=0.3, embedder=emb, seed=0)
    assert [q.to_json() for q in again.questions] == [q.to_json() for q in made.questions]
    path = save_jsonl(made.questions, tmp_path / "set.jsonl")
    assert [q.to_json() for q in load_jsonl(path)] == [q.to_json() for q in made.questions]


def test_one_file_cannot_give_unanswerable_questions(tmp_path, tokenizer):
    from conftest import FakeEmbedder, write_files

    emb = FakeEmbedder(tokenizer, dim=64)
    write_files(tmp_path / "d", {"a.txt": "Rollo was the first ruler of Normandy in France in 911."})
    with Index.create("one", tmp_path / "ix", embedder=emb) as idx:
        idx.sync(tmp_path / "d", embedder=emb, progress=False, workers=0)
    with pytest.raises(InvalidInput, match="needs? two files or more"):
        make_question_set("one", tmp_path / "ix", n=4, unanswerable=0.5, embedder=emb)
    made = make_question_set("one", tmp_path / "ix", n=2, unanswerable=0.0, embedder=emb)
    assert made.questions and all(q.answerable for q in made.questions)
