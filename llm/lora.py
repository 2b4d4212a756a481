"""LoRA (Hu et al., 2021): low-rank adapters on the model's linear projections.

W x  becomes  W x + (alpha / r) * B A x  with A (r, in) random, B (out, r) zero, so training starts
from the base model exactly. Only A and B train. Written here rather than with `peft` because our GPT
is a plain nn.Module and the whole mechanism is ~40 lines; the saved adapter is a small
adapter_model.safetensors + adapter_config.json.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class LoRAConfig:
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))  # names of nn.Linear modules

    def __post_init__(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"LoRAConfig.rank={self.rank!r} must be a positive integer")
        if not self.alpha > 0:
            raise ValueError(f"LoRAConfig.alpha={self.alpha!r} must be > 0")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRAConfig.dropout={self.dropout!r} must be in [0, 1)")
        if isinstance(self.targets, str):
            self.targets = [t.strip() for t in self.targets.split(",") if t.strip()]
        self.targets = list(self.targets)
        if not self.targets:
            raise ValueError("LoRAConfig.targets is empty: name at least one projection, e.g. q_proj,v_proj")


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float):
        super().__init__()
        self.base = base
        self.scaling = alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, device=base.weight.device))   # (r, in)
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device))  # (out, r)
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear initialises its weight
        self.drop = nn.Dropout(dropout)

    @property
    def weight(self) -> torch.Tensor:  # code that reads .weight sees the base matrix
        return self.base.weight

    def forward(self, x):  # (..., in) -> (..., out)
        return self.base(x) + (self.drop(x) @ self.lora_A.t() @ self.lora_B.t()) * self.scaling

    def merged_weight(self) -> torch.Tensor:
        return self.base.weight + (self.lora_B @ self.lora_A) * self.scaling


def lora_modules(model: nn.Module) -> dict[str, LoRALinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def has_lora(model: nn.Module) -> bool:
    return bool(lora_modules(model))


def apply_lora(model: nn.Module, config: LoRAConfig | None = None, **kwargs) -> nn.Module:
    """Wrap every nn.Linear whose name ends in one of config.targets; freeze everything else. In place."""
    config = config or LoRAConfig(**kwargs)
    if has_lora(model):
        raise ValueError("model already has LoRA adapters; merge_lora(model) first to stack another set")
    for p in model.parameters():
        p.requires_grad_(False)
    wrapped = 0
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Linear) and child_name in config.targets:
                setattr(module, child_name, LoRALinear(child, config.rank, config.alpha, config.dropout))
                wrapped += 1
    if not wrapped:
        raise ValueError(f"no linear layer named {', '.join(config.targets)} in this model; "
                         f"choose LoRA targets among {', '.join(DEFAULT_TARGETS)}")
    model.lora_config = config
    return model


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for m in lora_modules(model).values() for p in (m.lora_A, m.lora_B)]


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    out = {}
    for name, m in lora_modules(model).items():
        out[f"{name}.lora_A"] = m.lora_A.detach()
        out[f"{name}.lora_B"] = m.lora_B.detach()
    return out


@torch.no_grad()
def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight (W += scale * B A) and restore plain nn.Linear. In place;
    base parameters become trainable again."""
    for name, m in lora_modules(model).items():
        m.base.weight.copy_(m.merged_weight())
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, m.base)
    if hasattr(model, "lora_config"):
        del model.lora_config
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def save_lora(model: nn.Module, out_dir) -> Path:
    """Write only the adapters: adapter_model.safetensors + adapter_config.json (with the base model's
    shape, checked on load)."""
    from safetensors.torch import save_file

    if not has_lora(model):
        raise ValueError("model has no LoRA adapters to save (call apply_lora first)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.contiguous().cpu() for k, v in lora_state_dict(model).items()}
    tmp = out / (ADAPTER_WEIGHTS + ".tmp")
    save_file(tensors, str(tmp))
    tmp.replace(out / ADAPTER_WEIGHTS)
    meta = {"lora": asdict(model.lora_config)}
    if hasattr(model, "config") and hasattr(model.config, "to_dict"):
        meta["base_model"] = model.config.to_dict()
    (out / ADAPTER_CONFIG).write_text(json.dumps(meta, indent=2) + "\n")
    return out


def load_lora(model: nn.Module, path) -> nn.Module:
    """Apply the adapters saved by save_lora to a base model (in place). Strict: every adapter tensor
    must match a module of this model and the other way round."""
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / ADAPTER_CONFIG).is_file() or not (path / ADAPTER_WEIGHTS).is_file():
        raise FileNotFoundError(f"{path}: not a LoRA adapter folder (expected {ADAPTER_CONFIG} and "
                                f"{ADAPTER_WEIGHTS}, written by save_lora)")
    meta = json.loads((path / ADAPTER_CONFIG).read_text())
    base = meta.get("base_model")
    if base is not None and hasattr(model, "config") and hasattr(model.config, "to_dict"):
        ours = model.config.to_dict()
        shape_keys = ("arch", "vocab_size", "n_layer", "n_head", "n_kv_head", "n_embd", "intermediate_size")
        diff = [k for k in shape_keys if base.get(k) != ours.get(k)]
        if diff:
            raise ValueError(f"{path}: adapters were trained on a different base model ({', '.join(diff)} differ)")
    if not has_lora(model):
        apply_lora(model, LoRAConfig(**meta["lora"]))
    tensors = load_file(str(path / ADAPTER_WEIGHTS))
    expected = lora_state_dict(model)
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{path}: adapter weights do not match the model; missing: {missing or 'none'}; "
                         f"unexpected: {unexpected or 'none'}")
    modules = lora_modules(model)
    with torch.no_grad():
        for key, value in tensors.items():
            name, _, param = key.rpartition(".")
            target = getattr(modules[name], param)
            if target.shape != value.shape:
                raise ValueError(f"{path}: {key} has shape {tuple(value.shape)}, the model expects {tuple(target.shape)}")
            target.copy_(value)
    return model
