"""Text generation with a KV cache: greedy or sampled, stop strings and tokens, streaming, batches.

Hand-written rather than transformers' `generate` because our GPT is not a PreTrainedModel, and a
loop this small is faster on CPU (see benchmarks/bench_generation.py) and handles prefix-LM prompts
(bidirectional prefill, causal decoding).

Batches are left-padded: every prompt ends at the same cache slot, padding slots are masked out and
positions start after them (GPT.hidden_states pad_len), so each row computes what it would alone.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import torch

from llm.tokenizer import SPECIAL_TOKENS, chat_ids, has_own_template


def stop_token_ids_of(tokenizer) -> set[int]:
    """Tokens that end a reply: end-of-text, end-of-turn, and the start of another turn. A tokenizer with a
    chat template of its own stops at its end-of-text and its template's end-of-turn token (SmolLM2's
    <|im_end|>); our chat tokens mean nothing to it (and its role names are plain text, not tokens)."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    if has_own_template(tokenizer):
        return ids | {chat_ids(tokenizer)["end"]}
    vocab = tokenizer.get_vocab()
    for key in ("eos", "end", "user", "system", "assistant"):
        if SPECIAL_TOKENS[key] in vocab:
            ids.add(int(vocab[SPECIAL_TOKENS[key]]))
    return ids


def _check_sampling(max_new_tokens, temperature, top_k, top_p, repetition_penalty) -> None:
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens={max_new_tokens!r} must be an integer >= 0")
    if not temperature >= 0:
        raise ValueError(f"temperature={temperature!r} must be >= 0 (0 = greedy)")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k={top_k!r} must be a positive integer or None")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p={top_p!r} must be in (0, 1] or None")
    if not repetition_penalty > 0:
        raise ValueError(f"repetition_penalty={repetition_penalty!r} must be > 0 (1 = off)")


def _next_tokens(logits, history, temperature, top_k, top_p, repetition_penalty, generator):
    """logits (B, V) float, history (B, S) ids seen so far -> next ids (B,)."""
    if repetition_penalty != 1.0:  # CTRL (Keskar et al., 2019), as transformers applies it
        seen = logits.gather(1, history)
        logits = logits.scatter(1, history, torch.where(seen < 0, seen * repetition_penalty, seen / repetition_penalty))
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs > top_p  # keep the smallest set whose mass reaches top_p
        logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def _token_steps(model, prompt_ids: list[list[int]], max_new_tokens, temperature=0.0, top_k=None, top_p=None,
                 repetition_penalty=1.0, prefix_lm=None, seed=None,
                 first_token_bias: dict[int, float] | None = None) -> Iterator[torch.Tensor]:
    """Yield the next token of every row, (B,) long, one step at a time (the caller decides when to stop).
    `first_token_bias` {token id: logit offset} applies to the first generated token only."""
    cfg = model.config
    if prefix_lm is None:
        prefix_lm = cfg.prefix_lm
    if prefix_lm and not cfg.prefix_lm:
        raise ValueError("prefix_lm=True but this model was not trained as a prefix-LM (config.prefix_lm is false)")
    lengths = [len(ids) for ids in prompt_ids]
    if min(lengths) == 0:
        raise ValueError("empty prompt: give at least one token of text")
    B, L = len(prompt_ids), max(lengths)
    if L >= cfg.max_seq_len:
        raise ValueError(f"prompt of {L} tokens does not fit the model's max_seq_len={cfg.max_seq_len} "
                         "with room to generate; shorten it")
    total = min(L + max_new_tokens, cfg.max_seq_len)  # generation stops at the context limit
    device = model.tok_emb.weight.device
    # left padding; a row's history pads with its own first token, which repetition_penalty treats as seen anyway
    history = torch.tensor([[ids[0]] * (L - len(ids)) + ids for ids in prompt_ids], device=device)
    history = torch.cat([history, history.new_zeros(B, total - L)], 1)  # (B, total)
    pad_len = torch.tensor([L - n for n in lengths], device=device) if min(lengths) < L else None
    prefix_len = torch.full((B,), L, device=device) if prefix_lm else None
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)

    cache = model.new_kv_cache(B, total)
    h = model.hidden_states(history[:, :L], prefix_len=prefix_len, kv_cache=cache, start_pos=0, pad_len=pad_len)
    for pos in range(L, total):
        logits = model.lm_logits(h[:, -1]).float()  # (B, V): the LM head only at the last position
        if first_token_bias and pos == L:
            for token, bias in first_token_bias.items():
                logits[:, token] += bias
        nxt = _next_tokens(logits, history[:, :pos], temperature, top_k, top_p, repetition_penalty, generator)
        history[:, pos] = nxt
        yield nxt
        if pos + 1 < total:
            h = model.hidden_states(nxt[:, None], prefix_len=prefix_len, kv_cache=cache, start_pos=pos,
                                    pad_len=pad_len)


