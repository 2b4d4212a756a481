"""The default model's remake command: its stage selection and its refusal of unknown stages."""

import pytest

from ragapp.make_model import STAGES, main, parse_stages


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
    from llm.recipe import load_recipe

    from ragapp.make_model import TRAIN_STAGES

    for scale in ("cpu", "gpu"):
        for stage in set(parse_stages(None, scale)) & set(TRAIN_STAGES):
            assert load_recipe(f"ragchat-{scale}-{stage}")["objective"] == stage.split("-")[0]
    # the ablation trains the same SFT from the warm start instead of the prose pass
    direct, sft = load_recipe("ragchat-gpu-sft-direct"), load_recipe("ragchat-gpu-sft")
    assert direct["init"] == "runs/ragchat/warmstart" and sft["init"] == "runs/ragchat/gpu/pretrain/final"
    assert {k: v for k, v in direct.items() if k not in ("init", "out_dir")} == \
        {k: v for k, v in sft.items() if k not in ("init", "out_dir")}
