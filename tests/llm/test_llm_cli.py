import json
import subprocess
import time

import pytest
from _train_fixtures import (
    PYTHON,
    corpus,
    save_tiny_model,
    subprocess_env,
    tokenizer,
    write_jsonl,
)

from llm.cli import main
from llm.recipe import TrainConfig, build_config, list_recipes, load_recipe


def test_help_is_instant_and_imports_no_torch():
    code = ("import sys, time; t = time.perf_counter(); from llm.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(time.perf_counter() - t, 'torch' in sys.modules, 'transformers' in sys.modules)")
    start = time.perf_counter()
    p = subprocess.run([PYTHON, "-c", code], env=subprocess_env(), capture_output=True, text=True, timeout=30)
    wall = time.perf_counter() - start
    *help_lines, last = p.stdout.strip().splitlines()
    seconds, torch_loaded, tf_loaded = last.split()
    assert torch_loaded == "False" and tf_loaded == "False"
    assert wall < 1.5, wall
    help_text = "\n".join(help_lines)
    for cmd in ("tokenizer", "prepare", "pretrain", "sft", "dpo", "reward", "rl", "classify", "generate", "eval",
                "export", "import", "recipes"):
        assert cmd in help_text


def test_train_help_comes_from_the_dataclass(capsys):
    with pytest.raises(SystemExit):
        main(["sft", "--help"])
    out = capsys.readouterr().out
    assert "--grad-accum GRAD_ACCUM" in out and "micro-batches per optimizer step" in out
    assert "--resume, --no-resume" in out and "--set KEY=VALUE" in out


@pytest.mark.parametrize("argv,msg", [
    (["pretrain", "--lrr", "1"], "unknown key 'lrr' (did you mean 'lr'?). Valid keys: objective, out_dir"),
    (["pretrain", "--data", "x", "--set", "batchsize=3"], "unknown key 'batchsize' (did you mean 'batch_size'?)"),
    (["pretrain", "--data", "x", "--set", "lr"], "expected KEY=VALUE"),
    (["pretrain", "--data", "x", "--set", "max_steps=many"], "max_steps = 'many' is not a valid int"),
    (["pretrain", "--data", "x", "--batch-size", "0"], "--batch-size=0 must be >= 1"),
    (["pretrain"], "--data is required"),
    (["pretrain", "--data", "x", "--recipe", "nope"], "recipe 'nope' not found: give a .toml path or one of:"),
    (["sft", "--data", "x", "--recipe", "dpo"], "recipe 'dpo' is for `llm dpo`, not `llm sft`"),
    (["rl", "--data", "x"], "--reward-model is required for rl"),
])
def test_bad_arguments_are_one_line_errors(capsys, argv, msg):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("llm: error: ") and msg in err and len(err.strip().splitlines()) == 1


def test_recipe_unknown_key_names_it(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('objective = "pretrain"\nlearning_rate = 1e-3\n')
    with pytest.raises(ValueError, match=r"bad.toml: unknown key 'learning_rate'.*Valid keys: objective"):
        load_recipe(str(bad))


def test_precedence_defaults_recipe_flags_set():
    cfg = build_config("pretrain", "pretrain-5m", flags={"lr": 1e-4, "seq_len": None},
                       sets=["seq_len=64", "model.n_layer=2", "lora=true"])
    assert TrainConfig().lr == 3e-4 and load_recipe("pretrain-5m")["lr"] == 2e-3
    assert cfg.lr == 1e-4 and cfg.seq_len == 64 and cfg.batch_size == 8 and cfg.lora is True
    assert cfg.model == "5m" and cfg.model_overrides == {"n_layer": 2}
    assert cfg.grad_accum == 4 and cfg.weight_decay == 0.1  # from the recipe
    assert cfg.eval_batches == 10 and cfg.beta2 == 0.95  # recipe / default


def test_every_checked_in_recipe_loads():
    assert {"tiny-pretrain", "pretrain-5m", "sft", "dpo", "reward", "rl", "classify"} <= set(list_recipes())
    for name in list_recipes():
        r = load_recipe(name)
        build_config(r.get("objective", "pretrain"), name)


def test_pipeline_through_the_cli(tmp_path, capsys):
    src = corpus(tmp_path, n_docs=200)
    assert main(["tokenizer", str(src), "--out", str(tmp_path / "tok"), "--vocab-size", "320"]) == 0
    assert main(["prepare", str(src), "--tokenizer", str(tmp_path / "tok"), "--out", str(tmp_path / "tokens"),
                 "--val-every", "20"]) == 0
    assert "190 + 10 held-out documents" in capsys.readouterr().out
    run = tmp_path / "pre"
    assert main(["pretrain", "--recipe", "tiny-pretrain", "--data", str(tmp_path / "tokens"), "--tokenizer",
                 str(tmp_path / "tok"), "--out-dir", str(run), "--max-steps", "12", "--seq-len", "32",
                 "--eval-every", "6", "--no-progress", "--no-plot"]) == 0
    out = capsys.readouterr().out
    assert "done: 12 steps" in out and f"model in {run / 'final'}" in out
    assert main(["eval", str(run / "final"), str(src), "--seq-len", "32", "--max-batches", "2"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert r["kind"] == "text" and r["tokens"] == 2 * 8 * 32 and r["ppl"] == pytest.approx(2.718281828 ** r["loss"])

    chat = write_jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": "say cat"},
                                                               {"role": "assistant", "content": "cat"}]}] * 8)
    assert main(["sft", "--init", str(run / "final"), "--data", str(chat), "--out-dir", str(tmp_path / "sft"),
                 "--max-steps", "3", "--seq-len", "32", "--batch-size", "4", "--threads", "1", "--no-progress",
                 "--no-plot"]) == 0
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "sft" / "final"), str(chat), "--seq-len", "32"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    from llm.tokenizer import load_tokenizer

    answer = len(load_tokenizer(tmp_path / "tok").encode("cat", add_special_tokens=False)) + 1  # + <|end|>
    assert r["kind"] == "chat" and r["tokens"] == 8 * answer
    assert main(["generate", str(tmp_path / "sft" / "final"), "say", "dog", "--chat", "--max-new-tokens", "4"]) == 0
    assert capsys.readouterr().out.endswith("\n")
    assert main(["export", str(tmp_path / "sft" / "final"), str(tmp_path / "hf")]) == 0
    assert (tmp_path / "hf" / "config.json").is_file()
    assert main(["import", str(tmp_path / "hf"), str(tmp_path / "back")]) == 0
    assert (tmp_path / "back" / "model.safetensors").is_file()


def test_missing_files_are_clear(tmp_path, capsys):
    tok = tokenizer(tmp_path)
    base = save_tiny_model(tmp_path, tok)
    assert main(["sft", "--init", str(base), "--data", str(tmp_path / "nope.jsonl"), "--out-dir",
                 str(tmp_path / "r"), "--no-progress"]) == 2
    assert "nope.jsonl: no such file" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "nockpt"), str(tmp_path / "x.txt")]) == 2
    assert "nockpt: no such checkpoint folder" in capsys.readouterr().err
