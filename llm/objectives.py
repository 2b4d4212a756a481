"""Objectives for the one training loop: what a micro-batch is, what its loss is, how to evaluate.

Each objective owns `module`, the nn.Module the loop trains (and wraps in DDP/FSDP). Its forward takes a
batch and returns sums, never means: {"loss_sum", "count", "n", <metric sums>}. The loop divides the
loss by the global count (all micro-batches of all processes), so a step's loss is the exact
token- (or pair-) mean whatever the split into processes and micro-batches; metrics are divided by "n".

Batches are pure functions of (seed, step, micro, rank): the data position on resume is just the step.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from llm.data import ClassificationData, EpochSampler, PackedWindows, PreferenceData, SFTData, split_indices


def token_logps(model, idx, targets, prefix_len=None):
    """Log-probabilities of the target tokens: ((B,) sum per row, (N,) per supervised token), computing
    the LM head only at supervised positions."""
    h = model.hidden_states(idx, prefix_len=prefix_len if model.config.prefix_lm else None)  # (B, T, C)
    keep = targets != -100
    logits = model.lm_logits(h[keep]).float()  # (N, V)
    lp = -F.cross_entropy(logits, targets[keep], reduction="none")  # (N,)
    rows = keep.nonzero()[:, 0]
    return torch.zeros(idx.shape[0], device=idx.device, dtype=lp.dtype).index_add(0, rows, lp), lp


class _Frozen:
    """Holds a module without registering it, so DDP/FSDP and the optimizer never see it."""

    def __init__(self, module: nn.Module):
        self.module = module.eval().requires_grad_(False)


# --------------------------------------------------------------------------- modules
class LMLoss(nn.Module):
    """Next-token cross-entropy (pretrain, sft)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, idx, targets, prefix_len=None):
        n = (targets != -100).sum()
        _, loss = self.model(idx, targets, prefix_len=prefix_len if self.model.config.prefix_lm else None)
        return {"loss_sum": loss * n, "count": n, "n": n}


class DPOLoss(nn.Module):
    """Direct preference optimization (Rafailov et al. 2023) against a frozen reference.
    At step 0 policy == reference, so the loss is exactly ln 2; it falls as the margin grows."""

    def __init__(self, model, reference, beta: float):
        super().__init__()
        self.model, self.beta = model, beta
        self._ref = _Frozen(reference)

    def forward(self, idx, targets, prefix_len=None):
        B = idx.shape[0] // 2  # chosen rows first, then rejected
        pol, _ = token_logps(self.model, idx, targets, prefix_len)
        with torch.no_grad():
            ref, _ = token_logps(self._ref.module, idx, targets, prefix_len)
        chosen, rejected = self.beta * (pol[:B] - ref[:B]), self.beta * (pol[B:] - ref[B:])  # implicit rewards
        logits = chosen - rejected
        loss = -F.logsigmoid(logits)
        n = torch.tensor(B, device=idx.device)
        return {"loss_sum": loss.sum(), "count": n, "n": n, "acc": (logits > 0).float().sum().detach(),
                "margin": logits.sum().detach(), "chosen_reward": chosen.sum().detach(),
                "rejected_reward": rejected.sum().detach()}


class RewardLoss(nn.Module):
    """Bradley-Terry pairwise loss on a scalar head: -log sigmoid(r_chosen - r_rejected)."""

    def __init__(self, head_model):
        super().__init__()
        self.head_model = head_model

    def forward(self, idx, lengths):
        B = idx.shape[0] // 2
        r = self.head_model(idx, lengths)  # (2B,)
        diff = r[:B] - r[B:]
        n = torch.tensor(B, device=idx.device)
        return {"loss_sum": -F.logsigmoid(diff).sum(), "count": n, "n": n,
                "acc": (diff > 0).float().sum().detach(), "margin": diff.sum().detach()}


class ClassifyLoss(nn.Module):
    def __init__(self, head_model):
        super().__init__()
        self.head_model = head_model

    def forward(self, idx, lengths, labels):
        logits = self.head_model(idx, lengths)  # (B, n_labels)
        n = torch.tensor(idx.shape[0], device=idx.device)
        return {"loss_sum": F.cross_entropy(logits, labels, reduction="sum"), "count": n, "n": n,
                "acc": (logits.argmax(-1) == labels).float().sum().detach()}


