"""`ragapp eval` end to end on a tiny index: a made set, the extractive answer and a tiny model, every output
file; resuming from the answers kept; SQuAD 2.0 and BEIR data; bad question sets; the CLI."""

import json

import pytest
from facts_corpus import facts  # noqa: F401 - the fixture

from ragapp.errors import InvalidInput
from ragapp.eval import runner
from ragapp.eval.make_set import make_question_set
from ragapp.eval.questions import EvalQuestion, load_jsonl, save_jsonl


@pytest.fixture
def made(facts, tmp_path):
    name, index_dir, emb = facts
    m = make_question_set(name, index_dir, n=8, unanswerable=0.3, embedder=emb, seed=0)
    return save_jsonl(m.questions, tmp_path / "set.jsonl"), m


def tiny_model(tmp_path):
    import torch

    from llm.checkpoint import save_pretrained
    from llm.config import PRESETS
    from llm.model import GPT
    from llm.tokenizer import train_tokenizer

    (tmp_path / "c.txt").write_text("Normandy is a region in France. Rollo was the first ruler. " * 30)
    tok = train_tokenizer([tmp_path / "c.txt"], vocab_size=300, out_dir=tmp_path / "tok", progress=False)
    torch.manual_seed(0)
    return save_pretrained(GPT(PRESETS["tiny"].replace(vocab_size=len(tok), max_seq_len=512)), tok, tmp_path / "ckpt")


def test_end_to_end_with_a_tiny_model(facts, made, tmp_path):
    name, index_dir, emb = facts
    path, m = made
    ckpt = tiny_model(tmp_path)
    out = tmp_path / "out"
    report = runner.run(path, index=name, index_dir=index_dir, out_dir=out, ks=(2, 4),
                        answerers=["extractive", f"llm:{ckpt}"], closed_book=True, max_new_tokens=8, embedder=emb,
                        progress=False, resamples=200)
    n = len(m.questions)
    assert report.questions == n and report.unanswerable == sum(not q.answerable for q in m.questions)
    labels = [r.label for r in report.rows]
    assert labels == ["extractive · k=2 · gate off", "extractive · k=2 · gate on",
                      "extractive · k=4 · gate off", "extractive · k=4 · gate on",
                      f"llm:{ckpt} · k=2 · gate off", f"llm:{ckpt} · k=2 · gate on", f"llm:{ckpt} · k=2 · gate on + fallback",
                      f"llm:{ckpt} · k=4 · gate off", f"llm:{ckpt} · k=4 · gate on", f"llm:{ckpt} · k=4 · gate on + fallback",
                      f"llm:{ckpt} · no retrieval"]
    for row in report.rows:
        for metric in ("hallucination", "em", "f1", "abstention_recall"):
            rate = row.metrics[metric]
            assert 0.0 <= rate.low <= rate.value <= rate.high <= 1.0, (row.label, metric, rate)
    # quotes are supported, so only answered unanswerable questions make the extractive rows hallucinate
    ex = report.row("extractive · k=4 · gate off").metrics
    assert ex["hallucination"].value == pytest.approx((1 - ex["abstention_recall"].value) * report.unanswerable / n)
    # the fallback never leaves an unsupported answer: its hallucinations are answers to unanswerable questions
    fb = report.row(f"llm:{ckpt} · k=4 · gate on + fallback").metrics
    assert fb["hallucination"].value <= report.unanswerable / n + 1e-9
    assert set(report.retrieval) == {2, 4} and report.retrieval[4]["hit"].value >= report.retrieval[2]["hit"].value
    points = report.tradeoff["extractive · k=4"]
    assert points[0]["threshold"] == 0.0 and points[-1]["threshold"] == 1.0
    assert points[-1]["abstention_recall"] == 1.0  # a threshold of 1 abstains on everything
    assert {"report.json", "report.md", "questions.jsonl", "hallucination.png", "tradeoff.png"} <= {p.name for p in out.iterdir()}
    assert (out / "hallucination.png").read_bytes()[:4] == b"\x89PNG"
    rows = [json.loads(line) for line in (out / "questions.jsonl").read_text().splitlines()]
    assert len(rows) == n * len(report.rows) and {"configuration", "prediction", "hallucinated", "f1"} <= rows[0].keys()
    saved = json.loads((out / "report.json").read_text())
    assert saved["rows"][0]["metrics"]["hallucination"].keys() == {"value", "low", "high", "n"}
    assert "| extractive · k=2 · gate off |" in (out / "report.md").read_text()


