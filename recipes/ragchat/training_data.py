"""Grounded SFT, preference (DPO) and development data for the default chat model.

Every example is laid out EXACTLY as `ragapp ask` delivers it at inference: the prompt is
`ragapp.answer.prompt.build_messages(question, passages)` with the passages ranked like retrieval ranks
them and cut by `ragapp.answer.prompt.fit_passages` to the model's context in the model's own tokens.
Passages are the chunks `ragapp.ingest.chunking` makes of one file per paragraph (`Article/003.txt`, as
the indexes of SQuAD paragraphs are built), so lengths, labels and fences match what serving shows.

Sources (training sets of ../shared/data only; evaluation sets are never read):
  SQuAD 1.1 train   answerable: the gold chunk among distractor chunks (other paragraphs of the
                    same article ranked by overlap with the question: the hard case retrieval
                    produces), the answer span with its [n].
                    unanswerable "missing": the same ranking with the gold paragraph left out.
                    unanswerable "swapped": the gold chunk shown, but a name or number of the
                    question replaced by one the passages never mention (SQuAD 2.0's most common
                    kind of unanswerable question, made from answerable ones).
                    unanswerable "elsewhere": passages of another article only.
                    A few held-out ARTICLES are the development set (dev.jsonl), never trained on.
  SubjQA train      review questions, `ANSWERNOTFOUND` = unanswerable (real, not synthetic).
  WikiQA train      questions whose Wikipedia sentences hold no answer = unanswerable.
  HaluEval QA       preference pairs: right answer (chosen) vs hallucinated answer (rejected).
The abstention answer is `ragapp.answer.prompt.ABSTENTION`, which `ragapp.answer.gate.is_abstention` recognises.

Preference pairs (DPO): chosen is grounded or abstains; rejected is a hallucination: a span of a
distractor passage cited as if it answered, an answer invented from another article, or (for
unanswerable prompts) an answer made up from the passages shown. A small share pairs a grounded
answer (chosen) against a needless abstention (rejected), so that preference tuning cannot win by
abstaining always.

    python -m recipes.ragchat.training_data --tokenizer runs/ragchat/cpu/warmstart --out runs/ragchat/data
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import json
import os
import random
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ragapp.answer.prompt import ABSTENTION, build_messages, fit_passages
from ragapp.eval.evaluate import safe_name
from ragapp.retrieve.lexical import term_set
from ragapp.types import Document, Passage
from recipes.ragchat.config import HALUEVAL_DIR, SQUAD_TRAIN, SUBJQA, WIKIQA_TRAIN

HALUEVAL = HALUEVAL_DIR / "qa_one-turn_data.json"
# retrieval's rank of the gold passage, as hybrid search ranks SQuAD paragraphs (mostly first)
GOLD_RANK_WEIGHTS = (0.75, 0.15, 0.07, 0.03)
_QUESTION_WORDS = {"What", "Which", "Who", "Whom", "Whose", "When", "Where", "Why", "How", "In", "On", "At",
                   "The", "A", "An", "Is", "Are", "Was", "Were", "Did", "Does", "Do", "By", "For", "From", "To",
                   "Of", "After", "Before", "During", "According", "Along", "If", "As", "Name", "I"}
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_SWAPPABLE = re.compile(r"\b(?:\d{1,4}(?:,\d{3})*|[A-Z][a-z]+(?:\s+[A-Z][a-z]+)*)\b")


@dataclass
class BuildConfig:
    out_dir: str = "runs/ragchat/data"
    tokenizer: str = ""            # the generator's tokenizer folder (prompts are fitted in its tokens)
    context_tokens: int = 512      # the model's max_seq_len
    answer_tokens: int = 64        # reserved for the answer: prompt budget = context_tokens - answer_tokens
    retrieved: int = 5             # passages "retrieved" before fitting (ragapp's default k)
    dev_articles: int = 24         # SQuAD articles held out as the development set
    sft_examples: int = 12000
    dpo_pairs: int = 3000
    dev_examples: int = 600        # half answerable, half unanswerable
    unanswerable: float = 0.3      # share of unanswerable SFT examples (preference tuning then teaches the hard cases)
    removed_weight: float = 0.0    # weight of "removed" (gold passage without its answer sentences) among the
                                   # synthetic unanswerable kinds of SFT_MIX (missing 0.2, swapped 0.1, elsewhere 0.03)
    seed: int = 0

    def fingerprint(self) -> str:
        d = asdict(self)
        d.pop("out_dir")
        if not d["removed_weight"]:
            d.pop("removed_weight")  # data built before the field existed keeps its fingerprint
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


# ----------------------------------------------------------------------------- sources


def load_squad(path: Path | None = None) -> list[dict]:
    with gzip.open(path or SQUAD_TRAIN, "rt", encoding="utf-8") as fh:
        return json.load(fh)["data"]


def split_articles(articles: list[dict], n_dev: int, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, dev) by ARTICLE, so no dev paragraph or its article's other paragraphs is trained on."""
    order = list(range(len(articles)))
    random.Random(seed).shuffle(order)
    dev = set(order[:n_dev])
    return [a for i, a in enumerate(articles) if i not in dev], [a for i, a in enumerate(articles) if i in dev]


