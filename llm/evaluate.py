"""`llm eval`: score a checkpoint on a file.

  language model + text / JSONL(field)       -> token-mean loss and perplexity over packed windows
  language model + chat JSONL {messages}     -> loss and perplexity on the assistant tokens
  reward checkpoint + preference JSONL       -> pairwise accuracy (chosen scored above rejected)
  classifier checkpoint + JSONL {text,label} -> accuracy
"""

from __future__ import annotations

import json
import math

import torch


def _first_record(path) -> dict | None:
    from llm.tokenizer import is_jsonl, open_text

    if not is_jsonl(path):
        return None
    with open_text(path) as fh:
        for line in fh:
            if line.strip():
                try:
                    return json.loads(line)
                except json.JSONDecodeError:
                    raise ValueError(f"{path}:1: not valid JSON") from None
    return None


def _run(module, batches, max_batches) -> dict:
    sums: dict[str, float] = {}
    with torch.no_grad():
        for i, batch in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            for k, v in module(**batch).items():
                sums[k] = sums.get(k, 0.0) + float(v)
    if not sums:
        raise ValueError("nothing to evaluate: the file gave no examples")
    out = {"loss": sums["loss_sum"] / max(sums["count"], 1.0), "examples": int(sums["n"])}
    for k, v in sums.items():
        if k not in ("loss_sum", "count", "n"):
            out[k] = v / max(sums["n"], 1.0)
    return out


def _chunks(n, size):
    return (list(range(i, min(i + size, n))) for i in range(0, n, size))


def evaluate_checkpoint(checkpoint, file, seq_len: int = 256, batch_size: int = 8, field: str = "text",
                        max_batches: int | None = None) -> dict:
    from llm.data import ClassificationData, PreferenceData, SFTData
    from llm.heads import head_kind, load_head_model
    from llm.objectives import ClassifyLoss, LMLoss, RewardLoss
    from llm.tokenizer import iter_texts, special_ids

    kind = head_kind(checkpoint)
    rec = _first_record(file)
    if kind == "classify":
        hm, tok = load_head_model(checkpoint)
        data = ClassificationData(file, tok, seq_len, labels=hm.labels, progress=False)
        out = _run(ClassifyLoss(hm).eval(), (data.batch(ix) for ix in _chunks(len(data), batch_size)), max_batches)
        return {"kind": "classify", **out}
    if kind == "reward":
        hm, tok = load_head_model(checkpoint)
        data = PreferenceData(file, tok, seq_len, progress=False)
        out = _run(RewardLoss(hm).eval(), (data.score_batch(ix) for ix in _chunks(len(data), batch_size)),
                   max_batches)
        return {"kind": "reward", **out}

    from llm.checkpoint import load_pretrained

    model, tok = load_pretrained(checkpoint)
    if tok is None:
        raise ValueError(f"{checkpoint}: checkpoint has no tokenizer")
    if seq_len > model.config.max_seq_len:
        raise ValueError(f"--seq-len {seq_len} exceeds the model's max_seq_len {model.config.max_seq_len}")
    module = LMLoss(model).eval()
    if rec is not None and "messages" in rec:
        data = SFTData(file, tok, seq_len, progress=False)
        out = _run(module, (data.batch(ix) for ix in _chunks(len(data), batch_size)), max_batches)
        kind = "chat"
    else:
        eos = special_ids(tok)["eos"]
        stream: list[int] = []
        for ids in (tok(t, add_special_tokens=False)["input_ids"] for t in iter_texts([file], field)):
            stream.extend(ids + [eos])
        n = (len(stream) - 1) // seq_len
        if n == 0:
            raise ValueError(f"{file}: fewer than {seq_len + 1} tokens; give more text or a smaller --seq-len")
        arr = torch.tensor(stream[: n * seq_len + 1])
        windows = [(arr[i * seq_len:(i + 1) * seq_len], arr[i * seq_len + 1:(i + 1) * seq_len + 1]) for i in range(n)]

        def batches():
            for ix in _chunks(n, batch_size):
                yield {"idx": torch.stack([windows[i][0] for i in ix]), "targets": torch.stack([windows[i][1] for i in ix])}

        out = _run(module, batches(), max_batches)
        kind = "text"
    # for a language model the counted examples are the scored tokens
    return {"kind": kind, "loss": out["loss"], "ppl": math.exp(min(out["loss"], 50.0)), "tokens": out["examples"]}