def test_an_interrupted_run_resumes_from_the_answers_kept(facts, made, tmp_path, monkeypatch):
    name, index_dir, emb = facts
    path, m = made
    kwargs = dict(index=name, index_dir=index_dir, work_dir=tmp_path / "work", ks=(3,), answerers=["extractive"],
                  embedder=emb, progress=False, resamples=50)

    def stop_after(done, total, what):
        if done >= len(m.questions) + 3:  # retrieval done, then 3 answers
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        runner.run(path, on_progress=stop_after, **kwargs)
    (answers,) = (tmp_path / "work" / "answers").glob("extractive-k3.*.jsonl")
    assert len(answers.read_text().splitlines()) == 3
    with open(answers, "a") as fh:
        fh.write('{"id": "a00')  # a line torn by the interruption is answered again, not lost
    first = runner.run(path, **kwargs)
    keys = [json.loads(line)["id"] for line in answers.read_text().splitlines() if line.endswith("}")]
    assert len(keys) == len(set(keys)) == len(m.questions)
    # everything is kept: a third run answers nothing
    monkeypatch.setattr(runner._Asker, "ask", lambda self, q: pytest.fail("answered again"))
    again = runner.run(path, **kwargs)
    assert again.rows[0].metrics["f1"].value == first.rows[0].metrics["f1"].value
    # an edited question is asked again (its key hashes its text)
    qs = load_jsonl(path)
    qs[0].question += " exactly"
    save_jsonl(qs, path)
    calls = []
    monkeypatch.setattr(runner._Asker, "ask", lambda self, q: calls.append(q.id) or pytest.fail("stop"))
    with pytest.raises(pytest.fail.Exception):
        runner.run(path, **kwargs)
    assert calls == [qs[0].id]


def test_limit_and_seed_pick_the_same_questions(facts, made, tmp_path):
    name, index_dir, emb = facts
    path, _ = made
    a = runner.run(path, index=name, index_dir=index_dir, work_dir=tmp_path / "w", limit=3, seed=5, embedder=emb,
                   progress=False, resamples=50)
    b = runner.run(path, index=name, index_dir=index_dir, work_dir=tmp_path / "w", limit=3, seed=5, embedder=emb,
                   progress=False, resamples=50)
    assert a.questions == 3 and [r.to_dict() for r in a.rows] == [r.to_dict() for r in b.rows]


SQUAD = {"version": "v2.0", "data": [
    {"title": "Normans", "paragraphs": [{"context": "The Normans gave their name to Normandy, a region in France. "
                                                    "Rollo was their first ruler.", "qas": [
        {"id": "n1", "question": "In what country is Normandy located?", "is_impossible": False,
         "answers": [{"text": "France", "answer_start": 54}]},
        {"id": "n2", "question": "Who gave their name to Spain?", "is_impossible": True, "answers": []}]}]},
    {"title": "Plants", "paragraphs": [{"context": "Photosynthesis turns light into chemical energy. Chlorophyll "
                                                   "makes leaves green.", "qas": [
        {"id": "p1", "question": "What makes leaves green?", "is_impossible": False,
         "answers": [{"text": "Chlorophyll", "answer_start": 49}]}]}]},
]}


