"""Multi-process training: `torchrun --nproc_per_node 2` on CPU (gloo). Both ranks must hold identical
weights, and the losses must match one process with the same global batch (DDP and FSDP)."""

import json
import subprocess
import sys

import pytest
from _train_fixtures import config, corpus, losses, subprocess_env, tokenizer

from llm.data import prepare_shards
from llm.train import train

# one torchrun launch runs both trainings (an interpreter start with torch costs seconds here)
DRIVER = """
import json, sys
from llm.recipe import build_config
from llm.train import train
flags = json.loads(sys.argv[1])
for name, extra in (("ddp", {}), ("fsdp", {"fsdp": True})):
    train(build_config("pretrain", flags={**flags, "out_dir": flags["out_dir"] + "/" + name, **extra}).validate())
"""


def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    tok = tokenizer(tmp_path)
    prepare_shards([corpus(tmp_path, n_docs=200)], tok, tmp_path / "shards", progress=False)
    common = dict(data=str(tmp_path / "shards"), tokenizer=str(tmp_path / "tok"), max_steps=6, eval_every=3,
                  save_every=3, eval_batches=2)
    train(config("pretrain", tmp_path / "single", batch_size=4, **common))

    flags = {k: v for k, v in config("pretrain", tmp_path, batch_size=2, **common).to_dict().items()
             if k not in ("objective", "model_overrides")}
    flags["out_dir"] = str(tmp_path / "multi")
    (tmp_path / "driver.py").write_text(DRIVER)
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        str(tmp_path / "driver.py"), json.dumps(flags)],
                       env=subprocess_env(), capture_output=True, text=True, timeout=240)
    # the cause comes first in stderr, torchrun's long failure summary last: show both
    causes = [ln for ln in p.stderr.splitlines() if any(w in ln for w in ("Error", "terminate", "what()"))]
    assert p.returncode == 0, (p.stdout[-1500:], causes[:20], p.stderr[-1500:])

    single = tmp_path / "single" / "run"
    for name in ("ddp", "fsdp"):
        run = tmp_path / "multi" / name
        s = json.loads((run / "summary.json").read_text())
        assert s["world_size"] == 2 and s["step"] == 6
        assert s["rank_fingerprints"][0] == s["rank_fingerprints"][1]  # both ranks hold the same weights
        assert losses(run) == pytest.approx(losses(single), abs=1e-5)
        assert losses(run, "val") == pytest.approx(losses(single, "val"), abs=1e-5)
        assert (run / "final" / "model.safetensors").is_file() and (run / "final" / "rng-rank1.pt").is_file()
    from llm.checkpoint import load_pretrained

    load_pretrained(tmp_path / "multi" / "fsdp" / "final")  # the gathered FSDP weights load strictly
