"""Calibrate the grounding gate and the citation check on DEVELOPMENT data (never evaluation sets).

    python -m recipes.ragchat.calibrate                 # both; writes ragapp/answer/calibration.json
    python -m recipes.ragchat.calibrate --part gate     # only the gate (keeps the citation section)
    python -m recipes.ragchat.calibrate --part gate --embedder multilingual-e5-small
                                                        # a gate for indexes of another embedder ("gates")

Gate (SQuAD 1.1 train, ../shared/data/train/squad1.1-train.json.gz): the paragraphs of
--index-articles randomly chosen articles are indexed through the real Index (one file per
paragraph) and searched with the real Retriever (hybrid, k=5), as `ragapp ask` does.
  answerable   = questions of indexed articles whose answer text is in a retrieved passage
  unanswerable = questions of --heldout-articles other articles, whose article is NOT indexed:
                 exactly what retrieval delivers when the documents do not hold the answer.
A logistic regression on the evidence features (ragapp.answer.gate) is fitted; its threshold is set so
that --keep of the answerable questions pass (cross-validated probabilities), and the rates at
that threshold are stored with it.

Citation check (HaluEval QA, ../shared/data/train/halueval-qa): each right answer against its
knowledge passage = supported, each hallucinated answer = unsupported. The lexical weight and
threshold maximise balanced accuracy over a grid.

Long steps resume: the index syncs incrementally, feature rows are appended to JSONL files in
--workdir and are not recomputed.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
from datetime import date
from pathlib import Path

from ragapp.answer.gate import CALIBRATION_FILE, FEATURES
from ragapp.eval.evaluate import read_results, write_corpus
from recipes.ragchat.config import HALUEVAL_DIR, SQUAD_TRAIN


def _append(path: Path, row: dict) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")


# ----------------------------------------------------------------------------- the gate


def gate_rows(workdir: Path, index_articles: int, heldout_articles: int, questions: int, seed: int, k: int,
              embedder_name: str | None = None) -> list[dict]:
    from tqdm.auto import tqdm

    from ragapp.answer.gate import measure
    from ragapp.index.index import Index
    from ragapp.ingest.embed import load_embedder
    from ragapp.retrieve.retriever import Retriever
    from ragapp.retrieve.similarity import CachedEmbedder, vector_cache

    with gzip.open(SQUAD_TRAIN, "rt", encoding="utf-8") as fh:
        data = json.load(fh)["data"]
    order = list(range(len(data)))
    random.Random(seed).shuffle(order)
    indexed = [data[i] for i in order[:index_articles]]
    heldout = [data[i] for i in order[index_articles : index_articles + heldout_articles]]

    corpus, index_dir = workdir / "corpus", workdir / "indexes"
    write_corpus(indexed, corpus)
    embedder = load_embedder(embedder_name) if embedder_name else load_embedder()
    index = Index.open_or_create("calibration", index_dir, embedder=embedder)
    index.sync(corpus, embedder=embedder, progress=True)
    cache = vector_cache(embedder)
    with Index.open("calibration", index_dir) as idx:
        cache.warm([text for _, text in idx.all_chunks()], store=workdir / "passage_vectors.npy")
    retriever = Retriever(["calibration"], index_dir=index_dir, embedder=CachedEmbedder(cache))

    rng = random.Random(seed + 1)

    def sample(articles):  # SQuAD 1.1 train has no question ids: name them article-paragraph-question
        qs = [(f"{order.index(data.index(a))}-{j}-{i}", qa) for a in articles
              for j, para in enumerate(a["paragraphs"]) for i, qa in enumerate(para["qas"])]
        return rng.sample(qs, min(questions, len(qs)))

    todo = [(qid, qa, 1) for qid, qa in sample(indexed)] + [(qid, qa, 0) for qid, qa in sample(heldout)]
    path = workdir / f"gate_rows_k{k}.jsonl"
    rows = read_results(path)
    cache.warm([qa["question"] for qid, qa, _ in todo if qid not in rows], store=workdir / "question_vectors.npy",
               sentences_too=False)  # one batched pass
    for qid, qa, in_index in tqdm([t for t in todo if t[0] not in rows], desc="gate features", unit=" q"):
        passages = retriever.search(qa["question"], k=k, mode="hybrid")
        ev = measure(qa["question"], passages, cache, score=False)
        answer = qa["answers"][0]["text"]
        row = {"id": qid, "in_index": in_index, "answer_retrieved": any(answer in p.text for p in passages),
               **{f: getattr(ev, f) for f in FEATURES}}
        _append(path, row)
        rows[qid] = row
    return [rows[qid] for qid, _, _ in todo]


def fit_gate(rows: list[dict], keep: float, seed: int) -> dict:
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import cross_val_predict

    pos = [r for r in rows if r["in_index"] and r["answer_retrieved"]]
    neg = [r for r in rows if not r["in_index"]]
    used = pos + neg
    x = np.array([[r[f] for f in FEATURES] for r in used], dtype=np.float64)
    y = np.array([1] * len(pos) + [0] * len(neg))
    mean, scale = x.mean(0), x.std(0) + 1e-9
    z = (x - mean) / scale
    clf = LogisticRegression(C=1.0)
    cv = cross_val_predict(clf, z, y, cv=5, method="predict_proba")[:, 1]
    threshold = float(np.quantile(cv[y == 1], 1.0 - keep))
    clf.fit(z, y)
    return {
        "features": list(FEATURES),
        "weights": [round(float(w), 6) for w in clf.coef_[0]],
        "bias": round(float(clf.intercept_[0]), 6),
        "mean": [round(float(m), 6) for m in mean],
        "scale": [round(float(s), 6) for s in scale],
        "threshold": round(threshold, 4),
        "dev": {
            "answerable": len(pos),
            "unanswerable": len(neg),
            "answerable_not_retrieved_excluded": sum(1 for r in rows if r["in_index"] and not r["answer_retrieved"]),
            "answerable_passed": round(float((cv[y == 1] >= threshold).mean()), 4),
            "unanswerable_abstained": round(float((cv[y == 0] < threshold).mean()), 4),
            "auc": round(float(roc_auc_score(y, cv)), 4),
            "per_feature_auc": {f: round(float(roc_auc_score(y, x[:, i])), 4) for i, f in enumerate(FEATURES)},
        },
    }


def shift_to(gate: dict, threshold: float) -> dict:
    """The same decisions with `threshold` as the cut: the bias moves by the difference of the two
    cut-offs' log-odds. One threshold then means "as calibrated" for every embedder (the page has one
    gate setting); the gate's own cut-off is kept as "fitted_threshold"."""
    import math

    def logit(p: float) -> float:
        return math.log(p / (1 - p))

    shifted = dict(gate)
    shifted["bias"] = round(gate["bias"] + logit(threshold) - logit(gate["threshold"]), 6)
    shifted["fitted_threshold"], shifted["threshold"] = gate["threshold"], threshold
    return shifted


