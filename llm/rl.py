"""Reinforcement learning against a reward model: GRPO (Shao et al. 2024, DeepSeekMath) with the PPO
clipped surrogate and a per-token KL penalty to the frozen reference (the k3 estimator,
exp(ref - logp) - (ref - logp) - 1, unbiased and always >= 0).

GRPO rather than PPO: the baseline is the mean reward of the other completions of the same prompt,
so no value network is trained. Each step samples `rl_group_size` completions for each of its
prompts with the current policy, scores them with the reward model, and takes one gradient step.
Rollout sampling is seeded by (seed, step, micro, rank), so a resumed run samples the same tokens.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from llm.data import EpochSampler, PromptData, _pad, split_indices
from llm.objectives import Objective, _Frozen, token_logps
from llm.tokenizer import chat_ids


class GRPOLoss(nn.Module):
    def __init__(self, model, kl_coef: float, clip: float):
        super().__init__()
        self.model, self.kl_coef, self.clip = model, kl_coef, clip

    def forward(self, idx, targets, advantages, old_logp, ref_logp, rewards, prefix_len=None):
        _, logp = token_logps(self.model, idx, targets, prefix_len)  # (N,) completion tokens
        rows = (targets != -100).nonzero()[:, 0]
        adv = advantages[rows]  # (N,) each token carries its completion's advantage
        ratio = torch.exp(logp - old_logp)
        surrogate = torch.min(ratio * adv, ratio.clamp(1 - self.clip, 1 + self.clip) * adv)
        d = ref_logp - logp
        kl = torch.exp(d) - d - 1  # (N,)
        n = torch.tensor(idx.shape[0], device=idx.device)
        return {"loss_sum": (-surrogate + self.kl_coef * kl).sum(), "count": torch.tensor(logp.numel()),
                "n": n, "reward": rewards.sum(), "kl": kl.sum().detach(),
                "length": torch.tensor(float(logp.numel()))}


class RLObjective(Objective):
    name = "rl"

    def __init__(self, cfg, model, tokenizer, rank, world, reference, reward_model):
        super().__init__(cfg, model, tokenizer, rank, world)
        max_prompt = cfg.seq_len - cfg.rl_max_new_tokens
        if max_prompt < 1:
            raise ValueError(f"--seq-len {cfg.seq_len} leaves no room for prompts after "
                             f"--rl-max-new-tokens {cfg.rl_max_new_tokens}; raise seq_len")
        self.module = GRPOLoss(model, cfg.rl_kl_coef, cfg.rl_clip)
        self._ref = _Frozen(reference)
        self._reward = _Frozen(reward_model)
        ids = chat_ids(tokenizer)  # ours, or a template of its own (SmolLM2)
        self.pad_id = ids["pad"]
        self.stop_ids = {ids["end"], ids["eos"]}
        data = PromptData(cfg.data, tokenizer, max_prompt, progress=cfg.progress and rank == 0)
        self.train_data = data
        if cfg.val_data:
            self.val_data = PromptData(cfg.val_data, tokenizer, max_prompt, progress=False)
            self.train_index, self.val_index = list(range(len(data))), list(range(len(self.val_data)))
        else:
            self.val_data = data
            self.train_index, self.val_index = split_indices(len(data), cfg.val_fraction, cfg.seed)
        self.sampler = EpochSampler(len(self.train_index), cfg.seed)

    def describe(self) -> str:
        return (f"{self.train_data.report}; {len(self.train_index):,} train / {len(self.val_index):,} held-out "
                f"prompts, {self.cfg.rl_group_size} completions each")

    @torch.no_grad()
    def rollout(self, prompts: list, temperature: float, seed: int | None, group: int) -> dict:
        from llm.generate import generate_ids

        device = next(self.model.parameters()).device
        rep = [p.tolist() for p in prompts for _ in range(group)]
        completions = generate_ids(self.model, rep, self.cfg.rl_max_new_tokens, temperature=temperature,
                                   stop_token_ids=self.stop_ids, seed=seed)
        seqs = [torch.tensor(p + c) for p, c in zip(rep, completions)]
        lengths = torch.tensor([len(s) for s in seqs])
        full = _pad([s.numpy() for s in seqs], self.pad_id)  # (B, L) right-padded prompt + completion
        targets = torch.full_like(full, -100)
        for r, (p, c) in enumerate(zip(rep, completions)):
            targets[r, len(p) - 1:len(p) - 1 + len(c)] = torch.tensor(c)  # position t predicts token t+1
        idx, targets = full[:, :-1].to(device), targets[:, :-1].to(device)
        prefix_len = torch.tensor([len(p) for p in rep], device=device)
        rewards = self._reward.module(full.to(device), lengths.to(device)).float()  # (B,)
        return {"idx": idx, "targets": targets, "prefix_len": prefix_len, "rewards": rewards}

    @torch.no_grad()
    def micro_batch(self, step, micro):
        cfg = self.cfg
        start, count = self.sample_range(step, micro)
        prompts = [self.train_data.prompts[self.train_index[i]] for i in self.sampler(start, count)]
        seed = (cfg.seed * 1_000_003 + step * 4099 + micro * 131 + self.rank) % (2 ** 63)
        b = self.rollout(prompts, cfg.rl_temperature, seed, cfg.rl_group_size)
        g = b["rewards"].view(-1, cfg.rl_group_size)  # (prompts, G)
        adv = (g - g.mean(1, keepdim=True)) / (g.std(1, keepdim=True) + 1e-4)
        b["advantages"] = adv.reshape(-1)
        b["old_logp"] = token_logps(self.model, b["idx"], b["targets"], b["prefix_len"])[1].detach()
        b["ref_logp"] = token_logps(self._ref.module, b["idx"], b["targets"], b["prefix_len"])[1]
        return b

    def count(self, batch) -> int:
        return int((batch["targets"] != -100).sum())

    def tokens(self, batch) -> int:
        return int((batch["idx"] != self.pad_id).sum())

    def eval_sums(self, shard: bool) -> dict:
        """Reward of greedy completions of the held-out prompts (deterministic)."""
        total, n = 0.0, 0
        for chunk in self.eval_chunks(shard):
            b = self.rollout([self.val_data.prompts[j] for j in chunk], 0.0, None, 1)
            total += float(b["rewards"].sum())
            n += len(chunk)
        return {"reward": total, "n": n} if n else {}

    def summarize_eval(self, sums: dict) -> dict:
        return {"reward": sums["reward"] / max(sums["n"], 1)}
