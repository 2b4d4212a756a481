"""The quality report on SQuAD 2.0 (evaluation only): retrieve from all paragraphs, then answer.

    python -m ragapp.eval.evaluate                              # every row that needs no generator
    python -m ragapp.eval.evaluate --systems all --model models/ragchat --subset 500
    python benchmarks/bench_quality.py ...                 # the same, and writes BENCHMARKS.md

Every paragraph of the dev-half becomes one file, indexed through the real Index (all-MiniLM-L6-v2)
and searched with the real Retriever (hybrid, k=5). Each question is answered by each system:

  always-abstain        the empty answer for every question (SQuAD 2.0's floor: 52.1 EM on this half)
  extractive-sentence   the best-supported sentence of the top passages (ragapp.answer.extractive), behind the gate
  extractive-span       the likeliest short span of that sentence (answer-type rules), behind the gate
  generator             the chat pipeline without fallback: gate, prompt, generation, citation check
                        (an answer that normalises to nothing, e.g. "[1].", counts as an abstention)
  generator+fallback    the same; an answer failing the citation check is replaced by quoted sentences

Scoring follows the official SQuAD 2.0 script: answers normalised (lower case, no punctuation or
articles, single spaces), exact match and token F1 against the best reference; an abstention is
the empty answer, right exactly when the question is unanswerable. Hallucination rate = (answers
to unanswerable questions + answers that fail the citation check against the passages they were
given) / all questions. "Gold passage retrieved" counts answerable questions whose own paragraph is
among the passages used: the k retrieved, or for generator rows those that fit the model's context.

Resumable: each system's per-question results are appended to <workdir>/results/<system>.jsonl
and questions already there are skipped when the command runs again.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path

from ragapp.answer import gate
from ragapp.answer.chat import ChatSession, ChatSettings, failed_check
from ragapp.answer.citations import strip_citations
from ragapp.answer.extractive import best_span, quote, rank_sentences
from ragapp.config import DEFAULT_LLM_MODEL, SHARED_DATA
from ragapp.errors import InvalidInput
from ragapp.eval.cache import model_fingerprint as _model_fingerprint
from ragapp.eval.cache import read_results  # noqa: F401 - recipes.ragchat.calibrate imports it from here
from ragapp.eval.squad import (  # noqa: F401 - scoring and data live there; these names stay importable from here
    Question,
    compute_exact,
    compute_f1,
    get_tokens,
    gold_answers,
    load_squad,
    normalize_answer,
    safe_name,
    write_corpus,
)
from ragapp.index.index import Index
from ragapp.ingest import embed  # embed.load_embedder: one name to replace in tests
from ragapp.retrieve.retriever import Retriever
from ragapp.retrieve.similarity import CachedEmbedder, vector_cache

DEFAULT_DATA = SHARED_DATA / "eval" / "squad2-dev-half" / "dev-v2.0.json"
SYSTEMS = ("always-abstain", "extractive-sentence", "extractive-span", "generator", "generator+fallback")
NO_GENERATOR = SYSTEMS[:3]
INDEX_NAME = "squad2-dev-half"


def select(questions: list[Question], subset: int | None, seed: int, limit: int | None) -> list[Question]:
    """A fixed random subset (same seed, same questions), then the first `limit` of it."""
    if subset and subset < len(questions):
        questions = random.Random(seed).sample(questions, subset)
    return questions[:limit] if limit else questions


def build_index(data: list[dict], workdir: Path):
    """Index every paragraph (one file each) with the real embedder; incremental, so resumable."""
    corpus, index_dir = workdir / "corpus", workdir / "indexes"
    write_corpus(data, corpus)
    embedder = embed.load_embedder()
    with Index.open_or_create(INDEX_NAME, index_dir, embedder=embedder) as index:
        index.sync(corpus, embedder=embedder, progress=True)
    return index_dir, embedder


# ----------------------------------------------------------------------------- answering


@dataclass
class Result:
    id: str
    prediction: str  # "" = abstained
    abstained: bool
    supported: bool  # the answer passed the citation check (quotes always do)
    mode: str
    gold_retrieved: bool
    seconds: float = 0.0
    text: str = ""  # the full answer, citations included
    reason: str = ""


def _prediction(text: str) -> str:
    return strip_citations(text).strip().strip("“”\"").strip()


class Runner:
    def __init__(self, index_dir: Path, embedder, k: int, backend: str | None, model: str | None, max_new_tokens: int,
                 workdir: Path | None = None):
        self.k = k
        self.cache = vector_cache(embedder)
        with Index.open(INDEX_NAME, index_dir) as idx:
            self.cache.warm([text for _, text in idx.all_chunks()], store=workdir and workdir / "passage_vectors.npy")
        self.workdir = workdir
        # queries embedded once, through the cache that `warm_questions` fills in one batch
        self.retriever = Retriever([INDEX_NAME], index_dir=index_dir, embedder=CachedEmbedder(self.cache))
        self.backend, self.model = backend, model
        self.settings = ChatSettings(k=k, max_new_tokens=max_new_tokens, fallback=False)
        self.session = ChatSession([INDEX_NAME], index_dir=index_dir, backend=backend or "llm", model=model,
                                   retriever=self.retriever, embedder=embedder, settings=self.settings)

    def warm_questions(self, questions: list[Question]) -> None:
        store = self.workdir and self.workdir / "question_vectors.npy"
        self.cache.warm([q.question for q in questions], store=store, sentences_too=False)

    def extractive(self, q: Question) -> dict[str, Result]:
        t0 = time.perf_counter()
        passages = self.retriever.search(q.question, k=self.k, mode="hybrid")
        retrieved = any(p.source == q.source for p in passages)
        ev = gate.measure(q.question, passages, self.cache)
        ok, why = gate.check(ev)
        out = {"always-abstain": Result(q.id, "", True, True, "abstained", retrieved)}
        ranked = rank_sentences(q.question, passages, self.cache) if ok else []
        if not ranked:
            for name in ("extractive-sentence", "extractive-span"):
                out[name] = Result(q.id, "", True, True, "abstained", retrieved, reason=why or "no sentence to quote")
        else:
            top = ranked[0]
            sentence = quote(top.text)
            out["extractive-sentence"] = Result(q.id, sentence, False, True, "extractive", retrieved, text=f"“{sentence}” [{top.passage + 1}]")
            span = best_span(q.question, sentence)
            out["extractive-span"] = Result(q.id, span, False, True, "extractive", retrieved, text=f"“{span}” [{top.passage + 1}]")
        dt = time.perf_counter() - t0
        for name, r in out.items():
            r.seconds = 0.0 if name == "always-abstain" else dt
        return out

    def generated(self, q: Question) -> dict[str, Result]:
        t0 = time.perf_counter()
        ans = self.session.answer(q.question, settings=self.settings)
        t1 = time.perf_counter()
        retrieved = any(p.source == q.source for p in ans.passages)  # among the passages the model was shown
        fb = self.session.fallback(ans)
        return {"generator": _result(q, ans, retrieved, t1 - t0),
                "generator+fallback": _result(q, fb, retrieved, time.perf_counter() - t0)}


def _result(q: Question, ans, retrieved: bool, seconds: float) -> Result:
    """An answer that is empty once normalised ("[1].", "...") is the empty answer: an abstention."""
    pred = "" if ans.abstained else _prediction(ans.text)
    empty = not normalize_answer(pred)
    return Result(q.id, "" if empty else pred, ans.abstained or empty, not failed_check(ans) or empty,
                  ans.mode, retrieved, seconds, ans.text, ans.reason)


# ----------------------------------------------------------------------------- scoring


def score(questions: list[Question], results: dict[str, dict]) -> dict:
    """SQuAD 2.0 numbers (percent) for the questions that have a result."""
    has, no = [q for q in questions if q.answerable and q.id in results], [q for q in questions if not q.answerable and q.id in results]
    em = {q.id: max(compute_exact(g, results[q.id]["prediction"]) for g in q.golds) for q in has + no}
    f1 = {q.id: max(compute_f1(g, results[q.id]["prediction"]) for g in q.golds) for q in has + no}
    n = len(has) + len(no)
    pct = lambda xs: 100.0 * sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
    hallucinated = [not results[q.id]["abstained"] for q in no] + [
        not results[q.id]["abstained"] and not results[q.id]["supported"] for q in has
    ]
    return {
        "questions": n, "answerable": len(has), "unanswerable": len(no),
        "has_ans_em": pct([em[q.id] for q in has]), "has_ans_f1": pct([f1[q.id] for q in has]),
        "no_ans_abstention": pct([results[q.id]["abstained"] for q in no]),
        "has_ans_abstention": pct([results[q.id]["abstained"] for q in has]),
        "em": pct(list(em.values())), "f1": pct(list(f1.values())),
        "hallucination": pct(hallucinated),
        "gold_retrieved": pct([results[q.id]["gold_retrieved"] for q in has]),
        "seconds_per_question": sum(results[q.id]["seconds"] for q in has + no) / n if n else float("nan"),
    }


def run(
    systems: list[str], data_path: Path = DEFAULT_DATA, workdir: Path = Path(".cache/squad2-eval"), k: int = 5,
    backend: str | None = None, model: str | None = None, subset: int | None = None, seed: int = 0,
    limit: int | None = None, max_new_tokens: int = 48, progress: bool = True,
) -> dict[str, dict]:
    """Answer the selected questions with each system (resuming) and score them."""
    from dataclasses import asdict

    from tqdm.auto import tqdm

    data, questions = load_squad(data_path)
    chosen = select(questions, subset, seed, limit)
    workdir.mkdir(parents=True, exist_ok=True)
    index_dir, embedder = build_index(data, workdir)
    results_dir = workdir / "results" / f"k{k}"
    results_dir.mkdir(parents=True, exist_ok=True)
    tag = {s: s if s in NO_GENERATOR else f"{s}@{_model_tag(backend, model)}" for s in systems}
    # a generator's answers are kept per weights and settings: a remade model never resumes from the old one's
    files = {s: results_dir / (f"{tag[s]}.jsonl" if s in NO_GENERATOR
                               else f"{tag[s]}.{_model_fingerprint(backend, model, max_new_tokens)}.jsonl") for s in systems}
    done = {s: read_results(files[s]) for s in systems}
    runner = Runner(index_dir, embedder, k, backend, model, max_new_tokens, workdir)
    todo = [q for q in chosen if any(q.id not in done[s] for s in systems)]
    runner.warm_questions(todo)
    for q in tqdm(todo, desc="answering", unit=" q", disable=not progress):
        out: dict[str, Result] = {}
        if any(q.id not in done[s] for s in systems if s in NO_GENERATOR):
            out.update(runner.extractive(q))
        if any(q.id not in done[s] for s in systems if s not in NO_GENERATOR):
            out.update(runner.generated(q))
        for s in systems:
            if q.id not in done[s]:
                row = asdict(out[s])
                with open(files[s], "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(row) + "\n")
                done[s][q.id] = row
    return {s: score(chosen, done[s]) | {"tag": tag[s]} for s in systems}


def _model_tag(backend: str | None, model: str | None) -> str:
    name = Path(model).name if model else (DEFAULT_LLM_MODEL.name if (backend or "llm") == "llm" else "default")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{backend or 'llm'}-{name}")


def table(scores: dict[str, dict]) -> str:
    head = ("| system | EM | F1 | answerable EM | answerable F1 | answerable abstained | unanswerable abstained "
            "| hallucination | gold passage retrieved | s/question |\n|---|---|---|---|---|---|---|---|---|---|")
    rows = [f"| {s['tag']} | {s['em']:.1f} | {s['f1']:.1f} | {s['has_ans_em']:.1f} | {s['has_ans_f1']:.1f} | "
            f"{s['has_ans_abstention']:.1f}% | {s['no_ans_abstention']:.1f}% | {s['hallucination']:.1f}% | "
            f"{s['gold_retrieved']:.1f}% | {s['seconds_per_question']:.3f} |"
            for s in scores.values()]
    return "\n".join([head, *rows])


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--systems", default="no-generator",
                    help=f"comma-separated from {', '.join(SYSTEMS)}; 'all', or 'no-generator' (default: the first three)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="SQuAD 2.0 JSON (default: the evaluation dev-half)")
    ap.add_argument("--workdir", type=Path, default=Path(".cache/squad2-eval"), help="corpus, index and per-question results")
    ap.add_argument("--backend", choices=("llm", "hf", "openai"), default="llm")
    ap.add_argument("--model", help="generator model (default: models/ragchat for the llm backend)")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--subset", type=int, help="a fixed random subset of N questions (see --seed)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, help="only the first N questions (of the subset, if any)")


def parse_systems(text: str) -> list[str]:
    if text == "all":
        return list(SYSTEMS)
    if text == "no-generator":
        return list(NO_GENERATOR)
    systems = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in systems if s not in SYSTEMS]
    if bad:
        raise InvalidInput(f"unknown system(s) {', '.join(bad)}; choose from {', '.join(SYSTEMS)}, all, no-generator")
    return systems


def main(argv: list[str] | None = None) -> dict[str, dict]:
    ap = argparse.ArgumentParser(prog="python -m ragapp.eval.evaluate", description=__doc__.split("\n\n")[0])
    add_args(ap)
    args = ap.parse_args(argv)
    scores = run(parse_systems(args.systems), args.data, args.workdir, args.k, args.backend, args.model,
                 args.subset, args.seed, args.limit, args.max_new_tokens)
    print(table(scores))
    (args.workdir / "summary.json").write_text(json.dumps(scores, indent=2) + "\n")
    return scores


if __name__ == "__main__":
    main()
