"""The shipped default chat model (models/ragchat): LoRA adapters over SmolLM2-135M-Instruct, small and documented
in the repository, assembled from the installed base; over the sample corpus it answers part of a hand-written
question set (tests/ragapp/answer/sample_questions.json) with checked citations and abstains where the corpus is
silent."""

import json
from pathlib import Path

import pytest

from recipes.ragchat.make_model import SMOLLM2_TRAIN_STAGES

ROOT = Path(__file__).resolve().parents[3]
MODEL = ROOT / "models" / "ragchat"
SAMPLE = ROOT / "corpora" / "sample"
QUESTIONS = Path(__file__).with_name("sample_questions.json")


def test_the_shipped_adapter_is_small_half_precision_and_documented():
    from safetensors import safe_open

    from ragapp.generate.assemble import is_adapter_folder

    assert is_adapter_folder(MODEL)
    assert sum(f.stat().st_size for f in MODEL.rglob("*") if f.is_file()) <= 50_000_000
    card = json.loads((MODEL / "training.json").read_text())
    assert card["adapters"]
    for adapter in card["adapters"]:
        with safe_open(str(MODEL / adapter / "adapter_model.safetensors"), "pt") as f:
            assert {str(f.get_slice(k).get_dtype()) for k in f.keys()} == {"F16"}
    assert card["base"] == "smollm2" and card["made_by"] == "python -m recipes.ragchat.make_model --base smollm2"
    assert card["stage"] in SMOLLM2_TRAIN_STAGES and card["answer_tokens"] > 0
    assert 0 <= card["zero_shot_dev"]["answerable_em"] < card["dev"]["answerable_em"] <= 100


@pytest.fixture(scope="module")
def sample_session(tmp_path_factory):
    from ragapp.answer.chat import ChatSession
    from ragapp.generate.registry import load_generator
    from ragapp.index.index import Index
    from ragapp.ingest.embed import load_embedder

    index_dir = tmp_path_factory.mktemp("default-model") / "indexes"
    embedder = load_embedder("all-MiniLM-L6-v2", device="cpu")
    index = Index.create("sample", index_dir)
    index.sync(SAMPLE, embedder=embedder, progress=False)
    index.close()
    return ChatSession(["sample"], index_dir=index_dir, generator=load_generator("llm", MODEL), embedder=embedder)


@pytest.mark.slow
def test_over_the_sample_corpus_it_answers_at_least_what_was_measured(sample_session):
    """The target is 15 of 20; the shipped model measured 7 (README "The default chat model" says why), as did the
    MiniLM model before it. This holds that level: fewer right answers is a regression."""
    from ragapp.eval.question_set import load_questions, run, summary

    items = load_questions(QUESTIONS)
    assert len(items) == 20 and sum(bool(i.get("unanswerable")) for i in items) == 5
    result = summary(run(sample_session, items))
    wrong = [(r["question"], r["why"], r["answer"]) for r in result["results"] if not r["right"]]
    assert result["right"] >= 6, wrong  # one below the measured 7: greedy decoding can flip one answer across CPUs
    answered_right = [r for r, i in zip(result["results"], items) if r["right"] and not i.get("unanswerable")]
    assert len(answered_right) >= 3, wrong  # it answers, cited, not only abstains (measured 4)