# --------------------------------------------------------------------------- objectives
class Objective:
    name = "objective"
    module: nn.Module
    train_data = None
    val_data = None
    val_index: list[int] | None = None

    def __init__(self, cfg, model, tokenizer, rank: int, world: int):
        self.cfg, self.model, self.tokenizer, self.rank, self.world = cfg, model, tokenizer, rank, world

    # sample indices of this rank's micro-batch: a step covers global samples
    # [step*G, (step+1)*G), G = batch_size*grad_accum*world, whatever the split
    def sample_range(self, step: int, micro: int) -> tuple[int, int]:
        bs = self.cfg.batch_size
        return ((step * self.cfg.grad_accum + micro) * self.world + self.rank) * bs, bs

    def micro_batch(self, step: int, micro: int) -> dict:
        start, count = self.sample_range(step, micro)
        return self.train_data.batch([self.train_index[i] for i in self.sampler(start, count)])

    def count(self, batch) -> int:
        raise NotImplementedError

    def tokens(self, batch) -> int:
        """Tokens processed (for tokens/s): non-pad input positions."""
        return int(batch["idx"].numel())

    def eval_chunks(self, shard: bool) -> list[list[int]]:
        """Fixed held-out micro-batches (the same at every evaluation): eval_batches global batches.
        shard: this rank's share (DDP); the union over ranks is what one process with the same global
        batch evaluates."""
        if self.val_data is None or not self.val_index:
            return []
        bs = self.cfg.batch_size
        idx = list(self.val_index[: bs * self.world * self.cfg.eval_batches])
        chunks = [idx[i:i + bs] for i in range(0, len(idx), bs)]
        return chunks[self.rank::self.world] if shard else chunks

    def eval_batches(self, shard: bool = False):
        return [self.val_data.batch(c) for c in self.eval_chunks(shard)]

    def summarize_eval(self, sums: dict) -> dict:
        out = {"loss": sums["loss_sum"] / max(sums["count"], 1)}
        for k, v in sums.items():
            if k not in ("loss_sum", "count", "n"):
                out[k] = v / max(sums["n"], 1)
        return out

    def _split(self, data_cls, *args, **kw):
        """Train/held-out data from cfg.data and cfg.val_data (or a val_fraction split of cfg.data)."""
        cfg = self.cfg
        train = data_cls(cfg.data, *args, progress=cfg.progress and self.rank == 0, **kw)
        if cfg.val_data:
            val = data_cls(cfg.val_data, *args, progress=False, **self._val_kwargs(train, kw))
            train_index, val_index = list(range(len(train))), list(range(len(val)))
        else:
            val = train
            train_index, val_index = split_indices(len(train), cfg.val_fraction, cfg.seed)
        self.train_data, self.val_data, self.train_index, self.val_index = train, val, train_index, val_index
        self.sampler = EpochSampler(len(train_index), cfg.seed)
        return train

    def _val_kwargs(self, train, kw):
        return kw

    def describe(self) -> str:
        report = getattr(self.train_data, "report", None)
        n_val = len(self.val_index or [])
        return f"{report}; {len(self.train_index):,} train / {n_val:,} held-out" if report else ""


class PretrainObjective(Objective):
    name = "pretrain"

    def __init__(self, cfg, model, tokenizer, rank, world, data_dir: Path):
        super().__init__(cfg, model, tokenizer, rank, world)
        self.module = LMLoss(model)
        self.train_data = PackedWindows(data_dir, "train", cfg.seq_len)
        self.train_index = range(len(self.train_data))
        self.sampler = EpochSampler(len(self.train_data), cfg.seed)
        try:
            self.val_data = PackedWindows(data_dir, "val", cfg.seq_len)
            self.val_index = list(range(len(self.val_data)))
        except ValueError:
            self.val_data, self.val_index = None, []

    def count(self, batch) -> int:
        return int((batch["targets"] != -100).sum())

    def summarize_eval(self, sums):
        import math

        out = super().summarize_eval(sums)
        out["ppl"] = math.exp(min(out["loss"], 50.0))
        return out

    def describe(self) -> str:
        m = self.train_data.manifest
        return (f"pretrain data: {m['tokens']['train']:,} train tokens ({len(self.train_data):,} windows of "
                f"{self.cfg.seq_len}), {m['tokens']['val']:,} held-out tokens")


class SFTObjective(PretrainObjective):
    name = "sft"

    def __init__(self, cfg, model, tokenizer, rank, world):
        Objective.__init__(self, cfg, model, tokenizer, rank, world)
        self.module = LMLoss(model)
        self._split(SFTData, tokenizer, cfg.seq_len)

    def tokens(self, batch) -> int:
        return int((batch["idx"] != self.train_data.pad_id).sum())

    describe = Objective.describe


class DPOObjective(Objective):
    name = "dpo"

    def __init__(self, cfg, model, tokenizer, rank, world, reference):
        super().__init__(cfg, model, tokenizer, rank, world)
        self.module = DPOLoss(model, reference, cfg.dpo_beta)
        self._split(PreferenceData, tokenizer, cfg.seq_len)

    def count(self, batch) -> int:
        return batch["idx"].shape[0] // 2

    def tokens(self, batch) -> int:
        return int((batch["idx"] != self.train_data.pad_id).sum())


class RewardObjective(DPOObjective):
    name = "reward"

    def __init__(self, cfg, model, tokenizer, rank, world, head_model):
        Objective.__init__(self, cfg, model, tokenizer, rank, world)
        self.head_model = head_model
        self.module = RewardLoss(head_model)
        self._split(PreferenceData, tokenizer, cfg.seq_len)

    def micro_batch(self, step, micro):
        start, count = self.sample_range(step, micro)
        return self.train_data.score_batch([self.train_index[i] for i in self.sampler(start, count)])

    def eval_batches(self, shard: bool = False):
        return [self.val_data.score_batch(c) for c in self.eval_chunks(shard)]


class ClassifyObjective(Objective):
    name = "classify"

    def __init__(self, cfg, model, tokenizer, rank, world, labels_from_init=None):
        super().__init__(cfg, model, tokenizer, rank, world)
        train = self._split(ClassificationData, tokenizer, cfg.seq_len, labels=labels_from_init)
        self.labels = train.labels
        from llm.heads import HeadModel

        self.head_model = HeadModel(model, "classify", self.labels)
        self.module = ClassifyLoss(self.head_model)

    def _val_kwargs(self, train, kw):
        return {**kw, "labels": train.labels}

    def count(self, batch) -> int:
        return batch["idx"].shape[0]

    def tokens(self, batch) -> int:
        return int(batch["lengths"].sum())

    def describe(self) -> str:
        return f"{super().describe()}; {len(self.labels)} labels: {', '.join(self.labels[:10])}"
