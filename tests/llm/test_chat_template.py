"""Chat models with a template of their own (an imported SmolLM2: ChatML `<|im_start|>role\\n...<|im_end|>`):
prompts and SFT/DPO data are rendered by that template, the loss covers exactly the assistant replies and
their `<|im_end|>`, generation stops at `<|im_end|>`, and `llm sft` / `llm dpo` fine-tune such a checkpoint.
Checkpoints with our own chat tokens render and stop exactly as before."""

import json

import numpy as np
import pytest
from _chat_fixtures import CHATML, CHATML_MARKED, chatml_tokenizer, save_chat_model
from _train_fixtures import losses, tokenizer, write_jsonl

from llm.cli import main
from llm.data import PreferenceData, PromptData, SFTData, chat_spans, encode_chats
from llm.generate import generate, stop_token_ids_of
from llm.tokenizer import (
    CHAT_TEMPLATE,
    chat_ids,
    end_of_turn,
    has_own_template,
    load_tokenizer,
    render_chat,
    special_ids,
)

CHATS = [
    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Is the cat on the mat?"},
     {"role": "assistant", "content": "Yes, the cat sat on the mat."}],
    # no system message (SmolLM2's template adds its own), two answers, one with a trailing newline
    [{"role": "user", "content": "Say yes."}, {"role": "assistant", "content": "yes\n"},
     {"role": "user", "content": "Now say no."}, {"role": "assistant", "content": "no"}],
]
SFT_ROWS = [{"messages": [{"role": "user", "content": f"Say {w}."}, {"role": "assistant", "content": f"{w} {w}"}]}
            for w in ["cat", "dog", "mat", "log", "yes", "no", "sat", "heater"]]


@pytest.fixture(scope="module")
def chat(tmp_path_factory):
    """(tokenizer as transformers loads it, the same saved in a tiny checkpoint and loaded back, checkpoint)."""
    tmp = tmp_path_factory.mktemp("chatml")
    tok, _ = chatml_tokenizer(tmp)
    # init_std 0.2, not 0.02: with tiny random embeddings the tied LM head's logits stay within about +-1, a bound
    # that LoRA (which leaves the embeddings alone) cannot lift, so its loss could barely fall
    ckpt = save_chat_model(tmp / "base", tok, init_std=0.2)
    return tok, load_tokenizer(ckpt), ckpt


@pytest.fixture(scope="module")
def ours(tmp_path_factory):
    return tokenizer(tmp_path_factory.mktemp("ours"))


def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_a_template_of_its_own_is_told_apart_from_our_chat_tokens(chat, ours):
    hf_tok, tok, _ = chat
    assert has_own_template(tok) and tok.chat_template == CHATML
    assert not has_own_template(ours) and ours.chat_template == CHAT_TEMPLATE
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert end_of_turn(tok) == "<|im_end|>" and end_of_turn(ours) == "<|end|>"
    # SmolLM2 pads with its end-of-turn token: allowed for a template of its own (losses use explicit masks)
    assert chat_ids(tok) == {"eos": im_end, "end": im_end, "pad": tok.pad_token_id}
    assert stop_token_ids_of(tok) == {im_end}
    # ours: unchanged (end-of-text, end-of-turn and the start of any turn), and its ids are special_ids'
    sid = special_ids(ours)
    assert stop_token_ids_of(ours) == {sid[k] for k in ("eos", "end", "user", "system", "assistant")}
    assert chat_ids(ours) == {k: sid[k] for k in ("eos", "end", "pad")}
    with pytest.raises(ValueError, match="has no '<\\|system\\|>' token"):
        special_ids(tok)  # our chat tokens are not what this tokenizer speaks


