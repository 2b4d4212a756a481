"""Chinese in the answer stage: sentence splitting, the citation check, the gate's lexical feature,
the extractive answer, and the quoted answer (with its one-line reason) for a question in a
language the generator does not write."""

from __future__ import annotations

import re

import pytest

from ragapp.answer import gate
from ragapp.answer.chat import ChatSession, ChatSettings
from ragapp.answer.citations import check_answer
from ragapp.answer.extractive import extractive_answer
from ragapp.generate.base import Generator, declared_languages
from ragapp.retrieve.lexical import coverage, sentences, term_set
from ragapp.retrieve.similarity import VectorCache
from ragapp.types import Passage

PASSAGES = [
    Passage("索引与文件夹保持同步。改名的文件直接指向已存储的片段，不会重新嵌入！删除的文件会从索引中移除。",
            "sync.md", None, 0.9, 1),
    Passage("光合作用把光能转化为化学能。叶绿素使叶子呈绿色。", "plants.md", None, 0.5, 2),
]
QUESTION = "改名的文件会重新嵌入吗？"


@pytest.fixture
def cache(tokenizer):
    from conftest import FakeEmbedder

    return VectorCache(FakeEmbedder(tokenizer, dim=512))


@pytest.mark.parametrize("text, expected", [
    ("北京是首都。上海很大！你知道吗？是的；确实。", ["北京是首都。", "上海很大！", "你知道吗？", "是的；", "确实。"]),
    ("他说：“我来了。”然后走了。", ["他说：“我来了。”", "然后走了。"]),
    ("第一句。[1]第二句 [2]。", ["第一句。[1]", "第二句 [2]。"]),  # a citation stays with the sentence it closes
    ("版本 2.0 发布了。Then English. And more.", ["版本 2.0 发布了。", "Then English.", "And more."]),
    ("没有标点的一整段中文", ["没有标点的一整段中文"]),
    ("The U.S. economy grew. It did.", ["The U.S. economy grew.", "It did."]),  # English unchanged
])
def test_sentence_splitting(text, expected):
    assert sentences(text) == expected


def test_chinese_terms_make_the_lexical_features_work():
    q = term_set(QUESTION)
    assert {"改名", "文件", "嵌入"} <= q
    assert coverage(q, term_set(PASSAGES[0].text)) > 0.6 > coverage(q, term_set(PASSAGES[1].text))


def test_gate_lexical_feature_on_chinese(cache):
    ev = gate.measure(QUESTION, PASSAGES, cache, score=False)
    assert ev.lexical > 0.6 and ev.best == 0


def test_citation_check_on_a_chinese_answer(cache):
    ok = check_answer("改名的文件不会重新嵌入[1]。", PASSAGES, cache, QUESTION)
    assert ok.passed and ok.citations[0].supported
    s, e = ok.citations[0].highlight
    assert PASSAGES[0].text[s:e] == "改名的文件直接指向已存储的片段，不会重新嵌入！"
    made_up = check_answer("改名的文件会被上传到月球服务器[1]。", PASSAGES, cache, QUESTION)
    assert not made_up.passed and made_up.unsupported == ["改名的文件会被上传到月球服务器[1]。"]
    uncited = check_answer("删除的文件会从索引中移除。", PASSAGES, cache, QUESTION)
    assert uncited.text == "删除的文件会从索引中移除 [1]。"  # the marker goes before the Chinese full stop


def test_extractive_answer_quotes_chinese_sentences(cache):
    text, citations = extractive_answer(QUESTION, PASSAGES, cache, max_sentences=1)
    assert text == "“改名的文件直接指向已存储的片段，不会重新嵌入！” [1]"
    assert citations[0].passage.source == "sync.md"


class Scripted(Generator):
    name = "scripted"
    context_tokens = 4096

    def __init__(self, answer: str, languages=("en",)):
        super().__init__()
        self.answer, self.languages, self.calls = answer, tuple(languages), 0

    def stream(self, messages, *, max_new_tokens=256, temperature=0.0, stop=()):
        self.calls += 1
        yield from re.findall(r"\S+\s*", self.answer)


