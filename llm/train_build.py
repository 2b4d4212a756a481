"""Building a run: model (from scratch, --init, or a checkpoint being resumed; LoRA), objective,
reference and reward models, token shards for pretraining, and the DDP/FSDP wrapper.
Functions of the Trainer `t` (llm/train.py), split out to keep the loop readable."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn


def build(t, resume: Path | None) -> None:
    from llm.checkpoint import load_pretrained
    from llm.config import get_preset
    from llm.lora import apply_lora, load_lora
    from llm.model import GPT
    from llm.tokenizer import load_tokenizer

    cfg = t.cfg
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    random.seed(cfg.seed)
    needs_init = cfg.objective in ("dpo", "rl")
    if needs_init and not cfg.init:
        raise ValueError(f"--init is required for {cfg.objective}: the checkpoint the policy starts from and "
                         f"the frozen reference stays at (usually the SFT model)")
    if cfg.lora and not cfg.init:
        raise ValueError("--lora needs --init: adapters are trained on top of a checkpoint")
    if cfg.init and cfg.model_overrides:
        raise ValueError("model overrides (--set model.KEY=...) apply to models trained from scratch, not to --init")
    if resume is not None and not cfg.lora:
        model, tokenizer = load_pretrained(resume)
    elif cfg.init:
        model, tokenizer = load_pretrained(cfg.init)
    else:
        if not cfg.tokenizer:
            raise ValueError("--tokenizer is required to train from scratch (make one with `llm tokenizer`), "
                             "or start from a checkpoint with --init")
        tokenizer = load_tokenizer(cfg.tokenizer)
        overrides = dict(cfg.model_overrides)
        preset = get_preset(cfg.model)
        overrides.setdefault("max_seq_len", max(preset.max_seq_len, cfg.seq_len))
        model = GPT(get_preset(cfg.model, vocab_size=len(tokenizer), **overrides))
    if tokenizer is None:
        raise ValueError(f"{resume or cfg.init}: checkpoint has no tokenizer files")
    if len(tokenizer) > model.config.vocab_size:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens but the model only {model.config.vocab_size}")
    need = cfg.seq_len + (1 if cfg.objective in ("reward", "classify") else 0)
    if need > model.config.max_seq_len:
        raise ValueError(f"--seq-len {cfg.seq_len} exceeds the model's max_seq_len {model.config.max_seq_len}")
    if cfg.lora:
        if resume is not None:
            load_lora(model, resume)
        else:
            apply_lora(model, rank=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout)
    model.to(t.device).train()
    t.model, t.tokenizer = model, tokenizer
    t.head_model = None
    t.objective = make_objective(t, resume)
    t.module = t.objective.module.to(t.device)

def make_objective(t, resume):
    from llm import objectives as O

    cfg, args = t.cfg, (t.cfg, t.model, t.tokenizer, t.rank, t.world)
    if cfg.objective == "pretrain":
        return O.PretrainObjective(*args, data_dir=pretrain_data(t))
    if cfg.objective == "sft":
        return O.SFTObjective(*args)
    if cfg.objective == "dpo":
        return O.DPOObjective(*args, reference=reference(t))
    if cfg.objective == "rl":
        from llm.data import tokenizer_fingerprint
        from llm.heads import load_head_model
        from llm.rl import RLObjective

        reward, rtok = load_head_model(cfg.reward_model, device=t.device, kind="reward")
        if tokenizer_fingerprint(rtok) != tokenizer_fingerprint(t.tokenizer):
            raise ValueError(f"--reward-model {cfg.reward_model} uses another tokenizer than the policy; "
                             f"train the reward model from the same base checkpoint")
        return RLObjective(*args, reference=reference(t), reward_model=reward)
    from llm.heads import HeadModel, head_kind

    src = resume if resume is not None else (cfg.init or None)
    kind = head_kind(src) if src else None
    if cfg.objective == "reward":
        t.head_model = HeadModel(t.model, "reward")
        obj = O.RewardObjective(*args, head_model=t.head_model)
    else:
        labels = None
        if kind == "classify":
            labels = json.loads((Path(src) / "head.json").read_text())["labels"]
        obj = O.ClassifyObjective(*args, labels_from_init=labels)
        t.head_model = obj.head_model
    if kind == cfg.objective:
        from safetensors.torch import load_file

        t.head_model.head.load_state_dict(load_file(str(Path(src) / "head.safetensors")))
    # a head reads hidden states only: the LM head's own parameters (a bias, or an untied matrix) get no
    # gradient, and DDP refuses parameters that take part in no backward
    lm_head = t.model.lm_head
    if lm_head.bias is not None:
        lm_head.bias.requires_grad_(False)
    if not t.model.config.tie_embeddings:
        lm_head.weight.requires_grad_(False)
    t.head_model.to(t.device)
    return obj


def reference(t):
    from llm.checkpoint import load_pretrained

    ref, _ = load_pretrained(t.cfg.init, device=t.device)
    return ref

def pretrain_data(t) -> Path:
    from llm.data import MANIFEST, prepare_shards

    cfg = t.cfg
    p = Path(cfg.data)
    if p.is_dir():
        if not (p / MANIFEST).exists():
            raise FileNotFoundError(f"{p}: a folder without {MANIFEST}; give token shards from `llm prepare` "
                                    "or text/JSONL files")
        return p
    files = [Path(f.strip()) for f in cfg.data.split(",") if f.strip()]
    for f in files:
        if not f.exists():
            raise FileNotFoundError(f"--data {f}: no such file or folder")
    shards = t.out_dir / "tokens"
    if t.is_main:
        prepare_shards(files, t.tokenizer, shards, field=cfg.field, shard_tokens=cfg.shard_tokens,
                       progress=cfg.progress)
    t.barrier()
    return shards

def wrap(t) -> nn.Module:
    cfg = t.cfg
    if cfg.compile:
        t.model.compile()
    if not t.distributed:
        return t.module
    if cfg.fsdp:
        if cfg.objective == "rl":
            raise ValueError("--fsdp is not supported for rl (rollouts run the unsharded policy); use DDP")
        from torch.distributed.fsdp import fully_shard

        for block in t.model.blocks:
            fully_shard(block)
        fully_shard(t.module)
        return t.module
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [t.device.index] if t.device.type == "cuda" else None
    return DDP(t.module, device_ids=ids)
