"""Question sets for `ragapp eval`: one shape (EvalQuestion) read from three formats, written as JSONL.

  JSONL (anyone can write one; `ragapp eval --make` writes one too), one question a line:
      {"question": "Where does the server listen?", "answers": ["127.0.0.1"], "answerable": true,
       "source": "chat-page.html"}
      {"question": "Who founded the company?", "answers": [], "answerable": false}
    `answers`: reference answers, any one of which is right (may be empty: then only the
    answer-free metrics count it); `source`: optional, the file that holds the answer, by name,
    path or glob (`*.pdf`); it makes the question count in the retrieval metrics.
    Optional: `id`; `held_out: true` (an unanswerable question written from `source`: the run
    removes that file from a temporary copy of the index, so the right behaviour is to abstain);
    `context` (the sentence the question was written from), `writer`, `chunk_id` (for reading).
  SQuAD 2.0 JSON: every paragraph becomes one file of the corpus; answerable and unanswerable questions.
  BEIR folder (corpus.jsonl, queries.jsonl, qrels/test.tsv): retrieval metrics only.
"""

from __future__ import annotations

import fnmatch
import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ragapp.errors import InvalidInput

FIELDS = ("id", "question", "answers", "answerable", "source", "held_out", "context", "writer", "chunk_id")


@dataclass
class EvalQuestion:
    id: str
    question: str
    answers: list[str] = field(default_factory=list)  # references; [] when unanswerable
    answerable: bool = True
    source: str | None = None  # the file holding the answer: name, path or glob
    held_out: bool = False  # remove `source` from the index for the run (a generated unanswerable question)
    context: str = ""  # the sentence it was written from (generated sets)
    writer: str = ""  # template | generator:NAME | squad | beir | "" (a person)
    chunk_id: int | None = None  # the chunk it was written from, when it was made (for reading only)
    relevant: dict[str, int] | None = None  # BEIR: document id -> grade (not in the JSONL)

    def to_json(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k in FIELDS}
        return {k: v for k, v in d.items() if v not in (None, "", False) or k in ("answerable", "answers")}


@dataclass
class QuestionSet:
    questions: list[EvalQuestion]
    kind: str  # jsonl | squad | beir
    path: Path
    corpus: dict[str, str] | None = None  # squad/beir: file name -> text, indexed into the run's own index

    @property
    def retrieval_only(self) -> bool:
        return self.kind == "beir"


def matches(source: str | None, path: str) -> bool:
    """Does a stored file path match a question's `source` (a path, a file name, or a glob)?"""
    if not source:
        return False
    if path == source or path.endswith("/" + source):
        return True
    return fnmatch.fnmatch(path, source) or fnmatch.fnmatch(Path(path).name, source)


