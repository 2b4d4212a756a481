"""SmolLM2-135M-Instruct + LoRA (models/ragchat-smollm2), the fine-tuned candidate for the default model: small,
half precision and documented in the repository, assembled from the installed base at first load, and answering
over the sample corpus with a checked citation."""

import json
from pathlib import Path

import pytest

from recipes.ragchat.make_model import SMOLLM2_TRAIN_STAGES

ROOT = Path(__file__).resolve().parents[3]
MODEL = ROOT / "models" / "ragchat-smollm2"
SAMPLE = ROOT / "corpora" / "sample"


def test_the_adapters_are_small_half_precision_and_documented():
    from safetensors import safe_open

    from ragapp.generate.assemble import is_adapter_folder

    assert is_adapter_folder(MODEL)
    assert sum(f.stat().st_size for f in MODEL.rglob("*") if f.is_file()) <= 50_000_000
    card = json.loads((MODEL / "training.json").read_text())
    assert card["adapters"] and card["base"] == "smollm2"
    for adapter in card["adapters"]:
        with safe_open(str(MODEL / adapter / "adapter_model.safetensors"), "pt") as f:
            assert {str(f.get_slice(k).get_dtype()) for k in f.keys()} == {"F16"}
    assert card["made_by"] == "python -m recipes.ragchat.make_model --base smollm2"
    assert card["stage"] in SMOLLM2_TRAIN_STAGES and card["answer_tokens"] > 0
    assert 0 <= card["zero_shot_dev"]["answerable_em"] < card["dev"]["answerable_em"] <= 100
    assert card["cpu_int8"] is False  # its int8 copy lost the answerable half (BENCHMARKS.md)


@pytest.mark.slow
def test_assembled_from_the_base_it_answers_over_the_sample_corpus_with_a_checked_citation(tmp_path, monkeypatch):
    from ragapp.answer.chat import ChatSession
    from ragapp.generate import llm_backend
    from ragapp.index.index import Index
    from ragapp.ingest.embed import load_embedder

    monkeypatch.setattr(llm_backend, "DEFAULT_CACHE_DIR", tmp_path / "cache")
    embedder = load_embedder("all-MiniLM-L6-v2", device="cpu")
    index = Index.create("sample", tmp_path / "indexes")
    index.sync(SAMPLE, embedder=embedder, progress=False)
    index.close()
    generator = llm_backend.LLMGenerator(MODEL)
    assert generator.name == "ragchat-smollm2" and not generator.int8
    session = ChatSession(["sample"], index_dir=tmp_path / "indexes", generator=generator, embedder=embedder)
    *_, answer = session.answer_stream("How many dimensions do the chunk vectors have?")
    assert answer.mode == "generated" and "384" in answer.text, (answer.text, answer.reason)
    assert answer.citations and all(c.supported for c in answer.citations)
