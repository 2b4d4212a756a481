"""Shared by the llm-train tests: a tiny synthetic corpus, a tokenizer trained on it, tiny configs.

Everything is small enough that a training run takes a second or two on one CPU thread.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORDS = ("the cat sat on a mat while dog ran far into woods and sun shone over hills apple pear plum "
         "car bus train red blue green yes no say word copy answer").split()
FRUIT = ["apple", "pear", "plum"]
VEHICLE = ["car", "bus", "train"]


def write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
    return path


def corpus(tmp: Path, n_docs: int = 300, seed: int = 0) -> Path:
    """Documents with some structure (repeated bigrams) so a tiny model's loss falls fast."""
    rng = random.Random(seed)
    rows = []
    for i in range(n_docs):
        words = []
        for _ in range(40):
            w = rng.choice(WORDS)
            words += [w, WORDS[(WORDS.index(w) + 1) % len(WORDS)]]
        rows.append({"id": i, "text": " ".join(words)})
    return write_jsonl(tmp / "corpus.jsonl", rows)


def tokenizer(tmp: Path):
    from llm.tokenizer import train_tokenizer

    src = corpus(tmp / "tokcorpus", n_docs=200, seed=1)
    return train_tokenizer([src], vocab_size=320, out_dir=tmp / "tok", progress=False)


def tiny_flags(tmp: Path, **kw) -> dict:
    flags = dict(out_dir=str(tmp / "run"), seq_len=32, batch_size=4, max_steps=10, warmup_steps=2, lr=3e-3,
                 eval_every=0, eval_batches=2, save_every=0, log_every=1, progress=False, plot=False, threads=1,
                 model="tiny")
    flags.update(kw)
    return flags


def config(objective: str, tmp: Path, sets=None, **kw):
    from llm.recipe import build_config

    return build_config(objective, flags=tiny_flags(tmp, **kw), sets=sets or []).validate()


def losses(run_dir: Path, split: str = "train", key: str = "loss") -> list[float]:
    rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return [r[key] for r in rows if r.get("split") == split]


def metrics(run_dir: Path, split: str = "train") -> list[dict]:
    rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("split") == split]


def save_tiny_model(tmp: Path, tok, name: str = "base", seed: int = 0, **changes) -> Path:
    """A randomly initialised tiny checkpoint (the --init of fine-tuning tests)."""
    import torch

    from llm.checkpoint import save_pretrained
    from llm.config import PRESETS
    from llm.model import GPT

    torch.manual_seed(seed)
    model = GPT(PRESETS["tiny"].replace(vocab_size=len(tok), **changes))
    return save_pretrained(model, tok, tmp / name)


def preference_rows(n: int, seed: int = 0) -> list[dict]:
    """Prefer answers that repeat the prompt's word and end with 'yes' over ones that end with 'no'."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        w = rng.choice(WORDS[:20])
        rows.append({"prompt": f"say {w}", "chosen": f"{w} yes", "rejected": f"{w} no"})
    return rows


def subprocess_env() -> dict:
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["HF_HUB_OFFLINE"] = "1"
    env["TOKENIZERS_PARALLELISM"] = "false"
    env["OMP_NUM_THREADS"] = "1"
    env.pop("LLM_TRAIN_SIGNAL_AT", None)
    return env


PYTHON = sys.executable
