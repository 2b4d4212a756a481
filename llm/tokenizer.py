"""Tokenizer: byte-level BPE trained with Hugging Face `tokenizers`, saved as a transformers
PreTrainedTokenizerFast that carries the chat template and the special tokens.

Padding is its own token, distinct from end-of-text: a model trained where pad == eos learns to
never stop (the loss masks every eos as if it were padding).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Iterable, Iterator

SPECIAL_TOKENS = {
    "eos": "<|endoftext|>",
    "pad": "<|pad|>",
    "system": "<|system|>",
    "user": "<|user|>",
    "assistant": "<|assistant|>",
    "end": "<|end|>",
}
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
ROLES = ("system", "user", "assistant")


def open_text(path: str | Path):
    """Open a text file for reading, transparently gunzipping `*.gz`."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file (give a .txt, .jsonl or .jsonl.gz file)")
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, "rt", encoding="utf-8", errors="replace")


def is_jsonl(path: str | Path) -> bool:
    name = Path(path).name.lower().removesuffix(".gz")
    return name.endswith(".jsonl") or name.endswith(".json")


def _field_text(value, path, line_no, field) -> str:
    if isinstance(value, str):
        return value
    # A chat record ({"messages": [...]}) contributes the text of every turn.
    if isinstance(value, list) and all(isinstance(m, dict) and "content" in m for m in value):
        return "\n".join(str(m["content"]) for m in value)
    raise ValueError(f"{path}:{line_no}: field {field!r} is {type(value).__name__}, expected a string "
                     f"(choose the text field with --field)")


def iter_texts(files: Iterable[str | Path], field: str = "text") -> Iterator[str]:
    """Documents of text or JSONL files, in order. A plain text file is one document per
    blank-line-separated paragraph block; a JSONL file is one document per line (its `field`)."""
    for path in files:
        with open_text(path) as fh:
            if is_jsonl(path):
                for line_no, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise ValueError(f"{path}:{line_no}: not valid JSON ({e.msg})") from None
                    if field not in record:
                        raise ValueError(f"{path}:{line_no}: no field {field!r} (fields: "
                                         f"{', '.join(sorted(record))}); choose one with --field")
                    text = _field_text(record[field], path, line_no, field)
                    if text:
                        yield text
            else:
                block: list[str] = []
                for line in fh:
                    if line.strip():
                        block.append(line)
                    elif block:
                        yield "".join(block).strip("\n")
                        block = []
                if block:
                    yield "".join(block).strip("\n")


def _finish(tokenizer):
    """Attach the chat template; tokens are looked up by string so this works for any vocabulary."""
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def train_tokenizer(files, vocab_size: int, out_dir, field: str = "text", min_frequency: int = 2,
                    max_docs: int | None = None, progress: bool = True):
    """Train a byte-level BPE tokenizer on `files` (text or JSONL, .gz ok) and save it to `out_dir`
    as a PreTrainedTokenizerFast (tokenizer.json + tokenizer_config.json with the chat template)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from tqdm.auto import tqdm
    from transformers import PreTrainedTokenizerFast

    files = [Path(f) for f in ([files] if isinstance(files, (str, Path)) else files)]
    if not files:
        raise ValueError("no input files: give at least one text or JSONL file")
    specials = list(SPECIAL_TOKENS.values())
    min_vocab = 256 + len(specials)
    if vocab_size < min_vocab:
        raise ValueError(f"vocab_size {vocab_size} is too small: byte-level BPE needs at least "
                         f"{min_vocab} (256 bytes + {len(specials)} special tokens)")

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )

    def docs():
        bar = tqdm(desc="tokenizer: reading", unit=" docs", disable=not progress, mininterval=1.0)
        for i, text in enumerate(iter_texts(files, field)):
            if max_docs is not None and i >= max_docs:
                break
            bar.update(1)
            yield text
        bar.close()

    tok.train_from_iterator(docs(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=SPECIAL_TOKENS["eos"], bos_token=SPECIAL_TOKENS["eos"], pad_token=SPECIAL_TOKENS["pad"],
        additional_special_tokens=[SPECIAL_TOKENS[k] for k in ("system", "user", "assistant", "end")],
        model_max_length=1 << 30, clean_up_tokenization_spaces=False,
    )
    _finish(fast)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out_dir))
    return fast


def add_chat_tokens(tokenizer):
    """Make a pretrained tokenizer (e.g. MiniLM's WordPiece) chat-ready: add the role and end-of-turn
    tokens, an end-of-text token if it has none, a padding token distinct from it, and the template.
    The caller must resize the model's embeddings to `len(tokenizer)`."""
    if tokenizer.eos_token is None:
        tokenizer.add_special_tokens({"eos_token": SPECIAL_TOKENS["eos"]})
    if tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.eos_token:
        tokenizer.add_special_tokens({"pad_token": SPECIAL_TOKENS["pad"]})
    from tokenizers import AddedToken

    # add_tokens(special_tokens=True) rather than the additional/extra_special_tokens list, whose
    # name and replace semantics differ between transformers 4 and 5.
    roles = [SPECIAL_TOKENS[k] for k in ("system", "user", "assistant", "end")]
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in roles
                          if t not in tokenizer.get_vocab()], special_tokens=True)
    return _finish(tokenizer)


