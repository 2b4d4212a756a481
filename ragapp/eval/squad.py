"""SQuAD 2.0: the official answer normalisation and scoring, and the data as a corpus of files.

`normalize_answer`, `compute_exact` and `compute_f1` are the one implementation of SQuAD scoring in the
project: the SQuAD 2.0 benchmark (ragapp.eval.evaluate), `ragapp eval` (ragapp.eval.metrics) and the recipes
all import them from here.
"""

from __future__ import annotations

import collections
import json
import re
import string
from dataclasses import dataclass
from pathlib import Path

# ----------------------------------------------------------------------------- official scoring
# From the official SQuAD 2.0 evaluation script (evaluate-v2.0.py), whose normalisation every
# published number uses; copied because it is not packaged on PyPI.


def normalize_answer(s: str) -> str:
    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return " ".join(remove_articles(remove_punc(s.lower())).split())


def get_tokens(s: str) -> list[str]:
    return normalize_answer(s).split() if s else []


def compute_exact(a_gold: str, a_pred: str) -> int:
    return int(normalize_answer(a_gold) == normalize_answer(a_pred))


def compute_f1(a_gold: str, a_pred: str) -> float:
    gold_toks, pred_toks = get_tokens(a_gold), get_tokens(a_pred)
    common = collections.Counter(gold_toks) & collections.Counter(pred_toks)
    num_same = sum(common.values())
    if len(gold_toks) == 0 or len(pred_toks) == 0:
        return float(gold_toks == pred_toks)
    if num_same == 0:
        return 0.0
    precision, recall = num_same / len(pred_toks), num_same / len(gold_toks)
    return 2 * precision * recall / (precision + recall)


def gold_answers(qa: dict) -> list[str]:
    golds = [a["text"] for a in qa["answers"] if normalize_answer(a["text"])]
    return golds or [""]  # unanswerable: the only right answer is the empty one


# ----------------------------------------------------------------------------- data


@dataclass
class Question:
    id: str
    question: str
    golds: list[str]
    answerable: bool
    source: str  # the file of its paragraph


def safe_name(title: str) -> str:
    """The folder of an article's paragraph files (also recipes.ragchat's calibration and training data)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", title).strip("_")[:80] or "article"


def write_corpus(articles: list[dict], folder: Path) -> None:
    """One .txt file per paragraph: folder/<article>/<nnn>.txt (kept if already there)."""
    for art in articles:
        sub = Path(folder) / safe_name(art["title"])
        sub.mkdir(parents=True, exist_ok=True)
        for j, para in enumerate(art["paragraphs"]):
            path = sub / f"{j:03d}.txt"
            if not path.exists():
                path.write_text(para["context"] + "\n", encoding="utf-8")


def load_squad(path: Path) -> tuple[list[dict], list[Question]]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))["data"]
    questions = []
    for art in data:
        for j, para in enumerate(art["paragraphs"]):
            source = f"{safe_name(art['title'])}/{j:03d}.txt"
            for qa in para["qas"]:
                questions.append(Question(qa["id"], qa["question"], gold_answers(qa), not qa.get("is_impossible", False), source))
    return data, questions