@pytest.fixture
def session_for(tmp_path, index_dir, tokenizer):
    from conftest import FakeEmbedder, write_files

    from ragapp.index.index import Index

    embedder = FakeEmbedder(tokenizer, dim=512)
    folder = write_files(tmp_path / "docs", {p.source: p.text for p in PASSAGES})
    with Index.create("docs", index_dir, embedder=embedder) as index:
        index.sync(folder, embedder=embedder, progress=False)

    def make(gen):
        return ChatSession(["docs"], index_dir=index_dir, generator=gen, embedder=embedder,
                           settings=ChatSettings(k=2, gate=False))
    return make


def test_chinese_question_to_an_english_only_generator_is_quoted(session_for):
    gen = Scripted("Renamed files are not embedded again [1].")
    answer = session_for(gen).answer(QUESTION)
    assert gen.calls == 0 and answer.mode == "extractive"
    assert answer.text.startswith("“改名的文件直接指向已存储的片段，不会重新嵌入！” [1]")
    assert answer.reason == ("quoted from the passages: the question is in Chinese and the generator writes English "
                             "only (an hf or openai model that writes Chinese: set RAGAPP_GENERATOR_LANGUAGES=zh)")
    assert "\n" not in answer.reason


def test_a_generator_that_declares_chinese_answers(session_for):
    gen = Scripted("改名的文件不会重新嵌入[1]。", languages=("en", "zh"))
    answer = session_for(gen).answer(QUESTION)
    assert gen.calls == 1 and answer.mode == "generated" and answer.text == "改名的文件不会重新嵌入[1]。"


def test_english_question_still_goes_to_the_generator(session_for):
    gen = Scripted("Renamed files are not embedded again [1].")
    session_for(gen).answer("Are renamed files embedded again?")
    assert gen.calls == 1


def test_page_shows_the_reason_line(session_for):
    from ragapp.serve.ui import render_answer

    answer = session_for(Scripted("unused")).answer(QUESTION)
    html = render_answer(answer, "a1")
    assert "Quoted from your documents" in html and "the question is in Chinese" in html


@pytest.mark.parametrize("given, env, expected", [
    (None, None, ("en",)),
    (None, "en,zh", ("en", "zh")),
    ("*", None, ("*",)),
    (("ZH",), "en", ("zh",)),
])
def test_declared_languages(monkeypatch, given, env, expected):
    if env is None:
        monkeypatch.delenv("RAGAPP_GENERATOR_LANGUAGES", raising=False)
    else:
        monkeypatch.setenv("RAGAPP_GENERATOR_LANGUAGES", env)
    assert declared_languages(given) == expected


def test_quote_joins_wrapped_chinese_lines_without_spaces():
    from ragapp.answer.extractive import quote

    assert quote("改名的文件直接\n指向已存储的片段，\n不会重新嵌入。") == "改名的文件直接指向已存储的片段，不会重新嵌入。"
    assert quote("用 ragapp index\n建立索引") == "用 ragapp index 建立索引"
    assert quote("한국어 문장입니다") == "한국어 문장입니다"  # Korean spaces words


def test_cached_embedder_asks_an_asymmetric_embedder_for_query_vectors(cache):
    import numpy as np

    from ragapp.retrieve.similarity import CachedEmbedder

    class Asymmetric:
        name, dim, max_seq_length, tokenizer, asymmetric = "asym", 2, 8, None, True

        def encode(self, texts, batch_size=64, show_progress=False):
            return np.tile(np.array([1.0, 0.0], np.float32), (len(texts), 1))

        def encode_query(self, text):
            return np.array([0.0, 1.0], np.float32)

    assert CachedEmbedder(VectorCache(Asymmetric())).encode_query("q").tolist() == [0.0, 1.0]
