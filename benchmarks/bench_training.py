"""Training throughput of our loop (llm.train) against a minimal reference loop, on this CPU.

Both train the same model (preset, seq_len, batch, threads) on the same token windows of real text
(the shared Wikipedia corpus, tokenized with a BPE tokenizer trained here); the reference loop is the
textbook one: forward, backward, AdamW step, nothing else. Our loop adds what a real run needs
(token-exact loss normalisation, clipping, the LR schedule, metrics, no-decay groups).
Steps of the two are interleaved, so load changes on this shared machine hit both alike.
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

from ragapp.config import SHARED_DATA  # noqa: E402

CORPUS = SHARED_DATA / "pretrain" / "enwiki2015.jsonl.gz"


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


def _reference_setup(preset: str, vocab: int, seq_len: int, threads: int, data_dir: Path, device: str):
    """The minimal loop's state: a plain model and AdamW over all its parameters (CUDA: compiled, fused)."""
    import torch

    from llm.config import get_preset
    from llm.data import EpochSampler, PackedWindows
    from llm.model import GPT

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = GPT(get_preset(preset, vocab_size=vocab, max_seq_len=max(seq_len, 256))).to(device).train()
    if device == "cuda":
        model.compile()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1,
                            **({"fused": True} if device == "cuda" else {}))
    windows = PackedWindows(data_dir, "train", seq_len)
    return model, opt, windows, EpochSampler(len(windows), seed=0)


def _reference_step(state, step: int, batch: int, device: str) -> None:
    """The textbook step: batch, forward, backward, AdamW, nothing else."""
    import contextlib

    import torch

    model, opt, windows, sampler = state
    b = windows.batch(sampler(step * batch, batch))
    with torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else contextlib.nullcontext():
        _, loss = model(b["idx"].to(device), b["targets"].to(device))
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def _our_setup(preset: str, seq_len: int, batch: int, steps: int, threads: int, work: Path, device: str):
    """Our loop's Trainer, built as `llm pretrain` builds it (objective, no-decay groups, schedule, clipping)."""
    import contextlib
    import io

    from llm.recipe import build_config
    from llm.train import Trainer

    cfg = build_config("pretrain", flags=dict(
        data=str(work / "tokens"), tokenizer=str(work / "tok"), out_dir=str(Path(tempfile.mkdtemp(dir=work))),
        model=preset, seq_len=seq_len, batch_size=batch, max_steps=steps, warmup_steps=2, lr=1e-3, eval_every=0,
        save_every=0, log_every=1, progress=False, plot=False, threads=threads, device=device,
        compile=device == "cuda")).validate()
    trainer = Trainer(cfg)
    with contextlib.redirect_stdout(io.StringIO()):
        trainer.prepare()
    return trainer