class Chunker:
    """Paragraph -> the chunks (Passages) an index of one file per paragraph holds."""

    def __init__(self):
        from transformers import AutoTokenizer

        from ragapp.ingest.chunking import make_splitter
        from ragapp.ingest.embed import _resolve

        self.splitter = make_splitter(AutoTokenizer.from_pretrained(_resolve("all-MiniLM-L6-v2")))

    def __call__(self, text: str, source: str) -> list[Passage]:
        from ragapp.ingest.chunking import chunk_documents

        chunks = chunk_documents([Document(text + "\n", source)], None, splitter=self.splitter)
        return [Passage(c.text, c.source, None, 0.0, -1, start=c.start, end=c.end, sources=[c.source])
                for c in chunks]


@dataclass
class Question:
    question: str
    answer: str
    start: int
    article: int   # index into the article list
    gold: int      # index of the gold chunk in the article's chunks


class Articles:
    """SQuAD articles as chunk lists, with the questions that point at them."""

    def __init__(self, articles: list[dict], chunker: Chunker, progress: bool = True):
        from tqdm.auto import tqdm

        self.chunks: list[list[Passage]] = []
        self.terms: list[list[frozenset]] = []
        self.questions: list[Question] = []
        for a, art in enumerate(tqdm(articles, desc="chunking articles", disable=not progress, mininterval=2)):
            chunks: list[Passage] = []
            for j, para in enumerate(art["paragraphs"]):
                first = len(chunks)
                chunks.extend(chunker(para["context"], f"{safe_name(art['title'])}/{j:03d}.txt"))
                for qa in para["qas"]:
                    ans = qa["answers"][0]
                    start, text = ans["answer_start"], ans["text"].strip()
                    end = start + len(text)
                    gold = next((k for k in range(first, len(chunks))
                                 if chunks[k].start <= start and end <= chunks[k].end), None)
                    if text and gold is not None and text in chunks[gold].text:
                        self.questions.append(Question(qa["question"].strip(), text, start, a, gold))
            self.chunks.append(chunks)
            self.terms.append([term_set(c.text) for c in chunks])


# ----------------------------------------------------------------------------- prompts


