"""llm.generate: KV-cache decoding equals uncached decoding, batches equal single prompts, stop rules,
streaming pieces, sampling controls."""

import pytest
import torch
from _model_fixtures import one_torch_thread, tiny_model, tiny_tokenizer  # noqa: F401 (autouse)

from llm.generate import _Text, generate, generate_ids, stop_token_ids_of, stream


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return tiny_tokenizer(tmp_path_factory.mktemp("tok"))


def naive_greedy(model, ids, n, prefix_lm):
    """Reference: recompute the whole sequence without a cache at every step."""
    seq = list(ids)
    for _ in range(n):
        x = torch.tensor([seq])
        prefix = torch.tensor([len(ids)]) if prefix_lm else None
        logits, _ = model(x, prefix_len=prefix)
        seq.append(int(logits[0, -1].argmax()))
    return seq[len(ids):]


@pytest.mark.parametrize("arch, prefix_lm", [("llama", False), ("llama", True), ("bert", False), ("bert", True)])
def test_cached_generation_equals_uncached_and_batched_equals_single(tok, arch, prefix_lm):
    # a larger init spread makes random greedy outputs vary instead of repeating one token
    model = tiny_model(len(tok), arch=arch, prefix_lm=prefix_lm, init_std=0.3)
    prompts = [tok(p, add_special_tokens=False)["input_ids"] for p in
               ["The cat sat", "Retrieval augmented generation answers from", "A"]]
    batched = generate_ids(model, prompts, 12)
    for ids, got in zip(prompts, batched):
        assert generate_ids(model, [ids], 12) == [got]
        assert got == naive_greedy(model, ids, 12, prefix_lm)
    assert len(set(map(tuple, batched))) == 3


def test_text_batch_equals_single_prompts(tok):
    model = tiny_model(len(tok), init_std=0.3)
    prompts = ["The dog", "Café crème, naïve façade: déjà", "Emoji"]
    together = generate(model, tok, prompts, max_new_tokens=15, stop_token_ids=[])
    assert together == [generate(model, tok, p, max_new_tokens=15, stop_token_ids=[]) for p in prompts]
    assert isinstance(generate(model, tok, "The dog", max_new_tokens=2), str)


def test_streaming_decoder_never_splits_a_character(tok):
    text = "Café 日本語 🙂 and [1] naïve"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > len(text.split())  # multi-byte characters span several tokens here
    row = _Text(tok, [], set())
    pieces = [row.push(i) for i in ids] + [row.finish()]
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)


def test_stop_string_is_cut_and_never_streamed(tok):
    ids = tok("Hello world. STOP here", add_special_tokens=False)["input_ids"]
    row = _Text(tok, ["STOP", "never"], set())
    pieces = []
    for i in ids:
        pieces.append(row.push(i))
        if row.done:
            break
    assert row.done and "".join(pieces) == "Hello world. " and row.text == "Hello world. "
    assert not any("S" in p for p in pieces)


def test_stream_concatenation_equals_generate_with_sampling_and_stops(tok):
    model = tiny_model(len(tok), init_std=0.3)
    kwargs = dict(max_new_tokens=40, temperature=1.0, top_k=50, top_p=0.95, seed=3)
    full = generate(model, tok, "The cat", stop_token_ids=[], **kwargs)
    assert full and full == generate(model, tok, "The cat", stop_token_ids=[], **kwargs)  # seeded
    pieces = list(stream(model, tok, "The cat", stop_token_ids=[], **kwargs))
    assert len(pieces) > 1 and "".join(pieces) == full
    stop = full[len(full) // 2: len(full) // 2 + 3]
    cut = generate(model, tok, "The cat", stop=[stop], stop_token_ids=[], **kwargs)
    assert cut == full[: full.find(stop)]
    assert "".join(stream(model, tok, "The cat", stop=[stop], stop_token_ids=[], **kwargs)) == cut


@pytest.mark.parametrize("token", ["<|end|>", "<|endoftext|>", "<|user|>"])
def test_end_of_turn_tokens_stop_and_are_not_returned(tok, token):
    model = tiny_model(len(tok), init_std=0.3)
    stop_id = tok.convert_tokens_to_ids(token)
    assert stop_id in stop_token_ids_of(tok)
    free = generate_ids(model, [[5, 6]], 3)[0]
    head, calls = model.lm_logits, []

    def forced(h):  # after three free tokens, the model "wants" to end its turn
        logits = head(h)
        calls.append(1)
        if len(calls) > 3:
            logits[..., stop_id] = 1e4
        return logits

    model.lm_logits = forced
    assert generate_ids(model, [[5, 6]], 10, stop_token_ids=[stop_id])[0] == free + [stop_id]
    calls.clear()
    assert generate(model, tok, tok.decode([5, 6]), max_new_tokens=10) == tok.decode(free)


def test_repetition_penalty_and_greedy_limits(tok):
    model = tiny_model(len(tok))  # small init: greedy repeats one token forever
    plain = generate_ids(model, [[10, 11]], 20)[0]
    assert len(set(plain)) <= 3
    penalised = generate_ids(model, [[10, 11]], 20, repetition_penalty=5.0)[0]
    assert len(set(penalised)) > len(set(plain))
    assert generate_ids(model, [[10, 11]], 0) == [[]]


@pytest.mark.parametrize("kwargs, message", [
    ({"temperature": -1}, "temperature=-1 must be >= 0 (0 = greedy)"),
    ({"top_k": 0}, "top_k=0 must be a positive integer or None"),
    ({"top_p": 1.5}, "top_p=1.5 must be in (0, 1] or None"),
    ({"repetition_penalty": 0}, "repetition_penalty=0 must be > 0 (1 = off)"),
    ({"max_new_tokens": -2}, "max_new_tokens=-2 must be an integer >= 0"),
    ({"prefix_lm": True}, "prefix_lm=True but this model was not trained as a prefix-LM"),
])
def test_bad_generation_arguments(tok, kwargs, message):
    model = tiny_model(len(tok))
    with pytest.raises(ValueError) as err:
        generate(model, tok, "The cat", **kwargs)
    assert str(err.value).startswith(message)


def test_prompt_longer_than_context_is_a_clear_error(tok):
    model = tiny_model(len(tok), max_seq_len=16)
    with pytest.raises(ValueError, match="does not fit the model's max_seq_len=16"):
        generate(model, tok, "The cat sat on the mat. " * 10)
    out = generate_ids(model, [[1, 2, 3]], 100)  # generation stops at the context limit
    assert len(out[0]) == 16 - 3


def test_first_token_bias_moves_only_the_first_token(tok):
    model = tiny_model(len(tok), init_std=0.3)
    ids = tok("The cat sat", add_special_tokens=False)["input_ids"]
    plain = generate_ids(model, [ids], 6)[0]
    banned = generate(model, tok, "The cat sat", max_new_tokens=6, stop_token_ids=[],
                      first_token_bias={plain[0]: float("-inf")})
    first = tok(banned, add_special_tokens=False)["input_ids"]
    assert first and first[0] != plain[0]
    # a bias that does not change the argmax changes nothing, and later steps may still pick the token
    same = generate(model, tok, "The cat sat", max_new_tokens=6, stop_token_ids=[], first_token_bias={plain[0]: 0.5})
    assert same == generate(model, tok, "The cat sat", max_new_tokens=6, stop_token_ids=[])
    assert "".join(stream(model, tok, "The cat sat", max_new_tokens=6, stop_token_ids=[],
                          first_token_bias={plain[0]: float("-inf")})) == banned