def load_tokenizer(path):
    """Load a tokenizer saved by `train_tokenizer`/`save_pretrained` (a folder or a checkpoint folder)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no tokenizer folder here (train one with `llm tokenizer`)")
    if (path / "tokenizer.json").is_file():
        # tokenizer.json holds the whole pipeline (normalizer, pre-tokenizer, special tokens), so the generic
        # class encodes exactly like the saved one; AutoTokenizer would also read a checkpoint's config.json
        # (model_type llm-gpt) and warn that transformers does not know it
        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(path))
    else:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.chat_template is None:
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


# --------------------------------------------------------------------------- chat rendering
# Two kinds of chat tokenizer: ours (CHAT_TEMPLATE over the <|system|> <|user|> <|assistant|> <|end|> tokens) and
# an imported instruct model's, which keeps the template it was tuned on (SmolLM2: ChatML,
# `<|im_start|>role\n...<|im_end|>`). Its prompts, SFT/DPO data and stop tokens must follow that template, or
# fine-tuning and generation talk to the model in a format it never saw. Everything chat goes through
# render_chat, end_of_turn and chat_ids below.
def has_own_template(tokenizer) -> bool:
    """Whether the tokenizer brings a chat template of its own (an imported model's) rather than ours."""
    template = getattr(tokenizer, "chat_template", None)
    return bool(template) and template != CHAT_TEMPLATE


def render_chat(tokenizer, messages, add_generation_prompt: bool = False) -> str:
    """The text of a conversation: the tokenizer's chat template (its own, or ours), or ours when it has none.
    With add_generation_prompt the text ends with the header of the assistant reply to write."""
    template = None if getattr(tokenizer, "chat_template", None) else CHAT_TEMPLATE  # None: the tokenizer's own
    return tokenizer.apply_chat_template(list(messages), chat_template=template, tokenize=False,
                                         add_generation_prompt=add_generation_prompt)


def end_of_turn(tokenizer) -> str:
    """The token that closes a reply, where generation stops and the answer mask ends: ours `<|end|>`; for a
    template of its own, the special token it writes right after an assistant reply (ChatML `<|im_end|>`,
    Llama 3 `<|eot_id|>`, Gemma `<end_of_turn>`), read off a rendered probe; else its end-of-text token."""
    if not has_own_template(tokenizer):
        return SPECIAL_TOKENS["end"]
    from jinja2 import TemplateError

    reply = "Fine, thanks."
    try:
        text = render_chat(tokenizer, [{"role": "user", "content": "How are you?"},
                                       {"role": "assistant", "content": reply}])
    except TemplateError:  # a template that rejects the probe (its raise_exception): fall back to eos
        text = ""
    after = text[text.rfind(reply) + len(reply):].strip() if reply in text else ""
    ids = tokenizer(after, add_special_tokens=False)["input_ids"] if after else []
    special = set(tokenizer.all_special_ids) | {int(i) for i in getattr(tokenizer, "added_tokens_decoder", {})}
    if ids and ids[0] in special:
        return tokenizer.convert_ids_to_tokens(ids[0])
    if tokenizer.eos_token is None:
        raise ValueError("the tokenizer's chat template closes no turn with a special token and it has no "
                         "end-of-text token: cannot tell where a reply ends")
    return tokenizer.eos_token


def chat_ids(tokenizer) -> dict[str, int]:
    """Ids of `eos` (end of text), `end` (end of turn: where a reply stops) and `pad`, for either kind of tokenizer.

    Ours: special_ids' checks (every chat token present, pad distinct from eos). A template of its own may pad
    with its end-of-turn token (SmolLM2 pads with <|im_end|>): harmless here, because the chat losses train
    exactly the masked answer tokens (data.lm_batch) and padding is only ever a right-padded input, never a
    target, so the end-of-turn token at the end of every answer is still learned."""
    if not has_own_template(tokenizer):
        ids = special_ids(tokenizer)
        return {k: ids[k] for k in ("eos", "end", "pad")}
    end = int(tokenizer.convert_tokens_to_ids(end_of_turn(tokenizer)))
    eos = int(tokenizer.eos_token_id) if tokenizer.eos_token_id is not None else end
    pad = int(tokenizer.pad_token_id) if tokenizer.pad_token_id is not None else eos
    return {"eos": eos, "end": end, "pad": pad}


def special_ids(tokenizer) -> dict[str, int]:
    """Ids of our chat tokens. Raises naming the missing token if the tokenizer lacks one (chat data and
    generation use chat_ids, which also serves a tokenizer with its own template)."""
    ids = {}
    for key, token in SPECIAL_TOKENS.items():
        if key == "pad":
            tid = tokenizer.pad_token_id
        elif key == "eos":
            tid = tokenizer.eos_token_id
        else:
            tid = tokenizer.convert_tokens_to_ids(token)
            if tid == tokenizer.unk_token_id and tokenizer.unk_token_id is not None:
                tid = None
        if tid is None:
            raise ValueError(f"tokenizer has no {token!r} token: train it with `llm tokenizer` or "
                             f"call llm.tokenizer.add_chat_tokens on it")
        ids[key] = int(tid)
    if ids["pad"] == ids["eos"]:
        raise ValueError("tokenizer pads with its end-of-text token; give it a distinct pad token "
                         "(llm.tokenizer.add_chat_tokens does)")
    return ids
