"""Which starting point for the default model? Measure both at the same small CPU budget.

  A  from scratch: llama arch (the 5M preset), our byte-level BPE tokenizer trained on the prose,
     pretrained on the prose (recipes/ragchat/ragchat-scratch-{pretrain,sft}.toml)
  B  warm start from all-MiniLM-L6-v2 as a prefix-LM, a short causal-LM pass on the prose
     (recipes/ragchat/ragchat-cpu-{pretrain,sft}.toml, run folders under runs/ragchat/compare/warm)

Both then get SFT on the same grounded QA examples (each fitted in its own tokens) and are scored on
the same held-out dev prompts. The budget is wall-clock seconds per stage (COMPARE_SECONDS), with the
two candidates training AT THE SAME TIME on one CPU thread each, so both see the same machine load.
Steps are set from a short timing probe of each stage, so each schedule (warmup + cosine) completes
within its budget.

    python -m recipes.ragchat.make_model --compare      # writes runs/ragchat/compare/results.json
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

from recipes.ragchat.config import RUNS, recipe_path
from recipes.ragchat.prepare import data, log, scratch_tokenizer, tokens, warmstart

# the budget: the same number of CPU-seconds for each candidate's pretraining and SFT
COMPARE_SECONDS = {"pretrain": 15 * 60, "sft": 25 * 60}

ARMS = {
    "scratch": {"pretrain": "ragchat-scratch-pretrain", "sft": "ragchat-scratch-sft",
                "tokenizer": RUNS / "scratch" / "tokenizer", "data": RUNS / "data" / "scratch"},
    "warm": {"pretrain": "ragchat-cpu-pretrain", "sft": "ragchat-cpu-sft",
             "tokenizer": RUNS / "warmstart", "data": RUNS / "data" / "minilm"},
}
OUT = RUNS / "compare"


def _sets(arm: str, stage: str, root: Path) -> list[str]:
    out = root / arm / stage
    sets = [f"out_dir={out}", "threads=1", "progress=false"]
    if stage == "sft":
        sets.append(f"init={root / arm / 'pretrain' / 'final'}")
    return sets


def probe(recipe: str, sets: list[str], steps: int = 6, root: Path = OUT) -> float:
    """Seconds per optimizer step of this recipe on this machine now (first step excluded)."""
    from llm.recipe import build_config
    from llm.train import train

    out = root / "probe" / recipe
    shutil.rmtree(out, ignore_errors=True)
    cfg = build_config(recipe.split("-")[-1], recipe_path(recipe), None,
                       sets + [f"out_dir={out}", f"max_steps={steps}", "warmup_steps=1", "eval_every=0",
                               "save_every=0", "eval_batches=1", "log_every=1", "plot=false"])
    train(cfg)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    times = [1.0 / r["tokens_per_s"] * (r["tokens"] - prev["tokens"])
             for prev, r in zip(rows, rows[1:]) if r.get("split") == "train" and prev.get("split") == "train"]
    shutil.rmtree(out, ignore_errors=True)
    return sum(times) / max(1, len(times))


def run_arm(arm: str, root: Path = OUT, seconds: dict | None = None) -> dict:
    """One candidate's pretraining and SFT within the budget, then its dev score (runs in a subprocess)."""
    from llm.recipe import build_config
    from llm.train import train
    from recipes.ragchat.model_eval import evaluate_model

    spec, seconds = ARMS[arm], seconds or COMPARE_SECONDS
    result = {"arm": arm, "budget_seconds": seconds}
    for stage in ("pretrain", "sft"):
        sets = _sets(arm, stage, root)
        plan = root / arm / f"{stage}.plan.json"
        if plan.exists():  # a resumed comparison keeps the steps it planned
            steps = json.loads(plan.read_text())["max_steps"]
        else:
            per_step = probe(spec[stage], sets, root=root)
            steps = max(10, int(seconds[stage] / per_step))
            plan.parent.mkdir(parents=True, exist_ok=True)
            plan.write_text(json.dumps({"seconds_per_step": per_step, "max_steps": steps}) + "\n")
        warmup = max(2, steps // 12)
        cfg = build_config(stage, recipe_path(spec[stage]), None,
                           sets + [f"max_steps={steps}", f"warmup_steps={warmup}", f"save_every={max(5, steps // 10)}",
                                   f"eval_every={steps}"])
        log(f"{arm}: {stage} for {steps} steps ({spec[stage]})")
        summary = train(cfg)
        result[stage] = {"steps": steps, "seconds": summary["train_seconds"], "tokens": summary["tokens"],
                         "val": summary["val"]}
    ev = evaluate_model(root / arm / "sft" / "final", spec["data"] / "dev.jsonl", root / arm / "dev.json")
    result["dev"] = {k: v for k, v in ev.items() if k not in ("model", "dev")}
    (root / arm / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def compare(root: Path = OUT, seconds: dict | None = None) -> dict:
    """Both candidates at once (one CPU thread each) within `seconds` per stage; results in ROOT/results.json."""
    seconds = seconds or COMPARE_SECONDS
    warmstart()
    scratch_tokenizer()
    for arm, spec in ARMS.items():
        tokens(spec["tokenizer"], RUNS / "tokens" / ("minilm" if arm == "warm" else "scratch"))
        data(spec["tokenizer"], spec["data"])
    procs = {}
    for arm in ARMS:
        if (root / arm / "result.json").exists():
            continue
        (root / arm).mkdir(parents=True, exist_ok=True)
        logf = open(root / arm / "log.txt", "a")
        procs[arm] = subprocess.Popen([sys.executable, "-m", "recipes.ragchat.model_compare", arm, "--root", str(root),
                                       "--pretrain-minutes", str(seconds["pretrain"] / 60),
                                       "--sft-minutes", str(seconds["sft"] / 60)], stdout=logf, stderr=subprocess.STDOUT)
        log(f"candidate {arm}: pid {procs[arm].pid}, log {root / arm / 'log.txt'}")
    for arm, p in procs.items():
        if p.wait() != 0:
            raise SystemExit(f"candidate {arm} failed (exit {p.returncode}); see {root / arm / 'log.txt'}")
    results = {arm: json.loads((root / arm / "result.json").read_text()) for arm in ARMS}
    for arm, r in results.items():  # held-out answer loss in bits per character: comparable across tokenizers
        per_char = tokens_per_char(ARMS[arm]["tokenizer"], ARMS[arm]["data"] / "sft-val.jsonl")
        r["sft"]["val_bits_per_char"] = r["sft"]["val"]["loss"] / math.log(2) * per_char
    (root / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    from benchmarks._report import write_section

    rounds = {r: json.loads((r / "results.json").read_text()) for r in sorted(RUNS.glob("compare*"))
              if (r / "results.json").exists()}
    write_section("default model candidates", compare_markdown(rounds))
    return results


def tokens_per_char(tokenizer_dir: Path, sft_path: Path) -> float:
    """Answer tokens (with the end-of-turn token the SFT loss also covers) per answer character."""
    from llm.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer_dir)
    answers = [json.loads(line)["messages"][-1]["content"] for line in sft_path.read_text().splitlines()]
    n_tok = sum(len(tok(a, add_special_tokens=False)["input_ids"]) + 1 for a in answers)
    return n_tok / sum(len(a) + 1 for a in answers)


def compare_markdown(rounds: dict) -> str:
    """One table row per candidate and budget."""
    rows = ["| candidate | budget (wall clock) | pretrain: steps, tokens | SFT: steps, tokens "
            "| held-out answer loss (bits/char) | dev EM (all) | answerable EM / F1 | abstention on unanswerable "
            "| false abstention |", "|---|---|---|---|---|---|---|---|---|"]
    names = {"scratch": "A: 5M llama from scratch, own BPE", "warm": "B: MiniLM warm start (prefix-LM)"}
    for results in rounds.values():
        for arm, r in results.items():
            p, s, d = r["pretrain"], r["sft"], r["dev"]
            budget = r.get("budget_seconds", COMPARE_SECONDS)
            rows.append(
                f"| {names[arm]} | {budget['pretrain'] / 60:.0f} + {budget['sft'] / 60:.0f} min | {p['steps']}, "
                f"{p['tokens'] / 1e6:.2f}M | {s['steps']}, {s['tokens'] / 1e6:.2f}M | "
                f"{s.get('val_bits_per_char', float('nan')):.3f} | {d['overall_em']:.1f} | {d.get('answerable_em', 0):.1f} / "
                f"{d.get('answerable_f1', 0):.1f} | {d.get('abstention', 0):.1f}% | {d.get('false_abstention', 0):.1f}% |")
    return "\n".join([
        "## Default model: starting point",
        "",
        "`python -m recipes.ragchat.make_model --compare [--pretrain-minutes M --sft-minutes N]`. Both candidates train at "
        "the same time on one CPU thread each (same machine load), each stage for the same wall-clock budget "
        "(steps set from a timing probe), then answer the same held-out dev prompts (generator alone, greedy). "
        "\"held-out answer loss\" is the SFT loss on held-out answers converted to bits per character, so that "
        "the two tokenizers compare. Dev EM (all) counts an abstention on an unanswerable prompt as exact: a model "
        "that always abstains scores 54.5 on this dev set.",
        "",
        *rows,
    ])


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m recipes.ragchat.model_compare", description="one candidate of the comparison")
    ap.add_argument("arm", choices=sorted(ARMS))
    ap.add_argument("--root", type=Path, default=OUT, help="run folders go under ROOT/ARM (default: %(default)s)")
    ap.add_argument("--pretrain-minutes", type=float, default=COMPARE_SECONDS["pretrain"] / 60)
    ap.add_argument("--sft-minutes", type=float, default=COMPARE_SECONDS["sft"] / 60)
    a = ap.parse_args(argv)
    run_arm(a.arm, a.root, {"pretrain": a.pretrain_minutes * 60, "sft": a.sft_minutes * 60})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
