"""Answers on corpora that are not SQuAD, through ChatSession as a user asks them. Writes the `answers` section of
BENCHMARKS.md.

    nice -n 10 .venv/bin/python benchmarks/bench_answers.py                    # default model, both sets
    nice -n 10 .venv/bin/python benchmarks/bench_answers.py --model runs/ragchat/smollm2/base --no-write

1. FairytaleQA *test* stories (../shared/data/train/fairytaleqa, test split only: never trained on) indexed as one
   .txt document per story; a fixed random subset of its questions; token recall of the best reference answer
   (the share of its normalised tokens found in the answer), abstentions, and whether the story was cited.
2. The hand-written question set over the sample corpus (tests/ragapp/answer/sample_questions.json), scored by
   ragapp.eval.question_set: right = every fact stated and its file cited with supported citations, or an
   abstention where the corpus is silent.

Per-question results are appended to <workdir>/<model tag>/*.jsonl, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._report import machine, publish  # noqa: E402
from ragapp.config import DEFAULT_LLM_MODEL, SHARED_DATA  # noqa: E402

FAIRYTALE = SHARED_DATA / "train" / "fairytaleqa" / "data-by-train-split"
QUESTIONS = ROOT / "tests" / "ragapp" / "answer" / "sample_questions.json"


def story_corpus(out: Path) -> Path:
    """Each test story as <name>.txt: its sections in order, blank lines between them."""
    out.mkdir(parents=True, exist_ok=True)
    for f in sorted((FAIRYTALE / "section-stories" / "test").glob("*-story.csv")):
        target = out / (f.name.removesuffix("-story.csv") + ".txt")
        if not target.exists():
            with open(f, newline="", encoding="utf-8") as fh:
                sections = [row["text"] for row in csv.DictReader(fh)]
            target.write_text("\n\n".join(sections) + "\n", encoding="utf-8")
    return out


def fairytale_questions(n: int, seed: int) -> list[dict]:
    rows = []
    for f in sorted((FAIRYTALE / "questions" / "test").glob("*-questions.csv")):
        story = f.name.removesuffix("-questions.csv") + ".txt"
        with open(f, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                answers = [row[k] for k in ("answer1", "answer2", "answer3", "answer4", "answer5", "answer6")
                           if row.get(k, "").strip()]
                rows.append({"q": row["question"], "answers": answers, "story": story,
                             "kind": row["ex-or-im1"], "id": f"{story}#{row['question_id']}"})
    random.Random(seed).shuffle(rows)
    return rows[:n]


def token_recall(prediction: str, reference: str) -> float:
    from ragapp.eval.evaluate import normalize_answer

    ref = Counter(normalize_answer(reference).split())
    if not ref:
        return 0.0
    pred = Counter(normalize_answer(prediction).split())
    return sum((ref & pred).values()) / sum(ref.values())


def session_for(folder: Path, name: str, workdir: Path, backend: str, model: str | None):
    from ragapp.answer.chat import ChatSession
    from ragapp.index.index import Index
    from ragapp.ingest.embed import load_embedder

    index_dir = workdir / "indexes"
    embedder = load_embedder("all-MiniLM-L6-v2")
    index = Index.open_or_create(name, index_dir)
    index.sync(folder, embedder=embedder, progress=True)
    index.close()
    return ChatSession([name], index_dir=index_dir, backend=backend, model=model, embedder=embedder)


def resumable(path: Path, items: list[dict], key: str, answer_one) -> list[dict]:
    done = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            done[r[key]] = r
    from tqdm.auto import tqdm

    with open(path, "a", encoding="utf-8") as fh:
        for item in tqdm([i for i in items if i[key] not in done], desc=path.stem, mininterval=2):
            r = answer_one(item)
            fh.write(json.dumps(r) + "\n")
            fh.flush()
            done[r[key]] = r
    return [done[i[key]] for i in items]


def run_fairytale(session, items: list[dict], out: Path) -> dict:
    def one(item):
        t0 = time.perf_counter()
        *_, a = session.answer_stream(item["q"])
        recall = 0.0 if a.abstained else max(token_recall(a.text, ref) for ref in item["answers"])
        return {"id": item["id"], "kind": item["kind"], "q": item["q"], "answer": a.text, "mode": a.mode,
                "abstained": a.abstained, "recall": recall,
                "cited_story": any(c.passage.source.endswith(item["story"]) for c in a.citations),
                "seconds": time.perf_counter() - t0}

    rows = resumable(out, items, "id", one)
    n = len(rows)
    return {"n": n, "recall": 100 * sum(r["recall"] for r in rows) / n,
            "explicit_recall": _mean([r["recall"] for r in rows if r["kind"] == "explicit"]),
            "implicit_recall": _mean([r["recall"] for r in rows if r["kind"] == "implicit"]),
            "abstained": 100 * sum(r["abstained"] for r in rows) / n,
            "cited_story": 100 * sum(r["cited_story"] for r in rows) / n,
            "modes": dict(Counter(r["mode"] for r in rows)),
            "seconds": sum(r["seconds"] for r in rows) / n}


def _mean(xs: list[float]) -> float:
    return 100 * sum(xs) / len(xs) if xs else 0.0


def run_sample(session, out: Path) -> dict:
    from ragapp.eval.question_set import load_questions, score

    def one(item):
        t0 = time.perf_counter()
        *_, a = session.answer_stream(item["q"])
        s = score(item, a)
        return {"q": item["q"], "right": s.right, "why": s.why, "answer": s.answer, "mode": s.mode,
                "unanswerable": bool(item.get("unanswerable")), "seconds": time.perf_counter() - t0}

    rows = resumable(out, load_questions(QUESTIONS), "q", one)
    return {"n": len(rows), "right": sum(r["right"] for r in rows), "rows": rows}


def model_tag(model: str | None) -> str:
    folder = Path(model) if model else DEFAULT_LLM_MODEL
    h = hashlib.sha256(str(folder).encode())
    for name in ("adapter_model.safetensors", "model.safetensors", "training.json"):
        if (folder / name).is_file():
            h.update((folder / name).read_bytes())
    return f"{folder.name}-{h.hexdigest()[:10]}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", default="llm", choices=("llm", "hf", "openai"))
    ap.add_argument("--model", default=None, help="generator model (default: models/ragchat)")
    ap.add_argument("--fairytale", type=int, default=100, help="FairytaleQA test questions asked (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=Path(".cache/answers-eval"))
    ap.add_argument("--no-write", action="store_true", help="print the tables only; leave BENCHMARKS.md alone")
    args = ap.parse_args(argv)
    out = args.workdir / model_tag(args.model)
    out.mkdir(parents=True, exist_ok=True)
    sample = run_sample(session_for(ROOT / "corpora" / "sample", "sample", args.workdir, args.backend, args.model),
                        out / "sample.jsonl")
    fairy = None
    if args.fairytale:
        stories = story_corpus(args.workdir / "fairytaleqa-test")
        fairy = run_fairytale(session_for(stories, "fairytaleqa-test", args.workdir, args.backend, args.model),
                              fairytale_questions(args.fairytale, args.seed), out / f"fairytaleqa-{args.seed}.jsonl")
    name = args.model or f"{DEFAULT_LLM_MODEL.name} (default)"
    lines = ["## Answers on other corpora (FairytaleQA test stories; the sample corpus)", "",
             f"Generator: `{args.backend}` {name}; hybrid retrieval k=5, gate, citation check and fallback as served "
             f"(ChatSession); {machine()}.", ""]
    if fairy:
        lines += [f"FairytaleQA: the 49 *test* stories indexed as documents, {fairy['n']} of their questions (fixed "
                  f"random subset, seed {args.seed}). Token recall of the best of the reference answers (abstention = 0); "
                  "answers are free-form, so recall (not exact match) is the measure.", "",
                  "| questions | token recall | explicit | implicit | abstained | cited the right story | answer modes "
                  "| s/question |", "|---|---|---|---|---|---|---|---|",
                  f"| {fairy['n']} | {fairy['recall']:.1f} | {fairy['explicit_recall']:.1f} | {fairy['implicit_recall']:.1f} "
                  f"| {fairy['abstained']:.1f}% | {fairy['cited_story']:.1f}% | "
                  + ", ".join(f"{k} {v}" for k, v in sorted(fairy["modes"].items())) + f" | {fairy['seconds']:.1f} |", ""]
    lines += [f"Sample corpus, `{QUESTIONS.relative_to(ROOT)}` (15 answerable, 5 not): **{sample['right']} of "
              f"{sample['n']} right** (target: 15; scored by ragapp.eval.question_set).", "",
              "| question | right | why | mode |", "|---|---|---|---|"]
    for r in sample["rows"]:
        lines.append(f"| {r['q']} | {'yes' if r['right'] else 'no'} | {r['why']} | {r['mode']} |")
    flags = " ".join(a for a in (argv if argv is not None else sys.argv[1:]) if a != "--no-write")
    lines += ["", f"Remake: `{('nice -n 10 .venv/bin/python benchmarks/bench_answers.py ' + flags).strip()}`"]
    md = "\n".join(lines)
    publish("answers", md, write=not args.no_write)


if __name__ == "__main__":
    main()
