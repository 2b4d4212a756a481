"""A hand-written question set over one's own documents, scored through the chat.

The file is JSON: {"questions": [{"q": ..., "facts": [[alternatives], ...], "source": FILE} or
{"q": ..., "unanswerable": true}]}. An answerable question is right when the answer does not abstain, states every
fact (any one of its alternatives, case-insensitive, as whole words), cites a passage of `source`, and every citation
is supported; an unanswerable one is right when the answer abstains.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from ragapp.errors import InvalidInput
from ragapp.types import Answer


@dataclass
class Scored:
    question: str
    right: bool
    why: str
    answer: str
    mode: str
    cited: list[str]


def load_questions(path) -> list[dict]:
    path = Path(path)
    try:
        items = json.loads(path.read_text(encoding="utf-8"))["questions"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InvalidInput(f"{path}: not a question set ({e}); expected JSON {{\"questions\": [{{\"q\": ..., "
                          "\"facts\": [[...]], \"source\": ...} or {\"q\": ..., \"unanswerable\": true}]}") from e
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("q"), str):
            raise InvalidInput(f"{path}: question {i + 1} has no \"q\" text")
        if not item.get("unanswerable") and not (item.get("facts") and item.get("source")):
            raise InvalidInput(f"{path}: question {i + 1} ({item['q']!r}) needs \"facts\" and \"source\", "
                              "or \"unanswerable\": true")
    return items


def _states(text: str, alternative: str) -> bool:
    # whole words, so that the fact "no" is not found inside "not" or "know"
    return re.search(rf"(?<!\w){re.escape(alternative.lower())}(?!\w)", text.lower()) is not None


def score(item: dict, answer: Answer) -> Scored:
    cited = sorted({c.passage.source for c in answer.citations})
    if item.get("unanswerable"):
        right, why = answer.abstained, "abstained" if answer.abstained else "answered a question the documents do not answer"
    elif answer.abstained:
        right, why = False, "abstained"
    else:
        missing = [alts[0] for alts in item["facts"] if not any(_states(answer.text, a) for a in alts)]
        sources = {s for c in answer.citations for s in (c.passage.source, *c.passage.sources)}
        if missing:
            right, why = False, f"does not state {', '.join(missing)}"
        elif not any(s == item["source"] or s.endswith("/" + item["source"]) for s in sources):
            right, why = False, f"does not cite {item['source']}"
        elif not all(c.supported for c in answer.citations):
            right, why = False, "a citation is not supported"
        else:
            right, why = True, "right, cited"
    return Scored(item["q"], right, why, answer.text, answer.mode, cited)


def run(session, items: list[dict]) -> list[Scored]:
    """Each question asked on its own (no conversation history) through `session` (a ChatSession)."""
    results = []
    for item in items:
        *_, answer = session.answer_stream(item["q"])
        results.append(score(item, answer))
    return results


def summary(results: list[Scored]) -> dict:
    return {"right": sum(r.right for r in results), "n": len(results), "results": [asdict(r) for r in results]}
