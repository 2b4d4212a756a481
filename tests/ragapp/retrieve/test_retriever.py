"""Retriever: modes, fusion, MMR, several collections, filters, the BM25 disk cache, bad input,
concurrent searches — on real indexes built with the fake embedder (tests/conftest.py) — and
one section with the real MiniLM over the sample corpus."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import FakeEmbedder, write_files

import ragapp.index.bm25
from ragapp.errors import IndexNotFound, InvalidInput
from ragapp.retrieve.retriever import Retriever, RetrieverConfig

TEXTS = {
    "animals/cats.txt": "Cats purr when content. A cat grooms its whiskers and fur, hunts mice at night "
                        "and sleeps most of the day on a warm windowsill.",
    "animals/dogs.md": "# Dogs\n\nDogs bark at strangers, fetch sticks and wag their tails. A puppy needs "
                       "daily walks, obedience training and a leash.",
    "space/mars.txt": "Mars is the red planet. The rover Perseverance explores Jezero crater on Mars, "
                      "drilling rock samples that may hold signs of ancient microbial life.",
    "cooking/bread.html": "<html><body><h1>Bread</h1><p>Knead flour, water, salt and yeast into a dough, "
                          "let it rise, then bake the loaf in a hot oven. Zymurgy is the science of "
                          "fermentation.</p></body></html>",
}
PDF_PAGES = [
    "Installation guide. Download the installer, run setup and accept the licence agreement.",
    "Backup guide. Copy the archive to an external disk every night and verify the checksum.",
    "Encryption guide. Protect the archive with a passphrase and keep the recovery key offline.",
]


def make_pdf(path: Path, pages: list[str]) -> Path:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 8, text)
    pdf.output(str(path))
    return path


@pytest.fixture
def corpus(tmp_path) -> Path:
    folder = write_files(tmp_path / "docs", TEXTS)
    make_pdf(folder / "manual.pdf", PDF_PAGES)
    return folder


@pytest.fixture
def docs(corpus, make_index, fake_embedder):
    """The index 'docs' over `corpus`, synced."""
    index = make_index("docs")
    index.sync(corpus, embedder=fake_embedder, progress=False)
    return index


@pytest.fixture
def retriever(docs, index_dir, fake_embedder):
    r = Retriever("docs", index_dir=index_dir, embedder=fake_embedder)
    yield r
    r.close()


def sources(passages):
    return [p.source for p in passages]


# -- results --------------------------------------------------------------------------------------
def test_hybrid_search_returns_filled_passages(retriever, docs, corpus):
    passages = retriever.search("Which rover explores the red planet Mars?", k=3)
    assert len(passages) == 3
    top = passages[0]
    assert top.source == "space/mars.txt" and top.sources == ["space/mars.txt"]
    assert top.collection == "docs" and top.page is None
    assert top.text == (corpus / "space/mars.txt").read_text()[top.start : top.end]
    assert top.chunk_id in docs.store.chunk_ids().tolist()
    assert [p.score for p in passages] == sorted((p.score for p in passages), reverse=True)
    assert len({p.chunk_id for p in passages}) == 3


def test_modes(retriever):
    # BM25 finds a rare exact word; its score is the raw BM25 score.
    lexical = retriever.search("zymurgy", k=2, mode="bm25")
    assert sources(lexical) == ["cooking/bread.html"], "only one chunk holds the word"
    assert lexical[0].score > 0
    # Dense always returns k passages, scored by cosine.
    dense = retriever.search("Which rover explores the red planet Mars?", k=4, mode="dense")
    assert len(dense) == 4 and dense[0].source == "space/mars.txt"
    assert all(-1.0 <= p.score <= 1.0 + 1e-6 for p in dense)
    # A query of stopwords only matches nothing lexically; hybrid still answers from dense.
    assert retriever.search("the of and", mode="bm25") == []
    assert len(retriever.search("the of and", k=2)) == 2


def test_hybrid_fusion_choices_agree_on_a_clear_winner(docs, index_dir, fake_embedder):
    for config in (RetrieverConfig(), RetrieverConfig(fusion="rrf"), RetrieverConfig(normalization="minmax")):
        r = Retriever("docs", index_dir=index_dir, embedder=fake_embedder, config=config)
        assert r.search("backup archive to an external disk every night", k=1)[0].page == 2
        r.close()


def test_mmr_reduces_near_duplicates(tmp_path, make_index, index_dir, fake_embedder):
    base = ("The backup tool copies every archive to an external disk each night, verifies the checksum "
            "and keeps thirty days of history.")
    folder = write_files(tmp_path / "dups", {
        **{f"copy{i}.txt": base + f" Copy number {i}." for i in range(4)},
        "restore.txt": "Restore: choose a night, then copy its archive back from the external disk and "
                       "compare the checksum.",
        "garden.txt": "Tomatoes need sun, water and stakes; prune the side shoots every week.",
    })
    make_index("dups").sync(folder, embedder=fake_embedder, progress=False)
    r = Retriever("dups", index_dir=index_dir, embedder=fake_embedder)
    query = "backup archive external disk night checksum"
    plain = r.search(query, k=3)
    assert all(s.startswith("copy") for s in sources(plain)), sources(plain)
    diverse = r.search(query, k=3, mmr=True, mmr_lambda=0.5)
    assert diverse[0].source == plain[0].source  # the best passage stays first
    assert sum(s.startswith("copy") for s in sources(diverse)) == 1, sources(diverse)
    # lambda 1 is relevance only: the plain order.
    assert sources(r.search(query, k=3, mmr=True, mmr_lambda=1.0)) == sources(plain)
    # MMR in bm25 mode uses the stored vectors too (no query embedding needed).
    assert len(r.search(query, k=3, mode="bm25", mmr=True)) == 3
    r.close()


def test_several_collections_with_different_embedders(docs, tmp_path, make_index, index_dir, fake_embedder, tokenizer):
    other = FakeEmbedder(tokenizer, dim=48)  # another "model": its own name and dimension
    folder = write_files(tmp_path / "notes", {
        "volcano.txt": "Volcanoes erupt lava and ash; magma rises through the crust under pressure.",
        "tides.txt": "Tides follow the moon: two high tides a day as the ocean bulges toward it.",
    })
    make_index("notes", embedder=other).sync(folder, embedder=other, progress=False)
    r = Retriever(["docs", "notes"], index_dir=index_dir, embedder=[fake_embedder, other])
    before = (fake_embedder.encoded, other.encoded)
    passages = r.search("lava and magma from volcanoes erupt", k=4)
    assert (fake_embedder.encoded - before[0], other.encoded - before[1]) == (1, 1), "one query embedding per embedder"
    assert (passages[0].collection, passages[0].source) == ("notes", "volcano.txt")
    assert {p.collection for p in passages} == {"docs", "notes"}
    only = r.search("lava and magma from volcanoes erupt", k=4, collections=["notes"])
    assert {p.collection for p in only} == {"notes"} and len(only) == 2
    assert {p.collection for p in r.search("lava", k=8, collections="docs", mmr=True)} == {"docs"}
    # A collection opened on demand, not named when the Retriever was made:
    r2 = Retriever("docs", index_dir=index_dir, embedder=[fake_embedder, other])
    assert r2.search("tides and the moon", k=1, collections=["notes"])[0].source == "tides.txt"
    r.close(), r2.close()


# -- filters --------------------------------------------------------------------------------------
@pytest.mark.parametrize("filters, expected", [
    ({"source": "*.pdf"}, {"manual.pdf"}),
    ({"source": "animals/*"}, {"animals/cats.txt", "animals/dogs.md"}),
    ({"source": "cats.txt"}, {"animals/cats.txt"}),  # no "/": matches the file name anywhere
    ({"source": ["*.md", "*.html"]}, {"animals/dogs.md", "cooking/bread.html"}),
    ({"ext": "md"}, {"animals/dogs.md"}),
    ({"ext": [".TXT"]}, {"animals/cats.txt", "space/mars.txt"}),
    ({"ext": ".txt", "source": "space/*"}, {"space/mars.txt"}),
    ({"source": "nothing-*"}, set()),
])
@pytest.mark.parametrize("mode", ["hybrid", "dense", "bm25"])
def test_source_and_extension_filters(retriever, filters, expected, mode):
    # The query is about Mars; filtered out, it must still return what passes the filter (dense
    # finds every chunk, so in dense and hybrid modes all of them).
    got = retriever.search("rover on the red planet Mars guide", k=10, filters=filters, mode=mode)
    assert set(sources(got)) <= expected
    if mode != "bm25":
        assert set(sources(got)) == expected


def test_page_filters(retriever):
    pages = lambda f: sorted(p.page for p in retriever.search("guide", k=10, filters=f))  # noqa: E731
    assert pages({"page": 2}) == [2]
    assert pages({"page": [2, 3]}) == [2, 3]
    assert pages({"page": [None, 2], "source": "*.pdf"}) == [1, 2]
    assert pages({"page": [3, None]}) == [3]  # unpaged files have no page: left out


def test_filter_follows_a_renamed_file(retriever, corpus, docs, fake_embedder):
    assert sources(retriever.search("cat", filters={"source": "cats.txt"})) == ["animals/cats.txt"]
    os.rename(corpus / "animals/cats.txt", corpus / "animals/felines.txt")
    report = docs.sync(corpus, embedder=fake_embedder, progress=False)
    assert report.renamed == 1
    assert sources(retriever.search("cat", filters={"source": "felines.txt"})) == ["animals/felines.txt"]
    assert retriever.search("cat", filters={"source": "cats.txt"}) == []


# -- the BM25 cache -------------------------------------------------------------------------------
def stamps(index) -> list[str]:
    return sorted(p.name for p in (index.root / "bm25").iterdir())


def test_bm25_cache_is_reused_and_refreshed(docs, corpus, index_dir, fake_embedder, monkeypatch):
    first = Retriever("docs", index_dir=index_dir, embedder=fake_embedder)
    assert sources(first.search("zymurgy", mode="bm25")) == ["cooking/bread.html"]
    [stamp] = stamps(docs)
    assert not stamp.startswith(".")

    # A new Retriever (a restart) loads the cache: building is forbidden here.
    real_build = ragapp.index.bm25.BM25Index.build

    def no_build(*a, **kw):
        raise AssertionError("BM25 rebuilt although the cache is valid")

    monkeypatch.setattr(ragapp.index.bm25.BM25Index, "build", no_build)
    second = Retriever("docs", index_dir=index_dir, embedder=fake_embedder)
    assert sources(second.search("zymurgy", mode="bm25")) == ["cooking/bread.html"]

    # The index changes: the next search on the SAME Retriever sees the new chunk.
    monkeypatch.setattr(ragapp.index.bm25.BM25Index, "build", real_build)
    write_files(corpus, {"space/venus.txt": "Venus has a thick atmosphere of carbon dioxide and sulfuric clouds."})
    docs.sync(corpus, embedder=fake_embedder, progress=False)
    assert sources(second.search("sulfuric clouds", mode="bm25", k=1)) == ["space/venus.txt"]
    [new_stamp] = stamps(docs)
    assert new_stamp != stamp, "the old version's cache is replaced"
    # ...and so does the first Retriever, from the cache the second one wrote.
    monkeypatch.setattr(ragapp.index.bm25.BM25Index, "build", no_build)
    assert sources(first.search("sulfuric clouds", mode="bm25", k=1)) == ["space/venus.txt"]
    first.close(), second.close()


def test_damaged_or_stale_cache_is_rebuilt(retriever, docs, index_dir, fake_embedder):
    retriever.search("zymurgy", mode="bm25")
    [stamp] = stamps(docs)
    (docs.root / "bm25" / stamp / "chunk_ids.npy").write_bytes(b"garbage")
    (docs.root / "bm25" / ".tmp-999999999-dead").mkdir()  # left by a killed build
    fresh = Retriever("docs", index_dir=index_dir, embedder=fake_embedder)
    assert sources(fresh.search("zymurgy", mode="bm25")) == ["cooking/bread.html"]
    assert stamps(docs) == [stamp]
    fresh.close()


def test_empty_index(make_index, index_dir, fake_embedder):
    make_index("empty")
    r = Retriever("empty", index_dir=index_dir, embedder=fake_embedder)
    for mode in ("hybrid", "dense", "bm25"):
        assert r.search("anything", mode=mode, filters={"ext": "pdf"}) == []
    r.close()


# -- concurrency ----------------------------------------------------------------------------------
def test_concurrent_searches_match_sequential(retriever):
    queries = ["Mars rover", "bread yeast oven", "backup the archive", "cats purr", "dog leash training",
               "encryption passphrase", "zymurgy"] * 6
    kwargs = [dict(mode=m, mmr=(i % 3 == 0), filters=({"ext": "txt"} if i % 4 == 0 else None))
              for i, m in enumerate(["hybrid", "dense", "bm25"] * 14)]

    def run(args):
        q, kw = args
        return [(p.source, p.page, round(p.score, 6)) for p in retriever.search(q, k=3, **kw)]

    sequential = [run(a) for a in zip(queries, kwargs)]
    with ThreadPoolExecutor(8) as pool:
        concurrent = list(pool.map(run, zip(queries, kwargs)))
    assert concurrent == sequential


# -- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    (dict(k=0), "k must be a whole number of passages, at least 1, got 0"),
    (dict(k=-3), "k must be a whole number of passages, at least 1, got -3"),
    (dict(k="5"), "k must be a whole number of passages, at least 1, got '5'"),
    (dict(mode="sparse"), "unknown search mode 'sparse'; choose one of hybrid, dense, bm25"),
    (dict(query="  "), "the query is empty; type a question or some keywords"),
    (dict(mmr=True, mmr_lambda=1.5), "mmr_lambda=1.5 must be between 0 (diversity only) and 1 (relevance only)"),
    (dict(filters={"author": "me"}), "unknown filter 'author'; use source (glob such as '*.pdf' or 'notes/*'), "
                                     "ext (file extension such as '.md') or page (a number or [first, last])"),
    (dict(filters={"page": "2"}), "filter 'page' must be a page number or [first, last] (None for open), got '2'"),
    (dict(filters={"page": [5, 2]}), "filter 'page' range [5, 2] is empty: the first page is after the last"),
    (dict(filters={"source": 3}), "filter 'source' must be a non-empty string or a list of them, got 3"),
    (dict(filters="*.pdf"), "filters must be a dict like {'source': '*.pdf'}, got str"),
])
def test_bad_search_input(retriever, kwargs, message):
    kwargs = {"query": "mars", **kwargs}
    with pytest.raises(InvalidInput) as err:
        retriever.search(kwargs.pop("query"), **kwargs)
    assert str(err.value) == message


def test_unknown_collection_names_it_and_lists_the_others(retriever, docs, index_dir, make_index, fake_embedder):
    make_index("papers")
    with pytest.raises(IndexNotFound) as err:
        retriever.search("mars", collections=["nope"])
    assert "'nope'" in str(err.value) and "docs, papers" in str(err.value)
    with pytest.raises(IndexNotFound, match="no index 'nope'.*indexes here: docs, papers"):
        Retriever(["docs", "nope"], index_dir=index_dir, embedder=fake_embedder)
    with pytest.raises(InvalidInput, match="no collection given"):
        Retriever([], index_dir=index_dir)


@pytest.mark.parametrize("config, message", [
    (dict(fusion="max"), "unknown fusion 'max'; choose one of convex, rrf"),
    (dict(normalization="l2"), "unknown normalization 'l2'; choose one of minmax, zscore"),
    (dict(dense_weight=0, bm25_weight=0), "dense_weight and bm25_weight must be >= 0 and not both 0"),
    (dict(depth=0), "depth=0 must be at least 1"),
    (dict(rrf_k=0), "rrf_k=0 must be > 0 (60 is usual)"),
])
def test_bad_config(config, message):
    with pytest.raises(InvalidInput) as err:
        RetrieverConfig(**config)
    assert str(err.value) == message


def test_a_given_embedder_of_another_model_is_not_used(docs, index_dir, tokenizer, monkeypatch):
    """Each collection embeds the query with its own model: an embedder of another name is not
    forced on it (that would compare vectors of two different models)."""
    loaded = []
    import ragapp.ingest.embed

    def fake_load(name, device=None):
        loaded.append(name)
        raise InvalidInput(f"cannot load embedder '{name}'")

    monkeypatch.setattr(ragapp.ingest.embed, "load_embedder", fake_load)
    r = Retriever("docs", index_dir=index_dir, embedder=FakeEmbedder(tokenizer, dim=16))
    with pytest.raises(InvalidInput, match="cannot load embedder 'fake-hash-32'"):
        r.search("mars")
    assert loaded == ["fake-hash-32"]
    assert r.search("mars", mode="bm25")  # bm25 needs no embedder
    r.close()


# -- BM25 section context ---------------------------------------------------------------------------
def test_sections_never_span_two_files():
    from ragapp.index.bm25 import sections_of

    assert sections_of(["a", "a", "a", "b", "b", "c"], 2).tolist() == [0, 0, 1, 2, 2, 3]
    assert sections_of([], 8).tolist() == []


def test_section_context_lifts_a_chunk_whose_file_is_about_the_query(tmp_path, make_index, index_dir, fake_embedder):
    # The rover's name is only in the first chunk of rover.txt; the drilling chunk comes later.
    rover = ("Perseverance is a rover. " * 3 + "It landed in a crater in 2021. " * 6
             + "The team plans drilling of rock samples next spring.")
    folder = write_files(tmp_path / "ctx", {
        "rover.txt": rover,
        "quarry.txt": "Quarry crews plan drilling of rock samples before blasting. Trucks haul the stone away.",
    })
    make_index("ctx", chunk_tokens=32, overlap=0).sync(folder, embedder=fake_embedder, progress=False)
    query = "Perseverance drilling rock samples"
    plain = Retriever("ctx", index_dir=index_dir, embedder=fake_embedder,
                      config=RetrieverConfig(bm25=ragapp.index.bm25.BM25Params(context_weight=0)))
    with_context = Retriever("ctx", index_dir=index_dir, embedder=fake_embedder)
    drilling = lambda ps: [p for p in ps if "drilling" in p.text]  # noqa: E731
    assert drilling(plain.search(query, k=10, mode="bm25"))[0].source == "quarry.txt"
    assert drilling(with_context.search(query, k=10, mode="bm25"))[0].source == "rover.txt"
    # One cache folder per setting and version: each Retriever rebuilt its own when it found the
    # other's, and both still answer.
    assert plain.search(query, mode="bm25") and with_context.search(query, mode="bm25")
    plain.close(), with_context.close()


# -- the real MiniLM over the sample corpus ---------------------------------------------------------
SAMPLE = Path(__file__).resolve().parents[3] / "corpora" / "sample"


@pytest.fixture(scope="module")
def sample_retriever(tmp_path_factory):
    from ragapp.index.index import Index
    from ragapp.ingest.embed import load_embedder

    index_dir = tmp_path_factory.mktemp("real") / "indexes"
    embedder = load_embedder("all-MiniLM-L6-v2", device="cpu")
    index = Index.create("sample", index_dir)
    report = index.sync(SAMPLE, embedder=embedder, progress=False)
    assert report.added == len(list(SAMPLE.iterdir())) and not report.failed
    index.close()
    r = Retriever("sample", index_dir=index_dir, embedder=embedder)
    yield r
    r.close()


@pytest.mark.slow
@pytest.mark.parametrize("question, expected", [
    ("My scanned PDF says it has no extractable text. What should I do?", "troubleshooting-faq.txt"),
    ("Does ragapp send my documents to the internet?", "privacy.md"),
    ("How do I train a model with DPO preference tuning?", "llm-toolkit.docx"),
    ("What is the default chunk overlap in the settings reference?", "user-guide.pdf p. 7"),
    ("How does the grounding gate decide to abstain?", "grounded-answers.md"),
    ("How are renamed files handled when I sync the folder again?", "sync-and-storage.txt"),
    ("Which fusion methods combine dense and BM25 rankings?", "hybrid-retrieval.html"),
    ("What port does the HTTP API listen on?", "http-api.html"),
])
def test_real_minilm_finds_the_right_document(sample_retriever, question, expected):
    passages = sample_retriever.search(question, k=3)
    assert expected in [p.label() for p in passages], [p.label() for p in passages]
    assert all(p.collection == "sample" and p.text for p in passages)


@pytest.mark.slow
def test_real_minilm_modes_and_filters(sample_retriever):
    question = "How do I keep an index in step with a folder?"
    for mode in ("dense", "bm25"):
        assert len(sample_retriever.search(question, k=3, mode=mode)) == 3
    pdf = sample_retriever.search(question, k=3, filters={"ext": ".pdf", "page": [4, 4]})
    assert [p.label() for p in pdf] == ["user-guide.pdf p. 4"] * len(pdf) and pdf
    diverse = sample_retriever.search(question, k=5, mmr=True)
    assert len({p.chunk_id for p in diverse}) == 5
