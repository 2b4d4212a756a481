"""A question set made from one of the user's own indexes, with no judge model.

    answerable    a question written (ragapp.eval.writers) from a chunk sampled from a file that stays
                  in the index; its reference answer is the span the writer asked about
    unanswerable  a question written the same way from a file that is HELD OUT: the run removes that
                  file from a temporary copy of the index (ragapp.eval.holdout), so the documents no
                  longer hold the answer and the right behaviour is to abstain

Both kinds are asked of the same index (the copy without the held-out files), as the run will ask them.

The filter (no judge model: retrieval decides what counts as evidence). FILTER_K = 20 passages are
retrieved for each written question from that index, and
  - an answerable question is kept only if one of them comes from its source file and contains the
    answer span (SQuAD-normalised, whole words): the evidence is there and can be found. Sets are thus
    biased toward questions that retrieval finds within 20 passages; hit@k for k < 20 still varies.
  - an unanswerable question is kept only if none of them contains the answer span: no other file
    gives the answer away (a second copy of the document, a sentence saying the same thing).
Files whose content is stored under several paths are never held out (the content would stay).
The held-out files are drawn first (seeded): about a fifth of the files, at least one, never more
than half, more while they have too few chunks for the unanswerable questions asked for.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path

from ragapp.config import DEFAULT_INDEX_DIR
from ragapp.errors import InvalidInput
from ragapp.eval.holdout import held_out_index
from ragapp.eval.questions import EvalQuestion, matches
from ragapp.eval.squad import normalize_answer
from ragapp.eval.writers import QuestionWriter, make_writer
from ragapp.index.index import Index
from ragapp.retrieve.retriever import Retriever

FILTER_K = 20
ROUNDS = 3  # passes over the sampled chunks


@dataclass
class MadeSet:
    questions: list[EvalQuestion]
    held_out: list[str]  # files removed from the index for the unanswerable questions
    written: dict[str, int] = field(default_factory=dict)  # questions written, by kind
    kept: dict[str, int] = field(default_factory=dict)  # questions that passed the filter, by kind

    def summary(self) -> str:
        a, u = self.kept.get("answerable", 0), self.kept.get("unanswerable", 0)
        return (f"{a} answerable questions (of {self.written.get('answerable', 0)} written) and {u} unanswerable "
                f"(of {self.written.get('unanswerable', 0)}; {len(self.held_out)} file(s) held out)")


def contains(text: str, answer: str) -> bool:
    """Does `text` hold `answer`, SQuAD-normalised, as whole words?"""
    a = normalize_answer(answer)
    return bool(a) and f" {a} " in f" {normalize_answer(text)} "


def make_question_set(index: str, index_dir: Path = DEFAULT_INDEX_DIR, n: int = 50, unanswerable: float = 0.3,
                      writer: str | QuestionWriter = "template", generator=None, seed: int = 0, embedder=None,
                      work_dir: Path | None = None, filter_k: int = FILTER_K, progress=None) -> MadeSet:
    """About `n` questions (`unanswerable` of them unanswerable) from index `index`. `progress(done, total)`
    is called as questions are kept. `work_dir` keeps the held-out copy (default: a temporary folder)."""
    import tempfile

    if n < 1:
        raise InvalidInput(f"--make must ask for at least 1 question, got {n}")
    if not 0.0 <= unanswerable <= 1.0:
        raise InvalidInput(f"--unanswerable is a share between 0 and 1, got {unanswerable}")
    w = make_writer(writer, generator) if isinstance(writer, str) else writer
    rng = random.Random(seed)
    with Index.open(index, index_dir) as idx:
        chunks = idx.get_chunks(idx.store.chunk_ids().tolist())
    if not chunks:
        raise InvalidInput(f"index '{index}' holds no text to write questions from; index some documents first")
    by_file: dict[str, list[dict]] = {}
    for c in chunks:
        by_file.setdefault(c["source"], []).append(c)
    files = sorted(by_file)
    n_un = round(n * unanswerable)
    if n_un and len(files) < 2:
        raise InvalidInput(f"index '{index}' has one file; unanswerable questions hold a file out and ask the others, "
                           "so they need two files or more (or pass --unanswerable 0)")
    n_ans = n - n_un
    held = _hold_out(files, by_file, n_un, rng) if n_un else []

    with tempfile.TemporaryDirectory(prefix="ragapp-heldout-") as tmp:
        name, folder = held_out_index(index, Path(index_dir), held, Path(work_dir) if work_dir else Path(tmp))
        retriever = Retriever(name, index_dir=folder, embedder=embedder)
        try:
            made = MadeSet([], held)
            kept_files = [f for f in files if f not in held]
            done = [0]
            total = n_ans + n_un

            def tick():
                done[0] += 1
                if progress:
                    progress(done[0], total)

            answerable_qs = _write(w, [c for f in kept_files for c in by_file[f]], n_ans, rng, retriever, filter_k,
                                   True, made, tick)
            unanswerable_qs = _write(w, [c for f in held for c in by_file[f]], n_un, rng, retriever, filter_k,
                                     False, made, tick)
        finally:
            retriever.close()
    for i, q in enumerate(answerable_qs, 1):
        q.id = f"a{i:03d}"
    for i, q in enumerate(unanswerable_qs, 1):
        q.id = f"u{i:03d}"
    made.questions = answerable_qs + unanswerable_qs
    if not made.questions:
        raise InvalidInput(f"no question passed the filter for index '{index}' (written: {made.written}); "
                           "its text may have no names or numbers for the template writer to ask about "
                           "(try --writer generator with an hf/openai model)")
    return made


def _hold_out(files: list[str], by_file: dict[str, list[dict]], n_un: int, rng: random.Random) -> list[str]:
    # a file whose content is also stored under another path cannot be held out: the content stays
    candidates = [f for f in files if all(len(c.get("sources") or [f]) == 1 for c in by_file[f])]
    rng.shuffle(candidates)
    cap = max(1, len(files) // 2)
    want = min(cap, max(1, math.ceil(len(files) / 5)))
    held: list[str] = []
    for f in candidates:
        if len(held) >= cap or (len(held) >= want and sum(len(by_file[h]) for h in held) >= 2 * n_un):
            break
        held.append(f)
    if not held:
        raise InvalidInput("every file's content is stored under several paths, so none can be held out for "
                           "unanswerable questions; pass --unanswerable 0")
    return sorted(held)


def _write(writer: QuestionWriter, pool: list[dict], want: int, rng: random.Random, retriever: Retriever,
           filter_k: int, answerable: bool, made: MadeSet, tick) -> list[EvalQuestion]:
    kind = "answerable" if answerable else "unanswerable"
    pool = list(pool)
    rng.shuffle(pool)
    out: list[EvalQuestion] = []
    seen: set[str] = set()
    # up to ROUNDS passes: a chunk may give another question from another of its sentences
    for chunk in [c for _ in range(ROUNDS) for c in pool] if want else []:
        if len(out) >= want:
            break
        written = writer.write(chunk["text"], rng)
        if written is None or written.question.lower() in seen:
            continue
        made.written[kind] = made.written.get(kind, 0) + 1
        passages = retriever.search(written.question, k=filter_k)
        if answerable:
            ok = any(matches(chunk["source"], p.source) and contains(p.text, written.answer) for p in passages)
        else:
            ok = not any(contains(p.text, written.answer) for p in passages)
        if not ok:
            continue
        seen.add(written.question.lower())
        made.kept[kind] = made.kept.get(kind, 0) + 1
        out.append(EvalQuestion("", written.question, [written.answer] if answerable else [], answerable,
                                chunk["source"], held_out=not answerable, context=written.sentence,
                                writer=writer.name, chunk_id=int(chunk["id"])))
        tick()
    return out
