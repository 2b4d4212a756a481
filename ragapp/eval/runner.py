"""`ragapp eval` / `ragapp.eval.run`: ask a question set of an index under several configurations and
measure how often each one makes things up. See ragapp.eval.metrics for the numbers, report for the files.

One run compares, on the same questions and the same index:
  - each answerer: a generator (`llm`, `llm:FOLDER`, `hf:MODEL`, `openai:NAME`) or `extractive` (the
    extractive answer alone: the best passage sentences, quoted);
  - each k (passages retrieved);
  - the gate off and on, and the abstention trade-off as its threshold moves. The gate decides from
    the retrieved passages alone, before any generation, so each question is answered ONCE with the
    gate off and its evidence score kept: "gate on at t" is that answer when the score is >= t and an
    abstention otherwise, exactly what the pipeline does, for every t at no further cost;
  - for generators, the answer alone and with the fallback (an answer failing the citation check
    replaced by quoted sentences, as the app answers by default);
  - optionally (`closed_book`) each generator with no retrieval at all: the question alone.

Resumable: every answer is appended to <work_dir>/answers/<configuration>.<key>.jsonl as it is made,
where the key hashes what decides the answer (answerer, k, answer length, the model's weights, the
calibration file, the index's version and the files held out); a run interrupted and started again
answers only what is missing, and a changed model or index answers afresh into a new file.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ragapp.answer import gate
from ragapp.answer.chat import ChatSession, ChatSettings
from ragapp.answer.citations import strip_citations
from ragapp.config import DEFAULT_INDEX_DIR, DEFAULT_K
from ragapp.errors import Interrupted, InvalidInput
from ragapp.eval.beir import doc_id_of_source
from ragapp.eval.cache import model_fingerprint, read_results
from ragapp.eval.holdout import held_out_index
from ragapp.eval.metrics import BOOTSTRAP, retrieval_scores
from ragapp.eval.questions import EvalQuestion, QuestionSet, load_set, matches, select
from ragapp.eval.report import EvalReport, build_report
from ragapp.eval.squad import normalize_answer
from ragapp.index.index import Index
from ragapp.ingest import embed  # embed.load_embedder: one name to replace in tests
from ragapp.retrieve.lexical import sentences, term_set
from ragapp.retrieve.retriever import Retriever
from ragapp.retrieve.similarity import vector_cache

RETRIEVAL_DEPTH = 30  # passages searched for the retrieval metrics (>= 10 documents for nDCG@10 as a rule)
CLOSED_BOOK_PROMPT = ("Answer the question in one short sentence. If you do not know the answer, reply exactly: "
                      "I don't know.")


@dataclass(frozen=True)
class Answerer:
    spec: str  # extractive | llm | llm:FOLDER | hf:MODEL | openai:NAME

    @property
    def extractive(self) -> bool:
        return self.spec == "extractive"

    @property
    def backend(self) -> str:
        return self.spec.partition(":")[0]

    @property
    def model(self) -> str | None:
        return self.spec.partition(":")[2] or None


def parse_answerer(spec: str) -> Answerer:
    from ragapp.generate.registry import BACKENDS

    spec = spec.strip()
    backend = spec.partition(":")[0]
    if spec != "extractive" and backend not in BACKENDS:
        raise InvalidInput(f"unknown answerer {spec!r}; use extractive, or BACKEND[:MODEL] with BACKEND one of "
                           f"{', '.join(BACKENDS)} (e.g. llm, llm:models/ragchat, hf:Qwen/Qwen2.5-0.5B-Instruct)")
    return Answerer(spec)


@dataclass(frozen=True)
class RunConfig:
    """One way of answering: what is run (and cached) per question."""

    answerer: Answerer
    k: int  # 0: no retrieval (closed book)

    @property
    def label(self) -> str:
        return f"{self.answerer.spec} · " + (f"k={self.k}" if self.k else "no retrieval")

    def file_stem(self) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{self.answerer.spec}-k{self.k}")


def _file_hash(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:10] if Path(path).is_file() else "-"


def _row_key(q: EvalQuestion) -> str:
    """A question's key in the answer files: its id and a hash of its text, so an edited question is asked again."""
    h = hashlib.sha256(json.dumps([q.question, q.answers, q.answerable, q.source, q.held_out]).encode()).hexdigest()[:8]
    return f"{q.id}:{h}"


