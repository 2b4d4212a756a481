"""An interrupted and resumed run must reproduce the uninterrupted run's loss curve exactly:
Ctrl-C (SIGINT) saves a checkpoint and exits cleanly; after SIGKILL the run resumes from the last
checkpoint and recomputes the lost steps identically."""

import json
import signal
import subprocess
import time

import pytest
from _train_fixtures import (
    PYTHON,
    config,
    corpus,
    losses,
    metrics,
    save_tiny_model,
    subprocess_env,
    tokenizer,
    write_jsonl,
)

from llm.cli import main
from llm.data import prepare_shards
from llm.train import SIGNAL_HOOK_ENV, train

STEPS = 20


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resume")
    tok = tokenizer(tmp)
    prepare_shards([corpus(tmp, n_docs=200)], tok, tmp / "shards", progress=False)
    return tmp, tok


def _flags(tmp, out, **kw):
    # dropout on, so the RNG state matters too
    return dict(data=str(tmp / "shards"), tokenizer=str(tmp / "tok"), out_dir=str(out), max_steps=STEPS,
                save_every=4, eval_every=5, **kw)


@pytest.fixture(scope="module")
def straight(env):
    tmp, _ = env
    train(config("pretrain", tmp, sets=["model.dropout=0.1"], **_flags(tmp, tmp / "straight")))
    return losses(tmp / "straight"), losses(tmp / "straight", "val")


def test_sigint_in_process_then_resume_is_exact(env, straight, tmp_path, monkeypatch):
    tmp, _ = env
    cfg = config("pretrain", tmp, sets=["model.dropout=0.1"], **_flags(tmp, tmp_path / "run"))
    monkeypatch.setenv(SIGNAL_HOOK_ENV, "10:SIGINT")
    s = train(cfg)
    assert s["interrupted"] and s["step"] == 10
    assert (tmp_path / "run" / "latest").read_text().strip() == "step-000010"
    assert len(losses(tmp_path / "run")) == 10
    monkeypatch.delenv(SIGNAL_HOOK_ENV)
    s = train(cfg)
    assert not s["interrupted"] and s["step"] == STEPS
    assert losses(tmp_path / "run") == pytest.approx(straight[0], abs=1e-6)
    assert losses(tmp_path / "run", "val") == pytest.approx(straight[1], abs=1e-6)


def _cli(tmp, out, extra=()):
    f = _flags(tmp, out)
    args = [PYTHON, "-m", "llm.cli", "pretrain", "--set", "model.dropout=0.1", "--no-progress", "--no-plot",
            "--threads", "1", "--seq-len", "32", "--batch-size", "4", "--warmup-steps", "2", "--lr", "3e-3",
            "--log-every", "1", "--eval-batches", "2"]
    for k, v in f.items():
        args += ["--" + k.replace("_", "-"), str(v)]
    return args + list(extra)


def test_sigkill_in_a_subprocess_resumes_from_the_last_checkpoint(env, straight, tmp_path, capsys):
    tmp, _ = env
    e = subprocess_env()
    e[SIGNAL_HOOK_ENV] = "10:SIGKILL"  # dies after step 10; the last checkpoint is step 8
    p = subprocess.run(_cli(tmp, tmp_path / "run"), env=e, capture_output=True, text=True, timeout=120)
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    assert (tmp_path / "run" / "latest").read_text().strip() == "step-000008"
    assert len(losses(tmp_path / "run")) == 10  # steps 9-10 were logged but not checkpointed
    # the same command again (in this process, to save an interpreter start)
    assert main(_cli(tmp, tmp_path / "run")[3:]) == 0
    assert "step-000008 at step 8" in capsys.readouterr().out
    assert losses(tmp_path / "run") == pytest.approx(straight[0], abs=1e-6)


def test_ctrl_c_from_outside_saves_and_exits_cleanly(env, tmp_path):
    tmp, _ = env
    out = tmp_path / "run"
    args = _cli(tmp, out, ["--max-steps", "5000", "--eval-every", "0", "--save-every", "0"])
    p = subprocess.Popen(args, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 90
    while time.time() < deadline:
        if (out / "metrics.jsonl").exists() and len((out / "metrics.jsonl").read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=60)
    assert p.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr
    step = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["step"]
    assert f"interrupted at step {step}: checkpoint saved" in stdout and step < 5000
    assert (out / "latest").read_text().strip() == f"step-{step:06d}"
    # the same command continues from there (here with a nearer end)
    assert main(_cli(tmp, out, ["--max-steps", str(step + 2), "--eval-every", "0", "--save-every", "0"])[3:]) == 0
    assert [r["step"] for r in metrics(out)][-3:] == [step, step + 1, step + 2]


def test_sft_resume_is_exact_too(env, tmp_path, monkeypatch):
    tmp, tok = env
    base = save_tiny_model(tmp_path, tok, dropout=0.1)
    rows = [{"messages": [{"role": "user", "content": f"say {w}"}, {"role": "assistant", "content": f"{w} yes"}]}
            for w in ["cat", "dog", "sun", "mat", "hills", "woods", "red"] * 3]
    data = write_jsonl(tmp_path / "sft.jsonl", rows)
    kw = dict(init=str(base), data=str(data), max_steps=8, save_every=3, batch_size=3)
    train(config("sft", tmp_path / "a", **kw))
    monkeypatch.setenv(SIGNAL_HOOK_ENV, "5:SIGINT")
    assert train(config("sft", tmp_path / "b", **kw))["interrupted"]
    monkeypatch.delenv(SIGNAL_HOOK_ENV)
    train(config("sft", tmp_path / "b", **kw))
    assert losses(tmp_path / "b" / "run") == pytest.approx(losses(tmp_path / "a" / "run"), abs=1e-6)