class TokenCount:
    """len(tokenizer(text)["input_ids"]) without special tokens, memoized per pre-token.

    fit_passages counts ~10 candidate prompts per example (its binary search cuts the last passage
    word by word), and encoding a whole 450-token prompt each time made building the data take an
    hour. A fast tokenizer's count is the sum over its pre-tokens (added tokens split out first, the
    normalizer applied, then the pre-tokenizer: whitespace/punctuation for WordPiece, the GPT-2 regex
    for byte-level BPE), each looked up once. The result is exact, and `check` compares it with a real
    encode: a mismatch switches this counter to full encoding for good."""

    def __init__(self, tokenizer):
        self.tok = tokenizer
        backend = tokenizer.backend_tokenizer
        self.normalizer, self.pre, self.model = backend.normalizer, backend.pre_tokenizer, backend.model
        self.added = set(tokenizer.get_added_vocab())
        self.split = re.compile("(" + "|".join(re.escape(t) for t in sorted(self.added, key=len, reverse=True)) + ")")
        self.memo: dict[str, int] = {}
        self.lines: dict[str, int] = {}
        self.exact_only = self.pre is None
        self.calls = 0

    def slow(self, text: str) -> int:
        return len(self.tok(text, add_special_tokens=False)["input_ids"])

    def fast(self, text: str) -> int:
        # lines repeat across the candidate prompts of one example (system prompt, whole passages), and
        # both pre-tokenizers split at newlines, so whole lines are memoized too
        n = 0
        if len(self.lines) > 50_000:
            self.lines.clear()
        for line in re.split(r"(\n+)", text):
            c = self.lines.get(line)
            if c is None:
                c = self.lines[line] = self._pieces(line)
            n += c
        return n

    def _pieces(self, text: str) -> int:
        n = 0
        for part in self.split.split(text):
            if not part:
                continue
            if part in self.added:
                n += 1
                continue
            norm = self.normalizer.normalize_str(part) if self.normalizer is not None else part
            for piece, _ in self.pre.pre_tokenize_str(norm):
                c = self.memo.get(piece)
                if c is None:
                    c = self.memo[piece] = len(self.model.tokenize(piece))
                n += c
        return n

    def __call__(self, text: str) -> int:
        if self.exact_only:
            return self.slow(text)
        self.calls += 1
        n = self.fast(text)
        if self.calls % 100 == 1 and n != self.slow(text):  # spot check; the first call is always checked
            self.exact_only = True
            return self.slow(text)
        return n


class PromptFitter:
    """build_messages + fit_passages in the generator's tokens, exactly as the llm backend counts."""

    def __init__(self, tokenizer_dir: str, context_tokens: int, answer_tokens: int):
        from llm.tokenizer import load_tokenizer

        self.tok = load_tokenizer(tokenizer_dir)
        self.tok.model_max_length = 1 << 30  # counting long candidates is fine; silence the length warning
        self.special = tuple(self.tok.all_special_tokens) + tuple(
            str(t) for t in getattr(self.tok, "added_tokens_decoder", {}).values())
        self.budget = context_tokens - answer_tokens
        self.counter = TokenCount(self.tok)

    def render(self, messages) -> str:
        return self.tok.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)

    def count(self, messages) -> int:
        return self.counter(self.render(messages))

    def fit(self, question: str, ranked: list[Passage]) -> list[Passage]:
        shown = fit_passages(question, ranked, self.count, self.budget, self.special)
        if shown and self.counter.slow(self.render(self.messages(question, shown))) > self.budget:
            self.counter.exact_only = True  # the fast count was wrong for this tokenizer: count exactly from now on
            shown = fit_passages(question, ranked, self.count, self.budget, self.special)
        return shown

    def messages(self, question: str, shown: list[Passage]) -> list[dict]:
        return build_messages(question, shown, self.special)


def answer_text(span: str, n: int) -> str:
    return f"{span} [{n}]"


def _contains(passage: Passage, text: str) -> bool:
    return text.lower() in passage.text.lower()


