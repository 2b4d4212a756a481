"""llm.config + llm.model: validation, presets, shapes, loss, masks, KV cache."""

import pytest
import torch
import torch.nn.functional as F
from _model_fixtures import one_torch_thread  # noqa: F401 (autouse)

from llm.config import PRESETS, ModelConfig, get_preset
from llm.model import GPT


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"arch": "gpt2"}, "ModelConfig.arch='gpt2' is not one of llama, bert"),
        ({"n_layer": 0}, "ModelConfig.n_layer=0 must be a positive integer"),
        ({"vocab_size": 1.5}, "ModelConfig.vocab_size=1.5 must be a positive integer"),
        ({"n_head": 3}, "ModelConfig.n_head=3 must divide n_embd=64"),
        ({"n_kv_head": 3}, "ModelConfig.n_kv_head=3 must divide n_head=4"),
        ({"n_embd": 68, "n_head": 4, "n_kv_head": 4}, "ModelConfig.n_head=4 gives an odd head size 17; RoPE needs an even one"),
        ({"dropout": 1.0}, "ModelConfig.dropout=1.0 must be in [0, 1)"),
        ({"norm_eps": 0}, "ModelConfig.norm_eps=0 must be > 0"),
    ],
)
def test_config_rejects_bad_values_naming_the_field(changes, message):
    with pytest.raises(ValueError) as err:
        PRESETS["tiny"].replace(**changes)
    assert str(err.value) == message


def test_config_round_trips_and_rejects_unknown_keys():
    cfg = PRESETS["tiny"]
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown ModelConfig keys: n_heads"):
        ModelConfig.from_dict({**cfg.to_dict(), "n_heads": 4})
    with pytest.raises(ValueError, match="unknown model preset 'huge'"):
        get_preset("huge")
    assert get_preset("5m", vocab_size=4096).vocab_size == 4096


@pytest.mark.parametrize("name, low, high", [("tiny", 0.05e6, 1e6), ("5m", 4.5e6, 6e6), ("14m", 12e6, 16e6),
                                             ("60m", 55e6, 70e6), ("minilm", 22e6, 23e6)])
def test_presets_have_their_advertised_size(name, low, high):
    with torch.device("meta"):  # counts without allocating
        model = GPT(PRESETS[name])
    assert low <= model.num_params(non_embedding=False) <= high
    assert model.num_params() < model.num_params(non_embedding=False)


def test_flops_per_token_follows_palm_formula():
    cfg = PRESETS["tiny"]
    model = GPT(cfg)
    n = model.num_params() + cfg.vocab_size * cfg.n_embd
    assert model.flops_per_token(128) == 6 * n + 12 * cfg.n_layer * cfg.n_embd * 128


@pytest.mark.parametrize("arch", ["llama", "bert"])
def test_loss_only_at_supervised_positions_equals_full_cross_entropy(arch):
    torch.manual_seed(0)
    model = GPT(PRESETS["tiny"].replace(arch=arch, n_kv_head=4 if arch == "bert" else 2))
    idx = torch.randint(0, 512, (2, 16))
    targets = torch.randint(0, 512, (2, 16))
    targets[:, :5] = -100
    logits, none = model(idx)
    assert logits.shape == (2, 16, 512) and none is None
    no_logits, loss = model(idx, targets)
    assert no_logits is None
    expected = F.cross_entropy(logits.reshape(-1, 512), targets.reshape(-1), ignore_index=-100)
    assert torch.allclose(loss, expected, atol=1e-6)
    _, zero = model(idx, torch.full_like(targets, -100))
    assert zero.item() == 0.0 and zero.requires_grad


def test_tied_embeddings_share_storage():
    model = GPT(PRESETS["tiny"])
    assert model.lm_head.weight is model.tok_emb.weight
    untied = GPT(PRESETS["tiny"].replace(tie_embeddings=False))
    assert untied.lm_head.weight is not untied.tok_emb.weight


def test_causal_and_prefix_lm_visibility():
    torch.manual_seed(0)
    idx = torch.randint(0, 512, (1, 12))
    changed = idx.clone()
    changed[0, 3] = (idx[0, 3] + 1) % 512  # a token inside the prefix
    for prefix_lm in (False, True):
        model = GPT(PRESETS["tiny"].replace(prefix_lm=prefix_lm)).eval()
        P = torch.tensor([6])
        a, b = model.hidden_states(idx, prefix_len=P), model.hidden_states(changed, prefix_len=P)
        diff = (a - b).abs().amax(-1)[0]  # (T,)
        # positions before 3 see slot 3 only in prefix-LM mode; later positions always do
        assert (diff[:3] > 1e-6).all() == prefix_lm and (diff[:3] < 1e-7).all() != prefix_lm
        assert (diff[3:] > 1e-6).all()
    # outside the prefix attention stays causal: a change at the end moves nothing before it
    model = GPT(PRESETS["tiny"].replace(prefix_lm=True)).eval()
    late = idx.clone()
    late[0, 10] = (idx[0, 10] + 1) % 512
    diff = (model.hidden_states(idx, prefix_len=P) - model.hidden_states(late, prefix_len=P)).abs().amax(-1)[0]
    assert (diff[:10] < 1e-7).all()


@pytest.mark.parametrize("arch", ["llama", "bert"])
@pytest.mark.parametrize("prefix_lm", [False, True])
def test_kv_cache_and_left_padding_match_the_uncached_forward(arch, prefix_lm):
    torch.manual_seed(0)
    cfg = PRESETS["tiny"].replace(arch=arch, prefix_lm=prefix_lm, n_kv_head=4 if arch == "bert" else 2)
    model = GPT(cfg).eval()
    idx = torch.randint(0, 512, (2, 20))
    P = torch.tensor([5, 9])
    full, _ = model(idx, prefix_len=P)
    cache = model.new_kv_cache(2, 32)
    pieces = [model.lm_logits(model.hidden_states(idx[:, :10], prefix_len=P, kv_cache=cache))]
    for t in range(10, 20):
        h = model.hidden_states(idx[:, t:t + 1], prefix_len=P, kv_cache=cache, start_pos=t)
        pieces.append(model.lm_logits(h))
    assert torch.allclose(torch.cat(pieces, 1), full, atol=1e-5)
    # row 0 left-padded by 3 slots computes exactly what it computes alone
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), idx[:1]], 1)
    h = model.hidden_states(padded, prefix_len=P[:1] + 3, pad_len=torch.tensor([3]))
    assert torch.allclose(model.lm_logits(h)[:, 3:], full[:1], atol=1e-5)


def test_too_long_input_is_a_clear_error():
    model = GPT(PRESETS["tiny"])
    with pytest.raises(ValueError, match="longer than the model's max_seq_len=256"):
        model(torch.zeros(1, 257, dtype=torch.long))
