"""The default model's remake command: its stage selection, its refusal of unknown stages, and its recipes
(recipes/ragchat/ragchat-*.toml, beside the code, not among llm's generic ones)."""

import pytest

from recipes.ragchat.make_model import STAGES, main, parse_stages


def test_default_pipelines():
    assert parse_stages(None, "cpu") == ["warmstart", "data", "sft", "dpo", "eval", "ship"]
    assert parse_stages(None, "gpu") == list(STAGES)
    assert parse_stages("sft, eval", "cpu") == ["sft", "eval"]


def test_unknown_stage_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--stages", "sft,finetune"])
    assert exc.value.code == 2
    assert "unknown stage(s) finetune; choose from warmstart, tokens, data" in capsys.readouterr().err


def test_every_training_stage_of_a_pipeline_has_its_recipe():
    from llm.recipe import load_recipe as load
    from recipes.ragchat.config import recipe_path
    from recipes.ragchat.make_model import TRAIN_STAGES

    def load_recipe(name):
        return load(recipe_path(name))

    for scale in ("cpu", "gpu"):
        for stage in set(parse_stages(None, scale)) & set(TRAIN_STAGES):
            assert load_recipe(f"ragchat-{scale}-{stage}")["objective"] == stage.split("-")[0]
    # the ablation trains the same SFT from the warm start instead of the prose pass
    direct, sft = load_recipe("ragchat-gpu-sft-direct"), load_recipe("ragchat-gpu-sft")
    assert direct["init"] == "runs/ragchat/warmstart" and sft["init"] == "runs/ragchat/gpu/pretrain/final"
    assert {k: v for k, v in direct.items() if k not in ("init", "out_dir")} == \
        {k: v for k, v in sft.items() if k not in ("init", "out_dir")}


def test_the_app_recipes_live_beside_the_recipe_not_in_llm():
    from llm.recipe import RECIPES_DIR
    from recipes.ragchat.config import RECIPES_DIR as OWN

    assert not list(RECIPES_DIR.glob("ragchat-*.toml")) and len(list(OWN.glob("ragchat-*.toml"))) == 13


def test_smollm2_path_stages_and_recipes(capsys):
    from llm.recipe import load_recipe
    from recipes.ragchat.config import SMOLLM2_BASE, recipe_path
    from recipes.ragchat.make_model import SMOLLM2_STAGES, SMOLLM2_TRAIN_STAGES, data_dir

    assert parse_stages(None, "smollm2") == ["import", "data", "sft-lora", "eval", "ship"]
    for stage in SMOLLM2_TRAIN_STAGES:
        r = load_recipe(recipe_path(f"ragchat-smollm2-{stage}"))
        sft = stage.startswith("sft")
        assert r["objective"] == ("sft" if sft else "dpo")
        assert r["init"] == str(SMOLLM2_BASE if sft else "runs/ragchat/smollm2/sft-lora/final")
        assert r["data"] == str(data_dir("smollm2") / ("sft.jsonl" if sft else "dpo.jsonl"))
        assert r["out_dir"] == f"runs/ragchat/smollm2/{stage}"
        assert r["dtype"] == "fp32" and r["threads"] == 2 and r.get("lora", False) == (stage != "sft-full")
    with pytest.raises(SystemExit) as exc:
        main(["--base", "smollm2", "--stages", "sft"])
    assert exc.value.code == 2
    assert f"unknown stage(s) sft; choose from {', '.join(SMOLLM2_STAGES)}" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--base", "smollm2", "--scale", "gpu"])
