"""The decoder language model: one file, two architectures (see llm/config.py).

Shapes in comments: B batch, T new positions, S key positions (cache length so far + T),
C n_embd, H n_head, K n_kv_head, D head_dim, V vocab_size.

Position conventions (the same in both architectures):
  * positions are absolute cache slots `start_pos + arange(T)`, shifted per row by `pad_len`
    (left padding for batched generation: pad slots are never attended to);
  * prefix-LM (config.prefix_lm and prefix_len given): query i may see key j iff
    j <= i or j < prefix_len[b] -- bidirectional inside the prompt, causal after (UniLM / T5).
RoPE uses the "rotate_half" layout of Hugging Face Llama, so exported q/k weights need no permutation.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F

from llm.config import ModelConfig


class KVCache:
    """Preallocated keys/values for every layer: (B, K, max_len, D) each, filled as generation proceeds."""

    def __init__(self, config: ModelConfig, batch_size: int, max_len: int, device=None, dtype=torch.float32):
        shape = (batch_size, config.n_kv_head, max_len, config.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.max_len = max_len

    def update(self, layer: int, start_pos: int, k: torch.Tensor, v: torch.Tensor):
        # k, v: (B, K, T, D) -> all keys/values so far: (B, K, S, D)
        end = start_pos + k.shape[2]
        self.k[layer][:, :, start_pos:end] = k
        self.v[layer][:, :, start_pos:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x (B, T, H, D); cos/sin (1 or B, T, 1, D)
    return x * cos + rotate_half(x) * sin


def rope_table(config: ModelConfig, length: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    D = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, D, 2, dtype=torch.float32, device=device) / D))
    freqs = torch.outer(torch.arange(length, dtype=torch.float32, device=device), inv_freq)  # (L, D/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (L, D)
    return emb.cos(), emb.sin()


class Attention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        bias = config.arch == "bert"
        C, H, K, D = config.n_embd, config.n_head, config.n_kv_head, config.head_dim
        self.n_head, self.n_kv_head, self.head_dim = H, K, D
        self.q_proj = nn.Linear(C, H * D, bias=bias)
        self.k_proj = nn.Linear(C, K * D, bias=bias)
        self.v_proj = nn.Linear(C, K * D, bias=bias)
        self.o_proj = nn.Linear(H * D, C, bias=bias)
        self.dropout = config.dropout
        self.fused = None  # (weight, bias) of q|k|v stacked, only while generating

    def forward(self, x, rope, mask, is_causal, kv_cache, layer, start_pos):
        B, T, _ = x.shape
        H, K, D = self.n_head, self.n_kv_head, self.head_dim
        if self.fused is not None:  # generation: one matmul for q|k|v and one RoPE for q|k (GPT.fused_for_inference)
            qkv = F.linear(x, *self.fused).view(B, T, H + 2 * K, D)
            qk = apply_rope(qkv[:, :, : H + K], *rope) if rope is not None else qkv[:, :, : H + K]
            q, k, v = qk[:, :, :H], qk[:, :, H:], qkv[:, :, H + K:]
        else:
            q = self.q_proj(x).view(B, T, H, D)
            k = self.k_proj(x).view(B, T, K, D)
            v = self.v_proj(x).view(B, T, K, D)
            if rope is not None:
                q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H|K, T, D)
        if kv_cache is not None:
            k, v = kv_cache.update(layer, start_pos, k, v)  # (B, K, S, D)
        # grouped-query attention: each K/V head serves H/K query heads, without copying K/V H/K times
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, enable_gqa=H != K,
                                           dropout_p=self.dropout if self.training else 0.0)  # (B, H, T, D)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))  # (B, T, C)


class MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        C, I = config.n_embd, config.intermediate_size
        self.swiglu = config.arch == "llama"
        if self.swiglu:
            self.gate_proj = nn.Linear(C, I, bias=False)
        self.up_proj = nn.Linear(C, I, bias=not self.swiglu)
        self.down_proj = nn.Linear(I, C, bias=not self.swiglu)
        self.fused = None  # gate|up stacked, only while generating

    def forward(self, x):  # (B, T, C) -> (B, T, C)
        if self.fused is not None:
            gate, up = F.linear(x, self.fused).chunk(2, dim=-1)
            return self.down_proj(F.silu(gate) * up)
        if self.swiglu:
            return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        return self.down_proj(F.gelu(self.up_proj(x)))  # exact (erf) GELU, as BERT


def _identity(x):
    return x


def make_norm(config: ModelConfig) -> nn.Module:
    if config.arch == "llama":
        return nn.RMSNorm(config.n_embd, eps=config.norm_eps)
    return nn.LayerNorm(config.n_embd, eps=config.norm_eps)


class Block(nn.Module):
    def __init__(self, config: ModelConfig, layer: int):
        super().__init__()
        self.layer = layer
        self.pre_norm = config.arch == "llama"
        self.attn_norm = make_norm(config)
        self.attn = Attention(config)
        self.mlp_norm = make_norm(config)
        self.mlp = MLP(config)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x, rope, mask, is_causal, kv_cache, start_pos):
        args = (rope, mask, is_causal, kv_cache, self.layer, start_pos)
        drop = self.drop if self.training and self.drop.p > 0 else _identity  # skip a no-op call per token
        if self.pre_norm:  # llama: x + f(norm(x))
            x = x + drop(self.attn(self.attn_norm(x), *args))
            return x + drop(self.mlp(self.mlp_norm(x)))
        # bert (post-LN): norm(x + f(x))
        x = self.attn_norm(x + drop(self.attn(x, *args)))
        return self.mlp_norm(x + drop(self.mlp(x)))


class GPT(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        C, V = config.n_embd, config.vocab_size
        self.tok_emb = nn.Embedding(V, C)
        if config.arch == "bert":
            # token_type_embeddings[0] is folded into pos_emb on import (we never use segment B)
            self.pos_emb = nn.Embedding(config.max_seq_len, C)
            self.emb_norm = nn.LayerNorm(C, eps=config.norm_eps)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        # bert's last block already ends in a LayerNorm; llama needs a final RMSNorm
        self.norm = nn.RMSNorm(C, eps=config.norm_eps) if config.arch == "llama" else nn.Identity()
        self.lm_head = nn.Linear(C, V, bias=config.arch == "bert")
        if config.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        if config.arch == "llama":
            cos, sin = rope_table(config, config.max_seq_len)
            self.register_buffer("rope_cos", cos, persistent=False)  # (max_seq_len, D)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)
        # GPT-2: residual projections scaled by 1/sqrt(2 * n_layer) keep the residual stream's variance flat
        for name, p in self.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, mean=0.0, std=config.init_std / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.init_std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.init_std)

    # ---------------------------------------------------------------- forward
    def new_kv_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        p = self.tok_emb.weight
        return KVCache(self.config, batch_size, max_len or self.config.max_seq_len, device=p.device, dtype=p.dtype)

    def hidden_states(self, idx, prefix_len=None, kv_cache=None, start_pos: int = 0, pad_len=None) -> torch.Tensor:
        """idx (B, T) -> (B, T, C) after the final norm.

        kv_cache/start_pos: write this chunk's keys/values at slots start_pos.. and attend to all slots before.
        prefix_len (B,) long: with config.prefix_lm, slots < prefix_len[b] attend bidirectionally.
        pad_len (B,) long: the first pad_len[b] slots of row b are left padding (never attended; positions
        start after them), so a left-padded batch computes exactly what each row would alone.
        """
        cfg = self.config
        B, T = idx.shape
        end = start_pos + T
        if end > cfg.max_seq_len:
            raise ValueError(f"sequence of {end} tokens is longer than the model's max_seq_len={cfg.max_seq_len}; "
                             "shorten the input")
        if kv_cache is None and start_pos:
            raise ValueError("start_pos needs a kv_cache")
        if kv_cache is not None and end > kv_cache.max_len:
            raise ValueError(f"KV cache holds {kv_cache.max_len} positions; cannot write up to {end}")
        device = idx.device
        if pad_len is None:
            pos = slice(start_pos, end)
        else:
            pos = (torch.arange(start_pos, end, device=device)[None, :] - pad_len[:, None]).clamp_min(0)  # (B, T)

        x = self.tok_emb(idx)  # (B, T, C)
        rope = None
        if cfg.arch == "llama":
            cos, sin = self.rope_cos[pos], self.rope_sin[pos]  # (T, D) or (B, T, D)
            if cos.dtype != x.dtype:
                cos, sin = cos.to(x.dtype), sin.to(x.dtype)
            shape = (-1, T, 1, cfg.head_dim)
            rope = (cos.view(shape), sin.view(shape))  # (1|B, T, 1, D)
        else:
            x = self.emb_norm(x + self.pos_emb.weight[pos])
        if self.training and self.drop.p > 0:
            x = self.drop(x)

        mask, is_causal = self._attention_mask(B, T, start_pos, prefix_len, pad_len, device)
        for block in self.blocks:
            x = block(x, rope, mask, is_causal, kv_cache, start_pos)
        return self.norm(x)

    def _attention_mask(self, B, T, start_pos, prefix_len, pad_len, device):
        """(mask (B|1, 1, T, S) bool or None, is_causal) for scaled_dot_product_attention."""
        use_prefix = self.config.prefix_lm and prefix_len is not None
        if pad_len is None:
            # one new token after the cache sees every slot (causal and prefix-LM alike): no mask at all
            if T == 1 and start_pos > 0:
                return None, False
            # plain causal from slot 0: the fused kernel's is_causal
            if not use_prefix and start_pos == 0:
                return None, T > 1
        S = start_pos + T
        i = torch.arange(start_pos, S, device=device)[:, None]  # (T, 1) query slots
        j = torch.arange(S, device=device)[None, :]              # (1, S) key slots
        allowed = (j <= i)[None]                                 # (1, T, S)
        if use_prefix:
            allowed = allowed | (j[None] < prefix_len.to(device)[:, None, None])  # (B, T, S)
        if pad_len is not None:
            # pad queries keep their own slot so no softmax row is empty (their outputs are never used)
            allowed = allowed & ((j[None] >= pad_len.to(device)[:, None, None]) | (j == i)[None])
        return allowed[:, None], False

    @contextmanager
    def fused_for_inference(self):
        """Stack q|k|v and gate|up weights into single matrices while the weights are frozen (generation):
        fewer, larger matmuls are much faster for one token at a time on CPU. Costs a temporary copy of
        those weights; projections wrapped by LoRA stay unfused."""
        fused = []
        with torch.no_grad():
            for block in self.blocks:
                a, m = block.attn, block.mlp
                projs = (a.q_proj, a.k_proj, a.v_proj)
                if all(type(p) is nn.Linear for p in projs):
                    bias = torch.cat([p.bias for p in projs]) if a.q_proj.bias is not None else None
                    a.fused = (torch.cat([p.weight for p in projs]), bias)
                    fused.append(a)
                if m.swiglu and type(m.gate_proj) is nn.Linear and type(m.up_proj) is nn.Linear:
                    m.fused = torch.cat([m.gate_proj.weight, m.up_proj.weight])
                    fused.append(m)
        try:
            yield self
        finally:
            for module in fused:
                module.fused = None

    def quantized_int8(self) -> GPT:
        """A copy for CPU inference with every nn.Linear (the LM head included) in int8: weights
        quantized once, per output channel; activations per call (torch.ao dynamic quantization).
        Decoding one token at a time is bound by reading the weights, which int8 makes four times
        smaller. Per channel, because one scale per matrix visibly changed SmolLM2's answers."""
        import copy

        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        model = copy.deepcopy(self).eval()
        # torch.ao's eager quantization is marked deprecated in favour of the separate torchao
        # package, and still ships (and runs) in the torch this project pins.
        return quantize_dynamic(model, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)

    def lm_logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.lm_head(h)  # (..., C) -> (..., V)

    def forward(self, idx, targets=None, prefix_len=None):
        """idx (B, T). Without targets: (logits (B, T, V), None). With targets (B, T), -100 = ignored:
        (None, mean cross-entropy) computing the LM head only at supervised positions."""
        h = self.hidden_states(idx, prefix_len=prefix_len)  # (B, T, C)
        if targets is None:
            return self.lm_logits(h), None
        keep = targets != -100
        if not keep.any():  # zero loss that still touches the graph (DDP needs every parameter used)
            return None, h.sum() * 0.0
        logits = self.lm_logits(h[keep])  # (N, V)
        return None, F.cross_entropy(logits.float(), targets[keep])

    # ---------------------------------------------------------------- accounting
    def num_params(self, non_embedding: bool = True) -> int:
        """Parameters (tied weights once). non_embedding drops the token/position tables and the LM head
        matrix (Kaplan et al. 2020's N)."""
        n = sum(p.numel() for p in {id(p): p for p in self.parameters()}.values())
        if non_embedding:
            n -= self.tok_emb.weight.numel()
            if not self.config.tie_embeddings:
                n -= self.lm_head.weight.numel()
            if self.config.arch == "bert":
                n -= self.pos_emb.weight.numel()
        return n

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token, PaLM appendix B: 6N + 12*L*H*Q*T, where N counts every weight used in a
        matmul (non-embedding parameters plus the LM head, which is a real V x C matmul even when tied)."""
        cfg = self.config
        n = self.num_params(non_embedding=True) + cfg.vocab_size * cfg.n_embd
        return 6.0 * n + 12.0 * cfg.n_layer * cfg.n_head * cfg.head_dim * seq_len
