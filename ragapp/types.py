"""The dataclasses every layer passes around: loaders → chunker → index → retriever → answer.

The CLI, the Gradio page and the HTTP API all render these; none of them invents its own shapes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# What an answer says when the documents do not hold it: the prompt asks the model for exactly
# this sentence, and the pipeline, the generators and the evaluation recognise it.
ABSTENTION = "The documents do not contain the answer."


@dataclass
class Document:
    """Text of one file, or of one page of a paged file (PDF)."""

    text: str
    source: str  # path as given to the loader (relative to the indexed folder when indexing)
    page: int | None = None  # 1-based page number for PDFs; None for unpaged formats
    metadata: dict = field(default_factory=dict)  # e.g. {"format": "pdf", "title": ...}


@dataclass
class Chunk:
    """A piece of a Document, short enough for the embedder to see whole."""

    text: str
    source: str
    page: int | None
    start: int  # character offset of the chunk in its Document's text
    end: int  # exclusive; document.text[start:end] == text
    n_tokens: int  # length in the embedder's own tokens


@dataclass
class Passage:
    """One retrieval result. `sources` lists every path holding identical content."""

    text: str
    source: str
    page: int | None
    score: float
    chunk_id: int
    collection: str = ""
    start: int = 0
    end: int = 0
    sources: list[str] = field(default_factory=list)

    def label(self) -> str:
        """Short human citation: `guide.pdf p. 3`."""
        return f"{self.source} p. {self.page}" if self.page else self.source


@dataclass
class Citation:
    """A [n] in an answer, resolved to the passage it names and checked against it."""

    number: int  # the n of [n], 1-based index into Answer.passages
    passage: Passage
    supported: bool = True  # does the citing sentence find support in this passage?
    support: float = 0.0  # support score of the best citing sentence, 0..1
    highlight: tuple[int, int] | None = None  # span of passage.text that supports the claim


@dataclass
class Answer:
    """What the chat returns: text with [n] markers, the passages it was shown, and checks."""

    text: str
    passages: list[Passage] = field(default_factory=list)
    citations: list[Citation] = field(default_factory=list)
    abstained: bool = False  # True when the answer is "the documents do not contain this"
    reason: str = ""  # why it abstained or fell back, for the UI and the CLI
    unsupported_sentences: list[str] = field(default_factory=list)
    mode: str = "generated"  # generated | extractive | abstained
    question: str = ""  # the standalone question that was retrieved for
