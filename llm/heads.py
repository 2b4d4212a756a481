"""Heads on the decoder: a scalar reward head and a classification head, both reading the hidden state
of the last non-pad token (the only position that has seen the whole input in a causal model).

A head checkpoint is a normal model checkpoint (llm.checkpoint.save_pretrained) plus head.safetensors
and head.json ({"kind": "reward" | "classify", "labels": [...]}), so the backbone loads on its own.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn

HEAD_WEIGHTS = "head.safetensors"
HEAD_META = "head.json"
KINDS = ("reward", "classify")


class HeadModel(nn.Module):
    def __init__(self, model, kind: str, labels: list[str] | None = None):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"head kind {kind!r} is not one of {', '.join(KINDS)}")
        if kind == "classify" and not labels:
            raise ValueError("a classification head needs its labels")
        self.model, self.kind = model, kind
        self.labels = list(labels) if labels else None
        n_out = 1 if kind == "reward" else len(self.labels)
        self.head = nn.Linear(model.config.n_embd, n_out)
        nn.init.normal_(self.head.weight, std=model.config.n_embd ** -0.5 * 0.1)
        nn.init.zeros_(self.head.bias)

    @property
    def config(self):
        return self.model.config

    def forward(self, idx, lengths, prefix_len=None):
        """idx (B, T) right-padded, lengths (B,) -> (B, n_out) float32; (B,) for a reward head."""
        if self.model.config.prefix_lm:
            # a prefix-LM reads its whole input bidirectionally, like the encoder it may come from
            prefix_len = lengths if prefix_len is None else prefix_len
        else:
            prefix_len = None
        h = self.model.hidden_states(idx, prefix_len=prefix_len)  # (B, T, C)
        pooled = h[torch.arange(idx.shape[0], device=idx.device), lengths.to(idx.device) - 1]  # (B, C)
        out = self.head(pooled).float()
        return out[:, 0] if self.kind == "reward" else out

    def save(self, out_dir, tokenizer) -> None:
        from safetensors.torch import save_file

        from llm.checkpoint import save_pretrained

        out_dir = Path(out_dir)
        save_pretrained(self.model, tokenizer, out_dir)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()},
                  str(out_dir / HEAD_WEIGHTS))
        (out_dir / HEAD_META).write_text(json.dumps({"kind": self.kind, "labels": self.labels}, indent=1) + "\n")


def has_head(path) -> bool:
    return (Path(path) / HEAD_META).exists()


def head_kind(path) -> str | None:
    meta = Path(path) / HEAD_META
    return json.loads(meta.read_text())["kind"] if meta.exists() else None


def load_head_model(path, device="cpu", kind: str | None = None):
    """(HeadModel, tokenizer) from a head checkpoint; strict about the head's weights."""
    from safetensors.torch import load_file

    from llm.checkpoint import load_pretrained

    path = Path(path)
    if not (path / HEAD_META).exists():
        raise FileNotFoundError(f"{path}: no {HEAD_META}; this is not a reward/classifier checkpoint "
                                f"(make one with `llm reward` or `llm classify`)")
    meta = json.loads((path / HEAD_META).read_text())
    if kind is not None and meta["kind"] != kind:
        raise ValueError(f"{path} holds a {meta['kind']} head, not a {kind} head")
    model, tokenizer = load_pretrained(path, device=device)
    hm = HeadModel(model, meta["kind"], meta.get("labels"))
    state = load_file(str(path / HEAD_WEIGHTS))
    missing, unexpected = hm.head.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path / HEAD_WEIGHTS}: missing {list(missing)}, unexpected {list(unexpected)}")
    return hm.to(device), tokenizer
