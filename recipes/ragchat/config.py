"""Every path of the default-model recipe, defined once. The shared data folder itself is
ragapp.config.SHARED_DATA (../shared/data, or RAGAPP_DATA), which ragapp's evaluation also reads."""

from __future__ import annotations

from pathlib import Path

from ragapp.config import SHARED_DATA

ROOT = Path(__file__).resolve().parents[2]  # the repository
RECIPES_DIR = Path(__file__).resolve().parent  # the app-specific llm recipes, ragchat-*.toml
RUNS = Path("runs/ragchat")  # run folders, relative to the working directory (the recipes' own paths are too)
SMOLLM2_BASE = RUNS / "smollm2" / "base"  # SmolLM2-135M-Instruct imported (make_model --base smollm2)
SHIP_DIR = ROOT / "models" / "ragchat"  # where `ship` writes the default model (the MiniLM warm start)
SMOLLM2_SHIP_DIR = ROOT / "models" / "ragchat-smollm2"  # SmolLM2 + adapters: not the default until it beats it

# training sets only: the recipe never reads an evaluation set
SQUAD_TRAIN = SHARED_DATA / "train" / "squad1.1-train.json.gz"
SUBJQA = SHARED_DATA / "train" / "subjqa"
WIKIQA_TRAIN = SHARED_DATA / "train" / "wikiqa" / "WikiQA-train.tsv"
HALUEVAL_DIR = SHARED_DATA / "train" / "halueval-qa"
PROSE = [SHARED_DATA / "pretrain" / "enwiki2015.jsonl.gz", SHARED_DATA / "pretrain" / "gutenberg.jsonl.gz"]


def recipe_path(name: str) -> str:
    """The path of the llm recipe `name` (e.g. "ragchat-cpu-sft"), for llm.recipe.build_config."""
    return str(RECIPES_DIR / f"{name}.toml")
