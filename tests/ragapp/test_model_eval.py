"""Dev-set scoring of a chat checkpoint (ragapp.model_eval): the SQuAD-style numbers from given
predictions, and the generation / teacher-forced paths on a real tiny checkpoint."""

import math
import sys
from pathlib import Path

import pytest

from ragapp.model_eval import answer_bits_per_char, evaluate_rows, generate_answers, score
from ragapp.prompt import ABSTENTION

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "llm"))


def row(kind, answers=None, n=None, question="Who wrote it?"):
    return {"kind": kind, "answers": answers or [], "n": n,
            "messages": [{"role": "system", "content": "Answer from the documents."},
                         {"role": "user", "content": f"Documents:\n[1] a.txt\n\"\"\"\nIt was written by Ada.\n\"\"\"\n\nQuestion: {question}"},
                         {"role": "assistant", "content": f"{answers[0]} [{n}]" if answers else ABSTENTION}]}


def test_scores_answers_citations_and_abstentions():
    rows = [row("answerable", ["Ada Lovelace"], 1), row("answerable", ["1843"], 2), row("answerable", ["Ada"], 1),
            row("missing"), row("swapped")]
    preds = ["Ada Lovelace [1]", "In 1843 [1]", ABSTENTION, ABSTENTION, "Ada [1]"]
    r = evaluate_rows(rows, preds)
    assert r["n"] == 5
    assert r["answerable_em"] == pytest.approx(100 / 3)       # only the first is exact (citations stripped)
    assert r["kinds"]["answerable"]["cited"] == pytest.approx(100 / 3)  # the second cites [1], the answer is in [2]
    assert r["false_abstention"] == pytest.approx(100 / 3)
    assert r["abstention"] == 50.0                            # "missing" abstained, "swapped" answered
    assert r["overall_em"] == pytest.approx(100 * 2 / 5)      # 1 exact + 1 right abstention
    assert score("the Ada Lovelace [1]", ["Ada Lovelace"]) == (1.0, 1.0)


def test_generation_and_answer_cost_on_a_tiny_checkpoint(tmp_path):
    from _train_fixtures import save_tiny_model, tokenizer

    model_dir = save_tiny_model(tmp_path, tokenizer(tmp_path))
    rows = [row("answerable", ["Ada"], 1), row("missing", question="When?")]
    preds = generate_answers(model_dir, rows, max_new_tokens=5, progress=False)
    assert len(preds) == 2 and all(isinstance(p, str) for p in preds)
    bits = answer_bits_per_char(model_dir, rows)
    # random weights: about log2(vocabulary) bits a token, a few characters a token
    assert math.isfinite(bits) and 0.5 < bits < 20
