"""Shared by the llm-model tests: a tiny byte-level BPE tokenizer (llm.tokenizer) and tiny models."""

import pytest
import torch

from llm.config import PRESETS
from llm.model import GPT

TEXT = """The cat sat on the mat. The dog sat on the log. A bird sang in the tree.
Café crème, naïve façade: déjà vu. 日本語のテキスト。 Emoji 🙂 and more 🚀 here.
Retrieval augmented generation answers from documents and cites them [1].
The model says when the documents do not contain the answer.
"""


def tiny_tokenizer(tmp_path):
    from llm.tokenizer import train_tokenizer

    corpus = tmp_path / "corpus.txt"
    corpus.write_text((TEXT + "\n") * 20, encoding="utf-8")
    return train_tokenizer([corpus], vocab_size=300, out_dir=tmp_path / "tok", progress=False)


def tiny_model(vocab_size, arch="llama", prefix_lm=False, seed=0, **changes):
    torch.manual_seed(seed)
    cfg = PRESETS["tiny"].replace(arch=arch, prefix_lm=prefix_lm, vocab_size=vocab_size,
                                  n_kv_head=4 if arch == "bert" else 2, **changes)
    return GPT(cfg).eval()


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny models gain nothing from a second thread, and on a loaded 2-core machine torch's thread
    hand-offs make each small op up to ~80x slower. Restored afterwards for other tests."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
