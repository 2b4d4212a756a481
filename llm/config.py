"""Model configuration: one dataclass, validated on construction, plus named presets.

Two architectures share one code path (llm/model.py):
  "llama": RMSNorm pre-norm, RoPE, SwiGLU MLP, grouped-query attention, no biases.
  "bert":  BERT's exact computation (post-LN LayerNorm, learned absolute positions, GELU MLP,
           biases, embedding LayerNorm) so MiniLM/BERT weights load unchanged for warm starts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields

ARCHS = ("llama", "bert")


@dataclass
class ModelConfig:
    arch: str = "llama"
    vocab_size: int = 8192
    n_layer: int = 6
    n_head: int = 4
    n_kv_head: int = 2            # grouped-query attention: n_head query heads share n_kv_head key/value heads
    n_embd: int = 256
    intermediate_size: int = 448  # MLP hidden width (SwiGLU for llama, GELU for bert)
    max_seq_len: int = 2048       # llama: RoPE table length; bert: number of learned positions
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    prefix_lm: bool = False       # bidirectional attention inside the prompt (positions < prefix_len), causal after
    dropout: float = 0.0
    init_std: float = 0.02

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ValueError:
            return ValueError(f"ModelConfig.{name}={getattr(self, name)!r} {why}")

        if self.arch not in ARCHS:
            raise bad("arch", f"is not one of {', '.join(ARCHS)}")
        for name in ("vocab_size", "n_layer", "n_head", "n_kv_head", "n_embd", "intermediate_size", "max_seq_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise bad(name, "must be a positive integer")
        if self.n_embd % self.n_head:
            raise bad("n_head", f"must divide n_embd={self.n_embd}")
        if self.n_head % self.n_kv_head:
            raise bad("n_kv_head", f"must divide n_head={self.n_head}")
        if self.arch == "llama" and self.head_dim % 2:
            raise bad("n_head", f"gives an odd head size {self.head_dim}; RoPE needs an even one")
        if not self.rope_theta > 0:
            raise bad("rope_theta", "must be > 0")
        if not self.norm_eps > 0:
            raise bad("norm_eps", "must be > 0")
        if not 0.0 <= self.dropout < 1.0:
            raise bad("dropout", "must be in [0, 1)")
        if not self.init_std > 0:
            raise bad("init_std", "must be > 0")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        """Build from a dict (config.json); unknown keys are an error, never silently dropped."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig keys: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        return cls(**data)

    def replace(self, **changes) -> "ModelConfig":
        """A copy with some fields changed (validated again), e.g. PRESETS['5m'].replace(vocab_size=4096)."""
        return dataclasses.replace(self, **changes)


# Sizes count the default 8192-token vocabulary; callers set vocab_size to their tokenizer's.
# Head size 64 everywhere except "tiny" (CPU attention kernels are fastest there).
PRESETS: dict[str, ModelConfig] = {
    # for tests: ~0.1M parameters, runs in milliseconds
    "tiny": ModelConfig(vocab_size=512, n_layer=2, n_head=4, n_kv_head=2, n_embd=64,
                        intermediate_size=176, max_seq_len=256),
    # ~5M parameters: trains on 2 CPU cores in minutes
    "5m": ModelConfig(vocab_size=8192, n_layer=6, n_head=4, n_kv_head=2, n_embd=256,
                      intermediate_size=448, max_seq_len=2048),
    # ~14M parameters: the CPU chat model scale
    "14m": ModelConfig(vocab_size=8192, n_layer=6, n_head=6, n_kv_head=2, n_embd=384,
                       intermediate_size=1280, max_seq_len=2048),
    # ~60M parameters: for a CUDA GPU
    "60m": ModelConfig(vocab_size=8192, n_layer=12, n_head=10, n_kv_head=5, n_embd=640,
                       intermediate_size=1728, max_seq_len=2048),
    # all-MiniLM-L6-v2 / BERT shape (arch "bert"), used by llm.hf.warm_start_from_bert
    "minilm": ModelConfig(arch="bert", vocab_size=30522, n_layer=6, n_head=12, n_kv_head=12, n_embd=384,
                          intermediate_size=1536, max_seq_len=512, norm_eps=1e-12, prefix_lm=True),
}
PRESETS["gpu"] = PRESETS["60m"]


def get_preset(name: str, **overrides) -> ModelConfig:
    """A preset by name, with field overrides; a clear error for an unknown name."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name].replace(**overrides) if overrides else PRESETS[name].replace()
