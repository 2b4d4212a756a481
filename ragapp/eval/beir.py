"""BEIR datasets: loading, the corpus as files, and the two metrics BEIR reports, nDCG@10 and recall@100.

The metrics follow pytrec_eval / trec_eval as BEIR uses them, so numbers compare with the
published tables: gain = relevance grade (not 2^rel - 1), discount log2(rank + 1), ideal DCG from
the judged documents, documents whose id equals the query id ignored, averaged over every query
that has at least one relevant judgement (a query with no results scores 0).
Written here (a few lines) instead of depending on pytrec_eval, which needs a C build.
Used by `ragapp eval` (a BEIR folder as its data) and benchmarks/bench_retrieval.py (through benchmarks/beir.py).

    from ragapp.eval.beir import load_beir, evaluate
    ds = load_beir(folder, split="test")
    run = {qid: ["doc ids, best first", ...] for qid in ds.queries}
    evaluate(run, ds.qrels)   # {"ndcg@10": 0.69, "recall@100": 0.93}
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path


@dataclass
class BeirDataset:
    corpus: dict[str, dict]  # doc id -> {"title": str, "text": str}
    queries: dict[str, str]  # query id -> text, only queries judged in the split
    qrels: dict[str, dict[str, int]]  # query id -> {doc id: relevance grade}
    split: str


def is_beir_folder(path: Path) -> bool:
    path = Path(path)
    return path.is_dir() and (path / "corpus.jsonl").is_file() and (path / "queries.jsonl").is_file()


def load_beir(path: Path, split: str = "test") -> BeirDataset:
    """Read corpus.jsonl, queries.jsonl and qrels/{split}.tsv of a BEIR dataset folder."""
    path = Path(path)
    qrels_file = path / "qrels" / f"{split}.tsv"
    if not qrels_file.exists():
        raise FileNotFoundError(f"{qrels_file} not found; a BEIR folder holds corpus.jsonl, queries.jsonl "
                                f"and qrels/{split}.tsv")
    corpus: dict[str, dict] = {}
    with open(path / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            corpus[str(d["_id"])] = {"title": d.get("title", "") or "", "text": d.get("text", "") or ""}
    qrels: dict[str, dict[str, int]] = {}
    with open(qrels_file, encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t")
        next(reader)  # header: query-id corpus-id score
        for qid, did, score in reader:
            qrels.setdefault(qid, {})[did] = int(score)
    queries: dict[str, str] = {}
    with open(path / "queries.jsonl", encoding="utf-8") as f:
        for line in f:
            q = json.loads(line)
            if str(q["_id"]) in qrels:
                queries[str(q["_id"])] = q["text"]
    return BeirDataset(corpus=corpus, queries=queries, qrels=qrels, split=split)


def doc_text(doc: dict) -> str:
    """Title and abstract as one text, the way BEIR's dense baselines encode them."""
    return f"{doc['title']}\n\n{doc['text']}" if doc["title"] else doc["text"]


def write_corpus_files(ds: BeirDataset, folder: Path) -> Path:
    """Write each document as folder/<doc id>.txt (title, blank line, abstract) so that the real
    indexing pipeline can read the corpus; files already there with the same text are left alone,
    so a second call is instant and the index sync sees nothing changed."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for did, doc in ds.corpus.items():
        f = folder / f"{did}.txt"
        text = doc_text(doc)
        if not f.exists() or f.read_text(encoding="utf-8") != text:
            f.write_text(text, encoding="utf-8")
    return folder


def doc_id_of_source(source: str) -> str:
    """Inverse of write_corpus_files: 'scifact/4983.txt' -> '4983'."""
    return Path(source).stem


def dedupe(doc_ids: list[str]) -> list[str]:
    """Chunk-level ranking -> document ranking: each document at its best chunk's rank (max-pooling)."""
    seen: set[str] = set()
    return [d for d in doc_ids if not (d in seen or seen.add(d))]


def ndcg_at_k(run: dict[str, list[str]], qrels: dict[str, dict[str, int]], k: int = 10) -> float:
    scores = []
    for qid, rels in qrels.items():
        if not any(r > 0 for r in rels.values()):
            continue
        ranked = [d for d in dedupe(run.get(qid, [])) if d != qid][:k]
        dcg = sum(rels.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked))
        ideal = sorted((r for r in rels.values() if r > 0), reverse=True)[:k]
        idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
        scores.append(dcg / idcg)
    return sum(scores) / len(scores) if scores else 0.0


def recall_at_k(run: dict[str, list[str]], qrels: dict[str, dict[str, int]], k: int = 100) -> float:
    scores = []
    for qid, rels in qrels.items():
        relevant = {d for d, r in rels.items() if r > 0}
        if not relevant:
            continue
        ranked = [d for d in dedupe(run.get(qid, [])) if d != qid][:k]
        scores.append(len(relevant.intersection(ranked)) / len(relevant))
    return sum(scores) / len(scores) if scores else 0.0


def evaluate(run: dict[str, list[str]], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    """BEIR's headline metrics for a run {query id: [doc id, best first]}."""
    return {"ndcg@10": ndcg_at_k(run, qrels, 10), "recall@100": recall_at_k(run, qrels, 100)}
