"""Data: memmap token shards and packed windows for pretraining; chat (SFT), preference and
classification JSONL for fine-tuning. Every sampler is a pure function of (seed, sample index), so a
resumed run sees exactly the batches an uninterrupted one would.

Token shards (`prepare_shards`) are written atomically (tmp file + rename) and recorded in
manifest.json only once on disk; `docs_done` counts the documents inside recorded shards, so a
rerun skips exactly those and never duplicates or loses a document.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from llm.tokenizer import SPECIAL_TOKENS, chat_ids, iter_texts, open_text, render_chat, special_ids

MANIFEST = "manifest.json"
IGNORE = -100


# --------------------------------------------------------------------------- token shards
def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size < 65536 else np.dtype(np.uint32)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _atomic_write_json(path: Path, obj) -> None:
    _atomic_write_bytes(path, (json.dumps(obj, indent=1) + "\n").encode())


def tokenizer_fingerprint(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def prepare_shards(files, tokenizer, out_dir, field: str = "text", shard_tokens: int = 8_000_000,
                   val_every: int = 200, batch_docs: int = 256, max_docs: int | None = None,
                   progress: bool = True) -> dict:
    """Tokenize `files` (text/JSONL, .gz ok) into out_dir/{train,val}-NNNNN.bin shards of `eos`-separated
    documents; every `val_every`-th document goes to the held-out split. Resumable; returns the manifest."""
    from tqdm.auto import tqdm

    files = [Path(f) for f in ([files] if isinstance(files, (str, Path)) else files)]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab = len(tokenizer)
    eos = special_ids(tokenizer)["eos"]
    identity = {
        "sources": [{"path": str(f.resolve()), "size": f.stat().st_size} for f in files],
        "field": field, "vocab_size": vocab, "tokenizer": tokenizer_fingerprint(tokenizer),
        "val_every": val_every, "max_docs": max_docs,
    }
    mpath = out_dir / MANIFEST
    if mpath.exists():
        manifest = json.loads(mpath.read_text())
        differs = [k for k in identity if manifest.get(k) != identity[k]]
        if differs:
            raise ValueError(f"{out_dir} already holds shards of another corpus or tokenizer (differs in: "
                             f"{', '.join(differs)}); choose another output folder or delete that one")
        if manifest["complete"]:
            return manifest
    else:
        manifest = {**identity, "dtype": token_dtype(vocab).name, "eos_id": eos, "docs_done": 0,
                    "complete": False, "shards": [], "docs": {"train": 0, "val": 0},
                    "tokens": {"train": 0, "val": 0}}
    dtype = np.dtype(manifest["dtype"])
    skip = manifest["docs_done"]
    buffers: dict[str, list[np.ndarray]] = {"train": [], "val": []}
    counts = {"train": 0, "val": 0}
    doc_index = skip

    def flush(final: bool) -> None:
        for split in ("train", "val"):
            if not buffers[split]:
                continue
            n = sum(len(a) for a in buffers[split])
            name = f"{split}-{sum(s['split'] == split for s in manifest['shards']):05d}.bin"
            _atomic_write_bytes(out_dir / name, np.concatenate(buffers[split]).tobytes())
            manifest["shards"].append({"file": name, "split": split, "tokens": int(n), "docs": counts[split]})
            manifest["tokens"][split] += int(n)
            manifest["docs"][split] += counts[split]
            buffers[split], counts[split] = [], 0
        manifest["docs_done"] = doc_index
        manifest["complete"] = final
        _atomic_write_json(mpath, manifest)

    texts = iter_texts(files, field)
    bar = tqdm(desc=f"tokenizing -> {out_dir.name}", unit=" docs", disable=not progress, mininterval=1.0,
               initial=skip)
    for _ in range(skip):  # documents already inside recorded shards
        next(texts, None)
    pending_tokens = 0
    done = False
    while not done:
        batch = []
        for text in texts:
            if max_docs is not None and doc_index + len(batch) >= max_docs:
                break
            batch.append(text)
            if len(batch) == batch_docs:
                break
        if len(batch) < batch_docs:
            done = True
        if not batch:
            break
        for ids in tokenizer(batch, add_special_tokens=False)["input_ids"]:
            split = "val" if val_every and doc_index % val_every == val_every - 1 else "train"
            buffers[split].append(np.asarray(ids + [eos], dtype=dtype))
            counts[split] += 1
            pending_tokens += len(ids) + 1
            doc_index += 1
        bar.update(len(batch))
        bar.set_postfix(tokens=f"{manifest['tokens']['train'] + manifest['tokens']['val'] + pending_tokens:,}")
        if pending_tokens >= shard_tokens:
            flush(final=False)
            pending_tokens = 0
    flush(final=True)
    bar.close()
    return manifest


class PackedWindows:
    """Non-overlapping windows of seq_len+1 tokens over the shards of one split (documents packed,
    separated by eos). Window i is (input, target) = (w[:-1], w[1:])."""

    def __init__(self, data_dir, split: str, seq_len: int):
        data_dir = Path(data_dir)
        mpath = data_dir / MANIFEST
        if not mpath.exists():
            raise FileNotFoundError(f"{data_dir}: no {MANIFEST}; make token shards first with `llm prepare`")
        self.manifest = json.loads(mpath.read_text())
        dtype = np.dtype(self.manifest["dtype"])
        self.seq_len = seq_len
        self.shards, counts = [], []
        for s in self.manifest["shards"]:
            if s["split"] != split:
                continue
            arr = np.memmap(data_dir / s["file"], dtype=dtype, mode="r")
            n = (len(arr) - 1) // seq_len
            if n > 0:
                self.shards.append(arr)
                counts.append(n)
        self.cum = np.cumsum([0] + counts)
        if len(self) == 0:
            raise ValueError(f"{data_dir}: the {split!r} split has fewer than {seq_len + 1} tokens; "
                             f"give more text or a shorter seq_len")

    def __len__(self) -> int:
        return int(self.cum[-1])

    def window(self, i: int) -> np.ndarray:
        s = int(np.searchsorted(self.cum, i, side="right") - 1)
        start = (i - int(self.cum[s])) * self.seq_len
        return np.asarray(self.shards[s][start:start + self.seq_len + 1], dtype=np.int64)

    def batch(self, indices) -> dict:
        import torch

        w = torch.from_numpy(np.stack([self.window(int(i)) for i in indices]))
        return {"idx": w[:, :-1].contiguous(), "targets": w[:, 1:].contiguous()}


class EpochSampler:
    """Sample index g -> item index: a fresh permutation of range(n) per epoch, seeded by (seed, epoch).
    Deterministic from (seed, g) alone, which is what makes resume exact."""

    def __init__(self, n: int, seed: int, shuffle: bool = True):
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self._perm: dict[int, np.ndarray] = {}

    def __call__(self, start: int, count: int) -> list[int]:
        out = []
        for g in range(start, start + count):
            epoch, k = divmod(g, self.n)
            if not self.shuffle:
                out.append(k)
                continue
            if epoch not in self._perm:
                self._perm = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.n)}
            out.append(int(self._perm[epoch][k]))
        return out


# --------------------------------------------------------------------------- JSONL records
def iter_records(path) -> Iterator[tuple[int, dict]]:
    with open_text(path) as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{line_no}: not valid JSON ({e.msg})") from None
            if not isinstance(rec, dict):
                raise ValueError(f"{path}:{line_no}: expected a JSON object per line")
            yield line_no, rec


def _check_messages(messages, where: str) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"{where}: 'messages' must be a non-empty list of {{role, content}}")
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant") \
                or not isinstance(m.get("content"), str):
            raise ValueError(f"{where}: each message needs role system|user|assistant and string content, "
                             f"got {json.dumps(m)[:80]}")
    return messages


def _as_prompt(value, where: str) -> list[dict]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    return _check_messages(value, where)


def _as_answer(value, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and value.get("role") == "assistant":
        return str(value.get("content", ""))
    if isinstance(value, list) and value and isinstance(value[-1], dict) and value[-1].get("role") == "assistant":
        return str(value[-1].get("content", ""))
    raise ValueError(f"{where}: expected the answer as a string or an assistant message")


# --------------------------------------------------------------------------- chat encoding
# {% generation %}...{% endgeneration %}: a template that marks the assistant tokens itself (transformers'
# return_assistant_tokens_mask); templates without it (ours, SmolLM2's ChatML) get their spans by prefix rendering
_GENERATION_TAG = re.compile(r"{%-?\s*generation\s*-?%}")


def chat_spans(tokenizer, messages, last_only: bool) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of the assistant answers to train on
    (content plus the end-of-turn token, not the role header). Spans come from rendering prefixes:
    an answer starts where the conversation before it, rendered with the generation prompt, ends, and
    runs to the end of its own turn. Any chat template that renders conversations incrementally works
    (ours, ChatML)."""
    text = render_chat(tokenizer, messages, False)
    spans = []
    for k, m in enumerate(messages):
        if m["role"] != "assistant" or (last_only and k != len(messages) - 1):
            continue
        prompt = render_chat(tokenizer, messages[:k], True)
        upto = render_chat(tokenizer, messages[:k + 1], False)
        a, b = len(prompt), len(upto)
        if not (text.startswith(upto) and upto.startswith(prompt)):
            raise ValueError("the chat template does not render conversations incrementally; cannot find "
                             "the assistant spans")
        while b > a and text[b - 1].isspace():  # the newline after <|end|> / <|im_end|> is layout, not answer
            b -= 1
        spans.append((a, b))
    return text, spans


