"""Development-set score of a chat checkpoint: SQuAD-style EM/F1 on answerable prompts, abstention on
unanswerable ones, and whether the answer cites the passage that holds it.

The prompts are dev.jsonl of recipes.ragchat.training_data (held-out SQuAD 1.1 train ARTICLES, laid out as
retrieval delivers them), so this measures the generator alone, without retrieval or the gate.
Generation is greedy and batched (llm.generate), and the text goes through the same post-processing
as serving (ragapp.generate.recase for uncased tokenizers).

    python -m recipes.ragchat.model_eval runs/ragchat/cpu/sft/final --dev runs/ragchat/data/dev.jsonl
"""

from __future__ import annotations

import argparse
import collections
import json
import time
from pathlib import Path

from ragapp.answer.citations import cited_numbers, strip_citations
from ragapp.answer.gate import is_abstention
from ragapp.eval.evaluate import compute_exact, compute_f1, get_tokens


def f1_score(prediction: str, truth: str) -> float:
    """ragapp.eval.evaluate.compute_f1 (the official SQuAD scoring), except that an answer and a reference that
    both normalise to nothing score 0 here, not 1: only answerable rows are scored, so an answer such as
    "[1]." is no answer."""
    if not get_tokens(prediction) and not get_tokens(truth):
        return 0.0
    return compute_f1(truth, prediction)


def score(prediction: str, answers: list[str]) -> tuple[float, float]:
    """(EM, F1) of a cited answer against reference answers; citations are not part of the answer."""
    text = strip_citations(prediction)
    em = max(float(compute_exact(a, text)) for a in answers)
    return em, max(f1_score(text, a) for a in answers)


def load_rows(path) -> list[dict]:
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not rows:
        raise ValueError(f"{path}: no development examples")
    return rows


