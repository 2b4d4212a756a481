"""Speed of the shipped default model (models/ragchat) on this CPU: time to first token and decode
tokens/s, through the real serving path (ragapp's llm backend: chat template, prefix-LM prefill,
KV-cache decoding, casing restoration).

Prompts are real grounded prompts (ragapp.answer.prompt.build_messages over Wikipedia paragraphs), cut to
the target length in the model's own tokens. The model reads at most its max_seq_len (512) tokens, so
a 2,000-token prompt cannot be served by it; the 2,000-token row is measured on the same weights with
the learned position table tiled to 2,048 positions (what a longer-context version of this
architecture costs), and says so.

Time to first token = from the call to the first text piece (tokenization, prefill, one decode step).
Decode speed = new tokens after the first over the time after the first (stop tokens disabled).
Median of --reps, run round-robin.

    nice -n 10 .venv/bin/python benchmarks/bench_model.py       # writes its BENCHMARKS.md section
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from ragapp.config import SHARED_DATA  # noqa: E402

WIKI = SHARED_DATA / "pretrain" / "enwiki2015.jsonl.gz"
MODEL = ROOT / "models" / "ragchat"


def paragraphs(n: int = 40) -> list[str]:
    out = []
    with gzip.open(WIKI, "rt", encoding="utf-8") as fh:
        for line in fh:
            for para in json.loads(line)["text"].split("\n"):
                if len(para.split()) > 60:
                    out.append(para.strip())
                    if len(out) >= n:
                        return out
    return out


def prompt_of(gen, target: int, paras: list[str]) -> tuple[list[dict], int]:
    """Grounded messages whose rendered prompt is as close to `target` tokens as whole words allow."""
    from ragapp.answer.prompt import build_messages, fit_passages
    from ragapp.types import Passage

    passages = [Passage(p, f"wiki/{i:03d}.txt", None, 0.0, i) for i, p in enumerate(paras)]
    question = "When was the city founded, and by whom?"
    shown = fit_passages(question, passages, gen.prompt_tokens, target, gen.special_tokens, min_passage_tokens=1)
    messages = build_messages(question, shown, gen.special_tokens)
    return messages, gen.prompt_tokens(messages)


def time_stream(gen, messages, new_tokens: int) -> tuple[float, float, int]:
    """(seconds to the first piece, decode tokens/s after it, tokens generated)."""
    import torch

    from llm.generate import _token_steps

    ids = gen.tokenizer(gen.render(messages), add_special_tokens=False)["input_ids"]
    t0 = time.perf_counter()
    first, n = None, 0
    with torch.inference_mode(), gen.model.fused_for_inference():
        for _ in _token_steps(gen.model, [ids], new_tokens, prefix_lm=gen.prefix_lm):
            n += 1
            if first is None:
                first = time.perf_counter()
    end = time.perf_counter()
    return first - t0, (n - 1) / max(end - first, 1e-9), n


def ttft_through_backend(gen, messages) -> float:
    """Seconds to the first text piece through the real LLMGenerator.stream (template, stop filter, recasing)."""
    t0 = time.perf_counter()
    for _ in gen.stream(messages, max_new_tokens=16):
        return time.perf_counter() - t0
    return float("nan")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(MODEL))
    parser.add_argument("--prompt-tokens", default="128,448,2000")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="print the table, leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)

    import copy

    import torch

    from benchmarks._report import machine, publish
    from ragapp.generate.llm_backend import LLMGenerator

    gen = LLMGenerator(Path(args.model), device="cpu")
    cfg = gen.model.config
    paras = paragraphs()
    long_gen = None
    rows = []
    for target in [int(x) for x in args.prompt_tokens.split(",")]:
        g = gen
        note = ""
        if target + args.new_tokens > cfg.max_seq_len:
            if long_gen is None:  # same weights, position table tiled to 2,048 (compute only; never served)
                long_gen = copy.copy(gen)
                long_gen.model = copy.deepcopy(gen.model)
                reps = -(-2048 // cfg.max_seq_len)
                table = gen.model.pos_emb.weight.detach().repeat(reps, 1)[:2048]
                long_gen.model.pos_emb = torch.nn.Embedding.from_pretrained(table, freeze=True)
                long_gen.model.config = cfg.replace(max_seq_len=2048)
                long_gen.context_tokens = 2048
            g, note = long_gen, f" (beyond the model's {cfg.max_seq_len}-token context: compute only)"
        messages, n = prompt_of(g, target, paras)
        runs = [time_stream(g, messages, args.new_tokens) for _ in range(args.reps)]
        backend = [ttft_through_backend(g, messages) for _ in range(args.reps)] if not note else []
        ttft = statistics.median(r[0] for r in runs)
        tps = statistics.median(r[1] for r in runs)
        rows.append((n, note, ttft, statistics.median(backend) if backend else None, tps))
        print(f"prompt {n} tokens{note}: TTFT {ttft * 1000:.0f} ms, decode {tps:.1f} tokens/s", flush=True)

    size = (Path(args.model) / "model.safetensors").stat().st_size / 1e6
    lines = ["## Default model speed", "",
             f"`benchmarks/bench_model.py` on {machine()}, torch threads {torch.get_num_threads()}: the shipped "
             f"model `models/ragchat` ({gen.model.num_params(non_embedding=False) / 1e6:.1f}M parameters, "
             f"{size:.0f} MB fp16 on disk, fp32 in memory; arch {cfg.arch}, prefix-LM, context {cfg.max_seq_len} "
             f"tokens), grounded prompts of Wikipedia paragraphs, greedy, median of {args.reps}. Target: time to "
             "first token < 0.5 s with a 2,000-token prompt.", "",
             "| prompt tokens | time to first token | through the chat backend | decode tokens/s |", "|---|---|---|---|"]
    for n, note, ttft, backend, tps in rows:
        b = f"{backend * 1000:.0f} ms" if backend is not None else "-"
        lines.append(f"| {n}{note} | {ttft * 1000:.0f} ms | {b} | {tps:.1f} |")
    lines += ["", "Serving never builds a prompt longer than the context minus the answer budget "
              "(`ragapp.answer.prompt.fit_passages`), so the 448-token row is what `ragapp ask` pays per answer."]
    md = "\n".join(lines)
    publish("default model speed", md, write=not args.no_write)


if __name__ == "__main__":
    main()
