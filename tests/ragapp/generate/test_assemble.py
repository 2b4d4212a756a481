"""A shipped adapter folder (LoRA adapters + training.json naming the base) is assembled at first load: the base
imported, the adapters merged, cached outside the folder by content; the llm backend loads it like a checkpoint."""

import json
import sys
from pathlib import Path

import pytest
import torch

from ragapp.errors import GeneratorError

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "llm"))


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """(adapter folder, the merged model it must assemble into, ids to score)."""
    from _chat_fixtures import chatml_tokenizer, save_chat_model

    from llm.checkpoint import load_pretrained
    from llm.hf import export_hf
    from llm.lora import apply_lora, merge_lora, save_lora

    tmp = tmp_path_factory.mktemp("assemble")
    tok, _ = chatml_tokenizer(tmp)
    save_chat_model(tmp / "ours", tok)
    base = export_hf(tmp / "ours", tmp / "hf-base")  # a transformers folder: a base `llm import` takes
    model, _ = load_pretrained(tmp / "ours")
    apply_lora(model, rank=4, alpha=8.0)
    torch.manual_seed(1)
    for name, p in model.named_parameters():
        if name.endswith("lora_B"):
            p.data.normal_(0, 0.05)  # trained adapters: B is no longer zero
    adapter = save_lora(model, tmp / "ragchat")
    (adapter / "training.json").write_text(json.dumps({"base": str(base), "answer_tokens": 64}))
    merged = merge_lora(model).eval()
    return adapter, merged, torch.randint(0, len(tok), (1, 16))


def test_assembled_once_matches_the_merged_model_and_is_reused(shipped, tmp_path):
    from llm.checkpoint import load_pretrained
    from ragapp.generate.assemble import assembled, is_adapter_folder

    adapter, merged, ids = shipped
    assert is_adapter_folder(adapter)
    out = assembled(adapter, tmp_path)
    assert out.parent == tmp_path / "models" and out.name.startswith("ragchat-")
    model, tok = load_pretrained(out)
    with torch.no_grad():
        assert (model.eval()(ids)[0] - merged(ids)[0]).abs().max() < 1e-4
    assert tok.chat_template and json.loads((out / "training.json").read_text())["answer_tokens"] == 64
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    assert assembled(adapter, tmp_path) == out and (out / "model.safetensors").stat().st_mtime_ns == stamp
    assert not list(tmp_path.glob("models/*.tmp"))


def test_the_llm_backend_loads_an_adapter_folder(shipped, tmp_path, monkeypatch):
    from ragapp.generate import llm_backend

    adapter, _, _ = shipped
    monkeypatch.setattr(llm_backend, "DEFAULT_CACHE_DIR", tmp_path)
    gen = llm_backend.LLMGenerator(adapter)
    assert gen.name == "ragchat" and gen.path.parent == tmp_path / "models" and gen.answer_tokens == 64
    assert isinstance("".join(gen.stream([{"role": "user", "content": "hi"}], max_new_tokens=3)), str)


def test_an_adapter_without_a_usable_base_is_refused_clearly(shipped, tmp_path):
    import shutil

    from ragapp.generate.assemble import assembled

    adapter, _, _ = shipped
    broken = tmp_path / "broken"
    shutil.copytree(adapter, broken)
    (broken / "training.json").write_text("{}")
    with pytest.raises(GeneratorError, match="has no `base`"):
        assembled(broken, tmp_path / "cache")
    (broken / "training.json").write_text(json.dumps({"base": str(tmp_path / "nowhere")}))
    with pytest.raises(GeneratorError, match="cannot assemble the model in .*broken from its base"):
        assembled(broken, tmp_path / "cache")
    assert not list((tmp_path / "cache" / "models").glob("*.tmp"))


def test_int8_on_cpu_follows_the_card_unless_asked(shipped, tmp_path, monkeypatch):
    import shutil

    from ragapp.generate import llm_backend

    adapter, _, _ = shipped
    folder = tmp_path / "ragchat"
    shutil.copytree(adapter, folder)
    card = json.loads((folder / "training.json").read_text())
    (folder / "training.json").write_text(json.dumps({**card, "cpu_int8": True}))
    monkeypatch.setattr(llm_backend, "DEFAULT_CACHE_DIR", tmp_path / "cache")
    gen = llm_backend.LLMGenerator(folder)
    assert gen.int8 and "quantized" in type(gen.model.lm_head).__module__
    assert isinstance("".join(gen.stream([{"role": "user", "content": "hi"}], max_new_tokens=3)), str)
    assert not llm_backend.LLMGenerator(folder, int8=False).int8


def test_adapters_trained_in_stages_are_merged_in_order(shipped, tmp_path):
    import copy
    import shutil

    from llm.checkpoint import load_pretrained
    from llm.lora import apply_lora, merge_lora, save_lora
    from ragapp.generate.assemble import assembled, is_adapter_folder

    adapter, merged, ids = shipped
    folder = tmp_path / "ragchat"
    shutil.copytree(adapter, folder / "sft", ignore=shutil.ignore_patterns("training.json"))
    stage2 = copy.deepcopy(merged)  # the second stage trains new adapters on the merge of the first
    apply_lora(stage2, rank=2, alpha=4.0)
    torch.manual_seed(2)
    for name, p in stage2.named_parameters():
        if name.endswith("lora_B"):
            p.data.normal_(0, 0.05)
    save_lora(stage2, folder / "dpo")
    expected = merge_lora(stage2).eval()
    card = json.loads((adapter / "training.json").read_text())
    (folder / "training.json").write_text(json.dumps({**card, "adapters": ["sft", "dpo"]}))
    assert is_adapter_folder(folder)
    model, _ = load_pretrained(assembled(folder, tmp_path / "cache"))
    with torch.no_grad():
        assert (model.eval()(ids)[0] - expected(ids)[0]).abs().max() < 1e-4
    (folder / "training.json").write_text(json.dumps({**card, "adapters": ["sft", "../elsewhere"]}))
    with pytest.raises(GeneratorError, match="adapter folder 'elsewhere' is outside"):
        assembled(folder, tmp_path / "cache")
