"""The LangChain adapter: a real BaseRetriever over a real index (fake vectors, real BM25)."""

from __future__ import annotations

import asyncio

import pytest
from conftest import FakeEmbedder, write_files
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableLambda

from ragapp.errors import IndexNotFound
from ragapp.index.index import Index
from ragapp.integrations.langchain import RagappRetriever
from ragapp.retrieve.retriever import Retriever


@pytest.fixture
def docs_index(tmp_path, tokenizer):
    embedder = FakeEmbedder(tokenizer)
    folder = write_files(tmp_path / "docs", {
        "cats.md": "Cats sleep about sixteen hours a day.",
        "dogs.md": "Dogs bark at the mailman every morning.",
        "birds/owls.txt": "Owls hunt mice at night and sleep by day.",
    })
    with Index.create("docs", tmp_path / "indexes", embedder=embedder) as index:
        index.sync(folder, embedder=embedder, progress=False)
    return tmp_path / "indexes", embedder


def test_invoke_returns_documents_with_metadata(docs_index):
    index_dir, embedder = docs_index
    retriever = RagappRetriever(collections="docs", index_dir=index_dir, embedder=embedder, k=2)
    assert isinstance(retriever, BaseRetriever)
    docs = retriever.invoke("Which animal barks at the mailman?")
    assert len(docs) == 2 and all(isinstance(d, Document) for d in docs)
    top = docs[0]
    assert top.page_content == "Dogs bark at the mailman every morning."
    assert top.metadata["source"] == "dogs.md" and top.metadata["collection"] == "docs"
    assert top.metadata["page"] is None and isinstance(top.metadata["chunk_id"], int)
    assert top.metadata["score"] >= docs[1].metadata["score"]


def test_filters_batch_async_and_chains(docs_index):
    index_dir, embedder = docs_index
    retriever = RagappRetriever(collections=["docs"], index_dir=index_dir, embedder=embedder, k=3,
                                filters={"source": "birds/*"})
    assert [d.metadata["source"] for d in retriever.invoke("sleep")] == ["birds/owls.txt"]
    plain = RagappRetriever(collections=["docs"], index_dir=index_dir, embedder=embedder, k=1)
    batch = plain.batch(["sixteen hours", "mailman"])
    assert [b[0].metadata["source"] for b in batch] == ["cats.md", "dogs.md"]
    assert asyncio.run(plain.ainvoke("owls hunt mice"))[0].metadata["source"] == "birds/owls.txt"
    chain = plain | RunnableLambda(lambda docs: f"[1] {docs[0].metadata['source']}: {docs[0].page_content}")
    assert chain.invoke("mailman") == "[1] dogs.md: Dogs bark at the mailman every morning."


def test_from_retriever_shares_it(docs_index):
    index_dir, embedder = docs_index
    core = Retriever(["docs"], index_dir=index_dir, embedder=embedder)
    wrapped = RagappRetriever.from_retriever(core, k=1, mode="bm25")
    assert wrapped.retriever is core
    assert wrapped.invoke("sixteen hours")[0].metadata["source"] == "cats.md"


def test_bad_collections(docs_index):
    index_dir, embedder = docs_index
    with pytest.raises(Exception, match="collections is empty; pass the name of an index"):
        RagappRetriever(collections=[], index_dir=index_dir)
    with pytest.raises(IndexNotFound, match="no index 'nope'"):
        RagappRetriever(collections="nope", index_dir=index_dir, embedder=embedder).invoke("x")
