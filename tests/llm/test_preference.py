"""Preference tuning on a tiny synthetic preference a small model learns in seconds: answers that end
with 'yes' are preferred to the same answers ending with 'no'."""

import math

import pytest
from _train_fixtures import (
    config,
    losses,
    metrics,
    preference_rows,
    save_tiny_model,
    tokenizer,
    write_jsonl,
)

from llm.train import train


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pref")
    tok = tokenizer(tmp)
    base = save_tiny_model(tmp, tok)
    data = write_jsonl(tmp / "pref.jsonl", preference_rows(120))
    return tmp, tok, base, data


def test_dpo_starts_at_ln2_and_falls(env, tmp_path):
    _, _, base, data = env
    s = train(config("dpo", tmp_path, init=str(base), data=str(data), max_steps=30, batch_size=8, lr=3e-3,
                     dpo_beta=0.5, val_fraction=0.2))
    rows = metrics(tmp_path / "run")
    # policy == reference at the first step: every implicit reward is 0 and the loss is exactly ln 2
    assert rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert rows[0]["margin"] == pytest.approx(0.0, abs=1e-5)
    assert max(r["loss"] for r in rows[-5:]) < 0.3
    assert rows[-1]["chosen_reward"] > rows[-1]["rejected_reward"]
    assert s["val"]["acc"] >= 0.95 and s["val"]["loss"] < 0.3


def test_reward_model_then_rl_raises_the_mean_reward(env, tmp_path):
    tmp, tok, base, data = env
    s = train(config("reward", tmp_path / "rm", init=str(base), data=str(data), max_steps=30, batch_size=8, lr=3e-3,
                     val_fraction=0.2, eval_every=10))
    val = metrics(tmp_path / "rm" / "run", "val")
    assert val[-1]["acc"] >= 0.95 and s["val"]["acc"] >= 0.95
    assert losses(tmp_path / "rm" / "run")[0] == pytest.approx(math.log(2), abs=0.05)
    rm = tmp_path / "rm" / "run" / "final"
    assert (rm / "head.safetensors").is_file()

    from llm.evaluate import evaluate_checkpoint

    assert evaluate_checkpoint(rm, data, seq_len=32)["acc"] >= 0.95

    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": r["prompt"]} for r in preference_rows(40, seed=3)])
    s = train(config("rl", tmp_path / "rl", init=str(base), reward_model=str(rm), data=str(prompts), max_steps=25,
                     batch_size=4, lr=1e-2, rl_group_size=4, rl_max_new_tokens=6, seq_len=32, eval_every=25,
                     rl_kl_coef=0.01, val_fraction=0.25))
    rows = metrics(tmp_path / "rl" / "run")
    first, last = sum(r["reward"] for r in rows[:5]) / 5, sum(r["reward"] for r in rows[-5:]) / 5
    assert last > first + 1.0, (first, last)
    assert all(r["kl"] >= 0 for r in rows) and rows[0]["kl"] == pytest.approx(0.0, abs=1e-4)
