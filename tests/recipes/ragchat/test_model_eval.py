"""Dev-set scoring of a chat checkpoint (recipes.ragchat.model_eval): the SQuAD-style numbers from given
predictions, and the generation / teacher-forced paths on a real tiny checkpoint."""

import math
import sys
from pathlib import Path

import pytest

from ragapp.answer.prompt import ABSTENTION
from recipes.ragchat.model_eval import (
    answer_bits_per_char,
    evaluate_rows,
    generate_answers,
    score,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "llm"))


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


def test_abstention_offset_is_tuned_for_exact_match():
    from recipes.ragchat.model_eval import calibrate_abstention, with_bias

    rows = [row("answerable", ["Ada"], 1), row("answerable", ["1843"], 1), row("missing"), row("swapped")]
    plain = [ABSTENTION, ABSTENTION, ABSTENTION, ABSTENTION]   # the model abstains everywhere...
    banned = ["Ada [1]", "1843 [1]", "Babbage [1]", "1842 [1]"]  # ...its best answers if it may not
    margins = [0.7, 1.8, 3.5, 2.6]                               # ...and how sure it was of abstaining
    assert with_bias(plain, banned, margins, -1.0) == ["Ada [1]", ABSTENTION, ABSTENTION, ABSTENTION]
    tuned = calibrate_abstention(rows, plain, banned, margins)
    assert tuned["abstention_bias"] == -2.0  # answers both answerable rows, still abstains on both others
    best = next(c for c in tuned["curve"] if c["bias"] == -2.0)
    assert best["overall_em"] == 100.0 and best["false_abstention"] == 0.0


def test_a_positive_offset_is_a_null_answer_threshold():
    from recipes.ragchat.model_eval import calibrate_abstention, with_bias

    rows = [row("answerable", ["Ada"], 1), row("answerable", ["1843"], 1), row("removed"), row("missing")]
    plain = ["Ada [1]", "1843 [1]", "Babbage [1]", "1842 [1]"]  # the model answers everywhere...
    banned = plain
    margins = [-5.0, -3.5, -0.8, -1.2]                         # ...unsure on the two it should not answer
    assert with_bias(plain, banned, margins, 1.0) == ["Ada [1]", "1843 [1]", ABSTENTION, "1842 [1]"]
    tuned = calibrate_abstention(rows, plain, banned, margins)
    assert tuned["abstention_bias"] == 1.5  # the smallest threshold that abstains on both, answers both others
    assert next(c for c in tuned["curve"] if c["bias"] == 1.5)["overall_em"] == 100.0