def test_squad_and_beir_data_bring_their_own_corpus(tmp_path, tokenizer, monkeypatch):
    from conftest import FakeEmbedder, write_files

    fake = FakeEmbedder(tokenizer, dim=128)
    monkeypatch.setattr("ragapp.ingest.embed.load_embedder", lambda *a, **k: fake)
    (tmp_path / "dev.json").write_text(json.dumps(SQUAD))
    rep = runner.run(tmp_path / "dev.json", work_dir=tmp_path / "sq", ks=(1, 2), progress=False, resamples=50)
    assert (rep.kind, rep.questions, rep.unanswerable) == ("squad", 3, 1)
    assert rep.retrieval[2]["hit"].n == 2 and rep.retrieval[2]["hit"].value == 1.0  # two paragraphs, both retrieved
    assert sorted(p.name for p in (tmp_path / "sq" / "corpus").iterdir()) == ["Normans", "Plants"]
    write_files(tmp_path / "beir", {
        "corpus.jsonl": "\n".join(json.dumps(d) for d in [
            {"_id": "d1", "title": "Cats", "text": "Cats sleep sixteen hours a day."},
            {"_id": "d2", "title": "Dogs", "text": "Dogs bark at the mailman every morning."}]) + "\n",
        "queries.jsonl": json.dumps({"_id": "q1", "text": "how long do cats sleep"}) + "\n",
        "qrels/test.tsv": "query-id\tcorpus-id\tscore\nq1\td1\t1\n"})
    beir = runner.run(tmp_path / "beir", work_dir=tmp_path / "be", ks=(1, 2), progress=False, resamples=50)
    assert beir.kind == "beir" and beir.rows == [] and beir.retrieval[1]["ndcg10"].value == 1.0


@pytest.mark.parametrize("line, message", [
    ('{"answers": ["x"]}', 'line 1: no "question" text'),
    ('{"question": "Q?", "answers": "x", "answerable": "yes"}', '"answerable" must be true or false'),
    ('{"question": "Q?", "answers": ["x"], "answerable": false}', "an unanswerable question has no answers"),
    ('{"question": "Q?", "answers": [], "answerable": false, "held_out": true}', '"held_out" is for an unanswerable'),
    ('{"question": "Q?", "answer": ["x"]}', "unknown field 'answer'"),
    ("not json", "line 1: not JSON"),
])
def test_a_bad_question_set_names_the_line_and_the_fix(tmp_path, line, message):
    path = tmp_path / "qs.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace('"', '"')):
        runner.run(path, index="x", progress=False)


def test_a_jsonl_set_needs_an_index_and_known_answerers(tmp_path):
    qs = [EvalQuestion("1", "What?", ["x"])]
    with pytest.raises(InvalidInput, match="pass --index NAME"):
        runner.run(qs, work_dir=tmp_path, progress=False)
    with pytest.raises(InvalidInput, match="unknown answerer 'gpt'"):
        runner.run(qs, index="x", answerers=["gpt"], work_dir=tmp_path, progress=False)


def test_cli_makes_a_set_and_evaluates_it(facts, tmp_path, monkeypatch, capsys):
    from ragapp.cli import main

    name, index_dir, emb = facts
    monkeypatch.setattr("ragapp.ingest.embed.load_embedder", lambda *a, **k: emb)
    out = tmp_path / "ev"
    code = main(["eval", "--index", name, "--index-dir", str(index_dir), "--make", "6", "--answerer", "extractive",
                 "--k", "2,3", "--out", str(out), "--no-progress", "--no-charts"])
    assert code == 0
    text = capsys.readouterr()
    assert "| extractive · k=3 · gate on |" in text.out and "question set:" in text.err
    assert load_jsonl(out / "questions-made.jsonl") and (out / "report.json").exists()
    assert main(["eval", "--make", "3"]) == 1
    assert "pass --index NAME" in capsys.readouterr().err
    assert main(["eval", str(out / "questions-made.jsonl"), "--index", name, "--index-dir", str(index_dir),
                 "--k", "two", "--out", str(out)]) == 1
    assert "--k 'two'" in capsys.readouterr().err
