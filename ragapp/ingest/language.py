"""Which script a text is written in, and its words where spaces do not separate them.

BM25 and the answer checks count words. Chinese, Japanese and Korean write without spaces, so a
regular expression for words returns a whole clause as one "word" and nothing ever matches. Here:

* `language(text)`: zh, ja, ko or en from the characters (kana means Japanese, hangul Korean, Han
  characters alone Chinese; Latin and everything else is taken as English, the one language the
  stemmer and the stopwords cover);
* `cjk_words(run, lang)`: jieba's words for Chinese (its search mode: long words also give their
  parts, so that 北京大学 matches 北京); overlapping character bigrams for Japanese and Korean,
  which have no segmenter here (bigrams are the usual fallback: Lucene's CJKAnalyzer);
* `split_runs(text)`: the text cut into CJK runs and the rest, so mixed text gets both treatments.

The language is decided per text (a chunk, a question), so a folder mixing languages works.
"""

from __future__ import annotations

import re
import threading

# Han (with extension A and compatibility ideographs), kana, hangul syllables and jamo.
_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_KANA = "\u3040-\u30ff\u31f0-\u31ff"
_HANGUL = "\uac00-\ud7af\u1100-\u11ff\u3130-\u318f"
CJK_RUN = re.compile(f"[{_HAN}{_KANA}{_HANGUL}]+")
# A space between two Chinese or Japanese characters (or their punctuation) is a wrapped line, not a
# word break (Korean does put spaces between words).
_CJ = f"{_HAN}{_KANA}\u3000-\u303f\uff01-\uff0f\uff1a-\uff20"
CJK_GAP = re.compile(f"(?<=[{_CJ}]) (?=[{_CJ}])")
_KANA_RE = re.compile(f"[{_KANA}]")
_HANGUL_RE = re.compile(f"[{_HANGUL}]")
_HAN_RE = re.compile(f"[{_HAN}]")

# Function words and question words that jieba returns as words of their own; like English
# stopwords they match everywhere and say nothing about the topic.
ZH_STOPWORDS = frozenset(
    """的 了 是 在 和 与 及 或 也 都 就 而 之 其 这 那 这个 那个 这些 那些 哪 哪个 哪些 哪里 什么 谁 吗 呢 吧 啊
    有 为 被 把 对 从 以 由 于 等 中 上 下 个 一个 将 会 能 可以 可 要 并 还 又 但 如果 因为 所以 以及 通过
    多少 几 怎么 怎样 如何 为什么 何时 何 哪一 哪年 时候 年 是否 我 你 他 她 它 我们 你们 他们 自己""".split()
)

LANGUAGE_NAMES = {"en": "English", "zh": "Chinese", "ja": "Japanese", "ko": "Korean"}

_jieba_lock = threading.Lock()
_jieba = None


def language(text: str) -> str:
    """zh, ja, ko or en: the script of the text's CJK characters, or en when they number under a
    third of its other letters (a CJK character carries about as much as a short English word, so
    "What does 索引 mean?" is English and "如何用 ragapp index 建立索引？" Chinese)."""
    cjk = sum(len(m) for m in CJK_RUN.findall(text))
    other = sum(ch.isalpha() for ch in text) - cjk
    if not cjk or cjk * 3 < other:
        return "en"
    if _KANA_RE.search(text):
        return "ja"
    if len(_HANGUL_RE.findall(text)) > len(_HAN_RE.findall(text)):
        return "ko"
    return "zh"


def has_cjk(text: str) -> bool:
    return CJK_RUN.search(text) is not None


def split_runs(text: str) -> list[tuple[bool, str]]:
    """[(is_cjk, piece)] covering `text` in order."""
    out, pos = [], 0
    for m in CJK_RUN.finditer(text):
        if m.start() > pos:
            out.append((False, text[pos : m.start()]))
        out.append((True, m.group()))
        pos = m.end()
    if pos < len(text):
        out.append((False, text[pos:]))
    return out


def _segmenter():
    """jieba, loaded once (its dictionary takes about a second) and quiet about it."""
    global _jieba
    with _jieba_lock:
        if _jieba is None:
            import logging

            import jieba

            jieba.setLogLevel(logging.WARNING)
            jieba.initialize()
            _jieba = jieba
    return _jieba


def cjk_words(run: str, lang: str) -> list[str]:
    """The words of a run of CJK characters: jieba (search mode) for Chinese, bigrams otherwise."""
    if lang == "zh" or (lang == "en" and not _KANA_RE.search(run) and not _HANGUL_RE.search(run)):
        return [w for w in _segmenter().lcut_for_search(run) if w not in ZH_STOPWORDS]
    if len(run) == 1:
        return [run]
    return [run[i : i + 2] for i in range(len(run) - 1)]