# ----------------------------------------------------------------------------- the citation check


def citation_rows(workdir: Path) -> list[dict]:
    from tqdm.auto import tqdm

    from ragapp.answer.citations import strip_citations, support_features
    from ragapp.ingest.embed import load_embedder
    from ragapp.retrieve.similarity import vector_cache
    from ragapp.types import Passage

    cache = vector_cache(load_embedder())
    examples: dict[str, tuple[str, str, str, int]] = {}
    for name in ("qa_one-turn_data.json", "qa_multi-turn_data.json"):
        for i, line in enumerate((HALUEVAL_DIR / name).read_text().splitlines()):
            r = json.loads(line)
            examples[f"{i}-right"] = (r["question"], r["knowledge"], r["right_answer"], 1)
            examples[f"{name[3:6]}{i}-hallucinated"] = (r["question"], r["knowledge"], r["hallucinated_answer"], 0)
    path = workdir / "citation_rows.jsonl"
    rows = read_results(path)
    todo = [e for e in examples.items() if e[0] not in rows]
    # one batched pass over the knowledge passages (and their sentences), then over the answers
    cache.warm(list(dict.fromkeys(k for _, (_, k, _, _) in todo)), store=workdir / "halueval_vectors.npy")
    cache.warm([strip_citations(a) for _, (_, _, a, _) in todo], store=workdir / "halueval_answer_vectors.npy", sentences_too=False)
    for key, (q, knowledge, answer, label) in tqdm(todo, desc="citation features", unit=" claims"):
        lexical, semantic, _ = support_features(answer, Passage(knowledge, "k", None, 0.0, 0), cache, q)
        row = {"id": key, "supported": label, "lexical": lexical, "semantic": semantic}
        _append(path, row)
        rows[key] = row
    return [rows[key] for key in examples]