class Builder:
    def __init__(self, cfg: BuildConfig, arts: Articles, fitter: PromptFitter, rng: random.Random):
        self.cfg, self.arts, self.fitter, self.rng = cfg, arts, fitter, rng
        # answers of each chunk's questions: the "plausible wrong answers" of preference pairs
        self.chunk_answers: dict[tuple[int, int], list[str]] = {}
        for q in arts.questions:
            self.chunk_answers.setdefault((q.article, q.gold), []).append(q.answer)
        self.phrases = sorted({m.group(0) for q in arts.questions for m in _SWAPPABLE.finditer(q.question)
                               if not m.group(0).isdigit() and m.group(0) not in _QUESTION_WORDS})

    def ranked_distractors(self, q: Question, exclude: set[int]) -> list[int]:
        """Other chunks of the article without the answer, most question-like first (+ noise)."""
        qt = term_set(q.question)
        cands = [k for k in range(len(self.arts.chunks[q.article]))
                 if k not in exclude and not _contains(self.arts.chunks[q.article][k], q.answer)]
        score = {k: len(qt & self.arts.terms[q.article][k]) + self.rng.random() for k in cands}
        return sorted(cands, key=score.get, reverse=True)

    def _with_stranger(self, ranked: list[Passage], q: Question) -> list[Passage]:
        """Sometimes retrieval brings a passage of another document; put one at a low rank."""
        if self.rng.random() < 0.2 and len(self.arts.chunks) > 1:
            other = self.rng.choice([a for a in range(len(self.arts.chunks)) if a != q.article])
            ranked = ranked[:]
            ranked.insert(self.rng.randint(1, len(ranked)), self.rng.choice(self.arts.chunks[other]))
        return ranked[: self.cfg.retrieved]

    def answerable(self, q: Question) -> dict | None:
        chunks = self.arts.chunks[q.article]
        ranked = [chunks[k] for k in self.ranked_distractors(q, {q.gold})][: self.cfg.retrieved - 1]
        rank = self.rng.choices(range(len(GOLD_RANK_WEIGHTS)), GOLD_RANK_WEIGHTS)[0]
        ranked.insert(min(rank, len(ranked)), chunks[q.gold])
        shown = self.fitter.fit(q.question, self._with_stranger(ranked, q))
        n = next((i for i, p in enumerate(shown, 1) if p.source == chunks[q.gold].source and q.answer in p.text), None)
        # the gold passage did not fit (or was cut before the answer): what reaches the model holds no answer
        kind = "answerable" if n else "missing"
        return self._record(q.question, shown, answer_text(q.answer, n) if n else ABSTENTION, kind, q, n)

    def missing(self, q: Question) -> dict | None:
        chunks = self.arts.chunks[q.article]
        ranked = [chunks[k] for k in self.ranked_distractors(q, {q.gold})]
        if not ranked:
            return None
        shown = self.fitter.fit(q.question, self._with_stranger(ranked, q))
        return self._record(q.question, shown, ABSTENTION, "missing", q, None)

    def elsewhere(self, q: Question) -> dict | None:
        if len(self.arts.chunks) < 2:
            return None
        other = self.rng.choice([a for a in range(len(self.arts.chunks)) if a != q.article])
        qt = term_set(q.question)
        ranked = sorted(self.arts.chunks[other], key=lambda p: -len(qt & term_set(p.text)) - self.rng.random())
        shown = self.fitter.fit(q.question, ranked[: self.cfg.retrieved])
        if any(_contains(p, q.answer) for p in shown):
            return None
        return self._record(q.question, shown, ABSTENTION, "elsewhere", q, None)

    def swapped(self, q: Question) -> dict | None:
        """The gold passage shown, the question about something it never mentions."""
        chunks = self.arts.chunks[q.article]
        gold = chunks[q.gold]
        spots = [m for m in _SWAPPABLE.finditer(q.question)
                 if m.start() > 0 and m.group(0) not in _QUESTION_WORDS and m.group(0) in gold.text
                 and m.group(0) not in q.answer]
        if not spots:
            return None
        m = self.rng.choice(spots)
        old = m.group(0)
        ranked = [gold] + [chunks[k] for k in self.ranked_distractors(q, {q.gold})][: self.cfg.retrieved - 1]
        everything = " ".join(p.text for p in ranked).lower()
        new = None
        for _ in range(20):
            if old.replace(",", "").isdigit():
                v = int(old.replace(",", ""))
                cand = str(v + self.rng.choice([-1, 1]) * self.rng.randint(2, max(3, v // 10 if v < 1000 else 40)))
            else:
                words = len(old.split())
                pool = [p for p in self.rng.sample(self.phrases, min(200, len(self.phrases))) if len(p.split()) == words]
                cand = pool[0] if pool else None
            if cand and cand != old and cand.lower() not in everything and not cand.startswith("-"):
                new = cand
                break
        if new is None:
            return None
        question = q.question[: m.start()] + new + q.question[m.end():]
        shown = self.fitter.fit(question, ranked)
        rec = self._record(question, shown, ABSTENTION, "swapped", q, None)
        if rec is not None:
            rec["hallucination"] = answer_text(q.answer, 1)  # what a model that ignores the swap says
        return rec

    def removed(self, q: Question) -> dict | None:
        """The gold passage shown without the sentences that hold the answer: still on the question's topic,
        as SQuAD 2.0's unanswerable questions are (they were written to look answerable from their paragraph)."""
        chunks = self.arts.chunks[q.article]
        gold = chunks[q.gold]
        kept = [s for s in _SENTENCE_END.split(gold.text) if q.answer.lower() not in s.lower()]
        text = " ".join(kept).strip()
        if len(kept) < 2 or len(text) < 100:
            return None
        ranked = [replace(gold, text=text)] + [chunks[k] for k in self.ranked_distractors(q, {q.gold})][: self.cfg.retrieved - 1]
        shown = self.fitter.fit(q.question, ranked)
        return self._record(q.question, shown, ABSTENTION, "removed", q, None)

    def _record(self, question, shown, answer, kind, q: Question | None, n) -> dict | None:
        if not shown:
            return None
        rec = {"messages": self.fitter.messages(question, shown) + [{"role": "assistant", "content": answer}],
               "kind": kind, "answers": [q.answer] if (q and n) else [], "n": n}
        if q is not None:  # provenance, for analysis and tests (the trainer reads only "messages")
            rec["source"] = self.arts.chunks[q.article][q.gold].source
            rec["shown"] = [p.source for p in shown]
            rec["original"] = {"question": q.question, "answer": q.answer}
        return rec

    # -- preference pairs

    def wrong_answer(self, rec: dict, q: Question) -> str | None:
        """A hallucination for this prompt: a distractor's answer cited as if it answered (most), or an
        answer invented from another article (cited to passage 1)."""
        shown = rec["shown"]
        chunks = self.arts.chunks[q.article]
        by_source = {p.source: k for k, p in enumerate(chunks)}
        options = []
        for i, src in enumerate(shown, 1):
            k = by_source.get(src)
            for a in self.chunk_answers.get((q.article, k), []) if k is not None else []:
                if a.lower() != q.answer.lower() and a.lower() not in q.answer.lower():
                    options.append(answer_text(a, i))
        if options and self.rng.random() < 0.8:
            return self.rng.choice(options)
        other = self.rng.choice(self.arts.questions)
        if other.answer.lower() in " ".join(rec["messages"][1]["content"].lower().split()):
            return None
        return answer_text(other.answer, self.rng.randint(1, len(shown)))


def pair_of(rec: dict, chosen: str, rejected: str) -> dict:
    return {"prompt": rec["messages"][:-1], "chosen": chosen, "rejected": rejected, "kind": rec["kind"]}


# ----------------------------------------------------------------------------- other training sets


def subjqa_records(fitter: PromptFitter, chunker: Chunker, rng: random.Random, n_unanswerable: int,
                   n_answerable: int) -> list[dict]:
    """SubjQA train (reviews): real unanswerable questions, and some answerable ones so that the review
    domain is no shortcut to abstaining."""
    rows = []
    for path in sorted(SUBJQA.glob("*/splits/train.csv.gz")):
        with gzip.open(path, "rt", encoding="utf-8", newline="") as fh:
            rows.extend(csv.DictReader(fh))
    rng.shuffle(rows)
    out, want = [], {"unanswerable": n_unanswerable, "answerable": n_answerable}
    for row in rows:
        span = (row.get("human_ans_spans") or "").strip()
        kind = "unanswerable" if span == "ANSWERNOTFOUND" else "answerable"
        if not want[kind] or not row.get("review") or not row.get("question"):
            continue
        chunks = chunker(row["review"].strip(), f"{safe_name(row['domain'])}/{safe_name(row['item_id'])}.txt")
        if kind == "answerable":
            gold = [p for p in chunks if span in p.text]
            if not gold or len(span.split()) > 25:
                continue
            chunks = gold[:1] + [p for p in chunks if p is not gold[0]]
        shown = fitter.fit(row["question"].strip(), chunks[:3])
        n = next((i for i, p in enumerate(shown, 1) if span in p.text), None) if kind == "answerable" else None
        if not shown or (kind == "answerable" and not n):
            continue
        answer = answer_text(span, n) if n else ABSTENTION
        out.append({"messages": fitter.messages(row["question"].strip(), shown) + [{"role": "assistant", "content": answer}],
                    "kind": f"subjqa-{kind}", "answers": [span] if n else [], "n": n})
        want[kind] -= 1
        if not any(want.values()):
            break
    return out


def wikiqa_records(fitter: PromptFitter, chunker: Chunker, rng: random.Random, n: int) -> list[dict]:
    """WikiQA train questions none of whose Wikipedia sentences answers them: real 'not in the passage'."""
    groups: dict[str, dict] = {}
    with open(WIKIQA_TRAIN, encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE):
            g = groups.setdefault(row["QuestionID"], {"q": row["Question"], "s": [], "any": False})
            g["s"].append(row["Sentence"])
            g["any"] |= row["Label"] == "1"
    ids = sorted(k for k, g in groups.items() if not g["any"])
    rng.shuffle(ids)
    out = []
    for qid in ids[:n]:
        g = groups[qid]
        text = re.sub(r"\s+([.,;:!?)])", r"\1", " ".join(g["s"]))
        question = g["q"].strip()
        question = question[:1].upper() + question[1:] + ("" if question.endswith("?") else "?")
        shown = fitter.fit(question, chunker(text, f"wiki/{qid}.txt")[:3])
        if shown:
            out.append({"messages": fitter.messages(question, shown) + [{"role": "assistant", "content": ABSTENTION}],
                        "kind": "wikiqa-unanswerable", "answers": [], "n": None})
    return out


def halueval_pairs(fitter: PromptFitter, chunker: Chunker, n: int) -> list[dict]:
    """HaluEval QA: the right answer (chosen) against the hallucinated one (rejected), both cited."""
    out = []
    with open(HALUEVAL, encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if len(out) >= n:
                break
            r = json.loads(line)
            shown = fitter.fit(r["question"], chunker(r["knowledge"], f"knowledge/{i:04d}.txt")[:2])
            if shown:
                out.append({"prompt": fitter.messages(r["question"], shown),
                            "chosen": answer_text(r["right_answer"].strip().rstrip("."), 1),
                            "rejected": answer_text(r["hallucinated_answer"].strip().rstrip("."), 1),
                            "kind": "halueval"})
    return out


# ----------------------------------------------------------------------------- the build

# shares of the SQuAD-made SFT examples (scaled to BuildConfig.unanswerable); REAL_UNANSWERABLE of all
# examples are SubjQA/WikiQA's own unanswerable questions (and a few answerable SubjQA ones)
SFT_MIX = {"answerable": 0.6, "missing": 0.2, "swapped": 0.1, "elsewhere": 0.03}
REAL_UNANSWERABLE = 0.07
DPO_MIX = {"answerable": 0.55, "missing": 0.25, "swapped": 0.2}


def _draw(rng: random.Random, mix: dict[str, float]) -> str:
    return rng.choices(list(mix), list(mix.values()))[0]


def _make(builder: Builder, q: Question, kind: str) -> dict | None:
    return getattr(builder, kind)(q)


def _sft_examples(builder: Builder, questions: list[Question], n: int, mix: dict, rng,
                  bar=None) -> tuple[list[dict], int]:
    """(up to n examples, how many questions they consumed): later questions stay unseen."""
    out, used = [], 0
    for q in questions:
        if len(out) >= n:
            break
        used += 1
        rec = _make(builder, q, _draw(rng, mix))
        if rec is not None:
            out.append(rec)
            if bar is not None:
                bar.update(1)
    return out, used


def _dpo_pairs(builder: Builder, questions: list[Question], n: int, rng, bar=None) -> list[dict]:
    out = []
    for q in questions:
        if len(out) >= n:
            break
        rec = _make(builder, q, _draw(rng, DPO_MIX))
        if rec is None:
            continue
        if rec["kind"] == "swapped":
            pair = pair_of(rec, ABSTENTION, rec["hallucination"])
        elif rec["kind"] in ("missing", "elsewhere"):
            wrong = builder.wrong_answer(rec, q)
            pair = pair_of(rec, ABSTENTION, wrong) if wrong else None
        else:  # answerable: grounded answer vs a hallucination, or (a fifth) vs a needless abstention
            chosen = rec["messages"][-1]["content"]
            wrong = ABSTENTION if rng.random() < 0.2 else builder.wrong_answer(rec, q)
            pair = pair_of(rec, chosen, wrong) if wrong and wrong != chosen else None
        if pair is not None:
            out.append(pair)
            if bar is not None:
                bar.update(1)
    return out


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


FILES = ("sft.jsonl", "sft-val.jsonl", "dpo.jsonl", "dpo-val.jsonl", "dev.jsonl")


def calibration_rows(cfg: BuildConfig, n: int = 600, progress: bool = False) -> list[dict]:
    """Held-out prompts for tuning the abstention offset, from the dev articles (never trained on): half
    answerable, half "removed" (the gold passage without its answer sentences), the mix of SQuAD 2.0."""
    _, dev_arts = split_articles(load_squad(), cfg.dev_articles, cfg.seed)
    fitter = PromptFitter(cfg.tokenizer, cfg.context_tokens, cfg.answer_tokens)
    dev = Articles(dev_arts, Chunker(), progress)
    rng = random.Random(cfg.seed + 2)
    builder = Builder(cfg, dev, fitter, rng)
    questions = dev.questions[:]
    rng.shuffle(questions)
    rows, used = _sft_examples(builder, questions, n // 2, {"answerable": 1.0}, rng)
    more, _ = _sft_examples(builder, questions[used:], n - len(rows), {"removed": 1.0}, rng)
    return rows + more


def build(cfg: BuildConfig, progress: bool = True) -> dict:
    """Write OUT_DIR/{sft,sft-val,dpo,dpo-val,dev}.jsonl and manifest.json; returns the manifest.
    Rerunning with the same settings does nothing (the manifest is written last, atomically)."""
    from tqdm.auto import tqdm

    if not cfg.tokenizer:
        raise ValueError("--tokenizer is required: the generator's tokenizer folder (prompts are fitted in its tokens)")
    out = Path(cfg.out_dir)
    mpath = out / "manifest.json"
    if mpath.exists():
        manifest = json.loads(mpath.read_text())
        if manifest.get("fingerprint") == cfg.fingerprint() and all((out / f).exists() for f in FILES):
            return manifest
    for path in (SQUAD_TRAIN, WIKIQA_TRAIN, HALUEVAL, SUBJQA):
        if not path.exists():
            raise FileNotFoundError(f"{path}: training set missing; set RAGAPP_DATA to the shared data folder")
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(cfg.seed)
    train_arts, dev_arts = split_articles(load_squad(), cfg.dev_articles, cfg.seed)
    chunker = Chunker()
    fitter = PromptFitter(cfg.tokenizer, cfg.context_tokens, cfg.answer_tokens)
    train, dev = Articles(train_arts, chunker, progress), Articles(dev_arts, chunker, progress)
    questions = train.questions[:]
    rng.shuffle(questions)

    builder = Builder(cfg, train, fitter, rng)
    n_real = min(round(cfg.sft_examples * REAL_UNANSWERABLE), round(cfg.sft_examples * cfg.unanswerable))
    n_squad = cfg.sft_examples - n_real
    u = max(0.0, (cfg.sft_examples * cfg.unanswerable - n_real) / max(1, n_squad))  # synthetic share
    sft_mix = {**SFT_MIX, **({"removed": cfg.removed_weight} if cfg.removed_weight else {})}
    synthetic = sum(v for k, v in sft_mix.items() if k != "answerable")
    mix = {"answerable": 1 - u, **{k: u * v / synthetic for k, v in sft_mix.items() if k != "answerable"}}
    bar = tqdm(total=cfg.sft_examples + cfg.dpo_pairs, desc="building examples", disable=not progress, mininterval=2)
    sft, used = _sft_examples(builder, questions, n_squad, mix, rng, bar)
    sft += subjqa_records(fitter, chunker, rng, n_real // 2 - n_real // 8, n_real // 8)
    sft += wikiqa_records(fitter, chunker, rng, n_real - n_real // 2)
    rng.shuffle(sft)
    bar.update(n_real)
    halu = halueval_pairs(fitter, chunker, min(500, cfg.dpo_pairs // 5))
    dpo = _dpo_pairs(builder, questions[used:], cfg.dpo_pairs - len(halu), rng, bar) + halu
    rng.shuffle(dpo)
    bar.close()

    dev_builder = Builder(cfg, dev, fitter, random.Random(cfg.seed + 1))
    dev_q = dev.questions[:]
    random.Random(cfg.seed + 1).shuffle(dev_q)
    half = cfg.dev_examples // 2
    dev_rows, a = _sft_examples(dev_builder, dev_q, half, {"answerable": 1.0}, rng)
    more, b = _sft_examples(dev_builder, dev_q[a:], cfg.dev_examples - len(dev_rows), {"missing": 0.5, "swapped": 0.5}, rng)
    dev_rows += more
    sft_val, c = _sft_examples(dev_builder, dev_q[a + b:], 200, mix, rng)
    dpo_val = _dpo_pairs(dev_builder, dev_q[a + b + c:], 100, rng)

    _write_jsonl(out / "sft.jsonl", sft)
    _write_jsonl(out / "sft-val.jsonl", sft_val)
    _write_jsonl(out / "dpo.jsonl", dpo)
    _write_jsonl(out / "dpo-val.jsonl", dpo_val)
    _write_jsonl(out / "dev.jsonl", dev_rows)

    def kinds(rows):
        counts: dict[str, int] = {}
        for r in rows:
            counts[r["kind"]] = counts.get(r["kind"], 0) + 1
        return dict(sorted(counts.items()))

    manifest = {"fingerprint": cfg.fingerprint(), "config": asdict(cfg),
                "dev_articles": sorted(a["title"] for a in dev_arts),
                "counts": {"sft": kinds(sft), "sft-val": kinds(sft_val), "dpo": kinds(dpo),
                           "dpo-val": kinds(dpo_val), "dev": kinds(dev_rows)}}
    tmp = mpath.with_name("manifest.json.tmp")
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(tmp, mpath)
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recipes.ragchat.training_data", description=__doc__.split("\n")[0])
    defaults = BuildConfig()
    for name, value in asdict(defaults).items():
        parser.add_argument("--" + name.replace("_", "-"), type=type(value), default=value, help=f"(default: {value})")
    args = parser.parse_args(argv)
    manifest = build(BuildConfig(**vars(args)))
    print(json.dumps(manifest["counts"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
