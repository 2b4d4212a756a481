"""Any Hugging Face causal LM (local folder or hub id), streamed with TextIteratorStreamer."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from ragapp.errors import GeneratorError
from ragapp.generate.base import Generator, Messages, StopFilter, check_generation_args, declared_languages

# For checkpoints without a chat template (base models): a plain transcript the model can continue.
PLAIN_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] | capitalize }}: {{ m['content'] }}\n\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


class HFGenerator(Generator):
    follows_instructions = True

    def __init__(self, name_or_path: str, device: str | None = None, dtype: str | None = None,
                 languages: str | Sequence[str] | None = None):
        super().__init__()
        self.languages = declared_languages(languages)
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as e:  # pragma: no cover - transformers is a dependency
            raise GeneratorError(f"the hf backend needs transformers: pip install transformers ({e})") from e
        self.name = name_or_path
        local = Path(name_or_path).expanduser()
        if not local.exists() and (name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1):
            raise GeneratorError(f"model folder {name_or_path} does not exist; pass a folder or a hub id like Qwen/Qwen2.5-0.5B-Instruct")
        src = str(local) if local.exists() else name_or_path
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # "Loading weights" bars would break the streamed CLI output
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(src)
            # fp32 on CPU: bf16 is emulated on most CPUs and many times slower
            torch_dtype = getattr(torch, dtype) if dtype else (torch.bfloat16 if self.device.startswith("cuda") else torch.float32)
            self.model = AutoModelForCausalLM.from_pretrained(src, dtype=torch_dtype).to(self.device).eval()
        except (OSError, ValueError) as e:
            raise GeneratorError(f"cannot load Hugging Face model {name_or_path!r}: {e}") from e
        if not getattr(self.tokenizer, "chat_template", None):
            self.tokenizer.chat_template = PLAIN_TEMPLATE
        cfg = self.model.config
        self.context_tokens = int(getattr(cfg, "max_position_embeddings", 0) or getattr(self.tokenizer, "model_max_length", 2048))
        self.context_tokens = min(self.context_tokens, 32768)
        self.special_tokens = tuple(self.tokenizer.all_special_tokens) + tuple(
            str(t) for t in getattr(self.tokenizer, "added_tokens_decoder", {}).values()
        )

    def render(self, messages: Messages) -> str:
        return self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def stream(
        self, messages: Messages, *, max_new_tokens: int = 256, temperature: float = 0.0, stop: Sequence[str] = ()
    ) -> Iterator[str]:
        import torch
        from transformers import (
            StoppingCriteria,
            StoppingCriteriaList,
            TextIteratorStreamer,
        )

        check_generation_args(max_new_tokens, temperature)
        prompt = self.render(messages)
        # the template already holds the BOS token where the model wants one
        enc = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        # only what every causal LM takes (a BERT-style tokenizer adds token_type_ids)
        inputs = {k: enc[k].to(self.device) for k in ("input_ids", "attention_mask") if k in enc}
        budget = self.context_tokens - inputs["input_ids"].shape[1]
        if budget < 1:
            raise GeneratorError(f"the prompt has {inputs['input_ids'].shape[1]} tokens; {self.name} reads at most {self.context_tokens}")
        cancel = threading.Event()

        class _Cancelled(StoppingCriteria):  # lets the reader stop the generating thread early
            def __call__(self, input_ids, scores, **kwargs):
                return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool, device=input_ids.device)

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
        kwargs = dict(
            **inputs,
            streamer=streamer,
            max_new_tokens=min(max_new_tokens, budget),
            do_sample=temperature > 0,
            stopping_criteria=StoppingCriteriaList([_Cancelled()]),
            pad_token_id=self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id,
        )
        if temperature > 0:
            kwargs["temperature"] = temperature
        else:  # greedy: unset sampling knobs a checkpoint's generation_config may carry
            kwargs.update(temperature=None, top_p=None, top_k=None)
        errors: list[BaseException] = []

        def run():
            try:
                with torch.inference_mode():
                    self.model.generate(**kwargs)
            except BaseException as e:  # noqa: BLE001 - re-raised in the reading thread
                errors.append(e)
                streamer.on_finalized_text("", stream_end=True)

        with self.lock:
            worker = threading.Thread(target=run, daemon=True)
            worker.start()
            filt = StopFilter(stop)
            try:
                for piece in streamer:
                    out = filt.feed(piece)
                    if out:
                        yield out
                    if filt.stopped:
                        break
                tail = filt.flush()
                if tail:
                    yield tail
            finally:
                cancel.set()
                worker.join()
            if errors:
                raise GeneratorError(f"{self.name} failed while generating: {errors[0]}") from errors[0]
