"""The one training loop for every objective (pretrain | sft | dpo | reward | rl | classify).

    model + objective (llm/objectives.py, llm/rl.py) -> AdamW, warmup + cosine, clipping, accumulation
    -> checkpoints (model via llm.checkpoint, optimizer, scheduler, RNG, step) -> exact resume.

Exact resume: batches are a pure function of (seed, step), and a checkpoint holds everything else that
decides the next step (weights, AdamW moments, scheduler, every RNG), so an interrupted and resumed run
computes the same losses as an uninterrupted one (tests/llm/test_resume.py).

Run folder (cfg.out_dir):
    step-NNNNNN/  final/     config.json + model.safetensors + tokenizer (+ head / LoRA adapter files),
                             trainer.pt (optimizer, scheduler, step, config), rng-rank{R}.pt
    latest                   name of the newest complete checkpoint
    metrics.jsonl, loss.png, summary.json
Multi-process: launch with `torchrun --nproc_per_node N -m llm.cli pretrain ...` (DDP; --fsdp shards).
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import json
import math
import os
import signal
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn

from llm.recipe import TrainConfig
from llm.train_build import build, wrap
from llm.train_state import atomic_text, find_checkpoint, fingerprint, plot_curve, resume_checkpoint, save_checkpoint

SIGNAL_HOOK_ENV = "LLM_TRAIN_SIGNAL_AT"  # "STEP:SIGNAL": the run signals itself after STEP (fault-injection tests)


# --------------------------------------------------------------------------- small helpers
def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of cfg.lr for optimizer step `step` (0-based): linear warmup, then cosine to min_lr_ratio."""
    if step < cfg.warmup_steps:
        return (step + 1) / (cfg.warmup_steps + 1)
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def param_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay matrices; never norms, biases or embeddings (nor a head tied to them)."""
    embeddings = {id(m.weight) for m in module.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay = [], []
    for _, p in module.named_parameters():  # shared (tied) parameters appear once
        if p.requires_grad:
            (no_decay if p.ndim < 2 or id(p) in embeddings else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# --------------------------------------------------------------------------- the trainer


def _close_process_group() -> None:
    """Tear gloo down while the interpreter is whole. Left to interpreter finalization (a finished run's DDP
    or FSDP wrapper, kept alive by a reference cycle, still holds the group), gloo's worker threads are
    destroyed mid-teardown and the process aborts ("terminate called without an active exception")."""
    if dist.is_initialized():
        gc.collect()  # frees the finished runs' wrappers, and with them their references to the group
        dist.barrier()
        dist.destroy_process_group()
        gc.collect()


class Trainer:
    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg.validate()
        self.out_dir = Path(cfg.out_dir)
        self._setup_distributed()
        self.log = print if self.is_main else (lambda *a, **k: None)

    # ---- processes and devices
    def _setup_distributed(self) -> None:
        cfg = self.cfg
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if cfg.device == "auto":
            device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
        else:
            device = f"cuda:{local}" if cfg.device == "cuda" else cfg.device  # set_device needs an index
        self.device = torch.device(device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if cfg.dtype == "bf16" and self.device.type != "cuda":
            raise ValueError("--dtype bf16 needs CUDA: bf16 on this CPU is emulated and ~14x slower; use fp32")
        self.amp = self.device.type == "cuda" and cfg.dtype in ("auto", "bf16")
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.distributed = self.world > 1
        if self.distributed and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if self.device.type == "cuda" else "gloo")
            # kept for the life of the process: a second init in the same torchrun launch can pick up the
            # previous group's stale addresses from the launcher's store and fail to connect
            atexit.register(_close_process_group)
        self.is_main = self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_sum(self, values: list[float]) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self.device if self.device.type == "cuda" else "cpu")
        if self.distributed:
            dist.all_reduce(t)
        return t.tolist()

    def autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.amp else contextlib.nullcontext()

    # ---- model, objective, optimizer
    # ---- building and checkpoints (llm/train_build.py, llm/train_state.py)
    def save(self, step: int, name: str | None = None) -> Path:
        return save_checkpoint(self, step, name)

    # ---- evaluation and logging
    @torch.no_grad()
    def evaluate(self) -> dict:
        obj = self.objective
        shard = self.distributed and not self.cfg.fsdp  # FSDP: every rank joins every forward
        self.module.eval()
        try:
            with self.autocast():
                if hasattr(obj, "eval_sums"):
                    sums = obj.eval_sums(shard)
                else:
                    sums: dict[str, float] = {}
                    for batch in obj.eval_batches(shard):
                        out = self.module(**{k: v.to(self.device) for k, v in batch.items()})
                        for k, v in out.items():
                            sums[k] = sums.get(k, 0.0) + float(v)
            if shard:
                parts = [None] * self.world
                dist.all_gather_object(parts, sums)
                sums = {}
                for part in parts:
                    for k, v in part.items():
                        sums[k] = sums.get(k, 0.0) + v
            return obj.summarize_eval(sums) if sums else {}
        finally:
            self.module.train()
            if hasattr(self.module, "reshard"):
                # FSDP leaves the root's parameters unsharded after a forward without backward; the optimizer
                # and the state-dict gathering expect the sharded ones
                self.module.reshard()

    def _write_metrics(self, row: dict) -> None:
        if self.is_main:
            with open(self.metrics_path, "a") as fh:
                fh.write(json.dumps(row) + "\n")

    def _truncate_metrics(self, step: int) -> None:
        """On resume: steps after the checkpoint will be recomputed; drop their old lines."""
        if self.is_main and self.metrics_path.exists():
            keep = [ln for ln in self.metrics_path.read_text().splitlines()
                    if ln.strip() and json.loads(ln).get("step", 0) <= step]
            atomic_text(self.metrics_path, "".join(ln + "\n" for ln in keep))

    # ---- the loop
    def prepare(self) -> int | None:
        """Build everything (model, objective, optimizer, scheduler; resume state). Returns the step to start
        from, or None when OUT_DIR already holds a finished run."""
        cfg = self.cfg
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.out_dir / "metrics.jsonl"
        resume = find_checkpoint(self.out_dir)
        if resume is not None and not cfg.resume:
            raise ValueError(f"{self.out_dir} already holds a run (latest checkpoint {resume.name}); resume it "
                             f"(drop --no-resume) or choose another --out-dir")
        if resume is not None and resume.name == "final" and (self.out_dir / "summary.json").exists():
            state = torch.load(resume / "trainer.pt", map_location="cpu", weights_only=False)
            if state["step"] >= cfg.max_steps:
                self.log(f"{self.out_dir} is already trained to step {state['step']} (final/); raise --max-steps "
                         "to train further")
                return None
        build(self, resume)
        self.global_batch = cfg.batch_size * cfg.grad_accum * self.world
        self.wrapped = wrap(self)
        self.groups = param_groups(self.module, cfg.weight_decay)  # after wrapping: FSDP swaps in DTensors
        fused = {"fused": True} if self.device.type == "cuda" else {}
        self.optimizer = torch.optim.AdamW(self.groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=1e-8, **fused)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, cfg))
        self.tokens_seen, self.train_seconds = 0, 0.0
        start = 0
        if resume is not None:
            start = resume_checkpoint(self, resume)
            self._truncate_metrics(start)
            self.log(f"resuming from {resume} at step {start}")
        elif self.is_main and self.metrics_path.exists():
            self.metrics_path.unlink()  # a fresh run (no checkpoint to continue): old lines are stale
        params = self.model.num_params(non_embedding=False)
        trainable = sum(p.numel() for g in self.groups for p in g["params"])
        self.log(f"{cfg.objective}: model {params / 1e6:.2f}M parameters ({trainable / 1e6:.2f}M trained), "
                 f"{self.model.flops_per_token(cfg.seq_len) / 1e6:.1f} MFLOPs/token; device {self.device}"
                 f"{' bf16 autocast' if self.amp else ' fp32'}; {self.world} process(es), global batch "
                 f"{self.global_batch}")
        desc = self.objective.describe()
        if desc:
            self.log(desc)
        return start

    def run(self) -> dict:
        from tqdm.auto import tqdm

        cfg = self.cfg
        start = self.prepare()
        if start is None:
            return json.loads((self.out_dir / "summary.json").read_text())
        wrapped, groups = self.wrapped, self.groups

        stop = {"flag": False}
        old_handlers = {}

        def request_stop(signum, frame):
            if stop["flag"]:  # a second Ctrl-C: stop now, without a checkpoint
                raise KeyboardInterrupt
            stop["flag"] = True
            self.log(f"\n{signal.Signals(signum).name}: finishing this step, then saving a checkpoint "
                     "(press Ctrl-C again to abort without saving)", flush=True)

        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                old_handlers[sig] = signal.signal(sig, request_stop)
        hook = os.environ.get(SIGNAL_HOOK_ENV, "")
        hook_step, hook_sig = (int(hook.split(":")[0]), getattr(signal, hook.split(":")[1])) if hook else (-1, None)

        last_eval = {}
        interrupted = False
        bar = tqdm(total=cfg.max_steps, initial=start, desc=cfg.objective, unit="step",
                   disable=not (cfg.progress and self.is_main), dynamic_ncols=True)
        window = {"tokens": 0, "seconds": 0.0}
        stats: dict[str, float] = {}
        done = start
        try:
            for step in range(start, cfg.max_steps):
                tokens, dt, grad_norm, lr = self._step(step, wrapped, groups, stats)
                self.train_seconds += dt
                window["seconds"] += dt
                window["tokens"] += tokens
                done = step + 1
                bar.update(1)
                if done % cfg.log_every == 0 or done == cfg.max_steps:
                    row = self._log_train(done, lr, grad_norm, stats, window)
                    bar.set_postfix(loss=f"{row['loss']:.4f}", tok_s=f"{row['tokens_per_s']:,.0f}")
                    stats, window = {}, {"tokens": 0, "seconds": 0.0}
                if cfg.eval_every and done % cfg.eval_every == 0 and done < cfg.max_steps:
                    last_eval = self._eval_and_log(done, bar)
                if done == hook_step:
                    os.kill(os.getpid(), hook_sig)
                flag = self.all_sum([1.0 if stop["flag"] else 0.0])[0] > 0 if self.distributed else stop["flag"]
                if flag:
                    interrupted = True
                    path = self.save(done)
                    self.log(f"interrupted at step {done}: checkpoint saved to {path}; rerun the same command "
                             "to resume", flush=True)
                    break
                if cfg.save_every and done % cfg.save_every == 0 and done < cfg.max_steps:
                    self.save(done)
                    if cfg.plot and self.is_main:
                        plot_curve(self.metrics_path, self.out_dir / "loss.png")
        finally:
            bar.close()
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)

        if not interrupted:
            if start < cfg.max_steps or not last_eval:
                last_eval = self._eval_and_log(cfg.max_steps, None)
            self.save(cfg.max_steps, "final")
        summary = self._summary(done, last_eval, interrupted)
        if cfg.plot and self.is_main and self.metrics_path.exists():
            plot_curve(self.metrics_path, self.out_dir / "loss.png")
        return summary

    def _step(self, step: int, wrapped, groups, stats: dict) -> tuple[int, float, float | None, float]:
        """One optimizer step: every micro-batch's loss is divided by the global count (tokens or pairs of all
        micro-batches of all processes), so the step optimizes the exact mean. Adds the sums to `stats`."""
        cfg, obj = self.cfg, self.objective
        t0 = time.perf_counter()
        with self.autocast():
            batches = [obj.micro_batch(step, m) for m in range(cfg.grad_accum)]
        tokens = sum(obj.tokens(b) for b in batches)
        total = self.all_sum([float(sum(obj.count(b) for b in batches))])[0]
        scale = self.world / max(total, 1.0)  # DDP/FSDP average gradients over processes: undo that
        for m, batch in enumerate(batches):
            sync = m == cfg.grad_accum - 1 or not hasattr(wrapped, "no_sync")
            with contextlib.nullcontext() if sync else wrapped.no_sync():
                with self.autocast():
                    out = wrapped(**{k: v.to(self.device) for k, v in batch.items()})
                (out["loss_sum"] * scale).backward()
            for k, v in out.items():
                stats[k] = stats.get(k, 0.0) + float(v.detach())
        grad_norm = None
        if cfg.grad_clip > 0:
            grad_norm = float(torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], cfg.grad_clip))
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return tokens, time.perf_counter() - t0, grad_norm, lr

    def _log_train(self, done: int, lr: float, grad_norm, stats: dict, window: dict) -> dict:
        keys = sorted(stats)
        summed = dict(zip(keys + ["_tokens"], self.all_sum([stats[k] for k in keys] + [window["tokens"]])))
        self.tokens_seen += int(summed["_tokens"])
        row = {"step": done, "split": "train", "loss": summed["loss_sum"] / max(summed["count"], 1.0), "lr": lr}
        for k in keys:
            if k not in ("loss_sum", "count", "n"):
                row[k] = summed[k] / max(summed["n"], 1.0)
        if grad_norm is not None:
            row["grad_norm"] = grad_norm
        row["tokens_per_s"] = summed["_tokens"] / max(window["seconds"], 1e-9)
        row["tokens"] = self.tokens_seen
        self._write_metrics(row)
        return row

    def _eval_and_log(self, step: int, bar) -> dict:
        metrics = self.evaluate()
        if metrics:
            self._write_metrics({"step": step, "split": "val", **metrics})
            text = "  ".join(f"{k} {v:.4g}" for k, v in metrics.items())
            (bar.write if bar is not None and self.is_main else self.log)(f"step {step}: held-out {text}")
        return metrics

    def _summary(self, step: int, val: dict, interrupted: bool) -> dict:
        prints = [fingerprint(self.module)]
        if self.distributed:
            gathered = [None] * self.world
            dist.all_gather_object(gathered, prints[0])
            prints = gathered
        summary = {"objective": self.cfg.objective, "step": step, "interrupted": interrupted, "val": val,
                   "tokens": self.tokens_seen, "train_seconds": round(self.train_seconds, 3),
                   "tokens_per_s": self.tokens_seen / max(self.train_seconds, 1e-9), "world_size": self.world,
                   "rank_fingerprints": prints, "out_dir": str(self.out_dir)}
        if self.is_main:
            atomic_text(self.out_dir / "summary.json", json.dumps(summary, indent=1) + "\n")
        return summary


def train(cfg: TrainConfig) -> dict:
    """Train as configured; returns the summary (also in OUT_DIR/summary.json)."""
    return Trainer(cfg).run()
