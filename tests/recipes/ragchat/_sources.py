"""(A fixture module, not a conftest: a conftest here would shadow tests/conftest.py for `from conftest import ...`.)
Tiny training sources for the recipe's data tests: SQuAD / SubjQA / WikiQA / HaluEval files written in a tmp
folder (monkeypatched over recipes.ragchat.training_data's paths)."""

from __future__ import annotations

import csv
import gzip
import io
import json

import pytest


def _paragraph(title: str, i: int) -> str:
    return (f"{title} was founded in {1800 + 7 * i} by Marcus Reed. The city of {title} lies on the river Tamsel "
            f"and had {1000 + 13 * i} people in the census of year {1900 + i}. Its mayor Helen Ostrow built "
            f"{i + 2} bridges and a school named after Pietro Lanza.")


def _squad(titles: list[str]) -> dict:
    data = []
    for title in titles:
        paragraphs = []
        for i in range(4):
            ctx = _paragraph(title, i)
            qas = []
            for q, a in ((f"When was {title} founded by Marcus Reed?", str(1800 + 7 * i)),
                         (f"How many people lived in {title} in {1900 + i}?", str(1000 + 13 * i)),
                         (f"Who was the mayor of {title} that built {i + 2} bridges?", "Helen Ostrow")):
                qas.append({"question": q, "answers": [{"text": a, "answer_start": ctx.index(a)}]})
            paragraphs.append({"context": ctx, "qas": qas})
        data.append({"title": title, "paragraphs": paragraphs})
    return {"data": data}


@pytest.fixture(scope="module")
def tiny_sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("shared")
    squad = root / "squad.json.gz"
    with gzip.open(squad, "wt", encoding="utf-8") as fh:
        json.dump(_squad(["Arlen", "Borsk", "Cavell", "Dunmore", "Elstow", "Farrow"]), fh)
    subj = root / "subjqa" / "grocery" / "splits"
    subj.mkdir(parents=True)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["item_id", "domain", "question", "review", "human_ans_spans"])
    w.writeheader()
    for k in range(6):
        w.writerow({"item_id": f"B{k}", "domain": "grocery", "question": "Is the tea fresh?",
                    "review": "The tea arrived fresh and fragrant. Shipping was quick.",
                    "human_ans_spans": "ANSWERNOTFOUND" if k % 2 else "The tea arrived fresh"})
    with gzip.open(subj / "train.csv.gz", "wt", encoding="utf-8") as fh:
        fh.write(buf.getvalue())
    wiki = root / "WikiQA-train.tsv"
    wiki.write_text("QuestionID\tQuestion\tSentenceID\tSentence\tLabel\n"
                    "Q1\thow tall is the tower?\tS1\tThe tower is in Paris .\t0\n"
                    "Q1\thow tall is the tower?\tS2\tIt was built in 1889 .\t0\n"
                    "Q2\twho wrote it?\tS3\tIt was written by Ann Lee .\t1\n", encoding="utf-8")
    halu = root / "halueval.json"
    halu.write_text("\n".join(json.dumps({"knowledge": "Rollo founded Normandy in 911.", "question": "Who founded Normandy?",
                                          "right_answer": "Rollo", "hallucinated_answer": "Charlemagne"})
                              for _ in range(3)) + "\n", encoding="utf-8")
    return {"SQUAD_TRAIN": squad, "SUBJQA": root / "subjqa", "WIKIQA_TRAIN": wiki, "HALUEVAL": halu}
