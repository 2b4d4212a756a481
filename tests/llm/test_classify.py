"""Classification head on the decoder: a tiny separable task (fruit words vs vehicle words)."""

import random

import pytest
from _train_fixtures import (
    FRUIT,
    VEHICLE,
    WORDS,
    config,
    metrics,
    save_tiny_model,
    tokenizer,
    write_jsonl,
)

from llm.train import train


def _rows(n, seed):
    rng = random.Random(seed)
    filler = [w for w in WORDS if w not in FRUIT + VEHICLE]
    rows = []
    for _ in range(n):
        label = rng.choice(["fruit", "vehicle"])
        words = [rng.choice(filler) for _ in range(8)]
        words.insert(rng.randrange(9), rng.choice(FRUIT if label == "fruit" else VEHICLE))
        rows.append({"text": " ".join(words), "label": label})
    return rows


@pytest.mark.parametrize("arch", ["llama", "bert"])
def test_classifier_learns_a_separable_task_and_reports_held_out_accuracy(tmp_path, arch):
    tok = tokenizer(tmp_path)
    extra = dict(arch="bert", n_kv_head=4, prefix_lm=True) if arch == "bert" else {}
    base = save_tiny_model(tmp_path, tok, **extra)
    train_file = write_jsonl(tmp_path / "train.jsonl", _rows(160, 0))
    val_file = write_jsonl(tmp_path / "val.jsonl", _rows(48, 1))
    s = train(config("classify", tmp_path, init=str(base), data=str(train_file), val_data=str(val_file),
                     max_steps=40, batch_size=16, lr=3e-3, eval_every=20, eval_batches=3))
    val = metrics(tmp_path / "run", "val")
    assert [r["step"] for r in val] == [20, 40]
    assert s["val"]["acc"] >= 0.9  # chance is ~0.5
    final = tmp_path / "run" / "final"
    import json

    assert json.loads((final / "head.json").read_text()) == {"kind": "classify", "labels": ["fruit", "vehicle"]}

    from llm.evaluate import evaluate_checkpoint
    from llm.heads import load_head_model

    r = evaluate_checkpoint(final, val_file, seq_len=32, batch_size=16)
    assert r["kind"] == "classify" and r["acc"] == pytest.approx(s["val"]["acc"]) and r["examples"] == 48
    hm, _ = load_head_model(final)
    assert hm.labels == ["fruit", "vehicle"]


def test_unknown_label_in_held_out_file_is_an_error(tmp_path):
    tok = tokenizer(tmp_path)
    base = save_tiny_model(tmp_path, tok)
    tr = write_jsonl(tmp_path / "train.jsonl", [{"text": "apple", "label": "fruit"}, {"text": "car", "label": "vehicle"}])
    va = write_jsonl(tmp_path / "val.jsonl", [{"text": "red", "label": "colour"}])
    with pytest.raises(ValueError, match=r"val.jsonl: labels \['colour'\] were not in the training labels"):
        train(config("classify", tmp_path, init=str(base), data=str(tr), val_data=str(va)))
