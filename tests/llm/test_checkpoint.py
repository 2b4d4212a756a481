"""llm.checkpoint: round trip, strict loading with named keys, clear errors for non-checkpoints."""

import json

import pytest
import torch
from _model_fixtures import one_torch_thread, tiny_model, tiny_tokenizer  # noqa: F401 (autouse)
from safetensors.torch import load_file, save_file

from llm.checkpoint import load_pretrained, save_pretrained
from llm.generate import generate


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return tiny_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.mark.parametrize("arch, tie", [("llama", True), ("llama", False), ("bert", True)])
def test_round_trip_keeps_logits_and_tokenizer(tmp_path, tok, arch, tie):
    model = tiny_model(len(tok), arch=arch, prefix_lm=arch == "bert", tie_embeddings=tie, init_std=0.3)
    out = save_pretrained(model, tok, tmp_path / "ckpt")
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    assert not list(out.glob("*.tmp"))
    keys = set(load_file(str(out / "model.safetensors")))
    assert ("lm_head.weight" in keys) != tie  # a tied head is stored once
    loaded, tok2 = load_pretrained(out)
    assert loaded.config == model.config and not loaded.training
    assert (loaded.lm_head.weight is loaded.tok_emb.weight) == tie
    idx = torch.randint(0, len(tok), (2, 12))
    assert torch.equal(loaded(idx)[0], model(idx)[0])
    assert tok2.get_vocab() == tok.get_vocab() and tok2.chat_template == tok.chat_template
    text = generate(model, tok, "The cat", max_new_tokens=8)
    assert generate(loaded, tok2, "The cat", max_new_tokens=8) == text


def test_saved_tokenizer_never_truncates_or_pads(tmp_path, tok):
    # a sentence encoder's tokenizer (MiniLM's, through the warm start) truncates and pads to 128 tokens
    tok.backend_tokenizer.enable_truncation(128)
    tok.backend_tokenizer.enable_padding(length=128)
    out = save_pretrained(tiny_model(len(tok)), tok, tmp_path / "ckpt")
    saved = json.loads((out / "tokenizer.json").read_text())
    assert saved["truncation"] is None and saved["padding"] is None
    from tokenizers import Tokenizer

    long_text = "the cat sat " * 100
    assert len(Tokenizer.from_file(str(out / "tokenizer.json")).encode(long_text).ids) > 128


def test_bfloat16_save_loads_as_float32(tmp_path, tok):
    model = tiny_model(len(tok))
    save_pretrained(model, None, tmp_path / "c", dtype=torch.bfloat16)
    assert load_file(str(tmp_path / "c" / "model.safetensors"))["tok_emb.weight"].dtype == torch.bfloat16
    loaded, no_tok = load_pretrained(tmp_path / "c")
    assert no_tok is None and loaded.tok_emb.weight.dtype == torch.float32
    assert torch.allclose(loaded.tok_emb.weight, model.tok_emb.weight, atol=1e-2)


def test_missing_unexpected_and_misshaped_weights_are_named(tmp_path, tok):
    out = save_pretrained(tiny_model(len(tok)), None, tmp_path / "c")
    state = load_file(str(out / "model.safetensors"))
    state.pop("blocks.1.mlp.up_proj.weight")
    state["blocks.0.attn.extra"] = torch.zeros(2)
    state["norm.weight"] = torch.ones(3)
    save_file(state, str(out / "model.safetensors"))
    with pytest.raises(ValueError) as err:
        load_pretrained(out)
    msg = str(err.value)
    assert "missing: blocks.1.mlp.up_proj.weight" in msg
    assert "unexpected: blocks.0.attn.extra" in msg
    assert "wrong shape: norm.weight (3,) != (64,)" in msg


def test_not_a_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such checkpoint folder"):
        load_pretrained(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"not a model checkpoint \(no config.json\)"):
        load_pretrained(tmp_path / "empty")
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="a Hugging Face llama checkpoint, not one of ours; convert it with `llm import"):
        load_pretrained(hf)
    ours = tmp_path / "ours"
    save_pretrained(tiny_model(300), None, ours)
    (ours / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="has config.json but no model.safetensors"):
        load_pretrained(ours)