def _bool(value, where: str, key: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(f"{where}: \"{key}\" must be true or false, got {value!r}")
    return value


def parse_row(row, where: str, default_id: str) -> EvalQuestion:
    if not isinstance(row, dict):
        raise InvalidInput(f"{where}: expected a JSON object with \"question\", \"answers\", \"answerable\"")
    unknown = sorted(set(row) - set(FIELDS))
    if unknown:
        raise InvalidInput(f"{where}: unknown field {unknown[0]!r}; the fields are {', '.join(FIELDS)}")
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        raise InvalidInput(f"{where}: no \"question\" text")
    answers = row.get("answers", [])
    if isinstance(answers, str):
        answers = [answers]
    if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
        raise InvalidInput(f"{where}: \"answers\" must be a list of strings, got {answers!r}")
    answerable = _bool(row.get("answerable", bool(answers)), where, "answerable")
    if not answerable and answers:
        raise InvalidInput(f"{where}: an unanswerable question has no answers; set \"answers\": [] "
                           "or \"answerable\": true")
    held_out = _bool(row.get("held_out", False), where, "held_out")
    source = row.get("source")
    if source is not None and not isinstance(source, str):
        raise InvalidInput(f"{where}: \"source\" must be a file name, path or glob, got {source!r}")
    if held_out and (answerable or not source):
        raise InvalidInput(f"{where}: \"held_out\" is for an unanswerable question with the \"source\" to hold out")
    chunk_id = row.get("chunk_id")
    return EvalQuestion(str(row.get("id") or default_id), question.strip(), answers, answerable, source or None,
                        held_out, str(row.get("context") or ""), str(row.get("writer") or ""),
                        int(chunk_id) if isinstance(chunk_id, int) else None)


def load_jsonl(path: Path) -> list[EvalQuestion]:
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise InvalidInput(f"{path}: cannot read the question set ({e})") from e
    out, seen = [], set()
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise InvalidInput(f"{path.name} line {i}: not JSON ({e.msg})") from e
        q = parse_row(row, f"{path.name} line {i}", f"q{i}")
        if q.id in seen:
            raise InvalidInput(f"{path.name} line {i}: id {q.id!r} is used twice")
        seen.add(q.id)
        out.append(q)
    if not out:
        raise InvalidInput(f"{path}: no questions in it")
    return out


def save_jsonl(questions: list[EvalQuestion], path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(q.to_json(), ensure_ascii=False) + "\n" for q in questions), encoding="utf-8")
    tmp.replace(path)
    return path


def load_squad_set(path: Path) -> QuestionSet:
    from ragapp.eval.squad import load_squad, safe_name

    data, questions = load_squad(path)
    corpus = {f"{safe_name(a['title'])}/{j:03d}.txt": p["context"] + "\n"
              for a in data for j, p in enumerate(a["paragraphs"])}
    qs = [EvalQuestion(q.id, q.question, [g for g in q.golds if g], q.answerable, q.source, writer="squad")
          for q in questions]
    return QuestionSet(qs, "squad", Path(path), corpus)


def load_beir_set(path: Path, split: str = "test") -> QuestionSet:
    from ragapp.eval.beir import doc_text, load_beir

    ds = load_beir(path, split)
    corpus = {f"{did}.txt": doc_text(doc) for did, doc in ds.corpus.items()}
    qs = [EvalQuestion(qid, text, [], True, writer="beir", relevant=ds.qrels[qid]) for qid, text in ds.queries.items()]
    return QuestionSet(qs, "beir", Path(path), corpus)


def load_set(path: Path) -> QuestionSet:
    """A question set by its form: a BEIR folder, SQuAD 2.0 JSON, or JSONL."""
    from ragapp.eval.beir import is_beir_folder

    path = Path(path)
    if not path.exists():
        raise InvalidInput(f"{path}: no such file or folder; give a question set (.jsonl), SQuAD 2.0 JSON or a BEIR folder")
    if path.is_dir():
        if not is_beir_folder(path):
            raise InvalidInput(f"{path}: a folder must be a BEIR dataset (corpus.jsonl, queries.jsonl, qrels/test.tsv)")
        return load_beir_set(path)
    if path.suffix == ".json":
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise InvalidInput(f"{path}: not JSON ({e})") from e
        if not (isinstance(doc, dict) and isinstance(doc.get("data"), list)):
            raise InvalidInput(f"{path}: not SQuAD 2.0 JSON ({{\"data\": [articles]}}); a question set of your own is JSONL")
        return load_squad_set(path)
    return QuestionSet(load_jsonl(path), "jsonl", path)


def select(questions: list[EvalQuestion], limit: int | None, seed: int) -> list[EvalQuestion]:
    """`limit` questions drawn at random (the same ones for the same seed), kept in file order."""
    if not limit or limit >= len(questions):
        return list(questions)
    if limit < 1:
        raise InvalidInput(f"--limit must be at least 1, got {limit}")
    keep = set(random.Random(seed).sample(range(len(questions)), limit))
    return [q for i, q in enumerate(questions) if i in keep]
