import json
import math

import pytest
import torch
from _train_fixtures import (
    config,
    corpus,
    losses,
    metrics,
    save_tiny_model,
    tokenizer,
    write_jsonl,
)

from llm.train import lr_factor, param_groups, train


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    tok = tokenizer(tmp)
    return tmp, tok, corpus(tmp, n_docs=300)


def test_pretrain_end_to_end_writes_a_loadable_checkpoint_and_learns(tmp_path, env):
    tmp, tok, src = env
    cfg = config("pretrain", tmp_path, data=str(src), tokenizer=str(tmp / "tok"), max_steps=40,
                 eval_every=20, save_every=20, plot=True, keep_checkpoints=1)
    s = train(cfg)
    run = tmp_path / "run"
    train_losses = losses(run)
    assert len(train_losses) == 40 and train_losses[-1] < train_losses[0] - 1.0
    val = metrics(run, "val")
    assert [r["step"] for r in val] == [20, 40] and val[-1]["loss"] < val[0]["loss"]
    assert val[-1]["ppl"] == pytest.approx(math.exp(val[-1]["loss"]))
    assert s["val"]["loss"] == val[-1]["loss"] and not s["interrupted"] and s["step"] == 40
    assert (run / "latest").read_text().strip() == "final"
    assert sorted(p.name for p in run.glob("step-*")) == ["step-000020"]
    for f in ("config.json", "model.safetensors", "tokenizer.json", "trainer.pt", "rng-rank0.pt"):
        assert (run / "final" / f).is_file()
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (run / "tokens" / "manifest.json").is_file()  # text files were tokenized into shards first
    row = metrics(run)[-1]
    assert row["tokens"] == 40 * 4 * 32 and row["tokens_per_s"] > 0 and 0 < row["lr"] < 3e-3

    from llm.checkpoint import load_pretrained
    from llm.generate import generate

    model, t2 = load_pretrained(run / "final")
    assert isinstance(generate(model, t2, "the cat", max_new_tokens=5), str)
    # a finished run is not retrained by a rerun
    assert train(cfg)["step"] == 40 and len(losses(run)) == 40


def test_grad_accumulation_matches_a_bigger_batch(tmp_path, env):
    tmp, tok, src = env
    common = dict(data=str(src), tokenizer=str(tmp / "tok"), max_steps=4)
    train(config("pretrain", tmp_path / "a", batch_size=4, grad_accum=1, **common))
    train(config("pretrain", tmp_path / "b", batch_size=2, grad_accum=2, **common))
    a, b = losses(tmp_path / "a" / "run"), losses(tmp_path / "b" / "run")
    assert a == pytest.approx(b, abs=1e-5)


def test_lr_schedule_warmup_then_cosine(tmp_path):
    cfg = config("pretrain", tmp_path, data="x", max_steps=110, warmup_steps=10, min_lr_ratio=0.1)
    f = [lr_factor(s, cfg) for s in range(110)]
    assert f[0] == pytest.approx(1 / 11) and f[9] == pytest.approx(10 / 11)
    assert f[10] == pytest.approx(1.0) and f[60] == pytest.approx(0.55) and f[-1] > 0.1
    assert all(x >= y for x, y in zip(f[10:], f[11:]))


def test_no_weight_decay_on_norms_biases_embeddings():
    from llm.config import PRESETS
    from llm.model import GPT

    for arch in ("llama", "bert"):
        model = GPT(PRESETS["tiny"].replace(arch=arch, n_kv_head=4 if arch == "bert" else 2))
        decay, no_decay = param_groups(model, 0.1)
        assert no_decay["weight_decay"] == 0.0
        names = {id(p): n for n, p in model.named_parameters()}
        nd = {names[id(p)] for p in no_decay["params"]}
        assert "tok_emb.weight" in nd and all(p.ndim == 2 for p in decay["params"])
        assert all(("norm" in n or n.endswith("bias") or "emb" in n) for n in nd)
        assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_sft_trains_only_answers_and_lora_keeps_base_weights(tmp_path, env):
    tmp, tok, _ = env
    base = save_tiny_model(tmp_path, tok)
    rows = [{"messages": [{"role": "user", "content": f"say {w}"}, {"role": "assistant", "content": f"{w} yes"}]}
            for w in ["cat", "dog", "sun", "mat", "hills", "woods"] * 5]
    data = write_jsonl(tmp_path / "sft.jsonl", rows)
    s = train(config("sft", tmp_path / "full", init=str(base), data=str(data), max_steps=25, lr=1e-2,
                     eval_every=0))
    full = losses(tmp_path / "full" / "run")
    assert full[-1] < full[0] / 3 and s["val"]["loss"] < full[0] / 3

    train(config("sft", tmp_path / "lora", init=str(base), data=str(data), max_steps=10, lr=1e-2, lora=True,
                 lora_r=4))
    run = tmp_path / "lora" / "run" / "final"
    assert (run / "adapter_model.safetensors").is_file() and (run / "adapter_config.json").is_file()
    from safetensors.torch import load_file

    before, after = load_file(str(base / "model.safetensors")), load_file(str(run / "model.safetensors"))
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    # merged adapters change exactly the wrapped projections; embeddings and norms stay the base's
    assert changed and all(k.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight",
                                       "gate_proj.weight", "up_proj.weight", "down_proj.weight")) for k in changed)
    assert len(losses(tmp_path / "lora" / "run")) == 10


def test_refuses_to_overwrite_or_resume_with_other_settings(tmp_path, env):
    tmp, tok, src = env
    common = dict(data=str(src), tokenizer=str(tmp / "tok"), max_steps=3, save_every=1)
    train(config("pretrain", tmp_path, **common))
    with pytest.raises(ValueError, match="already holds a run \\(latest checkpoint final\\); resume it"):
        train(config("pretrain", tmp_path, resume=False, **common))
    with pytest.raises(ValueError, match=r"cannot resume it with: seq_len \(32 -> 16\)"):
        train(config("pretrain", tmp_path, seq_len=16, **{**common, "max_steps": 5}))


@pytest.mark.parametrize("kw,msg", [
    (dict(dtype="bf16"), "--dtype bf16 needs CUDA: bf16 on this CPU is emulated"),
    (dict(objective_init=True), "--init is required for dpo"),
    (dict(seq_len=1000), "--seq-len 1000 exceeds the model's max_seq_len 256"),
])
def test_clear_errors(tmp_path, env, kw, msg):
    tmp, tok, src = env
    if kw.pop("objective_init", False):
        cfg = config("dpo", tmp_path, data=str(src))
    else:
        base = save_tiny_model(tmp_path, tok)
        cfg = config("sft", tmp_path, data=str(src), init=str(base), **kw)
    with pytest.raises(ValueError, match=msg):
        train(cfg)


def test_summary_and_metrics_are_json(tmp_path, env):
    tmp, tok, src = env
    train(config("pretrain", tmp_path, data=str(src), tokenizer=str(tmp / "tok"), max_steps=2, log_every=2))
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["step"] == 2 and s["world_size"] == 1 and len(s["rank_fingerprints"]) == 1
    assert [r["step"] for r in metrics(tmp_path / "run")] == [2]
