"""EvalReport: what `ragapp eval` measured, and the files it writes.

    report.json      every number with its 95% interval, the trade-off curves, the run's settings
    report.md        the same as Markdown tables
    questions.jsonl  one line per question and configuration: the answer, whether it is right, hallucinated
    hallucination.png, tradeoff.png   (ragapp.eval.charts)

Rows of the answer table, for each answerer and k (the answers were made once, with the gate off):
    "gate off"             the answer as the pipeline gives it without the gate (generators: without fallback)
    "gate on"              the same, abstaining when the gate's evidence score is below the threshold
    "gate on + fallback"   generators: as the app answers by default (a failed citation check → quotes)
and "no retrieval" rows for generators asked the question alone (closed book).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ragapp.eval.metrics import ANSWER_METRICS, RETRIEVAL_METRICS, Outcome, Rate, answer_terms, exact_and_f1, summarise
from ragapp.types import ABSTENTION

TRADEOFF_STEPS = 51  # thresholds 0, 0.02, ..., 1 (and the calibrated one)


@dataclass
class Row:
    label: str
    answerer: str
    k: int  # 0: no retrieval
    gate: bool
    fallback: bool
    metrics: dict[str, Rate]

    def to_dict(self) -> dict:
        return {"label": self.label, "answerer": self.answerer, "k": self.k, "gate": self.gate, "fallback": self.fallback,
                "metrics": {k: v.to_dict() for k, v in self.metrics.items()}}


@dataclass
class EvalReport:
    data: str
    kind: str  # jsonl | squad | beir
    index: str | None  # the user's index asked (None: the data's own corpus)
    questions: int
    answerable: int
    unanswerable: int
    held_out: list[str]
    gate_threshold: float
    resamples: int
    seed: int
    retrieval: dict[int, dict[str, Rate]]  # k -> hit, recall, rr, ndcg10
    rows: list[Row]
    tradeoff: dict[str, list[dict]]  # "answerer · k=K" -> points as the gate threshold moves
    per_question: list[dict] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)

    def row(self, label: str) -> Row:
        return next(r for r in self.rows if r.label == label)

    def to_dict(self) -> dict:
        return {"data": self.data, "kind": self.kind, "index": self.index, "questions": self.questions,
                "answerable": self.answerable, "unanswerable": self.unanswerable, "held_out": self.held_out,
                "gate_threshold": self.gate_threshold, "bootstrap": {"resamples": self.resamples, "seed": self.seed},
                "retrieval": {str(k): {m: r.to_dict() for m, r in v.items()} for k, v in self.retrieval.items()},
                "rows": [r.to_dict() for r in self.rows], "tradeoff": self.tradeoff, "files": self.files}

    def markdown(self) -> str:
        what = f"index '{self.index}'" if self.index else f"its own corpus ({self.kind})"
        lines = [f"# Evaluation of {Path(self.data).name}", "",
                 f"{self.questions} questions ({self.answerable} answerable, {self.unanswerable} unanswerable) asked of "
                 f"{what}" + (f", {len(self.held_out)} file(s) held out" if self.held_out else "") +
                 f". 95% bootstrap intervals ({self.resamples} resamples of the questions) in brackets.", ""]
        if self.retrieval:
            n = next(iter(self.retrieval.values()))["hit"].n
            lines += [f"## Retrieval ({n} questions with a known source)", "",
                      "| k | hit@k | recall@k | MRR@10 | nDCG@10 |", "|---:|---|---|---|---|"]
            for k, m in self.retrieval.items():
                lines.append(f"| {k} | " + " | ".join(_cell(m[x], 1.0, 3) for x in RETRIEVAL_METRICS) + " |")
            lines.append("")
        if self.rows:
            lines += [f"## Answers (gate threshold {self.gate_threshold:.3f})", "",
                      "| configuration | hallucination | EM | F1 | answerable F1 | abstention precision | "
                      "abstention recall | citation precision | citation recall | s/question |",
                      "|---|---|---|---|---|---|---|---|---|---|"]
            for r in self.rows:
                m = r.metrics
                cells = [_cell(m[x], 100.0, 1) for x in ("hallucination", "em", "f1", "answerable_f1",
                         "abstention_precision", "abstention_recall", "citation_precision", "citation_recall")]
                lines.append(f"| {r.label} | " + " | ".join(cells) + f" | {_cell(m['seconds'], 1.0, 3)} |")
            lines.append("")
        if self.files:
            lines += ["Files: " + ", ".join(f"`{Path(p).name}`" for p in self.files.values()), ""]
        return "\n".join(lines)

    def save(self, out_dir: Path, charts: bool = True) -> dict[str, str]:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.files = {"json": str(out_dir / "report.json"), "markdown": str(out_dir / "report.md"),
                      "questions": str(out_dir / "questions.jsonl")}
        if charts and self.rows:
            from ragapp.eval.charts import hallucination_chart, tradeoff_chart

            self.files["hallucination_chart"] = str(hallucination_chart(self, out_dir / "hallucination.png"))
            if self.tradeoff:
                self.files["tradeoff_chart"] = str(tradeoff_chart(self, out_dir / "tradeoff.png"))
        with open(self.files["questions"], "w", encoding="utf-8") as fh:
            for row in self.per_question:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        Path(self.files["json"]).write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")
        Path(self.files["markdown"]).write_text(self.markdown())
        return self.files


def _cell(rate: Rate, scale: float, digits: int) -> str:
    if math.isnan(rate.value):
        return "–"
    unit = "%" if scale == 100.0 else ""
    return f"{rate.value * scale:.{digits}f}{unit} ({rate.low * scale:.{digits}f}–{rate.high * scale:.{digits}f})"


# ----------------------------------------------------------------------------- building it


def _abstain(record: dict) -> dict:
    return {"text": ABSTENTION, "prediction": "", "abstained": True, "mode": "abstained", "reason": "gate",
            "unsupported": 0, "claims": 0, "citations": 0, "citations_supported": 0, "cited": [],
            "seconds": record.get("gate_seconds", 0.0)}


def gated(record: dict, which: str, threshold: float | None) -> dict:
    """The answer under the gate at `threshold` (None: gate off): abstained when the evidence score is below it."""
    if threshold is not None and record.get("gate") is not None and record["gate"] < threshold:
        return _abstain(record)
    return record[which]


def _outcome(q, row: dict, passages: bool) -> Outcome:
    return Outcome(q.answerable, row["abstained"], row["prediction"], list(q.answers), row["unsupported"],
                   row["claims"], row["citations"], row["citations_supported"], row["seconds"], passages)


def _variants(config) -> list[tuple[str, str, float | None, bool]]:
    """(suffix, which answer, gate on?, fallback) of the rows one run configuration gives."""
    if not config.k:
        return [("", "answer", False, False)]
    rows = [("gate off", "answer", False, False), ("gate on", "answer", True, False)]
    if not config.answerer.extractive:
        rows.append(("gate on + fallback", "fallback", True, True))
    return rows


def _point_values(outcomes: list[Outcome]) -> dict[str, float]:
    def ratio(name):
        terms = [answer_terms(o)[name] for o in outcomes]
        den = sum(d for _, d in terms)
        return sum(n for n, _ in terms) / den if den else float("nan")

    answerable = [o for o in outcomes if o.answerable]
    out = {name: ratio(name) for name in ("hallucination", "f1", "abstention_precision", "abstention_recall")}
    out["answerable_answered"] = (sum(not o.abstained for o in answerable) / len(answerable)) if answerable else float("nan")
    return {k: (None if math.isnan(v) else round(v, 6)) for k, v in out.items()}


def build_report(qset, questions, retrieval_terms: dict[int, list[dict]], answers: dict, threshold: float,
                 held: list[str], resamples: int, seed: int, index: str | None = None) -> EvalReport:
    retrieval = {}
    for k, terms in retrieval_terms.items():
        if terms:
            retrieval[k] = summarise([{m: (t[m], 1.0) for m in RETRIEVAL_METRICS} for t in terms], RETRIEVAL_METRICS,
                                     resamples, seed)
    rows, per_question, tradeoff = [], [], {}
    for config, records in answers.items():
        for suffix, which, gate_on, fallback in _variants(config):
            label = config.label + (f" · {suffix}" if suffix else "")
            chosen = [gated(r, which, threshold if gate_on else None) for r in records]
            outcomes = [_outcome(q, row, bool(config.k)) for q, row in zip(questions, chosen)]
            terms = [answer_terms(o) for o in outcomes]
            rows.append(Row(label, config.answerer.spec, config.k, gate_on, fallback,
                            summarise(terms, ANSWER_METRICS, resamples, seed)))
            for q, row, o, rec in zip(questions, chosen, outcomes, records):
                em, f1 = exact_and_f1("" if o.abstained else o.prediction, q.answers if q.answerable else [])
                per_question.append({"configuration": label, "id": q.id, "question": q.question,
                                     "answerable": q.answerable, "answers": q.answers, "source": q.source,
                                     "answer": row["text"], "prediction": row["prediction"], "abstained": o.abstained,
                                     "mode": row["mode"], "hallucinated": o.hallucinated, "em": em,
                                     "f1": round(f1, 4), "unsupported_sentences": row["unsupported"],
                                     "cited": row["cited"], "gate_score": rec.get("gate"), "seconds": row["seconds"]})
        if config.k:
            steps = {round(i / (TRADEOFF_STEPS - 1), 4) for i in range(TRADEOFF_STEPS)} | {round(threshold, 4)}
            points = []
            for t in sorted(steps):
                outcomes = [_outcome(q, gated(r, "answer", t), True) for q, r in zip(questions, records)]
                points.append({"threshold": t, **_point_values(outcomes)})
            tradeoff[config.label] = points
    return EvalReport(str(qset.path), qset.kind, index, len(questions), sum(q.answerable for q in questions),
                      sum(not q.answerable for q in questions), list(held), round(threshold, 6), resamples, seed,
                      retrieval, rows, tradeoff, per_question)