def _claims(text: str) -> int:
    return sum(1 for s in sentences(strip_citations(text)) if term_set(s))


def _outcome_row(ans, seconds: float) -> dict:
    """An Answer reduced to what is kept per question (an answer that normalises to nothing is an abstention)."""
    prediction = "" if ans.abstained else strip_citations(ans.text).strip().strip("“”\"").strip()
    abstained = ans.abstained or not normalize_answer(prediction)
    return {"text": ans.text, "prediction": "" if abstained else prediction, "abstained": abstained, "mode": ans.mode,
            "reason": ans.reason, "unsupported": 0 if abstained else len(ans.unsupported_sentences),
            "claims": 0 if abstained else _claims(ans.text), "citations": 0 if abstained else len(ans.citations),
            "citations_supported": 0 if abstained else sum(c.supported for c in ans.citations),
            "cited": sorted({c.passage.source for c in ans.citations}), "seconds": round(seconds, 4)}


class _Asker:
    """Answers questions under one RunConfig; the index, retriever and embedder are shared by all."""

    def __init__(self, config: RunConfig, ctx: "_Context"):
        self.config, self.ctx = config, ctx
        a = config.answerer
        generator = None if a.extractive else ctx.generators.get(a.spec)
        self.session = ChatSession([ctx.index], index_dir=ctx.index_dir, generator=generator,
                                   backend="llm" if a.extractive else a.backend, model=a.model,
                                   retriever=ctx.retriever, embedder=ctx.embedder)
        self.settings = None if not config.k else ChatSettings(
            k=config.k, max_new_tokens=ctx.max_new_tokens, gate=False, fallback=False, condense=False,
            extractive_only=a.extractive)

    def ask(self, q: EvalQuestion) -> dict:
        if not self.config.k:
            return self._closed_book(q)
        t0 = time.perf_counter()
        passages = self.ctx.retriever.search(q.question, k=self.config.k)
        score = gate.measure(q.question, passages, self.ctx.cache).score if passages else 0.0
        gate_seconds = time.perf_counter() - t0
        ans = self.session.answer(q.question, settings=self.settings)
        seconds = time.perf_counter() - t0
        row = {"gate": round(score, 6), "gate_seconds": round(gate_seconds, 4), "answer": _outcome_row(ans, seconds)}
        if not self.config.answerer.extractive:
            t1 = time.perf_counter()
            fb = self.session.fallback(ans, self.ctx.cache)
            row["fallback"] = _outcome_row(fb, seconds + time.perf_counter() - t1)
        return row

    def _closed_book(self, q: EvalQuestion) -> dict:
        t0 = time.perf_counter()
        gen = self.session.generator
        text = gen.generate([{"role": "system", "content": CLOSED_BOOK_PROMPT}, {"role": "user", "content": q.question}],
                            max_new_tokens=self.ctx.max_new_tokens, temperature=0.0).strip()
        abstained = not normalize_answer(text) or gate.is_abstention(text)
        row = {"text": text, "prediction": "" if abstained else text, "abstained": abstained, "mode": "closed-book",
               "reason": "", "unsupported": 0, "claims": 0 if abstained else _claims(text), "citations": 0,
               "citations_supported": 0, "cited": [], "seconds": round(time.perf_counter() - t0, 4)}
        return {"gate": None, "gate_seconds": 0.0, "answer": row}


@dataclass
class _Context:
    index: str
    index_dir: Path
    retriever: Retriever
    embedder: object
    cache: object
    generators: dict
    max_new_tokens: int
    version: str  # what the answers depend on in the index


