"""The SQuAD 2.0 quality report: official scoring, the always-abstain floor, and a tiny resumable run."""

from __future__ import annotations

import json

import pytest

from ragapp.eval import evaluate as ev

ARTICLES = {
    "version": "v2.0",
    "data": [
        {"title": "Normans", "paragraphs": [
            {"context": "The Normans gave their name to Normandy, a region in France. Rollo was their first ruler.",
             "qas": [
                 {"id": "n1", "question": "In what country is Normandy located?", "is_impossible": False,
                  "answers": [{"text": "France", "answer_start": 54}, {"text": "France", "answer_start": 54}]},
                 {"id": "n2", "question": "Who was the first ruler of the Normans?", "is_impossible": False,
                  "answers": [{"text": "Rollo", "answer_start": 62}]},
                 {"id": "n3", "question": "Who gave their name to France?", "is_impossible": True, "answers": [],
                  "plausible_answers": [{"text": "The Normans", "answer_start": 0}]},
             ]},
        ]},
        {"title": "Plants", "paragraphs": [
            {"context": "Photosynthesis turns light into chemical energy. Chlorophyll makes leaves green.",
             "qas": [
                 {"id": "p1", "question": "What makes leaves green?", "is_impossible": False,
                  "answers": [{"text": "Chlorophyll", "answer_start": 49}]},
                 {"id": "p2", "question": "What makes roots purple?", "is_impossible": True, "answers": []},
             ]},
        ]},
    ],
}


@pytest.mark.parametrize(
    "gold, pred, em, f1",
    [
        ("The Eiffel Tower", "eiffel tower!", 1, 1.0),
        ("10th and 11th centuries", "in the 10th and 11th centuries", 0, 2 * 1.0 * 0.8 / 1.8),
        ("France", "", 0, 0.0),
        ("", "", 1, 1.0),  # unanswerable and abstained
        ("", "Paris", 0, 0.0),
    ],
)
def test_official_scoring(gold, pred, em, f1):
    assert ev.compute_exact(gold, pred) == em
    assert ev.compute_f1(gold, pred) == pytest.approx(f1)


def test_always_abstain_reproduces_52_1_em_on_the_dev_half():
    if not ev.DEFAULT_DATA.exists():
        pytest.skip("the evaluation data is not here")
    _, questions = ev.load_squad(ev.DEFAULT_DATA)
    assert len(questions) == 6078 and sum(q.answerable for q in questions) == 2910
    abstain = {q.id: {"prediction": "", "abstained": True, "supported": True, "gold_retrieved": False, "seconds": 0.0}
               for q in questions}
    s = ev.score(questions, abstain)
    assert round(s["em"], 1) == 52.1 and round(s["f1"], 1) == 52.1
    assert s["no_ans_abstention"] == 100.0 and s["has_ans_em"] == 0.0 and s["hallucination"] == 0.0


def test_hallucination_counts_answered_unanswerables_and_unsupported_answers():
    qs = [ev.Question("a", "q", ["x"], True, "f"), ev.Question("b", "q", ["y"], True, "f"),
          ev.Question("c", "q", [""], False, "f"), ev.Question("d", "q", [""], False, "f")]
    row = lambda pred, sup: {"prediction": pred, "abstained": pred == "", "supported": sup, "gold_retrieved": True, "seconds": 1.0}  # noqa: E731
    s = ev.score(qs, {"a": row("x", True), "b": row("z", False), "c": row("w", True), "d": row("", True)})
    assert s["hallucination"] == 50.0  # b (unsupported) and c (answered an unanswerable)
    assert s["em"] == 50.0 and s["has_ans_em"] == 50.0 and s["no_ans_abstention"] == 50.0


def test_fixed_subset_and_limit():
    qs = [ev.Question(str(i), "q", [""], False, "f") for i in range(100)]
    a = ev.select(qs, 10, seed=3, limit=None)
    assert [q.id for q in a] == [q.id for q in ev.select(qs, 10, seed=3, limit=None)] and len(a) == 10
    assert [q.id for q in ev.select(qs, 10, seed=3, limit=4)] == [q.id for q in a[:4]]
    assert len(ev.select(qs, None, 0, 7)) == 7


def test_parse_systems():
    assert ev.parse_systems("no-generator") == ["always-abstain", "extractive-sentence", "extractive-span"]
    assert ev.parse_systems("all") == list(ev.SYSTEMS)
    from ragapp.errors import InvalidInput

    with pytest.raises(InvalidInput, match="unknown system"):
        ev.parse_systems("oracle")


