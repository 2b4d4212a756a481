"""A LangChain retriever over ragapp collections, so that LangChain apps can use our hybrid search.

    from ragapp.integrations.langchain import RagappRetriever
    retriever = RagappRetriever(collections=["sample"], k=4)
    docs = retriever.invoke("How do I keep an index in step with a folder?")
    docs[0].page_content, docs[0].metadata   # {"source", "page", "score", "chunk_id", "collection", ...}

It is a `langchain_core.retrievers.BaseRetriever` (a Runnable): `invoke`, `batch`, `ainvoke`, and
chains (`retriever | format_docs | prompt | llm`) work as with any other retriever. One
ragapp.retrieve.retriever.Retriever is built on first use and shared by every call (it is thread-safe).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import Field, PrivateAttr, field_validator

from ragapp.config import DEFAULT_INDEX_DIR, DEFAULT_K
from ragapp.errors import InvalidInput
from ragapp.retrieve.retriever import Retriever
from ragapp.types import Passage


def passage_to_document(p: Passage) -> Document:
    return Document(
        page_content=p.text,
        metadata={"source": p.source, "page": p.page, "score": float(p.score), "chunk_id": int(p.chunk_id),
                  "collection": p.collection, "start": p.start, "end": p.end, "sources": list(p.sources or [p.source])},
    )


class RagappRetriever(BaseRetriever):
    """Hybrid (dense + BM25) search over one or more ragapp indexes, as LangChain Documents."""

    collections: list[str] = Field(description="index names, as made by `ragapp index FOLDER --name NAME`")
    index_dir: Path = Field(default=DEFAULT_INDEX_DIR, description="folder holding the indexes")
    k: int = Field(default=DEFAULT_K, ge=1, description="documents returned per query")
    mode: str = Field(default="hybrid", description="hybrid, dense or bm25")
    mmr: bool = Field(default=False, description="diversify the results (maximal marginal relevance)")
    filters: dict | None = Field(default=None, description='e.g. {"source": "*.pdf", "page": [1, 10]}')
    embedder: Any = Field(default=None, exclude=True, description="an Embedder to use instead of the index's own")
    _retriever: Any = PrivateAttr(default=None)

    @field_validator("collections", mode="before")
    @classmethod
    def _one_or_many(cls, value):
        value = [value] if isinstance(value, str) else value
        if not value:
            raise InvalidInput("collections is empty; pass the name of an index (ragapp info lists them)")
        return value

    @classmethod
    def from_retriever(cls, retriever, **kwargs) -> "RagappRetriever":
        """Wrap an existing ragapp.retrieve.retriever.Retriever (shares its caches and loaded models)."""
        out = cls(collections=retriever.names, index_dir=retriever.index_dir, **kwargs)
        out._retriever = retriever
        return out

    @property
    def retriever(self):
        if self._retriever is None:
            self._retriever = Retriever(self.collections, index_dir=self.index_dir, embedder=self.embedder)
        return self._retriever

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        passages = self.retriever.search(query, k=self.k, collections=self.collections, filters=self.filters,
                                         mode=self.mode, mmr=self.mmr)
        return [passage_to_document(p) for p in passages]
