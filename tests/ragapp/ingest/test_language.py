"""Script detection, CJK words, and BM25 over a folder mixing English, Chinese, Japanese and Korean."""

from __future__ import annotations

import pytest

from ragapp.index.bm25 import BM25Index, BM25Params, _Tokenizer
from ragapp.ingest.language import cjk_words, language, split_runs
from ragapp.retrieve.lexical import terms


@pytest.mark.parametrize("text, lang", [
    ("How do I rebuild an index?", "en"),
    ("What does 索引 mean?", "en"),  # a Chinese word inside an English question
    ("Peking University (北京大学) was founded in 1898.", "en"),
    ("索引怎样与文件夹保持同步？", "zh"),
    ("如何用 ragapp index 建立索引？", "zh"),  # English words inside a Chinese question
    ("什么是BM25？", "zh"),
    ("日本語の文章を検索します。", "ja"),  # kanji with kana: Japanese
    ("한국어 문장을 검색합니다.", "ko"),
    ("", "en"),
])
def test_language(text, lang):
    assert language(text) == lang


def test_split_runs_covers_the_text():
    text = "ragapp 用结巴分词 (jieba) 切分中文。"
    runs = split_runs(text)
    assert "".join(piece for _, piece in runs) == text
    assert [piece for cjk, piece in runs if cjk] == ["用结巴分词", "切分中文"]


def test_cjk_words():
    assert {"北京", "大学", "北京大学"} <= set(cjk_words("北京大学位于北京", "zh"))  # search mode: parts too
    assert "的" not in cjk_words("文件夹的索引", "zh")  # function words dropped
    assert cjk_words("日本語", "ja") == ["日本", "本語"]
    assert cjk_words("한국어", "ko") == ["한국", "국어"]
    assert cjk_words("字", "ja") == ["字"]


def test_terms_of_mixed_text_are_stemmed_latin_and_segmented_cjk():
    assert terms("索引 indexes were rebuilt [2]") == ["索引", "index", "rebuilt"]
    assert terms("The indexes were rebuilt.") == ["index", "rebuilt"]


def test_english_tokens_are_exactly_bm25s_tokens():
    import bm25s
    import Stemmer

    text = "Running the indexers: they're rebuilt in 2 seconds, e.g. 3.5x faster! Café naïve"
    expected = bm25s.tokenize(text, stopwords="en", stemmer=Stemmer.Stemmer("english"),
                              return_ids=False, show_progress=False)[0]
    assert _Tokenizer(BM25Params()).query(text) == expected


def test_tokenizer_per_text_language():
    tok = _Tokenizer(BM25Params())
    assert tok.query("结巴分词把中文切成词语") == ["结巴", "分词", "中文", "切成", "词语"]
    assert tok.query("全文検索の仕組み") == ["全文", "文検", "検索", "索の", "の仕", "仕組", "組み"]  # kana: Japanese
    mixed = tok.query("用 BM25 检索 indexes")
    assert "bm25" in mixed and "index" in mixed and "检索" in mixed
    # without segmentation a Chinese clause is one token: the reason BM25 found nothing before
    assert _Tokenizer(BM25Params(segment=False)).query("结巴分词把中文切成词语") == ["结巴分词把中文切成词语"]


MIXED = [
    (1, "Incremental sync: a renamed file is pointed at the stored chunks, nothing is embedded again.", "a"),
    (2, "关键词检索使用结巴分词把中文切成词语，所以中文问题也能找到正确的段落。", "b"),
    (3, "索引与文件夹保持同步：改名的文件直接指向已存储的片段，不会重新嵌入。", "c"),
    (4, "日本語の文書は二文字ずつに区切って検索します。", "d"),
    (5, "한국어 문서는 두 글자씩 나누어 검색합니다.", "e"),
]


@pytest.mark.parametrize("query, best", [
    ("改名的文件会重新嵌入吗？", 3),
    ("中文怎样切成词语？", 2),
    ("what happens to a renamed file?", 1),
    ("日本語の文書はどう検索しますか", 4),
    ("한국어 문서 검색", 5),
])
def test_bm25_over_a_mixed_folder(query, best):
    index = BM25Index.build(MIXED, BM25Params(context_weight=0))
    scores = index.scores(query)
    assert int(index.ids[scores.argmax()]) == best and scores.max() > 0


def test_bm25_without_segmentation_finds_no_chinese_passage():
    index = BM25Index.build(MIXED, BM25Params(context_weight=0, segment=False))
    assert index.scores("改名的文件会重新嵌入吗？").max() == 0
