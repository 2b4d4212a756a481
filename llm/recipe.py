"""Training arguments: one typed dataclass (its field help is the CLI's --help), recipes as small TOML
files under llm/recipes/, and command-line overrides.

Precedence, lowest first: dataclass defaults < recipe file < `--key value` flags < `--set key=value`.
A recipe's `[model]` table (and `--set model.KEY=VALUE`) overrides fields of the model preset.
Unknown keys anywhere are errors that name the key and list the valid ones.

Stdlib only: `llm --help` must not import torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"
OBJECTIVES = ("pretrain", "sft", "dpo", "reward", "rl", "classify")


def arg(default, help: str, **kw):
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class TrainConfig:
    objective: str = arg("pretrain", "what to train: pretrain | sft | dpo | reward | rl | classify")
    out_dir: str = arg("runs/llm", "run folder: checkpoints (step-NNNNNN/, final/, latest), metrics.jsonl, loss.png")
    data: str = arg("", "training data. pretrain: a token-shard folder (from `llm prepare`) or text/JSONL files "
                        "(comma-separated; tokenized into OUT_DIR/tokens first). sft: chat JSONL {messages}. "
                        "dpo/reward: preference JSONL {prompt, chosen, rejected}. rl: prompts JSONL {prompt} "
                        "or {messages}. classify: JSONL {text, label}")
    val_data: str = arg("", "held-out file for the JSONL objectives; empty: hold out val_fraction of `data`")
    val_fraction: float = arg(0.05, "share of `data` held out when val_data is empty (JSONL objectives)")
    field: str = arg("text", "JSONL field holding the text when pretraining on JSONL files")
    tokenizer: str = arg("", "tokenizer folder (pretraining from scratch); fine-tuning uses the init checkpoint's")
    init: str = arg("", "checkpoint folder to start from (required for sft/dpo/reward/rl/classify unless "
                        "training a fresh model is intended)")
    model: str = arg("tiny", "model preset when training from scratch (tiny, 5m, 14m, 60m, ...); "
                             "fields overridable with a [model] table or --set model.KEY=VALUE")
    model_overrides: dict = arg(None, "(set through the recipe's [model] table or --set model.KEY=VALUE)")
    seq_len: int = arg(256, "tokens per training sequence (longer examples lose context from the left)")
    batch_size: int = arg(8, "sequences per micro-batch per process (rl: prompts; dpo/reward: pairs)")
    grad_accum: int = arg(1, "micro-batches per optimizer step; global batch = batch_size * grad_accum * processes")
    max_steps: int = arg(1000, "optimizer steps")
    lr: float = arg(3e-4, "peak learning rate")
    min_lr_ratio: float = arg(0.1, "final learning rate as a fraction of lr (cosine decay)")
    warmup_steps: int = arg(100, "linear warmup steps")
    weight_decay: float = arg(0.1, "AdamW weight decay (never on norms, biases, embeddings)")
    beta1: float = arg(0.9, "AdamW beta1")
    beta2: float = arg(0.95, "AdamW beta2")
    grad_clip: float = arg(1.0, "clip the gradient norm to this (0: off)")
    seed: int = arg(1337, "seed for initialization, data order and sampling")
    eval_every: int = arg(200, "steps between held-out evaluations (0: only at the end)")
    eval_batches: int = arg(20, "micro-batches per held-out evaluation")
    save_every: int = arg(500, "steps between checkpoints (0: only at the end and on Ctrl-C)")
    keep_checkpoints: int = arg(2, "step checkpoints kept (older ones deleted; final/ always kept)")
    log_every: int = arg(10, "steps between metric lines")
    device: str = arg("auto", "auto (cuda when present) | cpu | cuda | cuda:N")
    dtype: str = arg("auto", "auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16 (CUDA only)")
    compile: bool = arg(False, "torch.compile the model (CUDA)")
    threads: int = arg(0, "CPU threads for torch (0: torch's default)")
    fsdp: bool = arg(False, "under torchrun: shard parameters with FSDP instead of replicating with DDP")
    resume: bool = arg(True, "continue from OUT_DIR/latest when it exists (--no-resume refuses to overwrite it)")
    progress: bool = arg(True, "tqdm progress bar")
    plot: bool = arg(True, "write OUT_DIR/loss.png")
    lora: bool = arg(False, "train LoRA adapters only (base weights frozen)")
    lora_r: int = arg(8, "LoRA rank")
    lora_alpha: float = arg(16.0, "LoRA scaling numerator (scale = alpha / r)")
    lora_dropout: float = arg(0.0, "dropout on the LoRA input")
    dpo_beta: float = arg(0.1, "DPO temperature beta (strength of the pull toward the reference)")
    reward_model: str = arg("", "rl: reward model checkpoint (from `llm reward`)")
    rl_group_size: int = arg(4, "rl: completions sampled per prompt (GRPO group)")
    rl_max_new_tokens: int = arg(64, "rl: longest completion")
    rl_temperature: float = arg(1.0, "rl: sampling temperature of the rollouts")
    rl_kl_coef: float = arg(0.05, "rl: weight of the KL penalty to the reference model")
    rl_clip: float = arg(0.2, "rl: PPO ratio clip range")
    shard_tokens: int = arg(8_000_000, "pretrain on files: tokens per shard when tokenizing")

    def __post_init__(self) -> None:
        if self.model_overrides is None:
            self.model_overrides = {}

    def validate(self) -> "TrainConfig":
        def bad(name, why):
            return ValueError(f"--{name.replace('_', '-')}={getattr(self, name)!r} {why}")

        if self.objective not in OBJECTIVES:
            raise bad("objective", f"is not one of {', '.join(OBJECTIVES)}")
        if not self.data:
            raise ValueError("--data is required: " + fields_help()["data"])
        for name in ("seq_len", "batch_size", "grad_accum", "max_steps", "eval_batches", "rl_group_size",
                     "rl_max_new_tokens", "shard_tokens", "lora_r", "log_every"):
            if getattr(self, name) < 1:
                raise bad(name, "must be >= 1")
        for name in ("warmup_steps", "eval_every", "save_every", "keep_checkpoints", "threads", "weight_decay",
                     "grad_clip", "dpo_beta", "rl_kl_coef", "rl_clip"):
            if getattr(self, name) < 0:
                raise bad(name, "must be >= 0")
        if not self.lr > 0:
            raise bad("lr", "must be > 0")
        if not 0 <= self.min_lr_ratio <= 1:
            raise bad("min_lr_ratio", "must be in [0, 1]")
        if not 0 <= self.val_fraction < 1:
            raise bad("val_fraction", "must be in [0, 1)")
        if self.dtype not in ("auto", "fp32", "bf16"):
            raise bad("dtype", "is not one of auto, fp32, bf16")
        if self.objective == "rl" and not self.reward_model:
            raise ValueError("--reward-model is required for rl (train one with `llm reward`)")
        if self.objective == "rl" and self.rl_group_size < 2:
            raise bad("rl_group_size", "must be >= 2 (advantages compare completions of the same prompt)")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def fields_help() -> dict[str, str]:
    return {f.name: f.metadata.get("help", "") for f in fields(TrainConfig)}


def _valid_keys() -> list[str]:
    return [f.name for f in fields(TrainConfig) if f.name != "model_overrides"]


def unknown_key_error(key: str, where: str) -> ValueError:
    valid = _valid_keys()
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ValueError(f"{where}: unknown key {key!r}{hint}. Valid keys: {', '.join(valid)}; "
                      f"model fields go under [model] / model.KEY")


def _coerce(name: str, value, where: str):
    """Convert a string (CLI) or TOML value to the field's type, with a message naming the key."""
    ftype = {f.name: f.type for f in fields(TrainConfig)}[name]
    if ftype in ("bool", bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
            return False
    elif ftype in ("int", int):
        try:
            if isinstance(value, bool):
                raise ValueError
            return int(value) if not isinstance(value, float) or value.is_integer() else int("x")
        except ValueError:
            pass
    elif ftype in ("float", float):
        try:
            if not isinstance(value, bool):
                return float(value)
        except ValueError:
            pass
    elif ftype in ("str", str):
        if isinstance(value, list):
            return ",".join(map(str, value))
        return str(value)
    raise ValueError(f"{where}: {name} = {value!r} is not a valid {ftype}")


def _model_value(value):
    if isinstance(value, str):
        for conv in (int, float):
            try:
                return conv(value)
            except ValueError:
                pass
        if value.lower() in ("true", "false"):
            return value.lower() == "true"
    return value


def recipe_path(name: str) -> Path:
    p = Path(name)
    if p.suffix == ".toml" and p.exists():
        return p
    q = RECIPES_DIR / f"{name}.toml"
    if q.exists():
        return q
    available = ", ".join(sorted(x.stem for x in RECIPES_DIR.glob("*.toml")))
    raise FileNotFoundError(f"recipe {name!r} not found: give a .toml path or one of: {available}")


def load_recipe(name: str) -> dict:
    """A recipe as a dict of validated keys (model table under 'model_overrides')."""
    path = recipe_path(name)
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: not valid TOML ({e})") from None
    out: dict = {}
    for key, value in raw.items():
        if key == "model" and isinstance(value, dict):
            out["model_overrides"] = dict(value)
            if "preset" in value:
                out["model"] = out["model_overrides"].pop("preset")
            continue
        if key not in _valid_keys():
            raise unknown_key_error(key, str(path))
        out[key] = _coerce(key, value, str(path))
    return out


def build_config(objective: str, recipe: str | None = None, flags: dict | None = None,
                 sets: list[str] | None = None) -> TrainConfig:
    """Defaults < recipe < flags (already typed) < --set KEY=VALUE strings."""
    values: dict = {"objective": objective}
    model_overrides: dict = {}
    if recipe:
        r = load_recipe(recipe)
        model_overrides.update(r.pop("model_overrides", {}))
        r_obj = r.pop("objective", objective)
        if r_obj != objective:
            raise ValueError(f"recipe {recipe!r} is for `llm {r_obj}`, not `llm {objective}`")
        values.update(r)
    for key, value in (flags or {}).items():
        if value is not None:
            values[key] = value
    for item in sets or []:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. --set lr=1e-3 or --set model.n_layer=4")
        key, value = item.split("=", 1)
        key = key.strip().replace("-", "_")
        if key.startswith("model."):
            model_overrides[key[len("model."):]] = _model_value(value)
        elif key in _valid_keys():
            values[key] = _coerce(key, value, f"--set {item}")
        else:
            raise unknown_key_error(key, f"--set {item}")
    values["model_overrides"] = model_overrides
    return TrainConfig(**values)


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """One --flag per TrainConfig field (default None = not given), help from the field's text."""
    parser.add_argument("--recipe", help="a recipe name under llm/recipes/ or a .toml path "
                                         f"(available: {', '.join(list_recipes())})")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any key, e.g. --set lr=1e-3 --set model.n_layer=4 (repeatable)")
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        if f.name in ("objective", "model_overrides"):
            continue
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata.get('help', '')} (default: {getattr(defaults, f.name)!r})"
        if f.type in ("bool", bool):
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                                help=help_text)
        else:
            typ = {"int": int, "float": float, "str": str}.get(f.type if isinstance(f.type, str) else f.type.__name__, str)
            parser.add_argument(flag, dest=f.name, type=typ, default=None, help=help_text)


def list_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.toml"))


def config_from_args(objective: str, ns: argparse.Namespace) -> TrainConfig:
    flags = {f.name: getattr(ns, f.name, None) for f in fields(TrainConfig)
             if f.name not in ("objective", "model_overrides")}
    return build_config(objective, ns.recipe, flags, ns.set).validate()
