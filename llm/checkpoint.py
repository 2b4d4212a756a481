"""Model checkpoints: a folder with config.json, model.safetensors and the tokenizer files.

Loading is strict: a missing, unexpected or mis-shaped weight is an error naming the keys (a
`strict=False` load that silently keeps random weights is the classic way to ship an untrained model).
Files are written to a temporary name and renamed, so an interrupted save never leaves a torn file.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MODEL_TYPE = "llm-gpt"  # in config.json; distinguishes our checkpoints from Hugging Face ones


def model_state_dict(model) -> dict:
    """The weights as saved: LoRA adapters merged (on a copy), a tied LM head stored once (as tok_emb)."""
    from llm.lora import has_lora, merge_lora

    if has_lora(model):
        model = merge_lora(copy.deepcopy(model))
    state = {k: v.detach() for k, v in model.state_dict().items()}
    if model.config.tie_embeddings:
        state.pop("lm_head.weight")
    return state


def read_config(path):
    """The ModelConfig of a checkpoint folder, with clear errors for anything that is not one."""
    from llm.config import ModelConfig

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint folder")
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: is a file; give the checkpoint folder (with {CONFIG_NAME} and {WEIGHTS_NAME})")
    cfg_file = path / CONFIG_NAME
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{path}: not a model checkpoint (no {CONFIG_NAME}); give a folder written by "
                                "`llm pretrain`/`llm sft` or save_pretrained")
    data = json.loads(cfg_file.read_text())
    model_type = data.pop("model_type", None)
    if model_type != MODEL_TYPE:
        raise ValueError(f"{path}: a Hugging Face {model_type or 'unknown'} checkpoint, not one of ours; "
                         f"convert it with `llm import {path} OUT_DIR`")
    data.pop("llm_version", None)
    return ModelConfig.from_dict(data)


def save_pretrained(model, tokenizer, out_dir, dtype=None) -> Path:
    """Write out_dir/config.json, model.safetensors (dtype e.g. torch.bfloat16 to halve the size; default
    the model's) and the tokenizer (when given). Returns out_dir."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: (v.to(dtype) if dtype is not None else v).contiguous().cpu() for k, v in model_state_dict(model).items()}
    tmp = out / (WEIGHTS_NAME + ".tmp")
    save_file(state, str(tmp), metadata={"format": "pt"})
    tmp.replace(out / WEIGHTS_NAME)
    cfg = {"model_type": MODEL_TYPE, "llm_version": 1, **model.config.to_dict()}
    tmp = out / (CONFIG_NAME + ".tmp")
    tmp.write_text(json.dumps(cfg, indent=2) + "\n")
    tmp.replace(out / CONFIG_NAME)
    if tokenizer is not None:
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is not None:
            # a sentence encoder's tokenizer.json (MiniLM's, via the warm start) carries truncation and padding
            # to 128 tokens; a generator's must not, or tools that read the file cut every prompt at 128
            backend.no_truncation()
            backend.no_padding()
        tokenizer.save_pretrained(str(out))
    return out


def load_state_strict(model, state: dict, source) -> None:
    """Copy `state` into `model`; any missing/unexpected/mis-shaped key is a ValueError naming them."""
    expected = model_state_dict(model)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}"
              for k in sorted(set(state) & set(expected)) if state[k].shape != expected[k].shape]
    if missing or unexpected or shapes:
        parts = [f"missing: {', '.join(missing)}" if missing else "",
                 f"unexpected: {', '.join(unexpected)}" if unexpected else "",
                 f"wrong shape: {'; '.join(shapes)}" if shapes else ""]
        raise ValueError(f"{source}: weights do not match the model config; " + "; ".join(p for p in parts if p))
    # strict=False only because a tied lm_head.weight is stored once, as tok_emb.weight; every key was checked above
    model.load_state_dict(state, strict=False)


def load_pretrained(path, device="cpu", dtype=None):
    """(GPT, tokenizer) from a checkpoint folder; tokenizer is None if the folder has none. Weights are cast
    to dtype (default float32: the dtype to run on CPU)."""
    import torch
    from safetensors.torch import load_file

    from llm.model import GPT

    path = Path(path)
    config = read_config(path)
    weights = path / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"{path}: checkpoint has {CONFIG_NAME} but no {WEIGHTS_NAME}")
    dtype = dtype or torch.float32
    state = {k: v.to(dtype) for k, v in load_file(str(weights)).items()}
    with torch.device("meta"):
        model = GPT(config)
    model.to_empty(device="cpu")
    model = model.to(dtype)
    if config.arch == "llama":  # non-persistent RoPE tables are not in the file; rebuild them
        from llm.model import rope_table

        model.rope_cos, model.rope_sin = rope_table(config, config.max_seq_len)
    load_state_strict(model, state, weights)
    if config.tie_embeddings:
        model.lm_head.weight = model.tok_emb.weight
    model.to(device).eval()
    tokenizer = None
    if (path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file():
        from llm.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(path)
    return model, tokenizer