@pytest.mark.parametrize("gen", [True, False])
def test_rendering_is_the_templates_own(chat, ours, gen):
    hf_tok, tok, _ = chat
    for msgs in CHATS + [CHATS[1][:1], CHATS[0][:2]]:
        want = hf_tok.apply_chat_template(msgs, add_generation_prompt=gen, tokenize=False)
        assert render_chat(tok, msgs, gen) == render_chat(hf_tok, msgs, gen) == want
        assert want.startswith("<|im_start|>system\n") and "<|user|>" not in want
    # ours renders exactly as before
    assert render_chat(ours, CHATS[0], gen) == ours.apply_chat_template(CHATS[0], add_generation_prompt=gen,
                                                                         tokenize=False)
    assert render_chat(ours, CHATS[0][:2], True).endswith("<|user|>\nIs the cat on the mat?<|end|>\n<|assistant|>\n")


def test_the_answer_mask_is_exactly_the_replies_and_their_end_of_turn(chat):
    _, tok, _ = chat
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    for msgs, ex in zip(CHATS, encode_chats(tok, CHATS)):
        assert ex.ids.tolist() == _ids(tok, render_chat(tok, msgs))[:len(ex.ids)]  # the template's tokens
        want = [t for m in msgs if m["role"] == "assistant" for t in _ids(tok, m["content"]) + [im_end]]
        assert ex.ids[ex.mask].tolist() == want
        # each masked run is one reply: it starts right after "<|im_start|>assistant\n" and ends at <|im_end|>
        runs = np.flatnonzero(np.diff(np.r_[0, ex.mask.astype(int), 0]))
        starts, ends = runs[::2], runs[1::2]
        assert len(starts) == sum(m["role"] == "assistant" for m in msgs)
        for a, b in zip(starts, ends):
            assert tok.decode(ex.ids[:a].tolist()).endswith("<|im_start|>assistant\n")
            assert ex.ids[b - 1] == im_end
        assert ex.ids[-1] == im_end  # nothing after the last answer
    last = encode_chats(tok, CHATS[1:], last_only=True)[0]
    assert last.ids[last.mask].tolist() == _ids(tok, "no") + [im_end]


def test_templates_that_mark_their_replies_give_the_same_mask(chat):
    """{% generation %} templates take transformers' return_assistant_tokens_mask; same answer tokens."""
    import copy

    _, tok, _ = chat
    marked = copy.deepcopy(tok)
    marked.chat_template = CHATML_MARKED
    for msgs in CHATS:
        assert render_chat(marked, msgs) == render_chat(tok, msgs)
    for last_only in (False, True):
        for a, b in zip(encode_chats(marked, CHATS, last_only), encode_chats(tok, CHATS, last_only)):
            assert a.ids.tolist() == b.ids.tolist() and a.mask.tolist() == b.mask.tolist()


def test_non_incremental_templates_are_refused(chat):
    import copy

    _, tok, _ = chat
    odd = copy.deepcopy(tok)  # the generation prompt is not how an assistant turn starts
    odd.chat_template = CHATML.replace("{{ '<|im_start|>assistant\n' }}", "{{ '<|im_start|>bot\n' }}")
    with pytest.raises(ValueError, match="does not render conversations incrementally"):
        chat_spans(odd, CHATS[0], last_only=False)


def test_sft_preference_and_prompt_data_use_the_template(tmp_path, chat):
    _, tok, _ = chat
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    data = SFTData(write_jsonl(tmp_path / "sft.jsonl", SFT_ROWS), tok, seq_len=64, progress=False)
    assert len(data) == 8 and data.pad_id == tok.pad_token_id
    b = data.batch([0, 1])
    assert (b["targets"] != -100).sum().item() == len(_ids(tok, "cat cat")) + len(_ids(tok, "dog dog")) + 2
    pref = PreferenceData(write_jsonl(tmp_path / "pref.jsonl", [{"prompt": "Say cat.", "chosen": "cat",
                                                                  "rejected": "dog"}]), tok, 64, progress=False)
    chosen, rejected = pref.pairs[0]
    assert chosen.ids[chosen.mask].tolist() == _ids(tok, "cat") + [im_end]
    assert rejected.ids[rejected.mask].tolist() == _ids(tok, "dog") + [im_end]
    prompts = PromptData(write_jsonl(tmp_path / "p.jsonl", SFT_ROWS[:1]), tok, 256, progress=False)
    assert tok.decode(prompts.prompts[0].tolist()) == render_chat(tok, SFT_ROWS[0]["messages"][:1], True)


