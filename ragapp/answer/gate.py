"""The grounding gate: abstain without generating when retrieval found no real evidence.

Retrieval always returns k passages, however unrelated. The gate scores how well the best of them
matches the question and abstains below a threshold, so that the model is never asked to answer
from noise. The evidence features (all "best over the retrieved passages"):

  dense     cosine similarity of question and passage (the index's embedder)
  sentence  cosine similarity of question and the closest passage sentence
  lexical   share of the question's content terms (stemmed, stopwords removed) in the passage

are combined by logistic regression into `score`, the estimated probability that the answer is
in the passages. Weights and threshold come from `python -m recipes.ragchat.calibrate` on DEVELOPMENT data
(SQuAD 1.1 train questions against an index that holds their article = answerable, and against
one that does not = unanswerable; never the evaluation sets) and live in calibration.json ("gate")
beside this file, with the numbers they were chosen from.

Similarities mean different things under different embedders (multilingual-e5-small scores
unrelated text far higher than MiniLM), so another embedder may have a gate of its own
("gates" in calibration.json, made with `calibrate --embedder NAME`); its bias is shifted so
that the one threshold (the page's setting) marks its own calibrated point.

The model's own abstentions ("The documents do not contain the answer.") are recognised by
`is_abstention`, so that they are reported as abstentions, not as unsupported answers.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from ragapp.retrieve.lexical import coverage, sentences, term_set
from ragapp.types import Passage

if TYPE_CHECKING:
    from ragapp.retrieve.similarity import VectorCache

CALIBRATION_FILE = Path(__file__).with_name("calibration.json")
FEATURES = ("dense", "sentence", "lexical")


@dataclass
class Evidence:
    dense: float = 0.0
    sentence: float = 0.0
    lexical: float = 0.0
    score: float = 0.0  # calibrated probability that the passages hold the answer
    best: int = -1  # index of the passage with the best sentence match

    def features(self) -> list[float]:
        return [self.dense, self.sentence, self.lexical]


@dataclass
class GateModel:
    """Logistic regression on standardized features, and the threshold on its probability."""

    weights: list[float]
    bias: float
    mean: list[float]
    scale: list[float]
    threshold: float
    info: dict = field(default_factory=dict)

    def probability(self, x: list[float]) -> float:
        z = self.bias + sum(w * (v - m) / s for w, v, m, s in zip(self.weights, x, self.mean, self.scale))
        return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))

    @classmethod
    def from_dict(cls, d: dict) -> "GateModel":
        return cls(d["weights"], d["bias"], d["mean"], d["scale"], d["threshold"], d)


@lru_cache(maxsize=8)
def load_gate(embedder: str | None = None, path: Path = CALIBRATION_FILE) -> GateModel:
    """The gate for an index's embedder: its own where calibrated, else the default embedder's."""
    whole = json.loads(Path(path).read_text())
    data = whole.get("gates", {}).get(embedder) or whole["gate"]
    if data.get("features") != list(FEATURES):
        raise ValueError(f"{path} was calibrated for features {data.get('features')}, expected {list(FEATURES)}; "
                         "remake it with python -m recipes.ragchat.calibrate")
    return GateModel.from_dict(data)


def passage_sentences(passage: Passage) -> list[str]:
    return sentences(passage.text) or [passage.text]


def measure(
    question: str, passages: list[Passage], cache: "VectorCache", model: GateModel | None = None, score: bool = True
) -> Evidence:
    """The evidence features of `passages` for `question`, and (with `score`) the calibrated score."""
    if not passages:
        return Evidence()
    texts = [p.text for p in passages]
    sents = [passage_sentences(p) for p in passages]
    flat = [s for ss in sents for s in ss]
    sims = cache.similarities(question, texts + flat)
    dense = sims[: len(texts)]
    sent_sims = sims[len(texts):]
    owner = [i for i, ss in enumerate(sents) for _ in ss]
    q_terms = term_set(question)
    lexical = [coverage(q_terms, term_set(t)) for t in texts]
    best_sentence = int(sent_sims.argmax())
    ev = Evidence(float(dense.max()), float(sent_sims.max()), float(max(lexical)), best=owner[best_sentence])
    if score:
        ev.score = (model or load_gate(getattr(cache.embedder, "name", None))).probability(ev.features())
    return ev


def check(evidence: Evidence, model: GateModel | None = None, threshold: float | None = None) -> tuple[bool, str]:
    """(passes, reason). The reason names the numbers, for the UI and `ragapp ask`. `threshold`
    overrides the calibrated one (the page's and the API's gate setting)."""
    model = model or load_gate()
    threshold = model.threshold if threshold is None else threshold
    if evidence.score >= threshold:
        return True, ""
    return False, (
        f"the retrieved passages do not match the question well enough (evidence {evidence.score:.2f} < "
        f"{threshold:.2f}: best passage similarity {evidence.dense:.2f}, best sentence "
        f"{evidence.sentence:.2f}, question terms found {evidence.lexical:.0%})"
    )


# ----------------------------------------------------------------------------- model abstentions

_ABSTAIN = re.compile(
    r"\b(?:the\s+)?(?:documents?|passages?|sources?|context|texts?|provided information)\s+(?:do|does|did)\s*(?:not|n['’]t)\s+"
    r"(?:contain|mention|say|include|provide|state|specify|answer|discuss|cover|have)"
    r"|\bnot\s+(?:mentioned|stated|found|provided|specified|given|included|covered)\s+in\s+the\s+(?:documents?|passages?|sources?|context|texts?)"
    r"|\b(?:no|nothing in the)\s+(?:documents?|passages?|sources?|context)\s+(?:contains?|mentions?|says?|answers?)"
    r"|\bthere\s+is\s+no\s+(?:information|mention)\s+(?:about|of|on|regarding)\b.*\b(?:documents?|passages?|context)"
    r"|\b(?:cannot|can['’]t|unable\s+to)\s+(?:answer|find|determine)\b.*\b(?:documents?|passages?|context|sources?)"
    r"|\bi\s+(?:do\s+not|don['’]t)\s+know\b",
    re.I | re.S,
)


def is_abstention(text: str) -> bool:
    """Does the model's answer say that the documents do not hold the answer?

    Only the answer's first sentence counts: a real answer that later remarks "the documents do
    not say when" is still an answer.
    """
    first = sentences(text.strip())[:1]
    return bool(first) and bool(_ABSTAIN.search(first[0]))