def test_tiny_run_answers_resumes_and_scores(tmp_path, tokenizer, monkeypatch):
    from conftest import FakeEmbedder

    fake = FakeEmbedder(tokenizer, dim=512)
    monkeypatch.setattr("ragapp.ingest.embed.load_embedder", lambda *a, **k: fake)
    data = tmp_path / "dev.json"
    data.write_text(json.dumps(ARTICLES))
    work = tmp_path / "work"
    systems = list(ev.NO_GENERATOR)
    first = ev.run(systems, data, work, k=2, limit=2, progress=False)
    assert first["always-abstain"]["questions"] == 2
    results = work / "results" / "k2" / "extractive-span.jsonl"
    # an interrupted write leaves a torn last line: it is recomputed, not lost or duplicated
    with open(results, "a") as fh:
        fh.write('{"id": "p1", "predic')
    full = ev.run(systems, data, work, k=2, progress=False)
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.endswith("}")]
    assert sorted(r["id"] for r in rows) == ["n1", "n2", "n3", "p1", "p2"]
    abstain = full["always-abstain"]
    assert abstain["questions"] == 5 and abstain["em"] == pytest.approx(40.0)  # 2 of 5 unanswerable
    span = {r["id"]: r for r in rows}
    assert span["p1"]["prediction"] == "Chlorophyll" and span["p1"]["gold_retrieved"]
    assert full["extractive-span"]["has_ans_em"] >= 100 * 1 / 3
    assert full["extractive-sentence"]["hallucination"] <= 100 * 2 / 5  # quotes are supported; only unanswerables count
    assert "| always-abstain | 40.0 |" in ev.table(full)


def test_generator_rows_run_with_a_tiny_checkpoint(tmp_path, tokenizer, monkeypatch):
    import torch
    from conftest import FakeEmbedder

    from llm.checkpoint import save_pretrained
    from llm.config import PRESETS
    from llm.model import GPT
    from llm.tokenizer import train_tokenizer

    fake = FakeEmbedder(tokenizer, dim=512)
    monkeypatch.setattr("ragapp.ingest.embed.load_embedder", lambda *a, **k: fake)
    (tmp_path / "c.txt").write_text("Normandy is a region in France. Rollo was the first ruler. " * 30)
    tok = train_tokenizer([tmp_path / "c.txt"], vocab_size=300, out_dir=tmp_path / "tok", progress=False)
    torch.manual_seed(0)
    ckpt = save_pretrained(GPT(PRESETS["tiny"].replace(vocab_size=len(tok), max_seq_len=512)), tok, tmp_path / "ckpt")
    data = tmp_path / "dev.json"
    data.write_text(json.dumps(ARTICLES))
    scores = ev.run(["generator", "generator+fallback"], data, tmp_path / "work", k=2, model=str(ckpt),
                    max_new_tokens=8, limit=3, progress=False)
    alone, fb = scores["generator"], scores["generator+fallback"]
    assert alone["tag"] == "generator@llm-ckpt" and alone["questions"] == 3
    folder = tmp_path / "work" / "results" / "k2"
    (alone_file,) = folder.glob("generator@llm-ckpt.*.jsonl")  # answers are kept per model weights
    (fb_file,) = folder.glob("generator+fallback@llm-ckpt.*.jsonl")
    alone_rows = {r["id"]: r for r in map(json.loads, alone_file.read_text().splitlines())}
    fb_rows = {r["id"]: r for r in map(json.loads, fb_file.read_text().splitlines())}
    assert alone_rows.keys() == fb_rows.keys() and len(fb_rows) == 3
    # a random model's words are never supported: with fallback nothing unsupported is left
    assert all(r["supported"] for r in fb_rows.values()) and all(r["mode"] in ("extractive", "abstained") for r in fb_rows.values())
    for qid, r in alone_rows.items():
        assert r["mode"] in ("generated", "abstained")
        if r["mode"] == "generated":  # it failed the check (or wrote nothing), so the fallback quoted instead
            assert fb_rows[qid]["mode"] == "extractive" and fb_rows[qid]["text"].startswith("“")
    assert fb["questions"] == 3
    # the same weights resume (nothing new is written); remade weights answer afresh into their own file
    ev.run(["generator"], data, tmp_path / "work", k=2, model=str(ckpt), max_new_tokens=8, limit=3, progress=False)
    assert len(alone_file.read_text().splitlines()) == 3 and len(list(folder.glob("generator@*.jsonl"))) == 1
    torch.manual_seed(1)
    save_pretrained(GPT(PRESETS["tiny"].replace(vocab_size=len(tok), max_seq_len=512)), tok, ckpt)
    ev.run(["generator"], data, tmp_path / "work", k=2, model=str(ckpt), max_new_tokens=8, limit=3, progress=False)
    assert len(list(folder.glob("generator@llm-ckpt.*.jsonl"))) == 2


def test_vector_warm_up_is_saved_and_resumed(tmp_path, tokenizer):
    import numpy as np
    from conftest import FakeEmbedder

    from ragapp.retrieve.similarity import CachedEmbedder, VectorCache

    store = tmp_path / "vectors.npy"
    first = FakeEmbedder(tokenizer, dim=64)
    VectorCache(first).warm(["One sentence. Two sentences.", "Three."], store=store, progress=False)
    assert first.encoded == 4  # the two passages and the two sentences of the first
    second = FakeEmbedder(tokenizer, dim=64)
    cache = VectorCache(second)
    cache.warm(["One sentence. Two sentences.", "Four."], store=store, progress=False)
    assert second.encoded == 1  # only "Four." is new
    assert len(json.loads(store.with_suffix(".json").read_text())) == 5  # nothing saved before is dropped
    wrapped = CachedEmbedder(cache)
    assert np.allclose(wrapped.encode_query("Three."), first.encode(["Three."])[0]) and second.encoded == 1