def test_generation_stops_at_the_end_of_turn_token(chat):
    import torch

    from llm.checkpoint import load_pretrained

    _, _, ckpt = chat
    model, tok = load_pretrained(ckpt)
    word, im_end = _ids(tok, "cat")[0], tok.convert_tokens_to_ids("<|im_end|>")
    script = iter([word, word, im_end, word])
    model.lm_logits = lambda h: torch.nn.functional.one_hot(  # writes "cat", "cat", then ends its turn
        torch.full(h.shape[:-1], next(script)), len(tok)).float()
    prompt = render_chat(tok, CHATS[0][:2], True)
    assert generate(model, tok, prompt, max_new_tokens=10) == tok.decode([word, word])


def _sft(tmp_path, ckpt, data, steps, lr, *extra):
    out = tmp_path / "run"
    assert main(["sft", "--init", str(ckpt), "--data", str(data), "--out-dir", str(out), "--max-steps", str(steps),
                 "--seq-len", "48", "--batch-size", "4", "--lr", str(lr), "--warmup-steps", "1", "--val-fraction",
                 "0", "--eval-every", "0", "--log-every", "1", "--threads", "1", "--no-progress", "--no-plot",
                 *extra]) == 0
    return out


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_llm_sft_fine_tunes_a_template_checkpoint(tmp_path, chat, lora, capsys):
    _, tok, ckpt = chat
    data = write_jsonl(tmp_path / "sft.jsonl", SFT_ROWS)
    # LoRA trains ~0.3% of the weights (the embeddings stay as they are): a higher rate, a smaller drop
    steps, lr, drop = (12, 5e-2, 0.8) if lora else (8, 1e-2, 0.7)
    out = _sft(tmp_path, ckpt, data, steps, lr, *(["--lora", "--lora-r", "4"] if lora else []))
    loss = losses(out)
    assert len(loss) == steps and np.mean(loss[-3:]) < drop * np.mean(loss[:3]), loss
    final = out / "final"
    assert (final / "adapter_model.safetensors").is_file() == lora
    # the fine-tuned checkpoint keeps the template: it renders and scores chats the same way
    assert load_tokenizer(final).chat_template == CHATML
    capsys.readouterr()
    assert main(["eval", str(final), str(data), "--seq-len", "48"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    answers = [m["content"] for row in SFT_ROWS for m in row["messages"] if m["role"] == "assistant"]
    assert r["kind"] == "chat" and r["tokens"] == sum(len(_ids(tok, a)) + 1 for a in answers)  # + <|im_end|>


def test_llm_dpo_runs_on_a_template_checkpoint(tmp_path, chat):
    _, _, ckpt = chat
    rows = [{"prompt": f"Say {w}.", "chosen": f"{w} yes", "rejected": f"{w} no"} for w in ["cat", "dog", "mat", "log"]]
    data = write_jsonl(tmp_path / "dpo.jsonl", rows * 2)
    out = tmp_path / "dpo"
    assert main(["dpo", "--init", str(ckpt), "--data", str(data), "--out-dir", str(out), "--max-steps", "3",
                 "--seq-len", "48", "--batch-size", "2", "--lr", "1e-3", "--warmup-steps", "1", "--val-fraction",
                 "0", "--eval-every", "0", "--log-every", "1", "--threads", "1", "--no-progress", "--no-plot",
                 "--lora"]) == 0
    assert len(losses(out)) == 3 and (out / "final" / "model.safetensors").is_file()