def _relevant(q: EvalQuestion, files: list[str]) -> dict[str, int] | None:
    if q.relevant:
        return {d: g for d, g in q.relevant.items() if g > 0} or None
    if not q.answerable or not q.source or q.held_out:
        return None
    return {f: 1 for f in files if matches(q.source, f)} or None


def _ranked(q: EvalQuestion, passages) -> list[str]:
    if q.relevant is not None:
        return [doc_id_of_source(p.source) for p in passages]
    out = []
    for p in passages:
        hit = next((s for s in (p.source, *p.sources) if matches(q.source, s)), None)
        out.append(hit or p.source)
    return out


def _prepare_index(qset: QuestionSet, index: str | None, index_dir: Path, work_dir: Path, embedder,
                   progress: bool) -> tuple[str, Path]:
    """(index name, folder) the questions are asked of: the data's own corpus indexed in work_dir, or `index`."""
    if qset.corpus is None:
        if not index:
            raise InvalidInput("a JSONL question set is asked of one of your indexes; pass --index NAME")
        return index, Path(index_dir)
    folder = work_dir / "corpus"
    for rel, text in qset.corpus.items():
        path = folder / rel
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    name = f"eval-{qset.kind}"
    emb = embedder or embed.load_embedder()
    with Index.open_or_create(name, work_dir / "indexes", embedder=emb) as idx:
        idx.sync(folder, embedder=emb, progress=progress)
    return name, work_dir / "indexes"


