"""BEIR SciFact for the retrieval benchmarks: the loading, corpus files and metrics of ragapp.eval.beir,
with SciFact's folder as the default.

    from benchmarks.beir import load_beir, evaluate
    ds = load_beir(split="test")
    run = {qid: ["doc ids, best first", ...] for qid in ds.queries}
    evaluate(run, ds.qrels)   # {"ndcg@10": 0.69, "recall@100": 0.93}
"""

from __future__ import annotations

import os
from pathlib import Path

from ragapp.config import SHARED_DATA
from ragapp.eval import beir as _beir
from ragapp.eval.beir import (  # noqa: F401 - the benchmarks import these names from here
    BeirDataset,
    dedupe,
    doc_id_of_source,
    doc_text,
    evaluate,
    ndcg_at_k,
    recall_at_k,
    write_corpus_files,
)

# Evaluation-only data lives outside the repository; BEIR_SCIFACT_DIR points elsewhere.
SCIFACT_DIR = Path(os.environ.get("BEIR_SCIFACT_DIR", SHARED_DATA / "eval" / "beir-scifact"))


def load_beir(path: Path = SCIFACT_DIR, split: str = "test") -> BeirDataset:
    """Read SciFact (or another BEIR folder): corpus.jsonl, queries.jsonl and qrels/{split}.tsv."""
    if not (Path(path) / "qrels" / f"{split}.tsv").exists():
        raise FileNotFoundError(f"{Path(path) / 'qrels' / f'{split}.tsv'} not found; set BEIR_SCIFACT_DIR to the beir-scifact folder")
    return _beir.load_beir(path, split)