def generate_answers(model_dir, rows: list[dict], batch_size: int = 8, max_new_tokens: int = 32,
                     progress: bool = True, first_token_bias: dict[int, float] | None = None,
                     int8: bool = False) -> list[str]:
    """Greedy answers to each row's prompt (its system + user messages), post-processed as served; int8: with
    every linear layer quantized (GPT.quantized_int8, as the CPU app may serve it)."""
    import torch
    from tqdm.auto import tqdm

    from llm.checkpoint import load_pretrained
    from llm.generate import generate
    from llm.tokenizer import end_of_turn, render_chat
    from ragapp.generate.recase import is_uncased, normalizer_of, restore

    model, tok = load_pretrained(model_dir)
    if int8:
        model = model.quantized_int8()
    prompts = [render_chat(tok, r["messages"][:2], add_generation_prompt=True) for r in rows]
    lengths = [len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    order = sorted(range(len(rows)), key=lengths.__getitem__)  # similar lengths together: less padding
    out = [""] * len(rows)
    uncased = is_uncased(tok)
    norm = normalizer_of(tok)
    with torch.inference_mode():
        for i in tqdm(range(0, len(order), batch_size), desc=f"dev answers ({Path(model_dir).name})",
                      disable=not progress, mininterval=2):
            idx = order[i:i + batch_size]
            texts = generate(model, tok, [prompts[j] for j in idx], max_new_tokens=max_new_tokens,
                             stop=[end_of_turn(tok)], first_token_bias=first_token_bias)
            for j, text in zip(idx, texts):
                if uncased:
                    source = "\n".join(m["content"] for m in rows[j]["messages"][:2])
                    text = restore(text, source, norm)
                out[j] = text.strip()
    return out


def answer_bits_per_char(model_dir, rows: list[dict], batch_size: int = 8) -> float:
    """Teacher-forced cost of the reference answers ("span [n]" and the end of turn) of the answerable
    prompts, in bits per character: how close the model is to grounded answering even while greedy decoding
    still abstains, comparable across tokenizers."""
    import math

    import torch

    from llm.checkpoint import load_pretrained
    from llm.data import encode_chats, lm_batch
    from llm.objectives import token_logps
    from llm.tokenizer import chat_ids

    model, tok = load_pretrained(model_dir)
    rows = [r for r in rows if r.get("answers") and r.get("n")]
    convs = [r["messages"][:2] + [{"role": "assistant", "content": r["messages"][2]["content"]}] for r in rows]
    examples = encode_chats(tok, convs, last_only=True)
    pad = chat_ids(tok)["pad"]
    nats = 0.0
    with torch.inference_mode():
        for i in range(0, len(examples), batch_size):
            b = lm_batch(examples[i:i + batch_size], pad)
            per_row, _ = token_logps(model, b["idx"], b["targets"], b["prefix_len"])
            nats -= float(per_row.sum())
    chars = sum(len(c[-1]["content"]) + 1 for c in convs)  # + the end of turn
    return nats / math.log(2) / chars


def abstention_margins(model_dir, rows: list[dict], progress: bool = True) -> tuple[int, list[float]]:
    """(the abstention's first token, per row: its first-step logit minus the best other token's). A
    logit offset b on that token makes the model abstain exactly where margin + b > 0."""
    from tqdm.auto import tqdm

    from llm.checkpoint import load_pretrained
    from ragapp.answer.prompt import ABSTENTION
    from ragapp.generate.llm_backend import first_step_margin

    model, tok = load_pretrained(model_dir)
    model.eval()
    first = tok(ABSTENTION, add_special_tokens=False)["input_ids"][0]
    out = []
    for r in tqdm(rows, desc="abstention margins", disable=not progress, mininterval=2):
        prompt = tok.apply_chat_template(r["messages"][:2], add_generation_prompt=True, tokenize=False)
        out.append(first_step_margin(model, tok, prompt, first))
    return first, out


def without_abstention(model_dir, rows: list[dict], progress: bool = True) -> tuple[list[float], list[str]]:
    """(margins, answers when the abstention's first token is forbidden at the first step). With the plain
    greedy answers they give the answers under any offset b on that token (`with_bias`)."""
    first, margins = abstention_margins(model_dir, rows, progress)
    banned = generate_answers(model_dir, rows, progress=progress, first_token_bias={first: float("-inf")})
    return margins, banned


def with_bias(plain: list[str], banned: list[str], margins: list[float], bias: float) -> list[str]:
    """The answers under offset `bias` on the abstention's first token, as the llm backend serves them.
    Negative: a logit offset; that token wins where margin > -bias (the plain answer), elsewhere the best other
    token does and decoding goes on as in `banned`. Positive: a null-answer threshold; the backend abstains
    outright where margin > -bias, elsewhere the plain answer stands."""
    from ragapp.answer.prompt import ABSTENTION

    if bias > 0:
        return [ABSTENTION if m > -bias else p for p, m in zip(plain, margins)]
    return [p if m > -bias else q for p, q, m in zip(plain, banned, margins)]


def calibrate_abstention(rows: list[dict], plain: list[str], banned: list[str], margins: list[float]) -> dict:
    """The offset on the abstention's first token that maximises exact match over `rows`, answerable and
    unanswerable together: SQuAD 2.0 readers' null-answer threshold. Negative offsets make the model answer
    more, positive ones abstain more (see `with_bias`)."""
    curve = []
    for b in [6.0, 4.0, 3.0, 2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -1.5, -2.0, -2.5, -3.0, -4.0, -5.0, -6.0, -8.0]:
        r = evaluate_rows(rows, with_bias(plain, banned, margins, b))
        curve.append({"bias": b, "overall_em": r["overall_em"], "answerable_em": r.get("answerable_em", 0.0),
                      "abstention": r.get("abstention", 0.0), "false_abstention": r.get("false_abstention", 0.0)})
    best = max(curve, key=lambda c: (c["overall_em"], -abs(c["bias"])))  # ties: the smaller change
    return {"abstention_bias": best["bias"], "curve": curve}


def evaluate_rows(rows: list[dict], predictions: list[str]) -> dict:
    """Per kind and overall: EM/F1 on answerable, abstention on unanswerable, citation accuracy."""
    by_kind: dict[str, list] = collections.defaultdict(list)
    overall = []
    for r, pred in zip(rows, predictions):
        abstained = is_abstention(pred) or not pred
        if r.get("answers"):
            em, f1 = (0.0, 0.0) if abstained else score(pred, r["answers"])
            cited = r.get("n") in cited_numbers(pred)
            by_kind[r["kind"]].append({"em": em, "f1": f1, "abstained": abstained, "cited": cited})
            overall.append(em)
        else:
            by_kind[r["kind"]].append({"abstained": abstained})
            overall.append(float(abstained))
    result = {"n": len(rows), "overall_em": 100 * sum(overall) / len(overall), "kinds": {}}
    for kind, items in sorted(by_kind.items()):
        k = {"n": len(items), "abstained": 100 * sum(i["abstained"] for i in items) / len(items)}
        if "em" in items[0]:
            k.update(em=100 * sum(i["em"] for i in items) / len(items),
                     f1=100 * sum(i["f1"] for i in items) / len(items),
                     cited=100 * sum(i["cited"] for i in items) / len(items))
        result["kinds"][kind] = k
    answerable = [i for items in by_kind.values() for i in items if "em" in i]
    unanswerable = [i for items in by_kind.values() for i in items if "em" not in i]
    if answerable:
        result["answerable_em"] = 100 * sum(i["em"] for i in answerable) / len(answerable)
        result["answerable_f1"] = 100 * sum(i["f1"] for i in answerable) / len(answerable)
        result["false_abstention"] = 100 * sum(i["abstained"] for i in answerable) / len(answerable)
    if unanswerable:
        result["abstention"] = 100 * sum(i["abstained"] for i in unanswerable) / len(unanswerable)
    return result


def spread(rows: list[dict], limit: int | None) -> list[dict]:
    """`limit` rows evenly spaced through the file, so that a subset keeps the file's mix of kinds (dev.jsonl is
    written kind by kind)."""
    if limit is None or limit >= len(rows):
        return rows
    return [rows[i * len(rows) // limit] for i in range(limit)]


def evaluate_model(model_dir, dev_path, out_path=None, limit: int | None = None, progress: bool = True,
                   int8: bool = False) -> dict:
    rows = spread(load_rows(dev_path), limit)
    t0 = time.perf_counter()
    preds = generate_answers(model_dir, rows, progress=progress, int8=int8)
    seconds = round(time.perf_counter() - t0, 1)
    if out_path is not None:  # the predictions first: the slow part survives a failure below
        out_path = Path(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        with open(out_path.with_suffix(".predictions.jsonl"), "w", encoding="utf-8") as fh:
            for r, p in zip(rows, preds):
                fh.write(json.dumps({"kind": r["kind"], "question": r["messages"][1]["content"].rsplit("Question: ", 1)[-1],
                                     "answers": r.get("answers"), "n": r.get("n"), "prediction": p}) + "\n")
    result = {"model": str(model_dir), "dev": str(dev_path), "int8": int8, **evaluate_rows(rows, preds),
              "answer_bits_per_char": answer_bits_per_char(model_dir, rows), "seconds": seconds}
    if out_path is not None:
        out_path.write_text(json.dumps(result, indent=1) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recipes.ragchat.model_eval", description=__doc__.split("\n")[0])
    parser.add_argument("model", help="checkpoint folder")
    parser.add_argument("--dev", default="runs/ragchat/data/dev.jsonl", help="dev.jsonl from recipes.ragchat.training_data")
    parser.add_argument("--out", default=None, help="write the scores here (JSON) and predictions beside it")
    parser.add_argument("--limit", type=int, default=None, help="only N examples, evenly spaced through the file (keeps its mix of kinds)")
    parser.add_argument("--int8", action="store_true", help="answer with the linear layers quantized to int8 (CPU)")
    args = parser.parse_args(argv)
    result = evaluate_model(args.model, args.dev, args.out, args.limit, int8=args.int8)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