def run(data: Path | str | QuestionSet | Sequence[EvalQuestion], *, index: str | None = None,
        index_dir: Path = DEFAULT_INDEX_DIR, out_dir: Path | None = None, work_dir: Path | None = None,
        ks: Sequence[int] = (DEFAULT_K,), answerers: Sequence[str] = ("extractive",), closed_book: bool = False,
        gate_threshold: float | None = None, max_new_tokens: int = 128, limit: int | None = None, seed: int = 0,
        embedder=None, generators: dict | None = None, resamples: int = BOOTSTRAP, progress: bool = True,
        on_progress: Callable[[int, int, str], None] | None = None, stop: threading.Event | None = None,
        charts: bool = True) -> EvalReport:
    """Ask the question set (a path: JSONL, SQuAD 2.0 JSON or a BEIR folder; or the questions) under every
    configuration and measure each; writes report.json, report.md, questions.jsonl and charts to `out_dir`
    when given. `generators`: {answerer spec: Generator} to use instead of loading by name (tests, the server)."""
    from tqdm.auto import tqdm

    qset = data if isinstance(data, QuestionSet) else (
        load_set(Path(data)) if isinstance(data, (str, Path)) else QuestionSet(list(data), "jsonl", Path("questions")))
    questions = select(qset.questions, limit, seed)
    if not questions:
        raise InvalidInput("the question set is empty")
    ks = sorted(set(int(k) for k in ks))
    if not ks or ks[0] < 1:
        raise InvalidInput(f"--k takes passage counts of at least 1, got {ks}")
    parsed = [parse_answerer(a) for a in dict.fromkeys(answerers)]
    if closed_book and not any(not a.extractive for a in parsed):
        raise InvalidInput("--closed-book compares a generator without retrieval; name one with --answerer")
    threshold = gate.load_gate().threshold if gate_threshold is None else float(gate_threshold)
    if not 0.0 <= threshold <= 1.0:
        raise InvalidInput(f"the gate threshold must be between 0 and 1, got {threshold}")
    work_dir = Path(work_dir or (Path(out_dir) / "cache" if out_dir else Path(".cache/ragapp-eval")))
    work_dir.mkdir(parents=True, exist_ok=True)

    source_name, source_dir = _prepare_index(qset, index, Path(index_dir), work_dir, embedder, progress)
    held = sorted({q.source for q in questions if q.held_out and q.source})
    name, folder = held_out_index(source_name, source_dir, held, work_dir / "indexes")
    with Index.open(source_name, source_dir) as src:
        version = f"{src.version()}|{'|'.join(held)}"
    with Index.open(name, folder) as idx:
        emb = idx.embedder(embedder)
        files = [f["source"] for f in idx.files()]
    if qset.kind == "beir":
        files = [doc_id_of_source(f) for f in files]
    retriever = Retriever(name, index_dir=folder, embedder=emb)
    ctx = _Context(name, folder, retriever, emb, vector_cache(emb), dict(generators or {}), max_new_tokens, version)
    configs = [] if qset.retrieval_only else (
        [RunConfig(a, k) for a in parsed for k in ks] + ([RunConfig(a, 0) for a in parsed if not a.extractive]
                                                         if closed_book else []))
    answers_dir = work_dir / "answers"
    answers_dir.mkdir(parents=True, exist_ok=True)
    calibration = _file_hash(gate.CALIBRATION_FILE)
    keys = {q.id: _row_key(q) for q in questions}
    try:
        # retrieval first: cheap, and its numbers do not depend on the answerer
        rkey = hashlib.sha256(f"retrieval|{version}|{emb.name}|{RETRIEVAL_DEPTH}".encode()).hexdigest()[:10]
        rfile = answers_dir / f"retrieval.{rkey}.jsonl"
        retrieved = read_results(rfile)
        files_of: dict[str, Path] = {}
        done_of: dict[RunConfig, dict] = {}
        for c in configs:
            a = c.answerer
            weights = "extractive" if a.extractive else model_fingerprint(a.backend, a.model, max_new_tokens)
            key = hashlib.sha256(f"{c.label}|{weights}|{max_new_tokens}|{calibration}|{version}|{emb.name}".encode())
            files_of[c] = answers_dir / f"{c.file_stem()}.{key.hexdigest()[:10]}.jsonl"
            done_of[c] = read_results(files_of[c])
        total = len(questions) * (1 + len(configs))
        already = sum(keys[q.id] in retrieved for q in questions) + sum(
            keys[q.id] in done_of[c] for c in configs for q in questions)
        bar = tqdm(total=total, initial=already, desc="evaluating", unit=" answers", disable=not progress)
        count = [already]

        def step(what: str) -> None:
            count[0] += 1
            bar.update(1)
            if on_progress:
                on_progress(count[0], total, what)
            if stop is not None and stop.is_set():
                raise Interrupted("the evaluation was stopped; run it again to go on from the answers kept")

        if on_progress:
            on_progress(already, total, "starting")
        for q in questions:
            if keys[q.id] in retrieved:
                continue
            passages = retriever.search(q.question, k=max(RETRIEVAL_DEPTH, max(ks)))
            row = {"id": keys[q.id], "ranked": _ranked(q, passages)}
            _append(rfile, row)
            retrieved[keys[q.id]] = row
            step("retrieval")
        for c in configs:
            asker = _Asker(c, ctx)
            for q in questions:
                if keys[q.id] in done_of[c]:
                    continue
                row = {"id": keys[q.id], **asker.ask(q)}
                _append(files_of[c], row)
                done_of[c][keys[q.id]] = row
                step(c.label)
        bar.close()
    finally:
        retriever.close()

    relevant = {q.id: _relevant(q, files) for q in questions}
    retrieval_terms = {k: [retrieval_scores(retrieved[keys[q.id]]["ranked"], relevant[q.id], k)
                           for q in questions if relevant[q.id]] for k in ks}
    answers = {c: [done_of[c][keys[q.id]] for q in questions] for c in configs}
    report = build_report(qset, questions, retrieval_terms, answers, threshold, held, resamples, seed,
                          index=source_name if qset.corpus is None else None)
    if out_dir is not None:
        report.save(Path(out_dir), charts=charts)
    return report


def _append(path: Path, row: dict) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row, ensure_ascii=False) + "\n")
