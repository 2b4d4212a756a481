"""Our own `llm` checkpoint: a folder written by llm.checkpoint.save_pretrained (the default model)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from ragapp.config import DEFAULT_CACHE_DIR
from ragapp.errors import GeneratorError
from ragapp.generate.assemble import assembled, is_adapter_folder
from ragapp.generate.base import Generator, Messages, StopFilter, check_generation_args
from ragapp.generate.recase import Recaser, is_uncased, normalizer_of
from ragapp.types import ABSTENTION

# The most context the app fills. An imported model may read far more (SmolLM2: 8192), but the prompt builder fills
# whatever it is given with passages, and on CPU every prompt token is prefill time before the first answer token
# (SmolLM2-135M on 2 cores: ~1 s for 512 tokens, ~6 s for 2048, ~33 s for 8192: attention grows quadratically).
# ragapp's default 5 passages make prompts of 650-1,100 SmolLM2 tokens, so 2048 holds them with room for the answer.
# Our own checkpoints (512) are below it.
MAX_CONTEXT = 2048


class LLMGenerator(Generator):
    def __init__(self, path: Path, device: str | None = None, int8: bool | None = None):
        super().__init__()
        path = Path(path).expanduser()
        card_dir = path
        if is_adapter_folder(path):
            # shipped as adapters over an installed base: merged once, cached outside git
            path = assembled(path, DEFAULT_CACHE_DIR)
        if not (path / "config.json").is_file():
            raise GeneratorError(
                f"no llm checkpoint at {path} (config.json missing); train one with `llm` or pass --model FOLDER, "
                "or use --backend hf / --backend openai"
            )
        import torch

        from llm.checkpoint import load_pretrained

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            self.model, self.tokenizer = load_pretrained(path, device=self.device)
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            raise GeneratorError(f"cannot load the llm checkpoint at {path}: {e}") from e
        self.model.eval()
        if int8 is None:  # the checkpoint's own choice, made where its dev score showed int8 costs no quality
            int8 = bool(training_card(path).get("cpu_int8")) and self.device == "cpu"
        if int8:
            if self.device != "cpu":
                raise GeneratorError("int8 (torch.ao dynamic quantization) runs on the CPU only; leave it off on a GPU")
            # decoding one token at a time reads every weight: int8 makes them four times smaller
            self.model = self.model.quantized_int8()
        self.int8 = int8
        self.name = card_dir.name
        self.path = path
        self.context_tokens = min(int(self.model.config.max_seq_len), MAX_CONTEXT)
        self.prefix_lm = bool(getattr(self.model.config, "prefix_lm", False))
        self.special_tokens = tuple(self.tokenizer.all_special_tokens) + tuple(
            str(t) for t in getattr(self.tokenizer, "added_tokens_decoder", {}).values()
        )
        from llm.tokenizer import end_of_turn

        # the checkpoint's end-of-turn token: ours <|end|>, or its own template's (SmolLM2: <|im_end|>)
        self.end = end_of_turn(self.tokenizer)

        # an uncased tokenizer (the MiniLM warm start) writes lowercase: copied spans get the passages' casing back
        self.normalize = normalizer_of(self.tokenizer) if is_uncased(self.tokenizer) else None
        self.first_token_bias = abstention_bias(path, self.tokenizer)
        self.answer_tokens = answer_tokens(path)

    def render(self, messages: Messages) -> str:
        """The prompt in the checkpoint's chat template (its own, e.g. SmolLM2's ChatML, or our chat tokens)."""
        from llm.tokenizer import render_chat

        return render_chat(self.tokenizer, messages, add_generation_prompt=True)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def stream(
        self, messages: Messages, *, max_new_tokens: int = 256, temperature: float = 0.0, stop: Sequence[str] = ()
    ) -> Iterator[str]:
        from llm.generate import stream

        check_generation_args(max_new_tokens, temperature)
        prompt = self.render(messages)  # ends with the assistant header: the whole prompt is the prefix
        n = self.count_tokens(prompt)
        budget = self.context_tokens - n
        if budget < 1:
            raise GeneratorError(f"the prompt has {n} tokens; {self.name} reads at most {self.context_tokens}")
        stops = [self.end, *stop]
        filt = StopFilter(stops)
        recaser = None
        if self.normalize is not None:
            recaser = Recaser("\n".join(m["content"] for m in messages), self.normalize)
        with self.lock:
            bias = self.first_token_bias
            if bias and next(iter(bias.values())) > 0:
                # a positive offset is a null-answer threshold: abstain outright where the abstention's first
                # token comes within `offset` of the best other token (what greedy decoding writes after a
                # forced first token is not known, so it is never forced)
                (token, offset), = bias.items()
                if first_step_margin(self.model, self.tokenizer, prompt, token, self.device) + offset > 0:
                    yield ABSTENTION
                    return
                bias = None
            pieces = stream(
                self.model, self.tokenizer, prompt, max_new_tokens=min(max_new_tokens, budget),
                temperature=temperature, stop=stops, prefix_lm=self.prefix_lm,
                first_token_bias=bias,
            )
            try:
                for piece in pieces:
                    out = filt.feed(piece)
                    if recaser is not None:
                        out = recaser.feed(out)
                    if out:
                        yield out
                    if filt.stopped:
                        break
                tail = filt.flush()
                if recaser is not None:
                    tail = recaser.feed(tail) + recaser.flush()
                if tail:
                    yield tail
            finally:
                pieces.close() if hasattr(pieces, "close") else None


def first_step_margin(model, tokenizer, prompt: str, token: int, device: str = "cpu") -> float:
    """The first answer step's logit of `token` minus the best other token's, for the rendered `prompt`."""
    import torch

    with torch.inference_mode():
        ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]], device=device)
        prefix = torch.tensor([ids.shape[1]], device=ids.device) if model.config.prefix_lm else None
        logits = model.lm_logits(model.hidden_states(ids, prefix_len=prefix)[:, -1]).float()[0]
    other = torch.cat([logits[:token], logits[token + 1:]]).max()
    return float(logits[token] - other)


def training_card(path: Path) -> dict:
    """The checkpoint's training.json (written by python -m recipes.ragchat.make_model); {} when it has none."""
    import json

    card = Path(path) / "training.json"
    if not card.is_file():
        return {}
    try:
        data = json.loads(card.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise GeneratorError(f"{card}: not readable JSON ({e}); remake it with python -m recipes.ragchat.make_model") from e
    if not isinstance(data, dict):
        raise GeneratorError(f"{card}: expected a JSON object; remake it with python -m recipes.ragchat.make_model")
    return data


def answer_tokens(path: Path) -> int | None:
    """The answer length the checkpoint was trained to leave room for (its prompts filled the rest of the
    context); None when its training.json does not say."""
    value = training_card(path).get("answer_tokens")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise GeneratorError(f"{Path(path) / 'training.json'}: answer_tokens must be a positive integer, got {value!r}")
    return value


def abstention_bias(path: Path, tokenizer) -> dict[int, float] | None:
    """The checkpoint's calibrated offset on the abstention's first token ({token id: offset}), from the
    `abstention_bias` of its training.json (python -m recipes.ragchat.make_model writes it: the offset that maximised
    exact match on held-out development prompts, as SQuAD 2.0 readers tune their null-answer threshold).
    Negative: a logit bias at the first step; positive: a null-answer threshold (`LLMGenerator.stream`).
    None when the checkpoint has none."""
    import math

    card = Path(path) / "training.json"
    bias = training_card(path).get("abstention_bias")
    if bias is None:
        return None
    if not isinstance(bias, (int, float)) or math.isnan(bias):
        raise GeneratorError(f"{card}: abstention_bias must be a number, got {bias!r}")
    first = tokenizer(ABSTENTION, add_special_tokens=False)["input_ids"][0]
    return {int(first): float(bias)}
