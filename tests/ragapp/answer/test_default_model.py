"""The shipped default chat model (models/ragchat): in the repository, within the size limit, loads
strictly, and answers over the sample corpus through the chat with a checked citation, or abstains."""

import json
from pathlib import Path

import pytest

from recipes.ragchat.make_model import TRAIN_STAGES

ROOT = Path(__file__).resolve().parents[3]
MODEL = ROOT / "models" / "ragchat"
SAMPLE = ROOT / "corpora" / "sample"


def test_the_shipped_checkpoint_is_small_half_precision_and_documented():
    from safetensors import safe_open

    weights = MODEL / "model.safetensors"
    assert weights.stat().st_size <= 100_000_000
    with safe_open(str(weights), "pt") as f:
        assert {str(f.get_slice(k).get_dtype()) for k in f.keys()} == {"F16"}
    card = json.loads((MODEL / "training.json").read_text())
    assert card["made_by"] == "python -m recipes.ragchat.make_model"
    assert card["stage"] in TRAIN_STAGES and card["stage"] != "pretrain" and card["answer_tokens"] == 64 and isinstance(card["abstention_bias"], (int, float))
    assert 0 <= card["dev"]["answerable_em"] <= 100


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
def test_over_the_sample_corpus_it_answers_with_checked_citations_or_abstains(sample_session):
    *_, off_topic = sample_session.answer_stream("Who wrote the novel Moby-Dick?")
    assert off_topic.abstained and off_topic.mode == "abstained"
    for question, expected in [("Which torch version does the first run install?", "2.13.0"),
                               ("How many dimensions does each chunk vector have?", "384")]:
        *_, answer = sample_session.answer_stream(question)
        assert answer.mode == "generated" and not answer.abstained, (question, answer.text, answer.reason)
        assert expected in answer.text and answer.citations and all(c.supported for c in answer.citations)
