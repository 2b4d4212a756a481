"""The llm backend's reading of a checkpoint's training.json: the abstention offset (applied outright when
positive) and the answer length, on a real tiny checkpoint."""

import sys
from pathlib import Path

import pytest

from ragapp.answer.prompt import ABSTENTION

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "llm"))


def row(kind, answers=None, n=None, question="Who wrote it?"):
    return {"kind": kind, "answers": answers or [], "n": n,
            "messages": [{"role": "system", "content": "Answer from the documents."},
                         {"role": "user", "content": f"Documents:\n[1] a.txt\n\"\"\"\nIt was written by Ada.\n\"\"\"\n\nQuestion: {question}"},
                         {"role": "assistant", "content": f"{answers[0]} [{n}]" if answers else ABSTENTION}]}


def test_backend_abstains_outright_under_a_positive_offset(tmp_path):
    import json

    from _train_fixtures import save_tiny_model, tokenizer

    from ragapp.generate.llm_backend import LLMGenerator, first_step_margin

    model_dir = save_tiny_model(tmp_path, tokenizer(tmp_path))
    gen = LLMGenerator(model_dir)
    messages = row("answerable", ["Ada"], 1)["messages"][:2]
    token = gen.tokenizer(ABSTENTION, add_special_tokens=False)["input_ids"][0]
    margin = first_step_margin(gen.model, gen.tokenizer, gen.render(messages), token)
    assert margin < 0 and not gen.generate(messages, max_new_tokens=4).startswith(ABSTENTION)  # random weights
    for offset, abstains in [(-margin + 0.5, True), (-margin - 0.5, False)]:
        (model_dir / "training.json").write_text(json.dumps({"abstention_bias": max(offset, 0.25)}))
        text = LLMGenerator(model_dir).generate(messages, max_new_tokens=4)
        assert (text == ABSTENTION) == abstains, (offset, margin, text)


def test_backend_reads_the_checkpoints_abstention_offset(tmp_path):
    import json

    from _train_fixtures import tokenizer

    from ragapp.errors import GeneratorError
    from ragapp.generate.llm_backend import abstention_bias

    tok = tokenizer(tmp_path)
    assert abstention_bias(tmp_path, tok) is None  # no training.json: no offset
    (tmp_path / "training.json").write_text(json.dumps({"stage": "sft", "abstention_bias": -2.5}))
    first = tok(ABSTENTION, add_special_tokens=False)["input_ids"][0]
    assert abstention_bias(tmp_path, tok) == {first: -2.5}
    (tmp_path / "training.json").write_text(json.dumps({"abstention_bias": "low"}))
    with pytest.raises(GeneratorError, match="abstention_bias must be a number"):
        abstention_bias(tmp_path, tok)


def test_backend_reads_the_checkpoints_answer_length(tmp_path):
    import json

    from ragapp.errors import GeneratorError
    from ragapp.generate.llm_backend import answer_tokens

    assert answer_tokens(tmp_path) is None  # no training.json: reserve the whole max_new_tokens
    (tmp_path / "training.json").write_text(json.dumps({"stage": "sft", "answer_tokens": 64}))
    assert answer_tokens(tmp_path) == 64
    (tmp_path / "training.json").write_text(json.dumps({"answer_tokens": 0}))
    with pytest.raises(GeneratorError, match="answer_tokens must be a positive integer"):
        answer_tokens(tmp_path)
    (tmp_path / "training.json").write_text("[1, 2]")
    with pytest.raises(GeneratorError, match="expected a JSON object"):
        answer_tokens(tmp_path)