def fit_citations(rows: list[dict]) -> dict:
    import numpy as np

    lex = np.array([r["lexical"] for r in rows])
    sem = np.array([r["semantic"] for r in rows])
    y = np.array([r["supported"] for r in rows]) == 1
    best = None
    for w in np.round(np.arange(0.0, 1.0001, 0.05), 2):
        score = w * lex + (1 - w) * sem
        for t in np.unique(np.round(score, 3)):
            tpr, tnr = (score[y] >= t).mean(), (score[~y] < t).mean()
            bal = (tpr + tnr) / 2
            if best is None or bal > best[0] + 1e-9:
                best = (bal, float(w), float(t), float(tpr), float(tnr))
    bal, w, t, tpr, tnr = best
    return {
        "lexical_weight": w,
        "threshold": round(t, 4),
        "dev": {"supported": int(y.sum()), "unsupported": int((~y).sum()), "balanced_accuracy": round(bal, 4),
                "supported_passed": round(tpr, 4), "unsupported_flagged": round(tnr, 4)},
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m recipes.ragchat.calibrate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=("all", "gate", "citations"), default="all")
    ap.add_argument("--workdir", type=Path, default=Path(".cache/calibrate"), help="corpus, index and feature rows (resumable)")
    ap.add_argument("--out", type=Path, default=CALIBRATION_FILE)
    ap.add_argument("--index-articles", type=int, default=40)
    ap.add_argument("--heldout-articles", type=int, default=20)
    ap.add_argument("--questions", type=int, default=600, help="sampled from each side")
    ap.add_argument("--keep", type=float, default=0.95, help="share of answerable questions the gate must pass")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--embedder", help="calibrate the gate of indexes built with this embedder (another than the "
                                       "default); stored under \"gates\" with the default gate's threshold")
    args = ap.parse_args(argv)
    if args.embedder:
        from ragapp.ingest.embed import canonical_name

        args.embedder = canonical_name(args.embedder)
        if args.part != "gate":
            ap.error("--embedder calibrates a gate: use it with --part gate")
        args.workdir = args.workdir / args.embedder.replace("/", "_")
    args.workdir.mkdir(parents=True, exist_ok=True)
    out = json.loads(args.out.read_text()) if args.out.exists() else {}
    if args.part in ("all", "citations"):
        cit = fit_citations(citation_rows(args.workdir))
        cit["data"] = "HaluEval QA (one-turn + multi-turn): right answers vs hallucinated answers against their knowledge"
        out["citations"] = cit
    if args.part in ("all", "gate"):
        gate = fit_gate(gate_rows(args.workdir, args.index_articles, args.heldout_articles, args.questions, args.seed,
                                  args.k, args.embedder), args.keep, args.seed)
        gate["data"] = (f"SQuAD 1.1 train: {args.index_articles} indexed articles vs {args.heldout_articles} held-out "
                        f"articles, {args.questions} questions each, seed {args.seed}, hybrid retrieval k={args.k}, "
                        f"{args.embedder or 'all-MiniLM-L6-v2'}; threshold keeps {args.keep:.0%} of answerable questions")
        if args.embedder:
            gate["made_by"] = f"python -m recipes.ragchat.calibrate --part gate --embedder {args.embedder} ({date.today()})"
            out.setdefault("gates", {})[args.embedder] = shift_to(gate, out["gate"]["threshold"])
        else:
            out["gate"] = gate
    if not args.embedder:
        out["made_by"] = f"python -m recipes.ragchat.calibrate --part {args.part} ({date.today()})"
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    shown = out["gates"][args.embedder] if args.embedder else out
    print(json.dumps({k: v.get("dev") if isinstance(v, dict) else v for k, v in shown.items()}, indent=2))


if __name__ == "__main__":
    main()
