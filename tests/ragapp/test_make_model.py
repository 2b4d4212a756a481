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