def paired(preset: str, vocab: int, seq_len: int, batch: int, steps: int, warmup: int, threads: int, work: Path,
           device: str = "cpu") -> tuple[float, float, float]:
    """Steps of the two loops interleaved (which goes first alternates), so a change in machine load hits
    both alike. Returns median tokens/s of ours, of the reference, and the median per-step ratio."""
    ref = _reference_setup(preset, vocab, seq_len, threads, work / "tokens", device)
    ours = _our_setup(preset, seq_len, batch, warmup + steps, threads, work, device)
    ours_rates, ref_rates, ratios = [], [], []
    tokens = batch * seq_len
    for step in range(warmup + steps):
        times = {}
        for who in (("ours", "ref") if step % 2 else ("ref", "ours")):
            _sync(device)
            t = time.perf_counter()
            if who == "ref":
                _reference_step(ref, step, batch, device)
            else:
                ours._step(step, ours.wrapped, ours.groups, {})  # the whole step of llm.train's loop
            _sync(device)
            times[who] = time.perf_counter() - t
        if step >= warmup:
            ours_rates.append(tokens / times["ours"])
            ref_rates.append(tokens / times["ref"])
            ratios.append(times["ref"] / times["ours"])
    return statistics.median(ours_rates), statistics.median(ref_rates), statistics.median(ratios)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few steps, one configuration, no BENCHMARKS.md write")
    ap.add_argument("--steps", type=int, default=8, help="timed steps per measurement")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--presets", default="5m,14m", help="model presets to measure (CPU)")
    ap.add_argument("--batches", default="4,8,16", help="micro-batch sizes to try for 5m (CPU)")
    ap.add_argument("--threads", default="1,2", help="torch thread counts to try (CPU)")
    ap.add_argument("--big-batches", default="8", help="micro-batch sizes for the larger presets (CPU)")
    ap.add_argument("--device", default="cpu", help="cpu (fp32) or cuda (bf16 autocast + torch.compile, 60m "
                                                    "model; MFU against the measured bf16 matmul peak)")
    ap.add_argument("--cuda-batches", default="16,32,64", help="micro-batch sizes for the 60m model (CUDA)")
    ap.add_argument("--tokens", type=Path, default=None,
                    help="token shards from `llm prepare` to train on instead of tokenizing ../shared's Wikipedia "
                         "here (for a machine without ../shared); needs --tokenizer")
    ap.add_argument("--tokenizer", type=Path, default=None, help="the tokenizer folder of --tokens")
    a = ap.parse_args()
    if (a.tokens is None) != (a.tokenizer is None):
        ap.error("--tokens and --tokenizer go together")
    import torch

    from llm.config import get_preset
    from llm.model import GPT

    work = Path(tempfile.mkdtemp(prefix="bench_training_"))
    if a.tokens:
        from llm.tokenizer import load_tokenizer

        (work / "tokens").symlink_to(a.tokens.resolve())
        (work / "tok").symlink_to(a.tokenizer.resolve())
        tok = load_tokenizer(work / "tok")
        text_is = f"token shards {a.tokens.name} (tokenizer {a.tokenizer.name})"
    else:
        tok = prepare(work, docs=150 if a.quick else 600)
        text_is = "BPE trained on the shared Wikipedia text"
    vocab = len(tok)
    dev = a.device
    if dev == "cuda":
        a.seq_len = 1024
        grid = [("60m", int(b), 1) for b in a.cuda_batches.split(",") if b.strip()]
    else:
        ints = lambda text: [int(x) for x in text.split(",") if x.strip()]  # noqa: E731
        grid = [(p, b, t) for p in a.presets.split(",") for t in ints(a.threads)
                for b in (ints(a.batches) if p == "5m" else ints(a.big_batches))]
    if a.quick:
        grid, a.steps = [("5m", 8, 2)] if dev == "cpu" else grid[:1], 3
    n_peak = 8192 if dev == "cuda" else 2048
    # the peak is re-measured after every configuration and the best kept: on a shared machine a single
    # measurement can catch a busy moment and make every MFU look too good
    peaks = {t: peak_flops(t, n=n_peak, device=dev) for t in sorted({t for _, _, t in grid})}
    rows = []
    load0 = os.getloadavg()[0]
    for preset, batch, threads in grid:
        model = GPT(get_preset(preset, vocab_size=vocab))
        fpt = model.flops_per_token(a.seq_len)
        params = model.num_params(non_embedding=False)
        del model
        o, r, ratio = paired(preset, vocab, a.seq_len, batch, a.steps, a.warmup, threads, work, dev)
        peaks[threads] = max(peaks[threads], peak_flops(threads, n=n_peak, device=dev))
        row = dict(preset=preset, params=params, batch=batch, threads=threads, ours=o, ref=r, ratio=ratio,
                   flops_per_token=fpt)
        rows.append(row)
        print(json.dumps(row), flush=True)
    for row in rows:
        row["mfu"] = row["ours"] * row["flops_per_token"] / peaks[row["threads"]]
        row["ref_mfu"] = row["ref"] * row["flops_per_token"] / peaks[row["threads"]]
    torch.set_num_threads(max(peaks))
    load = os.getloadavg()
    kind = "CUDA bf16" if dev == "cuda" else "CPU fp32"
    lines = [
        f"## Training throughput (llm.train vs a minimal loop, {kind})",
        "",
        f"`benchmarks/bench_training.py` on {_machine()}; seq_len {a.seq_len}, vocab {vocab:,} ({text_is}). The two loops' steps are interleaved (which goes first alternates) so changes "
        f"in machine load hit both alike; median over {a.steps} timed steps after {a.warmup} warm-up; the ratio is "
        f"the median of the per-step ratios. Our step is `Trainer._step` of `llm.train`, exactly what `llm "
        f"pretrain` runs per step (token-exact loss scaling, clipping, LR schedule, no-decay groups). "
        f"Peak FLOP/s: the best rate of a large "
        f"{'bf16 8192' if dev == 'cuda' else 'fp32 2048'}-cube matmul, measured before the first and after every "
        f"configuration: "
        + ", ".join(f"{p / 1e9:.0f} GFLOP/s with {t} thread{'s' if t > 1 else ''}" for t, p in peaks.items())
        + (f". Load average (1 min) at the start {load0:.1f}, at the end {load[0]:.1f}: the cores are shared with "
           f"other work, which hurts 2-thread runs most (their threads wait for each other)." if dev == "cpu" else
           ". Both loops are torch.compile'd with fused AdamW and bf16 autocast."),
        "",
        "| model | params | batch x seq | threads | ours tok/s | reference tok/s | ours / reference | MFU ours | MFU reference |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['preset']} | {r['params'] / 1e6:.1f}M | {r['batch']} x {a.seq_len} | {r['threads']} | "
                     f"{r['ours']:,.0f} | {r['ref']:,.0f} | {r['ratio']:.2f} | {r['mfu']:.1%} | {r['ref_mfu']:.1%} |")
    best = {p: max((r for r in rows if r["preset"] == p), key=lambda r: r["ours"]) for p in {r["preset"] for r in rows}}
    if min(load0, load[0]) > 1.0 and len(peaks) > 1:
        lines += ["", "The load average stayed above 1 on 2 cores: other processes held a core, so multi-thread "
                  "rows measure the contention more than the loop (their threads wait for each other); the 1-thread "
                  "rows show the loop's own overhead."]
    lines += ["", "Best configuration per model: " + "; ".join(
        f"{p}: batch {r['batch']}, {r['threads']} thread(s), {r['ours']:,.0f} tokens/s" for p, r in sorted(best.items()))
        + ".", "",
        "CUDA: `python benchmarks/bench_training.py --device cuda` (its own section)." if dev != "cuda" else
        f"Target >= 45% MFU: {'met' if max(r['mfu'] for r in rows) >= 0.45 else 'not met'} (best "
        f"{max(r['mfu'] for r in rows):.1%})."]
    if not a.quick:
        from benchmarks._report import write_section

        write_section("bench_training" + ("_cuda" if dev == "cuda" else ""), "\n".join(lines))
    else:
        print("\n".join(lines))


def _machine() -> str:
    import torch

    from benchmarks._report import machine

    gpu = f", {torch.cuda.get_device_name()} (torch {torch.__version__})" if torch.cuda.is_available() else ""
    return machine() + gpu


if __name__ == "__main__":
    main()
