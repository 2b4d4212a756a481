"""A run's state on disk: checkpoints (model via llm.checkpoint, optimizer, scheduler, RNG of every rank,
step), the `latest` pointer, resume with a check that nothing deciding the batches changed, and the
loss-curve PNG. Functions of the Trainer `t` (llm/train.py).

Checkpoints are written to NAME.tmp/ and renamed when complete, then `latest` is rewritten atomically,
so a kill at any moment leaves the previous checkpoint usable."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

# keys that decide which batches a step sees or what the weights are: a resume must not change them
RESUME_LOCKED = ("objective", "data", "val_data", "val_fraction", "field", "seq_len", "seed", "model",
                 "model_overrides", "init", "tokenizer", "lora", "lora_r", "lora_alpha", "reward_model",
                 "rl_group_size", "rl_max_new_tokens")


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def fingerprint(module: nn.Module) -> str:
    h = hashlib.sha256()
    for name, p in sorted(module.state_dict().items()):
        if hasattr(p, "full_tensor"):  # FSDP shard: every rank gathers the whole tensor (collective)
            p = p.full_tensor()
        h.update(name.encode())
        h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def find_checkpoint(out_dir: Path) -> Path | None:
    latest = out_dir / "latest"
    if latest.exists():
        p = out_dir / latest.read_text().strip()
        if (p / "trainer.pt").exists():
            return p
    steps = sorted(p for p in out_dir.glob("step-[0-9]*") if p.is_dir() and (p / "trainer.pt").exists())
    return steps[-1] if steps else None


def atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def plot_curve(metrics: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not metrics.exists():  # a checkpoint before the first metrics line (save_every < log_every)
        return
    train, val = [], []
    for line in metrics.read_text().splitlines():
        row = json.loads(line)
        if "loss" in row:
            (val if row.get("split") == "val" else train).append((row["step"], row["loss"]))
    if not train:
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(*zip(*train), label="train", lw=1)
    if val:
        ax.plot(*zip(*val), "o-", label="held-out", ms=3)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = png.with_name(png.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, png)


def _optimizer_state(t):
    """(model-side state is saved from t.model/head directly) optimizer state dict, on every rank."""
    if t.distributed and t.cfg.fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return get_optimizer_state_dict(t.module, t.optimizer,
                                        options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return t.optimizer.state_dict()

def save_checkpoint(t, step: int, name: str | None = None) -> Path:
    from llm.checkpoint import save_pretrained
    from llm.lora import save_lora

    cfg = t.cfg
    name = name or f"step-{step:06d}"
    final, tmp = t.out_dir / name, t.out_dir / (name + ".tmp")
    if t.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    t.barrier()
    optim_state = _optimizer_state(t)
    model_state = None
    if t.distributed and cfg.fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        model_state = get_model_state_dict(t.module, options=StateDictOptions(full_state_dict=True,
                                                                                 cpu_offload=True))
    if t.is_main:
        target = t.model
        if model_state is not None:  # FSDP: a plain copy holding the gathered weights
            target = _plain_copy(t, model_state)
        if t.head_model is not None:
            from safetensors.torch import save_file

            from llm.heads import HEAD_META, HEAD_WEIGHTS

            save_pretrained(target, t.tokenizer, tmp)
            head = {k: v.detach().cpu().contiguous() for k, v in t.head_model.head.state_dict().items()}
            save_file(head, str(tmp / HEAD_WEIGHTS))
            (tmp / HEAD_META).write_text(json.dumps({"kind": t.head_model.kind,
                                                      "labels": t.head_model.labels}, indent=1) + "\n")
        else:
            save_pretrained(target, t.tokenizer, tmp)
        if cfg.lora:
            save_lora(t.model, tmp)
        torch.save({"step": step, "optimizer": optim_state, "scheduler": t.scheduler.state_dict(),
                    "config": cfg.to_dict(), "global_batch": t.global_batch, "world": t.world,
                    "tokens": t.tokens_seen, "train_seconds": t.train_seconds}, tmp / "trainer.pt")
    torch.save(rng_state(), tmp / f"rng-rank{t.rank}.pt")
    t.barrier()
    if t.is_main:
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        atomic_text(t.out_dir / "latest", name + "\n")
        steps = sorted(p for p in t.out_dir.glob("step-[0-9]*") if p.is_dir() and not p.name.endswith(".tmp"))
        for old in steps[:-cfg.keep_checkpoints] if cfg.keep_checkpoints else steps:
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
    t.barrier()
    return final

def _plain_copy(t, state: dict):
    """FSDP: an unsharded model holding the gathered weights (its parameters are DTensors)."""
    from llm.checkpoint import load_state_strict
    from llm.model import GPT

    plain = GPT(t.model.config)
    prefix = "head_model.model." if t.head_model is not None else "model."
    own = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if t.model.config.tie_embeddings:
        own.pop("lm_head.weight", None)
    load_state_strict(plain, own, "FSDP state")
    if t.model.config.tie_embeddings:
        plain.lm_head.weight = plain.tok_emb.weight
    return plain

def resume_checkpoint(t, path: Path) -> int:
    cfg = t.cfg
    state = torch.load(path / "trainer.pt", map_location="cpu", weights_only=False)
    old = state["config"]
    changed = [f"{k} ({old.get(k)!r} -> {getattr(cfg, k)!r})" for k in RESUME_LOCKED if old.get(k) != getattr(cfg, k)]
    if state["global_batch"] != t.global_batch:
        changed.append(f"global batch ({state['global_batch']} -> {t.global_batch})")
    if old.get("grad_accum") != cfg.grad_accum and state["global_batch"] == t.global_batch:
        changed.append(f"grad_accum ({old.get('grad_accum')} -> {cfg.grad_accum})")
    if changed:
        raise ValueError(f"{t.out_dir} holds a run with other settings; cannot resume it with: "
                         f"{'; '.join(changed)}. Use the original settings or another --out-dir")
    if t.distributed and cfg.fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(t.module, t.optimizer, state["optimizer"],
                                 options=StateDictOptions(full_state_dict=True))
    else:
        t.optimizer.load_state_dict(state["optimizer"])
    t.scheduler.load_state_dict(state["scheduler"])
    t.tokens_seen, t.train_seconds = state.get("tokens", 0), state.get("train_seconds", 0.0)
    rng_file = path / f"rng-rank{t.rank}.pt"
    if rng_file.exists():  # a different process count resumes each rank from rank 0's stream
        set_rng_state(torch.load(rng_file, map_location="cpu", weights_only=False))
    else:
        set_rng_state(torch.load(path / "rng-rank0.pt", map_location="cpu", weights_only=False))
    return int(state["step"])