@dataclass
class Example:
    ids: np.ndarray      # (L,) int64 token ids, ending with the last answer's end-of-turn token
    mask: np.ndarray     # (L,) bool: token is a training target (answer content + end-of-turn)

    @property
    def prefix_len(self) -> int:
        """Tokens before the first answer token: the prompt, bidirectional for prefix-LM models.
        (The first answer, not the last, so no trained token is ever visible from the prefix.)"""
        return int(np.argmax(self.mask)) if self.mask.any() else len(self.ids)

    @property
    def last_answer_start(self) -> int:
        i = len(self.mask) - 1
        while i > 0 and self.mask[i - 1]:
            i -= 1
        return i


def _encode_marked(tokenizer, conversations, last_only: bool) -> list[Example]:
    """encode_chats for a template with {% generation %} marks: transformers' own assistant mask."""
    out = []
    for msgs in conversations:
        enc = tokenizer.apply_chat_template(msgs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
        ids, mask = list(enc["input_ids"]), np.asarray(enc["assistant_masks"], dtype=bool)
        if last_only:  # only the final answer: its run of marked tokens
            keep = np.zeros_like(mask)
            if msgs[-1]["role"] == "assistant" and mask.any():
                i = int(np.flatnonzero(mask)[-1])
                while i >= 0 and mask[i]:
                    keep[i] = True
                    i -= 1
            mask = keep
        end = int(np.flatnonzero(mask)[-1]) + 1 if mask.any() else len(ids)
        out.append(Example(np.asarray(ids[:end], dtype=np.int64), mask[:end]))
    return out


def encode_chats(tokenizer, conversations: list[list[dict]], last_only: bool = False) -> list[Example]:
    """Token ids of each conversation, rendered by render_chat, and the mask of the answer tokens to train on."""
    template = tokenizer.get_chat_template() if getattr(tokenizer, "chat_template", None) else ""
    if _GENERATION_TAG.search(template):
        return _encode_marked(tokenizer, conversations, last_only)
    texts, all_spans = [], []
    for msgs in conversations:
        text, spans = chat_spans(tokenizer, msgs, last_only)
        texts.append(text)
        all_spans.append(spans)
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    out = []
    for ids, offsets, spans in zip(enc["input_ids"], enc["offset_mapping"], all_spans):
        starts = np.array([o[0] for o in offsets], dtype=np.int64)
        ends = np.array([o[1] for o in offsets], dtype=np.int64)
        mask = np.zeros(len(ids), dtype=bool)
        for a, b in spans:
            mask |= (starts >= a) & (ends <= b) & (ends > starts)
        end = int(np.flatnonzero(mask)[-1]) + 1 if mask.any() else len(ids)  # nothing to learn after it
        out.append(Example(np.asarray(ids[:end], dtype=np.int64), mask[:end]))
    return out


def fit_example(ex: Example, max_len: int) -> tuple[Example | None, str]:
    """Cut the context (the left) so the example fits max_len tokens; never cut the final answer.
    Returns (example or None, "ok" | "truncated" | "dropped")."""
    if not ex.mask[1:].any():
        return None, "dropped"
    if len(ex.ids) <= max_len:
        return ex, "ok"
    cut = len(ex.ids) - max_len
    if ex.last_answer_start < cut + 1:  # the first answer token needs a token of context before it
        return None, "dropped"
    return Example(ex.ids[cut:], ex.mask[cut:]), "truncated"


def _pad(rows: list[np.ndarray], value: int):
    import torch

    T = max(len(r) for r in rows)
    out = torch.full((len(rows), T), value, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.from_numpy(r)
    return out


def lm_batch(examples: list[Example], pad_id: int) -> dict:
    """Right-padded (idx, targets) with -100 on everything but answer tokens (padding never trained)."""
    import torch

    idx = _pad([e.ids[:-1] for e in examples], pad_id)
    targets = _pad([np.where(e.mask[1:], e.ids[1:], IGNORE) for e in examples], IGNORE)
    prefix = torch.tensor([e.prefix_len for e in examples], dtype=torch.long)
    return {"idx": idx, "targets": targets, "prefix_len": prefix}


class Report:
    """Counts of examples kept / truncated / dropped, printed once so the user sees what was lost."""

    def __init__(self, name: str, cut: str = "context cut from the left",
                 drop: str = "answer alone longer than seq_len, or no answer"):
        self.name, self.cut, self.drop = name, cut, drop
        self.counts = {"ok": 0, "truncated": 0, "dropped": 0}

    def add(self, status: str) -> None:
        self.counts[status] += 1

    def __str__(self) -> str:
        c = self.counts
        kept = c["ok"] + c["truncated"]
        return (f"{self.name}: {kept:,} examples kept, {c['truncated']:,} truncated ({self.cut}), "
                f"{c['dropped']:,} dropped ({self.drop})")


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A deterministic held-out split (at least one example each side when n >= 2)."""
    if n == 0:
        return [], []
    n_val = min(max(1, round(n * val_fraction)), n - 1) if val_fraction > 0 and n >= 2 else 0
    perm = np.random.default_rng([seed, 7919]).permutation(n)
    return sorted(perm[n_val:].tolist()), sorted(perm[:n_val].tolist())


class SFTData:
    """Chat JSONL ({"messages": [...]}) -> examples with the loss on assistant tokens only."""

    def __init__(self, path, tokenizer, seq_len: int, last_only: bool = False, progress: bool = True,
                 chunk: int = 512):
        from tqdm.auto import tqdm

        self.pad_id = chat_ids(tokenizer)["pad"]
        self.report = Report(f"sft data {Path(path).name}")
        self.examples: list[Example] = []
        convs: list[list[dict]] = []

        def drain():
            for ex in encode_chats(tokenizer, convs, last_only):
                ex, status = fit_example(ex, seq_len + 1)
                self.report.add(status)
                if ex is not None:
                    self.examples.append(ex)
            convs.clear()

        for line_no, rec in tqdm(iter_records(path), desc=f"encoding {Path(path).name}", unit=" ex",
                                 disable=not progress, mininterval=1.0):
            if "messages" not in rec:
                raise ValueError(f"{path}:{line_no}: no 'messages' field (SFT lines look like "
                                 f'{{"messages": [{{"role": "user", "content": "..."}}, ...]}})')
            convs.append(_check_messages(rec["messages"], f"{path}:{line_no}"))
            if len(convs) == chunk:
                drain()
        drain()
        if not self.examples:
            raise ValueError(f"{path}: no usable examples ({self.report})")

    def __len__(self) -> int:
        return len(self.examples)

    def batch(self, indices) -> dict:
        return lm_batch([self.examples[i] for i in indices], self.pad_id)


class PreferenceData:
    """Preference JSONL ({"prompt", "chosen", "rejected"}) -> pairs of examples sharing the prompt,
    the loss mask on the answer only."""

    def __init__(self, path, tokenizer, seq_len: int, progress: bool = True):
        from tqdm.auto import tqdm

        self.pad_id = chat_ids(tokenizer)["pad"]
        self.report = Report(f"preference data {Path(path).name}")
        self.pairs: list[tuple[Example, Example]] = []
        self.prompts: list[list[dict]] = []
        for line_no, rec in tqdm(iter_records(path), desc=f"encoding {Path(path).name}", unit=" pairs",
                                 disable=not progress, mininterval=1.0):
            where = f"{path}:{line_no}"
            missing = [k for k in ("prompt", "chosen", "rejected") if k not in rec]
            if missing:
                raise ValueError(f"{where}: missing {', '.join(missing)} (preference lines look like "
                                 f'{{"prompt": "...", "chosen": "...", "rejected": "..."}})')
            prompt = _as_prompt(rec["prompt"], where)
            c, r = encode_chats(tokenizer, [
                prompt + [{"role": "assistant", "content": _as_answer(rec["chosen"], where)}],
                prompt + [{"role": "assistant", "content": _as_answer(rec["rejected"], where)}]], last_only=True)
            pair = fit_pair(c, r, seq_len + 1)
            self.report.add(pair[2])
            if pair[0] is not None:
                self.pairs.append((pair[0], pair[1]))
                self.prompts.append(prompt)
        if not self.pairs:
            raise ValueError(f"{path}: no usable preference pairs ({self.report})")

    def __len__(self) -> int:
        return len(self.pairs)

    def batch(self, indices) -> dict:
        """For DPO: chosen rows first, then rejected rows, as (idx, targets): (2B, T)."""
        return lm_batch([self.pairs[i][0] for i in indices] + [self.pairs[i][1] for i in indices], self.pad_id)

    def score_batch(self, indices) -> dict:
        """For a reward model: whole sequences (ending at the end-of-turn token) and their lengths,
        chosen rows first: (2B, T)."""
        import torch

        exs = [self.pairs[i][0] for i in indices] + [self.pairs[i][1] for i in indices]
        return {"idx": _pad([e.ids for e in exs], self.pad_id),
                "lengths": torch.tensor([len(e.ids) for e in exs], dtype=torch.long)}


def fit_pair(c: Example, r: Example, max_len: int):
    """Cut both sides' shared context by the same amount so the longer fits; never cut an answer."""
    if not (c.mask[1:].any() and r.mask[1:].any()):
        return None, None, "dropped"
    longest = max(len(c.ids), len(r.ids))
    if longest <= max_len:
        return c, r, "ok"
    cut = longest - max_len
    if min(c.last_answer_start, r.last_answer_start) < cut + 1:
        return None, None, "dropped"
    return Example(c.ids[cut:], c.mask[cut:]), Example(r.ids[cut:], r.mask[cut:]), "truncated"


class ClassificationData:
    """Classification JSONL ({"text", "label"}) -> token ids ending in eos (the pooled position)."""

    def __init__(self, path, tokenizer, seq_len: int, labels: list[str] | None = None, progress: bool = True):
        from tqdm.auto import tqdm

        ids = special_ids(tokenizer)
        self.pad_id, eos = ids["pad"], ids["eos"]
        self.report = Report(f"classification data {Path(path).name}", cut="text cut after seq_len tokens",
                             drop="none are dropped")
        texts, raw = [], []
        for line_no, rec in tqdm(iter_records(path), desc=f"reading {Path(path).name}", unit=" ex",
                                 disable=not progress, mininterval=1.0):
            if "text" not in rec or "label" not in rec:
                raise ValueError(f'{path}:{line_no}: classification lines look like {{"text": "...", "label": "..."}}')
            texts.append(str(rec["text"]))
            raw.append(str(rec["label"]))
        if not texts:
            raise ValueError(f"{path}: no examples")
        self.labels = labels if labels is not None else sorted(set(raw))
        unknown = sorted(set(raw) - set(self.labels))
        if unknown:
            raise ValueError(f"{path}: labels {unknown[:5]} were not in the training labels {self.labels[:20]}")
        index = {lab: i for i, lab in enumerate(self.labels)}
        self.rows, self.y = [], []
        for toks, lab in zip(tokenizer(texts, add_special_tokens=False)["input_ids"], raw):
            # keep the beginning of a long text; the appended eos is where the head reads
            self.report.add("truncated" if len(toks) > seq_len - 1 else "ok")
            self.rows.append(np.asarray(toks[:seq_len - 1] + [eos], dtype=np.int64))
            self.y.append(index[lab])

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, indices) -> dict:
        import torch

        rows = [self.rows[i] for i in indices]
        return {"idx": _pad(rows, self.pad_id),
                "lengths": torch.tensor([len(r) for r in rows], dtype=torch.long),
                "labels": torch.tensor([self.y[i] for i in indices], dtype=torch.long)}


class PromptData:
    """Prompts for RL: `prompt` of preference lines, or the messages before the last assistant turn of
    chat lines. Long prompts keep their end (the part next to the answer)."""

    def __init__(self, path, tokenizer, max_prompt_len: int, progress: bool = True):
        from tqdm.auto import tqdm

        self.pad_id = chat_ids(tokenizer)["pad"]
        self.report = Report(f"prompts {Path(path).name}", cut="prompt start cut", drop="only assistant turns")
        self.prompts: list[np.ndarray] = []
        self.messages: list[list[dict]] = []
        for line_no, rec in tqdm(iter_records(path), desc=f"reading {Path(path).name}", unit=" prompts",
                                 disable=not progress, mininterval=1.0):
            where = f"{path}:{line_no}"
            if "prompt" in rec:
                msgs = _as_prompt(rec["prompt"], where)
            elif "messages" in rec:
                msgs = _check_messages(rec["messages"], where)
                while msgs and msgs[-1]["role"] == "assistant":
                    msgs = msgs[:-1]
            else:
                raise ValueError(f"{where}: RL prompt lines need 'prompt' (string or messages) or 'messages'")
            if not msgs:
                self.report.add("dropped")
                continue
            toks = tokenizer(render_chat(tokenizer, msgs, True), add_special_tokens=False)["input_ids"]
            self.report.add("truncated" if len(toks) > max_prompt_len else "ok")
            self.prompts.append(np.asarray(toks[-max_prompt_len:], dtype=np.int64))
            self.messages.append(msgs)
        if not self.prompts:
            raise ValueError(f"{path}: no prompts")

    def __len__(self) -> int:
        return len(self.prompts)


__all__ = ["SPECIAL_TOKENS", "prepare_shards", "PackedWindows", "EpochSampler", "SFTData", "PreferenceData",
           "ClassificationData", "PromptData", "split_indices", "lm_batch", "Example", "encode_chats"]