class _Text:
    """Decoded text of one row as tokens arrive: applies stop strings and hands out only settled text
    (never half a UTF-8 character, never the start of what may become a stop string)."""

    def __init__(self, tokenizer, stop: list[str], stop_ids: set[int]):
        self.tokenizer, self.stop, self.stop_ids = tokenizer, stop, stop_ids
        self.ids: list[int] = []
        self.text = ""
        self.emitted = ""
        self.done = False

    def push(self, token: int) -> str:
        if token in self.stop_ids:
            self.done = True
            return self.finish()
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        hits = [i for i in (text.find(s) for s in self.stop) if i >= 0]
        if hits:
            self.text, self.done = text[: min(hits)], True
            return self.finish()
        self.text = text
        settled = len(text.rstrip("\ufffd"))  # hold back a partial multi-byte character
        for s in self.stop:  # hold back a tail that may grow into a stop string
            for k in range(min(len(s) - 1, settled), 0, -1):
                if text[:settled].endswith(s[:k]):
                    settled -= k
                    break
        return self._emit(text[:settled])

    def finish(self) -> str:
        return self._emit(self.text)

    def _emit(self, upto: str) -> str:
        # byte-level BPE and WordPiece decoding only ever extend earlier text; if a decoder rewrote it,
        # wait until it is consistent again (finish() then emits the rest)
        if len(upto) <= len(self.emitted) or not upto.startswith(self.emitted):
            return ""
        piece, self.emitted = upto[len(self.emitted):], upto
        return piece


def _prepare(tokenizer, prompts, stop, stop_token_ids):
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    stop = [s for s in (stop or []) if s]
    stop_ids = stop_token_ids_of(tokenizer) if stop_token_ids is None else {int(t) for t in stop_token_ids}
    return ids, stop, stop_ids


def _run(model, tokenizer, prompts, max_new_tokens, temperature, top_k, top_p, repetition_penalty, stop,
         prefix_lm, stop_token_ids, seed, first_token_bias=None) -> Iterator[tuple[int, str]]:
    """(row, text piece) pairs as they settle."""
    _check_sampling(max_new_tokens, temperature, top_k, top_p, repetition_penalty)
    ids, stop, stop_ids = _prepare(tokenizer, prompts, stop, stop_token_ids)
    rows = [_Text(tokenizer, stop, stop_ids) for _ in prompts]
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), model.fused_for_inference():
            if max_new_tokens > 0:
                for step in _token_steps(model, ids, max_new_tokens, temperature, top_k, top_p,
                                         repetition_penalty, prefix_lm, seed, first_token_bias):
                    for r, token in enumerate(step.tolist()):
                        if not rows[r].done:
                            piece = rows[r].push(token)
                            if piece:
                                yield r, piece
                    if all(row.done for row in rows):
                        break
        for r, row in enumerate(rows):
            piece = row.finish()
            if piece:
                yield r, piece
    finally:
        model.train(was_training)


def generate(model, tokenizer, prompts: list[str] | str, max_new_tokens: int = 128, temperature: float = 0.0,
             top_k: int | None = None, top_p: float | None = None, repetition_penalty: float = 1.0,
             stop: list[str] | None = None, prefix_lm: bool | None = None,
             stop_token_ids: Iterable[int] | None = None, seed: int | None = None,
             first_token_bias: dict[int, float] | None = None) -> list[str] | str:
    """Continue each prompt. temperature 0 = greedy. Generation ends at a stop token (end-of-text,
    end-of-turn or a new turn; `stop_token_ids` overrides, [] for none), at the first stop string (cut off,
    not returned), after max_new_tokens, or at the model's max_seq_len. prefix_lm None = the model's setting.
    `first_token_bias` {token id: logit offset} shifts the first generated token only (a calibrated offset on
    the first token of a fixed reply, such as an abstention, moves the decision between that reply and the rest:
    the null-answer threshold of SQuAD 2.0 readers)."""
    single = isinstance(prompts, str)
    batch = [prompts] if single else list(prompts)
    out = [""] * len(batch)
    for r, piece in _run(model, tokenizer, batch, max_new_tokens, temperature, top_k, top_p, repetition_penalty,
                         stop, prefix_lm, stop_token_ids, seed, first_token_bias):
        out[r] += piece
    return out[0] if single else out


def stream(model, tokenizer, prompt: str, max_new_tokens: int = 128, temperature: float = 0.0,
           top_k: int | None = None, top_p: float | None = None, repetition_penalty: float = 1.0,
           stop: list[str] | None = None, prefix_lm: bool | None = None,
           stop_token_ids: Iterable[int] | None = None, seed: int | None = None,
           first_token_bias: dict[int, float] | None = None) -> Iterator[str]:
    """Like generate() for one prompt, yielding text pieces as they settle; "".join(pieces) == generate(...)."""
    for _, piece in _run(model, tokenizer, [prompt], max_new_tokens, temperature, top_k, top_p, repetition_penalty,
                         stop, prefix_lm, stop_token_ids, seed, first_token_bias):
        yield piece


def generate_ids(model, prompt_ids: list[list[int]], max_new_tokens: int, temperature: float = 0.0,
                 top_k: int | None = None, top_p: float | None = None, repetition_penalty: float = 1.0,
                 stop_token_ids: Iterable[int] = (), prefix_lm: bool | None = None,
                 seed: int | None = None) -> list[list[int]]:
    """Token-level batched generation (for RL rollouts, evaluation): the new ids of each row, ending with
    the stop token when one was produced."""
    _check_sampling(max_new_tokens, temperature, top_k, top_p, repetition_penalty)
    stop_ids = {int(t) for t in stop_token_ids}
    out: list[list[int]] = [[] for _ in prompt_ids]
    done = [False] * len(prompt_ids)
    if max_new_tokens == 0:
        return out
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), model.fused_for_inference():
            for step in _token_steps(model, [list(p) for p in prompt_ids], max_new_tokens, temperature, top_k,
                                     top_p, repetition_penalty, prefix_lm, seed):
                for r, token in enumerate(step.tolist()):
                    if not done[r]:
                        out[r].append(token)
                        done[r] = token in stop_ids
                if all(done):
                    break
    finally:
        model.train(was_training)
    return out
