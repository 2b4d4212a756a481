"""Training throughput of our loop (llm.train) against a minimal reference loop, on this CPU.

Both train the same model (preset, seq_len, batch, threads) on the same token windows of real text
(the shared Wikipedia corpus, tokenized with a BPE tokenizer trained here); the reference loop is the
textbook one: forward, backward, AdamW step, nothing else. Our loop adds what a real run needs
(token-exact loss normalisation, clipping, the LR schedule, metrics, no-decay groups).
Reported: tokens/s of both (median over timed steps after warm-up), their ratio, and MFU = tokens/s x
training FLOPs per token (GPT.flops_per_token: 6N + attention) / peak FLOP/s, where the peak is
measured here as the best rate of a large fp32 matmul with the same thread count.

    nice -n 10 .venv/bin/python benchmarks/bench_training.py            # writes its BENCHMARKS.md section
    nice -n 10 .venv/bin/python benchmarks/bench_training.py --quick    # a smoke run, no write
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CORPUS = ROOT.parent / "shared" / "data" / "pretrain" / "enwiki2015.jsonl.gz"


def peak_flops(threads: int, n: int = 2048, reps: int = 6, device: str = "cpu") -> float:
    """Best matmul rate (FLOP/s) of an n x n x n product: fp32 with `threads` threads on CPU, bf16 on CUDA."""
    import torch

    torch.set_num_threads(threads)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b  # warm-up (allocation, thread pool)
    best = float("inf")
    for _ in range(reps):
        _sync(device)
        t = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def prepare(work: Path, docs: int):
    from llm.data import prepare_shards
    from llm.tokenizer import train_tokenizer

    tok = train_tokenizer([CORPUS], vocab_size=8192, out_dir=work / "tok", max_docs=docs, progress=False)
    prepare_shards([CORPUS], tok, work / "tokens", max_docs=docs, val_every=50, progress=False)
    return tok


def reference_loop(preset: str, vocab: int, seq_len: int, batch: int, steps: int, warmup: int, threads: int,
                   data_dir: Path, device: str = "cpu") -> float:
    """The minimal loop: tokens/s (median over timed steps). CUDA: bf16 autocast, fused AdamW, compiled."""
    import contextlib

    import torch

    from llm.config import get_preset
    from llm.data import EpochSampler, PackedWindows
    from llm.model import GPT

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = GPT(get_preset(preset, vocab_size=vocab, max_seq_len=max(seq_len, 256))).to(device).train()
    cuda = device == "cuda"
    if cuda:
        model.compile()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1,
                            **({"fused": True} if cuda else {}))
    windows = PackedWindows(data_dir, "train", seq_len)
    sampler = EpochSampler(len(windows), seed=0)
    rates = []
    for step in range(warmup + steps):
        _sync(device)
        t = time.perf_counter()
        b = windows.batch(sampler(step * batch, batch))
        with torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext():
            _, loss = model(b["idx"].to(device), b["targets"].to(device))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        if step >= warmup:
            rates.append(batch * seq_len / (time.perf_counter() - t))
    return statistics.median(rates)


def our_loop(preset: str, seq_len: int, batch: int, steps: int, warmup: int, threads: int, work: Path,
             device: str = "cpu") -> float:
    from llm.recipe import build_config
    from llm.train import train

    out = Path(tempfile.mkdtemp(dir=work))
    cfg = build_config("pretrain", flags=dict(
        data=str(work / "tokens"), tokenizer=str(work / "tok"), out_dir=str(out), model=preset, seq_len=seq_len,
        batch_size=batch, max_steps=warmup + steps, warmup_steps=2, lr=1e-3, eval_every=0, eval_batches=1,
        save_every=0, log_every=1, progress=False, plot=False, threads=threads, device=device,
        compile=device == "cuda")).validate()
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        train(cfg)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(r["tokens_per_s"] for r in rows if r.get("split") == "train" and r["step"] > warmup)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few steps, one configuration, no BENCHMARKS.md write")
    ap.add_argument("--steps", type=int, default=6, help="timed steps per measurement")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2, help="alternating ours/reference measurements; best kept")
    ap.add_argument("--device", default="cpu", help="cpu (fp32) or cuda (bf16 autocast + torch.compile, 60m "
                                                    "model; MFU against the measured bf16 matmul peak)")
    a = ap.parse_args()
    import torch

    from llm.config import get_preset
    from llm.model import GPT

    work = Path(tempfile.mkdtemp(prefix="bench_training_"))
    tok = prepare(work, docs=150 if a.quick else 600)
    vocab = len(tok)
    dev = a.device
    if dev == "cuda":
        a.seq_len = 1024
        grid = [("60m", b, 1) for b in (16, 32, 64)]
    else:
        grid = [("5m", 8, 2)] if a.quick else [("5m", b, t) for t in (1, 2) for b in (4, 8, 16)] + \
            [("14m", b, 2) for b in (4, 8, 16)]
    if a.quick:
        grid, a.steps, a.repeats = grid[:1], 3, 1
    peaks = {t: peak_flops(t, n=8192 if dev == "cuda" else 2048, device=dev) for t in sorted({t for _, _, t in grid})}
    rows = []
    for preset, batch, threads in grid:
        model = GPT(get_preset(preset, vocab_size=vocab))
        fpt = model.flops_per_token(a.seq_len)
        params = model.num_params(non_embedding=False)
        del model
        ours, ref = [], []
        for _ in range(a.repeats):  # alternate, so slow drift in machine load hits both alike
            ref.append(reference_loop(preset, vocab, a.seq_len, batch, a.steps, a.warmup, threads, work / "tokens", dev))
            ours.append(our_loop(preset, a.seq_len, batch, a.steps, a.warmup, threads, work, dev))
        o, r = max(ours), max(ref)
        row = dict(preset=preset, params=params, batch=batch, threads=threads, ours=o, ref=r, ratio=o / r,
                   mfu=o * fpt / peaks[threads], ref_mfu=r * fpt / peaks[threads], flops_per_token=fpt)
        rows.append(row)
        print(json.dumps(row), flush=True)
    torch.set_num_threads(max(peaks))
    load = os.getloadavg()
    kind = "CUDA bf16" if dev == "cuda" else "CPU fp32"
    lines = [
        f"## Training throughput (llm.train vs a minimal loop, {kind})",
        "",
        f"`benchmarks/bench_training.py` on {_machine()}; seq_len {a.seq_len}, vocab {vocab:,} (BPE trained on the "
        f"shared Wikipedia text), median tokens/s over {a.steps} timed steps after {a.warmup} warm-up, best of "
        f"{a.repeats} alternating runs. Peak FLOP/s measured as the best rate of a large "
        f"{'bf16 8192' if dev == 'cuda' else 'fp32 2048'}-cube matmul: "
        + ", ".join(f"{p / 1e9:.0f} GFLOP/s with {t} thread{'s' if t > 1 else ''}" for t, p in peaks.items())
        + f". Load average during the run: {load[0]:.1f} (the 2 cores are shared).",
        "",
        "| model | params | batch x seq | threads | ours tok/s | reference tok/s | ours / reference | MFU ours | MFU reference |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['preset']} | {r['params'] / 1e6:.1f}M | {r['batch']} x {a.seq_len} | {r['threads']} | "
                     f"{r['ours']:,.0f} | {r['ref']:,.0f} | {r['ratio']:.2f} | {r['mfu']:.1%} | {r['ref_mfu']:.1%} |")
    best = {p: max((r for r in rows if r["preset"] == p), key=lambda r: r["ours"]) for p in {r["preset"] for r in rows}}
    lines += ["", "Best configuration per model: " + "; ".join(
        f"{p}: batch {r['batch']}, {r['threads']} thread(s), {r['ours']:,.0f} tokens/s" for p, r in sorted(best.items()))
        + ".", "",
        "CUDA (bf16 autocast, torch.compile; target >= 45% MFU on an H100) was not measured: no GPU was available "
        "to this run. On a CUDA machine: `python benchmarks/bench_training.py --device cuda` (writes its own "
        "section)." if dev != "cuda" else ""]
    if not a.quick:
        from benchmarks._report import write_section

        write_section("bench_training" + ("_cuda" if dev == "cuda" else ""), "\n".join(lines))
    else:
        print("\n".join(lines))


def _machine() -> str:
    from benchmarks._report import machine

    return machine()


if __name__ == "__main__":
    main()
